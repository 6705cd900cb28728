"""CMU-MOSI / MOSEI on generated feature pickles in the two peer layouts:
MultiBench / MulT (`datasets/affect/get_data.py`: split -> "text", "audio",
"vision" (n, T, d), "labels" (n, 1, 1), "id") and MMSA (`data_loader.py` and
its README: "regression_labels" (n,), "raw_text", "audio_lengths",
"vision_lengths", "id")."""

import pickle

import numpy as np
import pytest

from mmfusion import tasks
from mmfusion.datasets.cmu_mosi import load_cmu_mosi, load_sentiment_pickle, sentiment_metrics

DIMS = {"text": 6, "audio": 4, "vision": 5}


def split_arrays(n, steps, offset):
    rows = offset + np.arange(n, dtype="float64")
    part = {m: np.repeat(rows[:, None, None], steps * d, 1).reshape(n, steps, d)
            for m, d in DIMS.items()}
    part["audio"][:, 0, 0] = -np.inf  # as in the distributed COVAREP features
    part["vision"][:, 1, 1] = np.nan
    return part, np.linspace(-3, 3, n)


def write_multibench(path, n=8, steps=5):
    data = {}
    for k, split in enumerate(("train", "valid", "test")):
        part, labels = split_arrays(n, steps, 100 * k)
        part["labels"] = labels.reshape(n, 1, 1)
        part["id"] = np.array([[f"video{k}", str(i)] for i in range(n)])
        data[split] = part
    with open(path, "wb") as f:
        pickle.dump(data, f)


def write_mmsa(path, n=8, steps=5):
    data = {}
    for k, split in enumerate(("train", "valid", "test")):
        part, labels = split_arrays(n, steps, 100 * k)
        part.update(regression_labels=labels, classification_labels=np.sign(labels) + 1,
                    raw_text=[f"segment {i}" for i in range(n)],
                    id=[f"video{k}$_${i}" for i in range(n)],
                    audio_lengths=list(range(1, n + 1)), vision_lengths=[steps] * n)
        data[split] = part
    with open(path, "wb") as f:
        pickle.dump(data, f)


@pytest.mark.parametrize("write", [write_multibench, write_mmsa])
def test_both_layouts_load_aligned_rows(tmp_path, write):
    path = str(tmp_path / "features.pkl")
    write(path)
    for k, split in enumerate(("train", "valid", "test")):
        data = load_sentiment_pickle(path, split)
        assert {m: x.shape for m, x in data.inputs.items()} == {
            m: (8, 5, d) for m, d in DIMS.items()}
        for m, x in data.inputs.items():
            assert x.dtype == np.float32 and np.isfinite(x).all(), m
            np.testing.assert_array_equal(x[:, 3, 2], 100 * k + np.arange(8))
        assert data.inputs["audio"][0, 0, 0] == 0 and data.inputs["vision"][0, 1, 1] == 0
        np.testing.assert_allclose(data.labels, np.linspace(-3, 3, 8), rtol=1e-6)
    assert data.ids[3] in ("video2_3", "video2$_$3")
    if write is write_mmsa:
        assert data.extras["audio_lengths"].tolist() == list(range(1, 9))


def test_files_under_data_dir_and_errors(tmp_path):
    (tmp_path / "cmu_mosi").mkdir()
    write_multibench(str(tmp_path / "cmu_mosi" / "mosi_raw.pkl"))
    assert len(load_cmu_mosi("test", str(tmp_path), file="mosi_raw.pkl")) == 8
    with pytest.raises(ValueError, match="no file .*aligned_50.pkl"):
        load_cmu_mosi("test", str(tmp_path))
    with pytest.raises(ValueError, match="split must be one of"):
        load_cmu_mosi("dev", str(tmp_path), file="mosi_raw.pkl")
    with open(tmp_path / "bad.pkl", "wb") as f:
        pickle.dump({"train": {"text": np.zeros((2, 3, 1)), "labels": np.zeros(2)}}, f)
    with pytest.raises(ValueError, match="expected fields"):
        load_sentiment_pickle(str(tmp_path / "bad.pkl"))


def test_metrics_against_counts():
    """Binary and 7-class accuracies counted one example at a time; MAE and
    correlation from their formulas."""
    rng = np.random.default_rng(1)
    y = np.round(rng.uniform(-3.5, 3.5, 200) * 2) / 2  # has exact zeros
    p = y + rng.normal(0, 1.2, 200)
    m = sentiment_metrics(y, p)
    has0 = sum((a >= 0) == (b >= 0) for a, b in zip(y, p)) / len(y)
    pairs = [(a, b) for a, b in zip(y, p) if a != 0]
    non0 = sum((a > 0) == (b > 0) for a, b in pairs) / len(pairs)
    acc7 = sum(int(np.round(min(max(a, -3), 3))) == int(np.round(min(max(b, -3), 3)))
               for a, b in zip(y, p)) / len(y)
    assert 0 < len(pairs) < len(y)
    np.testing.assert_allclose([m["acc2_has0"], m["acc2_non0"], m["acc7"]], [has0, non0, acc7])
    np.testing.assert_allclose(m["mae"], np.abs(y - p).mean())
    yc, pc = y - y.mean(), p - p.mean()
    np.testing.assert_allclose(m["corr"], (yc @ pc) / np.sqrt((yc @ yc) * (pc @ pc)))
    assert sentiment_metrics(y, y)["acc7"] == 1.0


@pytest.mark.parametrize("name", ["cmu_mosi", "cmu_mosei"])
def test_task_trains_on_the_pickle(tmp_path, name):
    from mmfusion.recipes.train import train_task

    (tmp_path / name).mkdir()
    write_mmsa(str(tmp_path / name / "aligned_50.pkl"), n=16)
    task = tasks.get(name)
    assert task.head == "regression" and task.num_outputs == 1
    metrics = train_task(name, data_dir=str(tmp_path), output=str(tmp_path / "run"), epochs=1,
                         batch_size=4, verbose=0)
    assert np.isfinite(metrics["test_loss"]) and metrics["modalities"] == ["text", "audio",
                                                                          "vision"]
    data = task.data(data_dir=str(tmp_path))
    assert task.breakdown(data.test, data.test.labels)["test_sentiment"]["mae"] == 0.0
