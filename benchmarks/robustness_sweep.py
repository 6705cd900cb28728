"""Missing-modality robustness of one fusion layer with each way of handling
absence (`absent="zeros"`, `"learned"`, `"imputed"`), next to late fusion:
accuracy over training-time x test-time missing rates and per presence
pattern, with MultiBench's relative and effective robustness (effective
robustness relative to the late-fusion model trained at the same rate).
Prints markdown tables; writes JSON and a plot per option when given --out.

    python benchmarks/robustness_sweep.py --data-dir ../shared/data --fusion gmu --epochs 6
    python benchmarks/robustness_sweep.py --limit 600 --epochs 2 --out /tmp/sweep
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from mmfusion import tasks  # noqa: E402
from mmfusion.compose import Late, build_fusion_model  # noqa: E402
from mmfusion.files import write_json  # noqa: E402
from mmfusion.robustness import missing_rate_sweep  # noqa: E402

OPTIONS = ("zeros", "learned", "imputed")


def builder(task, data, fusion, absent, dropout, learning_rate):
    """`train_rate -> compiled model` (the rate itself is applied to the data by the sweep)."""
    def build(rate):
        model = build_fusion_model(task.branches(data), fusion, num_outputs=task.num_outputs,
                                   presence=True, modality_dropout=dropout, absent=absent,
                                   head_dropout=0.2)
        model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy")
        return model
    return build


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="av_digits")
    parser.add_argument("--fusion", default="gmu")
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=OPTIONS)
    parser.add_argument("--dropout", type=float, default=0.3, help="ModalityDropout rate")
    parser.add_argument("--train-rates", nargs="+", type=float, default=[0.0, 0.3])
    parser.add_argument("--test-rates", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--limit", type=int, default=None, help="examples per split")
    parser.add_argument("--data-dir", default=None, help="datasets folder (else $MMFUSION_DATA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for JSON and plots")
    args = parser.parse_args(argv)

    task = tasks.get(args.task)
    data = task.data(data_dir=args.data_dir, seed=args.seed, limit=args.limit)
    splits = {"train": data.splits["train"], "test": data.splits["test"]}
    fit = {"epochs": args.epochs, "batch_size": args.batch_size, "verbose": 0}

    def sweep(build):
        return missing_rate_sweep(build, splits, train_rates=args.train_rates,
                                  test_rates=args.test_rates, fit_kwargs=fit, seed=args.seed)

    started = time.time()
    late = sweep(builder(task, data, Late("weighted"), "zeros", args.dropout, args.learning_rate))
    results = {"late (weighted)": late}
    for option in args.options:
        results[f"{args.fusion}, absent={option}"] = sweep(
            builder(task, data, args.fusion, option, args.dropout, args.learning_rate))
    print(f"# {args.task}: {args.fusion} with ModalityDropout({args.dropout}), "
          f"{args.epochs} epochs, {len(splits['train'][1])} training / "
          f"{len(splits['test'][1])} test examples, {time.time() - started:.0f} s "
          f"on {platform.node()}\n")
    summary = {}
    for name, result in results.items():
        print(f"## {name}\n\n{result.table(late)}\n")
        summary[name] = {**result.to_dict(),
                         "effective_robustness": list(result.effective_robustness(late).values())}
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        write_json(os.path.join(args.out, f"robustness_{args.task}.json"),
                   {"args": vars(args), "results": summary})
        for i, (name, result) in enumerate(results.items()):
            result.plot(os.path.join(args.out, f"robustness_{args.task}_{i}.png"),
                        title=f"{args.task}: {name}")


if __name__ == "__main__":
    main()
