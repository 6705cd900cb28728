"""Deep Multi-Modal Sets (Reiter, Jia, Yang, Lim, 2020)."""

import keras
from keras import ops

from mmfusion.fusion.attention import attention_block
from mmfusion.fusion.base import (
    SequenceFusionLayer,
    constructor_config,
    dense,
    large_negative,
    masked_mean,
)
from mmfusion.fusion.registry import register

__all__ = ["MultimodalSets"]

POOLINGS = ("sum", "mean", "max", "transformer")


@register("multimodal_sets")
class MultimodalSets(SequenceFusionLayer):
    """Deep Multi-Modal Sets (Reiter, Jia, Yang, Lim, 2020): the modalities'
    feature vectors form one unordered set, pooled permutation-invariantly.

    Modality i contributes `T_i` elements (rows of its `(batch, T_i, d_i)`
    input; for one vector per modality pass T = 1). Each element is embedded
    in a common space, `e = act(x W_i + b_i) + m_i`, with a learned modality
    embedding `m_i`, and the set is pooled (`pooling`):
    - `"sum"`, `"mean"`: sum or mean of the elements (Deep Sets);
    - `"max"` (default): element-wise max, the paper's interpretable choice:
      the share of output units each element wins is its importance;
    - `"transformer"`: a learned CLS token is prepended and one transformer
      encoder block (self-attention without positions, so still
      permutation-invariant) runs over the set; the output is the CLS row.
    The output has size `units`; the paper's post-pooling MLP is left to the
    model's head. Takes sequences `(batch, T_i, d_i)`.

    Missing modalities and padding: an absent modality (presence 0) and
    padded elements (`element_mask` 0) are simply not in the set. An empty
    set gives zeros (`"sum"`, `"mean"`, `"max"`) or the encoding of the CLS
    token alone (`"transformer"`).

    Args:
        units: size of the common space and of the output.
        pooling: one of `"sum"`, `"mean"`, `"max"`, `"transformer"`.
        activation: activation of the element embeddings (default ReLU).
        num_heads: attention heads of the transformer pooling.
        kernel_initializer: initializer of all kernels.
        modalities: see `FusionLayer`.

    Call arguments:
        inputs: list or dict of `(batch, T_i, d_i)` tensors.
        presence: optional `(batch, N)` 0/1 mask.
        element_mask: optional list (modality order) or dict (like `inputs`)
            of `(batch, T_i)` 0/1 masks: 1 for the elements in the set, 0 for
            padding rows, so each example can have a different set size.
        return_weights: if True, also returns the pooling weights:
            `{"element_importance": (batch, ΣT_i)}` for `"max"` (the share of
            units won by each element, in modality order; ties split a unit),
            `{"set_attention": (batch, num_heads, 1 + ΣT_i, 1 + ΣT_i)}` for
            `"transformer"` (index 0 is the CLS token), `{}` otherwise.

    Returns:
        `(batch, units)`.

    Example:

    >>> import numpy as np
    >>> layer = MultimodalSets(units=4)
    >>> y, w = layer([np.ones((2, 3, 5)), np.ones((2, 1, 7))], return_weights=True)
    >>> tuple(y.shape), tuple(w["element_importance"].shape)
    ((2, 4), (2, 4))
    """

    def __init__(self, units, pooling="max", activation="relu", num_heads=2,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(
                f"MultimodalSets: pooling must be one of {POOLINGS}; received '{pooling}'."
            )
        self.units = units
        self.pooling = pooling
        self.activation = keras.activations.get(activation)
        self.num_heads = num_heads
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build_fusion(self, shapes):
        self.embeddings = [
            dense(self.units, f"embedding_{name}", self, shape, self.activation)
            for name, shape in zip(self.modality_names, shapes)
        ]
        self.modality_embeddings = self.add_kernel("modality_embeddings",
                                                   (len(shapes), self.units))
        if self.pooling == "transformer":
            self.cls_token = self.add_kernel("cls_token", (self.units,))
            self.encoder = attention_block(self, "encoder", (None, None, self.units),
                                           (None, None, self.units), self.num_heads)

    def fuse(self, inputs, presence, training=None, element_mask=None):
        masks = self.timestep_masks(inputs, presence, element_mask)
        inputs = self.zero_masked(inputs, masks)
        masks = ops.concatenate(masks, axis=1)
        elements = ops.concatenate([
            embed(x) + self.modality_embeddings[i]
            for i, (embed, x) in enumerate(zip(self.embeddings, inputs))
        ], axis=1)  # (batch, ΣT_i, units)
        if self.pooling == "sum":
            return ops.sum(self.zero_masked([elements], [masks])[0], axis=1), {}
        if self.pooling == "mean":
            return masked_mean(elements, masks), {}
        valid = ops.expand_dims(masks > 0, -1)
        if self.pooling == "max":
            low = large_negative(elements.dtype)
            # `initial`: empty batches; the where restores the (batch, units)
            # shape that PyTorch's max of an empty tensor loses.
            best = ops.max(ops.where(valid, elements, low), axis=1, initial=low)
            best = ops.where(ops.any(valid, axis=1), best, ops.zeros_like(elements[:, 0]))
            wins = ops.logical_and(elements == ops.expand_dims(best, 1), valid)
            wins = ops.cast(wins, elements.dtype)
            # Tied winners split a unit (counts are integers: floor 1, no epsilon).
            wins = wins / ops.maximum(ops.sum(wins, axis=1, keepdims=True), 1)
            return best, {"element_importance": ops.mean(wins, axis=-1)}
        cls = ops.broadcast_to(self.cls_token, (ops.shape(elements)[0], 1, self.units))
        tokens = ops.concatenate([ops.cast(cls, elements.dtype), elements], axis=1)
        token_masks = ops.concatenate([ops.ones_like(masks[:, :1]), masks], axis=1)
        encoded, scores = self.encoder(tokens, tokens, token_masks, token_masks, training=training)
        return encoded[:, 0], {"set_attention": scores}

    def get_config(self):
        return constructor_config(self, super().get_config(),
                                  ("units", "pooling", "activation", "num_heads",
                                   "kernel_initializer"))
