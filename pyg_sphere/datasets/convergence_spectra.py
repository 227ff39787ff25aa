r"""Convergence power spectra and lognormal shifts at any (Omega_m, sigma_8) of a prior box.

The simulator of the two DeepSphere cosmologies reads their spectra from a table
(:mod:`~pyg_sphere.datasets.lognormal_maps`). Parameter inference needs maps at any
cosmology, so this module interpolates a second shipped table,
``data/convergence_cl_grid.npz``, made by ``scripts/make_cl_table.py`` with pyccl and the
same physics as the first: flat LCDM with h = 0.7, n_s = 0.96, Omega_b = 0.05, the
Eisenstein & Hu (1998) transfer function, halofit (Takahashi et al. 2012), Limber, sources
in a narrow n(z) at z = 0.8 (mean 0.8, standard deviation 0.05).

The table holds :math:`\ln C_\ell^{\kappa\kappa}` at 56 multipoles log-spaced from 2 to
6144, on a grid of 13 values of Omega_m in [0.12, 0.48] times 15 values of sigma_8 in
[0.45, 1.15]: the prior box :data:`PRIOR_BOX` padded, so that finite-difference steps at
its edges stay inside. :func:`convergence_cl` interpolates it with tensor-product cubic
splines (not-a-knot) in (Omega_m, sigma_8), then with a cubic spline in
:math:`\ln\ell` to every integer multipole; against pyccl the result is within 0.5% over
the prior box for :math:`2 \le \ell \le 6144`.

:func:`lognormal_shift` is the shift :math:`\lambda` of the shifted-lognormal model, defined
as for the two-model table: the Hilbert, Hartlap & Schneider (2011, A&A 536, A85, eq. 38)
fit :math:`\kappa_0(z_s = 0.8) = 0.0212` from the Millennium Simulation, scaled by the ratio
of empty-beam convergences :math:`\kappa_{empty}(\Omega_m) /
\kappa_{empty}(\mathrm{Millennium})`, tabulated on 37 values of Omega_m and interpolated
with a cubic spline.

Nothing here needs a cosmology code or a download.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .._io import read_table
from .._validate import check_int
from ..cache import memoize

__all__ = ["PRIOR_BOX", "PARAMETERS", "convergence_cl", "lognormal_shift", "tabulated_box"]

GRID_TABLE = Path(__file__).resolve().parent / "data" / "convergence_cl_grid.npz"

#: The cosmological parameters of the designs, in the order of their columns.
PARAMETERS = ("omega_m", "sigma_8")

#: The prior box of parameter inference: parameter name -> (low, high), read-only.
PRIOR_BOX = MappingProxyType({"omega_m": (0.15, 0.45), "sigma_8": (0.5, 1.1)})


@memoize("cl_grid_table")
def _load_grid() -> dict:
    return read_table(GRID_TABLE)


def tabulated_box() -> dict:
    """The range of each parameter that the shipped table covers (the spectra's grid).

    Returns:
        dict parameter name -> (low, high); the lognormal shift covers the same Omega_m range.

    Example:
        >>> tabulated_box()
        {'omega_m': (0.12, 0.48), 'sigma_8': (0.45, 1.15)}
    """
    t = _load_grid()
    return {p: (float(t[p][0]), float(t[p][-1])) for p in PARAMETERS}


def _check_parameter(name: str, value, grid: np.ndarray) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    lo, hi = float(grid[0]), float(grid[-1])
    if not (math.isfinite(x) and lo - 1e-12 <= x <= hi + 1e-12):
        raise ValueError(
            f"{name}={value!r} is outside the range of the tabulated spectra, {name} in "
            f"[{lo}, {hi}] ({_describe_box()}); choose a cosmology inside it, or widen the "
            "grid of scripts/make_cl_table.py and regenerate the table"
        )
    return min(max(x, lo), hi)


def _describe_box() -> str:
    return ", ".join(f"{p} in [{lo}, {hi}]" for p, (lo, hi) in tabulated_box().items())


def _check_cosmology(omega_m, sigma_8) -> tuple[float, float]:
    """(Omega_m, sigma_8) as floats; raises unless both are inside the tabulated range."""
    t = _load_grid()
    om = _check_parameter("omega_m", omega_m, t["omega_m"])
    om = _check_parameter("omega_m", om, t["shift_omega_m"])
    return om, _check_parameter("sigma_8", sigma_8, t["sigma_8"])


def _check_lmax(lmax, table: dict) -> int:
    lmax = check_int("lmax", lmax, 2)
    top = int(table["ell"][-1])
    if lmax > top:
        raise ValueError(
            f"lmax={lmax} is beyond the tabulated spectra (ell <= {top}); use a smaller lmax"
        )
    return lmax


def _interpolate_cl(table: dict, omega_m: float, sigma_8: float, lmax: int) -> np.ndarray:
    """C_ell, ell = 0 ... lmax, from a grid table (no checks): cubic splines in the two
    parameters, then in ln ell."""
    from scipy.interpolate import CubicSpline

    ln_cl = CubicSpline(table["omega_m"], table["ln_cl"], axis=0)(omega_m)  # [n_s8, n_ell]
    ln_cl = CubicSpline(table["sigma_8"], ln_cl, axis=0)(sigma_8)  # [n_ell]
    ell = np.arange(2, lmax + 1, dtype=np.float64)
    cl = np.zeros(lmax + 1)
    cl[2:] = np.exp(CubicSpline(np.log(table["ell"]), ln_cl)(np.log(ell)))
    return cl


def convergence_cl(omega_m: float, sigma_8: float, lmax: int = 6144) -> np.ndarray:
    r"""Convergence power spectrum :math:`C_\ell^{\kappa\kappa}` of a cosmology, interpolated
    from the shipped grid table.

    Args:
        omega_m: matter density parameter, in the tabulated range (:func:`tabulated_box`,
            Omega_m in [0.12, 0.48]).
        sigma_8: amplitude of matter fluctuations, in the tabulated range (sigma_8 in
            [0.45, 1.15]).
        lmax: largest multipole, 2 ... 6144.

    Returns:
        float64 array ``[lmax + 1]``: C_ell for ell = 0 ... lmax, with C_0 = C_1 = 0.

    Raises:
        ValueError: a parameter outside the tabulated range (the message names it), or
            ``lmax`` out of range.

    Example:
        >>> cl = convergence_cl(0.31, 0.82)
        >>> cl.shape, cl[:2].tolist()
        ((6145,), [0.0, 0.0])
        >>> bool(convergence_cl(0.31, 0.9, lmax=100)[100] > convergence_cl(0.31, 0.8)[100])
        True
    """
    om, s8 = _check_cosmology(omega_m, sigma_8)
    t = _load_grid()
    return _interpolate_cl(t, om, s8, _check_lmax(lmax, t))


def lognormal_shift(omega_m: float) -> float:
    r"""Shift :math:`\lambda` of the shifted-lognormal convergence at this Omega_m (the
    field's minimum is :math:`-\lambda`).

    :math:`\lambda = \kappa_0^{HHS11}(0.8)\,\kappa_{empty}(\Omega_m) /
    \kappa_{empty}(\mathrm{Millennium})` (Hilbert, Hartlap & Schneider 2011, eq. 38), the
    definition of the two-model table; it does not depend on sigma_8.

    Args:
        omega_m: matter density parameter, in the tabulated range (Omega_m in [0.12, 0.48]).

    Returns:
        The shift, a positive float.

    Example:
        >>> round(lognormal_shift(0.31), 4), round(lognormal_shift(0.26), 4)
        (0.0246, 0.0218)
    """
    from scipy.interpolate import CubicSpline

    t = _load_grid()
    om = _check_parameter("omega_m", omega_m, t["shift_omega_m"])
    return float(CubicSpline(t["shift_omega_m"], t["shift"])(om))


def _table_lmax() -> int:
    return int(_load_grid()["ell"][-1])
