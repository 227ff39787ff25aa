"""Datasets of HEALPix maps."""
from .convergence_maps import ConvergenceMaps

__all__ = ['ConvergenceMaps']
