"""easy-VQA: visual question answering on generated shape images.

The `easy-vqa` package (MIT licence, Victor Zhou) ships the whole dataset in
its wheel: 64×64 RGB images of one shape (circle, rectangle or triangle) in
one of eight colours, 4,000 for training and 1,000 for test, with 38,575 and
9,673 questions about them ("what color is the shape?", "is there a red
shape?", ...) and 13 possible answers (shapes, colours, yes / no). The
answer needs both modalities: the image alone does not say what was asked,
the question alone does not say what is shown.

Files are read from `<data_dir>/easy_vqa/{train,test}/` when that folder
exists (the package's own layout: `questions.json` with `[question, answer,
image_id]` rows and `images/<image_id>.png`), else from the installed
`easy-vqa` package (`pip install easy-vqa`).
"""

import json
import os

import numpy as np

from mmfusion.datasets.split import Split

__all__ = ["ANSWERS", "easy_vqa_folder", "load_easy_vqa"]

# The package's answers.txt, in its order (label i = ANSWERS[i]).
ANSWERS = ("circle", "green", "red", "gray", "yes", "teal", "black", "rectangle", "yellow",
           "triangle", "brown", "blue", "no")


def easy_vqa_folder(data_dir=None):
    """The folder holding easy-VQA's `train/` and `test/` folders.

    `<data_dir>/easy_vqa` if it exists (`data_dir` defaults to the
    `MMFUSION_DATA` environment variable), else the data inside the installed
    `easy-vqa` package.

    Raises:
        ValueError: if neither is there (the message says how to get it).

    Example:

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(root, "easy_vqa", "train"))
    >>> easy_vqa_folder(root) == os.path.join(root, "easy_vqa")
    True
    """
    data_dir = data_dir if data_dir is not None else os.environ.get("MMFUSION_DATA")
    if data_dir is not None:
        folder = os.path.join(data_dir, "easy_vqa")
        if os.path.isdir(folder):
            return folder
    try:
        import easy_vqa
    except ImportError:
        raise ValueError(
            "easy-VQA was not found: install the package (`pip install easy-vqa`, MIT "
            "licence; its wheel holds the whole dataset) or put its train/ and test/ "
            f"folders under <data_dir>/easy_vqa (data_dir={data_dir!r})."
        ) from None
    return os.path.join(os.path.dirname(easy_vqa.__file__), "data")


def _read_images(folder, image_ids, size):
    """`(len(image_ids), size, size, 3)` float32 images in [0, 1], each file read once."""
    from PIL import Image

    unique, inverse = np.unique(image_ids, return_inverse=True)
    images = np.empty((len(unique), size, size, 3), "float32")
    for row, image_id in enumerate(unique):
        path = os.path.join(folder, "images", f"{image_id}.png")
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.BILINEAR)
            images[row] = np.asarray(image, "float32") / 255.0
    return images[inverse]


def load_easy_vqa(split="train", data_dir=None, image_size=32, max_questions=None, seed=0):
    """Loads one split of easy-VQA, one example per question.

    Args:
        split: `"train"` or `"test"` (the package's own split: test images
            never appear in training).
        data_dir: see `easy_vqa_folder`.
        image_size: images are resized to `image_size × image_size`
            (64 keeps the originals).
        max_questions: keep a random subset of this many questions (None or
            0: all); the subset is drawn with `seed`.
        seed: seed of the subset.

    Returns:
        A `mmfusion.datasets.split.Split`, one row per question: `inputs`
        `"image"` `(n, size, size, 3)` float32 in [0, 1] (the image the
        question is about) and `"question"` `(n,)` strings, `labels` the
        `(n,)` int32 answer ids (`ANSWERS[label]`), `ids` the `(n,)` image ids.

    Example:

    A two-question dataset in the package's layout:

    >>> import json, tempfile
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(root, "easy_vqa", "test", "images"))
    >>> Image.new("RGB", (64, 64), (255, 0, 0)).save(
    ...     os.path.join(root, "easy_vqa", "test", "images", "3.png"))
    >>> rows = [["what color is the shape?", "red", 3], ["is there a circle?", "no", 3]]
    >>> with open(os.path.join(root, "easy_vqa", "test", "questions.json"), "w") as f:
    ...     json.dump(rows, f)
    >>> data = load_easy_vqa("test", data_dir=root, image_size=8)
    >>> data.inputs["image"].shape, [ANSWERS[i] for i in data.labels]
    ((2, 8, 8, 3), ['red', 'no'])
    >>> data.inputs["image"][0, 0, 0].tolist()
    [1.0, 0.0, 0.0]
    """
    if split not in ("train", "test"):
        raise ValueError(f"load_easy_vqa: split must be 'train' or 'test'; received {split!r}.")
    folder = os.path.join(easy_vqa_folder(data_dir), split)
    with open(os.path.join(folder, "questions.json")) as file:
        rows = json.load(file)
    if max_questions and max_questions < len(rows):
        keep = np.sort(np.random.default_rng(seed).permutation(len(rows))[:max_questions])
        rows = [rows[i] for i in keep]
    unknown = sorted({answer for _, answer, _ in rows} - set(ANSWERS))
    if unknown:
        raise ValueError(f"load_easy_vqa: {folder} has answers outside ANSWERS: {unknown}.")
    questions = np.array([question for question, _, _ in rows])
    labels = np.array([ANSWERS.index(answer) for _, answer, _ in rows], "int32")
    image_ids = np.array([image_id for _, _, image_id in rows], "int32")
    images = _read_images(folder, image_ids, image_size)
    return Split({"image": images, "question": questions}, labels, ids=image_ids)
