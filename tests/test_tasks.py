"""The tasks registry: one definition per task, splits that never mix."""

import numpy as np
import pytest

from mmfusion import tasks
from mmfusion.datasets.synthetic import load_gmu_synthetic
from tests.datasets.fake_fsdd import write_fake_fsdd


@pytest.fixture(scope="module")
def fake_data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_fake_fsdd(str(folder / "fsdd"))
    return str(folder)


def rows(inputs, modality):
    return {x.tobytes() for x in inputs[modality]}


def test_unknown_task_lists_the_choices():
    with pytest.raises(ValueError, match="Unknown task 'gmu_synthetic'; available: "
                                         "av_digits, av_text_digits, avmnist, cmu_mosei, cmu_mosi, "
                                         "easy_vqa, hateful_memes, mmimdb, synthetic"):
        tasks.get("gmu_synthetic")


def test_unknown_head_is_an_error():
    with pytest.raises(ValueError, match="unknown head 'ranking'"):
        tasks.Task("t", lambda **kw: None, lambda data: {}, 2, head="ranking")


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="'synthetic' is already registered"):
        tasks.register(tasks.get("synthetic"))


def test_synthetic_splits_are_the_loader_data_and_disjoint():
    data = tasks.get("synthetic").data(seed=3)
    train, test = load_gmu_synthetic(n_train=2000, n_test=1000, seed=3)
    (fit_x, fit_y), (val_x, val_y), (test_x, test_y) = (
        data.splits[s] for s in ("train", "validation", "test"))
    assert (len(fit_y), len(val_y), len(test_y)) == (1600, 400, 1000)
    # train + validation is exactly the loader's training split; test is its test split
    assert rows(fit_x, "visual") | rows(val_x, "visual") == rows(train.inputs, "visual")
    assert not rows(fit_x, "visual") & rows(val_x, "visual")
    np.testing.assert_array_equal(test_x["visual"], test.inputs["visual"])
    np.testing.assert_array_equal(test_y, test.labels)
    assert not rows(val_x, "visual") & rows(test_x, "visual")
    # labels travel with their rows
    index = {x.tobytes(): y for x, y in zip(train.inputs["visual"], train.labels)}
    assert [index[x.tobytes()] for x in val_x["visual"]] == val_y.tolist()


def test_data_is_seeded():
    first, again = (tasks.get("synthetic").data(seed=1, n_train=200, n_test=50) for _ in range(2))
    other = tasks.get("synthetic").data(seed=2, n_train=200, n_test=50)
    np.testing.assert_array_equal(first.splits["validation"][0]["textual"],
                                  again.splits["validation"][0]["textual"])
    assert not np.array_equal(first.splits["validation"][0]["textual"],
                              other.splits["validation"][0]["textual"])


def test_breakdown_matches_a_count():
    data = tasks.get("synthetic").data(n_train=100, n_test=200)
    predicted = np.where(np.arange(200) % 3 == 0, 1 - data.test.labels, data.test.labels)
    wrong = np.arange(200) % 3 == 0
    outputs = np.eye(2)[predicted] * 0.8 + 0.1  # class probabilities, argmax = predicted
    by_switch = tasks.get("synthetic").breakdown(data.test, outputs)["test_accuracy_by_switch"]
    visual = data.test.switch == 1
    assert by_switch["visual_carries_signal"] == pytest.approx(1 - wrong[visual].mean())
    assert by_switch["textual_carries_signal"] == pytest.approx(1 - wrong[~visual].mean())


def test_av_digits_reads_fsdd_from_data_dir(fake_data_dir, monkeypatch):
    monkeypatch.delenv("MMFUSION_DATA", raising=False)
    data = tasks.get("av_digits").data(data_dir=fake_data_dir, limit=40)
    assert {s: len(y) for s, (_, y) in data.splits.items()} == {
        "train": 32, "validation": 8, "test": 40}
    # the fake FSDD's indices 0-4 are its test recordings (official split)
    assert {int(f.split("_")[2][:-4]) for f in data.test.recordings} <= set(range(5))
    branches = tasks.get("av_digits").branches(data)
    inputs = data.splits["train"][0]
    assert sorted(branches) == ["audio", "image"]
    assert branches["audio"](inputs["audio"][:2])["vector"].shape == (2, 64)


def test_data_dir_falls_back_to_the_environment(fake_data_dir, monkeypatch):
    monkeypatch.setenv("MMFUSION_DATA", fake_data_dir)
    data = tasks.get("av_digits").data(limit=10)
    assert len(data.splits["test"][1]) == 10


def test_text_is_vectorized_with_the_training_vocabulary(fake_data_dir):
    data = tasks.get("av_text_digits").data(data_dir=fake_data_dir, limit=30, p_degrade=0.0)
    vectorizer = data.preprocessors["text"]
    ids = data.splits["test"][0]["text"]
    assert ids.dtype.kind == "i" and ids.shape == (30, tasks.TEXT_LENGTH)
    expected = np.asarray(vectorizer(data.test.inputs["text"].astype(str)))
    np.testing.assert_array_equal(ids, expected)
    assert (ids > 1).any()  # known words, not only padding and out-of-vocabulary ids
    branches = tasks.get("av_text_digits").branches(data)
    assert branches["text"].input_shape == (None, tasks.TEXT_LENGTH)
    assert branches["text"].get_layer("text_embedding").input_dim == vectorizer.vocabulary_size()
