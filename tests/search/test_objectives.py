"""Objectives per head: regression and multilabel searches end to end, and MFAS
with a minimized objective."""

import keras
import keras_tuner
import numpy as np
import pytest

from mmfusion.branches import tabular_mlp
from mmfusion.search import MFASOracle
from mmfusion.search.objectives import check_objective, objectives
from mmfusion.search.run import Task, run_search
from tests.search.fake import FAST_MFAS, SPACE, FakeTuner, fake_score


def tabular_task(head, n=400, seed=0):
    """Two modalities; the targets depend on modality `a` (and `b` for the
    classes and multilabel label 2)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, size in (("train", n), ("validation", n // 4), ("test", n // 4)):
        x = {m: rng.normal(size=(size, 3)).astype("float32") for m in "ab"}
        if head == "regression":
            y = (2.0 * x["a"][:, 0] - x["a"][:, 1] + 0.5).astype("float32")
        elif head == "classification":
            y = (x["a"][:, 0] + x["b"][:, 0] > 0).astype("int32")
        else:
            y = np.stack([x["a"][:, 0] > 0, x["a"][:, 1] > 0.5,
                          x["a"][:, 2] + x["b"][:, 0] > 0], axis=1).astype("float32")
        splits[split] = (x, y)
    outputs = {"regression": 1, "classification": 2, "multilabel": 3}[head]
    branches = {m: tabular_mlp(3, units=(16,), name=m) for m in "ab"}
    return Task(branches, splits, outputs, name=f"tabular-{head}", head=head)


def roc_auc(y, p):
    """Mann-Whitney ROC AUC of one label (ties count one half)."""
    positives, negatives = p[y == 1], p[y == 0]
    wins = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return (wins + 0.5 * ties) / (len(positives) * len(negatives))


def search(task, directory, **kwargs):
    keras.utils.set_random_seed(0)
    return run_search(task, "random", trials=2, directory=str(directory), epochs=6,
                      batch_size=32, fusions=["concat"], max_layers=1, pretrain_epochs=2,
                      learning_rates=(1e-2,), verbose=0, **kwargs)


def reloaded_predictions(result, task):
    inputs, _ = task.splits["test"]
    model = keras.models.load_model(result["model_path"])
    return model, np.asarray(model.predict(inputs, verbose=0))


def test_regression_search_beats_the_mean_and_exports(tmp_path):
    task = tabular_task("regression")
    result = search(task, tmp_path)
    assert result["objective"] == "val_mse"
    assert not any("accuracy" in key for key in result)
    _, predicted = reloaded_predictions(result, task)
    _, y = task.splits["test"]
    mse = float(np.mean((predicted[:, 0] - y) ** 2))
    baseline = float(np.mean((y - task.splits["train"][1].mean()) ** 2))  # predict the mean
    # The reloaded model predicts as the exported one did (its test MSE, before saving).
    assert mse == pytest.approx(result["test_mse"], rel=1e-6)
    assert mse < 0.25 * baseline, (mse, baseline)


def test_multilabel_search_selects_on_auc_and_exports(tmp_path):
    task = tabular_task("multilabel")
    result = search(task, tmp_path)
    assert result["objective"] == "val_auc" and "test_auc" in result
    _, predicted = reloaded_predictions(result, task)
    _, y = task.splits["test"]
    macro = np.mean([roc_auc(y[:, j], predicted[:, j]) for j in range(y.shape[1])])
    assert result["test_auc"] == pytest.approx(macro, abs=0.01)  # Keras: 200 thresholds
    auc = keras.metrics.AUC(multi_label=True)  # the same metric on the reloaded predictions
    auc.update_state(y, predicted)
    assert float(auc.result()) == pytest.approx(result["test_auc"], abs=1e-6)
    assert macro > 0.8
    assert predicted.shape == y.shape and ((predicted >= 0) & (predicted <= 1)).all()


def test_objectives_and_directions():
    assert [check_objective(name, "regression").direction
            for name in objectives("regression")] == ["min"] * 6
    assert check_objective(None, "multilabel").direction == "max"
    with pytest.raises(ValueError, match="not one of a classification search"):
        check_objective("val_mse", "classification")


def test_mfas_merits_of_a_minimized_objective_are_inverse_losses():
    loss = np.array([0.1, 0.2, 0.4, 1.5])
    minimized = MFASOracle(SPACE, keras_tuner.Objective("loss", "min"), max_trials=4, seed=0)
    maximized = MFASOracle(SPACE, keras_tuner.Objective("score", "max"), max_trials=4, seed=0)
    # Predictions are in "higher is better" units: a minimized loss is negated.
    np.testing.assert_allclose(minimized.log_merits(-loss), -np.log(loss))
    np.testing.assert_allclose(minimized.log_merits(-loss), maximized.log_merits(1 / loss))
    # Sampling follows them: the same draws pick the same candidates.
    candidates = [[layer] for layer in SPACE.layer_options(1)[:4]]
    for oracle, predicted in ((minimized, -loss), (maximized, 1 / loss)):
        oracle.predict = lambda architectures, observed=None, p=predicted: p
        oracle.observations = lambda: [(candidates[0], 0.0)]
    assert (minimized._sample(candidates, 2, 0.05)
            == maximized._sample(candidates, 2, 0.05) == candidates[:2])


class LossTuner(FakeTuner):
    """Reports `1 / fake_score` as a loss to minimize."""

    def run_trial(self, trial, *args, **kwargs):
        return {"loss": 1.0 / super().run_trial(trial)["score"]}


def test_mfas_minimizing_a_loss_finds_better_architectures(tmp_path):
    oracle = MFASOracle(SPACE, keras_tuner.Objective("loss", "min"), max_trials=20, seed=0,
                        **FAST_MFAS)
    tuner = LossTuner(oracle=oracle, directory=str(tmp_path), overwrite=True)
    tuner.search(verbose=0)
    trials = [tuner.oracle.trials[i] for i in tuner.oracle.end_order]
    found = [SPACE.architecture(t.hyperparameters.values) for t in trials]
    losses = [1.0 / fake_score(a) for a in found]
    n = FAST_MFAS["initial_samples"]
    assert min(losses[n:]) < min(losses[:n])
    assert 1.0 / fake_score(tuner.oracle.best_architecture()) == min(losses)
    assert tuner.oracle.get_best_trials()[0].score == pytest.approx(min(losses))
