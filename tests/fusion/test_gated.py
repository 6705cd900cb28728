import keras
import numpy as np
import pytest

from mmfusion.fusion import GMU
from tests.layer_checks import (
    numpy_dense,
    random_inputs,
    weights_by_name,
)


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _numpy_gmu(layer, xs, gating, presence=None):
    w = weights_by_name(layer)
    n = len(xs)
    if presence is not None:
        xs = [x * presence[:, i:i + 1] for i, x in enumerate(xs)]
    hidden = np.stack(
        [numpy_dense(p, x, np.tanh) for p, x in zip(layer.projections, xs)],
        axis=1,
    )
    logits = np.concatenate(xs, -1) @ w["gate_kernel"] + w["gate_bias"]
    if gating == "bimodal":
        z = _sigmoid(logits)
        gates = np.stack([z, 1 - z], axis=1)
    else:
        logits = logits.reshape(len(xs[0]), n, -1)
        if gating == "softmax":
            e = np.exp(logits - logits.max(1, keepdims=True))
            gates = e / e.sum(1, keepdims=True)
        else:
            gates = _sigmoid(logits)
    if presence is not None:
        gates = gates * presence[:, :, None]
        if gating != "sigmoid":
            gates = gates / np.maximum(gates.sum(1, keepdims=True), 1e-9)
    return (gates * hidden).sum(1), gates


@pytest.mark.parametrize(
    "sizes, gating, resolved",
    [((3, 5), "auto", "bimodal"), ((3, 5, 4), "auto", "sigmoid"),
     ((3, 5, 4), "softmax", "softmax"), ((3, 5), "sigmoid", "sigmoid")],
)
@pytest.mark.parametrize("with_presence", [False, True])
def test_gmu_matches_numpy(sizes, gating, resolved, with_presence):
    xs = random_inputs(sizes)
    presence = None
    if with_presence:
        presence = np.ones((4, len(sizes)), "float32")
        presence[0, 0] = presence[1, 1] = 0
        presence[3] = 0
    layer = GMU(units=6, gating=gating)
    layer(xs)
    # Non-zero biases so that the reference checks them too.
    for w in layer.weights:
        if "bias" in w.path:
            w.assign(np.random.default_rng(3).normal(size=w.shape))
    out, weights = layer(xs, presence=presence, return_weights=True)
    expected, gates = _numpy_gmu(layer, xs, resolved, presence)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights["gates"], gates, rtol=1e-5, atol=1e-6)


def test_bimodal_gmu_with_one_modality_left_returns_its_hidden_state():
    xs = random_inputs((3, 5))
    layer = GMU(units=4)
    presence = np.array([[1, 0]] * 4, "float32")
    out = layer(xs, presence=presence)
    np.testing.assert_allclose(out, numpy_dense(layer.projections[0], xs[0], np.tanh),
                               rtol=1e-5, atol=1e-6)


def test_bimodal_gating_rejects_three_modalities():
    with pytest.raises(ValueError, match="GMU.*bimodal.*3"):
        GMU(units=4, gating="bimodal")(random_inputs((3, 5, 4)))
    with pytest.raises(ValueError, match="gating must be one of"):
        GMU(units=4, gating="tanh")




def test_gmu_dict_inputs_name_weights_after_modalities():
    xs = random_inputs((3, 5))
    layer = GMU(units=4, modalities=["image", "text"])
    out = layer({"text": xs[1], "image": xs[0]})
    assert [p.name for p in layer.projections] == ["projection_image", "projection_text"]
    np.testing.assert_array_equal(out, layer(xs))
    assert keras.ops.convert_to_numpy(out).shape == (4, 4)


def test_projections_of_equal_size_modalities_start_distinct():
    layer = GMU(units=4)
    layer(random_inputs((5, 5)))
    first, second = (keras.ops.convert_to_numpy(p.kernel) for p in layer.projections)
    assert not np.array_equal(first, second)
