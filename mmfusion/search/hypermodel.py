"""`FusionHyperModel` (the fusion search space as a KerasTuner hypermodel) and `MFASTuner`."""

import os
import time

import keras
import keras_tuner

from mmfusion.branches import tap_shapes
from mmfusion.compose import build_fusion_model
from mmfusion.search.oracle import MFASOracle
from mmfusion.search.space import FusionSpace

__all__ = ["FusionHyperModel", "MFASTuner"]


class FusionHyperModel(keras_tuner.HyperModel):
    """Searches where and how to fuse modality branches (and a few training settings).

    Hyperparameters: the fusion architecture of `space` (number of fusion
    layers; at each, which tap of every modality, which fusion layer type and
    which activation; see `mmfusion.search.space`), `units` (of every fusion
    layer) and `learning_rate` (Adam). `build(hp)` only composes a functional
    model (no data, no training), so KerasTuner's repeated builds are cheap.

    Branches with trainable weights are cloned in every `build` (fresh
    weights: each trial trains end to end from scratch); frozen branches
    (`branch.trainable = False`) and feature branches
    (`mmfusion.search.features.feature_branches`, the fast MFAS setting) are
    shared by all trials.

    Args:
        branches: dict modality -> branch model (see `mmfusion.branches`).
        num_classes: number of classes of the softmax head.
        space: a `FusionSpace`; default: every tap of every branch and the
            `fusions`, `activations` and `max_layers` given here.
        fusions: candidate fusion-layer names (default: all vector layers).
        activations: candidate activations after each fusion layer.
        max_layers: maximum number of fusion layers.
        units: candidate `units=` of the fusion layers.
        learning_rates: candidate Adam learning rates.
        head_units: hidden sizes of the classification head.
        tap_pooling: how feature-map taps become vectors (see `build_fusion_model`).
        fit_verbose: if not None, the `verbose` of every trial's `fit`.
        report: optional callable (e.g. `print`) given one line per trial:
            its architecture, units, learning rate and best `val_accuracy`.
        **kwargs: `keras_tuner.HyperModel` arguments (`name`, `tunable`).

    Example:

    >>> import keras_tuner
    >>> from mmfusion.branches import tabular_mlp
    >>> hypermodel = FusionHyperModel(
    ...     {"a": tabular_mlp(3, units=(4, 4), name="a"),
    ...      "b": tabular_mlp(2, units=(4,), name="b")},
    ...     num_classes=2, fusions=["concat"], max_layers=2)
    >>> model = hypermodel.build(keras_tuner.HyperParameters())
    >>> model.output_shape
    (None, 2)
    """

    def __init__(self, branches, num_classes, space=None, fusions=None,
                 activations=("relu", "tanh"), max_layers=3, units=(32, 64, 128),
                 learning_rates=(1e-3, 3e-3, 1e-2), head_units=(64,), tap_pooling="flatten",
                 fit_verbose=None, report=None, **kwargs):
        super().__init__(**kwargs)
        self.branches = dict(branches)
        self.num_classes = num_classes
        self.space = space or FusionSpace(
            {m: list(tap_shapes(b)) for m, b in self.branches.items()},
            fusions=fusions, activations=activations, max_layers=max_layers)
        self.units = list(units)
        self.learning_rates = list(learning_rates)
        self.head_units = tuple(head_units)
        self.tap_pooling = tap_pooling
        self.fit_verbose = fit_verbose
        self.report = report
        self.trials_fitted = 0

    def with_branches(self, branches):
        """The same search space over other branches with the same taps (e.g.
        the real branches of a search run on cached features)."""
        return FusionHyperModel(branches, self.num_classes, space=self.space,
                                units=self.units, learning_rates=self.learning_rates,
                                head_units=self.head_units, tap_pooling=self.tap_pooling,
                                fit_verbose=self.fit_verbose, report=self.report,
                                name=self.name, tunable=self.tunable)

    def build(self, hp):
        architecture = self.space.declare(hp)
        units = hp.Choice("units", self.units)
        learning_rate = hp.Choice("learning_rate", self.learning_rates)
        branches = {m: keras.models.clone_model(b) if b.trainable_weights else b
                    for m, b in self.branches.items()}
        model = build_fusion_model(
            branches, self.space.points(architecture), num_outputs=self.num_classes,
            units=units, head_units=self.head_units, tap_pooling=self.tap_pooling,
            name="searched_fusion")
        model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    def fit(self, hp, model, *args, **kwargs):
        if self.fit_verbose is not None:
            kwargs["verbose"] = self.fit_verbose
        history = model.fit(*args, **kwargs)
        self.trials_fitted += 1
        if self.report:
            best = max(history.history.get("val_accuracy", [float("nan")]))
            architecture = self.space.describe(self.space.architecture(hp.values))
            self.report(f"trial {self.trials_fitted}: {architecture} units={hp['units']} "
                        f"learning_rate={hp['learning_rate']} -> val_accuracy {best:.4f}")
        return history


def _is_chief():
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" in os.environ.get(
        "KERASTUNER_TUNER_ID", "")


class MFASTuner(keras_tuner.Tuner):
    """A KerasTuner `Tuner` running an `MFASOracle` over a `FusionHyperModel`.

    While an MFAS step waits for trials still running elsewhere, the oracle
    answers `"IDLE"`; this tuner then polls every `poll_interval` seconds
    instead of spinning.

    Args:
        hypermodel: a `FusionHyperModel` (or None when `run_trial` is overridden).
        objective: the objective to maximize or minimize.
        max_trials: maximum number of trials.
        space: the `FusionSpace` (default: `hypermodel.space`).
        seed: random seed of the oracle.
        oracle_kwargs: other `MFASOracle` arguments (`samples_per_step`, ...).
        poll_interval: seconds between two requests while the oracle is idle.
        **kwargs: `keras_tuner.Tuner` arguments (`directory`, `project_name`,
            `overwrite`, ...).

    Example:

    >>> from mmfusion.branches import tabular_mlp
    >>> hypermodel = FusionHyperModel(
    ...     {"a": tabular_mlp(3, name="a"), "b": tabular_mlp(2, name="b")},
    ...     num_classes=2, fusions=["concat"])
    >>> tuner = MFASTuner(hypermodel, max_trials=2, directory=str(getfixture("tmp_path")))
    >>> type(tuner.oracle).__name__
    'MFASOracle'
    """

    def __init__(self, hypermodel=None, objective="val_accuracy", max_trials=20, space=None,
                 seed=None, oracle_kwargs=None, poll_interval=0.2, **kwargs):
        self.space = space or hypermodel.space
        oracle = MFASOracle(self.space, objective=objective,
                            max_trials=max_trials, seed=seed, **(oracle_kwargs or {}))
        super().__init__(oracle, hypermodel, **kwargs)
        if not _is_chief():
            create_trial = self.oracle.create_trial

            def create_when_ready(tuner_id):
                trial = create_trial(tuner_id)
                while trial.status == "IDLE":
                    time.sleep(poll_interval)
                    trial = create_trial(tuner_id)
                return trial

            self.oracle.create_trial = create_when_ready
