"""The `mmfusion` command: demo, train, list."""

import argparse
import importlib
import sys


def _demo(args):
    from mmfusion.demo import run_demo

    run_demo(output_dir=args.output, epochs=args.epochs, seed=args.seed)


def _list(args):
    from mmfusion import fusion

    for name in fusion.available():
        cls = fusion.get_class(name)
        n = "N" if cls.max_modalities is None else str(cls.max_modalities)
        kind = "vectors" if cls.input_rank == 2 else "sequences"
        print(f"{name:24s} {cls.__name__:28s} {n}-modal, {kind}")


def _train(args):
    try:
        recipe = importlib.import_module(f"recipes.{args.recipe}")
    except ModuleNotFoundError as error:
        raise SystemExit(f"mmfusion train: unknown recipe '{args.recipe}' ({error}).")
    recipe.main(args.recipe_args)


def build_parser():
    parser = argparse.ArgumentParser(prog="mmfusion", description="Multimodal fusion for Keras 3.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="concatenation vs. GMU on the GMU paper's synthetic task")
    demo.add_argument("--output", default="mmfusion-demo", help="folder for logs, plot and results")
    demo.add_argument("--epochs", type=int, default=30)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)

    listing = commands.add_parser("list", help="list the registered fusion layers")
    listing.set_defaults(run=_list)

    train = commands.add_parser("train", help="run a recipe: mmfusion train RECIPE [recipe args]")
    train.add_argument("recipe", help="a module of recipes/, e.g. av_digits")
    train.add_argument("recipe_args", nargs=argparse.REMAINDER)
    train.set_defaults(run=_train)
    return parser


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.run(args)


if __name__ == "__main__":
    main()
