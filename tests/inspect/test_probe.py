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
    # With two modalities, "only a" is "without b".
    assert result == {"metric": "loss", "all": 0.0, "without": {"a": 1.0, "b": 1.0},
                      "only": {"a": 1.0, "b": 1.0}}
    np.testing.assert_array_equal(x["presence"], 1.0)  # the caller's data is not modified


def test_ablation_of_three_modalities_by_hand():
    """WeightedSum (equal weights, renormalized over the present ones) of
    a = 2, b = 0, c = 4 against y = 1, MSE: all (2+0+4)/3 = 2 -> 1; without
    a: 2 -> 1, without b: 3 -> 4, without c: 1 -> 0; only a: 2 -> 1, only b:
    0 -> 1, only c: 4 -> 9."""
    tensors = {n: keras.Input((1,), name=n) for n in "abc"}
    p = keras.Input((3,), name="presence")
    out = WeightedSum(name="ws")([tensors[n] for n in "abc"], presence=p)
    model = keras.Model({**tensors, "presence": p}, out)
    model.compile(loss="mse")
    x = {"a": np.full((4, 1), 2.0), "b": np.zeros((4, 1)), "c": np.full((4, 1), 4.0),
         "presence": np.ones((4, 3))}
    result = modality_ablation(model, x, np.ones((4, 1)))
    assert result["all"] == pytest.approx(1.0)
    assert result["without"] == pytest.approx({"a": 1.0, "b": 4.0, "c": 0.0})
    assert result["only"] == pytest.approx({"a": 1.0, "b": 1.0, "c": 9.0})


def test_ablation_of_a_model_with_presence_by_dict():
    """build_fusion_model(presence="dict"): each modality is ablated through
    its own presence column, equal to predicting with that column at 0."""
    from mmfusion.branches import tabular_mlp
    from mmfusion.compose import build_fusion_model

    keras.utils.set_random_seed(0)
    model = build_fusion_model({"b": tabular_mlp(4, units=(4,), name="b"),
                                "a": tabular_mlp(3, units=(4,), name="a")},
                               "weighted_sum", units=4, num_outputs=2, presence="dict")
    model.compile(loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(16, 3)), "b": rng.normal(size=(16, 4)),
         "presence": {"a": np.ones(16), "b": np.ones(16)}}
    y = np.arange(16) % 2
    result = modality_ablation(model, x, y)
    for name, other in ("ab", "ba"):
        feed = dict(x, presence={**x["presence"], name: np.zeros(16)})
        expected = keras.losses.sparse_categorical_crossentropy(y, model.predict(feed, verbose=0))
        assert result["without"][name] == pytest.approx(float(np.mean(expected)), rel=1e-4)
        assert result["only"][other] == pytest.approx(float(np.mean(expected)), rel=1e-4)
    assert result["without"]["a"] != pytest.approx(result["without"]["b"], rel=1e-3)


def test_explainer_of_a_composed_model_survives_reload(tmp_path):
    """The explainer's modality weights are softmax(θ) renormalized over the
    present modalities (the WeightedSum equations), before and after `.keras`
    reload, from one functional model sharing the model's weights."""
    from mmfusion.branches import tabular_mlp
    from mmfusion.compose import build_fusion_model
    from mmfusion.inspect import fusion_explainer

    keras.utils.set_random_seed(0)
    branches = {"a": tabular_mlp(3, units=(4,), name="a"), "b": tabular_mlp(4, units=(4,), name="b")}
    model = build_fusion_model(branches, "weighted_sum", units=4, presence=True)
    layer = model.get_layer("fusion_1_weighted_sum")
    layer.modality_logits.assign([0.3, -0.9])
    x = data()
    theta = np.exp([0.3, -0.9]) / np.exp([0.3, -0.9]).sum()
    expected = np.where(x["presence"] > 0, theta, 0.0)
    expected /= expected.sum(axis=1, keepdims=True)

    explainer = fusion_explainer(model)
    assert isinstance(explainer, keras.Model)
    weights = explainer(x, training=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(
        weights["fusion_1_weighted_sum"]["modality_weights"]), expected, rtol=1e-6)
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(FusionProbe(reloaded)(x, batch_size=2)["fusion_1_weighted_sum"][
        "modality_weights"], expected, rtol=1e-6)
    # Training the model moves what the explainer reads (shared weights).
    layer.modality_logits.assign([0.0, 0.0])
    moved = keras.ops.convert_to_numpy(explainer(x)["fusion_1_weighted_sum"]["modality_weights"])
    np.testing.assert_allclose(moved[1::2], 0.5)
