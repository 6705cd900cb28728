"""Recipes run end to end on tiny data and write metrics and TensorBoard logs."""

import json
import os

import pytest

from recipes import av_digits, av_text_digits, gmu_synthetic
from tests.datasets.fake_fsdd import write_fake_fsdd


@pytest.fixture(scope="module")
def fake_fsdd(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("fsdd"))
    write_fake_fsdd(folder)
    return folder


def check_outputs(folder, metrics, capsys):
    with open(os.path.join(folder, "metrics.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(metrics))
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    assert len(saved["history"]["loss"]) == saved["epochs"]
    events = [f for _, _, files in os.walk(os.path.join(folder, "logs")) for f in files
              if f.startswith("events.out.tfevents")]
    assert events
    assert os.path.join(folder, "metrics.json") in capsys.readouterr().out


@pytest.mark.slow
def test_gmu_synthetic_learns(tmp_path, capsys):
    out = str(tmp_path / "gmu")
    metrics = gmu_synthetic.main(["--epochs", "10", "--n-train", "500", "--n-test", "300",
                                  "--output", out, "--quiet"])
    check_outputs(out, metrics, capsys)
    assert metrics["fusion"] == "gmu" and metrics["test_accuracy"] > 0.8
    assert set(metrics["test_accuracy_by_switch"]) == {"visual_carries_signal",
                                                       "textual_carries_signal"}


@pytest.mark.slow
@pytest.mark.parametrize("recipe, args", [
    (av_digits, ["--fusion", "gmu"]),
    (av_text_digits, ["--fusion", "concat"]),
])
def test_av_recipes_run(recipe, args, fake_fsdd, tmp_path, capsys):
    out = str(tmp_path / "run")
    metrics = recipe.main(args + ["--epochs", "1", "--limit", "24", "--batch-size", "8",
                                  "--fsdd-path", fake_fsdd, "--output", out, "--quiet"])
    check_outputs(out, metrics, capsys)
    assert metrics["recipe"] == recipe.NAME


def test_default_output_folder(fake_fsdd, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    metrics = av_digits.main(["--modalities", "image", "--epochs", "1", "--limit", "16",
                              "--fsdd-path", fake_fsdd, "--quiet", "--seed", "3"])
    check_outputs(os.path.join("runs", "av_digits-none-intermediate-s3"), metrics, capsys)
