"""Missing-modality robustness of one fusion layer with each way of handling
absence, next to late fusion, over several seeds.

Options: `zeros` (plain `ModalityDropout`: an absent modality's vector is
zeroed and masked), `learned` (`absent="learned"`, a trained placeholder),
`imputed` (`absent="imputed"`, reconstructed from the other modalities) and
`warmup` (`zeros` with the `ModalityDropout` rate raised linearly from 0 over
the first `--warmup-fraction` of the training steps) and `unimodal` (`zeros`
with unimodal auxiliary losses, `unimodal_loss=--unimodal-weight`: one head
per modality trained on the labels, see `mmfusion.unimodal`) and `fallback`
(`unimodal` whose heads also predict the rows missing a modality,
`unimodal_fallback=True`) and `pretrained` (`fallback` on branches first trained
each on its own modality for `--epochs`, with a head, then frozen:
`mmfusion.search.features.pretrain_branch`, as MFAS does). For every seed (which
also draws the data split, the training and the test masks) each option is
swept over training-time x test-time missing rates and every presence
pattern (`mmfusion.robustness.missing_rate_sweep`), with MultiBench's
relative and effective robustness (effective robustness relative to the
late-fusion model trained at the same rate and seed).

Prints markdown tables of mean ± 95 % interval over seeds (Student's t) and
the paired difference of every option to `zeros` (same seed, same masks);
writes the raw results (atomically, after every sweep: a rerun with the
same settings resumes), the tables and a plot of the curves.

    python benchmarks/robustness_sweep.py --data-dir ../shared/data --task av_digits \\
        --epochs 10 --seeds 0 1 2 3 4
    python benchmarks/robustness_sweep.py --task easy_vqa --limit 3000 --epochs 3 --seeds 0 1 2 3 4
    python benchmarks/robustness_sweep.py --task synthetic --epochs 2 --seeds 0 1 --output /tmp/sweep
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from benchmarks.layer_tables import (RESULTS, confidence_interval, pretrain_branches,  # noqa: E402
                                     warmup_steps)
from mmfusion import tasks  # noqa: E402
from mmfusion.compose import Late, build_fusion_model  # noqa: E402
from mmfusion.files import atomic_write, write_json, write_text  # noqa: E402
from mmfusion.fusion import ModalityDropout  # noqa: E402
from mmfusion.robustness import SweepResult, missing_rate_sweep  # noqa: E402

OPTIONS = ("zeros", "learned", "imputed", "warmup", "unimodal", "fallback", "pretrained")
NAMES = {"warmup": "zeros + warm-up", "unimodal": "zeros + unimodal losses",
         "fallback": "zeros + unimodal fallback",
         "pretrained": "pretrained frozen branches + unimodal fallback"}
HEADS = ("unimodal", "fallback", "pretrained")
LATE = "late (weighted)"
SETTINGS = ("task", "fusion", "dropout", "warmup_fraction", "unimodal_weight", "train_rates",
            "test_rates", "epochs", "batch_size", "learning_rate", "limit")


def builder(task, data, fusion, option, dropout, learning_rate, warmup_steps, unimodal_weight,
            fit):
    """`train_rate -> compiled model` (the rate itself is applied to the data by the sweep;
    `pretrained` trains the branches on the complete training split with `fit`'s epochs and
    batch size)."""
    def build(rate):
        branches = task.branches(data)
        if option == "pretrained":
            pretrain_branches(task, data, branches, fit["epochs"], fit["batch_size"],
                              learning_rate)
        absent = "zeros" if option in NAMES else option
        drop = (ModalityDropout(dropout, modalities=list(branches), warmup_steps=warmup_steps)
                if option == "warmup" else dropout)
        model = build_fusion_model(branches, fusion, num_outputs=task.num_outputs,
                                   presence=True, modality_dropout=drop, absent=absent,
                                   unimodal_loss=unimodal_weight if option in HEADS else 0.0,
                                   unimodal_fallback=option in ("fallback", "pretrained"),
                                   head_dropout=0.2)
        model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy")
        return model
    return build


def intervals(values):
    """`(mean, half-width)` arrays over the first axis (seeds) of `values`, cell by cell."""
    values = np.asarray(values, "float64")
    cells = np.array([confidence_interval(c) for c in values.reshape(len(values), -1).T])
    return cells[:, 0].reshape(values.shape[1:]), cells[:, 1].reshape(values.shape[1:])


def summarize(runs):
    """Mean ± interval over seeds of one option's sweeps (dicts of `SweepResult.to_dict`
    plus `effective_robustness`): a dict of arrays `(mean, half-width)`."""
    return {key: intervals([r[key] for r in runs])
            for key in ("by_rate", "by_pattern", "relative_robustness", "effective_robustness")}


def paired_difference(runs, reference):
    """Mean ± interval of `runs` minus `reference` seed by seed, by rate: `(mean, half)`."""
    by_seed = {r["seed"]: np.asarray(r["by_rate"]) for r in reference}
    return intervals([np.asarray(r["by_rate"]) - by_seed[r["seed"]] for r in runs
                      if r["seed"] in by_seed])


def _cell(mean, half, sign=""):
    return f"{mean:{sign}.3f} ± {half:.3f}"


def tables(report):
    """Markdown: per option, score by test rate and by pattern; then the paired
    differences to `zeros` (marked `*` where the interval excludes 0)."""
    settings, results = report["settings"], report["results"]
    test_rates = settings["test_rates"]
    lines = [f"{settings['task']}: {settings['fusion']} with ModalityDropout({settings['dropout']}), "
             f"{settings['epochs']} epochs, {report.get('examples', '')}; {report['date']}, "
             f"{report['machine']}. Mean ± 95 % interval over seeds (Student's t).", ""]
    head = ["model", "seeds", "train rate"] + [f"test {r:g}" for r in test_rates]
    head += ["relative", "effective"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    summaries = {name: summarize(runs) for name, runs in results.items()
                 if runs}
    for name, s in summaries.items():
        for i, rate in enumerate(settings["train_rates"]):
            cells = [_cell(m, h) for m, h in zip(s["by_rate"][0][i], s["by_rate"][1][i])]
            cells += [_cell(s["relative_robustness"][0][i], s["relative_robustness"][1][i]),
                      _cell(s["effective_robustness"][0][i], s["effective_robustness"][1][i], "+")]
            lines.append(f"| {name} | {len(results[name])} | {rate:g} | " + " | ".join(cells) + " |")
    patterns = [" + ".join(p) for p in next(iter(results.values()))[0]["patterns"]]
    head = ["model", "train rate"] + patterns
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summaries.items():
        for i, rate in enumerate(settings["train_rates"]):
            cells = [_cell(m, h) for m, h in zip(s["by_pattern"][0][i], s["by_pattern"][1][i])]
            lines.append(f"| {name} | {rate:g} | " + " | ".join(cells) + " |")
    zeros = f"{settings['fusion']}, absent=zeros"
    if results.get(zeros):
        head = ["option minus zeros", "train rate"] + [f"test {r:g}" for r in test_rates]
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, runs in results.items():
            if name == zeros or not runs:
                continue
            mean, half = paired_difference(runs, results[zeros])
            for i, rate in enumerate(settings["train_rates"]):
                cells = [_cell(m, h, "+") + (" *" if abs(m) > h and h > 0 else "")
                         for m, h in zip(mean[i], half[i])]
                lines.append(f"| {name} | {rate:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(report, path):
    """Score vs. test-time missing rate, a line (mean, 95 % band) per model and
    training rate; a PNG at `path`, written atomically."""
    settings = report["settings"]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    rates = settings["test_rates"]
    for name, runs in report["results"].items():
        if not runs:
            continue
        mean, half = summarize(runs)["by_rate"]
        for i, train_rate in enumerate(settings["train_rates"]):
            label = name if len(settings["train_rates"]) == 1 else \
                f"{name}, training data missing rate {train_rate:g}"
            line, = ax.plot(rates, mean[i], marker="o", linestyle="-" if i == 0 else "--",
                            label=label)
            ax.fill_between(rates, np.clip(mean[i] - half[i], 0, 1),
                            np.clip(mean[i] + half[i], 0, 1), alpha=0.12, color=line.get_color())
    seeds = len(next(iter(report["results"].values())))
    ax.set(xlabel="test-time missing rate", ylabel="test accuracy",
           title=f"{settings['task']}: {settings['fusion']} by absence option, trained with "
                 f"ModalityDropout({settings['dropout']:g})\n{seeds} seeds, mean and 95 % band")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(str(path), lambda tmp: fig.savefig(tmp, dpi=90, format="png"), suffix=".png")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="av_digits")
    parser.add_argument("--fusion", default="gmu")
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=OPTIONS)
    parser.add_argument("--dropout", type=float, default=0.3, help="ModalityDropout rate")
    parser.add_argument("--warmup-fraction", type=float, default=0.5,
                        help="share of the training steps over which `warmup` raises the rate")
    parser.add_argument("--unimodal-weight", type=float, default=1.0,
                        help="weight of the unimodal losses of `unimodal`")
    parser.add_argument("--train-rates", nargs="+", type=float, default=[0.0])
    parser.add_argument("--test-rates", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--limit", type=int, default=None, help="examples per split")
    parser.add_argument("--data-dir", default=None, help="datasets folder (else $MMFUSION_DATA)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", default=None,
                        help="results JSON (default benchmarks/results/robustness-TASK-FUSION.json; "
                             "the .md table and .png plot go beside it)")
    args = parser.parse_args(argv)

    task = tasks.get(args.task)
    output = Path(args.output or RESULTS / f"robustness-{args.task}-{args.fusion}.json")
    settings = {k: getattr(args, k) for k in SETTINGS}
    report = {"settings": settings, "results": {}}
    if output.exists():
        previous = json.loads(output.read_text())
        if previous.get("settings") == settings:
            report = previous
    report.update(date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()}, "
                  f"{os.cpu_count()} CPU cores, Keras {keras.__version__} on "
                  f"{keras.backend.backend()}")
    fit = {"epochs": args.epochs, "batch_size": args.batch_size, "verbose": 0}
    names = [LATE] + [f"{args.fusion}, " + NAMES.get(o, f"absent={o}") for o in args.options]
    for seed in args.seeds:
        data = task.data(data_dir=args.data_dir, seed=seed, limit=args.limit)
        splits = {"train": data.splits["train"], "test": data.splits["test"]}
        report["examples"] = (f"{len(splits['train'][1])} training / {len(splits['test'][1])} "
                              "test examples")
        late = None
        for name, option in zip(names, [None] + list(args.options)):
            runs = report["results"].setdefault(name, [])
            done = [r for r in runs if r["seed"] == seed]
            if done:
                late = late or SweepResult.from_dict(done[0])
                continue
            started = time.process_time()
            fusion, absent = (Late("weighted"), "zeros") if option is None else (args.fusion, option)
            build = builder(task, data, fusion, absent, args.dropout, args.learning_rate,
                            warmup_steps(args.warmup_fraction, len(splits["train"][1]),
                                         args.batch_size, args.epochs), args.unimodal_weight, fit)
            result = missing_rate_sweep(build, splits, train_rates=args.train_rates,
                                        test_rates=args.test_rates, fit_kwargs=fit, seed=seed)
            late = late or result
            runs.append({"seed": seed, **result.to_dict(),
                         "effective_robustness": list(result.effective_robustness(late).values()),
                         "cpu_s": round(time.process_time() - started, 1)})
            print(f"{name:28s} seed {seed}: by rate {np.round(result.by_rate, 3).tolist()} "
                  f"({runs[-1]['cpu_s']:.0f} CPU s)", flush=True)
            write_json(str(output), report)
    text = tables(report)
    print(text)
    write_text(str(output.with_suffix(".md")), text + "\n")
    plot(report, output.with_suffix(".png"))
    return report


if __name__ == "__main__":
    main()
