"""A fake objective for search tests: scores computed from the architecture, no training."""

import json
import os
import time

import keras_tuner

from mmfusion.search import FusionSpace, MFASTuner

SPACE = FusionSpace({"a": ["h1", "h2", "vector"], "b": ["h1", "vector"]},
                    fusions=["concat", "gmu", "weighted_sum"],
                    activations=["relu", "tanh"], max_layers=3)
OBJECTIVE = keras_tuner.Objective("score", "max")
FAST_MFAS = {"initial_samples": 6, "samples_per_step": 4, "top_k": 2, "surrogate_epochs": 40}


def fake_score(architecture):
    """Higher with GMU layers and tap `h2` of `a`; a little higher when longer."""
    score = 0.5 + 0.02 * len(architecture)
    for layer in architecture:
        score += 0.1 * (layer[2] == "gmu") + 0.05 * (layer[0] == "h2")
    return score / (1 + 0.15 * len(architecture))


class FakeTuner(MFASTuner):
    """Runs no model: a trial's score is `fake_score` of its architecture.

    Args:
        log: optional file; every finished `run_trial` appends a JSON line
            `{"trial_id", "tuner_id", "architecture"}`.
        delay: seconds each trial sleeps (to be killed in the middle).
    """

    def __init__(self, log=None, delay=0.0, **kwargs):
        kwargs.setdefault("oracle_kwargs", FAST_MFAS)
        super().__init__(None, objective=OBJECTIVE, space=SPACE, **kwargs)
        self.log, self.delay = log, delay

    def run_trial(self, trial, *args, **kwargs):
        time.sleep(self.delay)
        architecture = self.space.architecture(trial.hyperparameters.values)
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps({"trial_id": trial.trial_id, "tuner_id": self.tuner_id,
                                    "pid": os.getpid(), "architecture": architecture}) + "\n")
        return {"score": fake_score(architecture)}
