"""`FusionHyperModel` (the fusion search space as a KerasTuner hypermodel) and `MFASTuner`."""

import time
import zlib

import keras
import keras_tuner

from mmfusion.branches import tap_shapes
from mmfusion.compose import build_fusion_model
from mmfusion.files import write_json
from mmfusion.search.costs import LATENCY_BATCH, measure_latency
from mmfusion.search.joint import build_before_fit, is_dataset, train_jointly
from mmfusion.search.objectives import head_loss, head_metrics
from mmfusion.search.oracle import MFASOracle
from mmfusion.search.presence import PresenceAveraged
from mmfusion.search.space import FusionSpace
from mmfusion.search.state import read_json, save_weights

__all__ = ["FusionHyperModel", "FusionTuner", "MFASTuner"]


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

    Candidates are compiled with the head's loss and metrics
    (`mmfusion.search.objectives`: sparse cross-entropy and `accuracy` for
    classification, binary cross-entropy and `auc` for multilabel, MSE with
    `mse` and `mae` for regression).

    Args:
        branches: dict modality -> branch model (see `mmfusion.branches`).
        num_classes: number of classes (of labels for `"multilabel"`, of
            targets for `"regression"`) of the head.
        space: a `FusionSpace`; default: every tap of every branch and the
            `fusions`, `activations` and `max_layers` given here.
        fusions: candidate fusion-layer names (default: all vector layers).
        activations: candidate activations after each fusion layer.
        max_layers: maximum number of fusion layers.
        units: candidate `units=` of the fusion layers.
        learning_rates: candidate Adam learning rates.
        head_units: hidden sizes of the head's MLP.
        head: `"classification"` (softmax), `"multilabel"` (a sigmoid per
            label) or `"regression"` (linear outputs).
        presence: give candidates a `presence` input (`build_fusion_model`'s
            `presence`), e.g. for a presence-averaged objective
            (`mmfusion.search.presence`).
        modality_dropout: `build_fusion_model`'s `modality_dropout` rate of
            every candidate (0: none).
        tap_pooling: how feature-map taps become vectors (see `build_fusion_model`).
        fit_verbose: if not None, the `verbose` of every trial's `fit`.
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

    A regression search (one target) with a presence input:

    >>> regression = FusionHyperModel(hypermodel.branches, 1, fusions=["concat"], max_layers=1,
    ...                               head="regression", presence=True)
    >>> model = regression.build(keras_tuner.HyperParameters())
    >>> model.output_shape, sorted(t.name for t in model.inputs), model.loss
    ((None, 1), ['a', 'b', 'presence'], 'mean_squared_error')
    """

    def __init__(self, branches, num_classes, space=None, fusions=None,
                 activations=("relu", "tanh"), max_layers=3, units=(32, 64, 128),
                 learning_rates=(1e-3, 3e-3, 1e-2), head_units=(64,), tap_pooling="flatten",
                 fit_verbose=None, head="classification", presence=False, modality_dropout=0.0,
                 **kwargs):
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
        self.head = head
        self.loss = head_loss(head)
        self.presence = presence
        self.modality_dropout = modality_dropout

    def with_branches(self, branches):
        """The same search space over other branches with the same taps (e.g.
        the real branches of a search run on cached features)."""
        return FusionHyperModel(branches, self.num_classes, space=self.space,
                                units=self.units, learning_rates=self.learning_rates,
                                head_units=self.head_units, tap_pooling=self.tap_pooling,
                                fit_verbose=self.fit_verbose, head=self.head,
                                presence=self.presence, modality_dropout=self.modality_dropout,
                                name=self.name, tunable=self.tunable)

    def build(self, hp):
        architecture = self.space.declare(hp)
        units = hp.Choice("units", self.units)
        learning_rate = hp.Choice("learning_rate", self.learning_rates)
        branches = {m: keras.models.clone_model(b) if b.trainable_weights else b
                    for m, b in self.branches.items()}
        model = build_fusion_model(
            branches, self.space.points(architecture), head=self.head,
            num_outputs=self.num_classes, units=units, head_units=self.head_units,
            tap_pooling=self.tap_pooling, presence=self.presence,
            modality_dropout=self.modality_dropout, name="searched_fusion")
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=self.loss,
                      metrics=head_metrics(self.head))
        return model

    def fit(self, hp, model, *args, **kwargs):
        if self.fit_verbose is not None:
            kwargs["verbose"] = self.fit_verbose
        data = dict(zip(("x", "y"), args))
        data.update({k: kwargs[k] for k in ("x", "y") if k in kwargs})
        build_before_fit(model, data["x"], data.get("y"), kwargs.get("batch_size"))
        return model.fit(*args, **kwargs)

    def fit_jointly(self, hps, models, x, y=None, save_best=None, **kwargs):
        """Trains the models of several trials together (`train_jointly`), one
        joint model per learning rate.

        Args:
            hps: the trials' `HyperParameters`.
            models: their models, from `build`.
            x, y: the training data: arrays, or a batched `tf.data.Dataset`
                of `(inputs, targets)` as `x` (`y` None).
            save_best: optional `save_best(i)`, called when model `i` reaches
                its best monitored value so far.
            **kwargs: `train_jointly` and `fit` arguments.

        Returns:
            One `keras.callbacks.History` per model, in order.
        """
        if self.fit_verbose is not None:
            kwargs["verbose"] = self.fit_verbose
        groups = {}
        for i, hp in enumerate(hps):
            groups.setdefault(hp["learning_rate"], []).append(i)
        histories = [None] * len(models)
        for learning_rate, members in groups.items():
            group_save = None if save_best is None else (lambda j, m=members: save_best(m[j]))
            trained = train_jointly([models[i] for i in members], x, y,
                                    lambda rate=learning_rate: keras.optimizers.Adam(rate),
                                    self.loss, head_metrics(self.head), save_best=group_save,
                                    **kwargs)
            for i, history in zip(members, trained):
                histories[i] = history
        return histories


def _clock(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class FusionTuner(keras_tuner.Tuner):
    """A KerasTuner `Tuner` for fusion searches with any oracle.

    On top of `keras_tuner.Tuner`: it waits `poll_interval` seconds before
    asking again when the oracle answered `"IDLE"` (an MFAS step waiting for
    trials running elsewhere; KerasTuner itself asks again at once), through
    KerasTuner's `pre_create_trial` / `on_trial_begin` hooks; it writes its
    own state file atomically and validates it on reload
    (`mmfusion.search.state`); and `report` gets one line per trial:
    `trial i/N [elapsed, ETA]: architecture units=... -> objective value`.

    Every trial's weights and training randomness are seeded from the
    oracle's seed and the trial id (`trial_seed`), so an identical run
    gives identical scores, whatever ran before in the process (pretraining
    or loading cached branches, other searches).

    With `candidates_per_step=K > 1` it asks the oracle for up to K trials
    at a time (as K tuners would: tuner ids `"{tuner_id}-0"` ...) and trains
    them together in one compiled model (`mmfusion.search.joint`; the
    hypermodel needs `fit_jointly`, as `FusionHyperModel` has), each exactly
    as it would train alone, then ends them one by one; each trial's
    checkpoint holds its best epoch, as with K = 1. Random search proposes
    the same trials either way; MFAS's steps are batches already (K at
    least its `samples_per_step` trains a step at once); Bayesian
    optimization proposes a batch's trials before seeing their scores, as
    with K parallel tuners. Per-trial `callbacks` are not supported then,
    except `mmfusion.search.presence.PresenceAveraged`, which scores every
    candidate of the joint model.

    Args:
        oracle: a KerasTuner oracle (e.g. `mmfusion.search.MFASOracle`, or
            those of `mmfusion.search.baselines`).
        hypermodel: a `FusionHyperModel` (or None when `run_trial` is overridden).
        space: the `FusionSpace` (default: `hypermodel.space`), to describe trials.
        report: optional callable (e.g. `print`) given the progress lines.
        poll_interval: seconds between two requests while the oracle is idle.
        candidates_per_step: how many trials train together (1: one at a time).
        measure_costs: record each trial's `params` and `latency_ms` (the
            fusion network's parameter count and milliseconds per batch of
            64 training rows, `mmfusion.search.costs`) in its metrics.
        **kwargs: `keras_tuner.Tuner` arguments (`directory`, `project_name`,
            `overwrite`, ...).

    Example:

    >>> from mmfusion.branches import tabular_mlp
    >>> from mmfusion.search.baselines import RandomSearchOracle
    >>> hypermodel = FusionHyperModel(
    ...     {"a": tabular_mlp(3, name="a"), "b": tabular_mlp(2, name="b")},
    ...     num_classes=2, fusions=["concat"])
    >>> tuner = FusionTuner(RandomSearchOracle("val_accuracy", max_trials=2, seed=0),
    ...                     hypermodel, directory=str(getfixture("tmp_path")))
    >>> tuner.oracle.max_trials
    2
    """

    def __init__(self, oracle, hypermodel=None, space=None, report=None, poll_interval=0.2,
                 candidates_per_step=1, measure_costs=False, **kwargs):
        if int(candidates_per_step) != candidates_per_step or candidates_per_step < 1:
            raise ValueError("FusionTuner: candidates_per_step must be a positive integer; "
                             f"received {candidates_per_step!r}.")
        self.space = space or hypermodel.space
        self.report = report
        self.poll_interval = poll_interval
        self.candidates_per_step = int(candidates_per_step)
        self.measure_costs = measure_costs
        self._asked = False  # a request got no trial yet (IDLE)
        self._trained = {}  # trial id -> History (or the error) of a joint step
        super().__init__(oracle, hypermodel, **kwargs)

    def search(self, *fit_args, **fit_kwargs):
        if self.candidates_per_step == 1:
            return super().search(*fit_args, **fit_kwargs)
        if any(not isinstance(c, PresenceAveraged) for c in fit_kwargs.get("callbacks") or []):
            raise ValueError("FusionTuner: with candidates_per_step > 1 the trials train "
                             "together; per-trial callbacks are not supported (pass none, "
                             "or candidates_per_step=1), except PresenceAveraged.")
        if "verbose" in fit_kwargs:
            self.oracle.verbose = fit_kwargs["verbose"]
        self.on_search_begin()
        while True:
            trials, stopped = self._create_trials()
            if not trials:
                if stopped:
                    break
                time.sleep(self.poll_interval)  # an MFAS step waits for trials elsewhere
                continue
            self._train_together(trials, *fit_args, **fit_kwargs)
            for trial in trials:
                self.on_trial_begin(trial)
                self._try_run_and_update_trial(trial, *fit_args, **fit_kwargs)
                self.on_trial_end(trial)
        self.on_search_end()

    def _create_trials(self):
        """Up to `candidates_per_step` new trials, and whether the oracle stopped."""
        trials = []
        for k in range(self.candidates_per_step):
            trial = self.oracle.create_trial(f"{self.tuner_id}-{k}")
            if trial.status == keras_tuner.engine.trial.TrialStatus.STOPPED:
                return trials, True
            if trial.status == keras_tuner.engine.trial.TrialStatus.IDLE:
                break
            trials.append(trial)
        return trials, False

    def _train_together(self, trials, *fit_args, **fit_kwargs):
        keras.backend.clear_session()
        hps = [trial.hyperparameters for trial in trials]
        paths = [self._get_checkpoint_fname(trial.trial_id) for trial in trials]
        try:
            models = []
            for trial, hp in zip(trials, hps):
                keras.utils.set_random_seed(self.trial_seed(trial))
                models.append(self.hypermodel.build(hp))
            # Each candidate's best epoch is kept in memory and written once
            # after training (an unfinished trial is trained again anyway).
            best = {}

            def keep_best(i):
                best[i] = models[i].get_weights()

            histories = self.hypermodel.fit_jointly(
                hps, models, *fit_args, save_best=keep_best,
                monitor=self.oracle.objective.name, mode=self.oracle.objective.direction,
                **fit_kwargs)
            for i, weights in best.items():
                models[i].set_weights(weights)
                save_weights(models[i], paths[i])
        except Exception as error:  # each trial then fails with it, as when run alone
            histories = [error] * len(trials)
        self._trained = {trial.trial_id: h for trial, h in zip(trials, histories)}

    def trial_seed(self, trial):
        """The seed of `trial`: a hash of the oracle's seed and the trial id."""
        return zlib.crc32(f"{self.oracle.seed}|{trial.trial_id}".encode()) % (2 ** 31)

    def run_trial(self, trial, *args, **kwargs):
        if trial.trial_id not in self._trained:
            keras.utils.set_random_seed(self.trial_seed(trial))
            result = super().run_trial(trial, *args, **kwargs)
        else:
            result = self._trained.pop(trial.trial_id)
            if isinstance(result, Exception):
                raise result
        if self.measure_costs:
            self._add_costs(trial, result, args[0] if args else kwargs["x"])
        return result

    def trial_costs(self, trial, x):
        """`{"params", "latency_ms"}` of a trial's fusion network
        (`mmfusion.search.costs`), timed on the first rows of the training
        inputs `x` (arrays or a batched `tf.data.Dataset`)."""
        model = self.hypermodel.build(trial.hyperparameters)
        if is_dataset(x):  # its first batch
            batch = next(iter(x))[0]
        else:
            batch = keras.tree.map_structure(lambda a: a[:LATENCY_BATCH], x)
        return {"params": float(model.count_params()), "latency_ms": measure_latency(model, batch)}

    def _add_costs(self, trial, result, x):
        """Adds the trial's costs (`trial_costs`) to every epoch of its
        histories, so KerasTuner records them with the objective (and sends
        them to the chief in a distributed search)."""
        costs = self.trial_costs(trial, x)
        for history in result if isinstance(result, list) else [result]:
            epochs = len(next(iter(history.history.values())))
            history.history.update({k: [v] * epochs for k, v in costs.items()})

    # KerasTuner's loop: pre_create_trial, create_trial, on_trial_begin unless IDLE.
    def pre_create_trial(self):
        if self._asked:  # the last request was answered IDLE
            time.sleep(self.poll_interval)
        self._asked = True

    def on_trial_begin(self, trial):
        self._asked = False
        super().on_trial_begin(trial)

    def on_search_begin(self):
        super().on_search_begin()
        self.save()  # the tuner file exists from the start: a restart resumes
        self._started = time.perf_counter()
        self._ended_here = 0
        self._ended_before = 0 if self._is_worker() else len(self.oracle.end_order)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        self._ended_here += 1
        if not self.report:
            return
        elapsed = time.perf_counter() - self._started
        done, total = self._ended_before + self._ended_here, self.oracle.max_trials
        eta = elapsed / self._ended_here * max(0, total - done)
        values = trial.hyperparameters.values
        settings = "".join(f" {k}={values[k]}" for k in ("units", "learning_rate") if k in values)
        score = trial.status.lower() if trial.score is None else f"{trial.score:.4f}"
        self.report(f"trial {done}/{total} [{_clock(elapsed)} elapsed, ETA {_clock(eta)}]: "
                    f"{self.space.describe(self.space.architecture(values))}{settings} -> "
                    f"{self.oracle.objective.name} {score}")

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        write_json(self._get_tuner_fname(), self.get_state())

    def reload(self):
        if not self._is_worker():
            self.oracle.reload()
        self.set_state(read_json(self._get_tuner_fname()))


class MFASTuner(FusionTuner):
    """A `FusionTuner` running an `MFASOracle` over a `FusionHyperModel`.

    Args:
        hypermodel: a `FusionHyperModel` (or None when `run_trial` is overridden).
        objective: the objective to maximize or minimize.
        max_trials: number of trials.
        space: the `FusionSpace` (default: `hypermodel.space`).
        seed: random seed of the oracle (0 is a seed).
        oracle_kwargs: other `MFASOracle` arguments (`samples_per_step`, ...).
        **kwargs: `FusionTuner` and `keras_tuner.Tuner` arguments (`report`,
            `poll_interval`, `directory`, `project_name`, `overwrite`, ...).

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
                 seed=None, oracle_kwargs=None, **kwargs):
        space = space or hypermodel.space
        oracle = MFASOracle(space, objective=objective, max_trials=max_trials, seed=seed,
                            **(oracle_kwargs or {}))
        super().__init__(oracle, hypermodel, space=space, **kwargs)
