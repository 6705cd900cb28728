"""Attention fusion: attention pooling over modality vectors, and four
attentions between modality sequences (MulT cross-modal attention, parallel
co-attention, stacked attention, bilinear attention)."""

import keras
from keras import ops

from mmfusion.fusion.base import (
    FusionLayer,
    SequenceFusionLayer,
    constructor_config,
    dense,
    fresh_initializer,
    mask_inputs,
    masked_mean,
    masked_softmax,
    softmax_over_valid,
)
from mmfusion.fusion.registry import register
from mmfusion.keras_internals import MultiHeadAttention

__all__ = [
    "AttentionPooling", "BilinearAttention", "CoAttention", "CrossModalAttention",
    "StackedAttention",
]

class AttentionBlock(keras.layers.Layer):
    """Post-norm transformer block used by the sequence layers (not exported):
    `z = LN(q + MHA(q, kv))`, then `z = LN(z + FFN(z))` if `feed_forward`.

    The attention has no biases (a key bias cancels in the softmax). Keys
    outside `value_mask` get no weight; a query whose keys are all masked
    attends to nothing (zero attended vector, all-zero attention row).
    The owner passes its dtype policy and a fresh initializer; every
    sublayer gets the policy and its own copy of the initializer.
    """

    def __init__(self, units, num_heads, key_dim, feed_forward, dropout,
                 kernel_initializer, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.feed_forward = feed_forward
        self.kernel_initializer = kernel_initializer
        self.attention = MultiHeadAttention(
            num_heads, key_dim, dropout=dropout, use_bias=False,
            kernel_initializer=fresh_initializer(kernel_initializer, "attention"),
            name="attention", dtype=self.dtype_policy,
        )
        self.norm = keras.layers.LayerNormalization(name="norm", dtype=self.dtype_policy)

    def build(self, query_shape, value_shape):
        self.attention.build(query_shape, value_shape)
        self.norm.build(query_shape)
        if self.feed_forward:
            self.hidden = dense(4 * self.units, "ff_hidden", self, query_shape, "relu")
            self.ff_out = dense(self.units, "ff_output", self,
                                query_shape[:-1] + (4 * self.units,))
            self.ff_norm = keras.layers.LayerNormalization(name="ff_norm",
                                                           dtype=self.dtype_policy)
            self.ff_norm.build(query_shape)
        self.built = True

    def call(self, query, value, query_mask, value_mask, training=None):
        mask = ops.logical_and(ops.expand_dims(query_mask > 0, 2),
                               ops.expand_dims(value_mask > 0, 1))
        attended, scores = self.attention(
            query, value, attention_mask=mask, return_attention_scores=True,
            training=training,
        )
        has_key = ops.any(value_mask > 0, axis=1)[:, None, None]
        z = self.norm(query + ops.where(has_key, attended, ops.zeros_like(attended)))
        if self.feed_forward:
            z = self.ff_norm(z + self.ff_out(self.hidden(z)))
        return z, ops.where(ops.expand_dims(mask, 1), scores, ops.zeros_like(scores))


def attention_block(layer, name, query_shape, value_shape, num_heads, key_dim=None,
                    feed_forward=True, dropout=0.0):
    """A built `AttentionBlock` sub-layer of `layer` (size `layer.units`;
    `key_dim` default `max(units // num_heads, 1)`) with `layer`'s dtype
    policy and a fresh copy of its kernel initializer."""
    block = AttentionBlock(
        layer.units, num_heads, key_dim or max(layer.units // num_heads, 1), feed_forward,
        dropout, fresh_initializer(layer.kernel_initializer, name), name=name,
        dtype=layer.dtype_policy,
    )
    block.build(query_shape, value_shape)
    return block


@register("attention_pooling")
class AttentionPooling(FusionLayer):
    """Attention pooling over modality vectors (the attention of Bahdanau et
    al., 2015, as used for pooling by Yang et al., 2016, "Hierarchical
    Attention Networks"), applied across modalities.

    `h_i = tanh(x_i W_i + b_i)`, a score `s_i = h_i · q` against a learned
    query vector `q`, `α = softmax(s)` over the modalities and
    `y = Σ_i α_i h_i`. Takes vectors `(batch, d_i)`; N modalities.

    Missing modalities: the softmax runs over the present modalities only
    (absent ones get α_i = 0); a row with no present modality gives zeros.

    Args:
        units: size of the projections and of the output.
        use_bias: whether the projections have biases.
        kernel_initializer: initializer of the projections and of `q`.
        modalities: see `FusionLayer`.

    Call arguments:
        inputs: list or dict of `(batch, d_i)` tensors.
        presence: optional `(batch, N)` 0/1 mask.
        return_weights: if True, also returns `{"modality_weights": (batch, N)}`,
            the α of each example (the same key as `WeightedSum`).

    Returns:
        `(batch, units)`.

    Example:

    >>> import numpy as np
    >>> layer = AttentionPooling(units=4)
    >>> y, w = layer([np.ones((2, 3)), np.ones((2, 5))], return_weights=True)
    >>> tuple(y.shape), tuple(w["modality_weights"].shape)
    ((2, 4), (2, 2))
    >>> bool(np.allclose(np.sum(w["modality_weights"], axis=1), 1.0))
    True
    """

    def __init__(self, units, use_bias=True, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build_fusion(self, shapes):
        self.projections = [
            dense(self.units, f"projection_{name}", self, shape, "tanh", self.use_bias)
            for name, shape in zip(self.modality_names, shapes)
        ]
        self.query = self.add_kernel("query", (self.units,))

    def fuse(self, inputs, presence, training=None):
        inputs = mask_inputs(inputs, presence)
        hidden = ops.stack([p(x) for p, x in zip(self.projections, inputs)], axis=1)
        alpha = masked_softmax(ops.einsum("bnu,u->bn", hidden, self.query), presence)
        output = ops.sum(hidden * ops.expand_dims(alpha, -1), axis=1)
        return output, {"modality_weights": alpha}

    def get_config(self):
        return constructor_config(self, super().get_config(),
                                  ("units", "use_bias", "kernel_initializer"))


@register("cross_modal_attention")
class CrossModalAttention(SequenceFusionLayer):
    """Cross-modal attention of the Multimodal Transformer (MulT; Tsai et al.,
    2019), for N modality sequences.

    Every modality is projected to `units` (`H_i = X_i W_i + b_i`, MulT's
    kernel-1 convolution). For every ordered pair target i ≠ source j, a
    cross-modal block lets the target sequence attend to the source sequence
    (query = H_i, key = value = H_j) with multi-head attention, then
    residual + layer norm, `Z = LN(H_i + MHA(H_i, H_j))`, and, if
    `feed_forward`, `Z = LN(Z + FFN(Z))` (post-norm; MulT uses pre-norm and
    positional embeddings, omitted here: add positions to the inputs if order
    matters). Each `Z_ij` is mean-pooled over the valid timesteps of i, the
    N(N−1) pooled vectors are concatenated and projected to `units`.
    Takes sequences `(batch, T_i, d_i)`; lengths may differ.

    Missing modalities and padding: keys outside a modality's timestep mask
    get no weight. An absent source contributes a zero attended vector (so
    `Z_ij = LN(H_i)`); an absent target's pooled vectors are zero. A row with
    no present modality gives the output projection's bias.

    Args:
        units: model size (projections, attention output, output).
        num_heads: attention heads.
        key_dim: size per head; default `max(units // num_heads, 1)`.
        feed_forward: whether each block has a position-wise feed-forward
            sublayer (size `4 * units`, ReLU), as in MulT.
        dropout: dropout rate on the attention weights.
        kernel_initializer: initializer of all kernels.
        modalities: see `FusionLayer`.

    Call arguments:
        inputs: list or dict of `(batch, T_i, d_i)` tensors.
        presence: optional `(batch, N)` 0/1 mask.
        element_mask: optional list or dict of `(batch, T_i)` 0/1 padding masks.
        return_weights: if True, also returns
            `{"<target>_attends_<source>": (batch, num_heads, T_target, T_source)}`
            for every pair, zero at masked queries and keys.
        training: whether attention dropout is active.

    Returns:
        `(batch, units)`.

    Example:

    >>> import numpy as np
    >>> layer = CrossModalAttention(units=4, modalities=["audio", "text"])
    >>> y, w = layer([np.ones((2, 3, 5)), np.ones((2, 6, 7))], return_weights=True)
    >>> tuple(y.shape), tuple(w["audio_attends_text"].shape)
    ((2, 4), (2, 2, 3, 6))
    """

    def __init__(self, units, num_heads=2, key_dim=None, feed_forward=True, dropout=0.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.feed_forward = feed_forward
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build_fusion(self, shapes):
        names = self.modality_names
        self.projections = [
            dense(self.units, f"projection_{name}", self, shape)
            for name, shape in zip(names, shapes)
        ]
        self.pairs = [(i, j) for i in range(len(shapes)) for j in range(len(shapes)) if i != j]
        self.blocks = [
            attention_block(self, f"{names[i]}_attends_{names[j]}",
                            shapes[i][:2] + (self.units,), shapes[j][:2] + (self.units,),
                            self.num_heads, self.key_dim, self.feed_forward, self.dropout)
            for i, j in self.pairs
        ]
        self.build_output_projection(len(self.pairs) * self.units)

    def fuse(self, inputs, presence, training=None, element_mask=None):
        masks = self.timestep_masks(inputs, presence, element_mask)
        hidden = [p(x) for p, x in zip(self.projections, self.zero_masked(inputs, masks))]
        pooled, weights = [], {}
        for (i, j), block in zip(self.pairs, self.blocks):
            z, scores = block(hidden[i], hidden[j], masks[i], masks[j], training=training)
            pooled.append(masked_mean(z, masks[i]))
            weights[block.name] = scores
        return self.project_output(ops.concatenate(pooled, axis=-1)), weights

    def get_config(self):
        return constructor_config(self, super().get_config(),
                                  ("units", "num_heads", "key_dim", "feed_forward", "dropout",
                                   "kernel_initializer"))


class BimodalAttention(SequenceFusionLayer):
    """Shared configuration of the bimodal attention layers below: exactly two
    sequences, `units`, `attention_units` (default `units`) and a kernel
    initializer. Modality 0 plays the query (question) role, modality 1 the
    key (image region) role of the papers."""

    min_modalities = max_modalities = 2

    def __init__(self, units, attention_units=None, kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.attention_units = attention_units
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    @property
    def hidden_units(self):
        return self.attention_units or self.units

    def get_config(self):
        return constructor_config(self, super().get_config(),
                                  ("units", "attention_units", "kernel_initializer"))


@register("co_attention")
class CoAttention(BimodalAttention):
    """Parallel co-attention (Lu, Yang, Batra, Parikh, 2016, "Hierarchical
    Question-Image Co-Attention"), for two sequences.

    Both sequences are projected to `units` (the paper assumes a common size
    d): `Q = X_0 P_0 + c_0` `(T_0, d)` (the question) and `V = X_1 P_1 + c_1`
    `(T_1, d)` (the image regions). The affinity matrix is
    `C = tanh(Q W_b Vᵀ)` `(T_0, T_1)`, and with k = `attention_units`
    `H_v = tanh(V W_v + Cᵀ (Q W_q))`, `H_q = tanh(Q W_q + C (V W_v))`,
    `a_v = softmax(H_v w_hv)`, `a_q = softmax(H_q w_hq)`,
    `v̂ = Σ_n a_v,n V_n`, `q̂ = Σ_t a_q,t Q_t`, and the output is the paper's
    `tanh((q̂ + v̂) W_w + b_w)`. Takes sequences `(batch, T_i, d_i)`.

    Missing modalities and padding: masked timesteps are zeroed before the
    affinity (so they add nothing to C) and get no attention weight. An absent
    modality's attended vector is zero; with both absent the output is
    `tanh(b_w)`.

    Args:
        units: common size and output size.
        attention_units: size k of `H_v`, `H_q`; default `units`.
        kernel_initializer: initializer of all kernels.
        modalities: see `FusionLayer`.

    Call arguments:
        inputs: list or dict of two `(batch, T_i, d_i)` tensors.
        presence: optional `(batch, 2)` 0/1 mask.
        element_mask: optional list or dict of `(batch, T_i)` 0/1 padding masks.
        return_weights: if True, also returns `{"affinity": (batch, 1, T_0, T_1),
            "attention_<name_0>": (batch, 1, 1, T_0),
            "attention_<name_1>": (batch, 1, 1, T_1)}`.

    Returns:
        `(batch, units)`.

    Example:

    >>> import numpy as np
    >>> layer = CoAttention(units=4)
    >>> y, w = layer([np.ones((2, 3, 5)), np.ones((2, 6, 7))], return_weights=True)
    >>> tuple(y.shape), tuple(w["affinity"].shape), tuple(w["attention_modality_1"].shape)
    ((2, 4), (2, 1, 3, 6), (2, 1, 1, 6))
    """

    def build_fusion(self, shapes):
        d, k = self.units, self.hidden_units
        self.projections = [
            dense(d, f"projection_{name}", self, shape)
            for name, shape in zip(self.modality_names, shapes)
        ]
        self.affinity_kernel = self.add_kernel("affinity_kernel", (d, d))
        self.query_kernel = self.add_kernel("query_kernel", (d, k))
        self.key_kernel = self.add_kernel("key_kernel", (d, k))
        self.query_score = self.add_kernel("query_score", (k,))
        self.key_score = self.add_kernel("key_score", (k,))
        self.output_dense = dense(d, "output", self, (None, d), "tanh")

    def fuse(self, inputs, presence, training=None, element_mask=None):
        masks = self.timestep_masks(inputs, presence, element_mask)
        q, v = self.zero_masked([p(x) for p, x in zip(self.projections,
                                                     self.zero_masked(inputs, masks))], masks)
        # einsum, not matmul: Keras's matmul gives float32 for float64 on PyTorch.
        affinity = ops.tanh(ops.einsum("bte,ed,bnd->btn", q, self.affinity_kernel, v))
        qw = ops.einsum("btd,dk->btk", q, self.query_kernel)
        vw = ops.einsum("bnd,dk->bnk", v, self.key_kernel)
        h_v = ops.tanh(vw + ops.einsum("btn,btk->bnk", affinity, qw))
        h_q = ops.tanh(qw + ops.einsum("btn,bnk->btk", affinity, vw))
        a_v = softmax_over_valid(ops.einsum("bnk,k->bn", h_v, self.key_score), masks[1])
        a_q = softmax_over_valid(ops.einsum("btk,k->bt", h_q, self.query_score), masks[0])
        attended = ops.einsum("bt,btd->bd", a_q, q) + ops.einsum("bt,btd->bd", a_v, v)
        names = self.modality_names
        return self.output_dense(attended), {
            "affinity": ops.expand_dims(affinity, 1),
            f"attention_{names[0]}": a_q[:, None, None, :],
            f"attention_{names[1]}": a_v[:, None, None, :],
        }


@register("stacked_attention")
class StackedAttention(BimodalAttention):
    """Stacked attention (SAN; Yang, He, Gao, Deng, Smola, 2016), for two
    sequences.

    Modality 0 is the question: it is mean-pooled over its valid timesteps
    (for a question vector, pass it with T = 1) and projected,
    `u_0 = tanh(mean_t(X_0) W_Q + b_Q)`. Modality 1 holds the image regions,
    `V = tanh(X_1 W_I + b_I)` as in the paper. Each of the `hops` attention
    layers computes `h_A = tanh(V W_IA ⊕ (u_{k−1} W_QA + b_A))`,
    `p = softmax(h_A w_P)` over the regions, `ṽ = Σ_n p_n V_n` and
    `u_k = ṽ + u_{k−1}`; the output is `u_K`. (The paper's bias `b_P` is
    dropped: it cancels in the softmax.) Takes sequences `(batch, T_i, d_i)`.

    Missing modalities and padding: padded regions get no attention weight.
    An absent question gives `u_0 = 0` (the attention then depends on the
    regions only); absent regions give `ṽ = 0`, so the output is `u_0`; a row
    with no present modality gives zeros.

    Args:
        units: size of `u` and of the regions (the output size).
        attention_units: size k of `h_A`; default `units`.
        hops: number of attention layers K (the paper uses 2).
        kernel_initializer: initializer of all kernels.
        modalities: see `FusionLayer`.

    Call arguments:
        inputs: list or dict of two `(batch, T_i, d_i)` tensors.
        presence: optional `(batch, 2)` 0/1 mask.
        element_mask: optional list or dict of `(batch, T_i)` 0/1 padding masks.
        return_weights: if True, also returns
            `{"region_attention": (batch, hops, 1, T_1)}`, the `p` of each hop.

    Returns:
        `(batch, units)`.

    Example:

    >>> import numpy as np
    >>> layer = StackedAttention(units=4)
    >>> y, w = layer([np.ones((2, 1, 5)), np.ones((2, 6, 7))], return_weights=True)
    >>> tuple(y.shape), tuple(w["region_attention"].shape)
    ((2, 4), (2, 2, 1, 6))
    """

    def __init__(self, units, attention_units=None, hops=2,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(units, attention_units, kernel_initializer, **kwargs)
        self.hops = hops

    def build_fusion(self, shapes):
        d, k = self.units, self.hidden_units
        self.question = dense(d, "question", self, (None, shapes[0][-1]), "tanh")
        self.regions = dense(d, "regions", self, shapes[1], "tanh")
        self.region_kernels = [self.add_kernel(f"region_kernel_{h}", (d, k)) for h in range(self.hops)]
        self.query_kernels = [self.add_kernel(f"query_kernel_{h}", (d, k)) for h in range(self.hops)]
        self.query_biases = [
            self.add_weight(name=f"query_bias_{h}", shape=(k,), initializer="zeros")
            for h in range(self.hops)
        ]
        self.scores = [self.add_kernel(f"score_{h}", (k,)) for h in range(self.hops)]

    def fuse(self, inputs, presence, training=None, element_mask=None):
        masks = self.timestep_masks(inputs, presence, element_mask)
        has_question = ops.any(masks[0] > 0, axis=1, keepdims=True)
        u = self.question(masked_mean(inputs[0], masks[0]))
        u = ops.where(has_question, u, ops.zeros_like(u))
        v = self.regions(self.zero_masked(inputs[1:], masks[1:])[0])
        maps = []
        for h in range(self.hops):
            query = ops.einsum("bd,dk->bk", u, self.query_kernels[h]) + self.query_biases[h]
            hidden = ops.tanh(ops.einsum("bnd,dk->bnk", v, self.region_kernels[h])
                              + ops.expand_dims(query, 1))
            p = softmax_over_valid(ops.einsum("bnk,k->bn", hidden, self.scores[h]), masks[1])
            u = u + ops.einsum("bt,btd->bd", p, v)
            maps.append(p)
        return u, {"region_attention": ops.stack(maps, axis=1)[:, :, None, :]}

    def get_config(self):
        return constructor_config(self, super().get_config(), ("hops",))


@register("bilinear_attention")
class BilinearAttention(BimodalAttention):
    """Bilinear attention network (BAN; Kim, Jun, Zhang, 2018), for two
    sequences.

    Modality 0 (the question) is projected to `units`, `X = X_0 P + c`;
    modality 1 (the image) is `Y = X_1`. With rank K = `attention_units`,
    glimpse g has the low-rank bilinear attention map
    `A_g = softmax(((1 p_gᵀ) ∘ ReLU(X U')) ReLU(Y V')ᵀ)`, a softmax over all
    `T_0 × T_1` entries jointly; the maps are computed once from the inputs,
    as in the reference implementation. Each glimpse pools a joint vector
    `f_g,k = Σ_ij A_g,ij ReLU(X_i U_g)_k ReLU(Y_j V_g)_k` and adds it back to
    every question row (residual learning across glimpses):
    `X ← X + (f_g P_g + b_g) 1ᵀ`. The output is the sum of the rows of X
    over the valid question timesteps, as in the paper. Takes sequences
    `(batch, T_i, d_i)`.

    Output scale: this is the paper's normalization (and its reference
    code's), but it makes large outputs. The sum over rows scales the output
    with T_0, and every glimpse adds a term bilinear in the rows and the
    image, so the rows grow geometrically with the input scale over the
    glimpses. At initialization (`units=64`, 8 glimpses, T_0 = 10, T_1 = 20,
    64 features, Gaussian inputs) the output RMS is about 7 for inputs of
    standard deviation 1 and 2e3 to 4e3 for standard deviation 3 (about 7
    again after a `LayerNormalization` of each input). The paper's question
    rows are GRU states (bounded): normalize the inputs, or use fewer
    glimpses, when the branch features are large.

    Missing modalities and padding: masked (question, region) pairs get no
    attention weight. An absent image gives `f_g = 0` (rows move by `b_g`
    only); an absent question (or a row with no present modality) gives
    zeros, since the output sums question rows.

    Args:
        units: size of the question rows and of the output.
        attention_units: rank K of the bilinear maps and joint vectors;
            default `units`.
        glimpses: number of glimpses G (the paper uses 8 on VQA 2.0).
        kernel_initializer: initializer of all kernels.
        modalities: see `FusionLayer`.

    Call arguments:
        inputs: list or dict of two `(batch, T_i, d_i)` tensors.
        presence: optional `(batch, 2)` 0/1 mask.
        element_mask: optional list or dict of `(batch, T_i)` 0/1 padding masks.
        return_weights: if True, also returns
            `{"bilinear_attention": (batch, glimpses, T_0, T_1)}`.

    Returns:
        `(batch, units)`.

    Example:

    >>> import numpy as np
    >>> layer = BilinearAttention(units=4, glimpses=2)
    >>> y, w = layer([np.ones((2, 3, 5)), np.ones((2, 6, 7))], return_weights=True)
    >>> tuple(y.shape), tuple(w["bilinear_attention"].shape)
    ((2, 4), (2, 2, 3, 6))
    """

    def __init__(self, units, attention_units=None, glimpses=8,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(units, attention_units, kernel_initializer, **kwargs)
        self.glimpses = glimpses

    def build_fusion(self, shapes):
        d, k = self.units, self.hidden_units
        x_shape, y_shape = shapes[0][:2] + (d,), shapes[1]
        self.question = dense(d, "question", self, shapes[0])
        self.attention_x = dense(k, "attention_x", self, x_shape, "relu")
        self.attention_y = dense(k, "attention_y", self, y_shape, "relu")
        self.glimpse_vectors = self.add_kernel("glimpse_vectors", (self.glimpses, k))
        self.joint_x = [dense(k, f"joint_x_{g}", self, x_shape, "relu")
                        for g in range(self.glimpses)]
        self.joint_y = [dense(k, f"joint_y_{g}", self, y_shape, "relu")
                        for g in range(self.glimpses)]
        self.joint_out = [dense(d, f"joint_output_{g}", self, (None, k))
                          for g in range(self.glimpses)]

    def fuse(self, inputs, presence, training=None, element_mask=None):
        masks = self.timestep_masks(inputs, presence, element_mask)
        inputs = self.zero_masked(inputs, masks)
        x, y = self.question(inputs[0]), inputs[1]
        logits = ops.einsum("bik,gk,bjk->bgij", self.attention_x(x), self.glimpse_vectors,
                            self.attention_y(y))
        pairs = ops.logical_and(ops.expand_dims(masks[0] > 0, 2), ops.expand_dims(masks[1] > 0, 1))
        maps = softmax_over_valid(logits, ops.expand_dims(pairs, 1), axis=(2, 3))
        for g in range(self.glimpses):
            joint = ops.einsum("bik,bij,bjk->bk", self.joint_x[g](x), maps[:, g],
                               self.joint_y[g](y))
            x = x + ops.expand_dims(self.joint_out[g](joint), 1)
        output = ops.sum(self.zero_masked([x], masks[:1])[0], axis=1)
        return output, {"bilinear_attention": maps}

    def get_config(self):
        return constructor_config(self, super().get_config(), ("glimpses",))
