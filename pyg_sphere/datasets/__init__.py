"""Datasets of HEALPix maps, and simulators of convergence maps in the format they read."""

from .convergence_maps import ConvergenceMaps
from .convergence_spectra import PRIOR_BOX, convergence_cl, lognormal_shift
from .design_arrays import FisherArrays, PriorArrays, fisher_arrays, prior_arrays
from .designs import latin_hypercube, simulate_fisher_maps, simulate_prior_maps
from .footprints import apply_mask, band_with_holes, cap_mask, stripe_mask, survey_footprint
from .lognormal_maps import simulate_convergence_maps, simulate_cosmology_map
from .simulation_streams import FisherStream, PriorStream, fiducial_patch_std
from .tomography import SourceBins, simulate_tomographic_maps, smail_bins, tomographic_cl

__all__ = [
    "ConvergenceMaps",
    "simulate_convergence_maps",
    "simulate_cosmology_map",
    "PRIOR_BOX",
    "convergence_cl",
    "lognormal_shift",
    "latin_hypercube",
    "simulate_prior_maps",
    "simulate_fisher_maps",
    "FisherStream",
    "PriorStream",
    "fiducial_patch_std",
    "FisherArrays",
    "PriorArrays",
    "fisher_arrays",
    "prior_arrays",
    "SourceBins",
    "smail_bins",
    "tomographic_cl",
    "simulate_tomographic_maps",
    "cap_mask",
    "stripe_mask",
    "band_with_holes",
    "survey_footprint",
    "apply_mask",
]
