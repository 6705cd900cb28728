"""A whole fusion search on a named task, as `mmfusion search` runs it.

`load_task` gives a task's branches and splits; `prepare` pretrains and
freezes the branches (weights kept in the search folder) and caches their
tap features; `make_tuner` builds an MFAS, random or Bayesian tuner over a
`FusionHyperModel` on those features; `run_search` does all of it, searches,
and exports the best fusion network on the real branches as a `.keras` model.
"""

import os
import warnings
from dataclasses import dataclass

import numpy as np

from mmfusion import tasks
from mmfusion.search.features import (FeatureCache, feature_branches, pack, pretrain_branch,
                                      transfer_weights)
from mmfusion.search.baselines import BayesianOptimizationOracle, RandomSearchOracle
from mmfusion.search.hypermodel import FusionHyperModel, FusionTuner, MFASTuner

ORACLES = ("mfas", "random", "bayesian")
DEFAULT_FUSIONS = ("concat", "gmu", "lmf", "mfb")

__all__ = ["Task", "load_task", "make_tuner", "prepare", "run_search"]


@dataclass
class Task:
    """A classification task for the search.

    Attributes:
        branches: dict modality -> untrained branch model.
        splits: dict `"train"`, `"validation"`, `"test"` -> `(inputs dict, labels)`.
        num_classes: number of classes.

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
        A `Task`.

    Example:

    >>> task = load_task("synthetic")
    >>> {split: len(y) for split, (_, y) in task.splits.items()}, task.num_classes
    ({'train': 1600, 'validation': 400, 'test': 1000}, 2)
    """
    definition = tasks.get(name)
    data = definition.data(data_dir=data_dir, seed=seed)
    return Task(definition.branches(data, width=width), data.splits, definition.num_outputs)


def prepare(task, directory, pretrain_epochs=10, verbose=0):
    """Pretrains (or reloads) and freezes every branch, and caches its taps.

    Branch weights are kept in `directory/branches/` (one file per modality
    and number of pretraining epochs), features in `directory/features/`, so
    a resumed search sees the same features. Use one directory per task.

    Returns:
        `{split: {modality: {tap: array}}}` for the task's splits.

    Example:

    >>> task = load_task("synthetic")
    >>> features = prepare(task, str(getfixture("tmp_path")), pretrain_epochs=1)
    >>> {tap: x.shape for tap, x in features["validation"]["visual"].items()}
    {'dense_1': (400, 32), 'dense_2': (400, 16), 'vector': (400, 16)}
    """
    x, y = task.splits["train"]
    for m, branch in task.branches.items():
        path = os.path.join(directory, "branches", f"{m}-pretrained{pretrain_epochs}.weights.h5")
        if os.path.exists(path):
            branch.load_weights(path)
            branch.trainable = False
        else:
            pretrain_branch(branch, x[m], y, task.num_classes, epochs=pretrain_epochs,
                            verbose=verbose)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            branch.save_weights(path)
    cache = FeatureCache(os.path.join(directory, "features"))
    return {split: cache.features(task.branches, inputs)
            for split, (inputs, _) in task.splits.items()}


def make_tuner(oracle, hypermodel, max_trials, directory, project_name="search", seed=0,
               overwrite=False, objective="val_accuracy", report=None):
    """A `FusionTuner` with an MFAS, random-search or Bayesian-optimization oracle.

    Every oracle takes `seed` as a seed (0 included: identical runs propose
    identical trials). MFAS sizes its steps from the budget (see
    `MFASOracle`); Bayesian optimization starts with
    `mmfusion.search.baselines.default_initial_points(max_trials)` random
    trials. `report` (e.g. `print`) gets one progress line per trial.

    Example:

    >>> from mmfusion.branches import tabular_mlp
    >>> hypermodel = FusionHyperModel(
    ...     {"a": tabular_mlp(3, name="a"), "b": tabular_mlp(2, name="b")}, num_classes=2)
    >>> tuner = make_tuner("random", hypermodel, 4, str(getfixture("tmp_path")))
    >>> type(tuner.oracle).__name__, tuner.oracle.max_trials
    ('RandomSearchOracle', 4)
    """
    common = dict(directory=directory, project_name=project_name, overwrite=overwrite,
                  report=report)
    if oracle == "mfas":
        return MFASTuner(hypermodel, objective=objective, max_trials=max_trials, seed=seed,
                         **common)
    oracles = {"random": RandomSearchOracle, "bayesian": BayesianOptimizationOracle}
    if oracle not in oracles:
        raise ValueError(f"Unknown oracle '{oracle}'; available: {', '.join(ORACLES)}.")
    instance = oracles[oracle](objective=objective, max_trials=max_trials, seed=seed)
    return FusionTuner(instance, hypermodel, **common)


def run_search(task, oracle="mfas", trials=10, directory="mmfusion-search", epochs=5,
               batch_size=64, fusions=DEFAULT_FUSIONS, max_layers=2, seed=0,
               pretrain_epochs=10, overwrite=False, callbacks=None, verbose=1):
    """Searches a fusion architecture on cached features and exports the best model.

    Args:
        task: a task name (see `load_task`) or a `Task`.
        oracle: `"mfas"`, `"random"` or `"bayesian"`.
        trials: number of trials.
        directory: folder of the search (branches, features, trials, best model).
        epochs: training epochs of each trial.
        batch_size: batch size of each trial.
        fusions: candidate fusion-layer names.
        max_layers: maximum number of fusion layers.
        seed: seed of the data split and the oracle.
        pretrain_epochs: epochs of each branch's pretraining.
        overwrite: start the search again instead of resuming it.
        callbacks: Keras callbacks of every trial (a plain
            `keras.callbacks.TensorBoard` gets KerasTuner's HParams logging).
        verbose: 0 silent; 1 one line per trial and a summary.

    Returns:
        A dict: `architecture` (readable), `values` (best hyperparameters),
        `validation_accuracy`, `test_accuracy` (of the exported model on the
        real branches) and `model_path`.

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
    """
    task = load_task(task, seed) if isinstance(task, str) else task
    features = prepare(task, directory, pretrain_epochs)
    hypermodel = FusionHyperModel(feature_branches(features["train"]), task.num_classes,
                                  fusions=fusions, max_layers=max_layers, fit_verbose=0)
    tuner = make_tuner(oracle, hypermodel, trials, directory, project_name=oracle,
                       seed=seed, overwrite=overwrite, report=print if verbose else None)
    labels = {split: y for split, (_, y) in task.splits.items()}
    tuner.search(pack(features["train"]), labels["train"], epochs=epochs,
                 batch_size=batch_size, callbacks=list(callbacks or []), verbose=0,
                 validation_data=(pack(features["validation"]), labels["validation"]))
    best_hp = tuner.get_best_hyperparameters()[0]
    model = hypermodel.with_branches(task.branches).build(best_hp)
    with warnings.catch_warnings():  # the trial checkpoints hold no optimizer state
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        transfer_weights(tuner.get_best_models()[0], model)
    model.optimizer.build(model.trainable_variables)  # saved built: reloads without warnings
    path = os.path.join(directory, f"best_{oracle}.keras")
    model.save(path)
    inputs, y = task.splits["test"]
    result = {
        "architecture": hypermodel.space.describe(hypermodel.space.architecture(best_hp.values)),
        "values": dict(best_hp.values),
        "validation_accuracy": float(tuner.oracle.get_best_trials()[0].score),
        "test_accuracy": float(model.evaluate(inputs, y, batch_size=256, verbose=0,
                                              return_dict=True)["accuracy"]),
        "model_path": path,
    }
    if verbose:
        print(f"best architecture: {result['architecture']}")
        print(f"units={best_hp['units']} learning_rate={best_hp['learning_rate']} "
              f"validation accuracy {result['validation_accuracy']:.4f} "
              f"test accuracy {result['test_accuracy']:.4f}")
        print(f"best model (real branches + searched fusion): {path}")
    return result

