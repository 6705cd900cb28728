"""The Free Spoken Digit Dataset (FSDD): real 8 kHz recordings of spoken digits.

Files are named `{digit}_{speaker}_{index}.wav` (mono, 16-bit PCM, 8 kHz).
The official split puts recordings with index 0-4 in the test set and 5-49
in the training set (every speaker appears in both, no recording does);
`test_speakers=` instead holds out whole speakers.
"""

import os
import re
import wave
from dataclasses import dataclass

import keras
import numpy as np

FSDD_VERSION = "1.0.10"
FSDD_URL = ("https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/"
            f"v{FSDD_VERSION}.tar.gz")
SAMPLING_RATE = 8000
OFFICIAL_TEST_INDICES = range(5)
_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")

DATA_ENV = "MMFUSION_DATA"

__all__ = [
    "DATA_ENV", "FSDDData", "download_fsdd", "find_recordings", "fsdd_folder", "load_fsdd",
    "pad_or_crop", "read_wav", "write_wav",
]


@dataclass
class FSDDData:
    """One split of FSDD.

    Attributes:
        waveforms: `(n, length)` float32 in [-1, 1], padded or cropped.
        labels: `(n,)` int32 digits.
        speakers: `(n,)` speaker names.
        indices: `(n,)` int32 recording indices.
        files: `(n,)` file names (unique ids of the recordings).

    Example:

    >>> data = FSDDData(waveforms=np.zeros((3, 4), "float32"),
    ...                 labels=np.array([1, 2, 1], "int32"),
    ...                 speakers=np.array(["ana", "bo", "bo"]),
    ...                 indices=np.array([0, 5, 6], "int32"),
    ...                 files=np.array(["1_ana_0.wav", "2_bo_5.wav", "1_bo_6.wav"]))
    >>> ones = data.take(data.labels == 1)
    >>> len(data), len(ones), ones.files.tolist()
    (3, 2, ['1_ana_0.wav', '1_bo_6.wav'])
    """

    waveforms: np.ndarray
    labels: np.ndarray
    speakers: np.ndarray
    indices: np.ndarray
    files: np.ndarray

    def __len__(self):
        return len(self.labels)

    def take(self, index):
        """The examples at `index` (an index array, mask or slice), as `FSDDData`."""
        return FSDDData(self.waveforms[index], self.labels[index], self.speakers[index],
                        self.indices[index], self.files[index])


def download_fsdd(cache_dir=None, cache_subdir="datasets"):
    """Downloads and extracts the FSDD release archive from GitHub (once;
    later calls reuse the cached copy).

    Args:
        cache_dir: directory of the Keras cache (default `~/.keras`).
        cache_subdir: folder under `cache_dir` that receives the archive.

    Returns:
        The path of the folder of WAV files.

    Example:

    With the archive already in the cache (here a one-file stand-in), nothing
    is downloaded:

    >>> import tarfile
    >>> cache = getfixture("tmp_path")
    >>> release = cache / f"free-spoken-digit-dataset-{FSDD_VERSION}"
    >>> (release / "recordings").mkdir(parents=True)
    >>> write_wav(str(release / "recordings" / "7_ana_0.wav"), np.zeros(80))
    >>> (cache / "datasets").mkdir()
    >>> with tarfile.open(cache / "datasets" / release.name, "w:gz") as archive:
    ...     archive.add(release, arcname=release.name)
    >>> folder = download_fsdd(cache_dir=str(cache))
    >>> os.path.basename(folder), os.listdir(folder)
    ('recordings', ['7_ana_0.wav'])
    """
    root = keras.utils.get_file(
        fname=f"free-spoken-digit-dataset-{FSDD_VERSION}", origin=FSDD_URL,
        extract=True, cache_dir=cache_dir, cache_subdir=cache_subdir,
    )
    return find_recordings(root)


def fsdd_folder(data_dir=None):
    """The folder of FSDD's WAV files, found or downloaded.

    Looks for `fsdd/` under `data_dir`, else under the folder named by the
    `MMFUSION_DATA` environment variable. Without a local copy, FSDD is
    downloaded (`download_fsdd`) into `data_dir/fsdd` when a data folder is
    given (so the next call finds it), else into Keras's cache (`~/.keras`).

    Args:
        data_dir: folder of datasets (None: `$MMFUSION_DATA`, then Keras's cache).

    Returns:
        The path of the folder of WAV files.

    Example:

    >>> data = getfixture("tmp_path")
    >>> (data / "fsdd" / "recordings").mkdir(parents=True)
    >>> write_wav(str(data / "fsdd" / "recordings" / "4_ana_9.wav"), np.zeros(10))
    >>> fsdd_folder(str(data)) == str(data / "fsdd" / "recordings")
    True
    """
    data_dir = data_dir or os.environ.get(DATA_ENV) or None
    if data_dir is None:
        return download_fsdd()
    local = os.path.join(data_dir, "fsdd")
    if os.path.isdir(local):
        return find_recordings(local)
    return download_fsdd(cache_dir=data_dir, cache_subdir="fsdd")


def find_recordings(path):
    """The folder holding the WAV files under `path` (`path` itself, or a
    `recordings/` folder below it, as in the repository and its archive).

    Example:

    >>> root = getfixture("tmp_path")
    >>> (root / "recordings").mkdir()
    >>> write_wav(str(root / "recordings" / "0_bo_3.wav"), np.zeros(10))
    >>> find_recordings(str(root)) == str(root / "recordings")
    True
    """
    for folder, _, files in os.walk(path):
        if any(_NAME.match(f) for f in files):
            return folder
    raise ValueError(f"No FSDD recordings ('{{digit}}_{{speaker}}_{{index}}.wav') under '{path}'.")


def read_wav(filename):
    """A mono 16-bit PCM WAV file as float32 in [-1, 1] (`wave` module).

    Returns:
        `(samples, sampling_rate)`.

    Example:

    >>> path = str(getfixture("tmp_path") / "steps.wav")
    >>> write_wav(path, np.array([0.0, 0.5, -0.5, 1.0]), sampling_rate=16000)
    >>> samples, rate = read_wav(path)
    >>> samples.dtype, np.round(samples, 3).tolist(), rate
    (dtype('float32'), [0.0, 0.5, -0.5, 1.0], 16000)
    """
    with wave.open(filename, "rb") as f:
        if f.getsampwidth() != 2:
            raise ValueError(f"'{filename}': expected 16-bit PCM, got {8 * f.getsampwidth()}-bit.")
        frames = f.readframes(f.getnframes())
        samples = np.frombuffer(frames, dtype="<i2").reshape(-1, f.getnchannels())
        return samples.mean(axis=1).astype("float32") / 32768.0, f.getframerate()


def pad_or_crop(samples, length):
    """Fixes a waveform's length: short ones get zeros appended, long ones are
    cropped around their center (FSDD clips are trimmed, so the word is there).

    Example:

    >>> pad_or_crop(np.arange(5.0), 7).tolist(), pad_or_crop(np.arange(6.0), 2).tolist()
    ([0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 0.0], [2.0, 3.0])
    """
    if len(samples) >= length:
        start = (len(samples) - length) // 2
        return samples[start:start + length]
    return np.pad(samples, (0, length - len(samples)))


def load_fsdd(path=None, length=6000, test_speakers=None, data_dir=None):
    """Loads FSDD into memory as fixed-length waveforms, split into train and test.

    Args:
        path: a local copy (the repository, its `recordings/` folder or any
            folder with the WAV files). None: `fsdd_folder(data_dir)`, i.e.
            `data_dir/fsdd`, then `$MMFUSION_DATA/fsdd`, then a download of
            the release archive with `keras.utils.get_file`.
        length: samples per waveform (`pad_or_crop`; 6000 = 0.75 s keeps 97%
            of the recordings whole).
        test_speakers: None for the official split (indices 0-4 test), or
            speaker names held out as the test set.
        data_dir: folder of datasets, used when `path` is None (see `fsdd_folder`).

    Returns:
        `(train, test)`, two `FSDDData`, sorted by file name.

    Example:

    >>> folder = str(getfixture("tmp_path"))
    >>> for name in ["3_ana_0.wav", "3_ana_7.wav"]:
    ...     write_wav(os.path.join(folder, name), np.zeros(100, "float32"))
    >>> train, test = load_fsdd(folder, length=50)
    >>> train.files.tolist(), test.waveforms.shape
    (['3_ana_7.wav'], (1, 50))
    """
    folder = find_recordings(path) if path is not None else fsdd_folder(data_dir)
    files = sorted(f for f in os.listdir(folder) if _NAME.match(f))
    fields = [_NAME.match(f).groups() for f in files]
    waveforms = []
    for f in files:
        samples, rate = read_wav(os.path.join(folder, f))
        if rate != SAMPLING_RATE:
            raise ValueError(f"'{f}': expected {SAMPLING_RATE} Hz, got {rate} Hz.")
        waveforms.append(pad_or_crop(samples, length))
    data = FSDDData(
        waveforms=np.stack(waveforms).astype("float32"),
        labels=np.array([int(d) for d, _, _ in fields], "int32"),
        speakers=np.array([s for _, s, _ in fields]),
        indices=np.array([int(i) for _, _, i in fields], "int32"),
        files=np.array(files),
    )
    if test_speakers is None:
        is_test = np.isin(data.indices, OFFICIAL_TEST_INDICES)
    else:
        unknown = sorted(set(test_speakers) - set(data.speakers))
        if unknown:
            raise ValueError(f"load_fsdd: unknown test speakers {unknown}; "
                             f"speakers: {sorted(set(data.speakers))}.")
        is_test = np.isin(data.speakers, list(test_speakers))
    return data.take(~is_test), data.take(is_test)


def write_wav(filename, samples, sampling_rate=SAMPLING_RATE):
    """Writes float samples in [-1, 1] as a mono 16-bit PCM WAV file.

    Args:
        filename: path of the file to write.
        samples: 1-D array of samples (values outside [-1, 1] are clipped).
        sampling_rate: sampling rate in Hz.

    Example:

    >>> path = str(getfixture("tmp_path") / "tone.wav")
    >>> write_wav(path, 0.5 * np.sin(np.arange(800) / 5.0))  # 0.1 s at 8 kHz
    >>> samples, rate = read_wav(path)
    >>> samples.shape, rate, round(float(samples.max()), 2)
    ((800,), 8000, 0.5)
    """
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(filename, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sampling_rate)
        f.writeframes(pcm.tobytes())
