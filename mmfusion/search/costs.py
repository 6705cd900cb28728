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

__all__ = ["LATENCY_BATCH", "LATENCY_REPEATS", "measure_latency", "pareto_front"]

LATENCY_BATCH = 64
LATENCY_REPEATS = 5


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
