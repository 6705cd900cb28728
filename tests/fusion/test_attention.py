import keras
import numpy as np
import pytest

from mmfusion.fusion import (
    AttentionPooling,
    BilinearAttention,
    CoAttention,
    CrossModalAttention,
    StackedAttention,
)
from tests.layer_checks import (
    assert_absent_modality_ignored,
    numpy_dense,
    numpy_softmax,
    random_inputs,
)

SIZES, STEPS = (6, 10), (5, 7)
# Modality 1 of examples 0 and 1 is padded after 4 and 5 timesteps.
PAD_MASK = np.ones((4, 7), "float32")
PAD_MASK[0, 4:] = 0
PAD_MASK[1, 5:] = 0
ELEMENT_MASK = [np.ones((4, 5), "float32"), PAD_MASK]


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _close(actual, expected):
    np.testing.assert_allclose(_np(actual), expected, rtol=1e-4, atol=1e-5)


def test_attention_pooling_matches_numpy_and_renormalizes():
    xs = random_inputs((3, 5, 4))
    layer = AttentionPooling(units=6)
    presence = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 0]], "float32")
    out, weights = layer(xs, presence=presence, return_weights=True)
    hidden = np.stack([numpy_dense(p, x, np.tanh) for p, x in zip(layer.projections, xs)], 1)
    alpha = np.zeros((4, 3))  # the last row has no modality: all-zero weights
    alpha[:3] = numpy_softmax(hidden[:3] @ _np(layer.query), mask=presence[:3])
    _close(weights["modality_weights"], alpha)
    _close(out, (alpha[..., None] * hidden).sum(1))
    np.testing.assert_allclose(_np(weights["modality_weights"]).sum(1), [1, 1, 1, 0], atol=1e-6)


def _mha_scores(mha, query, value, key_mask):
    q = np.einsum("btd,dhk->bhtk", query, _np(mha._query_dense.kernel))
    k = np.einsum("bsd,dhk->bhsk", value, _np(mha._key_dense.kernel))
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    return numpy_softmax(logits, mask=key_mask[:, None, None, :])


def test_cross_modal_attention_maps_match_numpy():
    xs = random_inputs(SIZES, time_steps=STEPS)
    layer = CrossModalAttention(units=8, modalities=["audio", "text"])
    _, weights = layer(xs, element_mask=ELEMENT_MASK, return_weights=True)
    hidden = [numpy_dense(p, x) for p, x in zip(layer.projections, xs)]
    expected = _mha_scores(layer.blocks[0].attention, hidden[0], hidden[1], PAD_MASK)
    _close(weights["audio_attends_text"], expected)
    reverse = _mha_scores(layer.blocks[1].attention, hidden[1], hidden[0], ELEMENT_MASK[0])
    _close(weights["text_attends_audio"], reverse * PAD_MASK[:, None, :, None])


def test_cross_modal_attention_ignores_padding():
    xs = random_inputs(SIZES, time_steps=STEPS)
    layer = CrossModalAttention(units=8)
    changed = [xs[0], xs[1] + 10.0 * (1 - PAD_MASK)[..., None]]
    _close(layer(changed, element_mask=ELEMENT_MASK), _np(layer(xs, element_mask=ELEMENT_MASK)))
    assert not np.allclose(_np(layer(changed)), _np(layer(xs)))


def test_cross_modal_attention_is_n_modal():
    xs = random_inputs((6, 10, 4), time_steps=(5, 7, 3))
    layer = CrossModalAttention(units=8)
    _, weights = layer(xs, return_weights=True)
    assert len(weights) == 6 and weights["modality_2_attends_modality_0"].shape == (4, 2, 3, 5)
    assert_absent_modality_ignored(layer, xs, absent=2)


def _co_attention_numpy(layer, xs, masks):
    q, v = [numpy_dense(p, x) * m[..., None] for p, x, m in zip(layer.projections, xs, masks)]
    affinity = np.tanh(q @ _np(layer.affinity_kernel) @ v.transpose(0, 2, 1))
    qw, vw = q @ _np(layer.query_kernel), v @ _np(layer.key_kernel)
    h_v = np.tanh(vw + affinity.transpose(0, 2, 1) @ qw)
    h_q = np.tanh(qw + affinity @ vw)
    a_v = numpy_softmax(h_v @ _np(layer.key_score), mask=masks[1])
    a_q = numpy_softmax(h_q @ _np(layer.query_score), mask=masks[0])
    attended = (a_q[..., None] * q).sum(1) + (a_v[..., None] * v).sum(1)
    return numpy_dense(layer.output_dense, attended, np.tanh), affinity, a_q, a_v


def test_co_attention_matches_numpy():
    xs = random_inputs(SIZES, time_steps=STEPS)
    layer = CoAttention(units=8, attention_units=5)
    out, weights = layer(xs, element_mask=ELEMENT_MASK, return_weights=True)
    expected, affinity, a_q, a_v = _co_attention_numpy(layer, xs, ELEMENT_MASK)
    _close(out, expected)
    _close(weights["affinity"][:, 0], affinity)
    _close(weights["attention_modality_0"][:, 0, 0], a_q)
    _close(weights["attention_modality_1"][:, 0, 0], a_v)
    assert np.all(_np(weights["affinity"])[0, 0, :, 4:] == 0)  # padded regions


def test_stacked_attention_matches_numpy():
    xs = random_inputs(SIZES, time_steps=STEPS)
    layer = StackedAttention(units=8, attention_units=5, hops=3)
    out, weights = layer(xs, element_mask=ELEMENT_MASK, return_weights=True)
    u = numpy_dense(layer.question, xs[0].mean(1), np.tanh)
    v = numpy_dense(layer.regions, xs[1], np.tanh)
    for h in range(3):
        query = u @ _np(layer.query_kernels[h]) + _np(layer.query_biases[h])
        hidden = np.tanh(v @ _np(layer.region_kernels[h]) + query[:, None])
        p = numpy_softmax(hidden @ _np(layer.scores[h]), mask=PAD_MASK)
        _close(weights["region_attention"][:, h, 0], p)
        u = u + (p[..., None] * v).sum(1)
    _close(out, u)


def test_bilinear_attention_matches_numpy():
    xs = random_inputs(SIZES, time_steps=STEPS)
    layer = BilinearAttention(units=8, attention_units=6, glimpses=3)
    out, weights = layer(xs, element_mask=ELEMENT_MASK, return_weights=True)
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    x, y = numpy_dense(layer.question, xs[0]), xs[1]
    logits = np.einsum("bik,gk,bjk->bgij", numpy_dense(layer.attention_x, x, relu),
                       _np(layer.glimpse_vectors), numpy_dense(layer.attention_y, y, relu))
    mask = np.broadcast_to(PAD_MASK[:, None, None, :], logits.shape).reshape(4, 3, -1)
    maps = numpy_softmax(logits.reshape(4, 3, -1), mask=mask).reshape(4, 3, 5, 7)
    _close(weights["bilinear_attention"], maps)
    for g in range(3):
        joint = np.einsum("bik,bij,bjk->bk", numpy_dense(layer.joint_x[g], x, relu), maps[:, g],
                          numpy_dense(layer.joint_y[g], y, relu))
        x = x + numpy_dense(layer.joint_out[g], joint)[:, None]
    _close(out, x.sum(1))





def test_bad_element_mask_is_rejected():
    xs = random_inputs(SIZES, time_steps=STEPS)
    with pytest.raises(ValueError, match="modality_1.*\\(4, 7\\)"):
        CoAttention(units=8)(xs, element_mask=[ELEMENT_MASK[0], PAD_MASK[:, :5]])


# ----------------------------------------------------------------------------
# Keras conventions of the attention and set layers: distinct initial weights,
# dtype policies, Keras masks, non-finite placeholders, empty batches. The
# checks take a factory `make(**kwargs) -> layer`; test_sets.py reuses them.

LAYERS = {
    "attention_pooling": AttentionPooling,
    "cross_modal_attention": CrossModalAttention,
    "co_attention": CoAttention,
    "stacked_attention": StackedAttention,
    "bilinear_attention": BilinearAttention,
}
SEQUENCE_LAYERS = sorted(set(LAYERS) - {"attention_pooling"})
POLICIES = ("float32", "float64", "mixed_float16", "mixed_bfloat16")


def factory(name):
    return lambda **kwargs: LAYERS[name](units=8, **kwargs)


def _inputs(make, batch=4, seed=0, size=6):
    """Two modalities of the same feature size (so equal-shape weights exist)."""
    rng = np.random.default_rng(seed)
    shapes = [(batch, size), (batch, size)] if make().input_rank == 2 else \
        [(batch, 5, size), (batch, 7, size)]
    return [rng.normal(size=s).astype("float32") for s in shapes]


def _padding(batch=4):
    """Element masks of `_inputs`: example 0 has 3 of 5 and 4 of 7 valid steps,
    example 1 has 2 of 7."""
    masks = [np.ones((batch, 5), "float32"), np.ones((batch, 7), "float32")]
    masks[0][0, 3:] = 0
    masks[1][0, 4:] = 0
    masks[1][1, 2:] = 0
    return masks


def check_distinct_initial_weights(make):
    for initializer in ("glorot_uniform", keras.initializers.GlorotUniform(seed=7)):
        keras.utils.set_random_seed(3)
        layer = make(kernel_initializer=initializer)
        layer(_inputs(make))
        # Constant initializations (biases, layer-norm scales) may coincide.
        weights = [(w.path, _np(w)) for w in layer.trainable_weights if np.ptp(_np(w)) > 0]
        equal = [(a, b) for i, (a, x) in enumerate(weights) for b, y in weights[i + 1:]
                 if x.shape == y.shape and np.array_equal(x, y)]
        assert not equal, f"weights that start equal with {initializer}: {equal}"
    again = make(kernel_initializer=keras.initializers.GlorotUniform(seed=7))
    again(_inputs(make))
    for w, v in zip(layer.weights, again.weights):  # a seeded layer is deterministic
        np.testing.assert_array_equal(_np(w), _np(v), err_msg=w.path)


def check_dtype_policy(make, policy):
    layer = make(dtype=policy)
    xs = _inputs(make)
    present = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], "float32")
    for presence in (None, present, np.zeros((4, 2), "float32")):
        out = layer(xs, presence=presence)
        assert keras.backend.standardize_dtype(out.dtype) == layer.compute_dtype
        assert np.all(np.isfinite(_np(keras.ops.cast(out, "float32")))), (policy, presence)
    for sub in layer._flatten_layers(include_self=False):
        assert (sub.compute_dtype, sub.variable_dtype) == (
            layer.compute_dtype, layer.variable_dtype), f"{sub.path}: {sub.dtype_policy}"
    assert {w.dtype for w in layer.weights} == {layer.variable_dtype}


# Where each layer's attention weights index the timesteps of modality 0 / 1:
# {weights key: {axis: modality}}; padded timesteps there must get zero weight.
ATTENDED_AXES = {
    "cross_modal_attention": {"modality_0_attends_modality_1": {2: 0, 3: 1},
                              "modality_1_attends_modality_0": {2: 1, 3: 0}},
    "co_attention": {"attention_modality_0": {3: 0}, "attention_modality_1": {3: 1},
                     "affinity": {2: 0, 3: 1}},
    "stacked_attention": {"region_attention": {3: 1}},
    "bilinear_attention": {"bilinear_attention": {2: 0, 3: 1}},
}


def _zero_at_padding(weights, axes, valid):
    for axis, modality in axes.items():
        shape = [1] * weights.ndim
        shape[0], shape[axis] = weights.shape[0], weights.shape[axis]
        padded = np.broadcast_to(~valid[modality].reshape(shape), weights.shape)
        assert np.all(weights[padded] == 0), f"weight {np.abs(weights[padded]).max()} on padding"


def check_keras_mask(make, attended_axes):
    """Both modalities come from `Embedding(mask_zero=True)`: the padding
    embedding changes nothing, the Keras mask acts as the element mask, and
    padded timesteps get no attention weight."""
    keras.utils.set_random_seed(0)
    tokens = [keras.Input(shape=(5,), dtype="int32"), keras.Input(shape=(7,), dtype="int32")]
    embeddings = [keras.layers.Embedding(11, 6, mask_zero=True) for _ in tokens]
    layer = make()
    out, weights = layer([e(t) for e, t in zip(embeddings, tokens)], return_weights=True)
    model = keras.Model(tokens, [out, {k: weights[k] for k in attended_axes}])
    rng = np.random.default_rng(0)
    valid = [m > 0 for m in _padding()]
    ids = [np.where(v, rng.integers(1, 11, size=v.shape), 0) for v in valid]
    before, maps = model.predict(ids, verbose=0)
    for e in embeddings:  # a different padding embedding
        table = _np(e.embeddings).copy()
        table[0] = rng.normal(size=6) * 10
        e.embeddings.assign(table)
    after, _ = model.predict(ids, verbose=0)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    vectors = [_np(e(i)) for e, i in zip(embeddings, ids)]
    np.testing.assert_allclose(before, _np(layer(vectors, element_mask=[v * 1.0 for v in valid])),
                               rtol=1e-5, atol=1e-5)
    for key, axes in attended_axes.items():
        _zero_at_padding(maps[key], axes, valid)


def check_non_finite_placeholders(make):
    """NaN at absent rows and Inf at padded timesteps give the same output (and
    finite gradients) as zeros there."""
    layer = make()
    xs = _inputs(make)
    presence = np.array([[1, 1], [1, 0], [0, 1], [0, 0]], "float32")
    clean, dirty = [x.copy() for x in xs], [x.copy() for x in xs]
    for i in range(2):
        clean[i][presence[:, i] == 0] = 0
        dirty[i][presence[:, i] == 0] = np.nan
    kwargs = {"presence": presence}
    if layer.input_rank == 3:
        kwargs["element_mask"] = _padding()
        for i, mask in enumerate(_padding()):
            clean[i][mask == 0] = 0
            dirty[i][mask == 0] = np.inf
    expected = _np(layer(clean, **kwargs))
    np.testing.assert_allclose(_np(layer(dirty, **kwargs)), expected, rtol=1e-6, atol=1e-6)
    assert np.all(np.isfinite(expected))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(dirty, **kwargs) ** 2)
        for w, g in zip(layer.trainable_weights, tape.gradient(loss, layer.trainable_weights)):
            assert g is None or np.all(np.isfinite(_np(g))), f"non-finite gradient of {w.path}"


def check_empty_batch(make):
    layer = make()
    xs = [x[:0] for x in _inputs(make)]
    assert tuple(layer(xs).shape) == (0, 8)
    kwargs = {"presence": np.zeros((0, 2), "float32")}
    if layer.input_rank == 3:
        kwargs["element_mask"] = [m[:0] for m in _padding()]
    assert tuple(layer(xs, return_weights=True, **kwargs)[0].shape) == (0, 8)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_no_two_weights_start_equal(name):
    check_distinct_initial_weights(factory(name))


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_dtype_policy_reaches_every_sublayer_and_stays_finite(name, policy):
    check_dtype_policy(factory(name), policy)


@pytest.mark.parametrize("name", SEQUENCE_LAYERS)
def test_keras_mask_is_the_element_mask(name):
    check_keras_mask(factory(name), ATTENDED_AXES[name])


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_nan_and_inf_placeholders_never_reach_the_output(name):
    check_non_finite_placeholders(factory(name))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_empty_batch(name):
    check_empty_batch(factory(name))
