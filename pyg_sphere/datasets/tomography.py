r"""Tomographic weak-lensing simulations: correlated convergence maps in several source bins.

Cosmic shear surveys split their galaxies by redshift into bins; the convergence maps of the
bins are correlated (their lensing kernels overlap), and their auto- and cross-spectra
together carry more information on :math:`(\Omega_m, \sigma_8)` than one map of all galaxies.
This module makes such maps:

1. **Bins.** :func:`smail_nz` is a Smail-type distribution :math:`n(z) \propto z^\alpha
   e^{-(z/z_0)^\beta}`; :func:`equipopulated_bins` (or :func:`smail_bins`) splits it into bins
   of equal galaxy numbers, optionally with Gaussian photo-z scatter. :class:`SourceBins`
   holds any n(z)s of your own.
2. **Spectra.** :func:`tomographic_cl`: every auto- and cross-spectrum
   :math:`C_\ell^{ij}` from pyccl (one ``WeakLensingTracer`` per bin, ``angular_cl`` per
   pair; the physics of the single-bin tables: Eisenstein & Hu, halofit, Limber) at any
   (Omega_m, sigma_8). Needs the ``[cosmo]`` extra; spectra are cached by value.
3. **Lognormal fields that keep the cross-correlations** (as FLASK and GLASS do):
   :math:`\kappa_i = \lambda_i (e^{g_i - \sigma_i^2/2} - 1)` with correlated Gaussian fields
   :math:`g_i`, whose spectra :math:`C^{G,ij}_\ell` follow from
   :math:`\xi^G_{ij} = \ln(1 + \xi_{ij}/(\lambda_i\lambda_j))` for every pair
   (:func:`lognormal_gaussian_cls`). The shifts :math:`\lambda_i` (:func:`lognormal_shifts`)
   extend the single-bin definition to each bin's n(z). The coefficients are drawn with the
   Cholesky factor of the :math:`n \times n` matrix :math:`C^G_\ell` at each multipole; where
   that matrix is not positive definite its negative eigenvalues are clipped to 0 (with a
   warning when it matters, :func:`correlated_gaussian_alm`).
4. **Shape noise** in physical units: white noise of standard deviation
   :math:`\sigma_e / \sqrt{n_{gal,i}\,\Omega_{pix}}` in bin :math:`i`
   (:func:`shape_noise_std`), :math:`n_{gal,i}` the bin's share of the galaxies per arcmin^2.

:func:`simulate_tomographic_maps` does all of it at once, and with ``gaussian=True`` makes the
Gaussian twins: Gaussian maps with the same auto- and cross-spectra. Randomness comes only
from :class:`numpy.random.Generator` objects; maps of different cosmologies drawn from
generators in the same state share their realisation (common random numbers).

The spectra of the maps are those of the targets up to the pixelisation of the lognormal
transform, which loses a little power towards the band limit :math:`3 n_{side}`: use
:math:`\ell \le 2 n_{side}` (as the power-spectrum summaries do).
"""

from __future__ import annotations

import numpy as np

from .._lazy import lazy
from .._validate import as_generator, check_int, check_nside
from ..cache import memoize
from ._tomography_bins import SourceBins, equipopulated_bins, smail_bins, smail_nz
from ._tomography_fields import (
    _check_shifts,
    _factor_checked,
    _maps_from_factor,
    correlated_gaussian_alm,
    lognormal_gaussian_cls,
    tomographic_gaussian_maps,
    tomographic_lognormal_maps,
)
from ._tomography_spectra import (
    _check_bins,
    _check_cosmo,
    _lognormal_shifts,
    _tomographic_cl,
    bin_densities,
    lognormal_shifts,
    shape_noise_cl,
    shape_noise_std,
    tomographic_cl,
)

hp = lazy("healpy")

__all__ = [
    "SourceBins",
    "smail_nz",
    "equipopulated_bins",
    "smail_bins",
    "tomographic_cl",
    "lognormal_shifts",
    "bin_densities",
    "shape_noise_std",
    "shape_noise_cl",
    "tomographic_noise_cl",
    "lognormal_gaussian_cls",
    "correlated_gaussian_alm",
    "tomographic_gaussian_maps",
    "tomographic_lognormal_maps",
    "simulate_tomographic_maps",
]


@memoize("tomographic_factor", limit=64 << 20)
def _factor(omega_m, sigma_8, lmax, bins, shifts, gaussian) -> np.ndarray:
    """Cholesky factors of the (Gaussian) spectrum matrices of a cosmology, read-only."""
    cl = _tomographic_cl(omega_m, sigma_8, lmax, bins)
    if not gaussian:
        cl = lognormal_gaussian_cls(cl, np.array(shifts))
    factor = _factor_checked(cl)
    factor.flags.writeable = False
    return factor


def tomographic_noise_cl(bins: SourceBins, sigma_e, n_gal) -> np.ndarray:
    """Shape-noise spectrum of each bin (:func:`shape_noise_cl`) for a total galaxy density
    ``n_gal`` per arcmin^2 split by ``bins.fractions`` (or one density per bin).

    Returns:
        float64 array ``[n_bins]``, in steradians.

    Example:
        >>> one, four = tomographic_noise_cl(smail_bins(1), 0.26, 30), tomographic_noise_cl(
        ...     smail_bins(4), 0.26, 30)
        >>> bool(np.allclose(four, 4 * one[0], rtol=1e-2))
        True
    """
    return shape_noise_cl(sigma_e, bin_densities(bins, n_gal))


def simulate_tomographic_maps(
    nside: int,
    omega_m: float,
    sigma_8: float,
    bins: SourceBins,
    *,
    rng=0,
    gaussian: bool = False,
    sigma_e: float = 0.0,
    n_gal=None,
    shifts=None,
    lmax: int | None = None,
    nest: bool = False,
) -> np.ndarray:
    r"""Correlated convergence maps of the tomographic ``bins`` at (Omega_m, sigma_8).

    Shifted-lognormal maps with the pyccl auto- and cross-spectra (:func:`tomographic_cl`)
    and the shifts :func:`lognormal_shifts` (or ``shifts``), or with ``gaussian=True`` their
    Gaussian twins, plus shape noise when ``sigma_e > 0``. The spectra's Cholesky factors are
    cached per cosmology. The generator draws the unit harmonic coefficients first, then the
    noise, so generators in the same state give the same realisation at every cosmology.

    Args:
        nside: HEALPix resolution (power of two).
        omega_m: matter density parameter, in (0.05, 1).
        sigma_8: amplitude of matter fluctuations, in (0, 3).
        bins: the source bins, e.g. ``smail_bins(4)``.
        rng: a :class:`numpy.random.Generator` or an integer seed for one.
        gaussian: Gaussian maps with the same spectra instead of lognormal ones.
        sigma_e: ellipticity dispersion per component (e.g. 0.26; a number or one per bin);
            0 (default) adds no noise.
        n_gal: galaxy density per arcmin^2: the total, split by ``bins.fractions``, or one per
            bin; needed when ``sigma_e > 0``.
        shifts: the lognormal shifts ``[n_bins]`` (default :func:`lognormal_shifts`).
        lmax: band limit of the fields (default ``3 * nside - 1``).
        nest: NESTED ordering (default RING).

    Returns:
        float64 array ``[n_bins, 12 * nside**2]`` of convergence values.

    Example:
        >>> bins = smail_bins(2)
        >>> m = simulate_tomographic_maps(16, 0.31, 0.82, bins, rng=0, sigma_e=0.26, n_gal=30)
        >>> g = simulate_tomographic_maps(16, 0.31, 0.82, bins, rng=0, gaussian=True)
        >>> m.shape, bool(np.corrcoef(g)[0, 1] > 0.5)
        ((2, 3072), True)
    """
    nside = check_nside(nside)
    omega_m, sigma_8 = _check_cosmo(omega_m, sigma_8)
    bins = _check_bins(bins)
    rng = as_generator(rng)
    lmax = 3 * nside - 1 if lmax is None else check_int("lmax", lmax, 2)
    sig = np.asarray(sigma_e, dtype=np.float64)
    if not np.all(np.isfinite(sig)) or np.any(sig < 0):
        raise ValueError(
            f"sigma_e must be a non-negative ellipticity dispersion (e.g. 0.26), got {sigma_e!r}"
        )
    noisy = bool(np.any(sig > 0))
    if noisy and n_gal is None:
        raise ValueError(
            "sigma_e > 0 adds shape noise, whose level needs the galaxy density: give n_gal "
            "(galaxies per arcmin^2, e.g. 30), or set sigma_e=0 for noiseless maps"
        )
    std = None if n_gal is None else shape_noise_std(nside, sigma_e, bin_densities(bins, n_gal))
    if gaussian:
        shifts = None
    elif shifts is None:
        shifts = _lognormal_shifts(omega_m, bins)
    else:
        shifts = _check_shifts(shifts, bins.n_bins)
    key = None if shifts is None else tuple(float(s) for s in shifts)
    factor = _factor(omega_m, sigma_8, lmax, bins, key, bool(gaussian))
    maps = _maps_from_factor(factor, nside, rng, None if gaussian else np.asarray(key))
    if noisy:
        maps += std[:, None] * rng.standard_normal(maps.shape)
    return hp.reorder(maps, r2n=True) if nest else maps
