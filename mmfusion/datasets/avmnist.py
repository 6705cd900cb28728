"""AV-MNIST: handwritten digit images paired with spoken-digit spectrograms.

AV-MNIST (Vielzeuf et al., CentralNet, 2018; used by MFAS and MultiBench)
pairs every MNIST image with a spectrogram of the same digit spoken aloud;
the images have 75 % of their energy removed (PCA) so that neither modality
is enough alone. 60,000 training and 10,000 test pairs, 10 classes; papers
report test accuracy.

Files, as MultiBench distributes them (`avmnist.tar.gz`, read by its
`datasets/avmnist/get_data.py`), under `<data_dir>/avmnist/` (at any depth):

- `image/train_data.npy`, `image/test_data.npy`: `(n, 784)` pixels in
  [0, 255] (28 × 28 images, flattened);
- `audio/train_data.npy`, `audio/test_data.npy`: `(n, 112, 112)`
  spectrograms in [0, 255];
- `train_labels.npy`, `test_labels.npy`: `(n,)` digits.

MultiBench validates on the last 5,000 training pairs; `mmfusion.tasks`
carves its validation split out of the training split at random instead.

Licence: the archive states none. The images derive from MNIST (Y. LeCun,
C. Cortes, C. Burges); cite Vielzeuf et al. 2018 and Liang et al. 2021
(MultiBench) when you use it. `download_avmnist` fetches MultiBench's public
copy (about 1.5 GB) only when you call it.
"""

import os

import keras
import numpy as np

from mmfusion.datasets.split import Split, dataset_folder

# MultiBench's public Google Drive copy of avmnist.tar.gz (its README links it).
AVMNIST_URL = ("https://drive.usercontent.google.com/download?"
               "id=1KvKynJJca5tDtI5Mmp6CoRh9pQywH8Xp&export=download&confirm=t")
IMAGE_SHAPE = (28, 28, 1)
SPECTROGRAM_SHAPE = (112, 112, 1)

__all__ = ["AVMNIST_URL", "IMAGE_SHAPE", "SPECTROGRAM_SHAPE", "avmnist_folder",
           "download_avmnist", "load_avmnist"]

_HOW = "Call mmfusion.datasets.avmnist.download_avmnist(data_dir) to download it (about 1.5 GB)."


def download_avmnist(data_dir):
    """Downloads and extracts MultiBench's `avmnist.tar.gz` into `<data_dir>/avmnist`.

    Run it yourself once (nothing in the library downloads AV-MNIST on its
    own); an archive already in `data_dir` is extracted without downloading.

    Args:
        data_dir: folder of datasets.

    Returns:
        The folder holding `image/`, `audio/` and the label files.

    Example:

    With the archive already there (here a one-example stand-in), nothing is
    downloaded:

    >>> import tarfile
    >>> root = getfixture("tmp_path")
    >>> (root / "src" / "avmnist" / "image").mkdir(parents=True)
    >>> (root / "src" / "avmnist" / "audio").mkdir()
    >>> for split in ("train", "test"):
    ...     np.save(root / "src" / "avmnist" / "image" / f"{split}_data.npy", np.zeros((1, 784)))
    ...     np.save(root / "src" / "avmnist" / "audio" / f"{split}_data.npy",
    ...             np.zeros((1, 112, 112)))
    ...     np.save(root / "src" / "avmnist" / f"{split}_labels.npy", np.array([7]))
    >>> with tarfile.open(root / "avmnist_archive", "w:gz") as archive:
    ...     archive.add(root / "src" / "avmnist", arcname="avmnist")
    >>> folder = download_avmnist(str(root))
    >>> folder == str(root / "avmnist" / "avmnist"), load_avmnist("test", str(root)).labels
    (True, array([7], dtype=int32))
    """
    os.makedirs(data_dir, exist_ok=True)
    keras.utils.get_file(fname="avmnist", origin=AVMNIST_URL, extract=True,
                         cache_dir=data_dir, cache_subdir=".")
    return avmnist_folder(data_dir)


def avmnist_folder(data_dir=None):
    """The folder under `<data_dir>/avmnist` that holds `image/train_data.npy`.

    Raises:
        ValueError: if there is none (the message says how to get it).

    Example:

    >>> root = getfixture("tmp_path")
    >>> (root / "avmnist" / "image").mkdir(parents=True)
    >>> np.save(root / "avmnist" / "image" / "train_data.npy", np.zeros((1, 784)))
    >>> avmnist_folder(str(root)) == str(root / "avmnist")
    True
    """
    top = dataset_folder("avmnist", data_dir, _HOW)
    for folder, _, files in sorted(os.walk(top)):
        if os.path.basename(folder) == "image" and "train_data.npy" in files:
            return os.path.dirname(folder)
    raise ValueError(f"AV-MNIST: no image/train_data.npy under {top}. {_HOW}")


def _read(path, shape, name):
    """`path` as float32 `(n, *shape)`, checked; read through a memory map."""
    array = np.load(path, mmap_mode="r")
    if array.ndim < 2 or int(np.prod(array.shape[1:])) != int(np.prod(shape)):
        raise ValueError(f"AV-MNIST: {name} in {path} has shape {array.shape}; expected "
                         f"(n, {int(np.prod(shape))}) or (n, ...) with {shape} per example.")
    return np.asarray(array, dtype="float32").reshape((len(array),) + shape)


def load_avmnist(split="train", data_dir=None, normalize=True):
    """Loads one split of AV-MNIST.

    Args:
        split: `"train"` (60,000 pairs) or `"test"` (10,000).
        data_dir: folder of datasets holding `avmnist/` (None:
            `$MMFUSION_DATA`).
        normalize: divide pixels and spectrogram values by 255, as
            MultiBench does by default (False keeps [0, 255]).

    Returns:
        A `Split` with inputs `"image"`: `(n, 28, 28, 1)` and `"audio"`:
        `(n, 112, 112, 1)` float32, `labels` `(n,)` int32 digits, `ids` the
        row numbers in the files.

    Example:

    >>> root = getfixture("tmp_path") / "avmnist"
    >>> (root / "image").mkdir(parents=True)
    >>> (root / "audio").mkdir()
    >>> np.save(root / "image" / "test_data.npy", np.full((2, 784), 255.0))
    >>> np.save(root / "audio" / "test_data.npy", np.zeros((2, 112, 112)))
    >>> np.save(root / "test_labels.npy", np.array([3, 9]))
    >>> np.save(root / "image" / "train_data.npy", np.zeros((0, 784)))
    >>> data = load_avmnist("test", str(root.parent))
    >>> data.inputs["image"].shape, data.inputs["audio"].shape, data.labels.tolist()
    ((2, 28, 28, 1), (2, 112, 112, 1), [3, 9])
    >>> float(data.inputs["image"].max())
    1.0
    """
    if split not in ("train", "test"):
        raise ValueError(f"load_avmnist: split must be 'train' or 'test'; received {split!r}.")
    folder = avmnist_folder(data_dir)
    image = _read(os.path.join(folder, "image", f"{split}_data.npy"), IMAGE_SHAPE, "image")
    audio = _read(os.path.join(folder, "audio", f"{split}_data.npy"), SPECTROGRAM_SHAPE, "audio")
    labels = np.load(os.path.join(folder, f"{split}_labels.npy")).reshape(-1).astype("int32")
    if not len(image) == len(audio) == len(labels):
        raise ValueError(f"AV-MNIST {split}: {len(image)} images, {len(audio)} spectrograms and "
                         f"{len(labels)} labels in {folder}; they must be equal.")
    if normalize:
        image /= 255.0
        audio /= 255.0
    return Split({"image": image, "audio": audio}, labels)
