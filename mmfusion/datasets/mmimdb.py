"""MM-IMDb: movie genres from posters and plots (multi-label, 23 genres).

MM-IMDb (Arevalo et al., "Gated Multimodal Units for Information Fusion",
ICLR workshop 2017) holds 25,959 movies with a poster, a plot and one or
more of 23 genres; papers report micro, macro, weighted (and samples) F1 of
the genres predicted with a 0.5 threshold.

This module reads the authors' ready-to-use `multimodal_imdb.hdf5` (the
Fuel format written by `make_dataset.py` in johnarevalo/gmu-mmimdb, also read
by MultiBench's `datasets/imdb/get_data.py`), from
`<data_dir>/mmimdb/multimodal_imdb.hdf5`. Its datasets, one row per movie:

- `vgg_features` `(n, 4096)` float32: VGG-16 features of the poster;
- `images` `(n, 3, 256, 160)` int32: the poster, resized and cropped;
- `features` `(n, 300)` float32: the mean word2vec vector of the plot;
- `sequences` `(n,)` variable-length int32: the plot's word ids (0 is the
  authors' `_UNK_`);
- `genres` `(n, 23)` int32 0/1 targets, genre names in its
  `target_names` attribute (JSON);
- `imdb_ids` `(n,)` bytes.

The root attribute `split` (a structured array with `split`, `source`,
`start`, `stop` fields) gives the rows of `train` (15,552), `dev` (2,608)
and `test` (7,799).

Licence: the data come from IMDb and are provided by the authors for
research; see http://lisi1.unal.edu.co/mmimdb/ . `download_mmimdb` fetches
the HDF5 file (about 9 GB) only when you call it.
"""

import json
import os

import keras
import numpy as np

from mmfusion.datasets.split import Split, dataset_folder

MMIMDB_URL = "http://lisi1.unal.edu.co/mmimdb/multimodal_imdb.hdf5"
FILENAME = "multimodal_imdb.hdf5"
SPLITS = ("train", "dev", "test")
POSTERS = ("vgg_features", "images")
PLOTS = ("features", "sequences")

__all__ = ["FILENAME", "MMIMDB_URL", "POSTERS", "PLOTS", "SPLITS", "download_mmimdb",
           "genre_names", "load_mmimdb", "mmimdb_path", "multilabel_f1"]

_HOW = "Call mmfusion.datasets.mmimdb.download_mmimdb(data_dir) to download it (about 9 GB)."


def download_mmimdb(data_dir):
    """Downloads `multimodal_imdb.hdf5` into `<data_dir>/mmimdb/` (once).

    Args:
        data_dir: folder of datasets.

    Returns:
        The path of the HDF5 file.

    Example:

    A file already there is not downloaded again:

    >>> root = getfixture("tmp_path")
    >>> (root / "mmimdb").mkdir()
    >>> _ = (root / "mmimdb" / FILENAME).write_bytes(b"")
    >>> download_mmimdb(str(root)) == str(root / "mmimdb" / FILENAME)
    True
    """
    return keras.utils.get_file(fname=FILENAME, origin=MMIMDB_URL, cache_dir=data_dir,
                                cache_subdir="mmimdb")


def mmimdb_path(data_dir=None):
    """The path of `<data_dir>/mmimdb/multimodal_imdb.hdf5`.

    Raises:
        ValueError: if it is not there (the message says how to get it).

    Example:

    >>> root = getfixture("tmp_path")
    >>> (root / "mmimdb").mkdir()
    >>> mmimdb_path(str(root))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: MM-IMDb: no file .../mmimdb/multimodal_imdb.hdf5. Call ...
    """
    path = os.path.join(dataset_folder("mmimdb", data_dir, _HOW), FILENAME)
    if not os.path.isfile(path):
        raise ValueError(f"MM-IMDb: no file {path}. {_HOW}")
    return path


def _split_rows(file, split):
    """`(start, stop)` of `split` from the file's Fuel `split` attribute."""
    if "split" not in file.attrs:
        raise ValueError(f"MM-IMDb: {file.filename} has no 'split' attribute (Fuel format).")
    table = file.attrs["split"]
    rows = {_text(r["split"]): (int(r["start"]), int(r["stop"]))
            for r in table if _text(r["source"]) == "genres"}
    if split not in rows:
        raise ValueError(f"MM-IMDb: split {split!r} is not in {file.filename}; it has "
                         f"{sorted(rows)}.")
    return rows[split]


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def genre_names(data_dir=None, path=None):
    """The 23 genre names, in the order of the label columns.

    Example:

    >>> path = str(getfixture("tmp_path") / "tiny.hdf5")
    >>> import h5py
    >>> with h5py.File(path, "w") as f:
    ...     f.create_dataset("genres", data=np.zeros((1, 2), "int32")).attrs["target_names"] = (
    ...         json.dumps(["Drama", "Comedy"]))
    >>> genre_names(path=path)
    ['Drama', 'Comedy']
    """
    import h5py

    with h5py.File(path or mmimdb_path(data_dir), "r") as file:
        return json.loads(_text(file["genres"].attrs["target_names"]))


def _pad(sequences, length):
    """Variable-length word ids -> `(n, length)` int32, ids shifted by one so 0 pads."""
    out = np.zeros((len(sequences), length), "int32")
    for row, ids in enumerate(sequences):
        ids = np.asarray(ids, "int32")[:length] + 1
        out[row, :len(ids)] = ids
    return out


def load_mmimdb(split="train", data_dir=None, poster="vgg_features", plot="features",
                sequence_length=256, path=None):
    """Loads one split of MM-IMDb from `multimodal_imdb.hdf5`.

    Args:
        split: `"train"`, `"dev"` or `"test"` (the authors' split).
        data_dir: folder of datasets holding `mmimdb/` (None: `$MMFUSION_DATA`).
        poster: `"vgg_features"` (`(n, 4096)`, what the GMU paper fuses) or
            `"images"` (`(n, 256, 160, 3)` float32 in [0, 1]: 0.5 MB per
            movie, mind the memory).
        plot: `"features"` (`(n, 300)` mean word2vec) or `"sequences"`
            (`(n, sequence_length)` int32 word ids + 1, 0 = padding).
        sequence_length: words kept per plot with `plot="sequences"`.
        path: the HDF5 file (default: found under `data_dir`).

    Returns:
        A `Split` with inputs `"poster"` and `"plot"`, `labels` `(n, 23)`
        float32 0/1 genres (`genre_names()` names the columns), `ids` the
        IMDb ids.

    Example:

    See `tests/datasets/test_mmimdb.py` for a generated file in this layout:

    >>> load_mmimdb("validation", path="unused.hdf5")
    Traceback (most recent call last):
    ...
    ValueError: load_mmimdb: split must be one of ('train', 'dev', 'test'); received 'validation'.
    """
    import h5py

    for name, value, choices in (("split", split, SPLITS), ("poster", poster, POSTERS),
                                 ("plot", plot, PLOTS)):
        if value not in choices:
            raise ValueError(f"load_mmimdb: {name} must be one of {choices}; received {value!r}.")
    with h5py.File(path or mmimdb_path(data_dir), "r") as file:
        start, stop = _split_rows(file, split)
        if poster == "images":
            posters = np.empty((stop - start,) + file["images"].shape[2:] + file["images"].shape[1:2],
                               "float32")
            for begin in range(start, stop, 512):  # chunks: the file holds int32 pixels
                end = min(begin + 512, stop)
                posters[begin - start:end - start] = np.transpose(file["images"][begin:end],
                                                                  (0, 2, 3, 1)) / 255.0
        else:
            posters = file["vgg_features"][start:stop].astype("float32")
        if plot == "sequences":
            plots = _pad(file["sequences"][start:stop], sequence_length)
        else:
            plots = file["features"][start:stop].astype("float32")
        labels = file["genres"][start:stop].astype("float32")
        ids = np.array([_text(i) for i in file["imdb_ids"][start:stop]])
    return Split({"poster": posters, "plot": plots}, labels, ids)


def multilabel_f1(labels, scores, threshold=0.5):
    """Micro, macro, weighted and samples F1 of multi-label predictions, as
    the GMU paper reports them (a label is predicted when its score exceeds
    `threshold`).

    Args:
        labels: `(n, k)` 0/1 targets.
        scores: `(n, k)` predicted probabilities.
        threshold: decision threshold.

    Returns:
        dict `"f1_micro"`, `"f1_macro"`, `"f1_weighted"`, `"f1_samples"`. A
        label that is neither true nor predicted anywhere counts as F1 = 0 in
        the macro average (scikit-learn's default, used by the GMU code).

    Example:

    >>> labels = np.array([[1, 0], [1, 1], [0, 1]])
    >>> scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    >>> {k: round(v, 4) for k, v in multilabel_f1(labels, scores).items()}
    {'f1_micro': 0.8571, 'f1_macro': 0.8333, 'f1_weighted': 0.8333, 'f1_samples': 0.8889}
    """
    from sklearn.metrics import f1_score

    labels = np.asarray(labels).astype(int)
    predicted = (np.asarray(scores) > threshold).astype(int)
    return {f"f1_{average}": float(f1_score(labels, predicted, average=average, zero_division=0))
            for average in ("micro", "macro", "weighted", "samples")}
