"""Baseline oracles with seeds that are seeds, and crash-safe state.

KerasTuner turns a falsy seed into a random one (`seed or random.randint`),
so `seed=0` gives different proposals on every run; and it draws the `i`-th
hyperparameter value with seed `seed + i`, so nearby seeds give shifted
copies of one stream. `kerastuner_seed` maps any seed (0 included) to a
well-spread positive integer; the oracles below use it, and write their
state atomically (`mmfusion.search.state.CrashSafeOracle`).
"""

import keras_tuner
import numpy as np

from mmfusion.search.state import CrashSafeOracle

__all__ = ["BayesianOptimizationOracle", "RandomSearchOracle", "default_initial_points",
           "kerastuner_seed"]


def kerastuner_seed(seed):
    """A KerasTuner seed (an integer in `[1, 2**31 - 1]`) for any integer seed.

    Args:
        seed: a non-negative integer, or None (KerasTuner then picks one).

    Example:

    >>> kerastuner_seed(0) == kerastuner_seed(0), kerastuner_seed(0) > 0
    (True, True)
    >>> abs(kerastuner_seed(1) - kerastuner_seed(0)) > 1000
    True
    """
    if seed is None:
        return None
    return int(np.random.SeedSequence(int(seed)).generate_state(1)[0]) % (2**31 - 2) + 1


def default_initial_points(max_trials):
    """Random trials before `BayesianOptimizationOracle` fits its Gaussian
    process: a quarter of the budget, at least 3. (KerasTuner's default,
    3 × the number of hyperparameters, is 33 for a two-layer fusion space: in a
    10-40 trial search every trial would be random.)

    Example:

    >>> [default_initial_points(n) for n in (10, 20, 40)]
    [3, 5, 10]
    """
    return max(3, int(max_trials) // 4)


class RandomSearchOracle(CrashSafeOracle, keras_tuner.oracles.RandomSearchOracle):
    """`keras_tuner.oracles.RandomSearchOracle` with a real seed (0 included)
    and crash-safe state.

    Args:
        objective: the objective.
        max_trials: number of trials.
        seed: integer seed (see `kerastuner_seed`).
        **kwargs: other `RandomSearchOracle` arguments.

    Example:

    >>> a = RandomSearchOracle("val_accuracy", max_trials=3, seed=0)
    >>> b = RandomSearchOracle("val_accuracy", max_trials=3, seed=0)
    >>> a.seed == b.seed
    True
    """

    def __init__(self, objective=None, max_trials=10, seed=None, **kwargs):
        super().__init__(objective=objective, max_trials=max_trials,
                         seed=kerastuner_seed(seed), **kwargs)


class BayesianOptimizationOracle(CrashSafeOracle,
                                 keras_tuner.oracles.BayesianOptimizationOracle):
    """`keras_tuner.oracles.BayesianOptimizationOracle` with a real seed, a
    budget-sized number of initial random trials, no repeated trials and
    crash-safe state.

    KerasTuner's Gaussian process may propose a configuration that was tried
    already (its acquisition optimum often lands on one), and KerasTuner then
    trains it again, spending a trial for nothing; here such a proposal is
    replaced by a random untried configuration.

    Args:
        objective: the objective.
        max_trials: number of trials.
        num_initial_points: random trials before the Gaussian process is used
            (default: `default_initial_points(max_trials)`).
        seed: integer seed (see `kerastuner_seed`).
        **kwargs: other `BayesianOptimizationOracle` arguments.

    Example:

    >>> BayesianOptimizationOracle("val_accuracy", max_trials=20, seed=0).num_initial_points
    5
    """

    def __init__(self, objective=None, max_trials=10, num_initial_points=None, seed=None,
                 **kwargs):
        super().__init__(objective=objective, max_trials=max_trials,
                         num_initial_points=num_initial_points or default_initial_points(
                             max_trials), seed=kerastuner_seed(seed), **kwargs)

    def populate_space(self, trial_id):
        proposal = super().populate_space(trial_id)
        if (proposal["status"] == keras_tuner.engine.trial.TrialStatus.RUNNING
                and self._duplicate(proposal["values"])):
            return self._random_populate_space()
        return proposal
