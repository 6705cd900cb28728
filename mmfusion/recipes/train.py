"""Training a fusion model on a registered task, end to end.

`train_task` builds the task's branches, fuses them (`build_fusion_model`),
fits on the training split while monitoring the validation split (carved out
of the training data, never the test split), evaluates on the test split and
writes, into its output folder, the trained model (`model.keras`), the
metrics (`metrics.json`) and TensorBoard logs (`logs/`). `main` is its
command line: `mmfusion train TASK ...` and `python -m recipes.TASK ...`.
"""

import argparse
import os
import time

from mmfusion import tasks
from mmfusion.files import save_model, write_json

# Settings of `train_task` that a task's `defaults` may change.
DEFAULTS = {"fusion": "concat", "placement": "intermediate", "units": 64, "epochs": 8,
            "batch_size": 32, "learning_rate": 1e-3, "head_units": (64,), "head_dropout": 0.0}
LOSSES = {"classification": ("sparse_categorical_crossentropy", "accuracy"),
           "regression": ("mse", "mae"),
           "multilabel": ("binary_crossentropy", "binary_accuracy")}

__all__ = ["DEFAULTS", "LOSSES", "build_parser", "fit_and_evaluate", "main", "settings", "train_task",
           "write_metrics"]


def settings(task, **overrides):
    """The training settings of `task`: `DEFAULTS`, then the task's `defaults`, then `overrides`.

    Example:

    >>> settings("synthetic", epochs=3)["fusion"], settings("synthetic", epochs=3)["epochs"]
    ('gmu', 3)
    >>> settings("synthetic", epoch=3)
    Traceback (most recent call last):
    ...
    ValueError: Unknown training setting(s) ['epoch'] for task 'synthetic'; settings: batch_size, \
epochs, fusion, head_dropout, head_units, learning_rate, placement, units.
    """
    task = tasks.get(task) if isinstance(task, str) else task
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"Unknown training setting(s) {unknown} for task '{task.name}'; "
                         f"settings: {', '.join(sorted(DEFAULTS))}.")
    return {**DEFAULTS, **task.defaults, **overrides}


def check_fusion(fusion, placement):
    """Raises a `ValueError` listing the choices for an unknown placement or fusion."""
    from mmfusion import compose
    from mmfusion import fusion as registry

    if placement not in compose.PLACEMENTS:
        raise ValueError(f"Unknown placement '{placement}'; available: "
                         f"{', '.join(compose.PLACEMENTS)}.")
    choices = registry.available() + (list(compose.LATE_COMBINERS) if placement == "late" else [])
    if fusion not in choices:
        raise ValueError(f"Unknown fusion '{fusion}' for placement '{placement}'; "
                         f"available: {', '.join(choices)}.")


def train_task(task, seed=0, data_dir=None, output=None, modalities=None, limit=None,
               options=None, verbose=2, **overrides):
    """Trains and evaluates a fusion model on a task; saves the model and its metrics.

    Args:
        task: a registered task name (`mmfusion.tasks.available()`) or a `Task`.
        seed: seed of the data, the validation split and the weights.
        data_dir: folder of datasets (None: `$MMFUSION_DATA`, then Keras's cache).
        output: output folder (default `runs/TASK-FUSION-PLACEMENT-sSEED`).
        modalities: the modalities to use (default all); with one modality
            there is no fusion (`fusion` becomes `"none"`).
        limit: keep `limit` random training and test examples (smoke tests).
        options: dict of keyword arguments of the task's `load` (its
            `Task.options`, or e.g. `fsdd=` preloaded audio for the
            audio-visual tasks).
        verbose: 0 silent, 1 a summary, 2 also one line per epoch.
        **overrides: training settings (see `settings` and `DEFAULTS`):
            `fusion` (a registered fusion layer; with `placement="late"` also
            `"average"` or `"weighted"`), `placement`, `units` (of the fusion
            layer), `epochs`, `batch_size`, `learning_rate` (Adam),
            `head_units`, `head_dropout`.

    Returns:
        The metrics dict, also written to `OUTPUT/metrics.json`: the settings,
        `validation_*` and `test_*` metrics of the trained model (loss and
        accuracy for classification), the per-epoch `history` (its `val_*`
        entries are on the validation split), the task's breakdown of the
        test results, `parameters`, `train_seconds` and `model_path`.

    Example:

    >>> import keras
    >>> out = str(getfixture("tmp_path") / "run")
    >>> metrics = train_task("synthetic", output=out, epochs=2, verbose=0,
    ...                      options={"n_train": 200, "n_test": 100})
    >>> sorted(os.listdir(out))
    ['logs', 'metrics.json', 'model.keras']
    >>> metrics["fusion"], len(metrics["history"]["val_loss"])
    ('gmu', 2)
    >>> keras.saving.load_model(metrics["model_path"]).count_params() == metrics["parameters"]
    True
    """
    import keras
    import numpy as np

    from mmfusion.compose import build_fusion_model
    from mmfusion.datasets.pipelines import make_dataset

    task = tasks.get(task) if isinstance(task, str) else task
    config = settings(task, **overrides)
    modalities = list(modalities or task.modalities)
    unknown = sorted(set(modalities) - set(task.modalities))
    if unknown:
        raise ValueError(f"Unknown modalities {unknown} for task '{task.name}'; "
                         f"available: {', '.join(task.modalities)}.")
    if len(modalities) == 1:
        config.update(fusion="none", placement="intermediate")
    else:
        check_fusion(config["fusion"], config["placement"])
    folder = output or os.path.join(
        "runs", f"{task.name}-{config['fusion']}-{config['placement']}-s{seed}")
    os.makedirs(folder, exist_ok=True)

    keras.utils.set_random_seed(seed)
    data = task.data(data_dir=data_dir, seed=seed, limit=limit, **(options or {}))
    branches = task.branches(data)
    splits = {name: ({m: x[m] for m in modalities}, y) for name, (x, y) in data.splits.items()}
    model = build_fusion_model(
        {m: branches[m] for m in modalities},
        None if config["fusion"] == "none" else config["fusion"], head=task.head,
        num_outputs=task.num_outputs, units=config["units"], placement=config["placement"],
        head_units=tuple(config["head_units"]), head_dropout=config["head_dropout"],
        name=f"{task.name}_{config['fusion']}")
    datasets = {name: make_dataset(x, y, config["batch_size"] if name == "train" else 256,
                                   shuffle=name == "train", seed=seed)
                for name, (x, y) in splits.items()}
    metrics = {"task": task.name, "seed": seed, "modalities": modalities, **config,
               "limit": limit,  # load options that are not settings (preloaded data) are left out
               "options": {k: v for k, v in (options or {}).items() if k in task.options}}
    metrics.update(fit_and_evaluate(model, datasets, task.head, folder, config["learning_rate"],
                                    config["epochs"], verbose))
    if task.breakdown is not None:
        metrics.update(task.breakdown(data.test, np.asarray(model.predict(datasets["test"],
                                                                          verbose=0))))
    write_metrics(folder, metrics, task.head, verbose)
    return metrics


def fit_and_evaluate(model, datasets, head, folder, learning_rate=1e-3, epochs=8, verbose=2):
    """Compiles, fits, saves and evaluates a model, as `train_task` does.

    Compiles with Adam and the head's loss and metric (`LOSSES`), fits on
    `datasets["train"]` while monitoring `datasets["validation"]` (its
    `val_*` history), with TensorBoard logs in `folder/logs`, saves the
    model atomically to `folder/model.keras`, then evaluates it on the
    validation and test datasets.

    Args:
        model: an uncompiled functional model (e.g. from `build_fusion_model`).
        datasets: dict `"train"`, `"validation"`, `"test"` -> batched
            `tf.data.Dataset` of `(inputs, labels)` (the training one shuffled).
        head: `"classification"`, `"regression"` or `"multilabel"`.
        folder: output folder (created if needed).
        learning_rate: Adam's learning rate.
        epochs: training epochs.
        verbose: 0 or 1 silent fit, 2 one line per epoch.

    Returns:
        A dict: `validation_*` and `test_*` metrics, `train_seconds`,
        `parameters`, the per-epoch `history` and `model_path`.

    Example:

    >>> import keras, numpy as np
    >>> from mmfusion.datasets.pipelines import make_dataset
    >>> keras.utils.set_random_seed(0)
    >>> inputs = keras.Input((2,), name="x")
    >>> model = keras.Model({"x": inputs}, keras.layers.Dense(2)(inputs))
    >>> x = np.random.rand(40, 2).astype("float32")
    >>> ds = {k: make_dataset({"x": x}, (x[:, 0] > 0.5).astype(int), 8) for k in
    ...       ("train", "validation", "test")}
    >>> out = fit_and_evaluate(model, ds, "classification", str(getfixture("tmp_path")),
    ...                        epochs=2, verbose=0)
    >>> sorted(k for k in out if k.startswith(("validation", "test")))
    ['test_accuracy', 'test_loss', 'validation_accuracy', 'validation_loss']
    >>> len(out["history"]["val_loss"]), os.path.basename(out["model_path"])
    (2, 'model.keras')
    """
    import keras

    os.makedirs(folder, exist_ok=True)
    loss, metric = LOSSES[head]
    model.compile(keras.optimizers.Adam(learning_rate), loss, metrics=[metric])
    start = time.time()
    history = model.fit(datasets["train"], validation_data=datasets["validation"],
                        epochs=epochs, verbose=2 if verbose >= 2 else 0,
                        shuffle=False,  # tf.data shuffles
                        callbacks=[keras.callbacks.TensorBoard(os.path.join(folder, "logs"))])
    seconds = time.time() - start
    model_path = os.path.join(folder, "model.keras")
    save_model(model, model_path)
    metrics = {}
    for name in ("validation", "test"):
        scores = model.evaluate(datasets[name], verbose=0, return_dict=True)
        metrics.update({f"{name}_{k}": float(v) for k, v in scores.items()})
    metrics.update(train_seconds=round(seconds, 1), parameters=int(model.count_params()),
                   history={k: [float(v) for v in vs] for k, vs in history.history.items()},
                   model_path=model_path)
    return metrics


def write_metrics(folder, metrics, head, verbose=1):
    """Writes `folder/metrics.json` atomically; with `verbose`, prints a summary line.

    Example:

    >>> folder = str(getfixture("tmp_path"))
    >>> write_metrics(folder, {"validation_mae": 0.5, "test_mae": 0.25,
    ...                        "model_path": "m.keras"}, "regression")  # doctest: +ELLIPSIS
    validation mae 0.5000, test mae 0.2500; model: m.keras; metrics: .../metrics.json; \
TensorBoard logs: .../logs
    """
    path = os.path.join(folder, "metrics.json")
    write_json(path, metrics)
    if verbose:
        metric = LOSSES[head][1]
        scores = ", ".join(f"{name} {metric} {metrics[f'{name}_{metric}']:.4f}"
                           for name in ("validation", "test"))
        print(f"{scores}; model: {metrics['model_path']}; metrics: {path}; "
              f"TensorBoard logs: {os.path.join(folder, 'logs')}")


def build_parser(task, prog=None):
    """The command-line parser of `train_task` for one task (defaults shown in `--help`).

    Example:

    >>> args = build_parser("av_digits").parse_args(["--epochs", "2", "--p-degrade", "0.3"])
    >>> args.epochs, args.fusion, args.p_degrade, args.data_dir
    (2, 'concat', 0.3, None)
    """
    task = tasks.get(task) if isinstance(task, str) else task
    config = settings(task)
    parser = argparse.ArgumentParser(
        prog=prog or f"mmfusion train {task.name}",
        description=f"Trains a fusion model on {task.name}: {task.description}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--fusion", default=config["fusion"],
                        help="registered fusion layer (mmfusion list); with --placement late "
                             "also 'average' or 'weighted'")
    parser.add_argument("--placement", default=config["placement"],
                        help="early, intermediate or late fusion")
    parser.add_argument("--units", type=int, default=config["units"],
                        help="units of the fusion layer")
    parser.add_argument("--epochs", type=int, default=config["epochs"], help="training epochs")
    parser.add_argument("--batch-size", type=int, default=config["batch_size"], help="batch size")
    parser.add_argument("--learning-rate", type=float, default=config["learning_rate"],
                        help="Adam learning rate")
    parser.add_argument("--modalities", nargs="+", default=list(task.modalities),
                        choices=task.modalities, help="one modality: no fusion")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, split and weights")
    parser.add_argument("--data-dir", default=None,
                        help="folder of datasets holding fsdd/; None: $MMFUSION_DATA, else "
                             "Keras's cache (downloading if needed)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only N random training and N test examples (smoke tests)")
    parser.add_argument("--output", default=None,
                        help="output folder; None: runs/TASK-FUSION-PLACEMENT-sSEED")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    for name, (default, text) in task.options.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default,
                            help=text)
    return parser


def main(task, argv=None, prog=None):
    """Parses `argv` (see `build_parser`), runs `train_task`, returns its metrics.

    A wrong fusion or placement name exits with a message listing the choices.

    Example:

    >>> out = str(getfixture("tmp_path"))
    >>> metrics = main("synthetic", ["--epochs", "1", "--n-train", "100", "--n-test", "50",
    ...                              "--output", out, "--quiet"])  # doctest: +ELLIPSIS
    validation accuracy ..., test accuracy ...; model: .../model.keras; metrics: ...
    """
    task = tasks.get(task) if isinstance(task, str) else task
    parser = build_parser(task, prog)
    args = parser.parse_args(argv)
    options = {name: getattr(args, name) for name in task.options}
    overrides = {k: getattr(args, k) for k in DEFAULTS if hasattr(args, k)}
    if len(args.modalities) > 1:
        try:
            check_fusion(args.fusion, args.placement)
        except ValueError as error:
            parser.error(str(error))
    return train_task(task, seed=args.seed, data_dir=args.data_dir, output=args.output,
                      modalities=args.modalities, limit=args.limit, options=options,
                      verbose=1 if args.quiet else 2, **overrides)
