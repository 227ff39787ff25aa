r"""Tomographic power spectra: every auto- and cross-spectrum of maps in several source bins,
and their analytic Fisher matrix.

With :math:`n` bins the summary has :math:`n(n+1)/2` spectra :math:`C^{ij}_\ell`
(:class:`TomographicPowerSpectrumSummary`, the tomographic counterpart of
:class:`~pyg_sphere.inference.PowerSpectrumSummary`). For Gaussian fields on a fraction
:math:`f_{sky}` of the sky, measured spectra of different multipoles are independent and

.. math:: \mathrm{Cov}[\hat C^{ij}_\ell, \hat C^{kl}_\ell] =
   \frac{\tilde C^{ik}_\ell \tilde C^{jl}_\ell + \tilde C^{il}_\ell \tilde C^{jk}_\ell}
        {(2\ell + 1) f_{sky}},
   \qquad \tilde C^{ij}_\ell = C^{ij}_\ell + \delta_{ij} N^i_\ell,

with the noise :math:`N^i` on the auto-spectra (Hu & Jain 2004; Takada & Jain 2004).
:func:`gaussian_cross_cl_fisher` sums :math:`J^\top \mathrm{Cov}^{-1} J` over (binned)
multipoles, the oracle of the Fisher matrix :func:`~pyg_sphere.inference.fisher_matrix`
measures from simulations (:func:`pyg_sphere.datasets.tomography.simulate_tomographic_maps`).
:func:`tomographic_fisher_forecast` puts it together with pyccl spectra, finite-difference
derivatives in (Omega_m, sigma_8) (:func:`tomographic_cl_derivatives`) and shape noise.
"""

from __future__ import annotations

import numpy as np

from .._lazy import lazy
from .._validate import as_float_array, check_ell_bins, check_int, check_nside, check_positive
from ..baselines.features import check_patch_pixels
from .summaries import Summary

hp = lazy("healpy")

__all__ = [
    "cross_spectra",
    "TomographicPowerSpectrumSummary",
    "gaussian_cross_cl_fisher",
    "tomographic_cl_derivatives",
    "tomographic_fisher_forecast",
]


def _as_maps(x, ndim: int) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    layout = "[n_bins, num_pixels]" if ndim == 2 else "[num_samples, n_bins, num_pixels]"
    if x.ndim != ndim:
        raise ValueError(f"maps must be {layout} (full-sky maps), got shape {list(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("maps contain NaN or infinite values")
    return x


def _spectra(maps: np.ndarray, lmax: int, nest: bool, iter: int) -> np.ndarray:
    """All spectra [n, n, lmax + 1] of checked maps [n, npix]."""
    if nest:
        maps = hp.reorder(maps, n2r=True)
    alm = [hp.map2alm(m, lmax=lmax, iter=iter, use_pixel_weights=False) for m in maps]
    n = len(alm)
    out = np.empty((n, n, lmax + 1))
    for i in range(n):
        for j in range(i, n):
            out[i, j] = out[j, i] = hp.alm2cl(alm[i], alm[j], lmax=lmax)
    return out


def cross_spectra(maps, *, lmax: int | None = None, nest: bool = False, iter: int = 3):
    r"""All auto- and cross-spectra :math:`\hat C^{ij}_\ell` of full-sky maps in several bins.

    Each map's coefficients come from ``hp.map2alm`` (``use_pixel_weights=False``: pixel
    weights would be downloaded) and every pair's spectrum from ``hp.alm2cl``, the same as
    ``hp.anafast(maps[i], map2=maps[j])`` at a fraction of the cost.

    Args:
        maps: ``[n_bins, 12 * nside**2]`` (numpy or torch).
        lmax: largest multipole (default ``3 * nside - 1``).
        nest: the maps are in NESTED ordering (default RING).
        iter: Jacobi iterations of ``map2alm`` (healpy's default, 3: accurate for full-sky maps).

    Returns:
        float64 array ``[n_bins, n_bins, lmax + 1]``, symmetric.

    Example:
        >>> import numpy as np, healpy as hp
        >>> m = np.random.default_rng(0).standard_normal((2, 768))
        >>> cl = cross_spectra(m, lmax=16)
        >>> cl.shape, bool(np.allclose(cl[0, 1], hp.anafast(m[0], map2=m[1], lmax=16)))
        ((2, 2, 17), True)
    """
    maps = _as_maps(maps, 2)
    if not hp.isnpixok(maps.shape[1]):
        raise ValueError(f"{maps.shape[1]} pixels is not a HEALPix map (12 * nside**2)")
    nside = hp.npix2nside(maps.shape[1])
    lmax = 3 * nside - 1 if lmax is None else check_int("lmax", lmax, 0)
    return _spectra(maps, lmax, bool(nest), check_int("iter", iter, 0))


class TomographicPowerSpectrumSummary(Summary):
    r"""Every auto- and cross-spectrum of tomographic maps, as :math:`\ell(\ell+1) C^{ij}_\ell`
    averaged in :math:`\ell` bins (:func:`cross_spectra`).

    The features are ordered pair-major: the bins of :math:`C^{00}`, then :math:`C^{01}`, ...,
    :math:`C^{0,n-1}`, :math:`C^{11}`, ... (pairs ``i <= j`` in :attr:`pairs`). Takes full-sky
    maps ``[num_samples, n_bins, 12 * nside**2]``; a partial footprint enters the analytic
    Fisher matrix through ``f_sky`` (:func:`gaussian_cross_cl_fisher`, same ``bin_edges``).
    With ``pixels`` it takes patches ``[num_samples, n_bins, len(pixels)]`` instead, placed at
    their pixels in otherwise empty maps, as
    :class:`~pyg_sphere.inference.PowerSpectrumSummary` does: pseudo-spectra of the patch,
    which mix multipoles at its edges (compare them with simulations, not with the analytic
    matrix).

    Shapes:
        - **input:** ``[num_samples, n_bins, 12 * nside**2]``, or
          ``[num_samples, n_bins, len(pixels)]`` with ``pixels``
        - **output:** float64 ``[num_samples, n_pairs * num_ell_bins]``,
          ``n_pairs = n_bins (n_bins + 1) / 2``

    Args:
        nside: HEALPix resolution of the maps.
        n_bins: number of tomographic bins.
        bins: number of equal-width :math:`\ell` bins over ``lmin ... lmax``, or edges.
        lmin: smallest multipole (default 2: lensing has no monopole or dipole).
        lmax: largest multipole (default ``2 * nside``).
        pixels: nested pixel ids of the columns of patches (1-D), e.g.
            ``FisherStream.patch_pixels(0)``; ``None`` (default): full-sky maps.
        nest: full-sky maps are in NESTED ordering (default RING, as the simulator makes
            them). Patches (``pixels``) are always in the order of their nested ids.
        iter: Jacobi iterations of ``map2alm``; default 3 for full-sky maps (healpy's, accurate
            for band-limited maps) and 0 with ``pixels``, as
            :class:`~pyg_sphere.inference.PowerSpectrumSummary` (a patch is not band-limited:
            the refinement barely changes its pseudo-spectra and costs 4x).
        log: summarise :math:`\ln` of each bin (auto-spectra only make sense then; cross-
            spectra can be negative, so this needs positive cross-spectra).

    Attributes:
        edges: the :math:`\ell` bin edges ``[num_ell_bins + 1]``.
        pairs: the bin pairs ``(i, j)`` in feature order.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).standard_normal((3, 2, 768))  # 3 samples, 2 bins
        >>> s = TomographicPowerSpectrumSummary(nside=8, n_bins=2, bins=4)
        >>> s(x).shape, s.pairs
        ((3, 12), [(0, 0), (0, 1), (1, 1)])
        >>> patches = TomographicPowerSpectrumSummary(8, 2, bins=4, pixels=np.arange(64), iter=0)
        >>> patches(x[:, :, :64]).shape  # 3 samples of the first order-1 patch
        (3, 12)
    """

    def __init__(
        self,
        nside: int,
        n_bins: int,
        *,
        bins=10,
        lmin=2,
        lmax=None,
        pixels=None,
        nest=False,
        iter=None,
        log=False,
    ):
        super().__init__()
        self.nside = check_nside(nside)
        npix = 12 * self.nside**2
        self.pixels = None if pixels is None else check_patch_pixels(nside, pixels, len(pixels))
        self.num_pixels = npix if self.pixels is None else len(self.pixels)
        self.n_bins = check_int("n_bins", n_bins, 1)
        self.lmax = 2 * self.nside if lmax is None else check_int("lmax", lmax, 1)
        self.lmin = check_int("lmin", lmin, 0)
        if np.ndim(bins) == 0:
            bins = np.linspace(self.lmin, self.lmax + 1, check_int("bins", bins, 1) + 1)
            bins = np.unique(bins.round().astype(np.int64))
        self.edges = check_ell_bins(np.asarray(bins), self.lmax, "bins")
        if iter is None:
            iter = 3 if self.pixels is None else 0
        self.nest, self.iter, self.log = bool(nest), check_int("iter", iter, 0), bool(log)
        self.pairs = [(int(i), int(j)) for i, j in zip(*np.triu_indices(self.n_bins))]

    def fit(self, x) -> "TomographicPowerSpectrumSummary":
        """Nothing to fit (returns ``self``), for the :class:`Summary` interface."""
        return self

    def __call__(self, x) -> np.ndarray:
        """The summaries of maps ``x`` ``[num_samples, n_bins, 12 * nside**2]`` (patches
        ``[num_samples, n_bins, len(pixels)]`` with ``pixels``): float64 ``[num_samples,
        n_pairs * num_ell_bins]``."""
        x = _as_maps(x, 3)
        if x.shape[1:] != (self.n_bins, self.num_pixels):
            what = "12 * nside**2" if self.pixels is None else "len(pixels)"
            raise ValueError(
                f"maps must be [num_samples, n_bins, {what}] = [num_samples, "
                f"{self.n_bins}, {self.num_pixels}], got {list(x.shape)}"
            )
        return self._compute(x)

    def _compute(self, x):
        i, j = np.array(self.pairs).T
        ell = np.arange(self.lmax + 1)
        lo, hi = self.edges[:-1], self.edges[1:]
        nest, full, ring = self.nest, None, None
        if self.pixels is not None:  # patches go to their RING positions in empty maps
            nest, ring = False, hp.nest2ring(self.nside, self.pixels)
            full = np.zeros((self.n_bins, 12 * self.nside**2))
        out = []
        for maps in x:
            if full is not None:
                full[:, ring] = maps
                maps = full
            cl = _spectra(maps, self.lmax, nest, self.iter)[i, j] * (ell * (ell + 1.0))
            csum = np.concatenate([np.zeros((len(i), 1)), np.cumsum(cl, axis=1)], axis=1)
            out.append(((csum[:, hi] - csum[:, lo]) / (hi - lo)).reshape(-1))
        out = np.array(out)
        return np.log(out) if self.log else out

    def _repr_args(self):
        where = "" if self.pixels is None else f", num_pixels={self.num_pixels}"
        return (
            f"nside={self.nside}, n_bins={self.n_bins}, ell_bins={len(self.edges) - 1}, "
            f"lmax={self.lmax}, nest={self.nest}{where}"
        )


def _noise_matrix(noise_cl, n: int, size: int) -> np.ndarray:
    noise = np.asarray(noise_cl, dtype=np.float64)
    if noise.ndim == 0:
        noise = np.full(n, float(noise))
    if noise.ndim == 1:
        noise = np.repeat(noise[:, None], size, axis=1) if noise.shape == (n,) else noise
    if noise.shape != (n, size) or not np.all(np.isfinite(noise)) or np.any(noise < 0):
        raise ValueError(
            f"noise_cl must be non-negative: a number, one per bin [{n}], or [{n}, {size}], got "
            f"shape {noise.shape}"
        )
    return noise


def gaussian_cross_cl_fisher(cl_derivatives, cl, noise_cl=0.0, f_sky: float = 1.0, bin_edges=None):
    r"""Analytic Fisher matrix of all (binned) auto- and cross-spectra of Gaussian fields.

    Per multipole the :math:`n(n+1)/2` spectra have the covariance of the module docstring;
    a bin's summary is the mean of :math:`\ell(\ell+1)\hat C^{ij}_\ell` over its multipoles
    (:class:`TomographicPowerSpectrumSummary`), so its derivative is
    :math:`D_b = \sum_{\ell \in b} \ell(\ell+1)\,\partial C_\ell` and its covariance
    :math:`\Sigma_b = \sum_{\ell \in b} [\ell(\ell+1)]^2 \mathrm{Cov}_\ell`, and
    :math:`F = \sum_b D_b^\top \Sigma_b^{-1} D_b`. Without binning this is
    :math:`\sum_\ell \frac{(2\ell+1) f_{sky}}{2} \mathrm{tr}[\tilde C^{-1} \partial_a C\,
    \tilde C^{-1} \partial_b C]`; with one bin it is
    :func:`~pyg_sphere.inference.gaussian_cl_fisher`.

    Args:
        cl_derivatives: :math:`\partial C^{ij}_\ell / \partial\theta_a`,
            ``[p, n_bins, n_bins, lmax + 1]`` (e.g. :func:`tomographic_cl_derivatives`).
        cl: fiducial spectra ``[n_bins, n_bins, lmax + 1]``, symmetric.
        noise_cl: noise on the auto-spectra: a number, ``[n_bins]`` (white, e.g.
            :func:`~pyg_sphere.datasets.tomography.tomographic_noise_cl`) or
            ``[n_bins, lmax + 1]``.
        f_sky: observed fraction of the sky, in (0, 1].
        bin_edges: increasing integer edges (bin ``b`` covers ``edges[b] <= ell <
            edges[b+1]``); ``None``: every multipole from 2 to lmax.

    Returns:
        float64 ``[p, p]``.

    Example:
        >>> import numpy as np
        >>> ell = np.arange(65)
        >>> c = np.where(ell >= 2, 1e-3 / (ell + 5.0) ** 2, 0.0)
        >>> cl = np.array([[c, 0.5 * c], [0.5 * c, c]])
        >>> f = gaussian_cross_cl_fisher(cl[None], cl)  # an amplitude: F = sum (2l+1) n_bins / 2
        >>> bool(np.isclose(f[0, 0], sum(2 * l + 1 for l in range(2, 65))))
        True
    """
    cl = as_float_array(cl, "cl", 3, "[n_bins, n_bins, lmax + 1]")
    n, size = cl.shape[0], cl.shape[2]
    if cl.shape[1] != n or not np.allclose(cl, cl.transpose(1, 0, 2), rtol=1e-10, atol=0):
        raise ValueError(f"cl must be symmetric [n_bins, n_bins, lmax + 1], got {cl.shape}")
    dcl = as_float_array(cl_derivatives, "cl_derivatives", 4, "[p, n_bins, n_bins, lmax + 1]")
    if dcl.shape[1:] != cl.shape:
        raise ValueError(f"cl_derivatives must be [p, {n}, {n}, {size}] like cl, got {dcl.shape}")
    f_sky = check_positive("f_sky", f_sky)
    if f_sky > 1:
        raise ValueError(f"f_sky must be in (0, 1], got {f_sky}")
    lmax = size - 1
    if bin_edges is None:
        edges = np.arange(2, lmax + 2)
    else:
        edges = check_ell_bins(np.asarray(bin_edges), lmax, "bin_edges")
    total = np.moveaxis(cl, -1, 0).copy()  # [lmax + 1, n, n]
    total[:, np.arange(n), np.arange(n)] += _noise_matrix(noise_cl, n, size).T
    i, j = np.triu_indices(n)
    ell = np.arange(size, dtype=np.float64)
    ik, jl = total[:, i[:, None], i[None, :]], total[:, j[:, None], j[None, :]]
    il, jk = total[:, i[:, None], j[None, :]], total[:, j[:, None], i[None, :]]
    cov = (ik * jl + il * jk) / ((2 * ell + 1) * f_sky)[:, None, None]  # [lmax + 1, m, m]
    weight = ell * (ell + 1)
    deriv = dcl[:, i, j, :] * weight  # [p, m, lmax + 1]
    p = dcl.shape[0]
    fisher = np.zeros((p, p))
    for lo, hi in zip(edges[:-1], edges[1:]):
        sigma = np.einsum("l,lab->ab", weight[lo:hi] ** 2, cov[lo:hi])
        d = deriv[:, :, lo:hi].sum(axis=2)  # [p, m]
        scale = np.sqrt(np.diag(sigma))
        if not np.all(scale > 0) or np.linalg.eigvalsh(sigma / np.outer(scale, scale))[0] < 1e-12:
            raise ValueError(
                f"the spectra's covariance is singular in the multipole bin [{lo}, {hi}): the "
                "signal + noise matrix is not positive definite there (bins with identical "
                "n(z) and no noise, or multipoles without signal); add noise, drop duplicate "
                "bins or start the edges at ell >= 2"
            )
        fisher += d @ np.linalg.solve(sigma, d.T)
    return 0.5 * (fisher + fisher.T)


def tomographic_cl_derivatives(omega_m, sigma_8, bins, lmax: int, step=(0.01, 0.01)):
    r"""Derivatives of all tomographic spectra in (Omega_m, sigma_8) by central finite
    differences of :func:`~pyg_sphere.datasets.tomography.tomographic_cl` (pyccl).

    Args:
        omega_m, sigma_8: the fiducial cosmology.
        bins: the source bins (:class:`~pyg_sphere.datasets.tomography.SourceBins`).
        lmax: largest multipole.
        step: the steps in Omega_m and sigma_8, positive.

    Returns:
        float64 ``[2, n_bins, n_bins, lmax + 1]``.

    Example:
        >>> from pyg_sphere.datasets.tomography import smail_bins
        >>> d = tomographic_cl_derivatives(0.31, 0.82, smail_bins(2), lmax=32)
        >>> d.shape, bool((d[1, :, :, 2:] > 0).all())   # more sigma_8, more power
        ((2, 2, 2, 33), True)
    """
    from ..datasets.tomography import tomographic_cl

    step = as_float_array(np.atleast_1d(step), "step", 1)
    if step.shape != (2,) or not np.all(step > 0):
        raise ValueError(f"step must be two positive numbers (Omega_m, sigma_8), got {step}")
    theta = np.array([omega_m, sigma_8], dtype=np.float64)
    out = []
    for a in range(2):
        e = step[a] * np.eye(2)[a]
        plus = tomographic_cl(*(theta + e).tolist(), bins, lmax)
        minus = tomographic_cl(*(theta - e).tolist(), bins, lmax)
        out.append((plus - minus) / (2 * step[a]))
    return np.stack(out)


def tomographic_fisher_forecast(
    omega_m,
    sigma_8,
    bins,
    lmax: int,
    *,
    sigma_e: float = 0.0,
    n_gal=None,
    f_sky: float = 1.0,
    bin_edges=None,
    step=(0.01, 0.01),
) -> np.ndarray:
    r"""Analytic Fisher matrix of (Omega_m, sigma_8) from all auto- and cross-spectra of the
    convergence in tomographic ``bins``: pyccl spectra, their finite-difference derivatives
    and shape noise :math:`\sigma_e^2 / \bar n_i` with ``n_gal`` split by ``bins.fractions``.

    Args:
        omega_m, sigma_8: the fiducial cosmology.
        bins: the source bins.
        lmax: largest multipole.
        sigma_e: ellipticity dispersion per component (0: no noise).
        n_gal: galaxy density per arcmin^2 (total, or one per bin); needed when sigma_e > 0.
        f_sky: observed fraction of the sky.
        bin_edges: multipole bin edges (``None``: every multipole from 2 to lmax).
        step: finite-difference steps in (Omega_m, sigma_8).

    Returns:
        float64 ``[2, 2]``.

    Example:
        >>> from pyg_sphere.datasets.tomography import smail_bins
        >>> from pyg_sphere.inference import figure_of_merit
        >>> kw = dict(lmax=100, sigma_e=0.26, n_gal=30, f_sky=0.1)
        >>> one = tomographic_fisher_forecast(0.31, 0.82, smail_bins(1), **kw)
        >>> two = tomographic_fisher_forecast(0.31, 0.82, smail_bins(2), **kw)
        >>> bool(figure_of_merit(two) > figure_of_merit(one))
        True
    """
    from ..datasets.tomography import tomographic_cl, tomographic_noise_cl

    noise = 0.0
    if np.any(np.asarray(sigma_e) != 0):
        if n_gal is None:
            raise ValueError("sigma_e > 0 needs n_gal (galaxies per arcmin^2, e.g. 30)")
        noise = tomographic_noise_cl(bins, sigma_e, n_gal)
    cl = tomographic_cl(omega_m, sigma_8, bins, lmax)
    dcl = tomographic_cl_derivatives(omega_m, sigma_8, bins, lmax, step)
    return gaussian_cross_cl_fisher(dcl, cl, noise, f_sky, bin_edges)
