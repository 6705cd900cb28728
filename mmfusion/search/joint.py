"""Training many candidate models in one compiled Keras model.

A search trains many small candidates on the same cached features. Trained
one at a time, each pays a compiled step per batch, a `fit` set-up and
KerasTuner's bookkeeping, for a few thousand multiply-adds of real work.
`train_jointly` puts K candidates side by side in one functional model (the
same inputs, one output per candidate) and minimizes the sum of their
losses: their parameters are disjoint, so the gradient of the sum with
respect to a candidate's weights is that candidate's own gradient, and
Adam's updates are per weight, so every candidate follows exactly the
trajectory it would follow alone (the same batches, in the same order) at
about the cost of one training run.
"""

import keras

from mmfusion.keras_internals import build_training_state

__all__ = ["build_before_fit", "candidate_key", "is_dataset", "split_candidate_key",
           "train_jointly"]


def candidate_key(metric, output, n_outputs=2):
    """The name Keras gives `metric` of output `output` in a model of
    `n_outputs` named outputs (a model of one output keeps the plain name).

    >>> candidate_key("val_accuracy", "candidate_3"), candidate_key("loss", "candidate_3")
    ('val_candidate_3_accuracy', 'candidate_3_loss')
    >>> candidate_key("val_accuracy", "candidate_0", n_outputs=1)
    'val_accuracy'
    """
    if n_outputs == 1:
        return metric
    if metric.startswith("val_"):
        return f"val_{output}_{metric[len('val_'):]}"
    return f"{output}_{metric}"


def split_candidate_key(name, outputs):
    """`(output, metric)`: which of `outputs` a log key of a joint model
    belongs to and the key it would have for that model alone; `(None, name)`
    for a key of no single output (the summed `loss`). The inverse of
    `candidate_key`.

    >>> split_candidate_key("val_candidate_1_presence_accuracy", ["candidate_1", "candidate_10"])
    ('candidate_1', 'val_presence_accuracy')
    >>> split_candidate_key("candidate_10_loss", ["candidate_1", "candidate_10"])
    ('candidate_10', 'loss')
    >>> split_candidate_key("val_loss", ["candidate_1"])
    (None, 'val_loss')
    """
    prefix, rest = ("val_", name[len("val_"):]) if name.startswith("val_") else ("", name)
    for output in outputs:
        if rest.startswith(f"{output}_"):
            return output, prefix + rest[len(output) + 1:]
    return None, name


def _fresh(metric):
    """A metric name as given, or a new instance of a metric object (metric
    objects hold state: each candidate needs its own)."""
    return metric if isinstance(metric, str) else type(metric).from_config(metric.get_config())


class _BestEpochs(keras.callbacks.Callback):
    """Calls `save(i)` whenever the log value `keys[i]` is the best so far."""

    def __init__(self, keys, mode, save):
        super().__init__()
        self.keys, self.mode, self.save = keys, mode, save
        self.best = [None] * len(keys)

    def on_epoch_end(self, epoch, logs=None):
        for i, key in enumerate(self.keys):
            value = (logs or {}).get(key)
            if value is None:
                continue
            best = self.best[i]
            if best is None or (value > best if self.mode == "max" else value < best):
                self.best[i] = value
                self.save(i)


def _pair(data):
    """`(x, y)` of validation data given as a pair or as a dataset."""
    return (data, None) if is_dataset(data) else (data[0], data[1])


def is_dataset(x):
    """Whether `x` is a `tf.data.Dataset` (without importing TensorFlow).

    >>> import numpy as np
    >>> import tensorflow as tf
    >>> is_dataset(tf.data.Dataset.range(3)), is_dataset(np.arange(3))
    (True, False)
    """
    return type(x).__module__.startswith("tensorflow") and hasattr(x, "element_spec")


def build_before_fit(model, x, y=None, batch_size=None):
    """Creates a compiled model's optimizer and metric state from its first
    training batch, so that `fit` traces the training step once instead of
    twice on TensorFlow (`mmfusion.keras_internals.build_training_state`).

    Args:
        model: a compiled `keras.Model`.
        x, y: the training data as `fit` takes it: arrays (any structure),
            or a batched `tf.data.Dataset` of `(inputs, targets)` as `x`
            (only its `element_spec` is read: nothing is drawn from it).
        batch_size: the batch size of array data (only its shape is used;
            default 32, as `fit`'s).

    Example:

    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    >>> model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    >>> build_before_fit(model, np.zeros((40, 3), "float32"), np.zeros(40, "int32"), batch_size=8)
    >>> model.optimizer.built
    True
    """
    if is_dataset(x):
        x, y = x.element_spec
    else:
        rows = batch_size or 32
        x, y = (None if d is None else keras.tree.map_structure(lambda a: a[:rows], d)
                for d in (x, y))
    build_training_state(model, x, y)


def _per_output(x, y, outputs):
    """Inputs and targets with the targets repeated for every output: arrays
    as `(x, {output: y})`, a `tf.data.Dataset` of `(x, y)` mapped to
    `(x, {output: y})` batches (`y` then None)."""
    if is_dataset(x):
        return x.map(lambda inputs, labels: (inputs, {name: labels for name in outputs})), None
    return x, {name: y for name in outputs}


def train_jointly(models, x, y, optimizer, loss, metrics=("accuracy",), validation_data=None,
                  save_best=None, monitor="val_accuracy", mode="max", **fit_kwargs):
    """Trains `models` together, each exactly as it would train alone.

    Args:
        models: functional Keras models taking the same inputs `x` (by
            name), each with one output, with disjoint trainable weights
            (weightless layers, such as feature stand-in branches, may be
            shared). Their weights are trained in place.
        x: the inputs (e.g. a dict input name -> array), or a batched
            `tf.data.Dataset` of `(inputs, targets)` (then `y` is None).
        y: the targets, the same for every model.
        optimizer: a callable returning a fresh optimizer (e.g.
            `lambda: keras.optimizers.Adam(1e-3)`). Use one whose update of
            a weight depends on that weight's gradients only (Adam, SGD,
            RMSprop; no global gradient clipping such as `global_clipnorm`).
        loss: the loss of every model.
        metrics: the metrics of every model: names, or metric objects (each
            model gets its own copy, named as the object is).
        validation_data: optional `(x, y)`, or a `tf.data.Dataset` of
            `(inputs, targets)`, evaluated after every epoch.
        save_best: optional callable `save_best(i)`, called when model `i`
            reaches its best `monitor` value so far (e.g. to checkpoint it).
        monitor: a metric name as for one model (`"val_accuracy"`, `"loss"`).
        mode: `"max"` or `"min"`: which `monitor` values are better.
        **fit_kwargs: other `fit` arguments (`epochs`, `batch_size`,
            `shuffle`, `verbose`, `callbacks`).

    Returns:
        One `keras.callbacks.History` per model, its `history` keyed as if
        the model had been trained alone (`loss`, `accuracy`, `val_loss`, ...).

    Example:

    >>> import numpy as np
    >>> def candidate(units):
    ...     inputs = keras.Input((3,), name="a")
    ...     hidden = keras.layers.Dense(units, activation="relu")(inputs)
    ...     return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    >>> x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> histories = train_jointly([candidate(4), candidate(8)], x, y,
    ...                           lambda: keras.optimizers.Adam(1e-2),
    ...                           "sparse_categorical_crossentropy", epochs=2, verbose=0)
    >>> sorted(histories[1].history), len(histories[1].history["loss"])
    (['accuracy', 'loss'], 2)
    """
    models = list(models)
    if not models:
        raise ValueError("train_jointly: no models to train.")
    seen = set()
    for model in models:
        shared = {id(w) for w in model.trainable_weights} & seen
        if shared:
            raise ValueError(f"train_jointly: model '{model.name}' shares trainable weights "
                             "with another model; joint training needs disjoint weights.")
        seen |= {id(w) for w in model.trainable_weights}
    outputs = [f"candidate_{i}" for i in range(len(models))]
    structure = models[0].input
    inputs = keras.tree.map_structure(
        lambda t: keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name), structure)
    # Each candidate is wrapped under a unique name: Keras requires unique
    # names at the top level of a functional model.
    wrapped = {name: keras.Model(model.input, model.output, name=name)(inputs)
               for name, model in zip(outputs, models)}
    joint = keras.Model(inputs, wrapped, name="joint_candidates")
    joint.compile(optimizer=optimizer(), loss={name: loss for name in outputs},
                  metrics={name: [_fresh(m) for m in metrics] for name in outputs})
    callbacks = list(fit_kwargs.pop("callbacks", None) or [])
    if save_best is not None:
        callbacks.append(_BestEpochs([candidate_key(monitor, o, len(outputs)) for o in outputs],
                                     mode, save_best))
    x, targets = _per_output(x, y, outputs)
    build_before_fit(joint, x, targets, fit_kwargs.get("batch_size"))
    if validation_data is not None:
        validation_data = _per_output(*_pair(validation_data), outputs)
    history = joint.fit(x, targets, validation_data=validation_data, callbacks=callbacks,
                        **fit_kwargs).history
    histories = {output: keras.callbacks.History() for output in outputs}
    for key, values in history.items():  # also what callbacks logged per candidate
        output, name = split_candidate_key(key, outputs) if len(outputs) > 1 else (outputs[0], key)
        if output is not None:
            histories[output].history[name] = list(values)
    return list(histories.values())
