"""Transforms of HEALPix samples (``torch_geometric.transforms.BaseTransform``)."""

from .add_noise import AddGaussianNoise

__all__ = ["AddGaussianNoise"]
