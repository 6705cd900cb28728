"""Fusion architecture search: MFAS vs RandomSearch vs BayesianOptimization, and
the speed-up of trials on cached frozen-branch features over end-to-end trials.

    python benchmarks/bench_search.py [--task av_digits] [--trials 15] [--seeds 0 1 2]

Prints JSON lines (one per measurement), then a table of the mean (± std over
seeds) best validation accuracy after k trials; writes `search_curves.png`
and `results.json` to `--output`. All searches share one set of pretrained,
frozen branches and their cached features (seed 0), so the oracles differ only
in the architectures they pick.
"""

import argparse
import json
import os
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmfusion.search.features import feature_branches, pack  # noqa: E402
from mmfusion.search.hypermodel import FusionHyperModel  # noqa: E402
from mmfusion.search.run import DEFAULT_FUSIONS, ORACLES, load_task, make_tuner, prepare  # noqa: E402


def emit(record):
    print(json.dumps(record), flush=True)
    return record


def time_trials(hypermodel, x, y, validation, epochs, batch_size, repeats):
    """Seconds per trial (build + fit) and per epoch after the first (no
    tracing), `repeats` times, of the architecture that fuses every branch's
    last tap (so end to end runs the whole branches)."""
    import keras_tuner

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.start)

    space = hypermodel.space
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)  # registers the space
    hp.values.update(space.values([[taps[-1] for taps in space.taps.values()]
                                   + [space.fusions[0], space.activations[0]]]))
    times, epoch_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        model = hypermodel.build(hp)
        model.fit(x, y, validation_data=validation, epochs=epochs, batch_size=batch_size,
                  verbose=0, callbacks=[EpochTimes()])
        times.append(time.perf_counter() - start)
        del epoch_times[-epochs]  # the first epoch includes tracing
    return times, epoch_times


def speedup(task, features, args):
    """End-to-end trials (fresh trainable branches, raw inputs) vs cached-feature trials."""
    labels = {s: y for s, (_, y) in task.splits.items()}
    cached = FusionHyperModel(feature_branches(features["train"]), task.num_classes,
                              fusions=["concat"], max_layers=1)
    fresh = {m: keras.models.clone_model(b) for m, b in task.branches.items()}
    for branch in fresh.values():  # new weights, trainable: trained end to end
        branch.trainable = True
    end_to_end = cached.with_branches(fresh)
    raw = {s: x for s, (x, _) in task.splits.items()}
    common = dict(epochs=args.epochs, batch_size=args.batch_size, repeats=2)
    t_e2e, e_e2e = time_trials(end_to_end, raw["train"], labels["train"],
                               (raw["validation"], labels["validation"]), **common)
    t_cached, e_cached = time_trials(cached, pack(features["train"]), labels["train"],
                                     (pack(features["validation"]), labels["validation"]),
                                     **common)
    return emit({"measure": "seconds_per_trial", "epochs": args.epochs,
                 "end_to_end": t_e2e, "cached": t_cached,
                 "speedup_per_trial": float(np.mean(t_e2e) / np.mean(t_cached)),
                 "end_to_end_epoch": e_e2e, "cached_epoch": e_cached,
                 "speedup_per_epoch": float(np.median(e_e2e) / np.median(e_cached))})


def search_curve(task, features, oracle, seed, args):
    """Best validation accuracy after each trial of one search."""
    labels = {s: y for s, (_, y) in task.splits.items()}
    hypermodel = FusionHyperModel(feature_branches(features["train"]), task.num_classes,
                                  fusions=args.fusions, max_layers=args.max_layers, fit_verbose=0)
    tuner = make_tuner(oracle, hypermodel, args.trials, os.path.join(args.output, "searches"),
                       project_name=f"{oracle}-s{seed}", seed=seed + 1, overwrite=True)
    start = time.perf_counter()
    tuner.search(pack(features["train"]), labels["train"], epochs=args.epochs,
                 batch_size=args.batch_size, verbose=0,
                 validation_data=(pack(features["validation"]), labels["validation"]))
    trials = [tuner.oracle.trials[i] for i in sorted(tuner.oracle.trials)]
    scores = [t.score if t.score is not None else 0.0 for t in trials]
    return emit({"measure": "search", "oracle": oracle, "seed": seed,
                 "seconds": time.perf_counter() - start, "scores": scores,
                 "best_so_far": np.maximum.accumulate(scores).tolist()})


def table(curves, trials):
    checkpoints = sorted({k for k in (1, 3, 5, 10, 15, 20, 30, trials) if k <= trials})
    lines = ["| oracle | " + " | ".join(f"best after {k}" for k in checkpoints) + " |",
             "|---|" + "---|" * len(checkpoints)]
    for oracle in ORACLES:
        runs = np.array([c["best_so_far"] for c in curves if c["oracle"] == oracle])
        cells = [f"{runs[:, k - 1].mean():.4f} ± {runs[:, k - 1].std():.4f}" for k in checkpoints]
        lines.append(f"| {oracle} ({len(runs)} seeds) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for oracle in ORACLES:
        runs = np.array([c["best_so_far"] for c in curves if c["oracle"] == oracle])
        k = np.arange(1, runs.shape[1] + 1)
        ax.plot(k, runs.mean(0), label=oracle)
        ax.fill_between(k, runs.min(0), runs.max(0), alpha=0.2)
    ax.set_xlabel("trials")
    ax.set_ylabel("best validation accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="av_digits", choices=("synthetic", "av_digits"))
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-layers", type=int, default=2)
    parser.add_argument("--fusions", nargs="+", default=list(DEFAULT_FUSIONS))
    parser.add_argument("--output", default=os.path.join("runs", "bench_search"))
    parser.add_argument("--skip-speedup", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    args = parser.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)

    task = load_task(args.task, seed=0)
    start = time.perf_counter()
    features = prepare(task, os.path.join(args.output, "prepared"))
    emit({"measure": "prepare_seconds", "task": args.task,
          "seconds": time.perf_counter() - start,
          "taps": {m: {t: x.shape[1] for t, x in taps.items()}
                   for m, taps in features["train"].items()}})
    results = {"task": args.task, "trials": args.trials, "epochs": args.epochs}
    if not args.skip_speedup:
        results["speedup"] = speedup(task, features, args)
    if not args.skip_search:
        curves = [search_curve(task, features, oracle, seed, args)
                  for seed in args.seeds for oracle in ORACLES]
        results["curves"] = curves
        results["table"] = table(curves, args.trials)
        print(results["table"])
        plot(curves, os.path.join(args.output, "search_curves.png"))
    with open(os.path.join(args.output, "results.json" if not args.skip_search
                           else "speedup.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
