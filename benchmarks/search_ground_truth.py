"""Search oracles against an enumerated ground truth of several seeds per architecture.

    python benchmarks/search_ground_truth.py --task av_digits --data-dir ../shared/data
        [--gt-seeds 0 1 2] [--epochs 3] [--budgets 10 20 40] [--seeds 0 1 ... 9]
        [--large-budget 195 --large-seeds 0 1 2] [--output runs/search_ground_truth]
    python benchmarks/search_ground_truth.py --task easy_vqa --max-train 6000 --max-eval 2000 ...
    python benchmarks/search_ground_truth.py --plot    # the figure of every task's results

1. Prepares a task as `mmfusion search` does (`mmfusion.search.run.prepare`:
   branches pretrained on half of the training split, frozen, features
   cached), optionally on a seeded subset (`--max-train` training,
   `--max-eval` validation and test examples).
2. Ground truth: trains every one-layer architecture of the space (fixed
   units and learning rate, `--epochs` epochs on the cached features of the
   other half) once per ground-truth seed (`--gt-seeds`), `--gt-chunk`
   architectures at a time in one compiled model
   (`FusionHyperModel.fit_jointly`: each trains exactly as it would alone,
   `tests/search/test_joint.py`), and records each one's final validation
   and test accuracy. `ground_truth.json` in `--output` holds
   `{seed: {architecture key: {"validation", "test"}}}`, written atomically
   after every chunk (an interrupted run resumes). Noise: the mean over
   architectures of the per-architecture standard deviation over seeds, and
   the Spearman rank correlation between seeds.
3. Tabular searches: every oracle, at every budget, for every search seed,
   runs a real KerasTuner search whose trials *look up* their validation
   accuracy in the ground truth of one seed (`draw_seed`: the search seed
   picks which, so the oracle sees realistic training noise). The pick (the
   best looked-up score) is judged by its *mean* over the ground-truth
   seeds: its validation percentile and its test accuracy; and the trials
   (and candidate-epochs, trials x `--epochs`) it took to propose an
   architecture of the ground truth's top 5 % (by mean validation; a search
   that never does counts as budget + 1). Each finished search is kept in
   `tabular.json` in `--output` (resumable; delete it after changing an
   oracle); `--reuse-ground-truth` starts from the ground truth stored in the
   task's results file (same settings) instead of training it again, to add
   an oracle to an earlier run.
4. Larger space (`--large-budget`, 0 to skip): real searches (trained, not
   looked up) over the two-layer space for `--large-oracles` and
   `--large-seeds`, `--candidates-per-step` trials trained together; the
   pick's test accuracy is that of its best-epoch checkpoint on the test
   features. Each finished search is kept in `large.json` (resumable).
5. Tables of means with 95 % intervals (Student t over search seeds;
   medians with a distribution-free order-statistic interval) in
   `benchmarks/results/search_ground_truth-TASK.md` and `.json`; `--plot`
   draws `benchmarks/results/search_ground_truth.png` from those files.

One-shot strategy (`--oneshot`, against the ground truth of an earlier run
of the same task, read from its results file, not recomputed): for every
search seed trains the one-layer supernet of `mmfusion.search.oneshot` on the
cached training features and judges its discretized pick as above; cost is
supernet candidate-epochs + the pick's `--epochs` retraining; writes
`oneshot.json` in `--output`.
"""

import argparse
import itertools
import json
import os
import sys
import tempfile
import time

import keras
import keras_tuner
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.layer_tables import RESULTS, confidence_interval  # noqa: E402
from mmfusion.files import atomic_write, write_json, write_text  # noqa: E402
from mmfusion.search.features import feature_branches, pack  # noqa: E402
from mmfusion.search.hypermodel import FusionHyperModel, FusionTuner  # noqa: E402
from mmfusion.search.oneshot import search_oneshot  # noqa: E402
from mmfusion.search.run import (DEFAULT_FUSIONS, Task, load_task, make_oracle,  # noqa: E402
                                 make_tuner, prepare)
from mmfusion.search.space import architecture_key  # noqa: E402
from mmfusion.search.state import read_json  # noqa: E402

ORACLES = ("mfas", "random", "bayesian")
BASELINE = "random"
TOP = 0.95  # the ground truth's top 5 %: mean validation at or above this quantile


def subsample(task, max_train=None, max_eval=None, seed=0):
    """`task` with at most `max_train` training and `max_eval` validation and
    test examples (a seeded random subset of each split; None keeps all)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, (inputs, labels) in task.splits.items():
        limit = max_train if split == "train" else max_eval
        rows = np.arange(len(labels))
        if limit is not None and limit < len(labels):
            rows = np.sort(rng.choice(len(labels), limit, replace=False))
        splits[split] = ({m: x[rows] for m, x in inputs.items()}, labels[rows])
    return Task(task.branches, splits, task.num_classes, name=task.name)


def ground_truth(prepared, hypermodel, epochs, seeds, path, chunk=12, report=print):
    """`{str(seed): {architecture key: {"validation", "test"}}}` of every
    one-layer architecture, trained `chunk` at a time (resumes from `path`)."""
    table = read_json(path) if os.path.exists(path) else {}
    x = {split: pack(f) for split, f in prepared.features.items()}
    labels = prepared.labels
    space = hypermodel.space
    options = space.layer_options(1)
    started = time.process_time()
    for seed in seeds:
        done = table.setdefault(str(seed), {})
        for c in range(0, len(options), chunk):
            layers = options[c:c + chunk]
            if all(architecture_key([layer]) in done for layer in layers):
                continue
            keras.backend.clear_session()
            keras.utils.set_random_seed(1000 * int(seed) + c)
            hps, models = [], []
            for layer in layers:
                hp = keras_tuner.HyperParameters()
                hypermodel.build(hp)
                hp.values.update(space.values([layer]))
                hps.append(hp)
                models.append(hypermodel.build(hp))
            hypermodel.fit_jointly(hps, models, x["train"], labels["train"], epochs=epochs,
                                   batch_size=64, verbose=0)
            inputs = keras.tree.map_structure(
                lambda t: keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name),
                models[0].input)
            together = keras.Model(inputs, [  # unique names, as in `train_jointly`
                keras.Model(m.input, m.output, name=f"candidate_{i}")(inputs)
                for i, m in enumerate(models)])
            accuracy = {}
            for split in ("validation", "test"):
                outputs = together.predict(x[split], batch_size=1024, verbose=0)
                accuracy[split] = [float((o.argmax(-1) == labels[split]).mean())
                                   for o in outputs]
            for i, layer in enumerate(layers):
                done[architecture_key([layer])] = {s: accuracy[s][i] for s in accuracy}
            write_json(path, table)
            report(f"ground truth seed {seed}: {len(done)}/{len(options)} architectures "
                   f"[{time.process_time() - started:.0f} CPU s]")
    return {str(s): table[str(s)] for s in seeds}


def draw_seed(search_seed, gt_seeds):
    """The ground-truth seed whose scores a search with `search_seed` sees.

    >>> [draw_seed(s, ["0", "1", "2"]) for s in range(5)]
    ['0', '1', '2', '0', '1']
    """
    return list(gt_seeds)[search_seed % len(gt_seeds)]


def means(tables):
    """`{key: {"validation", "test"}}`: each architecture's mean over the seeds of `tables`."""
    keys = next(iter(tables.values()))
    return {k: {s: float(np.mean([t[k][s] for t in tables.values()]))
                for s in ("validation", "test")} for k in keys}


def noise(tables):
    """The ground truth's noise: the mean over architectures of the
    per-architecture standard deviation over seeds (`ddof=1`), the spread
    of the architectures' means, and the Spearman rank correlation of the
    validation accuracies between every pair of seeds (mean, min, max)."""
    from scipy import stats

    keys = sorted(next(iter(tables.values())))
    validation = np.array([[t[k]["validation"] for k in keys] for t in tables.values()])
    test = np.array([[t[k]["test"] for k in keys] for t in tables.values()])
    pairs = [stats.spearmanr(a, b)[0] for a, b in itertools.combinations(validation, 2)]
    pairs = pairs or [float("nan")]  # one seed: no pair
    mean = validation.mean(axis=0)
    return {"seeds": len(tables), "architectures": len(keys),
            "validation_std_over_seeds": float(validation.std(axis=0, ddof=1).mean()),
            "test_std_over_seeds": float(test.std(axis=0, ddof=1).mean()),
            "validation_std_between_architectures": float(mean.std(ddof=1)),
            "validation_min_median_max": [float(mean.min()), float(np.median(mean)),
                                          float(mean.max())],
            "top5_threshold": float(np.quantile(mean, TOP)),
            "seed_rank_correlation": [float(np.mean(pairs)), float(np.min(pairs)),
                                      float(np.max(pairs))],
            "validation_test_rank_correlation": float(stats.spearmanr(mean,
                                                                      test.mean(axis=0))[0])}


def summarize(tables, keys, search_seed, epochs=1):
    """What one search found: `keys` its trials' architecture keys in trial
    order, their scores drawn from the ground truth of
    `draw_seed(search_seed, tables)`; the pick judged by its mean over the
    seeds of `tables`. `trials_to_top5` is `len(keys) + 1` when no trial
    is in the top 5 % (then `reached` is False)."""
    draw = draw_seed(search_seed, list(tables))
    observed = np.array([tables[draw][k]["validation"] for k in keys])
    average = means(tables)
    pick = keys[int(np.argmax(observed))]
    all_validation = np.array([v["validation"] for v in average.values()])
    top = {k for k, v in average.items() if v["validation"] >= np.quantile(all_validation, TOP)}
    hits = [i for i, k in enumerate(keys) if k in top]
    trials = hits[0] + 1 if hits else len(keys) + 1
    return {"draw_seed": draw, "pick": pick, "pick_observed": float(observed.max()),
            "pick_validation": average[pick]["validation"], "pick_test": average[pick]["test"],
            "pick_percentile": float((all_validation < average[pick]["validation"]).mean() * 100),
            "reached": bool(hits), "trials_to_top5": trials,
            "candidate_epochs_to_top5": trials * epochs,
            "unique": len(set(keys)) == len(keys), "trials": len(keys)}


def median_interval(values):
    """`(median, low, high)`: a distribution-free interval of at least 95 %
    for the median (order statistics `k` and `n + 1 - k` of the sorted
    values, `k` from the binomial(n, 1/2) distribution).

    >>> median_interval([5, 1, 4, 2, 3, 9, 7, 8, 6, 10])
    (5.5, 2.0, 9.0)
    """
    from scipy import stats

    values = np.sort(np.asarray(values, "float64"))
    n = len(values)
    k = int(stats.binom.ppf(0.025, n, 0.5))
    if k < 1:
        return float(np.median(values)), float(values[0]), float(values[-1])
    return float(np.median(values)), float(values[k - 1]), float(values[n - k])


class TableTuner(FusionTuner):
    """A `FusionTuner` whose trials read their score from a ground-truth table."""

    def __init__(self, table, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.table = table

    def run_trial(self, trial, *args, **kwargs):
        key = architecture_key(self.space.architecture(trial.hyperparameters.values))
        return {"val_accuracy": self.table[key]["validation"]}


def tabular_search(table, hypermodel, oracle, budget, seed, directory):
    """Trial-ordered architecture keys of one search whose scores come from `table`."""
    tuner = TableTuner(table, make_oracle(oracle, hypermodel.space, budget, seed=seed),
                       hypermodel, directory=directory,
                       project_name=f"{oracle}-{budget}-{seed}", overwrite=True)
    tuner.search(verbose=0)
    trials = [tuner.oracle.trials[i] for i in sorted(tuner.oracle.trials)]
    return [architecture_key(hypermodel.space.architecture(t.hyperparameters.values))
            for t in trials]


def aggregate(runs):
    """Per-group figures of a list of `summarize` results (one per search seed)."""
    cells = {"searches": len(runs), "reached": sum(r["reached"] for r in runs)}
    for field in ("pick_validation", "pick_test", "pick_percentile", "trials_to_top5",
                  "candidate_epochs_to_top5"):
        if field in runs[0]:
            cells[field] = confidence_interval([r[field] for r in runs])
    for field in ("trials_to_top5", "candidate_epochs_to_top5"):
        if field in runs[0]:
            cells[f"{field}_median"] = median_interval([r[field] for r in runs])
    return cells


def goal(groups, budgets, oracles):
    """Per budget: whether the best non-random oracle (by median trials to the
    top 5 %) needs at most half of random search's median trials, and whether
    its picks' test interval lies above random's."""
    verdicts = {}
    for budget in budgets:
        base = groups[f"{budget}/{BASELINE}"]
        others = [o for o in oracles if o != BASELINE and f"{budget}/{o}" in groups]
        if not others or not base:
            continue
        best = min(others, key=lambda o: (groups[f"{budget}/{o}"]["trials_to_top5_median"][0],
                                          -groups[f"{budget}/{o}"]["pick_test"][0]))
        cell = groups[f"{budget}/{best}"]
        faster = cell["trials_to_top5_median"][0] <= base["trials_to_top5_median"][0] / 2
        low, high = cell["pick_test"][0] - cell["pick_test"][1], base["pick_test"][0] + \
            base["pick_test"][1]
        verdicts[str(budget)] = {"oracle": best, "half_the_trials": bool(faster),
                                 "test_interval_above_random": bool(low > high),
                                 "met": bool(faster and low > high)}
    return verdicts


def _ci(cell, digits):
    mean, half = cell
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def markdown(result):
    """The markdown tables of a results dict."""
    n, lines = result["noise"], [f"# {result['task']}: search oracles against a ground truth", ""]
    lines += [f"{result['date']}, {result['machine']}; `{result['command']}`", "",
              f"Ground truth: {n['architectures']} one-layer architectures x {n['seeds']} seeds, "
              f"{result['epochs']} epochs each. Mean validation accuracy (over seeds) "
              f"{n['validation_min_median_max'][0]:.3f} / {n['validation_min_median_max'][1]:.3f}"
              f" / {n['validation_min_median_max'][2]:.3f} (min / median / max), top 5 % from "
              f"{n['top5_threshold']:.3f}. Noise: per-architecture std over seeds "
              f"{n['validation_std_over_seeds']:.4f} validation, {n['test_std_over_seeds']:.4f} "
              f"test (mean over architectures), vs {n['validation_std_between_architectures']:.4f}"
              f" between architectures; Spearman rank correlation between seeds "
              f"{n['seed_rank_correlation'][0]:.3f} (pairs {n['seed_rank_correlation'][1]:.3f}–"
              f"{n['seed_rank_correlation'][2]:.3f}); validation-test "
              f"{n['validation_test_rank_correlation']:.3f}.",
              "",
              "| budget | oracle | searches | pick validation (GT mean) | pick test (GT mean) | "
              "pick GT percentile | reached top 5 % | trials to top 5 %: median [95 % CI] | "
              "mean ± CI | candidate-epochs to top 5 %: median |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, cell in result["groups"].items():
        budget, oracle = name.split("/")
        med, low, high = cell["trials_to_top5_median"]
        lines.append(f"| {budget} | {oracle} | {cell['searches']} | "
                     f"{_ci(cell['pick_validation'], 3)} | {_ci(cell['pick_test'], 3)} | "
                     f"{_ci(cell['pick_percentile'], 1)} | "
                     f"{cell['reached']}/{cell['searches']} | {med:g} [{low:g}, {high:g}] | "
                     f"{_ci(cell['trials_to_top5'], 1)} | "
                     f"{cell['candidate_epochs_to_top5_median'][0]:g} |")
    lines += ["", "Trials to the top 5 %: a search that never proposes a top-5 % architecture "
              "counts as budget + 1. Goal per budget (best non-random oracle vs random):", ""]
    for budget, verdict in result["goal"].items():
        lines.append(f"- budget {budget}: {verdict['oracle']}: half the trials "
                     f"{'yes' if verdict['half_the_trials'] else 'no'}, test interval above "
                     f"random's {'yes' if verdict['test_interval_above_random'] else 'no'}: "
                     f"**{'met' if verdict['met'] else 'not met'}**")
    if result.get("large"):
        large = result["large"]
        lines += ["", f"`{result.get('command_large', result['command'])}`", "",
                  f"Larger space (max_layers 2, {large['architectures']} architectures), real "
                  f"searches of {large['budget']} trials ({large['epochs']} epochs, "
                  f"{large['candidates_per_step']} candidates per compiled step):", "",
                  "| oracle | searches | pick validation (best epoch) | pick test | "
                  "CPU s per search |",
                  "|---|---|---|---|---|"]
        for oracle, cell in large["groups"].items():
            lines.append(f"| {oracle} | {cell['searches']} | {_ci(cell['validation'], 3)} | "
                         f"{_ci(cell['test'], 3)} | {_ci(cell['cpu_seconds'], 0)} |")
    return "\n".join(lines) + "\n"


def large_searches(prepared, task, args, report=print):
    """Real searches over the two-layer space; finished ones kept in `large.json`."""
    path = os.path.join(args.output, "large.json")
    done = read_json(path) if os.path.exists(path) else {}
    hypermodel = FusionHyperModel(feature_branches(prepared.features["train"]), task.num_classes,
                                  fusions=args.fusions, max_layers=2, units=(64,),
                                  learning_rates=(1e-3,), fit_verbose=0)
    x = {split: pack(f) for split, f in prepared.features.items()}
    for seed, oracle in itertools.product(args.large_seeds, args.large_oracles):  # seed by seed
        name = f"{oracle}/{seed}"
        if name in done:
            continue
        started = time.process_time()
        tuner = make_tuner(oracle, hypermodel, args.large_budget,
                           os.path.join(args.output, "large"), project_name=f"{oracle}-{seed}",
                           seed=seed, candidates_per_step=args.candidates_per_step)
        tuner.search(x["train"], prepared.labels["train"], epochs=args.epochs, batch_size=64,
                     verbose=0,
                     validation_data=(x["validation"], prepared.labels["validation"]))
        best = tuner.oracle.get_best_trials()[0]
        model = tuner.load_model(best)
        test = model.evaluate(x["test"], prepared.labels["test"], batch_size=1024, verbose=0,
                              return_dict=True)["accuracy"]
        done[name] = {"oracle": oracle, "seed": seed, "validation": float(best.score),
                      "test": float(test),
                      "architecture": hypermodel.space.describe(
                          hypermodel.space.architecture(best.hyperparameters.values)),
                      "trials": len(tuner.oracle.trials),
                      "cpu_seconds": time.process_time() - started}
        write_json(path, done)
        report(json.dumps(done[name]))
        keras.backend.clear_session()
    groups = {}
    for oracle in args.large_oracles:
        runs = [r for r in done.values() if r["oracle"] == oracle and r["seed"] in args.large_seeds]
        groups[oracle] = {"searches": len(runs),
                          **{f: confidence_interval([r[f] for r in runs])
                             for f in ("validation", "test", "cpu_seconds")}}
    return {"budget": args.large_budget, "epochs": args.epochs,
            "candidates_per_step": args.candidates_per_step,
            "architectures": hypermodel.space.count(1) + hypermodel.space.count(2),
            "groups": groups, "runs": list(done.values())}


def oneshot(prepared, hypermodel, tables, args):
    """Supernet picks over seeds, judged against `tables`; writes `oneshot.json`."""
    runs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as directory:
            record = search_oneshot(hypermodel.space, prepared.features["train"],
                                    prepared.labels["train"], hypermodel.num_classes, directory,
                                    epochs=args.supernet_epochs, units=64, learning_rate=1e-3,
                                    seed=seed)
        summary = summarize(tables, [record["key"]], seed)
        runs.append({"seed": seed, "architecture": record["key"],
                     "candidate_epochs": record["candidate_epochs"] + args.epochs,
                     "cpu_seconds": record["cpu_seconds"],
                     **{k: summary[k] for k in ("pick_validation", "pick_test",
                                                "pick_percentile", "reached")}})
        print(json.dumps(runs[-1]), flush=True)
    result = {"task": args.task, "epochs": args.epochs, "supernet_epochs": args.supernet_epochs,
              "runs": runs, **aggregate(runs)}
    write_json(os.path.join(args.output, "oneshot.json"), result)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))


def plot(tasks, path):
    """Per task: the pick's ground-truth percentile and test accuracy vs budget, per oracle."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(tasks), 10), layout="constrained")
    axes = fig.subplots(3, len(tasks), squeeze=False)
    for column, result in enumerate(tasks):
        budgets = sorted({int(name.split("/")[0]) for name in result["groups"]})
        for oracle in result["oracles"]:
            for row, field in enumerate(("pick_percentile", "pick_test",
                                         "trials_to_top5_median")):
                cells = np.array([result["groups"][f"{b}/{oracle}"][field] for b in budgets])
                if field.endswith("median"):  # (median, low, high)
                    centre, low, high = cells.T
                else:  # (mean, half-width)
                    centre, low, high = cells[:, 0], cells[:, 0] - cells[:, 1], cells.sum(1)
                ax = axes[row, column]
                ax.plot(budgets, centre, marker="o", label=oracle)
                ax.fill_between(budgets, low, high, alpha=0.2)
        axes[0, column].set_title(f"{result['task']} ({result['noise']['architectures']} "
                                  f"architectures x {result['noise']['seeds']} seeds)")
        axes[0, column].set_ylabel("pick's ground-truth percentile (mean)")
        axes[1, column].set_ylabel("pick's test accuracy (GT mean; mean)")
        axes[2, column].set_ylabel("trials to the GT top 5 % (median;\nnot reached = budget + 1)")
        for ax in axes[:, column]:
            ax.set_xlabel("budget (trials)")
            ax.set_xticks(budgets)
            ax.grid(alpha=0.3)
            ax.legend(title="95 % bands")
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"), suffix=".png")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="av_digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--max-eval", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--fusions", nargs="+", default=list(DEFAULT_FUSIONS))
    parser.add_argument("--gt-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--gt-chunk", type=int, default=12)
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--oracles", nargs="+", default=list(ORACLES))
    parser.add_argument("--large-budget", type=int, default=0)
    parser.add_argument("--large-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--large-oracles", nargs="+", default=["mfas", "random"])
    parser.add_argument("--large-only", action="store_true",
                        help="only the larger-space searches, added to this task's results")
    parser.add_argument("--reuse-ground-truth", action="store_true",
                        help="start from the ground truth of the task's results file "
                             "(same settings) instead of training it again")
    parser.add_argument("--candidates-per-step", type=int, default=15)
    parser.add_argument("--output", default=os.path.join("runs", "search_ground_truth"))
    parser.add_argument("--oneshot", action="store_true",
                        help="run the one-shot strategy against this task's results file")
    parser.add_argument("--supernet-epochs", type=int, default=10)
    parser.add_argument("--results", default=str(RESULTS),
                        help="folder of the results tables and figure")
    parser.add_argument("--plot", nargs="*", default=None, metavar="TASK",
                        help="only draw the figure from the results of these tasks")
    args = parser.parse_args(argv)
    if args.plot is not None:
        names = args.plot or ["av_digits", "easy_vqa"]
        plot([read_json(os.path.join(args.results, f"search_ground_truth-{t}.json"))
              for t in names], os.path.join(args.results, "search_ground_truth.png"))
        return
    output = os.path.join(args.output, args.task)
    args.output = output
    os.makedirs(output, exist_ok=True)
    task = subsample(load_task(args.task, seed=0, data_dir=args.data_dir),
                     args.max_train, args.max_eval)
    prepared = prepare(task, output, args.pretrain_epochs, seed=0, report=print)
    hypermodel = FusionHyperModel(feature_branches(prepared.features["train"]), task.num_classes,
                                  fusions=args.fusions, max_layers=1, units=(64,),
                                  learning_rates=(1e-3,), fit_verbose=0)
    results_path = os.path.join(args.results, f"search_ground_truth-{args.task}.json")
    if args.oneshot:
        oneshot(prepared, hypermodel, read_json(results_path)["ground_truth"], args)
        return
    if args.large_only:
        result = read_json(results_path)
        result["large"] = large_searches(prepared, task, args)
        result["command_large"] = _command(argv)
        write_results(results_path, result)
        print(markdown(result))
        return
    previous = read_json(results_path) if os.path.exists(results_path) else {}
    gt_path = os.path.join(output, "ground_truth.json")
    if args.reuse_ground_truth:
        reuse_ground_truth(previous, args, gt_path)
    started = time.process_time()
    tables = ground_truth(prepared, hypermodel, args.epochs, args.gt_seeds, gt_path,
                          chunk=args.gt_chunk)
    gt_cpu = time.process_time() - started
    if args.reuse_ground_truth:
        gt_cpu = previous["ground_truth_cpu_seconds"]
    print(json.dumps(noise(tables)), flush=True)
    runs_path = os.path.join(output, "tabular.json")
    done = read_json(runs_path) if os.path.exists(runs_path) else {}
    runs = []
    with tempfile.TemporaryDirectory() as directory:
        for budget in args.budgets:
            for oracle in args.oracles:
                for seed in args.seeds:
                    name = f"{budget}/{oracle}/{seed}"
                    if name not in done:
                        search_started = time.process_time()
                        table = tables[draw_seed(seed, list(tables))]
                        keys = tabular_search(table, hypermodel, oracle, budget, seed, directory)
                        done[name] = {"oracle": oracle, "budget": budget, "seed": seed,
                                      "architectures": keys,
                                      **summarize(tables, keys, seed, args.epochs),
                                      "cpu_seconds": time.process_time() - search_started}
                        write_json(runs_path, done)
                        print(json.dumps({k: v for k, v in done[name].items()
                                          if k not in ("architectures", "pick")}), flush=True)
                    runs.append(done[name])
    groups = {f"{b}/{o}": aggregate([r for r in runs if r["oracle"] == o and r["budget"] == b])
              for b in args.budgets for o in args.oracles}
    result = {"task": args.task, "date": time.strftime("%Y-%m-%d"), "machine": "2 CPU cores",
              "command": _command(argv), "epochs": args.epochs,
              "pretrain_epochs": args.pretrain_epochs,
              "max_train": args.max_train, "max_eval": args.max_eval,
              "oracles": args.oracles, "ground_truth_cpu_seconds": gt_cpu,
              "tabular_cpu_seconds": {o: float(np.sum([r["cpu_seconds"] for r in runs
                                                       if r["oracle"] == o]))
                                      for o in args.oracles},
              "noise": noise(tables), "groups": groups,
              "goal": goal(groups, args.budgets, args.oracles), "ground_truth": tables,
              "runs": runs}
    for kept in ("large", "command_large"):  # the larger-space part of an earlier run
        if kept in previous:
            result[kept] = previous[kept]
    write_results(results_path, result)
    if args.large_budget:
        result["large"] = large_searches(prepared, task, args)
        write_results(results_path, result)
    print(markdown(result))


def reuse_ground_truth(previous, args, path):
    """Start `path` from the ground truth of the results file `previous`
    (`--reuse-ground-truth`), which must have been computed with the same
    settings."""
    settings = {"epochs": args.epochs, "pretrain_epochs": args.pretrain_epochs,
                "max_train": args.max_train, "max_eval": args.max_eval}
    differ = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
    if not previous or differ:
        raise SystemExit(f"--reuse-ground-truth: no results file with these settings "
                         f"(results vs now: {differ or 'no results file'})")
    if not os.path.exists(path):
        write_json(path, previous["ground_truth"])


def _command(argv):
    return "python benchmarks/search_ground_truth.py " + " ".join(
        argv if argv is not None else sys.argv[1:])


def write_results(path, result):
    """`result` as JSON at `path` and its tables as markdown next to it."""
    write_json(path, result)
    write_text(os.path.splitext(path)[0] + ".md", markdown(result))


if __name__ == "__main__":
    main()
