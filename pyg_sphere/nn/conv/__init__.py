"""Graph convolutions on the sphere, and the operator they share."""

from .chebyshev_operator import ChebyshevOperator
from .spherical_cheb_conv import SphericalChebConv

__all__ = ["SphericalChebConv", "ChebyshevOperator"]
