"""The `mmfusion` command: demo, list, train, search, report.

Keras and TensorFlow are imported only by the subcommand that runs, so
`mmfusion --help` answers at once; `train` and `search` parse their own
options (`mmfusion train TASK --help`).
"""

import argparse
import sys

from mmfusion import tasks

__all__ = ["build_parser", "main", "search_parser"]

_FORMAT = argparse.ArgumentDefaultsHelpFormatter


def _demo(args):
    from mmfusion.demo import run_demo

    run_demo(output_dir=args.output, epochs=args.epochs, seed=args.seed)


def _list(args):
    if args.what == "tasks":
        for name in tasks.available():
            task = tasks.get(name)
            print(f"{name:16s} {'+'.join(task.modalities):22s} {task.description}")
        return
    from mmfusion import fusion

    for name in fusion.available():
        cls = fusion.get_class(name)
        n = "N" if cls.max_modalities is None else str(cls.max_modalities)
        kind = "vectors" if cls.input_rank == 2 else "sequences"
        print(f"{name:24s} {cls.__name__:28s} {n}-modal, {kind}")


def _report(args):
    from mmfusion.inspect.report import build_report

    print(build_report(args.logdir, output=args.output))


def _train(args):
    config = args.config
    given = [a for a in args.task_args if a == "--config" or a.startswith("--config=")]
    if given or (config is not None and args.task is not None):
        args.parser.error("give either a TASK or --config FILE, not both")
    if config is None:
        if args.task is None:
            args.parser.error("give a TASK or --config FILE")
        from mmfusion.recipes.train import main as train

        train(args.task, args.task_args)
        return
    if args.task_args:
        args.parser.error(f"--config FILE takes no other options; got {' '.join(args.task_args)}")
    from mmfusion.recipes.config import train_from_config

    try:
        train_from_config(config)
    except ValueError as error:
        args.parser.exit(2, f"mmfusion train: error: {error}\n")


def search_parser(task):
    """The parser of `mmfusion search TASK`'s options (defaults shown in `--help`).

    Example:

    >>> args = search_parser("synthetic").parse_args(["--trials", "3"])
    >>> args.trials, args.oracle, args.max_layers, args.data_dir, args.objective
    (3, 'mfas', 2, None, 'val_accuracy')
    >>> search_parser("cmu_mosi").parse_args(["--samples-per-step", "4"]).samples_per_step
    4
    """
    from mmfusion.search.objectives import objectives
    from mmfusion.search.run import DEFAULT_FUSIONS, MFAS_SETTINGS, ORACLES

    head = tasks.get(task).head

    parser = argparse.ArgumentParser(
        prog=f"mmfusion search {task}", formatter_class=_FORMAT,
        description=f"Fusion architecture search on {task}: which taps, fusion layers and depth.")
    parser.add_argument("--oracle", default="mfas", choices=ORACLES,
                        help="search strategy (oneshot: a supernet trained once, its "
                             "discretized pick retrained)")
    parser.add_argument("--trials", type=int, default=10,
                        help="number of trials (oneshot: not used, one retraining)")
    parser.add_argument("--directory", default="mmfusion-search",
                        help="search folder (resumed unless --overwrite)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs per trial")
    parser.add_argument("--supernet-epochs", type=int, default=10,
                        help="supernet epochs (oneshot only)")
    parser.add_argument("--fusions", default=",".join(DEFAULT_FUSIONS),
                        help="comma-separated candidate fusion layers (mmfusion list)")
    parser.add_argument("--pretrain-epochs", type=int, default=10,
                        help="epochs of each branch's pretraining")
    parser.add_argument("--max-layers", type=int, default=2, help="most fusion layers")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the oracle")
    parser.add_argument("--data-dir", default=None,
                        help="folder of datasets holding fsdd/; None: $MMFUSION_DATA, else "
                             "Keras's cache (downloading if needed)")
    parser.add_argument("--overwrite", action="store_true", help="start again")
    parser.add_argument("--tensorboard", default=None,
                        help="TensorBoard log folder (HParams dashboard of the trials; "
                             "needs --candidates-per-step 1)")
    parser.add_argument("--candidates-per-step", type=int, default=1,
                        help="trials trained together in one compiled model")
    parser.add_argument("--objective", default=objectives(head)[0], choices=objectives(head),
                        help=f"what trials are selected on ({head} head; min for losses and "
                             "errors, max for accuracy and auc)")
    parser.add_argument("--modality-dropout", type=float, default=None,
                        help="ModalityDropout rate of every candidate (None: 0.25 with a "
                             "val_presence_* objective, else 0)")
    parser.add_argument("--max-params", type=_positive(int), default=None,
                        help="export the best trial with at most this many fusion-network "
                             "parameters (None: the best trial)")
    mfas = parser.add_argument_group(
        "MFAS settings (--oracle mfas only; unset: MFASOracle's defaults, budget-sized steps)")
    helps = {"initial_samples": "size of the first step",
             "samples_per_step": "K, architectures sampled per later step",
             "temperature": "temperature of the first sampling step",
             "min_temperature": "temperature of the last sampling step",
             "surrogate_units": "LSTM size of the surrogate",
             "surrogate_epochs": "surrogate training steps before each sampling step"}
    for name in MFAS_SETTINGS:
        default = _mfas_default(name)
        kind = float if isinstance(default, float) else int
        mfas.add_argument(f"--{name.replace('_', '-')}", type=_positive(kind),
                          default=argparse.SUPPRESS,
                          help=f"{helps[name]} (MFAS default: "
                               f"{'budget-sized' if default is None else default})")
    return parser


def _mfas_default(name):
    """The default of an `MFASOracle` argument."""
    import inspect

    from mmfusion.search.oracle import MFASOracle

    return inspect.signature(MFASOracle.__init__).parameters[name].default


def _positive(kind):
    """An argparse type: a positive `kind` (int or float)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _search(args):
    parser = search_parser(args.task)
    options = parser.parse_args(args.task_args)
    from mmfusion import fusion

    if options.tensorboard and options.candidates_per_step != 1:
        parser.error("--tensorboard logs each trial's own training: use it with "
                     "--candidates-per-step 1")
    from mmfusion.search.run import MFAS_SETTINGS

    mfas_settings = {name: getattr(options, name) for name in MFAS_SETTINGS
                     if hasattr(options, name)}
    if mfas_settings and options.oracle != "mfas":
        given = ", ".join(f"--{name.replace('_', '-')}" for name in mfas_settings)
        parser.error(f"{given}: MFAS settings need --oracle mfas (got --oracle {options.oracle})")
    temperatures = [mfas_settings.get(name, _mfas_default(name))
                    for name in ("min_temperature", "temperature")]
    if temperatures[0] > temperatures[1]:
        parser.error("--min-temperature must not exceed --temperature (the schedule cools down)")
    head = tasks.get(args.task).head
    if options.oracle == "oneshot" and head != "classification":
        parser.error(f"--oracle oneshot trains a classifier supernet; {args.task} has a {head} "
                     "head: use mfas, random or bayesian")
    if options.modality_dropout is not None and not 0 <= options.modality_dropout < 1:
        parser.error(f"--modality-dropout must be in [0, 1); got {options.modality_dropout}")
    fusions = options.fusions.split(",")
    unknown = [name for name in fusions if name not in fusion.available()]
    if unknown:
        parser.error(f"unknown fusion layer(s) {', '.join(unknown)}; "
                     f"available: {', '.join(fusion.available())}")
    import keras

    from mmfusion.search.run import (ParameterBudgetError, SettingsMismatchError, load_task,
                                     run_search)

    callbacks = [keras.callbacks.TensorBoard(options.tensorboard)] if options.tensorboard else []
    task = load_task(args.task, seed=options.seed, data_dir=options.data_dir)
    try:
        run_search(task, oracle=options.oracle, trials=options.trials,
                   directory=options.directory, epochs=options.epochs,
                   max_layers=options.max_layers, seed=options.seed,
                   pretrain_epochs=options.pretrain_epochs, overwrite=options.overwrite,
                   callbacks=callbacks, fusions=fusions,
                   candidates_per_step=options.candidates_per_step,
                   supernet_epochs=options.supernet_epochs, objective=options.objective,
                   mfas_settings=mfas_settings, modality_dropout=options.modality_dropout,
                   max_params=options.max_params)
    except (SettingsMismatchError, ParameterBudgetError) as error:
        parser.error(str(error))


def build_parser():
    """The `argparse` parser of the `mmfusion` command and its subcommands.

    Returns:
        An `argparse.ArgumentParser`; each subcommand sets `args.run`, the
        function that runs it. `train` and `search` keep their options in
        `args.task_args` (parsed by `mmfusion.recipes.train.build_parser` and
        `search_parser`).

    Example:

    >>> args = build_parser().parse_args(["search", "synthetic", "--trials", "3"])
    >>> args.command, args.task, args.task_args
    ('search', 'synthetic', ['--trials', '3'])
    """
    parser = argparse.ArgumentParser(prog="mmfusion", description="Multimodal fusion for Keras 3.",
                                     formatter_class=_FORMAT)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", formatter_class=_FORMAT,
                               help="concatenation vs. GMU on the GMU paper's synthetic task")
    demo.add_argument("--output", default="mmfusion-demo", help="folder for logs, plot and results")
    demo.add_argument("--epochs", type=int, default=30, help="training epochs of each model")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data and the weights")
    demo.set_defaults(run=_demo)

    listing = commands.add_parser("list", formatter_class=_FORMAT,
                                  help="list the registered fusion layers or tasks")
    listing.add_argument("what", nargs="?", default="fusions", choices=("fusions", "tasks"),
                         help="what to list")
    listing.set_defaults(run=_list)

    choices = ", ".join(tasks.available())
    for name, run, what in (("train", _train, "train a fusion model"),
                            ("search", _search, "fusion architecture search")):
        command = commands.add_parser(
            name, formatter_class=_FORMAT, help=f"{what}: mmfusion {name} TASK [options]"
                                                + (" or --config FILE" if name == "train" else ""),
            description=f"{what.capitalize()} on a registered task ({choices}); "
                        f"'mmfusion {name} TASK --help' lists its options and defaults."
                        + (" Or on your own files: 'mmfusion train --config FILE' (a TOML "
                           "file, see mmfusion.recipes.config)." if name == "train" else ""))
        if name == "train":
            command.add_argument("--config", default=None, metavar="FILE",
                                 help="train on your own files as a TOML file describes them "
                                      "(mmfusion.recipes.config); instead of a TASK")
        command.add_argument("task", choices=tasks.available(), metavar="TASK",
                             nargs="?" if name == "train" else None, help=f"one of {choices}")
        command.add_argument("task_args", nargs=argparse.REMAINDER, metavar="...",
                             help="options of the task's command")
        command.set_defaults(run=run, parser=command)

    report = commands.add_parser("report", formatter_class=_FORMAT,
                                 help="HTML report of a run's TensorBoard logs: mmfusion report LOGDIR")
    report.add_argument("logdir", help="log directory of keras.callbacks.TensorBoard and FusionInspector")
    report.add_argument("--output", default=None, help="HTML path; None: LOGDIR/report.html")
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
    >>> main(["list", "tasks"])  # doctest: +ELLIPSIS
    av_digits        image+audio            digit images + spoken digits (FSDD), ...
    ...
    """
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.run(args)


if __name__ == "__main__":
    main()
