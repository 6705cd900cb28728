"""Composes modality branches, fusion layers and a head into one functional model.

Placements (`placement=`):
- `"early"`: every modality's *input* is flattened to a vector (and cast to
  float) and the fusion layer joins them before any branch; an MLP head
  (`head_units`) then plays the role of the shared network.
- `"intermediate"`: each branch runs on its modality and the fusion layer
  joins chosen taps (default: every branch's `"vector"` tap).
- `"late"`: each branch gets its own head producing logits (or regression
  outputs); they are combined by `"average"` (fixed equal weights), by
  `"weighted"` (a learned softmax weighting, inspectable in the
  `late_weighted` layer) or by any fusion layer followed by a dense output.
- multi-point, in the MFAS form: `fusion` is a list of `FusionPoint`s, a chain
  `h_1 = act_1(F_1(taps_1))`, `h_l = act_l(F_l(taps_l + [h_{l-1}]))`. With
  `F_l = concat(units=u)` this is exactly `h_l = act(W [tap_a; tap_b; h_{l-1}])`.

The common cases read as spec objects: `Early(fusion)`, `Late(combine)`,
`FusionPoint(taps, fusion)` (one, or a list for a chain) as `fusion`, and
`Head(kind, num_outputs, units)` as `head`; plain names and the keyword
arguments keep working, and an argument that a spec makes meaningless (e.g.
`fusion_kwargs` with `FusionPoint`s, `taps` with early fusion) is an error.

Taps of rank > 2 given to a vector fusion layer (`input_rank == 2`) are
turned into vectors by `tap_pooling` (`"flatten"`, `"avg"` or `"max"`, see
`mmfusion.branches.common.to_vector`). For sequence fusion layers
(`input_rank == 3`), rank-3 taps go in unchanged, rank-4 feature maps
`(batch, H, W, C)` become sequences `(batch, H*W, C)`, and vector taps are an
error (choose a sequence tap such as a text branch's `lstm_1`).

Padding: a tap with a Keras mask (e.g. every sequence tap of `text_lstm`,
whose `Embedding` has `mask_zero=True`) passes that mask to sequence fusion
layers (`mask=`, one per modality, None for unmasked ones), and becomes a
vector by a masked mean (`"max"`: a masked max) over its real timesteps,
never by flattening padding, so padded positions cannot change the output.
"""

from dataclasses import dataclass, field

import keras
from keras import ops

from mmfusion import fusion as fusion_lib
from mmfusion.branches import VECTOR_TAP, tap_shapes
from mmfusion.branches.common import MaskedPooling, dense_stack, to_vector
from mmfusion.fusion.base import dense
from mmfusion.fusion.dropout import ModalityDropout
from mmfusion import keras_internals
from mmfusion.unimodal import UnimodalHeads, UnimodalLossModel

PLACEMENTS = ("early", "intermediate", "late")
HEADS = ("classification", "regression", "multilabel")
LATE_COMBINERS = ("average", "weighted")
PRESENCE = "presence"
PREVIOUS = "previous"

PRESENCE_FORMS = ("matrix", "dict")
ABSENT = ("zeros", "learned", "imputed")

__all__ = ["Early", "FusionPoint", "Head", "ImputeAbsent", "LearnedAbsence", "Late",
           "MaskedPooling", "PresenceColumns", "StackPresence", "ZeroAbsent",
           "build_fusion_model", "output_layers"]


@dataclass
class FusionPoint:
    """One fusion layer of a (multi-point) fusion chain.

    Attributes:
        taps: dict modality -> tap name (see `mmfusion.branches.tap_shapes`).
        fusion: a registered fusion-layer name or a `FusionLayer` instance.
        activation: activation applied to the layer's output (None: none).
        kwargs: constructor arguments when `fusion` is a name (default
            `units=` is the model's `units`).

    Example:

    A two-layer chain: concatenate a hidden tap of `a` with `b`'s vector,
    then fuse that with `a`'s vector by a GMU:

    >>> from mmfusion.branches import tabular_mlp
    >>> branches = {"a": tabular_mlp(3, units=(8, 4), name="a"),
    ...             "b": tabular_mlp(5, units=(4,), name="b")}
    >>> points = [FusionPoint({"a": "dense_1", "b": "vector"}, "concat", activation="relu"),
    ...           FusionPoint({"a": "vector"}, "gmu", kwargs={"units": 6})]
    >>> model = build_fusion_model(branches, points, units=8)
    >>> [(layer.name, layer.output.shape[-1]) for layer in model.layers
    ...  if layer.name.startswith("fusion_")]
    [('fusion_1_concat', 8), ('fusion_1_activation', 8), ('fusion_2_gmu', 6)]
    """

    taps: dict
    fusion: object = "concat"
    activation: object = None
    kwargs: dict = field(default_factory=dict)


@dataclass
class Early:
    """Early fusion: one fusion layer over the modalities' raw inputs.

    Every input is flattened to a vector and cast to float (sequence fusion
    layers get `(batch, T, d)` inputs as they are), then fused before any
    branch; the head's MLP plays the role of the shared network.

    Attributes:
        fusion: a registered fusion-layer name or a `FusionLayer` instance.
        kwargs: constructor arguments when `fusion` is a name (default
            `units=` is the model's `units`).

    Example:

    >>> model = build_fusion_model({"a": (3,), "b": (2, 2)}, Early("concat"),
    ...                            head=Head(num_outputs=3, units=(8,)), units=None)
    >>> model.get_layer("early_fusion").output.shape
    (None, 7)
    """

    fusion: object = "concat"
    kwargs: dict = field(default_factory=dict)


@dataclass
class Late:
    """Late fusion: every modality gets its own head; their outputs are combined.

    Attributes:
        combine: `"average"` (fixed equal weights), `"weighted"` (a learned
            softmax weighting, in the `late_weighted` layer), or a fusion-layer
            name or instance followed by a dense output layer.
        taps: dict modality -> tap each head reads (default: every branch's
            `"vector"`); modalities left out are not used.
        kwargs: constructor arguments when `combine` is a fusion-layer name.

    Example:

    >>> from mmfusion.branches import tabular_mlp
    >>> branches = {"a": tabular_mlp(3, units=(4,), name="a"),
    ...             "b": tabular_mlp(5, units=(4,), name="b")}
    >>> model = build_fusion_model(branches, Late("weighted"), head=Head(num_outputs=3))
    >>> [l.name for l in model.layers if l.name.endswith("_logits")]
    ['a_head_logits', 'b_head_logits']
    """

    combine: object = "average"
    taps: dict = None
    kwargs: dict = field(default_factory=dict)


@dataclass
class Head:
    """The task head: an MLP then the output layer.

    Attributes:
        kind: `"classification"` (softmax over `num_outputs` classes),
            `"multilabel"` (an independent sigmoid per label) or
            `"regression"` (`num_outputs` linear outputs).
        num_outputs: number of classes, labels or regression targets.
        units: hidden sizes of the MLP (per modality for late fusion).
        dropout: dropout rate in the MLP.

    Example:

    >>> from mmfusion.branches import tabular_mlp
    >>> model = build_fusion_model({"a": tabular_mlp(3, name="a")}, None,
    ...                            head=Head("regression", num_outputs=2, units=()))
    >>> model.output.shape
    (None, 2)
    >>> import numpy as np
    >>> genres = build_fusion_model({"a": tabular_mlp(3, name="a")}, None,
    ...                             head=Head("multilabel", num_outputs=4))
    >>> probabilities = genres.predict({"a": np.ones((2, 3))}, verbose=0)
    >>> probabilities.shape, bool(((probabilities > 0) & (probabilities < 1)).all())
    ((2, 4), True)
    """

    kind: str = "classification"
    num_outputs: int = 2
    units: tuple = (64,)
    dropout: float = 0.0

    def __post_init__(self):
        _check_choice("head", self.kind, HEADS)


@keras.saving.register_keras_serializable(package="mmfusion")
class PresenceColumns(keras.layers.Layer):
    """Selects columns of a `(batch, N)` presence mask and appends columns of ones.

    Used by `build_fusion_model` to give each fusion layer the presence of the
    modalities it fuses (plus "always present" for a previous fusion output).

    Args:
        columns: indices of the columns to keep, in order.
        ones: number of columns of ones appended.

    Example:

    >>> import numpy as np
    >>> PresenceColumns([2, 0], ones=1)(np.array([[1.0, 0.0, 0.0]])).numpy().tolist()
    [[0.0, 1.0, 1.0]]
    """

    def __init__(self, columns, ones=0, **kwargs):
        super().__init__(**kwargs)
        self.columns = [int(c) for c in columns]
        self.ones = int(ones)

    def call(self, presence):
        kept = ops.take(ops.cast(presence, self.compute_dtype), self.columns, axis=1)
        if not self.ones:
            return kept
        ones = ops.ones((ops.shape(presence)[0], self.ones), dtype=kept.dtype)
        return ops.concatenate([kept, ones], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.columns) + self.ones)

    def get_config(self):
        config = super().get_config()
        config.update(columns=self.columns, ones=self.ones)
        return config


@keras.saving.register_keras_serializable(package="mmfusion")
class ZeroAbsent(keras.layers.Layer):
    """Replaces the rows of a modality's input where it is absent by zeros.

    Used by `build_fusion_model` before every branch (and before early
    fusion), so whatever placeholder an absent row holds (NaN, Inf, a stale
    image) never reaches a branch, its BatchNorm statistics or a fusion
    layer: the replacement is an `ops.where`, not a multiplication
    (`NaN * 0` is NaN).

    Args:
        column: the modality's column in the `(batch, N)` presence mask.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: the modality's input `(batch, ...)`, any numeric dtype.
        presence: `(batch, N)` 0/1 presence mask.

    Returns:
        `inputs` with absent rows set to zeros (same shape and dtype).

    Example:

    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0], [np.nan, np.inf]])
    >>> ZeroAbsent(1)(x, presence=np.array([[0.0, 1.0], [1.0, 0.0]])).numpy().tolist()
    [[1.0, 2.0], [0.0, 0.0]]
    """

    def __init__(self, column, **kwargs):
        super().__init__(**kwargs)
        self.column = int(column)

    def call(self, inputs, presence):
        present = ops.take(ops.cast(presence, "float32"), self.column, axis=1) > 0.5
        present = ops.reshape(present, (-1,) + (1,) * (len(inputs.shape) - 1))
        return ops.where(present, inputs, ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape, presence_shape=None):
        return input_shape

    def compute_output_spec(self, inputs, presence):
        return keras.KerasTensor(inputs.shape, dtype=inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(column=self.column)
        return config


@keras.saving.register_keras_serializable(package="mmfusion")
class LearnedAbsence(keras.layers.Layer):
    """Puts a learned placeholder where a modality is absent.

    Used by `build_fusion_model(absent="learned")` on every tap a fusion
    layer (or a late-fusion head) reads: rows where the modality is absent
    get a trained vector (one per tap, shaped like one row of it, starting
    at zeros) in place of the tap, chosen by `ops.where`.

    Args:
        column: the modality's column in the `(batch, N)` presence mask.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: the tap `(batch, ...)`.
        presence: `(batch, N)` 0/1 presence mask.

    Returns:
        `inputs` with absent rows replaced by the placeholder.

    Example:

    >>> import numpy as np
    >>> layer = LearnedAbsence(0)
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> presence = np.array([[1.0], [0.0]])  # the second row lacks the modality
    >>> layer(x, presence=presence).numpy().tolist()  # the placeholder starts at zeros
    [[1.0, 2.0], [0.0, 0.0]]
    >>> _ = layer.placeholder.assign([7.0, 8.0])  # as training would move it
    >>> layer(x, presence=presence).numpy().tolist()
    [[1.0, 2.0], [7.0, 8.0]]
    """

    def __init__(self, column, **kwargs):
        super().__init__(**kwargs)
        self.column = int(column)

    def build(self, inputs_shape, presence_shape=None):
        self.placeholder = self.add_weight(name="placeholder", shape=tuple(inputs_shape[1:]),
                                           initializer=keras.initializers.Zeros())

    def call(self, inputs, presence):
        present = ops.take(ops.cast(presence, "float32"), self.column, axis=1) > 0.5
        present = ops.reshape(present, (-1,) + (1,) * (len(inputs.shape) - 1))
        placeholder = ops.expand_dims(ops.cast(self.placeholder, inputs.dtype), 0)
        return ops.where(present, inputs, placeholder)

    def compute_output_shape(self, inputs_shape, presence_shape=None):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update(column=self.column)
        return config


@keras.saving.register_keras_serializable(package="mmfusion")
class ImputeAbsent(keras.layers.Layer):
    """Reconstructs an absent modality's vector from the present ones, with a
    reconstruction loss (as SMIL, Ma et al., AAAI 2021, reconstructs a missing
    modality's features; without its meta-learning).

    Used by `build_fusion_model(absent="imputed")` on every vector tap a
    fusion layer (or a late-fusion head) reads. An MLP
    `Dense(units, relu) -> Dense(d)` maps the other modalities' taps (each
    zeroed where that modality is absent) to this tap; rows where the
    modality is absent get the imputed vector. In training the layer adds
    `loss_weight * mean squared error` between the imputed and the real tap
    over the rows where the modality is present (`add_loss`). That loss
    trains the MLP only: the real tap and the source taps are constants of
    it, so no branch is pulled toward predicting another (with the sources'
    gradient, end-to-end branches lost 7 points on av_digits even with every
    modality present). The task's gradient still flows through imputed rows
    into the sources.

    Args:
        column: the modality's column in the `(batch, N)` presence mask.
        source_columns: the presence columns of the source taps, in order.
        units: hidden size of the imputation MLP.
        loss_weight: weight λ of the reconstruction loss.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: the tap `(batch, d)`.
        sources: list of the other modalities' taps `(batch, d_j)`.
        presence: `(batch, N)` 0/1 presence mask.
        training: Python bool; the loss is added only in training.

    Returns:
        `(batch, d)`: the tap, imputed in absent rows.

    Example:

    >>> import numpy as np
    >>> layer = ImputeAbsent(0, [1], units=4)
    >>> tap, other = np.ones((2, 3), "float32"), np.ones((2, 2), "float32")
    >>> out = layer(tap, sources=[other], presence=np.array([[1.0, 1.0], [0.0, 1.0]]))
    >>> tuple(out.shape), out.numpy()[0].tolist()  # the present row is kept
    ((2, 3), [1.0, 1.0, 1.0])
    """

    def __init__(self, column, source_columns, units=64, loss_weight=1.0, **kwargs):
        super().__init__(**kwargs)
        self.column = int(column)
        self.source_columns = [int(c) for c in source_columns]
        self.units = int(units)
        self.loss_weight = float(loss_weight)
        self.kernel_initializer = keras.initializers.GlorotUniform()

    def build(self, inputs_shape, sources_shape=None, presence_shape=None):
        width = sum(int(shape[-1]) for shape in sources_shape)
        self.hidden = dense(self.units, "hidden", self, (None, width), activation="relu")
        self.output_dense = dense(int(inputs_shape[-1]), "output", self, (None, self.units))

    def _present(self, presence, column):
        return ops.take(ops.cast(presence, "float32"), [column], axis=1) > 0.5

    def call(self, inputs, sources, presence, training=None):
        zeroed = [ops.where(self._present(presence, c), x, ops.zeros_like(x))
                  for x, c in zip(sources, self.source_columns)]
        joined = ops.concatenate(zeroed, axis=-1)
        imputed = self.output_dense(self.hidden(joined))
        present = self._present(presence, self.column)
        if training:
            reconstructed = self.output_dense(self.hidden(ops.stop_gradient(joined)))
            error = ops.where(present,
                              ops.square(reconstructed - ops.stop_gradient(inputs)), 0.0)
            count = ops.maximum(ops.sum(ops.cast(present, "float32")), 1.0)
            loss = ops.sum(ops.cast(error, "float32")) / (count * ops.shape(inputs)[-1])
            self.add_loss(self.loss_weight * loss)
        return ops.where(present, inputs, imputed)

    def compute_output_shape(self, inputs_shape, sources_shape=None, presence_shape=None):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update(column=self.column, source_columns=self.source_columns, units=self.units,
                      loss_weight=self.loss_weight)
        return config


@keras.saving.register_keras_serializable(package="mmfusion")
class StackPresence(keras.layers.Layer):
    """Stacks per-modality presence columns, given as a dict, into a `(batch, N)` mask.

    Used by `build_fusion_model(presence="dict")`: the model's `"presence"`
    input is then a dict modality -> `(batch,)` 0/1 column, so no column
    order has to be remembered.

    Args:
        modalities: modality names, in the order of the mask's columns.
        **kwargs: standard layer arguments.

    Call arguments:
        inputs: dict modality -> `(batch,)` 0/1 tensor.

    Returns:
        `(batch, N)` float mask, columns in `modalities` order.

    Example:

    >>> import numpy as np
    >>> layer = StackPresence(["image", "text"])
    >>> layer({"text": np.array([1.0, 0.0]), "image": np.array([0.0, 1.0])}).numpy().tolist()
    [[0.0, 1.0], [1.0, 0.0]]
    """

    def __init__(self, modalities, **kwargs):
        super().__init__(**kwargs)
        self.modalities = list(modalities)

    def call(self, inputs):
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise ValueError(f"StackPresence layer '{self.name}': no presence column for "
                             f"modalities {missing}; expected keys {self.modalities}, "
                             f"received {sorted(inputs)}.")
        columns = [ops.reshape(ops.cast(inputs[m], self.compute_dtype), (-1,))
                   for m in self.modalities]
        return ops.stack(columns, axis=1)

    def compute_output_shape(self, input_shape):
        first = input_shape[self.modalities[0]]
        return (first[0], len(self.modalities))

    def get_config(self):
        config = super().get_config()
        config.update(modalities=self.modalities)
        return config


def _check_choice(what, value, choices):
    if value not in choices:
        raise ValueError(f"build_fusion_model: {what} must be one of {choices}; received {value!r}.")


def _branch_presence(modality):
    """Name of the presence input of a branch built with `presence=True`."""
    return f"{modality}_{PRESENCE}"


def _model_input(modality, branch, placement):
    """The named model input of one modality (shape and dtype of its branch)."""
    if isinstance(branch, keras.Model):
        tap_shapes(branch)
        names = sorted(t.name for t in branch.inputs)
        if names not in ([modality], sorted([modality, _branch_presence(modality)])):
            raise ValueError(
                f"build_fusion_model: the branch for modality '{modality}' must have "
                f"one input named '{modality}' (and optionally its presence, "
                f"'{_branch_presence(modality)}'); branch '{branch.name}' has inputs "
                f"{[t.name for t in branch.inputs]}. Build it with name='{modality}'."
            )
        spec = next(t for t in branch.inputs if t.name == modality)
        return keras.Input(shape=spec.shape[1:], dtype=spec.dtype, name=modality)
    if placement == "early" and isinstance(branch, (tuple, list)):
        return keras.Input(shape=tuple(branch), name=modality)
    raise ValueError(
        f"build_fusion_model: the branch for modality '{modality}' must be a branch "
        "model (e.g. from mmfusion.branches)"
        + (" or, for early fusion, an input shape" if placement == "early" else "")
        + f"; received {type(branch).__name__}."
    )


def _fusion_layer(spec, units, kwargs, name, modalities):
    """A fusion layer from a name (built with `units=` and the modality names)
    or an instance (returned as is; constructor arguments are then an error)."""
    if isinstance(spec, str):
        return fusion_lib.get(spec, **{"units": units, "name": name, "modalities": modalities,
                                       **kwargs})
    if kwargs:
        raise ValueError(
            f"build_fusion_model: constructor arguments {sorted(kwargs)} were given for the "
            f"fusion layer instance '{getattr(spec, 'name', spec)}', which is already built "
            "from its own; pass a registered name instead, or drop the arguments."
        )
    return fusion_lib.get(spec)


def _input_rank(spec):
    return fusion_lib.get_class(spec).input_rank if isinstance(spec, str) else spec.input_rank


def _check_imputable(key, modality, x, sources):
    if not sources:
        raise ValueError(f"build_fusion_model: absent='imputed' reconstructs '{modality}' from "
                         "the other modalities of its fusion point, and it has none; use "
                         "absent='learned' or fuse it with another modality.")
    ranks = {name: len(t.shape) for name, t in [(modality, x)] + sources}
    if any(r != 2 for r in ranks.values()):
        raise ValueError(f"build_fusion_model: absent='imputed' needs vector taps (rank 2); "
                         f"the point fusing '{key}' has ranks {ranks}. Use absent='learned' "
                         "for sequence fusion layers.")


def _check_count(layer, names):
    low, high = layer.min_modalities, layer.max_modalities
    if not layer.accepts(len(names)):
        raise ValueError(
            f"build_fusion_model: fusion layer '{layer.name}' "
            f"({type(layer).__name__}) takes {low} to {high or 'any number of'} "
            f"inputs; this fusion point gives it {len(names)}: {names}."
        )


class _Composer:
    """Builds one model; holds the inputs, tap tensors, their Keras masks and
    cached adapters."""

    def __init__(self, branches, units, tap_pooling, presence, absent="zeros"):
        self.branches = branches
        self.modalities = list(branches)
        self.units = units
        self.tap_pooling = tap_pooling
        self.presence = presence
        self.absent = absent
        self.adapted = {}
        self.taps = {}
        self.masks = {}

    def branch_taps(self, inputs):
        for i, m in enumerate(self.modalities):
            x = inputs[m]
            if len(self.branches[m].inputs) == 2:  # the branch also takes its presence
                if self.presence is None:
                    raise ValueError(
                        f"build_fusion_model: the branch for modality '{m}' takes its presence "
                        f"('{_branch_presence(m)}'); build the model with presence=True (or "
                        "modality_dropout), or the branch without presence.")
                column = PresenceColumns([i], name=f"{m}_branch_presence")(self.presence)
                x = {m: x, _branch_presence(m): column}
            self.taps[m] = self.branches[m](x)
            self.masks[m] = self._branch_masks(m, x)

    def _branch_masks(self, modality, x):
        """dict tap -> Keras mask of the branch's masked taps, computed from
        `x` by a small model over the branch's own mask graph (a nested
        model's outputs do not carry their masks)."""
        branch = self.branches[modality]
        masks = {tap: keras_internals.keras_mask(t) for tap, t in branch.output.items()}
        masks = {tap: m for tap, m in masks.items() if m is not None}
        if not masks:
            return {}
        return keras.Model(branch.input, masks, name=f"{modality}_masks")(x)

    def tap(self, modality, tap):
        """`(tensor, Keras mask or None)` of a branch tap."""
        if modality not in self.branches:
            raise ValueError(
                f"build_fusion_model: a fusion point names modality '{modality}', "
                f"which has no branch; modalities: {self.modalities}."
            )
        available = self.taps[modality]
        if tap not in available:
            raise ValueError(
                f"build_fusion_model: modality '{modality}' has no tap '{tap}'; "
                f"its taps are {list(available)}."
            )
        return available[tap], self.masks[modality].get(tap)

    def adapt(self, x, key, rank, where, pooling=None, mask=None):
        """`x` reshaped for a fusion layer of `input_rank == rank` (cached by `key`).

        Vector layers get rank > 2 tensors pooled by `pooling` (default
        `tap_pooling`; a masked sequence by `MaskedPooling`); sequence layers
        get feature maps as sequences and the previous fusion output (key
        `previous_*`) as a length-1 sequence.
        """
        if (key, rank) in self.adapted:
            return self.adapted[(key, rank)]
        pooling = pooling or self.tap_pooling
        x_rank = len(x.shape)
        if rank == 2 and x_rank > 2:
            if pooling is None:
                raise ValueError(
                    f"build_fusion_model: {where} has rank {x_rank} (shape "
                    f"{tuple(x.shape)}) but the fusion layer takes vectors (rank 2); "
                    "set tap_pooling to 'flatten', 'avg' or 'max', or choose a vector tap."
                )
            if mask is not None and x_rank == 3:
                pooling = "max" if pooling == "max" else "avg"
                x = MaskedPooling(pooling, name=f"{key}_masked_{pooling}")(x, padding=mask)
            else:
                x = to_vector(x, pooling, name=f"{key}_{pooling}")
        elif rank == 3 and x_rank == 4:
            x = keras.layers.Reshape((-1, x.shape[-1]), name=f"{key}_to_sequence")(x)
        elif rank == 3 and x_rank == 2 and key.startswith(PREVIOUS):
            x = keras.layers.Reshape((1, x.shape[-1]), name=f"{key}_to_sequence")(x)
        elif rank != x_rank:
            raise ValueError(
                f"build_fusion_model: {where} has rank {x_rank} (shape "
                f"{tuple(x.shape)}) but the fusion layer takes rank-{rank} inputs "
                f"{'(batch, T, d)' if rank == 3 else '(batch, d)'}; choose a "
                f"{'sequence' if rank == 3 else 'vector'} tap."
            )
        self.adapted[(key, rank)] = x
        return x

    def fill_absent(self, tensors, names, keys):
        """The fused taps `tensors` (of modalities `names`, cache keys `keys`)
        with absent rows filled: a learned placeholder (`absent="learned"`,
        one `LearnedAbsence` per tap) or a vector imputed from the point's
        other modalities (`absent="imputed"`, one `ImputeAbsent` per tap and
        set of sources). A previous fusion output is left as it is."""
        if self.absent == "zeros":
            return list(tensors)
        filled = []
        for i, (x, m, key) in enumerate(zip(tensors, names, keys)):
            sources = [j for j, n in enumerate(names) if j != i and n != PREVIOUS]
            if m == PREVIOUS:
                filled.append(x)
                continue
            if self.absent == "learned":
                cache, layer = ("absent", key), lambda: LearnedAbsence(
                    self.modalities.index(m), name=f"{key}_learned_absent")
                arguments = {}
            else:
                _check_imputable(key, m, x, [(names[j], tensors[j]) for j in sources])
                sources_name = "_".join(names[j] for j in sources)
                cache, layer = ("absent", key, sources_name), lambda: ImputeAbsent(
                    self.modalities.index(m), [self.modalities.index(names[j]) for j in sources],
                    units=self.units or 64, name=f"{key}_imputed_from_{sources_name}")
                arguments = {"sources": [tensors[j] for j in sources]}
            if cache not in self.adapted:
                self.adapted[cache] = layer()(x, presence=self.presence, **arguments)
            filled.append(self.adapted[cache])
        return filled

    def fuse(self, layer, tensors, names, presence_columns, masks=None):
        """Applies `layer` to the adapted tensors, with the matching presence
        and, for sequence layers, the tensors' Keras masks (`masks`, None for
        unmasked ones)."""
        _check_count(layer, names)
        kwargs = {}
        if self.presence is not None and self.absent == "zeros":
            columns = [c for c in presence_columns if c is not None]
            if presence_columns == list(range(len(self.modalities))):
                kwargs["presence"] = self.presence
            else:
                kwargs["presence"] = PresenceColumns(
                    columns, ones=len(presence_columns) - len(columns),
                    name=f"{layer.name}_presence",
                )(self.presence)
        if masks and layer.input_rank == 3 and any(m is not None for m in masks):
            kwargs["mask"] = list(masks)
        return layer(tensors, **kwargs)


def _head(x, head, prefix):
    """MLP then the output layer (logits for classification and multilabel)."""
    x, _ = dense_stack(x, head.units, head.dropout, prefix=prefix)
    name = f"{prefix}_output" if head.kind == "regression" else f"{prefix}_logits"
    return keras.layers.Dense(head.num_outputs, name=name)(x)


def _finish(x, head, name="prediction"):
    """The output activation, in float32 under any dtype policy (a float16
    softmax rounds small probabilities to 0, as Keras's mixed-precision guide
    warns)."""
    if head.kind == "classification":
        return keras.layers.Activation("softmax", dtype="float32", name=name)(x)
    if head.kind == "multilabel":
        return keras.layers.Activation("sigmoid", dtype="float32", name=name)(x)
    return keras.layers.Activation("linear", dtype="float32", name=name)(x)


def _with_unimodal_heads(composer, prediction, head, weight, fallback):
    """`prediction` passed through a `UnimodalHeads` layer (the output layer,
    named `"prediction"`) holding one head (like the model's) per modality
    on its branch's vector tap."""
    names = composer.modalities
    heads = [output_layers(_vector_tap(composer, m, VECTOR_TAP), head, prefix=f"{m}_unimodal",
                           name=f"{m}_unimodal_prediction") for m in names]
    layer = UnimodalHeads(names, loss_weight=weight, fallback=fallback, dtype="float32",
                          name="prediction")
    return layer(prediction, unimodal=heads, presence=composer.presence)


def output_layers(x, head, prefix="head", name="prediction"):
    """A `Head` on a vector tensor: its MLP, its output layer (`{prefix}_logits`,
    or `{prefix}_output` for regression) and the activation named `name`
    (softmax, sigmoid or identity), as `build_fusion_model` ends its models.

    Example:

    >>> x = keras.Input((3,))
    >>> keras.Model(x, output_layers(x, Head("multilabel", num_outputs=4, units=()))).output_shape
    (None, 4)
    """
    return _finish(_head(x, head, prefix), head, name)


def _conflict(given, spec, hint):
    raise ValueError(f"build_fusion_model: {given} cannot be combined with {spec}; {hint}.")


def _fusion_spec(fusion, placement, taps, fusion_kwargs, modalities):
    """The fusion argument and its keyword companions as one spec: `Early`,
    `Late`, a list of `FusionPoint`s, or None (a unimodal model with `taps`).
    Arguments the spec would ignore are errors."""
    _check_choice("placement", placement, PLACEMENTS)
    kind = type(fusion).__name__
    if isinstance(fusion, (Early, Late)):
        wanted = "early" if isinstance(fusion, Early) else "late"
        if placement not in ("intermediate", wanted):
            _conflict(f"placement={placement!r}", f"{kind}(...)",
                      f"{kind} is {wanted} fusion (drop `placement`)")
        if fusion_kwargs:
            _conflict("fusion_kwargs", f"{kind}(...)", f"give them as {kind}(..., kwargs=...)")
        if taps is not None:
            _conflict("taps", f"{kind}(...)", "early fusion reads the raw inputs"
                      if isinstance(fusion, Early) else "give them as Late(..., taps=...)")
        return fusion
    if isinstance(fusion, FusionPoint):
        fusion = [fusion]
    if isinstance(fusion, (list, tuple)):
        if placement != "intermediate":
            raise ValueError("build_fusion_model: a list of FusionPoints (multi-point fusion) "
                             "needs placement='intermediate'.")
        if taps is not None:
            raise ValueError("build_fusion_model: with FusionPoints, give taps in each "
                             "FusionPoint, not in `taps`.")
        if fusion_kwargs:
            _conflict("fusion_kwargs", "FusionPoints", "give them as FusionPoint(..., kwargs=...)")
        return list(fusion)
    kwargs = dict(fusion_kwargs or {})
    if fusion is None:
        if placement != "intermediate":
            raise ValueError("build_fusion_model: fusion=None (a unimodal model) needs "
                             "placement='intermediate'.")
        if kwargs:
            _conflict("fusion_kwargs", "fusion=None", "a unimodal model has no fusion layer")
        return None
    if placement == "early":
        if taps is not None:
            _conflict("taps", "placement='early'", "early fusion reads the raw inputs")
        return Early(fusion, kwargs)
    if placement == "late":
        if fusion in LATE_COMBINERS and kwargs:
            _conflict("fusion_kwargs", f"the late combiner {fusion!r}",
                      "it has no constructor arguments")
        return Late(fusion, taps, kwargs)
    return [FusionPoint(taps or {m: VECTOR_TAP for m in modalities}, fusion, kwargs=kwargs)]


def _head_spec(head, num_outputs, head_units, head_dropout):
    if not isinstance(head, Head):
        return Head(head, num_outputs, tuple(head_units), head_dropout)
    given = [name for name, value, default in (("num_outputs", num_outputs, 2),
                                                ("head_units", tuple(head_units), (64,)),
                                                ("head_dropout", head_dropout, 0.0))
             if value != default]
    if given:
        _conflict(", ".join(given), "head=Head(...)", "give them in Head(...)")
    return head


def _modality_dropout(modality_dropout, modalities):
    """The `ModalityDropout` layer of `build_fusion_model`: a rate, or a layer."""
    if not isinstance(modality_dropout, ModalityDropout):
        return ModalityDropout(modality_dropout, modalities=modalities, name="modality_dropout")
    if modality_dropout.modalities not in (None, modalities):
        raise ValueError(f"build_fusion_model: the ModalityDropout layer's modalities "
                         f"{modality_dropout.modalities} are not the branches' order {modalities}.")
    if modality_dropout.modalities is None:
        modality_dropout.modalities = modalities
    return modality_dropout


def build_fusion_model(branches, fusion="concat", head="classification", num_outputs=2, *,
                       placement="intermediate", taps=None, units=64, fusion_kwargs=None,
                       tap_pooling="flatten", head_units=(64,), head_dropout=0.0,
                       presence=False, modality_dropout=0.0, absent="zeros",
                       unimodal_loss=0.0, unimodal_fallback=False, name="fusion_model"):
    """Builds a multimodal functional model from branches, fusion point(s) and a head.

    Args:
        branches: dict modality -> branch model (from `mmfusion.branches`; its
            input must be named after the modality, plus `{name}_presence`
            for a branch built with `presence=True`). The model inputs are named
            after the modalities, in this order. For early fusion a value may
            also be an input shape tuple (branches are not run then: only
            their input specs are used).
        fusion: what to fuse, and how:
            - a `FusionPoint`, or a list of them (a multi-point MFAS chain);
            - `Early(fusion)` or `Late(combine)`;
            - a registered fusion-layer name or a `FusionLayer` instance, at
              `placement` with `taps` and `fusion_kwargs` (the older form);
              for `placement="late"` also `"average"` or `"weighted"`;
            - None: a unimodal model (one modality): its tap goes to the head.
        head: a `Head`, or its kind (`"classification"`, `"multilabel"` or `"regression"`)
            with `num_outputs`, `head_units` and `head_dropout`.
        num_outputs: number of classes or regression targets (with a kind).
        placement: `"early"`, `"intermediate"` or `"late"` for a fusion given
            by name or instance (see the module docstring).
        taps: dict modality -> tap name for a fusion given by name or instance
            (default: every branch's `"vector"` tap; modalities left out are
            not fused), or the one tap of a unimodal model. A branch's layers
            after its chosen tap stay in the model (the branch is one nested
            model) but get no gradient.
        units: `units=` of fusion layers given by name.
        fusion_kwargs: other constructor arguments of a fusion layer given by name.
        tap_pooling: how taps of rank > 2 become vectors for vector fusion
            layers: `"flatten"`, `"avg"`, `"max"`, or None (then such taps are
            an error). Masked sequence taps are pooled over their real
            timesteps (`MaskedPooling`: mean, or max for `"max"`).
        head_units: hidden sizes of the head MLP (per modality for late fusion).
        head_dropout: dropout rate in the head MLP.
        presence: whether the model takes one more input `"presence"` that
            says which modalities each row has (1 present, 0 absent):
            - `True` or `"matrix"`: a `(batch, n_modalities)` 0/1 array whose
              columns follow the order of `branches` (not the sorted order
              of `model.inputs`);
            - `"dict"`: a dict modality -> `(batch,)` 0/1 column (no column
              order to get wrong), stacked by a `StackPresence` layer;
            - `False`: no presence input.
            The mask goes to every fusion layer (and the late combination),
            and absent rows' inputs are replaced by zeros (`ZeroAbsent`,
            an `ops.where`) before any branch, so their placeholders (NaN,
            Inf, anything) never reach a branch or a fusion layer. A branch
            built with `presence=True` (e.g. `image_cnn(..., presence=True)`)
            gets its modality's column as its `{name}_presence` input, so
            its BatchNorm statistics skip absent rows (zeroed rows would
            still shift them otherwise).
        modality_dropout: rate of a `mmfusion.fusion.ModalityDropout` on the
            presence mask (all ones without `presence`): in training, whole
            modalities are marked absent at random (never all of an
            example's), so the model learns to predict when one is missing.
            Dropped rows' inputs are zeroed before the branches, as absent
            ones are. 0 adds none. A `ModalityDropout` layer (e.g. with
            `warmup_steps`) is used as given; its `modalities` must be the
            branches' order, and are set to it when not given.
        absent: what a fusion layer sees of an absent modality:
            - `"zeros"`: the fusion layer gets the presence mask and applies
              its own rule (dropped from a sum, zero gate, masked attention;
              see each layer);
            - `"learned"`: every fused tap (and each late-fusion head's
              input) gets a learned placeholder in absent rows
              (`LearnedAbsence`, one trained vector per tap, starting at
              zeros);
            - `"imputed"`: every fused vector tap gets, in absent rows, a
              vector reconstructed from the other modalities of its fusion
              point (`ImputeAbsent`: an MLP of `units` hidden units trained
              by a reconstruction loss on present rows, through `add_loss`).
            With `"learned"` and `"imputed"` fusion layers are not given the
            mask (the filled-in vector stands for the missing modality);
            both need `presence` or `modality_dropout`.
        unimodal_loss: weight `w` of unimodal auxiliary losses (0: none).
            When > 0, every modality gets its own head (like `head`, on its
            branch's `"vector"` tap), trained on the same labels with the
            compiled loss, weighted by its presence column; the training loss
            is the fused loss plus `w` times the sum of the heads' losses
            (`mmfusion.unimodal`). Counters modality imbalance (a branch
            left undertrained because another modality carries the fused
            prediction), so that the model does better when a modality is
            missing. The heads do not change the model's output unless
            `unimodal_fallback`. Not with early fusion (no branch runs on
            its own).
        unimodal_fallback: with `unimodal_loss`, rows where a modality is
            absent are predicted by the mean of the present modalities'
            heads instead of the fusion (rows with every modality present
            keep the fused prediction); needs `presence` or
            `modality_dropout`.
        name: name of the model.

    Returns:
        A functional `keras.Model` (a `mmfusion.unimodal.UnimodalLossModel`
        with `unimodal_loss`) with one named input per modality (plus
        `"presence"`) and one output layer named `"prediction"`. What its
        fusion layers learned (gates, modality weights, attention maps) is
        read by `mmfusion.inspect.fusion_explainer(model)`.

    Raises:
        ValueError: unknown names, wrong ranks or modality counts, and
            arguments that the chosen fusion would ignore.

    Example:

    >>> import numpy as np
    >>> from mmfusion.branches import tabular_mlp
    >>> branches = {"a": tabular_mlp(3, units=(4,), name="a"),
    ...             "b": tabular_mlp(5, units=(4,), name="b")}
    >>> model = build_fusion_model(branches, "gmu", num_outputs=3, units=8)
    >>> model.predict({"a": np.ones((2, 3)), "b": np.ones((2, 5))}, verbose=0).shape
    (2, 3)

    The same with spec objects:

    >>> model = build_fusion_model(
    ...     branches, FusionPoint({"a": "vector", "b": "vector"}, "gmu", kwargs={"units": 8}),
    ...     head=Head("classification", num_outputs=3, units=(16,)))
    >>> model.get_layer("fusion_1_gmu").output.shape
    (None, 8)
    """
    if not isinstance(branches, dict) or not branches:
        raise ValueError("build_fusion_model: `branches` must be a non-empty dict modality -> branch.")
    spec = _fusion_spec(fusion, placement, taps, fusion_kwargs, list(branches))
    head = _head_spec(head, num_outputs, head_units, head_dropout)
    early = isinstance(spec, Early)
    inputs = {m: _model_input(m, b, "early" if early else "intermediate")
              for m, b in branches.items()}
    model_inputs = dict(inputs)
    presence_input = None
    if presence is not False and presence is not None:
        model_inputs[PRESENCE], presence_input = _presence_input(presence, list(inputs))
    if modality_dropout:
        presence_input = _modality_dropout(modality_dropout, list(inputs))(
            inputs, presence=presence_input)
    if presence_input is not None:
        inputs = {m: _zero_absent(x, presence_input, i, m) for i, (m, x) in enumerate(inputs.items())}
    _check_choice("absent", absent, ABSENT)
    if absent != "zeros" and presence_input is None:
        raise ValueError(f"build_fusion_model: absent={absent!r} needs absent modalities: "
                         "presence=True and/or modality_dropout > 0.")
    if unimodal_loss < 0:
        raise ValueError(f"build_fusion_model: unimodal_loss must be >= 0; received {unimodal_loss}.")
    if unimodal_loss and early:
        raise ValueError("build_fusion_model: unimodal_loss needs branches that run on their "
                         "own modality; early fusion has none (use intermediate or late fusion).")
    if unimodal_fallback and not unimodal_loss:
        raise ValueError("build_fusion_model: unimodal_fallback predicts absent-modality rows "
                         "with the unimodal heads; it needs unimodal_loss > 0.")
    if unimodal_fallback and presence_input is None:
        raise ValueError("build_fusion_model: unimodal_fallback needs absent modalities: "
                         "presence=True and/or modality_dropout > 0.")
    composer = _Composer(branches, units, tap_pooling, presence_input, absent)
    if early:
        x = _head(_early(composer, inputs, spec), head, prefix="head")
    else:
        composer.branch_taps(inputs)
        if isinstance(spec, Late):
            x = _late(composer, spec, head)
        elif spec is None:
            x = _head(_unimodal(composer, taps), head, prefix="head")
        else:
            x = _head(_chain(composer, spec), head, prefix="head")
    prediction = _finish(x, head, name="fused_prediction" if unimodal_loss else "prediction")
    if unimodal_loss:
        prediction = _with_unimodal_heads(composer, prediction, head, unimodal_loss,
                                          unimodal_fallback)
        return UnimodalLossModel(model_inputs, prediction, name=name)
    return keras.Model(model_inputs, prediction, name=name)


def _presence_input(form, modalities):
    """`(model input, (batch, N) mask tensor)` for `presence=form`."""
    if PRESENCE in modalities:
        raise ValueError(f"build_fusion_model: '{PRESENCE}' cannot be a modality name.")
    form = "matrix" if form is True else form
    if form not in PRESENCE_FORMS:
        raise ValueError(f"build_fusion_model: presence must be True, False, 'matrix' or "
                         f"'dict'; received {form!r}.")
    if form == "matrix":
        matrix = keras.Input(shape=(len(modalities),), name=PRESENCE)
        return matrix, matrix
    columns = {m: keras.Input(shape=(), name=f"{PRESENCE}_{m}") for m in modalities}
    return columns, StackPresence(modalities, name=f"{PRESENCE}_stack")(columns)


def _zero_absent(x, presence, column, modality):
    """`x` with absent rows zeroed (inputs that are not numbers pass unchanged)."""
    if not (keras.backend.is_float_dtype(x.dtype) or keras.backend.is_int_dtype(x.dtype)
            or x.dtype == "bool"):
        return x
    return ZeroAbsent(column, name=f"{modality}_zero_absent")(x, presence=presence)


def _vector_tap(composer, modality, tap):
    """A branch tap as a vector (pooled as `adapt` does)."""
    x, mask = composer.tap(modality, tap)
    return composer.adapt(x, f"{modality}_{tap}", 2, f"tap '{tap}' of '{modality}'", mask=mask)


def _unimodal(composer, taps):
    """No fusion: the one modality's tap (default `"vector"`) as a vector."""
    chosen = taps or {m: VECTOR_TAP for m in composer.modalities}
    if len(chosen) != 1:
        raise ValueError(f"build_fusion_model: fusion=None (a unimodal model) needs exactly "
                         f"one modality; received {list(chosen)}.")
    (m, tap), = chosen.items()
    return composer.fill_absent([_vector_tap(composer, m, tap)], [m], [f"{m}_{tap}"])[0]


def _early(composer, inputs, spec):
    """Fuses the raw inputs: flattened to vectors (or kept as sequences for
    sequence layers) and cast to float."""
    rank = _input_rank(spec.fusion)
    tensors = []
    for m, x in inputs.items():
        if x.dtype != "float32":
            x = keras.layers.Rescaling(1.0, dtype="float32", name=f"{m}_to_float")(x)
        tensors.append(composer.adapt(x, m, rank, f"input '{m}'", pooling="flatten"))
    names = list(inputs)
    tensors = composer.fill_absent(tensors, names, names)
    layer = _fusion_layer(spec.fusion, composer.units, spec.kwargs, "early_fusion", names)
    return composer.fuse(layer, tensors, names, list(range(len(names))))


def _late(composer, spec, head):
    chosen = spec.taps or {m: VECTOR_TAP for m in composer.modalities}
    names = list(chosen)
    taps = composer.fill_absent([_vector_tap(composer, m, tap) for m, tap in chosen.items()],
                                names, [f"{m}_{tap}" for m, tap in chosen.items()])
    outputs = [_head(x, head, prefix=f"{m}_head") for x, m in zip(taps, names)]
    columns = [composer.modalities.index(m) for m in names]
    if spec.combine in LATE_COMBINERS:
        if spec.kwargs:
            _conflict("kwargs", f"Late({spec.combine!r})", "it has no constructor arguments")
        layer = fusion_lib.get("weighted_sum", units=None, name=f"late_{spec.combine}",
                               modalities=names)
        layer.trainable = spec.combine == "weighted"
        return composer.fuse(layer, outputs, names, columns)
    layer = _fusion_layer(spec.combine, composer.units, spec.kwargs, "late_fusion", names)
    fused = composer.fuse(layer, outputs, names, columns)
    return keras.layers.Dense(head.num_outputs, name="late_logits")(fused)


def _chain(composer, points):
    previous = None
    for i, point in enumerate(points, start=1):
        if not isinstance(point, FusionPoint):
            raise ValueError(f"build_fusion_model: fusion point {i} must be a FusionPoint; "
                             f"received {type(point).__name__}.")
        rank = _input_rank(point.fusion)
        tensors, names, masks = [], [], []
        for m, tap in point.taps.items():
            x, mask = composer.tap(m, tap)
            tensors.append(composer.adapt(x, f"{m}_{tap}", rank, f"tap '{tap}' of '{m}'",
                                          mask=mask))
            names.append(m)
            masks.append(mask if len(x.shape) == 3 else None)
        tensors = composer.fill_absent(tensors, names, [
            f"{m}_{tap}" + ("_sequence" if rank == 3 else "") for m, tap in point.taps.items()])
        columns = [composer.modalities.index(m) for m in names]
        if previous is not None:
            tensors.append(composer.adapt(previous, f"{PREVIOUS}_{i - 1}", rank, "previous"))
            names.append(PREVIOUS)
            columns.append(None)
            masks.append(None)
        layer = _fusion_layer(point.fusion, composer.units, point.kwargs,
                              f"fusion_{i}_{point.fusion}" if isinstance(point.fusion, str)
                              else None, names)
        previous = composer.fuse(layer, tensors, names, columns, masks)
        if point.activation is not None:
            previous = keras.layers.Activation(point.activation,
                                               name=f"fusion_{i}_activation")(previous)
    return previous
