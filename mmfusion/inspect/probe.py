"""Reading a fusion layer's learned weighting (gates, modality weights,
attention maps) out of a trained model."""

import keras


def fusion_weights(model, layer_name, inputs, batch_size=256):
    """The `weights_dict` of fusion layer `layer_name` on `inputs`.

    A sub-model computes the layer's inputs once; the layer is then called on
    them with `return_weights=True`. (Building one functional model that
    returns the weights of a layer already used in `model` is not possible:
    Keras 3.15 cannot connect the extra outputs of a second call of a layer,
    as with `MultiHeadAttention(..., return_attention_scores=True)`.)

    Args:
        model: a functional `keras.Model` that contains the fusion layer once.
        layer_name: the fusion layer's name.
        inputs: what `model.predict` takes.
        batch_size: batch size of the sub-model's prediction.

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
    layer = model.get_layer(layer_name)
    layer_inputs = keras.Model(model.input, layer.input).predict(
        inputs, batch_size=batch_size, verbose=0
    )
    _, weights = layer(layer_inputs, return_weights=True)
    return {k: keras.ops.convert_to_numpy(v) for k, v in weights.items()}
