"""Oracles against an enumerated ground truth: MFAS vs random search vs Bayesian optimization.

    python benchmarks/search_ground_truth.py --data-dir ../shared/data [--epochs 3]
        [--budgets 10 20] [--seeds 0 1 2 3 4 5 6 7 8 9] [--output runs/search_ground_truth]

1. Prepares a task as `mmfusion search` does (`mmfusion.search.run.prepare`:
   branches pretrained on half of the training split, frozen, features cached).
2. Ground truth: trains every one-layer architecture of the space (fixed
   units and learning rate, `--epochs` epochs on the cached features of the
   other half, seeded) and records its validation and test accuracy.
   Written atomically to `ground_truth.json` after every architecture (an
   interrupted run resumes).
3. Tabular searches: every oracle, at every budget, for every seed, runs a
   real KerasTuner search whose trials *look up* their validation accuracy
   in the ground truth (as tabular NAS benchmarks do: the oracles differ only
   in what they propose). For each search: the pick (best validation
   accuracy), its test accuracy, its ground-truth percentile, and the trials
   it took to reach the ground truth's top 5 % (by validation accuracy).
4. Prints a table of means with 95 % confidence intervals (Student t over
   seeds) and writes `results.json`.

One-shot strategy (`--oneshot`), against the ground truth of an earlier run
(loaded from `--ground-truth`, not recomputed):

    python benchmarks/search_ground_truth.py --data-dir ../shared/data --oneshot
        [--ground-truth benchmarks/search_ground_truth_results.json] [--supernet-epochs 10]

prepares the task as above (same seed and settings), then for every seed
trains the one-layer supernet of `mmfusion.search.oneshot` on the cached
training features, looks its discretized pick up in the ground truth, and
prints the pick's validation and test accuracy, ground-truth percentile and
cost (supernet candidate-epochs + the pick's `--epochs` retraining, and the
supernet's CPU seconds) next to the trial budgets (a trial = `--epochs`
candidate-epochs); writes `oneshot.json` in `--output`.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import keras
import keras_tuner
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmfusion.search.features import feature_branches, pack  # noqa: E402
from mmfusion.search.hypermodel import FusionHyperModel, FusionTuner  # noqa: E402
from mmfusion.search.oneshot import search_oneshot  # noqa: E402
from mmfusion.search.run import DEFAULT_FUSIONS, load_task, make_oracle, prepare  # noqa: E402
from mmfusion.search.space import architecture_key  # noqa: E402
from mmfusion.files import write_json  # noqa: E402
from mmfusion.search.state import read_json  # noqa: E402

ORACLES = ("mfas", "random", "bayesian")


def ground_truth(prepared, hypermodel, epochs, path, report=print):
    """`{architecture key: {"validation", "test"}}` of every one-layer architecture."""
    table = read_json(path) if os.path.exists(path) else {}
    features, labels = prepared.features, prepared.labels
    x = {split: pack(f) for split, f in features.items()}
    space = hypermodel.space
    options = space.layer_options(1)
    started = time.perf_counter()
    for i, layer in enumerate(options, start=1):
        key = architecture_key([layer])
        if key in table:
            continue
        keras.utils.set_random_seed(i)
        hp = keras_tuner.HyperParameters()
        hypermodel.build(hp)
        hp.values.update(space.values([layer]))
        model = hypermodel.build(hp)
        model.fit(x["train"], labels["train"], epochs=epochs, batch_size=64, verbose=0)
        table[key] = {split: float(model.evaluate(x[split], labels[split], batch_size=512,
                                                  verbose=0, return_dict=True)["accuracy"])
                      for split in ("validation", "test")}
        write_json(path, table)
        done = len(table)
        elapsed = time.perf_counter() - started
        report(f"ground truth {done}/{len(options)}: {space.describe([layer])} -> "
               f"validation {table[key]['validation']:.3f} test {table[key]['test']:.3f} "
               f"[{elapsed:.0f} s]")
        keras.backend.clear_session()
    return table


class TableTuner(FusionTuner):
    """A `FusionTuner` whose trials read their score from a ground-truth table."""

    def __init__(self, table, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.table = table

    def run_trial(self, trial, *args, **kwargs):
        key = architecture_key(self.space.architecture(trial.hyperparameters.values))
        return {"val_accuracy": self.table[key]["validation"]}


def tabular_search(table, hypermodel, oracle, budget, seed, directory):
    """Trial-ordered validation accuracies and architecture keys of one search."""
    tuner = TableTuner(table, make_oracle(oracle, hypermodel.space, budget, seed=seed),
                       hypermodel, directory=directory,
                       project_name=f"{oracle}-{budget}-{seed}", overwrite=True)
    tuner.search(verbose=0)
    trials = [tuner.oracle.trials[i] for i in sorted(tuner.oracle.trials)]
    return [architecture_key(hypermodel.space.architecture(t.hyperparameters.values))
            for t in trials]


def summarize(table, keys):
    validation = np.array([table[k]["validation"] for k in keys])
    all_validation = np.array([v["validation"] for v in table.values()])
    top5 = np.quantile(all_validation, 0.95)
    pick = keys[int(np.argmax(validation))]
    reached = np.nonzero(validation >= top5)[0]
    return {"pick_validation": table[pick]["validation"], "pick_test": table[pick]["test"],
            "pick_percentile": float((all_validation < table[pick]["validation"]).mean() * 100),
            "trials_to_top5": int(reached[0]) + 1 if len(reached) else None,
            "unique": len(set(keys)) == len(keys), "trials": len(keys)}


def interval(values):
    from scipy import stats

    values = np.asarray(values, float)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


def oneshot(prepared, hypermodel, table, args):
    """Supernet picks over seeds, looked up in `table`; prints and writes the table."""
    runs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as directory:
            record = search_oneshot(hypermodel.space, prepared.features["train"],
                                    prepared.labels["train"], hypermodel.num_classes, directory,
                                    epochs=args.supernet_epochs, units=64, learning_rate=1e-3,
                                    seed=seed)
        summary = summarize(table, [record["key"]])
        runs.append({"seed": seed, "architecture": record["key"],
                     "probabilities": record["probabilities"],
                     "candidate_epochs": record["candidate_epochs"] + args.epochs,
                     "cpu_seconds": record["cpu_seconds"], "wall_seconds": record["wall_seconds"],
                     **{k: summary[k] for k in ("pick_validation", "pick_test",
                                                "pick_percentile")}})
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "probabilities"}),
              flush=True)
    cells = []
    for field in ("pick_validation", "pick_test", "pick_percentile", "cpu_seconds"):
        mean, half = interval([r[field] for r in runs])
        digits = 3 if field.startswith("pick_v") or field == "pick_test" else 1
        cells.append(f"{mean:.{digits}f} ± {half:.{digits}f}")
    top5 = np.quantile([v["validation"] for v in table.values()], 0.95)
    reached = sum(r["pick_validation"] >= top5 for r in runs)
    picks = len({r["architecture"] for r in runs})
    lines = ["| strategy | seeds | pick validation | pick test | pick GT percentile | "
             "pick in GT top 5 % | distinct picks | candidate-epochs | supernet CPU s |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| oneshot ({args.supernet_epochs} supernet epochs) | {len(runs)} | {cells[0]} | "
             f"{cells[1]} | {cells[2]} | {reached}/{len(runs)} | {picks} | "
             f"{runs[0]['candidate_epochs']} | {cells[3]} |"]
    for budget in args.budgets:
        lines.append(f"| trials (budget {budget}) | | | | | | | {budget * args.epochs} | |")
    print("\n".join(lines))
    write_json(os.path.join(args.output, "oneshot.json"),
               {"task": args.task, "epochs": args.epochs, "supernet_epochs": args.supernet_epochs,
                "ground_truth": args.ground_truth, "runs": runs, "table": "\n".join(lines)})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="av_digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--fusions", nargs="+", default=list(DEFAULT_FUSIONS))
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--oracles", nargs="+", default=list(ORACLES))
    parser.add_argument("--output", default=os.path.join("runs", "search_ground_truth"))
    parser.add_argument("--oneshot", action="store_true",
                        help="run the one-shot strategy against --ground-truth instead")
    parser.add_argument("--ground-truth", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "search_ground_truth_results.json"))
    parser.add_argument("--supernet-epochs", type=int, default=10)
    args = parser.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    task = load_task(args.task, seed=0, data_dir=args.data_dir)
    prepared = prepare(task, args.output, args.pretrain_epochs, seed=0, report=print)
    hypermodel = FusionHyperModel(feature_branches(prepared.features["train"]), task.num_classes,
                                  fusions=args.fusions, max_layers=1, units=(64,),
                                  learning_rates=(1e-3,), fit_verbose=0)
    if args.oneshot:
        table = read_json(args.ground_truth)["ground_truth"]
        if set(table) != {architecture_key([o]) for o in hypermodel.space.layer_options(1)}:
            raise ValueError(f"{args.ground_truth} is not the ground truth of this space.")
        oneshot(prepared, hypermodel, table, args)
        return
    table = ground_truth(prepared, hypermodel, args.epochs,
                         os.path.join(args.output, "ground_truth.json"))
    validation = np.array([v["validation"] for v in table.values()])
    test = np.array([v["test"] for v in table.values()])
    ranks = np.corrcoef(np.argsort(np.argsort(validation)), np.argsort(np.argsort(test)))[0, 1]
    print(f"ground truth: {len(table)} architectures; validation accuracy min "
          f"{validation.min():.3f} median {np.median(validation):.3f} max {validation.max():.3f}; "
          f"top 5 % threshold {np.quantile(validation, 0.95):.3f}; validation-test rank "
          f"correlation {ranks:.2f}")
    runs = []
    with tempfile.TemporaryDirectory() as directory:
        for budget in args.budgets:
            for oracle in args.oracles:
                for seed in args.seeds:
                    keys = tabular_search(table, hypermodel, oracle, budget, seed, directory)
                    runs.append({"oracle": oracle, "budget": budget, "seed": seed,
                                 "architectures": keys, **summarize(table, keys)})
                    print(json.dumps({k: v for k, v in runs[-1].items()
                                      if k != "architectures"}), flush=True)
    lines = ["| budget | oracle | seeds | pick validation | pick test | pick GT percentile | "
             "reached GT top 5 % | trials to top 5 % (median, when reached) |",
             "|---|---|---|---|---|---|---|---|"]
    for budget in args.budgets:
        for oracle in args.oracles:
            group = [r for r in runs if r["oracle"] == oracle and r["budget"] == budget]
            cells = []
            for field in ("pick_validation", "pick_test", "pick_percentile"):
                mean, half = interval([r[field] for r in group])
                cells.append(f"{mean:.3f} ± {half:.3f}" if field != "pick_percentile"
                             else f"{mean:.1f} ± {half:.1f}")
            reached = [r["trials_to_top5"] for r in group if r["trials_to_top5"] is not None]
            cells.append(f"{len(reached)}/{len(group)}")
            cells.append(f"{np.median(reached):.1f}" if reached else "-")
            lines.append(f"| {budget} | {oracle} | {len(group)} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    write_json(os.path.join(args.output, "results.json"),
               {"task": args.task, "epochs": args.epochs, "ground_truth": table, "runs": runs,
                "table": "\n".join(lines)})


if __name__ == "__main__":
    main()
