import numpy as np
import pytest

from mmfusion.branches import tabular_mlp
from mmfusion.compose import FusionPoint, build_fusion_model
from mmfusion.inspect.plots import (
    _Graph,
    contribution_bars,
    fusion_diagram,
    gate_vs_switch,
    search_progress,
    weight_trajectories,
)


def chain_model():
    branches = {m: tabular_mlp(d, units=(4,), name=m) for m, d in (("a", 3), ("b", 5), ("c", 2))}
    return build_fusion_model(branches, [
        FusionPoint(taps={"a": "vector", "b": "vector"}, fusion="gmu"),
        FusionPoint(taps={"c": "vector"}, fusion="weighted_sum", activation="relu"),
    ], num_outputs=3, units=8, presence=True)


def test_fusion_diagram_draws_taps_fusion_chain_presence_and_output(tmp_path):
    model = chain_model()
    graph = _Graph(model)
    labels = {key: label.split("\n")[0] for key, (label, _) in graph.boxes.items()}
    columns = {labels[key]: column for key, (_, column) in graph.boxes.items()}
    assert columns == {"a": 0, "b": 0, "c": 0, "presence": 0, "a_branch: vector": 1,
                       "b_branch: vector": 1, "c_branch: vector": 1, "fusion_1_gmu": 2,
                       "fusion_2_weighted_sum": 3, "output": 4}
    arrows = {(labels[a], labels[b], dashed) for a, b, dashed in graph.arrows}
    assert arrows == {
        ("a", "a_branch: vector", False), ("b", "b_branch: vector", False),
        ("c", "c_branch: vector", False),
        ("a_branch: vector", "fusion_1_gmu", False), ("b_branch: vector", "fusion_1_gmu", False),
        ("c_branch: vector", "fusion_2_weighted_sum", False),
        ("fusion_1_gmu", "fusion_2_weighted_sum", False),
        ("presence", "fusion_1_gmu", True), ("presence", "fusion_2_weighted_sum", True),
        ("fusion_2_weighted_sum", "output", False),
    }
    fig = fusion_diagram(model, path=tmp_path / "diagram.png")
    assert len([t for t in fig.axes[0].texts if t.get_text()]) == 10
    assert (tmp_path / "diagram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fusion_diagram_links_a_chain_through_the_activation_between_fusion_layers():
    # MFAS chains put an activation after every fusion layer: the next fusion layer reads it,
    # and the diagram must still draw fusion_1 -> fusion_2 (one column further), not a tap.
    branches = {m: tabular_mlp(d, units=(4, 4), name=m) for m, d in (("a", 3), ("b", 5))}
    model = build_fusion_model(branches, [
        FusionPoint(taps={"a": "dense_1", "b": "vector"}, fusion="concat", activation="relu"),
        FusionPoint(taps={"a": "vector", "b": "vector"}, fusion="gmu", activation="tanh"),
    ], num_outputs=3, units=8)
    graph = _Graph(model)
    labels = {key: label.split("\n")[0] for key, (label, _) in graph.boxes.items()}
    columns = {labels[key]: column for key, (_, column) in graph.boxes.items()}
    assert columns["fusion_1_concat"] == 2 and columns["fusion_2_gmu"] == 3
    arrows = {(labels[a], labels[b]) for a, b, _ in graph.arrows}
    assert ("fusion_1_concat", "fusion_2_gmu") in arrows
    assert not any("activation" in label for label in labels.values())


def test_gate_and_contribution_plots_show_the_numbers():
    fig = gate_vs_switch(np.array([0.9, 0.7, 0.2]), np.array([1, 1, 0]))
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["M = 1 (mean 0.80, n = 2)", "M = 0 (mean 0.20, n = 1)"]
    fig = contribution_bars({"visual": 0.5, "textual": 0.99}, full=0.98, metric="accuracy")
    bars = fig.axes[0].patches
    np.testing.assert_allclose([b.get_height() for b in bars], [0.48, -0.01])
    assert bars[0].get_facecolor() != bars[1].get_facecolor()


def test_trajectories_and_search_progress():
    fig = weight_trajectories({"visual": ([0, 1, 2], [0.5, 0.6, 0.8])}, "w", "θ")
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [0.5, 0.6, 0.8])
    fig = search_progress([0.4, 0.3, None, 0.35, 0.1], direction="min")
    best = fig.axes[0].get_lines()[0]
    assert best.get_xdata().tolist() == [0, 1, 3, 4]
    np.testing.assert_allclose(best.get_ydata(), [0.4, 0.3, 0.3, 0.1])
    with pytest.raises(ValueError, match="direction"):
        search_progress([1.0], direction="up")


def test_missing_rate_curves_draw_one_line_per_epoch_darkening_to_the_last():
    from mmfusion.inspect.plots import MAX_CURVES, missing_rate_curves

    rates = [0.0, 0.25, 0.5]
    curves = {epoch: (rates, [0.5 + 0.03 * epoch, 0.4 + 0.02 * epoch, 0.35]) for epoch in range(25)}
    fig = missing_rate_curves(curves, "accuracy")
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == MAX_CURVES
    assert lines[0].get_label() == "epoch 0" and lines[-1].get_label() == "epoch 24 (last)"
    np.testing.assert_allclose(lines[-1].get_ydata(), [1.22, 0.88, 0.35])
    np.testing.assert_allclose(lines[-1].get_xdata(), rates)
    assert lines[-1].get_linewidth() > lines[0].get_linewidth()
    darkness = [sum(line.get_color()[:3]) for line in lines]
    assert darkness == sorted(darkness, reverse=True)  # lighter first
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("test-time missing rate", "accuracy")
