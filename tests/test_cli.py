"""The `mmfusion` command: help with defaults, wrong names without a traceback,
no Keras for `--help`, no top-level `recipes` package, a saved model."""

import json
import os
import subprocess
import sys

import keras
import pytest

from mmfusion.cli import main

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code):
    """Runs `code` in a fresh interpreter that sees this checkout; returns its stdout."""
    env = dict(os.environ, PYTHONPATH=REPOSITORY)
    return subprocess.run([sys.executable, "-c", code], env=env, check=True, text=True,
                          capture_output=True, cwd=REPOSITORY).stdout


def error_of(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_help_imports_neither_keras_nor_tensorflow():
    out = run_python(
        "import sys\n"
        "from mmfusion.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['search', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))\n")
    assert "usage: mmfusion" in out and out.strip().endswith("[]"), out


def test_mmfusion_imports_no_top_level_recipes():
    out = run_python(
        "import importlib, pkgutil, sys\n"
        "import mmfusion, mmfusion.cli\n"
        "for info in pkgutil.walk_packages(mmfusion.__path__, 'mmfusion.'):\n"
        "    importlib.import_module(info.name)\n"
        "print(sorted(m for m in sys.modules if m == 'recipes' or m.startswith('recipes.')))\n")
    assert out.strip() == "[]", out


@pytest.mark.parametrize("argv, expected", [
    (["train", "gmu_synthetic"], "invalid choice: 'gmu_synthetic' (choose from 'av_digits', "
                                 "'av_text_digits', 'avmnist', 'cmu_mosei', 'cmu_mosi', "
                                 "'easy_vqa', 'hateful_memes', 'mmimdb', 'synthetic')"),
    (["search", "nope"], "invalid choice: 'nope' (choose from 'av_digits'"),
    (["train", "synthetic", "--fusion", "nope"], "Unknown fusion 'nope' for placement "
                                                 "'intermediate'; available: attention_pooling"),
    (["train", "synthetic", "--placement", "late", "--fusion", "nope"], "concat, "),
    (["train", "synthetic", "--placement", "middle"], "available: early, intermediate, late"),
    (["search", "synthetic", "--oracle", "nope"], "invalid choice: 'nope' (choose from 'mfas', "
                                                  "'random', 'bayesian', 'oneshot')"),
    (["search", "synthetic", "--fusions", "concat,nope"], "unknown fusion layer(s) nope; "
                                                          "available: attention_pooling"),
    (["list", "layers"], "invalid choice: 'layers' (choose from 'fusions', 'tasks')"),
    (["search", "synthetic", "--objective", "val_mse"], "invalid choice: 'val_mse' (choose from "
                                                        "'val_accuracy', 'val_loss', "
                                                        "'val_presence_accuracy'"),
    (["search", "cmu_mosi", "--objective", "val_accuracy"], "(choose from 'val_mse', 'val_mae'"),
    (["search", "mmimdb", "--objective", "nope"], "(choose from 'val_auc', 'val_loss'"),
    (["search", "synthetic", "--oracle", "random", "--temperature", "2",
      "--samples-per-step", "3"], "--samples-per-step, --temperature: MFAS settings need "
                                  "--oracle mfas (got --oracle random)"),
    (["search", "synthetic", "--samples-per-step", "0"], "expected a positive int, got '0'"),
    (["search", "synthetic", "--temperature", "hot"], "expected a positive float, got 'hot'"),
    (["search", "synthetic", "--temperature", "1", "--min-temperature", "2"],
     "--min-temperature must not exceed --temperature"),
    (["search", "cmu_mosei", "--oracle", "oneshot"], "--oracle oneshot trains a classifier "
                                                     "supernet; cmu_mosei has a regression head"),
    (["search", "synthetic", "--modality-dropout", "1"], "--modality-dropout must be in [0, 1)"),
    (["search", "synthetic", "--max-params", "-3"], "expected a positive int, got '-3'"),
])
def test_wrong_names_list_the_choices(argv, expected, capsys):
    err = error_of(argv, capsys)
    assert expected in err and "Traceback" not in err, err


def test_late_fusion_choices_include_the_combiners(capsys):
    err = error_of(["train", "synthetic", "--placement", "late", "--fusion", "nope"], capsys)
    assert "average, weighted" in err


def test_help_shows_the_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line per option
    with pytest.raises(SystemExit):
        main(["train", "synthetic", "--help"])
    out = capsys.readouterr().out
    assert "usage: mmfusion train synthetic" in out
    for default in ("(default: gmu)", "(default: 30)", "(default: 2000)", "--data-dir"):
        assert default in out, default
    with pytest.raises(SystemExit):
        main(["search", "av_digits", "--help"])
    out = capsys.readouterr().out
    assert "(default: mfas)" in out and "(default: concat,gmu,lmf,mfb)" in out
    assert "(default: val_accuracy)" in out
    for flag, default in (("--initial-samples", "budget-sized"), ("--samples-per-step",
                                                                   "budget-sized"),
                          ("--temperature", "10.0"), ("--min-temperature", "0.2"),
                          ("--surrogate-units", "32"), ("--surrogate-epochs", "50")):
        assert flag in out and f"(MFAS default: {default})" in out, flag
    with pytest.raises(SystemExit):
        main(["search", "cmu_mosi", "--help"])
    assert "(default: val_mse)" in capsys.readouterr().out


def test_train_saves_the_model_and_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "synthetic", "--epochs", "1", "--n-train", "100", "--n-test", "50",
          "--fusion", "concat", "--output", str(out), "--quiet"])
    assert str(out / "model.keras") in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    model = keras.saving.load_model(out / "model.keras")
    assert metrics["fusion"] == "concat" and model.count_params() == metrics["parameters"]
