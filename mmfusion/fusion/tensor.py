"""Tensor fusion: Tensor Fusion Network (TFN) and Low-rank Multimodal Fusion (LMF)."""

import keras
from keras import ops

from mmfusion.fusion.base import FusionLayer, constructor_config, mask_inputs
from mmfusion.fusion.registry import register

__all__ = ["LMF", "TFN"]


def append_one(x):
    """`[x; 1]`: appends a constant 1 to each row of a `(batch, d)` tensor."""
    return ops.concatenate([x, ops.ones_like(x[:, :1])], axis=-1)


@register("tfn")
class TFN(FusionLayer):
    """Tensor Fusion Network fusion (Zadeh, Chen, Poria, Cambria, Morency, 2017).

    Each modality vector gets a constant 1 appended, `z_m = [x_m; 1]`; their
    outer product `Z = z_1 ⊗ z_2 ⊗ ... ⊗ z_N` holds every unimodal, bimodal,
    ..., N-modal product of features. The flattened `Z`, of size
    `Π_m (d_m + 1)`, goes through a dense layer: `y = act(vec(Z) W + b)`.
    Takes N ≥ 2 vectors `(batch, d_m)`; the kernel has
    `Π_m (d_m + 1) · units` entries, so keep the `d_m` small.

    In the paper the tensor feeds an inference subnetwork of ReLU dense
    layers; this layer is its first (linear by default, so that it equals
    `LMF`'s form; pass `activation="relu"` for the paper's first layer).

    Missing modalities: an absent modality's `x_m` is zeroed, so `z_m = [0; 1]`
    and only the terms without that modality remain. A row with no present
    modality gives `act(W[last] + b)`, the constant term.

    Args:
        units: output size.
        activation: activation of the dense layer (default linear).
        use_bias: whether the dense layer has a bias.
        kernel_initializer: initializer of the kernel.
        modalities: see `FusionLayer`.

    Call arguments:
        inputs: list or dict of `(batch, d_m)` tensors.
        presence: optional `(batch, N)` 0/1 mask.
        return_weights: if True, also returns an empty dict (no learned weighting).

    Returns:
        `(batch, units)`.

    Example:

    >>> import numpy as np
    >>> layer = TFN(units=4)
    >>> tuple(layer([np.ones((2, 3)), np.ones((2, 5))]).shape)
    (2, 4)
    >>> tuple(layer.kernel.shape)  # (3 + 1) * (5 + 1) rows
    (24, 4)
    """

    def __init__(self, units, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build_fusion(self, shapes):
        size = 1
        for s in shapes:
            size *= s[-1] + 1
        self.kernel = self.add_kernel("kernel", (size, self.units))
        self.bias = self.add_weight(
            name="bias", shape=(self.units,), initializer="zeros"
        ) if self.use_bias else None

    def fuse(self, inputs, presence, training=None):
        factors = [append_one(x) for x in mask_inputs(inputs, presence)]
        tensor = factors[0]
        for z in factors[1:]:
            # Row-major flattening: index (j_1, ..., j_N) like numpy's reshape.
            tensor = ops.expand_dims(tensor, 2) * ops.expand_dims(z, 1)
            tensor = ops.reshape(tensor, (ops.shape(tensor)[0], tensor.shape[1] * tensor.shape[2]))
        y = ops.matmul(tensor, self.kernel)
        if self.use_bias:
            y = y + self.bias
        return self.activation(y), {}

    def get_config(self):
        return constructor_config(self, super().get_config(),
                                  ("units", "activation", "use_bias", "kernel_initializer"))


@register("lmf")
class LMF(FusionLayer):
    """Low-rank Multimodal Fusion (Liu, Shen, Lakshminarasimhan, Liang, Zadeh,
    Morency, 2018).

    TFN's weight tensor, decomposed into `rank` modality-specific factors
    `W_m^(i)` of shape `(d_m + 1, units)`, is never formed:
    `y = Σ_{i=1}^{r} λ_i · Π_m ([x_m; 1] W_m^(i)) + b`, the product taken
    elementwise across modalities. This equals a `TFN` (linear activation)
    with kernel `W[j_1, ..., j_N, :] = Σ_i λ_i Π_m W_m^(i)[j_m, :]`; with
    `rank ≥ Π_{m<N} (d_m + 1)` any TFN kernel can be written this way.
    Takes N ≥ 2 vectors `(batch, d_m)`; parameters grow as
    `rank · units · Σ_m (d_m + 1)` instead of `units · Π_m (d_m + 1)`.

    The rank weights `λ` follow the authors' released implementation (the
    paper's equations absorb them into the factors, so they add no
    expressiveness; they are initialized to 1 here); `use_rank_weights=False`
    fixes them to 1. The paper tunes the rank per task and finds small ranks
    sufficient; the default is 4.

    Missing modalities: as in `TFN`, an absent modality's `x_m` is zeroed, so
    its factor is `[0; 1] W_m^(i)`, the last row of `W_m^(i)`. A row with no
    present modality gives `Σ_i λ_i Π_m W_m^(i)[last] + b`.

    Args:
        units: output size.
        rank: number of rank-one terms `r`.
        use_rank_weights: learn the rank weights `λ` (initialized to 1).
        use_bias: whether the output has a bias `b`.
        kernel_initializer: initializer of the factors.
        modalities: see `FusionLayer`.

    Call arguments:
        inputs: list or dict of `(batch, d_m)` tensors.
        presence: optional `(batch, N)` 0/1 mask.
        return_weights: if True, also returns an empty dict (no learned weighting).

    Returns:
        `(batch, units)`.

    Example:

    >>> import numpy as np
    >>> layer = LMF(units=4, rank=2)
    >>> tuple(layer([np.ones((2, 3)), np.ones((2, 5))]).shape)
    (2, 4)
    >>> [tuple(w.shape) for w in layer.factors]  # (d_m + 1, rank · units)
    [(4, 8), (6, 8)]
    """

    def __init__(self, units, rank=4, use_rank_weights=True, use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.rank = rank
        self.use_rank_weights = use_rank_weights
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build_fusion(self, shapes):
        self.factors = [
            self.add_kernel(f"factor_{name}", (s[-1] + 1, self.rank * self.units))
            for name, s in zip(self.modality_names, shapes)
        ]
        self.rank_weights = self.add_weight(
            name="rank_weights", shape=(self.rank,), initializer="ones"
        ) if self.use_rank_weights else None
        self.bias = self.add_weight(
            name="bias", shape=(self.units,), initializer="zeros"
        ) if self.use_bias else None

    def fuse(self, inputs, presence, training=None):
        product = None
        for x, factor in zip(mask_inputs(inputs, presence), self.factors):
            term = ops.matmul(append_one(x), factor)  # (batch, rank · units)
            product = term if product is None else product * term
        product = ops.reshape(product, (ops.shape(product)[0], self.rank, self.units))
        if self.use_rank_weights:
            product = product * ops.expand_dims(self.rank_weights, -1)
        y = ops.sum(product, axis=1)
        if self.use_bias:
            y = y + self.bias
        return y, {}

    def get_config(self):
        return constructor_config(self, super().get_config(), (
            "units", "rank", "use_rank_weights", "use_bias", "kernel_initializer"))
