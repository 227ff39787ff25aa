"""Neural network layers for HEALPix maps that plug into PyTorch Geometric."""

from .conv import ChebyshevOperator, SphericalChebConv
from .models import DeepSphere, SphericalUNet
from .pool import HealpixPool, HealpixUnpool

__all__ = [
    "SphericalChebConv",
    "ChebyshevOperator",
    "HealpixPool",
    "HealpixUnpool",
    "DeepSphere",
    "SphericalUNet",
]
