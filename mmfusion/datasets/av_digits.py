"""Audio-visual digits: handwritten digit images paired with spoken digits.

Each example pairs an image of `sklearn.datasets.load_digits` (8x8, upsampled
to 16x16) with an FSDD recording of the same digit, and optionally a short
text about the digit. Splits share no recording (FSDD's official split by
index, or held-out speakers) and no image (the images are split by class
before pairing).

Degradations, drawn independently per example and per modality with
probability `p_degrade` (the `degraded` flags say which):
- image: a random square occluding `image_occlusion` of the side (filled
  with uniform noise) plus Gaussian pixel noise `image_noise`; every image
  gets light noise `clean_image_noise`.
- audio: white noise at `audio_snr_db` (default -20 dB) relative to the
  clip's mean power over its fixed-length window; every clip gets noise at
  `clean_snr_db`.
- text: with probability `text_corruption` every digit word or numeral in the
  phrase is replaced by a filler word.
With the defaults a degraded modality says little about the digit (a small
CNN gets about 20% of degraded images or clips right, 90-96% of clean ones),
so each modality alone scores about 55%; a model that sees both can rely on
whichever is clean in each example (both are degraded in only 25% of them),
so fusion clearly beats either alone (see benchmarks/results/av_digits.md).
"""

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits

from mmfusion.datasets.fsdd import load_fsdd

WORDS = {
    "en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "fr": ["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"],
    "es": ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"],
    "de": ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"],
}
FILLERS = ("something", "hmm", "whatever", "blah")
TEMPLATES = ("{d}", "the digit {d}", "{a} plus {b}", "{a} minus {b}")

__all__ = ["AVDigits", "digit_phrase", "load_av_digits"]


@dataclass
class AVDigits:
    """One split of the audio-visual digits task.

    Attributes:
        inputs: dict modality -> array: `"image"` `(n, 16, 16, 1)` float32 in
            [0, 1], `"audio"` `(n, length)` float32, and `"text"` `(n,)`
            strings if requested.
        labels: `(n,)` int32 digits.
        degraded: dict modality -> `(n,)` bool, which examples were degraded.
        recordings: `(n,)` FSDD file names.
        speakers: `(n,)` FSDD speakers.
        image_ids: `(n,)` indices into `sklearn.datasets.load_digits()`.

    Example:

    Splits come from `load_av_digits`; `take` selects examples:

    >>> data = AVDigits(inputs={"image": np.zeros((3, 16, 16, 1)), "audio": np.zeros((3, 100))},
    ...                 labels=np.array([4, 2, 4]),
    ...                 degraded={"image": np.array([True, False, False]),
    ...                           "audio": np.array([False, False, True])},
    ...                 recordings=np.array(["4_ana_0.wav", "2_ana_0.wav", "4_bo_1.wav"]),
    ...                 speakers=np.array(["ana", "ana", "bo"]), image_ids=np.array([10, 20, 30]))
    >>> fours = data.take(data.labels == 4)
    >>> len(fours), fours.speakers.tolist(), fours.degraded["audio"].tolist()
    (2, ['ana', 'bo'], [False, True])
    """

    inputs: dict
    labels: np.ndarray
    degraded: dict
    recordings: np.ndarray
    speakers: np.ndarray
    image_ids: np.ndarray

    def __len__(self):
        return len(self.labels)

    def take(self, index):
        """The examples at `index` (an index array, mask or slice), as `AVDigits`."""
        return AVDigits(inputs={m: x[index] for m, x in self.inputs.items()},
                        labels=self.labels[index],
                        degraded={m: d[index] for m, d in self.degraded.items()},
                        recordings=self.recordings[index], speakers=self.speakers[index],
                        image_ids=self.image_ids[index])


def digit_phrase(label, rng, languages=tuple(WORDS), corrupt=False):
    """A random phrase naming `label`: a number word in one of `languages`, a
    numeral, or an addition or subtraction of two digits that equals it.

    Args:
        label: the digit 0-9.
        rng: a `numpy.random.Generator`.
        languages: language codes of `WORDS` to draw number words from.
        corrupt: replace every digit word or numeral with a filler word.

    Returns:
        A string.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> phrases = [digit_phrase(7, rng) for _ in range(3)]
    >>> all(isinstance(p, str) for p in phrases)
    True
    """
    def say(d):
        if corrupt:
            return str(rng.choice(FILLERS))
        lang = languages[rng.integers(len(languages))]
        return str(d) if rng.random() < 0.25 else WORDS[lang][d]

    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    if "plus" in template:
        a = int(rng.integers(label + 1))
        return template.format(a=say(a), b=say(label - a))
    if "minus" in template:
        b = int(rng.integers(10 - label))
        return template.format(a=say(label + b), b=say(b))
    return template.format(d=say(label))


def _split_images(labels, test_fraction, rng):
    """Per class, a random `test_fraction` of the image ids for test, the rest for train."""
    train, test = [], []
    for c in range(10):
        ids = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * len(ids)))
        test.append(ids[:n_test])
        train.append(ids[n_test:])
    return np.concatenate(train), np.concatenate(test)


def _degrade_images(images, degraded, occlusion, noise, clean_noise, rng):
    size = images.shape[1]
    out = images + clean_noise * rng.normal(size=images.shape)
    side = max(1, int(round(occlusion * size)))
    for i in np.flatnonzero(degraded):
        r, c = rng.integers(size - side + 1, size=2)
        out[i, r:r + side, c:c + side] = rng.random((side, side))
        out[i] += noise * rng.normal(size=(size, size))
    return np.clip(out, 0.0, 1.0)[..., None].astype("float32")


def _add_noise(waveforms, snr_db, rng):
    """White noise at `snr_db` (one value per row) relative to each row's power."""
    power = np.mean(waveforms ** 2, axis=1, keepdims=True)
    std = np.sqrt(power / 10.0 ** (np.asarray(snr_db)[:, None] / 10.0))
    return (waveforms + std * rng.normal(size=waveforms.shape)).astype("float32")


def _make_split(recordings, images, image_labels, image_pool, rng, cfg):
    n = len(recordings)
    labels = recordings.labels
    image_ids = np.array([rng.choice(image_pool[image_labels[image_pool] == y]) for y in labels])
    degraded = {m: rng.random(n) < cfg["p_degrade"] for m in ("image", "audio")}
    inputs = {
        "image": _degrade_images(images[image_ids], degraded["image"], cfg["image_occlusion"],
                                 cfg["image_noise"], cfg["clean_image_noise"], rng),
        "audio": _add_noise(recordings.waveforms,
                            np.where(degraded["audio"], cfg["audio_snr_db"], cfg["clean_snr_db"]),
                            rng),
    }
    if cfg["text"]:
        degraded["text"] = rng.random(n) < cfg["text_corruption"]
        inputs["text"] = np.array([digit_phrase(int(y), rng, cfg["languages"], bool(c))
                                   for y, c in zip(labels, degraded["text"])], dtype=object)
    return AVDigits(inputs=inputs, labels=labels.astype("int32"), degraded=degraded,
                    recordings=recordings.files, speakers=recordings.speakers,
                    image_ids=image_ids)


def load_av_digits(fsdd_path=None, fsdd=None, audio_length=6000, test_speakers=None,
                   p_degrade=0.5, image_occlusion=0.85, image_noise=0.5,
                   clean_image_noise=0.1, audio_snr_db=-20.0, clean_snr_db=20.0,
                   text=False, text_corruption=0.5, languages=tuple(WORDS),
                   image_test_fraction=0.3, seed=0, data_dir=None):
    """Builds the audio-visual (optionally audio-visual-text) digits task.

    Every FSDD recording of a split gives one example, paired with a random
    image of the same digit from that split's images; classes are balanced
    because FSDD is (each speaker says each digit 50 times).

    Args:
        fsdd_path: local FSDD copy (see `load_fsdd`); None: FSDD from
            `data_dir` (see `mmfusion.datasets.fsdd.fsdd_folder`).
        fsdd: optional `(train, test)` from `load_fsdd`, to reuse already
            decoded audio (then `fsdd_path`, `audio_length` and `test_speakers`
            are not used).
        audio_length: samples per waveform.
        test_speakers: None for FSDD's official split, or held-out speakers.
        p_degrade: probability that an example's image (and, independently,
            its audio) is degraded.
        image_occlusion: side of the occluding square, as a fraction of the
            image side.
        image_noise: Gaussian noise std added to degraded images.
        clean_image_noise: Gaussian noise std added to every image.
        audio_snr_db: SNR of degraded audio in dB.
        clean_snr_db: SNR of the other audio in dB.
        text: add the `"text"` modality (see `digit_phrase`).
        text_corruption: probability that an example's text is corrupted.
        languages: languages of the number words.
        image_test_fraction: fraction of each class's images kept for test.
        seed: seed of every random choice (pairing, degradations, text).
        data_dir: folder of datasets holding `fsdd/` (None: `$MMFUSION_DATA`,
            then Keras's cache, downloading FSDD if needed).

    Returns:
        `(train, test)`, two `AVDigits`.

    Example:

    With stand-in recordings (one silent clip per digit) instead of FSDD:

    >>> from mmfusion.datasets.fsdd import FSDDData
    >>> def recordings(index):
    ...     digits = np.arange(10, dtype="int32")
    ...     return FSDDData(np.zeros((10, 100), "float32"), digits, np.array(["ana"] * 10),
    ...                     np.full(10, index, "int32"),
    ...                     np.array([f"{d}_ana_{index}.wav" for d in digits]))
    >>> train, test = load_av_digits(fsdd=(recordings(5), recordings(0)), text=True)
    >>> {m: x.shape for m, x in train.inputs.items()}
    {'image': (10, 16, 16, 1), 'audio': (10, 100), 'text': (10,)}
    >>> train.labels.tolist() == list(range(10)), sorted(test.degraded)
    (True, ['audio', 'image', 'text'])
    """
    train_audio, test_audio = fsdd if fsdd is not None else load_fsdd(
        fsdd_path, length=audio_length, test_speakers=test_speakers, data_dir=data_dir)
    digits = load_digits()
    images = np.kron(digits.images / 16.0, np.ones((1, 2, 2)))
    train_rng, test_rng, split_rng = (np.random.default_rng(s)
                                      for s in np.random.SeedSequence(seed).spawn(3))
    train_pool, test_pool = _split_images(digits.target, image_test_fraction, split_rng)
    cfg = dict(p_degrade=p_degrade, image_occlusion=image_occlusion, image_noise=image_noise,
               clean_image_noise=clean_image_noise, audio_snr_db=audio_snr_db,
               clean_snr_db=clean_snr_db, text=text, text_corruption=text_corruption,
               languages=tuple(languages))
    return (_make_split(train_audio, images, digits.target, train_pool, train_rng, cfg),
            _make_split(test_audio, images, digits.target, test_pool, test_rng, cfg))
