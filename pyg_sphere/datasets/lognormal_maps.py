r"""Lognormal weak-lensing convergence maps of the two DeepSphere cosmologies.

DeepSphere's cosmology task tells apart convergence maps kappa (projected
mass, dimensionless) of two LCDM models with nearly equal power spectra:

=========  ========  =========  ==========================================
label      Omega_m   sigma_8    (h = 0.7, n_s = 0.96, Omega_b = 0.05)
=========  ========  =========  ==========================================
0          0.31      0.82       model 1
1          0.26      0.91       model 2 (0.9015 in the power-matched variant)
=========  ========  =========  ==========================================

The original N-body maps are not public, so this module makes realistic
stand-ins. Each map is a *shifted lognormal* field

.. math:: \kappa = \lambda\,\bigl(e^{g - \sigma_g^2/2} - 1\bigr),

with :math:`g` a Gaussian field of variance :math:`\sigma_g^2`, so that
:math:`\kappa \ge -\lambda`, :math:`\langle\kappa\rangle = 0` and the one-point
distribution is positively skewed like the real one. The Gaussian spectrum is
chosen so that :math:`\kappa` has the target spectrum :math:`C_\ell^{\kappa}`:
through the correlation functions,
:math:`\xi_g(\theta) = \ln(1 + \xi_\kappa(\theta)/\lambda^2)`
(Hilbert, Hartlap & Schneider 2011; Xavier, Abdalla & Joachimi 2016).

Target spectra and shifts come from a table shipped with the package
(``data/convergence_cl.npz``, :math:`\ell \le 6144`), computed by
``scripts/make_cl_table.py`` with pyccl: Eisenstein & Hu transfer function,
halofit, Limber, sources in a narrow n(z) at z = 0.8 (mean 0.8, standard
deviation 0.05). The shift :math:`\lambda` sets the non-Gaussianity (smaller
shift, more skewed maps). It is the Hilbert et al. (2011, eq. 38) fit
:math:`\kappa_0(z_s = 0.8) = 0.0212`, measured in the Millennium Simulation,
transferred to each cosmology by the ratio of empty-beam convergences
(:math:`\propto \Omega_m`): :math:`\lambda = 0.0246` for model 1 and
:math:`0.0218` for model 2. Running the simulator needs no cosmology code and
downloads nothing.

Maps at any (Omega_m, sigma_8) of the prior box come from
:func:`simulate_cosmology_map`, with spectra and shifts interpolated by
:mod:`~pyg_sphere.datasets.convergence_spectra` (same physics, same shift definition).

Randomness comes only from :class:`numpy.random.Generator` objects (never
numpy's or healpy's global state): map ``i`` of class ``label`` of a
collection made with ``seed`` uses ``map_rng(seed, label, i)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import healpy as hp
import numpy as np

from .._io import atomic_path, read_table
from .._validate import as_generator, check_int, check_nside
from ..cache import memoize
from ._lognormal_field import (  # the field synthesis, part of this module's API
    # the private steps too: tests and benchmarks import them from here
    _alm_layout,  # noqa: F401
    _colour_alm,  # noqa: F401
    _legendre_nodes,  # noqa: F401
    _lognormal_transform,  # noqa: F401
    gaussian_alm,
    gaussian_map,
    lognormal_gaussian_cl,
    lognormal_map,
)
from ._manifest import MANIFEST, MANIFEST_COLUMNS, SPLITS, check_split_fractions, write_manifest
from .convergence_spectra import _check_cosmology, _table_lmax, convergence_cl, lognormal_shift

__all__ = [
    "CosmologyModel",
    "cosmology_models",
    "lognormal_gaussian_cl",
    "gaussian_alm",
    "lognormal_map",
    "gaussian_map",
    "map_rng",
    "simulate_convergence_map",
    "simulate_cosmology_map",
    "simulate_convergence_maps",
    "MANIFEST_COLUMNS",
]

CL_TABLE = Path(__file__).resolve().parent / "data" / "convergence_cl.npz"


@dataclass(frozen=True)
class CosmologyModel:
    """One class of the cosmology task, as tabulated in the shipped C_ell table.

    Attributes:
        name: ``"model1"``, ``"model2"`` or ``"model2_power_matched"``.
        label: class label written in the manifest (0 or 1).
        omega_m: matter density parameter.
        sigma_8: amplitude of matter fluctuations.
        shift: lognormal shift lambda (the convergence minimum, kappa >= -shift).
        cl: read-only convergence power spectrum C_ell, ell = 0 ... ``lmax``.
    """

    name: str
    label: int
    omega_m: float
    sigma_8: float
    shift: float
    cl: np.ndarray

    @property
    def lmax(self) -> int:
        return len(self.cl) - 1

    def __repr__(self) -> str:
        return (
            f"CosmologyModel(name={self.name!r}, label={self.label}, "
            f"omega_m={self.omega_m}, sigma_8={self.sigma_8:.4f}, shift={self.shift:.4f}, "
            f"lmax={self.lmax})"
        )


@memoize("cl_table")
def _load_table() -> dict:
    return read_table(CL_TABLE)


def cosmology_models(power_matched: bool = False) -> tuple[CosmologyModel, CosmologyModel]:
    """The two classes (label 0 and 1) with their target spectra and lognormal shifts.

    Args:
        power_matched: if True, model 2 has sigma_8 tuned so that its spectrum
            matches model 1's on 100 < ell < 1000 (least squares in ln C_ell),
            so that only non-Gaussian information separates the classes.

    Example:
        >>> m1, m2 = cosmology_models()
        >>> (m1.omega_m, m1.sigma_8, m2.omega_m, m2.sigma_8)
        (0.31, 0.82, 0.26, 0.91)
        >>> m1.lmax
        6144
        >>> round(cosmology_models(power_matched=True)[1].sigma_8, 3)
        0.901
    """
    t = _load_table()
    names = list(t["name"])
    wanted = ("model1", "model2_power_matched" if power_matched else "model2")
    models = []
    for name in wanted:
        i = names.index(name)
        models.append(
            CosmologyModel(
                name=name,
                label=int(t["label"][i]),
                omega_m=float(t["omega_m"][i]),
                sigma_8=float(t["sigma_8"][i]),
                shift=float(t["shift"][i]),
                cl=t["cl"][i],
            )
        )
    return models[0], models[1]


def map_rng(seed: int, label: int, index: int) -> np.random.Generator:
    """The generator of map ``index`` of class ``label`` in a collection made with ``seed``.

    Independent streams per map (``numpy.random.SeedSequence(seed, spawn_key=(label,
    index))``), so a map does not depend on how many others are simulated.

    Example:
        >>> float(map_rng(0, 1, 5).random()) == float(map_rng(0, 1, 5).random())
        True
    """
    seed = check_int("seed", seed, 0)
    return np.random.default_rng(
        np.random.SeedSequence(
            seed, spawn_key=(check_int("label", label, 0), check_int("index", index, 0))
        )
    )


def _resolve_lmax(nside: int, lmax, table_lmax: int) -> int:
    if lmax is None:
        return min(3 * nside - 1, table_lmax)
    lmax = check_int("lmax", lmax, 2)
    if lmax > table_lmax:
        raise ValueError(
            f"lmax={lmax} is beyond the tabulated spectra (ell <= {table_lmax}); use a smaller lmax"
        )
    return lmax


@memoize("gaussian_cl")
def _model_gaussian_cl(power_matched: bool, label: int, lmax: int) -> np.ndarray:
    model = cosmology_models(power_matched)[label]
    clg = lognormal_gaussian_cl(model.cl, model.shift, lmax)
    clg.flags.writeable = False
    return clg


def simulate_convergence_map(
    nside: int,
    label: int = 0,
    *,
    rng=0,
    power_matched: bool = False,
    gaussian_twin: bool = False,
    lmax: int | None = None,
    nest: bool = False,
) -> np.ndarray:
    """One lognormal convergence map of cosmology ``label`` (0: model 1, 1: model 2).

    Args:
        nside: HEALPix resolution (power of two).
        label: 0 (Omega_m = 0.31, sigma_8 = 0.82) or 1 (Omega_m = 0.26, sigma_8 = 0.91).
        rng: a :class:`numpy.random.Generator` or an integer seed for one.
        power_matched: use the power-matched model 2 (see :func:`cosmology_models`).
        gaussian_twin: label 1 is the Gaussian twin of model 1 instead of model 2: a Gaussian
            field with model 1's power spectrum (:func:`gaussian_map`), so that the two labels
            share their spectrum exactly and differ only in non-Gaussian structure.
        lmax: band limit of the Gaussian field (default ``3 * nside - 1``,
            at most 6144, the tabulated range).
        nest: NESTED ordering (default RING).

    Returns:
        float64 array ``[12 * nside**2]`` of convergence values.

    Example:
        >>> m = simulate_convergence_map(16, label=1, rng=0)
        >>> m.shape, bool(abs(m.mean()) < 0.01)
        ((3072,), True)
    """
    nside = check_nside(nside)
    if label not in (0, 1) or isinstance(label, bool):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    _check_pair(power_matched, gaussian_twin)
    rng = as_generator(rng)
    lmax = _resolve_lmax(nside, lmax, cosmology_models()[0].lmax)
    if gaussian_twin and label == 1:
        return gaussian_map(cosmology_models()[0].cl[: lmax + 1], nside, rng, nest=nest)
    clg = _model_gaussian_cl(bool(power_matched), int(label), lmax)
    return lognormal_map(clg, cosmology_models(power_matched)[label].shift, nside, rng, nest=nest)


def _check_pair(power_matched: bool, gaussian_twin: bool) -> None:
    if power_matched and gaussian_twin:
        raise ValueError(
            "power_matched and gaussian_twin choose different maps for label 1 (model 2 "
            "power-matched, or the Gaussian twin of model 1): set one of them"
        )


@memoize("cosmology_gaussian_cl", limit=16 << 20)
def _cosmology_gaussian_cl(omega_m: float, sigma_8: float, lmax: int, gaussian: bool) -> np.ndarray:
    """Spectrum of the Gaussian field behind a map of this cosmology (read-only): C_ell
    itself for a Gaussian map, else the lognormal transform's."""
    cl = convergence_cl(omega_m, sigma_8, lmax)
    if not gaussian:
        cl = lognormal_gaussian_cl(cl, lognormal_shift(omega_m), lmax)
    cl.flags.writeable = False
    return cl


def simulate_cosmology_map(
    nside: int,
    omega_m: float,
    sigma_8: float,
    *,
    rng=0,
    gaussian: bool = False,
    lmax: int | None = None,
    nest: bool = False,
) -> np.ndarray:
    """One convergence map at any (Omega_m, sigma_8) of the tabulated range.

    The spectrum is :func:`~pyg_sphere.datasets.convergence_spectra.convergence_cl` and the
    map a shifted lognormal field of shift
    :func:`~pyg_sphere.datasets.convergence_spectra.lognormal_shift` (as
    :func:`simulate_convergence_map`), or, with ``gaussian=True``, a Gaussian field of that
    spectrum (:func:`gaussian_map`). The Gaussian field's spectrum is computed once per
    cosmology and band limit, then cached.

    The generator's draws are the unit-variance harmonic coefficients, scaled by the
    cosmology's Gaussian spectrum: maps of different cosmologies made from generators in the
    same state share one realisation (common random numbers, for finite differences).

    Args:
        nside: HEALPix resolution (power of two).
        omega_m: matter density parameter, in [0.12, 0.48].
        sigma_8: amplitude of matter fluctuations, in [0.45, 1.15].
        rng: a :class:`numpy.random.Generator` or an integer seed for one.
        gaussian: a Gaussian field instead of the shifted lognormal one.
        lmax: band limit of the Gaussian field (default ``3 * nside - 1``, at most 6144).
        nest: NESTED ordering (default RING).

    Returns:
        float64 array ``[12 * nside**2]`` of convergence values.

    Example:
        >>> m = simulate_cosmology_map(16, 0.2, 1.0, rng=0)
        >>> g = simulate_cosmology_map(16, 0.2, 1.0, rng=0, gaussian=True)
        >>> m.shape, bool(m.min() > -lognormal_shift(0.2)), bool(g.min() < m.min())
        ((3072,), True, True)
    """
    nside = check_nside(nside)
    rng = as_generator(rng)
    lmax = _resolve_lmax(nside, lmax, _table_lmax())
    omega_m, sigma_8 = _check_cosmology(omega_m, sigma_8)
    clg = _cosmology_gaussian_cl(omega_m, sigma_8, lmax, bool(gaussian))
    if gaussian:
        return gaussian_map(clg, nside, rng, nest=nest)
    return lognormal_map(clg, lognormal_shift(omega_m), nside, rng, nest=nest)


def _split_counts(n: int, fractions) -> list[int]:
    """Maps per split for one class: largest-remainder rounding, so counts sum to n."""
    raw = np.asarray(fractions, dtype=np.float64) * n
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts.tolist()


def _write_map(path: Path, m: np.ndarray, nest: bool, header, column_names=None) -> None:
    """A map ``[npix]`` (or maps ``[C, npix]``, one column each) as float32 healpy FITS,
    atomically."""
    with atomic_path(path, suffix=".fits") as tmp:  # healpy needs the extension
        hp.write_map(
            tmp,
            m,
            nest=nest,
            dtype=np.float32,
            column_names=column_names,
            overwrite=True,
            extra_header=header,
        )


def simulate_convergence_maps(
    out_dir,
    n_per_class: int,
    nside: int,
    *,
    seed: int = 0,
    power_matched: bool = False,
    gaussian_twin: bool = False,
    split_fractions=(0.6, 0.2, 0.2),
    nest: bool = False,
    lmax: int | None = None,
    progress: bool = True,
) -> Path:
    """Simulate a labelled collection of full-sky convergence maps for
    :class:`~pyg_sphere.datasets.ConvergenceMaps`.

    Writes ``out_dir/raw/class{label}_{i:04d}.fits`` (float32, healpy FITS with
    the ORDERING keyword, plus LABEL, OMEGA_M, SIGMA_8, KSHIFT, SEED, MAPID,
    LMAX header cards) and then ``out_dir/raw/manifest.csv`` with columns
    ``file,label,omega_m,sigma_8,split`` (``file`` relative to ``raw/``). Each
    file is written to a temporary name and renamed, and the manifest is
    written last, so an interrupted run never leaves a collection that loads.

    Splits are by map and stratified by class: of each class's maps, the first
    ``round(f_train * n)`` are ``train``, the next ``round(f_val * n)`` ``val``
    and the rest ``test`` (largest-remainder rounding). The maps are
    independent, so this order carries no bias. Maps are written unsmoothed at
    full resolution; smoothing (DeepSphere: 3 arcmin) and degrading are options
    of the dataset's processing.

    Deterministic: map ``i`` of class ``c`` equals
    ``simulate_convergence_map(nside, c, rng=map_rng(seed, c, i), ...)`` (same options) cast
    to float32, whatever ``n_per_class`` is.

    Args:
        out_dir: dataset root; maps go to ``out_dir/raw/`` (created if needed).
        n_per_class: maps per cosmology (>= 1).
        nside: HEALPix resolution (power of two). nside 1024 takes a few
            seconds per map (see ``docs/benchmarks.md``).
        seed: non-negative integer seed of the collection.
        power_matched: use the power-matched model 2 (sigma_8 tuned so the two
            spectra agree on 100 < ell < 1000).
        gaussian_twin: class 1 is the Gaussian twin of model 1 instead of model 2: Gaussian
            maps of model 1's spectrum (header ``GAUSSIAN = T``, no ``KSHIFT``; the manifest
            gives model 1's parameters). The classes then share their power spectrum on every
            scale and differ only in non-Gaussian structure, the information that the power
            spectrum cannot see (what ``make demo`` shows).
        split_fractions: (train, val, test) fractions, non-negative, sum 1.
        nest: write NESTED maps (default RING).
        lmax: band limit of the Gaussian field (default ``3 * nside - 1``, at most 6144).
        progress: show a tqdm progress bar.

    Returns:
        Path of the manifest, ``out_dir/raw/manifest.csv``.

    Example:
        >>> import tempfile, healpy as hp
        >>> with tempfile.TemporaryDirectory() as root:
        ...     manifest = simulate_convergence_maps(root, n_per_class=2, nside=16,
        ...                                          progress=False)
        ...     lines = manifest.read_text().splitlines()
        ...     m = hp.read_map(manifest.parent / "class0_0000.fits")
        >>> lines[0]
        'file,label,omega_m,sigma_8,split'
        >>> lines[1]
        'class0_0000.fits,0,0.31,0.82,train'
        >>> len(lines), m.shape
        (5, (3072,))
    """
    from tqdm.auto import tqdm

    n_per_class = check_int("n_per_class", n_per_class, 1)
    nside = check_nside(nside)
    seed = check_int("seed", seed, 0)
    fractions = check_split_fractions(split_fractions)
    _check_pair(power_matched, gaussian_twin)
    models = cosmology_models(power_matched)
    lmax = _resolve_lmax(nside, lmax, models[0].lmax)
    raw = Path(out_dir) / "raw"
    raw.mkdir(parents=True, exist_ok=True)

    counts = _split_counts(n_per_class, fractions)
    split_of = [s for s, c in zip(SPLITS, counts) for _ in range(c)]
    rows = []
    with tqdm(
        total=2 * n_per_class, desc="Simulating convergence maps", unit="map", disable=not progress
    ) as bar:
        for label, model in enumerate(models):
            gaussian = gaussian_twin and label == 1
            if gaussian:  # model 1's cosmology, without its non-Gaussian structure
                model = models[0]
            for i in range(n_per_class):
                name = f"class{label}_{i:04d}.fits"
                m = simulate_convergence_map(
                    nside,
                    label,
                    rng=map_rng(seed, label, i),
                    power_matched=power_matched,
                    gaussian_twin=gaussian_twin,
                    lmax=lmax,
                    nest=nest,
                )
                header = [("LABEL", label), ("OMEGA_M", model.omega_m), ("SIGMA_8", model.sigma_8)]
                header += [("GAUSSIAN", True)] if gaussian else [("KSHIFT", model.shift)]
                header += [("SEED", seed), ("MAPID", i), ("LMAX", lmax)]
                _write_map(raw / name, m, nest, header)
                rows.append((name, label, repr(model.omega_m), repr(model.sigma_8), split_of[i]))
                bar.update(1)
    manifest = raw / MANIFEST
    write_manifest(manifest, rows)
    return manifest
