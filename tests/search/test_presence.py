"""The presence-averaged objective: the logged value is the mean over every
presence pattern, and a search selects and exports on it."""

import itertools

import keras
import numpy as np
import pytest

from mmfusion.compose import build_fusion_model
from mmfusion.search.features import feature_branches, pack
from mmfusion.search.joint import train_jointly
from mmfusion.search.presence import PresenceAveraged, with_presence
from mmfusion.search.run import run_search
from tests.search.test_objectives import tabular_task


def brute_force_accuracy(model, x, y, modalities):
    """Mean accuracy over every non-empty subset of modalities, in NumPy."""
    accuracies = []
    for size in range(1, len(modalities) + 1):
        for subset in itertools.combinations(range(len(modalities)), size):
            mask = np.zeros((len(y), len(modalities)), "float32")
            mask[:, list(subset)] = 1.0
            predicted = model.predict({**x, "presence": mask}, verbose=0).argmax(-1)
            accuracies.append(np.mean(predicted == y))
    assert len(accuracies) == 2 ** len(modalities) - 1
    return float(np.mean(accuracies))


def test_logged_value_is_the_mean_over_presence_patterns():
    rng = np.random.default_rng(0)
    modalities = ["a", "b", "c"]
    taps = {m: {"vector": rng.normal(size=(96, 4)).astype("float32")} for m in modalities}
    y = (taps["a"]["vector"][:, 0] + taps["c"]["vector"][:, 1] > 0).astype("int32")
    keras.utils.set_random_seed(0)
    model = build_fusion_model(feature_branches(taps), "concat", units=8, presence=True,
                               modality_dropout=0.3)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x = pack(taps)
    validation = (with_presence(x, modalities), y)
    history = model.fit(*validation, epochs=2, batch_size=32, verbose=0,
                        validation_data=validation,
                        callbacks=[PresenceAveraged(*validation, modalities)])
    logged = history.history["val_presence_accuracy"]
    assert len(logged) == 2 and "val_presence_loss" in history.history
    assert logged[-1] == pytest.approx(brute_force_accuracy(model, x, y, modalities), abs=1e-6)
    assert logged[-1] != pytest.approx(history.history["val_accuracy"][-1], abs=1e-3)


def test_candidates_trained_together_each_log_their_own_presence_average():
    rng = np.random.default_rng(1)
    modalities = ["a", "b"]
    taps = {m: {"vector": rng.normal(size=(96, 4)).astype("float32")} for m in modalities}
    y = (taps["a"]["vector"][:, 0] - taps["b"]["vector"][:, 2] > 0).astype("int32")
    keras.utils.set_random_seed(0)
    models = [build_fusion_model(feature_branches(taps), name, units=8, presence=True,
                                 modality_dropout=0.3) for name in ("concat", "gmu")]
    x = with_presence(pack(taps), modalities)
    histories = train_jointly(models, x, y, lambda: keras.optimizers.Adam(1e-2),
                              "sparse_categorical_crossentropy", validation_data=(x, y),
                              epochs=2, batch_size=32, verbose=0,
                              callbacks=[PresenceAveraged(x, y, modalities)])
    expected = [brute_force_accuracy(m, pack(taps), y, modalities) for m in models]
    logged = [h.history["val_presence_accuracy"][-1] for h in histories]
    assert logged == pytest.approx(expected, abs=1e-6)
    assert all(len(h.history["val_presence_loss"]) == 2 for h in histories)


@pytest.mark.parametrize("candidates_per_step", [1, 2])
def test_a_search_selects_and_exports_on_the_presence_average(tmp_path, candidates_per_step):
    task = tabular_task("classification")
    keras.utils.set_random_seed(0)
    result = run_search(task, "random", trials=2, directory=str(tmp_path), epochs=3,
                        batch_size=32, fusions=["concat"], max_layers=1, pretrain_epochs=1,
                        verbose=0, objective="val_presence_accuracy", modality_dropout=0.3,
                        candidates_per_step=candidates_per_step)
    assert result["objective"] == "val_presence_accuracy"
    model = keras.models.load_model(result["model_path"])
    assert "presence" in [t.name for t in model.inputs]
    inputs, y = task.splits["test"]
    assert result["test_presence_accuracy"] == pytest.approx(
        brute_force_accuracy(model, inputs, y, ["a", "b"]), abs=1e-6)
    assert 0.5 < result["validation_presence_accuracy"] <= 1.0
    assert not any(key.endswith("_accuracy") and "presence" not in key for key in result)
