"""MultiBench's robustness metrics for every layer of `layer_tables.py` results.

A table of `layer_tables.py --modality-dropout RATE` holds, per layer and seed,
the test accuracy with every modality present and with each one alone. For two
modalities those are all the presence patterns, so the accuracy expected at any
test-time missing rate follows exactly (`mmfusion.robustness.expected_scores`:
the curve `missing_rate_sweep` samples, without its noise). From that curve,
per seed, come relative robustness (area under it) and effective robustness
(against the late-fusion row of `--late`, same seed); the table gives their
means over the seeds every file has, one pair of columns per option.

    python benchmarks/layer_robustness.py --late benchmarks/results/av_digits-md0.3.json \\
        --tables zeros=benchmarks/results/av_digits-md0.3.json \\
                 pretrained=benchmarks/results/av_digits-md0.3-uni1-fallback-pretrained.json \\
        --output benchmarks/results/layer_robustness-av_digits.md
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.layer_tables import LATE_ROW  # noqa: E402
from mmfusion.files import write_text  # noqa: E402
from mmfusion.robustness import (effective_robustness, expected_scores,  # noqa: E402
                                 relative_robustness)

RATES = (0.0, 0.25, 0.5, 0.75)


def pattern_scores(test_accuracy):
    """`(modalities, {pattern: accuracy})` from one run's `test_accuracy`
    (`"all"` and `"<modality> only"` cases).

    >>> pattern_scores({"all": 0.9, "a only": 0.7, "b only": 0.5})
    (['a', 'b'], {('a', 'b'): 0.9, ('a',): 0.7, ('b',): 0.5})
    """
    modalities = [case[:-len(" only")] for case in test_accuracy if case.endswith(" only")]
    scores = {tuple(modalities): test_accuracy["all"]}
    scores.update({(m,): test_accuracy[f"{m} only"] for m in modalities})
    return modalities, scores


def curve(run, rates=RATES):
    """Expected accuracy of one run at each missing rate."""
    modalities, scores = pattern_scores(run["test_accuracy"])
    return expected_scores(scores, modalities, rates)


def layer_metrics(runs, late_runs, rates=RATES):
    """Mean over the seeds in both `runs` and `late_runs` of the expected
    accuracy at each rate, relative and effective robustness."""
    late = {r["seed"]: curve(r, rates) for r in late_runs}
    per_seed = [(curve(r, rates), late[r["seed"]]) for r in runs if r["seed"] in late]
    if not per_seed:
        raise ValueError("layer_robustness: no seed in common with the late-fusion runs.")
    return {"seeds": len(per_seed),
            "accuracy": np.mean([c for c, _ in per_seed], axis=0).tolist(),
            "relative": float(np.mean([relative_robustness(rates, c) for c, _ in per_seed])),
            "effective": float(np.mean([effective_robustness(c, lc) for c, lc in per_seed]))}


def robustness_table(options, late_runs, rates=RATES):
    """Markdown: a row per layer (late fusion first), relative and effective
    robustness and the expected accuracy at the last rate per option."""
    header = ["layer"]
    for label in options:
        header += [f"{label}: relative", "effective", f"at {rates[-1]:g}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    late = layer_metrics(late_runs, late_runs, rates)
    lines.append("| late fusion | " + " | ".join(
        [f"{late['relative']:.4f}", "0", f"{late['accuracy'][-1]:.3f}"] * len(options)) + " |")
    layers = [row for row in next(iter(options.values()))
              if not row.endswith(" alone") and row != LATE_ROW]
    for layer in layers:
        cells = []
        for results in options.values():
            if layer not in results:
                cells += ["", "", ""]
                continue
            m = layer_metrics(results[layer], late_runs, rates)
            cells += [f"{m['relative']:.4f}", f"{m['effective']:+.4f}", f"{m['accuracy'][-1]:.3f}"]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--late", required=True,
                        help="a layer_tables JSON whose 'late' row is the reference")
    parser.add_argument("--tables", nargs="+", required=True, metavar="LABEL=JSON")
    parser.add_argument("--rates", type=float, nargs="+", default=list(RATES))
    parser.add_argument("--output", default=None, help="markdown file (default: print only)")
    args = parser.parse_args(argv)
    with open(args.late) as f:
        late_runs = json.load(f)["results"][LATE_ROW]
    sources = dict(item.partition("=")[::2] for item in args.tables)  # label -> path
    options = {}
    for label, path in sources.items():
        with open(path) as f:
            options[label] = json.load(f)["results"]
    markdown = robustness_table(options, late_runs, tuple(args.rates))
    if args.output:
        write_text(args.output, f"Expected accuracy at test missing rates {args.rates} from "
                   f"each run's presence-pattern accuracies; late fusion: {args.late}; "
                   + ", ".join(f"{label}: {path}" for label, path in sources.items())
                   + "\n\n" + markdown + "\n")
    print(markdown)
    return markdown


if __name__ == "__main__":
    main()
