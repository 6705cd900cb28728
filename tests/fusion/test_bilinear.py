import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmfusion import fusion
from mmfusion.fusion import BLOCK, MCB, MFB, MFH, MLB, MUTAN, ModalityDropout, Tucker
from mmfusion.fusion.bilinear import chunk_sizes, signed_sqrt
from tests.layer_checks import (
    SMALL_BILINEAR,
    assert_save_load_identical,
    interaction_accuracies,
    random_inputs,
)

SIZES = (3, 5, 4)
PRESENCE = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 0]], "float32")


# ------------------------------------------- NumPy references (float64, papers' equations)
def _ssqrt(x, epsilon=0.0):
    """sign(x) sqrt(|x|) (smoothed as sign(x)(sqrt(|x|+ε) − sqrt(ε)) for ε > 0)."""
    return np.sign(x) * (np.sqrt(np.abs(x) + epsilon) - np.sqrt(epsilon))


def _l2(x):
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _w(layer):
    """`{weight path without the layer name: float64 array}`."""
    return {w.path.split("/", 1)[1]: np.asarray(keras.ops.convert_to_numpy(w), "float64")
            for w in layer.weights}


def _dense(w, z, name="output_projection"):
    return z @ w[f"{name}/kernel"] + w.get(f"{name}/bias", 0.0)


def _projections(w, xs, tag="", activation=lambda h: h, presence=None, fill=1.0):
    """Each modality's `act(x K + b)`; `fill` where the modality is absent."""
    out = []
    for m, x in enumerate(xs):
        h = activation(x @ w[f"kernel{tag}_modality_{m}"] + w.get(f"bias{tag}_modality_{m}", 0.0))
        if presence is not None:
            h = np.where(presence[:, m:m + 1] > 0, h, fill)
        out.append(h)
    return out


def _sum_pool(x, k):
    return x.reshape(len(x), -1, k).sum(-1)


def _count_sketch_loops(x, index, sign, d):
    out = np.zeros((len(x), d))
    for b in range(len(x)):
        for j in range(x.shape[1]):
            out[b, int(index[j])] += sign[j] * x[b, j]
    return out


def _circular_convolution(a, b):
    """`(a ⊛ b)[k] = Σ_i a[i] b[(k − i) mod d]`, by shifting, without FFT."""
    return sum(a[:, i:i + 1] * np.roll(b, i, axis=1) for i in range(a.shape[1]))


def _mcb_numpy(layer, xs, presence, normalize=True):
    w = _w(layer)
    d = layer.sketch_size
    impulse = np.eye(d)[0]
    result = None
    for m, x in enumerate(xs):
        sketch = _count_sketch_loops(x, w[f"sketch_index_modality_{m}"],
                                     w[f"sketch_sign_modality_{m}"], d)
        sketch = np.where(presence[:, m:m + 1] > 0, sketch, impulse)
        result = sketch if result is None else _circular_convolution(result, sketch)
    return _dense(w, _l2(_ssqrt(result))) if normalize else result


def _compare(layer, xs, reference, atol=1e-5, presence=PRESENCE):
    """The layer equals `reference(presence)` with and without a presence mask."""
    presence = presence[:, :len(xs)]
    for p in (np.ones_like(presence), presence):
        np.testing.assert_allclose(layer(xs, presence=p), reference(p), rtol=1e-4, atol=atol)


def _randomize(layer, seed=2, scale=0.5):
    """Non-zero values for every trainable weight (biases included)."""
    rng = np.random.default_rng(seed)
    for v in layer.trainable_weights:
        v.assign(rng.normal(size=v.shape) * scale)


# ---------------------------------------------------------------- signed sqrt
def test_signed_sqrt_is_exact_with_finite_gradient_at_zero():
    x = tf.constant([-4.0, -1e-4, 0.0, 1e-6, 0.25, 9.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = signed_sqrt(x)
    grad = tape.gradient(y, x).numpy()
    np.testing.assert_allclose(y.numpy(), [-2.0, -1e-2, 0.0, 1e-3, 0.5, 3.0], rtol=1e-6)
    # d/dx sqrt|x| = 1 / (2 sqrt|x|); at 0 the documented subgradient 1.
    np.testing.assert_allclose(grad, [0.25, 50.0, 1.0, 500.0, 1.0, 1 / 6], rtol=1e-5)
    smooth = signed_sqrt(tf.constant([0.0, 4.0]), epsilon=1e-2).numpy()
    np.testing.assert_allclose(smooth, _ssqrt(np.array([0.0, 4.0]), 1e-2), rtol=1e-6)


def test_training_on_exact_zeros_stays_finite():
    """Bias-free projections of all-zero inputs make the signed sqrt and the
    L2 normalization see exact zeros; training must not produce NaN."""
    keras.utils.set_random_seed(0)
    xs = [tf.constant(x) for x in random_inputs((3, 4), batch=16)]
    xs = [tf.where(tf.range(16)[:, None] % 2 == 0, 0.0, x) for x in xs]
    layers = [MCB(units=4, sketch_size=16, use_bias=False), MFB(units=4, use_bias=False),
              MFH(units=4, use_bias=False),
              BLOCK(units=4, hidden_size=8, chunks=2, rank=2, use_bias=False),
              MUTAN(units=4, hidden_size=6, core_size=5, rank=2, use_bias=False,
                    normalize=True)]
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
    # float32 FFT round-off (~1e-7), amplified by the exact signed sqrt of
    # entries near 0 (sqrt(1e-7) ~ 3e-4); the raw convolution is compared tightly.
    _compare(layer, xs, lambda p: _mcb_numpy(layer, xs, p), atol=1e-3)
    raw = MCB(sketch_size=sketch_size, seed=3, power_norm=False, l2_norm=False)
    raw(xs)
    _compare(raw, xs, lambda p: _mcb_numpy(raw, xs, p, normalize=False), atol=1e-5)


def test_mcb_sketches_are_fixed_by_seed_and_saved(tmp_path):
    xs = random_inputs((3, 5))
    a, b, c = MCB(sketch_size=32, seed=1), MCB(sketch_size=32, seed=1), MCB(sketch_size=32, seed=2)
    for layer in (a, b, c):
        layer(xs)
    np.testing.assert_array_equal(a(xs), b(xs))
    assert not np.allclose(a(xs), c(xs))
    assert not a.trainable_weights and len(a.non_trainable_weights) == 4
    index = keras.ops.convert_to_numpy(a.sketches[1][0])
    assert index.dtype == np.int32 and index.min() >= 0 and index.max() < 32
    # Sketches that the seed would not regenerate survive saving and loading.
    saved = MCB(units=4, sketch_size=32, seed=5)
    saved(xs)
    saved.sketches[0][0].assign([31, 0, 7])
    saved.sketches[0][1].assign([-1.0, -1.0, 1.0])
    reloaded = assert_save_load_identical(saved, xs, tmp_path).layers[-1]
    np.testing.assert_array_equal(reloaded.sketches[0][0], [31, 0, 7])
    np.testing.assert_array_equal(reloaded.sketches[0][1], [-1.0, -1.0, 1.0])


def test_mcb_default_seed_is_drawn_per_layer_and_reproducible():
    xs = random_inputs((30, 30))

    def sketches():
        layers = [MCB(sketch_size=1000), MCB(sketch_size=1000)]
        for layer in layers:
            layer(xs)
        return [keras.ops.convert_to_numpy(layer.sketches[0][0]) for layer in layers]

    keras.utils.set_random_seed(4)
    first, second = sketches()
    assert not np.array_equal(first, second)
    keras.utils.set_random_seed(4)
    np.testing.assert_array_equal(sketches()[0], first)
    layer = MCB(sketch_size=1000)
    assert isinstance(layer.get_config()["seed"], int)
    clone = MCB.from_config(layer.get_config())
    layer(xs), clone(xs)
    np.testing.assert_array_equal(layer.sketches[1][1], clone.sketches[1][1])


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
    _randomize(layer)
    w = _w(layer)
    _compare(layer, xs, lambda p: _dense(w, np.prod(_projections(w, xs, activation=np.tanh,
                                                                 presence=p), axis=0)))


def test_mlb_authors_variant_relu_normalize():
    """The authors' fusion-library MLB: ReLU inputs, signed sqrt + L2 of the product."""
    xs = random_inputs((3, 5))
    layer = MLB(units=6, rank=7, activation="relu", normalize=True)
    layer(xs)
    _randomize(layer)
    w = _w(layer)
    relu = lambda h: np.maximum(h, 0.0)  # noqa: E731
    _compare(layer, xs, lambda p: _dense(w, _l2(_ssqrt(np.prod(
        _projections(w, xs, activation=relu, presence=p), axis=0)))))


@pytest.mark.parametrize("sizes", [(3, 5), SIZES])
def test_mfb_matches_numpy(sizes):
    xs = random_inputs(sizes)
    layer = MFB(units=4, factor=3)
    layer(xs)
    _randomize(layer)
    w = _w(layer)
    _compare(layer, xs, lambda p: _l2(_ssqrt(_sum_pool(
        np.prod(_projections(w, xs, presence=p), axis=0), 3))))


def test_mfb_smoothed_signed_sqrt_is_an_argument():
    xs = random_inputs((3, 5))
    layer = MFB(units=4, factor=3, epsilon=0.5)
    layer(xs)
    w = _w(layer)
    np.testing.assert_allclose(layer(xs), _l2(_ssqrt(_sum_pool(
        np.prod(_projections(w, xs), axis=0), 3), 0.5)), rtol=1e-4, atol=1e-6)


def test_mfb_normalizations_and_dropout_are_optional():
    xs = random_inputs((3, 5))
    layer = MFB(units=4, factor=2, power_norm=False, l2_norm=False, dropout=0.5)
    layer(xs)
    w = _w(layer)
    expected = _sum_pool(np.prod(_projections(w, xs), axis=0), 2)
    np.testing.assert_allclose(layer(xs), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(layer(xs, training=True), expected)
    assert MFB(units=4, dropout=0.0).dropout_layer is None


@pytest.mark.parametrize("sizes", [(3, 5), SIZES])
def test_mfh_matches_numpy_cascade(sizes):
    xs = random_inputs(sizes)
    layer = MFH(units=4, order=3, factor=2)
    layer(xs)
    w = _w(layer)

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
        v.assign(_w(mfh)[v.path.split("/")[-1].replace("kernel", "kernel_0")
                         .replace("bias", "bias_0")])
    np.testing.assert_allclose(mfh(xs)[:, :4], mfb(xs), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------- Tucker, MUTAN, BLOCK
def _fill(layer):
    return 1.0 / math.sqrt(layer.hidden_size)


@pytest.mark.parametrize("normalize", [True, False])
def test_tucker_matches_numpy(normalize):
    """The default (normalized z) and the paper's equations (normalize=False)."""
    xs = random_inputs((3, 5))
    layer = Tucker(units=6, hidden_size=4, core_size=5, **({} if normalize else
                                                            dict(normalize=False)))
    layer(xs)
    _randomize(layer)
    w = _w(layer)
    norm = (lambda z: _l2(_ssqrt(z))) if normalize else (lambda z: z)

    def reference(p):
        q, v = _projections(w, xs, activation=np.tanh, presence=p, fill=_fill(layer))
        return _dense(w, norm(np.einsum("bi,bj,ijk->bk", q, v, w["core"])))

    _compare(layer, xs, reference)


def test_tucker_authors_variant_linear_core_bias_normalize():
    xs = random_inputs((3, 5))
    layer = Tucker(units=6, hidden_size=4, core_size=5, activation=None, merge_bias=True,
                   normalize=True)
    layer(xs)
    _randomize(layer)
    w = _w(layer)

    def reference(p):
        q, v = _projections(w, xs, presence=p, fill=_fill(layer))
        return _dense(w, _l2(_ssqrt(np.einsum("bi,bj,ijk->bk", q, v, w["core"]) + w["core_bias"])))

    _compare(layer, xs, reference)


def _mutan_reference(layer, w, xs, p, activation=np.tanh, rank=3):
    h, c = layer.hidden_size, layer.core_size
    q, v = _projections(w, xs, activation=activation, presence=p, fill=_fill(layer))
    m, n = [w[f"core_factor_modality_{i}"].reshape(h, rank, c) for i in range(2)]
    a, b = [w.get(f"core_factor_bias_modality_{i}", np.zeros(rank * c)).reshape(rank, c)
            for i in range(2)]
    return sum((q @ m[:, r] + a[r]) * (v @ n[:, r] + b[r]) for r in range(rank))


def test_mutan_defaults_have_merge_biases_and_normalization():
    xs = random_inputs((3, 5))
    layer = MUTAN(units=6, hidden_size=4, core_size=5, rank=3)
    layer(xs)
    w = _w(layer)
    # The merge biases start uniform in [-1, 1], larger than the factors.
    biases = np.concatenate([w[f"core_factor_bias_modality_{i}"] for i in range(2)])
    assert 0.4 < biases.std() < 0.7 and np.abs(biases).max() <= 1.0
    _randomize(layer)
    w = _w(layer)
    _compare(layer, xs, lambda p: _dense(w, _l2(_ssqrt(_mutan_reference(layer, w, xs, p)))))


def test_mutan_paper_equations_match_numpy_and_equal_tucker_with_its_core():
    xs = random_inputs((3, 5))
    layer = MUTAN(units=6, hidden_size=4, core_size=5, rank=3, merge_bias=False,
                  normalize=False)
    layer(xs)
    _randomize(layer)
    w = _w(layer)
    _compare(layer, xs, lambda p: _dense(w, _mutan_reference(layer, w, xs, p)))
    m, n = [w[f"core_factor_modality_{i}"].reshape(4, 3, 5) for i in range(2)]
    tucker = Tucker(units=6, hidden_size=4, core_size=5, normalize=False)
    tucker(xs)
    for v in tucker.weights:
        name = v.path.split("/", 1)[1]
        v.assign(np.einsum("irk,jrk->ijk", m, n) if name == "core" else w[name])
    np.testing.assert_allclose(tucker(xs, presence=PRESENCE[:, :2]),
                               layer(xs, presence=PRESENCE[:, :2]), rtol=1e-4, atol=1e-5)


def test_mutan_authors_variant_linear_merge_bias_normalize():
    xs = random_inputs((3, 5))
    layer = MUTAN(units=6, hidden_size=4, core_size=5, rank=3, activation=None,
                  merge_bias=True, normalize=True)
    layer(xs)
    _randomize(layer)
    w = _w(layer)
    _compare(layer, xs, lambda p: _dense(
        w, _l2(_ssqrt(_mutan_reference(layer, w, xs, p, activation=lambda h: h)))))


def test_tucker_family_absent_modality_is_the_unit_norm_identity():
    """An absent modality acts as a present one whose projection is the
    constant unit-norm vector `1/sqrt(hidden)` (plain ones have norm
    sqrt(hidden): absent rows came out ~sqrt(hidden) times larger)."""
    xs = random_inputs((3, 5))
    for layer in (MUTAN(units=6, hidden_size=16, core_size=5, rank=3),
                  Tucker(units=6, hidden_size=16, core_size=5),
                  BLOCK(units=6, hidden_size=16, chunks=2, rank=2, activation="tanh")):
        layer(xs)
        layer.projections[0][0].assign(np.zeros(layer.projections[0][0].shape))
        layer.projections[0][1].assign(np.full(16, np.arctanh(0.25)))  # tanh(b) = 1/sqrt(16)
        absent = layer(xs, presence=np.array([[0.0, 1.0]] * 4))
        np.testing.assert_allclose(absent, layer(xs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pos_norm", ["before_cat", "after_cat"])
@pytest.mark.parametrize("hidden_size, chunks", [(6, 3), (10, 3), (9, 4)])
def test_block_matches_numpy(pos_norm, hidden_size, chunks):
    xs = random_inputs((3, 5))
    rank = 2
    layer = BLOCK(units=6, hidden_size=hidden_size, chunks=chunks, rank=rank, pos_norm=pos_norm,
                  merge_bias=True)
    layer(xs)
    _randomize(layer)
    w = _w(layer)
    sizes = chunk_sizes(hidden_size, chunks)
    # Chunk c's merge kernel and bias, whichever group of equal sizes holds it.
    kernels = {m: [] for m in range(2)}
    for m in range(2):
        for g, _ in enumerate(layer.groups):
            tag = "" if g == 0 else f"_{g}"
            for k, b in zip(w[f"block_kernel{tag}_modality_{m}"],
                            w[f"block_bias{tag}_modality_{m}"]):
                kernels[m].append((k, b))

    def reference(p):
        q, v = _projections(w, xs, presence=p, fill=1.0 / math.sqrt(hidden_size))
        chunk_outputs, start = [], 0
        for c, size in enumerate(sizes):
            part = slice(start, start + size)
            start += size
            fq = (q[:, part] @ kernels[0][c][0] + kernels[0][c][1]).reshape(-1, rank, size)
            fv = (v[:, part] @ kernels[1][c][0] + kernels[1][c][1]).reshape(-1, rank, size)
            z_c = (fq * fv).sum(1)
            chunk_outputs.append(_l2(_ssqrt(z_c)) if pos_norm == "before_cat" else z_c)
        z = np.concatenate(chunk_outputs, -1)
        return _dense(w, _l2(_ssqrt(z)) if pos_norm == "after_cat" else z)

    _compare(layer, xs, reference)


def test_block_chunk_sizes_follow_the_authors_split():
    assert chunk_sizes(1600, 20) == [80] * 20
    assert chunk_sizes(1600, 18) == [89] * 17 + [87]
    assert chunk_sizes(10, 4) == [3, 3, 3, 1]
    assert chunk_sizes(9, 4) == [3, 2, 2, 2]
    layer = BLOCK(units=3000, hidden_size=1600, chunks=18, rank=15)
    layer(random_inputs((20, 24), batch=2))
    assert [tuple(k.shape) for k, _ in layer.merges[0]] == [(17, 89, 15 * 89), (1, 87, 15 * 87)]


def test_block_rejects_bad_arguments():
    with pytest.raises(ValueError, match="pos_norm"):
        BLOCK(units=2, pos_norm="middle")
    with pytest.raises(ValueError, match="BLOCK.*chunks"):
        BLOCK(units=2, hidden_size=10, chunks=11)
    with pytest.raises(ValueError, match="BLOCK.*normalize"):
        BLOCK(units=2, normalize=True)


@pytest.mark.parametrize("cls", [Tucker, MUTAN, BLOCK])
def test_bimodal_layers_reject_three_modalities(cls):
    with pytest.raises(ValueError, match=f"{cls.__name__}.*exactly 2.*take 3 modalities: .*mlb"):
        cls(units=2)(random_inputs(SIZES))


# ---------------------------------------------------------- dropout variants
DROPOUT_LAYERS = {
    "mlb": dict(rank=8),
    "tucker": dict(hidden_size=6, core_size=5),
    "mutan": dict(hidden_size=6, core_size=5, rank=2),
    "block": dict(hidden_size=8, chunks=2, rank=2),
}


@pytest.mark.parametrize("name", sorted(DROPOUT_LAYERS))
@pytest.mark.parametrize("which", ["projection_dropout", "fusion_dropout", "output_dropout"])
def test_dropouts_act_only_in_training(name, which):
    xs = random_inputs((3, 5), batch=16)
    plain = fusion.get(name, units=4, **DROPOUT_LAYERS[name])
    dropped = fusion.get(name, units=4, **{which: 0.5}, **DROPOUT_LAYERS[name])
    plain(xs), dropped(xs)
    for a, b in zip(plain.weights, dropped.weights):
        b.assign(a)
    np.testing.assert_allclose(dropped(xs, training=False), plain(xs), rtol=1e-6)
    assert not np.allclose(dropped(xs, training=True), plain(xs))


# ------------------------------------------------- Keras conventions, numerics


def _two_or_three(name):
    return SIZES[:2] if fusion.get_class(name).max_modalities == 2 else SIZES


@pytest.mark.parametrize("name", sorted(SMALL_BILINEAR))
def test_no_two_weights_start_equal(name):
    """Equal-size modalities: no two trainable weights with a random
    initializer start with equal values (one initializer reused made them equal)."""
    layer = fusion.get(name, units=4, **SMALL_BILINEAR[name])
    layer(random_inputs((5, 5)))
    random = [keras.ops.convert_to_numpy(w) for w in layer.trainable_weights
              if np.std(keras.ops.convert_to_numpy(w)) > 0]
    for i, a in enumerate(random):
        for b in random[i + 1:]:
            assert a.shape != b.shape or not np.allclose(a, b)


@pytest.mark.parametrize("name", sorted(SMALL_BILINEAR))
def test_nan_placeholders_of_absent_rows_never_reach_outputs_or_gradients(name):
    sizes = _two_or_three(name)
    xs = random_inputs(sizes)
    presence = PRESENCE[:, :len(sizes)]
    holes = [np.where(presence[:, m:m + 1] > 0, x, np.nan).astype("float32")
             for m, x in enumerate(xs)]
    holes[0][0, 0] = np.inf if presence[0, 0] == 0 else holes[0][0, 0]
    zeros = [np.nan_to_num(x, nan=0.0) for x in holes]
    layer = fusion.get(name, units=4, **SMALL_BILINEAR[name])
    tensors = [tf.constant(x) for x in holes]
    with tf.GradientTape() as tape:
        y = layer(tensors, presence=presence)
        loss = tf.reduce_sum(y ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    np.testing.assert_allclose(y, layer(zeros, presence=presence), rtol=1e-6, atol=1e-7)
    assert np.all(np.isfinite(y))
    assert all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("name", sorted(SMALL_BILINEAR))
def test_empty_batch(name):
    sizes = _two_or_three(name)
    layer = fusion.get(name, units=4, **SMALL_BILINEAR[name])
    out = layer([np.zeros((0, d), "float32") for d in sizes],
                presence=np.zeros((0, len(sizes)), "float32"))
    assert tuple(out.shape) == (0, layer(random_inputs(sizes)).shape[-1])


@pytest.mark.parametrize("policy", ["float64", "mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", sorted(SMALL_BILINEAR))
def test_dtype_policies(name, policy):
    """Outputs in the compute dtype, finite with one or all modalities absent,
    and close to float32 outputs of the same weights; dropout sub-layers
    follow the policy."""
    sizes = _two_or_three(name)
    # Large inputs: a float16 sum of squares of the product would overflow
    # (MFH's order-2 cascade multiplies 4 projections: its products themselves
    # overflow float16 at this scale, see its docstring).
    xs = [x * (3.0 if name == "mfh" else 30.0) for x in random_inputs(sizes)]
    kwargs = dict(units=4, **SMALL_BILINEAR[name])
    if name in DROPOUT_LAYERS:
        kwargs["fusion_dropout"] = 0.1
    reference = fusion.get(name, **kwargs)
    layer = fusion.get(name, dtype=policy, **kwargs)
    reference(xs), layer(xs)
    for a, b in zip(reference.weights, layer.weights):
        b.assign(keras.ops.convert_to_numpy(a))
    compute = keras.DTypePolicy(policy).compute_dtype
    for sub in layer._flatten_layers(include_self=False):
        assert sub.compute_dtype == compute, sub.name
    presence = PRESENCE[:, :len(sizes)]
    y = layer(xs, presence=presence)
    assert keras.backend.standardize_dtype(y.dtype) == compute
    y = keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))
    assert np.all(np.isfinite(y)), y
    tolerance = {"float64": 1e-4, "mixed_float16": 5e-2, "mixed_bfloat16": 2e-1}[policy]
    expected = keras.ops.convert_to_numpy(reference(xs, presence=presence))
    scale = np.abs(expected).max()
    np.testing.assert_allclose(y / scale, expected / scale, atol=tolerance)


@pytest.mark.parametrize("name", ["mcb", "mfb", "mutan", "block"])
def test_fit_under_mixed_float16(name):
    keras.utils.set_random_seed(0)
    sizes = _two_or_three(name)
    xs = random_inputs(sizes, batch=16)
    inputs = [keras.Input(shape=(d,)) for d in sizes]
    fused = fusion.get(name, units=4, dtype="mixed_float16", **SMALL_BILINEAR[name])(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, dtype="float32")(fused))
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(xs, np.ones((16, 1)), epochs=2, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_new_arguments_round_trip_through_config():
    for layer in (MLB(units=3, rank=4, normalize=True, projection_dropout=0.2, epsilon=1e-3),
                  MUTAN(units=3, activation=None, merge_bias=True, output_dropout=0.1),
                  Tucker(units=3, activation="relu", fusion_dropout=0.3, normalize=True),
                  BLOCK(units=3, chunks=18, merge_bias=True, projection_dropout=0.1),
                  MCB(units=3), MFB(epsilon=1e-4, dropout=0.0)):
        config = layer.get_config()
        assert type(layer).from_config(config).get_config() == config


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


@pytest.mark.slow
def test_mutan_with_modality_dropout_learns_each_modality_end_to_end(data_dir):
    """Image CNN + audio CNN trained end to end through MUTAN (default
    sizes, units=64, Adam 2e-3) with ModalityDropout(0.5) on real
    handwriting x spoken digits. In the paper's form (no merge biases, no
    normalization) both branches' ReLU embeddings died in the first epoch
    and the audio-only rows stayed at chance (0.10 after 4 and after 12
    epochs); with the defaults they learn (0.31 after 4 epochs, seed 1;
    0.45 after 12, seed 0)."""
    import mmfusion.tasks as tasks
    from mmfusion.compose import build_fusion_model

    task = tasks.get("av_digits")
    data = task.data(data_dir=data_dir, seed=1)
    keras.utils.set_random_seed(1)
    model = build_fusion_model(task.branches(data), "mutan", num_outputs=10, units=64,
                               presence=True, modality_dropout=0.5)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    inputs, labels = data.splits["train"]
    model.fit({**inputs, "presence": np.ones((len(labels), 2), "float32")}, labels,
              epochs=4, batch_size=32, verbose=0)
    inputs, labels = data.splits["test"]
    audio_only = np.tile(np.float32([0.0, 1.0]), (len(labels), 1))  # (image, audio)
    _, accuracy = model.evaluate({**inputs, "presence": audio_only}, labels, verbose=0)
    assert accuracy > 0.2  # chance: 0.1
