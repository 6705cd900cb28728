"""Unimodal auxiliary losses (`build_fusion_model(unimodal_loss=w)`): the
training loss against a NumPy computation from the model's own head
predictions (on JAX and PyTorch too: tests/backends); presence weighting, NaN in
absent rows, evaluation loss, reload, other heads and errors."""

import keras
import numpy as np
import pytest

import mmfusion
from mmfusion.branches import tabular_mlp
from mmfusion.compose import Early, Late, build_fusion_model
from mmfusion.unimodal import UnimodalHeads, UnimodalLossModel

N = 64


def _data(nan_absent=False):
    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(N, 3)).astype("float32"),
         "b": rng.normal(size=(N, 2)).astype("float32")}
    y = (x["a"][:, 0] + x["b"][:, 1] > 0).astype("int32")
    presence = np.ones((N, 2), "float32")
    presence[::3, 1] = 0
    presence[1::4, 0] = 0
    presence[presence.sum(1) == 0] = 1
    if nan_absent:
        x["a"][presence[:, 0] == 0] = np.nan
        x["b"][presence[:, 1] == 0] = np.nan
    x["presence"] = presence
    return x, y


def _model(head="classification", num_outputs=2, weight=0.5, fusion="gmu"):
    keras.utils.set_random_seed(0)
    branches = {"a": tabular_mlp(3, units=(4,), name="a"), "b": tabular_mlp(2, units=(4,), name="b")}
    return build_fusion_model(branches, fusion, head=head, num_outputs=num_outputs, units=8,
                              presence=True, unimodal_loss=weight)


def _predictions(model, x):
    """The fused and the two unimodal predictions, by a sub-model of the same graph."""
    names = ["fused_prediction", "a_unimodal_prediction", "b_unimodal_prediction"]
    sub = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    return [keras.ops.convert_to_numpy(t).astype("float64") for t in sub(x, training=False)]


def _cross_entropy(p, y):
    return -np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1.0))


def loss_report():
    """One full-batch step at learning rate 0: `{"fit", "manual", "evaluate", "fused"}`
    (the first step's loss is computed from the initial weights)."""
    x, y = _data()
    model = _model()
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    fit = model.fit(x, y, batch_size=N, epochs=1, shuffle=False, verbose=0).history["loss"][0]
    fused, pa, pb = _predictions(model, x)
    presence = x["presence"]
    manual = _cross_entropy(fused, y).mean() + 0.5 * (
        (_cross_entropy(pa, y) * presence[:, 0]).mean()
        + (_cross_entropy(pb, y) * presence[:, 1]).mean())
    return {"fit": float(fit), "manual": float(manual), "fused": float(_cross_entropy(fused, y).mean()),
            "evaluate": float(model.evaluate(x, y, batch_size=N, verbose=0))}


def check_loss_report(report):
    """Asserts what `loss_report` must show (also on JAX and PyTorch: tests/backends)."""
    assert report["fit"] == pytest.approx(report["manual"], rel=1e-5)
    assert report["fit"] > report["fused"] + 0.1  # the heads' losses are really in it
    assert report["evaluate"] == pytest.approx(report["fused"], rel=1e-5)


def test_training_loss_adds_each_present_modality_head_loss():
    check_loss_report(loss_report())


def test_nan_in_absent_rows_keeps_the_loss_finite_and_unchanged():
    x, y = _data()
    x_nan, _ = _data(nan_absent=True)
    losses = []
    for inputs in (x, x_nan):
        model = _model()
        model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
        losses.append(model.fit(inputs, y, batch_size=N, epochs=1, shuffle=False,
                                verbose=0).history["loss"][0])
    assert np.isfinite(losses[1])
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)


def test_sample_weight_scales_every_term():
    x, y = _data()
    weights = np.linspace(0.0, 2.0, N).astype("float32")
    model = _model()
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    fit = model.fit(x, y, sample_weight=weights, batch_size=N, epochs=1, shuffle=False,
                    verbose=0).history["loss"][0]
    fused, pa, pb = _predictions(model, x)
    presence = x["presence"]
    manual = (_cross_entropy(fused, y) * weights).mean() + 0.5 * (
        (_cross_entropy(pa, y) * presence[:, 0] * weights).mean()
        + (_cross_entropy(pb, y) * presence[:, 1] * weights).mean())
    assert fit == pytest.approx(manual, rel=1e-5)


def test_regression_head_with_a_loss_object():
    x, _ = _data()
    y = (x["a"][:, :1] - 2 * x["b"][:, 1:]).astype("float32")
    model = _model("regression", num_outputs=1, weight=2.0)
    model.compile(keras.optimizers.SGD(0.0), keras.losses.MeanSquaredError())
    fit = model.fit(x, y, batch_size=N, epochs=1, shuffle=False, verbose=0).history["loss"][0]
    fused, pa, pb = _predictions(model, x)
    presence = x["presence"]
    mse = lambda p: ((p - y) ** 2).mean(axis=1)  # noqa: E731
    manual = mse(fused).mean() + 2.0 * ((mse(pa) * presence[:, 0]).mean()
                                        + (mse(pb) * presence[:, 1]).mean())
    assert fit == pytest.approx(manual, rel=1e-5)


def test_heads_train_each_branch_and_do_not_change_the_output(tmp_path):
    """Trained, the a-head predicts from a alone; the model's output is the fused
    prediction; the reloaded model predicts the same and keeps training the heads."""
    x, y = _data()
    model = _model(weight=1.0)
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=15, verbose=0)
    fused, pa, pb = _predictions(model, x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), fused, atol=1e-6)
    accuracy = lambda p: (p.argmax(1) == y).mean()  # noqa: E731
    assert accuracy(pa) > 0.7 and accuracy(pb) > 0.6  # y = sign(a0 + b1): each half predicts
    path = str(tmp_path / "unimodal.keras")
    model.save(path)
    reloaded = mmfusion.load_model(path)
    assert isinstance(reloaded, UnimodalLossModel)
    assert reloaded.get_layer("prediction").loss_weight == 1.0
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    step = [m.fit(x, y, batch_size=N, epochs=1, shuffle=False, verbose=0).history["loss"][0]
            for m in (model, reloaded)]
    assert step[1] == pytest.approx(step[0], rel=1e-5)


def test_late_fusion_gets_heads_too():
    keras.utils.set_random_seed(0)
    branches = {"a": tabular_mlp(3, units=(4,), name="a"), "b": tabular_mlp(2, units=(4,), name="b")}
    model = build_fusion_model(branches, Late("weighted"), num_outputs=2, unimodal_loss=0.3)
    assert isinstance(model.get_layer("prediction"), UnimodalHeads)
    assert model.get_layer("a_unimodal_prediction").output.shape == (None, 2)


def test_errors_name_the_problem():
    branches = {"a": tabular_mlp(3, units=(4,), name="a"), "b": tabular_mlp(2, units=(4,), name="b")}
    with pytest.raises(ValueError, match="early fusion"):
        build_fusion_model(branches, Early("concat"), unimodal_loss=0.5)
    with pytest.raises(ValueError, match="loss_weight must be > 0"):
        UnimodalHeads(["a"], loss_weight=-1.0)
    x, y = _data()
    model = _model()
    model.compile("adam", loss={"prediction": "sparse_categorical_crossentropy"})
    with pytest.raises(ValueError, match="compile the model with one loss"):
        model.fit(x, y, epochs=1, verbose=0)


def _fallback_model():
    keras.utils.set_random_seed(0)
    branches = {m: tabular_mlp(d, units=(4,), name=m) for m, d in (("a", 3), ("b", 2), ("c", 2))}
    return build_fusion_model(branches, "gmu", num_outputs=2, units=8, presence=True,
                              unimodal_loss=0.5, unimodal_fallback=True)


def _three_modalities():
    x, y = _data(nan_absent=True)
    rng = np.random.default_rng(1)
    presence = np.ones((N, 3), "float32")
    presence[:, :2] = x["presence"]
    presence[::5, 2] = 0
    presence[presence.sum(1) == 0, 2] = 1
    x["c"] = rng.normal(size=(N, 2)).astype("float32")
    x["c"][presence[:, 2] == 0] = np.nan
    x["presence"] = presence
    return x, y


def test_fallback_predicts_rows_missing_a_modality_by_the_present_heads():
    x, y = _three_modalities()
    model = _fallback_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    names = ["fused_prediction"] + [f"{m}_unimodal_prediction" for m in "abc"]
    sub = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    fused, *heads = [keras.ops.convert_to_numpy(t).astype("float64") for t in sub(x)]
    presence = x["presence"].astype("float64")
    mean = sum(p * presence[:, [i]] for i, p in enumerate(heads)) / presence.sum(1, keepdims=True)
    expected = np.where(presence.all(1, keepdims=True), fused, mean)
    got = model.predict(x, verbose=0)
    assert np.isfinite(got).all()
    assert (presence.sum(1) == 1).any() and (presence.sum(1) == 2).any()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # Rows with every modality present keep the fused prediction.
    every = presence.all(1)
    assert every.any() and not np.allclose(got[every], heads[0][every], atol=1e-3)


def test_fallback_model_reloads_identically(tmp_path):
    x, y = _three_modalities()
    model = _fallback_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "fallback.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert reloaded.get_layer("prediction").fallback
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_fallback_errors_name_what_it_needs():
    branches = {"a": tabular_mlp(3, units=(4,), name="a"), "b": tabular_mlp(2, units=(4,), name="b")}
    with pytest.raises(ValueError, match="unimodal_fallback .* needs unimodal_loss > 0"):
        build_fusion_model(branches, "concat", presence=True, unimodal_fallback=True)
    with pytest.raises(ValueError, match="unimodal_fallback needs absent modalities"):
        build_fusion_model(branches, "concat", unimodal_loss=1.0, unimodal_fallback=True)
