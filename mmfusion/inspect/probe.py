"""Reading a fusion layer's learned weighting (gates, modality weights,
attention maps) out of a trained model."""

import keras
import numpy as np

from mmfusion.compose import PRESENCE
from mmfusion.fusion.base import FusionLayer

__all__ = ["FusionProbe", "fusion_weights", "modality_ablation"]


def _contains_fusion(layer):
    if isinstance(layer, FusionLayer):
        return True
    return isinstance(layer, keras.Model) and any(_contains_fusion(sub) for sub in layer.layers)


def _own_node(model, layer):
    """The node of `layer`'s call inside `model`'s graph (its first one there)."""
    keys = getattr(model, "_nodes", ())
    for index, node in enumerate(layer._inbound_nodes):
        if f"{id(layer)}_ib-{index}" in keys:
            return node
    raise ValueError(
        f"FusionProbe: layer '{layer.name}' is not called in the graph of model "
        f"'{model.name}'; only functional models (and functional models nested "
        "in them) can be probed."
    )


class FusionProbe:
    """Reads the weights of every fusion layer of a functional model.

    Built once per model: for the model and for every functional model nested
    in it that holds fusion layers, a sub-model computes, in one pass, the
    arguments of each fusion layer's call (its modality tensors and its
    `presence`, `element_mask`, ... keyword arguments); each fusion layer is
    then called on them eagerly with `return_weights=True`. (One functional
    model returning the weights directly is not possible: Keras 3.15 cannot
    connect the extra outputs of a second call of a layer already used in a
    model, as with `MultiHeadAttention(..., return_attention_scores=True)`.)
    A layer called more than once is read at its first call in the graph.

    Args:
        model: a functional `keras.Model`.
        layer_names: optional names of the fusion layers to read (top-level
            names, or `"nested_model/layer"` paths); default: all of them.

    Attributes:
        layers: dict path -> `FusionLayer` of the layers read, where path is
            the layer name, prefixed by `"nested_model/"` for nested models.

    Example:

    >>> import numpy as np
    >>> from mmfusion.fusion import GMU
    >>> a, b = keras.Input((3,)), keras.Input((2,))
    >>> probe = FusionProbe(keras.Model([a, b], GMU(4, name="gmu")([a, b])))
    >>> weights = probe([np.ones((5, 3)), np.ones((5, 2))])
    >>> list(weights), weights["gmu"]["gates"].shape
    (['gmu'], (5, 2, 4))
    """

    def __init__(self, model, layer_names=None, _prefix=""):
        self.model = model
        self.layers = {}
        self._children = {}
        self._targets = []
        for layer in model.layers:
            path = _prefix + layer.name
            if isinstance(layer, FusionLayer):
                if layer_names is None or path in layer_names:
                    self.layers[path] = layer
                    self._targets.append((path, layer, _own_node(model, layer)))
            elif _contains_fusion(layer):
                child = FusionProbe(layer, layer_names, _prefix=path + "/")
                if child.layers:
                    self.layers.update(child.layers)
                    self._children[path] = child
                    self._targets.append((path, layer, _own_node(model, layer)))
        tensors = {}
        for _, _, node in self._targets:
            tensors.update((id(t), t) for t in node.arguments.keras_tensors)
        self._tensor_ids = list(tensors)
        self._submodel = keras.Model(
            model.input, {str(i): t for i, t in enumerate(tensors.values())}
        ) if tensors else None

    def __call__(self, inputs, batch_size=256):
        """Returns dict path -> weights dict of NumPy arrays for `inputs`
        (what the model takes: arrays, or a dict or list of arrays), computed
        in batches of `batch_size` examples."""
        size = len(keras.tree.flatten(inputs)[0])
        parts = [
            self._weights(keras.tree.map_structure(lambda a: np.asarray(a)[i:i + batch_size], inputs))
            for i in range(0, size, batch_size)
        ]
        return {path: {key: np.concatenate([part[path][key] for part in parts])
                       for key in weights}
                for path, weights in parts[0].items()}

    def _weights(self, batch):
        if self._submodel is None:
            return {}
        values = self._submodel(batch, training=False)
        values = {key: values[str(i)] for i, key in enumerate(self._tensor_ids)}
        result = {}
        for path, layer, node in self._targets:
            args, kwargs = node.arguments.fill_in(values)
            if path in self._children:
                result.update(self._children[path]._weights(args[0]))
            else:
                _, weights = layer(*args, **{**kwargs, "return_weights": True, "training": False})
                result[path] = {k: keras.ops.convert_to_numpy(v) for k, v in weights.items()}
        return result


def fusion_weights(model, layer_name, inputs, batch_size=256):
    """The `weights_dict` of fusion layer `layer_name` on `inputs`.

    Reads it with a `FusionProbe` (see there why a probe is needed), so the
    layer gets the same `presence` mask it gets inside the model.

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


def modality_ablation(model, x, y, metric=None, presence=PRESENCE):
    """The model's metric with each modality in turn marked absent.

    A modality is marked absent through the model's `presence` input when it
    has one (its column set to 0; the columns follow the order of the other
    inputs, as in `mmfusion.compose.build_fusion_model`), else by zeroing
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
        Dict with `"metric"` (its name), `"all"` (value with every modality)
        and `"without"` (dict modality -> value with that modality absent).

    Example:

    >>> import numpy as np
    >>> from mmfusion.fusion import WeightedSum
    >>> a, b = keras.Input((1,), name="a"), keras.Input((1,), name="b")
    >>> model = keras.Model({"a": a, "b": b}, WeightedSum(name="ws")([a, b]))
    >>> model.compile(loss="mse")
    >>> x = {"a": np.full((4, 1), 2.0), "b": np.zeros((4, 1))}
    >>> result = modality_ablation(model, x, np.ones((4, 1)))
    >>> result["metric"], result["all"], result["without"]
    ('loss', 0.0, {'a': 1.0, 'b': 0.0})
    """
    names = _input_names(model)
    modalities = [n for n in names if n != presence]

    def score(data):
        return float(model.test_on_batch(data, y, return_dict=True)[metric])

    logs = model.test_on_batch(x, y, return_dict=True)
    metric = metric or next((k for k in logs if k != "loss"), "loss")
    without = {}
    for i, name in enumerate(modalities):
        if presence in names:
            target, value = presence, np.array(_get_input(x, names, presence), dtype="float32")
            value[:, i] = 0.0
        else:
            target, value = name, np.zeros_like(_get_input(x, names, name))
        without[name] = score(_with_input(x, names, target, value))
    return {"metric": metric, "all": float(logs[metric]), "without": without}
