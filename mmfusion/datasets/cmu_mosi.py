"""CMU-MOSI and CMU-MOSEI: sentiment from text, audio and vision sequences.

CMU-MOSI (Zadeh et al., 2016; 2,199 opinion segments from YouTube) and
CMU-MOSEI (Zadeh et al., 2018; about 23,000 segments) label each segment
with a sentiment in [-3, 3]. Papers train a regressor and report MAE,
Pearson correlation, binary accuracy and F1 (negative vs. non-negative,
"Has0", and negative vs. positive with the zeros left out, "Non0") and
7-class accuracy (the score rounded to an integer in [-3, 3]).

This module reads the feature pickles the peer libraries distribute, a dict
split -> dict field -> array with splits `"train"`, `"valid"`, `"test"`:

- MultiBench (`datasets/affect/get_data.py`; `mosi_raw.pkl`,
  `mosei_raw.pkl`) and MulT (`mosi_data.pkl`, `mosei_senti_data.pkl`,
  `*_noalign.pkl`): `"text"` `(n, T, 300)` GloVe, `"audio"` `(n, T, 74)`
  COVAREP, `"vision"` `(n, T, 35)` Facet (MOSEI: 713), `"labels"`
  `(n, 1, 1)`, `"id"`;
- MMSA (`data_loader.py`; `aligned_50.pkl`, `unaligned_50.pkl`): the same
  `"text"`, `"audio"`, `"vision"` (text from BERT, 768), plus
  `"regression_labels"` `(n,)`, `"raw_text"`, `"audio_lengths"`,
  `"vision_lengths"` (unaligned files) and `"id"`.

Aligned files put every modality on the word time steps (`T` = 50, zeros
in front); unaligned ones keep each modality's own rate. Both peers set
the audio features' `-inf` entries to 0; so does this loader (and NaN too).

Files are read from `<data_dir>/cmu_mosi/<file>` or `<data_dir>/cmu_mosei/<file>`.
There is no direct download: MultiBench and MMSA share them in Google Drive
folders (links in their READMEs). Licence: the CMU Multimodal SDK data
are released for research; cite the dataset papers.
"""

import os
import pickle

import numpy as np

from mmfusion.datasets.split import Split, dataset_folder

MODALITIES = ("text", "audio", "vision")
SPLITS = ("train", "valid", "test")

__all__ = ["MODALITIES", "SPLITS", "load_cmu_mosei", "load_cmu_mosi", "load_sentiment_pickle",
           "sentiment_metrics"]

_HOW = ("Get the feature pickle from MultiBench or MMSA (Google Drive folders linked in their "
        "READMEs) and put it in that folder.")


def load_sentiment_pickle(path, split="train"):
    """Loads one split of a MultiBench / MulT / MMSA sentiment feature pickle.

    Args:
        path: the pickle file.
        split: `"train"`, `"valid"` or `"test"`.

    Returns:
        A `Split` with inputs `"text"`, `"audio"`, `"vision"` `(n, T_m, d_m)`
        float32 (non-finite values set to 0), `labels` `(n,)` float32
        sentiment in [-3, 3] (`"regression_labels"` if the file has them, else
        `"labels"`), `ids` the segment ids (the columns of a multi-column id
        joined with `_`), and `extras` `"audio_lengths"` /
        `"vision_lengths"` where the file has them.

    Example:

    A two-segment file in MultiBench's layout:

    >>> path = str(getfixture("tmp_path") / "mosi_raw.pkl")
    >>> part = {"text": np.ones((2, 4, 3)), "audio": np.full((2, 4, 2), -np.inf),
    ...         "vision": np.zeros((2, 4, 5)), "labels": np.array([[[1.4]], [[-2.0]]]),
    ...         "id": np.array([["a"], ["b"]])}
    >>> with open(path, "wb") as f:
    ...     pickle.dump({"train": part, "valid": part, "test": part}, f)
    >>> data = load_sentiment_pickle(path, "test")
    >>> data.inputs["audio"].shape, data.labels.tolist(), float(data.inputs["audio"].min())
    ((2, 4, 2), [1.399999976158142, -2.0], 0.0)
    """
    if split not in SPLITS:
        raise ValueError(f"load_sentiment_pickle: split must be one of {SPLITS}; "
                         f"received {split!r}.")
    with open(path, "rb") as file:
        data = pickle.load(file)
    if split not in data:
        raise ValueError(f"{path}: no split {split!r}; the file has {sorted(data)}.")
    part = data[split]
    missing = [m for m in MODALITIES if m not in part]
    label_key = "regression_labels" if "regression_labels" in part else "labels"
    if missing or label_key not in part:
        raise ValueError(f"{path} [{split!r}]: expected fields {list(MODALITIES)} and 'labels' "
                         f"or 'regression_labels'; the split has {sorted(part)}.")
    inputs = {}
    for m in MODALITIES:
        x = np.asarray(part[m], "float32")
        if x.ndim != 3:
            raise ValueError(f"{path} [{split!r}]: modality '{m}' has shape {x.shape}; expected "
                             "(n, time steps, features).")
        inputs[m] = np.where(np.isfinite(x), x, np.float32(0))
    labels = np.asarray(part[label_key], "float32").reshape(len(inputs["text"]), -1)[:, 0]
    ids = None
    if "id" in part:  # MMSA: "video$_$clip" strings; MulT / MultiBench: (n, k) rows
        ids = np.array(["_".join(str(v) for v in row)
                        for row in np.asarray(part["id"]).reshape(len(labels), -1)])
    extras = {k: np.asarray(part[k]) for k in ("audio_lengths", "vision_lengths") if k in part}
    return Split(inputs, labels, ids, extras)


def _loader(folder, title):
    def load(split="train", data_dir=None, file="aligned_50.pkl"):
        path = os.path.join(dataset_folder(folder, data_dir, _HOW), file)
        if not os.path.isfile(path):
            raise ValueError(f"{title}: no file {path}. {_HOW}")
        return load_sentiment_pickle(path, split)

    load.__name__ = f"load_{folder}"
    load.__doc__ = f"""Loads one split of {title} from `<data_dir>/{folder}/<file>`.

    Args:
        split: `"train"`, `"valid"` or `"test"`.
        data_dir: folder of datasets (None: `$MMFUSION_DATA`).
        file: the pickle's file name (MMSA: `aligned_50.pkl`,
            `unaligned_50.pkl`; MultiBench: `{folder[4:]}_raw.pkl`; MulT:
            `{"mosi_data.pkl" if folder == "cmu_mosi" else "mosei_senti_data.pkl"}`).

    Returns:
        A `Split` (see `load_sentiment_pickle`).

    Example:

    >>> root = getfixture("tmp_path")
    >>> (root / "{folder}").mkdir()
    >>> part = {{"text": np.ones((1, 2, 3)), "audio": np.ones((1, 2, 2)),
    ...         "vision": np.ones((1, 2, 4)), "regression_labels": np.array([0.6])}}
    >>> with open(root / "{folder}" / "aligned_50.pkl", "wb") as f:
    ...     pickle.dump({{"train": part, "valid": part, "test": part}}, f)
    >>> {load.__name__}("valid", str(root)).labels.tolist()
    [0.6000000238418579]
    """
    return load


load_cmu_mosi = _loader("cmu_mosi", "CMU-MOSI")
load_cmu_mosei = _loader("cmu_mosei", "CMU-MOSEI")


def sentiment_metrics(labels, predicted):
    """The metrics sentiment papers report, with MMSA's definitions.

    Args:
        labels: `(n,)` true sentiment in [-3, 3].
        predicted: `(n,)` (or `(n, 1)`) predicted sentiment.

    Returns:
        dict: `"mae"`, `"corr"` (Pearson), `"acc2_has0"` / `"f1_has0"`
        (negative vs. non-negative), `"acc2_non0"` / `"f1_non0"` (negative
        vs. positive, true zeros left out), `"acc5"` and `"acc7"` (both sides
        clipped to [-2, 2] / [-3, 3] and rounded to integers). F1 is
        weighted over the two classes.

    Example:

    >>> m = sentiment_metrics(np.array([-3.0, -1.0, 0.0, 2.0]), np.array([-2.6, 0.4, -0.2, 1.8]))
    >>> round(m["mae"], 4), m["acc2_has0"], round(m["acc2_non0"], 4), m["acc7"]
    (0.55, 0.5, 0.6667, 0.75)
    """
    from sklearn.metrics import f1_score

    y = np.asarray(labels, "float64").reshape(-1)
    p = np.asarray(predicted, "float64").reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"sentiment_metrics: {y.shape[0]} labels but {p.shape[0]} predictions.")
    nonzero = y != 0
    metrics = {"mae": float(np.mean(np.abs(p - y))), "corr": float(np.corrcoef(p, y)[0, 1])}
    metrics["acc2_has0"] = float(np.mean((p >= 0) == (y >= 0)))
    metrics["f1_has0"] = float(f1_score(y >= 0, p >= 0, average="weighted"))
    metrics["acc2_non0"] = float(np.mean((p[nonzero] > 0) == (y[nonzero] > 0)))
    metrics["f1_non0"] = float(f1_score(y[nonzero] > 0, p[nonzero] > 0, average="weighted"))
    for classes, bound in ((5, 2.0), (7, 3.0)):
        metrics[f"acc{classes}"] = float(np.mean(np.round(np.clip(p, -bound, bound))
                                                 == np.round(np.clip(y, -bound, bound))))
    return metrics
