"""build_fusion_model: every registered vector fusion layer at every placement
(builds, fits, reloads identically), the numbers each placement computes,
presence masks, spec objects, Keras masks of padded taps, and clear errors."""

import os

import keras
import numpy as np
import pytest

from mmfusion import fusion
from mmfusion.branches import image_cnn, tabular_mlp, text_lstm
from mmfusion.fusion import ModalityDropout
from mmfusion.compose import (Early, FusionPoint, Head, ImputeAbsent, LearnedAbsence, Late,
                              PresenceColumns, StackPresence, ZeroAbsent, build_fusion_model)
from mmfusion import keras_internals

N = 8
RNG = np.random.default_rng(0)
X = {"a": RNG.normal(size=(N, 3)).astype("float32"),
     "b": RNG.random((N, 4, 4, 1)).astype("float32")}
Y = np.arange(N) % 3


def branches():
    return {"a": tabular_mlp(3, units=(5, 4), name="a"),
            "b": image_cnn((4, 4, 1), filters=(2,), name="b")}


def predict(model, x):
    return model.predict(x, verbose=0, batch_size=N)


def sub_outputs(model, names):
    """Outputs of the named layers of `model` on X."""
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outputs = probe.predict(X, verbose=0, batch_size=N)
    return [np.asarray(o) for o in outputs] if len(names) > 1 else [np.asarray(outputs)]


PLACEMENTS = {
    "early": (2, lambda name: dict(fusion=name, placement="early")),
    "intermediate": (2, lambda name: dict(fusion=name, taps={"a": "dense_1", "b": "block_1"})),
    "late": (2, lambda name: dict(fusion=name, placement="late")),
    "multi_point": (3, lambda name: dict(fusion=[
        FusionPoint({"a": "dense_1", "b": "block_1"}, name, activation="relu"),
        FusionPoint({"a": "vector", "b": "vector"}, name, activation="relu")])),
}


@pytest.mark.slow
@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_every_vector_fusion_layer_builds_fits_and_reloads(placement, tmp_path):
    n_inputs, kwargs = PLACEMENTS[placement]
    built = []
    for name in fusion.available(input_rank=2):
        if not fusion.get_class(name).accepts(n_inputs):
            continue
        keras.utils.set_random_seed(0)
        model = build_fusion_model(branches(), num_outputs=3, units=8, head_units=(),
                                   **kwargs(name))
        # Eager: one step on tiny data is faster than tracing a train function.
        model.compile("adam", "sparse_categorical_crossentropy", run_eagerly=True)
        history = model.fit(X, Y, epochs=1, batch_size=N, verbose=0).history
        assert np.isfinite(history["loss"][0]), name
        before = np.asarray(model(X))
        np.testing.assert_allclose(before.sum(axis=1), 1.0, rtol=1e-5)
        path = os.path.join(str(tmp_path), f"{name}.keras")
        model.save(path)
        np.testing.assert_array_equal(np.asarray(keras.saving.load_model(path)(X)), before,
                                      err_msg=name)
        built.append(name)
    assert "concat" in built and "gmu" in built


def test_intermediate_concat_is_the_head_of_the_concatenated_taps():
    model = build_fusion_model(branches(), "concat", num_outputs=3, units=None,
                               taps={"a": "dense_1", "b": "block_1"}, head_units=())
    a_branch = model.get_layer("a_branch")
    b_branch = model.get_layer("b_branch")
    dense_1 = np.asarray(a_branch(X["a"])["dense_1"])
    block_1 = np.asarray(b_branch(X["b"])["block_1"]).reshape(N, -1)  # tap_pooling="flatten"
    (fused,) = sub_outputs(model, ["fusion_1_concat"])
    np.testing.assert_allclose(fused, np.concatenate([dense_1, block_1], axis=1), atol=1e-6)
    w, b = model.get_layer("head_logits").get_weights()
    logits = fused @ w + b
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(predict(model, X), expected, rtol=1e-4, atol=1e-6)


def test_avg_tap_pooling_averages_the_feature_map():
    model = build_fusion_model(branches(), "concat", units=None, tap_pooling="avg",
                               taps={"a": "vector", "b": "block_1"}, head_units=())
    block_1 = np.asarray(model.get_layer("b_branch")(X["b"])["block_1"])
    (pooled,) = sub_outputs(model, ["b_block_1_avg"])
    np.testing.assert_allclose(pooled, block_1.mean(axis=(1, 2)), atol=1e-6)


def test_early_fusion_joins_the_flattened_inputs():
    model = build_fusion_model({"a": (3,), "b": (4, 4, 1)}, "concat", placement="early",
                               units=None, head_units=())
    (fused,) = sub_outputs(model, ["early_fusion"])
    np.testing.assert_allclose(fused, np.concatenate([X["a"], X["b"].reshape(N, -1)], axis=1))
    assert [t.name for t in model.inputs] == ["a", "b"]


def test_late_average_is_the_mean_of_the_modality_logits():
    model = build_fusion_model(branches(), "average", num_outputs=3, placement="late",
                               head_units=(4,))
    logits_a, logits_b = sub_outputs(model, ["a_head_logits", "b_head_logits"])
    mean = (logits_a + logits_b) / 2
    expected = np.exp(mean) / np.exp(mean).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(predict(model, X), expected, rtol=1e-4, atol=1e-6)
    assert not model.get_layer("late_average").trainable_weights


def test_late_weighted_learns_modality_weights_that_sum_to_one():
    model = build_fusion_model(branches(), "weighted", num_outputs=3, placement="late")
    layer = model.get_layer("late_weighted")
    assert len(layer.trainable_weights) == 1
    model.compile(keras.optimizers.Adam(0.1), "sparse_categorical_crossentropy")
    model.fit(X, Y, epochs=3, batch_size=N, verbose=0)
    theta = keras.ops.convert_to_numpy(keras.ops.softmax(layer.modality_logits))
    assert abs(theta[0] - 0.5) > 1e-4 and abs(theta.sum() - 1) < 1e-6


def test_multi_point_chain_is_mfas_form():
    """h_1 = relu(W_1 [a.dense_1; b.block_1]), h_2 = relu(W_2 [a.vector; b.vector; h_1])."""
    points = [FusionPoint({"a": "dense_1", "b": "block_1"}, "concat", "relu"),
              FusionPoint({"a": "vector", "b": "vector"}, "concat", "relu")]
    model = build_fusion_model(branches(), points, units=6, head_units=())
    taps_a = model.get_layer("a_branch")(X["a"])
    taps_b = model.get_layer("b_branch")(X["b"])
    w1, b1 = model.get_layer("fusion_1_concat").get_weights()
    w2, b2 = model.get_layer("fusion_2_concat").get_weights()
    h1 = np.maximum(np.concatenate([np.asarray(taps_a["dense_1"]),
                                    np.asarray(taps_b["block_1"]).reshape(N, -1)], 1) @ w1 + b1, 0)
    joined = np.concatenate([np.asarray(taps_a["vector"]), np.asarray(taps_b["vector"]), h1], 1)
    assert w2.shape == (4 + 8 + 6, 6)
    (h2,) = sub_outputs(model, ["fusion_2_activation"])
    np.testing.assert_allclose(h2, np.maximum(joined @ w2 + b2, 0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("placement", ["early", "intermediate", "late"])
def test_absent_modality_is_ignored_with_presence(placement):
    """With presence[:, b] = 0, changing b's input does not change predictions."""
    keras.utils.set_random_seed(0)
    model = build_fusion_model(branches(), "weighted_sum" if placement != "late" else "average",
                               num_outputs=3, units=8, placement=placement, presence=True)
    presence = np.tile([[1.0, 0.0]], (N, 1)).astype("float32")
    changed = dict(X, b=X["b"] + 5.0)
    first = predict(model, dict(X, presence=presence))
    np.testing.assert_allclose(predict(model, dict(changed, presence=presence)), first, atol=1e-6)
    assert np.abs(predict(model, dict(changed, presence=np.ones_like(presence))) - first).max() > 1e-4


@pytest.mark.parametrize("presence", [False, True])
def test_modality_dropout_marks_whole_modalities_absent_in_training_only(presence, tmp_path):
    """In training every row is the prediction with all modalities, or with
    exactly one of them marked absent; at inference nothing is dropped."""
    keras.utils.set_random_seed(0)
    model = build_fusion_model({"a": tabular_mlp(3, units=(4,), name="a"),
                                "c": tabular_mlp(2, units=(4,), name="c")}, "gmu",
                               num_outputs=3, units=8, presence=presence, modality_dropout=0.5)
    x = {"a": RNG.normal(size=(64, 3)).astype("float32"),
         "c": RNG.normal(size=(64, 2)).astype("float32")}

    def outputs(feed, training=False):
        return keras.ops.convert_to_numpy(model(feed, training=training))

    feed = dict(x, presence=np.ones((64, 2), "float32")) if presence else x
    full = outputs(feed)
    dropped = outputs(feed, training=True)
    assert not np.allclose(dropped, full, atol=1e-4)  # rate 0.5 drops some modality
    if presence:  # each row: all present, or exactly one modality absent
        candidates = np.stack([outputs(dict(x, presence=np.tile(np.float32(mask), (64, 1))))
                               for mask in [(1, 1), (1, 0), (0, 1)]])  # (3, rows, classes)
        assert np.all(np.abs(candidates - dropped).max(axis=2).min(axis=0) < 1e-5)
    path = str(tmp_path / "dropout.keras")
    model.save(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(
        keras.models.load_model(path)(feed, training=False)), full, atol=1e-6)


def test_a_modality_dropout_layer_with_warmup_is_used_as_given():
    branches = {"c": tabular_mlp(2, units=(4,), name="c"), "a": tabular_mlp(3, units=(4,), name="a")}
    drop = ModalityDropout(0.5, seed=0, warmup_steps=3)
    model = build_fusion_model(branches, "concat", num_outputs=2, units=4, modality_dropout=drop)
    assert model.get_layer(drop.name) is drop and drop.modalities == ["c", "a"]  # branch order
    x = {"a": RNG.normal(size=(40, 3)).astype("float32"),
         "c": RNG.normal(size=(40, 2)).astype("float32")}
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, np.zeros(40), batch_size=20, epochs=1, verbose=0)  # 2 steps
    assert float(keras.ops.convert_to_numpy(drop.step)) == 2.0
    with pytest.raises(ValueError, match="not the branches' order"):
        build_fusion_model(branches, "concat", num_outputs=2,
                           modality_dropout=ModalityDropout(0.5, modalities=["a", "c"]))


def half_image_absent(n=32, placeholder=np.nan):
    """av-like data where the image `b` is absent in every other row, its
    placeholder `placeholder` (the present rows are the same whatever it is)."""
    rng = np.random.default_rng(1)
    presence = np.ones((n, 2), "float32")
    presence[::2, 1] = 0.0
    image = rng.random((n, 4, 4, 1)).astype("float32")
    image[presence[:, 1] == 0] = placeholder
    return {"a": rng.normal(size=(n, 3)).astype("float32"), "b": image,
            "presence": presence}, np.arange(n) % 3


def trained_gmu(x, y):
    keras.utils.set_random_seed(0)
    model = build_fusion_model(branches(), "gmu", num_outputs=3, units=8, presence=True)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    return model


def test_nan_placeholders_of_absent_rows_never_reach_a_branch():
    """NaN images in absent rows: training keeps every weight (and BatchNorm
    statistic) finite and identical to training with zero placeholders, and
    predictions do not depend on the placeholder."""
    x_nan, y = half_image_absent(placeholder=np.nan)
    x_zero, _ = half_image_absent(placeholder=0.0)
    model = trained_gmu(x_nan, y)
    weights = model.get_weights()
    assert all(np.all(np.isfinite(w)) for w in weights)
    for w, w_zero in zip(weights, trained_gmu(x_zero, y).get_weights()):
        np.testing.assert_allclose(w, w_zero, rtol=1e-5, atol=1e-6)
    with_nan, with_zero = predict(model, x_nan), predict(model, x_zero)
    assert np.all(np.isfinite(with_nan))
    np.testing.assert_allclose(with_nan, with_zero, atol=1e-6)


def test_absent_placeholders_do_not_leak_through_batchnorm_in_training():
    """Training-mode BatchNorm uses batch statistics: without zeroing, other
    placeholder images in absent rows would change present rows' outputs."""
    x, _ = half_image_absent(placeholder=0.0)
    other = dict(x, b=np.where(x["presence"][:, 1, None, None, None] > 0, x["b"], 3.0))
    keras.utils.set_random_seed(0)
    model = build_fusion_model(branches(), "gmu", num_outputs=3, units=8, presence=True)
    first = keras.ops.convert_to_numpy(model(x, training=True))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(other, training=True)), first,
                               atol=1e-6)


@pytest.mark.parametrize("branch_presence", [False, True])
def test_branch_batchnorm_statistics_over_present_rows(branch_presence, tmp_path):
    """A branch built with presence=True gets its modality's presence column:
    in training, present rows' outputs are those of a batch of present rows
    only (absent rows' zeros are not in the BatchNorm statistics)."""
    x, _ = half_image_absent(placeholder=np.nan)
    present = x["presence"][:, 1] > 0
    keras.utils.set_random_seed(0)
    model = build_fusion_model({"a": tabular_mlp(3, units=(5, 4), name="a"),
                                "b": image_cnn((4, 4, 1), filters=(2,), name="b",
                                               presence=branch_presence)},
                               "gmu", num_outputs=3, units=8, presence=True)
    both = keras.ops.convert_to_numpy(model(x, training=True))[present]
    only_present = {k: v[present] for k, v in x.items()}
    alone = keras.ops.convert_to_numpy(model(only_present, training=True))
    assert np.all(np.isfinite(both))
    if branch_presence:
        np.testing.assert_allclose(both, alone, atol=1e-5)
        path = str(tmp_path / "branch_presence.keras")
        model.save(path)
        np.testing.assert_allclose(predict(keras.models.load_model(path), x), predict(model, x),
                                   atol=1e-6)
    else:  # a plain BatchNorm mixes the absent rows' zeros into its statistics
        assert np.abs(both - alone).max() > 1e-3
    with pytest.raises(ValueError, match="takes its presence"):
        build_fusion_model({"b": image_cnn((4, 4, 1), filters=(2,), name="b", presence=True)},
                           None)


def test_learned_absence_trains_a_placeholder_the_fusion_layer_reads(tmp_path):
    """absent="learned": rows without b fuse a's tap with b's trained placeholder
    (concat: exactly [tap_a, placeholder]); saved and reloaded identically."""
    x, y = half_image_absent(placeholder=np.nan)
    keras.utils.set_random_seed(0)
    model = build_fusion_model(branches(), "concat", num_outputs=3, units=8, presence=True,
                               absent="learned")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    placeholder = model.get_layer("b_vector_learned_absent").placeholder.numpy()
    assert placeholder.shape == (8,) and np.abs(placeholder).max() > 1e-3  # it trained
    fused = keras.Model(model.inputs, model.get_layer("fusion_1_concat").output).predict(
        x, verbose=0)
    tap_a, tap_b = [np.asarray(model.get_layer(f"{m}_branch")(x[m], training=False)["vector"])
                    for m in "ab"]
    absent = x["presence"][:, 1] == 0
    w, b = model.get_layer("fusion_1_concat").get_weights()
    expected_b = np.where(absent[:, None], placeholder[None], tap_b)
    np.testing.assert_allclose(fused, np.concatenate([tap_a, expected_b], 1) @ w + b,
                               rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(predict(model, x)))
    path = str(tmp_path / "learned.keras")
    model.save(path)
    np.testing.assert_allclose(predict(keras.models.load_model(path), x), predict(model, x),
                               atol=1e-6)


@pytest.mark.parametrize("placement", ["early", "late"])
def test_learned_absence_at_early_and_late_fusion(placement):
    """With b absent, predictions follow b's placeholder, never b's input."""
    keras.utils.set_random_seed(0)
    model = build_fusion_model(branches(), "gmu", num_outputs=3, units=8, placement=placement,
                               presence=True, modality_dropout=0.3, absent="learned")
    names = [l.name for l in model.layers if isinstance(l, LearnedAbsence)]
    assert names == (["a_learned_absent", "b_learned_absent"] if placement == "early"
                     else ["a_vector_learned_absent", "b_vector_learned_absent"])
    feed = dict(X, presence=np.tile([[1.0, 0.0]], (N, 1)).astype("float32"))
    first = predict(model, feed)
    np.testing.assert_allclose(predict(model, dict(feed, b=X["b"] + 5.0)), first, atol=1e-6)
    layer = model.get_layer(names[1])
    layer.placeholder.assign(np.full(layer.placeholder.shape, 2.0, "float32"))
    assert np.abs(predict(model, feed) - first).max() > 1e-4
    with pytest.raises(ValueError, match="absent='imputed' needs absent modalities"):
        build_fusion_model(branches(), "gmu", absent="imputed")
    with pytest.raises(ValueError, match="absent must be one of"):
        build_fusion_model(branches(), "gmu", presence=True, absent="mean")

def test_impute_absent_layer_by_numpy():
    """Absent rows get MLP(zeroed sources); the loss is the squared error over
    present rows (hand-computed from the layer's weights)."""
    rng = np.random.default_rng(0)
    tap = rng.normal(size=(6, 3)).astype("float32")
    sources = [rng.normal(size=(6, 2)).astype("float32"), rng.normal(size=(6, 4)).astype("float32")]
    presence = np.array([[1, 1, 1], [0, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]],
                        "float32")
    layer = ImputeAbsent(0, [1, 2], units=5, loss_weight=0.5)
    out = np.asarray(layer(tap, sources=sources, presence=presence, training=True))
    (loss,) = [float(v) for v in layer.losses]
    w1, b1 = layer.hidden.get_weights()
    w2, b2 = layer.output_dense.get_weights()
    zeroed = np.concatenate([sources[0] * presence[:, 1:2], sources[1] * presence[:, 2:3]], 1)
    imputed = np.maximum(zeroed @ w1 + b1, 0) @ w2 + b2
    present = presence[:, 0] > 0
    np.testing.assert_allclose(out, np.where(present[:, None], tap, imputed), rtol=1e-5,
                               atol=1e-6)
    expected = 0.5 * np.mean((imputed[present] - tap[present]) ** 2)
    assert loss == pytest.approx(expected, rel=1e-5)
    layer(tap, sources=sources, presence=presence, training=False)
    assert not layer.losses  # no loss at inference


def test_reconstruction_loss_trains_the_imputer_only():
    """Its gradient reaches the imputation MLP, never the taps (the branches):
    with the sources' gradient, end-to-end branches were pulled toward
    predicting one another (av_digits GMU, all modalities present: 0.676 vs
    0.750 with zeros, 5 seeds)."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    tap = tf.Variable(rng.normal(size=(6, 3)).astype("float32"))
    source = tf.Variable(rng.normal(size=(6, 2)).astype("float32"))
    presence = np.array([[1, 1], [0, 1], [1, 1], [1, 0], [0, 1], [1, 1]], "float32")
    layer = ImputeAbsent(0, [1], units=4)
    with tf.GradientTape() as tape:
        layer(tap, sources=[source], presence=presence, training=True)
        (loss,) = layer.losses
    gradients = tape.gradient(loss, [tap, source] + layer.trainable_weights)
    assert gradients[0] is None and gradients[1] is None
    assert all(float(tf.reduce_sum(tf.abs(g))) > 0 for g in gradients[2:])
    with tf.GradientTape() as tape:  # the imputed rows still pass the task's gradient on
        out = layer(tap, sources=[source], presence=presence, training=True)
        total = tf.reduce_sum(out)
    grad = tape.gradient(total, source).numpy()
    imputed_rows = presence[:, 0] == 0
    assert np.abs(grad[imputed_rows]).sum() > 0 and np.abs(grad[~imputed_rows]).sum() == 0


def test_imputed_absence_trains_its_reconstruction_and_reloads(tmp_path):
    x, y = half_image_absent(placeholder=np.nan)
    keras.utils.set_random_seed(0)
    model = build_fusion_model(branches(), "gmu", num_outputs=3, units=8, presence=True,
                               absent="imputed")
    names = sorted(l.name for l in model.layers if isinstance(l, ImputeAbsent))
    assert names == ["a_vector_imputed_from_b", "b_vector_imputed_from_a"]

    def reconstruction():
        model(x, training=True)
        return float(sum(keras.ops.convert_to_numpy(v) for v in model.losses))

    before = reconstruction()
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=20, batch_size=8, verbose=0)
    assert reconstruction() < 0.5 * before
    assert np.all(np.isfinite(predict(model, x)))
    path = str(tmp_path / "imputed.keras")
    model.save(path)
    np.testing.assert_allclose(predict(keras.models.load_model(path), x), predict(model, x),
                               atol=1e-6)
    with pytest.raises(ValueError, match="reconstructs 'a' from the other modalities"):
        build_fusion_model({"a": tabular_mlp(3, name="a")}, None, presence=True,
                           absent="imputed")
    with pytest.raises(ValueError, match="needs vector taps"):
        build_fusion_model({m: image_cnn((4, 4, 1), filters=(2,), name=m) for m in "bc"},
                           "co_attention", taps={"b": "block_1", "c": "block_1"},
                           presence=True, absent="imputed")


def test_presence_as_a_dict_of_columns(tmp_path):
    """presence="dict": one column per modality by name, whatever the branch
    order (here b before a, the reverse of sorted model.inputs)."""
    keras.utils.set_random_seed(0)
    ordered = {"b": branches()["b"], "a": branches()["a"]}
    model = build_fusion_model(ordered, "gmu", num_outputs=3, units=8, presence="dict")
    assert sorted(model.input["presence"]) == ["a", "b"]
    columns = {"a": np.ones(N, "float32"), "b": np.zeros(N, "float32")}
    first = predict(model, dict(X, presence=columns))
    np.testing.assert_allclose(predict(model, dict(X, b=X["b"] + 5.0, presence=columns)), first,
                               atol=1e-6)  # b marked absent by name
    assert np.abs(predict(model, dict(X, a=X["a"] + 5.0, presence=columns)) - first).max() > 1e-4
    keras.utils.set_random_seed(0)
    matrix = build_fusion_model(ordered, "gmu", num_outputs=3, units=8, presence=True)
    matrix.set_weights(model.get_weights())
    as_matrix = np.stack([columns["b"], columns["a"]], axis=1)  # branch order: b, a
    np.testing.assert_allclose(predict(matrix, dict(X, presence=as_matrix)), first, atol=1e-6)
    path = str(tmp_path / "dict_presence.keras")
    model.save(path)
    np.testing.assert_allclose(predict(keras.models.load_model(path), dict(X, presence=columns)),
                               first, atol=1e-6)


def test_zero_absent_and_stack_presence_layers():
    tokens = np.array([[3, 4], [5, 6]], "int32")
    out = ZeroAbsent(0)(tokens, presence=np.array([[1.0], [0.0]]))
    assert keras.backend.standardize_dtype(out.dtype) == "int32"
    np.testing.assert_array_equal(np.asarray(out), [[3, 4], [0, 0]])
    with pytest.raises(ValueError, match="StackPresence.*no presence column for modalities \\['b'\\]"):
        StackPresence(["a", "b"])({"a": np.ones(2)})
    with pytest.raises(ValueError, match="presence must be True, False, 'matrix' or 'dict'"):
        build_fusion_model(branches(), "gmu", presence="columns")


def test_presence_columns_layer():
    out = PresenceColumns([1], ones=2)(np.array([[0.0, 1.0], [1.0, 0.0]]))
    np.testing.assert_array_equal(np.asarray(out), [[1, 1, 1], [0, 1, 1]])


def test_unimodal_model_and_regression_head():
    model = build_fusion_model({"a": tabular_mlp(3, units=(4,), name="a")}, None,
                               head="regression", num_outputs=2, head_units=())
    vector = np.asarray(model.get_layer("a_branch")(X["a"])["vector"])
    w, b = model.get_layer("head_output").get_weights()
    np.testing.assert_allclose(predict(model, {"a": X["a"]}), vector @ w + b, rtol=1e-5, atol=1e-6)


def test_sequence_taps_reach_sequence_layers():
    sequence_layers = [n for n in fusion.available(input_rank=3)
                       if fusion.get_class(n).accepts(2)]
    if not sequence_layers:
        pytest.skip("no sequence fusion layer registered yet")
    text = {"t": text_lstm(10, sequence_length=4, embedding_dim=3, units=(4,), name="t"),
            "b": image_cnn((4, 4, 1), filters=(2,), name="b")}
    model = build_fusion_model(text, sequence_layers[0], units=8, num_outputs=3,
                               taps={"t": "lstm_1", "b": "block_1"})
    out = predict(model, {"t": np.ones((N, 4), "int32"), "b": X["b"]})
    assert out.shape == (N, 3) and np.isfinite(out).all()
    assert model.get_layer("b_block_1_to_sequence").output.shape == (None, 4, 2)
    with pytest.raises(ValueError, match="rank 2.*rank-3 inputs.*sequence tap"):
        build_fusion_model(text, sequence_layers[0], units=8, taps={"t": "vector", "b": "block_1"})


def test_layer_names_read_naturally():
    model = build_fusion_model(branches(), "gmu", num_outputs=3, units=8, presence=True)
    names = [layer.name for layer in model.layers]
    for expected in ["a", "b", "presence", "a_branch", "b_branch", "fusion_1_gmu",
                     "head_dense_1", "head_logits", "prediction"]:
        assert expected in names
    assert model.get_layer("fusion_1_gmu").modality_names == ["a", "b"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(taps={"a": "dense_9", "b": "vector"}), "modality 'a' has no tap 'dense_9'.*dense_1"),
    (dict(taps={"a": "vector", "c": "vector"}), "modality 'c', which has no branch"),
    (dict(taps={"a": "vector", "b": "block_1"}, tap_pooling=None),
     "tap 'block_1' of 'b' has rank 4.*takes vectors"),
    (dict(placement="middle"), "placement must be one of"),
    (dict(head="ranking"), "head must be one of"),
    (dict(fusion="nope"), "Unknown fusion layer 'nope'"),
    (dict(fusion=None), "exactly one modality"),
    (dict(fusion=[FusionPoint({"a": "vector", "b": "vector"})], placement="late"),
     "needs placement='intermediate'"),
])
def test_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_fusion_model(branches(), **kwargs)


def test_mismatched_modality_names_and_counts():
    with pytest.raises(ValueError, match="modality 'audio' must have one input named 'audio'"):
        build_fusion_model({"audio": tabular_mlp(3, name="a"), "b": tabular_mlp(3, name="b")})
    with pytest.raises(ValueError, match="must be a branch model"):
        build_fusion_model({"a": (3,), "b": tabular_mlp(3, name="b")})
    two_only = [n for n in fusion.available(input_rank=2)
                if fusion.get_class(n).max_modalities == 2]
    if two_only:
        three = dict(branches(), c=tabular_mlp(2, units=(3,), name="c"))
        with pytest.raises(ValueError, match="takes 2 to 2 inputs.*gives it 3"):
            build_fusion_model(three, two_only[0], units=4)


# ------------------------------------------------------------ spec objects
def _same_model(kwargs_a, kwargs_b, x=X):
    """Predictions of two spellings of one model, built from the same seed."""
    outputs = []
    for kwargs in (kwargs_a, kwargs_b):
        keras.utils.set_random_seed(3)
        model = build_fusion_model(branches(), **kwargs)
        outputs.append((predict(model, x), [layer.name for layer in model.layers]))
    return outputs


@pytest.mark.parametrize("old, new", [
    (dict(fusion="weighted", placement="late", num_outputs=3, head_units=(4,)),
     dict(fusion=Late("weighted"), head=Head(num_outputs=3, units=(4,)))),
    (dict(fusion="gmu", placement="late", units=6, fusion_kwargs={"use_bias": False},
          taps={"a": "dense_1", "b": "vector"}),
     dict(fusion=Late("gmu", taps={"a": "dense_1", "b": "vector"},
                      kwargs={"use_bias": False}), units=6)),
    (dict(fusion="concat", placement="early", units=None, head="regression", num_outputs=2),
     dict(fusion=Early("concat"), units=None, head=Head("regression", 2))),
    (dict(fusion="gmu", taps={"a": "dense_1", "b": "block_1"}, fusion_kwargs={"units": 5}),
     dict(fusion=FusionPoint({"a": "dense_1", "b": "block_1"}, "gmu", kwargs={"units": 5}))),
])
def test_spec_objects_build_the_same_model_as_the_keyword_form(old, new):
    (first, names_a), (second, names_b) = _same_model(old, new)
    assert names_a == names_b
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("kwargs, message", [
    (dict(fusion=[FusionPoint({"a": "vector", "b": "vector"})], fusion_kwargs={"units": 4}),
     "fusion_kwargs cannot be combined with FusionPoints"),
    (dict(fusion=FusionPoint({"a": "vector", "b": "vector"}), taps={"a": "vector"}),
     "give taps in each FusionPoint"),
    (dict(fusion="concat", placement="early", taps={"a": "dense_1"}),
     "taps cannot be combined with placement='early'"),
    (dict(fusion=Early("concat"), fusion_kwargs={"units": 3}),
     r"fusion_kwargs cannot be combined with Early\(...\)"),
    (dict(fusion=Late("average"), placement="early"), "Late is late fusion"),
    (dict(fusion=Late("gmu"), taps={"a": "vector"}), r"Late\(..., taps=...\)"),
    (dict(fusion="average", placement="late", fusion_kwargs={"units": 3}),
     "late combiner 'average'.*no constructor arguments"),
    (dict(fusion=Late("weighted", kwargs={"units": 3})), "no constructor arguments"),
    (dict(fusion=None, fusion_kwargs={"units": 3}), "unimodal model has no fusion layer"),
    (dict(fusion=fusion.get("gmu", units=4), fusion_kwargs={"units": 8}),
     r"constructor arguments \['units'\] were given for the fusion layer instance"),
    (dict(head=Head(num_outputs=3), num_outputs=4), r"num_outputs cannot be combined with head=Head"),
    (dict(head=Head(), head_units=(8,), head_dropout=0.5),
     "head_units, head_dropout cannot be combined"),
])
def test_arguments_a_spec_would_ignore_are_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_fusion_model(branches(), **kwargs)
    with pytest.raises(ValueError, match="head must be one of"):
        Head("ranking")


# ------------------------------------------------------------ Keras masks
T = 5
IDS = np.array([[3, 4, 5, 0, 0], [6, 0, 0, 0, 0], [2, 7, 8, 9, 4], [5, 5, 0, 0, 0]] * 2, "int32")


def text_branches():
    return {"t": text_lstm(10, sequence_length=T, embedding_dim=3, units=(4,), name="t"),
            "b": image_cnn((4, 4, 1), filters=(2,), name="b")}


def with_padding_row(model, value):
    """`model`'s predictions on (IDS, X["b"]) with the padding embedding (row 0) set to `value`."""
    embedding = model.get_layer("t_branch").get_layer("t_embedding")
    table = embedding.embeddings.numpy()
    table[0] = value
    embedding.embeddings.assign(table)
    return predict(model, {"t": IDS, "b": X["b"]})


def test_vector_fusion_at_a_padded_tap_is_the_masked_mean(tmp_path):
    """A vector fusion at the embedding tap sees the mean over real tokens
    (brute force from the embedding table); padding values change nothing;
    the mask survives `.keras` reload."""
    keras.utils.set_random_seed(0)
    model = build_fusion_model(text_branches(), "concat", units=None, num_outputs=3,
                               taps={"t": "embedding", "b": "vector"}, head_units=())
    table = model.get_layer("t_branch").get_layer("t_embedding").embeddings.numpy()
    expected = np.stack([table[row[row > 0]].mean(axis=0) for row in IDS])
    pooled = keras.Model(model.inputs, model.get_layer("t_embedding_masked_avg").output)
    np.testing.assert_allclose(pooled.predict({"t": IDS, "b": X["b"]}, verbose=0), expected,
                               rtol=1e-6)
    first = with_padding_row(model, 0.0)
    np.testing.assert_array_equal(with_padding_row(model, 50.0), first)
    path = str(tmp_path / "masked.keras")
    model.save(path)
    np.testing.assert_array_equal(predict(keras.saving.load_model(path),
                                          {"t": IDS, "b": X["b"]}), first)


def test_masked_max_pooling_and_unmasked_taps_keep_tap_pooling():
    model = build_fusion_model(text_branches(), "concat", units=None, tap_pooling="max",
                               taps={"t": "embedding", "b": "block_1"}, head_units=())
    table = model.get_layer("t_branch").get_layer("t_embedding").embeddings.numpy()
    (pooled,) = [np.asarray(o) for o in [keras.Model(
        model.inputs, model.get_layer("t_embedding_masked_max").output)(
            {"t": IDS, "b": X["b"]})]]
    np.testing.assert_allclose(pooled, np.stack([table[r[r > 0]].max(axis=0) for r in IDS]))
    assert model.get_layer("b_block_1_max").output.shape == (None, 2)  # no mask: plain pooling


SEQUENCE_LAYERS = fusion.available(input_rank=3, n_modalities=2)


@pytest.mark.parametrize("name", SEQUENCE_LAYERS)
def test_sequence_fusion_ignores_padding_of_a_masked_tap(name):
    """The text branch's mask reaches the sequence fusion layer: the padding
    embedding (what padded timesteps hold) does not change predictions."""
    keras.utils.set_random_seed(0)
    model = build_fusion_model(text_branches(), name, units=8, num_outputs=3,
                               taps={"t": "embedding", "b": "block_1"})
    first = with_padding_row(model, 0.0)
    np.testing.assert_allclose(with_padding_row(model, 3.0), first, atol=1e-6)
    # The composer passes the mask itself (a nested model's outputs carry
    # none in the graph): the text tap's mask, None for the feature map.
    _, kwargs = keras_internals.call_arguments(model, model.get_layer(f"fusion_1_{name}"))
    t_mask, b_mask = kwargs["mask"]
    assert b_mask is None
    np.testing.assert_array_equal(keras.Model(model.inputs, t_mask)(
        {"t": IDS, "b": X["b"]}), IDS != 0)


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("head", ["classification", "multilabel", "regression"])
@pytest.mark.parametrize("unimodal", [False, True])
def test_outputs_stay_float32_under_mixed_precision(mixed_float16, head, unimodal):
    keras.utils.set_random_seed(0)
    extra = dict(unimodal_loss=1.0, unimodal_fallback=True) if unimodal else {}
    model = build_fusion_model(branches(), "gmu", head=Head(head, num_outputs=3, units=(4,)),
                               presence=True, **extra)
    x = dict(X, presence=np.ones((N, 2), "float32"))
    x["presence"][::2, 1] = 0
    assert keras.backend.standardize_dtype(model.outputs[0].dtype) == "float32"
    logits = keras.Model(model.inputs, model.get_layer(
        "head_output" if head == "regression" else "head_logits").output)
    z = np.asarray(logits.predict(x, verbose=0), "float64")
    expected = {"classification": np.exp(z) / np.exp(z).sum(1, keepdims=True),
                "multilabel": 1 / (1 + np.exp(-z)), "regression": z}[head]
    got = model.predict(x, verbose=0)
    # Rows with every modality present carry the fused head's activation, computed in float32
    # from the float16 logits (a float16 softmax or sigmoid is off by ~1e-4 here).
    np.testing.assert_allclose(got[1::2], expected[1::2], atol=1e-6)
    model.compile("adam", {"classification": "sparse_categorical_crossentropy",
                           "multilabel": "binary_crossentropy", "regression": "mse"}[head])
    y = {"classification": Y, "multilabel": (RNG.random((N, 3)) > 0.5).astype("float32"),
         "regression": RNG.normal(size=(N, 3)).astype("float32")}[head]
    assert np.isfinite(model.fit(x, y, epochs=2, verbose=0).history["loss"]).all()
