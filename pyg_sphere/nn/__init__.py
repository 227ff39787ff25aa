"""Neural network layers for HEALPix maps that plug into PyTorch Geometric."""

from .conv import SphericalChebConv
from .models import DeepSphere, SphericalUNet
from .pool import HealpixPool, HealpixUnpool

__all__ = ["SphericalChebConv", "HealpixPool", "HealpixUnpool", "DeepSphere", "SphericalUNet"]
