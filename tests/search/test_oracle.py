import json

import keras_tuner
import numpy as np
import pytest

from mmfusion.search import FusionSpace, MFASOracle
from mmfusion.search.space import architecture_key
from mmfusion.search.surrogate import Surrogate
from tests.search.fake import FAST_MFAS, OBJECTIVE, SPACE, FakeTuner, fake_score

TRIALS = 20
TINY = FusionSpace({"a": ["h", "vector"], "b": ["vector"]}, fusions=["concat"],
                   activations=["relu", "tanh"], max_layers=2)  # 4 + 16 architectures


def search(directory, max_trials=TRIALS, **kwargs):
    tuner = FakeTuner(max_trials=max_trials, overwrite=True, directory=str(directory),
                      **{"seed": 0, **kwargs})
    tuner.search(verbose=0)
    return tuner


@pytest.fixture(scope="module")
def tuner(tmp_path_factory):
    return search(tmp_path_factory.mktemp("search"))


def architectures(tuner, space=SPACE):
    trials = sorted(tuner.oracle.trials.items())
    return [space.architecture(t.hyperparameters.values) for _, t in trials]


def keys(architectures):
    return {architecture_key(a) for a in architectures}


def test_steps_follow_mfas(tuner):
    found = architectures(tuner)
    assert len(found) == TRIALS and len(keys(found)) == TRIALS
    assert all(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
    for architecture in found:
        for i, layer in enumerate(architecture, start=1):
            assert layer in SPACE.layer_options(i)
    steps = tuner.oracle.get_state()["mfas"]["steps"]
    assert [(s["iteration"], s["position"], len(s["architectures"])) for s in steps] == [
        (0, 1, 6), (0, 2, 4), (0, 3, 4), (1, 1, 4), (1, 2, 2)]  # 6 + 4 + 4 + 4 + 2 = 20
    assert found == [a for s in steps for a in s["architectures"]]  # trials in step order
    # Progressive steps extend what the previous step trained ...
    for previous, step in zip(steps[:2], steps[1:3]):
        assert all(architecture_key(a[:-1]) in keys(previous["architectures"])
                   for a in step["architectures"])
    # ... refining steps change one layer of a full-length architecture of the previous step.
    for previous, step in zip(steps[2:], steps[3:]):
        position = step["position"] - 1
        assert all(len(a) == SPACE.max_layers for a in step["architectures"])
        for a in step["architectures"]:
            assert any(p[:position] + p[position + 1:] == a[:position] + a[position + 1:]
                       for p in previous["architectures"])


def test_search_finds_better_architectures(tuner):
    scores = [fake_score(a) for a in architectures(tuner)]
    n = FAST_MFAS["initial_samples"]
    assert max(scores[n:]) > max(scores[:n])
    assert fake_score(tuner.oracle.best_architecture()) == max(scores)


def test_exactly_max_trials_and_every_architecture_reachable(tmp_path):
    # The whole tiny space (20 architectures) is visited, each once, with 20 trials.
    tuner = search(tmp_path / "all", max_trials=20, space=TINY,
                   oracle_kwargs={"samples_per_step": 3, "surrogate_units": 4,
                                  "surrogate_epochs": 5})
    found = architectures(tuner, TINY)
    assert len(found) == 20 and len(keys(found)) == 20
    # More trials than architectures: it stops when the space is exhausted.
    tuner = search(tmp_path / "more", max_trials=23, space=TINY,
                   oracle_kwargs={"samples_per_step": 3, "surrogate_units": 4,
                                  "surrogate_epochs": 5})
    assert len(keys(architectures(tuner, TINY))) == len(tuner.oracle.trials) == 20


def test_surrogate_kept_and_trained_on_every_observation(tmp_path, monkeypatch):
    seen = []
    fit = Surrogate.fit
    monkeypatch.setattr(Surrogate, "fit",
                        lambda self, codes, scores: seen.append(len(codes)) or fit(self, codes,
                                                                                   scores))
    tuner = search(tmp_path)
    assert seen == [6, 10, 14, 18]  # every completed trial, before each sampling step
    surrogate = tuner.oracle.surrogate
    # One model for the whole search: its optimizer went through every step's training.
    assert int(surrogate.model.optimizer.iterations.numpy()) == 4 * FAST_MFAS["surrogate_epochs"]


def test_sampling_follows_the_papers_rule():
    oracle = MFASOracle(SPACE, objective=OBJECTIVE, max_trials=10, seed=0)
    accuracies = np.array([0.5, 0.7, 0.9])
    oracle.observations = lambda: [([SPACE.layer_options(1)[0]], 0.5)]
    oracle.predict = lambda candidates, observed: accuracies
    for temperature in (0.5, 2.0):
        draws = [oracle._sample(["x", "y", "z"], 1, temperature)[0] for _ in range(6000)]
        frequencies = np.array([draws.count(c) for c in "xyz"]) / len(draws)
        p = (accuracies / accuracies.sum()) ** (1 / temperature)
        np.testing.assert_allclose(frequencies, p / p.sum(), atol=0.02)


def test_temperature_schedule(tuner):
    oracle = tuner.oracle
    n = oracle.sampling_steps()
    temperatures = [oracle.temperature_at(s) for s in range(n)]
    assert temperatures[0] == pytest.approx(10.0) and temperatures[-1] == pytest.approx(0.2)
    ratios = np.array(temperatures[1:]) / np.array(temperatures[:-1])
    np.testing.assert_allclose(ratios, ratios[0])  # geometric
    steps = oracle.get_state()["mfas"]["steps"]
    assert [s["temperature"] for s in steps[1:]] == pytest.approx(temperatures)


def test_first_step_all_or_stratified():
    small = MFASOracle(TINY, objective=OBJECTIVE, max_trials=10, seed=0)
    assert small.initial_step_size() == 4  # all 4 one-layer architectures: 4 <= 10 // 2
    oracle = MFASOracle(SPACE, objective=OBJECTIVE, max_trials=20, seed=3)
    assert oracle.initial_step_size() == 6  # 36 > 20 // 2: a share of 20 // 3
    chosen = oracle._stratified(6)
    assert len(keys(chosen)) == 6
    for block, values in enumerate([["h1", "h2", "vector"], ["h1", "vector"],
                                    ["concat", "gmu", "weighted_sum"], ["relu", "tanh"]]):
        counts = [sum(a[0][block] == v for a in chosen) for v in values]
        assert max(counts) - min(counts) <= 1, (block, counts)


@pytest.mark.parametrize("seed", [0, 1])
def test_identical_runs_identical_proposals(tmp_path, seed):
    first = architectures(search(tmp_path / "a", seed=seed))
    again = architectures(search(tmp_path / "b", seed=seed))
    other = architectures(search(tmp_path / "c", seed=seed + 7))
    assert first == again
    assert first != other


def test_state_round_trips_through_json(tuner):
    state = json.loads(json.dumps(tuner.oracle.get_state()))
    restored = MFASOracle(SPACE, objective=OBJECTIVE, max_trials=TRIALS + 5, **FAST_MFAS)
    restored.trials = dict(tuner.oracle.trials)
    restored.set_state(state)
    again = json.loads(json.dumps(restored.get_state()))
    for s in (again, state):  # a set in KerasTuner's own state: order varies
        s["tried_so_far"] = sorted(s["tried_so_far"])
    assert again == state
    # Both continue with the same proposal.
    tuner.oracle.max_trials = TRIALS + 5
    try:
        assert restored.populate_space("next") == tuner.oracle.populate_space("next")
    finally:
        tuner.oracle.max_trials = TRIALS


def test_needs_a_budget():
    with pytest.raises(ValueError, match="max_trials"):
        MFASOracle(SPACE, objective=keras_tuner.Objective("score", "max"))
