"""Bilinear and higher-order pooling: MCB, MLB, MFB, MFH, MUTAN, Tucker, BLOCK.

Missing modalities, for every layer here: an absent modality's projected
vector (the factor it brings to the multiplicative interaction) is replaced by
ones, the identity of the elementwise product, so the output is the present
modalities' own terms; for MCB, whose product is a circular convolution, the
absent modality's count sketch is replaced by the convolution's identity, the
unit impulse `[1, 0, ..., 0]` (all-ones spectrum). A row with no present
modality therefore gives a finite, input-independent output.
"""

import math

import keras
import numpy as np
from keras import ops

from mmfusion.fusion.base import FusionLayer
from mmfusion.fusion.registry import register

__all__ = ["BLOCK", "MCB", "MFB", "MFH", "MLB", "MUTAN", "Tucker", "signed_sqrt"]

# Smoothing of the signed square root; its gradient at 0 is 1 / (2 sqrt(eps)).
SQRT_EPSILON = 1e-6
# Floor of the squared norm in the L2 normalization (an all-zero row stays zero).
NORM_EPSILON = 1e-12


def signed_sqrt(x, epsilon=SQRT_EPSILON):
    """Signed square root with a finite gradient everywhere.

    `sign(x) · (sqrt(|x| + ε) − sqrt(ε))`, written as
    `x / (sqrt(|x| + ε) + sqrt(ε))`: 0 at 0 with slope `1 / (2 sqrt(ε))`,
    and within `sqrt(ε)` of `sign(x) sqrt(|x|)` elsewhere. The papers'
    `sign(x) sqrt(|x|)` has an infinite slope at 0: huge gradients near 0,
    and NaN at exact zeros when written `sqrt(relu(x)) − sqrt(relu(−x))`.

    Example:

    >>> import numpy as np
    >>> np.round(ops.convert_to_numpy(signed_sqrt(np.array([-4.0, 0.0, 9.0]))), 3)
    array([-1.999,  0.   ,  2.999])
    """
    return x / (ops.sqrt(ops.abs(x) + epsilon) + math.sqrt(epsilon))


def l2_normalize(x, axis=-1):
    """`x / ||x||` along `axis`; an all-zero vector stays zero (finite gradient)."""
    squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared, NORM_EPSILON))


def power_l2(x, power_norm=True, l2_norm=True):
    """The normalization of MCB, MFB, MFH and BLOCK: signed sqrt, then L2."""
    if power_norm:
        x = signed_sqrt(x)
    if l2_norm:
        x = l2_normalize(x)
    return x


def fill_absent(x, presence, i, fill=1.0):
    """`x` where modality `i` is present, `fill` where it is absent."""
    if presence is None:
        return x
    p = ops.reshape(presence[:, i], (-1,) + (1,) * (len(x.shape) - 1))
    return p * x + (1.0 - p) * fill


def elementwise_product(tensors):
    """`t_1 ∘ t_2 ∘ ... ∘ t_N`."""
    product = tensors[0]
    for t in tensors[1:]:
        product = product * t
    return product


def sum_pool(x, factor):
    """Sums consecutive groups of `factor` features: `(batch, k·o) -> (batch, o)`."""
    return ops.sum(ops.reshape(x, (-1, x.shape[-1] // factor, factor)), axis=-1)


class ProductFusion(FusionLayer):
    """Shared parts of the layers here: per-modality projections whose absent
    rows become ones, and an optional output projection. Not registered.

    Args:
        units: output size (see each subclass).
        use_bias: whether the projections and the output projection have biases.
        kernel_initializer: initializer of all kernels.
        modalities: see `FusionLayer`.
    """

    def __init__(self, units, use_bias=True, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def add_projections(self, shapes, size, tag=""):
        """One `(kernel, bias or None)` per modality, mapping `d_m -> size`."""
        projections = []
        for name, s in zip(self.modality_names, shapes):
            kernel = self.add_weight(name=f"kernel{tag}_{name}", shape=(s[-1], size),
                                     initializer=self.kernel_initializer)
            bias = self.add_weight(
                name=f"bias{tag}_{name}", shape=(size,), initializer="zeros"
            ) if self.use_bias else None
            projections.append((kernel, bias))
        return projections

    def project(self, inputs, projections, presence, activation=None):
        """`act(x_m K_m + b_m)` per modality; ones for absent modalities."""
        outputs = []
        for i, (x, (kernel, bias)) in enumerate(zip(inputs, projections)):
            h = ops.matmul(x, kernel)
            if bias is not None:
                h = h + bias
            if activation is not None:
                h = activation(h)
            outputs.append(fill_absent(h, presence, i))
        return outputs

    def add_output(self, size):
        """The output projection `size -> units` (kernel and, if `use_bias`, bias)."""
        self.output_kernel = self.add_weight(
            name="output_kernel", shape=(size, self.units), initializer=self.kernel_initializer
        )
        self.output_bias = self.add_weight(
            name="output_bias", shape=(self.units,), initializer="zeros"
        ) if self.use_bias else None

    def project_output(self, z):
        y = ops.matmul(z, self.output_kernel)
        if self.output_bias is not None:
            y = y + self.output_bias
        return y

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@register("mcb")
class MCB(ProductFusion):
    """Multimodal Compact Bilinear pooling (Fukui, Park, Yang, Rohrbach,
    Darrell, Rohrbach, 2016).

    Each modality is count-sketched to `d = sketch_size` dimensions,
    `Ψ(x_m)[h_m(j)] += s_m(j) x_m[j]`, with fixed random indices
    `h_m(j) ∈ [0, d)` and signs `s_m(j) ∈ {−1, 1}`; the sketch of the outer
    product of all modalities is the circular convolution of their sketches,
    computed as `irfft(Π_m rfft(Ψ(x_m)))`. Then signed sqrt and L2
    normalization (`power_norm`, `l2_norm`, the paper's VQA model), and, if
    `units` is set, a dense projection to `units` (the paper's next layer).
    Takes N ≥ 2 vectors `(batch, d_m)`.

    `h_m`, `s_m` are drawn from `seed` at build time and stored as
    non-trainable weights (`sketch_index_<modality>`, `sketch_sign_<modality>`),
    so a saved model keeps them. The sketch is a segment sum, not a matmul
    with the dense `(d_m, d)` sketch matrix: about as fast for small inputs,
    1.5-2x faster for `d_m = 128` and 28-48x for `d_m = 2048` at `d = 16000`
    (`benchmarks/bench_tensor_bilinear.py`, CPU).

    Missing modalities: an absent modality's sketch is replaced by the unit
    impulse `[1, 0, ..., 0]` (spectrum all ones), the identity of circular
    convolution, so the result is the convolution of the present sketches; a
    row with no present modality gives the (normalized) impulse.

    Args:
        units: size of the optional dense projection; None returns the
            `sketch_size` vector.
        sketch_size: `d`, the paper's default 16000.
        power_norm: apply the signed square root (`signed_sqrt`).
        l2_norm: apply L2 normalization.
        seed: integer seed of the sketch hashes.
        use_bias: whether the projection has a bias.
        kernel_initializer: initializer of the projection kernel.
        modalities: see `FusionLayer`.

    Call arguments:
        inputs: list or dict of `(batch, d_m)` tensors.
        presence: optional `(batch, N)` 0/1 mask.
        return_weights: if True, also returns an empty dict (no learned weighting).

    Returns:
        `(batch, units)`, or `(batch, sketch_size)` if `units` is None.

    Example:

    >>> import numpy as np
    >>> layer = MCB(sketch_size=64, l2_norm=False, power_norm=False)
    >>> x = np.zeros((1, 3)); x[0, 1] = 2.0
    >>> y = np.zeros((1, 5)); y[0, 4] = 3.0
    >>> out = ops.convert_to_numpy(layer([x, y]))  # one sketched product 2·3
    >>> round(float(np.abs(out).max()), 4), int(np.count_nonzero(np.abs(out) > 1e-4))
    (6.0, 1)
    """

    def __init__(self, units=None, sketch_size=16000, power_norm=True, l2_norm=True,
                 seed=0, use_bias=True, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(units, use_bias=use_bias, kernel_initializer=kernel_initializer,
                         **kwargs)
        self.sketch_size = sketch_size
        self.power_norm = power_norm
        self.l2_norm = l2_norm
        self.seed = seed

    def build_fusion(self, shapes):
        rng = np.random.default_rng(self.seed)
        self.sketches = []
        for name, s in zip(self.modality_names, shapes):
            index = self.add_weight(name=f"sketch_index_{name}", shape=(s[-1],),
                                    dtype="int32", initializer="zeros", trainable=False)
            sign = self.add_weight(name=f"sketch_sign_{name}", shape=(s[-1],),
                                   initializer="ones", trainable=False)
            index.assign(rng.integers(0, self.sketch_size, size=s[-1]).astype("int32"))
            sign.assign(rng.choice([-1.0, 1.0], size=s[-1]).astype(sign.dtype))
            self.sketches.append((index, sign))
        if self.units is not None:
            self.add_output(self.sketch_size)

    def count_sketch(self, x, index, sign):
        """`(batch, d_m) -> (batch, sketch_size)`: a segment sum of the signed features."""
        summed = ops.segment_sum(ops.transpose(x * sign), index, num_segments=self.sketch_size)
        return ops.transpose(summed)

    def fuse(self, inputs, presence, training=None):
        impulse = ops.one_hot(0, self.sketch_size, dtype=inputs[0].dtype)
        real = imag = None
        for i, (x, (index, sign)) in enumerate(zip(inputs, self.sketches)):
            sketch = fill_absent(self.count_sketch(x, index, sign), presence, i, impulse)
            re, im = ops.rfft(sketch)
            if real is None:
                real, imag = re, im
            else:
                real, imag = real * re - imag * im, real * im + imag * re
        z = power_l2(ops.irfft((real, imag), fft_length=self.sketch_size),
                     self.power_norm, self.l2_norm)
        return (z if self.units is None else self.project_output(z)), {}

    def get_config(self):
        config = super().get_config()
        config.update(
            sketch_size=self.sketch_size,
            power_norm=self.power_norm,
            l2_norm=self.l2_norm,
            seed=self.seed,
        )
        return config


@register("mlb")
class MLB(ProductFusion):
    """Multimodal Low-rank Bilinear pooling (Kim, On, Lim, Kim, Ha, Zhang, 2017).

    `y = (Π_m tanh(x_m U_m + b_m)) P + b`: each modality projected to a
    `rank`-dimensional joint space, tanh, Hadamard product across all
    modalities, output projection `P`. Takes N ≥ 2 vectors `(batch, d_m)`
    (the paper has two). Parameters: `rank · (Σ_m d_m + units)` (+ biases).

    Missing modalities: an absent modality's `tanh(x_m U_m + b_m)` is replaced
    by ones (see the module docstring).

    Args:
        units: output size.
        rank: size of the joint (Hadamard) space; the paper's VQA model uses 1200.
        activation: activation of the projections, the paper's tanh.
        use_bias: whether projections and output have biases.
        kernel_initializer: initializer of all kernels.
        modalities: see `FusionLayer`.

    Call arguments:
        inputs: list or dict of `(batch, d_m)` tensors.
        presence: optional `(batch, N)` 0/1 mask.
        return_weights: if True, also returns an empty dict (no learned weighting).

    Returns:
        `(batch, units)`.

    Example:

    >>> import numpy as np
    >>> layer = MLB(units=4, rank=16)
    >>> tuple(layer([np.ones((2, 3)), np.ones((2, 5)), np.ones((2, 2))]).shape)
    (2, 4)
    """

    def __init__(self, units, rank=1200, activation="tanh", use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(units, use_bias=use_bias, kernel_initializer=kernel_initializer,
                         **kwargs)
        self.rank = rank
        self.activation = keras.activations.get(activation)

    def build_fusion(self, shapes):
        self.projections = self.add_projections(shapes, self.rank)
        self.add_output(self.rank)

    def fuse(self, inputs, presence, training=None):
        factors = self.project(inputs, self.projections, presence, self.activation)
        return self.project_output(elementwise_product(factors)), {}

    def get_config(self):
        config = super().get_config()
        config.update(rank=self.rank, activation=keras.activations.serialize(self.activation))
        return config


@register("mfb")
class MFB(ProductFusion):
    """Multimodal Factorized Bilinear pooling (Yu, Yu, Fan, Tao, 2017).

    Each modality is projected to `k · o` features, the projections are
    multiplied elementwise, dropout is applied, and consecutive groups of `k`
    are summed (sum pooling): `z = SumPool(Π_m (x_m U_m + b_m), k)`, of size
    `o = units`; then the power (signed sqrt) and L2 normalizations. Takes
    N ≥ 2 vectors `(batch, d_m)` (the paper has two). Parameters:
    `k · o · Σ_m (d_m + 1)`. Defaults are the paper's: `k = 5`, `o = 1000`,
    dropout 0.1.

    Missing modalities: an absent modality's projection is replaced by ones
    (see the module docstring).

    Args:
        units: `o`, the output size.
        factor: `k`, the number of factors summed per output feature.
        dropout: dropout rate on the product, before pooling.
        power_norm: apply the signed square root (`signed_sqrt`).
        l2_norm: apply L2 normalization.
        use_bias: whether the projections have biases.
        kernel_initializer: initializer of the projections.
        modalities: see `FusionLayer`.

    Call arguments:
        inputs: list or dict of `(batch, d_m)` tensors.
        presence: optional `(batch, N)` 0/1 mask.
        return_weights: if True, also returns an empty dict (no learned weighting).
        training: whether dropout is active.

    Returns:
        `(batch, units)`, L2-normalized rows if `l2_norm`.

    Example:

    >>> import numpy as np
    >>> layer = MFB(units=4, factor=3)
    >>> out = ops.convert_to_numpy(layer([np.ones((2, 3)), np.ones((2, 5))]))
    >>> out.shape, np.round(np.linalg.norm(out, axis=-1), 4)
    ((2, 4), array([1., 1.], dtype=float32))
    """

    def __init__(self, units=1000, factor=5, dropout=0.1, power_norm=True, l2_norm=True,
                 use_bias=True, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(units, use_bias=use_bias, kernel_initializer=kernel_initializer,
                         **kwargs)
        self.factor = factor
        self.dropout = dropout
        self.power_norm = power_norm
        self.l2_norm = l2_norm
        self.dropout_layer = keras.layers.Dropout(dropout)

    def build_fusion(self, shapes):
        self.projections = self.add_projections(shapes, self.factor * self.units)

    def fuse(self, inputs, presence, training=None):
        product = elementwise_product(self.project(inputs, self.projections, presence))
        product = self.dropout_layer(product, training=training)
        z = power_l2(sum_pool(product, self.factor), self.power_norm, self.l2_norm)
        return z, {}

    def get_config(self):
        config = super().get_config()
        config.update(factor=self.factor, dropout=self.dropout,
                      power_norm=self.power_norm, l2_norm=self.l2_norm)
        return config


@register("mfh")
class MFH(MFB):
    """Multimodal Factorized High-order pooling (Yu, Yu, Xiang, Fan, Tao, 2018).

    `order = p` cascaded MFB blocks, each with its own projections: block i's
    expanded product is `e_i = dropout(Π_m (x_m U_m^(i) + b_m^(i)) ∘ e_{i−1})`
    (`e_0 = 1`), so block i multiplies i projections of each modality (a
    polynomial of degree i in each); `z_i = L2(signed_sqrt(SumPool(e_i, k)))`, and the output is the
    concatenation `[z_1; ...; z_p]`, of size **`p · units`**. Takes N ≥ 2
    vectors `(batch, d_m)`. Defaults follow the paper: `p = 2`, `k = 5`,
    `o = 1000`, dropout 0.1.

    Missing modalities: an absent modality's projection in every block is
    replaced by ones (see the module docstring).

    Args:
        units: `o`, the output size of each block.
        order: `p`, the number of cascaded blocks.
        factor, dropout, power_norm, l2_norm, use_bias, kernel_initializer,
        modalities: as in `MFB`.

    Call arguments:
        inputs: list or dict of `(batch, d_m)` tensors.
        presence: optional `(batch, N)` 0/1 mask.
        return_weights: if True, also returns an empty dict (no learned weighting).
        training: whether dropout is active.

    Returns:
        `(batch, order · units)`.

    Example:

    >>> import numpy as np
    >>> layer = MFH(units=4, order=3, factor=2)
    >>> tuple(layer([np.ones((2, 3)), np.ones((2, 5))]).shape)
    (2, 12)
    """

    def __init__(self, units=1000, order=2, **kwargs):
        super().__init__(units, **kwargs)
        self.order = order

    def build_fusion(self, shapes):
        self.blocks = [
            self.add_projections(shapes, self.factor * self.units, tag=f"_{i}")
            for i in range(self.order)
        ]

    def fuse(self, inputs, presence, training=None):
        expanded, outputs = 1.0, []
        for projections in self.blocks:
            expanded = expanded * elementwise_product(self.project(inputs, projections, presence))
            expanded = self.dropout_layer(expanded, training=training)
            outputs.append(power_l2(sum_pool(expanded, self.factor), self.power_norm,
                                    self.l2_norm))
        return ops.concatenate(outputs, axis=-1), {}

    def get_config(self):
        config = super().get_config()
        config.update(order=self.order)
        return config


class BimodalFusion(ProductFusion):
    """Base of the two-modality Tucker-family layers (Tucker, MUTAN, BLOCK).

    Args:
        units: output size.
        hidden_size: size of each modality's projection (`t_q = t_v`).
        use_bias, kernel_initializer, modalities: see `ProductFusion`.
    """

    min_modalities = max_modalities = 2

    def __init__(self, units, hidden_size, **kwargs):
        super().__init__(units, **kwargs)
        self.hidden_size = hidden_size

    def get_config(self):
        config = super().get_config()
        config.update(hidden_size=self.hidden_size)
        return config


@register("tucker")
class Tucker(BimodalFusion):
    """Tucker fusion with a full core (Ben-younes, Cadene, Cord, Thome, 2017).

    The bilinear map `y = T ×_1 x_1 ×_2 x_2` with `T` Tucker-decomposed:
    `x̃_m = tanh(x_m W_m + b_m)` (size `hidden_size`),
    `z[k] = Σ_ij T_c[i, j, k] x̃_1[i] x̃_2[j]` with an unconstrained core
    `T_c` of shape `(hidden_size, hidden_size, core_size)`, and
    `y = z W_o + b_o`. Takes exactly 2 vectors `(batch, d_m)`. Parameters:
    `hidden_size · (d_1 + d_2) + hidden_size² · core_size + core_size · units`
    (+ biases); the defaults (64, 64) keep the core at 262k entries.

    Missing modalities: an absent modality's `x̃_m` is replaced by ones, i.e.
    the core is summed over that modality's mode (see the module docstring).

    Args:
        units: output size.
        hidden_size: `t_1 = t_2`, size of the tanh projections.
        core_size: `t_o`, the core's output size.
        use_bias, kernel_initializer, modalities: see `ProductFusion`.

    Call arguments:
        inputs: list or dict of two `(batch, d_m)` tensors.
        presence: optional `(batch, 2)` 0/1 mask.
        return_weights: if True, also returns an empty dict (no learned weighting).

    Returns:
        `(batch, units)`.

    Example:

    >>> import numpy as np
    >>> layer = Tucker(units=4, hidden_size=6, core_size=5)
    >>> tuple(layer([np.ones((2, 3)), np.ones((2, 7))]).shape)
    (2, 4)
    >>> tuple(layer.core.shape)
    (6, 6, 5)
    """

    def __init__(self, units, hidden_size=64, core_size=64, **kwargs):
        super().__init__(units, hidden_size, **kwargs)
        self.core_size = core_size

    def build_fusion(self, shapes):
        self.projections = self.add_projections(shapes, self.hidden_size)
        self.core = self.add_weight(
            name="core", shape=(self.hidden_size, self.hidden_size, self.core_size),
            initializer=self.kernel_initializer,
        )
        self.add_output(self.core_size)

    def fuse(self, inputs, presence, training=None):
        q, v = self.project(inputs, self.projections, presence, ops.tanh)
        z = ops.einsum("bj,bjk->bk", v, ops.einsum("bi,ijk->bjk", q, self.core))
        return self.project_output(z), {}

    def get_config(self):
        config = super().get_config()
        config.update(core_size=self.core_size)
        return config


@register("mutan")
class MUTAN(Tucker):
    """MUTAN: Tucker fusion with a rank-constrained core (Ben-younes, Cadene,
    Cord, Thome, 2017).

    As `Tucker`, but each core slice `T_c[:, :, k]` has rank ≤ `rank = R`:
    `z = Σ_{r=1}^{R} (x̃_1 M_r) ∘ (x̃_2 N_r)` with `M_r, N_r` of shape
    `(hidden_size, core_size)`, i.e. `T_c[i, j, k] = Σ_r M_r[i, k] N_r[j, k]`;
    then `y = z W_o + b_o`. Takes exactly 2 vectors `(batch, d_m)`.
    Parameters: `hidden_size · (d_1 + d_2) + 2 R · hidden_size · core_size +
    core_size · units` (+ biases). The defaults (`hidden_size=310`,
    `core_size=510`, `rank=10`) are VQA-scale sizes; the paper tunes them.

    Missing modalities: as `Tucker` (the absent `x̃_m` becomes ones).

    Args:
        units: output size.
        hidden_size: `t_1 = t_2`, size of the tanh projections.
        core_size: `t_o`, size of `z`.
        rank: `R`, the rank of each core slice.
        use_bias, kernel_initializer, modalities: see `ProductFusion`.

    Call arguments:
        inputs: list or dict of two `(batch, d_m)` tensors.
        presence: optional `(batch, 2)` 0/1 mask.
        return_weights: if True, also returns an empty dict (no learned weighting).

    Returns:
        `(batch, units)`.

    Example:

    >>> import numpy as np
    >>> layer = MUTAN(units=4, hidden_size=6, core_size=5, rank=3)
    >>> tuple(layer([np.ones((2, 3)), np.ones((2, 7))]).shape)
    (2, 4)
    """

    def __init__(self, units, hidden_size=310, core_size=510, rank=10, **kwargs):
        super().__init__(units, hidden_size, core_size, **kwargs)
        self.rank = rank

    def build_fusion(self, shapes):
        self.projections = self.add_projections(shapes, self.hidden_size)
        self.core_factors = [
            self.add_weight(name=f"core_factor_{name}",
                            shape=(self.hidden_size, self.rank * self.core_size),
                            initializer=self.kernel_initializer)
            for name in self.modality_names
        ]
        self.add_output(self.core_size)

    def fuse(self, inputs, presence, training=None):
        hidden = self.project(inputs, self.projections, presence, ops.tanh)
        q, v = [ops.reshape(ops.matmul(h, kernel), (-1, self.rank, self.core_size))
                for h, kernel in zip(hidden, self.core_factors)]
        return self.project_output(ops.sum(q * v, axis=1)), {}

    def get_config(self):
        config = super().get_config()
        config.update(rank=self.rank)
        return config


POS_NORMS = ("before_cat", "after_cat")


@register("block")
class BLOCK(BimodalFusion):
    """BLOCK: block-superdiagonal tensor fusion (Ben-younes, Cadene, Thome, Cord, 2019).

    The bilinear tensor is a sum of `chunks` Tucker blocks (a block-term
    decomposition). Each modality is projected linearly to `hidden_size`
    features, `x̃_m = x_m W_m + b_m`, split into `chunks` chunks of size
    `L = hidden_size / chunks`; chunk c's core has mode-3 slices of rank
    ≤ `rank = R`: `z_c = Σ_r (x̃_1,c M_{c,r}) ∘ (x̃_2,c N_{c,r})`. Each `z_c`
    gets signed sqrt + L2 normalization before concatenation
    (`pos_norm="before_cat"`, the paper's default) or the concatenation gets
    it as a whole (`"after_cat"`); then `y = [z_1; ...; z_C] W_o + b_o`.
    Takes exactly 2 vectors `(batch, d_m)`. Parameters:
    `hidden_size · (d_1 + d_2) + 2 R · hidden_size · L + hidden_size · units`
    (+ biases). Defaults (`hidden_size=1600, chunks=20, rank=15`) are those of
    the authors' released implementation.

    Missing modalities: an absent modality's `x̃_m` is replaced by ones (see
    the module docstring).

    Args:
        units: output size.
        hidden_size: size of the projections; a multiple of `chunks`.
        chunks: number of blocks `C`.
        rank: `R`, the rank of each block's core slices.
        pos_norm: `"before_cat"` or `"after_cat"`.
        use_bias, kernel_initializer, modalities: see `ProductFusion`.

    Call arguments:
        inputs: list or dict of two `(batch, d_m)` tensors.
        presence: optional `(batch, 2)` 0/1 mask.
        return_weights: if True, also returns an empty dict (no learned weighting).

    Returns:
        `(batch, units)`.

    Example:

    >>> import numpy as np
    >>> layer = BLOCK(units=4, hidden_size=12, chunks=3, rank=2)
    >>> tuple(layer([np.ones((2, 3)), np.ones((2, 7))]).shape)
    (2, 4)
    """

    def __init__(self, units, hidden_size=1600, chunks=20, rank=15, pos_norm="before_cat",
                 **kwargs):
        super().__init__(units, hidden_size, **kwargs)
        if pos_norm not in POS_NORMS:
            raise ValueError(f"BLOCK: pos_norm must be one of {POS_NORMS}; received '{pos_norm}'.")
        if hidden_size % chunks:
            raise ValueError(
                f"BLOCK: hidden_size ({hidden_size}) must be a multiple of chunks ({chunks})."
            )
        self.chunks = chunks
        self.rank = rank
        self.pos_norm = pos_norm

    def build_fusion(self, shapes):
        size = self.hidden_size // self.chunks
        self.projections = self.add_projections(shapes, self.hidden_size)
        self.block_factors = [
            self.add_weight(name=f"block_kernel_{name}",
                            shape=(self.chunks, size, self.rank * size),
                            initializer=self.kernel_initializer)
            for name in self.modality_names
        ]
        self.add_output(self.hidden_size)

    def fuse(self, inputs, presence, training=None):
        size = self.hidden_size // self.chunks
        hidden = self.project(inputs, self.projections, presence)
        q, v = [
            ops.reshape(
                ops.einsum("bcl,clk->bck", ops.reshape(h, (-1, self.chunks, size)), kernel),
                (-1, self.chunks, self.rank, size),
            )
            for h, kernel in zip(hidden, self.block_factors)
        ]
        z = ops.sum(q * v, axis=2)  # (batch, chunks, size)
        if self.pos_norm == "before_cat":
            z = power_l2(z)
        z = ops.reshape(z, (-1, self.hidden_size))
        if self.pos_norm == "after_cat":
            z = power_l2(z)
        return self.project_output(z), {}

    def get_config(self):
        config = super().get_config()
        config.update(chunks=self.chunks, rank=self.rank, pos_norm=self.pos_norm)
        return config
