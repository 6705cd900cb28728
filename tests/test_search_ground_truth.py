"""benchmarks/search_ground_truth.py: the summary of a search against a
multi-seed ground truth, checked on a made-up table by hand."""

import numpy as np
import pytest

from benchmarks import search_ground_truth as gt


def made_up_tables():
    """Two seeds of 20 architectures `a00`..`a19`: validation `i / 100` and
    test `0.5 + i / 200`, except that seed 1 scores `a03` at 0.30 (test 0.6)."""
    tables = {}
    for seed in ("0", "1"):
        tables[seed] = {f"a{i:02d}": {"validation": i / 100, "test": 0.5 + i / 200}
                        for i in range(20)}
    tables["1"]["a03"] = {"validation": 0.30, "test": 0.6}
    return tables


def test_search_seeds_take_turns_over_the_ground_truth_seeds():
    assert [gt.draw_seed(s, ["0", "1", "2"]) for s in range(7)] == list("0120120")


def test_a_noisy_score_picks_an_architecture_judged_by_its_mean():
    # Means: a03 is (0.03 + 0.30) / 2 = 0.165, the others i / 100. Top 5 %:
    # quantile 0.95 of the 20 means = 0.18 + 0.05 * 0.01 = 0.1805: only a19.
    tables, keys = made_up_tables(), ["a03", "a10", "a19", "a01"]
    noisy = gt.summarize(tables, keys, search_seed=1, epochs=3)  # sees seed 1
    assert noisy["draw_seed"] == "1" and noisy["pick"] == "a03"
    assert noisy["pick_observed"] == pytest.approx(0.30)
    assert noisy["pick_validation"] == pytest.approx(0.165)
    assert noisy["pick_test"] == pytest.approx((0.515 + 0.6) / 2)
    assert noisy["pick_percentile"] == pytest.approx(80.0)  # 16 of 20 means below 0.165
    assert noisy["reached"] and noisy["trials_to_top5"] == 3
    assert noisy["candidate_epochs_to_top5"] == 9
    clean = gt.summarize(tables, keys, search_seed=2, epochs=3)  # sees seed 0
    assert clean["pick"] == "a19" and clean["pick_percentile"] == pytest.approx(95.0)
    assert clean["pick_test"] == pytest.approx(0.595)


def test_a_search_that_never_reaches_the_top_counts_as_budget_plus_one():
    missed = gt.summarize(made_up_tables(), ["a03", "a10"], search_seed=0, epochs=3)
    assert not missed["reached"] and missed["trials_to_top5"] == 3
    assert missed["candidate_epochs_to_top5"] == 9


def test_noise_of_the_made_up_ground_truth():
    noise = gt.noise(made_up_tables())
    # One architecture differs: std of (0.03, 0.30) = 0.27 / sqrt(2), over 20.
    assert noise["validation_std_over_seeds"] == pytest.approx(0.27 / np.sqrt(2) / 20)
    # Seed 1 moves a03 from rank 3 to 19 and a04..a19 down by one:
    # Spearman = 1 - 6 (16^2 + 16) / (20 (20^2 - 1)).
    assert noise["seed_rank_correlation"][0] == pytest.approx(1 - 6 * 272 / 7980)
    assert noise["top5_threshold"] == pytest.approx(0.1805)


def test_median_interval_and_goal():
    # n = 10: k = 2 (P(Binomial(10, 1/2) <= 1) = 0.011 <= 0.025 < P(<= 2)).
    assert gt.median_interval([5, 1, 4, 2, 3, 9, 7, 8, 6, 10]) == (5.5, 2.0, 9.0)
    runs = [{"reached": t <= 10, "trials_to_top5": t, "pick_test": 0.5 + t / 100}
            for t in (2, 3, 3, 4, 11)]
    cell = gt.aggregate(runs)
    assert cell["reached"] == 4 and cell["trials_to_top5_median"][0] == 3
    assert cell["trials_to_top5"][0] == pytest.approx(4.6)
    base = {"trials_to_top5_median": (8, 0, 0), "pick_test": (0.50, 0.01)}
    fast = {"trials_to_top5_median": (4, 0, 0), "pick_test": (0.53, 0.01)}
    slow = {"trials_to_top5_median": (5, 0, 0), "pick_test": (0.60, 0.01)}
    verdict = gt.goal({"10/random": base, "10/mfas": fast, "10/bayesian": slow}, [10],
                      ["mfas", "random", "bayesian"])["10"]
    assert verdict == {"oracle": "mfas", "half_the_trials": True,
                       "test_interval_above_random": True, "met": True}
    fast["pick_test"] = (0.515, 0.01)  # 0.505 is not above 0.51
    assert not gt.goal({"10/random": base, "10/mfas": fast}, [10], ["mfas", "random"])["10"]["met"]
