import keras
import numpy as np
import pytest

from mmfusion import fusion
from mmfusion.fusion import Concatenate, WeightedSum
from tests.layer_checks import (
    numpy_dense,
    random_inputs,
    weights_by_name,
)

SIZES = (3, 5, 4)


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def test_concatenate_matches_numpy():
    xs = random_inputs(SIZES)
    layer = Concatenate(units=6, activation="relu")
    out = keras.ops.convert_to_numpy(layer(xs))
    w = weights_by_name(layer)
    expected = np.maximum(np.concatenate(xs, -1) @ w["kernel"] + w["bias"], 0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_concatenate_without_units_is_plain_concatenation():
    xs = random_inputs(SIZES)
    np.testing.assert_array_equal(Concatenate()(xs), np.concatenate(xs, -1))


def test_weighted_sum_matches_numpy_and_weights_sum_to_one():
    xs = random_inputs(SIZES)
    layer = WeightedSum(units=4, activation="tanh")
    layer(xs)
    layer.modality_logits.assign([0.3, -1.0, 2.0])
    out, weights = layer(xs, return_weights=True)
    theta = _softmax(np.array([0.3, -1.0, 2.0]))
    hidden = [numpy_dense(p, x, np.tanh) for p, x in zip(layer.projections, xs)]
    expected = sum(t * h for t, h in zip(theta, hidden))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights["modality_weights"], np.tile(theta, (4, 1)), rtol=1e-6)


def test_weighted_sum_renormalizes_over_present_modalities():
    xs = random_inputs(SIZES)
    layer = WeightedSum(units=4)
    layer(xs)
    layer.modality_logits.assign([0.3, -1.0, 2.0])
    presence = np.array([[1, 0, 1]] * 4, "float32")
    _, weights = layer(xs, presence=presence, return_weights=True)
    theta = np.exp([0.3, 2.0]) / np.exp([0.3, 2.0]).sum()
    np.testing.assert_allclose(weights["modality_weights"][0], [theta[0], 0, theta[1]], rtol=1e-6)


def test_weighted_sum_unnormalized_uses_raw_weights():
    xs = random_inputs((4, 4))
    layer = WeightedSum(normalize=False)
    layer(xs)
    layer.modality_logits.assign([2.0, -0.5])
    np.testing.assert_allclose(layer(xs), 2.0 * xs[0] - 0.5 * xs[1], rtol=1e-6)


def test_weighted_sum_without_units_needs_equal_sizes():
    with pytest.raises(ValueError, match="modality_1.*5"):
        WeightedSum()(random_inputs((3, 5)))


FACTORIES = {
    "concat": lambda: Concatenate(units=4),
    "weighted_sum": lambda: WeightedSum(units=4),
}




@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_dict_and_list_inputs_agree(name):
    xs = random_inputs(SIZES)
    layer = FACTORIES[name]()
    as_list = layer(xs)
    as_dict = layer({"modality_2": xs[2], "modality_0": xs[0], "modality_1": xs[1]})
    np.testing.assert_array_equal(as_list, as_dict)


def test_dict_order_follows_modalities_argument():
    xs = random_inputs((3, 5))
    layer = Concatenate(modalities=["text", "image"])
    out = layer({"image": xs[0], "text": xs[1]})
    np.testing.assert_array_equal(out, np.concatenate([xs[1], xs[0]], -1))
    with pytest.raises(ValueError, match="unknown: \\['audio'\\]"):
        layer({"image": xs[0], "audio": xs[1]})


def test_registry():
    assert {"concat", "weighted_sum", "gmu"} <= set(fusion.available())
    assert isinstance(fusion.get("weighted_sum", units=3), WeightedSum)
    layer = Concatenate()
    assert fusion.get(layer) is layer
    with pytest.raises(ValueError, match="Unknown fusion layer 'nope'.*gmu"):
        fusion.get("nope")


def test_single_tensor_is_rejected():
    with pytest.raises(ValueError, match="Concatenate.*list or dict"):
        Concatenate()(np.ones((2, 3), "float32"))


def test_get_config_round_trip():
    layer = WeightedSum(units=7, activation="relu", normalize=False, modalities=["a", "b"])
    clone = WeightedSum.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_projections_start_distinct_and_concatenate_uses_the_output_projection():
    xs = random_inputs((4, 4, 4))
    layer = WeightedSum(units=3)
    layer(xs)
    kernels = [keras.ops.convert_to_numpy(p.kernel) for p in layer.projections]
    assert not any(np.array_equal(a, b) for i, a in enumerate(kernels) for b in kernels[i + 1:])
    concat = Concatenate(units=3)
    concat(xs)
    assert concat.output_projection.kernel.shape == (12, 3)
