import keras
import numpy as np
import pytest

from mmfusion.fusion import GMU, WeightedSum
from mmfusion.inspect import FusionProbe, fusion_weights, modality_ablation


def nested_model():
    """An outer model with a WeightedSum and an inner functional model whose
    GMU gets the outer `presence` input."""
    a, b, p = keras.Input((3,), name="a"), keras.Input((4,), name="b"), keras.Input((2,), name="presence")
    fused = GMU(4, name="gmu")({"a": a, "b": b}, presence=p)
    inner = keras.Model({"a": a, "b": b, "presence": p}, keras.layers.Dense(1)(fused), name="inner")
    A, B, P = keras.Input((3,), name="a"), keras.Input((4,), name="b"), keras.Input((2,), name="presence")
    summed = WeightedSum(units=1, name="ws")([A, B], presence=P)
    output = keras.layers.Add()([inner({"a": A, "b": B, "presence": P}), summed])
    return keras.Model({"a": A, "b": B, "presence": P}, output)


def data(n=7, seed=0):
    rng = np.random.default_rng(seed)
    presence = np.ones((n, 2), "float32")
    presence[::2, 1] = 0.0  # even rows: b absent
    return {"a": rng.normal(size=(n, 3)), "b": rng.normal(size=(n, 4)), "presence": presence}


def test_probe_reads_nested_layers_with_the_model_presence_in_batches():
    model = nested_model()
    x = data()
    weights = FusionProbe(model)(x, batch_size=3)
    assert set(weights) == {"ws", "inner/gmu"}
    theta = weights["ws"]["modality_weights"]
    np.testing.assert_allclose(theta[::2], [[1.0, 0.0]] * 4)  # b absent: all weight on a
    np.testing.assert_allclose(theta[1::2], [[0.5, 0.5]] * 3)  # zero logits: equal weights
    gates = weights["inner/gmu"]["gates"]
    assert gates.shape == (7, 2, 4)
    np.testing.assert_allclose(gates[::2, 0], 1.0)
    np.testing.assert_allclose(gates[1::2].sum(axis=1), 1.0, atol=1e-6)
    assert np.all((gates[1::2] > 0) & (gates[1::2] < 1))
    # The gate depends on the inputs, and batching does not change it.
    np.testing.assert_allclose(fusion_weights(model, "inner/gmu", x)["gates"], gates, atol=1e-6)
    assert np.ptp(gates[1::2, 0]) > 0


def test_probe_rejects_unknown_layers_and_subclassed_models():
    with pytest.raises(ValueError, match="no fusion layer 'nope'"):
        fusion_weights(nested_model(), "nope", data())

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.fusion = WeightedSum(name="ws")

        def call(self, inputs):
            return self.fusion(inputs)

    model = Subclassed()
    model([np.ones((1, 2)), np.ones((1, 2))])
    with pytest.raises(ValueError, match="only functional models"):
        FusionProbe(model)


def test_ablation_through_presence_renormalizes_instead_of_zeroing():
    a, b, p = keras.Input((1,), name="a"), keras.Input((1,), name="b"), keras.Input((2,), name="presence")
    model = keras.Model({"a": a, "b": b, "presence": p}, WeightedSum(name="ws")([a, b], presence=p))
    model.compile(loss="mse")
    x = {"a": np.full((4, 1), 2.0), "b": np.zeros((4, 1)), "presence": np.ones((4, 2))}
    result = modality_ablation(model, x, np.ones((4, 1)))
    # all: 0.5*2 + 0.5*0 = 1; without a: output b = 0; without b: output a = 2.
    assert result == {"metric": "loss", "all": 0.0, "without": {"a": 1.0, "b": 1.0}}
    np.testing.assert_array_equal(x["presence"], 1.0)  # the caller's data is not modified
