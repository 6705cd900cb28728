"""Multimodal datasets: synthetic tasks and real data loaders."""
