"""FSDD loader on a generated WAV folder and on the local copy; download code
exercised without the network; the tf.data WAV pipeline."""

import os
import shutil

import keras
import numpy as np
import pytest

from mmfusion.datasets import fsdd
from mmfusion.datasets.fsdd import load_fsdd, pad_or_crop
from mmfusion.datasets.pipelines import make_dataset, wav_dataset
from tests.datasets.fake_fsdd import write_fake_fsdd


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("fsdd") / "recordings")
    return folder, write_fake_fsdd(folder)


def test_generated_folder_official_split_and_values(fake):
    folder, written = fake
    train, test = load_fsdd(os.path.dirname(folder), length=600)
    assert len(train) == 10 * 3 * 2 and len(test) == 10 * 3 * 5
    assert set(test.indices) == set(range(5)) and set(train.indices) == {5, 6}
    assert not set(train.files) & set(test.files)
    for data in (train, test):
        for i in [0, len(data) - 1]:
            name = data.files[i]
            digit, speaker, index = name[:-4].split("_")
            assert (data.labels[i], data.speakers[i], data.indices[i]) == (int(digit), speaker,
                                                                        int(index))
            expected = pad_or_crop(written[name].astype("float32"), 600)
            np.testing.assert_allclose(data.waveforms[i], expected, atol=2 / 32767)
    np.testing.assert_array_equal(np.bincount(train.labels), [6] * 10)


def test_speaker_split(fake):
    folder, _ = fake
    train, test = load_fsdd(folder, length=100, test_speakers=["bo"])
    assert set(test.speakers) == {"bo"} and set(train.speakers) == {"ana", "cy"}
    with pytest.raises(ValueError, match="unknown test speakers"):
        load_fsdd(folder, test_speakers=["zed"])


def test_pad_or_crop_numbers():
    x = np.arange(10.0)
    np.testing.assert_array_equal(pad_or_crop(x, 4), [3, 4, 5, 6])
    np.testing.assert_array_equal(pad_or_crop(x, 12), list(range(10)) + [0, 0])
    np.testing.assert_array_equal(pad_or_crop(x, 10), x)


def test_missing_recordings_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="No FSDD recordings"):
        load_fsdd(str(tmp_path))


def test_download_uses_get_file_without_network(fake, monkeypatch):
    folder, _ = fake
    calls = {}

    def fake_get_file(**kwargs):
        calls.update(kwargs)
        return os.path.dirname(folder)

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    monkeypatch.delenv(fsdd.DATA_ENV, raising=False)  # no local data folder: download
    train, test = load_fsdd(None, length=50)
    assert calls["origin"] == fsdd.FSDD_URL and calls["extract"] is True
    assert fsdd.FSDD_URL.startswith("https://github.com/Jakobovski/free-spoken-digit-dataset/")
    assert len(train) + len(test) == 210


def test_download_into_a_data_dir_is_found_next_time(fake, tmp_path, monkeypatch):
    folder, _ = fake
    calls = []

    def fake_get_file(**kwargs):  # what get_file does: the archive extracted under cache_dir
        calls.append(kwargs)
        target = os.path.join(kwargs["cache_dir"], kwargs["cache_subdir"], "release")
        shutil.copytree(os.path.dirname(folder), target)
        return target

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    data_dir = str(tmp_path / "data")
    first = load_fsdd(data_dir=data_dir, length=50)[0]
    again = load_fsdd(data_dir=data_dir, length=50)[0]
    assert len(calls) == 1 and calls[0]["cache_subdir"] == "fsdd"
    assert first.files.tolist() == again.files.tolist() and len(first) == 60


def test_real_copy_official_split(data_dir):
    train, test = load_fsdd(data_dir=data_dir, length=6000)
    assert (len(train), len(test)) == (2700, 300)
    assert not set(train.files) & set(test.files)
    assert set(train.speakers) == set(test.speakers) and len(set(test.speakers)) == 6
    np.testing.assert_array_equal(np.bincount(test.labels), [30] * 10)
    assert np.abs(train.waveforms).max() <= 1.0 and np.abs(train.waveforms).max() > 0.5


def test_wav_dataset_matches_numpy_loader(fake):
    folder, _ = fake
    _, test = load_fsdd(folder, length=600)
    files = [os.path.join(folder, f) for f in test.files[:5]]
    decoded = np.stack([x.numpy() for x in wav_dataset(files, 600)])
    np.testing.assert_allclose(decoded, test.waveforms[:5], atol=1e-6)


def test_make_dataset_batches_shuffles_and_vectorizes():
    from mmfusion.branches import text_vectorizer

    texts = np.array(["one", "two", "one two", "two", "one"], dtype=object)
    vectorizer = text_vectorizer(texts, sequence_length=3)
    ds = make_dataset({"x": np.arange(5.0)[:, None], "t": texts}, np.arange(5), batch_size=2,
                      shuffle=True, seed=1, text_vectorizers={"t": vectorizer})
    epochs = [[(x["x"].numpy()[:, 0].tolist(), x["t"].numpy().tolist(), y.numpy().tolist())
               for x, y in ds] for _ in range(2)]
    first = epochs[0]
    assert [len(y) for _, _, y in first] == [2, 2, 1]
    orders = [[int(v) for xs, _, _ in epoch for v in xs] for epoch in epochs]
    assert sorted(orders[0]) == [0, 1, 2, 3, 4] and orders[0] != orders[1]  # reshuffled
    for xs, ids, ys in first:
        assert xs == ys
        for x, row in zip(xs, ids):
            assert row == vectorizer([texts[int(x)]]).numpy()[0].tolist()
