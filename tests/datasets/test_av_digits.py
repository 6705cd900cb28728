"""av_digits: disjoint splits, class balance, determinism, degradations and texts."""

import numpy as np
import pytest

from mmfusion.datasets.av_digits import FILLERS, WORDS, digit_phrase, load_av_digits
from mmfusion.datasets.fsdd import load_fsdd
from tests.datasets.fake_fsdd import write_fake_fsdd


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("fsdd"))
    write_fake_fsdd(folder)
    return load_fsdd(folder, length=800)


def test_no_recording_or_image_shared_between_splits(recordings):
    train, test = load_av_digits(fsdd=recordings, seed=0)
    assert not set(train.recordings) & set(test.recordings)
    assert not set(train.image_ids) & set(test.image_ids)
    assert len(train) == 60 and len(test) == 150


def test_speaker_aware_split(tmp_path):
    write_fake_fsdd(str(tmp_path))
    train, test = load_av_digits(str(tmp_path), audio_length=400, test_speakers=["cy"])
    assert set(test.speakers) == {"cy"} and "cy" not in set(train.speakers)


def test_pairs_share_the_class_and_classes_are_balanced(recordings):
    from sklearn.datasets import load_digits

    targets = load_digits().target
    train, test = load_av_digits(fsdd=recordings, seed=0)
    for data in (train, test):
        np.testing.assert_array_equal(targets[data.image_ids], data.labels)
        counts = np.bincount(data.labels, minlength=10)
        assert counts.min() == counts.max()


def test_deterministic_under_a_seed(recordings):
    a = load_av_digits(fsdd=recordings, seed=3, text=True)[1]
    b = load_av_digits(fsdd=recordings, seed=3, text=True)[1]
    c = load_av_digits(fsdd=recordings, seed=4, text=True)[1]
    for m in ("image", "audio", "text"):
        np.testing.assert_array_equal(a.inputs[m], b.inputs[m])
        assert not np.array_equal(a.inputs[m], c.inputs[m])
    np.testing.assert_array_equal(a.image_ids, b.image_ids)


def test_degradations_follow_their_settings(recordings):
    train, _ = load_av_digits(fsdd=recordings, seed=0, p_degrade=0.5, audio_snr_db=-10.0,
                              clean_snr_db=30.0, image_noise=0.0, clean_image_noise=0.0)
    for m in ("image", "audio"):
        assert 0.3 < train.degraded[m].mean() < 0.7
    clean = recordings[0].waveforms
    noise = train.inputs["audio"] - clean
    snr = 10 * np.log10(np.mean(clean ** 2, axis=1) / np.mean(noise ** 2, axis=1))
    # 800-sample noise: each measured SNR is within ~1 dB, their mean much closer.
    for mask, target in ((train.degraded["audio"], -10.0), (~train.degraded["audio"], 30.0)):
        np.testing.assert_allclose(snr[mask], target, atol=1.0)
        assert abs(snr[mask].mean() - target) < 0.2
    images = train.inputs["image"]
    assert images.shape[1:] == (16, 16, 1) and images.min() >= 0 and images.max() <= 1
    # Non-degraded images are the upsampled digit exactly (no noise here).
    from sklearn.datasets import load_digits

    originals = np.kron(load_digits().images / 16.0, np.ones((1, 2, 2)))[train.image_ids]
    same = np.all(np.isclose(images[..., 0], originals), axis=(1, 2))
    np.testing.assert_array_equal(same, ~train.degraded["image"])


def parse(phrase):
    """The digit a clean phrase names (words of any language, numerals, + and -)."""
    lookup = {w: d for words in WORDS.values() for d, w in enumerate(words)}
    lookup.update({str(d): d for d in range(10)})
    tokens = phrase.split()
    if "plus" in tokens:
        return lookup[tokens[0]] + lookup[tokens[2]]
    if "minus" in tokens:
        return lookup[tokens[0]] - lookup[tokens[2]]
    return lookup[tokens[-1]]


def test_texts_name_the_digit_unless_corrupted(recordings):
    train, _ = load_av_digits(fsdd=recordings, seed=0, text=True, text_corruption=0.3)
    texts, corrupted = train.inputs["text"], train.degraded["text"]
    assert 0.1 < corrupted.mean() < 0.5
    for phrase, label in zip(texts[~corrupted], train.labels[~corrupted]):
        assert parse(phrase) == label, phrase
    for phrase in texts[corrupted]:
        assert any(f in phrase.split() for f in FILLERS)
        assert not any(ch.isdigit() for ch in phrase)


def test_digit_phrase_covers_languages_and_arithmetic():
    rng = np.random.default_rng(0)
    phrases = [digit_phrase(d, rng) for d in range(10) for _ in range(40)]
    for d, phrase in zip(np.repeat(range(10), 40), phrases):
        assert parse(phrase) == d
    words = " ".join(phrases).split()
    assert {"plus", "minus", "sieben", "siete", "sept", "seven", "7"} <= set(words)


def test_real_task_sizes(data_dir):
    train, test = load_av_digits(data_dir=data_dir)
    assert (len(train), len(test)) == (2700, 300)
    assert not set(train.recordings) & set(test.recordings)
    np.testing.assert_array_equal(np.bincount(test.labels), [30] * 10)
