"""mmfusion: multimodal fusion layers, branches, composition, search and inspection for Keras 3.

Submodules load on first use (`mmfusion.fusion`, `mmfusion.get`, ...), so
that `import mmfusion` and the `mmfusion` command do not import Keras until
needed. Import `mmfusion.fusion` (or any module that uses it) before
`keras.saving.load_model` of a model with mmfusion layers: importing it
registers them with Keras.
"""

import importlib

__version__ = "0.1.0"

__all__ = ["FusionLayer", "available", "fusion", "get"]


def __getattr__(name):
    if name == "fusion":
        return importlib.import_module("mmfusion.fusion")
    if name in __all__:
        return getattr(importlib.import_module("mmfusion.fusion"), name)
    raise AttributeError(f"module 'mmfusion' has no attribute '{name}'")
