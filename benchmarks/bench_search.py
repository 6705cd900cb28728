"""Fusion architecture search: MFAS vs RandomSearch vs BayesianOptimization, and
the speed-up of trials on cached frozen-branch features over end-to-end trials.

    python benchmarks/bench_search.py [--task av_digits] [--trials 15] [--seeds 0 1 2]
    python benchmarks/bench_search.py --skip-search --widths 1 4   # the speed-up only
    python benchmarks/bench_search.py --skip-search --skip-speedup --joint 1 8 16

Prints JSON lines (one per measurement), then a table of the mean (± std over
seeds) best validation accuracy after k trials; writes `search_curves.png`
and `results.json` to `--output`. The speed-up compares, side by side and in
alternating order, one trial (build + fit, `--epochs`) on cached features, on
the frozen branches without the cache, and end to end (fresh branches), in
wall and CPU seconds, for branches of each `--widths` multiplier; then how
long end-to-end training takes to reach the cached trial's accuracy. All
searches share one set of pretrained, frozen branches and their cached
features (seed 0), so the oracles differ only in the architectures they pick.
`--joint K ...` times the same random search (`--trials` trials) with K
candidates trained together per step (`FusionTuner(candidates_per_step=K)`),
the values of K in alternating order, and reports trials per CPU-second and
per wall-second next to K = 1's, with the best validation accuracy (the same
proposals, so it should match).
"""

import argparse
import json
import os
import resource
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmfusion.files import write_json  # noqa: E402
from mmfusion.search.features import feature_branches, pack  # noqa: E402
from mmfusion.search.hypermodel import FusionHyperModel  # noqa: E402
from mmfusion.search.run import DEFAULT_FUSIONS, load_task, make_tuner, prepare  # noqa: E402
from mmfusion.search import run  # noqa: E402

# Oracles with a best-so-far curve over trials (a one-shot search trains a supernet, then one trial).
ORACLES = tuple(o for o in run.ORACLES if o != "oneshot")


def emit(record):
    print(json.dumps(record), flush=True)
    return record


def cpu_seconds():
    """CPU time of this process, all threads (steadier than wall time on a busy machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class EpochClock(keras.callbacks.Callback):
    """Wall and CPU seconds since `start` at the end of every epoch, and `val_accuracy`."""

    def __init__(self, start):
        super().__init__()
        self.start = start
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        wall, cpu = self.start
        self.epochs.append((time.perf_counter() - wall, cpu_seconds() - cpu,
                            float(logs["val_accuracy"])))


def trial(hypermodel, data, epochs, batch_size):
    """One trial (build + fit) of the architecture fusing every branch's last
    tap with concatenation, the one whose end-to-end trial runs the whole
    branches. Returns the `EpochClock` records of its epochs."""
    import keras_tuner

    space = hypermodel.space
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)  # registers the space
    hp.values.update(space.values([[taps[-1] for taps in space.taps.values()]
                                   + [space.fusions[0], space.activations[0]]]))
    clock = EpochClock((time.perf_counter(), cpu_seconds()))
    model = hypermodel.build(hp)
    (x, y), validation = data
    model.fit(x, y, validation_data=validation, epochs=epochs, batch_size=batch_size,
              verbose=0, callbacks=[clock])
    return clock.epochs


def speedup(task, prepared, fresh, width, args):
    """Seconds per trial on cached features vs on the frozen branches (no
    cache) vs end to end (`fresh`: the same branches, never trained), and the
    time end-to-end training needs to reach the cached trial's validation
    accuracy."""
    features, labels = prepared.features, prepared.labels
    packed = {s: pack(f) for s, f in features.items()}
    raw = {s: x for s, (x, _) in task.splits.items()}
    raw["train"] = {m: x[prepared.parts["search"]] for m, x in raw["train"].items()}
    cached = FusionHyperModel(feature_branches(features["train"]), task.num_classes,
                              fusions=["concat"], max_layers=1)
    modes = {  # mode -> (hypermodel, ((x, y), validation data))
        mode: (hypermodel, ((inputs["train"], labels["train"]),
                            (inputs["validation"], labels["validation"])))
        for mode, hypermodel, inputs in (
            ("cached", cached, packed),
            ("frozen", cached.with_branches(task.branches), raw),  # pretrained, frozen, uncached
            ("end_to_end", cached.with_branches(fresh), raw))
    }
    runs = {mode: [] for mode in modes}
    for repeat in range(args.repeats):  # alternate the order: the machine's load drifts
        for mode in (list(modes) if repeat % 2 == 0 else list(modes)[::-1]):
            runs[mode].append(trial(*modes[mode], args.epochs, args.batch_size))
    summary = {mode: {"wall": float(np.median([r[-1][0] for r in rs])),
                      "cpu": float(np.median([r[-1][1] for r in rs])),
                      "val_accuracy": float(np.mean([max(e[2] for e in r) for r in rs]))}
               for mode, rs in runs.items()}
    # End to end until it matches what a cached trial reaches in `epochs` epochs.
    long_run = trial(*modes["end_to_end"], args.match_epochs, args.batch_size)
    target = summary["cached"]["val_accuracy"]
    reached = next((i for i, e in enumerate(long_run) if e[2] >= target), None)
    # Not reached: the time of all `match_epochs` epochs bounds the speed-up from below.
    wall, cpu, _ = long_run[-1 if reached is None else reached]
    match = {"target_val_accuracy": target, "reached": reached is not None,
             "epochs": len(long_run) if reached is None else reached + 1,
             "best_val_accuracy": max(e[2] for e in long_run), "wall": wall, "cpu": cpu,
             "speedup_wall": wall / summary["cached"]["wall"],
             "speedup_cpu": cpu / summary["cached"]["cpu"],
             "speedup_is_lower_bound": reached is None}
    ratios = {f"{mode}_over_cached_{clock}": summary[mode][clock] / summary["cached"][clock]
              for mode in ("frozen", "end_to_end") for clock in ("wall", "cpu")}
    return emit({"measure": "seconds_per_trial", "width": width, "epochs": args.epochs,
                 "trials": summary, **ratios, "end_to_end_to_match_cached": match})


def search_hypermodel(task, features, args):
    """The searched space over cached features (units and learning rate fixed)."""
    return FusionHyperModel(feature_branches(features["train"]), task.num_classes,
                            fusions=args.fusions, max_layers=args.max_layers, units=(64,),
                            learning_rates=(1e-3,), fit_verbose=0)


def joint_speed(task, prepared, args):
    """Trials per CPU- and wall-second of one random search for each
    `candidates_per_step` in `args.joint` (alternating order, `args.repeats`)."""
    features, labels = prepared.features, prepared.labels
    runs = {k: [] for k in args.joint}
    for repeat in range(args.repeats):
        for k in (args.joint if repeat % 2 == 0 else args.joint[::-1]):
            hypermodel = search_hypermodel(task, features, args)
            tuner = make_tuner("random", hypermodel, args.trials,
                               os.path.join(args.output, "joint"), project_name=f"k{k}",
                               seed=repeat, overwrite=True, candidates_per_step=k)
            wall, cpu = time.perf_counter(), cpu_seconds()
            tuner.search(pack(features["train"]), labels["train"], epochs=args.epochs,
                         batch_size=args.batch_size, verbose=0,
                         validation_data=(pack(features["validation"]), labels["validation"]))
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            best = max(t.score or 0.0 for t in tuner.oracle.trials.values())
            runs[k].append({"wall": wall, "cpu": cpu, "best_val_accuracy": best})
    summary = {str(k): {"trials_per_cpu_second": float(np.median([args.trials / r["cpu"]
                                                                    for r in rs])),
                        "trials_per_wall_second": float(np.median([args.trials / r["wall"]
                                                                     for r in rs])),
                        "best_val_accuracy": float(np.mean([r["best_val_accuracy"] for r in rs])),
                        "runs": rs}
               for k, rs in runs.items()}
    reference = summary[str(args.joint[0])]
    for k in summary.values():
        k["cpu_ratio"] = k["trials_per_cpu_second"] / reference["trials_per_cpu_second"]
        k["wall_ratio"] = k["trials_per_wall_second"] / reference["trials_per_wall_second"]
    return emit({"measure": "joint_training", "trials": args.trials, "epochs": args.epochs,
                 "reference_candidates_per_step": args.joint[0], "candidates_per_step": summary})


def search_curve(task, prepared, oracle, seed, args):
    """Best validation accuracy after each trial of one search."""
    features, labels = prepared.features, prepared.labels
    hypermodel = search_hypermodel(task, features, args)
    tuner = make_tuner(oracle, hypermodel, args.trials, os.path.join(args.output, "searches"),
                       project_name=f"{oracle}-s{seed}", seed=seed, overwrite=True)
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
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 4],
                        help="branch width multipliers of the speed-up measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--match-epochs", type=int, default=30,
                        help="end-to-end epochs allowed to match a cached trial's accuracy")
    parser.add_argument("--skip-speedup", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--joint", type=int, nargs="+", default=None,
                        help="candidates_per_step values to time (the first is the reference)")
    args = parser.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)

    task = load_task(args.task, seed=0)
    start = time.perf_counter()
    prepared = prepare(task, args.output, report=print)
    emit({"measure": "prepare_seconds", "task": args.task,
          "seconds": time.perf_counter() - start,
          "taps": {m: {t: x.shape[1] for t, x in taps.items()}
                   for m, taps in prepared.features["train"].items()}})
    results = {"task": args.task, "trials": args.trials, "epochs": args.epochs}
    if not args.skip_speedup:
        # A clone of a frozen branch keeps its layers frozen even after
        # `clone.trainable = True`: end to end starts from never-trained branches.
        results["speedup"] = []
        for width in args.widths:
            pretrained = task if width == 1 else load_task(args.task, seed=0, width=width)
            cached = prepared if width == 1 else prepare(pretrained, args.output, report=print)
            fresh = load_task(args.task, seed=0, width=width).branches
            results["speedup"].append(speedup(pretrained, cached, fresh, width, args))
    if args.joint:
        results["joint"] = joint_speed(task, prepared, args)
    if not args.skip_search:
        curves = [search_curve(task, prepared, oracle, seed, args)
                  for seed in args.seeds for oracle in ORACLES]
        results["curves"] = curves
        results["table"] = table(curves, args.trials)
        print(results["table"])
        plot(curves, os.path.join(args.output, "search_curves.png"))
    name = ("results.json" if not args.skip_search else
            "speedup.json" if not args.skip_speedup else "joint.json")
    write_json(os.path.join(args.output, name), results, indent=1)


if __name__ == "__main__":
    main()
