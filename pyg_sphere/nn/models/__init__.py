"""DeepSphere models: classification and regression of maps, per-pixel prediction."""

from .deepsphere import DeepSphere
from .spherical_unet import SphericalUNet

__all__ = ["DeepSphere", "SphericalUNet"]
