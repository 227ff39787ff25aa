"""What the simulation streams share: the base class of :class:`~pyg_sphere.datasets.FisherStream`
and :class:`~pyg_sphere.datasets.PriorStream` and the synthesis of their maps.

The base class holds the options, the seeding (spawn keys), the sharding over workers and
ranks, the epochs and the order of the items, as :mod:`~pyg_sphere.datasets.simulation_streams`
documents them; :class:`_Maps` turns one harmonic draw into the processed patches of a
cosmology's map, and :func:`fiducial_patch_std` measures the streams' noise unit with it.

**Tomographic bins.** With ``bins=`` (a :class:`~pyg_sphere.datasets.SourceBins`) a stream
serves the correlated maps of the bins instead of the one map at source redshift 0.8: an item's
``x`` has one channel per bin (last axis). Realisation ``j``'s maps at a cosmology are those of
``simulate_tomographic_maps(nside, omega_m, sigma_8, bins, rng=G, gaussian=gaussian,
lmax=lmax)`` with ``G`` the generator of the realisation's spawn key (the same keys as one-bin
streams; evaluation map ``i``: ``map_rng(seed, stream, i)``), each bin then processed as a
one-bin map is (float32 storage, its own mean removed, smoothed if asked) and cut into the same
nested patches. The Fisher stream's variants are all drawn from a generator in the same state
(common unit harmonic draws). The noise of a tomographic stream is shape noise in physical
units, ``sigma_e`` and ``n_gal`` as :func:`~pyg_sphere.datasets.simulate_tomographic_maps`
takes them: white noise of std :func:`~pyg_sphere.datasets.tomography.shape_noise_std` per bin,
drawn from the child key ``key + (0,)`` (one full-sky draw per bin, in bin order) and added
after the processing, the same on every Fisher variant, as the ``noise`` option of one-bin
streams is (which tomographic streams refuse: their noise is a property of the survey).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Iterator, Optional, Sequence

import healpy as hp
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .._validate import check_int, check_nside, check_positive
from ..graph import nested_patches
from ._lognormal_field import _alm_layout, _colour_alm, _lognormal_transform
from ._tomography_fields import _maps_from_factor
from ._tomography_spectra import _check_bins, _lognormal_shifts, bin_densities, shape_noise_std
from .convergence_spectra import _check_cosmology, _table_lmax, lognormal_shift
from .designs import FISHER_STREAM, _check_gaussian
from .lognormal_maps import _cosmology_gaussian_cl, _resolve_lmax, map_rng
from .tomography import _factor

__all__ = ["fiducial_patch_std"]

# Tags of the spawn keys (simulation_streams' docstring): what a key names after its stream.
_TRAINING = 1  # (stream, _TRAINING, epoch, j): realisation j of a training epoch
_LATIN = 2  # (PRIOR_STREAM, _LATIN, epoch, block): a Latin hypercube of the prior stream
_SHUFFLE = 3  # (stream, _SHUFFLE, evaluation, epoch, shard, shards): a shuffle buffer
_NOISE, _THETA = 0, 1  # children of a realisation's key
# Training realisations are numbered (epoch + 1) * 2**32 + j, evaluation ones i < 2**32.
_EPOCH_SPAN = 2**32


class _Maps:
    """What turns one unit-variance harmonic draw into the processed patches of a cosmology's
    map, with the tables that depend only on the options (built once per process)."""

    def __init__(self, nside, lmax, gaussian, smoothing_arcmin, order, patches):
        self.nside, self.lmax, self.gaussian = nside, lmax, gaussian
        self.fwhm = None if smoothing_arcmin is None else np.radians(smoothing_arcmin / 60.0)
        self.size = hp.Alm.getsize(lmax)
        self.ell, self.m0 = _alm_layout(lmax)
        nested = nested_patches(nside, order).numpy()
        self.num_patches = len(nested)
        self.patches = patches
        # Gathering the patches straight from the RING map costs one index; hp.reorder would
        # take as long as a third of the synthesis.
        self.ring = hp.nest2ring(nside, nested[patches])

    def white(self, rng: np.random.Generator) -> np.ndarray:
        """The unit-variance draw of
        :func:`~pyg_sphere.datasets.lognormal_maps.gaussian_alm`, the same use of ``rng``."""
        return rng.standard_normal(2 * self.size).view(np.complex128)

    def spectrum(self, omega_m: float, sigma_8: float, memo: bool = True) -> tuple:
        """(Gaussian field's C_ell, lognormal shift or None) of a cosmology; ``memo=False`` for
        cosmologies seen once (the prior stream), which would only evict others from the cache."""
        fn = _cosmology_gaussian_cl if memo else _cosmology_gaussian_cl.__wrapped__
        clg = fn(omega_m, sigma_8, self.lmax, self.gaussian)
        return clg, None if self.gaussian else lognormal_shift(omega_m)

    def patches_of(self, white: np.ndarray, spectrum: tuple, out: np.ndarray) -> None:
        """Writes the patches of the map of ``spectrum`` made from ``white`` into ``out``
        ([len(patches), N] float32), processed as ConvergenceMaps processes a file."""
        clg, shift = spectrum
        alm = _colour_alm(white, clg, self.ell, self.m0)
        g = hp.alm2map(alm, self.nside, lmax=self.lmax, mmax=self.lmax, pixwin=False)
        if shift is not None:
            _lognormal_transform(g, clg, shift)
        self._process(g, out)

    def _process(self, g: np.ndarray, out: np.ndarray) -> None:
        """Writes the patches of the RING map ``g`` into ``out`` [len(patches), N]."""
        # As ConvergenceMaps reads a simulated file: float32 storage, mean removal, smoothing.
        m = g.astype(np.float32).astype(np.float64)
        m -= m.mean()
        if self.fwhm is not None:
            m = hp.smoothing(m, fwhm=self.fwhm, nest=False, use_pixel_weights=False)
        out[...] = m[self.ring]

    def bins_spectrum(self, omega_m: float, sigma_8: float, bins, memo: bool = True) -> tuple:
        """(Cholesky factors of the bins' spectra, lognormal shifts or None) of a cosmology, as
        :func:`~pyg_sphere.datasets.simulate_tomographic_maps` makes them (the same cache)."""
        if self.gaussian:
            key = None
        else:
            key = tuple(float(s) for s in _lognormal_shifts(omega_m, bins))
        fn = _factor if memo else _factor.__wrapped__
        factor = fn(omega_m, sigma_8, self.lmax, bins, key, self.gaussian)
        return factor, None if key is None else np.asarray(key)

    def bins_patches_of(self, rng: np.random.Generator, spectrum: tuple, out: np.ndarray) -> None:
        """Writes the patches of the bins' maps of ``spectrum`` drawn from ``rng`` (as
        ``simulate_tomographic_maps`` draws them) into ``out`` ([len(patches), N, n_bins]
        float32), each bin processed as :meth:`patches_of` processes a map."""
        factor, shifts = spectrum
        maps = _maps_from_factor(factor, self.nside, rng, shifts)
        for b, g in enumerate(maps):
            self._process(g, out[..., b])

    def noise(self, rng: np.random.Generator) -> np.ndarray:
        """Unit white noise of the chosen patches, [len(patches), N] float32: drawn for the whole
        sky, so that a patch's noise does not depend on which patches are chosen."""
        full = rng.standard_normal(12 * self.nside**2, dtype=np.float32)
        return full.reshape(self.num_patches, -1)[self.patches]

    def bins_noise(self, rng: np.random.Generator, std: np.ndarray) -> np.ndarray:
        """White noise of std ``std`` [n_bins] in each bin, [len(patches), N, n_bins] float32:
        one full-sky draw per bin, in bin order, as :meth:`noise` draws one."""
        full = rng.standard_normal((len(std), 12 * self.nside**2), dtype=np.float32)
        full = full.reshape(len(std), self.num_patches, -1)[:, self.patches]
        return np.moveaxis(full * std.astype(np.float32)[:, None, None], 0, -1)


def _check_patches(patches, order: int) -> np.ndarray:
    count = 12 * order**2
    if patches is None:
        return np.arange(count)
    ids = np.asarray(patches)
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"patches must be a non-empty 1-D sequence of patch ids (integers in [0, {count})), "
            f"got {patches!r}"
        )
    if ids.min() < 0 or ids.max() >= count:
        raise ValueError(
            f"patches holds ids outside [0, {count}): order {order} has 12 * order**2 = {count} "
            f"patches, got {sorted(set(ids.tolist()))}"
        )
    if len(np.unique(ids)) != ids.size:
        raise ValueError(f"patches holds an id twice, got {ids.tolist()}; give each patch once")
    return np.sort(ids).astype(np.int64)  # ascending nested order, as ConvergenceMaps stores them


def _check_noise(noise) -> float:
    return check_positive(
        "noise", noise, allow_zero=True, hint="the noise std in units of noise_scale"
    )


def _check_bins_options(bins, sigma_e, n_gal, noise, noise_scale, nside) -> tuple:
    """(bins, sigma_e, n_gal, shape-noise std [n_bins] or None) of a stream, checked."""
    try:
        sig = np.asarray(0.0 if sigma_e is None else sigma_e, dtype=np.float64)
    except (TypeError, ValueError):
        sig = np.array(np.nan)
    if isinstance(sigma_e, bool) or not np.all(np.isfinite(sig)) or np.any(sig < 0):
        raise ValueError(
            f"sigma_e must be a non-negative ellipticity dispersion (e.g. 0.26), a number or one "
            f"per bin, got {sigma_e!r}"
        )
    noisy = bool(np.any(sig > 0))
    if bins is None:
        if noisy or n_gal is not None:
            raise ValueError(
                "sigma_e and n_gal set the shape noise of tomographic maps: give bins=... (e.g. "
                "smail_bins(4)), or use noise=... for the one-bin maps"
            )
        return None, sigma_e, n_gal, None
    bins = _check_bins(bins)
    if noise > 0 or noise_scale is not None:
        raise ValueError(
            "with bins the noise is shape noise in physical units: give sigma_e=... and "
            f"n_gal=... (e.g. 0.26 and 30) instead of noise={noise!r}, "
            f"noise_scale={noise_scale!r}"
        )
    if noisy and n_gal is None:
        raise ValueError(
            "sigma_e > 0 adds shape noise, whose level needs the galaxy density: give n_gal "
            "(galaxies per arcmin^2, e.g. 30), or set sigma_e=0 for noiseless maps"
        )
    if n_gal is not None and not noisy:
        raise ValueError(
            f"n_gal={n_gal!r} sets the shape-noise level only with an ellipticity dispersion: "
            "give sigma_e > 0 (e.g. 0.26), or drop n_gal for noiseless maps"
        )
    std = shape_noise_std(nside, sigma_e, bin_densities(bins, n_gal)) if noisy else None

    def plain(v):
        return None if v is None else (float(v) if np.ndim(v) == 0 else tuple(map(float, v)))

    return bins, plain(sigma_e), plain(n_gal), std


def _process_options(nside, order, lmax, smoothing_arcmin, gaussian) -> tuple:
    nside = check_nside(nside)
    order = check_nside(order, name="order")
    if order > nside:
        raise ValueError(f"order must be a power of 2 no larger than nside ({nside}), got {order}")
    lmax = _resolve_lmax(nside, lmax, _table_lmax())
    if smoothing_arcmin is not None:
        smoothing_arcmin = check_positive("smoothing_arcmin", smoothing_arcmin)
    return nside, order, lmax, smoothing_arcmin, _check_gaussian(gaussian)


def fiducial_patch_std(
    nside: int,
    *,
    fiducial: Sequence[float] = (0.31, 0.82),
    n_maps: int = 8,
    gaussian: bool = False,
    smoothing_arcmin: Optional[float] = None,
    lmax: Optional[int] = None,
    seed: int = 0,
    bins=None,
):
    r"""The standard deviation of noiseless fiducial patches: the unit of the streams' noise.

    One noise unit for every cosmology (the convention of ``examples/infer_cosmo.py``) makes the
    noise a property of the survey, not of the map it is added to. This measures it on the
    fiducial maps of realisations ``0 ... n_maps - 1`` of the Fisher design of ``seed``
    (``map_rng(seed, FISHER_STREAM, i)``), processed as the streams serve them (float32 storage,
    mean removed, smoothed if asked), over all their pixels: the standard deviation of the
    fiducial patches of ``ConvergenceMaps`` on ``simulate_fisher_maps(root, n_maps, nside,
    seed=seed)``, whatever the patch order. Deterministic, so training and validation streams
    built with the same options share it.

    Args:
        nside: HEALPix resolution (power of two).
        fiducial: (Omega_m, sigma_8) of the maps.
        n_maps: number of maps (>= 1; the estimate's relative error is about 0.5% / sqrt(n_maps)
            at nside 64, 1.5% / sqrt(n_maps) at nside 16).
        gaussian: Gaussian maps instead of shifted lognormal ones.
        smoothing_arcmin: FWHM of the Gaussian smoothing, as the streams' option.
        lmax: band limit (default ``3 * nside - 1``).
        seed: seed of the maps (default 0: one value per set of options).
        bins: tomographic source bins (e.g. ``smail_bins(4)``): the standard deviation of each
            bin's maps, as the streams with ``bins=`` serve them (a network's input scale per
            channel; their noise is in physical units instead).

    Returns:
        The standard deviation, a positive float; with ``bins``, float64 ``[n_bins]``.

    Example:
        >>> round(fiducial_patch_std(16, n_maps=2), 5)
        0.00188
        >>> fiducial_patch_std(16, n_maps=2) == fiducial_patch_std(16, n_maps=2)
        True
    """
    nside, _, lmax, smoothing_arcmin, gaussian = _process_options(
        nside, 1, lmax, smoothing_arcmin, gaussian
    )
    n_maps = check_int("n_maps", n_maps, 1)
    seed = check_int("seed", seed, 0)
    try:
        om, s8 = _check_cosmology(*fiducial)
    except TypeError:
        raise ValueError(
            f"fiducial must be two numbers (omega_m, sigma_8), got {fiducial!r}"
        ) from None
    maps = _Maps(nside, lmax, gaussian, smoothing_arcmin, 1, np.arange(12))
    if bins is not None:
        bins = _check_bins(bins)
        spectrum = maps.bins_spectrum(om, s8, bins)
        values = np.empty((n_maps, 12, nside**2, bins.n_bins), dtype=np.float32)
        for i in range(n_maps):
            maps.bins_patches_of(map_rng(seed, FISHER_STREAM, i), spectrum, values[i])
        return values.astype(np.float64).std(axis=(0, 1, 2))
    spectrum = maps.spectrum(om, s8)
    values = np.empty((n_maps, 12, nside**2), dtype=np.float32)
    for i in range(n_maps):
        maps.patches_of(maps.white(map_rng(seed, FISHER_STREAM, i)), spectrum, values[i])
    return float(values.astype(np.float64).std())


class _SimulationStream(IterableDataset):
    """What the two streams share: options, seeding, sharding, epochs and item order."""

    _stream: int  # the stream's number in the spawn keys (FISHER_STREAM, PRIOR_STREAM)

    def __init__(
        self,
        nside,
        order,
        *,
        patches,
        gaussian,
        smoothing_arcmin,
        noise,
        noise_scale,
        lmax,
        seed,
        num_maps,
        evaluation,
        epoch,
        shuffle_buffer,
        shard,
        scale_fiducial,
        bins=None,
        sigma_e=0.0,
        n_gal=None,
    ):
        super().__init__()
        self.nside, self.order, self.lmax, self.smoothing_arcmin, self.gaussian = _process_options(
            nside, order, lmax, smoothing_arcmin, gaussian
        )
        bins_options = _check_bins_options(
            bins, sigma_e, n_gal, _check_noise(noise), noise_scale, self.nside
        )
        self.bins, self.sigma_e, self.n_gal, self._shape_std = bins_options
        self.patches = _check_patches(patches, self.order)
        self.seed = check_int("seed", seed, 0)
        self.evaluation = bool(evaluation)
        if num_maps is not None:
            num_maps = check_int("num_maps", num_maps, 1)
            if num_maps > _EPOCH_SPAN:
                raise ValueError(f"num_maps must be at most 2**32, got {num_maps}")
        elif self.evaluation:
            raise ValueError(
                "evaluation=True serves a fixed set of maps: give its size, num_maps=..."
            )
        self.num_maps = num_maps
        self.shuffle_buffer = check_int("shuffle_buffer", shuffle_buffer, 0)
        self.noise = _check_noise(noise)
        if noise_scale is not None:
            noise_scale = check_positive("noise_scale", noise_scale)
        elif self.noise > 0:  # measured only when needed: without noise it would cost maps
            noise_scale = fiducial_patch_std(
                self.nside,
                fiducial=scale_fiducial,
                gaussian=self.gaussian,
                smoothing_arcmin=self.smoothing_arcmin,
                lmax=self.lmax,
            )
        self.noise_scale = noise_scale
        self.shard = _check_shard(shard)
        self.epoch = 0
        self.set_epoch(epoch)
        self._maps = None  # built in each process on first use: never pickled to workers

    # ----- public ---------------------------------------------------------------------------
    @property
    def num_patches(self) -> int:
        """Patches per map, ``12 * order**2`` (``draw % num_patches`` is an item's patch)."""
        return 12 * self.order**2

    @property
    def patch_size(self) -> int:
        """Pixels per patch, ``N = (nside / order)**2``."""
        return (self.nside // self.order) ** 2

    @property
    def num_channels(self) -> int:
        """Channels of an item's ``x`` (last axis): the number of bins, 1 without ``bins``."""
        return 1 if self.bins is None else self.bins.n_bins

    @property
    def sigma(self):
        """Standard deviation of the added noise, ``noise * noise_scale`` (0 without noise);
        with ``bins``, the shape-noise std of each bin, float64 [n_bins] (zeros without)."""
        if self.bins is not None:
            n = self.bins.n_bins
            return np.zeros(n) if self._shape_std is None else self._shape_std.copy()
        return self.noise * self.noise_scale if self.noise > 0 else 0.0

    def patch_pixels(self, patch_id: int = 0) -> torch.Tensor:
        """Nested HEALPix ids of the pixels of patch ``patch_id``, [N] (as
        :meth:`ConvergenceMaps.patch_pixels <pyg_sphere.datasets.ConvergenceMaps.patch_pixels>`):
        the nodes of the graph every item shares."""
        return nested_patches(self.nside, self.order)[patch_id]

    def set_epoch(self, epoch: int) -> None:
        """Chooses the maps of a training epoch (ignored in evaluation mode, whose maps are
        fixed). Call it before iterating a :class:`~torch.utils.data.DataLoader` each epoch:
        workers receive a copy of the stream when an iteration starts."""
        epoch = check_int("epoch", epoch, 0)
        # draws must fit int64: ((epoch + 2) * 2**32) * num_patches <= 2**63
        limit = 2**31 // self.num_patches - 2
        if epoch > limit:
            raise ValueError(f"epoch must be at most {limit} at order {self.order}, got {epoch}")
        self.epoch = epoch

    def fewest_worker_items(self, num_workers: int) -> Optional[int]:
        """The fewest items one of ``num_workers`` loader workers serves per epoch on this rank
        (``None`` for an endless stream): a loader that drops incomplete batches gets no batch
        from a worker with fewer items than a batch.

        Example:
            >>> from pyg_sphere.datasets import FisherStream
            >>> FisherStream(nside=8, num_maps=5).fewest_worker_items(2)  # 2 maps x 12 patches
            24
        """
        if self.num_maps is None:
            return None
        workers = max(check_int("num_workers", num_workers, 0), 1)
        rank, ranks = self.shard
        return min(
            len(range(rank * workers + w, self.num_maps, ranks * workers)) for w in range(workers)
        ) * len(self.patches)

    def __len__(self) -> int:
        """Items this rank serves per epoch (all workers together); only for a finite stream."""
        if self.num_maps is None:
            raise TypeError(f"an endless {type(self).__name__} has no length: give num_maps=...")
        rank, ranks = self.shard
        return len(range(rank, self.num_maps, ranks)) * len(self.patches)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rank, ranks = self.shard
        shard, shards = rank * workers + worker, ranks * workers
        if self._maps is None:
            options = (self.nside, self.lmax, self.gaussian, self.smoothing_arcmin, self.order)
            self._maps = _Maps(*options, self.patches)
            self._setup()
        stop = self.num_maps if self.num_maps is not None else _EPOCH_SPAN
        items = (item for j in range(shard, stop, shards) for item in self._realisation_items(j))
        if self.shuffle_buffer > 1:
            epoch = 0 if self.evaluation else self.epoch  # an evaluation set never changes
            key = (self._stream, _SHUFFLE, int(self.evaluation), epoch, shard, shards)
            items = _shuffled(items, self.shuffle_buffer, self._rng(key))
        return items

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_maps"] = None  # tables are rebuilt in each worker, not pickled
        return state

    # ----- seeding ----------------------------------------------------------------------------
    def _rng(self, key: tuple) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))

    def _key(self, j: int) -> tuple:
        """Spawn key of realisation ``j`` of this epoch (simulation_streams' docstring)."""
        if self.evaluation:
            return (self._stream, j)
        return (self._stream, _TRAINING, self.epoch, j)

    def _realisation(self, j: int) -> int:
        """The number of realisation ``j`` of this epoch, unique within a stream."""
        return j if self.evaluation else (self.epoch + 1) * _EPOCH_SPAN + j

    def _noise(self, key: tuple) -> Optional[np.ndarray]:
        if self.bins is not None:
            if self._shape_std is None:
                return None
            return self._maps.bins_noise(self._rng(key + (_NOISE,)), self._shape_std)
        if self.noise == 0:
            return None
        return self._maps.noise(self._rng(key + (_NOISE,))) * np.float32(self.sigma)

    def _items(self, x: np.ndarray, theta: torch.Tensor, j: int) -> Iterator[dict]:
        """One item per chosen patch; ``x`` [len(patches), ..., N] float32, or with bins
        [len(patches), ..., N, n_bins]."""
        base = self._realisation(j) * self.num_patches
        channel = self.bins is None  # one-bin maps get their channel axis here
        for k, patch in enumerate(self.patches):
            yield {
                "x": torch.from_numpy(x[k]).unsqueeze(-1) if channel else torch.from_numpy(x[k]),
                "theta": theta,
                "draw": torch.tensor(base + int(patch)),
                "patch_id": torch.tensor(int(patch)),
            }

    def _setup(self) -> None:
        """Per-process tables of a stream (after ``_maps`` is built)."""

    @abstractmethod
    def _realisation_items(self, j: int) -> Iterator[dict]:
        """The items of realisation ``j`` of the current epoch, in patch order."""

    def _describe(self) -> str:
        mode = "evaluation" if self.evaluation else f"epoch={self.epoch}"
        smoothing = "" if self.smoothing_arcmin is None else f", smoothing={self.smoothing_arcmin}'"
        if self.bins is None:
            noise = f"noise={self.noise:g}"
        else:
            noise = f"bins={self.bins!r}, "
            if self._shape_std is None:
                noise += "no shape noise"
            else:
                noise += f"sigma_e={self.sigma_e}, n_gal={self.n_gal}"
        return (
            f"nside={self.nside}, order={self.order}, patches={len(self.patches)}, "
            f"{'gaussian' if self.gaussian else 'lognormal'}{smoothing}, {noise}, "
            f"seed={self.seed}, num_maps={self.num_maps}, {mode}"
        )


def _check_shard(shard) -> tuple[int, int]:
    if shard is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    try:
        rank, ranks = shard
    except (TypeError, ValueError):
        raise ValueError(f"shard must be (rank, world_size), got {shard!r}") from None
    ranks = check_int("shard world_size", ranks, 1)
    rank = check_int("shard rank", rank, 0)
    if rank >= ranks:
        raise ValueError(f"shard rank must be below world_size, got {shard!r}")
    return rank, ranks


def _shuffled(items: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """The items in a random order mixed within a buffer of ``size`` (each item waits in the
    buffer until a later one replaces it)."""
    buffer = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        k = int(rng.integers(size))
        yield buffer[k]
        buffer[k] = item
    for k in rng.permutation(len(buffer)):
        yield buffer[k]
