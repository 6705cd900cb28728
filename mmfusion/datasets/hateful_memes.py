"""Hateful Memes: is a meme (image + its text) hateful?

The Hateful Memes challenge (Kiela et al., NeurIPS 2020) has 10,000 memes
built so that unimodal models fail: benign "confounders" swap the image or
the text of a hateful meme. Papers report AUROC (the challenge's metric) and
accuracy.

Files, as the challenge distributes them and MMF reads them
(`mmf/datasets/builders/hateful_memes/`), under `<data_dir>/hateful_memes/`:

- `train.jsonl`, `dev_seen.jsonl`, `dev_unseen.jsonl`, `test_seen.jsonl`,
  `test_unseen.jsonl` (phase 1: `dev.jsonl`, `test.jsonl`), one JSON
  object a line: `{"id": 42953, "img": "img/42953.png", "label": 0,
  "text": "..."}` (`label` absent in unlabelled test files);
- `img/`: the meme images (PNG), paths relative to the folder.

Licence: the Hateful Memes Dataset Licence Agreement (non-commercial
research); you must accept it to download the data from DrivenData
(https://www.drivendata.org/competitions/70/hateful-memes-phase-2/data/),
so there is no automatic download.
"""

import json
import os

import numpy as np

from mmfusion.datasets.split import Split, dataset_folder

__all__ = ["hateful_memes_metrics", "load_hateful_memes"]

_HOW = ("Accept the licence and download the data from DrivenData "
        "(https://www.drivendata.org/competitions/70/hateful-memes-phase-2/data/), then unzip "
        "it there (the .jsonl files next to img/).")


def _read_image(path, size):
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB").resize((size, size), Image.BILINEAR)
        return np.asarray(image, "float32") / 255.0


def load_hateful_memes(split="train", data_dir=None, image_size=64, max_examples=None, seed=0):
    """Loads one annotation file of Hateful Memes with its images.

    Args:
        split: the annotation file's name without `.jsonl` (`"train"`,
            `"dev_seen"`, `"dev_unseen"`, `"test_seen"`, `"test_unseen"`,
            `"dev"`, `"test"`).
        data_dir: folder of datasets holding `hateful_memes/` (None:
            `$MMFUSION_DATA`).
        image_size: images are resized to `image_size × image_size` (memes
            have many sizes).
        max_examples: keep a random subset of this many memes (None or 0:
            all), drawn with `seed`.
        seed: seed of the subset.

    Returns:
        A `Split` with inputs `"image"` `(n, image_size, image_size, 3)`
        float32 in [0, 1] and `"text"` `(n,)` strings, `labels` `(n,)` int32
        (1 = hateful; -1 where the file has no label), `ids` the meme ids.

    Example:

    >>> from PIL import Image
    >>> root = getfixture("tmp_path") / "hateful_memes"
    >>> (root / "img").mkdir(parents=True)
    >>> Image.new("RGB", (40, 30), (0, 0, 255)).save(root / "img" / "01235.png")
    >>> row = {"id": 1235, "img": "img/01235.png", "label": 1, "text": "a meme"}
    >>> _ = (root / "dev_seen.jsonl").write_text(json.dumps(row) + "\\n")
    >>> data = load_hateful_memes("dev_seen", str(root.parent), image_size=8)
    >>> data.inputs["image"].shape, data.inputs["text"].tolist(), data.labels.tolist()
    ((1, 8, 8, 3), ['a meme'], [1])
    >>> data.inputs["image"][0, 4, 4].tolist()
    [0.0, 0.0, 1.0]
    """
    folder = dataset_folder("hateful_memes", data_dir, _HOW)
    path = os.path.join(folder, f"{split}.jsonl")
    if not os.path.isfile(path):
        present = sorted(f[:-6] for f in os.listdir(folder) if f.endswith(".jsonl"))
        raise ValueError(f"Hateful Memes: no file {path}; splits there: {present}.")
    with open(path) as file:
        rows = [json.loads(line) for line in file if line.strip()]
    if max_examples and max_examples < len(rows):
        keep = np.sort(np.random.default_rng(seed).permutation(len(rows))[:max_examples])
        rows = [rows[i] for i in keep]
    bad = [r for r in rows if not {"id", "img", "text"} <= set(r)]
    if bad:
        raise ValueError(f"Hateful Memes: {path} has rows without 'id', 'img' or 'text', e.g. "
                         f"{bad[0]}.")
    images = np.stack([_read_image(os.path.join(folder, r["img"]), image_size) for r in rows]
                      ) if rows else np.zeros((0, image_size, image_size, 3), "float32")
    texts = np.array([r["text"] for r in rows], dtype=str)
    labels = np.array([int(r.get("label", -1)) for r in rows], "int32")
    ids = np.array([int(r["id"]) for r in rows], "int64")
    return Split({"image": images, "text": texts}, labels, ids)


def hateful_memes_metrics(labels, scores):
    """AUROC and accuracy, the Hateful Memes challenge's metrics.

    Args:
        labels: `(n,)` 0/1 (1 = hateful).
        scores: `(n, 2)` class probabilities (the hateful column is used),
            or `(n,)` scores of the hateful class; hard 0/1 predictions give
            the AUROC of that single decision.

    Returns:
        dict `"auroc"` and `"accuracy"` (a score above 0.5 predicts hateful).

    Example:

    >>> hateful_memes_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]))
    {'auroc': 0.75, 'accuracy': 0.5}
    """
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, "float64")
    scores = scores[:, 1] if scores.ndim == 2 else scores
    if scores.shape != labels.shape:
        raise ValueError(f"hateful_memes_metrics: {labels.shape[0]} labels but "
                         f"{scores.shape[0]} scores.")
    return {"auroc": float(roc_auc_score(labels, scores)),
            "accuracy": float(np.mean((scores > 0.5) == (labels == 1)))}
