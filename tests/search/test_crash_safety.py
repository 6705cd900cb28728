"""Search state survives kills at any moment, and damaged files give clear errors."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mmfusion.branches import tabular_mlp
from mmfusion.search.run import Task, prepare
from mmfusion.search.state import CorruptStateError
from tests.search.fake import FakeTuner
from tests.search.processes import ROOT, check_complete_search, read_log, read_trials

KILL_TRIALS = 20


def check_no_finished_trial_ran_again(log):
    ended = set()
    with open(log) as f:
        for record in map(json.loads, f):
            assert not (record["event"] == "ran" and record["trial_id"] in ended), record
            if record["event"] == "ended":
                assert record["trial_id"] not in ended, record
                ended.add(record["trial_id"])


@pytest.mark.slow
def test_searches_survive_random_kills(tmp_path):
    directories = [tmp_path / f"run{i}" for i in range(3)]
    for directory in directories:
        directory.mkdir()
    result = tmp_path / "result.json"
    subprocess.run([sys.executable, "-m", "tests.search.kill_server", str(result),
                    str(KILL_TRIALS), "24", "0", *map(str, directories)],
                   cwd=ROOT, check=True, timeout=300)
    with open(result) as f:
        outcome = json.load(f)
    errors = [open(p).read() for p in glob.glob(str(tmp_path / "run*" / "error-*.txt"))]
    assert not errors, errors[0]
    assert outcome["killed"] >= 20, outcome
    assert outcome["codes"] == [0, 0, 0], outcome
    for directory in directories:
        check_complete_search(read_trials(directory), n=KILL_TRIALS)
        check_no_finished_trial_ran_again(directory / "log.jsonl")


def finished_search(directory, max_trials=8):
    FakeTuner(max_trials=max_trials, seed=0, directory=str(directory), project_name="fake",
              overwrite=True).search(verbose=0)
    return os.path.join(directory, "fake")


def resume(directory, max_trials=8, log=None):
    tuner = FakeTuner(max_trials=max_trials, seed=0, directory=str(directory),
                      project_name="fake", log=log)
    tuner.search(verbose=0)
    return tuner


@pytest.mark.parametrize("name", ["oracle.json", "tuner0.json", "trial_3/trial.json"])
def test_damaged_state_file_names_itself_and_the_recovery(tmp_path, name):
    path = os.path.join(finished_search(tmp_path), name)
    with open(path, "w") as f:
        f.write('{"ongoing_trials": {"tu')  # a write cut short
    with pytest.raises(CorruptStateError, match="damaged") as error:
        resume(tmp_path)
    assert path in str(error.value) and "overwrite=True" in str(error.value)


def test_missing_trial_file_is_named(tmp_path):
    project = finished_search(tmp_path)
    os.remove(os.path.join(project, "trial_2", "trial.json"))
    with pytest.raises(CorruptStateError, match=r"\['2'\] whose trial.json is missing"):
        resume(tmp_path)


def test_kill_between_the_writes_of_end_trial_does_not_rerun(tmp_path):
    project = finished_search(tmp_path)
    # As if killed after trial 7's trial.json said COMPLETED, before oracle.json did.
    state = read_json_file(os.path.join(project, "oracle.json"))
    state["end_order"].remove("7")
    state["ongoing_trials"] = {"tuner0": "7"}
    write_json_file(os.path.join(project, "oracle.json"), state)
    log = tmp_path / "log.jsonl"
    tuner = resume(tmp_path, max_trials=9, log=str(log))
    assert [r["trial_id"] for r in read_log(log)] == ["8"]  # 07 is not run again
    assert "7" in tuner.oracle.end_order
    check_complete_search(read_trials(tmp_path), n=9)


def test_kill_between_the_writes_of_create_trial_loses_nothing(tmp_path):
    project = finished_search(tmp_path)
    # As if killed after trial 7's trial.json was written (RUNNING), before oracle.json.
    state = read_json_file(os.path.join(project, "oracle.json"))
    state["start_order"].remove("7")
    state["end_order"].remove("7")
    write_json_file(os.path.join(project, "oracle.json"), state)
    trial = read_json_file(os.path.join(project, "trial_7", "trial.json"))
    trial["status"], trial["score"] = "RUNNING", None
    write_json_file(os.path.join(project, "trial_7", "trial.json"), trial)
    log = tmp_path / "log.jsonl"
    resume(tmp_path, log=str(log))
    assert [r["trial_id"] for r in read_log(log)] == ["7"]  # run, not lost
    check_complete_search(read_trials(tmp_path), n=8)


def read_json_file(path):
    with open(path) as f:
        return json.load(f)


def write_json_file(path, value):
    with open(path, "w") as f:
        json.dump(value, f)


def small_task():
    rng = np.random.default_rng(0)
    x = {m: rng.normal(size=(40, 3)).astype("float32") for m in "ab"}
    y = (x["a"][:, 0] > 0).astype("int32")
    return Task({m: tabular_mlp(3, units=(4,), name=m) for m in "ab"},
                {"train": (x, y), "validation": (x, y), "test": (x, y)}, 2, name="small")


@pytest.mark.parametrize("kind", ["branches", "features"])
def test_damaged_weights_or_features_name_themselves(tmp_path, kind):
    prepared = prepare(small_task(), str(tmp_path), pretrain_epochs=1)
    path = sorted(glob.glob(os.path.join(prepared.directory, kind, "*")))[0]
    with open(path, "r+b") as f:
        f.truncate(96)
    with pytest.raises(CorruptStateError, match="damaged") as error:
        prepare(small_task(), str(tmp_path), pretrain_epochs=1)
    assert path in str(error.value) and "Delete it" in str(error.value)
