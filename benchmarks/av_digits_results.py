"""Results table of the audio-visual digits tasks: test accuracy of each
modality alone, of several fusion layers and of late fusion, mean ± std over
seeds. Prints a markdown table and writes JSON.

    python benchmarks/av_digits_results.py --epochs 10 --seeds 0 1 2
    python benchmarks/av_digits_results.py --task av_text_digits
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmfusion import fusion, tasks  # noqa: E402
from mmfusion.datasets.fsdd import load_fsdd  # noqa: E402
from mmfusion.recipes.train import train_task, write_json  # noqa: E402

FUSIONS = ("concat", "weighted_sum", "gmu", "lmf", "mfb")


def configurations(modalities):
    """`(row label, train_task settings)`; unregistered fusion layers are reported, not run."""
    rows = [(f"{m} alone", {"modalities": [m]}) for m in modalities]
    skipped = []
    for name in FUSIONS:
        if name in fusion.available():
            rows.append((name, {"fusion": name}))
        else:
            skipped.append(name)
    rows.append(("late (learned weights)", {"placement": "late", "fusion": "weighted"}))
    return rows, skipped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", choices=("av_digits", "av_text_digits"), default="av_digits")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-dir", default=None,
                        help="folder of datasets holding fsdd/ (None: $MMFUSION_DATA, else "
                             "Keras's cache)")
    parser.add_argument("--output", default=None, help="default runs/bench-TASK")
    args = parser.parse_args(argv)
    output = args.output or os.path.join("runs", f"bench-{args.task}")
    modalities = tasks.get(args.task).modalities
    rows, skipped = configurations(modalities)
    data = load_fsdd(data_dir=args.data_dir, length=tasks.AUDIO_LENGTH)  # decoded once
    results = {}
    for label, extra in rows:
        accuracies = []
        for seed in args.seeds:
            folder = os.path.join(output, label.split(" ")[0], f"s{seed}")
            metrics = train_task(args.task, seed=seed, output=folder, epochs=args.epochs,
                                 options={"fsdd": data}, verbose=1, **extra)
            accuracies.append(metrics["test_accuracy"])
        results[label] = {"mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)),
                          "runs": accuracies}
        print(f"{label}: {results[label]['mean']:.3f} ± {results[label]['std']:.3f}", flush=True)
    best_single = max(results[f"{m} alone"]["mean"] for m in modalities)
    lines = [f"| model | test accuracy ({len(args.seeds)} seeds, {args.epochs} epochs) |",
             "|---|---|"]
    lines += [f"| {k} | {v['mean']:.3f} ± {v['std']:.3f} |" for k, v in results.items()]
    table = "\n".join(lines)
    if skipped:
        table += f"\n\nNot registered yet, skipped: {', '.join(skipped)}."
    print(table)
    report = {"task": args.task, "epochs": args.epochs, "seeds": args.seeds,
              "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, "
              f"{os.cpu_count()} CPUs", "results": results, "skipped": skipped,
              "best_single_modality": best_single, "markdown": table}
    path = os.path.join(output, "results.json")
    write_json(path, report)
    print(f"results: {path}")
    return report


if __name__ == "__main__":
    main()
