"""A whole fusion search on a named task, as `mmfusion search` runs it.

`load_task` gives a task's branches and splits; `prepare` pretrains and
freezes the branches (weights kept in the search folder) and caches their
tap features; `make_tuner` builds an MFAS, random, Bayesian or one-shot
(retraining a supernet's pick) tuner over a `FusionHyperModel` on those
features; `run_search` does all of it, searches,
and exports the best fusion network on the real branches as a `.keras` model,
with every trial's cost and the Pareto fronts in `results_<oracle>.json`.
The task's head (classification, multilabel, regression) sets the losses,
metrics and objectives (`mmfusion.search.objectives`).
"""

import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass

import keras
import numpy as np

from mmfusion import tasks
from mmfusion.search.features import (FeatureCache, feature_branches, pack, pretrain_branch,
                                      transfer_weights)
from mmfusion.search.baselines import BayesianOptimizationOracle, RandomSearchOracle
from mmfusion.search.hypermodel import FusionHyperModel, FusionTuner
from mmfusion.search.costs import LATENCY_BATCH, pareto_front, plot_pareto
from mmfusion.search.objectives import PRESENCE_PREFIX, check_objective, metric_name, objectives
from mmfusion.search.presence import PresenceAveraged, presence_averaged, with_presence
from mmfusion.search.oneshot import ArchitectureOracle, search_oneshot
from mmfusion.search.oracle import MFASOracle
from mmfusion.files import write_json
from mmfusion.search.state import load_weights, read_json, save_weights

ORACLES = ("mfas", "random", "bayesian", "oneshot")
# `MFASOracle` arguments a search may set (`run_search(mfas_settings=...)`, CLI flags).
MFAS_SETTINGS = ("initial_samples", "samples_per_step", "temperature", "min_temperature",
                 "surrogate_units", "surrogate_epochs")
DEFAULT_FUSIONS = ("concat", "gmu", "lmf", "mfb")

__all__ = ["MFAS_SETTINGS", "ORACLES", "Prepared", "Task",
           "check_settings", "load_task", "make_oracle", "make_tuner", "prepare", "run_search"]


@dataclass
class Task:
    """A task for the search.

    Attributes:
        branches: dict modality -> untrained branch model.
        splits: dict `"train"`, `"validation"`, `"test"` -> `(inputs dict, labels)`.
        num_classes: number of classes (of labels for `"multilabel"`, of
            targets for `"regression"`).
        name: the task's name (part of the keys of its cached branches and
            features, with a fingerprint of its data).
        head: `"classification"` (class ids), `"multilabel"` (`(n, labels)`
            0/1 columns) or `"regression"` (targets); it sets the loss, the
            metrics and the objectives (`mmfusion.search.objectives`).

    Example (a task of your own; `run_search` accepts it):

    >>> import numpy as np
    >>> from mmfusion.branches import tabular_mlp
    >>> x = {"a": np.zeros((8, 3), "float32"), "b": np.zeros((8, 2), "float32")}
    >>> y = np.zeros(8, "int32")
    >>> task = Task({"a": tabular_mlp(3, name="a"), "b": tabular_mlp(2, name="b")},
    ...             {"train": (x, y), "validation": (x, y), "test": (x, y)}, num_classes=2)
    >>> sorted(task.branches)
    ['a', 'b']
    """

    branches: dict
    splits: dict
    num_classes: int
    name: str = "custom"
    head: str = "classification"

    def __post_init__(self):
        objectives(self.head)  # a known head


class SettingsMismatchError(ValueError):
    """Raised when a search directory holds a search started with other settings."""


class ParameterBudgetError(ValueError):
    """Raised when no completed trial fits `run_search`'s `max_params`."""


def load_task(name, seed=0, data_dir=None, width=1):
    """The branches and train / validation / test splits of a registered task.

    Args:
        name: a task of `mmfusion.tasks.available()`, e.g. `"synthetic"` (the
            GMU paper's task) or `"av_digits"` (digit images + spoken digits;
            needs FSDD, see `data_dir`).
        seed: seed of the data and of the validation split (20% of train).
        data_dir: folder of datasets (None: `$MMFUSION_DATA`, then Keras's
            cache, downloading if needed).
        width: multiplier of the branches' filters and units (wider branches
            cost more per end-to-end step, not per cached-feature step).

    Returns:
        A `Task`, its `head` that of the registered task.

    Example:

    >>> task = load_task("synthetic")
    >>> {split: len(y) for split, (_, y) in task.splits.items()}, task.num_classes, task.head
    ({'train': 1600, 'validation': 400, 'test': 1000}, 2, 'classification')
    """
    definition = tasks.get(name)
    data = definition.data(data_dir=data_dir, seed=seed)
    return Task(definition.branches(data, width=width), data.splits, definition.num_outputs,
                name=f"{name}-width{width}", head=definition.head)


@dataclass
class Prepared:
    """What `prepare` returns.

    Attributes:
        features: `{split: {modality: {tap: array}}}` for `"train"` (the
            search part of the training split only), `"validation"` and
            `"test"`.
        labels: `{split: labels}` aligned with `features`.
        directory: the folder holding the branch weights and features.
        key: the settings key naming that folder.
        parts: `{"pretrain": indices, "search": indices}` into the task's
            training split (the branches' and the candidates' examples).

    Example: see `prepare`.

    >>> Prepared({}, {}, "folder", "key", {}).directory
    'folder'
    """

    features: dict
    labels: dict
    directory: str
    key: str
    parts: dict


def _fingerprint(task):
    """Hash of a task's name, data and branch architectures."""
    digest = hashlib.sha256(task.name.encode())
    for split in sorted(task.splits):
        inputs, labels = task.splits[split]
        for m in sorted(inputs):
            x = np.ascontiguousarray(inputs[m])
            digest.update(f"{split}|{m}|{x.shape}|{x.dtype}".encode())
            digest.update(x.tobytes() if x.dtype != object else repr(x.tolist()).encode())
        digest.update(np.ascontiguousarray(labels).tobytes())
    for m in sorted(task.branches):
        digest.update(json.dumps(_architecture(json.loads(task.branches[m].to_json())),
                                 sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _architecture(config):
    """A model's JSON config without its `trainable` flags (which `prepare`
    clears when it freezes a pretrained branch: the same task stays the same)."""
    if isinstance(config, dict):
        return {k: _architecture(v) for k, v in config.items() if k != "trainable"}
    if isinstance(config, list):
        return [_architecture(v) for v in config]
    return config


def _prepared_key(task, pretrain_epochs, seed, pretrain_fraction):
    settings = {"task": task.name, "data": _fingerprint(task), "seed": int(seed),
                "pretrain_epochs": int(pretrain_epochs),
                "pretrain_fraction": float(pretrain_fraction)}
    if task.head != "classification":  # classification keys stay those of earlier searches
        settings["head"] = task.head
    return settings, hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def prepare(task, directory, pretrain_epochs=10, seed=0, pretrain_fraction=0.5,
            report=None, verbose=0):
    """Pretrains (or reloads) and freezes every branch, and caches its taps.

    The training split is cut in two (seeded): branches are pretrained on
    the first part (`pretrain_fraction`) only, through a head of the task's
    kind (`pretrain_branch`), and candidates are trained on
    features of the second part and selected on features of the validation
    split, neither seen by the branches (features of examples a branch was
    fitted on are over-confident). Everything is kept in
    `directory/prepared/KEY/` (`KEY`: a hash of the task's name, data and
    branch architectures, `seed`, `pretrain_epochs` and
    `pretrain_fraction`; `settings.json` there says which), so another seed
    or task never reuses these branches, and a resumed search sees the same
    features. Files are written atomically and validated when read back
    (`mmfusion.search.state`).

    Args:
        task: a `Task`.
        directory: the search folder.
        pretrain_epochs: epochs of each branch's pretraining.
        seed: seed of the cut and of the pretraining.
        pretrain_fraction: share of the training split used to pretrain.
        report: optional callable (e.g. `print`) given progress lines.
        verbose: Keras verbosity of the pretraining.

    Returns:
        A `Prepared`.

    Example:

    >>> task = load_task("synthetic")
    >>> prepared = prepare(task, str(getfixture("tmp_path")), pretrain_epochs=1)
    >>> {tap: x.shape for tap, x in prepared.features["train"]["visual"].items()}
    {'dense_1': (800, 32), 'dense_2': (800, 16), 'vector': (800, 16)}
    >>> len(prepared.labels["validation"])
    400
    """
    report = report or (lambda line: None)
    settings, key = _prepared_key(task, pretrain_epochs, seed, pretrain_fraction)
    folder = os.path.join(directory, "prepared", key)
    write_json(os.path.join(folder, "settings.json"), settings)
    x, y = task.splits["train"]
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(round(len(y) * pretrain_fraction))
    if not 0 < cut < len(y):
        raise ValueError(f"prepare: pretrain_fraction={pretrain_fraction} leaves no example for "
                         f"pretraining or for the search ({len(y)} training examples).")
    parts = {"pretrain": order[:cut], "search": order[cut:]}
    for i, (m, branch) in enumerate(task.branches.items(), start=1):
        path = os.path.join(folder, "branches", f"{m}.weights.h5")
        started = time.perf_counter()
        if os.path.exists(path):
            load_weights(branch, path)
            branch.trainable = False
            report(f"branch {i}/{len(task.branches)} ({m}): pretrained weights loaded from {path}")
            continue
        report(f"branch {i}/{len(task.branches)} ({m}): pretraining, {pretrain_epochs} epochs "
               f"on {cut} examples ...")
        keras.utils.set_random_seed(seed + i)
        pretrain_branch(branch, x[m][parts["pretrain"]], y[parts["pretrain"]], task.num_classes,
                        epochs=pretrain_epochs, verbose=verbose, head=task.head)
        save_weights(branch, path)
        report(f"branch {i}/{len(task.branches)} ({m}): done in "
               f"{time.perf_counter() - started:.1f} s")
    cache = FeatureCache(os.path.join(folder, "features"))
    splits = {"train": ({m: v[parts["search"]] for m, v in x.items()}, y[parts["search"]]),
              "validation": task.splits["validation"], "test": task.splits["test"]}
    features = {}
    for i, (split, (inputs, _)) in enumerate(splits.items(), start=1):
        started, misses = time.perf_counter(), cache.misses
        features[split] = cache.features(task.branches, inputs)
        how = "computed" if cache.misses > misses else "read from the cache"
        report(f"features {i}/{len(splits)} ({split}, {len(splits[split][1])} examples): {how} "
               f"in {time.perf_counter() - started:.1f} s")
    return Prepared(features, {split: labels for split, (_, labels) in splits.items()},
                    folder, key, parts)


def check_settings(path, settings, overwrite=False):
    """Records a search's settings at `path`, or checks them against those of
    the search found there: resuming with other settings raises a
    `ValueError` naming the differences (unless `overwrite`).

    Example:

    >>> import os
    >>> path = os.path.join(str(getfixture("tmp_path")), "settings.json")
    >>> check_settings(path, {"seed": 0})
    >>> try:
    ...     check_settings(path, {"seed": 1})
    ... except ValueError as error:
    ...     print("seed=1 (it has 0)" in str(error))
    True
    """
    if os.path.exists(path) and not overwrite:
        saved = read_json(path)
        different = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
        different.update({k: (v, None) for k, v in saved.items() if k not in settings})
        if different:
            changes = ", ".join(f"{k}={new!r} (it has {old!r})"
                                for k, (old, new) in sorted(different.items()))
            raise SettingsMismatchError(
                f"The search in {os.path.dirname(path)} was started with other settings: "
                f"{changes}. Resume it with its own settings, start it again with "
                f"overwrite=True (mmfusion search --overwrite), or use another directory.")
        return
    write_json(path, settings)


def make_tuner(oracle, hypermodel, max_trials, directory, project_name="search", seed=0,
               overwrite=False, objective="val_accuracy", report=None, candidates_per_step=1,
               architectures=None, mfas_settings=None, measure_costs=False):
    """A `FusionTuner` with an MFAS, random-search, Bayesian-optimization or
    one-shot oracle (`architectures`, `mfas_settings`: see `make_oracle`).

    Every oracle takes `seed` as a seed (0 included: identical runs propose
    identical trials). MFAS sizes its steps from the budget (see
    `MFASOracle`); Bayesian optimization starts with
    `mmfusion.search.baselines.default_initial_points(max_trials)` random
    trials. `report` (e.g. `print`) gets one progress line per trial.
    `candidates_per_step` trials train together and `measure_costs` records
    each trial's parameters and latency (see `FusionTuner`).

    Example:

    >>> from mmfusion.branches import tabular_mlp
    >>> hypermodel = FusionHyperModel(
    ...     {"a": tabular_mlp(3, name="a"), "b": tabular_mlp(2, name="b")}, num_classes=2)
    >>> tuner = make_tuner("random", hypermodel, 4, str(getfixture("tmp_path")))
    >>> type(tuner.oracle).__name__, tuner.oracle.max_trials
    ('RandomSearchOracle', 4)
    """
    common = dict(directory=directory, project_name=project_name, overwrite=overwrite,
                  report=report, candidates_per_step=candidates_per_step,
                  measure_costs=measure_costs)
    instance = make_oracle(oracle, hypermodel.space, max_trials, seed=seed, objective=objective,
                           architectures=architectures, mfas_settings=mfas_settings)
    return FusionTuner(instance, hypermodel, **common)


def make_oracle(oracle, space, max_trials, seed=0, objective="val_accuracy",
                architectures=None, mfas_settings=None):
    """An `MFASOracle`, a seeded, crash-safe random-search or
    Bayesian-optimization oracle (`mmfusion.search.baselines`), or for
    `"oneshot"` an `mmfusion.search.oneshot.ArchitectureOracle` retraining
    `architectures` (the discretized supernet of `search_oneshot`; then
    `max_trials` is their number).

    Args:
        oracle: `"mfas"`, `"random"`, `"bayesian"` or `"oneshot"`.
        space: the `FusionSpace`.
        max_trials: number of trials.
        seed: the oracle's seed (0 is a seed).
        objective: an objective name or `keras_tuner.Objective`.
        architectures: the architectures `"oneshot"` retrains.
        mfas_settings: dict of other `MFASOracle` arguments
            (`MFAS_SETTINGS`: `initial_samples`, `samples_per_step`,
            `temperature`, `min_temperature`, `surrogate_units`,
            `surrogate_epochs`); MFAS only.

    Returns:
        A KerasTuner oracle.

    Example:

    >>> from mmfusion.search import FusionSpace
    >>> space = FusionSpace({"a": ["h", "vector"], "b": ["vector"]}, fusions=["concat"])
    >>> type(make_oracle("bayesian", space, 12)).__name__
    'BayesianOptimizationOracle'
    >>> make_oracle("mfas", space, 12, mfas_settings={"samples_per_step": 3}).step_size()
    3
    """
    mfas_settings = dict(mfas_settings or {})
    unknown = sorted(set(mfas_settings) - set(MFAS_SETTINGS))
    if unknown:
        raise ValueError(f"make_oracle: unknown MFAS setting(s) {', '.join(unknown)}; "
                         f"available: {', '.join(MFAS_SETTINGS)}.")
    if mfas_settings and oracle != "mfas":
        raise ValueError(f"make_oracle: MFAS settings ({', '.join(sorted(mfas_settings))}) "
                         f"only apply to oracle 'mfas', not '{oracle}'.")
    if oracle == "mfas":
        return MFASOracle(space, objective=objective, max_trials=max_trials, seed=seed,
                          **mfas_settings)
    if oracle == "oneshot":
        if not architectures:
            raise ValueError("make_oracle: 'oneshot' retrains the architectures a supernet "
                             "picked; train one first (mmfusion.search.oneshot.search_oneshot) "
                             "and pass architectures=[its architecture].")
        return ArchitectureOracle(space, architectures, objective=objective, seed=seed)
    oracles = {"random": RandomSearchOracle, "bayesian": BayesianOptimizationOracle}
    if oracle not in oracles:
        raise ValueError(f"Unknown oracle '{oracle}'; available: {', '.join(ORACLES)}.")
    return oracles[oracle](objective=objective, max_trials=max_trials, seed=seed)


def run_search(task, oracle="mfas", trials=10, directory="mmfusion-search", epochs=5,
               batch_size=64, fusions=DEFAULT_FUSIONS, max_layers=2, seed=0,
               pretrain_epochs=10, overwrite=False, callbacks=None, units=(64,),
               learning_rates=(1e-3,), candidates_per_step=1, supernet_epochs=10, verbose=1,
               objective=None, mfas_settings=None, modality_dropout=None, max_params=None):
    """Searches a fusion architecture on cached features and exports the best model.

    Branches are pretrained on one part of the training split, candidates
    trained on features of the other part and selected on the validation
    split (see `prepare`); the exported model is evaluated on the test split.
    The task's head sets the loss, the metrics and the default objective
    (`mmfusion.search.objectives`: `val_accuracy` for classification,
    `val_auc` for multilabel, `val_mse`, minimized, for regression). Every
    trial records its fusion network's parameter count and latency
    (`mmfusion.search.costs`); the result holds the Pareto fronts of the
    objective against each, and is written to
    `directory/results_<oracle>.json`.

    Args:
        task: a task name (see `load_task`) or a `Task`.
        oracle: `"mfas"`, `"random"`, `"bayesian"` or `"oneshot"`: a
            supernet over the space trained once on the cached features
            (`supernet_epochs`, `mmfusion.search.oneshot.search_oneshot`, with
            the first `units` and `learning_rates`; its files in
            `directory/oneshot-supernet/`), discretized, and the pick
            retrained as one trial (`epochs`); classification only.
        trials: number of trials (not used by `"oneshot"`: one retraining).
        directory: folder of the search (branches, features, trials, best model).
        epochs: training epochs of each trial.
        batch_size: batch size of each trial.
        fusions: candidate fusion-layer names.
        max_layers: maximum number of fusion layers.
        seed: seed of the data split, the pretraining and the oracle (0 is a seed).
        pretrain_epochs: epochs of each branch's pretraining.
        overwrite: start the search again instead of resuming it (resuming
            with other settings is an error).
        callbacks: Keras callbacks of every trial (a plain
            `keras.callbacks.TensorBoard` gets KerasTuner's HParams logging).
        units: candidate `units` of the fusion layers; one value (the
            default) fixes it, so oracles differ only in the architectures.
        learning_rates: candidate Adam learning rates (likewise).
        candidates_per_step: how many trials train together in one compiled
            model (`mmfusion.search.joint`; each as it would alone); 1 trains
            one at a time (needed for `callbacks`).
        supernet_epochs: supernet epochs of `"oneshot"`.
        verbose: 0 silent; 1 progress (pretraining, features, one line per
            trial with elapsed time and ETA) and a summary.
        objective: what trials are selected on: None (the head's default)
            or a name of `mmfusion.search.objectives.objectives(task.head)`.
        mfas_settings: dict of `MFASOracle` settings (`MFAS_SETTINGS`), for
            `"mfas"` only.
        modality_dropout: `ModalityDropout` rate of every candidate (None:
            0.25 with a presence-averaged objective `"val_presence_..."`,
            else 0). A presence-averaged objective also gives candidates a
            `presence` input and scores them on every presence pattern
            (`mmfusion.search.presence`), with any `candidates_per_step`.
        max_params: export the best trial whose fusion network has at most
            this many parameters (None: the best trial).

    Returns:
        A dict: `architecture` (readable), `values` (best hyperparameters),
        `objective` (its name), `validation_METRIC` (the best trial's
        objective value) and `test_METRIC` (that metric of the exported
        model, on the real branches, on the test split), `METRIC` the
        objective's metric (`accuracy`, `auc`, `mse`, `loss`, ...;
        `presence_accuracy` ... for a presence-averaged objective), and
        `model_path`, `trial_id`, `params` and `latency_ms` (of the exported
        trial), `trials` (every completed trial, a dict `trial_id`,
        `architecture`, the objective's name, `params`, `latency_ms`),
        `pareto` (`{"params": [...], "latency_ms": [...]}`: the trials no
        other trial beats on both the objective and that cost, by increasing
        cost), `results_path` and `pareto_path` (a PNG of the fronts,
        `mmfusion.search.costs.plot_pareto`); with
        `"oneshot"` also `supernet` (what `search_oneshot` returns, its cost
        included).

    Example (two quick trials on a small task of your own, see `Task`):

    >>> import keras
    >>> import numpy as np
    >>> from mmfusion.branches import tabular_mlp
    >>> rng = np.random.default_rng(0)
    >>> x = {"a": rng.normal(size=(64, 3)).astype("float32"),
    ...      "b": rng.normal(size=(64, 2)).astype("float32")}
    >>> y = (x["a"][:, 0] > 0).astype("int32")
    >>> task = Task({"a": tabular_mlp(3, units=(8,), name="a"),
    ...              "b": tabular_mlp(2, units=(8,), name="b")},
    ...             {"train": (x, y), "validation": (x, y), "test": (x, y)}, num_classes=2)
    >>> result = run_search(task, "random", trials=2, directory=str(getfixture("tmp_path")),
    ...                     epochs=1, fusions=["concat"], max_layers=1, pretrain_epochs=1,
    ...                     verbose=0)
    >>> keras.models.load_model(result["model_path"]).output_shape
    (None, 2)
    >>> sorted(k for k in result if k.endswith("accuracy"))
    ['test_accuracy', 'validation_accuracy']
    """
    task = load_task(task, seed) if isinstance(task, str) else task
    objective = check_objective(objective, task.head)
    if oracle == "oneshot" and task.head != "classification":
        raise ValueError(f"run_search: the one-shot supernet trains a classifier; task "
                         f"'{task.name}' has a {task.head} head: use oracle 'mfas', "
                         "'random' or 'bayesian'.")
    metric = metric_name(objective)
    presence = objective.name.startswith(PRESENCE_PREFIX)
    label = f"presence_{metric}" if presence else metric  # of the result's keys
    if modality_dropout is None:
        modality_dropout = 0.25 if presence else 0.0
    report = print if verbose else None
    settings = {
        "prepared": _prepared_key(task, pretrain_epochs, seed, 0.5)[1], "oracle": oracle,
        "trials": int(trials), "epochs": int(epochs),
        "batch_size": int(batch_size), "fusions": list(fusions), "max_layers": int(max_layers),
        "seed": int(seed), "units": list(units), "learning_rates": list(learning_rates),
        "objective": objective.name, "modality_dropout": float(modality_dropout)}
    if mfas_settings:
        settings["mfas"] = dict(mfas_settings)
    if oracle == "oneshot":
        settings.pop("trials")
        settings["supernet_epochs"] = int(supernet_epochs)
    check_settings(os.path.join(directory, f"{oracle}-settings.json"), settings,
                   overwrite=overwrite)
    prepared = prepare(task, directory, pretrain_epochs, seed=seed, report=report)
    features, labels = prepared.features, prepared.labels
    hypermodel = FusionHyperModel(feature_branches(features["train"]), task.num_classes,
                                  fusions=fusions, max_layers=max_layers, units=units,
                                  learning_rates=learning_rates, fit_verbose=0, head=task.head,
                                  presence=presence, modality_dropout=modality_dropout)
    supernet = None
    if oracle == "oneshot":
        supernet = search_oneshot(hypermodel.space, features["train"], labels["train"],
                                  task.num_classes, os.path.join(directory, "oneshot-supernet"),
                                  epochs=supernet_epochs, units=units[0],
                                  head_units=hypermodel.head_units, batch_size=batch_size,
                                  learning_rate=learning_rates[0], seed=seed,
                                  overwrite=overwrite, report=report)
    tuner = make_tuner(oracle, hypermodel, trials, directory, project_name=oracle,
                       seed=seed, overwrite=overwrite, report=report, objective=objective,
                       candidates_per_step=candidates_per_step,
                       architectures=supernet and [supernet["architecture"]],
                       mfas_settings=mfas_settings, measure_costs=True)
    x, validation_x = pack(features["train"]), pack(features["validation"])
    modalities = list(hypermodel.space.modalities)
    callbacks = list(callbacks or [])
    if presence:
        x, validation_x = with_presence(x, modalities), with_presence(validation_x, modalities)
        callbacks.insert(0, PresenceAveraged(validation_x, labels["validation"], modalities))
    tuner.search(x, labels["train"], epochs=epochs, batch_size=batch_size, callbacks=callbacks,
                 verbose=0, validation_data=(validation_x, labels["validation"]))
    entries = _trial_entries(tuner, objective, x)
    chosen = _choose(entries, objective, max_params)
    best_hp = tuner.oracle.trials[chosen["trial_id"]].hyperparameters
    model = hypermodel.with_branches(task.branches).build(best_hp)
    with warnings.catch_warnings():  # the trial checkpoints hold no optimizer state
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        transfer_weights(tuner.load_model(tuner.oracle.trials[chosen["trial_id"]]), model)
    model.optimizer.build(model.trainable_variables)  # saved built: reloads without warnings
    path = os.path.join(directory, f"best_{oracle}.keras")
    model.save(path)
    inputs, y = task.splits["test"]
    if presence:
        test_score = presence_averaged(model, inputs, y, modalities)[metric]
    else:
        test_score = model.evaluate(inputs, y, batch_size=256, verbose=0,
                                    return_dict=True)[metric]
    scores, direction = [e[objective.name] for e in entries], objective.direction
    pareto = {cost: [entries[i] for i in pareto_front(scores, [e[cost] for e in entries],
                                                      direction)]
              for cost in ("params", "latency_ms")}
    result = {
        "architecture": chosen["architecture"],
        "values": dict(best_hp.values),
        "objective": objective.name,
        f"validation_{label}": chosen[objective.name],
        f"test_{label}": float(test_score),
        "model_path": path,
        "trial_id": chosen["trial_id"], "params": chosen["params"],
        "latency_ms": chosen["latency_ms"], "max_params": max_params, "trials": entries,
        "pareto": pareto,
        "results_path": os.path.join(directory, f"results_{oracle}.json"),
        "pareto_path": os.path.join(directory, f"pareto_{oracle}.png"),
    }
    if supernet is not None:
        result["supernet"] = supernet
    write_json(result["results_path"], result)
    plot_pareto(entries, objective.name, direction, chosen=chosen["trial_id"],
                path=result["pareto_path"], title=f"{task.name}: {oracle} search")
    if verbose:
        print(f"best architecture{'' if max_params is None else f' (<= {max_params} params)'}: "
              f"{result['architecture']}")
        print(f"units={best_hp['units']} learning_rate={best_hp['learning_rate']} "
              f"validation {label} {result[f'validation_{label}']:.4f} "
              f"test {label} {result[f'test_{label}']:.4f} "
              f"({chosen['params']} params, {chosen['latency_ms']:.2f} ms per batch of "
              f"{LATENCY_BATCH})")
        for cost, front in pareto.items():
            print(f"Pareto front, {objective.name} vs {cost}: " + "; ".join(
                f"{e[objective.name]:.4f} at "
                + (f"{e[cost]:d}" if cost == "params" else f"{e[cost]:.3f} ms")
                + f" (id {e['trial_id']})" for e in front))
        print(f"best model (real branches + searched fusion): {path}; results: "
              f"{result['results_path']}; Pareto fronts: {result['pareto_path']}")
    return result


def _trial_entries(tuner, objective, x):
    """One dict per completed trial with a score: `trial_id`, `architecture`,
    the objective's value, `params` and `latency_ms`, in the order they ended.
    Trials that ended without costs (e.g. of an earlier tuner on the same
    folder without `measure_costs`) are measured now, on the training inputs `x`."""
    space, entries = tuner.hypermodel.space, []
    for trial_id in tuner.oracle.end_order:
        trial = tuner.oracle.trials[trial_id]
        if trial.status != "COMPLETED" or trial.score is None or not np.isfinite(trial.score):
            continue
        if all(trial.metrics.exists(cost) for cost in ("params", "latency_ms")):
            costs = {cost: trial.metrics.get_last_value(cost) for cost in ("params", "latency_ms")}
        else:
            costs = tuner.trial_costs(trial, x)
        entries.append({"trial_id": trial_id,
                        "architecture": space.describe(space.architecture(
                            trial.hyperparameters.values)),
                        objective.name: float(trial.score),
                        "params": int(costs["params"]),
                        "latency_ms": float(costs["latency_ms"])})
    return entries


def _choose(entries, objective, max_params=None):
    """The best entry (of `_trial_entries`), among those within `max_params`."""
    if not entries:
        raise ValueError("run_search: no trial completed with a finite score; see the "
                         "trials' messages in their trial.json files.")
    allowed = [e for e in entries if max_params is None or e["params"] <= max_params]
    if not allowed:
        fewest = min(e["params"] for e in entries)
        raise ParameterBudgetError(f"run_search: no completed trial has at most "
                                   f"max_params={max_params} parameters (the smallest has "
                                   f"{fewest}).")
    sign = 1.0 if objective.direction == "max" else -1.0
    return max(allowed, key=lambda e: sign * e[objective.name])
