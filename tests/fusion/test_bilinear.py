import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmfusion import fusion
from mmfusion.fusion import BLOCK, MCB, MFB, MFH, MLB, MUTAN, FusionLayer, Tucker
from mmfusion.fusion.bilinear import SQRT_EPSILON, signed_sqrt
from tests.layer_checks import (
    assert_absent_modality_ignored,
    assert_bad_inputs_rejected,
    assert_every_weight_gets_gradient,
    assert_fits_with_jit,
    assert_save_load_identical,
    interaction_accuracies,
    random_inputs,
    weights_by_name,
)

SIZES = (3, 5, 4)
PRESENCE = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 0]], "float32")


# ------------------------------------------------------------ NumPy references
def _ssqrt(x):
    return np.sign(x) * (np.sqrt(np.abs(x) + SQRT_EPSILON) - np.sqrt(SQRT_EPSILON))


def _l2(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def _projections(w, xs, tag="", activation=lambda h: h, presence=None):
    """Each modality's `act(x K + b)`, ones where absent (the documented semantics)."""
    out = []
    for m, x in enumerate(xs):
        h = activation(x @ w[f"kernel{tag}_modality_{m}"] + w[f"bias{tag}_modality_{m}"])
        if presence is not None:
            h = np.where(presence[:, m:m + 1] > 0, h, 1.0)
        out.append(h)
    return out


def _sum_pool(x, k):
    return x.reshape(len(x), -1, k).sum(-1)


def _count_sketch_loops(x, index, sign, d):
    out = np.zeros((len(x), d))
    for b in range(len(x)):
        for j in range(x.shape[1]):
            out[b, index[j]] += sign[j] * x[b, j]
    return out


def _circular_convolution(a, b):
    """`(a ⊛ b)[k] = Σ_i a[i] b[(k − i) mod d]`, by shifting, without FFT."""
    return sum(a[:, i:i + 1] * np.roll(b, i, axis=1) for i in range(a.shape[1]))


def _mcb_numpy(layer, xs, presence):
    w = weights_by_name(layer)
    d = layer.sketch_size
    impulse = np.eye(d)[0]
    result = None
    for m, x in enumerate(xs):
        sketch = _count_sketch_loops(x, w[f"sketch_index_modality_{m}"],
                                     w[f"sketch_sign_modality_{m}"], d)
        sketch = np.where(presence[:, m:m + 1] > 0, sketch, impulse)
        result = sketch if result is None else _circular_convolution(result, sketch)
    z = _l2(_ssqrt(result))
    return z @ w["output_kernel"] + w["output_bias"]


def _compare(layer, xs, reference, atol=1e-5):
    """The layer equals `reference(presence)` with and without a presence mask."""
    presence = PRESENCE[:, :len(xs)]
    for p in (np.ones_like(presence), presence):
        np.testing.assert_allclose(layer(xs, presence=p), reference(p), rtol=1e-4, atol=atol)


# ---------------------------------------------------------------- signed sqrt
def test_signed_sqrt_values_and_finite_gradient_at_zero():
    x = tf.constant([-4.0, -1e-3, 0.0, 1e-3, 9.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = signed_sqrt(x)
    grad = tape.gradient(y, x).numpy()
    np.testing.assert_allclose(y.numpy(), _ssqrt(x.numpy()), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y.numpy()[[0, 4]], [-2.0, 3.0], atol=2e-3)
    assert np.all(np.isfinite(grad)), grad
    np.testing.assert_allclose(grad[2], 0.5 / np.sqrt(SQRT_EPSILON), rtol=1e-4)


def test_training_on_exact_zeros_stays_finite():
    """Bias-free projections of all-zero inputs make the signed sqrt and the
    L2 normalization see exact zeros; training must not produce NaN."""
    keras.utils.set_random_seed(0)
    xs = [tf.constant(x) for x in random_inputs((3, 4), batch=16)]
    xs = [tf.where(tf.range(16)[:, None] % 2 == 0, 0.0, x) for x in xs]
    layers = [MCB(units=4, sketch_size=16, use_bias=False), MFB(units=4, use_bias=False),
              MFH(units=4, use_bias=False),
              BLOCK(units=4, hidden_size=8, chunks=2, rank=2, use_bias=False)]
    optimizer = keras.optimizers.Adam(0.1)
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = sum(tf.reduce_sum((layer(xs) - 1.0) ** 2) for layer in layers)
        weights = [w for layer in layers for w in layer.trainable_weights]
        grads = tape.gradient(loss, weights)
        assert all(np.all(np.isfinite(g)) for g in grads)
        optimizer.apply_gradients(zip(grads, weights))
    assert all(np.all(np.isfinite(keras.ops.convert_to_numpy(w))) for w in weights)


# ------------------------------------------------------------------------ MCB
@pytest.mark.parametrize("sizes", [(3, 5), SIZES])
@pytest.mark.parametrize("sketch_size", [16, 23])
def test_mcb_equals_circular_convolution_of_count_sketches(sizes, sketch_size):
    xs = random_inputs(sizes)
    layer = MCB(units=6, sketch_size=sketch_size, seed=3)
    layer(xs)
    # float32 FFT round-off, amplified by the signed sqrt of small entries.
    _compare(layer, xs, lambda p: _mcb_numpy(layer, xs, p), atol=1e-4)


def test_mcb_sketches_are_fixed_by_seed_and_saved(tmp_path):
    xs = random_inputs((3, 5))
    a, b, c = MCB(sketch_size=32, seed=1), MCB(sketch_size=32, seed=1), MCB(sketch_size=32, seed=2)
    for layer in (a, b, c):
        layer(xs)
    np.testing.assert_array_equal(a(xs), b(xs))
    assert not np.allclose(a(xs), c(xs))
    assert not a.trainable_weights and len(a.non_trainable_weights) == 4
    index = weights_by_name(a)["sketch_index_modality_1"]
    assert index.dtype == np.int32 and index.min() >= 0 and index.max() < 32
    # Sketches that the seed would not regenerate survive saving and loading.
    saved = MCB(units=4, sketch_size=32, seed=5)
    saved(xs)
    saved.sketches[0][0].assign([31, 0, 7])
    saved.sketches[0][1].assign([-1.0, -1.0, 1.0])
    reloaded = assert_save_load_identical(saved, xs, tmp_path).layers[-1]
    np.testing.assert_array_equal(reloaded.sketches[0][0], [31, 0, 7])
    np.testing.assert_array_equal(reloaded.sketches[0][1], [-1.0, -1.0, 1.0])


def test_mcb_default_sketch_size_is_fast_enough():
    """The paper's d = 16000 on small inputs, forward and backward on CPU."""
    import time

    xs = [tf.constant(x) for x in random_inputs((6, 10, 12), batch=8)]
    layer = MCB(units=8)
    layer(xs)
    start = time.perf_counter()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(xs) ** 2)
    tape.gradient(loss, layer.trainable_weights)
    assert time.perf_counter() - start < 1.0


# ------------------------------------------------------------ MLB, MFB, MFH
@pytest.mark.parametrize("sizes", [(3, 5), SIZES])
def test_mlb_matches_numpy(sizes):
    xs = random_inputs(sizes)
    layer = MLB(units=6, rank=7)
    layer(xs)
    w = weights_by_name(layer)

    def reference(p):
        hidden = np.prod(_projections(w, xs, activation=np.tanh, presence=p), axis=0)
        return hidden @ w["output_kernel"] + w["output_bias"]

    _compare(layer, xs, reference)


@pytest.mark.parametrize("sizes", [(3, 5), SIZES])
def test_mfb_matches_numpy(sizes):
    xs = random_inputs(sizes)
    layer = MFB(units=4, factor=3)
    layer(xs)
    rng = np.random.default_rng(2)
    for v in layer.trainable_weights:  # non-zero biases
        v.assign(rng.normal(size=v.shape) * 0.5)
    w = weights_by_name(layer)

    def reference(p):
        product = np.prod(_projections(w, xs, presence=p), axis=0)
        return _l2(_ssqrt(_sum_pool(product, 3)))

    _compare(layer, xs, reference)


def test_mfb_normalizations_and_dropout_are_optional():
    xs = random_inputs((3, 5))
    layer = MFB(units=4, factor=2, power_norm=False, l2_norm=False, dropout=0.5)
    layer(xs)
    w = weights_by_name(layer)
    expected = _sum_pool(np.prod(_projections(w, xs), axis=0), 2)
    np.testing.assert_allclose(layer(xs), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(layer(xs, training=True), expected)


@pytest.mark.parametrize("sizes", [(3, 5), SIZES])
def test_mfh_matches_numpy_cascade(sizes):
    xs = random_inputs(sizes)
    layer = MFH(units=4, order=3, factor=2)
    layer(xs)
    w = weights_by_name(layer)

    def reference(p):
        expanded, outputs = 1.0, []
        for i in range(3):
            expanded = expanded * np.prod(_projections(w, xs, f"_{i}", presence=p), 0)
            outputs.append(_l2(_ssqrt(_sum_pool(expanded, 2))))
        return np.concatenate(outputs, -1)

    assert layer(xs).shape == (4, 12)
    _compare(layer, xs, reference)


def test_mfh_first_block_is_mfb():
    xs = random_inputs((3, 5))
    mfh, mfb = MFH(units=4, factor=2), MFB(units=4, factor=2)
    mfh(xs)
    mfb(xs)
    for v in mfb.weights:
        v.assign(weights_by_name(mfh)[v.path.split("/")[-1].replace("kernel", "kernel_0")
                                      .replace("bias", "bias_0")])
    np.testing.assert_allclose(mfh(xs)[:, :4], mfb(xs), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------- Tucker, MUTAN, BLOCK
def test_tucker_matches_numpy():
    xs = random_inputs((3, 5))
    layer = Tucker(units=6, hidden_size=4, core_size=5)
    layer(xs)
    w = weights_by_name(layer)

    def reference(p):
        q, v = _projections(w, xs, activation=np.tanh, presence=p)
        z = np.einsum("bi,bj,ijk->bk", q, v, w["core"])
        return z @ w["output_kernel"] + w["output_bias"]

    _compare(layer, xs, reference)


def test_mutan_matches_numpy_and_equals_tucker_with_its_core():
    xs = random_inputs((3, 5))
    layer = MUTAN(units=6, hidden_size=4, core_size=5, rank=3)
    layer(xs)
    w = weights_by_name(layer)
    m, n = [w[f"core_factor_modality_{i}"].reshape(4, 3, 5) for i in range(2)]

    def reference(p):
        q, v = _projections(w, xs, activation=np.tanh, presence=p)
        z = sum((q @ m[:, r]) * (v @ n[:, r]) for r in range(3))
        return z @ w["output_kernel"] + w["output_bias"]

    _compare(layer, xs, reference)
    tucker = Tucker(units=6, hidden_size=4, core_size=5)
    tucker(xs)
    for v in tucker.weights:
        name = v.path.split("/")[-1]
        v.assign(np.einsum("irk,jrk->ijk", m, n) if name == "core" else w[name])
    np.testing.assert_allclose(tucker(xs, presence=PRESENCE[:, :2]),
                               layer(xs, presence=PRESENCE[:, :2]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pos_norm", ["before_cat", "after_cat"])
def test_block_matches_numpy(pos_norm):
    xs = random_inputs((3, 5))
    chunks, size, rank = 3, 2, 2
    layer = BLOCK(units=6, hidden_size=chunks * size, chunks=chunks, rank=rank, pos_norm=pos_norm)
    layer(xs)
    w = weights_by_name(layer)

    def reference(p):
        q, v = _projections(w, xs, presence=p)
        chunk_outputs = []
        for c in range(chunks):
            part = slice(c * size, (c + 1) * size)
            fq = (q[:, part] @ w["block_kernel_modality_0"][c]).reshape(-1, rank, size)
            fv = (v[:, part] @ w["block_kernel_modality_1"][c]).reshape(-1, rank, size)
            z_c = (fq * fv).sum(1)
            chunk_outputs.append(_l2(_ssqrt(z_c)) if pos_norm == "before_cat" else z_c)
        z = np.concatenate(chunk_outputs, -1)
        if pos_norm == "after_cat":
            z = _l2(_ssqrt(z))
        return z @ w["output_kernel"] + w["output_bias"]

    _compare(layer, xs, reference)


def test_block_rejects_bad_arguments():
    with pytest.raises(ValueError, match="pos_norm"):
        BLOCK(units=2, pos_norm="middle")
    with pytest.raises(ValueError, match="multiple of chunks"):
        BLOCK(units=2, hidden_size=10, chunks=3)


@pytest.mark.parametrize("cls", [Tucker, MUTAN, BLOCK])
def test_bimodal_layers_reject_three_modalities(cls):
    with pytest.raises(ValueError, match=f"{cls.__name__}.*exactly 2.*take 3 modalities: .*mlb"):
        cls(units=2)(random_inputs(SIZES))


# ------------------------------------------------------------------ contract
SMALL = {
    "mcb": dict(sketch_size=32),
    "mlb": dict(rank=8),
    "mfb": dict(factor=2),
    "mfh": dict(factor=2),
    "mutan": dict(hidden_size=6, core_size=5, rank=2),
    "tucker": dict(hidden_size=6, core_size=5),
    "block": dict(hidden_size=8, chunks=2, rank=2),
}


def _factory(name):
    return lambda: fusion.get(name, units=4, **SMALL[name])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_contract(name, tmp_path):
    bimodal = fusion.get_class(name).max_modalities == 2
    sizes = SIZES[:2] if bimodal else SIZES
    xs = random_inputs(sizes)
    presence = np.array([[1, 1, 0], [0, 1, 1], [1, 1, 1], [0, 0, 0]], "float32")[:, :len(sizes)]
    factory = _factory(name)
    assert_save_load_identical(factory(), xs, tmp_path, presence=presence)
    assert_every_weight_gets_gradient(factory(), xs)
    assert_absent_modality_ignored(factory(), xs, absent=1)
    assert_fits_with_jit(factory(), xs)
    assert_bad_inputs_rejected(factory, sizes)
    layer = factory()
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    for cls in type(layer).__mro__[:type(layer).__mro__.index(FusionLayer)]:
        arguments = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        assert arguments <= set(config), (cls.__name__, arguments - set(config))


# Large enough to learn a 3-dimensional dot product, small enough to be quick.
TASK = {
    "mcb": dict(sketch_size=64),
    "mlb": dict(rank=16),
    "mfb": {},
    "mfh": {},
    "mutan": dict(hidden_size=16, core_size=16, rank=4),
    "tucker": dict(hidden_size=8, core_size=8),
    "block": dict(hidden_size=16, chunks=4, rank=4),
}


def _fuse(name):
    return lambda inputs: fusion.get(name, units=8, **TASK[name])(inputs)


@pytest.mark.slow
def test_interaction_task_needs_multiplicative_fusion():
    accuracy = interaction_accuracies({name: _fuse(name) for name in TASK})
    assert all(a >= 0.9 for a in accuracy.values()), accuracy
