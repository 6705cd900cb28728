import keras
import numpy as np
import pytest

from mmfusion.fusion import MultimodalSets
from tests.fusion.test_attention import (
    POLICIES,
    check_distinct_initial_weights,
    check_dtype_policy,
    check_empty_batch,
    check_keras_mask,
    check_non_finite_placeholders,
)
from tests.layer_checks import (
    numpy_dense,
    numpy_softmax,
    random_inputs,
)

SIZES, STEPS = (6, 10), (5, 7)
POOLINGS = ("sum", "mean", "max", "transformer")
# Example 0 has 3 elements of modality 0, example 1 two of modality 1;
# example 3 has an empty modality 0.
MASKS = [np.ones((4, 5), "float32"), np.ones((4, 7), "float32")]
MASKS[0][0, 3:] = 0
MASKS[1][1, 2:] = 0
MASKS[0][3] = 0


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _elements(layer, xs):
    """NumPy reference of the embedded set `(batch, ΣT, units)`."""
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    table = _np(layer.modality_embeddings)
    return np.concatenate(
        [numpy_dense(e, x, relu) + table[i] for i, (e, x) in enumerate(zip(layer.embeddings, xs))],
        axis=1,
    )


@pytest.mark.parametrize("pooling", ["sum", "mean", "max"])
def test_pooling_matches_numpy(pooling):
    xs = random_inputs(SIZES, time_steps=STEPS)
    layer = MultimodalSets(units=8, pooling=pooling)
    out = _np(layer(xs, element_mask=MASKS))
    elements, mask = _elements(layer, xs), np.concatenate(MASKS, 1)[..., None]
    expected = {
        "sum": (elements * mask).sum(1),
        "mean": (elements * mask).sum(1) / mask.sum(1),
        "max": np.where(mask > 0, elements, -np.inf).max(1),
    }[pooling]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_max_pooling_importance_is_share_of_units_won():
    xs = random_inputs(SIZES, time_steps=STEPS)
    layer = MultimodalSets(units=8)
    _, weights = layer(xs, element_mask=MASKS, return_weights=True)
    elements, mask = _elements(layer, xs), np.concatenate(MASKS, 1)
    candidates = np.where(mask[..., None] > 0, elements, -np.inf)  # (batch, elements, units)
    # Each unit's max is won by the elements that reach it; tied winners share the unit.
    won = candidates == candidates.max(axis=1, keepdims=True)
    expected = (won / won.sum(axis=1, keepdims=True)).sum(axis=2) / 8
    np.testing.assert_allclose(_np(weights["element_importance"]), expected, atol=1e-6)
    np.testing.assert_allclose(_np(weights["element_importance"]).sum(1), 1.0, rtol=1e-6)


def test_transformer_attention_matches_numpy():
    xs = random_inputs(SIZES, time_steps=STEPS)
    layer = MultimodalSets(units=8, pooling="transformer")
    _, weights = layer(xs, element_mask=MASKS, return_weights=True)
    tokens = np.concatenate([np.broadcast_to(_np(layer.cls_token), (4, 1, 8)),
                             _elements(layer, xs)], axis=1)
    mha = layer.encoder.attention
    q = np.einsum("btd,dhk->bhtk", tokens, _np(mha._query_dense.kernel))
    k = np.einsum("bsd,dhk->bhsk", tokens, _np(mha._key_dense.kernel))
    valid = np.concatenate([np.ones((4, 1)), *MASKS], 1)
    expected = numpy_softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]),
                             mask=valid[:, None, None, :])
    expected = expected * valid[:, None, :, None]  # padded queries: zero rows
    np.testing.assert_allclose(_np(weights["set_attention"]), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_set_is_permutation_and_padding_invariant(pooling):
    xs = random_inputs(SIZES, time_steps=STEPS)
    layer = MultimodalSets(units=8, pooling=pooling)
    out = _np(layer(xs, element_mask=MASKS))
    order = [[4, 2, 0, 1, 3], [6, 5, 4, 3, 0, 1, 2]]
    permuted = [x[:, o] for x, o in zip(xs, order)]
    permuted_masks = [m[:, o] for m, o in zip(MASKS, order)]
    np.testing.assert_allclose(layer(permuted, element_mask=permuted_masks), out,
                               rtol=1e-5, atol=1e-5)
    padded_changed = [x + 7.0 * (1 - m)[..., None] for x, m in zip(xs, MASKS)]
    np.testing.assert_allclose(layer(padded_changed, element_mask=MASKS), out,
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(_np(layer(padded_changed)), _np(layer(xs)))


@pytest.mark.parametrize("pooling", POOLINGS)
def test_missing_modality_is_absent_from_the_set(pooling):
    xs = random_inputs(SIZES, time_steps=STEPS)
    layer = MultimodalSets(units=8, pooling=pooling)
    presence = np.array([[1, 0]] * 4, "float32")
    empty = [np.ones((4, 5), "float32"), np.zeros((4, 7), "float32")]
    np.testing.assert_allclose(layer(xs, presence=presence), layer(xs, element_mask=empty),
                               rtol=1e-6, atol=1e-6)


def test_element_mask_as_model_input_saves_and_loads(tmp_path):
    xs = random_inputs(SIZES, time_steps=STEPS)
    tensors = [keras.Input(shape=x.shape[1:]) for x in xs]
    masks = [keras.Input(shape=(t,)) for t in STEPS]
    layer = MultimodalSets(units=8, pooling="transformer")
    model = keras.Model(tensors + masks, layer(tensors, element_mask=masks))
    out = model.predict(xs + MASKS, verbose=0)
    np.testing.assert_allclose(out, layer(xs, element_mask=MASKS), rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "sets.keras")
    reloaded = keras.saving.load_model(tmp_path / "sets.keras")
    np.testing.assert_array_equal(reloaded.predict(xs + MASKS, verbose=0), out)




def test_unknown_pooling_is_rejected():
    with pytest.raises(ValueError, match="pooling must be one of.*'median'"):
        MultimodalSets(units=8, pooling="median")


def _sets(pooling):
    return lambda **kwargs: MultimodalSets(units=8, pooling=pooling, **kwargs)


# The pooling weights over the elements of the set (last axis), per pooling.
SET_WEIGHTS = {"max": "element_importance", "transformer": "set_attention"}


@pytest.mark.parametrize("pooling", POOLINGS)
def test_keras_conventions(pooling):
    make = _sets(pooling)
    check_distinct_initial_weights(make)
    check_non_finite_placeholders(make)
    check_empty_batch(make)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("pooling", ["max", "transformer"])
def test_dtype_policy_reaches_every_sublayer_and_stays_finite(pooling, policy):
    check_dtype_policy(_sets(pooling), policy)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_keras_mask_is_the_element_mask(pooling):
    check_keras_mask(_sets(pooling), {})


@pytest.mark.parametrize("pooling", ["max", "transformer"])
def test_padded_elements_get_no_weight_under_keras_masks(pooling):
    tokens = [keras.Input(shape=(5,), dtype="int32"), keras.Input(shape=(7,), dtype="int32")]
    embedded = [keras.layers.Embedding(11, 6, mask_zero=True)(t) for t in tokens]
    _, weights = MultimodalSets(units=8, pooling=pooling)(embedded, return_weights=True)
    model = keras.Model(tokens, weights[SET_WEIGHTS[pooling]])
    ids = [np.array([[3, 4, 0, 0, 0]] * 2), np.array([[5, 0, 0, 0, 0, 0, 0], [5, 6, 7, 0, 0, 0, 0]])]
    padded = np.concatenate([i == 0 for i in ids], axis=1)
    if pooling == "transformer":
        padded = np.concatenate([np.zeros((2, 1), bool), padded], axis=1)[:, None, None, :]
    found = model.predict(ids, verbose=0)
    assert np.all(found[np.broadcast_to(padded, found.shape)] == 0)
    assert np.any(found != 0)
