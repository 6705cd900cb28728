"""Helpers of the fusion-layer tests: inputs, NumPy references and checks on
one layer instance. The contract every layer must pass is `mmfusion.testing`."""

import os

import keras
import numpy as np


# Small configurations of the bilinear layers (their defaults are VQA-sized).
SMALL_BILINEAR = {
    "mcb": dict(sketch_size=32),
    "mlb": dict(rank=8),
    "mfb": dict(factor=2),
    "mfh": dict(factor=2),
    "mutan": dict(hidden_size=6, core_size=5, rank=2),
    "tucker": dict(hidden_size=6, core_size=5),
    "block": dict(hidden_size=8, chunks=2, rank=2),
}


def random_inputs(sizes, batch=4, seed=0, time_steps=None):
    """One float32 array per modality: `(batch, d)`, or `(batch, T, d)` where
    `time_steps` is one T for all modalities or a list with one T each."""
    rng = np.random.default_rng(seed)
    if time_steps is None:
        return [rng.normal(size=(batch, d)).astype("float32") for d in sizes]
    steps = time_steps if isinstance(time_steps, (list, tuple)) else [time_steps] * len(sizes)
    return [rng.normal(size=(batch, t, d)).astype("float32") for t, d in zip(steps, sizes)]


def numpy_softmax(x, axis=-1, mask=None):
    """NumPy reference softmax; entries where `mask` (broadcastable) is 0 get
    weight 0 (each slice needs one valid entry)."""
    if mask is not None:
        x = np.where(mask > 0, x, -np.inf)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def numpy_dense(dense, x, activation=None):
    """NumPy reference of a built `keras.layers.Dense` sub-layer applied to `x`."""
    y = x @ keras.ops.convert_to_numpy(dense.kernel)
    if dense.use_bias:
        y = y + keras.ops.convert_to_numpy(dense.bias)
    return y if activation is None else activation(y)


def weights_by_name(layer):
    """`{short weight name: numpy array}` for NumPy references."""
    return {w.path.split("/")[-1]: keras.ops.convert_to_numpy(w) for w in layer.weights}


def assert_save_load_identical(layer, inputs, tmp_path, presence=None):
    """A model around `layer` saved as `.keras` reloads to identical outputs."""
    tensors = [keras.Input(shape=x.shape[1:]) for x in inputs]
    model_inputs = list(tensors)
    kwargs = {}
    if presence is not None:
        p = keras.Input(shape=(len(inputs),))
        model_inputs.append(p)
        kwargs["presence"] = p
    model = keras.Model(model_inputs, layer(tensors, **kwargs))
    feeds = list(inputs) + ([presence] if presence is not None else [])
    before = model.predict(feeds, verbose=0)
    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(feeds, verbose=0), before)
    return reloaded



def assert_absent_modality_ignored(layer, inputs, absent=0, **call_kwargs):
    """With modality `absent` marked absent, changing its input changes nothing,
    and an all-absent row gives a finite output."""
    n = len(inputs)
    batch = inputs[0].shape[0]
    presence = np.ones((batch, n), "float32")
    presence[:, absent] = 0.0
    presence[-1, :] = 0.0  # the last row has no modality at all
    changed = list(inputs)
    changed[absent] = inputs[absent] * 5.0 + 3.0
    first = keras.ops.convert_to_numpy(layer(inputs, presence=presence, **call_kwargs))
    second = keras.ops.convert_to_numpy(layer(changed, presence=presence, **call_kwargs))
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(first)), "all-absent row is not finite"
    full = keras.ops.convert_to_numpy(layer(changed, **call_kwargs))
    assert not np.allclose(full, second), "the absent modality never mattered"




def interaction_accuracies(fuses, size=3, n_train=1000, n_test=500, epochs=6, seed=0):
    """Test accuracies on a pure-interaction task: two modalities
    `x1, x2 ~ N(0, I_size)`, label `x1 · x2 > 0`. Each modality alone is at
    chance, and so is nearly any linear function of `[x1; x2]` (the best
    half-space reaches about 0.56 for `size=3`, 0.63 for scalars).

    All candidates train in one `fit` as separate outputs of one model; they
    share no weights and Adam is per-weight, so each trains as it would alone.

    Args:
        fuses: dict name -> callable mapping the list of two `keras.Input`s
            to a tensor; each gets its own `Dense(1, sigmoid)` head.

    Returns:
        dict name -> test accuracy.
    """
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=(2, n_train + n_test, size)).astype("float32")
    y = (np.sum(x1 * x2, axis=1) > 0).astype("float32")
    inputs = [keras.Input(shape=(size,)), keras.Input(shape=(size,))]
    outputs = {
        name: keras.layers.Dense(1, activation="sigmoid", name=f"head_{name}")(fuse(inputs))
        for name, fuse in fuses.items()
    }
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.02),
                  loss={name: "binary_crossentropy" for name in fuses}, jit_compile=False)
    targets = {name: y[:n_train] for name in fuses}
    model.fit([x1[:n_train], x2[:n_train]], targets, epochs=epochs, batch_size=100, verbose=0)
    predicted = model.predict([x1[n_train:], x2[n_train:]], verbose=0)
    return {name: float(np.mean((p[:, 0] > 0.5) == y[n_train:])) for name, p in predicted.items()}
