import keras_tuner
import pytest

from mmfusion.search import FusionSpace
from mmfusion.search.run import make_oracle
from mmfusion.search.space import architecture_key
from tests.search.fake import OBJECTIVE, FakeTuner

# 4 one-layer + 16 two-layer architectures: a small budget already meets
# the Gaussian process's favourite proposals more than once.
TINY = FusionSpace({"a": ["h", "vector"], "b": ["vector"]}, fusions=["concat"],
                   activations=["relu", "tanh"], max_layers=2)


def proposals(directory, oracle, seed, max_trials=8):
    oracle = make_oracle(oracle, TINY, max_trials, seed=seed, objective=OBJECTIVE)
    hp = keras_tuner.HyperParameters()  # as a hypermodel's build declares them
    TINY.declare(hp)
    oracle.update_space(hp)
    tuner = FakeTuner(oracle=oracle, space=TINY, overwrite=True, directory=str(directory))
    tuner.search(verbose=0)
    return [architecture_key(TINY.architecture(t.hyperparameters.values))
            for _, t in sorted(tuner.oracle.trials.items())]


@pytest.mark.parametrize("oracle, seed", [("random", 0), ("random", 1), ("bayesian", 0)])
def test_a_seed_is_a_seed_for_every_baseline(tmp_path, oracle, seed):
    first = proposals(tmp_path / "a", oracle, seed)
    assert proposals(tmp_path / "b", oracle, seed) == first
    assert proposals(tmp_path / "c", oracle, seed + 7) != first


@pytest.mark.parametrize("seed", [0, 1])
def test_bayesian_optimization_never_trains_a_configuration_twice(tmp_path, seed):
    # KerasTuner's own oracle proposes a tried configuration again on this space.
    found = proposals(tmp_path, "bayesian", seed, max_trials=12)
    assert len(found) == len(set(found)) == 12
