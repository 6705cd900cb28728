"""Audio-visual digits: handwritten digit images + spoken digits (FSDD), each
degraded half of the time, so that only fusion does well.

    python -m recipes.av_digits --fusion gmu --epochs 8
    python -m recipes.av_digits --modalities image          # one modality alone
    python -m recipes.av_digits --placement late --fusion weighted
"""

from collections import defaultdict

import keras
import numpy as np

from mmfusion.branches import audio_cnn, image_cnn, text_lstm, text_vectorizer
from mmfusion.compose import build_fusion_model
from mmfusion.datasets.av_digits import load_av_digits
from mmfusion.datasets.pipelines import make_dataset
from recipes import base_parser, default_fsdd_path, train_and_report

NAME = "av_digits"
AUDIO_LENGTH = 6000
TEXT_LENGTH = 8


def make_branches(modalities, vocab_size=None):
    """The branches of the recipe, for the given modalities."""
    makers = {
        "image": lambda: image_cnn((16, 16, 1), filters=(16, 32), embedding_dim=64,
                                   dropout=0.2, name="image"),
        "audio": lambda: audio_cnn(AUDIO_LENGTH, filters=(16, 32, 32), embedding_dim=64,
                                   dropout=0.2, name="audio"),
        "text": lambda: text_lstm(vocab_size, sequence_length=TEXT_LENGTH, embedding_dim=32,
                                  units=(32,), name="text"),
    }
    return {m: makers[m]() for m in modalities}


def accuracy_by_condition(predicted, data, modalities):
    """Test accuracy per set of degraded modalities (`"none"`, `"audio"`, `"audio+image"`, ...)."""
    groups = defaultdict(list)
    for i, ok in enumerate(predicted == data.labels):
        key = "+".join(m for m in sorted(modalities) if data.degraded[m][i]) or "none"
        groups[key].append(ok)
    return {"test_accuracy_by_degraded": {k: float(np.mean(v)) for k, v in sorted(groups.items())}}


def run(name, argv=None, text=False, fsdd=None, description=__doc__):
    """Parses `argv`, trains and evaluates; returns the metrics.

    Args:
        name: recipe name (output folder and metrics).
        argv: command-line arguments.
        text: add the text modality (tri-modal task).
        fsdd: optional already loaded `(train, test)` FSDD (benchmarks reuse it).
        description: the `--help` text.
    """
    all_modalities = ("image", "audio", "text") if text else ("image", "audio")
    parser = base_parser(name, description)
    parser.add_argument("--modalities", nargs="+", default=list(all_modalities),
                        choices=all_modalities, help="one modality: no fusion")
    parser.add_argument("--fsdd-path", default=default_fsdd_path(),
                        help="local FSDD copy (default ../shared/data/fsdd; else downloaded)")
    parser.add_argument("--p-degrade", type=float, default=0.5)
    parser.add_argument("--limit", type=int, default=None,
                        help="use only N random training and N test examples (smoke tests)")
    args = parser.parse_args(argv)
    if len(args.modalities) == 1:
        args.fusion, args.placement = "none", "intermediate"
    keras.utils.set_random_seed(args.seed)
    train, test = load_av_digits(
        args.fsdd_path, fsdd=fsdd, audio_length=AUDIO_LENGTH, p_degrade=args.p_degrade,
        text=text, text_corruption=args.p_degrade, seed=args.seed)
    if args.limit is not None:  # random subsets, so that every class is there
        rng = np.random.default_rng(args.seed)
        train, test = (data.take(rng.permutation(len(data))[:args.limit])
                       for data in (train, test))
    train_x = {m: train.inputs[m] for m in args.modalities}
    test_x = {m: test.inputs[m] for m in args.modalities}
    vectorizers, vocab_size = None, None
    if "text" in args.modalities:
        vectorizer = text_vectorizer(train_x["text"], sequence_length=TEXT_LENGTH)
        vectorizers, vocab_size = {"text": vectorizer}, vectorizer.vocabulary_size()
    model = build_fusion_model(
        make_branches(args.modalities, vocab_size),
        None if args.fusion == "none" else args.fusion, num_outputs=10, units=args.units,
        placement=args.placement, head_dropout=0.2, name=f"{name}_{args.fusion}")
    return train_and_report(
        name, model,
        make_dataset(train_x, train.labels, args.batch_size, shuffle=True,
                     seed=args.seed, text_vectorizers=vectorizers),
        make_dataset(test_x, test.labels, 256, text_vectorizers=vectorizers), args,
        extra=lambda predicted: accuracy_by_condition(predicted, test, all_modalities),
    )


def main(argv=None):
    """`python -m recipes.av_digits ...`; returns the metrics dict."""
    return run(NAME, argv)


if __name__ == "__main__":
    main()
