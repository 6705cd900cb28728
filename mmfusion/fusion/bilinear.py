"""Bilinear and higher-order pooling: MCB, MLB, MFB, MFH, MUTAN, Tucker, BLOCK.

Missing modalities. MLB, MFB and MFH multiply the modalities' projections
elementwise: an absent modality's projection is replaced by ones, the
identity of that product, so the output is the present modalities' own
terms. MCB multiplies count sketches by circular convolution: an absent
modality's sketch is replaced by the convolution's identity, the unit impulse
`[1, 0, ..., 0]` (all-ones spectrum). Tucker, MUTAN and BLOCK contract the
projections with a core tensor, for which ones are no identity: there an
absent modality's projection is the *normalized* all-ones vector
`1 / sqrt(hidden_size)` (unit norm), so the core is averaged over that
modality's mode at the scale of a unit-norm projection (plain ones, of norm
`sqrt(hidden_size)`, put absent rows on another scale than present ones). A
row with no present modality gives a finite, input-independent output.
Absent rows are zeroed with `ops.where` before any arithmetic, so NaN or Inf
placeholders never reach outputs or gradients.

Mixed precision: the FFT of MCB and every signed square root + L2
normalization run in float32 when the compute dtype is float16 or bfloat16.
"""

import math
import random

import keras
import numpy as np
from keras import ops

from mmfusion.fusion.base import FusionLayer, constructor_config, mask_inputs
from mmfusion.fusion.registry import register

__all__ = ["BLOCK", "MCB", "MFB", "MFH", "MLB", "MUTAN", "Tucker", "chunk_sizes",
           "l2_normalize", "signed_sqrt"]

HALF = ("float16", "bfloat16")


def _float32_if_half(x):
    """`(x in float32 if x is half precision, original dtype)`."""
    dtype = keras.backend.standardize_dtype(x.dtype)
    return (ops.cast(x, "float32") if dtype in HALF else x), dtype


def signed_sqrt(x, epsilon=0.0):
    """Signed square root `sign(x) · sqrt(|x|)`, the power normalization.

    With `epsilon = 0` (the default) the value is exact everywhere; at
    exactly 0, where the derivative is infinite, the gradient is defined as 1
    (computed as `x / sqrt(|x|)` with `|x|` replaced by 1 at 0), so exact
    zeros (e.g. bias-free projections of zero inputs) give finite gradients.
    With `epsilon > 0` it is the smoothed `sign(x) (sqrt(|x| + ε) − sqrt(ε))`:
    slope `1 / (2 sqrt(ε))` at 0, within `sqrt(ε)` of the exact root.

    Args:
        x: tensor.
        epsilon: smoothing; 0 for the exact root.

    Returns:
        A tensor like `x`.

    Example:

    >>> np.round(ops.convert_to_numpy(signed_sqrt(np.array([-4.0, 0.0, 9.0]))), 6)
    array([-2.,  0.,  3.])
    >>> np.round(ops.convert_to_numpy(signed_sqrt(np.array([9.0]), epsilon=1e-2)), 3)
    array([2.902])
    """
    x = ops.convert_to_tensor(x)
    if epsilon:
        return x / (ops.sqrt(ops.abs(x) + epsilon) + math.sqrt(epsilon))
    magnitude = ops.abs(x)
    return x * ops.rsqrt(ops.where(magnitude > 0, magnitude, ops.ones_like(magnitude)))


def l2_normalize(x, axis=-1):
    """`x / ||x||` along `axis`; an all-zero vector stays zero (finite gradient).

    The squared norm is floored at `keras.config.epsilon()²` and, for
    float16/bfloat16 inputs, computed in float32 (a float16 sum of squares
    overflows above 65504, and the floor would round to 0).

    Example:

    >>> np.round(ops.convert_to_numpy(l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))), 6)
    array([[0.6, 0.8],
           [0. , 0. ]])
    """
    x, dtype = _float32_if_half(ops.convert_to_tensor(x))
    squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
    floor = ops.cast(keras.config.epsilon() ** 2, x.dtype)
    return ops.cast(x * ops.rsqrt(ops.maximum(squared, floor)), dtype)


def power_l2(x, power_norm=True, l2_norm=True, epsilon=0.0):
    """The normalization of MCB, MFB, MFH and BLOCK: signed sqrt, then L2
    (in float32 for half-precision inputs)."""
    x, dtype = _float32_if_half(x)
    if power_norm:
        x = signed_sqrt(x, epsilon)
    if l2_norm:
        x = l2_normalize(x)
    return ops.cast(x, dtype)


def fill_absent(x, presence, i, fill):
    """`x` where modality `i` is present, `fill` (broadcast) where it is absent."""
    if presence is None:
        return x
    present = presence[:, i] > 0
    for _ in range(len(x.shape) - 1):
        present = ops.expand_dims(present, -1)
    return ops.where(present, x, ops.cast(fill, x.dtype))


def elementwise_product(tensors):
    """`t_1 ∘ t_2 ∘ ... ∘ t_N`."""
    product = tensors[0]
    for t in tensors[1:]:
        product = product * t
    return product


def split_last(x, *sizes):
    """Reshapes `(batch, Π sizes)` to `(batch, *sizes)` (the batch size taken
    from `x`, so empty batches work)."""
    return ops.reshape(x, (ops.shape(x)[0],) + tuple(sizes))


def sum_pool(x, factor):
    """Sums consecutive groups of `factor` features: `(batch, k·o) -> (batch, o)`."""
    return ops.sum(split_last(x, x.shape[-1] // factor, factor), axis=-1)


def chunk_sizes(size, chunks):
    """BLOCK's split of `size` features into `chunks` chunks: `ceil(size /
    chunks)` features each and the remainder in the last, or, where that
    leaves the last chunk empty, one fewer in the last chunks (the split of
    the authors' released implementation, so their weights map one to one).

    Example:

    >>> chunk_sizes(1600, 20)[:2], chunk_sizes(1600, 18)[-2:], chunk_sizes(9, 4)
    ([80, 80], [89, 87], [3, 2, 2, 2])
    """
    if not 0 < chunks <= size:
        raise ValueError(f"chunks must be in [1, {size}] to split {size} features; "
                         f"received chunks={chunks}.")
    largest = -(-size // chunks)
    sizes = [largest] * chunks
    sizes[-1] -= largest * chunks - size
    if sizes[-1] <= 0:
        short = largest * chunks - size
        sizes = [largest] * (chunks - short) + [largest - 1] * short
    return sizes


class ProductFusion(FusionLayer):
    """Shared parts of the layers here: per-modality projections (zeroed
    inputs for absent modalities, a fill value for their projections),
    dropout sub-layers and the optional output projection. Not registered.

    Args:
        units: output size (see each subclass).
        use_bias: whether the projections and the output projection have biases.
        epsilon: smoothing of the signed square root (0: exact, see `signed_sqrt`).
        kernel_initializer: initializer of all kernels (a fresh copy per weight).
        modalities: see `FusionLayer`.
    """

    def __init__(self, units, use_bias=True, epsilon=0.0, kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.use_bias = use_bias
        self.epsilon = epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def make_dropout(self, rate, name):
        """A `Dropout(rate)` sub-layer with the layer's dtype policy, or None for rate 0."""
        return keras.layers.Dropout(rate, name=name, dtype=self.dtype_policy) if rate else None

    @staticmethod
    def apply(sublayer, x, training):
        """`sublayer(x, training)`, or `x` if there is no sub-layer."""
        return x if sublayer is None else sublayer(x, training=training)

    def add_bias(self, name, size):
        return self.add_weight(name=name, shape=(size,), initializer="zeros")

    def add_projections(self, shapes, size, tag=""):
        """One `(kernel, bias or None)` per modality, mapping `d_m -> size`."""
        return [
            (self.add_kernel(f"kernel{tag}_{name}", (s[-1], size)),
             self.add_bias(f"bias{tag}_{name}", size) if self.use_bias else None)
            for name, s in zip(self.modality_names, shapes)
        ]

    def project(self, inputs, projections, presence, activation=None, fill=1.0,
                dropout=None, training=None):
        """`dropout(act(x_m K_m + b_m))` per modality; `fill` for absent modalities
        (whose inputs are zeroed first, so placeholders cannot reach gradients)."""
        outputs = []
        for i, (x, (kernel, bias)) in enumerate(zip(mask_inputs(inputs, presence),
                                                     projections)):
            h = ops.matmul(x, kernel)
            if bias is not None:
                h = h + bias
            if activation is not None:
                h = activation(h)
            outputs.append(fill_absent(self.apply(dropout, h, training), presence, i, fill))
        return outputs

    def get_config(self):
        return constructor_config(self, super().get_config(),
                                  ("units", "use_bias", "epsilon", "kernel_initializer"))


@register("mcb")
class MCB(ProductFusion):
    """Multimodal Compact Bilinear pooling (Fukui, Park, Yang, Rohrbach,
    Darrell, Rohrbach, 2016).

    Each modality is count-sketched to `d = sketch_size` dimensions,
    `Ψ(x_m)[h_m(j)] += s_m(j) x_m[j]`, with fixed random indices
    `h_m(j) ∈ [0, d)` and signs `s_m(j) ∈ {−1, 1}`; the sketch of the outer
    product of all modalities is the circular convolution of their sketches,
    computed as `irfft(Π_m rfft(Ψ(x_m)))` (in float32 under half-precision
    policies). Then signed sqrt and L2 normalization (`power_norm`,
    `l2_norm`, the paper's VQA model), and, if `units` is set, a dense
    projection to `units` (the paper's next layer). Takes N ≥ 2 vectors
    `(batch, d_m)`.

    `h_m`, `s_m` are drawn at build time from `seed` and stored as
    non-trainable weights (`sketch_index_<modality>`, `sketch_sign_<modality>`),
    so a saved model keeps them. With `seed=None` each layer draws its own
    seed when created (like an unseeded initializer: different for every
    layer, reproducible under `keras.utils.set_random_seed`) and keeps it in
    its config. The sketch is a segment sum, not a matmul with the dense
    `(d_m, d)` sketch matrix (much faster for large `d_m`).

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
        seed: integer seed of the sketch hashes, or None (drawn per layer).
        use_bias: whether the projection has a bias.
        epsilon: smoothing of the signed square root (0: exact).
        kernel_initializer: initializer of the projection kernel.
        modalities: see `FusionLayer`.

    Call arguments:
        inputs: list or dict of `(batch, d_m)` tensors.
        presence: optional `(batch, N)` 0/1 mask.
        return_weights: if True, also returns an empty dict (no learned weighting).

    Returns:
        `(batch, units)`, or `(batch, sketch_size)` if `units` is None.

    Example:

    >>> layer = MCB(sketch_size=64, l2_norm=False, power_norm=False)
    >>> x = np.zeros((1, 3)); x[0, 1] = 2.0
    >>> y = np.zeros((1, 5)); y[0, 4] = 3.0
    >>> out = ops.convert_to_numpy(layer([x, y]))  # one sketched product 2·3
    >>> round(float(np.abs(out).max()), 4), int(np.count_nonzero(np.abs(out) > 1e-4))
    (6.0, 1)
    """

    def __init__(self, units=None, sketch_size=16000, power_norm=True, l2_norm=True,
                 seed=None, use_bias=True, epsilon=0.0, kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(units, use_bias=use_bias, epsilon=epsilon,
                         kernel_initializer=kernel_initializer, **kwargs)
        self.sketch_size = sketch_size
        self.power_norm = power_norm
        self.l2_norm = l2_norm
        # Python's generator, as Keras draws an unseeded initializer's seed.
        self.seed = random.randint(1, 10 ** 9) if seed is None else seed

    def build_fusion(self, shapes):
        rng = np.random.default_rng(self.seed)
        self.sketches = []
        for name, s in zip(self.modality_names, shapes):
            index = self.add_weight(name=f"sketch_index_{name}", shape=(s[-1],),
                                    dtype="int32", initializer="zeros", trainable=False)
            sign = self.add_weight(name=f"sketch_sign_{name}", shape=(s[-1],),
                                   dtype="float32", initializer="ones", trainable=False)
            index.assign(rng.integers(0, self.sketch_size, size=s[-1]).astype("int32"))
            sign.assign(rng.choice([-1.0, 1.0], size=s[-1]).astype("float32"))
            self.sketches.append((index, sign))
        self.build_output_projection(self.sketch_size, use_bias=self.use_bias)

    def count_sketch(self, x, index, sign):
        """`(batch, d_m) -> (batch, sketch_size)`: a segment sum of the signed features."""
        summed = ops.segment_sum(ops.transpose(x * ops.cast(sign, x.dtype)), index,
                                 num_segments=self.sketch_size)
        return ops.transpose(summed)

    def fuse(self, inputs, presence, training=None):
        impulse = ops.one_hot(0, self.sketch_size, dtype="float32")
        # One extra zero row, dropped at the end: PyTorch's FFT fails on an empty batch.
        spare = ops.zeros((1, self.sketch_size), "float32")
        real = imag = None
        for i, (x, (index, sign)) in enumerate(zip(mask_inputs(inputs, presence),
                                                    self.sketches)):
            sketch = self.count_sketch(ops.cast(x, "float32"), index, sign)
            sketch = ops.concatenate([fill_absent(sketch, presence, i, impulse), spare], axis=0)
            re, im = ops.rfft(sketch)
            if real is None:
                real, imag = re, im
            else:
                real, imag = real * re - imag * im, real * im + imag * re
        z = power_l2(ops.irfft((real, imag), fft_length=self.sketch_size)[:-1],
                     self.power_norm, self.l2_norm, self.epsilon)
        return self.project_output(ops.cast(z, self.compute_dtype)), {}

    def get_config(self):
        return constructor_config(self, super().get_config(),
                                  ("sketch_size", "power_norm", "l2_norm", "seed"))


class DropoutFusion(ProductFusion):
    """A `ProductFusion` with the three dropouts and the `normalize` option of
    the authors' released code (MLB, Tucker, MUTAN, BLOCK). Not registered.

    Args:
        projection_dropout: dropout on each modality's projection (their
            `dropout_input`).
        fusion_dropout: dropout on the fused vector before the output
            projection (their `dropout_pre_lin`).
        output_dropout: dropout on the output (their `dropout_output`).
        normalize: signed sqrt + L2 normalization of the fused vector before
            the output projection (their `normalize`).
        units, use_bias, epsilon, kernel_initializer, modalities: see `ProductFusion`.
    """

    def __init__(self, units, projection_dropout=0.0, fusion_dropout=0.0, output_dropout=0.0,
                 normalize=False, **kwargs):
        super().__init__(units, **kwargs)
        self.projection_dropout = projection_dropout
        self.fusion_dropout = fusion_dropout
        self.output_dropout = output_dropout
        self.normalize = normalize
        self.dropouts = [self.make_dropout(rate, name) for rate, name in (
            (projection_dropout, "projection_dropout"), (fusion_dropout, "fusion_dropout"),
            (output_dropout, "output_dropout"))]

    def project_inputs(self, inputs, presence, activation, fill, training):
        return self.project(inputs, self.projections, presence, activation, fill,
                            self.dropouts[0], training)

    def finish(self, z, training):
        """Normalization, fusion dropout, output projection, output dropout."""
        if self.normalize:
            z = power_l2(z, epsilon=self.epsilon)
        z = self.project_output(self.apply(self.dropouts[1], z, training))
        return self.apply(self.dropouts[2], z, training)

    def get_config(self):
        return constructor_config(self, super().get_config(), (
            "projection_dropout", "fusion_dropout", "output_dropout", "normalize"))


@register("mlb")
class MLB(DropoutFusion):
    """Multimodal Low-rank Bilinear pooling (Kim, On, Lim, Kim, Ha, Zhang, 2017).

    `y = (Π_m tanh(x_m U_m + b_m)) P + b`: each modality projected to a
    `rank`-dimensional joint space, tanh, Hadamard product across all
    modalities, output projection `P`. Takes N ≥ 2 vectors `(batch, d_m)`
    (the paper has two). Parameters: `rank · (Σ_m d_m + units)` (+ biases).
    Defaults follow the paper (tanh, no normalization, no dropout); the
    authors' later fusion library defaults to ReLU projections, which
    `activation="relu"` gives.

    Missing modalities: an absent modality's `tanh(x_m U_m + b_m)` is replaced
    by ones, the identity of the Hadamard product.

    Args:
        units: output size.
        rank: size of the joint (Hadamard) space; the paper's VQA model uses 1200.
        activation: activation of the projections, the paper's tanh.
        projection_dropout, fusion_dropout, output_dropout, normalize: see
            below and `DropoutFusion` (defaults: off, as in the paper).
        use_bias: whether projections and output have biases.
        epsilon: smoothing of the signed square root used by `normalize`.
        kernel_initializer: initializer of all kernels.
        modalities: see `FusionLayer`.

    Call arguments:
        inputs: list or dict of `(batch, d_m)` tensors.
        presence: optional `(batch, N)` 0/1 mask.
        return_weights: if True, also returns an empty dict (no learned weighting).
        training: whether dropout is active.

    Returns:
        `(batch, units)`.

    Example:

    >>> layer = MLB(units=4, rank=16)
    >>> tuple(layer([np.ones((2, 3)), np.ones((2, 5)), np.ones((2, 2))]).shape)
    (2, 4)
    """

    def __init__(self, units, rank=1200, activation="tanh", **kwargs):
        super().__init__(units, **kwargs)
        self.rank = rank
        self.activation = keras.activations.get(activation)

    def build_fusion(self, shapes):
        self.projections = self.add_projections(shapes, self.rank)
        self.build_output_projection(self.rank, use_bias=self.use_bias)

    def fuse(self, inputs, presence, training=None):
        factors = self.project_inputs(inputs, presence, self.activation, 1.0, training)
        return self.finish(elementwise_product(factors), training), {}

    def get_config(self):
        return constructor_config(self, super().get_config(), ("rank", "activation"))


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

    Dropout under TensorFlow with `jit_compile=True` on CPU: drawing the
    random mask is what XLA makes slow (Keras `Dropout` on a `(64, 5000)`
    tensor: 5.6 ms without XLA, 547 ms with it; a mask from one
    `keras.random.uniform` still took 287 ms, `benchmarks/bench_tensor_bilinear.py`),
    so no cheaper formulation was found; this made MFB several times slower
    in `fit` under XLA. Inference is unaffected; for XLA training on CPU,
    `dropout=0` avoids it.

    Missing modalities: an absent modality's projection is replaced by ones
    (see the module docstring).

    Args:
        units: `o`, the output size.
        factor: `k`, the number of factors summed per output feature.
        dropout: dropout rate on the product, before pooling.
        power_norm: apply the signed square root (`signed_sqrt`).
        l2_norm: apply L2 normalization.
        use_bias: whether the projections have biases.
        epsilon: smoothing of the signed square root (0: exact).
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

    >>> layer = MFB(units=4, factor=3)
    >>> out = ops.convert_to_numpy(layer([np.ones((2, 3)), np.ones((2, 5))]))
    >>> out.shape, np.round(np.linalg.norm(out, axis=-1), 4)
    ((2, 4), array([1., 1.], dtype=float32))
    """

    def __init__(self, units=1000, factor=5, dropout=0.1, power_norm=True, l2_norm=True,
                 use_bias=True, epsilon=0.0, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(units, use_bias=use_bias, epsilon=epsilon,
                         kernel_initializer=kernel_initializer, **kwargs)
        self.factor = factor
        self.dropout = dropout
        self.power_norm = power_norm
        self.l2_norm = l2_norm
        self.dropout_layer = self.make_dropout(dropout, "dropout")

    def build_fusion(self, shapes):
        self.projections = self.add_projections(shapes, self.factor * self.units)

    def pool(self, product):
        return power_l2(sum_pool(product, self.factor), self.power_norm, self.l2_norm,
                        self.epsilon)

    def fuse(self, inputs, presence, training=None):
        product = elementwise_product(self.project(inputs, self.projections, presence))
        return self.pool(self.apply(self.dropout_layer, product, training)), {}

    def get_config(self):
        return constructor_config(self, super().get_config(),
                                  ("factor", "dropout", "power_norm", "l2_norm"))


@register("mfh")
class MFH(MFB):
    """Multimodal Factorized High-order pooling (Yu, Yu, Xiang, Fan, Tao, 2018).

    `order = p` cascaded MFB blocks, each with its own projections: block i's
    expanded product is `e_i = dropout(Π_m (x_m U_m^(i) + b_m^(i)) ∘ e_{i−1})`
    (`e_0 = 1`), so block i multiplies i projections of each modality (a
    polynomial of degree i in each); `z_i = L2(signed_sqrt(SumPool(e_i, k)))`,
    and the output is the concatenation `[z_1; ...; z_p]`, of size
    **`p · units`**. Takes N ≥ 2 vectors `(batch, d_m)`. Defaults follow the
    paper: `p = 2`, `k = 5`, `o = 1000`, dropout 0.1 (see `MFB` on dropout
    under XLA). Under `mixed_float16` the block-`p` product of `2p`
    projections (for two modalities) must stay below float16's 65504;
    `mixed_bfloat16` has float32's range.

    Missing modalities: an absent modality's projection in every block is
    replaced by ones (see the module docstring).

    Args:
        units: `o`, the output size of each block.
        order: `p`, the number of cascaded blocks.
        factor, dropout, power_norm, l2_norm, use_bias, epsilon,
        kernel_initializer, modalities: as in `MFB`.

    Call arguments:
        inputs: list or dict of `(batch, d_m)` tensors.
        presence: optional `(batch, N)` 0/1 mask.
        return_weights: if True, also returns an empty dict (no learned weighting).
        training: whether dropout is active.

    Returns:
        `(batch, order · units)`.

    Example:

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
        expanded, outputs = None, []
        for projections in self.blocks:
            product = elementwise_product(self.project(inputs, projections, presence))
            expanded = product if expanded is None else expanded * product
            expanded = self.apply(self.dropout_layer, expanded, training)
            outputs.append(self.pool(expanded))
        return ops.concatenate(outputs, axis=-1), {}

    def get_config(self):
        return constructor_config(self, super().get_config(), ("order",))


class BimodalFusion(DropoutFusion):
    """Base of the two-modality Tucker-family layers (Tucker, MUTAN, BLOCK).

    Args:
        units: output size.
        hidden_size: size of each modality's projection (`t_q = t_v`).
        activation: activation of the projections.
        merge_bias: whether the merge (core) maps have biases, as in the
            authors' released code; the papers' equations have none.
        merge_bias_initializer: initializer of the merge biases (a fresh
            copy per bias).
        projection_dropout, fusion_dropout, output_dropout, normalize,
        use_bias, epsilon, kernel_initializer, modalities: see `DropoutFusion`.
    """

    min_modalities = max_modalities = 2

    def __init__(self, units, hidden_size, activation=None, merge_bias=False,
                 merge_bias_initializer="zeros", **kwargs):
        super().__init__(units, **kwargs)
        self.hidden_size = hidden_size
        self.activation = keras.activations.get(activation)
        self.merge_bias = merge_bias
        self.merge_bias_initializer = keras.initializers.get(merge_bias_initializer)

    def add_merge_bias(self, name, size):
        """A merge bias of `size` features, or None without `merge_bias`."""
        if not self.merge_bias:
            return None
        return self.add_kernel(name, (size,), self.merge_bias_initializer)

    def project_hidden(self, inputs, presence, training):
        """Both modalities' hidden vectors; an absent one is `1 / sqrt(hidden_size)`."""
        return self.project_inputs(inputs, presence, self.activation,
                                   1.0 / math.sqrt(self.hidden_size), training)

    def get_config(self):
        return constructor_config(self, super().get_config(),
                                  ("hidden_size", "activation", "merge_bias",
                                   "merge_bias_initializer"))


@register("tucker")
class Tucker(BimodalFusion):
    """Tucker fusion with a full core (Ben-younes, Cadene, Cord, Thome, 2017).

    The bilinear map `y = T ×_1 x_1 ×_2 x_2` with `T` Tucker-decomposed:
    `x̃_m = tanh(x_m W_m + b_m)` (size `hidden_size`),
    `z[k] = Σ_ij T_c[i, j, k] x̃_1[i] x̃_2[j]` (+ `b_c[k]` if `merge_bias`)
    with an unconstrained core `T_c` of shape
    `(hidden_size, hidden_size, core_size)`, `z` normalized (signed square
    root, then L2; `normalize=True`), and `y = z W_o + b_o`. Takes exactly 2
    vectors `(batch, d_m)`. Parameters:
    `hidden_size · (d_1 + d_2) + hidden_size² · core_size + core_size · units`
    (+ biases); the defaults (64, 64) keep the core at 262k entries.
    Defaults follow the paper (tanh projections, no merge bias) except
    `normalize`: the paper's `z` is not normalized (`normalize=False` gives
    its equations). Trained end to end from fresh branches with Adam at
    2e-3, the unnormalized product drove both branches' ReLU embeddings
    dead within the first epoch (on `av_digits`, image CNN × audio CNN:
    audio 50 % → 2 % active, image 47 % → 5 %; concatenation keeps 20 % and
    36 %) and accuracy stayed far behind concatenation; the normalized `z`
    is scale-free, which removed that pull toward zero (see "Choosing a
    fusion method" in the README for the measured accuracies). The
    authors' released fusion code uses linear projections
    (`activation=None`), a core bias (`merge_bias=True`) and
    `core_size = hidden_size`.

    Missing modalities: an absent modality's `x̃_m` is `1 / sqrt(hidden_size)`
    (unit norm), i.e. the core averaged over that modality's mode (see the
    module docstring). Tucker has no unimodal term: each modality reaches
    the output only through its product with the other, and trained with
    `ModalityDropout` the rows with one modality absent stayed at chance on
    `av_digits`; use `MUTAN` (whose merge biases are unimodal terms) or
    `TFN` where modalities go missing.

    Args:
        units: output size.
        hidden_size: `t_1 = t_2`, size of the projections.
        core_size: `t_o`, the core's output size.
        activation: activation of the projections (the paper's tanh).
        normalize: signed sqrt + L2 normalization of `z` (False: the paper's equations).
        merge_bias, merge_bias_initializer, projection_dropout, fusion_dropout,
        output_dropout, use_bias, epsilon, kernel_initializer, modalities: see
        `BimodalFusion` and `DropoutFusion`.

    Call arguments:
        inputs: list or dict of two `(batch, d_m)` tensors.
        presence: optional `(batch, 2)` 0/1 mask.
        return_weights: if True, also returns an empty dict (no learned weighting).
        training: whether dropout is active.

    Returns:
        `(batch, units)`.

    Example:

    >>> layer = Tucker(units=4, hidden_size=6, core_size=5)
    >>> tuple(layer([np.ones((2, 3)), np.ones((2, 7))]).shape)
    (2, 4)
    >>> tuple(layer.core.shape)
    (6, 6, 5)
    """

    def __init__(self, units, hidden_size=64, core_size=64, activation="tanh", normalize=True,
                 **kwargs):
        super().__init__(units, hidden_size, activation=activation, normalize=normalize,
                         **kwargs)
        self.core_size = core_size

    def build_fusion(self, shapes):
        self.projections = self.add_projections(shapes, self.hidden_size)
        self.core = self.add_kernel("core", (self.hidden_size, self.hidden_size, self.core_size))
        self.core_bias = self.add_merge_bias("core_bias", self.core_size)
        self.build_output_projection(self.core_size, use_bias=self.use_bias)

    def fuse(self, inputs, presence, training=None):
        q, v = self.project_hidden(inputs, presence, training)
        z = ops.einsum("bj,bjk->bk", v, ops.einsum("bi,ijk->bjk", q, self.core))
        if self.core_bias is not None:
            z = z + self.core_bias
        return self.finish(z, training), {}

    def get_config(self):
        return constructor_config(self, super().get_config(), ("core_size",))


@register("mutan")
class MUTAN(Tucker):
    """MUTAN: Tucker fusion with a rank-constrained core (Ben-younes, Cadene,
    Cord, Thome, 2017).

    As `Tucker`, but each core slice `T_c[:, :, k]` has rank ≤ `rank = R`:
    `z = Σ_{r=1}^{R} (x̃_1 M_r + a_r) ∘ (x̃_2 N_r + c_r)` with `M_r, N_r` of
    shape `(hidden_size, core_size)`, i.e. `T_c[i, j, k] = Σ_r M_r[i, k]
    N_r[j, k]`, plus the merge biases `a_r, c_r` (`merge_bias=True`, as in the
    authors' released code); then `z` is normalized (signed square root and
    L2, `normalize=True`) and `y = z W_o + b_o`. Takes exactly 2 vectors
    `(batch, d_m)`. Parameters: `hidden_size · (d_1 + d_2) +
    2 R · hidden_size · core_size + core_size · units` (+ biases). The
    defaults (`hidden_size=310`, `core_size=510`, `rank=10`, tanh
    projections) are VQA-scale sizes from the paper's equations;
    `merge_bias=False, normalize=False` gives the equations themselves, and
    the authors' fusion code has linear projections (`activation=None`),
    merge biases and `core_size = hidden_size`.

    Why the defaults have merge biases and normalization. The merge biases
    make `z` hold, besides the bilinear term, the unimodal terms
    `a_r ∘ (x̃_2 N_r)` and `c_r ∘ (x̃_1 M_r)`; they start uniform in
    [-1, 1] (`merge_bias_initializer`, standard deviation 0.58), larger
    than the projected factors (standard deviations 0.03 for the image and
    0.25 for the audio factors of `av_digits` at initialization), so each
    modality has its own path to the output from the first step. Without them a modality's gradient is
    gated by the other modality's still random factor. Trained end to end
    from fresh branches with Adam at 2e-3 on `av_digits` (image CNN × audio
    CNN, `units=64`), the paper's form drove both branches' ReLU embeddings
    dead within the first epoch (audio 50 % → 2 % active, image 47 % → 5 %)
    and trained with `ModalityDropout(0.5)` its audio-only rows stayed at
    chance (0.10); normalization alone kept the branches alive but not the
    audio-only rows, merge biases without normalization did neither, and
    both together matched concatenation (accuracies in "Choosing a fusion
    method" in the README).

    Missing modalities: as `Tucker` (the absent `x̃_m` is `1 / sqrt(hidden_size)`),
    so with merge biases an absent modality leaves the present one's
    unimodal term plus a constant.

    Args:
        units: output size.
        hidden_size: `t_1 = t_2`, size of the projections.
        core_size: `t_o`, size of `z`.
        rank: `R`, the rank of each core slice.
        merge_bias: whether the factors have the merge biases `a_r, c_r`.
        normalize: signed sqrt + L2 normalization of `z`.
        merge_bias_initializer: initializer of the merge biases (default:
            uniform in [-1, 1]).
        activation, projection_dropout, fusion_dropout, output_dropout,
        use_bias, epsilon, kernel_initializer, modalities: see `Tucker`.

    Call arguments:
        inputs: list or dict of two `(batch, d_m)` tensors.
        presence: optional `(batch, 2)` 0/1 mask.
        return_weights: if True, also returns an empty dict (no learned weighting).
        training: whether dropout is active.

    Returns:
        `(batch, units)`.

    Example:

    >>> layer = MUTAN(units=4, hidden_size=6, core_size=5, rank=3)
    >>> tuple(layer([np.ones((2, 3)), np.ones((2, 7))]).shape)
    (2, 4)
    """

    def __init__(self, units, hidden_size=310, core_size=510, rank=10, merge_bias=True,
                 normalize=True, merge_bias_initializer=None, **kwargs):
        if merge_bias_initializer is None:
            merge_bias_initializer = keras.initializers.RandomUniform(-1.0, 1.0)
        super().__init__(units, hidden_size, core_size, merge_bias=merge_bias,
                         normalize=normalize, merge_bias_initializer=merge_bias_initializer,
                         **kwargs)
        self.rank = rank

    def build_fusion(self, shapes):
        self.projections = self.add_projections(shapes, self.hidden_size)
        size = self.rank * self.core_size
        self.merges = [
            (self.add_kernel(f"core_factor_{name}", (self.hidden_size, size)),
             self.add_merge_bias(f"core_factor_bias_{name}", size))
            for name in self.modality_names
        ]
        self.build_output_projection(self.core_size, use_bias=self.use_bias)

    def fuse(self, inputs, presence, training=None):
        factors = []
        for h, (kernel, bias) in zip(self.project_hidden(inputs, presence, training),
                                     self.merges):
            f = ops.matmul(h, kernel)
            factors.append(f if bias is None else f + bias)
        z = ops.sum(split_last(factors[0] * factors[1], self.rank, self.core_size), axis=1)
        return self.finish(z, training), {}

    def get_config(self):
        return constructor_config(self, super().get_config(), ("rank",))


POS_NORMS = ("before_cat", "after_cat")


@register("block")
class BLOCK(BimodalFusion):
    """BLOCK: block-superdiagonal tensor fusion (Ben-younes, Cadene, Thome, Cord, 2019).

    The bilinear tensor is a sum of `chunks` Tucker blocks (a block-term
    decomposition). Each modality is projected linearly to `hidden_size`
    features, `x̃_m = x_m W_m + b_m`, split into `chunks` chunks
    (`chunk_sizes`: equal sizes `L_c` when `chunks` divides `hidden_size`,
    else the authors' uneven split); chunk c's core has mode-3 slices of rank
    ≤ `rank = R`: `z_c = Σ_r (x̃_1,c M_{c,r}) ∘ (x̃_2,c N_{c,r})` (with
    `merge_bias`, each factor gets a bias, as in the authors' code). Each
    `z_c` gets signed sqrt + L2 normalization before concatenation
    (`pos_norm="before_cat"`, the paper's default) or the concatenation gets
    it as a whole (`"after_cat"`); then `y = [z_1; ...; z_C] W_o + b_o`.
    Takes exactly 2 vectors `(batch, d_m)`. Parameters:
    `hidden_size · (d_1 + d_2) + 2 R · Σ_c L_c² + hidden_size · units`
    (+ biases). Defaults (`hidden_size=1600, chunks=20, rank=15`) are those of
    the authors' released implementation; their VQA model uses `chunks=18`.

    Missing modalities: an absent modality's `x̃_m` is `1 / sqrt(hidden_size)`
    (see the module docstring).

    Args:
        units: output size.
        hidden_size: size of the projections.
        chunks: number of blocks `C`.
        rank: `R`, the rank of each block's core slices.
        pos_norm: `"before_cat"` or `"after_cat"`.
        activation: activation of the projections (linear, as in the paper).
        merge_bias, projection_dropout, fusion_dropout, output_dropout,
        use_bias, epsilon, kernel_initializer, modalities: see
        `BimodalFusion` and `DropoutFusion`.
        normalize: must be False (BLOCK always normalizes, see `pos_norm`).

    Call arguments:
        inputs: list or dict of two `(batch, d_m)` tensors.
        presence: optional `(batch, 2)` 0/1 mask.
        return_weights: if True, also returns an empty dict (no learned weighting).
        training: whether dropout is active.

    Returns:
        `(batch, units)`.

    Example:

    >>> layer = BLOCK(units=4, hidden_size=12, chunks=3, rank=2)
    >>> tuple(layer([np.ones((2, 3)), np.ones((2, 7))]).shape)
    (2, 4)
    >>> [tuple(k.shape) for k, _ in layer.merges[0]]  # (chunks, L, R·L) per group
    [(3, 4, 8)]
    >>> BLOCK(units=4, hidden_size=1600, chunks=18).sizes[-2:]
    [89, 87]
    """

    def __init__(self, units, hidden_size=1600, chunks=20, rank=15, pos_norm="before_cat",
                 activation=None, normalize=False, **kwargs):
        super().__init__(units, hidden_size, activation=activation, **kwargs)
        if normalize:
            raise ValueError("BLOCK: normalize must be False; BLOCK always normalizes "
                             "(signed sqrt + L2, placed by pos_norm).")
        if pos_norm not in POS_NORMS:
            raise ValueError(f"BLOCK: pos_norm must be one of {POS_NORMS}; received '{pos_norm}'.")
        try:
            self.sizes = chunk_sizes(hidden_size, chunks)
        except ValueError as error:
            raise ValueError(f"BLOCK: {error}") from None
        self.chunks = chunks
        self.rank = rank
        self.pos_norm = pos_norm

    @property
    def groups(self):
        """`[(count, size)]`: runs of equal-size chunks, each computed as one batch."""
        groups = []
        for size in self.sizes:
            if groups and groups[-1][1] == size:
                groups[-1][0] += 1
            else:
                groups.append([1, size])
        return [tuple(g) for g in groups]

    def build_fusion(self, shapes):
        self.projections = self.add_projections(shapes, self.hidden_size)
        self.merges = []
        for name in self.modality_names:
            merges = []
            for g, (count, size) in enumerate(self.groups):
                tag = "" if g == 0 else f"_{g}"
                kernel = self.add_kernel(f"block_kernel{tag}_{name}",
                                         (count, size, self.rank * size))
                bias = self.add_weight(name=f"block_bias{tag}_{name}",
                                       shape=(count, self.rank * size),
                                       initializer="zeros") if self.merge_bias else None
                merges.append((kernel, bias))
            self.merges.append(merges)
        self.build_output_projection(self.hidden_size, use_bias=self.use_bias)

    def _chunk_factors(self, h, merges):
        """Per group: `(batch, count, rank, size)` factors of one modality."""
        factors, start = [], 0
        for (count, size), (kernel, bias) in zip(self.groups, merges):
            part = split_last(h[:, start:start + count * size], count, size)
            f = ops.einsum("bcl,clk->bck", part, kernel)
            if bias is not None:
                f = f + bias
            factors.append(ops.reshape(f, (ops.shape(f)[0], count, self.rank, size)))
            start += count * size
        return factors

    def fuse(self, inputs, presence, training=None):
        q, v = [self._chunk_factors(h, merges) for h, merges in
                zip(self.project_hidden(inputs, presence, training), self.merges)]
        parts = []
        for (count, size), fq, fv in zip(self.groups, q, v):
            z = ops.sum(fq * fv, axis=2)  # (batch, count, size)
            if self.pos_norm == "before_cat":
                z = power_l2(z, epsilon=self.epsilon)
            parts.append(ops.reshape(z, (ops.shape(z)[0], count * size)))
        z = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
        if self.pos_norm == "after_cat":
            z = power_l2(z, epsilon=self.epsilon)
        return self.finish(z, training), {}

    def get_config(self):
        return constructor_config(self, super().get_config(), ("chunks", "rank", "pos_norm"))
