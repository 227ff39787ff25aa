r"""Fisher information of summary statistics, estimated from simulations.

A summary :math:`s(\kappa) \in \mathbb{R}^d` of a map (binned power spectrum, peak counts, the
outputs of a network) carries information on the parameters :math:`\theta \in \mathbb{R}^p`
(:math:`\Omega_m, \sigma_8`). Under a Gaussian likelihood with a parameter-independent
covariance, the Fisher matrix is

.. math:: F = J^\top C^{-1} J, \qquad J_{ia} = \partial \langle s_i \rangle / \partial \theta_a,

and :math:`\sqrt{(F^{-1})_{aa}}` is the smallest marginal error on :math:`\theta_a` any unbiased
estimator built from :math:`s` can reach (Cramér-Rao). :func:`fisher_matrix` estimates
:math:`J` by central finite differences of the mean summary over simulations at
:math:`\theta \pm \delta_a` (best with shared seeds: the same Gaussian realisation at the
fiducial and each step, so cosmic variance cancels in the difference) and :math:`C` from
simulations at the fiducial point. The inverse of an estimated covariance is biased high; the
Hartlap, Simon & Schneider (2007) factor :math:`(n - d - 2) / (n - 1)` removes that bias.

:func:`gaussian_cl_fisher` is the analytic counterpart for a binned power spectrum of a
Gaussian field (mode counting), an oracle for the simulated one.
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import as_float_array, check_ell_bins, check_positive

__all__ = [
    "fisher_matrix",
    "marginal_errors",
    "figure_of_merit",
    "fisher_ellipse",
    "gaussian_cl_fisher",
]


def _check_square(fisher) -> np.ndarray:
    fisher = as_float_array(fisher, "fisher", 2)
    if fisher.shape[0] != fisher.shape[1] or fisher.shape[0] == 0:
        raise ValueError(f"fisher must be a square [p, p] matrix, got shape {fisher.shape}")
    return fisher


def fisher_matrix(fiducial, plus, minus, step, hartlap: bool = True) -> np.ndarray:
    r"""The Fisher matrix :math:`F = J^\top C^{-1} J` of a summary statistic, from simulations.

    Args:
        fiducial: summaries of :math:`n` simulations at the fiducial parameters, ``[n, d]``;
            their sample covariance (``ddof=1``) is :math:`C`.
        plus: summaries at :math:`\theta + \delta_a e_a` for each of the :math:`p` parameters,
            ``[p, m, d]`` (:math:`m` simulations per step, ideally sharing seeds with
            :obj:`minus`).
        minus: summaries at :math:`\theta - \delta_a e_a`, ``[p, m, d]``.
        step: the steps :math:`\delta_a > 0`, ``[p]``.
        hartlap: multiply :math:`C^{-1}` by :math:`(n - d - 2) / (n - 1)` (Hartlap et al. 2007),
            which makes it an unbiased estimate of the inverse covariance.

    Returns:
        float64 ``[p, p]`` symmetric matrix.

    Raises:
        ValueError: shapes that do not match, non-finite values, a step that is not positive,
            too few fiducial simulations (:math:`n \le d + 2`: the Hartlap factor is not
            positive and the covariance is noise), or a singular covariance (a constant or
            redundant summary component).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> # s = theta + unit noise: F = identity (up to sampling noise)
        >>> fid = rng.standard_normal((2000, 2))
        >>> step = np.array([0.1, 0.1])
        >>> plus = np.stack([fid + [0.1, 0], fid + [0, 0.1]])
        >>> minus = np.stack([fid - [0.1, 0], fid - [0, 0.1]])
        >>> bool(np.allclose(fisher_matrix(fid, plus, minus, step), np.eye(2), atol=0.1))
        True
    """
    fiducial = as_float_array(fiducial, "fiducial", 2)
    plus = as_float_array(plus, "plus", 3)
    minus = as_float_array(minus, "minus", 3)
    step = as_float_array(np.atleast_1d(step), "step", 1)
    n, d = fiducial.shape
    p = len(step)
    if plus.shape != minus.shape:
        raise ValueError(
            f"plus and minus must have the same shape, got {plus.shape} and {minus.shape}"
        )
    if plus.shape[0] != p or plus.shape[2] != d:
        raise ValueError(
            f"plus and minus must be [p, m, d] = [{p}, m, {d}] (p = len(step) parameters, d = "
            f"fiducial.shape[1] summary components), got {plus.shape}"
        )
    if plus.shape[1] == 0:
        raise ValueError("plus and minus hold no simulations (m = 0)")
    if not (step > 0).all():
        raise ValueError(f"every step must be positive, got {step.tolist()}")
    if n <= d + 2:
        raise ValueError(
            f"{n} fiducial simulations are too few for a {d}-component summary: the covariance "
            f"needs n > d + 2 = {d + 2} (and n >> d for a precise inverse); simulate more or "
            "use fewer summary components (coarser bins)"
        )

    jacobian = (plus.mean(axis=1) - minus.mean(axis=1)).T / (2 * step)  # [d, p]
    cov = np.cov(fiducial, rowvar=False, ddof=1).reshape(d, d)
    scale = np.sqrt(np.diag(cov))
    # Constant up to rounding, relative to each component's own size (components may differ
    # by many orders of magnitude: spectra ~1e-5, counts ~100).
    constant = np.flatnonzero(scale <= 1e-12 * np.abs(fiducial).max(axis=0))
    if len(constant):
        raise ValueError(
            f"the covariance is singular: summary component(s) {constant.tolist()} do not vary "
            "over the fiducial simulations; drop them (e.g. empty histogram or peak bins)"
        )
    # Work with the correlation matrix: its conditioning says whether C can be inverted.
    corr = cov / np.outer(scale, scale)
    eig = np.linalg.eigvalsh(corr)
    if eig[0] <= 1e-10 * eig[-1]:
        raise ValueError(
            "the covariance is singular (condition number "
            f"{eig[-1] / max(eig[0], 1e-300):.1e}): some summary components are linear "
            "combinations of others (e.g. normalised histogram bins that sum to 1); drop one "
            "of them or use fewer components"
        )
    j = jacobian / scale[:, None]
    fisher = j.T @ np.linalg.solve(corr, j)
    if hartlap:
        fisher *= (n - d - 2) / (n - 1)
    return 0.5 * (fisher + fisher.T)


def marginal_errors(fisher) -> np.ndarray:
    r"""Marginal 1-sigma errors :math:`\sigma(\theta_a) = \sqrt{(F^{-1})_{aa}}`, ``[p]``.

    Example:
        >>> marginal_errors([[4.0, 0.0], [0.0, 100.0]])
        array([0.5, 0.1])
    """
    fisher = _check_square(fisher)
    cov = _inverse(fisher)
    return np.sqrt(np.diag(cov))


def figure_of_merit(fisher) -> float:
    r"""Figure of merit :math:`1/\sqrt{\det F^{-1}} = \sqrt{\det F}`: inversely proportional to
    the area (volume) of the confidence ellipse(oid).

    Example:
        >>> round(figure_of_merit([[4.0, 0.0], [0.0, 100.0]]), 9)
        20.0
    """
    fisher = _check_square(fisher)
    sign, logdet = np.linalg.slogdet(fisher)
    if sign <= 0:
        raise ValueError("fisher is not positive definite: no figure of merit")
    return float(math.exp(0.5 * logdet))


def fisher_ellipse(fisher, center, i: int = 0, j: int = 1, level: float = 0.683, num: int = 200):
    r"""Points on the marginal confidence ellipse of parameters :obj:`i` and :obj:`j`.

    The 2x2 block of :math:`F^{-1}` is the marginal covariance; the ellipse holds the
    probability :obj:`level` of a 2-D Gaussian (radius :math:`\sqrt{-2\ln(1 - \text{level})}`).

    Returns:
        float64 ``[num, 2]`` points (parameter :obj:`i`, parameter :obj:`j`), for plotting.

    Example:
        >>> pts = fisher_ellipse([[1.0, 0.0], [0.0, 4.0]], center=(0, 0), level=0.3935)
        >>> np.round(np.abs(pts).max(axis=0), 3)  # 1-sigma semi-axes: 1 and 0.5
        array([1. , 0.5])
    """
    fisher = _check_square(fisher)
    cov = _inverse(fisher)[np.ix_([i, j], [i, j])]
    if not 0 < level < 1:
        raise ValueError(f"level must be a probability in (0, 1), got {level}")
    radius = math.sqrt(-2 * math.log1p(-level))
    vals, vecs = np.linalg.eigh(cov)
    t = np.linspace(0, 2 * np.pi, num)
    circle = np.stack([np.cos(t), np.sin(t)], axis=1)
    return np.asarray(center, dtype=np.float64) + radius * (circle * np.sqrt(vals)) @ vecs.T


def _inverse(fisher: np.ndarray) -> np.ndarray:
    try:
        np.linalg.cholesky(fisher)
    except np.linalg.LinAlgError:
        raise ValueError(
            "fisher is not positive definite: the summary does not constrain every parameter "
            "(or the derivative estimates are too noisy); check the steps and simulation counts"
        ) from None
    return np.linalg.inv(fisher)


def gaussian_cl_fisher(cl_derivatives, cl, noise_cl=0.0, f_sky: float = 1.0, bin_edges=None):
    r"""Analytic Fisher matrix of a (binned) angular power spectrum of a Gaussian field.

    Each multipole has :math:`(2\ell + 1) f_{\rm sky}` independent modes, so the measured
    :math:`\hat C_\ell` has variance :math:`2 (C_\ell + N_\ell)^2 / ((2\ell+1) f_{\rm sky})`
    and different multipoles are independent (mode counting; Tegmark, Taylor & Heavens 1997).
    With bins, the summary is the mean of :math:`w_\ell \hat C_\ell` over each bin for any fixed
    weights :math:`w_\ell` (the Fisher matrix does not depend on them when bins are single
    multipoles; with wider bins it is that of
    :func:`pyg_sphere.baselines.power_spectrum`, :math:`w_\ell = \ell(\ell + 1)`).

    Args:
        cl_derivatives: :math:`\partial C_\ell / \partial \theta_a`, ``[p, lmax + 1]``.
        cl: the fiducial signal spectrum :math:`C_\ell`, ``[lmax + 1]``.
        noise_cl: noise spectrum :math:`N_\ell` (scalar or ``[lmax + 1]``); white noise of
            standard deviation :math:`\sigma` per pixel of solid angle :math:`\Omega_{\rm pix}`
            has :math:`N_\ell = \sigma^2 \Omega_{\rm pix}`.
        f_sky: observed fraction of the sky.
        bin_edges: increasing integer edges (bin ``b`` covers ``edges[b] <= ell < edges[b+1]``);
            ``None`` uses every multipole from 2 to lmax.

    Returns:
        float64 ``[p, p]``.

    Example:
        >>> import numpy as np
        >>> ell = np.arange(101)
        >>> cl = np.where(ell >= 2, 1.0 / (ell + 1.0) ** 2, 0.0)
        >>> # C_ell = A x template: F_AA = sum (2 ell + 1) / 2 over ell = 2..100
        >>> f = gaussian_cl_fisher(cl[None], cl)
        >>> bool(np.isclose(f[0, 0], sum((2 * l + 1) / 2 for l in range(2, 101))))
        True
    """
    dcl = as_float_array(np.atleast_2d(cl_derivatives), "cl_derivatives", 2)
    cl = as_float_array(cl, "cl", 1)
    lmax = len(cl) - 1
    if dcl.shape[1] != lmax + 1:
        raise ValueError(f"cl_derivatives must be [p, {lmax + 1}] like cl, got {dcl.shape}")
    noise = np.broadcast_to(as_float_array(np.atleast_1d(noise_cl), "noise_cl", 1), cl.shape)
    f_sky = check_positive("f_sky", f_sky)
    if f_sky > 1:
        raise ValueError(f"f_sky must be in (0, 1], got {f_sky}")
    ell = np.arange(lmax + 1)
    if bin_edges is None:
        edges = np.arange(2, lmax + 2)
    else:
        edges = check_ell_bins(np.asarray(bin_edges), lmax, "bin_edges")
    var = 2 * (cl + noise) ** 2 / ((2 * ell + 1) * f_sky)
    weight = (ell * (ell + 1.0)).astype(np.float64)
    p = dcl.shape[0]
    fisher = np.zeros((p, p))
    for lo, hi in zip(edges[:-1], edges[1:]):
        w = weight[lo:hi]
        mean_derivative = dcl[:, lo:hi] @ w  # the bin's derivative (times its width)
        bin_var = np.sum(w**2 * var[lo:hi])
        if bin_var > 0:
            fisher += np.outer(mean_derivative, mean_derivative) / bin_var
    return fisher
