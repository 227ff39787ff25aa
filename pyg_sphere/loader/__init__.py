"""Loaders for batches of HEALPix samples."""

from .shared_graph_loader import SharedGraphCollater, SharedGraphLoader

__all__ = ["SharedGraphLoader", "SharedGraphCollater"]
