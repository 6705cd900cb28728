"""`from_model`: a functional model or `keras.applications` backbone
(random weights, no download) becomes a branch cut after its deepest tap.

Numbers are checked against NumPy computations from the model's own weights
and against the uncut model's predictions."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmfusion.branches import from_model, tabular_mlp, tap_shapes
from mmfusion.compose import build_fusion_model

STAGE_1, STAGE_3 = "expanded_conv_project_bn", "expanded_conv_2_project_bn"


@pytest.fixture(scope="module")
def mobilenet():
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV3Small(weights=None, include_top=False,
                                               input_shape=(32, 32, 3))


def images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_cut_after_early_tap_keeps_a_fraction_of_the_parameters(mobilenet):
    full = mobilenet.count_params()
    early = from_model(mobilenet, taps={"stage_1": STAGE_1})
    two = from_model(mobilenet, taps={"stage_1": STAGE_1, "stage_3": STAGE_3}, vector="flatten")
    assert full == 939120
    assert early.count_params() < full / 2 and two.count_params() < full / 2
    assert early.count_params() < two.count_params()
    assert tap_shapes(two) == {"stage_1": (None, 8, 8, 16), "stage_3": (None, 4, 4, 24),
                               "vector": (None, 384)}
    # No unused parameters: every trainable weight gets a gradient.
    with tf.GradientTape() as tape:
        out = two(images(2), training=True)
        loss = tf.reduce_sum(out["vector"]) + tf.reduce_sum(out["stage_1"])
    grads = tape.gradient(loss, two.trainable_weights)
    assert two.trainable_weights and all(g is not None for g in grads)


def test_deepest_layer_tap_equals_the_full_model(mobilenet):
    x = images()
    full = keras.ops.convert_to_numpy(mobilenet(x))
    branch = from_model(mobilenet, taps={"top": mobilenet.layers[-1].name}, vector="avg")
    assert branch.count_params() == mobilenet.count_params()
    out = {k: keras.ops.convert_to_numpy(v) for k, v in branch(x).items()}
    np.testing.assert_allclose(out["top"], full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["vector"], full.mean(axis=(1, 2)), rtol=1e-5, atol=1e-5)
    whole = from_model(mobilenet, vector="max")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(whole(x)["vector"]),
                               full.max(axis=(1, 2)), rtol=1e-5, atol=1e-5)


def test_resize_and_rescale_happen_before_the_model(mobilenet):
    small = images(size=16) / 255.0
    branch = from_model(mobilenet, taps={"stage_1": STAGE_1}, input_shape=(16, 16, 3),
                        resize=(32, 32), rescale=255.0)
    # The branch equals the model applied to the resized, rescaled images,
    # also when called directly: no layer switches BatchNormalization to
    # training mode (Keras's own `Resizing` does) or updates its statistics.
    moving = [w.numpy().copy() for w in branch.non_trainable_weights]
    resized = keras.ops.convert_to_numpy(keras.ops.image.resize(small, (32, 32))) * 255.0
    reference = keras.Model(mobilenet.input, mobilenet.get_layer(STAGE_1).output)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(branch(small)["stage_1"]),
                               keras.ops.convert_to_numpy(reference(resized)),
                               rtol=1e-4, atol=1e-4)
    for before, after in zip(moving, branch.non_trainable_weights):
        np.testing.assert_array_equal(before, after.numpy())


def test_small_model_taps_match_numpy():
    keras.utils.set_random_seed(1)
    x_in = keras.Input((5,))
    h1 = keras.layers.Dense(4, activation="relu", name="hidden")(x_in)
    h2 = keras.layers.Dense(3, activation="tanh", name="out")(h1)
    extra = keras.layers.Dense(50, name="unused_head")(h2)
    model = keras.Model(x_in, extra)
    branch = from_model(model, taps=["hidden"], rescale=(2.0, -1.0), name="tabular")
    x = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    w1, b1 = model.get_layer("hidden").get_weights()
    hidden = np.maximum((2 * x - 1) @ w1 + b1, 0)
    out = {k: keras.ops.convert_to_numpy(v) for k, v in branch(x).items()}
    assert list(out) == ["hidden", "vector"] and branch.input.name == "tabular"
    np.testing.assert_allclose(out["hidden"], hidden, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["vector"], hidden, rtol=1e-5, atol=1e-6)  # rank 2: as is
    assert branch.count_params() == w1.size + b1.size
    custom = from_model(model, taps={"h": "hidden", "o": "out"},
                        vector=keras.layers.Dense(2, name="proj"))
    assert tap_shapes(custom) == {"h": (None, 4), "o": (None, 3), "vector": (None, 2)}


def test_branch_reloads_identically_and_composes(mobilenet, tmp_path):
    keras.utils.set_random_seed(0)
    image = from_model(mobilenet, taps={"stage_1": STAGE_1}, input_shape=(16, 16, 3),
                       resize=(32, 32))
    model = build_fusion_model({"image": image, "tabular": tabular_mlp(3, units=(4,))},
                               fusion="concat", num_outputs=2, placement="late")
    feeds = {"image": images(8, size=16), "tabular": np.ones((8, 3), "float32")}
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(feeds, np.arange(8) % 2, epochs=1, verbose=0)
    assert model.count_params() < mobilenet.count_params() / 2
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(reloaded.predict(feeds, verbose=0),
                                  model.predict(feeds, verbose=0))


def test_errors_name_the_problem(mobilenet):
    with pytest.raises(ValueError, match="no layer 'nope'"):
        from_model(mobilenet, taps={"a": "nope"})
    with pytest.raises(ValueError, match="vector must be one of"):
        from_model(mobilenet, vector="mean")
    with pytest.raises(ValueError, match="final tap"):
        from_model(mobilenet, taps={"vector": STAGE_1})
    a, b = keras.Input((2,)), keras.Input((2,))
    with pytest.raises(ValueError, match="2 inputs"):
        from_model(keras.Model([a, b], keras.layers.Add()([a, b])))

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="not a functional"):
        from_model(Subclassed())
