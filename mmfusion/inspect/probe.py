"""Reading a fusion layer's learned weighting (gates, modality weights,
attention maps) out of a trained model."""

import keras
import numpy as np

from mmfusion.fusion.base import FusionLayer
from mmfusion import keras_internals

__all__ = ["FusionProbe", "FusionWeights", "batch_metric", "fusion_explainer", "fusion_weights",
           "modality_ablation"]


def _contains_fusion(layer):
    if isinstance(layer, FusionLayer):
        return True
    return isinstance(layer, keras.Model) and any(_contains_fusion(sub) for sub in layer.layers)


@keras.saving.register_keras_serializable(package="mmfusion")
class FusionWeights(keras.layers.Wrapper):
    """Calls a fusion layer with `return_weights=True` and returns only its
    weights dict (the layer's own weights are shared, not copied).

    A wrapper is needed because Keras 3.15 cannot build a model from the
    extra outputs of a second call of a layer whose first call returned
    fewer outputs (its graph check counts the outputs of the first call).

    Args:
        layer: a `FusionLayer`.
        **kwargs: standard layer arguments (`name`, ...).

    Call arguments:
        inputs, **kwargs: what the fusion layer takes (`presence`, ...).

    Returns:
        The fusion layer's `weights_dict`.

    Example:

    >>> import numpy as np
    >>> from mmfusion.fusion import WeightedSum
    >>> layer = WeightedSum(name="ws")
    >>> weights = FusionWeights(layer)([np.ones((1, 2)), np.ones((1, 2))])
    >>> keras.ops.convert_to_numpy(weights["modality_weights"]).tolist()
    [[0.5, 0.5]]
    """

    def __init__(self, layer, **kwargs):
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)

    def call(self, inputs, training=None, **kwargs):
        return self.layer(inputs, return_weights=True, training=training, **kwargs)[1]


def fusion_explainer(model, layer_names=None):
    """A functional model computing the weights of `model`'s fusion layers.

    The public route to what the fusion layers of a functional model (e.g.
    one from `mmfusion.compose.build_fusion_model`, also after `.keras`
    reload) learned to use: from the same inputs as `model`, in one pass,
    it outputs dict path -> the layer's `weights_dict` (GMU gates, modality
    weights, attention maps), computed from the same tensors (and the same
    `presence` / element masks) the layer gets inside `model`. The path is the
    layer name, prefixed by `"nested_model/"` for a layer inside a nested
    functional model. It shares `model`'s weights: train `model`, then call
    the explainer. A layer called more than once is read at its first call;
    layers with an empty `weights_dict` (e.g. concatenation) are left out.

    Args:
        model: a functional `keras.Model`.
        layer_names: optional paths of the fusion layers to read; default: all.

    Returns:
        A `keras.Model` (None when no fusion layer with weights is read).

    Example:

    >>> import numpy as np
    >>> from mmfusion.fusion import GMU
    >>> a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    >>> model = keras.Model([a, b], GMU(4, name="gmu")([a, b]))
    >>> explainer = fusion_explainer(model)
    >>> {k: tuple(v["gates"].shape) for k, v in explainer([np.ones((5, 3)), np.ones((5, 2))]).items()}
    {'gmu': (5, 2, 4)}
    """
    def read(layer, args, kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k not in ("return_weights", "training")}
        weights = FusionWeights(layer, name=f"{layer.name}_weights")(*args, **kwargs)
        return weights if keras.tree.flatten(weights) else None

    return _fusion_readout(model, layer_names, read, "explainer")


def _fusion_presence(model, layer_names=None):
    """A functional model outputting dict path -> the `presence` mask each
    fusion layer of `model` gets (layers called without one are left out;
    None when none has one)."""
    return _fusion_readout(model, layer_names, lambda layer, args, kwargs: kwargs.get("presence"),
                           "presence_reader")


def _fusion_readout(model, layer_names, read, suffix, prefix=""):
    """A model from `model.input` to dict path -> `read(layer, args, kwargs)`
    of every fusion layer (nested functional models included), computed from
    the tensors the layer gets inside `model`; reads giving None are left out."""
    outputs = {}
    for layer in model.layers:
        path = prefix + layer.name
        if isinstance(layer, FusionLayer):
            if layer_names is not None and path not in layer_names:
                continue
            output = read(layer, *keras_internals.call_arguments(model, layer))
            if output is not None:
                outputs[path] = output
        elif _contains_fusion(layer):
            child = _fusion_readout(layer, layer_names, read, suffix, prefix=path + "/")
            if child is not None:
                args, _ = keras_internals.call_arguments(model, layer)
                outputs.update(child(args[0]))
    if not outputs:
        return None
    return keras.Model(model.input, outputs, name=f"{model.name}_{suffix}")


class FusionProbe:
    """Reads the weights of every fusion layer of a functional model, in batches.

    Built once per model around its `fusion_explainer`; calling it returns
    NumPy arrays computed in inference mode (`training=False`).

    Args:
        model: a functional `keras.Model`.
        layer_names: optional names of the fusion layers to read (top-level
            names, or `"nested_model/layer"` paths); default: all of them.

    Attributes:
        layers: dict path -> `FusionLayer` of the layers read, where path is
            the layer name, prefixed by `"nested_model/"` for nested models.
        explainer: the `fusion_explainer` of `model` (None if no layer read
            has weights).

    Example:

    >>> import numpy as np
    >>> from mmfusion.fusion import GMU
    >>> a, b = keras.Input((3,)), keras.Input((2,))
    >>> probe = FusionProbe(keras.Model([a, b], GMU(4, name="gmu")([a, b])))
    >>> weights = probe([np.ones((5, 3)), np.ones((5, 2))])
    >>> list(weights), weights["gmu"]["gates"].shape
    (['gmu'], (5, 2, 4))
    """

    def __init__(self, model, layer_names=None):
        self.model = model
        self.layers = {path: layer for path, layer in _fusion_layers(model)
                       if layer_names is None or path in layer_names}
        self.explainer = fusion_explainer(model, list(self.layers)) if self.layers else None
        self._presence = _fusion_presence(model, list(self.layers)) if self.layers else None

    def __call__(self, inputs, batch_size=256):
        """Returns dict path -> weights dict of NumPy arrays for `inputs`
        (what the model takes: arrays, or a dict or list of arrays), computed
        in batches of `batch_size` examples."""
        result = {path: {} for path in self.layers}
        result.update(_in_batches(self.explainer, inputs, batch_size))
        return result

    def presence(self, inputs, batch_size=256):
        """dict path -> `(n, N_layer)` 0/1 presence mask each fusion layer
        gets on `inputs` (in its modality order; all ones for a layer called
        without a mask), so statistics can be taken over present rows."""
        size = len(keras.tree.flatten(inputs)[0])
        result = {path: np.ones((size, len(layer.modality_names)), "float32")
                  for path, layer in self.layers.items()}
        result.update(_in_batches(self._presence, inputs, batch_size))
        return result


def _in_batches(reader, inputs, batch_size):
    """`reader(inputs)` as NumPy, computed `batch_size` rows at a time
    (inference mode) and concatenated; {} for no reader."""
    if reader is None:
        return {}
    size = len(keras.tree.flatten(inputs)[0])
    parts = [keras.tree.map_structure(keras.ops.convert_to_numpy, reader(
                 keras.tree.map_structure(lambda a: np.asarray(a)[i:i + batch_size], inputs),
                 training=False))
             for i in range(0, size, batch_size)]
    return keras.tree.map_structure(lambda *arrays: np.concatenate(arrays), *parts)


def _fusion_layers(model, prefix=""):
    """`(path, layer)` of every fusion layer of a functional model, nested ones
    included; raises a clear error for models without a graph."""
    found = []
    for layer in model.layers:
        path = prefix + layer.name
        if isinstance(layer, FusionLayer):
            keras_internals.call_arguments(model, layer)
            found.append((path, layer))
        elif _contains_fusion(layer):
            keras_internals.call_arguments(model, layer)
            found.extend(_fusion_layers(layer, path + "/"))
    return found


def fusion_weights(model, layer_name, inputs, batch_size=256):
    """The `weights_dict` of fusion layer `layer_name` on `inputs`.

    Reads it with a `FusionProbe` (through `fusion_explainer`), so the layer
    gets the same `presence` mask it gets inside the model.

    Args:
        model: a functional `keras.Model` that contains the fusion layer.
        layer_name: the fusion layer's name (`"nested_model/layer"` for a
            layer inside a nested functional model).
        inputs: what `model.predict` takes.
        batch_size: number of examples computed at once.

    Returns:
        Dict of NumPy arrays, e.g. `{"gates": (n, N, units)}` for a GMU.

    Example:

    >>> import numpy as np
    >>> from mmfusion.fusion import WeightedSum
    >>> a, b = keras.Input((3,)), keras.Input((3,))
    >>> model = keras.Model([a, b], WeightedSum(name="ws")([a, b]))
    >>> fusion_weights(model, "ws", [np.ones((2, 3)), np.ones((2, 3))])["modality_weights"]
    array([[0.5, 0.5],
           [0.5, 0.5]], dtype=float32)
    """
    probe = FusionProbe(model, layer_names=[layer_name])
    if layer_name not in probe.layers:
        raise ValueError(f"fusion_weights: model '{model.name}' has no fusion layer '{layer_name}'.")
    return probe(inputs, batch_size=batch_size)[layer_name]


def _input_names(model):
    struct = model.input
    if isinstance(struct, dict):
        return list(struct)
    return [t.name for t in keras.tree.flatten(struct)]


def _get_input(x, names, name):
    return x[name] if isinstance(x, dict) else x[names.index(name)]


def _with_input(x, names, name, value):
    """A shallow copy of `x` (dict by name, or list in `names` order) with input `name` replaced."""
    if isinstance(x, dict):
        return {**x, name: value}
    x = list(x)
    x[names.index(name)] = value
    return x


def batch_metric(model, x, y, metric=None):
    """A compiled metric of `model` on one batch, from `model.test_on_batch`
    (which resets the model's metrics first).

    Args:
        model: a compiled `keras.Model`.
        x, y: the batch.
        metric: name of the compiled metric (e.g. `"accuracy"`); default:
            the first compiled metric, else `"loss"`.

    Returns:
        `(name, value)`: the metric's name and its value, a float.

    Example:

    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    >>> model.set_weights([np.ones((1, 1))])
    >>> model.compile(loss="mse", metrics=["mae"])
    >>> batch_metric(model, np.full((2, 1), 3.0), np.ones((2, 1)))
    ('mae', 2.0)
    """
    logs = model.test_on_batch(x, y, return_dict=True)
    metric = metric or next((k for k in logs if k != "loss"), "loss")
    if metric not in logs:
        raise ValueError(f"model '{model.name}' has no compiled metric '{metric}'; "
                         f"its metrics: {sorted(logs)}.")
    return metric, float(logs[metric])


def modality_ablation(model, x, y, metric=None, presence="presence"):
    """The model's metric with each modality in turn marked absent, and with
    each modality alone present.

    A modality is marked absent through the model's `presence` input when it
    has one (its column set to 0; the columns follow the order of the other
    inputs, as in `mmfusion.compose.build_fusion_model`; with a dict of
    columns, `presence="dict"`, its entry set to 0), else by zeroing
    that modality's input. Modalities are the model's inputs other than
    `presence`. Each value comes from `model.test_on_batch`, which resets the
    model's metrics.

    Args:
        model: a compiled `keras.Model` with one input per modality.
        x: dict input name -> array, or a list in the order of the model's inputs.
        y: the targets.
        metric: name of the compiled metric to report (e.g. `"accuracy"`);
            default: the first compiled metric, else `"loss"`.
        presence: name of the presence input.

    Returns:
        Dict with `"metric"` (its name), `"all"` (value with every modality),
        `"without"` (dict modality -> value with that modality absent) and
        `"only"` (dict modality -> value with every other modality absent).

    Example:

    >>> import numpy as np
    >>> from mmfusion.fusion import WeightedSum
    >>> a, b = keras.Input((1,), name="a"), keras.Input((1,), name="b")
    >>> model = keras.Model({"a": a, "b": b}, WeightedSum(name="ws")([a, b]))
    >>> model.compile(loss="mse")
    >>> x = {"a": np.full((4, 1), 2.0), "b": np.zeros((4, 1))}
    >>> result = modality_ablation(model, x, np.ones((4, 1)))
    >>> result["metric"], result["all"], result["without"], result["only"]
    ('loss', 0.0, {'a': 1.0, 'b': 0.0}, {'a': 0.0, 'b': 1.0})
    """
    names = _input_names(model)
    modalities = [n for n in names if n != presence]

    def score(kept):
        """The metric with only the modalities in `kept` present."""
        data = x
        if presence in names:
            given = _get_input(x, names, presence)
            if isinstance(given, dict):  # build_fusion_model(presence="dict")
                value = {name: column if name in kept
                         else np.zeros_like(np.asarray(column, "float32"))
                         for name, column in given.items()}
            else:
                value = np.array(given, dtype="float32")
                for i, name in enumerate(modalities):
                    if name not in kept:
                        value[:, i] = 0.0
            data = _with_input(data, names, presence, value)
        else:
            for name in modalities:
                if name not in kept:
                    data = _with_input(data, names, name, np.zeros_like(_get_input(x, names, name)))
        return batch_metric(model, data, y, metric)[1]

    metric, full = batch_metric(model, x, y, metric)
    return {"metric": metric, "all": full,
            "without": {m: score(set(modalities) - {m}) for m in modalities},
            "only": {m: score({m}) for m in modalities}}
