r""":class:`FisherStream`: Fisher realisations (a fiducial map and its :math:`\pm` step twins,
sharing their random numbers) simulated on the fly.

Seeding, workers, epochs and batches are those of every simulation stream, documented in
:mod:`~pyg_sphere.datasets.simulation_streams`.
"""

from __future__ import annotations

import functools
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch

from ._simulation_stream import _SimulationStream
from ._tomography_bins import SourceBins
from .convergence_spectra import PARAMETERS
from .designs import FISHER_STREAM, _fisher_cosmologies

__all__ = ["FisherStream"]


class FisherStream(_SimulationStream):
    r"""Fresh Fisher realisations: each item holds one patch of the fiducial map and of its
    :math:`\pm` step twins, all made from one Gaussian draw and one noise draw.

    The twins share their randomness exactly as :func:`~pyg_sphere.datasets.simulate_fisher_maps`
    does (common random numbers): the harmonic coefficients are one unit-variance draw coloured
    by each cosmology's spectrum, and the same noise is added to every variant, so
    finite-difference derivatives of a summary carry little sampling noise. With ``steps`` of 0
    the twins equal the fiducial map exactly.

    Items are in the order of the realisations and, within one, of the patches: see
    :mod:`~pyg_sphere.datasets.simulation_streams` for seeding, workers, epochs and batches.
    With ``evaluation=True`` the stream serves a fixed set, identical every epoch: realisations
    ``0 ... num_maps - 1`` of ``simulate_fisher_maps(root, num_maps, nside, seed=seed)`` (same
    ``fiducial``, ``steps``, ``gaussian``, ``lmax``), patch for patch equal to those
    ``ConvergenceMaps`` reads (before noise), and disjoint from the training maps of any epoch.

    Args:
        nside (int): HEALPix resolution of the maps and patches (power of 2). (default: 64)
        order (int): Patch order: ``12 order**2`` patches of ``(nside / order)**2`` pixels.
            (default: 1)
        patches (sequence of int, optional): The patch ids to serve (nested patch numbers,
            ``pyg_sphere.nested_patches``), served in ascending order. (default: all)
        fiducial (tuple): (Omega_m, sigma_8) of the fiducial cosmology. (default: (0.31, 0.82))
        steps (tuple): (d_Omega_m, d_sigma_8), non-negative. (default: (0.02, 0.02))
        gaussian (bool): Gaussian maps instead of shifted lognormal ones. (default: False)
        smoothing_arcmin (float, optional): FWHM of a Gaussian smoothing, applied as
            ``ConvergenceMaps(smoothing_arcmin=...)`` applies it. (default: None)
        noise (float): Standard deviation of additive white noise in units of ``noise_scale``.
            (default: 0)
        noise_scale (float, optional): The noise unit (default: :func:`fiducial_patch_std`
            with the same options, measured once at construction when ``noise > 0``; ``None``
            without noise).
        lmax (int, optional): Band limit of the Gaussian field. (default: ``3 * nside - 1``)
        seed (int): Seed of the stream. (default: 0)
        num_maps (int, optional): Realisations per epoch (training) or in the set (evaluation);
            ``None``: an endless training stream. (default: None)
        evaluation (bool): Serve the fixed set of ``num_maps`` on-disk-compatible realisations.
            (default: False)
        epoch (int): First epoch (see :meth:`set_epoch`). (default: 0)
        shuffle_buffer (int): Mix items within a buffer of this many (seeded); 0 keeps the
            patches of a realisation together. (default: 0)
        shard (tuple, optional): ``(rank, world_size)`` of a data-parallel job; each rank
            simulates its own realisations. (default: torch.distributed's, when initialised)
        bins (SourceBins, optional): Tomographic source bins (e.g. ``smail_bins(4)``): serve
            the correlated maps of the bins, one channel each, instead of the one map at source
            redshift 0.8. Realisation ``j``'s maps at each variant are
            ``simulate_tomographic_maps(nside, omega_m, sigma_8, bins, rng=G, gaussian=gaussian,
            lmax=lmax)`` with ``G`` the generator of its spawn key (evaluation map ``i``:
            ``map_rng(seed, FISHER_STREAM, i)``; every variant from a generator in the same
            state: common unit harmonic draws), each bin processed as a one-bin map (float32,
            mean removed, smoothed if asked). Its noise is shape noise (``sigma_e``, ``n_gal``);
            ``noise`` and ``noise_scale`` are refused. No on-disk design matches it.
            (default: None)
        sigma_e (float or sequence): With ``bins``: ellipticity dispersion per component (a
            number or one per bin, e.g. 0.26) of white shape noise of std
            ``shape_noise_std(nside, sigma_e, bin_densities(bins, n_gal))`` per bin, drawn once
            per realisation (child key ``key + (0,)``) and added to every variant after the
            processing; 0 adds none. (default: 0)
        n_gal (float or sequence, optional): With ``sigma_e > 0``: galaxies per arcmin^2, the
            total split by ``bins.fractions`` or one density per bin. (default: None)

    Shapes:
        - **item:** ``x`` [1 + 2p, N, C] float32 (C = :attr:`num_channels`: 1, or the number
          of bins with ``bins``), rows in the order of :attr:`variants`:
          fiducial, then ``plus`` for each of the p = 2 parameters, then ``minus``;
          ``theta`` [1 + 2p, p] float32, the (Omega_m, sigma_8) of each row; ``draw`` [] int64,
          the shared realisation and patch, ``realisation * num_patches + patch_id`` (unique
          within the stream: training realisations are numbered ``(epoch + 1) * 2**32 + j``);
          ``patch_id`` [] int64
        - **batch** (default collation): ``x`` [B, 1 + 2p, N, C], ``theta`` [B, 1 + 2p, p],
          ``draw`` [B], ``patch_id`` [B]

    Example:
        >>> from torch.utils.data import DataLoader
        >>> stream = FisherStream(nside=16, num_maps=2, noise=1.0)  # noise 1 x the maps' std
        >>> batch = next(iter(DataLoader(stream, batch_size=12)))
        >>> batch["x"].shape, batch["theta"].shape, len(stream)
        (torch.Size([12, 5, 256, 1]), torch.Size([12, 5, 2]), 24)
        >>> stream.variants
        ('fiducial', 'omega_m_plus', 'sigma_8_plus', 'omega_m_minus', 'sigma_8_minus')
        >>> fid, plus, minus = batch["x"][:, 0], batch["x"][:, 1:3], batch["x"][:, 3:]
        >>> bool((plus - minus).std() < 0.2 * fid.std())   # shared draws and noise cancel
        True
    """

    _stream = FISHER_STREAM
    #: Names of the rows of an item's ``x``, in order.
    variants = ("fiducial",) + tuple(f"{p}_{s}" for s in ("plus", "minus") for p in PARAMETERS)

    def __init__(
        self,
        nside: int = 64,
        order: int = 1,
        *,
        patches: Optional[Sequence[int]] = None,
        fiducial: Sequence[float] = (0.31, 0.82),
        steps: Sequence[float] = (0.02, 0.02),
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
        # (fiducial, om+, om-, s8+, s8-), the order of FISHER_VARIANTS: checked as the design does
        cosmologies = _fisher_cosmologies(fiducial, steps, zero_steps=True)
        self.fiducial = cosmologies[0]
        self.steps = tuple(float(s) for s in steps)
        p = len(PARAMETERS)
        plus = [cosmologies[1 + 2 * a] for a in range(p)]
        minus = [cosmologies[2 + 2 * a] for a in range(p)]
        self.cosmologies = tuple([cosmologies[0]] + plus + minus)
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
            scale_fiducial=self.fiducial,
            bins=bins,
            sigma_e=sigma_e,
            n_gal=n_gal,
        )
        self._theta = torch.tensor(self.cosmologies, dtype=torch.float32)

    @property
    def step(self) -> np.ndarray:
        """The steps as float64 [p], the ``step`` of :func:`~pyg_sphere.inference.fisher_matrix`."""
        return np.array(self.steps)

    def _setup(self) -> None:
        if self.bins is not None:
            spectrum = functools.partial(self._maps.bins_spectrum, bins=self.bins)
        else:
            spectrum = self._maps.spectrum
        self._spectra = [spectrum(om, s8) for om, s8 in self.cosmologies]

    def _realisation_items(self, j: int) -> Iterator[dict]:
        key = self._key(j)
        maps = self._maps
        if self.bins is not None:
            shape = (len(self.patches), len(self._spectra), self.patch_size, self.bins.n_bins)
            x = np.empty(shape, dtype=np.float32)
            for v, spectrum in enumerate(self._spectra):
                # a fresh generator of the key per variant: the same unit draws for every one
                maps.bins_patches_of(self._rng(key), spectrum, x[:, v])
            noise = self._noise(key)
            if noise is not None:
                x += noise[:, None]
            return self._items(x, self._theta, j)
        white = maps.white(self._rng(key))
        x = np.empty((len(self.patches), len(self._spectra), self.patch_size), dtype=np.float32)
        for v, spectrum in enumerate(self._spectra):
            maps.patches_of(white, spectrum, x[:, v])
        noise = self._noise(key)
        if noise is not None:
            x += noise[:, None]  # the same noise on every variant: it cancels in differences
        return self._items(x, self._theta, j)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._describe()}, fiducial={self.fiducial}, "
            f"steps={self.steps})"
        )
