"""mmfusion: multimodal fusion layers, branches, composition, search and inspection for Keras 3."""

__version__ = "0.1.0"

from mmfusion import fusion  # noqa: E402
from mmfusion.fusion import FusionLayer, available, get  # noqa: E402

__all__ = ["FusionLayer", "available", "fusion", "get"]
