"""Results tables: fusion layers trained end to end on a registered task.

Each row (each modality alone, then fusion layers) is trained from fresh,
untrained branches with `model.fit`, for several seeds; the seed also draws
the validation split, which is carved out of the training data and never
touches the test split. The epoch is picked on validation accuracy and the
test accuracy of that epoch is reported as mean ± 95 % confidence interval
(Student's t over seeds). Vector layers fuse the branches' `vector` taps;
sequence layers fuse each branch's deepest sequence tap (feature maps as
sequences of regions, LSTM outputs as sequences of tokens, with their
padding masks).

A row is a registered layer name, optionally with constructor arguments:
`gan_fusion:adversarial_weight=0`; `late` is late fusion (one head per
modality, their predictions combined with learned weights), the reference
of effective robustness. With `--modality-dropout RATE` every
fused row is trained with `ModalityDropout(RATE)` and also tested with each
modality absent; `--absent learned|imputed` then fills absent modalities
with a learned placeholder or an imputed vector (`build_fusion_model`'s
`absent`), and `--warmup-fraction F` raises the dropout rate from 0 over the
first F of the training steps. `--unimodal-loss W` trains every fused row
with unimodal auxiliary losses of weight W (`build_fusion_model`'s
`unimodal_loss`: one head per modality on the same labels);
`--unimodal-fallback` also predicts rows missing a modality with the
present modalities' heads (`unimodal_fallback`). `--pretrained-branches`
first trains every fused row's branches each on its own modality (for
`--epochs`, through a head, on the training split) and freezes them
(`mmfusion.search.features.pretrain_branch`).

    python benchmarks/layer_tables.py --task easy_vqa --max-questions 10000 --epochs 3
    python benchmarks/layer_tables.py --task av_digits --epochs 12 --rows concat gan_fusion \\
        gan_fusion:adversarial_weight=0
    python benchmarks/layer_tables.py --task av_digits --epochs 12 --rows concat mutan \\
        --modality-dropout 0.5

The published tables (every row, seeds 0-2, the settings of `PRESETS`)
come from one command, `python benchmarks/layer_tables.py --preset all`
(or `--preset easy_vqa` for one of them); the easy_vqa table's rows compared
most have two more seeds, from `--preset easy_vqa --seeds 3 4 --rows
"question alone" concat tfn bilinear_attention multimodal_sets mlb`.

The raw results go to
`benchmarks/results/TASK[-mdRATE[-ABSENT][-warmupF]][-uniW][-fallback][-pretrained].json` (written
atomically after every run; a rerun with the same settings resumes) and the
table to the `.md` file beside it.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from mmfusion import fusion, tasks  # noqa: E402
from mmfusion.branches import VECTOR_TAP, tap_shapes  # noqa: E402
from mmfusion.compose import build_fusion_model  # noqa: E402
from mmfusion.files import write_json, write_text  # noqa: E402
from mmfusion.fusion import ModalityDropout  # noqa: E402
from mmfusion.search.features import pretrain_branch  # noqa: E402

RESULTS = Path(__file__).with_name("results")
LATE_ROW = "late"  # late fusion: per-modality heads, predictions combined with learned weights
# Two-sided 95 % quantiles of Student's t by degrees of freedom (normal beyond).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228}


# The settings of the published tables (README "Choosing a fusion method").
PRESETS = {
    "av_digits": ["--task", "av_digits", "--epochs", "12"],
    "av_text_digits": ["--task", "av_text_digits", "--epochs", "12"],
    "easy_vqa": ["--task", "easy_vqa", "--epochs", "8", "--max-questions", "10000"],
}


def confidence_interval(values):
    """`(mean, half-width of the 95 % interval)` over seeds (0 for one value).

    >>> mean, half = confidence_interval([0.70, 0.72, 0.74])
    >>> round(mean, 3), round(half, 3)
    (0.72, 0.05)
    """
    values = np.asarray(values, "float64")
    if len(values) < 2:
        return float(values.mean()), 0.0
    half = T_975.get(len(values) - 1, 1.96) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


def warmup_steps(fraction, n_train, batch_size, epochs):
    """The first `fraction` of the training steps of `epochs` epochs over
    `n_train` examples (the span of a `ModalityDropout` warm-up).

    >>> warmup_steps(0.5, 100, 32, 4)  # 4 batches per epoch
    8
    """
    return int(fraction * (int(np.ceil(n_train / batch_size)) * epochs))


def parse_row(spec):
    """`"name:key=value,..."` -> `(name, kwargs)`, values parsed as JSON when they can be.

    >>> parse_row("gan_fusion:adversarial_weight=0")
    ('gan_fusion', {'adversarial_weight': 0})
    """
    name, _, arguments = spec.partition(":")
    kwargs = {}
    for item in filter(None, arguments.split(",")):
        key, _, value = item.partition("=")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    fusion.get_class(name)  # an unknown name lists the choices
    return name, kwargs


def sequence_tap(branch):
    """The deepest non-vector tap of rank 3 or 4 of a branch."""
    taps = [name for name, shape in tap_shapes(branch).items()
            if name != VECTOR_TAP and len(shape) in (3, 4)]
    if not taps:
        raise ValueError(f"branch '{branch.name}' has no sequence tap for a sequence layer")
    return taps[-1]


def presence_cases(modalities):
    """Test presence patterns: all present, then each modality alone."""
    cases = {"all": [1.0] * len(modalities)}
    for i, m in enumerate(modalities):
        cases[f"{m} only"] = [float(j == i) for j in range(len(modalities))]
    return cases


def pretrain_branches(task, data, branches, epochs, batch_size, learning_rate):
    """Trains each branch alone on the training split, through a head, then freezes it
    (`mmfusion.search.features.pretrain_branch`)."""
    x, y = data.splits["train"]
    for m, branch in branches.items():
        pretrain_branch(branch, x[m], y, task.num_outputs, epochs=epochs, batch_size=batch_size,
                        learning_rate=learning_rate)


def run_one(task, data, row, seed, args):
    """Trains one row with one seed; returns its validation-picked metrics."""
    keras.utils.set_random_seed(seed)
    branches = task.branches(data)
    modalities = list(branches)
    placement = "intermediate"
    if row.endswith(" alone"):
        modality = row[:-len(" alone")]
        name, kwargs, taps = None, {}, {modality: VECTOR_TAP}
        branches = {modality: branches[modality]}
    elif row == LATE_ROW:
        name, kwargs, taps, placement = "weighted", {}, None, "late"
    else:
        name, kwargs = parse_row(row)
        sequence = fusion.get_class(name).input_rank == 3
        taps = {m: sequence_tap(b) if sequence else VECTOR_TAP for m, b in branches.items()}
    if name and args.pretrained_branches:
        pretrain_branches(task, data, branches, args.epochs, args.batch_size, args.learning_rate)
    dropout = args.modality_dropout if name else 0.0
    if dropout and args.warmup_fraction:
        dropout = ModalityDropout(dropout, modalities=modalities, warmup_steps=warmup_steps(
            args.warmup_fraction, len(data.splits["train"][1]), args.batch_size, args.epochs))
    model = build_fusion_model(branches, name, num_outputs=task.num_outputs, taps=taps,
                               placement=placement, units=args.units, fusion_kwargs=kwargs or None,
                               presence=bool(dropout), modality_dropout=dropout,
                               absent=args.absent if dropout else "zeros",
                               unimodal_loss=args.unimodal_loss if name else 0.0,
                               unimodal_fallback=args.unimodal_fallback and bool(name))
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    def feed(split, presence=None):
        inputs, labels = data.splits[split]
        inputs = {m: inputs[m] for m in branches}
        if dropout:
            pattern = presence or [1.0] * len(modalities)
            inputs["presence"] = np.tile(np.float32(pattern), (len(labels), 1))
        return inputs, labels

    best = keras.callbacks.EarlyStopping("val_accuracy", patience=args.epochs, mode="max",
                                         restore_best_weights=True)
    started, cpu = time.time(), time.process_time()
    history = model.fit(*feed("train"), validation_data=feed("validation"), epochs=args.epochs,
                        batch_size=args.batch_size, callbacks=[best], verbose=0).history
    wall, cpu = time.time() - started, time.process_time() - cpu
    cases = presence_cases(modalities) if dropout else {"all": None}
    test = {case: float(model.evaluate(*feed("test", p), batch_size=256, verbose=0)[1])
            for case, p in cases.items()}
    return {"seed": seed, "validation_accuracy": float(max(history["val_accuracy"])),
            "best_epoch": int(np.argmax(history["val_accuracy"])) + 1, "test_accuracy": test,
            "fit_wall_s": round(wall, 1), "fit_cpu_s": round(cpu, 1),
            "parameters": int(model.count_params())}


def table(report):
    """The markdown table of a report."""
    cases = sorted({c for runs in report["results"].values() for r in runs
                    for c in r["test_accuracy"]}, key=lambda c: (c != "all", c))
    header = ["row"] + [f"test, {c}" for c in cases] + ["validation", "seeds", "fit s", "params"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, runs in report["results"].items():
        if not runs:
            continue
        cells = []
        for case in cases:
            values = [r["test_accuracy"][case] for r in runs if case in r["test_accuracy"]]
            cells.append("{:.3f} ± {:.3f}".format(*confidence_interval(values)) if values else "")
        validation = np.mean([r["validation_accuracy"] for r in runs])
        wall = np.mean([r["fit_wall_s"] for r in runs])
        lines.append(f"| {row} | " + " | ".join(cells) +
                     f" | {validation:.3f} | {len(runs)} | {wall:.0f} | {runs[0]['parameters']:,} |")
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS) + ["all"], default=None,
                        help="run a published table's settings (options given after it win)")
    parser.add_argument("--task", default="easy_vqa", help=f"one of {tasks.available()}")
    parser.add_argument("--rows", nargs="+", default=None,
                        help="layers, 'name:key=value', or 'late' (default: each modality "
                             "alone, late fusion, then every registered layer)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--modality-dropout", type=float, default=0.0)
    parser.add_argument("--absent", choices=["zeros", "learned", "imputed"], default="zeros",
                        help="with --modality-dropout: what fusion sees of an absent modality")
    parser.add_argument("--warmup-fraction", type=float, default=0.0,
                        help="with --modality-dropout: share of the training steps over which "
                             "its rate grows from 0")
    parser.add_argument("--unimodal-loss", type=float, default=0.0,
                        help="weight of unimodal auxiliary losses of the fused rows (0: none)")
    parser.add_argument("--unimodal-fallback", action="store_true",
                        help="with --unimodal-loss: rows missing a modality are predicted by "
                             "the present modalities' heads")
    parser.add_argument("--pretrained-branches", action="store_true",
                        help="train each fused row's branches alone first, then freeze them")
    parser.add_argument("--limit", type=int, default=None,
                        help="random training and test examples kept (default: all)")
    parser.add_argument("--max-questions", type=int, default=0,
                        help="easy_vqa: questions kept per split (0: all)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", default=None)
    return parser


def expand_presets(argv):
    """One argument list per table: a `--preset`'s settings first, so the
    options given with it win.

    >>> expand_presets(["--preset", "easy_vqa", "--seeds", "0"])[0][:4]
    ['--task', 'easy_vqa', '--epochs', '8']
    >>> [a[1] for a in expand_presets(["--preset", "all"])]
    ['av_digits', 'av_text_digits', 'easy_vqa']
    >>> expand_presets(["--task", "synthetic"])
    [['--task', 'synthetic']]
    """
    preset = build_parser().parse_known_args(argv)[0].preset
    names = list(PRESETS) if preset == "all" else [preset] if preset else []
    return [PRESETS[name] + argv + ["--preset", name] for name in names] or [list(argv)]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    reports = [run_table(build_parser().parse_args(a)) for a in expand_presets(argv)]
    return reports[0] if len(reports) == 1 else reports


def run_table(args):
    """Trains the missing runs of one table, writes its JSON and markdown; returns the report."""
    task = tasks.get(args.task)
    stem = args.task
    if args.modality_dropout:
        stem += f"-md{args.modality_dropout:g}"
        stem += f"-{args.absent}" if args.absent != "zeros" else ""
        stem += f"-warmup{args.warmup_fraction:g}" if args.warmup_fraction else ""
    stem += f"-uni{args.unimodal_loss:g}" if args.unimodal_loss else ""
    stem += "-fallback" if args.unimodal_fallback else ""
    stem += "-pretrained" if args.pretrained_branches else ""
    output = args.output or str(RESULTS / f"{stem}.json")
    settings = {k: getattr(args, k) for k in ("task", "epochs", "units", "batch_size",
                                              "learning_rate", "modality_dropout", "limit",
                                              "max_questions")}
    if args.modality_dropout and (args.absent != "zeros" or args.warmup_fraction):
        settings.update(absent=args.absent, warmup_fraction=args.warmup_fraction)
    if args.unimodal_loss:
        settings.update(unimodal_loss=args.unimodal_loss)
    if args.unimodal_fallback:
        settings.update(unimodal_fallback=True)
    if args.pretrained_branches:
        settings.update(pretrained_branches=True)
    report = {"settings": settings, "results": {}}
    if os.path.exists(output):
        with open(output) as f:
            previous = json.load(f)
        if previous.get("settings") == settings:
            report = previous
    report.update(date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()}, "
                  f"{os.cpu_count()} CPU cores, Keras {keras.__version__} on "
                  f"{keras.backend.backend()}")
    options = {"max_questions": args.max_questions} if "max_questions" in task.options else {}
    for seed in args.seeds:
        data = task.data(data_dir=args.data_dir, seed=seed, limit=args.limit, **options)
        modalities = list(data.splits["train"][0])
        rows = args.rows or ([f"{m} alone" for m in modalities] + [LATE_ROW] + [
            name for name in fusion.available() if fusion.get_class(name).accepts(len(modalities))])
        for row in rows:
            runs = report["results"].setdefault(row, [])
            if any(r["seed"] == seed for r in runs):
                continue
            runs.append(run_one(task, data, row, seed, args))
            print(f"{row:32s} seed {seed}: {runs[-1]['test_accuracy']} "
                  f"({runs[-1]['fit_wall_s']:.0f} s)", flush=True)
            write_json(output, report)
    markdown = table(report)
    write_text(output[:-len(".json")] + ".md", f"{args.task}, {json.dumps(settings)}, "
               f"{report['date']}, {report['machine']}\n\n{markdown}\n")
    print(markdown)
    return report


if __name__ == "__main__":
    main()
