"""No leaks between branch pretraining, candidate training, selection and test;
caches keyed by their settings; progress reported."""

import glob
import os
import re

import numpy as np
import pytest

from mmfusion.branches import tabular_mlp
from mmfusion.search import run
from mmfusion.search.run import Task, prepare, run_search


def distinct_task(n=60):
    rng = np.random.default_rng(0)
    splits = {}
    for split, size in (("train", n), ("validation", n // 3), ("test", n // 3)):
        x = {m: rng.normal(size=(size, 3)).astype("float32") for m in "ab"}
        splits[split] = (x, (x["a"][:, 0] > 0).astype("int32"))
    return Task({m: tabular_mlp(3, units=(4,), name=m) for m in "ab"}, splits, 2, name="distinct")


def rows(x):
    return {tuple(r) for r in np.asarray(x).round(6)}


def test_branches_never_see_the_examples_candidates_train_and_select_on(monkeypatch, tmp_path):
    task = distinct_task()
    pretrained, cached = [], []
    pretrain = run.pretrain_branch
    monkeypatch.setattr(run, "pretrain_branch",
                        lambda branch, x, *a, **k: pretrained.append(x) or pretrain(branch, x, *a,
                                                                                   **k))
    features = run.FeatureCache.features
    monkeypatch.setattr(run.FeatureCache, "features",
                        lambda self, b, inputs: cached.append(inputs) or features(self, b, inputs))
    prepared = prepare(task, str(tmp_path), pretrain_epochs=1, seed=3)
    train, validation, test = ({m: rows(x) for m, x in c.items()} for c in cached)
    for m, seen in zip("ab", pretrained):
        seen = rows(seen)
        assert not seen & train[m] and not seen & validation[m] and not seen & test[m]
        assert seen | train[m] == rows(task.splits["train"][0][m])  # the two parts: all of train
        assert len(seen) == 30
    assert validation["a"] == rows(task.splits["validation"][0]["a"])
    # Labels follow their examples.
    x, y = task.splits["train"]
    by_row = {tuple(r): label for r, label in zip(np.asarray(x["a"]).round(6), y)}
    search_rows = [tuple(r) for r in np.asarray(cached[0]["a"]).round(6)]
    assert list(prepared.labels["train"]) == [by_row[r] for r in search_rows]


def test_caches_keyed_by_seed_and_settings(tmp_path):
    lines = []
    first = prepare(distinct_task(), str(tmp_path), pretrain_epochs=1, seed=0)
    other_seed = prepare(distinct_task(), str(tmp_path), pretrain_epochs=1, seed=1)
    other_epochs = prepare(distinct_task(), str(tmp_path), pretrain_epochs=2, seed=0)
    again = prepare(distinct_task(), str(tmp_path), pretrain_epochs=1, seed=0, report=lines.append)
    folders = {p.directory for p in (first, other_seed, other_epochs)}
    assert len(folders) == 3 and again.directory == first.directory
    assert len(glob.glob(os.path.join(tmp_path, "prepared", "*", "branches", "a.weights.h5"))) == 3
    assert sum("loaded" in line for line in lines) == 2  # branches reused only for equal settings
    assert sum("read from the cache" in line for line in lines) == 3
    for tap, x in first.features["validation"]["a"].items():
        np.testing.assert_array_equal(again.features["validation"]["a"][tap], x)


def test_the_same_task_object_searches_twice(tmp_path):
    """Pretraining freezes the task's branches in place; the task keeps its key,
    so a second search on it reuses the pretrained branches (no settings error)."""
    task = distinct_task()
    settings = dict(trials=1, directory=str(tmp_path), epochs=1, fusions=["concat"],
                    max_layers=1, pretrain_epochs=1, verbose=0)
    first = run_search(task, "random", **settings)
    assert not task.branches["a"].trainable
    second = run_search(task, "mfas", **settings)
    assert len(glob.glob(os.path.join(tmp_path, "prepared", "*"))) == 1
    assert first["model_path"] != second["model_path"]


def test_resuming_with_other_settings_is_an_error_and_progress_is_reported(tmp_path, capsys):
    settings = dict(oracle="random", trials=2, directory=str(tmp_path), epochs=1,
                    fusions=["concat"], max_layers=1, pretrain_epochs=1)
    run_search(distinct_task(), seed=0, **settings)
    out = capsys.readouterr().out
    assert re.search(r"branch 1/2 \(a\): pretraining, 1 epochs on 30 examples", out)
    assert re.search(r"features 1/3 \(train, 30 examples\): computed", out)
    for i in (1, 2):
        assert re.search(rf"trial {i}/2 \[\d\d:\d\d elapsed, ETA \d\d:\d\d\]: concat\(a\.", out)
    with pytest.raises(ValueError, match=r"seed=1 \(it has 0\).*overwrite=True"):
        run_search(distinct_task(), seed=1, **settings)
    with pytest.raises(ValueError, match=r"trials=3 \(it has 2\)"):
        run_search(distinct_task(), seed=0, **{**settings, "trials": 3})
    run_search(distinct_task(), seed=1, overwrite=True, verbose=0, **settings)
