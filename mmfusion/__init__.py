"""mmfusion: multimodal fusion layers, branches, composition, search and inspection for Keras 3.

Submodules load on first use (`mmfusion.fusion`, `mmfusion.get`, ...), so
that `import mmfusion` and the `mmfusion` command do not import Keras until
needed. To reload a saved model, use `mmfusion.load_model(path)`: it first
imports every module whose layers can appear in a saved mmfusion model, so
Keras finds them (a bare `keras.saving.load_model` needs `mmfusion.fusion`,
`mmfusion.compose` and `mmfusion.branches` imported first).
"""

import importlib

__version__ = "0.1.0"

__all__ = ["FusionLayer", "available", "fusion", "get", "load_model"]

# Modules that register the serializable layers of saved mmfusion models.
_SERIALIZABLE_MODULES = ("mmfusion.fusion", "mmfusion.compose", "mmfusion.branches",
                         "mmfusion.inspect", "mmfusion.search.features")


def load_model(path, **kwargs):
    """`keras.saving.load_model(path, **kwargs)` with every mmfusion layer registered.

    Example:

    >>> import keras, numpy as np
    >>> from mmfusion.fusion import GMU
    >>> a, b = keras.Input((3,)), keras.Input((4,))
    >>> path = str(getfixture("tmp_path") / "gmu.keras")
    >>> keras.Model([a, b], GMU(units=2)([a, b])).save(path)
    >>> type(load_model(path).layers[-1]).__name__
    'GMU'
    """
    for module in _SERIALIZABLE_MODULES:
        importlib.import_module(module)
    import keras

    return keras.saving.load_model(path, **kwargs)


def __getattr__(name):
    if name == "fusion":
        return importlib.import_module("mmfusion.fusion")
    if name in ("FusionLayer", "available", "get"):
        return getattr(importlib.import_module("mmfusion.fusion"), name)
    raise AttributeError(f"module 'mmfusion' has no attribute '{name}'")
