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

Taps of rank > 2 given to a vector fusion layer (`input_rank == 2`) are
turned into vectors by `tap_pooling` (`"flatten"`, `"avg"` or `"max"`, see
`mmfusion.branches.common.to_vector`). For sequence fusion layers
(`input_rank == 3`), rank-3 taps go in unchanged, rank-4 feature maps
`(batch, H, W, C)` become sequences `(batch, H*W, C)`, and vector taps are an
error (choose a sequence tap such as a text branch's `lstm_1`).
"""

from dataclasses import dataclass, field

import keras
from keras import ops

from mmfusion import fusion as fusion_lib
from mmfusion.branches import VECTOR_TAP, tap_shapes
from mmfusion.branches.common import dense_stack, to_vector
from mmfusion.fusion.dropout import ModalityDropout

PLACEMENTS = ("early", "intermediate", "late")
HEADS = ("classification", "regression")
LATE_COMBINERS = ("average", "weighted")
PRESENCE = "presence"
PREVIOUS = "previous"

__all__ = ["FusionPoint", "PresenceColumns", "build_fusion_model"]


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


def _check_choice(what, value, choices):
    if value not in choices:
        raise ValueError(f"build_fusion_model: {what} must be one of {choices}; received {value!r}.")


def _model_input(modality, branch, placement):
    """The named model input of one modality (shape and dtype of its branch)."""
    if isinstance(branch, keras.Model):
        tap_shapes(branch)
        spec = branch.inputs[0]
        if len(branch.inputs) != 1 or spec.name != modality:
            raise ValueError(
                f"build_fusion_model: the branch for modality '{modality}' must have "
                f"one input named '{modality}'; branch '{branch.name}' has inputs "
                f"{[t.name for t in branch.inputs]}. Build it with name='{modality}'."
            )
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
    or an instance (returned as is)."""
    if isinstance(spec, str):
        kwargs = {"units": units, "name": name, "modalities": modalities, **kwargs}
    return fusion_lib.get(spec, **kwargs)


def _input_rank(spec):
    return fusion_lib.get_class(spec).input_rank if isinstance(spec, str) else spec.input_rank


def _check_count(layer, names):
    low, high = layer.min_modalities, layer.max_modalities
    if len(names) < low or (high is not None and len(names) > high):
        raise ValueError(
            f"build_fusion_model: fusion layer '{layer.name}' "
            f"({type(layer).__name__}) takes {low} to {high or 'any number of'} "
            f"inputs; this fusion point gives it {len(names)}: {names}."
        )


class _Composer:
    """Builds one model; holds the inputs, tap tensors and cached adapters."""

    def __init__(self, branches, units, tap_pooling, presence):
        self.branches = branches
        self.modalities = list(branches)
        self.units = units
        self.tap_pooling = tap_pooling
        self.presence = presence
        self.adapted = {}
        self.taps = {}

    def branch_taps(self, inputs):
        for m in self.modalities:
            self.taps[m] = self.branches[m](inputs[m])

    def tap(self, modality, tap):
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
        return available[tap]

    def adapt(self, x, key, rank, where, pooling=None):
        """`x` reshaped for a fusion layer of `input_rank == rank` (cached by `key`).

        Vector layers get rank > 2 tensors pooled by `pooling` (default
        `tap_pooling`); sequence layers get feature maps as sequences and the
        previous fusion output (key `previous_*`) as a length-1 sequence.
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

    def fuse(self, layer, tensors, names, presence_columns):
        """Applies `layer` to the adapted tensors, with the matching presence."""
        _check_count(layer, names)
        kwargs = {}
        if self.presence is not None:
            columns = [c for c in presence_columns if c is not None]
            if presence_columns == list(range(len(self.modalities))):
                kwargs["presence"] = self.presence
            else:
                kwargs["presence"] = PresenceColumns(
                    columns, ones=len(presence_columns) - len(columns),
                    name=f"{layer.name}_presence",
                )(self.presence)
        return layer(tensors, **kwargs)


def _head(x, head, num_outputs, head_units, head_dropout, prefix):
    """MLP then the output layer (logits for classification)."""
    x, _ = dense_stack(x, head_units, head_dropout, prefix=prefix)
    name = f"{prefix}_logits" if head == "classification" else f"{prefix}_output"
    return keras.layers.Dense(num_outputs, name=name)(x)


def _finish(x, head):
    if head == "classification":
        return keras.layers.Activation("softmax", name="prediction")(x)
    return keras.layers.Identity(name="prediction")(x)


def build_fusion_model(branches, fusion="concat", head="classification", num_outputs=2, *,
                       placement="intermediate", taps=None, units=64, fusion_kwargs=None,
                       tap_pooling="flatten", head_units=(64,), head_dropout=0.0,
                       presence=False, modality_dropout=0.0, name="fusion_model"):
    """Builds a multimodal functional model from branches, fusion point(s) and a head.

    Args:
        branches: dict modality -> branch model (from `mmfusion.branches`; its
            input must be named after the modality). The model inputs are named
            after the modalities, in this order. For `placement="early"` a
            value may also be an input shape tuple (branches are not run then:
            only their input specs are used).
        fusion: a registered fusion-layer name (built with `units=units` and
            `fusion_kwargs`), a `FusionLayer` instance, or a list of
            `FusionPoint`s (a multi-point MFAS chain; intermediate only). For
            `placement="late"` also `"average"` or `"weighted"`. None builds
            a unimodal model (one modality, intermediate placement): its tap
            goes straight to the head.
        head: `"classification"` (softmax over `num_outputs` classes) or
            `"regression"` (`num_outputs` linear outputs).
        num_outputs: number of classes or regression targets.
        placement: `"early"`, `"intermediate"` or `"late"` (see the module docstring).
        taps: dict modality -> tap name for intermediate and late placements
            (default: every branch's `"vector"` tap; modalities left out are
            not fused). A branch's layers after its chosen tap stay in the
            model (the branch is one nested model) but get no gradient.
        units: `units=` of fusion layers given by name.
        fusion_kwargs: other constructor arguments of fusion layers given by name.
        tap_pooling: how taps of rank > 2 become vectors for vector fusion
            layers: `"flatten"`, `"avg"`, `"max"`, or None (then such taps are an error).
        head_units: hidden sizes of the head MLP (per modality for late fusion).
        head_dropout: dropout rate in the head MLP.
        presence: if True, the model takes one more input `"presence"`,
            `(batch, n_modalities)` 0/1 in the order of `branches`, passed to
            every fusion layer (and to the late combination).
        modality_dropout: rate of a `mmfusion.fusion.ModalityDropout` on the
            presence mask (all ones without `presence`): in training, whole
            modalities are marked absent at random (never all of an
            example's), so the model learns to predict when one is missing.
            0 adds none.
        name: name of the model.

    Returns:
        A functional `keras.Model` with one named input per modality (plus
        `"presence"`) and one output layer named `"prediction"`.

    Example:

    >>> import numpy as np
    >>> from mmfusion.branches import tabular_mlp
    >>> branches = {"a": tabular_mlp(3, units=(4,), name="a"),
    ...             "b": tabular_mlp(5, units=(4,), name="b")}
    >>> model = build_fusion_model(branches, "gmu", num_outputs=3, units=8)
    >>> model.predict({"a": np.ones((2, 3)), "b": np.ones((2, 5))}, verbose=0).shape
    (2, 3)
    """
    _check_choice("placement", placement, PLACEMENTS)
    _check_choice("head", head, HEADS)
    if not isinstance(branches, dict) or not branches:
        raise ValueError("build_fusion_model: `branches` must be a non-empty dict modality -> branch.")
    inputs = {m: _model_input(m, b, placement) for m, b in branches.items()}
    model_inputs = dict(inputs)
    presence_input = None
    if presence:
        if PRESENCE in inputs:
            raise ValueError(f"build_fusion_model: '{PRESENCE}' cannot be a modality name.")
        presence_input = keras.Input(shape=(len(inputs),), name=PRESENCE)
        model_inputs[PRESENCE] = presence_input
    if modality_dropout:
        presence_input = ModalityDropout(modality_dropout, modalities=list(inputs),
                                         name="modality_dropout")(inputs, presence=presence_input)
    composer = _Composer(branches, units, tap_pooling, presence_input)
    kwargs = dict(fusion_kwargs or {})
    if fusion is None and placement != "intermediate":
        raise ValueError("build_fusion_model: fusion=None (a unimodal model) needs "
                         "placement='intermediate'.")
    if isinstance(fusion, (list, tuple)) and placement != "intermediate":
        raise ValueError("build_fusion_model: a list of FusionPoints (multi-point fusion) "
                         "needs placement='intermediate'.")
    if placement == "early":
        x = _early(composer, inputs, fusion, kwargs)
        x = _head(x, head, num_outputs, head_units, head_dropout, prefix="head")
    elif placement == "late":
        composer.branch_taps(inputs)
        x = _late(composer, fusion, kwargs, taps, head, num_outputs, head_units, head_dropout)
    else:
        composer.branch_taps(inputs)
        if fusion is None:
            x = _unimodal(composer, taps)
        elif not isinstance(fusion, (list, tuple)):
            chosen = taps or {m: VECTOR_TAP for m in branches}
            x = _chain(composer, [FusionPoint(taps=chosen, fusion=fusion, kwargs=kwargs)])
        elif taps is not None:
            raise ValueError("build_fusion_model: with FusionPoints, give taps in each "
                             "FusionPoint, not in `taps`.")
        else:
            x = _chain(composer, fusion)
        x = _head(x, head, num_outputs, head_units, head_dropout, prefix="head")
    return keras.Model(model_inputs, _finish(x, head), name=name)


def _unimodal(composer, taps):
    """No fusion: the one modality's tap (default `"vector"`) as a vector."""
    chosen = taps or {m: VECTOR_TAP for m in composer.modalities}
    if len(chosen) != 1:
        raise ValueError(f"build_fusion_model: fusion=None (a unimodal model) needs exactly "
                         f"one modality; received {list(chosen)}.")
    (m, tap), = chosen.items()
    return composer.adapt(composer.tap(m, tap), f"{m}_{tap}", 2, f"tap '{tap}' of '{m}'")


def _early(composer, inputs, fusion, kwargs):
    """Fuses the raw inputs: flattened to vectors (or kept as sequences for
    sequence layers) and cast to float."""
    rank = _input_rank(fusion)
    tensors = []
    for m, x in inputs.items():
        if x.dtype != "float32":
            x = keras.layers.Rescaling(1.0, dtype="float32", name=f"{m}_to_float")(x)
        tensors.append(composer.adapt(x, m, rank, f"input '{m}'", pooling="flatten"))
    names = list(inputs)
    layer = _fusion_layer(fusion, composer.units, kwargs, "early_fusion", names)
    return composer.fuse(layer, tensors, names, list(range(len(names))))


def _late(composer, fusion, kwargs, taps, head, num_outputs, head_units, head_dropout):
    chosen = taps or {m: VECTOR_TAP for m in composer.modalities}
    outputs = []
    for m, tap in chosen.items():
        x = composer.adapt(composer.tap(m, tap), f"{m}_{tap}", 2, f"tap '{tap}' of '{m}'")
        outputs.append(_head(x, head, num_outputs, head_units, head_dropout, prefix=f"{m}_head"))
    names = list(chosen)
    columns = [composer.modalities.index(m) for m in names]
    if fusion in LATE_COMBINERS:
        layer = fusion_lib.get("weighted_sum", units=None, name=f"late_{fusion}",
                               modalities=names)
        layer.trainable = fusion == "weighted"
        return composer.fuse(layer, outputs, names, columns)
    layer = _fusion_layer(fusion, composer.units, kwargs, "late_fusion", names)
    fused = composer.fuse(layer, outputs, names, columns)
    return keras.layers.Dense(num_outputs, name="late_logits")(fused)


def _chain(composer, points):
    previous = None
    for i, point in enumerate(points, start=1):
        if not isinstance(point, FusionPoint):
            raise ValueError(f"build_fusion_model: fusion point {i} must be a FusionPoint; "
                             f"received {type(point).__name__}.")
        rank = _input_rank(point.fusion)
        tensors, names = [], []
        for m, tap in point.taps.items():
            x = composer.tap(m, tap)
            tensors.append(composer.adapt(x, f"{m}_{tap}", rank, f"tap '{tap}' of '{m}'"))
            names.append(m)
        columns = [composer.modalities.index(m) for m in names]
        if previous is not None:
            tensors.append(composer.adapt(previous, f"{PREVIOUS}_{i - 1}", rank, "previous"))
            names.append(PREVIOUS)
            columns.append(None)
        layer = _fusion_layer(point.fusion, composer.units, point.kwargs,
                              f"fusion_{i}_{point.fusion}" if isinstance(point.fusion, str)
                              else None, names)
        previous = composer.fuse(layer, tensors, names, columns)
        if point.activation is not None:
            previous = keras.layers.Activation(point.activation,
                                               name=f"fusion_{i}_activation")(previous)
    return previous
