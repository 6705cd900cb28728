"""benchmarks/robustness_sweep.py: seeds, paired differences against hand-computed
values, resumable raw JSON, the table and the plot."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import robustness_sweep  # noqa: E402


def run(seed, by_rate):
    return {"seed": seed, "by_rate": [by_rate]}


def test_paired_difference_is_seed_by_seed():
    zeros = [run(0, [0.50, 0.40]), run(1, [0.60, 0.44]), run(2, [0.70, 0.48])]
    option = [run(2, [0.72, 0.55]), run(0, [0.52, 0.45]), run(1, [0.62, 0.52])]
    mean, half = robustness_sweep.paired_difference(option, zeros)
    # Differences 0.02, 0.02, 0.02 (no spread) and 0.05, 0.08, 0.07.
    np.testing.assert_allclose(mean, [[0.02, 0.2 / 3]], atol=1e-12)
    assert half[0, 0] == pytest.approx(0.0, abs=1e-12)
    spread = np.std([0.05, 0.08, 0.07], ddof=1) / np.sqrt(3) * 4.303
    assert half[0, 1] == pytest.approx(spread, rel=1e-9)


@pytest.mark.slow
def test_sweep_over_seeds_resumes_and_writes_table_and_plot(tmp_path):
    output = tmp_path / "sweep.json"
    argv = ["--task", "synthetic", "--limit", "300", "--epochs", "1", "--seeds", "0", "1",
            "--options", "zeros", "learned", "unimodal", "pretrained", "--test-rates", "0", "0.5", "--output", str(output)]
    report = robustness_sweep.main(argv)
    names = ["late (weighted)", "gmu, absent=zeros", "gmu, absent=learned",
             "gmu, zeros + unimodal losses",
             "gmu, pretrained frozen branches + unimodal fallback"]
    assert list(report["results"]) == names
    assert all([r["seed"] for r in report["results"][n]] == [0, 1] for n in names)
    # Late fusion is its own reference: effective robustness 0 for every seed.
    assert all(abs(r["effective_robustness"][0]) < 1e-12 for r in report["results"][names[0]])
    assert json.loads(output.read_text())["results"] == report["results"]
    table = output.with_suffix(".md").read_text()
    values = [r["by_rate"][0][1] for r in report["results"]["gmu, absent=learned"]]
    mean, half = robustness_sweep.confidence_interval(values)
    assert f"| gmu, absent=learned | 2 | 0 | " in table and f"{mean:.3f} ± {half:.3f}" in table
    assert "| option minus zeros |" in table
    assert output.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    again = robustness_sweep.main(argv)  # nothing left to train: same results
    assert again["results"] == report["results"]
