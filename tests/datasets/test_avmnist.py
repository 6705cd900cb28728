"""AV-MNIST on generated files in MultiBench's layout (`datasets/avmnist/get_data.py`:
`image/{split}_data.npy` (n, 784), `audio/{split}_data.npy` (n, 112, 112),
`{split}_labels.npy`), and the registered task trained for one epoch."""

import numpy as np
import pytest

from mmfusion import tasks
from mmfusion.datasets.avmnist import load_avmnist


def write_avmnist(root, n_train=30, n_test=10, image_layout=(784,)):
    """Files whose every row encodes its digit and its position, so that a
    mispaired row is visible."""
    folder = root / "avmnist" / "avmnist"  # the archive's own top folder
    (folder / "image").mkdir(parents=True)
    (folder / "audio").mkdir()
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        image = np.repeat((labels * 20.0)[:, None], 784, axis=1)
        image[:, 0] = np.arange(n)  # the row number in the first pixel
        audio = np.repeat((labels * 25.0)[:, None], 112 * 112, axis=1).reshape(n, 112, 112)
        audio[:, 111, 111] = np.arange(n)
        np.save(folder / "image" / f"{split}_data.npy", image.reshape((n,) + image_layout))
        np.save(folder / "audio" / f"{split}_data.npy", audio)
        np.save(folder / f"{split}_labels.npy", labels)
    return str(root)


@pytest.mark.parametrize("image_layout", [(784,), (28, 28)])
def test_rows_stay_paired_and_are_normalized(tmp_path, image_layout):
    data = load_avmnist("train", write_avmnist(tmp_path, image_layout=image_layout))
    image, audio = data.inputs["image"], data.inputs["audio"]
    assert image.shape == (30, 28, 28, 1) and audio.shape == (30, 112, 112, 1)
    assert image.dtype == audio.dtype == np.float32
    rows = np.arange(30)
    np.testing.assert_allclose(image[:, 0, 0, 0] * 255, rows, atol=1e-4)
    np.testing.assert_allclose(audio[:, 111, 111, 0] * 255, rows, atol=1e-4)
    np.testing.assert_allclose(image[:, 5, 5, 0] * 255, data.labels * 20.0, atol=1e-4)
    np.testing.assert_allclose(audio[:, 50, 60, 0] * 255, data.labels * 25.0, atol=1e-4)
    raw = load_avmnist("test", str(tmp_path), normalize=False)
    assert len(raw) == 10 and raw.inputs["audio"].max() == 225.0


def test_bad_files_are_errors(tmp_path):
    root = write_avmnist(tmp_path)
    folder = tmp_path / "avmnist" / "avmnist"
    np.save(folder / "test_labels.npy", np.zeros(9))
    with pytest.raises(ValueError, match="10 images, 10 spectrograms and 9 labels"):
        load_avmnist("test", root)
    np.save(folder / "audio" / "test_data.npy", np.zeros((10, 64, 64)))
    with pytest.raises(ValueError, match=r"audio .* has shape \(10, 64, 64\)"):
        load_avmnist("test", root)
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_avmnist("valid", root)
    with pytest.raises(ValueError, match="download_avmnist"):
        load_avmnist("train", str(tmp_path / "elsewhere"))


def test_task_trains_on_the_files(tmp_path):
    from mmfusion.recipes.train import train_task

    root = write_avmnist(tmp_path, n_train=40, n_test=20)
    metrics = train_task("avmnist", data_dir=root, output=str(tmp_path / "run"), epochs=1,
                         batch_size=8, verbose=0)
    assert metrics["modalities"] == ["image", "audio"] and 0 <= metrics["test_accuracy"] <= 1
    assert np.isfinite(metrics["test_loss"])
