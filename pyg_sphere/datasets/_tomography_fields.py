r"""Correlated Gaussian and shifted-lognormal fields in several tomographic bins.

Part of :mod:`pyg_sphere.datasets.tomography`, which re-exports these names. The lognormal
transform is the one of FLASK (Xavier, Abdalla & Joachimi 2016) and GLASS (Tessore et al.
2023), the multi-field version of :func:`~pyg_sphere.datasets.lognormal_maps.lognormal_gaussian_cl`.
"""

from __future__ import annotations

import warnings

import numpy as np

from .._lazy import lazy
from .._validate import check_nside
from ._lognormal_field import _legendre_nodes

hp = lazy("healpy")

__all__ = [
    "lognormal_gaussian_cls",
    "correlated_gaussian_alm",
    "tomographic_gaussian_maps",
    "tomographic_lognormal_maps",
]

#: Eigenvalues of a C_ell matrix below this fraction of its largest are raised to it.
EIGENVALUE_FLOOR = 1e-10
#: Clipping that removes more than this fraction of a matrix's trace at ell >= 2 is warned of.
CLIP_WARNING = 1e-3


def _legendre_project(f: np.ndarray, x: np.ndarray, lmax: int) -> np.ndarray:
    """``f @ P_ell(x)`` for ell = 0 ... lmax, f ``[m, n_nodes]``: ``[m, lmax + 1]`` (the
    projection of :mod:`._lognormal_field` for m functions at once)."""
    out = np.empty((f.shape[0], lmax + 1))
    p0, p1 = np.ones_like(x), x.copy()
    out[:, 0] = f @ p0
    if lmax >= 1:
        out[:, 1] = f @ p1
    for ell in range(1, lmax):
        p0, p1 = p1, ((2 * ell + 1) * x * p1 - ell * p0) / (ell + 1)
        out[:, ell + 1] = f @ p1
    return out


def _check_cl_matrix(cl, name: str = "cl") -> np.ndarray:
    cl = np.asarray(cl, dtype=np.float64)
    if cl.ndim != 3 or cl.shape[0] != cl.shape[1] or cl.shape[0] < 1 or cl.shape[2] < 3:
        raise ValueError(
            f"{name} must be [n_bins, n_bins, lmax + 1] (all auto- and cross-spectra, lmax >= 2, "
            f"n_bins >= 1), got shape {cl.shape}"
        )
    if not np.all(np.isfinite(cl)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if not np.allclose(cl, cl.transpose(1, 0, 2), rtol=1e-12, atol=0):
        raise ValueError(f"{name} must be symmetric: {name}[i, j] is the spectrum of bins i, j")
    return 0.5 * (cl + cl.transpose(1, 0, 2))


def _check_shifts(shifts, n: int) -> np.ndarray:
    s = np.asarray(shifts, dtype=np.float64).reshape(-1)
    if s.shape != (n,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"shifts must be {n} positive numbers (one per bin), got {shifts!r}")
    return s


def lognormal_gaussian_cls(cl, shifts) -> np.ndarray:
    r"""Auto- and cross-spectra of the Gaussian fields :math:`g_i` whose shifted-lognormal
    transforms :math:`\kappa_i = \lambda_i (e^{g_i - \sigma_i^2/2} - 1)` have the spectra
    ``cl``.

    For every pair, :math:`\xi_{ij}(\theta) = \sum_\ell \frac{2\ell+1}{4\pi} C^{ij}_\ell
    P_\ell(\cos\theta)` is evaluated at :math:`2\ell_{max} + 2` Gauss-Legendre nodes,
    transformed as :math:`\xi^G_{ij} = \ln(1 + \xi_{ij} / (\lambda_i \lambda_j))` and projected
    back, :math:`C^{G,ij}_\ell = 2\pi \int_{-1}^1 \xi^G_{ij}(x) P_\ell(x)\,dx`. The result is
    not clipped: where the lognormal model cannot reach the target, a matrix
    :math:`C^G_\ell` may have negative eigenvalues, which :func:`correlated_gaussian_alm`
    clips.

    Args:
        cl: target spectra ``[n_bins, n_bins, lmax + 1]``, symmetric.
        shifts: the shifts :math:`\lambda_i > 0`, ``[n_bins]``.

    Returns:
        float64 array ``[n_bins, n_bins, lmax + 1]``.

    Example:
        >>> import numpy as np
        >>> from pyg_sphere.datasets.lognormal_maps import lognormal_gaussian_cl
        >>> ell = np.arange(33)
        >>> c = np.where(ell >= 2, 1e-4 / (ell + 1.0) ** 2, 0.0)
        >>> cl = np.array([[c, 0.5 * c], [0.5 * c, 2 * c]])
        >>> clg = lognormal_gaussian_cls(cl, [0.02, 0.03])
        >>> bool(np.allclose(clg[0, 0, 2:], lognormal_gaussian_cl(c, 0.02)[2:]))
        True
    """
    cl = _check_cl_matrix(cl)
    n, lmax = cl.shape[0], cl.shape[2] - 1
    shifts = _check_shifts(shifts, n)
    i, j = np.triu_indices(n)
    ell = np.arange(lmax + 1)
    x, w = _legendre_nodes(2 * lmax + 2)
    xi = np.polynomial.legendre.legval(x, ((2 * ell + 1) / (4 * np.pi) * cl[i, j]).T)
    u = xi / (shifts[i] * shifts[j])[:, None]
    if np.any(u <= -1):
        k = int(np.flatnonzero((u <= -1).any(axis=1))[0])
        raise ValueError(
            f"the shifts of bins {i[k]} and {j[k]} are too small for their spectrum: the "
            "lognormal model needs xi_ij(theta) > -shift_i * shift_j at all angles; use "
            "larger shifts"
        )
    out = np.empty_like(cl)
    out[i, j] = out[j, i] = 2 * np.pi * _legendre_project(np.log1p(u) * w, x, lmax)
    return out


def _cl_factor(cl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower-triangular L with L L^T = C_ell (eigenvalues clipped) per multipole,
    ``[lmax + 1, n, n]``, and the fraction of the trace that clipping removed per multipole."""
    c = np.moveaxis(cl, -1, 0)
    w, v = np.linalg.eigh(c)
    top = np.clip(w[:, -1], 0, None)  # the largest eigenvalue; none positive: factor 0
    trace = np.maximum(np.abs(w).sum(axis=1), 1e-300)
    removed = np.clip(-w, 0, None).sum(axis=1) / trace
    floor = (EIGENVALUE_FLOOR * top)[:, None]
    clip = (w < floor).any(axis=1) & (top > 0)
    c = c.copy()
    c[clip] = np.einsum("lij,lj,lkj->lik", v[clip], np.maximum(w[clip], floor[clip]), v[clip])
    factor = np.zeros_like(c)
    nonzero = top > 0
    factor[nonzero] = np.linalg.cholesky(c[nonzero])
    return factor, removed


def _factor_checked(cl: np.ndarray) -> np.ndarray:
    factor, removed = _cl_factor(cl)
    removed[:2] = 0  # the monopole and dipole carry no signal
    if removed.max() > CLIP_WARNING:
        bad = np.flatnonzero(removed > CLIP_WARNING)
        warnings.warn(
            f"the Gaussian C_ell matrix is not positive definite at {bad.size} multipole(s) "
            f"(ell = {bad[:5].tolist()}{' ...' if bad.size > 5 else ''}); negative eigenvalues "
            f"(up to {removed.max():.1%} of the trace) were clipped to 0, so the maps miss that "
            "part of the target spectra there: the lognormal model cannot reach these "
            "correlations (larger shifts, or fewer, less overlapping bins, help)",
            RuntimeWarning,
            stacklevel=3,
        )
    return factor


def _alm_from_factor(factor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    lmax, n = factor.shape[0] - 1, factor.shape[1]
    ell, _ = hp.Alm.getlm(lmax)
    m0 = hp.Alm.getidx(lmax, np.arange(lmax + 1), 0)
    # unit complex draws, as gaussian_alm makes them: one bin's stream is gaussian_alm's
    white = rng.standard_normal((n, 2 * hp.Alm.getsize(lmax))).view(np.complex128)
    alm = np.zeros_like(white)
    scale = factor * np.sqrt(0.5)
    for a in range(n):
        for b in range(a + 1):
            alm[a] += scale[:, a, b][ell] * white[b]
    # m = 0 coefficients are real: keep the real draw and give it the full variance
    alm[:, m0] = alm[:, m0].real * np.sqrt(2.0)
    return alm


def correlated_gaussian_alm(cl, rng: np.random.Generator) -> np.ndarray:
    r"""Harmonic coefficients of ``n_bins`` correlated isotropic Gaussian fields with auto-
    and cross-spectra ``cl``.

    Per multipole, :math:`a_{\ell m} = L_\ell\,z_{\ell m}` with :math:`L_\ell` the Cholesky
    factor of the :math:`n \times n` matrix :math:`C_\ell` and :math:`z_{\ell m}` unit draws
    (as :func:`~pyg_sphere.datasets.lognormal_maps.gaussian_alm` draws them: one bin gives
    exactly its coefficients). A Cholesky factor varies smoothly with the spectra, so
    generators in the same state give the same realisation at nearby cosmologies (common
    random numbers for finite differences). Where :math:`C_\ell` is not positive definite
    (a lognormal target out of the model's reach), its negative eigenvalues are clipped to 0
    (to :data:`EIGENVALUE_FLOOR` times the largest, so that the factor exists), with a
    ``RuntimeWarning`` when that removes more than :data:`CLIP_WARNING` of the trace at some
    :math:`\ell \ge 2`.

    Args:
        cl: spectra ``[n_bins, n_bins, lmax + 1]``, symmetric.
        rng: the source of randomness.

    Returns:
        complex128 array ``[n_bins, hp.Alm.getsize(lmax)]`` (healpy's layout).

    Example:
        >>> import numpy as np
        >>> c = np.r_[0.0, 0.0, np.ones(31)]
        >>> alm = correlated_gaussian_alm(np.array([[c, c], [c, c]]), np.random.default_rng(0))
        >>> alm.shape, bool(np.allclose(alm[0], alm[1], atol=1e-4))   # fully correlated bins
        ((2, 561), True)
    """
    return _alm_from_factor(_factor_checked(_check_cl_matrix(cl)), rng)


def _maps_from_factor(factor, nside, rng, shifts=None, nest=False) -> np.ndarray:
    """Gaussian maps of the spectra L L^T, or their shifted-lognormal transforms; [n, npix]."""
    nside = check_nside(nside)
    lmax = factor.shape[0] - 1
    alm = _alm_from_factor(factor, rng)
    maps = np.stack([hp.alm2map(a, nside, lmax=lmax, mmax=lmax, pixwin=False) for a in alm])
    if shifts is not None:
        ell = np.arange(lmax + 1)
        var = np.einsum("l,lij,lij->i", (2 * ell + 1) / (4 * np.pi), factor, factor)
        maps -= 0.5 * var[:, None]
        np.expm1(maps, out=maps)
        maps *= shifts[:, None]
    return hp.reorder(maps, r2n=True) if nest else maps


def tomographic_gaussian_maps(
    cl, nside: int, rng: np.random.Generator, *, nest: bool = False
) -> np.ndarray:
    """Correlated Gaussian HEALPix maps with auto- and cross-spectra ``cl``
    (:func:`correlated_gaussian_alm`, then ``hp.alm2map`` with ``pixwin=False``, band limit
    ``cl.shape[2] - 1``).

    Args:
        cl: spectra ``[n_bins, n_bins, lmax + 1]``, symmetric.
        nside: HEALPix resolution (power of two).
        rng: the source of randomness.
        nest: NESTED ordering (default RING).

    Returns:
        float64 array ``[n_bins, 12 * nside**2]``.

    Example:
        >>> import numpy as np
        >>> c = np.r_[0.0, 0.0, np.full(46, 1e-6)]
        >>> m = tomographic_gaussian_maps(np.array([[c, 0.5 * c], [0.5 * c, c]]), 16,
        ...                               np.random.default_rng(0))
        >>> m.shape, bool(0.3 < np.corrcoef(m)[0, 1] < 0.7)
        ((2, 3072), True)
    """
    return _maps_from_factor(_factor_checked(_check_cl_matrix(cl)), nside, rng, None, nest)


def tomographic_lognormal_maps(
    gaussian_cl, shifts, nside: int, rng: np.random.Generator, *, nest: bool = False
) -> np.ndarray:
    r"""Correlated shifted-lognormal HEALPix maps from the spectra of their Gaussian fields.

    Draws the Gaussian fields :math:`g_i` (:func:`tomographic_gaussian_maps` of
    ``gaussian_cl``) and returns :math:`\kappa_i = \lambda_i (e^{g_i - \sigma_i^2/2} - 1)`,
    :math:`\sigma_i^2` the variance of :math:`g_i` (after clipping), so each map has zero
    expected mean and is bounded below by :math:`-\lambda_i`.

    Args:
        gaussian_cl: spectra of the Gaussian fields ``[n_bins, n_bins, lmax + 1]``, e.g. from
            :func:`lognormal_gaussian_cls`.
        shifts: the shifts :math:`\lambda_i > 0`, ``[n_bins]``.
        nside: HEALPix resolution (power of two).
        rng: the source of randomness.
        nest: NESTED ordering (default RING).

    Returns:
        float64 array ``[n_bins, 12 * nside**2]``.

    Example:
        >>> import numpy as np
        >>> c = np.r_[0.0, 0.0, np.full(46, 1e-6)]
        >>> clg = lognormal_gaussian_cls(np.array([[c, c], [c, 4 * c]]), [0.01, 0.03])
        >>> m = tomographic_lognormal_maps(clg, [0.01, 0.03], 16, np.random.default_rng(1))
        >>> m.shape, bool(m[0].min() > -0.01), bool(m[1].min() > -0.03)
        ((2, 3072), True, True)
    """
    factor = _factor_checked(_check_cl_matrix(gaussian_cl, "gaussian_cl"))
    shifts = _check_shifts(shifts, factor.shape[1])
    return _maps_from_factor(factor, nside, rng, shifts, nest)
