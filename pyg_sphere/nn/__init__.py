"""Neural network layers for HEALPix maps that plug into PyTorch Geometric."""
from .conv import SphericalChebConv

__all__ = ['SphericalChebConv']
