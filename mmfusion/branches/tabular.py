"""Tabular branch: a multilayer perceptron."""

import keras

from mmfusion.branches.common import VECTOR_TAP, dense_stack

__all__ = ["tabular_mlp"]


def tabular_mlp(input_dim, units=(64, 32), dropout=0.0, activation="relu", name="tabular"):
    """A multilayer perceptron branch whose hidden layers are named taps.

    Taps (the model's outputs, a dict name -> tensor):
    - `dense_i` (i = 1..len(units)-1): `(batch, units[i-1])`.
    - `vector`: `(batch, units[-1])`, the last layer.

    Args:
        input_dim: number of input features.
        units: sizes of the dense layers (at least one).
        dropout: dropout rate after each layer (0: none).
        activation: activation of every layer.
        name: name of the input (the modality); the model is `{name}_branch`.

    Returns:
        A functional `keras.Model` from `(batch, input_dim)` to the dict of taps.

    Example:

    >>> import numpy as np
    >>> branch = tabular_mlp(5, units=(8, 4))
    >>> {k: tuple(v.shape) for k, v in branch(np.zeros((3, 5))).items()}
    {'dense_1': (3, 8), 'vector': (3, 4)}
    """
    if not units:
        raise ValueError("tabular_mlp: `units` needs at least one layer size.")
    inputs = keras.Input(shape=(input_dim,), name=name)
    x, taps = dense_stack(inputs, units, dropout, prefix=name, activation=activation)
    taps[VECTOR_TAP] = taps.pop(f"dense_{len(units)}")
    return keras.Model(inputs, taps, name=f"{name}_branch")
