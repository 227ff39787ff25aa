r"""Simulation designs over (Omega_m, sigma_8), written as map collections for
:class:`~pyg_sphere.datasets.ConvergenceMaps`.

Two designs serve parameter inference:

* **Prior design** (:func:`simulate_prior_maps`): one map at each point of a Latin hypercube
  (McKay, Beckman & Conover 1979) spread over a box of parameters, e.g. to train a network
  that regresses (Omega_m, sigma_8) from maps. Its manifest has no ``label`` column: the
  maps have parameters, not classes.
* **Fisher design** (:func:`simulate_fisher_maps`): at a fiducial cosmology
  :math:`\theta` and at :math:`\theta \pm \delta_p` for each parameter p, five maps per
  realisation that share one Gaussian draw (common random numbers), so that the
  finite-difference derivatives :math:`(s(\theta + \delta_p) - s(\theta - \delta_p)) /
  2\delta_p` of any summary s carry little sampling noise, as in the Fisher forecasts of
  Alsing & Wandelt (2018) and Charnock, Lavaux & Wandelt (2018). Its labels name the
  variant of each map: ``fiducial``, ``omega_m_plus``, ``omega_m_minus``, ``sigma_8_plus``,
  ``sigma_8_minus``.

Maps are :func:`~pyg_sphere.datasets.lognormal_maps.simulate_cosmology_map`'s: shifted
lognormal fields with the spectrum and shift of their cosmology, or Gaussian fields with
``gaussian=True``. The layout is :func:`~pyg_sphere.datasets.simulate_convergence_maps`'s:
``out_dir/raw/*.fits`` (float32, healpy FITS with the ORDERING keyword and DESIGN, LABEL
(Fisher design), OMEGA_M, SIGMA_8, KSHIFT (lognormal maps), GAUSSIAN, SEED, MAPID, LMAX
header cards), then ``out_dir/raw/manifest.csv``, each written to a temporary name and
renamed, the manifest last: an interrupted run never leaves a collection that loads.

Randomness: the Gaussian draw of map ``i`` of a prior design made with ``seed`` comes from
``map_rng(seed, PRIOR_STREAM, i)``, that of realisation ``i`` of a Fisher design from
``map_rng(seed, FISHER_STREAM, i)`` (streams distinct from those of the two-class
collections, whose labels are 0 and 1); the Latin hypercube is drawn from
``numpy.random.default_rng(seed)``.

**Tomographic designs.** With ``bins=`` (a :class:`~pyg_sphere.datasets.SourceBins`, e.g.
``smail_bins(4)``) every file holds the correlated, noiseless maps of the bins instead of one
map at source redshift 0.8, those of :func:`~pyg_sphere.datasets.simulate_tomographic_maps`
with the same generators, one FITS column per bin (``KAPPA_BIN1``, ``KAPPA_BIN2``, ...). The
header has the cards above, with one shift per bin (``KSHIFT1``, ``KSHIFT2``, ...) instead of
``KSHIFT``, plus ``NBINS`` and, per bin ``k``, its mean redshift ``ZMEAN{k}``, its share of the
galaxies ``NZFRAC{k}`` and, for bins cut at edges
(:func:`~pyg_sphere.datasets.tomography.equipopulated_bins`; photometric edges with photo-z
scatter), the edges ``ZLO{k}`` and ``ZHI{k}``: a summary of the bins, not their n(z), which
stays with the :class:`~pyg_sphere.datasets.SourceBins` you passed. Shape noise is left out,
as for one bin: add it when training
(:func:`~pyg_sphere.datasets.tomography.shape_noise_std`). Read the ``C`` columns back as the
channels of ``x`` [N, C] with ``ConvergenceMaps(root, field=tuple(range(C)))``.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .._validate import check_int, check_nside, check_positive
from ._manifest import MANIFEST, MANIFEST_COLUMNS, SPLITS, check_split_fractions, write_manifest
from ._tomography_bins import SourceBins
from ._tomography_spectra import _check_bins, _lognormal_shifts
from .convergence_spectra import (
    PARAMETERS,
    PRIOR_BOX,
    _check_cosmology,
    _table_lmax,
    lognormal_shift,
    tabulated_box,
)
from .lognormal_maps import (
    _resolve_lmax,
    _split_counts,
    _write_map,
    map_rng,
    simulate_cosmology_map,
)
from .tomography import simulate_tomographic_maps

__all__ = [
    "FISHER_VARIANTS",
    "latin_hypercube",
    "simulate_prior_maps",
    "simulate_fisher_maps",
]

#: Random stream (the ``label`` argument of :func:`map_rng`) of the maps of a prior design.
PRIOR_STREAM = 2
#: Random stream of the realisations of a Fisher design.
FISHER_STREAM = 3
#: Labels of the five maps of a Fisher realisation, in the order they are written.
FISHER_VARIANTS = ("fiducial", "omega_m_plus", "omega_m_minus", "sigma_8_plus", "sigma_8_minus")
#: Manifest header of a prior design (no label: the maps have parameters, not classes).
PRIOR_COLUMNS = ("file", "omega_m", "sigma_8", "split")


def _check_box(box) -> np.ndarray:
    """The box as float64 [[lo, hi] per parameter of PARAMETERS]; raises unless it maps
    exactly 'omega_m' and 'sigma_8' to finite (low, high) pairs with low < high."""
    if not isinstance(box, Mapping) or set(box) != set(PARAMETERS):
        raise ValueError(
            f"box must be a dict {{'omega_m': (low, high), 'sigma_8': (low, high)}}, got {box!r}"
        )
    out = []
    for name in PARAMETERS:
        try:
            lo, hi = (float(v) for v in box[name])
        except (TypeError, ValueError):
            raise ValueError(
                f"box[{name!r}] must be two numbers (low, high), got {box[name]!r}"
            ) from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"box[{name!r}] must be finite with low < high, got {box[name]!r}")
        out.append((lo, hi))
    return np.array(out)


def latin_hypercube(n: int, box: Mapping = PRIOR_BOX, seed: int = 0) -> np.ndarray:
    """``n`` points of a Latin hypercube in a box of (Omega_m, sigma_8).

    Each parameter's range is cut into ``n`` equal intervals and every interval holds exactly
    one point (McKay, Beckman & Conover 1979); points are placed at random inside their
    cells (``scipy.stats.qmc.LatinHypercube``, scrambled) and come in random order.

    Args:
        n: number of points (>= 1).
        box: dict ``{'omega_m': (low, high), 'sigma_8': (low, high)}`` (default
            :data:`~pyg_sphere.datasets.convergence_spectra.PRIOR_BOX`).
        seed: non-negative integer seed.

    Returns:
        float64 array ``[n, 2]``, columns Omega_m and sigma_8.

    Example:
        >>> theta = latin_hypercube(10, seed=1)
        >>> theta.shape
        (10, 2)
        >>> cells = (theta - [0.15, 0.5]) / [0.3, 0.6] * 10   # one point per tenth of each range
        >>> sorted(np.floor(cells[:, 0]).astype(int).tolist()) == list(range(10))
        True
    """
    n = check_int("n", n, 1)
    bounds = _check_box(box)
    seed = check_int("seed", seed, 0)
    return _latin_hypercube(n, bounds, np.random.default_rng(seed))


def _latin_hypercube(n: int, bounds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`latin_hypercube` from a generator (no checks): ``bounds`` as :func:`_check_box`
    returns them."""
    from scipy.stats import qmc

    # scipy renamed the argument `seed` to `rng` (1.15); a Generator means the same to both
    key = "rng" if "rng" in inspect.signature(qmc.LatinHypercube).parameters else "seed"
    sampler = qmc.LatinHypercube(d=len(PARAMETERS), **{key: rng})
    return qmc.scale(sampler.random(n), bounds[:, 0], bounds[:, 1])


def _check_inside_table(name: str, lo: float, hi: float, what: str) -> None:
    t_lo, t_hi = tabulated_box()[name]
    if lo < t_lo - 1e-12 or hi > t_hi + 1e-12:
        raise ValueError(
            f"{what} reaches outside the range of the tabulated spectra, {name} in "
            f"[{t_lo}, {t_hi}]; keep {name} inside it"
        )


def _check_gaussian(gaussian) -> bool:
    if not isinstance(gaussian, (bool, np.bool_)):
        raise ValueError(f"gaussian must be True or False, got {gaussian!r}")
    return bool(gaussian)


def _header(design, label, omega_m, sigma_8, gaussian, seed, index, lmax, bins=None) -> list:
    header = [("DESIGN", design)]
    if label is not None:
        header.append(("LABEL", label))
    header += [("OMEGA_M", omega_m), ("SIGMA_8", sigma_8)]
    if not gaussian:
        if bins is None:
            header.append(("KSHIFT", lognormal_shift(omega_m)))
        else:  # the shifts simulate_tomographic_maps uses by default, one per bin
            shifts = _lognormal_shifts(omega_m, bins)
            header += [(f"KSHIFT{k + 1}", float(v)) for k, v in enumerate(shifts)]
    header += [("GAUSSIAN", gaussian), ("SEED", seed), ("MAPID", index), ("LMAX", lmax)]
    if bins is not None:
        header += _bins_header(bins)
    return header


def _bins_header(bins: SourceBins) -> list:
    """Header cards that say what the columns are: a summary of the bins (their n(z) do not
    fit in a header)."""
    cards = [("NBINS", bins.n_bins, "tomographic bins, one column each")]
    for k, (z, f) in enumerate(zip(bins.mean_z, bins.fractions)):
        cards.append((f"ZMEAN{k + 1}", float(z), f"mean redshift of bin {k + 1}"))
        cards.append((f"NZFRAC{k + 1}", float(f), f"share of the galaxies in bin {k + 1}"))
    if bins.edges is not None and len(bins.edges) == bins.n_bins + 1:
        for k in range(bins.n_bins):
            lo, hi = float(bins.edges[k]), float(bins.edges[k + 1])
            cards.append((f"ZLO{k + 1}", lo, f"lower (photo-)z edge of bin {k + 1}"))
            cards.append((f"ZHI{k + 1}", hi, f"upper (photo-)z edge of bin {k + 1}"))
    return cards


def _column_names(n_bins: int) -> list[str]:
    return [f"KAPPA_BIN{k + 1}" for k in range(n_bins)]


def simulate_prior_maps(
    out_dir,
    n_maps: int,
    nside: int,
    *,
    box: Mapping = PRIOR_BOX,
    seed: int = 0,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    gaussian: bool = False,
    nest: bool = False,
    lmax: int | None = None,
    progress: bool = True,
    bins: SourceBins | None = None,
) -> Path:
    """Simulate one map at each point of a Latin hypercube over a prior box, for regression
    of (Omega_m, sigma_8) with :class:`~pyg_sphere.datasets.ConvergenceMaps`.

    Writes ``out_dir/raw/prior_{i:05d}.fits`` for the design points ``latin_hypercube(n_maps,
    box, seed)`` and then ``out_dir/raw/manifest.csv`` with columns
    ``file,omega_m,sigma_8,split``: no ``label`` column, so the dataset has no classes and
    every sample's ``y`` is -1; the parameters are the targets. The points come in random
    order, so the first ``f_train * n_maps`` of them are ``train``, the next ``f_val *
    n_maps`` ``val`` and the rest ``test`` (largest-remainder rounding): each split is a
    random subset of the design.

    Deterministic: map ``i`` equals ``simulate_cosmology_map(nside, *theta[i],
    rng=map_rng(seed, PRIOR_STREAM, i), ...)`` cast to float32. Every map has its own
    cosmology, so the lognormal transform of its spectrum is computed for each map: about
    as long as the rest of a map at nside 256, 40% of it at nside 1024
    (``docs/benchmarks.md``, column "C_l^g once").

    With ``bins``, file ``i`` holds one column per bin (``KAPPA_BIN1``, ...), equal to
    ``simulate_tomographic_maps(nside, *theta[i], bins, rng=map_rng(seed, PRIOR_STREAM, i),
    gaussian=gaussian, lmax=lmax, nest=nest)`` cast to float32: noiseless (add shape noise at
    training time), the bins' spectra and shifts from pyccl, computed for each map's cosmology
    (about half a second with 2 to 4 bins). The box must stay inside the tabulated range even
    though pyccl would accept any Omega_m in (0.05, 1) and sigma_8 in (0, 3): one- and
    several-bin designs (and :class:`~pyg_sphere.datasets.PriorStream`) cover the same
    cosmologies. The header cards are listed in the module documentation.

    Args:
        out_dir: dataset root; maps go to ``out_dir/raw/`` (created if needed).
        n_maps: number of maps (design points, >= 1).
        nside: HEALPix resolution (power of two).
        box: dict ``{'omega_m': (low, high), 'sigma_8': (low, high)}`` inside the tabulated
            range (default :data:`~pyg_sphere.datasets.convergence_spectra.PRIOR_BOX`).
        seed: non-negative integer seed of the design and of the maps.
        split_fractions: (train, val, test) fractions, non-negative, sum 1.
        gaussian: Gaussian maps instead of shifted lognormal ones.
        nest: write NESTED maps (default RING).
        lmax: band limit of the Gaussian field (default ``3 * nside - 1``, at most 6144).
        progress: show a tqdm progress bar.
        bins: tomographic source bins (a :class:`~pyg_sphere.datasets.SourceBins`, e.g.
            ``smail_bins(4)``): write the ``C = bins.n_bins`` correlated maps of the bins as
            the ``C`` columns of each file, read back with ``ConvergenceMaps(root,
            field=tuple(range(C)))``. Default ``None``: one map at source redshift 0.8.

    Returns:
        Path of the manifest, ``out_dir/raw/manifest.csv``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     manifest = simulate_prior_maps(root, 3, 8, seed=1, progress=False)
        ...     lines = manifest.read_text().splitlines()
        >>> lines[0]
        'file,omega_m,sigma_8,split'
        >>> [line.split(',')[0] for line in lines[1:]]
        ['prior_00000.fits', 'prior_00001.fits', 'prior_00002.fits']
    """
    n_maps = check_int("n_maps", n_maps, 1)
    nside = check_nside(nside)
    bounds = _check_box(box)
    for name, (lo, hi) in zip(PARAMETERS, bounds):
        _check_inside_table(name, lo, hi, f"box[{name!r}] = ({lo}, {hi})")
    seed = check_int("seed", seed, 0)
    fractions = check_split_fractions(split_fractions)
    gaussian = _check_gaussian(gaussian)
    lmax = _resolve_lmax(nside, lmax, _table_lmax())
    bins = None if bins is None else _check_bins(bins)
    theta = latin_hypercube(n_maps, box, seed)

    counts = _split_counts(n_maps, fractions)
    split_of = [s for s, c in zip(SPLITS, counts) for _ in range(c)]
    jobs = []
    for i, (om, s8) in enumerate(theta):
        om, s8 = float(om), float(s8)
        header = _header("prior", None, om, s8, gaussian, seed, i, lmax, bins)
        rows = (f"prior_{i:05d}.fits", repr(om), repr(s8), split_of[i])
        jobs.append((rows, om, s8, map_rng(seed, PRIOR_STREAM, i), header))
    return _write(out_dir, jobs, PRIOR_COLUMNS, nside, gaussian, nest, lmax, progress, bins)


def _fisher_cosmologies(fiducial, steps, *, zero_steps: bool = False) -> list[tuple[float, float]]:
    """The five cosmologies of FISHER_VARIANTS, checked against the tabulated range (steps of 0
    allowed with ``zero_steps``: twins equal to the fiducial, a check of shared draws)."""
    try:
        om, s8 = (float(v) for v in fiducial)
    except (TypeError, ValueError):
        raise ValueError(
            f"fiducial must be two numbers (omega_m, sigma_8), got {fiducial!r}"
        ) from None
    try:
        d_om, d_s8 = (float(v) for v in steps)
    except (TypeError, ValueError):
        raise ValueError(
            f"steps must be two numbers (d_omega_m, d_sigma_8), got {steps!r}"
        ) from None
    if not (zero_steps and d_om == 0):
        d_om = check_positive("the omega_m step", d_om)
    if not (zero_steps and d_s8 == 0):
        d_s8 = check_positive("the sigma_8 step", d_s8)
    _check_cosmology(om, s8)
    for name, centre, step in (("omega_m", om, d_om), ("sigma_8", s8, d_s8)):
        _check_inside_table(
            name, centre - step, centre + step, f"the fiducial {name} {centre} +- step {step}"
        )

    def tidy(x):  # 0.31 + 0.02 is 0.33000000000000002: keep 12 significant digits
        return float(f"{x:.12g}")

    return [
        (om, s8),
        (tidy(om + d_om), s8),
        (tidy(om - d_om), s8),
        (om, tidy(s8 + d_s8)),
        (om, tidy(s8 - d_s8)),
    ]


def simulate_fisher_maps(
    out_dir,
    n_maps: int,
    nside: int,
    *,
    fiducial: Sequence[float] = (0.31, 0.82),
    steps: Sequence[float] = (0.02, 0.02),
    seed: int = 0,
    split_fractions: Sequence[float] = (0.0, 0.0, 1.0),
    gaussian: bool = False,
    nest: bool = False,
    lmax: int | None = None,
    progress: bool = True,
    bins: SourceBins | None = None,
) -> Path:
    r"""Simulate maps for a Fisher forecast: ``n_maps`` realisations, each at the fiducial
    cosmology and at fiducial +- step for each parameter, all five from one Gaussian draw.

    Writes ``out_dir/raw/fisher_{i:04d}_{variant}.fits`` for every realisation ``i`` and
    variant of :data:`FISHER_VARIANTS` (``fiducial``, ``omega_m_plus``, ``omega_m_minus``,
    ``sigma_8_plus``, ``sigma_8_minus``), then ``out_dir/raw/manifest.csv`` with columns
    ``file,label,omega_m,sigma_8,split``, the label being the variant. The five maps of a
    realisation use generators in the same state, so their harmonic coefficients are the same
    unit-variance draw scaled by each cosmology's Gaussian spectrum: with ``gaussian=True``
    the coefficients of a step map are those of the fiducial map times
    :math:`\sqrt{C_\ell^{step} / C_\ell^{fid}}`. Estimate covariances from the ``fiducial``
    maps and derivatives from the pairs, realisation by realisation.

    Splits are by realisation, so the five maps of one realisation are always in the same
    split: the first ``f_train * n_maps`` realisations are ``train``, the next ``f_val *
    n_maps`` ``val``, the rest ``test``. The default puts everything in ``test``, for
    evaluating summaries trained elsewhere (e.g. on :func:`simulate_prior_maps`); give other
    fractions to train on Fisher maps too.

    Deterministic: map ``(i, variant)`` equals ``simulate_cosmology_map(nside, omega_m,
    sigma_8, rng=map_rng(seed, FISHER_STREAM, i), ...)`` cast to float32.

    With ``bins``, file ``(i, variant)`` holds one column per bin (``KAPPA_BIN1``, ...), equal
    to ``simulate_tomographic_maps(nside, omega_m, sigma_8, bins, rng=map_rng(seed,
    FISHER_STREAM, i), gaussian=gaussian, lmax=lmax, nest=nest)`` cast to float32: noiseless
    (add shape noise at training time). It draws the unit harmonic coefficients of all bins
    first, so the five variants of a realisation share them as one-bin maps do. The fiducial
    and steps stay inside the tabulated range, as without bins (pyccl would accept Omega_m in
    (0.05, 1) and sigma_8 in (0, 3)); the five cosmologies' spectra come from pyccl, computed
    once per cosmology and cached. The header cards are listed in the module documentation.

    Args:
        out_dir: dataset root; maps go to ``out_dir/raw/`` (created if needed).
        n_maps: number of realisations (>= 1); ``5 * n_maps`` maps are written.
        nside: HEALPix resolution (power of two).
        fiducial: (Omega_m, sigma_8) of the fiducial cosmology.
        steps: (d_Omega_m, d_sigma_8), positive; fiducial +- step must stay inside the
            tabulated range (Omega_m in [0.12, 0.48], sigma_8 in [0.45, 1.15]).
        seed: non-negative integer seed.
        split_fractions: (train, val, test) fractions of the realisations, non-negative,
            sum 1 (default all ``test``).
        gaussian: Gaussian maps instead of shifted lognormal ones.
        nest: write NESTED maps (default RING).
        lmax: band limit of the Gaussian field (default ``3 * nside - 1``, at most 6144).
        progress: show a tqdm progress bar.
        bins: tomographic source bins (a :class:`~pyg_sphere.datasets.SourceBins`, e.g.
            ``smail_bins(4)``): write the ``C = bins.n_bins`` correlated maps of the bins as
            the ``C`` columns of each file, read back with ``ConvergenceMaps(root,
            field=tuple(range(C)))``. Default ``None``: one map at source redshift 0.8.

    Returns:
        Path of the manifest, ``out_dir/raw/manifest.csv``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     manifest = simulate_fisher_maps(root, 1, 8, progress=False)
        ...     lines = manifest.read_text().splitlines()
        >>> lines[0]
        'file,label,omega_m,sigma_8,split'
        >>> lines[1]
        'fisher_0000_fiducial.fits,fiducial,0.31,0.82,test'
        >>> lines[2]
        'fisher_0000_omega_m_plus.fits,omega_m_plus,0.33,0.82,test'
        >>> len(lines)
        6
    """
    n_maps = check_int("n_maps", n_maps, 1)
    nside = check_nside(nside)
    cosmologies = _fisher_cosmologies(fiducial, steps)
    seed = check_int("seed", seed, 0)
    fractions = check_split_fractions(split_fractions)
    gaussian = _check_gaussian(gaussian)
    lmax = _resolve_lmax(nside, lmax, _table_lmax())
    bins = None if bins is None else _check_bins(bins)

    counts = _split_counts(n_maps, fractions)
    split_of = [s for s, c in zip(SPLITS, counts) for _ in range(c)]
    jobs = []
    for i in range(n_maps):
        for variant, (om, s8) in zip(FISHER_VARIANTS, cosmologies):
            header = _header("fisher", variant, om, s8, gaussian, seed, i, lmax, bins)
            row = (f"fisher_{i:04d}_{variant}.fits", variant, repr(om), repr(s8), split_of[i])
            # a fresh generator per map, in the same state for the five variants
            jobs.append((row, om, s8, map_rng(seed, FISHER_STREAM, i), header))
    return _write(out_dir, jobs, MANIFEST_COLUMNS, nside, gaussian, nest, lmax, progress, bins)


def _write(out_dir, jobs, columns, nside, gaussian, nest, lmax, progress, bins=None) -> Path:
    """Simulates and writes every ``(manifest row, omega_m, sigma_8, rng, header)`` job (the
    maps of ``bins`` when given), then the manifest."""
    from tqdm.auto import tqdm

    raw = Path(out_dir) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rows = []
    for row, om, s8, rng, header in tqdm(
        jobs, desc="Simulating convergence maps", unit="map", disable=not progress
    ):
        if bins is None:
            m = simulate_cosmology_map(
                nside, om, s8, rng=rng, gaussian=gaussian, lmax=lmax, nest=nest
            )
            _write_map(raw / row[0], m, nest, header)
        else:
            m = simulate_tomographic_maps(
                nside, om, s8, bins, rng=rng, gaussian=gaussian, lmax=lmax, nest=nest
            )
            _write_map(raw / row[0], m, nest, header, column_names=_column_names(len(m)))
        rows.append(row)
    manifest = raw / MANIFEST
    write_manifest(manifest, rows, columns)
    return manifest
