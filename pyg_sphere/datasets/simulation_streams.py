r"""Convergence maps simulated on the fly, as torch :class:`~torch.utils.data.IterableDataset`\ s.

A summary network trained on a fixed set of simulations learns their noise; a stream of fresh
maps never shows it the same map twice. Two streams:

* :class:`FisherStream`: per realisation, the maps at a fiducial cosmology and at fiducial
  :math:`\pm` step for each parameter, all from one Gaussian draw and with one noise draw
  (common random numbers, as :func:`~pyg_sphere.datasets.simulate_fisher_maps` writes them), for
  losses built on finite-difference derivatives (a Fisher-information loss);
* :class:`PriorStream`: maps at parameters drawn from a prior box, for regression or neural
  posterior estimation.

With ``bins=`` (a :class:`~pyg_sphere.datasets.tomography.SourceBins`), both serve the
correlated maps of several tomographic source bins as the channels of ``x``
(:func:`~pyg_sphere.datasets.simulate_tomographic_maps` of the realisation's generator), with
shape noise in physical units (``sigma_e=``, ``n_gal=``).

Both serve nested patches exactly as :class:`~pyg_sphere.datasets.ConvergenceMaps` does: the
map is rounded to float32 (as the files store it), its mean is removed, it is optionally
smoothed with the same call, and its patches are cut in ascending nested order. With
``evaluation=True`` the stream reproduces the on-disk designs bit for bit: realisation ``i`` of
``FisherStream(..., evaluation=True, seed=s)`` holds the patches of the maps of realisation
``i`` of ``simulate_fisher_maps(root, n, nside, seed=s)`` read through ``ConvergenceMaps``, and
``PriorStream(..., evaluation=True, num_maps=n, seed=s)`` those of ``simulate_prior_maps(root,
n, nside, seed=s)``.

**Randomness.** Every realisation has its own :class:`numpy.random.SeedSequence`, named by a
spawn key, so a map depends only on the seed and its key, never on timing, on the number of
workers or on how many maps came before:

* evaluation map ``i``: ``(stream, i)``, the key of
  :func:`~pyg_sphere.datasets.lognormal_maps.map_rng` and of the on-disk designs;
* training realisation ``j`` of epoch ``e``: ``(stream, 1, e, j)``;

with ``stream`` 3 for the Fisher stream and 2 for the prior stream (the designs' numbers).

Keys of different lengths or values are distinct :class:`~numpy.random.SeedSequence` nodes
(numpy's spawn tree), so training maps never repeat evaluation maps of the same seed, and no
two epochs or realisations share a map. The Gaussian draw comes from the realisation's key, its
noise from the child ``key + (0,)`` and, for :class:`PriorStream`'s uniform prior, its
parameters from ``key + (1,)``.

**Workers.** With a :class:`~torch.utils.data.DataLoader` of ``W`` workers (and ``R`` ranks of a
data-parallel job), worker ``w`` of rank ``r`` simulates realisations ``j = r W + w, r W + w +
R W, ...``: the shards are disjoint and together hold the same realisations whatever ``W`` is.
Each worker builds its own tables (spectra of the cosmologies, pixel indices) on its first
item; nothing large is pickled to the workers. ``healpy.alm2map``, most of a map's cost, runs
on OpenMP threads: set ``OMP_NUM_THREADS=1`` when workers simulate beside a training process,
or they compete for the same cores. Start the workers with
``DataLoader(..., multiprocessing_context="spawn")``: healpy's OpenMP runtime (GNU libgomp)
cannot run in a process forked from one that has already used it (a map simulated, a
spectrum computed in the main process), and a forked worker then waits forever.

**Epochs.** Call :meth:`~FisherStream.set_epoch` before each epoch, as with PyTorch's
``DistributedSampler``: epoch ``e`` has its own maps. An endless stream (``num_maps=None``)
never repeats within one pass.

**Batches.** Consecutive items are the patches of one realisation (all of its ``12 order^2``
patches, or the chosen ones): a batch of ``B`` items holds about ``B / len(patches)``
realisations. Use batches of several realisations, or ``shuffle_buffer`` to mix items of
several realisations.
"""

# The documented entry point of the streams (the docstring above). Each stream is defined in its
# own module, on the base class of _simulation_stream.py, which also synthesises their maps and
# measures their noise unit (fiducial_patch_std).
from ._simulation_stream import fiducial_patch_std
from .fisher_stream import FisherStream
from .prior_stream import PriorStream

__all__ = ["FisherStream", "PriorStream", "fiducial_patch_std"]
