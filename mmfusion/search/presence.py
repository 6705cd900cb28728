"""A search objective averaged over presence patterns (missing modalities).

A search selecting on `val_presence_METRIC` (e.g. `val_presence_accuracy`,
see `mmfusion.search.objectives`) builds every candidate with a presence
input and a `ModalityDropout` (`build_fusion_model(..., presence=True,
modality_dropout=rate)`), and scores it after every epoch on the validation
data under each presence pattern: each non-empty subset of the modalities
(2^N - 1, `mmfusion.robustness.presence_patterns`), the absent modalities
marked absent in the `presence` input (the model zeroes their inputs). The
mean over the patterns goes into the epoch logs as `val_presence_METRIC`
(`PresenceAveraged`), where KerasTuner, its checkpoints and any later
callback see it.

Example:

>>> import numpy as np
>>> x = {"a": np.ones((2, 3)), "b": np.ones((2, 1))}
>>> with_presence(x, ["a", "b"], ("b",))["presence"].tolist()
[[0.0, 1.0], [0.0, 1.0]]
"""

import keras
import numpy as np

from mmfusion.compose import PRESENCE
from mmfusion.robustness import presence_patterns
from mmfusion.search.joint import candidate_key, split_candidate_key
from mmfusion.search.objectives import PRESENCE_PREFIX

__all__ = ["PresenceAveraged", "presence_averaged", "with_presence"]


def with_presence(x, modalities, pattern=None):
    """`x` (a dict input name -> array) with a `presence` matrix: 1 for the
    modalities of `pattern` (default: all) in every row, columns in the
    order of `modalities`.

    Example:

    >>> with_presence({"a": np.ones((1, 2))}, ["a"])["presence"].tolist()
    [[1.0]]
    """
    rows = len(np.asarray(x[modalities[0]]))
    present = modalities if pattern is None else pattern
    column = np.array([[m in present for m in modalities]], "float32")
    return {**{k: v for k, v in x.items() if k != PRESENCE},
            PRESENCE: np.repeat(column, rows, axis=0)}


def presence_averaged(model, x, y, modalities, batch_size=256):
    """Every compiled metric (and the loss) of `model` on `(x, y)`, averaged
    over the presence patterns of `modalities`.

    Args:
        model: a compiled model with a `presence` matrix input whose columns
            follow `modalities` (`build_fusion_model(..., presence=True)`).
        x: dict input name -> array (without `presence`, or it is replaced).
        y: the targets.
        modalities: the presence columns' modalities, in order.
        batch_size: evaluation batch size.

    Returns:
        A dict metric name -> the mean over the 2^N - 1 patterns.

    Example:

    >>> from mmfusion.branches import tabular_mlp
    >>> from mmfusion.compose import build_fusion_model
    >>> model = build_fusion_model({m: tabular_mlp(2, units=(4,), name=m) for m in "ab"},
    ...                            "concat", presence=True, units=4)
    >>> model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    >>> x = {m: np.ones((8, 2), "float32") for m in "ab"}
    >>> sorted(presence_averaged(model, x, np.zeros(8, "int32"), ["a", "b"]))
    ['accuracy', 'loss']
    """
    scores = [model.evaluate(with_presence(x, modalities, pattern), y, batch_size=batch_size,
                             verbose=0, return_dict=True)
              for pattern in presence_patterns(modalities)]
    return {name: float(np.mean([s[name] for s in scores])) for name in scores[0]}


class PresenceAveraged(keras.callbacks.Callback):
    """Writes `val_presence_METRIC` (`presence_averaged` on the validation
    data) into the logs at the end of every epoch. Put it before the
    callbacks that read it (KerasTuner appends its checkpoint callback
    after the trial's callbacks). On a model of candidates trained together
    (`mmfusion.search.joint.train_jointly`), each candidate's mean is logged
    under its own name (`val_candidate_0_presence_accuracy`, ...).

    Args:
        x: validation inputs, dict input name -> array.
        y: validation targets.
        modalities: the presence columns' modalities, in order.
        batch_size: evaluation batch size.

    Example:

    >>> callback = PresenceAveraged({"a": np.ones((4, 2))}, np.zeros(4), ["a"])
    >>> callback.modalities
    ['a']
    """

    def __init__(self, x, y, modalities, batch_size=256):
        super().__init__()
        self.x, self.y = x, y
        self.modalities = list(modalities)
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        # Candidates trained together (`mmfusion.search.joint`): one named
        # output each, every one scored and logged under its own name.
        outputs = list(self.model.output) if isinstance(self.model.output, dict) else []
        y = {output: self.y for output in outputs} if outputs else self.y
        averaged = presence_averaged(self.model, self.x, y, self.modalities, self.batch_size)
        for name, value in averaged.items():
            output, metric = split_candidate_key(name, outputs)
            if output is None:
                logs[PRESENCE_PREFIX + metric] = value
            else:
                logs[candidate_key(PRESENCE_PREFIX + metric, output, len(outputs))] = value
