"""Inspection of what fusion layers learned."""

from mmfusion.inspect.callbacks import FusionInspector
from mmfusion.inspect.probe import FusionProbe, fusion_explainer, fusion_weights, modality_ablation

__all__ = ["FusionInspector", "FusionProbe", "fusion_explainer", "fusion_weights",
           "modality_ablation"]
