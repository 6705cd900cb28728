"""End-to-end recipes: `python -m recipes.NAME --fusion NAME --epochs N`.

Every recipe module exposes `main(argv=None)`; `mmfusion train NAME ...`
dispatches to it. Each writes `metrics.json` and TensorBoard logs
(`logs/`) to its `--output` folder (default `runs/NAME-FUSION-PLACEMENT-sSEED`)
and prints where. The helpers below are what the recipes share.
"""

import argparse
import json
import os
import time
from pathlib import Path

import keras

# The FSDD copy next to the repository (`../shared/data/fsdd`), if any.
LOCAL_FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"


def default_fsdd_path():
    """`LOCAL_FSDD` if it exists, else None (the loader then downloads FSDD)."""
    return str(LOCAL_FSDD) if LOCAL_FSDD.is_dir() else None


def base_parser(name, description, fusion="concat", epochs=8, batch_size=32):
    """The arguments every recipe takes."""
    parser = argparse.ArgumentParser(prog=f"python -m recipes.{name}", description=description)
    parser.add_argument("--fusion", default=fusion,
                        help="registered fusion layer (mmfusion.fusion.available()); with "
                             "--placement late also 'average' or 'weighted'")
    parser.add_argument("--placement", default="intermediate",
                        choices=("early", "intermediate", "late"))
    parser.add_argument("--units", type=int, default=64, help="units of the fusion layer")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None,
                        help="output folder (default runs/NAME-FUSION-PLACEMENT-sSEED)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def output_dir(name, args):
    folder = args.output or os.path.join(
        "runs", f"{name}-{args.fusion}-{args.placement}-s{args.seed}")
    os.makedirs(folder, exist_ok=True)
    return folder


def train_and_report(name, model, train_ds, test_ds, args, extra=None, predict=None):
    """Compiles and fits `model`, evaluates it, writes `metrics.json` and
    TensorBoard logs under the output folder, prints where, returns the metrics.

    Args:
        name: recipe name.
        model: an uncompiled classifier with softmax outputs.
        train_ds, test_ds: `tf.data` datasets of `(inputs, labels)`.
        args: the parsed recipe arguments.
        extra: dict of more entries for the metrics, or a callable
            `extra(predicted_labels) -> dict` evaluated after training.
    """
    folder = output_dir(name, args)
    model.compile(keras.optimizers.Adam(args.learning_rate),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    logs = os.path.join(folder, "logs")
    start = time.time()
    history = model.fit(train_ds, validation_data=test_ds, epochs=args.epochs,
                        verbose=0 if args.quiet else 2, shuffle=False,  # tf.data shuffles
                        callbacks=[keras.callbacks.TensorBoard(logs)])
    seconds = time.time() - start
    loss, accuracy = model.evaluate(test_ds, verbose=0)
    metrics = {
        "recipe": name, "fusion": args.fusion, "placement": args.placement,
        "epochs": args.epochs, "seed": args.seed, "test_loss": float(loss),
        "test_accuracy": float(accuracy), "train_seconds": round(seconds, 1),
        "parameters": int(model.count_params()),
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
    }
    if callable(extra):
        extra = extra(model.predict(test_ds, verbose=0).argmax(axis=-1))
    metrics.update(extra or {})
    path = os.path.join(folder, "metrics.json")
    with open(path, "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"test accuracy {accuracy:.4f}; metrics: {path}; TensorBoard logs: {logs}")
    return metrics
