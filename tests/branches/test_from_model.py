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
from mmfusion.keras_internals import keras_mask

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
    a, b = keras.Input((2,), name="a"), keras.Input((2,), name="b")
    with pytest.raises(ValueError, match=r"need its inputs \['a', 'b'\]; give `input_shape`"):
        from_model(keras.Model([a, b], keras.layers.Add()([a, b])))

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="not a functional"):
        from_model(Subclassed())


def test_cut_keeps_only_the_inputs_the_taps_need():
    """An encoder-decoder model tapped on its encoder: the branch has the
    encoder input only and the encoder's parameters only."""
    keras.utils.set_random_seed(2)
    source, target = keras.Input((4,), name="source"), keras.Input((3,), name="target")
    encoded = keras.layers.Dense(5, activation="relu", name="encoder")(source)
    decoded = keras.layers.Dense(6, name="decoder")(keras.layers.Concatenate()([encoded, target]))
    model = keras.Model([target, source], {"encoded": encoded, "decoded": decoded})
    branch = from_model(model, taps={"encoded": "encoder"}, name="audio")
    assert [t.name for t in branch.inputs] == ["audio"]
    assert tap_shapes(branch)["encoded"] == (None, 5)
    w, b = model.get_layer("encoder").get_weights()
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(branch(x)["encoded"]),
                               np.maximum(x @ w + b, 0), rtol=1e-5, atol=1e-6)
    assert branch.count_params() == w.size + b.size


class _Feeds(keras.layers.Layer):
    """Token ids -> {"ids": ids, "mask": ids != 0} (test helper)."""

    def call(self, ids):
        return {"ids": ids, "mask": keras.ops.cast(keras.ops.not_equal(ids, 0), "int32")}


def _padded_encoder():
    ids, mask = keras.Input((None,), dtype="int32", name="ids"), keras.Input((None,), name="mask")
    embedded = keras.layers.Embedding(10, 3, name="embed")(ids)
    scaled = keras.layers.Multiply(name="scaled")([embedded, keras.layers.Reshape((-1, 1))(mask)])
    return keras.Model({"ids": ids, "mask": mask}, keras.layers.Dense(2, name="proj")(scaled))


def test_dict_input_model_fed_by_preprocess_with_padding():
    keras.utils.set_random_seed(3)
    model = _padded_encoder()
    branch = from_model(model, taps={"embedded": "embed", "projected": "proj"}, preprocess=_Feeds(),
                        input_shape=(4,), input_dtype="int32", padding="mask", name="text")
    assert branch.input.name == "text" and branch.input.dtype == "int32"
    assert all(keras_mask(branch.output[tap]) is not None for tap in ("embedded", "projected"))
    ids = np.array([[3, 4, 0, 0], [5, 6, 7, 1]], "int32")
    table = model.get_layer("embed").get_weights()[0]
    w, b = model.get_layer("proj").get_weights()
    real = (ids != 0)[..., None]
    projected = (table[ids] * real) @ w + b
    out = {k: keras.ops.convert_to_numpy(v) for k, v in branch(ids).items()}
    np.testing.assert_allclose(out["projected"], projected, rtol=1e-5, atol=1e-6)
    expected = (projected * real).sum(1) / real.sum(1)  # mean over real tokens only
    np.testing.assert_allclose(out["vector"], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out["vector"][0], projected[0].mean(0))  # the padding would change it
    peak = from_model(model, taps={"projected": "proj"}, preprocess=_Feeds(), input_shape=(4,),
                      input_dtype="int32", padding="mask", vector="max", name="text")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(peak(ids)["vector"]),
                               np.where(real, projected, -np.inf).max(1), rtol=1e-5, atol=1e-6)


def test_dict_input_errors_name_the_problem():
    model = _padded_encoder()
    kwargs = dict(taps={"projected": "proj"}, input_shape=(4,), input_dtype="int32")
    with pytest.raises(ValueError, match=r"must be a key of the dict.*\['ids', 'mask'\]"):
        from_model(model, preprocess=_Feeds(), padding="padding_mask", **kwargs)
    with pytest.raises(ValueError, match=r"must return the inputs \['ids', 'mask'\]"):
        from_model(model, preprocess=keras.layers.Identity(), **kwargs)
    with pytest.raises(ValueError, match="would keep the padding"):
        from_model(model, preprocess=_Feeds(), padding="mask", vector="flatten", **kwargs)


def test_preprocess_does_not_put_the_backbone_in_training_mode(tmp_path):
    """`keras.layers.Resizing` defaults to `training=True`; as `preprocess` it
    must not make a direct call normalize with batch statistics."""
    keras.utils.set_random_seed(4)
    x_in = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(2, 1, name="conv")(x_in)
    normed = keras.layers.BatchNormalization(name="bn")(conv)
    model = keras.Model(x_in, normed)
    branch = from_model(model, taps=["bn"], preprocess=keras.layers.Resizing(4, 4),
                        input_shape=(8, 8, 1))
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(4, 8, 8, 1)).astype("float32")
    direct = keras.ops.convert_to_numpy(branch(x)["bn"])
    np.testing.assert_allclose(direct, keras.ops.convert_to_numpy(branch(x, training=False)["bn"]),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.get_layer("bn").moving_mean.numpy(), 0.0)  # not updated
    assert not np.allclose(direct, keras.ops.convert_to_numpy(branch(x, training=True)["bn"]))
    direct = keras.ops.convert_to_numpy(branch(x)["bn"])
    branch.save(tmp_path / "b.keras")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(keras.saving.load_model(tmp_path / "b.keras")(x)["bn"]), direct)
