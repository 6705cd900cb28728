"""presence_from: the mask and placeholders from None, NaN, empty strings,
missing files and explicit flags, for NumPy, pandas and tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from mmfusion.datasets import presence_from


def product_rows():
    nan_image = np.full((2, 2, 3), np.nan)
    return {
        "tabular": np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, 4.0], [5.0, 6.0]]),
        "image": [np.ones((2, 2, 3)), None, nan_image, np.full((2, 2, 3), 2.0)],
        "text": np.array(["red shoe", "blue hat", "  ", None], dtype=object),
    }


def test_numpy_rows_become_mask_and_finite_placeholders():
    out = presence_from(product_rows(), modalities=["image", "text", "tabular"])
    np.testing.assert_array_equal(out["presence"], [[1, 1, 1], [0, 1, 0], [0, 0, 1], [1, 0, 1]])
    assert out["presence"].dtype == np.float32
    assert np.isfinite(out["image"]).all() and out["image"].shape == (4, 2, 2, 3)
    np.testing.assert_array_equal(out["image"].reshape(4, -1).max(axis=1), [1, 0, 0, 2])
    np.testing.assert_array_equal(out["tabular"], [[1, 2], [0, 0], [3, 4], [5, 6]])
    assert out["text"].tolist() == ["red shoe", "blue hat", "", ""]


def test_explicit_flags_and_missing_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    data = {"image": np.array(["a.png", "gone.png", "a.png"], dtype=object),
            "tabular": np.ones((3, 2))}
    out = presence_from(data, file_root=str(tmp_path),
                        present={"tabular": [True, True, False]})
    np.testing.assert_array_equal(out["presence"], [[1, 1], [0, 1], [1, 0]])
    assert out["image"].tolist() == ["a.png", "", "a.png"]
    np.testing.assert_array_equal(out["tabular"], [[1, 1], [1, 1], [0, 0]])


def test_file_root_per_modality_leaves_text_columns_alone(tmp_path):
    """A folder for every string column would take the texts for missing
    files (all absent); a dict checks the image paths only."""
    (tmp_path / "a.png").write_bytes(b"x")
    data = {"image": np.array(["a.png", "gone.png", ""], dtype=object),
            "text": np.array(["red shoe", "", "blue hat"], dtype=object)}
    everywhere = presence_from(data, file_root=str(tmp_path))
    np.testing.assert_array_equal(everywhere["presence"][:, 1], [0, 0, 0])
    out = presence_from(data, file_root={"image": str(tmp_path)})
    np.testing.assert_array_equal(out["presence"], [[1, 1], [0, 0], [0, 1]])
    assert out["text"].tolist() == ["red shoe", "", "blue hat"]


def test_dataset_pipeline_gets_the_same_mask():
    numeric = {"tabular": product_rows()["tabular"],
               "image": np.stack([np.ones((2, 2)), np.full((2, 2), np.nan), np.zeros((2, 2)),
                                  np.full((2, 2), np.inf)]),
               "text": np.array(["a", "", "b c", " "])}
    ds = tf.data.Dataset.from_tensor_slices((numeric, np.arange(4))).batch(3)
    batches = list(presence_from(ds, modalities=["image", "text", "tabular"]))
    mask = np.concatenate([x["presence"].numpy() for x, _ in batches])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 0], [1, 1, 1], [0, 0, 1]])
    images = np.concatenate([x["image"].numpy() for x, _ in batches])
    assert np.isfinite(images).all() and images.sum() == 4
    assert [y for _, ys in batches for y in ys.numpy().tolist()] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="batch the dataset"):
        list(presence_from(tf.data.Dataset.from_tensor_slices({"t": ["a"]})))


def test_pandas_frame_and_series_missing_values():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({
        "price": pd.array([1.0, None, 3.0, 4.0], dtype="Float64"),  # pandas.NA
        "text": ["a", None, "", float("nan")],
        "seen": pd.to_datetime(["2026-01-01", None, "2026-01-03", "2026-01-04"]),  # NaT
    })
    out = presence_from(frame, modalities=["price", "text"])
    np.testing.assert_array_equal(out["presence"], [[1, 1], [0, 0], [1, 0], [1, 0]])
    assert out["price"].dtype == np.float32 and out["price"].tolist() == [1.0, 0.0, 3.0, 4.0]
    assert out["text"].tolist() == ["a", "", "", ""]
    series = presence_from({"seen": frame["seen"], "text": frame["text"]})
    np.testing.assert_array_equal(series["presence"], [[1, 1], [0, 0], [1, 0], [1, 0]])


def test_errors_name_the_modality():
    with pytest.raises(ValueError, match="no column for modalities \\['audio'\\]"):
        presence_from(product_rows(), modalities=["audio"])
    with pytest.raises(ValueError, match="modality 'image' needs one shape"):
        presence_from({"image": [np.ones((2, 2)), np.ones((3, 3))]})
    with pytest.raises(ValueError, match="has 2 rows"):
        presence_from(product_rows(), present={"text": [True, False]})
