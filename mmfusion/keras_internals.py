"""The one place mmfusion uses Keras internals.

Keras 3 keeps the call graph of a functional model in private attributes
(`Model._nodes`, `Operation._inbound_nodes`, `KerasTensor._keras_history`,
node keys `"<id>_ib-<index>"`) and a symbolic tensor's mask in a private
attribute too. The functions here read them and return plain Python values
(operations, argument structures of Keras tensors, mask tensors, call
counts), and `MultiHeadAttention` overrides the private hook that makes
its projections, so the rest of mmfusion only uses public Keras API; a
Keras change breaks only this module and its tests.
"""

import keras
from keras.src.backend import get_keras_mask

__all__ = ["MultiHeadAttention", "build_training_state", "call_arguments", "call_count",
           "keras_mask", "keras_tensors", "producer"]


def call_arguments(model, layer):
    """The arguments of `layer`'s first call inside `model`'s graph.

    Args:
        model: a functional `keras.Model`.
        layer: a layer (or nested model) of `model`.

    Returns:
        `(args, kwargs)`: the positional and keyword arguments of that call,
        with Keras tensors of `model`'s graph in them.

    Raises:
        ValueError: `layer` is not called in the graph of `model` (e.g. a
            subclassed model, or a layer only used by another model).

    Example:

    >>> a, b = keras.Input((2,), name="a"), keras.Input((2,), name="b")
    >>> attention = keras.layers.Attention(name="attention")
    >>> q, v = keras.layers.Reshape((1, 2))(a), keras.layers.Reshape((1, 2))(b)
    >>> model = keras.Model([a, b], attention([q, v], use_causal_mask=True))
    >>> args, kwargs = call_arguments(model, attention)
    >>> [tuple(t.shape) for t in args[0]], kwargs
    ([(None, 1, 2), (None, 1, 2)], {'use_causal_mask': True})
    """
    keys = getattr(model, "_nodes", ())
    for index, node in enumerate(getattr(layer, "_inbound_nodes", ())):
        if f"{id(layer)}_ib-{index}" in keys:
            return node.arguments.args, node.arguments.kwargs
    raise ValueError(
        f"Layer '{layer.name}' is not called in the graph of model '{model.name}'; "
        "only functional models (and functional models nested in them) have one."
    )


def producer(tensor):
    """What computed a symbolic Keras tensor.

    Args:
        tensor: a `keras.KerasTensor` of a functional graph.

    Returns:
        `(operation, output_index, arguments)`: the operation (layer, model or
        `keras.ops` operation) whose call returned `tensor`, the position of
        `tensor` in that call's flattened outputs, and the call's
        `(args, kwargs)` (None when `tensor` is a model input).

    Example:

    >>> x = keras.Input((4,), name="x")
    >>> dense = keras.layers.Dense(2, name="dense")
    >>> operation, index, (args, kwargs) = producer(dense(x))
    >>> operation.name, index, args[0].name, producer(x)[2]
    ('dense', 0, 'x', None)
    """
    operation, node_index, output_index = tensor._keras_history
    node = operation._inbound_nodes[node_index]
    arguments = None if node.is_input else (node.arguments.args, node.arguments.kwargs)
    return operation, output_index, arguments


def keras_tensors(structure):
    """The Keras tensors in a nested structure (e.g. `(args, kwargs)`), in
    flattening order, each once.

    Example:

    >>> a, b = keras.Input((2,), name="a"), keras.Input((3,), name="b")
    >>> [t.name for t in keras_tensors(([a, b], {"presence": a, "training": False}))]
    ['a', 'b']
    """
    seen = {}
    for value in keras.tree.flatten(structure):
        if isinstance(value, keras.KerasTensor):
            seen.setdefault(id(value), value)
    return list(seen.values())


def keras_mask(tensor):
    """The Keras mask attached to a symbolic tensor (e.g. by
    `Embedding(mask_zero=True)` and carried on by an LSTM), or None.

    The mask is itself a Keras tensor of the same graph, so a model can be
    built from the graph's inputs to it.

    Example:

    >>> ids = keras.Input((4,), dtype="int32")
    >>> embedded = keras.layers.Embedding(10, 3, mask_zero=True)(ids)
    >>> keras_mask(embedded).shape, keras_mask(ids)
    ((None, 4), None)
    """
    return get_keras_mask(tensor)


def call_count(layer):
    """How many times `layer` has been called on symbolic tensors (its graph nodes).

    Example:

    >>> dense = keras.layers.Dense(2)
    >>> _ = dense(keras.Input((3,))), dense(keras.Input((3,)))
    >>> call_count(dense)
    2
    """
    return len(layer._inbound_nodes)


def build_training_state(model, x, y):
    """Creates a compiled model's optimizer and metric variables before `fit`.

    On TensorFlow without a distribution strategy, Keras creates the
    optimizer's slots and the metrics' variables inside the first trace of
    the training step, and TensorFlow then traces the step a second time
    without them: a `fit` of a fresh model traces its training step twice.
    This builds that state first (Keras's private `Model._symbolic_build`, as
    Keras does itself under a distribution strategy), so `fit` traces once;
    the training is unchanged (the new variables start at zero, and no random
    numbers are drawn). A model already built is left as it is.

    Args:
        model: a compiled `keras.Model`.
        x: a batch of its inputs (arrays or tensors; only shapes and dtypes
            are read).
        y: the matching batch of targets.

    Example:

    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.compile(keras.optimizers.Adam(), "mse", metrics=["mae"])
    >>> build_training_state(model, np.zeros((4, 3), "float32"), np.zeros((4, 2), "float32"))
    >>> model.optimizer.built, [len(m.variables) for m in model.metrics]
    (True, [2, 2])
    """
    model._symbolic_build(data_batch=(x, y, None))


class MultiHeadAttention(keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` whose projections (query, key, value,
    output) each get a fresh copy of the initializer
    (`mmfusion.fusion.fresh_initializer`). Keras clones one initializer config
    for every projection, so a seeded initializer gives equal query, key and
    value kernels; the override is of Keras's private
    `_get_common_kwargs_for_sublayer`.

    Example:

    >>> mha = MultiHeadAttention(1, 4, kernel_initializer=keras.initializers.GlorotUniform(seed=1))
    >>> mha.build((None, 2, 4), (None, 3, 4))
    >>> bool((mha.query_dense.kernel.numpy() == mha.key_dense.kernel.numpy()).all())
    False
    """

    def _get_common_kwargs_for_sublayer(self):
        from mmfusion.fusion.base import fresh_initializer

        kwargs = super()._get_common_kwargs_for_sublayer()
        self._projections_made = getattr(self, "_projections_made", 0) + 1
        kwargs["kernel_initializer"] = fresh_initializer(
            self._kernel_initializer, f"projection_{self._projections_made}")
        return kwargs
