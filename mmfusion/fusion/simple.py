"""Simple fusion: concatenation and learned weighted sum."""

import keras
from keras import ops

from mmfusion.fusion.base import FusionLayer, constructor_config, dense, mask_inputs, renormalize
from mmfusion.fusion.registry import register

__all__ = ["Concatenate", "WeightedSum"]


@register("concat")
class Concatenate(FusionLayer):
    """Concatenation of N modality vectors, optionally projected to `units`.

    `y = act([x_1; ...; x_N] W + b)` if `units` is set, else `[x_1; ...; x_N]`.
    Takes vectors `(batch, d_i)`; sizes may differ.

    An absent modality contributes zeros to the concatenation, so the output
    does not depend on its input; an all-absent row gives `act(b)` (or zeros).

    Args:
        units: size of the optional projection; None keeps the concatenation,
            of size `sum(d_i)`.
        activation: activation of the projection (default linear).
        use_bias: whether the projection has a bias.
        kernel_initializer: initializer of the projection kernel.
        modalities: see `FusionLayer`.

    Call arguments:
        inputs: list or dict of `(batch, d_i)` tensors.
        presence: optional `(batch, N)` 0/1 mask.
        return_weights: if True, also returns an empty dict (no learned weighting).

    Returns:
        `(batch, units)`, or `(batch, sum(d_i))` if `units` is None.

    Example:

    >>> import numpy as np
    >>> layer = Concatenate(units=4)
    >>> tuple(layer([np.ones((2, 3)), np.ones((2, 5))]).shape)
    (2, 4)
    """

    def __init__(self, units=None, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build_fusion(self, shapes):
        self.build_output_projection(sum(s[-1] for s in shapes), self.activation, self.use_bias)

    def fuse(self, inputs, presence, training=None):
        return self.project_output(ops.concatenate(mask_inputs(inputs, presence), axis=-1)), {}

    def get_config(self):
        return constructor_config(self, super().get_config(),
                                  ("units", "activation", "use_bias", "kernel_initializer"))


@register("weighted_sum")
class WeightedSum(FusionLayer):
    """Weighted sum of projected modalities with learned modality weights θ.

    `h_i = act(x_i W_i + b_i)` (a per-modality projection to `units`), and
    `y = Σ_i θ_i h_i` with `θ = softmax(λ)` over learned logits `λ`
    (`normalize=True`, so the weights sum to one), or `θ = λ` with `λ`
    initialized to 1 (`normalize=False`). Takes vectors `(batch, d_i)`.

    Missing modalities: absent ones get θ_i = 0 and, when `normalize=True`,
    the remaining weights are renormalized to sum to one over the present
    modalities; a row with no present modality gives zeros.

    Args:
        units: common size the modalities are projected to. None skips the
            projection; then all modalities must have the same size.
        activation: activation of the projections (default linear).
        use_bias: whether the projections have biases.
        normalize: softmax-normalize θ (True) or use raw learned weights.
        kernel_initializer: initializer of the projection kernels.
        modalities: see `FusionLayer`.

    Call arguments:
        inputs: list or dict of `(batch, d_i)` tensors.
        presence: optional `(batch, N)` 0/1 mask.
        return_weights: if True, also returns
            `{"modality_weights": (batch, N)}`, the θ applied to each example.

    Returns:
        `(batch, units)` (or `(batch, d)` if `units` is None).

    Example:

    >>> import numpy as np
    >>> layer = WeightedSum(units=4)
    >>> y, w = layer([np.ones((2, 3)), np.ones((2, 5))], return_weights=True)
    >>> tuple(y.shape), tuple(w["modality_weights"].shape)
    ((2, 4), (2, 2))
    """

    def __init__(self, units=None, activation=None, use_bias=True, normalize=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.normalize = normalize
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build_fusion(self, shapes):
        if self.units is None:
            sizes = {s[-1] for s in shapes}
            if len(sizes) > 1:
                detail = ", ".join(
                    f"'{n}': {s[-1]}" for n, s in zip(self.modality_names, shapes)
                )
                raise ValueError(
                    f"WeightedSum layer '{self.name}' with units=None needs every "
                    f"modality to have the same size; received sizes {detail}. "
                    "Set `units` to project them to a common size."
                )
        else:
            self.projections = [dense(self.units, f"projection_{name}", self, shape,
                                      self.activation, self.use_bias)
                                for name, shape in zip(self.modality_names, shapes)]
        self.modality_logits = self.add_weight(
            name="modality_logits", shape=(len(shapes),),
            initializer="zeros" if self.normalize else "ones",
        )

    def fuse(self, inputs, presence, training=None):
        inputs = mask_inputs(inputs, presence)
        projected = inputs if self.units is None else [
            p(x) for p, x in zip(self.projections, inputs)]
        stacked = ops.stack(projected, axis=1)  # (batch, N, units)
        # softmax restricted to the present modalities = renormalized softmax
        theta = ops.softmax(self.modality_logits) if self.normalize else self.modality_logits
        theta = ops.broadcast_to(ops.expand_dims(theta, 0), (ops.shape(stacked)[0], len(inputs)))
        if presence is not None:
            theta = renormalize(theta, presence) if self.normalize else \
                ops.where(presence > 0, theta, ops.zeros_like(theta))
        output = ops.sum(stacked * ops.expand_dims(theta, -1), axis=1)
        return output, {"modality_weights": theta}

    def get_config(self):
        return constructor_config(self, super().get_config(), (
            "units", "activation", "use_bias", "normalize", "kernel_initializer"))
