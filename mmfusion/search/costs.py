"""What a searched fusion network costs, and the trade-off of cost and objective.

Each trial of a `FusionTuner` with `measure_costs=True` (as `run_search`
runs it) records two costs of its fusion network on the cached features
(the feature stand-in branches have no weights, so this is the fusion
layers and the head):

- `params`: its parameter count (`model.count_params()`);
- `latency_ms`: the median over `LATENCY_REPEATS` (5) timed
  `model.predict_on_batch` calls on one batch of `LATENCY_BATCH` (64)
  training rows, after one untimed call (tracing), in milliseconds per batch.

`pareto_front` keeps the trials no other trial dominates (at least as good
on the objective and at least as cheap, better on one of them).
"""

import statistics
import time

import keras
import numpy as np
from matplotlib.figure import Figure

from mmfusion.files import atomic_write

__all__ = ["LATENCY_BATCH", "LATENCY_REPEATS", "measure_latency", "pareto_front", "plot_pareto"]

LATENCY_BATCH = 64
LATENCY_REPEATS = 5
COSTS = {"params": "parameters of the fusion network",  # the axis labels of `plot_pareto`
         "latency_ms": f"ms per batch of {LATENCY_BATCH}"}


def measure_latency(model, x, repeats=LATENCY_REPEATS):
    """Median milliseconds of `model.predict_on_batch(x)` over `repeats` calls
    (after one untimed call).

    Args:
        model: a Keras model.
        x: one batch of its inputs.
        repeats: timed calls.

    Returns:
        A float, milliseconds per batch.

    Example:

    >>> inputs = keras.Input((3,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> measure_latency(model, np.ones((64, 3), "float32")) > 0
    True
    """
    model.predict_on_batch(x)
    seconds = []
    for _ in range(int(repeats)):
        started = time.perf_counter()
        model.predict_on_batch(x)
        seconds.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(seconds)


def pareto_front(scores, costs, direction="max", decimals=6):
    """Indices of the points no other point dominates, by increasing cost.

    Point `j` dominates point `i` when its score is at least as good (higher
    for `direction="max"`, lower for `"min"`), its cost at most as high, and
    one of them strictly better. Equal points do not dominate each other
    (both stay). Scores are compared rounded to `decimals` decimals: Keras
    metrics are float32, and means of them that are equal in exact
    arithmetic (e.g. over presence patterns) can differ in the last bits.

    Args:
        scores: the objective values.
        costs: the costs (parameters, milliseconds), lower is better.
        direction: `"max"` or `"min"`, the objective's direction.
        decimals: the scores' precision (None: exact comparisons).

    Returns:
        A list of indices into `scores`, sorted by cost (then by score, best first).

    Example:

    >>> pareto_front([0.9, 0.8, 0.95, 0.7], [100, 50, 400, 60])
    [1, 0, 2]
    """
    scores = np.asarray(scores, "float64") * (1.0 if direction == "max" else -1.0)
    if decimals is not None:
        scores = np.round(scores, decimals)
    costs = np.asarray(costs, "float64")
    if scores.shape != costs.shape or scores.ndim != 1:
        raise ValueError(f"pareto_front: scores and costs must be two 1-D sequences of the same "
                         f"length; received shapes {scores.shape} and {costs.shape}.")
    order = np.lexsort((-scores, costs))  # by cost, best score first among equal costs
    front, best = [], -np.inf
    for i in order:
        if scores[i] > best or (front and scores[i] == scores[front[-1]]
                                and costs[i] == costs[front[-1]]):
            front.append(int(i))
            best = max(best, scores[i])
    return front


def plot_pareto(trials, objective, direction="max", chosen=None, path=None, title=None):
    """A figure of a search's trade-offs: the objective of every trial
    against its parameters and against its latency (one panel each), the
    Pareto front (`pareto_front`) joined by a line, and the exported trial
    circled; a PNG at `path` when given (written atomically).

    Args:
        trials: dicts with the objective's value, `params`, `latency_ms` and
            `trial_id` (the `trials` of a `run_search` result).
        objective: the objective's name (e.g. `"val_accuracy"`).
        direction: `"max"` or `"min"`.
        chosen: the exported trial's id, circled (optional).
        path: optional PNG path.
        title: optional figure title.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> trials = [{"trial_id": str(i), "val_accuracy": a, "params": p, "latency_ms": t}
    ...           for i, (a, p, t) in enumerate([(0.8, 900, 1.0), (0.9, 4000, 1.5),
    ...                                          (0.85, 6000, 0.9)])]
    >>> figure = plot_pareto(trials, "val_accuracy", chosen="1")
    >>> [axis.get_xlabel() for axis in figure.axes]
    ['parameters of the fusion network', 'ms per batch of 64']
    """
    scores = [t[objective] for t in trials]
    fig = Figure(figsize=(10, 4))
    for axis, cost in zip(fig.subplots(1, 2), COSTS):
        costs = [t[cost] for t in trials]
        front = pareto_front(scores, costs, direction)
        axis.scatter(costs, scores, s=18, color="0.6", label="trials")
        axis.plot([costs[i] for i in front], [scores[i] for i in front], "o-", color="C0",
                  label="Pareto front")
        picked = [i for i, t in enumerate(trials) if t["trial_id"] == chosen]
        if picked:
            axis.scatter([costs[picked[0]]], [scores[picked[0]]], s=140, facecolors="none",
                         edgecolors="C3", linewidths=2, label="exported")
        axis.set(xlabel=COSTS[cost], ylabel=objective, title=f"{objective} vs {cost}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        atomic_write(str(path), lambda tmp: fig.savefig(tmp, dpi=90, format="png"), suffix=".png")
    return fig
