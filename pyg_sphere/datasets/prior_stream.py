""":class:`PriorStream`: maps at parameters drawn from a prior box, simulated on the fly.

Seeding, workers, epochs and batches are those of every simulation stream, documented in
:mod:`~pyg_sphere.datasets.simulation_streams`.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .._validate import check_int
from ._simulation_stream import _LATIN, _THETA, _SimulationStream
from ._tomography_bins import SourceBins
from .convergence_spectra import PARAMETERS, PRIOR_BOX
from .designs import (
    PRIOR_STREAM,
    _check_box,
    _check_inside_table,
    _latin_hypercube,
    latin_hypercube,
)

__all__ = ["PriorStream"]


class PriorStream(_SimulationStream):
    r"""Fresh maps at parameters drawn from a prior box, one patch per item.

    Training maps take their (Omega_m, sigma_8) uniformly in ``box`` (``sampling='uniform'``,
    independent per map) or from a Latin hypercube of each block of ``block_size`` consecutive
    realisations (``sampling='latin'``: the realisations of a block together fill every stratum
    of each parameter once, whatever the number of workers). With ``evaluation=True`` the stream
    serves the fixed design of ``simulate_prior_maps(root, num_maps, nside, box=box,
    seed=seed)``: the Latin hypercube ``latin_hypercube(num_maps, box, seed)`` and its maps,
    patch for patch equal to those ``ConvergenceMaps`` reads (before noise). Each map has its
    own cosmology, so its spectrum's lognormal transform is computed per map (about as long as
    the synthesis at nside 64).

    Items are in the order of the maps and, within one, of the patches; every patch of a map
    shares its parameters. See :mod:`~pyg_sphere.datasets.simulation_streams` for seeding,
    workers and epochs, and :class:`FisherStream` for the arguments they share.

    ``nside``, ``order``, ``patches``, ``gaussian``, ``smoothing_arcmin``, ``noise``,
    ``lmax``, ``seed``, ``num_maps``, ``evaluation``, ``epoch``, ``shuffle_buffer``,
    ``shard``, ``bins``, ``sigma_e`` and ``n_gal`` are as in :class:`FisherStream`: with
    ``bins`` (e.g. ``smail_bins(4)``), realisation ``j``'s maps are
    ``simulate_tomographic_maps(nside, omega_m, sigma_8, bins, rng=G, gaussian=gaussian,
    lmax=lmax)`` at its parameters :meth:`theta`, ``G`` the generator of its spawn key
    (evaluation map ``i``: ``map_rng(seed, PRIOR_STREAM, i)``), one channel per bin, each
    processed as a one-bin map, plus shape noise when ``sigma_e > 0``. The spectra of each
    map's cosmology are computed with pyccl per map (about half a second with 3 bins).

    Args:
        box (dict): ``{'omega_m': (low, high), 'sigma_8': (low, high)}``. (default:
            :data:`~pyg_sphere.datasets.PRIOR_BOX`)
        sampling (str): ``'uniform'`` or ``'latin'`` (training maps). (default: ``'uniform'``)
        block_size (int): Realisations per Latin hypercube. (default: 64)
        noise_scale (float, optional): The noise unit (default: :func:`fiducial_patch_std` at
            the default fiducial (0.31, 0.82) with the same options: one unit for every
            cosmology, the same as a default :class:`FisherStream`'s).

    Shapes:
        - **item:** ``x`` [N, C] float32 (C = :attr:`num_channels`: 1, or the number of
          bins), ``theta`` [p] float32 (Omega_m, sigma_8), ``draw`` [] int64
          (``realisation * num_patches + patch_id``), ``patch_id`` [] int64
        - **batch** (default collation): ``x`` [B, N, C], ``theta`` [B, p], ``draw`` [B],
          ``patch_id`` [B]

    Example:
        >>> from torch.utils.data import DataLoader
        >>> stream = PriorStream(nside=16, num_maps=4, sampling="latin", block_size=4)
        >>> batch = next(iter(DataLoader(stream, batch_size=48)))
        >>> batch["x"].shape, batch["theta"].shape
        (torch.Size([48, 256, 1]), torch.Size([48, 2]))
        >>> len(set(batch["theta"][:, 0].tolist()))   # 4 maps, 12 patches each
        4
    """

    _stream = PRIOR_STREAM

    def __init__(
        self,
        nside: int = 64,
        order: int = 1,
        *,
        patches: Optional[Sequence[int]] = None,
        box: Mapping = PRIOR_BOX,
        sampling: str = "uniform",
        block_size: int = 64,
        gaussian: bool = False,
        smoothing_arcmin: Optional[float] = None,
        noise: float = 0.0,
        noise_scale: Optional[float] = None,
        lmax: Optional[int] = None,
        seed: int = 0,
        num_maps: Optional[int] = None,
        evaluation: bool = False,
        epoch: int = 0,
        shuffle_buffer: int = 0,
        shard: Optional[tuple[int, int]] = None,
        bins: Optional[SourceBins] = None,
        sigma_e: Union[float, Sequence[float]] = 0.0,
        n_gal: Union[float, Sequence[float], None] = None,
    ) -> None:
        self.bounds = _check_box(box)
        for name, (lo, hi) in zip(PARAMETERS, self.bounds):
            _check_inside_table(name, lo, hi, f"box[{name!r}] = ({lo}, {hi})")
        self.box = {name: (float(lo), float(hi)) for name, (lo, hi) in zip(PARAMETERS, self.bounds)}
        if sampling not in ("uniform", "latin"):
            raise ValueError(f"sampling must be 'uniform' or 'latin', got {sampling!r}")
        self.sampling = sampling
        self.block_size = check_int("block_size", block_size, 1)
        self._design = None  # evaluation: the whole hypercube, drawn on first use
        self._block = (None, None)  # training, latin: ((epoch, block), its hypercube)
        super().__init__(
            nside,
            order,
            patches=patches,
            gaussian=gaussian,
            smoothing_arcmin=smoothing_arcmin,
            noise=noise,
            noise_scale=noise_scale,
            lmax=lmax,
            seed=seed,
            num_maps=num_maps,
            evaluation=evaluation,
            epoch=epoch,
            shuffle_buffer=shuffle_buffer,
            shard=shard,
            scale_fiducial=(0.31, 0.82),
            bins=bins,
            sigma_e=sigma_e,
            n_gal=n_gal,
        )

    def theta(self, j: int) -> np.ndarray:
        """The parameters (Omega_m, sigma_8) of realisation ``j`` of the current epoch, float64
        [p]: what the stream's maps and ``theta`` of its items are made from."""
        if self.evaluation:
            if self._design is None:
                self._design = latin_hypercube(self.num_maps, self.box, self.seed)
            return self._design[j]
        if self.sampling == "uniform":
            rng = self._rng(self._key(j) + (_THETA,))
            return rng.uniform(self.bounds[:, 0], self.bounds[:, 1])
        block = (self.epoch, j // self.block_size)
        if self._block[0] != block:
            rng = self._rng((self._stream, _LATIN) + block)
            self._block = (block, _latin_hypercube(self.block_size, self.bounds, rng))
        return self._block[1][j % self.block_size]

    def _realisation_items(self, j: int) -> Iterator[dict]:
        key = self._key(j)
        om, s8 = (float(v) for v in self.theta(j))
        maps = self._maps
        if self.bins is not None:
            x = np.empty((len(self.patches), self.patch_size, self.bins.n_bins), dtype=np.float32)
            spectrum = maps.bins_spectrum(om, s8, self.bins, memo=False)
            maps.bins_patches_of(self._rng(key), spectrum, x)
        else:
            x = np.empty((len(self.patches), self.patch_size), dtype=np.float32)
            maps.patches_of(maps.white(self._rng(key)), maps.spectrum(om, s8, memo=False), x)
        noise = self._noise(key)
        if noise is not None:
            x += noise
        return self._items(x, torch.tensor([om, s8], dtype=torch.float32), j)

    def __repr__(self) -> str:
        sampling = "latin hypercube" if self.evaluation else self.sampling
        return f"{type(self).__name__}({self._describe()}, box={self.box}, sampling={sampling!r})"
