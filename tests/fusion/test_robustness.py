"""Robustness of the simple, gated and adaptive layers and of `ModalityDropout`:
every dtype policy with absent modalities and NaN/Inf placeholders, empty
batches, mixed-precision `fit`, and missing-modality robustness on a variant
of the GMU paper's synthetic task in which each modality alone predicts the
label."""

import keras
import numpy as np
import pytest

from mmfusion import fusion
from mmfusion.datasets.synthetic import make_gmu_task
from mmfusion.fusion import Concatenate, ModalityDropout

LAYERS = {
    "concat": {"units": 8}, "weighted_sum": {"units": 8}, "gmu": {"units": 8},
    "autofusion": {"units": 8}, "gan_fusion": {"units": 8},
}
POLICIES = ("float32", "float64", "mixed_float16", "mixed_bfloat16")
SIZES = (6, 5)
PRESENCE = np.array([[1, 1], [1, 0], [0, 1], [0, 0]], "float32")


def _np32(x):
    return keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))


def _inputs_and_placeholders():
    """Inputs, and the same inputs with NaN/Inf in every absent row of `PRESENCE`."""
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(4, d)).astype("float32") for d in SIZES]
    holes = [x.copy() for x in xs]
    for i, x in enumerate(holes):
        x[PRESENCE[:, i] == 0] = [np.nan, np.inf][i]
    return xs, holes


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_policies_absent_modalities_and_placeholders(name, policy):
    xs, holes = _inputs_and_placeholders()
    layer = fusion.get(name, dtype=policy, **LAYERS[name])
    full = layer(xs, training=True)
    masked = layer(xs, presence=PRESENCE, training=True)
    with_holes = layer(holes, presence=PRESENCE, training=True)
    assert keras.backend.standardize_dtype(full.dtype) == layer.compute_dtype
    for out in (full, masked):
        assert np.all(np.isfinite(_np32(out))), f"{name} under {policy}"
    np.testing.assert_array_equal(_np32(with_holes), _np32(masked))
    for loss in layer.losses:  # added losses are float32 scalars, finite
        assert keras.backend.standardize_dtype(loss.dtype) == "float32"
        assert np.isfinite(_np32(loss))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_empty_batch(name):
    layer = fusion.get(name, **LAYERS[name])
    empty = [np.zeros((0, d), "float32") for d in SIZES]
    assert tuple(layer(empty, presence=np.zeros((0, 2), "float32")).shape) == (0, 8)
    assert tuple(layer(empty).shape) == (0, 8)


@pytest.mark.parametrize("policy", POLICIES)
def test_modality_dropout_policies_and_empty_batch(policy):
    layer = ModalityDropout(rate=0.5, seed=0, dtype=policy)
    xs, _ = _inputs_and_placeholders()
    mask = layer(xs, presence=PRESENCE, training=True)
    assert keras.backend.standardize_dtype(mask.dtype) == layer.compute_dtype
    assert np.all(_np32(mask) <= PRESENCE)
    empty = [np.zeros((0, d), "float32") for d in SIZES]
    assert tuple(layer(empty, training=True).shape) == (0, 2)


@pytest.mark.parametrize("name", ["autofusion", "gan_fusion"])
def test_added_losses_fit_under_mixed_precision(name):
    keras.utils.set_random_seed(0)
    xs, _ = _inputs_and_placeholders()
    tensors = [keras.Input(shape=(d,)) for d in SIZES]
    presence = keras.Input(shape=(2,))
    out = fusion.get(name, dtype="mixed_float16", **LAYERS[name])(tensors, presence=presence)
    model = keras.Model(tensors + [presence], keras.layers.Dense(1, dtype="float32")(out))
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(xs + [PRESENCE], np.ones((4, 1)), epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))

MODALITIES = ("visual", "textual")
N_TRAIN, N_TEST, EPOCHS = 2000, 1000, 10


def redundant_task(n, seed=0, noise_std=1.6, offset=4.0):
    """Both modalities carry the class: every example pairs a signal-carrying
    `visual` draw with a signal-carrying `textual` draw of the same class from
    `make_gmu_task` (so each alone gives ~85%, both ~92%). The features are
    shifted by `offset`, so a zeroed (missing) modality is far from the data.

    Returns:
        `(inputs, labels)`: dict modality -> `(n, 2)` float32, `(n,)` int32.
    """
    data = make_gmu_task(n_samples=3 * n, noise_std=noise_std, seed=seed)
    visual, textual, labels = [], [], []
    for c in (0, 1):
        carries = [np.flatnonzero((data.switch == s) & (data.labels == c)) for s in (1, 0)]
        k = min(map(len, carries))
        visual.append(data.inputs["visual"][carries[0][:k]])
        textual.append(data.inputs["textual"][carries[1][:k]])
        labels.append(np.full(k, c, "int32"))
    order = np.random.default_rng(seed).permutation(sum(map(len, labels)))[:n]
    inputs = {"visual": np.concatenate(visual)[order] + offset,
              "textual": np.concatenate(textual)[order] + offset}
    return inputs, np.concatenate(labels)[order]


def _train(model, inputs, labels):
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(inputs, labels, epochs=EPOCHS, batch_size=64, verbose=0)
    return model


def _fusion_model(rate):
    keras.utils.set_random_seed(0)
    xs = [keras.Input(shape=(2,), name=m) for m in MODALITIES]
    presence = keras.Input(shape=(2,), name="presence")
    branches = [keras.layers.Dense(16, activation="relu")(x) for x in xs]
    kept = ModalityDropout(rate=rate, seed=0)(xs, presence=presence)
    fused = Concatenate(units=16, activation="relu")(branches, presence=kept)
    return keras.Model(xs + [presence], keras.layers.Dense(2, activation="softmax")(fused))


def _unimodal_model():
    keras.utils.set_random_seed(0)
    x = keras.Input(shape=(2,))
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Dense(16, activation="relu")(x))
    return keras.Model(x, keras.layers.Dense(2, activation="softmax")(h))


@pytest.mark.slow
def test_modality_dropout_matches_unimodal_models_when_a_modality_is_missing():
    inputs, labels = redundant_task(N_TRAIN + N_TEST)
    train = {m: x[:N_TRAIN] for m, x in inputs.items()}
    test = {m: x[N_TRAIN:] for m, x in inputs.items()}
    y_train, y_test = labels[:N_TRAIN], labels[N_TRAIN:]

    def feeds(data, presence):
        n = len(data["visual"])
        return [data[m] for m in MODALITIES] + [np.tile(np.float32(presence), (n, 1))]

    accuracy = {}
    for rate in (0.0, 0.5):
        model = _train(_fusion_model(rate), feeds(train, [1, 1]), y_train)
        for case, presence in {"full": [1, 1], "no textual": [1, 0], "no visual": [0, 1]}.items():
            _, acc = model.evaluate(feeds(test, presence), y_test, verbose=0)
            accuracy[rate, case] = 100 * acc
    for m in MODALITIES:
        model = _train(_unimodal_model(), train[m], y_train)
        accuracy["only " + m] = 100 * model.evaluate(test[m], y_test, verbose=0)[1]
    print({k: round(v, 1) for k, v in accuracy.items()})

    assert accuracy[0.5, "no textual"] >= accuracy["only visual"] - 3
    assert accuracy[0.5, "no visual"] >= accuracy["only textual"] - 3
    assert accuracy[0.5, "full"] >= accuracy[0.0, "full"] - 2
    # Without dropout the fused model does not cope with a missing modality here.
    assert accuracy[0.0, "no textual"] < accuracy["only visual"] - 10
