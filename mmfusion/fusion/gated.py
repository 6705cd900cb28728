"""Gated Multimodal Unit (Arevalo et al., 2017)."""

import keras
from keras import ops

from mmfusion.fusion.base import FusionLayer, constructor_config, dense, mask_inputs, renormalize
from mmfusion.fusion.registry import register

__all__ = ["GMU"]

GATINGS = ("auto", "bimodal", "sigmoid", "softmax")


@register("gmu")
class GMU(FusionLayer):
    """Gated Multimodal Unit (Arevalo, Solorio, Montes-y-Gómez, González, 2017).

    Each modality is projected, `h_i = tanh(x_i W_i + b_i)`, and gates computed
    from the concatenation of all the *inputs*, `[x_1; ...; x_N]`, decide how
    much each `h_i` contributes: `y = Σ_i z_i ⊙ h_i`. Takes vectors `(batch, d_i)`.

    Gating (`gating`):
    - `"bimodal"`: the paper's two-modality form, one gate
      `z = σ([x_1; x_2] W_z + b_z)` and `y = z ⊙ h_1 + (1 − z) ⊙ h_2`.
    - `"sigmoid"`: the paper's N-modality form, one independent gate per
      modality `z_i = σ([x_1; ...; x_N] W_{z_i} + b_{z_i})`; the gates are not
      normalized (they need not sum to one).
    - `"softmax"`: as `"sigmoid"` but the N gate logits are softmax-normalized
      across modalities per unit, so the gates form a convex combination.
    - `"auto"` (default): `"bimodal"` for two modalities, `"sigmoid"` for more,
      i.e. exactly the paper.

    Missing modalities: an absent modality's input is zeroed (in its projection
    and in the gate input) and its gate set to 0. For the convex gatings
    (`"bimodal"`, `"softmax"`) the gates of the present modalities are then
    renormalized to sum to one, so with one modality left `y = h_present`. A
    row with no present modality gives zeros.

    Args:
        units: size of the hidden representations and the output.
        gating: one of `"auto"`, `"bimodal"`, `"sigmoid"`, `"softmax"`.
        use_bias: whether projections and gates have biases (the paper's
            equations omit them as notation; common implementations use them).
        kernel_initializer: initializer of all kernels.
        modalities: see `FusionLayer`.

    Call arguments:
        inputs: list or dict of `(batch, d_i)` tensors.
        presence: optional `(batch, N)` 0/1 mask.
        return_weights: if True, also returns `{"gates": (batch, N, units)}`,
            the gate `z_i` applied to each modality (for `"bimodal"`,
            `z` and `1 − z`).

    Returns:
        `(batch, units)`.

    Example:

    >>> import numpy as np
    >>> gmu = GMU(units=4)
    >>> y, w = gmu([np.ones((2, 3)), np.zeros((2, 5))], return_weights=True)
    >>> tuple(y.shape), tuple(w["gates"].shape)
    ((2, 4), (2, 2, 4))
    """

    def __init__(self, units, gating="auto", use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if gating not in GATINGS:
            raise ValueError(f"GMU: gating must be one of {GATINGS}; received '{gating}'.")
        self.units = units
        self.gating = gating
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _resolved_gating(self, n):
        if self.gating == "auto":
            return "bimodal" if n == 2 else "sigmoid"
        if self.gating == "bimodal" and n != 2:
            raise ValueError(
                f"GMU layer '{self.name}' with gating='bimodal' takes exactly 2 "
                f"modalities; received {n}: {self.modality_names}. Use 'sigmoid' "
                "or 'softmax' gating for N modalities."
            )
        return self.gating

    def build_fusion(self, shapes):
        n = len(shapes)
        self.resolved_gating = self._resolved_gating(n)
        self.projections = [dense(self.units, f"projection_{name}", self, shape, "tanh",
                                  self.use_bias)
                            for name, shape in zip(self.modality_names, shapes)]
        n_gates = 1 if self.resolved_gating == "bimodal" else n
        total = sum(s[-1] for s in shapes)
        self.gate_kernel = self.add_kernel("gate_kernel", (total, n_gates * self.units))
        self.gate_bias = self.add_weight(
            name="gate_bias", shape=(n_gates * self.units,), initializer="zeros"
        ) if self.use_bias else None

    def fuse(self, inputs, presence, training=None):
        inputs = mask_inputs(inputs, presence)
        n = len(inputs)
        # (batch, N, units)
        hidden = ops.stack([p(x) for p, x in zip(self.projections, inputs)], axis=1)

        logits = ops.matmul(ops.concatenate(inputs, axis=-1), self.gate_kernel)
        if self.use_bias:
            logits = logits + self.gate_bias
        if self.resolved_gating == "bimodal":
            z = ops.sigmoid(logits)
            gates = ops.stack([z, 1.0 - z], axis=1)
        else:
            logits = ops.reshape(logits, (-1, n, self.units))
            gates = ops.softmax(logits, axis=1) if self.resolved_gating == "softmax" \
                else ops.sigmoid(logits)
        if presence is not None:
            if self.resolved_gating == "sigmoid":
                gates = gates * ops.expand_dims(presence, -1)
            else:
                gates = renormalize(gates, presence)
        output = ops.sum(gates * hidden, axis=1)
        return output, {"gates": gates}

    def get_config(self):
        return constructor_config(self, super().get_config(),
                                  ("units", "gating", "use_bias", "kernel_initializer"))
