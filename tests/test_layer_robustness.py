"""benchmarks/layer_robustness.py: robustness metrics from presence-pattern accuracies."""

import json

import pytest

from benchmarks import layer_robustness


def _run(seed, every, a, b):
    return {"seed": seed, "test_accuracy": {"all": every, "a only": a, "b only": b}}


LATE = [_run(0, 0.8, 0.6, 0.4), _run(1, 0.8, 0.6, 0.4)]
LAYER = [_run(0, 0.9, 0.7, 0.3), _run(1, 0.9, 0.7, 0.3), _run(2, 0.1, 0.1, 0.1)]


def test_metrics_by_hand():
    # At r = 0.5 both present 0.25, each alone 0.375; at r = 1 each alone 0.5.
    # layer: 0.9, 0.225 + 0.2625 + 0.1125 = 0.6, 0.35 + 0.15 = 0.5
    # late:  0.8, 0.2 + 0.225 + 0.15 = 0.575, 0.5; shifted by 0.1: 0.9, 0.675, 0.6
    got = layer_robustness.layer_metrics(LAYER, LATE, rates=(0.0, 0.5, 1.0))
    assert got["seeds"] == 2  # seed 2 has no late-fusion run
    assert got["accuracy"] == pytest.approx([0.9, 0.6, 0.5])
    assert got["relative"] == pytest.approx(0.5 * (0.9 + 0.6) / 2 + 0.5 * (0.6 + 0.5) / 2)
    assert got["effective"] == pytest.approx((0.6 - 0.675) + (0.5 - 0.6))
    with pytest.raises(ValueError, match="no seed in common"):
        layer_robustness.layer_metrics(LAYER[2:], LATE)


def test_command_writes_the_table(tmp_path):
    late, table = tmp_path / "late.json", tmp_path / "option.json"
    late.write_text(json.dumps({"results": {"late": LATE}}))
    table.write_text(json.dumps({"results": {"a alone": LATE, "late": LATE, "gmu": LAYER}}))
    output = tmp_path / "out.md"
    layer_robustness.main(["--late", str(late), "--tables", f"zeros={table}",
                           "--rates", "0", "0.5", "1", "--output", str(output)])
    rows = output.read_text().splitlines()
    assert rows[-2].startswith("| late fusion | ")
    assert rows[-1] == "| gmu | 0.6500 | -0.1750 | 0.500 |"
