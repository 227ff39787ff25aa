r"""Gaussian and shifted-lognormal fields on the HEALPix sphere, from their power spectrum.

The field synthesis behind :mod:`~pyg_sphere.datasets.lognormal_maps` (whose public API
re-exports :func:`lognormal_gaussian_cl`, :func:`gaussian_alm`, :func:`lognormal_map` and
:func:`gaussian_map`): the spectrum of the Gaussian field whose shifted-lognormal transform has
a target spectrum (Gauss-Legendre quadrature of the correlation functions), the harmonic
draws in healpy's layout and their synthesis at the pixel centres. Nothing here knows about
cosmologies; the simulation streams reuse the private steps (:func:`_alm_layout`,
:func:`_colour_alm`, :func:`_lognormal_transform`) to colour one draw with several spectra.
"""

from __future__ import annotations

import healpy as hp
import numpy as np

from .._validate import check_int, check_nside, check_positive
from ..cache import memoize

__all__ = ["lognormal_gaussian_cl", "gaussian_alm", "lognormal_map", "gaussian_map"]


@memoize("legendre_nodes")
def _legendre_nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.special import roots_legendre

    x, w = roots_legendre(n)
    x.flags.writeable = False
    w.flags.writeable = False
    return x, w


def _legendre_project(f: np.ndarray, x: np.ndarray, lmax: int) -> np.ndarray:
    """sum_i f_i P_ell(x_i) for ell = 0 ... lmax (upward recurrence, stable on [-1, 1])."""
    out = np.empty(lmax + 1)
    p0, p1, tmp = np.ones_like(x), x.copy(), np.empty_like(x)
    out[0] = np.vdot(p0, f)
    if lmax >= 1:
        out[1] = np.vdot(p1, f)
    for ell in range(1, lmax):
        # P_{l+1} = ((2l+1) x P_l - l P_{l-1}) / (l+1), with buffers reused
        np.multiply(x, p1, out=tmp)
        tmp *= (2 * ell + 1) / (ell + 1)
        p0 *= ell / (ell + 1)
        tmp -= p0
        out[ell + 1] = np.vdot(tmp, f)
        p0, p1, tmp = p1, tmp, p0
    return out


def _check_cl(cl, name="cl") -> np.ndarray:
    cl = np.asarray(cl, dtype=np.float64)
    if cl.ndim != 1 or cl.size < 3:
        raise ValueError(
            f"{name} must be a 1-D array of C_ell for ell = 0 ... lmax with "
            f"lmax >= 2, got shape {cl.shape}"
        )
    if not np.all(np.isfinite(cl)) or np.any(cl < 0):
        raise ValueError(f"{name} must be finite and non-negative")
    return cl


def lognormal_gaussian_cl(cl, shift: float, lmax: int | None = None) -> np.ndarray:
    r"""Spectrum of the Gaussian field g whose shifted-lognormal transform has spectrum ``cl``.

    With :math:`\kappa = \lambda (e^{g - \sigma_g^2/2} - 1)` the correlation
    functions obey :math:`\xi_\kappa = \lambda^2 (e^{\xi_g} - 1)`. This
    evaluates :math:`\xi_\kappa(\theta) = \sum_\ell \frac{2\ell+1}{4\pi} C_\ell
    P_\ell(\cos\theta)` at Gauss-Legendre nodes, takes
    :math:`\xi_g = \ln(1 + \xi_\kappa/\lambda^2)` and projects back,
    :math:`C^g_\ell = 2\pi \int_{-1}^{1} \xi_g(x) P_\ell(x)\,dx`, with
    :math:`2\ell_{max} + 2` nodes (exact for the terms of :math:`\xi_g` up to
    degree :math:`3\ell_{max}`). Multipoles where the lognormal model cannot
    reach the target come out negative and are set to 0.

    Args:
        cl: target spectrum C_ell, ell = 0 ... len(cl) - 1.
        shift: lognormal shift lambda > 0 (the field's minimum is -lambda).
        lmax: band limit (default ``len(cl) - 1``); ``cl`` is truncated there.

    Returns:
        float64 array ``[lmax + 1]``: the Gaussian field's C_ell.

    Example:
        >>> import numpy as np
        >>> ell = np.arange(33)
        >>> cl = np.where(ell >= 2, 1e-4 / (ell + 1.0) ** 2, 0.0)
        >>> clg = lognormal_gaussian_cl(cl, shift=1e3)   # huge shift: nearly Gaussian
        >>> bool(np.allclose(clg * 1e3**2, cl, rtol=1e-6, atol=1e-16))
        True
    """
    cl = _check_cl(cl)
    shift = check_positive("shift", shift)
    if lmax is None:
        lmax = cl.size - 1
    lmax = check_int("lmax", lmax, 2)
    if lmax > cl.size - 1:
        raise ValueError(f"lmax={lmax} exceeds the spectrum's range (ell <= {cl.size - 1})")
    cl = cl[: lmax + 1]
    ell = np.arange(lmax + 1)
    x, w = _legendre_nodes(2 * lmax + 2)
    xi = np.polynomial.legendre.legval(x, (2 * ell + 1) / (4 * np.pi) * cl)
    u = xi / shift**2
    if np.any(u <= -1):
        raise ValueError(
            f"shift={shift} is too small for this spectrum: the lognormal model "
            "needs xi(theta) > -shift**2 at all angles; use a larger shift"
        )
    clg = 2 * np.pi * _legendre_project(np.log1p(u) * w, x, lmax)
    return np.clip(clg, 0.0, None)


def gaussian_alm(cl, rng: np.random.Generator) -> np.ndarray:
    """Draw the harmonic coefficients of an isotropic Gaussian field with spectrum ``cl``.

    Real ``a_l0 ~ N(0, C_l)``; for m > 0 real and imaginary parts are
    independent ``N(0, C_l / 2)``, so that ``<|a_lm|^2> = C_l``. The layout is
    healpy's (``hp.Alm.getidx(lmax, l, m)``, m-major, m >= 0), lmax = len(cl) - 1.

    Args:
        cl: spectrum C_ell, ell = 0 ... lmax.
        rng: the source of randomness.

    Returns:
        complex128 array ``[hp.Alm.getsize(lmax)]``.

    Example:
        >>> import numpy as np, healpy as hp
        >>> alm = gaussian_alm(np.ones(9), np.random.default_rng(0))
        >>> alm.shape == (hp.Alm.getsize(8),)
        True
        >>> float(alm[hp.Alm.getidx(8, 3, 0)].imag)
        0.0
    """
    cl = _check_cl(cl)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    lmax = cl.size - 1
    white = rng.standard_normal(2 * hp.Alm.getsize(lmax)).view(np.complex128)
    return _colour_alm(white, cl, *_alm_layout(lmax), out=white)


def _alm_layout(lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """The multipole of every coefficient in healpy's layout and the indices of the m = 0 ones."""
    ell, _ = hp.Alm.getlm(lmax)
    return ell, hp.Alm.getidx(lmax, np.arange(lmax + 1), 0)


def _colour_alm(white, cl, ell, m0, out=None) -> np.ndarray:
    """Unit-variance complex draws (as :func:`gaussian_alm` draws them) scaled to spectrum ``cl``;
    the simulation streams colour one draw with several spectra through this same arithmetic."""
    alm = np.multiply(white, np.sqrt(cl / 2)[ell], out=out)
    # m = 0 coefficients are real: keep the real draw and give it the full variance
    alm[m0] = alm[m0].real * np.sqrt(2.0)
    return alm


def lognormal_map(
    gaussian_cl, shift: float, nside: int, rng: np.random.Generator, *, nest: bool = False
) -> np.ndarray:
    r"""One shifted-lognormal HEALPix map from a Gaussian spectrum.

    Draws g with :func:`gaussian_alm`, synthesises it at the pixel centres with
    ``hp.alm2map`` (``pixwin=False``, band limit ``len(gaussian_cl) - 1``) and
    returns :math:`\lambda (e^{g - \sigma_g^2/2} - 1)`, with
    :math:`\sigma_g^2 = \sum_\ell (2\ell+1) C^g_\ell / 4\pi` the variance of g,
    so the map has zero expected mean and is bounded below by ``-shift``.

    Args:
        gaussian_cl: spectrum of g, e.g. from :func:`lognormal_gaussian_cl`.
        shift: lognormal shift lambda > 0.
        nside: HEALPix resolution (power of two).
        rng: the source of randomness.
        nest: return the map in NESTED ordering (default RING).

    Returns:
        float64 array ``[12 * nside**2]``.

    Example:
        >>> import numpy as np
        >>> clg = lognormal_gaussian_cl(np.r_[0, 0, np.full(46, 1e-6)], shift=0.02)
        >>> m = lognormal_map(clg, 0.02, nside=16, rng=np.random.default_rng(1))
        >>> m.shape, bool(m.min() > -0.02)
        ((3072,), True)
    """
    clg = _check_cl(gaussian_cl, "gaussian_cl")
    shift = check_positive("shift", shift)
    g = _lognormal_transform(_synthesize(clg, check_nside(nside), rng), clg, shift)
    return hp.reorder(g, r2n=True) if nest else g


def _lognormal_transform(g: np.ndarray, clg: np.ndarray, shift: float) -> np.ndarray:
    """``shift * (exp(g - var_g / 2) - 1)`` in place, ``var_g`` the variance of a field of
    spectrum ``clg``; returns ``g``."""
    lmax = clg.size - 1
    var_g = float(np.sum((2 * np.arange(lmax + 1) + 1) * clg) / (4 * np.pi))
    g -= 0.5 * var_g
    np.expm1(g, out=g)
    g *= shift
    return g


def _synthesize(cl: np.ndarray, nside: int, rng: np.random.Generator) -> np.ndarray:
    """A Gaussian field of spectrum ``cl`` (checked) at the RING pixel centres."""
    lmax = cl.size - 1
    alm = gaussian_alm(cl, rng)
    return hp.alm2map(alm, nside, lmax=lmax, mmax=lmax, pixwin=False)


def gaussian_map(cl, nside: int, rng: np.random.Generator, *, nest: bool = False) -> np.ndarray:
    """One isotropic Gaussian HEALPix map of spectrum ``cl`` (no lognormal transform).

    The harmonic coefficients are :func:`gaussian_alm`'s, so with the same generator state
    two spectra give maps whose coefficients differ exactly by the factor
    ``sqrt(cl_a / cl_b)``; synthesised with ``hp.alm2map`` (``pixwin=False``, band limit
    ``len(cl) - 1``).

    Args:
        cl: spectrum C_ell, ell = 0 ... lmax.
        nside: HEALPix resolution (power of two).
        rng: the source of randomness.
        nest: return the map in NESTED ordering (default RING).

    Returns:
        float64 array ``[12 * nside**2]``.

    Example:
        >>> import numpy as np
        >>> m = gaussian_map(np.r_[0, 0, np.full(46, 1e-6)], 16, np.random.default_rng(1))
        >>> m.shape, bool(abs(m.mean()) < 0.1 * m.std())
        ((3072,), True)
    """
    cl = _check_cl(cl)
    m = _synthesize(cl, check_nside(nside), rng)
    return hp.reorder(m, r2n=True) if nest else m
