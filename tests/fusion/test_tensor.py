import itertools

import keras
import numpy as np
import pytest

from mmfusion.fusion import LMF, TFN
from tests.layer_checks import (
    interaction_accuracies,
    random_inputs,
    weights_by_name,
)

SIZES = (3, 5, 4)
PRESENCE = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 0]], "float32")


def _with_one(x, present):
    """`[x; 1]` with x zeroed where the modality is absent."""
    return np.concatenate([x * present[:, None], np.ones((len(x), 1), x.dtype)], -1)


def _tfn_numpy(xs, kernel, bias, presence):
    """Outer product of the `[x_m; 1]`, flattened row-major, times the kernel."""
    out = []
    for b in range(len(xs[0])):
        tensor = np.ones(())
        for m, x in enumerate(xs):
            tensor = np.multiply.outer(tensor, _with_one(x[b:b + 1], presence[b:b + 1, m])[0])
        out.append(tensor.reshape(-1) @ kernel + bias)
    return np.stack(out)


def _lmf_numpy(xs, factors, rank_weights, bias, presence):
    product = 1.0
    for m, (x, factor) in enumerate(zip(xs, factors)):
        product = product * np.einsum("bd,rdu->bru", _with_one(x, presence[:, m]), factor)
    return np.einsum("bru,r->bu", product, rank_weights) + bias


def _by_rank(factor, rank):
    """A stored `(d + 1, rank · units)` factor as `(rank, d + 1, units)`."""
    return factor.reshape(factor.shape[0], rank, -1).transpose(1, 0, 2)


def _stored(factor):
    """`(rank, d + 1, units)` as the stored `(d + 1, rank · units)` layout."""
    return factor.transpose(1, 0, 2).reshape(factor.shape[1], -1)


def _lmf_as_tfn_kernel(factors, rank_weights):
    """`W[j_1, ..., j_N, u] = Σ_i λ_i Π_m W_m^(i)[j_m, u]`, flattened like TFN's kernel."""
    letters = "abcdefgh"[:len(factors)]
    spec = ",".join(f"r{j}u" for j in letters) + ",r->" + letters + "u"
    kernel = np.einsum(spec, *factors, rank_weights)
    return kernel.reshape(-1, kernel.shape[-1])


@pytest.mark.parametrize("sizes", [(3, 5), SIZES])
def test_tfn_matches_numpy(sizes):
    xs = random_inputs(sizes)
    presence = PRESENCE[:, :len(sizes)]
    layer = TFN(units=6)
    layer(xs)
    w = weights_by_name(layer)
    ones = np.ones_like(presence)
    for p in (ones, presence):
        expected = _tfn_numpy(xs, w["kernel"], w["bias"], p)
        np.testing.assert_allclose(layer(xs, presence=p), expected, rtol=1e-5, atol=1e-5)


def test_tfn_kernel_has_every_product_of_features():
    """With a one-hot kernel column, TFN's output is exactly one feature product."""
    xs = random_inputs((3, 5))
    layer = TFN(units=1, use_bias=False)
    layer(xs)
    kernel = np.zeros((4, 6))
    kernel[1, 2] = 1.0  # x_1[1] * x_2[2]
    kernel[3, 5] = 10.0  # the constant term 1 * 1
    layer.kernel.assign(kernel.reshape(-1, 1))
    np.testing.assert_allclose(layer(xs)[:, 0], xs[0][:, 1] * xs[1][:, 2] + 10.0, rtol=1e-5)


@pytest.mark.parametrize("sizes", [(3, 5), SIZES])
def test_lmf_matches_numpy(sizes):
    xs = random_inputs(sizes)
    presence = PRESENCE[:, :len(sizes)]
    layer = LMF(units=6, rank=3)
    layer(xs)
    layer.rank_weights.assign([0.5, -1.0, 2.0])
    layer.bias.assign(np.linspace(-1, 1, 6))
    w = weights_by_name(layer)
    factors = [_by_rank(w[f"factor_modality_{m}"], 3) for m in range(len(sizes))]
    for p in (np.ones_like(presence), presence):
        expected = _lmf_numpy(xs, factors, w["rank_weights"], w["bias"], p)
        np.testing.assert_allclose(layer(xs, presence=p), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sizes", [(3, 5), SIZES])
def test_tfn_built_from_lmf_factors_equals_lmf(sizes):
    xs = random_inputs(sizes)
    presence = PRESENCE[:, :len(sizes)]
    lmf = LMF(units=4, rank=3)
    lmf(xs)
    lmf.rank_weights.assign([0.5, -1.0, 2.0])
    w = weights_by_name(lmf)
    tfn = TFN(units=4)
    tfn(xs)
    factors = [_by_rank(w[f"factor_modality_{m}"], 3) for m in range(len(sizes))]
    tfn.kernel.assign(_lmf_as_tfn_kernel(factors, w["rank_weights"]))
    tfn.bias.assign(w["bias"])
    for p in (None, presence):
        np.testing.assert_allclose(tfn(xs, presence=p), lmf(xs, presence=p),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sizes", [(3, 5), (2, 3, 2)])
def test_full_rank_lmf_expresses_any_tfn(sizes):
    """Rank `r = Π_{m<N} (d_m + 1)`: for each index `i = (j_1, ..., j_{N-1})`,
    `W_m^(i) = e_{j_m}` (in every unit column) for `m < N` and
    `W_N^(i) = W[j_1, ..., j_{N-1}, :, :]`, so `Σ_i Π_m W_m^(i)` is `W`."""
    xs = random_inputs(sizes)
    presence = PRESENCE[:, :len(sizes)]
    units = 4
    tfn = TFN(units=units)
    tfn(xs)
    tfn.bias.assign(np.arange(units, dtype="float32"))
    w = weights_by_name(tfn)
    dims = [d + 1 for d in sizes]
    kernel = w["kernel"].reshape(dims + [units])
    indices = list(itertools.product(*[range(d) for d in dims[:-1]]))
    factors = [np.zeros((len(indices), d, units), "float32") for d in dims]
    for i, index in enumerate(indices):
        for m, j in enumerate(index):
            factors[m][i, j, :] = 1.0
        factors[-1][i] = kernel[index]
    lmf = LMF(units=units, rank=len(indices), use_rank_weights=False)
    lmf(xs)
    for variable, value in zip(lmf.factors, factors):
        variable.assign(_stored(value))
    lmf.bias.assign(w["bias"])
    for p in (None, presence):
        np.testing.assert_allclose(lmf(xs, presence=p), tfn(xs, presence=p),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [TFN, LMF])
def test_no_two_weights_start_equal(cls):
    layer = cls(units=4)
    layer(random_inputs((5, 5)))
    values = [keras.ops.convert_to_numpy(w) for w in layer.trainable_weights]
    values = [v for v in values if np.std(v) > 0]  # constant initializers (bias, λ) aside
    assert len(values) >= 1 + (cls is LMF)
    for i, a in enumerate(values):
        for b in values[i + 1:]:
            assert a.shape != b.shape or not np.allclose(a, b)


@pytest.mark.parametrize("cls", [TFN, LMF])
def test_empty_batch_and_nan_placeholders(cls):
    layer = cls(units=4)
    empty = layer([np.zeros((0, 3), "float32"), np.zeros((0, 5), "float32")],
                  presence=np.zeros((0, 2), "float32"))
    assert tuple(empty.shape) == (0, 4)
    xs = random_inputs((3, 5))
    presence = PRESENCE[:, :2]
    holes = [np.where(presence[:, m:m + 1] > 0, x, np.nan).astype("float32")
             for m, x in enumerate(xs)]
    zeros = [np.nan_to_num(x) for x in holes]
    np.testing.assert_array_equal(layer(holes, presence=presence), layer(zeros, presence=presence))


@pytest.mark.parametrize("policy", ["float64", "mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("cls", [TFN, LMF])
def test_dtype_policies(cls, policy):
    xs = random_inputs(SIZES)
    reference, layer = cls(units=4), cls(units=4, dtype=policy)
    reference(xs), layer(xs)
    for a, b in zip(reference.weights, layer.weights):
        b.assign(keras.ops.convert_to_numpy(a))
    y = layer(xs, presence=PRESENCE)
    compute = keras.DTypePolicy(policy).compute_dtype
    assert keras.backend.standardize_dtype(y.dtype) == compute
    expected = keras.ops.convert_to_numpy(reference(xs, presence=PRESENCE))
    tolerance = {"float64": 1e-5, "mixed_float16": 2e-2, "mixed_bfloat16": 1e-1}[policy]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32")),
                               expected, atol=tolerance * np.abs(expected).max())


def test_get_config_round_trip():
    for layer in (TFN(units=3, activation="relu", use_bias=False, modalities=["a", "b"]),
                  LMF(units=3, rank=7, use_rank_weights=False, modalities=["a", "b"])):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


@pytest.mark.slow
def test_interaction_task_needs_multiplicative_fusion():
    accuracy = interaction_accuracies({
        "linear": lambda t: keras.layers.Concatenate()(t),
        "tfn": lambda t: TFN(units=8)(t),
        "lmf": lambda t: LMF(units=8)(t),
    })
    assert accuracy["linear"] < 0.65, accuracy
    assert accuracy["tfn"] >= 0.9, accuracy
    assert accuracy["lmf"] >= 0.9, accuracy
