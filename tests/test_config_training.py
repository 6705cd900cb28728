"""`mmfusion train --config FILE`: a fusion model trained on a generated CSV
table with PNG files, texts and numbers, some rows without an image or a text."""

import json
import os
import sys

import keras
import numpy as np
import pytest

import mmfusion
from mmfusion.cli import main
from mmfusion.datasets.split import split_indices
from mmfusion.recipes.config import load_config, prepare_data, train_from_config

CLASSES = ["bag", "hat", "shoe"]
WORDS = {"bag": "leather tote strap", "hat": "wool brim warm", "shoe": "sole lace heel"}
FILLER = ["nice", "new", "cheap", "great", "classic", "daily"]

CONFIG = """\
data = "listings.csv"
label = "category"
[modalities.tabular]
columns = ["price"]
units = [8]
[modalities.image]
column = "image_path"
size = [12, 12]
filters = [4]
[modalities.text]
column = "description"
sequence_length = 6
embedding_dim = 8
units = [8]
[model]
fusion = "gmu"
units = 16
head_units = [16]
modality_dropout = 0.2
[training]
epochs = 6
batch_size = 16
learning_rate = 5e-3
validation = 0.2
test = 0.25
seed = SEED
output = "runs/listings"
"""


def _image(label, rng):
    """12x12 RGB: horizontal stripes (bag), vertical stripes (hat), a bright centre (shoe)."""
    image = rng.uniform(0, 0.3, (12, 12, 3))
    if label == 0:
        image[::3] += 0.7
    elif label == 1:
        image[:, ::3] += 0.7
    else:
        image[4:8, 4:8] += 0.7
    return np.clip(image, 0, 1) * 255


def write_listings(folder, seed=0, rows=120):
    """The table, its images and the config; returns `(config path, has_image, has_text)`."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    labels = rng.integers(0, 3, rows)
    has_image = rng.random(rows) > 0.3
    has_text = rng.random(rows) > 0.3
    lines = ["price,image_path,description,category"]
    missing_file = int(np.flatnonzero(has_image)[0])
    for i, label in enumerate(labels):
        path = ""
        if has_image[i]:
            path = f"images/{i}.png"
            if i == missing_file:  # a path to a file that does not exist
                has_image[i] = False
            else:
                keras.utils.save_img(os.path.join(folder, path), _image(label, rng), scale=False)
        text = ""
        if has_text[i]:
            text = " ".join([*rng.choice(FILLER, 2), *WORDS[CLASSES[label]].split()[:2]])
        price = label + rng.normal(0, 0.8)
        lines.append(f"{price:.3f},{path},{text},{CLASSES[label]}")
    with open(os.path.join(folder, "listings.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    config = os.path.join(folder, "listings.toml")
    with open(config, "w") as f:
        f.write(CONFIG.replace("SEED", str(seed)))
    return config, has_image, has_text


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("listings"))
    config, has_image, has_text = write_listings(folder)
    metrics = train_from_config(config, verbose=0)
    return config, metrics, has_image, has_text


def test_metrics_on_separate_validation_and_test_splits(trained):
    config, metrics, _, _ = trained
    output = os.path.join(os.path.dirname(config), "runs", "listings")
    assert sorted(os.listdir(output)) == ["logs", "metrics.json", "model.keras",
                                          "preprocessing.json"]
    saved = json.load(open(os.path.join(output, "metrics.json")))
    assert saved["rows"] == {"train": 66, "validation": 24, "test": 30}
    for key in ("validation_accuracy", "validation_loss", "test_accuracy", "test_loss"):
        assert np.isfinite(saved[key])
    assert len(saved["history"]["val_accuracy"]) == 6
    # Chance is 1/3; measured over data/training seeds 0, 1, 2: test 1.00 / 0.90 / 0.97,
    # validation 0.92 / 0.84 / 0.91.
    assert saved["test_accuracy"] > 0.7, saved["test_accuracy"]
    assert saved["validation_accuracy"] > 0.7, saved["validation_accuracy"]
    patterns = saved["test_by_presence"]
    assert sum(p["rows"] for p in patterns.values()) == 30 and len(patterns) >= 3, patterns
    assert json.load(open(os.path.join(output, "preprocessing.json")))["classes"] == CLASSES


def test_presence_mask_comes_from_the_files(trained):
    config, _, has_image, has_text = trained
    data = prepare_data(load_config(config))
    # The split is seeded and stratified by class: rebuild it from the labels in file order.
    names = [line.rsplit(",", 1)[1] for line in
             open(os.path.join(os.path.dirname(config), "listings.csv")).read().splitlines()[1:]]
    labels = np.array([CLASSES.index(n) for n in names])
    parts = split_indices(len(labels), 0.2, 0.25, 0, stratify=labels)
    truth = np.stack([np.ones(len(labels)), has_image, has_text], axis=1).astype("float32")
    for part, (x, y) in data["splits"].items():
        np.testing.assert_array_equal(y, labels[parts[part]])
        np.testing.assert_array_equal(x["presence"], truth[parts[part]])
        assert np.all(np.isfinite(x["image"])) and np.all(x["image"][x["presence"][:, 1] == 0] == 0)
    assert 0.2 < 1 - truth[:, 1].mean() < 0.45 and 0.2 < 1 - truth[:, 2].mean() < 0.45


def test_model_reloads_finite_and_ignores_absent_placeholders(trained):
    config, metrics, _, _ = trained
    model = mmfusion.load_model(metrics["model_path"])
    assert all(np.all(np.isfinite(keras.ops.convert_to_numpy(w))) for w in model.weights)
    x, y = prepare_data(load_config(config))["splits"]["test"]
    scores = model.evaluate(x, y, verbose=0, return_dict=True)
    assert abs(scores["loss"] - metrics["test_loss"]) < 1e-5
    assert scores["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    before = model.predict(x, verbose=0)
    absent = x["presence"][:, 1] == 0
    assert absent.any()
    noisy = dict(x, image=np.where(absent[:, None, None, None],
                                   np.random.default_rng(0).uniform(-50, 50, x["image"].shape),
                                   x["image"]).astype("float32"))
    np.testing.assert_allclose(model.predict(noisy, verbose=0), before, atol=1e-6)


@pytest.mark.parametrize("edit, where", [
    (("[training]", "[training]\nepoch = 3"), "[training] unknown key(s) epoch"),
    (('column = "image_path"', 'column = "photo"'), "[modalities.image] column: no column"),
    (("validation = 0.2", "validation = 1.2"), "[training] validation: must be a fraction"),
    (("test = 0.25", "test = 0.85"), "[training] validation, test: their sum must be below 1"),
    (('fusion = "gmu"', 'fusion = "nope"'), "[model] fusion: Unknown fusion 'nope'"),
    (("modality_dropout = 0.2", "modality_dropout = 0.2\nunimodal_loss = -1"),
     "[model] unimodal_loss: must be a number >= 0"),
    (("[modalities.text]", "[modalities.text]\nkind = \"video\""),
     "[modalities.text] kind: unknown modality kind 'video'"),
    (('label = "category"', 'label = "kind"'), "label: no column 'kind'"),
])
def test_bad_configs_name_file_section_and_key(trained, tmp_path, edit, where):
    config = trained[0]
    text = open(config).read().replace(*edit).replace('"listings.csv"', json.dumps(
        os.path.join(os.path.dirname(config), "listings.csv")))
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ValueError) as error:
        load_config(str(bad))
    assert str(bad) in str(error.value) and where in str(error.value), str(error.value)


def test_cli_config_errors_without_traceback(trained, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(open(trained[0]).read().replace("[model]", "[model]\nlayers = 2"))
    for argv, message in ((["train", "--config", str(bad)], "[model] unknown key(s) layers"),
                          (["train", "synthetic", "--config", str(bad)], "not both"),
                          (["train"], "give a TASK or --config FILE")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_split_indices_disjoint_seeded_and_stratified():
    labels = np.repeat([0, 1, 2], [40, 20, 10])
    parts = split_indices(70, 0.2, 0.3, seed=3, stratify=labels)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(70))
    assert [int((labels[parts["test"]] == c).sum()) for c in range(3)] == [12, 6, 3]
    again = split_indices(70, 0.2, 0.3, seed=3, stratify=labels)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = split_indices(70, 0.2, 0.3, seed=4, stratify=labels)
    assert not np.array_equal(parts["test"], other["test"])


def test_cli_trains_a_regression_config(tmp_path, capsys):
    rng = np.random.default_rng(1)
    rows = ["size,note,value"]
    for i in range(80):
        size = rng.uniform(0, 4)
        note = "big" if size > 2 else ("" if i % 3 == 0 else "small")
        rows.append(f"{size:.3f},{note},{2 * size + 1:.3f}")
    (tmp_path / "items.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "items.toml").write_text(
        'data = "items.csv"\nlabel = "value"\ntask = "regression"\n'
        '[modalities.numbers]\nkind = "tabular"\ncolumns = ["size"]\nunits = [16]\n'
        '[modalities.text]\ncolumn = "note"\nembedding_dim = 4\nunits = [4]\n'
        '[model]\nfusion = "concat"\nunits = 16\nhead_units = [16]\nunimodal_loss = 0.5\n'
        'unimodal_fallback = true\n'
        '[training]\nepochs = 30\nlearning_rate = 1e-2\nvalidation = 0.2\ntest = 0.2\n')
    main(["train", "--config", str(tmp_path / "items.toml")])
    assert "test mae" in capsys.readouterr().out
    metrics = json.load(open(tmp_path / "runs" / "items" / "metrics.json"))
    # Targets spread over [1, 9] (std 2.3); predicting their mean gives MAE about 2.
    assert metrics["test_mae"] < 1.0, metrics["test_mae"]
    assert set(metrics["test_by_presence"]) <= {"numbers", "numbers+text"}
    assert "mae" in metrics["test_by_presence"]["numbers+text"]
    model = mmfusion.load_model(metrics["model_path"])
    heads = model.get_layer("prediction")  # trained with unimodal heads
    assert heads.loss_weight == 0.5 and heads.fallback


def test_parquet_table_reads_like_its_csv(tmp_path):
    """pandas writes the CSV's empty cells as NaN (float) into the parquet
    file: they must be absent, not the text "nan"."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    config, _, _ = write_listings(str(tmp_path))
    frame = pd.read_csv(tmp_path / "listings.csv")
    assert frame["description"].isna().sum() > 10 and frame["image_path"].isna().sum() > 10
    frame.to_parquet(tmp_path / "listings.parquet")
    parquet = tmp_path / "parquet.toml"
    parquet.write_text(open(config).read().replace("listings.csv", "listings.parquet"))
    from_csv = prepare_data(load_config(config))["splits"]
    from_parquet = prepare_data(load_config(str(parquet)))["splits"]
    for part, (x, y) in from_csv.items():
        np.testing.assert_array_equal(from_parquet[part][1], y)
        for name, values in x.items():
            np.testing.assert_array_equal(from_parquet[part][0][name], values, err_msg=name)


def test_parquet_needs_pandas_or_pyarrow(tmp_path, monkeypatch):
    for module in ("pandas", "pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    (tmp_path / "rows.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError, match="data: reading parquet .* needs pandas or pyarrow"):
        load_config({"data": str(tmp_path / "rows.parquet"), "label": "y",
                     "modalities": {"tabular": {"columns": ["x"]}}})


def test_readme_config_example_is_valid(tmp_path):
    readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")).read()
    block = readme.split("### Training on your own files", 1)[1].split("```toml\n", 1)[1]
    (tmp_path / "listings.toml").write_text(block.split("```", 1)[0])
    (tmp_path / "listings.csv").write_text("price,weight,image_path,description,category\n")
    config = load_config(str(tmp_path / "listings.toml"))
    assert {m: s["kind"] for m, s in config["modalities"].items()} == {
        "tabular": "tabular", "image": "image", "text": "text"}
    assert config["model"]["fusion"] == "gmu" and config["training"]["output"] == str(
        tmp_path / "runs" / "listings")
