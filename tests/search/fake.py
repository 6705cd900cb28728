"""A fake objective for search tests: scores computed from the architecture, no training."""

import json
import os
import time

import keras_tuner

from mmfusion.search import FusionSpace, MFASOracle
from mmfusion.search.hypermodel import FusionTuner

SPACE = FusionSpace({"a": ["h1", "h2", "vector"], "b": ["h1", "vector"]},
                    fusions=["concat", "gmu", "weighted_sum"],
                    activations=["relu", "tanh"], max_layers=3)
OBJECTIVE = keras_tuner.Objective("score", "max")
FAST_MFAS = {"initial_samples": 6, "samples_per_step": 4, "surrogate_units": 8,
             "surrogate_epochs": 20}


def fake_score(architecture):
    """Higher with GMU layers and tap `h2` of `a`; a little higher when longer."""
    score = 0.5 + 0.02 * len(architecture)
    for layer in architecture:
        score += 0.1 * (layer[2] == "gmu") + 0.05 * (layer[0] == "h2")
    return score / (1 + 0.15 * len(architecture))


class FakeTuner(FusionTuner):
    """Runs no model: a trial's score is `fake_score` of its architecture.

    Args:
        log: optional file; every finished `run_trial` appends a JSON line
            `{"event": "ran", "trial_id", "tuner_id", "pid", "architecture"}`,
            and every ended trial (after the oracle saved it) a line
            `{"event": "ended", "trial_id", ...}`.
        delay: seconds each trial sleeps (to be killed in the middle).
        oracle: the oracle (default: a fast `MFASOracle` with `max_trials`,
            `seed` and `oracle_kwargs`, default `FAST_MFAS`).
        space: the `FusionSpace`.
    """

    def __init__(self, log=None, delay=0.0, oracle=None, max_trials=20, seed=None,
                 oracle_kwargs=None, space=SPACE, **kwargs):
        if oracle is None:
            oracle = MFASOracle(space, objective=OBJECTIVE, max_trials=max_trials, seed=seed,
                                **(FAST_MFAS if oracle_kwargs is None else oracle_kwargs))
        super().__init__(oracle, None, space=space, **kwargs)
        self.log, self.delay = log, delay

    def _write(self, event, trial):
        if self.log:
            architecture = self.space.architecture(trial.hyperparameters.values)
            with open(self.log, "a") as f:
                f.write(json.dumps({"event": event, "trial_id": trial.trial_id,
                                    "tuner_id": self.tuner_id, "pid": os.getpid(),
                                    "architecture": architecture}) + "\n")

    def run_trial(self, trial, *args, **kwargs):
        time.sleep(self.delay)
        self._write("ran", trial)
        return {"score": fake_score(self.space.architecture(trial.hyperparameters.values))}

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        self._write("ended", trial)
