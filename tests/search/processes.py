"""Helpers of the tests that run fake searches in subprocesses."""

import json
import os
import subprocess
import sys
import tempfile

import pytest

from mmfusion.search.space import architecture_key
from tests.search.fake import SPACE, fake_score

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRIALS = 14


def start(directory, log, *extra, env=None, delay=0.4):
    """Starts `run_fake_search` (TRIALS trials of `delay` seconds) in a subprocess;
    its stderr goes to a file in `directory` (see `errors`)."""
    command = [sys.executable, "-m", "tests.search.run_fake_search", str(directory),
               str(TRIALS), str(delay), str(log), *extra]
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".stderr", delete=False) as f:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})},
                                   stdout=subprocess.DEVNULL, stderr=f)
    process.stderr_path = f.name
    return process


def errors(process):
    """What a process started by `start` wrote to stderr."""
    with open(process.stderr_path) as f:
        return f.read()


def read_trials(directory):
    """trial_id -> trial.json contents of a KerasTuner project folder."""
    project = os.path.join(directory, "fake")
    trials = {}
    for name in sorted(os.listdir(project)) if os.path.isdir(project) else []:
        path = os.path.join(project, name, "trial.json")
        if name.startswith("trial_") and os.path.exists(path):
            try:
                with open(path) as f:
                    trial = json.load(f)
            except ValueError:  # being written
                continue
            trials[trial["trial_id"]] = trial
    return trials


def completed(trials):
    return {i: t for i, t in trials.items() if t["status"] == "COMPLETED"}


def read_log(log, event="ran"):
    """The log lines of `FakeTuner` for `event` ("ran" or "ended")."""
    with open(log) as f:
        return [r for r in map(json.loads, f) if r["event"] == event]


def check_complete_search(trials, n=TRIALS):
    """Every trial ran to completion once, with a unique architecture and its score."""
    assert sorted(trials) == [f"{i:0{len(str(n))}d}" for i in range(n)]
    architectures = [SPACE.architecture(t["hyperparameters"]["values"]) for t in trials.values()]
    assert len({architecture_key(a) for a in architectures}) == n
    for trial, architecture in zip(trials.values(), architectures):
        assert trial["status"] == "COMPLETED"
        assert trial["score"] == pytest.approx(fake_score(architecture))
