"""The fusion-layer contract shared by every mmfusion fusion method.

A fusion layer takes one tensor per modality, either as a list (order =
modality order) or as a dict name -> tensor, an optional `presence` mask of
shape `(batch, n_modalities)` with 1 for present and 0 for absent modalities,
and returns the fused tensor (and, on request, the weights it learned to use).
"""

import keras
from keras import ops

__all__ = ["FusionLayer", "mask_inputs", "masked_softmax", "renormalize"]

# Smallest denominator used when renormalizing weights over present
# modalities: an all-absent row then gets all-zero weights instead of NaN.
EPSILON = 1e-9


def _is_shape(value):
    """True for one shape such as `(None, 8)`, False for a structure of shapes."""
    return isinstance(value, (list, tuple)) and all(
        v is None or isinstance(v, int) for v in value
    )


def _describe(shape):
    return "(" + ", ".join("batch" if i == 0 else str(d) for i, d in enumerate(shape)) + ")"


def mask_inputs(inputs, presence):
    """Zeroes every absent modality: `x_i * presence[:, i]`, broadcast over
    the feature (and time) axes. Returns `inputs` unchanged if `presence` is None.

    Args:
        inputs: list of modality tensors `(batch, ...)`, in modality order.
        presence: `(batch, n)` 0/1 mask, or None.

    Returns:
        A list of tensors shaped like `inputs`.

    Example:

    >>> import numpy as np
    >>> x = [np.ones((2, 3)), np.ones((2, 2))]
    >>> masked = mask_inputs(x, np.array([[1.0, 0.0], [1.0, 1.0]]))  # row 0: no modality 1
    >>> [ops.convert_to_numpy(m).tolist() for m in masked]
    [[[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], [[0.0, 0.0], [1.0, 1.0]]]
    """
    if presence is None:
        return list(inputs)
    masked = []
    for i, x in enumerate(inputs):
        p = presence[:, i]
        p = ops.reshape(p, (-1,) + (1,) * (len(x.shape) - 1))
        masked.append(x * ops.cast(p, x.dtype))
    return masked


def renormalize(weights, presence):
    """Zeroes absent modalities' weights and rescales the rest to sum to one.

    Args:
        weights: non-negative weights with the modality axis at axis 1
            (e.g. `(batch, n)` or `(batch, n, units)`).
        presence: `(batch, n)` 0/1 mask, or None (weights are returned as given).

    Returns:
        Weights of the same shape; rows with no present modality are all zero.

    Example:

    >>> import numpy as np
    >>> weights = np.array([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]])
    >>> presence = np.array([[1, 0, 1], [0, 0, 0]])
    >>> np.round(ops.convert_to_numpy(renormalize(weights, presence)), 3)
    array([[0.286, 0.   , 0.714],
           [0.   , 0.   , 0.   ]])
    """
    if presence is None:
        return weights
    p = ops.cast(presence, weights.dtype)
    p = ops.reshape(p, (-1, p.shape[1]) + (1,) * (len(weights.shape) - 2))
    weights = weights * p
    total = ops.sum(weights, axis=1, keepdims=True)
    return weights / ops.maximum(total, EPSILON)


def masked_softmax(logits, presence):
    """Softmax over the modality axis (axis 1) restricted to the present modalities.

    Absent modalities get weight 0; a row with no present modality gets all
    zeros (never NaN).

    Args:
        logits: scores with the modality axis at axis 1, e.g. `(batch, n)`.
        presence: `(batch, n)` 0/1 mask, or None (a plain softmax).

    Returns:
        Weights of the same shape as `logits`.

    Example:

    >>> import numpy as np
    >>> logits = np.array([[1.0, 1.0, 5.0], [1.0, 2.0, 3.0]])
    >>> presence = np.array([[1, 1, 0], [0, 0, 0]])
    >>> np.round(ops.convert_to_numpy(masked_softmax(logits, presence)), 3)
    array([[0.5, 0.5, 0. ],
           [0. , 0. , 0. ]])
    """
    if presence is None:
        return ops.softmax(logits, axis=1)
    shifted = logits - ops.max(logits, axis=1, keepdims=True)
    return renormalize(ops.exp(shifted), presence)


class FusionLayer(keras.layers.Layer):
    """Base class of all mmfusion fusion layers.

    Subclasses set the class attributes `input_rank` (2: each modality is
    `(batch, d_i)`; 3: each is `(batch, T_i, d_i)`), `min_modalities` and
    `max_modalities` (None = no limit), create their weights in
    `build_fusion(shapes)` and implement `fuse(inputs, presence, training)`,
    returning `(output, weights_dict)`. The base class orders and validates the
    inputs and the presence mask, so subclasses only see a list of tensors in
    modality order. Output shapes are inferred by tracing `call`.

    Args:
        modalities: optional list of modality names. Gives the modality order
            for dict inputs (else the sorted keys) and names modalities in
            error messages and weight names for list inputs (else
            `modality_0`, `modality_1`, ...).
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: list of modality tensors, or dict name -> tensor.
        presence: optional `(batch, n_modalities)` tensor of 0/1 (or bool):
            which modalities are present in each example. What an absent
            modality means is documented by each subclass.
        return_weights: if True, return `(output, weights_dict)` where
            `weights_dict` holds the weighting the layer learned to apply
            (empty for layers without one).
        training: Python bool, passed to subclasses that use dropout.

    Returns:
        The fused tensor, or `(fused, weights_dict)` if `return_weights`.

    Example:

    A fusion layer taking the elementwise maximum of same-size vectors
    (absent modalities are zeroed first):

    >>> import numpy as np
    >>> class ElementwiseMax(FusionLayer):
    ...     def fuse(self, inputs, presence, training=None):
    ...         stacked = ops.stack(mask_inputs(inputs, presence), axis=1)
    ...         return ops.max(stacked, axis=1), {}
    >>> layer = ElementwiseMax(modalities=["audio", "video"])
    >>> x = {"video": np.array([[1.0, 5.0]]), "audio": np.array([[3.0, 2.0]])}
    >>> ops.convert_to_numpy(layer(x)).tolist(), layer.modality_names
    ([[3.0, 5.0]], ['audio', 'video'])
    >>> ops.convert_to_numpy(layer(x, presence=np.array([[0, 1]]))).tolist()  # no audio
    [[1.0, 5.0]]
    """

    input_rank = 2
    min_modalities = 2
    max_modalities = None

    def __init__(self, modalities=None, **kwargs):
        super().__init__(**kwargs)
        self.modalities = None if modalities is None else [str(m) for m in modalities]
        self.modality_names = None
        self.modality_shapes = None

    # ---------------------------------------------------------------- inputs
    def _order(self, inputs, what="inputs"):
        """Returns `(list_in_modality_order, names)` from a list or dict."""
        layer = f"{self.__class__.__name__} layer '{self.name}'"
        if isinstance(inputs, dict):
            keys = [str(k) for k in inputs]
            names = self.modalities if self.modalities is not None else sorted(keys)
            unknown = sorted(set(keys) - set(names))
            missing = [n for n in names if n not in keys]
            if unknown or missing:
                raise ValueError(
                    f"{layer} expects modalities {names} in its {what}; "
                    f"unknown: {unknown}, missing: {missing}."
                )
            return [inputs[n] for n in names], list(names)
        if isinstance(inputs, (list, tuple)) and not _is_shape(inputs):
            inputs = list(inputs)
            if self.modalities is not None:
                if len(self.modalities) != len(inputs):
                    raise ValueError(
                        f"{layer} was given modalities={self.modalities} "
                        f"({len(self.modalities)} names) but received "
                        f"{len(inputs)} {what}."
                    )
                return inputs, list(self.modalities)
            return inputs, [f"modality_{i}" for i in range(len(inputs))]
        raise ValueError(
            f"{layer} expects a list or dict of modality tensors, one per "
            f"modality; received a single {what[:-1]} of shape "
            f"{getattr(inputs, 'shape', inputs)}."
        )

    def _check_count(self, names):
        n = len(names)
        low, high = self.min_modalities, self.max_modalities
        if n < low or (high is not None and n > high):
            expected = f"exactly {low}" if low == high else (
                f"at least {low}" if high is None else f"{low} to {high}"
            )
            hint = ""
            if high is not None:
                from mmfusion.fusion.registry import _REGISTRY

                n_modal = sorted(k for k, c in _REGISTRY.items() if c.max_modalities is None)
                hint = f" Layers that take N modalities: {', '.join(n_modal)}."
            raise ValueError(
                f"{self.__class__.__name__} layer '{self.name}' takes {expected} "
                f"modalities; received {n}: {names}.{hint}"
            )

    def _check_shape(self, name, shape):
        rank = self.input_rank
        expected = "(batch, d)" if rank == 2 else "(batch, T, d)"
        layer = f"{self.__class__.__name__} layer '{self.name}'"
        if len(shape) != rank:
            raise ValueError(
                f"{layer}: modality '{name}' must have rank {rank}, shape "
                f"{expected}; received shape {_describe(shape)}."
            )
        if shape[-1] is None:
            raise ValueError(
                f"{layer}: modality '{name}' needs a known feature size, "
                f"shape {expected}; received shape {_describe(shape)}."
            )

    def build(self, input_shape):
        shapes, names = self._order(input_shape, what="input shapes")
        self._check_count(names)
        shapes = [tuple(s) for s in shapes]
        for name, shape in zip(names, shapes):
            self._check_shape(name, shape)
        self.modality_names = names
        self.modality_shapes = shapes
        self.build_fusion(shapes)
        self.built = True

    def build_fusion(self, shapes):
        """Creates the layer's weights. `shapes`: per-modality input shapes."""

    def _check_inputs(self, inputs, names):
        layer = f"{self.__class__.__name__} layer '{self.name}'"
        if len(inputs) != len(self.modality_names):
            raise ValueError(
                f"{layer} was built for {len(self.modality_names)} modalities "
                f"{self.modality_names}; received {len(inputs)}."
            )
        batch = None
        for name, x, built in zip(names, inputs, self.modality_shapes):
            shape = tuple(x.shape)
            self._check_shape(name, shape)
            if shape[-1] != built[-1]:
                raise ValueError(
                    f"{layer}: modality '{name}' was built with feature size "
                    f"{built[-1]}, shape {_describe(built)}; received shape "
                    f"{_describe(shape)}."
                )
            if shape[0] is not None:
                if batch is not None and shape[0] != batch[1]:
                    raise ValueError(
                        f"{layer}: modality '{name}' has batch size {shape[0]} "
                        f"but modality '{batch[0]}' has batch size {batch[1]}."
                    )
                batch = batch or (name, shape[0])
        return batch

    def _check_presence(self, presence, batch):
        layer = f"{self.__class__.__name__} layer '{self.name}'"
        n = len(self.modality_names)
        shape = tuple(presence.shape)
        if len(shape) != 2 or shape[1] != n or (
            batch is not None and shape[0] is not None and shape[0] != batch[1]
        ):
            expected = f"({batch[1] if batch else 'batch'}, {n})"
            raise ValueError(
                f"{layer}: `presence` must have shape {expected}, one column "
                f"per modality {self.modality_names}; received shape {shape}."
            )
        return ops.cast(presence, self.compute_dtype)

    # ------------------------------------------------------------------ call
    def call(self, inputs, presence=None, return_weights=False, training=None):
        inputs, names = self._order(inputs)
        batch = self._check_inputs(inputs, names)
        if presence is not None:
            presence = self._check_presence(presence, batch)
        output, weights = self.fuse(inputs, presence, training=training)
        if return_weights:
            return output, weights
        return output

    def fuse(self, inputs, presence, training=None):
        """The fusion math. Returns `(output, weights_dict)`.

        Args:
            inputs: list of tensors in modality order, already validated.
            presence: `(batch, n)` float mask in the compute dtype, or None.
            training: Python bool or None.
        """
        raise NotImplementedError(
            f"{self.__class__.__name__} must implement fuse(inputs, presence, training)."
        )

    def get_config(self):
        config = super().get_config()
        config["modalities"] = self.modalities
        return config
