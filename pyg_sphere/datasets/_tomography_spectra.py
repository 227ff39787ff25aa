r"""Tomographic convergence spectra and lognormal shifts from pyccl, and shape noise.

Part of :mod:`pyg_sphere.datasets.tomography`, which re-exports these names. The physics is
that of the single-bin tables (``scripts/make_cl_table.py``): flat LCDM with h = 0.7,
n_s = 0.96, Omega_b = 0.05, the Eisenstein & Hu transfer function, halofit, Limber.
"""

from __future__ import annotations

import math

import numpy as np

from .._lazy import lazy
from .._validate import check_int, check_nside, check_positive, check_real
from ..cache import memoize
from ._tomography_bins import SourceBins

hp = lazy("healpy")

__all__ = [
    "tomographic_cl",
    "lognormal_shifts",
    "bin_densities",
    "shape_noise_std",
    "shape_noise_cl",
]

H, N_S, OMEGA_B = 0.7, 0.96, 0.05
# Millennium Simulation cosmology, the one Hilbert et al. (2011) fitted kappa_0 in
MILLENNIUM = dict(omega_m=0.25, h=0.73, omega_b=0.045)
# Multipoles up to which every C_ell is computed by pyccl; beyond, a spline in ln ell.
_DIRECT_LMAX = 400
ARCMIN2_PER_SR = (180 * 60 / math.pi) ** 2


def _check_cosmo(omega_m, sigma_8) -> tuple[float, float]:
    omega_m, sigma_8 = check_real("omega_m", omega_m), check_real("sigma_8", sigma_8)
    if not OMEGA_B < omega_m < 1:
        raise ValueError(
            f"omega_m={omega_m!r} must be in ({OMEGA_B}, 1): the baryon density is "
            f"{OMEGA_B} and the universe is flat"
        )
    if not 0 < sigma_8 < 3:
        raise ValueError(f"sigma_8={sigma_8!r} must be in (0, 3)")
    return omega_m, sigma_8


def _check_bins(bins) -> SourceBins:
    if not isinstance(bins, SourceBins):
        raise TypeError(
            f"bins must be a SourceBins (e.g. smail_bins(4) or SourceBins(z, nz)), got "
            f"{type(bins).__name__}"
        )
    return bins


def _cosmology(omega_m, sigma_8, *, h=H, omega_b=OMEGA_B):
    import pyccl as ccl

    return ccl.Cosmology(
        Omega_c=omega_m - omega_b,
        Omega_b=omega_b,
        h=h,
        sigma8=sigma_8,
        n_s=N_S,
        transfer_function="eisenstein_hu",
        matter_power_spectrum="halofit",
    )


def _ell_nodes(lmax: int) -> np.ndarray:
    if lmax <= _DIRECT_LMAX:
        return np.arange(2, lmax + 1)
    tail = np.round(np.geomspace(_DIRECT_LMAX, lmax, 120)).astype(np.int64)
    return np.unique(np.concatenate([np.arange(2, _DIRECT_LMAX), tail]))


@memoize("tomographic_cl", limit=64 << 20)
def _tomographic_cl(omega_m: float, sigma_8: float, lmax: int, bins: SourceBins) -> np.ndarray:
    import pyccl as ccl
    from scipy.interpolate import CubicSpline

    cosmo = _cosmology(omega_m, sigma_8)
    tracers = [ccl.WeakLensingTracer(cosmo, dndz=(bins.z, nz)) for nz in bins.nz]
    nodes = _ell_nodes(lmax).astype(np.float64)
    # pyccl's shear spectrum, converted to convergence: C^kk = C^gg [l(l+1)]^2 / ((l+2)!/(l-2)!)
    to_kappa = (nodes * (nodes + 1)) ** 2 / ((nodes + 2) * (nodes + 1) * nodes * (nodes - 1))
    ell = np.arange(2, lmax + 1, dtype=np.float64)
    n = bins.n_bins
    cl = np.zeros((n, n, lmax + 1))
    for i in range(n):
        for j in range(i, n):
            c = ccl.angular_cl(cosmo, tracers[i], tracers[j], nodes) * to_kappa
            if nodes.size != ell.size:
                c = np.exp(CubicSpline(np.log(nodes), np.log(c))(np.log(ell)))
            cl[i, j, 2:] = cl[j, i, 2:] = c
    cl.flags.writeable = False
    return cl


def tomographic_cl(omega_m: float, sigma_8: float, bins: SourceBins, lmax: int) -> np.ndarray:
    r"""All auto- and cross-spectra :math:`C_\ell^{\kappa_i\kappa_j}` of the convergence in
    tomographic source bins, from pyccl (needs the ``[cosmo]`` extra).

    One ``pyccl.WeakLensingTracer`` per bin and ``pyccl.angular_cl`` for every pair (Limber,
    halofit, Eisenstein & Hu), the shear spectra converted to convergence by
    :math:`[\ell(\ell+1)]^2 / [(\ell+2)(\ell+1)\ell(\ell-1)]`. Multipoles up to 400 are
    computed one by one; beyond, at 120 log-spaced multipoles and interpolated with a cubic
    spline in :math:`\ln\ell` (within 0.07% of pyccl up to :math:`\ell = 3000`). Cached per
    cosmology, bins and ``lmax`` (value-keyed); a first call costs about a second per
    cosmology.

    Args:
        omega_m: matter density parameter, in (0.05, 1) (flat, Omega_b = 0.05).
        sigma_8: amplitude of matter fluctuations, in (0, 3).
        bins: the source bins (:func:`smail_bins`, :class:`SourceBins`).
        lmax: largest multipole, >= 2.

    Returns:
        float64 array ``[n_bins, n_bins, lmax + 1]``, symmetric in the first two axes, with
        :math:`C_0 = C_1 = 0`.

    Example:
        >>> from pyg_sphere.datasets.tomography import smail_bins
        >>> cl = tomographic_cl(0.31, 0.82, smail_bins(2), lmax=64)
        >>> cl.shape, bool(cl[1, 1, 30] > cl[0, 1, 30] > cl[0, 0, 30] > 0)
        ((2, 2, 65), True)
    """
    omega_m, sigma_8 = _check_cosmo(omega_m, sigma_8)
    lmax = check_int("lmax", lmax, 2)
    return _tomographic_cl(omega_m, sigma_8, lmax, _check_bins(bins)).copy()


def _hilbert_kappa0(z_s):
    """Lognormal convergence shift fitted by Hilbert, Hartlap & Schneider (2011), eq. 38."""
    return 0.008 * z_s + 0.029 * z_s**2 - 0.0079 * z_s**3 + 0.00065 * z_s**4


def _empty_beam(cosmo, bins: SourceBins) -> np.ndarray:
    """Empty-beam convergence depth int W(chi) dchi of each bin."""
    import pyccl as ccl

    out = []
    for nz in bins.nz:
        chi, w = ccl.tracers.get_lensing_kernel(cosmo, dndz=(bins.z, nz))
        out.append(float(np.sum(0.5 * (w[1:] + w[:-1]) * np.diff(chi))))
    return np.array(out)


@memoize("tomographic_reference_beam")
def _millennium_beam(bins: SourceBins) -> np.ndarray:
    """The empty-beam depths of the bins in the Millennium cosmology, the shifts' reference
    (once per bins: every cosmology of a prior design divides by them)."""
    reference = _cosmology(
        MILLENNIUM["omega_m"], 0.8, h=MILLENNIUM["h"], omega_b=MILLENNIUM["omega_b"]
    )
    return _empty_beam(reference, bins)


@memoize("tomographic_shifts")
def _lognormal_shifts(omega_m: float, bins: SourceBins) -> np.ndarray:
    here = _empty_beam(_cosmology(omega_m, 0.8), bins)
    shifts = _hilbert_kappa0(bins.mean_z) * here / _millennium_beam(bins)
    shifts.flags.writeable = False
    return shifts


def lognormal_shifts(omega_m: float, bins: SourceBins) -> np.ndarray:
    r"""Shift :math:`\lambda_i` of the shifted-lognormal convergence of each bin (the field's
    minimum is :math:`-\lambda_i`), from pyccl.

    The single-bin definition (:func:`~pyg_sphere.datasets.convergence_spectra.lognormal_shift`)
    per bin: :math:`\lambda_i = \kappa_0^{HHS11}(\bar z_i)\,\kappa_{empty}(\Omega_m; n_i) /
    \kappa_{empty}(\mathrm{Millennium}; n_i)`, with the Hilbert, Hartlap & Schneider (2011,
    eq. 38) fit at the bin's mean redshift and the empty-beam convergences
    :math:`\int W_i(\chi)\,d\chi` of the bin's n(z). Low-redshift bins get small shifts: they
    are the most non-Gaussian. Independent of sigma_8.

    Args:
        omega_m: matter density parameter, in (0.05, 1).
        bins: the source bins.

    Returns:
        float64 array ``[n_bins]``.

    Example:
        >>> from pyg_sphere.datasets.tomography import smail_bins
        >>> lognormal_shifts(0.31, smail_bins(3)).round(3).tolist()
        [0.012, 0.03, 0.059]
    """
    omega_m, _ = _check_cosmo(omega_m, 0.8)
    return _lognormal_shifts(omega_m, _check_bins(bins)).copy()


def _per_bin(name: str, value, n: int) -> np.ndarray:
    v = np.asarray(value, dtype=np.float64)
    if v.ndim == 0:
        v = np.full(n, float(v))
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be a number or {n} numbers (one per bin), got {value!r}")
    return v


def bin_densities(bins: SourceBins, n_gal) -> np.ndarray:
    """Galaxy density of each bin, per arcmin^2: a total ``n_gal`` split by ``bins.fractions``,
    or ``n_gal`` itself when it gives one density per bin.

    Raises:
        ValueError: a negative density, or a bin with no galaxies (density 0).

    Example:
        >>> from pyg_sphere.datasets.tomography import smail_bins
        >>> bin_densities(smail_bins(4), 30.0).round(2).tolist()
        [7.5, 7.5, 7.5, 7.5]
    """
    bins = _check_bins(bins)
    if np.ndim(n_gal) == 0:
        total = check_positive("n_gal", n_gal, hint="the total galaxy density per arcmin^2")
        return total * bins.fractions
    dens = _per_bin("n_gal", n_gal, bins.n_bins)
    if np.any(dens < 0):
        raise ValueError(f"n_gal must be non-negative galaxy densities per arcmin^2, got {n_gal}")
    _check_no_empty(dens)
    return dens


def _check_no_empty(dens: np.ndarray) -> None:
    empty = np.flatnonzero(dens <= 0)
    if len(empty):
        raise ValueError(
            f"bin(s) {empty.tolist()} have no galaxies (n_gal = 0): their shape noise is "
            "infinite; drop those bins or give them a positive galaxy density"
        )


def _noise_inputs(sigma_e, n_gal) -> tuple[np.ndarray, np.ndarray]:
    dens = np.atleast_1d(np.asarray(n_gal, dtype=np.float64))
    if dens.ndim != 1 or not np.all(np.isfinite(dens)) or np.any(dens < 0):
        raise ValueError(
            f"n_gal must be non-negative galaxy densities per arcmin^2 (one per bin), got {n_gal}"
        )
    _check_no_empty(dens)
    sig = _per_bin("sigma_e", sigma_e, dens.size)
    if np.any(sig < 0):
        raise ValueError(
            f"sigma_e must be a non-negative ellipticity dispersion (e.g. 0.26), got {sigma_e}"
        )
    return sig, dens


def shape_noise_std(nside: int, sigma_e, n_gal) -> np.ndarray:
    r"""Standard deviation of the shape noise of the convergence in one pixel, per bin:
    :math:`\sigma_e / \sqrt{n_{gal,i}\,\Omega_{pix}}`.

    Args:
        nside: HEALPix resolution (the pixel area :math:`\Omega_{pix}` is healpy's).
        sigma_e: ellipticity dispersion per component (e.g. 0.26), a number or one per bin.
        n_gal: galaxy density of each bin per arcmin^2, ``[n_bins]`` (:func:`bin_densities`).

    Returns:
        float64 array ``[n_bins]``.

    Example:
        >>> float(shape_noise_std(64, 0.26, [10.0])[0].round(4))
        0.0015
    """
    sig, dens = _noise_inputs(sigma_e, n_gal)
    area = hp.nside2pixarea(check_nside(nside), degrees=True) * 3600.0  # arcmin^2
    return sig / np.sqrt(dens * area)


def shape_noise_cl(sigma_e, n_gal) -> np.ndarray:
    r"""Shape-noise power spectrum of the convergence of each bin,
    :math:`N_i = \sigma_e^2 / \bar n_i` (:math:`\bar n_i` per steradian), white; the noise of
    different bins is independent. Equal to ``shape_noise_std(nside, ...)**2`` times the pixel
    area in steradians, at any nside.

    Returns:
        float64 array ``[n_bins]``.

    Example:
        >>> shape_noise_cl(0.26, [30.0, 10.0]).tolist() == [0.26**2 / (n * ARCMIN2_PER_SR)
        ...                                                 for n in (30.0, 10.0)]
        True
    """
    sig, dens = _noise_inputs(sigma_e, n_gal)
    return sig**2 / (dens * ARCMIN2_PER_SR)
