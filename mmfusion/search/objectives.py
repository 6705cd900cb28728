"""What a fusion search trains and selects on: losses, metrics and objectives per head.

Each `mmfusion.tasks` head trains its candidates with one loss and logs
these metrics, and a search selects on one of them (the default first):

| head | loss | metrics | default objective |
|---|---|---|---|
| `"classification"` | sparse categorical cross-entropy | `accuracy` | `val_accuracy` (max) |
| `"multilabel"` | binary cross-entropy | `auc` (macro ROC AUC over labels) | `val_auc` (max) |
| `"regression"` | mean squared error | `mse`, `mae` | `val_mse` (min) |

Multilabel candidates are selected on `keras.metrics.AUC(multi_label=True)`:
the ROC AUC of every label, averaged over labels. It ranks the predicted
probabilities without a threshold, so it moves from the first epoch even for
rare labels (a 0.5-threshold micro-F1 stays at 0 while a rare label's
probabilities are all below 0.5), and every label counts equally. Any
`val_` + metric name of the head (or `val_loss`) is a valid objective, and
`val_presence_` + metric name is the same metric averaged over every
presence pattern (see `mmfusion.search.presence`).
"""

import keras
import keras_tuner

__all__ = ["HEAD_METRICS", "PRESENCE_PREFIX", "check_objective", "head_loss", "head_metrics",
           "metric_name", "objectives"]

PRESENCE_PREFIX = "val_presence_"
_LOSSES = {"classification": "sparse_categorical_crossentropy",
           "multilabel": "binary_crossentropy", "regression": "mean_squared_error"}
HEAD_METRICS = {"classification": ("accuracy",), "multilabel": ("auc",),
                "regression": ("mse", "mae")}
_MAXIMIZED = ("accuracy", "auc")


def head_loss(head):
    """The training loss of a head (a Keras loss name).

    Example:

    >>> head_loss("regression")
    'mean_squared_error'
    """
    _check_head(head)
    return _LOSSES[head]


def head_metrics(head):
    """Fresh metric instances of a head, named as `HEAD_METRICS` says.

    Example:

    >>> [m.name for m in head_metrics("regression")]
    ['mse', 'mae']
    """
    _check_head(head)
    made = {"accuracy": lambda: keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            "auc": lambda: keras.metrics.AUC(multi_label=True, name="auc"),
            "mse": lambda: keras.metrics.MeanSquaredError(name="mse"),
            "mae": lambda: keras.metrics.MeanAbsoluteError(name="mae")}
    return [made[name]() for name in HEAD_METRICS[head]]


def objectives(head):
    """The objective names a search of this head can select on, the default first.

    Example:

    >>> objectives("multilabel")
    ['val_auc', 'val_loss', 'val_presence_auc', 'val_presence_loss']
    """
    _check_head(head)
    plain = [f"val_{m}" for m in HEAD_METRICS[head]] + ["val_loss"]
    return plain + [PRESENCE_PREFIX + metric_name(name) for name in plain]


def metric_name(objective):
    """The metric an objective name selects on (`"val_presence_mse"` -> `"mse"`).

    Example:

    >>> metric_name("val_accuracy"), metric_name("val_presence_loss")
    ('accuracy', 'loss')
    """
    name = objective.name if isinstance(objective, keras_tuner.Objective) else str(objective)
    for prefix in (PRESENCE_PREFIX, "val_"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def check_objective(objective, head):
    """A `keras_tuner.Objective` with its direction for an objective name of `head`.

    Args:
        objective: None (the head's default), a name of `objectives(head)`,
            or a `keras_tuner.Objective` (used as given).
        head: `"classification"`, `"multilabel"` or `"regression"`.

    Returns:
        A `keras_tuner.Objective`: accuracies and AUCs are maximized, losses
        and errors minimized.

    Raises:
        ValueError: a name that is not an objective of `head`.

    Example:

    >>> objective = check_objective(None, "regression")
    >>> objective.name, objective.direction
    ('val_mse', 'min')
    >>> check_objective("val_presence_accuracy", "classification").direction
    'max'
    """
    if isinstance(objective, keras_tuner.Objective):
        return objective
    names = objectives(head)
    objective = names[0] if objective is None else str(objective)
    if objective not in names:
        raise ValueError(f"Objective '{objective}' is not one of a {head} search; "
                         f"choose one of {', '.join(names)}.")
    direction = "max" if metric_name(objective) in _MAXIMIZED else "min"
    return keras_tuner.Objective(objective, direction)


def _check_head(head):
    if head not in _LOSSES:
        raise ValueError(f"Unknown head '{head}'; choose one of {', '.join(_LOSSES)}.")
