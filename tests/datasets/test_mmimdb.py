"""MM-IMDb on a generated `multimodal_imdb.hdf5` in the authors' Fuel layout
(johnarevalo/gmu-mmimdb `make_dataset.py`: `features`, `vgg_features`,
`images` (n, 3, H, W) int32, `sequences` vlen int32, `genres` with its
`target_names` attribute, `imdb_ids` S7, and the root `split` attribute)."""

import json

import h5py
import numpy as np
import pytest

from mmfusion import tasks
from mmfusion.datasets.mmimdb import FILENAME, genre_names, load_mmimdb, multilabel_f1

GENRES = [f"genre_{i}" for i in range(23)]
# The split table deliberately does not follow the row order train, dev, test.
ROWS = {"test": (0, 3), "train": (3, 9), "dev": (9, 11)}


def write_mmimdb(root, n=11, height=8, width=5):
    folder = root / "mmimdb"
    folder.mkdir()
    rows = np.arange(n)
    with h5py.File(folder / FILENAME, "w") as f:
        f.create_dataset("features", data=np.repeat(rows[:, None], 300, 1).astype("float32"))
        f.create_dataset("vgg_features", data=-np.repeat(rows[:, None], 4096, 1).astype("float32"))
        images = np.zeros((n, 3, height, width), "int32")
        images[:, 0] = rows[:, None, None]  # red channel = row number
        images[:, 2, height - 1, width - 1] = 255
        f.create_dataset("images", data=images)
        sequences = f.create_dataset("sequences", (n,), dtype=h5py.vlen_dtype(np.dtype("int32")))
        for i in rows:
            sequences[i] = np.arange(i + 1, dtype="int32")  # row i has i + 1 words: 0 .. i
        genres = np.zeros((n, 23), "int32")
        genres[rows, rows % 23] = 1
        genres[:, 22] = 1
        f.create_dataset("genres", data=genres).attrs["target_names"] = json.dumps(GENRES)
        f.create_dataset("imdb_ids", data=np.array([f"{i:07d}" for i in rows], dtype="S7"))
        table = np.array([(split.encode(), source.encode(), start, stop, True, b"")
                          for split, (start, stop) in ROWS.items()
                          for source in ("features", "genres", "images")],
                         dtype=[("split", "S5"), ("source", "S12"), ("start", "i8"),
                                ("stop", "i8"), ("available", "?"), ("comment", "S1")])
        f.attrs["split"] = table
    return str(root)


def test_splits_follow_the_split_attribute(tmp_path):
    root = write_mmimdb(tmp_path)
    for split, (start, stop) in ROWS.items():
        data = load_mmimdb(split, root)
        rows = np.arange(start, stop)
        np.testing.assert_array_equal(data.inputs["plot"][:, 7], rows)
        np.testing.assert_array_equal(data.inputs["poster"][:, 4095], -rows)
        assert data.ids.tolist() == [f"{i:07d}" for i in rows]
        assert data.labels.shape == (len(rows), 23) and data.labels.dtype == np.float32
        np.testing.assert_array_equal(data.labels[np.arange(len(rows)), rows % 23], 1)
        np.testing.assert_array_equal(data.labels.sum(1), np.where(rows % 23 == 22, 1, 2))
    assert genre_names(root) == GENRES


def test_images_and_sequences(tmp_path):
    root = write_mmimdb(tmp_path)
    data = load_mmimdb("train", root, poster="images", plot="sequences", sequence_length=6)
    posters, plots = data.inputs["poster"], data.inputs["plot"]
    assert posters.shape == (6, 8, 5, 3)  # (n, height, width, channels)
    np.testing.assert_allclose(posters[:, 2, 3, 0] * 255, np.arange(3, 9), atol=1e-4)
    np.testing.assert_array_equal(posters[:, 7, 4, 2], 1.0)
    # Row 3 has words 0..3, stored + 1 so that 0 pads; rows longer than 6 are cut.
    assert plots.dtype == np.int32
    np.testing.assert_array_equal(plots[0], [1, 2, 3, 4, 0, 0])
    np.testing.assert_array_equal(plots[5], [1, 2, 3, 4, 5, 6])


def test_bad_arguments_and_files(tmp_path):
    root = write_mmimdb(tmp_path)
    with pytest.raises(ValueError, match="poster must be one of"):
        load_mmimdb("train", root, poster="pixels")
    with h5py.File(tmp_path / "mmimdb" / FILENAME, "a") as f:
        del f.attrs["split"]
    with pytest.raises(ValueError, match="no 'split' attribute"):
        load_mmimdb("train", root)
    with pytest.raises(ValueError, match="download_mmimdb"):
        load_mmimdb("train", str(tmp_path / "elsewhere"))


def test_f1_against_counts():
    """F1 from true / false positive counts written out, on random predictions."""
    rng = np.random.default_rng(0)
    labels = rng.integers(2, size=(50, 4))
    scores = rng.random((50, 4))
    predicted = scores > 0.5
    tp = (predicted & (labels == 1)).sum(0)
    fp = (predicted & (labels == 0)).sum(0)
    fn = (~predicted & (labels == 1)).sum(0)
    per_label = 2 * tp / (2 * tp + fp + fn)
    f1 = multilabel_f1(labels, scores)
    np.testing.assert_allclose(f1["f1_micro"], 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()))
    np.testing.assert_allclose(f1["f1_macro"], per_label.mean())
    np.testing.assert_allclose(f1["f1_weighted"], np.average(per_label, weights=labels.sum(0)))


def test_task_loads_and_builds_branches(tmp_path):
    task = tasks.get("mmimdb")
    assert task.head == "multilabel" and task.num_outputs == 23
    data = task.data(data_dir=write_mmimdb(tmp_path), seed=0)
    assert {s: len(y) for s, (_, y) in data.splits.items()} == {"train": 4, "validation": 2,
                                                               "test": 3}
    branches = task.branches(data)
    outputs = {m: branches[m](x)["vector"] for m, x in data.splits["train"][0].items()}
    assert {m: tuple(v.shape) for m, v in outputs.items()} == {"poster": (4, 128),
                                                                "plot": (4, 128)}
    perfect = task.breakdown(data.test, data.test.labels)["test_f1"]
    # Genres absent from these 3 movies and never predicted count as F1 = 0 in
    # the macro average (scikit-learn's default, which the GMU code used).
    assert perfect == {"f1_micro": 1.0, "f1_macro": 4 / 23, "f1_weighted": 1.0, "f1_samples": 1.0}


def test_task_trains_with_a_multilabel_head(tmp_path):
    import mmfusion
    from mmfusion.recipes.train import train_task

    metrics = train_task("mmimdb", data_dir=write_mmimdb(tmp_path), output=str(tmp_path / "run"),
                         epochs=1, verbose=0)
    model = mmfusion.load_model(metrics["model_path"])
    assert model.get_layer("prediction").activation.__name__ == "sigmoid"
    assert set(metrics["test_f1"]) == {"f1_micro", "f1_macro", "f1_weighted", "f1_samples"}
    assert 0.0 <= metrics["test_binary_accuracy"] <= 1.0
