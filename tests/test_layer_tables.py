"""benchmarks/layer_tables.py: presets, resumable raw JSON and the table."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import layer_tables  # noqa: E402

from mmfusion import tasks  # noqa: E402
from mmfusion.compose import build_fusion_model  # noqa: E402
from mmfusion.fusion import ModalityDropout  # noqa: E402


def test_presets_expand_to_one_argument_list_per_table():
    tables = layer_tables.expand_presets(["--preset", "all", "--seeds", "0"])
    parsed = [layer_tables.build_parser().parse_args(a) for a in tables]
    assert [a.task for a in parsed] == ["av_digits", "av_text_digits", "easy_vqa"]
    assert [a.epochs for a in parsed] == [12, 12, 8] and parsed[2].max_questions == 10000
    assert all(a.seeds == [0] for a in parsed)
    # Options given with a preset win over its settings.
    (only,) = layer_tables.expand_presets(["--preset", "easy_vqa", "--epochs", "1"])
    assert layer_tables.build_parser().parse_args(only).epochs == 1


def test_a_table_is_written_and_a_rerun_resumes(tmp_path):
    output = str(tmp_path / "synthetic.json")
    argv = ["--task", "synthetic", "--rows", "concat", "--seeds", "0", "1", "--epochs", "1",
            "--output", output]
    report = layer_tables.main(argv)
    runs = report["results"]["concat"]
    assert [r["seed"] for r in runs] == [0, 1]
    assert all(0.9 < r["test_accuracy"]["all"] <= 1.0 for r in runs)  # an easy task
    with open(output) as f:
        assert json.load(f)["results"] == report["results"]
    table = (tmp_path / "synthetic.md").read_text()
    mean, half = layer_tables.confidence_interval([r["test_accuracy"]["all"] for r in runs])
    assert f"| concat | {mean:.3f} ± {half:.3f} |" in table
    again = layer_tables.main(argv)  # nothing left to train: the same runs
    assert again["results"] == report["results"]


def test_the_late_row_is_late_fusion_and_is_tested_with_each_modality_absent(tmp_path):
    argv = ["--task", "synthetic", "--rows", "late", "--seeds", "0", "--epochs", "2",
            "--modality-dropout", "0.5", "--output", str(tmp_path / "late.json")]
    (run,) = layer_tables.main(argv)["results"]["late"]
    accuracy = run["test_accuracy"]
    assert set(accuracy) == {"all", "textual only", "visual only"}
    assert accuracy["all"] > 0.9
    # Each head alone still predicts: late fusion renormalizes over present modalities.
    assert min(accuracy["textual only"], accuracy["visual only"]) > 0.6
    task = tasks.get("synthetic")
    late = build_fusion_model(task.branches(task.data(seed=0)), "weighted", placement="late",
                              num_outputs=task.num_outputs, presence=True, modality_dropout=0.5)
    assert run["parameters"] == late.count_params()


def test_absent_option_and_warmup_are_built_and_recorded(tmp_path):
    output = tmp_path / "learned.json"
    argv = ["--task", "synthetic", "--rows", "concat", "--seeds", "0", "--epochs", "2",
            "--modality-dropout", "0.5", "--absent", "learned", "--warmup-fraction", "0.5",
            "--output", str(output)]
    (run,) = layer_tables.main(argv)["results"]["concat"]
    assert run["test_accuracy"]["all"] > 0.9
    task = tasks.get("synthetic")
    branches = task.branches(task.data(seed=0))
    warmup = ModalityDropout(0.5, warmup_steps=10)
    learned = build_fusion_model(branches, "concat", num_outputs=task.num_outputs, units=64,
                                 presence=True, modality_dropout=warmup, absent="learned")
    zeros = build_fusion_model(branches, "concat", num_outputs=task.num_outputs, units=64,
                               presence=True, modality_dropout=0.5)
    # One trained placeholder per fused vector tap, and the warm-up's step counter.
    assert run["parameters"] == learned.count_params() > zeros.count_params() + 1
    assert len(warmup.weights) == 1
    settings = json.loads(output.read_text())["settings"]
    assert (settings["absent"], settings["warmup_fraction"]) == ("learned", 0.5)
    with pytest.raises(SystemExit):
        layer_tables.build_parser().parse_args(["--absent", "nothing"])


def test_pretrained_branches_with_unimodal_fallback_are_recorded(tmp_path):
    output = tmp_path / "pretrained.json"
    argv = ["--task", "synthetic", "--rows", "concat", "--seeds", "0", "--epochs", "2",
            "--modality-dropout", "0.5", "--unimodal-loss", "1", "--unimodal-fallback",
            "--pretrained-branches", "--output", str(output)]
    (run,) = layer_tables.main(argv)["results"]["concat"]
    assert run["test_accuracy"]["all"] > 0.9
    # Each modality alone is read from its own head on a branch trained alone.
    assert min(run["test_accuracy"][c] for c in run["test_accuracy"] if c.endswith("only")) > 0.6
    settings = json.loads(output.read_text())["settings"]
    assert settings["unimodal_fallback"] and settings["pretrained_branches"]
