"""The presence mask and safe placeholders, read from the data itself."""

import os

import numpy as np
import tensorflow as tf

__all__ = ["is_missing", "presence_from"]

PRESENCE = "presence"


def is_missing(value):
    """Whether one cell stands for a missing value: None, NaN, a blank
    string, or a pandas missing value (`pandas.NA`, `NaT`).

    Example:

    >>> [is_missing(v) for v in (None, float("nan"), "  ", "a", 0.0)]
    [True, True, True, False, False]
    """
    if value is None:
        return True
    if isinstance(value, (str, bytes)):
        return not value.strip()
    if isinstance(value, float):
        return value != value  # NaN
    try:  # pandas.NA / NaT and similar
        return bool(value != value)
    except (TypeError, ValueError):
        return False


def _numeric_present(values):
    flat = values.reshape(len(values), -1)
    return np.isfinite(flat).all(axis=1) if flat.shape[1] else np.ones(len(values), bool)


def _column(name, values, file_root):
    """`(clean values, present)` of one modality's column."""
    if hasattr(values, "to_numpy"):  # pandas Series / DataFrame
        values = values.to_numpy()
    values = np.asarray(values) if not isinstance(values, list) else values
    if isinstance(values, np.ndarray) and values.dtype.kind in "fciub":
        values = values.astype("float32") if values.dtype.kind in "fc" else values
        present = _numeric_present(values) if values.dtype.kind == "f" else np.ones(len(values), bool)
        return _blank(values, present), present
    items = list(values)
    if all(isinstance(v, (str, bytes)) or is_missing(v) for v in items):
        present = np.array([not is_missing(v) for v in items], bool)
        if file_root is not None:
            present &= np.array([p and os.path.exists(os.path.join(file_root, str(v)))
                                 for p, v in zip(present, items)], bool)
        return np.array([v if p else "" for v, p in zip(items, present)], dtype=object), present
    # One array per row (e.g. images), some rows None / NaN.
    present = np.array([v is not None and not (np.ndim(v) == 0 and is_missing(v))
                        for v in items], bool)
    shapes = {np.shape(v) for v, p in zip(items, present) if p}
    if len(shapes) != 1:
        raise ValueError(f"presence_from: modality '{name}' needs one shape for its present "
                         f"rows to make placeholders; found {sorted(shapes) or 'no present row'}.")
    shape = shapes.pop()
    rows = np.stack([np.asarray(v, "float32") if p else np.zeros(shape, "float32")
                     for v, p in zip(items, present)])
    finite = _numeric_present(rows)
    return _blank(rows, finite), present & finite


def _blank(values, ok):
    """Placeholders (`""` or zeros) in the rows where `ok` is False."""
    if values.dtype == object:
        return np.where(ok, values, "")
    return np.where(ok.reshape((-1,) + (1,) * (values.ndim - 1)), values, 0).astype(values.dtype)


def _dataset(ds, modalities, key):
    """Maps a `tf.data` pipeline of dicts (optionally `(dict, labels)`)."""
    def present(x):
        if x.dtype == tf.string:
            ok = tf.strings.length(tf.strings.strip(x)) > 0
            return ok if ok.shape.rank <= 1 else tf.reduce_all(
                ok, axis=list(range(1, ok.shape.rank)))
        if not x.dtype.is_floating:
            return tf.ones(tf.shape(x)[:1], tf.bool)
        ok = tf.math.is_finite(x)
        return tf.reduce_all(ok, axis=list(range(1, ok.shape.rank))) if ok.shape.rank > 1 else ok

    def clean(x, ok):
        ok = tf.reshape(ok, tf.concat([tf.shape(ok), tf.ones([x.shape.rank - 1], tf.int32)], 0))
        return tf.where(ok, x, tf.constant("", tf.string) if x.dtype == tf.string
                        else tf.zeros([], x.dtype))

    def apply(features, *labels):
        if any(features[name].shape.rank == 0 for name in modalities):
            raise ValueError("presence_from: batch the dataset before adding presence.")
        out = dict(features)
        columns = []
        for name in modalities:
            ok = present(features[name])
            out[name] = clean(features[name], ok)
            columns.append(tf.cast(ok, tf.float32))
        out[key] = tf.stack(columns, axis=1)
        return (out, *labels) if labels else out

    return ds.map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def presence_from(inputs, modalities=None, present=None, file_root=None, key=PRESENCE):
    """Builds the `(n, n_modalities)` presence mask from the data and replaces
    absent entries with safe placeholders, so branches never see NaN.

    A row of a modality is absent if it is `None`, NaN (any non-finite value
    of a numeric row, e.g. an image filled with NaN), an empty or blank
    string, a pandas missing value, or (strings, with `file_root`) a path to
    a file that does not exist. Placeholders: zeros for numbers (per-row
    arrays: zeros of the present rows' shape), `""` for strings.

    Args:
        inputs: dict modality -> column (NumPy array, list, pandas Series),
            a pandas DataFrame, or a batched `tf.data.Dataset` of such dicts
            (optionally `(dict, labels)` pairs; only numbers and strings).
        modalities: the modalities of the mask, in its column order (pass
            `list(branches)` for `build_fusion_model`); default: all inputs,
            in their order.
        present: optional dict modality -> boolean column saying which rows
            are present (combined with what is found in the data).
        file_root: folder of the file paths in string columns; a path that
            does not exist there marks the row absent. A folder applies to
            every string column; a dict modality -> folder to those
            modalities only (the others, e.g. texts, are not paths). None:
            not checked.
        key: name of the mask in the result (the model input `"presence"`).

    Returns:
        A dict like `inputs` with clean columns and `key` -> float32 mask
        (1: present), or for a dataset, the mapped dataset.

    Example:

    >>> import numpy as np
    >>> data = {"image": [np.ones((2, 2)), None, np.full((2, 2), np.nan)],
    ...         "text": np.array(["red shoe", "", "hat"], dtype=object),
    ...         "price": np.array([[1.0], [2.0], [np.nan]])}
    >>> out = presence_from(data, modalities=["image", "text", "price"])
    >>> out["presence"].tolist()
    [[1.0, 1.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    >>> out["image"].sum(axis=(1, 2)).tolist(), out["price"][:, 0].tolist()
    ([4.0, 0.0, 0.0], [1.0, 2.0, 0.0])
    """
    if isinstance(inputs, tf.data.Dataset):
        spec = inputs.element_spec
        names = list(modalities or (spec[0] if isinstance(spec, tuple) else spec))
        if present is not None or file_root is not None:
            raise ValueError("presence_from: `present` and `file_root` take NumPy or pandas data; "
                             "for a dataset, put the flags in the data (NaN or '').")
        return _dataset(inputs, names, key)
    names = list(modalities or inputs)
    columns = list(inputs.columns) if hasattr(inputs, "columns") else list(inputs)
    unknown = [m for m in names if m not in columns]
    if unknown:
        raise ValueError(f"presence_from: no column for modalities {unknown}; "
                         f"the inputs have {columns}.")
    out = {name: inputs[name] for name in columns}
    mask = []
    for name in names:
        root = file_root.get(name) if isinstance(file_root, dict) else file_root
        out[name], ok = _column(name, inputs[name], root)
        if present is not None and name in present:
            flags = np.asarray(present[name], bool).reshape(-1)
            if len(flags) != len(ok):
                raise ValueError(f"presence_from: `present['{name}']` has {len(flags)} rows; "
                                 f"modality '{name}' has {len(ok)}.")
            ok = ok & flags
            out[name] = _blank(out[name], ok)
        mask.append(ok)
    out[key] = np.stack(mask, axis=1).astype("float32")
    return out
