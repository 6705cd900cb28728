"""Recipes train end to end on tiny data: the saved model, the metrics file and
the validation split (never the test split)."""

import json
import os

import keras
import numpy as np
import pytest

from mmfusion import tasks
from mmfusion.recipes import train
from recipes import av_digits, av_text_digits, synthetic
from tests.datasets.fake_fsdd import write_fake_fsdd


@pytest.fixture(scope="module")
def fake_data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_fake_fsdd(str(folder / "fsdd"))
    return str(folder)


def check_outputs(folder, metrics, capsys):
    with open(os.path.join(folder, "metrics.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(metrics))
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    assert len(saved["history"]["loss"]) == saved["epochs"]
    events = [f for _, _, files in os.walk(os.path.join(folder, "logs")) for f in files
              if f.startswith("events.out.tfevents")]
    assert events
    assert sorted(f for f in os.listdir(folder) if f.startswith(".")) == []  # no temporary files
    assert os.path.join(folder, "metrics.json") in capsys.readouterr().out


def evaluate(model, split):
    x, y = split
    return model.evaluate(x, y, batch_size=256, verbose=0, return_dict=True)


@pytest.mark.slow
def test_synthetic_learns_and_saves_a_model_that_reloads(tmp_path, capsys):
    out = str(tmp_path / "gmu")
    metrics = synthetic.main(["--epochs", "10", "--n-train", "500", "--n-test", "300",
                              "--output", out, "--quiet"])
    check_outputs(out, metrics, capsys)
    assert metrics["fusion"] == "gmu" and metrics["test_accuracy"] > 0.8
    assert set(metrics["test_accuracy_by_switch"]) == {"visual_carries_signal",
                                                       "textual_carries_signal"}
    # The saved model is the trained one: its scores on the validation and test splits are
    # the reported ones, and they differ (two different splits).
    model = keras.saving.load_model(os.path.join(out, "model.keras"))
    data = tasks.get("synthetic").data(seed=0, n_train=500, n_test=300)
    for split in ("validation", "test"):
        scores = evaluate(model, data.splits[split])
        assert scores["loss"] == pytest.approx(metrics[f"{split}_loss"], rel=1e-5)
        assert scores["accuracy"] == pytest.approx(metrics[f"{split}_accuracy"], abs=1e-6)
    assert metrics["validation_loss"] != pytest.approx(metrics["test_loss"], rel=1e-3)
    assert metrics["history"]["val_loss"][-1] == pytest.approx(metrics["validation_loss"],
                                                               rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("recipe, args", [
    (av_digits, ["--fusion", "gmu"]),
    (av_text_digits, ["--fusion", "concat"]),
])
def test_av_recipes_run(recipe, args, fake_data_dir, tmp_path, capsys):
    out = str(tmp_path / "run")
    metrics = recipe.main(args + ["--epochs", "1", "--limit", "24", "--batch-size", "8",
                                  "--data-dir", fake_data_dir, "--output", out, "--quiet"])
    check_outputs(out, metrics, capsys)
    assert metrics["task"] == recipe.NAME
    model = keras.saving.load_model(metrics["model_path"])
    assert sorted(i.name for i in model.inputs) == sorted(tasks.get(recipe.NAME).modalities)


def test_default_output_folder(fake_data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    metrics = av_digits.main(["--modalities", "image", "--epochs", "1", "--limit", "16",
                              "--data-dir", fake_data_dir, "--quiet", "--seed", "3"])
    check_outputs(os.path.join("runs", "av_digits-none-intermediate-s3"), metrics, capsys)
    assert metrics["modalities"] == ["image"]


def test_validation_is_carved_out_of_training_data(tmp_path):
    seen = {}

    def fit(self, x, validation_data=None, **kwargs):
        seen["train"] = np.concatenate([b[0]["visual"] for b in x.as_numpy_iterator()])
        seen["validation"] = np.concatenate(
            [b[0]["visual"] for b in validation_data.as_numpy_iterator()])
        return keras.callbacks.History()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras.Model, "fit", fit)
        train.train_task("synthetic", output=str(tmp_path), verbose=0,
                         options={"n_train": 100, "n_test": 60})
    data = tasks.get("synthetic").data(n_train=100, n_test=60)
    test_rows = {r.tobytes() for r in data.splits["test"][0]["visual"]}
    assert len(seen["train"]) == 80 and len(seen["validation"]) == 20
    assert not {r.tobytes() for r in seen["validation"]} & test_rows
    assert not {r.tobytes() for r in seen["validation"]} & {r.tobytes() for r in seen["train"]}


@pytest.mark.parametrize("overrides, message", [
    ({"fusion": "nope"}, "Unknown fusion 'nope' for placement 'intermediate'; available: .*gmu"),
    ({"fusion": "average"}, "Unknown fusion 'average'"),  # late fusion only
    ({"placement": "middle"}, "Unknown placement 'middle'; available: early, intermediate, late"),
    ({"epoch": 3}, r"Unknown training setting\(s\) \['epoch'\]"),
])
def test_wrong_settings_list_the_choices(overrides, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        train.train_task("synthetic", output=str(tmp_path), **overrides)


def test_unknown_modality_lists_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown modalities \['audio'\] .*visual, textual"):
        train.train_task("synthetic", output=str(tmp_path), modalities=["visual", "audio"])
