"""Graph convolutions on the sphere."""

from .spherical_cheb_conv import SphericalChebConv

__all__ = ["SphericalChebConv"]
