"""Any functional Keras model (e.g. a `keras.applications` backbone) as a branch."""

import keras

from mmfusion.branches.common import POOLINGS, VECTOR_TAP, MaskedPooling, SequencePadding, to_vector
from mmfusion.keras_internals import call_count, keras_tensors, producer

__all__ = ["from_model"]


@keras.saving.register_keras_serializable(package="mmfusion")
class _Resizing(keras.layers.Resizing):
    """`keras.layers.Resizing` whose `call` has no `training=True` default.

    Keras's image preprocessing layers declare `call(data, training=True)`;
    called directly (`model(x)`, no `training` given), a model holding one
    then runs every later layer in training mode: BatchNormalization
    normalizes with batch statistics and updates its moving averages.
    Resizing does not depend on `training`, so it takes none.
    """

    def call(self, data, training=None):
        return super().call(data)


@keras.saving.register_keras_serializable(package="mmfusion")
class _Preprocess(keras.layers.Layer):
    """Runs `from_model`'s `preprocess` layer with `training=False` unless the
    call gives `training`.

    Keras stores a layer's resolved `training` in the call context for the
    layers after it: a preprocessing layer whose `call` (or a layer inside
    it, e.g. the `Resizing` of a keras-hub `ImageConverter`) defaults to
    `training=True` would otherwise put the whole backbone in training mode
    when the branch is called directly (`model(x)`), so BatchNormalization
    would use batch statistics and update its moving averages. `fit` still
    passes `training=True`, so random augmentation layers augment there.
    """

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        self.layer = layer

    def build(self, input_shape):
        """Builds nothing: the wrapped layer builds on its first call (a
        keras-hub preprocessor needs its assets, loaded after the graph)."""

    def call(self, inputs, training=False):
        return self.layer(inputs)

    def compute_output_spec(self, inputs, training=False):
        return self.layer.compute_output_spec(inputs)

    def get_config(self):
        config = super().get_config()
        config.update(layer=keras.saving.serialize_keras_object(self.layer))
        return config


def _tap_outputs(model, taps):
    """`{tap name: Keras tensor}` of `model`'s layers, in the model's layer
    order (shallow to deep)."""
    if isinstance(taps, (list, tuple)):
        taps = {layer if isinstance(layer, str) else layer.name: layer for layer in taps}
    order = {id(layer): i for i, layer in enumerate(model.layers)}
    found = []
    for tap, layer in taps.items():
        if tap == VECTOR_TAP:
            raise ValueError(f"from_model: '{VECTOR_TAP}' is the name of the final tap; "
                             "name the intermediate taps otherwise.")
        if isinstance(layer, str):
            names = [candidate.name for candidate in model.layers]
            if layer not in names:
                raise ValueError(f"from_model: model '{model.name}' has no layer '{layer}' "
                                 f"(tap '{tap}'); its layers include {names[-5:]}.")
            layer = model.get_layer(layer)
        if id(layer) not in order:
            raise ValueError(f"from_model: layer '{layer.name}' (tap '{tap}') is not a layer "
                             f"of model '{model.name}'.")
        if call_count(layer) != 1:
            raise ValueError(f"from_model: layer '{layer.name}' (tap '{tap}') is called "
                             f"{call_count(layer)} times in model '{model.name}'; "
                             "tap a layer with one output.")
        found.append((order[id(layer)], tap, layer.output))
    return {tap: tensor for _, tap, tensor in sorted(found, key=lambda item: item[0])}


def _inputs_needed(model, outputs):
    """The inputs of `model` that `outputs` (Keras tensors of its graph)
    depend on, in the model's input order."""
    needed, seen, stack = set(), set(), list(outputs)
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        _, _, arguments = producer(tensor)
        if arguments is None:
            needed.add(id(tensor))
        else:
            stack.extend(keras_tensors(arguments))
    return [t for t in model.inputs if id(t) in needed]


def _vector(deepest, vector, padding, name):
    """The `vector` tap from the deepest tap (masked pooling over a padded sequence)."""
    if not isinstance(vector, str):
        return vector(deepest)
    if padding is not None and len(deepest.shape) == 3:
        if vector == "flatten":
            raise ValueError(f"from_model: vector='flatten' would keep the padding of the "
                             f"padded sequence {tuple(deepest.shape)}; use 'avg' or 'max'.")
        return MaskedPooling(vector, name=f"{name}_masked_{vector}")(deepest, padding=padding)
    return to_vector(deepest, vector, name=f"{name}_{vector}")


def from_model(model, taps=None, vector="avg", preprocess=None, input_shape=None, resize=None,
               rescale=None, trainable=True, name="image", input_dtype=None, padding=None):
    """Turns a functional Keras model into a branch whose taps are its layers.

    The branch follows the contract of the ready-made branches: one input
    named after the modality, outputs a dict tap name -> tensor from shallow
    to deep, the last one `vector`. It is cut after the deepest tap: only the
    layers that the taps need are in it (tapping an early stage of a large
    backbone keeps only that stage's parameters). The weights are the
    model's own (shared, not copied).

    Several inputs: the cut keeps the model's inputs that the taps depend
    on (e.g. only the encoder input of an encoder-decoder model). With one,
    it is fed as usual; with several, `preprocess` maps the branch input
    to a dict input name -> tensor (e.g. token ids -> `token_ids`,
    `padding_mask`, `segment_ids`), and `input_shape` is needed.

    Before the model, in this order and each optional: `Resizing(*resize)`,
    `Rescaling(scale, offset)` and `preprocess` (run with `training=False`
    unless the call gives `training`, so a preprocessing layer that
    defaults to `training=True` does not put the backbone's
    BatchNormalization in training mode). Note that
    `keras.applications` models usually rescale internally already (e.g.
    MobileNetV3's `include_preprocessing=True` expects pixels in [0, 255]).

    Args:
        model: a functional (or built `Sequential`) `keras.Model`, e.g.
            `keras.applications.MobileNetV3Small(include_top=False)` or a
            keras-hub backbone (see `mmfusion.branches.hub`).
        taps: dict tap name -> layer (or layer name) of `model`, or a list
            of layers / layer names (tap names = layer names). None: no
            intermediate taps, `vector` comes from the model's output.
        vector: how the deepest tap becomes the `vector` tap: `"avg"`,
            `"max"` (global pooling) or `"flatten"`, or a Keras layer applied
            to it. A rank-2 tap is used as is by the pooling options.
        preprocess: optional Keras layer applied to the input before the
            model; for a model with several inputs it returns a dict input
            name -> tensor.
        input_shape: shape of the branch input without the batch axis
            (default: the model's input shape; give it with `resize`, and
            for a model with several inputs).
        resize: optional `(height, width)` the images are resized to.
        rescale: optional `scale` or `(scale, offset)`: `x * scale + offset`.
        trainable: False freezes the model's layers (BatchNormalization then
            runs in inference mode).
        name: name of the input (the modality); the model is `{name}_branch`.
        input_dtype: dtype of the branch input (default: the model input's
            dtype, float32 for a model with several inputs).
        padding: optional key of the dict that `preprocess` returns holding
            the `(batch, T)` padding mask (1: real timestep), e.g.
            `"padding_mask"`: it becomes the Keras mask of every sequence
            tap `(batch, T, d)` (so `build_fusion_model`'s sequence fusion
            layers and pooling see the padding) and `"avg"`/`"max"` pool
            the deepest tap over the real timesteps only.

    Returns:
        A functional `keras.Model` from the input to the dict of taps.

    Example:

    >>> import numpy as np
    >>> x = keras.Input((6, 6, 1))
    >>> h = keras.layers.Conv2D(2, 3, name="conv_a")(x)
    >>> h = keras.layers.Conv2D(4, 3, name="conv_b")(h)
    >>> backbone = keras.Model(x, keras.layers.Flatten(name="flat")(h))
    >>> branch = from_model(backbone, taps={"early": "conv_a"}, vector="max")
    >>> {k: tuple(v.shape) for k, v in branch(np.zeros((2, 6, 6, 1))).items()}
    {'early': (2, 4, 4, 2), 'vector': (2, 2)}
    >>> branch.count_params() < backbone.count_params()  # cut after conv_a
    True
    """
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise ValueError(f"from_model: '{getattr(model, 'name', model)}' is not a functional "
                         "Keras model (subclassed models have no graph to tap).")
    if isinstance(vector, str) and vector not in POOLINGS:
        raise ValueError(f"from_model: vector must be one of {POOLINGS} or a Keras layer; "
                         f"received '{vector}'.")
    outputs = _tap_outputs(model, taps or {})
    if not outputs:
        if not isinstance(model.output, keras.KerasTensor):
            raise ValueError(f"from_model: model '{model.name}' has several outputs; "
                             "name the taps to use.")
        outputs = {"output": model.output}
    needed = _inputs_needed(model, outputs.values())
    if len(needed) == 1:
        backbone_inputs = needed[0]
    else:
        backbone_inputs = {t.name: t for t in needed}
        if preprocess is None or input_shape is None:
            raise ValueError(
                f"from_model: the taps of model '{model.name}' need its inputs "
                f"{list(backbone_inputs)}; give `input_shape` (and `input_dtype`) of the "
                "branch input and a `preprocess` layer mapping it to a dict with those keys.")
    backbone = keras.Model(backbone_inputs, outputs, name=f"{name}_{model.name}")
    backbone.trainable = trainable

    shape = tuple(input_shape) if input_shape else tuple(needed[0].shape[1:])
    dtype = input_dtype or (needed[0].dtype if len(needed) == 1 else "float32")
    inputs = keras.Input(shape=shape, dtype=dtype, name=name)
    x = inputs
    if resize is not None:
        x = _Resizing(*resize, name=f"{name}_resize")(x)
    if rescale is not None:
        scale, offset = rescale if isinstance(rescale, (list, tuple)) else (rescale, 0.0)
        x = keras.layers.Rescaling(scale, offset, name=f"{name}_rescale")(x)
    if preprocess is not None:
        x = _Preprocess(preprocess, name=f"{name}_preprocess")(x)
    mask = None
    if padding is not None:
        if not isinstance(x, dict) or padding not in x:
            keys = sorted(x) if isinstance(x, dict) else type(x).__name__
            raise ValueError(f"from_model: padding='{padding}' must be a key of the dict "
                             f"that `preprocess` returns; it returned {keys}.")
        mask = x[padding]
    if isinstance(backbone_inputs, dict):
        missing = sorted(set(backbone_inputs) - set(x if isinstance(x, dict) else ()))
        if missing:
            raise ValueError(f"from_model: `preprocess` must return the inputs {missing} of "
                             f"model '{model.name}' (a dict input name -> tensor).")
        x = {key: x[key] for key in backbone_inputs}
    features = backbone(x)
    result = {}
    for tap in outputs:
        tensor = features[tap]
        if mask is not None and len(tensor.shape) == 3:
            tensor = SequencePadding(name=f"{name}_{tap}_padding")([tensor, mask])
        result[tap] = tensor
    vec = _vector(result[list(outputs)[-1]], vector, mask, name)
    result = {tap: tensor for tap, tensor in result.items() if tap in (taps or {})}
    result[VECTOR_TAP] = vec
    return keras.Model(inputs, result, name=f"{name}_branch")
