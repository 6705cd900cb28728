"""Fusion layers. Every layer is a `FusionLayer` and is registered by name.

>>> from mmfusion import fusion
>>> "gmu" in fusion.available()
True
"""

from mmfusion.fusion.base import FusionLayer, mask_inputs, masked_softmax, renormalize
from mmfusion.fusion.gated import GMU
from mmfusion.fusion.registry import available, get, get_class, register
from mmfusion.fusion.simple import Concatenate, WeightedSum
