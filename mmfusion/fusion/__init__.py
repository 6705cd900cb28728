"""Fusion layers. Every layer is a `FusionLayer` and is registered by name.

>>> from mmfusion import fusion
>>> "gmu" in fusion.available()
True
"""

from mmfusion.fusion.adaptive import AutoFusion, GANFusion
from mmfusion.fusion.attention import (
    AttentionPooling,
    BilinearAttention,
    CoAttention,
    CrossModalAttention,
    StackedAttention,
)
from mmfusion.fusion.base import (
    FusionLayer,
    SequenceFusionLayer,
    constructor_config,
    dense,
    fresh_initializer,
    large_negative,
    mask_inputs,
    masked_mean,
    masked_softmax,
    renormalize,
    softmax_over_valid,
)
from mmfusion.fusion.bilinear import BLOCK, MCB, MFB, MFH, MLB, MUTAN, Tucker
from mmfusion.fusion.dropout import ModalityDropout
from mmfusion.fusion.gated import GMU
from mmfusion.fusion.registry import available, get, get_class, register
from mmfusion.fusion.sets import MultimodalSets
from mmfusion.fusion.simple import Concatenate, WeightedSum
from mmfusion.fusion.tensor import LMF, TFN

__all__ = [
    "BLOCK", "GMU", "LMF", "MCB", "MFB", "MFH", "MLB", "MUTAN", "TFN",
    "AttentionPooling", "AutoFusion", "BilinearAttention", "CoAttention", "Concatenate",
    "CrossModalAttention", "FusionLayer", "GANFusion", "ModalityDropout", "MultimodalSets",
    "SequenceFusionLayer", "StackedAttention", "Tucker", "WeightedSum",
    "available", "constructor_config", "dense", "fresh_initializer", "get", "get_class",
    "large_negative", "mask_inputs", "masked_mean", "masked_softmax", "register",
    "renormalize", "softmax_over_valid",
]
