"""Matplotlib figures of what fusion learned and how a search went.

Every function returns a `matplotlib.figure.Figure` (made without pyplot, so
no display or global state is involved: it renders with the Agg canvas) and
also writes it as a PNG when given `path`.
"""

import io

import keras
import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mmfusion.fusion.base import FusionLayer
from mmfusion import keras_internals

__all__ = [
    "attention_figure", "contribution_bars", "fusion_diagram", "gate_vs_switch",
    "missing_rate_curves", "png_bytes", "search_progress", "weight_trajectories",
]


def _finish(fig, path):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=90, format="png")
    return fig


def png_bytes(fig):
    """The PNG encoding of `fig`.

    Example:

    >>> png_bytes(Figure(figsize=(1, 1)))[:4]
    b'\\x89PNG'
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90, format="png")
    return buffer.getvalue()


def gate_vs_switch(gate, switch, path=None):
    """Histograms of a per-example gate value for each value of the hidden switch M.

    Args:
        gate: `(n,)` gate value per example, e.g. the mean over units of the
            GMU gate on `visual` (see `mmfusion.demo.visual_gate`).
        switch: `(n,)` hidden switch M of the synthetic task (1: `visual`
            carries the signal).
        path: optional PNG path.

    Returns:
        A `Figure`.

    Example:

    >>> import numpy as np
    >>> fig = gate_vs_switch(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0]))
    >>> fig.axes[0].get_xlabel()
    'gate value'
    """
    gate, switch = np.asarray(gate), np.asarray(switch)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    bins = np.linspace(0, 1, 31)
    for m in (1, 0):
        values = gate[switch == m]
        ax.hist(values, bins=bins, alpha=0.6,
                label=f"M = {m} (mean {values.mean():.2f}, n = {len(values)})")
    ax.set_xlabel("gate value")
    ax.set_ylabel("examples")
    ax.set_title("gate vs. hidden switch M")
    ax.legend()
    return _finish(fig, path)


def attention_figure(maps, query_labels=None, key_labels=None, title="attention",
                     absent=(), path=None):
    """Heat maps of one example's attention (or affinity) maps, one panel per head.

    Each panel has the keys on the x axis and the queries on the y axis
    (labelled by position, or by `query_labels` / `key_labels`, e.g. tokens
    or region-grid cells); every head shares one colour scale, shown by a
    colour bar. An example with absent modalities says so in its title.

    Args:
        maps: `(T_q, T_k)` or `(heads, T_q, T_k)` array.
        query_labels: optional `T_q` labels of the rows.
        key_labels: optional `T_k` labels of the columns.
        title: the figure title.
        absent: names of the modalities absent in this example.
        path: optional PNG path.

    Returns:
        A `Figure` (its last axes is the colour bar).

    Example:

    >>> import numpy as np
    >>> fig = attention_figure(np.random.rand(2, 3, 4), key_labels=list("abcd"),
    ...                        absent=["text"])
    >>> len(fig.axes), fig.axes[0].get_xlabel(), fig.axes[-1].get_ylabel()
    (3, 'key', 'weight')
    """
    maps = np.asarray(maps, dtype="float32")
    maps = maps[None] if maps.ndim == 2 else maps
    if maps.ndim != 3:
        raise ValueError(f"attention_figure: maps must be (T_q, T_k) or (heads, T_q, T_k); "
                         f"received shape {maps.shape}.")
    heads, t_q, t_k = maps.shape
    # About 0.22 inch per cell: TensorBoard shows the image in a card of
    # about 300 pixels, where a bigger figure's labels shrink to unreadable.
    fig = Figure(figsize=(1.0 + heads * max(2.2, 0.22 * t_k), 1.2 + max(1.6, 0.22 * t_q)),
                 layout="constrained")
    axes = fig.subplots(1, heads, squeeze=False)[0]
    finite = maps[np.isfinite(maps)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    for h, ax in enumerate(axes):
        image = ax.imshow(maps[h], cmap="viridis", vmin=low, vmax=max(high, low + 1e-12),
                          aspect="auto", interpolation="nearest")
        ax.set_xticks(range(t_k), key_labels if key_labels is not None else range(t_k),
                      rotation=90 if key_labels is not None else 0, fontsize=7)
        ax.set_yticks(range(t_q), query_labels if query_labels is not None else range(t_q),
                      fontsize=7)
        ax.set_xlabel("key")
        ax.set_ylabel("query" if h == 0 else "")
        ax.set_title(f"head {h}" if heads > 1 else "", fontsize=9)
    bar = fig.colorbar(image, ax=list(axes), fraction=0.05)
    bar.ax.set_ylabel("weight")
    fig.suptitle(title + (f"  [absent: {', '.join(absent)}]" if len(absent) else ""),
                 fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=90, format="png")
    return fig


def contribution_bars(without, full, metric="metric", path=None):
    """Bars of each modality's contribution: the metric with every modality
    minus the metric with that modality absent.

    Args:
        without: dict modality -> metric with that modality absent.
        full: the metric with every modality.
        metric: the metric's name (axis label).
        path: optional PNG path.

    Returns:
        A `Figure`.

    Example:

    >>> fig = contribution_bars({"visual": 0.5, "textual": 0.97}, full=0.98, metric="accuracy")
    >>> [round(float(p.get_height()), 2) for p in fig.axes[0].patches]
    [0.48, 0.01]
    """
    names = list(without)
    drops = [full - without[n] for n in names]
    fig = Figure(figsize=(max(4.5, 1.5 + 1.2 * len(names)), 4))
    ax = fig.add_subplot()
    bars = ax.bar(names, drops, color=["tab:red" if d > 0 else "tab:gray" for d in drops])
    ax.bar_label(bars, labels=[f"{d:+.3f}" for d in drops])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(f"{metric}: all − without modality")
    ax.set_title(f"modality contribution\n({metric} with all modalities: {full:.3f})")
    return _finish(fig, path)


def weight_trajectories(series, title="", ylabel="", path=None):
    """Lines of values over epochs, one per series (weights, gate means, metrics),
    with the legend beside the plot (it would hide curves inside it).

    Args:
        series: dict label -> `(steps, values)`.
        title: figure title.
        ylabel: y-axis label.
        path: optional PNG path.

    Returns:
        A `Figure`.

    Example:

    >>> fig = weight_trajectories({"visual": ([0, 1], [0.5, 0.7]),
    ...                            "textual": ([0, 1], [0.5, 0.3])}, "modality weights")
    >>> [line.get_label() for line in fig.axes[0].get_lines()]
    ['visual', 'textual']
    """
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for label, (steps, values) in series.items():
        ax.plot(steps, values, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _finish(fig, path)


MAX_CURVES = 10


def missing_rate_curves(curves, metric="metric", path=None):
    """The metric vs. test-time missing rate, one line per logged epoch.

    The lines go from light (first epoch) to dark (last epoch, drawn
    thicker); with more than `MAX_CURVES` epochs, `MAX_CURVES` evenly spaced
    ones are drawn, the first and the last included.

    Args:
        curves: dict epoch -> `(rates, values)`.
        metric: the metric's name (axis label).
        path: optional PNG path.

    Returns:
        A `Figure`.

    Example:

    >>> fig = missing_rate_curves({0: ([0, 0.5], [0.6, 0.5]), 4: ([0, 0.5], [0.9, 0.7])},
    ...                           "accuracy")
    >>> [line.get_label() for line in fig.axes[0].get_lines()], fig.axes[0].get_xlabel()
    (['epoch 0', 'epoch 4 (last)'], 'test-time missing rate')
    """
    epochs = sorted(curves)
    if len(epochs) > MAX_CURVES:
        epochs = [epochs[round(i)] for i in np.linspace(0, len(epochs) - 1, MAX_CURVES)]
    shades = np.linspace(0.35, 1.0, len(epochs))
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for epoch, shade in zip(epochs, shades):
        rates, values = curves[epoch]
        last = epoch == epochs[-1]
        ax.plot(rates, values, marker="o", markersize=4 if last else 3, linewidth=2.2 if last else 1,
                color=matplotlib.colormaps["Blues"](shade),
                label=f"epoch {epoch}" + (" (last)" if last else ""))
    ax.set_xlabel("test-time missing rate")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs. test-time missing rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _finish(fig, path)


def search_progress(scores, direction="max", path=None):
    """Each trial's score and the best score so far, by trial.

    Args:
        scores: list of trial scores in trial order (None for a failed trial).
        direction: `"max"` or `"min"`: which scores are better.
        path: optional PNG path.

    Returns:
        A `Figure`.

    Example:

    >>> fig = search_progress([0.5, None, 0.7, 0.6])
    >>> fig.axes[0].get_lines()[0].get_ydata().tolist()
    [0.5, 0.7, 0.7]
    """
    if direction not in ("max", "min"):
        raise ValueError(f"search_progress: direction must be 'max' or 'min'; received {direction!r}.")
    trials = [i for i, s in enumerate(scores) if s is not None]
    values = np.array([scores[i] for i in trials], dtype=float)
    best = np.maximum.accumulate(values) if direction == "max" else np.minimum.accumulate(values)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.step(trials, best, where="post", color="tab:red", label="best so far")
    ax.scatter(trials, values, s=15, label="trial")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("score")
    ax.set_title(f"search progress ({direction}imize)")
    ax.legend()
    return _finish(fig, path)


# ----------------------------------------------------------------- diagram
def _tap_label(tensor):
    op, index, _ = keras_internals.producer(tensor)
    name = op.name
    if isinstance(op, keras.Model):
        keys = [p for p, _ in keras.tree.flatten_with_path(op.output)]
        name += ": " + "/".join(str(k) for k in keys[index])
    return f"{name}\n{tuple(tensor.shape[1:])}"


class _Graph:
    """Boxes (key -> label, column) and arrows of a fusion diagram."""

    def __init__(self, model):
        self.fusion = [l for l in model.layers if isinstance(l, FusionLayer)]
        self._fusion_ids = {id(l) for l in self.fusion}
        self.boxes, self.arrows, self._depth = {}, [], {}
        for name in [t.name for t in model.inputs]:
            self.boxes[name] = (name, 0)
        for layer in self.fusion:
            args, kwargs = keras_internals.call_arguments(model, layer)
            for tensor in keras_internals.keras_tensors(args):
                self._link(self._tap(tensor), layer.name, dashed=False)
            for tensor in keras_internals.keras_tensors(kwargs):
                for source in self._sources(tensor):
                    self._link(source, layer.name, dashed=True)
            self.boxes[layer.name] = (f"{layer.name}\n{type(layer).__name__}", 2 + self.depth(layer))
        column = 1 + max(c for _, c in self.boxes.values())
        fusion_names = {l.name for l in self.fusion}
        for tensor in model.outputs:
            name = keras_internals.producer(tensor)[0].name
            key = f"output:{name}"
            self.boxes[key] = (f"output\n{name}", column)
            for source in sorted(self._sources(tensor) & fusion_names):
                self._link(source, key, dashed=False)

    def _link(self, a, b, dashed):
        if (a, b, dashed) not in self.arrows:
            self.arrows.append((a, b, dashed))

    def _sources(self, tensor, data_only=False):
        """Names of the model inputs and fusion layers `tensor` is computed
        from; with `data_only`, through positional arguments only (a tap's
        modality data, not the `presence=` that zeroes its absent rows)."""
        op, _, arguments = keras_internals.producer(tensor)
        if id(op) in self._fusion_ids or arguments is None:
            return {op.name}
        arguments = arguments[0] if data_only else arguments
        return set().union(*(self._sources(t, data_only)
                             for t in keras_internals.keras_tensors(arguments)))

    def _tap(self, tensor):
        """The box a fusion input comes from (a tap box linked to its sources)."""
        op = keras_internals.producer(tensor)[0]
        if id(op) in self._fusion_ids or isinstance(op, keras.layers.InputLayer):
            return op.name
        sources = self._sources(tensor, data_only=True)
        if len(sources) == 1 and sources <= {l.name for l in self.fusion}:
            return sources.pop()  # e.g. the activation between two fusion layers of a chain
        key = f"tap:{id(tensor)}"
        self.boxes[key] = (_tap_label(tensor), 1)
        for source in sorted(sources):
            self._link(source, key, dashed=False)
        return key

    def depth(self, layer):
        if layer.name not in self._depth:
            feeding = [l for l in self.fusion
                       if any(a == l.name and b == layer.name for a, b, _ in self.arrows)]
            self._depth[layer.name] = 1 + max((self.depth(l) for l in feeding), default=-1)
        return self._depth[layer.name]


def fusion_diagram(model, path=None):
    """A diagram of a fused functional model: its inputs, the taps (branch
    outputs) each fusion layer takes, its fusion layers, and its output.

    Boxes are drawn in columns (inputs, taps, fusion layers by depth, output);
    solid arrows carry modality tensors, dashed ones the `presence` mask.
    Only the fusion layers of `model` itself are drawn (a nested model
    appears as the source of its taps).

    Args:
        model: a functional `keras.Model`.
        path: optional PNG path.

    Returns:
        A `Figure`.

    Example:

    >>> from mmfusion.demo import build_synthetic_model
    >>> fig = fusion_diagram(build_synthetic_model("gmu"))
    >>> sorted(t.get_text().split("\\n")[0] for t in fig.axes[0].texts if t.get_text())
    ['gmu_fusion', 'output', 'textual', 'visual']
    """
    graph = _Graph(model)
    columns = {}
    for key, (_, column) in graph.boxes.items():
        columns.setdefault(column, []).append(key)
    rows = max(len(keys) for keys in columns.values())
    order = sorted(columns)
    position = {}
    for x, column in enumerate(order):
        keys = columns[column]
        for i, key in enumerate(keys):
            position[key] = (x, (rows - 1) / 2 - (len(keys) - 1) / 2 + i)
    fig = Figure(figsize=(2.6 * len(order) + 1, 1.1 * rows + 1.5))
    ax = fig.add_subplot()
    colors = {0: "#cfe2f3", 1: "#fff2cc"}
    texts = {}
    for key, (label, column) in graph.boxes.items():
        color = colors.get(column, "#eeeeee" if key.startswith("output:") else "#d9ead3")
        texts[key] = ax.text(*position[key], label, ha="center", va="center", fontsize=8,
                             bbox=dict(boxstyle="round", facecolor=color, edgecolor="gray"))
    for a, b, dashed in graph.arrows:
        ax.annotate("", xy=position[b], xytext=position[a], arrowprops=dict(
            arrowstyle="-|>", mutation_scale=12, color="gray", linestyle="--" if dashed else "-",
            patchA=texts[a].get_bbox_patch(), patchB=texts[b].get_bbox_patch(),
            shrinkA=2, shrinkB=2))
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_ylim(-0.8, rows - 0.2)
    ax.invert_yaxis()
    ax.axis("off")
    ax.set_title(f"fusion architecture of '{model.name}'")
    return _finish(fig, path)
