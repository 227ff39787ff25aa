r"""Source redshift distributions for tomography: a Smail-type n(z) and its split into bins.

Part of :mod:`pyg_sphere.datasets.tomography`, which re-exports these names.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from .._validate import check_int, check_positive

__all__ = ["SourceBins", "smail_nz", "equipopulated_bins", "smail_bins"]


def _trapezoid(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trapezoid rule along the last axis (numpy 1.x and 2.x spell it differently)."""
    return np.sum(0.5 * (y[..., 1:] + y[..., :-1]) * np.diff(x), axis=-1)


def smail_nz(z, alpha: float = 2.0, beta: float = 1.5, z0: float = 0.64) -> np.ndarray:
    r"""Smail et al. (1994)-type redshift distribution :math:`n(z) \propto z^\alpha
    e^{-(z/z_0)^\beta}`, normalised to unit integral over :math:`z \ge 0`.

    The normalisation is analytic, :math:`\int_0^\infty z^\alpha e^{-(z/z_0)^\beta} dz =
    z_0^{\alpha+1}\,\Gamma((\alpha+1)/\beta)/\beta`. The defaults (alpha 2, beta 1.5,
    z0 = 0.9 / sqrt 2, median redshift 0.9) are the Euclid forecast's distribution.

    Args:
        z: redshifts (any shape, non-negative).
        alpha: power of the rise at low redshift, > -1 (else not normalisable at z = 0).
        beta: steepness of the cut-off, > 0.
        z0: redshift scale of the cut-off, > 0.

    Returns:
        float64 array shaped like ``z``: n(z) per unit redshift.

    Example:
        >>> import numpy as np
        >>> from scipy.integrate import trapezoid
        >>> z = np.linspace(0, 6, 6001)
        >>> round(float(trapezoid(smail_nz(z), z)), 6)
        1.0
    """
    real = isinstance(alpha, numbers.Real) and not isinstance(alpha, bool)
    if not (real and math.isfinite(alpha) and alpha > -1):
        raise ValueError(
            f"alpha must be a finite number > -1, got {alpha!r}: n(z) ~ z**alpha is not "
            "normalisable at z = 0 otherwise; use alpha > -1 (e.g. 2)"
        )
    beta = check_positive("beta", beta, hint="the steepness of the high-redshift cut-off")
    z0 = check_positive("z0", z0, hint="the redshift scale of the cut-off")
    z = np.asarray(z, dtype=np.float64)
    if not np.all(np.isfinite(z)) or np.any(z < 0):
        raise ValueError("z must hold finite, non-negative redshifts")
    norm = z0 ** (alpha + 1) * math.gamma((alpha + 1) / beta) / beta
    with np.errstate(divide="ignore"):  # z = 0 with alpha < 0
        return np.power(z, alpha) * np.exp(-((z / z0) ** beta)) / norm


def _check_grid(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 1 or z.size < 3:
        raise ValueError(f"z must be a 1-D grid of at least 3 redshifts, got shape {z.shape}")
    if not np.all(np.isfinite(z)) or z[0] < 0 or np.any(np.diff(z) <= 0):
        raise ValueError("z must be finite, non-negative and strictly increasing")
    return z


@dataclass(frozen=True, eq=False)
class SourceBins:
    r"""Tomographic source bins: the redshift distribution of each bin and its share of the
    galaxies. Equal and hashed by value, so spectra of the same bins are computed once.

    Args:
        z: redshift grid ``[n_z]``, non-negative, strictly increasing.
        nz: the distribution of each bin on ``z``, ``[n_bins, n_z]`` (or ``[n_z]`` for one
            bin), non-negative, in any common units; each row is normalised to unit integral.
        fractions: each bin's share of the galaxies, ``[n_bins]``, positive (normalised to sum
            to 1). Default: proportional to the integrals of the rows of ``nz`` (so give counts
            per unit redshift, or give the fractions).
        edges: the redshift edges the bins were cut at, ``[n_bins + 1]`` (informative only).

    Attributes:
        z, nz, fractions, edges: as above, read-only float64 arrays, ``nz`` normalised.

    Example:
        >>> import numpy as np
        >>> z = np.linspace(0, 2, 201)
        >>> b = SourceBins(z, [np.exp(-((z - 0.5) / 0.1) ** 2), 3 * np.exp(-((z - 1) / 0.1) ** 2)])
        >>> b.n_bins, b.fractions.round(3).tolist(), b.mean_z.round(3).tolist()
        (2, [0.25, 0.75], [0.5, 1.0])
    """

    z: np.ndarray
    nz: np.ndarray
    fractions: np.ndarray | None = None
    edges: np.ndarray | None = None
    _key: tuple = field(init=False, repr=False)

    def __post_init__(self):
        z = _check_grid(self.z)
        nz = np.asarray(self.nz, dtype=np.float64)
        if nz.ndim == 1:
            nz = nz[None]
        if nz.ndim != 2 or nz.shape[1] != z.size:
            raise ValueError(
                f"nz must be [n_bins, n_z] = [n_bins, {z.size}] (one row per bin, on z), got "
                f"shape {nz.shape}"
            )
        if nz.shape[0] < 1:
            raise ValueError("there are no bins: n_bins must be >= 1; give at least one n(z)")
        if not np.all(np.isfinite(nz)) or np.any(nz < 0):
            raise ValueError("nz must be finite and non-negative (a number of galaxies)")
        totals = _trapezoid(nz, z)
        empty = np.flatnonzero(~(totals > 0))
        if len(empty):
            raise ValueError(
                f"bin(s) {empty.tolist()} have no galaxies (their n(z) integrates to 0 on z): "
                "drop them, move their edges, or extend the redshift grid"
            )
        if self.fractions is None:
            fractions = totals / totals.sum()
        else:
            fractions = np.asarray(self.fractions, dtype=np.float64).reshape(-1)
            if fractions.shape != (nz.shape[0],) or not np.all(np.isfinite(fractions)):
                raise ValueError(
                    f"fractions must be {nz.shape[0]} finite numbers (one per bin), got "
                    f"{self.fractions!r}"
                )
            if np.any(fractions <= 0):
                raise ValueError(
                    f"bin(s) {np.flatnonzero(fractions <= 0).tolist()} have no galaxies "
                    "(fraction <= 0): drop them or give each bin a positive share"
                )
            fractions = fractions / fractions.sum()
        edges = None if self.edges is None else np.asarray(self.edges, dtype=np.float64)
        nz = nz / totals[:, None]
        for a in (z, nz, fractions) + (() if edges is None else (edges,)):
            a.flags.writeable = False
        object.__setattr__(self, "z", z)
        object.__setattr__(self, "nz", nz)
        object.__setattr__(self, "fractions", fractions)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "_key", (z.tobytes(), nz.shape, nz.tobytes(), fractions.tobytes()))

    @property
    def n_bins(self) -> int:
        """Number of bins."""
        return self.nz.shape[0]

    @property
    def mean_z(self) -> np.ndarray:
        """Mean redshift of each bin, ``[n_bins]``."""
        return _trapezoid(self.nz * self.z, self.z)

    def __eq__(self, other) -> bool:
        return isinstance(other, SourceBins) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return (
            f"SourceBins(n_bins={self.n_bins}, mean_z={np.round(self.mean_z, 3).tolist()}, "
            f"fractions={np.round(self.fractions, 3).tolist()}, z in [{self.z[0]:g}, "
            f"{self.z[-1]:g}] ({self.z.size} points))"
        )


def _photometric_cdf(z, nz, zp, scatter) -> np.ndarray:
    """Share of galaxies (n(z) normalised on z) with photometric redshift < zp, for Gaussian
    photo-z errors of standard deviation scatter * (1 + z); [len(zp)]."""
    from scipy.special import ndtr

    if scatter == 0:
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (nz[1:] + nz[:-1]) * np.diff(z))])
        return np.interp(zp, z, cdf / cdf[-1])
    below = ndtr((zp[:, None] - z[None, :]) / (scatter * (1 + z[None, :])))
    return _trapezoid(below * nz, z) / _trapezoid(nz, z)


def equipopulated_bins(z, nz, n_bins: int, *, photo_z_scatter: float = 0.0) -> SourceBins:
    r"""Split a redshift distribution into ``n_bins`` bins holding equal numbers of galaxies.

    The edges are the quantiles :math:`k / n_{bins}` of the (photometric) redshift. Without
    photo-z scatter a bin is :math:`n(z)` cut sharply at its edges (on the grid: the grid
    point next to an edge is shared in proportion; equal populations to :math:`10^{-6}`
    on :func:`smail_bins`' grid); with scatter :math:`\sigma_z (1 + z)`, galaxies are assigned by
    photometric redshift, and bin :math:`i` is :math:`n(z)\,[\Phi((e_{i+1} - z)/\sigma) -
    \Phi((e_i - z)/\sigma)]` (outer edges at infinity), so neighbouring bins overlap.

    Args:
        z: redshift grid ``[n_z]`` (non-negative, increasing).
        nz: the full distribution on ``z``, ``[n_z]`` (any normalisation, e.g.
            :func:`smail_nz`).
        n_bins: number of bins, >= 1.
        photo_z_scatter: :math:`\sigma_z`, the photometric-redshift error at z = 0 (e.g.
            0.05); 0 cuts at the true redshift.

    Returns:
        :class:`SourceBins` with ``edges`` ``[n_bins + 1]`` and ``fractions`` close to
        ``1 / n_bins``.

    Example:
        >>> import numpy as np
        >>> z = np.linspace(0, 4, 2001)
        >>> b = equipopulated_bins(z, smail_nz(z), 4)
        >>> b.edges.round(2).tolist(), bool(np.allclose(b.fractions, 0.25, atol=1e-3))
        ([0.0, 0.62, 0.9, 1.24, 4.0], True)
    """
    n_bins = check_int("n_bins", n_bins, 1)
    z = _check_grid(z)
    nz = np.asarray(nz, dtype=np.float64)
    if nz.shape != z.shape or not np.all(np.isfinite(nz)) or np.any(nz < 0):
        raise ValueError(f"nz must be {z.size} finite, non-negative values (n(z) on z)")
    total = float(_trapezoid(nz, z))
    if not (total > 0 and math.isfinite(total)):
        raise ValueError(
            "n(z) is not normalisable on this grid (its integral is 0 or infinite): give a "
            "distribution with galaxies inside the redshift grid, or widen the grid"
        )
    scatter = check_positive("photo_z_scatter", photo_z_scatter, allow_zero=True)
    # the quantiles of the photometric redshift, from its CDF on a fine grid
    pad = 6 * scatter * (1 + z[-1])
    zp = np.linspace(z[0] - pad, z[-1] + pad, 4 * z.size if scatter == 0 else 1024)
    cdf = _photometric_cdf(z, nz, zp, scatter)
    inner = np.interp(np.arange(1, n_bins) / n_bins, cdf, zp)
    edges = np.concatenate([[z[0]], inner, [z[-1]]])
    if scatter == 0:
        # sharp cuts: each grid point's cell (between the midpoints to its neighbours) is
        # shared between the bins in proportion to its overlap with them
        cells = np.concatenate([[z[0]], 0.5 * (z[1:] + z[:-1]), [z[-1]]])
        lo = np.maximum(cells[None, :-1], edges[:-1, None])
        hi = np.minimum(cells[None, 1:], edges[1:, None])
        window = np.clip(hi - lo, 0, None) / np.diff(cells)[None, :]
    else:
        from scipy.special import ndtr

        cuts = np.concatenate([[-np.inf], inner, [np.inf]])
        sigma = scatter * (1 + z)
        upper = ndtr((cuts[1:, None] - z[None, :]) / sigma)
        lower = ndtr((cuts[:-1, None] - z[None, :]) / sigma)
        window = upper - lower
    parts = window * nz[None, :]
    return SourceBins(z, parts, fractions=_trapezoid(parts, z), edges=edges)


def smail_bins(
    n_bins: int,
    *,
    alpha: float = 2.0,
    beta: float = 1.5,
    z0: float = 0.64,
    z_max: float = 4.0,
    n_z: int = 2001,
    photo_z_scatter: float = 0.0,
) -> SourceBins:
    """:func:`smail_nz` on ``linspace(0, z_max, n_z)``, split by :func:`equipopulated_bins`.

    Example:
        >>> smail_bins(1).n_bins, smail_bins(3).fractions.round(2).tolist()
        (1, [0.33, 0.33, 0.33])
    """
    z_max = check_positive("z_max", z_max)
    z = np.linspace(0.0, z_max, check_int("n_z", n_z, 3))
    return equipopulated_bins(
        z, smail_nz(z, alpha, beta, z0), n_bins, photo_z_scatter=photo_z_scatter
    )
