r"""Hand-crafted features of HEALPix patches used by the DeepSphere baselines.

DeepSphere (Perraudin et al. 2019) compares its graph CNN with linear SVMs
trained on two classical summaries of a patch: its angular power spectrum and
the histogram of its pixel values. Both functions below take many patches at
once, as an array ``x`` of shape ``[num_samples, num_pixels]`` (or
``[num_samples, num_pixels, 1]``, the layout of PyG node features) holding the
patch values in nested order, as a numpy array or a torch tensor. Samples of
several channels (``[num_samples, num_pixels, num_channels]``, e.g. one
tomographic bin per channel) are split by :func:`as_channels` and summarised
channel by channel, as the classifiers of :mod:`pyg_sphere.baselines` do.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from .. import cache
from .._lazy import lazy
from .._validate import check_ell_bins, check_int, check_nside, check_positive

hp = lazy("healpy")

__all__ = [
    "power_spectrum",
    "histogram",
    "histogram_edges",
    "smooth",
    "local_maxima",
    "peak_counts",
]


# Large inputs are scanned in blocks of rows of about this many values, so that
# temporaries stay small (patches of nside-1024 maps reach 10^9 values).
_BLOCK_VALUES = 2**22

# Pixel-space smoothing kernels and neighbour tables of patches, keyed by (nside, pixel-set
# digest, ...): patches of a collection share them.
_PATCH_OPERATORS = cache.memo("patch_operators")


def _row_blocks(x: np.ndarray):
    step = max(1, _BLOCK_VALUES // x.shape[1])
    for start in range(0, len(x), step):
        yield start, x[start : start + step]


def as_samples(x, name: str = "x") -> np.ndarray:
    """Return ``x`` as a numpy array ``[num_samples, num_pixels]`` and check it.

    Accepts numpy arrays (memory maps included), torch tensors and nested
    sequences shaped ``[num_samples, num_pixels]`` or
    ``[num_samples, num_pixels, 1]``. Floating arrays keep their dtype (no
    float64 copy of a large float32 collection); integers become float64.
    """
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64)
    elif not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}.")
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[:, :, 0]
    if x.ndim != 2:
        hint = " For a single patch use x[None] (shape [1, num_pixels])." if x.ndim == 1 else ""
        raise ValueError(
            f"`{name}` must have shape [num_samples, num_pixels] or "
            f"[num_samples, num_pixels, 1], got {tuple(x.shape)}.{hint}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"`{name}` is empty (shape {tuple(x.shape)}).")
    for _, block in _row_blocks(x):
        if not np.isfinite(block).all():
            raise ValueError(f"`{name}` contains NaN or infinite values.")
        if (block == hp.UNSEEN).any():
            raise ValueError(
                f"`{name}` contains healpy.UNSEEN values: the features need fully "
                "observed patches; restrict `pixels` (and the columns of x) to the "
                "observed pixels."
            )
    return x


def as_channels(x, name: str = "x", *, axis: int = 2) -> list[np.ndarray]:
    """Return the channels of ``x`` as a list of checked ``[num_samples, num_pixels]`` arrays.

    The channel-aware sibling of :func:`as_samples`, for samples with several channels: in
    the layout of PyG node features, ``[num_samples, num_pixels, num_channels]`` (``axis=2``,
    e.g. the tomographic bins of :class:`~pyg_sphere.datasets.ConvergenceMaps`), or bins first,
    ``[num_samples, num_channels, num_pixels]`` (``axis=1``, the layout of the tomographic
    summaries of :mod:`pyg_sphere.inference`). Each channel is checked by :func:`as_samples`
    (its errors name it, e.g. ``x[:, :, 2]``); floating numpy input is not copied. With
    ``axis=2``, one channel (``[num_samples, num_pixels]`` or ``[num_samples, num_pixels, 1]``)
    gives a list of one array, exactly :func:`as_samples`'s.

    Example::

        >>> import numpy as np
        >>> [c.tolist() for c in as_channels(np.arange(8).reshape(1, 4, 2))]
        [[[0.0, 2.0, 4.0, 6.0]], [[1.0, 3.0, 5.0, 7.0]]]
        >>> len(as_channels(np.zeros((3, 16)))), len(as_channels(np.zeros((3, 2, 16)), axis=1))
        (1, 2)
    """
    if axis not in (1, 2):
        raise ValueError(f"`axis` must be 1 (channels first) or 2 (channels last), got {axis!r}")
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if axis == 2 and (x.ndim == 2 or (x.ndim == 3 and x.shape[2] == 1)):
        return [as_samples(x, name)]
    if x.ndim != 3 or x.shape[axis] == 0:
        layout = (
            "[num_samples, num_pixels] or [num_samples, num_pixels, num_channels]"
            if axis == 2
            else "[num_samples, num_channels, num_pixels]"
        )
        hint = " For a single patch use x[None] (shape [1, num_pixels])." if x.ndim == 1 else ""
        raise ValueError(f"`{name}` must have shape {layout}, got {tuple(x.shape)}.{hint}")
    if axis == 1:
        return [as_samples(x[:, c], f"{name}[:, {c}]") for c in range(x.shape[1])]
    return [as_samples(x[:, :, c], f"{name}[:, :, {c}]") for c in range(x.shape[2])]


def check_patch_pixels(nside: int, pixels, num_pixels: int) -> np.ndarray:
    """Validate nested pixel ids for patches of ``num_pixels`` values.

    ``pixels=None`` means the first ``num_pixels`` nested pixels, i.e. patch 0
    of a nested split of the sphere.
    """
    nside = check_nside(nside)
    npix = hp.nside2npix(nside)
    if pixels is None:
        if num_pixels > npix:
            raise ValueError(
                f"Patches have {num_pixels} pixels but a nside={nside} sphere has "
                f"only {npix}: check `nside`."
            )
        return np.arange(num_pixels)
    if hasattr(pixels, "detach"):
        pixels = pixels.detach().cpu().numpy()
    pixels = np.asarray(pixels)
    if pixels.ndim != 1 or not np.issubdtype(pixels.dtype, np.integer):
        raise ValueError(
            "`pixels` must be a 1-D array of integer nested HEALPix ids, got "
            f"shape {pixels.shape} and dtype {pixels.dtype}."
        )
    if len(pixels) != num_pixels:
        raise ValueError(
            f"`pixels` has {len(pixels)} ids but the patches have {num_pixels} "
            "values: one id per column of x is needed."
        )
    if pixels.min() < 0 or pixels.max() >= npix:
        raise ValueError(
            f"`pixels` must lie in [0, {npix}) for nside={nside}, got ids in "
            f"[{pixels.min()}, {pixels.max()}]."
        )
    if len(np.unique(pixels)) != len(pixels):
        raise ValueError("`pixels` contains duplicate ids.")
    return pixels.astype(np.int64)


def power_spectrum(
    x,
    nside: int,
    pixels=None,
    *,
    lmax: int | None = None,
    bins: int | Sequence[int] | None = None,
    iter: int = 0,
) -> np.ndarray:
    r"""Power-spectrum features of HEALPix patches: :math:`\ell(\ell+1)\,C_\ell`.

    Each patch is placed at its pixels in an otherwise empty full-sky map (zero
    elsewhere; healpy treats ``UNSEEN`` pixels as zeros too, so both give the
    same spectrum), converted to RING order and analysed with
    :func:`healpy.anafast` (``use_pixel_weights=False``: pixel weights would be
    downloaded). The pseudo-spectrum is weighted by :math:`\ell(\ell+1)` and
    optionally averaged in :math:`\ell` bins.

    Args:
        x: patch values in nested order, ``[num_samples, num_pixels]`` or
            ``[num_samples, num_pixels, 1]`` (numpy array or torch tensor).
        nside: HEALPix resolution of the patches.
        pixels: nested pixel ids of the columns of ``x`` (1-D, ``num_pixels``
            long), e.g. a row of :func:`pyg_sphere.nested_patches`. ``None``
            places every patch on the first ``num_pixels`` nested pixels, i.e.
            patch 0 of a nested split, as DeepSphere did: all patches then
            share one position.
        lmax: largest multipole, default ``3 * nside - 1``.
        bins: ``None`` (one feature per :math:`\ell = 0..lmax`), a number of
            equal-width :math:`\ell` bins, or increasing bin edges (bin ``i``
            covers ``edges[i] <= ell < edges[i+1]``, within ``0..lmax+1``).
        iter: Jacobi iterations of :func:`healpy.anafast`. Its default of 3
            refines the quadrature of band-limited full-sky maps; a cut-out
            patch is not band-limited, the refinement barely changes the
            features and multiplies the time (docs/benchmarks.md, section
            *Power-spectrum features*), hence 0.

    Returns:
        ``numpy.ndarray`` of shape ``[num_samples, lmax + 1]`` (or
        ``[num_samples, num_bins]``), float64.

    Example::

        >>> import numpy as np
        >>> x = np.random.default_rng(0).standard_normal((2, 64))  # 2 patches
        >>> power_spectrum(x, nside=8).shape  # order-1 patches, lmax = 23
        (2, 24)
        >>> power_spectrum(x, nside=8, bins=4).shape
        (2, 4)
    """
    x = as_samples(x)
    pixels = check_patch_pixels(nside, pixels, x.shape[1])
    lmax = 3 * nside - 1 if lmax is None else check_int("lmax", lmax, 0)
    edges = None if bins is None else check_ell_bins(bins, lmax)

    # Writing the patch straight at its RING positions is the same as filling a
    # nested map and calling hp.reorder(..., n2r=True), without the full copy.
    ring = hp.nest2ring(nside, pixels)
    full = np.zeros(hp.nside2npix(nside))
    cls = np.empty((x.shape[0], lmax + 1))
    for i, patch in enumerate(x):
        full[ring] = patch
        cls[i] = hp.anafast(full, lmax=lmax, iter=iter, use_pixel_weights=False)
    ell = np.arange(lmax + 1)
    cls *= ell * (ell + 1)
    if edges is None:
        return cls
    # Mean of the weighted spectrum in each bin, via cumulative sums.
    csum = np.concatenate([np.zeros((len(cls), 1)), np.cumsum(cls, axis=1)], axis=1)
    return (csum[:, edges[1:]] - csum[:, edges[:-1]]) / np.diff(edges)


def histogram_edges(
    x, bins: int = 100, percentiles: tuple[float, float] = (0.1, 99.9), max_values: int = 2**22
) -> np.ndarray:
    """Equal-width histogram bin edges spanning the range of (training) data.

    The range runs between two percentiles of all pixel values of ``x``, so a
    few extreme pixels do not stretch the bins. Beyond ``max_values`` values
    the percentiles are taken on an evenly strided subset (deterministic).

    Args:
        x: patch values, ``[num_samples, num_pixels]`` or
            ``[num_samples, num_pixels, 1]``.
        bins: number of bins.
        percentiles: lower and upper percentiles (0 to 100) of the range;
            ``(0, 100)`` uses the minimum and the maximum.
        max_values: largest number of values the percentiles are computed on.

    Returns:
        ``numpy.ndarray`` of ``bins + 1`` increasing edges.

    Example::

        >>> import numpy as np
        >>> histogram_edges(np.arange(12.0).reshape(3, 4), bins=4, percentiles=(0, 100))
        array([ 0.  ,  2.75,  5.5 ,  8.25, 11.  ])
    """
    x = as_samples(x)
    bins = check_int("bins", bins, 1)
    lo_q, hi_q = percentiles
    if not 0 <= lo_q < hi_q <= 100:
        raise ValueError(f"`percentiles` must satisfy 0 <= low < high <= 100, got {percentiles!r}.")
    values = x.ravel()
    values = values[:: max(1, -(-values.size // max_values))]
    lo, hi = np.percentile(values, [lo_q, hi_q])
    if not hi > lo:
        raise ValueError(
            f"The data are constant between the {lo_q} and {hi_q} percentiles "
            f"({lo}): a histogram cannot be binned; widen `percentiles`."
        )
    return np.linspace(float(lo), float(hi), int(bins) + 1)


def histogram(x, edges) -> np.ndarray:
    """Normalised histograms of the pixel values of each patch.

    Values outside ``[edges[0], edges[-1]]`` are counted in the first or the
    last bin, so the tails (where noise levels differ most) are kept; the
    result equals :func:`numpy.histogram` of the clipped values divided by
    ``num_pixels``, and each row sums to 1.

    Args:
        x: patch values, ``[num_samples, num_pixels]`` or
            ``[num_samples, num_pixels, 1]`` (numpy array or torch tensor).
        edges: increasing bin edges (e.g. from :func:`histogram_edges` on the
            training data).

    Returns:
        ``numpy.ndarray`` of shape ``[num_samples, len(edges) - 1]``: fraction
        of the pixels of each patch in each bin.

    Example::

        >>> import numpy as np
        >>> histogram(np.array([[0.1, 0.2, 0.7, 5.0]]), edges=[0.0, 0.5, 1.0])
        array([[0.5, 0.5]])
    """
    x = as_samples(x)
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or not (np.diff(edges) > 0).all():
        raise ValueError("`edges` must be a 1-D increasing array of at least 2 values.")
    num_bins = len(edges) - 1
    counts = np.empty((len(x), num_bins), dtype=np.int64)
    for start, block in _row_blocks(x):
        # Bin i holds edges[i] <= v < edges[i+1]; the clip sends the tails (and
        # the right-most edge, as numpy does) to the end bins.
        which = np.searchsorted(edges, block, side="right") - 1
        np.clip(which, 0, num_bins - 1, out=which)
        which += num_bins * np.arange(len(block))[:, None]  # one bincount for all rows
        counts[start : start + len(block)] = np.bincount(
            which.ravel(), minlength=len(block) * num_bins
        ).reshape(len(block), num_bins)
    return counts / x.shape[1]


def _pixels_key(nside: int, pixels: np.ndarray) -> tuple:
    return (nside, len(pixels), hashlib.sha1(np.ascontiguousarray(pixels).tobytes()).hexdigest())


def _smoothing_kernel(nside: int, pixels: np.ndarray, fwhm: float):
    """Row-normalised truncated Gaussian kernel between the patch pixels (scipy CSR)."""

    def build():
        from scipy.sparse import csr_matrix
        from scipy.spatial import cKDTree

        sigma = fwhm / np.sqrt(8 * np.log(2))
        vec = np.stack(hp.pix2vec(nside, pixels, nest=True), axis=1)
        # Chord length of the 3-sigma angle: pairs beyond it get weights below 1.1%.
        chord = 2 * np.sin(min(3 * sigma, np.pi) / 2)
        tree = cKDTree(vec)
        pairs = tree.sparse_distance_matrix(tree, chord, output_type="coo_matrix")
        # The diagonal (distance 0) is not stored by sparse_distance_matrix; add it.
        rows = np.concatenate([pairs.row, np.arange(len(pixels))])
        cols = np.concatenate([pairs.col, np.arange(len(pixels))])
        angle = 2 * np.arcsin(
            np.clip(np.concatenate([pairs.data, np.zeros(len(pixels))]) / 2, 0, 1)
        )
        kernel = csr_matrix(
            (np.exp(-0.5 * (angle / sigma) ** 2), (rows, cols)), shape=(len(pixels),) * 2
        )
        # Renormalised rows: near the patch border the kernel averages the pixels it has.
        norm = np.asarray(kernel.sum(axis=1)).ravel()
        return csr_matrix(kernel.multiply(1 / norm[:, None]))

    return _PATCH_OPERATORS.get(("smooth", *_pixels_key(nside, pixels), fwhm), build)


def smooth(x, nside: int, pixels=None, *, fwhm: float) -> np.ndarray:
    r"""Gaussian smoothing of HEALPix patches in pixel space.

    Each output pixel is the Gaussian-weighted mean (standard deviation
    :math:`\mathrm{FWHM}/\sqrt{8 \ln 2}`, truncated at 3 standard deviations) of the patch
    pixels around it, by angular distance between pixel centres. Near the border of a patch
    the weights are renormalised over the pixels the patch has, so no zeros from outside leak
    in. It is a sparse product, so thousands of patches take about a second, where
    :func:`healpy.smoothing` of every patch in a full-sky map costs two spherical-harmonic
    transforms each.

    Args:
        x: patch values in nested order, ``[num_samples, num_pixels]`` or
            ``[num_samples, num_pixels, 1]`` (numpy array or torch tensor).
        nside: HEALPix resolution of the patches.
        pixels: nested pixel ids of the columns of ``x`` (default: the first ``num_pixels``).
        fwhm: full width at half maximum of the Gaussian, in radians (as healpy's).

    Returns:
        float64 ``[num_samples, num_pixels]``.

    Example::

        >>> import numpy as np
        >>> x = np.random.default_rng(0).standard_normal((3, 256))  # order-1 patches, nside 16
        >>> y = smooth(x, nside=16, fwhm=np.radians(8.0))
        >>> y.shape, bool(y.std() < 0.5 * x.std())
        ((3, 256), True)
    """
    x = as_samples(x)
    pixels = check_patch_pixels(nside, pixels, x.shape[1])
    fwhm = check_positive("fwhm", fwhm)
    kernel = _smoothing_kernel(check_nside(nside), pixels, fwhm)
    out = np.empty(x.shape, dtype=np.float64)
    for start, block in _row_blocks(x):
        out[start : start + len(block)] = (kernel @ block.T.astype(np.float64)).T
    return out


def _neighbour_columns(nside: int, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns of the (up to 8) healpy neighbours of every patch pixel, ``[8, num_pixels]``,
    and which pixels have all their neighbours inside the patch ``[num_pixels]`` bool."""

    def build():
        neighbours = hp.get_all_neighbours(nside, pixels, nest=True)  # [8, N], -1 where none
        order = np.argsort(pixels)
        where = np.searchsorted(pixels, neighbours, sorter=order)
        where = order[np.clip(where, 0, len(pixels) - 1)]
        inside = (pixels[where] == neighbours) | (neighbours < 0)
        # A pixel with a neighbour outside the patch is not a peak candidate: the patch
        # cannot tell whether it is a maximum.
        interior = inside.all(axis=0)
        # A missing neighbour (the 8 pixels with 7 neighbours) compares against itself.
        columns = np.where(neighbours < 0, np.arange(len(pixels)), where)
        return columns, interior

    return _PATCH_OPERATORS.get(("neighbours", *_pixels_key(nside, pixels)), build)


def local_maxima(x, nside: int, pixels=None) -> np.ndarray:
    """Which pixels of each patch are local maxima: larger than each of their healpy
    neighbours (:func:`healpy.get_all_neighbours`, 8, or 7 at 8 pixels of the sphere), all of
    which lie in the patch (pixels on the border are never maxima).

    Args:
        x: patch values in nested order, ``[num_samples, num_pixels]`` or
            ``[num_samples, num_pixels, 1]``.
        nside: HEALPix resolution of the patches.
        pixels: nested pixel ids of the columns of ``x`` (default: the first ``num_pixels``).

    Returns:
        bool ``[num_samples, num_pixels]``.

    Example::

        >>> import numpy as np
        >>> x = np.zeros((1, 64)); x[0, 12] = 1.0  # one bump inside an order-1 patch at nside 8
        >>> np.flatnonzero(local_maxima(x, nside=8))
        array([12])
    """
    x = as_samples(x)
    pixels = check_patch_pixels(nside, pixels, x.shape[1])
    columns, interior = _neighbour_columns(check_nside(nside), pixels)
    out = np.empty(x.shape, dtype=bool)
    step = max(1, _BLOCK_VALUES // (8 * x.shape[1]))
    self_column = np.arange(x.shape[1])
    for start in range(0, len(x), step):
        block = x[start : start + step]
        higher = np.ones(block.shape, dtype=bool)
        for row in columns:
            # A missing neighbour points at the pixel itself: it does not count.
            higher &= (block > block[:, row]) | (row == self_column)
        out[start : start + len(block)] = higher & interior
    return out


def peak_counts(x, nside: int, pixels=None, *, edges, fwhm: float | None = None) -> np.ndarray:
    """Peak counts of HEALPix patches: the number of local maxima per height bin.

    Peaks, the local maxima of the (smoothed) convergence, are a standard weak-lensing
    statistic beyond the power spectrum: high peaks trace massive haloes, so their abundance
    carries non-Gaussian information on Omega_m and sigma_8 (Kratochvil, Haiman & May 2010;
    Fluri et al. 2018; Kacprzak & Fluri 2022).

    Args:
        x: patch values in nested order, ``[num_samples, num_pixels]`` or
            ``[num_samples, num_pixels, 1]``.
        nside: HEALPix resolution of the patches.
        pixels: nested pixel ids of the columns of ``x`` (default: the first ``num_pixels``).
        edges: increasing peak-height edges; peaks below the first or above the last edge are
            counted in the end bins, as :func:`histogram` does.
        fwhm: smooth the patches first (:func:`smooth`), FWHM in radians. ``None``: no
            smoothing (the input is already smoothed).

    Returns:
        float64 ``[num_samples, len(edges) - 1]`` counts.

    Example::

        >>> import numpy as np
        >>> x = np.zeros((1, 64)); x[0, 12] = 1.0; x[0, 50] = 3.0
        >>> peak_counts(x, nside=8, edges=[0.0, 2.0, 4.0])
        array([[1., 1.]])
    """
    x = as_samples(x)
    pixels = check_patch_pixels(nside, pixels, x.shape[1])
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or not (np.diff(edges) > 0).all():
        raise ValueError("`edges` must be a 1-D increasing array of at least 2 values.")
    if fwhm is not None:
        x = smooth(x, nside, pixels, fwhm=fwhm)
    peaks = local_maxima(x, nside, pixels)
    num_bins = len(edges) - 1
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, num_bins - 1)
    which += num_bins * np.arange(len(x))[:, None]
    counts = np.bincount(which[peaks], minlength=len(x) * num_bins)
    return counts.reshape(len(x), num_bins).astype(np.float64)
