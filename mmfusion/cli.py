"""The `mmfusion` command: demo, list, train, search, report."""

import argparse
import importlib
import sys

__all__ = ["build_parser", "main"]


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


def _report(args):
    from mmfusion.inspect.report import build_report

    print(build_report(args.logdir, output=args.output))


def _search(args):
    from mmfusion.search.run import run_search

    callbacks = []
    if args.tensorboard:
        import keras

        callbacks.append(keras.callbacks.TensorBoard(args.tensorboard))
    fusions = {"fusions": args.fusions.split(",")} if args.fusions else {}
    run_search(args.recipe, oracle=args.oracle, trials=args.trials, directory=args.directory,
               epochs=args.epochs, max_layers=args.max_layers, seed=args.seed,
               pretrain_epochs=args.pretrain_epochs, overwrite=args.overwrite,
               callbacks=callbacks, **fusions)


def _train(args):
    try:
        recipe = importlib.import_module(f"recipes.{args.recipe}")
    except ModuleNotFoundError as error:
        raise SystemExit(f"mmfusion train: unknown recipe '{args.recipe}' ({error}).")
    recipe.main(args.recipe_args)


def build_parser():
    """The `argparse` parser of the `mmfusion` command and its subcommands.

    Returns:
        An `argparse.ArgumentParser`; each subcommand sets `args.run`, the
        function that runs it.

    Example:

    >>> args = build_parser().parse_args(["search", "synthetic", "--trials", "3"])
    >>> args.command, args.recipe, args.trials, args.oracle, args.max_layers
    ('search', 'synthetic', 3, 'mfas', 2)
    """
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

    search = commands.add_parser("search", help="fusion architecture search: mmfusion search RECIPE")
    search.add_argument("recipe", choices=("synthetic", "av_digits"))
    search.add_argument("--oracle", default="mfas", choices=("mfas", "random", "bayesian"))
    search.add_argument("--trials", type=int, default=10)
    search.add_argument("--directory", default="mmfusion-search",
                        help="search folder (resumed unless --overwrite)")
    search.add_argument("--epochs", type=int, default=5, help="training epochs per trial")
    search.add_argument("--fusions", default=None,
                        help="comma-separated candidate fusion layers (default concat,gmu,lmf,mfb)")
    search.add_argument("--pretrain-epochs", type=int, default=10,
                        help="epochs of each branch's pretraining")
    search.add_argument("--max-layers", type=int, default=2, help="most fusion layers")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--overwrite", action="store_true", help="start again")
    search.add_argument("--tensorboard", default=None,
                        help="TensorBoard log folder (HParams dashboard of the trials)")
    search.set_defaults(run=_search)

    report = commands.add_parser("report", help="HTML report of a run's TensorBoard logs: mmfusion report LOGDIR")
    report.add_argument("logdir", help="log directory of keras.callbacks.TensorBoard and FusionInspector")
    report.add_argument("--output", default=None, help="HTML path (default LOGDIR/report.html)")
    report.set_defaults(run=_report)
    return parser


def main(argv=None):
    """Runs the `mmfusion` command.

    Args:
        argv: the arguments after `mmfusion` (default: `sys.argv[1:]`).

    Example:

    >>> main(["list"])  # doctest: +ELLIPSIS
    attention_pooling        AttentionPooling             N-modal, vectors
    ...
    weighted_sum             WeightedSum                  N-modal, vectors
    """
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.run(args)


if __name__ == "__main__":
    main()
