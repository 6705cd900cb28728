"""Inspection of what fusion layers learned."""

from mmfusion.inspect.probe import fusion_weights
