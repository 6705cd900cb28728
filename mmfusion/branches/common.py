"""Building blocks shared by the branches and the model composer."""

import keras
from keras import ops

from mmfusion.fusion.base import large_negative, masked_mean

__all__ = ["VECTOR_TAP", "MaskedPooling", "PresenceBatchNormalization", "SequencePadding",
           "conv_blocks", "dense_stack", "presence_input", "to_vector"]

# Name of the tap every branch ends with: its final `(batch, d)` vector.
VECTOR_TAP = "vector"
POOLINGS = ("flatten", "avg", "max")


@keras.saving.register_keras_serializable(package="mmfusion")
class PresenceBatchNormalization(keras.layers.BatchNormalization):
    """`BatchNormalization` whose training statistics exclude absent rows.

    In training, the batch mean and variance (and so the moving averages)
    are computed over the rows whose `presence` is 1 only: the placeholders
    of absent rows (zeros, or anything else) do not change the present rows'
    outputs. Absent rows are normalized with the same statistics. A batch
    without any present row leaves the moving averages as they were. At
    inference it is a plain `BatchNormalization`.

    Args:
        **kwargs: the arguments of `keras.layers.BatchNormalization`.

    Call arguments:
        inputs: a tensor `(batch, ...)`.
        presence: optional `(batch,)` or `(batch, 1)` 0/1 (None: every row).
        training: Python boolean, training mode.
        mask: optional Keras mask, combined with `presence`.

    Returns:
        The normalized tensor, shaped like `inputs`.

    Example:

    >>> import numpy as np
    >>> bn = PresenceBatchNormalization(momentum=0.0)
    >>> x = np.array([[1.0], [3.0], [100.0]], "float32")
    >>> y = bn(x, presence=np.array([1.0, 1.0, 0.0]), training=True)
    >>> np.round(keras.ops.convert_to_numpy(y[:2, 0]), 2).tolist()  # mean 2, var 1
    [-1.0, 1.0]
    >>> np.round(keras.ops.convert_to_numpy(bn.moving_mean), 2).tolist()
    [2.0]
    """

    def call(self, inputs, presence=None, training=None, mask=None):
        if presence is None or not training:
            return super().call(inputs, training=training, mask=mask)
        rows = ops.reshape(ops.cast(presence, "float32") > 0.5, (-1,) + (1,) * (len(inputs.shape) - 2))
        rows = ops.broadcast_to(rows, ops.shape(inputs)[:-1])
        mask = rows if mask is None else ops.logical_and(rows, ops.cast(mask, "bool"))
        moving = [ops.copy(self.moving_mean.value), ops.copy(self.moving_variance.value)]
        outputs = super().call(inputs, training=training, mask=mask)
        any_present = ops.any(rows)
        self.moving_mean.assign(ops.where(any_present, self.moving_mean.value, moving[0]))
        self.moving_variance.assign(ops.where(any_present, self.moving_variance.value, moving[1]))
        return outputs


@keras.saving.register_keras_serializable(package="mmfusion")
class MaskedPooling(keras.layers.Layer):
    """Pools a padded sequence `(batch, T, d)` to `(batch, d)` over its real timesteps.

    Used by `build_fusion_model` where a vector fusion layer (or a head)
    reads a sequence tap that has a Keras mask, and by `from_model` for the
    `vector` of a padded sequence, so padding never reaches them.
    Padded values are excluded with `ops.where` (even NaN cannot leak); a
    row without a real timestep gives zeros.

    Args:
        pooling: `"avg"` (masked mean) or `"max"` (masked maximum).
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(batch, T, d)` tensor.
        padding: `(batch, T)` bool or 0/1 mask, 1 for real timesteps.

    Returns:
        `(batch, d)` tensor.

    Example:

    >>> import numpy as np
    >>> x = np.array([[[1.0], [5.0], [9.0]]])
    >>> padding = np.array([[1.0, 1.0, 0.0]])  # the last step is padding
    >>> [MaskedPooling(p)(x, padding=padding).numpy().tolist() for p in ("avg", "max")]
    [[[3.0]], [[5.0]]]
    """

    def __init__(self, pooling="avg", **kwargs):
        super().__init__(**kwargs)
        if pooling not in ("avg", "max"):
            raise ValueError(f"MaskedPooling: pooling must be 'avg' or 'max'; received {pooling!r}.")
        self.pooling = pooling

    def call(self, inputs, padding):
        if self.pooling == "avg":
            return masked_mean(inputs, padding)
        valid = ops.expand_dims(ops.cast(padding, "float32") > 0, -1)
        low = ops.cast(large_negative(inputs.dtype), inputs.dtype)
        pooled = ops.max(ops.where(valid, inputs, low), axis=1)
        return ops.where(ops.any(valid, axis=1), pooled, ops.zeros_like(pooled))

    def compute_mask(self, inputs, previous_mask=None):
        return None  # the time axis is gone

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(pooling=self.pooling)
        return config


@keras.saving.register_keras_serializable(package="mmfusion")
class SequencePadding(keras.layers.Layer):
    """Attaches a padding mask to a sequence as its Keras mask.

    The output is the sequence unchanged; its Keras mask is `padding`, so
    the layers after it (and the sequence fusion layers of
    `build_fusion_model`) see which timesteps are real. `from_model` puts
    it on the sequence taps of an encoder whose inputs include a padding
    mask (e.g. a keras-hub BERT backbone).

    Call arguments:
        inputs: a list `[sequence, padding]`: the `(batch, T, d)` sequence
            and its `(batch, T)` bool or 0/1 padding mask (1: real timestep).

    Returns:
        The sequence, with `padding` (as bool) as its Keras mask.

    Example:

    >>> import numpy as np
    >>> x = keras.Input((3, 2))
    >>> padding = keras.Input((3,), dtype="int32")
    >>> masked = SequencePadding()([x, padding])
    >>> mean = keras.layers.GlobalAveragePooling1D()(masked)  # reads the mask
    >>> model = keras.Model([x, padding], mean)
    >>> sequence = np.array([[[1.0, 2.0], [3.0, 4.0], [50.0, 60.0]]])
    >>> model([sequence, np.array([[1, 1, 0]])]).numpy().tolist()  # the last step is padding
    [[2.0, 3.0]]
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        sequence, padding = inputs
        if len(sequence.shape) != 3 or len(padding.shape) != 2:
            raise ValueError(
                f"SequencePadding '{self.name}': expected a (batch, T, d) sequence and a "
                f"(batch, T) padding mask; received shapes {tuple(sequence.shape)} and "
                f"{tuple(padding.shape)}.")
        return sequence

    def compute_mask(self, inputs, previous_mask=None):
        return ops.cast(inputs[1], "bool")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


def presence_input(name):
    """The `(batch, 1)` presence input of a branch built with `presence=True`,
    named `{name}_presence`.

    Example:

    >>> presence_input("image").name
    'image_presence'
    """
    return keras.Input(shape=(1,), name=f"{name}_presence")


def batch_normalization(x, presence=None, name=None, **kwargs):
    """`BatchNormalization(**kwargs)` applied to `x`, or, given a `(batch, 1)`
    presence tensor, `PresenceBatchNormalization` (statistics over present rows)."""
    if presence is None:
        return keras.layers.BatchNormalization(name=name, **kwargs)(x)
    return PresenceBatchNormalization(name=name, **kwargs)(x, presence=presence)


def conv_blocks(x, filters, kernel_size, pool_size, prefix, presence=None):
    """Stacks conv blocks `Conv2D -> BatchNormalization -> ReLU -> MaxPooling2D`.

    Args:
        x: a rank-4 `(batch, H, W, C)` Keras tensor.
        filters: one filter count per block.
        kernel_size: convolution kernel size.
        pool_size: max-pooling size (1 for no pooling).
        prefix: layer-name prefix; block `i` is named `{prefix}_block_{i}_*`.
        presence: optional `(batch, 1)` presence tensor; then the blocks use
            `PresenceBatchNormalization` (statistics over present rows).

    Returns:
        `(x, taps)`: the last block's output and a dict `block_i -> output`.

    Example:

    >>> inputs = keras.Input((8, 8, 1))
    >>> x, taps = conv_blocks(inputs, filters=(4, 8), kernel_size=3, pool_size=2, prefix="image")
    >>> tuple(x.shape), {name: tuple(t.shape) for name, t in taps.items()}
    ((None, 2, 2, 8), {'block_1': (None, 4, 4, 4), 'block_2': (None, 2, 2, 8)})
    """
    taps = {}
    for i, n in enumerate(filters, start=1):
        name = f"{prefix}_block_{i}"
        x = keras.layers.Conv2D(n, kernel_size, padding="same", use_bias=False,
                                name=f"{name}_conv")(x)
        x = batch_normalization(x, presence, name=f"{name}_bn")
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
        if pool_size > 1:
            x = keras.layers.MaxPooling2D(pool_size, padding="same", name=f"{name}_pool")(x)
        taps[f"block_{i}"] = x
    return x, taps


def to_vector(x, pooling, name):
    """Turns a rank-3 `(batch, T, d)` or rank-4 `(batch, H, W, C)` tensor into
    a `(batch, d')` vector; rank-2 tensors are returned unchanged.

    Args:
        x: a Keras tensor.
        pooling: `"flatten"` (keeps all positions: `d' = T*d` or `H*W*C`),
            `"avg"` or `"max"` (global pooling over positions: `d' = d` or `C`).
        name: name of the pooling layer.

    Returns:
        A rank-2 Keras tensor.

    Example:

    >>> sequence = keras.Input((5, 3))
    >>> [tuple(to_vector(sequence, p, name=f"seq_{p}").shape) for p in ("flatten", "avg", "max")]
    [(None, 15), (None, 3), (None, 3)]
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; received '{pooling}'.")
    rank = len(x.shape)
    if rank == 2:
        return x
    if rank not in (3, 4):
        raise ValueError(f"Cannot pool a tensor of rank {rank} (shape {x.shape}) to a vector.")
    if pooling == "flatten":
        return keras.layers.Flatten(name=name)(x)
    layers = {
        ("avg", 3): keras.layers.GlobalAveragePooling1D,
        ("max", 3): keras.layers.GlobalMaxPooling1D,
        ("avg", 4): keras.layers.GlobalAveragePooling2D,
        ("max", 4): keras.layers.GlobalMaxPooling2D,
    }
    return layers[(pooling, rank)](name=name)(x)


def vector_tap(x, pooling, embedding_dim, dropout, prefix, normalize_embedding=False,
               presence=None):
    """The final `vector` tap of a conv branch: `to_vector(x, pooling)`, then
    optionally `Dropout(dropout) -> Dense(embedding_dim, relu)`, or with
    `normalize_embedding` `Dropout -> Dense(embedding_dim) -> BatchNormalization
    -> ReLU` (the conv blocks' normalization; `presence` as in `conv_blocks`)."""
    x = to_vector(x, pooling, name=f"{prefix}_{pooling}")
    if embedding_dim:
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout")(x)
        if not normalize_embedding:
            return keras.layers.Dense(embedding_dim, activation="relu", name=f"{prefix}_embedding")(x)
        x = keras.layers.Dense(embedding_dim, use_bias=False, name=f"{prefix}_embedding")(x)
        x = batch_normalization(x, presence, name=f"{prefix}_embedding_bn")
        x = keras.layers.ReLU(name=f"{prefix}_embedding_relu")(x)
    return x


def dense_stack(x, units, dropout, prefix, activation="relu"):
    """`Dense -> (Dropout)` layers named `{prefix}_dense_{i}`.

    Args:
        x: a rank-2 `(batch, d)` Keras tensor.
        units: one size per dense layer.
        dropout: dropout rate after each layer (0: none).
        prefix: layer-name prefix.
        activation: activation of every layer.

    Returns:
        `(x, taps)`: the last output and a dict `dense_i -> output`.

    Example:

    >>> x, taps = dense_stack(keras.Input((6,)), units=(8, 4), dropout=0.1, prefix="head")
    >>> tuple(x.shape), {name: tuple(t.shape) for name, t in taps.items()}
    ((None, 4), {'dense_1': (None, 8), 'dense_2': (None, 4)})
    """
    taps = {}
    for i, n in enumerate(units, start=1):
        x = keras.layers.Dense(n, activation=activation, name=f"{prefix}_dense_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout_{i}")(x)
        taps[f"dense_{i}"] = x
    return x, taps
