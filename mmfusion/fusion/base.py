"""The fusion-layer contract shared by every mmfusion fusion method, and the
helpers every layer family builds on.

A fusion layer takes one tensor per modality, either as a list (order =
modality order) or as a dict name -> tensor, an optional `presence` mask of
shape `(batch, n_modalities)` with 1 for present and 0 for absent modalities,
and returns the fused tensor (and, on request, the weights it learned to use).

Absent modalities and padded timesteps are masked with `ops.where`, never by
multiplication, so NaN or Inf placeholders there cannot reach the output.
"""

import zlib

import keras
import numpy as np
from keras import ops

__all__ = [
    "FusionLayer", "SequenceFusionLayer", "constructor_config", "dense", "fresh_initializer",
    "large_negative", "mask_inputs", "masked_mean", "masked_softmax", "renormalize",
    "softmax_over_valid",
]


def _is_shape(value):
    """True for one shape such as `(None, 8)`, False for a structure of shapes."""
    return isinstance(value, (list, tuple)) and all(
        v is None or isinstance(v, int) for v in value
    )


def _describe(shape):
    return "(" + ", ".join("batch" if i == 0 else str(d) for i, d in enumerate(shape)) + ")"


def _floor(x):
    """The smallest denominator used for `x`'s dtype: `keras.config.epsilon()`
    (1e-7; 1e-9 or 1e-12 round to 0 in float16), and in float16 at least its
    smallest normal number (6.1e-5): 1e-7 is subnormal there, and XLA on CPU
    (the JAX backend) flushes subnormals to zero, which made 0 / 0 = NaN."""
    floor = keras.config.epsilon()
    if keras.backend.standardize_dtype(x.dtype) == "float16":
        floor = max(floor, float(np.finfo("float16").tiny))
    return ops.cast(floor, x.dtype)


def large_negative(dtype):
    """A large negative logit for masked entries that is finite in `dtype`:
    -3e4 for float16 (whose -1e9 is -inf), -1e9 otherwise, as Keras's softmax.

    Example:

    >>> large_negative("float16"), large_negative("float32")
    (-30000.0, -1000000000.0)
    """
    if keras.backend.standardize_dtype(dtype) == "float16":
        return -3e4
    return -1e9


def _valid(mask):
    """A 0/1 (or bool) mask as a bool tensor."""
    mask = ops.convert_to_tensor(mask)
    return mask if keras.backend.standardize_dtype(mask.dtype) == "bool" else mask > 0


def _expand_to(mask, rank):
    """`mask` `(batch,)` or `(batch, T)` with trailing axes added up to `rank`
    (`expand_dims`, not a `-1` reshape, so empty batches work)."""
    for _ in range(rank - len(mask.shape)):
        mask = ops.expand_dims(mask, -1)
    return mask


def mask_inputs(inputs, presence):
    """Zeroes every absent modality with `ops.where`, so NaN or Inf
    placeholders of absent rows give exact zeros. Returns `inputs` unchanged
    if `presence` is None.

    Args:
        inputs: list of modality tensors `(batch, ...)`, in modality order.
        presence: `(batch, n)` 0/1 mask, or None.

    Returns:
        A list of tensors shaped like `inputs`.

    Example:

    >>> x = [np.ones((2, 3)), np.array([[np.nan, np.nan], [1.0, 1.0]])]
    >>> masked = mask_inputs(x, np.array([[1.0, 0.0], [1.0, 1.0]]))  # row 0: no modality 1
    >>> [ops.convert_to_numpy(m).tolist() for m in masked]
    [[[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], [[0.0, 0.0], [1.0, 1.0]]]
    """
    if presence is None:
        return list(inputs)
    masked = []
    for i, x in enumerate(inputs):
        x = ops.convert_to_tensor(x)
        present = _expand_to(presence[:, i] > 0, len(x.shape))
        masked.append(ops.where(present, x, ops.zeros_like(x)))
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

    >>> weights = np.array([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]])
    >>> presence = np.array([[1, 0, 1], [0, 0, 0]])
    >>> np.round(ops.convert_to_numpy(renormalize(weights, presence)), 3)
    array([[0.286, 0.   , 0.714],
           [0.   , 0.   , 0.   ]])
    """
    if presence is None:
        return weights
    weights = ops.convert_to_tensor(weights)
    present = _expand_to(_valid(presence), len(weights.shape))
    weights = ops.where(present, weights, ops.zeros_like(weights))
    total = ops.sum(weights, axis=1, keepdims=True)
    return weights / ops.maximum(total, _floor(total))


def softmax_over_valid(logits, mask, axis=-1):
    """Softmax of `logits` along `axis` (an int or a tuple) restricted to the
    entries where `mask` (broadcastable to `logits`) is 1.

    Masked entries get weight 0 whatever their logit (NaN included); a slice
    with no valid entry gets all zeros, never NaN.

    Args:
        logits: float tensor.
        mask: 0/1 (or bool) tensor broadcastable to `logits`.
        axis: the axis or axes of the softmax.

    Returns:
        Weights shaped like `logits`.

    Example:

    >>> logits = np.array([[1.0, 1.0, np.nan], [1.0, 2.0, 3.0]])
    >>> mask = np.array([[1, 1, 0], [0, 0, 0]])
    >>> np.round(ops.convert_to_numpy(softmax_over_valid(logits, mask)), 3)
    array([[0.5, 0.5, 0. ],
           [0. , 0. , 0. ]])
    """
    logits = ops.convert_to_tensor(logits)
    valid = ops.broadcast_to(_valid(mask), ops.shape(logits))
    low = large_negative(logits.dtype)
    logits = ops.where(valid, logits, low)
    # `initial`: TensorFlow's eager max refuses empty tensors (batch size 0).
    e = ops.exp(logits - ops.max(logits, axis=axis, keepdims=True, initial=low))
    e = ops.where(valid, e, ops.zeros_like(e))
    total = ops.sum(e, axis=axis, keepdims=True)
    return e / ops.maximum(total, _floor(total))


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

    >>> logits = np.array([[1.0, 1.0, 5.0], [1.0, 2.0, 3.0]])
    >>> presence = np.array([[1, 1, 0], [0, 0, 0]])
    >>> np.round(ops.convert_to_numpy(masked_softmax(logits, presence)), 3)
    array([[0.5, 0.5, 0. ],
           [0. , 0. , 0. ]])
    """
    if presence is None:
        return ops.softmax(logits, axis=1)
    logits = ops.convert_to_tensor(logits)
    return softmax_over_valid(logits, _expand_to(ops.convert_to_tensor(presence),
                                                 len(logits.shape)), axis=1)


def masked_mean(x, mask):
    """Mean of `x` `(batch, T, d)` over the timesteps where `mask` `(batch, T)`
    is 1; zeros for a row with no valid timestep (NaN at masked steps ignored).

    Example:

    >>> x = np.array([[[1.0], [3.0], [np.nan]]])
    >>> ops.convert_to_numpy(masked_mean(x, np.array([[1.0, 1.0, 0.0]]))).tolist()
    [[2.0]]
    """
    x = ops.convert_to_tensor(x)
    valid = ops.expand_dims(_valid(mask), -1)
    total = ops.sum(ops.where(valid, x, ops.zeros_like(x)), axis=1)
    count = ops.sum(ops.cast(valid, x.dtype), axis=1)
    return total / ops.maximum(count, _floor(count))


def fresh_initializer(initializer, salt):
    """A new instance of `initializer`, so no two weights share one.

    Keras 3 initializers without a seed fix one when created: reusing an
    instance gives identical weights of equal shape. A fresh instance of an
    unseeded initializer draws its own seed (reproducible under
    `keras.utils.set_random_seed`); a seeded one gets a seed derived from its
    seed and `salt` (the weight's name), so a seeded layer is deterministic
    and its weights still differ.

    Args:
        initializer: an initializer instance, name or config.
        salt: a string unique among the weights that share `initializer`.

    Returns:
        A `keras.initializers.Initializer`.

    Example:

    >>> base = keras.initializers.GlorotUniform(seed=3)
    >>> a = fresh_initializer(base, "kernel_a")((2, 2))
    >>> b = fresh_initializer(base, "kernel_b")((2, 2))
    >>> again = fresh_initializer(base, "kernel_a")((2, 2))
    >>> bool(np.array_equal(a, b)), bool(np.array_equal(a, again))
    (False, True)
    """
    initializer = keras.initializers.get(initializer)
    config = initializer.get_config()
    seed = config.get("seed")
    if isinstance(seed, int):
        config["seed"] = zlib.crc32(f"{seed}/{salt}".encode()) % (2 ** 31 - 1)
    return initializer.__class__.from_config(config)


def dense(units, name, layer, input_shape, activation=None, use_bias=True):
    """A `keras.layers.Dense` sub-layer of `layer`, built for `input_shape`,
    with a fresh copy of `layer.kernel_initializer` and `layer`'s dtype policy.

    Args:
        units: output size.
        name: sub-layer name (unique within `layer`).
        layer: the owning layer; needs a `kernel_initializer` attribute.
        input_shape: the shape the sub-layer is built for.
        activation: activation of the sub-layer.
        use_bias: whether it has a bias.

    Returns:
        A built `keras.layers.Dense`.

    Example:

    >>> owner = keras.layers.Layer(dtype="float64")
    >>> owner.kernel_initializer = keras.initializers.GlorotUniform()
    >>> a, b = (dense(3, n, owner, (None, 3)) for n in ("a", "b"))
    >>> a.compute_dtype, bool(np.array_equal(a.kernel, b.kernel))
    ('float64', False)
    """
    sub = keras.layers.Dense(
        units, activation=activation, use_bias=use_bias, name=name,
        kernel_initializer=fresh_initializer(layer.kernel_initializer, name),
        dtype=layer.dtype_policy,
    )
    sub.build(input_shape)
    return sub


def constructor_config(layer, config, names):
    """`config` updated with `layer`'s constructor arguments `names` (stored as
    attributes of the same name), initializers and activations serialized.
    This is how every fusion layer writes `get_config`.

    Example:

    >>> layer = keras.layers.Layer()
    >>> layer.units, layer.activation = 4, keras.activations.get("relu")
    >>> constructor_config(layer, {}, ("units", "activation"))
    {'units': 4, 'activation': 'relu'}
    """
    for name in names:
        value = getattr(layer, name)
        if isinstance(value, keras.initializers.Initializer):
            value = keras.initializers.serialize(value)
        elif callable(value):
            value = keras.activations.serialize(value)
        config[name] = value
    return config


class FusionLayer(keras.layers.Layer):
    """Base class of all mmfusion fusion layers.

    Subclasses set the class attributes `input_rank` (2: each modality is
    `(batch, d_i)`; 3: each is `(batch, T_i, d_i)`), `min_modalities` and
    `max_modalities` (None = no limit), create their weights in
    `build_fusion(shapes)` and implement `fuse(inputs, presence, training)`,
    returning `(output, weights_dict)`. The base class orders, casts and
    validates the inputs and the presence mask, so subclasses only see a list
    of floating tensors in modality order and a 0/1 presence mask in the
    compute dtype. Output shapes are inferred by tracing `call`.

    Weights are made with `add_kernel` (a fresh initializer per weight) and
    sub-layers with `dense` (fresh initializer, the layer's dtype policy);
    `build_output_projection` / `project_output` give the optional output
    projection to `units` that several layers share.

    Args:
        modalities: optional list of modality names. Gives the modality order
            for dict inputs (else the sorted keys) and names modalities in
            error messages and weight names for list inputs (else
            `modality_0`, `modality_1`, ...).
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: list of modality tensors, or dict name -> tensor. Integer
            inputs are cast to the compute dtype.
        presence: optional `(batch, n_modalities)` mask (array, tensor,
            nested list; float, int or bool): 1 where a modality is present,
            0 where it is absent. Other values are thresholded: a modality
            is present where its value is above 0.5 (so -1 means absent and
            2 present; a soft presence is not supported). What an
            absent modality means is documented by each subclass.
        return_weights: if True, return `(output, weights_dict)` where
            `weights_dict` holds the weighting the layer learned to apply
            (empty for layers without one).
        training: Python bool, passed to subclasses that use dropout.
        mask: Keras masks of the inputs, passed by Keras; used by sequence
            layers (see `SequenceFusionLayer`), ignored by vector layers.

    Returns:
        The fused tensor, or `(fused, weights_dict)` if `return_weights`.
        The output carries no Keras mask.

    Example:

    A fusion layer taking the elementwise maximum of same-size vectors
    (absent modalities are zeroed first):

    >>> class ElementwiseMax(FusionLayer):
    ...     def fuse(self, inputs, presence, training=None):
    ...         stacked = ops.stack(mask_inputs(inputs, presence), axis=1)
    ...         return ops.max(stacked, axis=1), {}
    >>> layer = ElementwiseMax(modalities=["audio", "video"])
    >>> x = {"video": np.array([[1.0, 5.0]]), "audio": np.array([[3.0, 2.0]])}
    >>> ops.convert_to_numpy(layer(x)).tolist(), layer.modality_names
    ([[3.0, 5.0]], ['audio', 'video'])
    >>> ops.convert_to_numpy(layer(x, presence=[[0, 1]])).tolist()  # no audio
    [[1.0, 5.0]]
    >>> ElementwiseMax.accepts(2), ElementwiseMax.accepts(1)
    (True, False)
    """

    input_rank = 2
    min_modalities = 2
    max_modalities = None

    def __init__(self, modalities=None, **kwargs):
        super().__init__(**kwargs)
        self.modalities = None if modalities is None else [str(m) for m in modalities]
        self.modality_names = None
        self.modality_shapes = None

    @classmethod
    def accepts(cls, n_modalities):
        """Whether the layer takes `n_modalities` modalities."""
        return n_modalities >= cls.min_modalities and (
            cls.max_modalities is None or n_modalities <= cls.max_modalities
        )

    @property
    def _label(self):
        return f"{self.__class__.__name__} layer '{self.name}'"

    # ------------------------------------------------------------ weights
    def add_kernel(self, name, shape, initializer=None):
        """A trainable weight with a fresh copy of `initializer` (default
        `self.kernel_initializer`)."""
        initializer = self.kernel_initializer if initializer is None else initializer
        return self.add_weight(name=name, shape=shape,
                               initializer=fresh_initializer(initializer, name))

    def build_output_projection(self, size, activation=None, use_bias=True):
        """Creates the optional output projection `Dense(self.units)` over
        `size` features (`output_projection`), or none if `self.units` is None."""
        self.output_projection = None if self.units is None else dense(
            self.units, "output_projection", self, (None, size), activation, use_bias
        )

    def project_output(self, z):
        """`z` through the output projection made by `build_output_projection`."""
        return z if self.output_projection is None else self.output_projection(z)

    # ---------------------------------------------------------------- inputs
    def _order(self, inputs, what="inputs"):
        """Returns `(list_in_modality_order, names)` from a list or dict."""
        if isinstance(inputs, dict):
            keys = [str(k) for k in inputs]
            names = self.modalities if self.modalities is not None else sorted(keys)
            unknown = sorted(set(keys) - set(names))
            missing = [n for n in names if n not in keys]
            if unknown or missing:
                raise ValueError(
                    f"{self._label} expects modalities {names} in its {what}; "
                    f"unknown: {unknown}, missing: {missing}."
                )
            return [inputs[n] for n in names], list(names)
        if isinstance(inputs, (list, tuple)) and not _is_shape(inputs):
            inputs = list(inputs)
            if self.modalities is not None:
                if len(self.modalities) != len(inputs):
                    raise ValueError(
                        f"{self._label} was given modalities={self.modalities} "
                        f"({len(self.modalities)} names) but received "
                        f"{len(inputs)} {what}."
                    )
                return inputs, list(self.modalities)
            return inputs, [f"modality_{i}" for i in range(len(inputs))]
        raise ValueError(
            f"{self._label} expects a list or dict of modality tensors, one per "
            f"modality; received a single {what[:-1]} of shape "
            f"{getattr(inputs, 'shape', inputs)}."
        )

    def _check_count(self, names):
        n = len(names)
        if not self.accepts(n):
            low, high = self.min_modalities, self.max_modalities
            expected = f"exactly {low}" if low == high else (
                f"at least {low}" if high is None else f"{low} to {high}"
            )
            hint = ""
            if high is not None:
                from mmfusion.fusion.registry import available

                hint = f" Layers that take {n} modalities: {', '.join(available(n_modalities=n))}."
            raise ValueError(
                f"{self._label} takes {expected} modalities; received {n}: {names}.{hint}"
            )

    def _check_shape(self, name, shape):
        rank = self.input_rank
        expected = "(batch, d)" if rank == 2 else "(batch, T, d)"
        if len(shape) != rank:
            raise ValueError(
                f"{self._label}: modality '{name}' must have rank {rank}, shape "
                f"{expected}; received shape {_describe(shape)}."
            )
        if shape[-1] is None:
            raise ValueError(
                f"{self._label}: modality '{name}' needs a known feature size, "
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

    def _cast_inputs(self, inputs, names):
        """Integer and bool inputs cast to the compute dtype; others rejected."""
        cast = []
        for name, x in zip(names, inputs):
            x = ops.convert_to_tensor(x) if not hasattr(x, "dtype") else x
            dtype = keras.backend.standardize_dtype(x.dtype)
            if dtype == "string":
                raise ValueError(
                    f"{self._label}: modality '{name}' must be a numeric tensor; "
                    "received strings (tokenize text before the fusion layer)."
                )
            if not keras.backend.is_float_dtype(dtype):
                x = ops.cast(x, self.compute_dtype)
            cast.append(x)
        return cast

    def _check_inputs(self, inputs, names):
        if len(inputs) != len(self.modality_names):
            raise ValueError(
                f"{self._label} was built for {len(self.modality_names)} modalities "
                f"{self.modality_names}; received {len(inputs)}."
            )
        batch = None
        for name, x, built in zip(names, inputs, self.modality_shapes):
            shape = tuple(x.shape)
            self._check_shape(name, shape)
            if shape[-1] != built[-1]:
                raise ValueError(
                    f"{self._label}: modality '{name}' was built with feature size "
                    f"{built[-1]}, shape {_describe(built)}; received shape "
                    f"{_describe(shape)}."
                )
            if shape[0] is not None:
                if batch is not None and shape[0] != batch[1]:
                    raise ValueError(
                        f"{self._label}: modality '{name}' has batch size {shape[0]} "
                        f"but modality '{batch[0]}' has batch size {batch[1]}."
                    )
                batch = batch or (name, shape[0])
        return batch

    def _check_presence(self, presence, batch):
        n = len(self.modality_names)
        presence = ops.convert_to_tensor(presence)
        shape = tuple(presence.shape)
        if len(shape) != 2 or shape[1] != n or (
            batch is not None and shape[0] is not None and shape[0] != batch[1]
        ):
            expected = f"({batch[1] if batch else 'batch'}, {n})"
            raise ValueError(
                f"{self._label}: `presence` must have shape {expected}, one column "
                f"per modality {self.modality_names}; received shape {shape}."
            )
        if keras.backend.standardize_dtype(presence.dtype) != "bool":
            presence = ops.cast(presence, "float32") > 0.5
        return ops.cast(presence, self.compute_dtype)

    # ------------------------------------------------------------------ call
    def call(self, inputs, presence=None, return_weights=False, training=None, mask=None,
             **kwargs):
        inputs, names = self._order(inputs)
        inputs = self._cast_inputs(inputs, names)
        batch = self._check_inputs(inputs, names)
        if presence is not None:
            presence = self._check_presence(presence, batch)
        kwargs = self.fuse_arguments(inputs, mask=mask, **kwargs)
        output, weights = self.fuse(inputs, presence, training=training, **kwargs)
        if return_weights:
            return output, weights
        return output

    def fuse_arguments(self, inputs, mask=None, **kwargs):
        """Validates the layer-specific call arguments and returns those
        passed on to `fuse`. Vector layers take none and ignore Keras masks."""
        if kwargs:
            raise TypeError(
                f"{self._label} got unexpected call arguments {sorted(kwargs)}."
            )
        return {}

    def compute_mask(self, inputs, previous_mask=None):
        # The fused output has no timestep axis left to mask.
        return None

    def fuse(self, inputs, presence, training=None):
        """The fusion math. Returns `(output, weights_dict)`.

        Args:
            inputs: list of tensors in modality order, already validated.
            presence: `(batch, n)` 0/1 mask in the compute dtype, or None.
            training: Python bool or None.
        """
        raise NotImplementedError(
            f"{self.__class__.__name__} must implement fuse(inputs, presence, training)."
        )

    def get_config(self):
        config = super().get_config()
        config["modalities"] = self.modalities
        return config


class SequenceFusionLayer(FusionLayer):
    """A `FusionLayer` over sequences `(batch, T_i, d_i)` (or sets of `T_i`
    elements) that also takes per-timestep masks.

    Each subclass's `fuse(inputs, presence, training, element_mask)` turns
    `presence` and `element_mask` into one `(batch, T_i)` mask per modality
    with `timestep_masks`, and zeroes masked timesteps with `zero_masked`; an
    absent modality has an all-zero mask, so it is one mechanism for padding
    and for missing modalities. When no `element_mask` is given, the inputs'
    Keras masks (e.g. from `Embedding(mask_zero=True)`) are used.

    Call arguments (in addition to `FusionLayer`'s):
        element_mask: optional list (modality order) or dict (like `inputs`)
            of `(batch, T_i)` 0/1 masks: 1 for real timesteps, 0 for padding.
            Takes precedence over Keras masks.

    Example:

    A layer concatenating each modality's mean over its valid timesteps:

    >>> class MeanOfMeans(SequenceFusionLayer):
    ...     def fuse(self, inputs, presence, training=None, element_mask=None):
    ...         masks = self.timestep_masks(inputs, presence, element_mask)
    ...         return ops.concatenate([masked_mean(x, m) for x, m in zip(inputs, masks)], -1), {}
    >>> x = [np.ones((1, 3, 2)), np.arange(8.0).reshape(1, 4, 2)]
    >>> padding = [np.ones((1, 3)), np.array([[1.0, 1.0, 0.0, 0.0]])]  # 2 padded steps
    >>> ops.convert_to_numpy(MeanOfMeans()(x, element_mask=padding)).tolist()
    [[1.0, 1.0, 1.0, 2.0]]

    The same padding as a Keras mask, from `Embedding(mask_zero=True)`:

    >>> tokens = keras.Input(shape=(4,), dtype="int32")
    >>> embedded = keras.layers.Embedding(10, 2, mask_zero=True)(tokens)
    >>> frames = keras.Input(shape=(3, 2))
    >>> model = keras.Model([frames, tokens], MeanOfMeans()([frames, embedded]))
    >>> ids = np.array([[3, 5, 0, 0]])  # two padded tokens
    >>> vectors = model.layers[-2].embeddings.numpy()  # the embedding table
    >>> expected = vectors[[3, 5]].mean(axis=0)
    >>> bool(np.allclose(model.predict([np.ones((1, 3, 2)), ids], verbose=0)[0, 2:], expected))
    True
    """

    input_rank = 3

    def fuse_arguments(self, inputs, mask=None, element_mask=None):
        given = list(mask.values()) if isinstance(mask, dict) else (
            list(mask) if isinstance(mask, (list, tuple)) else [mask])
        if element_mask is None and any(m is not None for m in given):
            masks, _ = self._order(mask, what="masks")
            element_mask = [
                ops.ones_like(x[..., 0]) if m is None else m for m, x in zip(masks, inputs)
            ]
        if element_mask is not None:
            element_mask = self._check_element_mask(element_mask, inputs)
        return {"element_mask": element_mask}

    def _check_element_mask(self, element_mask, inputs):
        masks, names = self._order(element_mask, what="element masks")
        if len(masks) != len(inputs):
            raise ValueError(
                f"{self._label} received {len(masks)} element masks for "
                f"{len(inputs)} modalities {self.modality_names}."
            )
        for name, mask, x in zip(names, masks, inputs):
            expected, given = tuple(x.shape[:2]), tuple(mask.shape)
            if len(given) != 2 or any(
                a is not None and b is not None and a != b for a, b in zip(expected, given)
            ):
                raise ValueError(
                    f"{self._label}: the element mask of modality '{name}' must have "
                    f"shape (batch, T) = {expected}; received shape {given}."
                )
        return masks

    def timestep_masks(self, inputs, presence, element_mask=None):
        """One `(batch, T_i)` 0/1 mask per modality in the inputs' dtype:
        `element_mask[i]` (or ones) where modality i is present, else zeros."""
        masks = []
        for i, x in enumerate(inputs):
            mask = ops.ones_like(x[..., 0]) if element_mask is None \
                else ops.cast(_valid(element_mask[i]), x.dtype)
            if presence is not None:
                mask = ops.where(presence[:, i:i + 1] > 0, mask, ops.zeros_like(mask))
            masks.append(mask)
        return masks

    @staticmethod
    def zero_masked(inputs, masks):
        """Each `(batch, T_i, d_i)` input with its masked timesteps set to
        exact zeros (`ops.where`, so NaN padding cannot leak)."""
        return [ops.where(ops.expand_dims(_valid(m), -1), x, ops.zeros_like(x))
                for x, m in zip(inputs, masks)]
