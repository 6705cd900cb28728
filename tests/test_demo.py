import json
import os

from sklearn.metrics import roc_auc_score

from mmfusion.cli import main
from mmfusion.datasets.synthetic import load_gmu_synthetic
from mmfusion.demo import train_synthetic, visual_gate


def test_gmu_learns_the_task_and_its_gate_recovers_the_switch():
    train, test = load_gmu_synthetic(n_train=2000, n_test=1000, seed=0)
    model, accuracy = train_synthetic("gmu", train, test, epochs=10, seed=0, verbose=0)
    auc = roc_auc_score(test.switch, visual_gate(model, test.inputs))
    assert accuracy >= 0.90
    assert auc >= 0.90


def test_demo_command_writes_logs_plot_and_results(tmp_path, capsys):
    main(["demo", "--output", str(tmp_path), "--epochs", "2"])
    results = json.load(open(tmp_path / "results.json"))
    assert set(results) == {"concat_test_accuracy", "gmu_test_accuracy", "gmu_gate_auc"}
    with open(tmp_path / "gmu_gate.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    events = [f for _, _, files in os.walk(tmp_path / "tensorboard" / "gmu") for f in files]
    assert any(f.startswith("events.out.tfevents") for f in events)
    printed = capsys.readouterr().out
    assert "GMU gate vs hidden switch M" in printed and str(tmp_path) in printed


def test_list_command_prints_registered_layers(capsys):
    main(["list"])
    printed = capsys.readouterr().out
    assert "gmu" in printed and "GMU" in printed and "weighted_sum" in printed
