"""Data-parallel training of a composed fusion model, on one machine or many.

The same script runs every route; the loss it prints per epoch must not depend
on the route (same seed, same data, same global batch):

    # one process, one device (the reference)
    python -m recipes.data_parallel --strategy none

    # TensorFlow, one machine: MirroredStrategy over 2 logical CPUs (or GPUs)
    python -m recipes.data_parallel --strategy mirrored --devices 2

    # JAX, many machines: run on each of P machines, with i = 0 .. P-1 and the
    # address of machine 0 as coordinator (here 2 processes on one machine)
    KERAS_BACKEND=jax python -m recipes.data_parallel --strategy jax \\
        --coordinator 10.0.0.1:12345 --num-processes 2 --process-id 0
    KERAS_BACKEND=jax python -m recipes.data_parallel --strategy jax \\
        --coordinator 10.0.0.1:12345 --num-processes 2 --process-id 1

The JAX route is Keras 3's own: `jax.distributed.initialize`, CPU collectives
through gloo, `keras.distribution.DataParallel`, the same seed on every
process and the data as a `tf.data.Dataset`, which Keras shards per process.
`tf.distribute.MultiWorkerMirroredStrategy` does not work with Keras 3 `fit`
(keras-team/keras#20585), so it is not offered.

`--text` adds a third modality, a short description per example, tokenized
in the `tf.data` pipeline (`text_vectorizer`, TensorFlow ops on every
backend) and read by an LSTM branch.

The last line printed is JSON: `{"strategy": ..., "losses": [...]}`.
"""

import argparse
import json
import os

__all__ = ["build_model", "main"]


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m recipes.data_parallel",
                                     description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--strategy", choices=("none", "mirrored", "jax"), default="none")
    parser.add_argument("--devices", type=int, default=2, help="logical CPUs for 'mirrored'")
    parser.add_argument("--coordinator", default="127.0.0.1:12345", help="host:port of process 0")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text", action="store_true",
                        help="add a text modality tokenized in the tf.data pipeline")
    return parser.parse_args(argv)


def setup_distribution(args):
    """Starts the chosen route; returns a context manager for model building."""
    import contextlib

    if args.strategy == "mirrored":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.devices)
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices).scope()
    if args.strategy == "jax":
        if os.environ.get("KERAS_BACKEND") != "jax":
            raise SystemExit("--strategy jax needs KERAS_BACKEND=jax")
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
        import keras

        keras.distribution.set_distribution(keras.distribution.DataParallel())
    return contextlib.nullcontext()


TEXT, WORDS, FILLER = "description", ("no", "yes"), ("the", "a", "new", "item", "one")
TEXT_LENGTH = 4


def descriptions(labels, seed):
    """One short description per label: filler words and the label's word,
    the other label's word instead in a quarter of the rows.

    >>> descriptions([0, 1], seed=0).tolist()
    ['new a no', 'the the yes']
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for label in labels:
        word = WORDS[label] if rng.random() < 0.75 else WORDS[1 - label]
        rows.append(" ".join([*rng.choice(FILLER, 2), word]))
    return np.array(rows, dtype=object)


def text_vectorizer_for_recipe():
    from mmfusion.branches import text_vectorizer

    return text_vectorizer(vocabulary=list(WORDS + FILLER), sequence_length=TEXT_LENGTH)


def build_model(seed, text=False):
    """GMU fusion of two tabular branches for the GMU synthetic task (and,
    with `text`, an LSTM branch over token ids), compiled (SGD).

    Example:

    >>> build_model(seed=0).output_shape
    (None, 2)
    """
    import keras

    from mmfusion.branches import tabular_mlp, text_lstm
    from mmfusion.compose import build_fusion_model
    from mmfusion.datasets.synthetic import MODALITIES

    keras.utils.set_random_seed(seed)
    branches = {m: tabular_mlp(2, units=(16,), name=m) for m in MODALITIES}
    if text:
        branches[TEXT] = text_lstm(text_vectorizer_for_recipe().vocabulary_size(),
                                   sequence_length=TEXT_LENGTH, embedding_dim=4, units=(8,),
                                   bidirectional=False, name=TEXT)
    model = build_fusion_model(branches, "gmu", num_outputs=2, units=16, head_units=(16,))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


def main(argv=None):
    """Trains on the chosen route and prints the per-epoch losses as JSON.

    Example:

    >>> main(["--epochs", "2"])  # doctest: +ELLIPSIS
    {"strategy": "none", "process_id": 0, "losses": [..., ...]}
    """
    args = parse_args(argv)
    scope = setup_distribution(args)
    from mmfusion.datasets.pipelines import make_dataset
    from mmfusion.datasets.synthetic import make_gmu_task

    data = make_gmu_task(n_samples=1024, seed=args.seed)
    inputs, vectorizers = dict(data.inputs), None
    if args.text:
        inputs[TEXT] = descriptions(data.labels, args.seed)
        vectorizers = {TEXT: text_vectorizer_for_recipe()}
    dataset = make_dataset(inputs, data.labels, batch_size=args.batch_size,
                           text_vectorizers=vectorizers)
    with scope:
        model = build_model(args.seed, text=args.text)
    history = model.fit(dataset, epochs=args.epochs, shuffle=False, verbose=0)
    print(json.dumps({"strategy": args.strategy, "process_id": args.process_id,
                      "losses": [float(v) for v in history.history["loss"]]}))


if __name__ == "__main__":
    main()
