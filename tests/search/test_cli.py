import os

import keras
import pytest

from mmfusion.cli import main


@pytest.mark.slow
def test_search_command_prints_and_exports_best(tmp_path, capsys):
    main(["search", "synthetic", "--trials", "2", "--epochs", "1", "--pretrain-epochs", "1",
          "--max-layers", "1", "--fusions", "concat,gmu", "--directory", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.count("trial ") == 2
    assert "best architecture: " in out and "(visual." in out and "textual." in out
    model = keras.models.load_model(os.path.join(tmp_path, "best_mfas.keras"))
    assert sorted(t.name for t in model.inputs) == ["textual", "visual"]
    # Resuming a finished search runs no new trial.
    main(["search", "synthetic", "--trials", "2", "--epochs", "1", "--pretrain-epochs", "1",
          "--max-layers", "1", "--fusions", "concat,gmu", "--directory", str(tmp_path)])
    assert capsys.readouterr().out.count("trial ") == 0
    # Resuming with other settings is a usage error, not a traceback.
    with pytest.raises(SystemExit) as stopped:
        main(["search", "synthetic", "--trials", "3", "--epochs", "1", "--pretrain-epochs", "1",
              "--max-layers", "1", "--fusions", "concat,gmu", "--directory", str(tmp_path)])
    assert stopped.value.code == 2
    assert "started with other settings: trials=3 (it has 2)" in capsys.readouterr().err


@pytest.mark.slow
def test_search_command_on_a_regression_task_with_mfas_settings(tmp_path, capsys, monkeypatch):
    import json

    import numpy as np

    from mmfusion import tasks
    from mmfusion.branches import tabular_mlp
    from mmfusion.datasets.synthetic import SyntheticData

    def load(data_dir=None, seed=0):
        rng = np.random.default_rng(seed)
        x = {m: rng.normal(size=(300, 2)).astype("float32") for m in "ab"}
        data = SyntheticData(x, (x["a"][:, 0] - x["b"][:, 1]).astype("float32"),
                             switch=np.zeros(300, "int32"))
        return data.take(slice(0, 200)), data.take(slice(200, None))

    task = tasks.Task("tiny_regression", load,
                      lambda data, width=1: {m: tabular_mlp(2, units=(8,), name=m) for m in "ab"},
                      num_outputs=1, head="regression", modalities=("a", "b"))
    monkeypatch.setitem(tasks._REGISTRY, task.name, task)
    main(["search", "tiny_regression", "--trials", "3", "--epochs", "1", "--pretrain-epochs", "1",
          "--max-layers", "1", "--fusions", "concat,gmu", "--directory", str(tmp_path),
          "--objective", "val_mae", "--initial-samples", "2", "--samples-per-step", "1",
          "--surrogate-units", "4", "--surrogate-epochs", "2", "--temperature", "5"])
    out = capsys.readouterr().out
    assert out.count("-> val_mae ") == 3 and "validation mae " in out and "test mae " in out
    assert "Pareto front, val_mae vs params: " in out and "accuracy" not in out
    settings = json.loads((tmp_path / "mfas-settings.json").read_text())
    assert settings["objective"] == "val_mae" and settings["mfas"] == {
        "initial_samples": 2, "samples_per_step": 1, "surrogate_units": 4,
        "surrogate_epochs": 2, "temperature": 5.0}
    steps = json.loads((tmp_path / "mfas" / "oracle.json").read_text())["mfas"]["steps"]
    assert [len(step["architectures"]) for step in steps] == [2, 1]
    assert steps[1]["temperature"] == 5.0  # the first sampling step's
    results = json.loads((tmp_path / "results_mfas.json").read_text())
    assert results["objective"] == "val_mae" and len(results["trials"]) == 3
