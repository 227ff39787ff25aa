r"""Summary statistics of HEALPix patches with one interface, for Fisher forecasts.

A summary maps patches ``[num_samples, num_pixels]`` (nested order, numpy or torch, as the
baselines take them) to vectors ``[num_samples, num_features]``. Settings that depend on the
data (histogram and peak-height bins) are fixed once by :meth:`Summary.fit` on training
patches and then kept, so that fiducial and finite-difference simulations are summarised
identically:

.. code-block:: python

    summary = PeakCountSummary(nside, pixels, fwhm=np.radians(1.0)).fit(train_patches)
    F = fisher_matrix(summary(fiducial), summary(plus), summary(minus), step)

Tomographic surveys: :class:`HistogramSummary` and :class:`PeakCountSummary` with ``n_bins=C``
take maps ``[num_samples, C, num_pixels]`` (the source bins as channels, as
:class:`~pyg_sphere.inference.TomographicPowerSpectrumSummary` takes them) and summarise each
bin separately, with its own edges fitted on that bin's values; the features are concatenated
bin-major (all of bin 0's, then bin 1's, ...). :class:`CombinedSummary` passes the maps to each
part unchanged, so a per-bin histogram and the tomographic power spectrum combine:

.. code-block:: python

    summary = CombinedSummary(
        TomographicPowerSpectrumSummary(nside, n_bins=C), HistogramSummary(n_bins=C)
    ).fit(train_maps)  # train_maps: [num_samples, C, 12 * nside**2]

:class:`PowerSpectrumSummary`, :class:`HistogramSummary` and :class:`PeakCountSummary` are the
classical statistics; :class:`CombinedSummary` concatenates summaries (power spectrum + peaks);
:class:`NetworkSummary` uses a trained network's outputs, e.g. a
:class:`~pyg_sphere.nn.models.DeepSphere` regressor of :math:`(\Omega_m, \sigma_8)`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .._validate import check_int
from ..baselines.features import (
    as_channels,
    as_samples,
    check_patch_pixels,
    histogram,
    histogram_edges,
    local_maxima,
    peak_counts,
    power_spectrum,
    smooth,
)

__all__ = [
    "Summary",
    "PowerSpectrumSummary",
    "HistogramSummary",
    "PeakCountSummary",
    "CombinedSummary",
    "NetworkSummary",
    "summary_layout",
]


def summary_layout(x) -> np.ndarray:
    """Maps ``x`` ``[..., N, C]`` (the layout of the datasets, the streams and the networks) in
    the layout of the summaries: ``[m, N]`` when ``C == 1``, ``[m, C, N]`` (bins first, as
    ``n_bins=C`` summaries and :class:`~pyg_sphere.inference.TomographicPowerSpectrumSummary`
    take them) otherwise, ``m`` the product of the leading dimensions. A view when it can be.

    Example:
        >>> summary_layout(np.zeros((2, 5, 48, 1))).shape  # 2 Fisher items, one channel
        (10, 48)
        >>> summary_layout(np.zeros((3, 48, 4))).shape  # 3 patches of 4 bins
        (3, 4, 48)
    """
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"maps must be [..., num_pixels, channels], got shape {tuple(x.shape)}")
    n, c = x.shape[-2:]
    return x.reshape(-1, n) if c == 1 else x.reshape(-1, n, c).transpose(0, 2, 1)


class Summary(ABC):
    """Base class: :meth:`fit` (optional, returns ``self``) then call on patches.

    Subclasses implement :meth:`_compute` and, when they have data-dependent settings,
    :meth:`_fit`; both receive the input as :meth:`_check_input` returns it (by default
    :func:`~pyg_sphere.baselines.features.as_samples`: ``[num_samples, num_pixels]``).
    """

    #: Whether :meth:`fit` must be called before the summary can be computed.
    needs_fit = False

    def __init__(self):
        self.fitted = not self.needs_fit

    def fit(self, x) -> "Summary":
        """Fixes the data-dependent settings on training patches ``x``; returns ``self``."""
        self._fit(self._check_input(x))
        self.fitted = True
        return self

    def _fit(self, x: np.ndarray) -> None:  # noqa: B027 (an optional hook)
        pass

    def __call__(self, x) -> np.ndarray:
        """The summaries of patches ``x``: float64 ``[num_samples, num_features]``."""
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call .fit(training_patches)")
        return self._compute(self._check_input(x))

    def _check_input(self, x):
        """Checks and converts the input of :meth:`fit` and :meth:`__call__`."""
        return as_samples(x)

    @abstractmethod
    def _compute(self, x: np.ndarray) -> np.ndarray:
        """The summaries of checked patches ``x`` [num_samples, num_pixels]."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._repr_args()})"

    def _repr_args(self) -> str:
        return ""


class PowerSpectrumSummary(Summary):
    r"""The binned pseudo power spectrum :math:`\ell(\ell+1) C_\ell` of each patch
    (:func:`pyg_sphere.baselines.power_spectrum`).

    Args:
        nside: HEALPix resolution of the patches.
        pixels: nested pixel ids of the patch columns (default: the first ``num_pixels``).
        bins: number of equal-width :math:`\ell` bins, or edges.
        lmin: multipoles below are dropped (a patch barely measures its largest scales).
        lmax: largest multipole (default ``2 * nside``).
        log: summarise :math:`\ln` of each bin, closer to Gaussian distributed.

    Example::

        >>> import numpy as np
        >>> x = np.random.default_rng(0).standard_normal((2, 256))
        >>> PowerSpectrumSummary(nside=16, bins=8)(x).shape
        (2, 8)
    """

    def __init__(self, nside: int, pixels=None, *, bins=10, lmin: int = 0, lmax=None, log=False):
        super().__init__()
        self.nside, self.pixels = nside, pixels
        self.lmax = 2 * nside if lmax is None else check_int("lmax", lmax, 1)
        self.lmin = check_int("lmin", lmin, 0)
        if np.ndim(bins) == 0:
            bins = np.linspace(self.lmin, self.lmax + 1, check_int("bins", bins, 1) + 1)
            bins = np.unique(bins.round().astype(np.int64))
        self.bins = np.asarray(bins)
        self.log = bool(log)

    def _compute(self, x):
        ps = power_spectrum(x, self.nside, self.pixels, lmax=self.lmax, bins=self.bins)
        return np.log(ps) if self.log else ps

    def _repr_args(self):
        return f"nside={self.nside}, bins={len(self.bins) - 1}, lmax={self.lmax}, log={self.log}"


def _as_bins(x, n_bins: int, name: str = "x") -> list:
    """The ``n_bins`` tomographic bins of maps ``x`` ``[num_samples, n_bins, num_pixels]``, each
    checked by :func:`~pyg_sphere.baselines.features.as_samples`: a list of ``[num_samples,
    num_pixels]`` arrays."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[1] != n_bins:
        hint = ""
        if x.ndim == 3 and x.shape[2] == n_bins:
            hint = (
                " For channel-last maps [num_samples, num_pixels, n_bins] use "
                "np.moveaxis(x, -1, 1)."
            )
        raise ValueError(
            f"`{name}` must have shape [num_samples, n_bins, num_pixels] = [num_samples, {n_bins}, "
            f"num_pixels] (the tomographic bins as channels), got {tuple(x.shape)}.{hint}"
        )
    return [np.ascontiguousarray(c) for c in as_channels(x, name, axis=1)]


class _PerBinSummary(Summary):
    """A summary with data-dependent edges (:meth:`_fit_edges`, :meth:`_summarise`), of
    single-channel patches (``n_bins=None``) or, with ``n_bins=C``, of each tomographic bin of
    maps ``[num_samples, C, num_pixels]`` with its own edges, concatenated bin-major."""

    needs_fit = True

    def __init__(self, n_bins=None):
        super().__init__()
        self.n_bins = None if n_bins is None else check_int("n_bins", n_bins, 1)
        self.edges = None

    def _check_input(self, x):
        if self.n_bins is not None:
            return _as_bins(x, self.n_bins)
        shape = getattr(x, "shape", None)
        if shape is not None and len(shape) == 3 and shape[2] != 1:
            raise ValueError(
                f"`x` must have shape [num_samples, num_pixels] or [num_samples, num_pixels, 1], "
                f"got {tuple(shape)}. For maps with several tomographic bins [num_samples, "
                f"n_bins, num_pixels], give {type(self).__name__}(..., n_bins={shape[1]})."
            )
        return as_samples(x)

    @abstractmethod
    def _fit_edges(self, x: np.ndarray) -> np.ndarray:
        """The edges fitted on checked patches ``x`` [num_samples, num_pixels]."""

    @abstractmethod
    def _summarise(self, x: np.ndarray, edges: np.ndarray) -> np.ndarray:
        """The summaries of checked patches ``x`` [num_samples, num_pixels] with ``edges``."""

    def _fit(self, x):
        if self.n_bins is None:
            self.edges = self._fit_edges(x)
            return
        edges = []
        for c, bin_x in enumerate(x):
            try:
                edges.append(self._fit_edges(bin_x))
            except ValueError as err:
                raise ValueError(f"tomographic bin {c}: {err}") from err
        self.edges = np.stack(edges)

    def _compute(self, x):
        if self.n_bins is None:
            return self._summarise(x, self.edges)
        return np.concatenate([self._summarise(b, e) for b, e in zip(x, self.edges)], axis=1)

    def _n_bins_repr(self) -> str:
        return "" if self.n_bins is None else f", n_bins={self.n_bins}"


class HistogramSummary(_PerBinSummary):
    """The histogram of the pixel values of each patch (fractions per bin), with bin edges
    fitted on training data (:func:`pyg_sphere.baselines.histogram_edges`).

    The fractions of all bins sum to 1, which would make their covariance singular; the last
    bin is dropped (it is 1 minus the others).

    With ``n_bins=C`` each tomographic bin of the maps gets its own histogram, with edges
    fitted on that bin's training values (bins have very different variances); the features
    are concatenated bin-major: ``C * (bins - 1)`` of them, bin 0's first.

    Shapes:
        - input (``n_bins=None``): ``[num_samples, num_pixels]`` or
          ``[num_samples, num_pixels, 1]`` (numpy or torch)
        - input (``n_bins=C``): ``[num_samples, C, num_pixels]``, the tomographic bins as
          channels like :class:`~pyg_sphere.inference.TomographicPowerSpectrumSummary`
        - output: float64 ``[num_samples, (bins - 1)]`` or ``[num_samples, C * (bins - 1)]``

    Args:
        bins: number of bins (the summary has ``bins - 1`` components per tomographic bin).
        percentiles: the range of the bins, in percentiles of the training values.
        fwhm: smooth the patches first (:func:`pyg_sphere.baselines.smooth`), FWHM in
            radians; needs :obj:`nside`.
        nside, pixels: the patches' resolution and pixels, for :obj:`fwhm`.
        n_bins: number of tomographic bins (channels) of the maps; ``None``: single-channel
            patches.

    Attributes:
        edges: the fitted edges ``[bins + 1]``, or ``[C, bins + 1]`` (one row per tomographic
            bin) with ``n_bins=C``.

    Example::

        >>> import numpy as np
        >>> x = np.random.default_rng(0).standard_normal((5, 64))
        >>> HistogramSummary(bins=6).fit(x)(x).shape
        (5, 5)
        >>> maps = np.random.default_rng(0).standard_normal((5, 2, 64)) * [[[1.0], [3.0]]]
        >>> s = HistogramSummary(bins=6, n_bins=2).fit(maps)
        >>> s(maps).shape, s.edges.shape
        ((5, 10), (2, 7))
    """

    def __init__(
        self,
        bins: int = 20,
        *,
        percentiles=(1.0, 99.0),
        fwhm=None,
        nside=None,
        pixels=None,
        n_bins=None,
    ):
        super().__init__(n_bins)
        self.bins = check_int("bins", bins, 2)
        self.percentiles = tuple(percentiles)
        if fwhm is not None and nside is None:
            raise ValueError("fwhm= smooths the patches on the sphere: give their nside= too")
        self.fwhm, self.nside, self.pixels = fwhm, nside, pixels

    def _prepare(self, x):
        return x if self.fwhm is None else smooth(x, self.nside, self.pixels, fwhm=self.fwhm)

    def _fit_edges(self, x):
        return histogram_edges(self._prepare(x), self.bins, self.percentiles)

    def _summarise(self, x, edges):
        return histogram(self._prepare(x), edges)[:, :-1]

    def _repr_args(self):
        args = f"bins={self.bins}, percentiles={self.percentiles}, fwhm={self.fwhm}"
        return args + self._n_bins_repr()


class PeakCountSummary(_PerBinSummary):
    """Peak counts (:func:`pyg_sphere.baselines.peak_counts`): the number of local maxima of
    the smoothed patch per height bin, with edges at percentiles of the training patches' peak
    heights (equal numbers of training peaks per bin, so no bin is empty).

    With ``n_bins=C`` the peaks of each tomographic bin of the maps are counted separately,
    with height edges fitted on that bin's training peaks; the counts are concatenated
    bin-major: ``C * bins`` of them, bin 0's first.

    Shapes:
        - input (``n_bins=None``): ``[num_samples, num_pixels]`` or
          ``[num_samples, num_pixels, 1]`` (numpy or torch), nested order
        - input (``n_bins=C``): ``[num_samples, C, num_pixels]``, the tomographic bins as
          channels like :class:`~pyg_sphere.inference.TomographicPowerSpectrumSummary`, nested
          order (e.g. ``simulate_tomographic_maps(..., nest=True)``)
        - output: float64 ``[num_samples, bins]`` or ``[num_samples, C * bins]``

    Args:
        nside: HEALPix resolution of the patches.
        pixels: nested pixel ids of the patch columns (default: the first ``num_pixels``).
        bins: number of height bins.
        fwhm: smoothing FWHM in radians before finding peaks (``None``: none).
        percentiles: the range of the edges, in percentiles of the training peak heights;
            peaks beyond fall in the end bins.
        n_bins: number of tomographic bins (channels) of the maps; ``None``: single-channel
            patches.

    Attributes:
        edges: the fitted height edges ``[bins + 1]``, or ``[C, bins + 1]`` (one row per
            tomographic bin) with ``n_bins=C``.

    Example::

        >>> import numpy as np
        >>> x = np.random.default_rng(0).standard_normal((20, 256))
        >>> s = PeakCountSummary(nside=16, bins=4, fwhm=np.radians(4.0)).fit(x)
        >>> s(x).shape
        (20, 4)
        >>> maps = np.stack([x, 5 * x[::-1]], axis=1)  # [20, 2 tomographic bins, 256]
        >>> PeakCountSummary(nside=16, bins=4, n_bins=2).fit(maps)(maps).shape
        (20, 8)
    """

    def __init__(
        self,
        nside: int,
        pixels=None,
        *,
        bins: int = 10,
        fwhm=None,
        percentiles=(0, 100),
        n_bins=None,
    ):
        super().__init__(n_bins)
        self.nside, self.pixels, self.fwhm = nside, pixels, fwhm
        self.bins = check_int("bins", bins, 1)
        self.percentiles = tuple(percentiles)

    def _peaks(self, x):
        pixels = check_patch_pixels(self.nside, self.pixels, x.shape[1])
        if self.fwhm is not None:
            x = smooth(x, self.nside, pixels, fwhm=self.fwhm)
        return x, local_maxima(x, self.nside, pixels)

    def _fit_edges(self, x):
        x, peaks = self._peaks(x)
        heights = x[peaks]
        if heights.size < self.bins:
            raise ValueError(
                f"the training patches have {heights.size} peaks, fewer than bins={self.bins}: "
                "fit on more patches or use fewer bins"
            )
        lo, hi = self.percentiles
        edges = np.percentile(heights, np.linspace(lo, hi, self.bins + 1))
        if not (np.diff(edges) > 0).all():
            raise ValueError("peak heights repeat too much for distinct bins: use fewer bins")
        return edges

    def _summarise(self, x, edges):
        return peak_counts(x, self.nside, self.pixels, edges=edges, fwhm=self.fwhm)

    def _repr_args(self):
        return f"nside={self.nside}, bins={self.bins}, fwhm={self.fwhm}" + self._n_bins_repr()


class CombinedSummary(Summary):
    """Several summaries side by side (e.g. power spectrum + peaks): their outputs
    concatenated, each fitted on the same training patches.

    The input goes to each part unchanged, each checking it in its own convention: single-
    channel patches ``[num_samples, num_pixels]``, or tomographic maps ``[num_samples, C,
    num_pixels]`` for parts that take them (``HistogramSummary(n_bins=C)``,
    ``PeakCountSummary(n_bins=C)``,
    :class:`~pyg_sphere.inference.TomographicPowerSpectrumSummary`).

    Example::

        >>> import numpy as np
        >>> x = np.random.default_rng(0).standard_normal((20, 256))
        >>> s = CombinedSummary(PowerSpectrumSummary(16, bins=5), PeakCountSummary(16, bins=3))
        >>> s.fit(x)(x).shape
        (20, 8)
    """

    def __init__(self, *summaries: Summary):
        if not summaries or not all(isinstance(s, Summary) for s in summaries):
            raise TypeError("CombinedSummary takes one or more Summary objects")
        self.summaries = summaries
        super().__init__()
        self.needs_fit = any(s.needs_fit for s in summaries)
        self.fitted = all(s.fitted for s in summaries)

    def _check_input(self, x):
        return x  # each part checks it

    def _fit(self, x):
        for s in self.summaries:
            s.fit(x)

    def _compute(self, x):
        return np.concatenate([s(x) for s in self.summaries], axis=1)

    def _repr_args(self):
        return ", ".join(map(repr, self.summaries))


class NetworkSummary(Summary):
    """The outputs of a trained network as the summary, e.g. a
    :class:`~pyg_sphere.nn.models.DeepSphere` regressor of :math:`(\\Omega_m, \\sigma_8)`
    (Fluri et al. 2019, 2022).

    Args:
        model: a module taking maps ``[batch, num_pixels, 1]`` (the pixels of its graph) and
            returning ``[batch, num_features]``; evaluated in eval mode without gradients.
        scale: the inputs are divided by it first (the scale the network was trained with).
        batch_size: patches per forward pass.

    Example::

        >>> import numpy as np
        >>> from pyg_sphere.nn import DeepSphere
        >>> model = DeepSphere(1, 2, nside=4, channels=(4,))
        >>> NetworkSummary(model)(np.zeros((3, 192))).shape
        (3, 2)
    """

    def __init__(self, model, *, scale: float = 1.0, batch_size: int = 64):
        super().__init__()
        self.model, self.scale = model, float(scale)
        self.batch_size = check_int("batch_size", batch_size, 1)

    def _compute(self, x):
        import torch

        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out = []
        try:
            with torch.no_grad():
                for start in range(0, len(x), self.batch_size):
                    batch = torch.as_tensor(
                        x[start : start + self.batch_size] / self.scale, dtype=torch.float32
                    )
                    out.append(self.model(batch[..., None].to(device)).double().cpu().numpy())
        finally:
            self.model.train(was_training)
        return np.concatenate(out)

    def _repr_args(self):
        return f"{type(self.model).__name__}, scale={self.scale:g}"
