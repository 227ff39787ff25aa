"""Neural network layers for HEALPix maps that plug into PyTorch Geometric."""
from .conv import SphericalChebConv
from .pool import HealpixPool, HealpixUnpool
from .models import DeepSphere, SphericalUNet

__all__ = ['SphericalChebConv', 'HealpixPool', 'HealpixUnpool', 'DeepSphere', 'SphericalUNet']
