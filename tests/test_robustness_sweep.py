"""mmfusion.robustness: sweep numbers against a brute-force loop (one row at a
time), the masks' statistics, MultiBench's metrics against hand-computed
values, tables, saving and the plot."""

import keras
import numpy as np
import pytest

from mmfusion.branches import tabular_mlp
from mmfusion.compose import build_fusion_model
from mmfusion.robustness import (SweepResult, effective_robustness, missing_rate_sweep,
                                 presence_patterns, relative_robustness, sample_presence,
                                 pattern_probabilities, expected_scores)

RNG = np.random.default_rng(3)
N_TRAIN, N_TEST = 96, 40
Y = RNG.integers(0, 3, N_TRAIN + N_TEST)
X = {"a": (Y[:, None] + RNG.normal(size=(len(Y), 3))).astype("float32"),
     "b": (Y[:, None] * 0.5 + RNG.normal(size=(len(Y), 2))).astype("float32"),
     "c": RNG.normal(size=(len(Y), 2)).astype("float32")}
DATA = {"train": ({m: v[:N_TRAIN] for m, v in X.items()}, Y[:N_TRAIN]),
        "test": ({m: v[N_TRAIN:] for m, v in X.items()}, Y[N_TRAIN:])}
FIT = {"epochs": 2, "batch_size": 16, "shuffle": False, "verbose": 0}


def builder(order=("c", "a", "b"), presence=True):
    """Branch order c, a, b: the presence columns are not in sorted order."""
    def build(rate):
        dims = {"a": 3, "b": 2, "c": 2}
        model = build_fusion_model({m: tabular_mlp(dims[m], units=(6,), name=m) for m in order},
                                   "gmu", num_outputs=3, units=8, presence=presence,
                                   modality_dropout=rate)
        model.compile("adam", "sparse_categorical_crossentropy")
        return model
    return build


def by_hand(model, x, y, mask, order):
    """Accuracy predicting one row at a time, absent inputs zeroed by hand."""
    correct = 0
    for i in range(len(y)):
        row = {m: (x[m][i:i + 1] if mask[i, j] else np.zeros_like(x[m][i:i + 1]))
               for j, m in enumerate(order)}
        row["presence"] = mask[i:i + 1]
        correct += int(np.argmax(model(row, training=False)[0]) == y[i])
    return correct / len(y)


def test_sweep_equals_a_brute_force_loop():
    order = ["c", "a", "b"]
    result = missing_rate_sweep(builder(), DATA, train_rates=[0.0, 0.5],
                                test_rates=[0.0, 0.3, 0.6], fit_kwargs=FIT, seed=5)
    assert result.modalities == order and len(result.patterns) == 7
    x_test, y_test = DATA["test"]
    x_train, y_train = DATA["train"]
    for i, rate in enumerate([0.0, 0.5]):
        keras.utils.set_random_seed(5)
        model = builder()(rate)
        mask = result.train_masks[rate]
        feed = {m: np.where(mask[:, j:j + 1] > 0, x_train[m], 0.0) for j, m in enumerate(order)}
        model.fit(dict(feed, presence=mask), y_train, **FIT)
        for j, test_rate in enumerate([0.0, 0.3, 0.6]):
            expected = by_hand(model, x_test, y_test, result.test_masks[test_rate], order)
            assert result.by_rate[i, j] == pytest.approx(expected, abs=1e-9)
        for k, pattern in enumerate(result.patterns):
            mask = np.tile(np.float32([[m in pattern for m in order]]), (N_TEST, 1))
            expected = by_hand(model, x_test, y_test, mask, order)
            assert result.by_pattern[i, k] == pytest.approx(expected, abs=1e-9)
    assert not np.allclose(result.by_pattern[0], result.by_pattern[0, 0])  # patterns differ


def test_a_trained_model_and_presence_given_by_dict():
    keras.utils.set_random_seed(0)
    model = builder(presence="dict")(0.0)
    model.fit(dict(DATA["train"][0], presence={m: np.ones(N_TRAIN) for m in "abc"}),
              DATA["train"][1], **FIT)
    result = missing_rate_sweep(model, DATA, test_rates=[0.0, 0.5],
                                patterns=[("a",), ("b", "c")], seed=1)
    assert result.train_rates == [None] and result.patterns == [("a",), ("b", "c")]
    x_test, y_test = DATA["test"]
    for k, pattern in enumerate(result.patterns):
        mask = np.float32([[m in pattern for m in result.modalities]] * N_TEST)
        predictions = model.predict(dict(x_test, presence={m: mask[:, j] for j, m in
                                                           enumerate(result.modalities)}),
                                    verbose=0)
        assert result.by_pattern[0, k] == pytest.approx(np.mean(predictions.argmax(1) == y_test))
    with pytest.raises(ValueError, match="train_rates need a builder"):
        missing_rate_sweep(model, DATA, train_rates=[0.0])


def test_masks_rates_rescue_and_existing_absence():
    rng = np.random.default_rng(0)
    assert np.all(sample_presence(0.0, 50, 3, rng) == 1)
    assert np.all(sample_presence(1.0, 50, 3, rng).sum(axis=1) == 1)
    mask = sample_presence(0.3, 20000, 3, rng)
    # P(absent) = r - r^N / N: an all-absent row keeps one of its N modalities
    np.testing.assert_allclose(1 - mask.mean(axis=0), 0.3 - 0.3 ** 3 / 3, atol=0.01)
    base = np.ones((1000, 3), "float32")
    base[:, 2] = 0
    mask = sample_presence(1.0, 1000, 3, rng, base)  # one of the two present ones kept
    assert np.all(mask[:, 2] == 0) and np.all(mask.sum(axis=1) == 1)
    assert abs(mask[:, 0].mean() - 0.5) < 0.05
    np.testing.assert_array_equal(sample_presence(0.4, 30, 2, np.random.default_rng(7)),
                                  sample_presence(0.4, 30, 2, np.random.default_rng(7)))


def test_pattern_probabilities_by_hand_and_against_sampled_masks():
    # N = 3, r = 0.4: all present 0.6^3; a pair 0.6^2 * 0.4; one alone 0.6 * 0.4^2 + 0.4^3 / 3
    by_hand = {3: 0.216, 2: 0.144, 1: 0.096 + 0.064 / 3}
    got = pattern_probabilities(0.4, "abc")
    assert got == pytest.approx({p: by_hand[len(p)] for p in presence_patterns("abc")})
    rng = np.random.default_rng(0)
    for n in (2, 3, 4):
        names = "abcd"[:n]
        for rate in (0.3, 0.75, 1.0):
            mask = sample_presence(rate, 100_000, n, rng).astype(bool)
            for pattern, probability in pattern_probabilities(rate, names).items():
                wanted = np.array([m in pattern for m in names])
                frequency = np.mean(np.all(mask == wanted, axis=1))
                assert frequency == pytest.approx(probability, abs=0.005), (n, rate, pattern)


def test_expected_scores_match_a_brute_force_sweep():
    # A "model" right or wrong on each row under each pattern; the sweep's mean accuracy over
    # sampled masks converges to the expectation over patterns.
    rng = np.random.default_rng(1)
    names, rows = "abc", 60_000
    patterns = presence_patterns(names)
    correct = rng.random((rows, len(patterns))) < np.linspace(0.9, 0.3, len(patterns))
    pattern_scores = {p: correct[:, k].mean() for k, p in enumerate(patterns)}
    rates = [0.0, 0.25, 0.5, 0.75]
    expected = expected_scores(pattern_scores, names, rates)
    index = {tuple(bool(m in p) for m in names): k for k, p in enumerate(patterns)}
    for rate, value in zip(rates, expected):
        mask = sample_presence(rate, rows, 3, rng).astype(bool)
        k = np.array([index[tuple(row)] for row in mask])
        assert correct[np.arange(rows), k].mean() == pytest.approx(value, abs=0.006), rate
    assert expected[0] == pytest.approx(pattern_scores[("a", "b", "c")])
    with pytest.raises(ValueError, match=r"no score for the presence patterns \[\('c',\)\]"):
        expected_scores({p: 0.5 for p in patterns[:-1]}, names, rates)


def test_multibench_metrics_by_hand():
    levels = [0.0, 0.1, 0.2, 0.3]
    scores, late = [0.80, 0.70, 0.65, 0.40], [0.75, 0.60, 0.50, 0.40]
    # MultiBench: sum_i 0.1 * (s_i + s_i+1) / 2 = 0.1 * (0.75 + 0.675 + 0.525)
    assert relative_robustness(levels, scores) == pytest.approx(0.195)
    # late shifted up by s_0 - l_0 = 0.05: (0.80, 0.65, 0.55, 0.45); differences 0, .05, .1, -.05
    assert effective_robustness(scores, late) == pytest.approx(0.10)
    assert effective_robustness(late, late) == 0.0
    assert relative_robustness([0.0, 0.5, 1.0], [1.0, 1.0, 0.0]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="rates must increase"):
        relative_robustness([0.2, 0.1], [0.5, 0.5])
    with pytest.raises(ValueError, match="same length"):
        effective_robustness([0.5, 0.4], [0.5, 0.4, 0.3])
    assert presence_patterns("abc") == [("a", "b", "c"), ("a", "b"), ("a", "c"), ("b", "c"),
                                        ("a",), ("b",), ("c",)]


def small_result(by_rate):
    return SweepResult(["a", "b"], [0.0, 0.5], [0.0, 0.5, 1.0], [("a", "b"), ("a",), ("b",)],
                       np.array(by_rate), np.array([[0.9, 0.6, 0.5], [0.8, 0.7, 0.6]]))


def test_result_metrics_table_save_and_plot(tmp_path):
    result = small_result([[0.9, 0.7, 0.5], [0.8, 0.75, 0.7]])
    late = small_result([[0.85, 0.6, 0.4], [0.8, 0.6, 0.4]])
    assert result.relative_robustness() == pytest.approx({0.0: 0.7, 0.5: 0.75})
    # rate 0: 0 + (0.7 - 0.65) + (0.5 - 0.45); rate 0.5: 0 + 0.15 + 0.3
    assert result.effective_robustness(late) == pytest.approx({0.0: 0.1, 0.5: 0.45})
    table = result.table(late)
    assert "| 0.5 | 0.800 | 0.750 | 0.700 | 0.7500 | +0.4500 |" in table
    assert "| train \\ present | a + b | a | b |" in table
    path = tmp_path / "sweep.json"
    result.save(path)
    loaded = SweepResult.load(path)
    np.testing.assert_array_equal(loaded.by_rate, result.by_rate)
    assert loaded.patterns == result.patterns and loaded.train_rates == [0.0, 0.5]
    fig = result.plot(path=tmp_path / "sweep.png", title="gmu")
    assert fig.get_suptitle() == "gmu"
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    curves, bars = fig.axes
    assert curves.get_xlabel() == "test-time missing rate" and curves.get_ylabel() == "accuracy"
    assert [t.get_text() for t in bars.get_xticklabels()] == ["a+b", "a", "b"]
    assert [t.get_text() for t in curves.get_legend().get_texts()] == [
        "trained at missing rate 0", "trained at missing rate 0.5"]
    with pytest.raises(ValueError, match="test rates"):
        result.effective_robustness(SweepResult(["a", "b"], [0.0], [0.0, 1.0], [],
                                                np.zeros((1, 2)), np.zeros((1, 0))))


def test_clear_errors():
    plain = build_fusion_model({"a": tabular_mlp(3, name="a")}, None)
    with pytest.raises(ValueError, match="has no 'presence' input"):
        missing_rate_sweep(plain, DATA)
    with pytest.raises(ValueError, match="rates in \\[0, 1\\]"):
        missing_rate_sweep(builder(), DATA, train_rates=[1.5])
    with pytest.raises(ValueError, match="patterns must be non-empty tuples"):
        missing_rate_sweep(builder(), DATA, train_rates=[0.0], patterns=[("d",)],
                           fit_kwargs=FIT)
