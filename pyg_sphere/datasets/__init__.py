"""Datasets of HEALPix maps, and a simulator of convergence maps in the format they read."""

from .convergence_maps import ConvergenceMaps
from .lognormal_maps import simulate_convergence_maps

__all__ = ["ConvergenceMaps", "simulate_convergence_maps"]
