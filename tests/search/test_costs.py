"""Trial costs (parameters, latency), Pareto fronts and a parameter budget."""

import json

import keras
import matplotlib.image
import numpy as np
import pytest

from mmfusion.search.costs import pareto_front, plot_pareto
from mmfusion.search.run import ParameterBudgetError, run_search
from tests.search.test_objectives import tabular_task


def dominated(i, scores, costs, sign):
    return any(sign * scores[j] >= sign * scores[i] and costs[j] <= costs[i]
               and (sign * scores[j] > sign * scores[i] or costs[j] < costs[i])
               for j in range(len(scores)))


@pytest.mark.parametrize("direction", ["max", "min"])
def test_pareto_front_is_every_non_dominated_point(direction):
    rng = np.random.default_rng(0)
    sign = 1 if direction == "max" else -1
    for n in (1, 2, 7, 40):
        for _ in range(25):
            scores = rng.integers(0, 6, size=n) / 5  # few values: many ties
            costs = rng.integers(0, 6, size=n)
            front = pareto_front(scores, costs, direction)
            expected = [i for i in range(n) if not dominated(i, scores, costs, sign)]
            assert sorted(front) == expected
            assert list(costs[front]) == sorted(costs[front])


def search(task, directory, **kwargs):
    keras.utils.set_random_seed(0)
    return run_search(task, "random", trials=3, directory=str(directory), epochs=2,
                      batch_size=32, fusions=["concat", "lmf"], max_layers=1,
                      pretrain_epochs=1, units=(4, 32), verbose=0, **kwargs)


def test_trials_record_costs_and_the_results_hold_the_fronts(tmp_path):
    task = tabular_task("classification")
    result = search(task, tmp_path)
    with open(result["results_path"]) as f:
        assert json.load(f)["pareto"] == result["pareto"]
    assert matplotlib.image.imread(result["pareto_path"]).shape[2] in (3, 4)
    trials = result["trials"]
    assert len(trials) == 3 and all(t["latency_ms"] > 0 for t in trials)
    assert len({t["params"] for t in trials}) > 1
    # The exported trial's cost is its fusion network's: the model less its real branches.
    model = keras.models.load_model(result["model_path"])
    branches = sum(b.count_params() for b in task.branches.values())
    assert result["params"] == model.count_params() - branches
    scores = [t["val_accuracy"] for t in trials]
    for cost in ("params", "latency_ms"):
        costs = [t[cost] for t in trials]
        expected = {trials[i]["trial_id"] for i in range(3)
                    if not dominated(i, scores, costs, 1)}
        assert {t["trial_id"] for t in result["pareto"][cost]} == expected
    # A parameter budget exports the best trial within it (the search is resumed, not rerun).
    budget = sorted(t["params"] for t in trials)[1]
    within = [t for t in trials if t["params"] <= budget]
    again = tabular_task("classification")  # the same data, fresh branches
    budgeted = search(again, tmp_path, max_params=budget)
    assert budgeted["trials"] == trials
    assert budgeted["validation_accuracy"] == max(
        t["val_accuracy"] for t in within)
    assert budgeted["params"] <= budget
    with pytest.raises(ParameterBudgetError, match="no completed trial has at most"):
        search(tabular_task("classification"), tmp_path, max_params=1)


def test_scores_equal_up_to_float32_noise_tie():
    scores = [0.8275, 0.8275 + 3e-8, 0.2]  # two means of float32 accuracies, equal exactly
    assert pareto_front(scores, [1.0, 2.0, 0.5]) == [2, 0]
    assert pareto_front(scores, [1.0, 2.0, 0.5], decimals=None) == [2, 0, 1]


def test_the_figure_draws_every_trial_and_joins_the_front():
    trials = [{"trial_id": str(i), "val_loss": loss, "params": p, "latency_ms": t}
              for i, (loss, p, t) in enumerate([(0.5, 100, 2.0), (0.4, 300, 1.0),
                                                (0.45, 200, 3.0), (0.6, 400, 4.0)])]
    figure = plot_pareto(trials, "val_loss", direction="min", chosen="1")
    by_params, by_latency = figure.axes
    # Minimized: by params 0.5@100, 0.45@200, 0.4@300 (0.6@400 dominated); by latency 0.4@1.0 only.
    assert by_params.lines[0].get_xydata().tolist() == [[100, 0.5], [200, 0.45], [300, 0.4]]
    assert by_latency.lines[0].get_xydata().tolist() == [[1.0, 0.4]]
    assert len(by_params.collections[0].get_offsets()) == 4  # every trial
    assert by_latency.collections[1].get_offsets().tolist() == [[1.0, 0.4]]  # the exported one
