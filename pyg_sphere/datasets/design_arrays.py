r"""Your own simulations in: the arrays of parameter inference from a collection of maps.

A Fisher forecast needs, for every realisation and patch, the fiducial patch and its
:math:`\pm` step twins side by side, and the steps; a regression or a neural posterior needs
patches and their parameters. :func:`fisher_arrays` and :func:`prior_arrays` read them from a
:class:`~pyg_sphere.datasets.ConvergenceMaps` of any collection: one written by
``pyg-sphere-simulate`` (:func:`~pyg_sphere.datasets.simulate_fisher_maps`,
:func:`~pyg_sphere.datasets.simulate_prior_maps`), or a suite of your own described by its
``raw/manifest.csv``.

A Fisher design's manifest names the variant of every map in its ``label`` column
(``fiducial``, ``omega_m_plus``, ``omega_m_minus``, ``sigma_8_plus``, ``sigma_8_minus``; a suite
may vary one parameter only) and gives its ``omega_m`` and ``sigma_8``. The maps of one
realisation (one Gaussian draw, shared by the variants) are found from, in this order: the
``realisation=`` argument, a ``realisation`` column of the manifest (an integer per map), or the
file names that :func:`~pyg_sphere.datasets.simulate_fisher_maps` writes
(``fisher_{i:04d}_{variant}.fits``). For example::

    file,label,omega_m,sigma_8,realisation,split
    run7/kappa_fid.fits,fiducial,0.3,0.8,7,test
    run7/kappa_om_p.fits,omega_m_plus,0.31,0.8,7,test
    run7/kappa_om_m.fits,omega_m_minus,0.29,0.8,7,test
    ...

Parameters are read in double precision from the manifest (the dataset's items hold them in
float32) when it still lists the processed files, else from the items.

Channels: a patch is ``x`` as the dataset serves it, ``[N]`` for one channel (the layout of
one-map collections) and ``[N, C]`` for several, e.g. the tomographic bins of
``simulate_fisher_maps(..., bins=smail_bins(C))`` read with ``ConvergenceMaps(root,
field=tuple(range(C)))`` (and the observed channel, last, with ``observed_channel=True``). The
tomographic summaries of :mod:`pyg_sphere.inference` take maps ``[m, C, N]``: summarise
several channels with ``arrays.summarise(lambda x: summary(summary_layout(x)))``
(:func:`~pyg_sphere.inference.summary_layout`).
"""

from __future__ import annotations

import os.path as osp
import re
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

import numpy as np

from ._manifest import MANIFEST, _read_csv, read_manifest
from .convergence_spectra import PARAMETERS

__all__ = ["FisherArrays", "PriorArrays", "fisher_arrays", "prior_arrays"]

_FILE_NAME = re.compile(r"fisher_(\d+)_([a-z0-9_]+)\.[A-Za-z.]+")
_LISTED = 5  # realisations named in an error before "... and n more"


@dataclass(frozen=True, eq=False)
class FisherArrays:
    r"""The patches of a Fisher design, grouped by realisation and patch.

    Row ``i`` of every array is one patch (``patch_id[i]``) of one realisation
    (``realisation[i]``): the fiducial patch and its twins at fiducial :math:`\pm` ``step`` for
    each parameter, from the same Gaussian draw.

    Attributes:
        fiducial: the fiducial patches, ``[n, N]``, or ``[n, N, C]`` for patches of C > 1
            channels (or summaries ``[n, d]``).
        plus: the patches at fiducial + step of each parameter, ``[n, p, N]`` (``[n, p, N,
            C]``).
        minus: the patches at fiducial - step, ``[n, p, N]`` (``[n, p, N, C]``).
        step: the steps, float64 ``[p]``.
        theta: the fiducial parameters, float64 ``[p]``.
        parameters: the names of the p parameters (``'omega_m'``, ``'sigma_8'``).
        realisation: the realisation of every row, int64 ``[n]``.
        patch_id: the patch of every row, int64 ``[n]``.
        draw: ``realisation * num_patches + patch_id``, int64 ``[n]``: the ``draw`` of the
            items of :class:`~pyg_sphere.datasets.FisherStream` in evaluation mode.
    """

    fiducial: np.ndarray
    plus: np.ndarray
    minus: np.ndarray
    step: np.ndarray
    theta: np.ndarray
    parameters: tuple
    realisation: np.ndarray
    patch_id: np.ndarray
    draw: np.ndarray

    def __len__(self) -> int:
        return len(self.fiducial)

    def summarise(self, summary: Callable) -> "FisherArrays":
        """The same design with every patch replaced by ``summary(patches)`` (a callable from
        ``[m, N]``, or ``[m, N, C]`` for several channels, to ``[m, d]``, e.g. a
        :class:`pyg_sphere.inference.Summary`), applied once to the fiducial patches and once
        to all twins."""
        n, p = self.plus.shape[:2]
        fiducial = np.asarray(summary(self.fiducial))
        # keep the patch's own shape ([N] or [N, C]): only the (n, 2p) rows are flattened
        twins = np.concatenate([self.plus, self.minus], 1)
        twins = np.asarray(summary(twins.reshape((2 * n * p,) + twins.shape[2:])))
        twins = twins.reshape(n, 2 * p, -1)
        return replace(self, fiducial=fiducial, plus=twins[:, :p], minus=twins[:, p:])

    def fisher_args(self) -> tuple:
        """``(fiducial, plus, minus, step)`` in the layout of
        :func:`pyg_sphere.inference.fisher_matrix` (``plus`` and ``minus`` as ``[p, n, d]``;
        summarise patches first)."""
        return self.fiducial, self.plus.swapaxes(0, 1), self.minus.swapaxes(0, 1), self.step

    def __repr__(self) -> str:
        n, p = self.plus.shape[:2]
        return (
            f"FisherArrays(n={n}, size={self.fiducial.shape[1:]}, parameters={self.parameters}, "
            f"theta={self.theta.tolist()}, step={self.step.tolist()}, "
            f"realisations={len(np.unique(self.realisation))})"
        )


@dataclass(frozen=True, eq=False)
class PriorArrays:
    """The patches of a collection with their parameters (a prior design).

    Attributes:
        x: the patches, ``[n, N]``, or ``[n, N, C]`` for patches of C > 1 channels (or
            summaries ``[n, d]``).
        theta: the parameters of every patch, float64 ``[n, p]``.
        parameters: the names of the p parameters.
        map_id: the map of every row (its row in the manifest), int64 ``[n]``.
        patch_id: the patch of every row, int64 ``[n]``.
        draw: ``map_id * num_patches + patch_id``, int64 ``[n]``.
    """

    x: np.ndarray
    theta: np.ndarray
    parameters: tuple
    map_id: np.ndarray
    patch_id: np.ndarray
    draw: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def summarise(self, summary: Callable) -> "PriorArrays":
        """The same patches replaced by ``summary(x)`` (``[n, N]`` or ``[n, N, C]`` to ``[n,
        d]``)."""
        return replace(self, x=np.asarray(summary(self.x)))

    def __repr__(self) -> str:
        return (
            f"PriorArrays(n={len(self.x)}, size={self.x.shape[1:]}, "
            f"parameters={self.parameters}, maps={len(np.unique(self.map_id))})"
        )


def fisher_arrays(dataset, *, realisation: Optional[Sequence[int]] = None) -> FisherArrays:
    r"""The fiducial patches and their twins of a Fisher design, realisation by realisation.

    Reads every item of ``dataset`` (one split of a
    :class:`~pyg_sphere.datasets.ConvergenceMaps`, as it serves them: with its ``transform``),
    finds the variant of every map from its label and the realisation it belongs to (see the
    module documentation), and checks the design: every realisation has every variant once and
    the same patches in each; the twins of parameter a differ from the fiducial in parameter a
    only, by the same step above and below; the fiducial point and the steps are the same in
    every realisation.

    Args:
        dataset: a :class:`~pyg_sphere.datasets.ConvergenceMaps` whose labels are Fisher
            variants (``fiducial``, ``<parameter>_plus``, ``<parameter>_minus``).
        realisation: the realisation of every map of the manifest (indexed by ``map_id``);
            default: the manifest's ``realisation`` column, else the file names of
            :func:`~pyg_sphere.datasets.simulate_fisher_maps`.

    Returns:
        :class:`FisherArrays`, rows sorted by realisation, then patch.

    Raises:
        ValueError: labels that are not Fisher variants, maps whose realisation cannot be told,
            a realisation without some variant (or with one twice), twins that do not differ
            from the fiducial by exactly one step, steps or fiducial points that differ between
            realisations; each message names the realisations and how to fix the manifest.

    Shapes:
        - **output:** fiducial [n, N], plus [n, p, N], minus [n, p, N], step [p], n =
          realisations x patches, N pixels per patch; with C > 1 channels per pixel (``x``
          [N, C], e.g. tomographic bins): fiducial [n, N, C], plus and minus [n, p, N, C]

    Example:
        >>> import tempfile
        >>> from pyg_sphere.datasets import ConvergenceMaps, simulate_fisher_maps
        >>> root = tempfile.mkdtemp()
        >>> _ = simulate_fisher_maps(root, 2, nside=8, progress=False)
        >>> arrays = fisher_arrays(ConvergenceMaps(root, order=1, split="test", log=False))
        >>> arrays.fiducial.shape, arrays.plus.shape, arrays.step.tolist()
        ((24, 64), (24, 2, 64), [0.02, 0.02])
        >>> arrays.parameters, arrays.theta.tolist()
        (('omega_m', 'sigma_8'), [0.31, 0.82])
    """
    items = _read_items(dataset)
    theta_of, eps, columns = _map_table(dataset, items)
    variant_of = _variants(dataset, items)
    parameters = tuple(
        p for p in PARAMETERS if {f"{p}_plus", f"{p}_minus"} & set(variant_of.values())
    )
    if not parameters:
        raise ValueError(
            "the dataset holds no twins (labels '<parameter>_plus' and '<parameter>_minus' "
            f"for parameters {PARAMETERS}): it is not a Fisher design"
        )
    names = ("fiducial",) + tuple(f"{p}_{s}" for p in parameters for s in ("plus", "minus"))
    realisation_of = _realisations(dataset, realisation, columns, variant_of)
    groups = _group(variant_of, realisation_of, names, dataset.files)
    theta, step = _check_design(groups, theta_of, parameters, eps)

    rows = items["rows"]  # (map_id, patch_id) -> row of items["x"]
    patches_of = {}
    for map_id, patch in rows:
        patches_of.setdefault(map_id, []).append(patch)
    fid, plus, minus, real, patch_ids = [], [], [], [], []
    p = len(parameters)
    for r in sorted(groups):
        maps = groups[r]
        patches = sorted(patches_of[maps["fiducial"]])
        for name, map_id in maps.items():
            if sorted(patches_of[map_id]) != patches:
                raise ValueError(
                    f"realisation {r}: the {name} map ({dataset.files[map_id]}) has patches "
                    f"{sorted(patches_of[map_id])}, the fiducial map {patches}; twins must keep "
                    "the same patches (same mask, same min_observed)"
                )
        for k in patches:
            fid.append(rows[maps["fiducial"], k])
            plus.append([rows[maps[f"{a}_plus"], k] for a in parameters])
            minus.append([rows[maps[f"{a}_minus"], k] for a in parameters])
            real.append(r)
            patch_ids.append(k)
    x = items["x"]
    real = np.array(real, dtype=np.int64)
    patch_ids = np.array(patch_ids, dtype=np.int64)
    return FisherArrays(
        fiducial=x[np.array(fid)],
        plus=x[np.array(plus).reshape(-1, p)],
        minus=x[np.array(minus).reshape(-1, p)],
        step=step,
        theta=theta,
        parameters=parameters,
        realisation=real,
        patch_id=patch_ids,
        draw=real * dataset.num_patches + patch_ids,
    )


def prior_arrays(dataset) -> PriorArrays:
    """The patches of a collection and the parameters of their maps, e.g. of a prior design.

    Reads every item of ``dataset`` (one split of a
    :class:`~pyg_sphere.datasets.ConvergenceMaps`, as it serves them), in the dataset's order.

    Args:
        dataset: a :class:`~pyg_sphere.datasets.ConvergenceMaps` whose manifest gives
            ``omega_m`` and ``sigma_8`` for every map.

    Returns:
        :class:`PriorArrays`.

    Raises:
        ValueError: maps without parameters (the message names them).

    Shapes:
        - **output:** x [n, N] (one channel) or [n, N, C] (C > 1 channels per pixel, e.g.
          tomographic bins), theta [n, p]

    Example:
        >>> import tempfile
        >>> from pyg_sphere.datasets import ConvergenceMaps, simulate_prior_maps
        >>> root = tempfile.mkdtemp()
        >>> _ = simulate_prior_maps(root, 3, nside=8, split_fractions=(1, 0, 0), progress=False)
        >>> arrays = prior_arrays(ConvergenceMaps(root, order=1, log=False))
        >>> arrays.x.shape, arrays.theta.shape
        ((36, 64), (36, 2))
    """
    items = _read_items(dataset)
    theta_of, _, _ = _map_table(dataset, items)
    map_id = items["map_id"]
    missing = sorted({int(m) for m in map_id if not np.isfinite(theta_of[int(m)]).all()})
    if missing:
        raise ValueError(
            f"{len(missing)} maps have no omega_m or sigma_8 in raw/{MANIFEST} "
            f"({_listing([dataset.files[m] for m in missing])}): give every map its parameters "
            "in the manifest's omega_m and sigma_8 columns"
        )
    return PriorArrays(
        x=items["x"],
        theta=np.stack([theta_of[int(m)] for m in map_id]),
        parameters=PARAMETERS,
        map_id=map_id,
        patch_id=items["patch_id"],
        draw=map_id * dataset.num_patches + items["patch_id"],
    )


# ----- helpers ----------------------------------------------------------------------------------
def _read_items(dataset) -> dict:
    """Every item's patch ([N] for one channel, as before channels existed, else [N, C]) and
    fields, once."""
    for attr in ("classes", "files", "num_patches", "raw_dir"):
        if not hasattr(dataset, attr):
            raise TypeError(
                f"dataset must be a pyg_sphere.datasets.ConvergenceMaps (it has no .{attr}), "
                f"got {type(dataset).__name__}"
            )
    if len(dataset) == 0:
        raise ValueError(f"the dataset ({dataset!r}) holds no patches")
    xs, map_id, patch_id, omega_m, sigma_8, y_of_map = [], [], [], {}, {}, {}
    for data in dataset:
        m = int(data.map_id)
        x = data.x.numpy()
        xs.append(x[:, 0] if x.shape[1] == 1 else x)
        map_id.append(m)
        patch_id.append(int(data.patch_id))
        omega_m[m], sigma_8[m], y_of_map[m] = float(data.omega_m), float(data.sigma_8), int(data.y)
    map_id, patch_id = np.array(map_id, dtype=np.int64), np.array(patch_id, dtype=np.int64)
    rows = {(int(m), int(k)): i for i, (m, k) in enumerate(zip(map_id, patch_id))}
    return {
        "x": np.stack(xs),
        "map_id": map_id,
        "patch_id": patch_id,
        "rows": rows,
        "theta32": {m: (omega_m[m], sigma_8[m]) for m in y_of_map},
        "y_of_map": y_of_map,
    }


def _map_table(dataset, items) -> tuple[np.ndarray, float, dict]:
    """Parameters of every map of the manifest, float64 [maps, p], their relative precision,
    and the manifest's extra columns by map (empty without a readable, matching manifest)."""
    path = osp.join(dataset.raw_dir, MANIFEST)
    files = list(dataset.files)
    if osp.isfile(path):
        try:
            rows = read_manifest(path)
            header, raw = _read_csv(path)
        except ValueError:
            rows = None
        if rows is not None and [r["file"] for r in rows] == files:
            theta = np.array([[r[p] for p in PARAMETERS] for r in rows])
            columns = {h: [values.get(h, "") for _, values in raw] for h in header}
            columns[" line"] = [line for line, _ in raw]  # a name no CSV column can have
            return theta, 1e-9, columns
    # the raw data is gone or changed: the processed parameters, stored in float32
    theta = np.full((len(files), len(PARAMETERS)), np.nan)
    for m, values in items["theta32"].items():
        theta[m] = values
    return theta, 1e-6, {}


def _variants(dataset, items) -> dict:
    """map_id -> variant name, checked against the Fisher variants."""
    if not dataset.classes:
        raise ValueError(
            f"the dataset has no labels: a Fisher design's raw/{MANIFEST} names the variant of "
            "every map in its label column (fiducial, omega_m_plus, ...); read a collection "
            "without labels with prior_arrays"
        )
    labels = [dataset.classes[y] for y in items["y_of_map"].values()]
    known = {"fiducial"} | {f"{p}_{s}" for p in PARAMETERS for s in ("plus", "minus")}
    unknown = sorted({str(lab) for lab in labels if lab not in known})
    if unknown:
        raise ValueError(
            f"labels {unknown} do not name a Fisher variant: the labels of a Fisher design are "
            f"'fiducial', and '<parameter>_plus' / '<parameter>_minus' for the parameters "
            f"{PARAMETERS} (as simulate_fisher_maps writes them); relabel the maps in "
            f"raw/{MANIFEST}, or read a prior design with prior_arrays"
        )
    return dict(zip(items["y_of_map"], labels))


def _realisations(dataset, realisation, columns: dict, variant_of: dict) -> dict:
    """map_id -> realisation, for the maps of the dataset."""
    files = dataset.files
    if realisation is not None:
        values = list(realisation)
        if len(values) != len(files):
            raise ValueError(
                f"realisation must give one integer per map of raw/{MANIFEST} (indexed by "
                f"map_id), {len(files)}, got {len(values)}"
            )
        out = {}
        for m in variant_of:
            r = values[m]
            if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0:
                raise ValueError(
                    f"realisation[{m}] must be a non-negative integer (the realisation of "
                    f"{files[m]}), got {r!r}"
                )
            out[m] = int(r)
        return out
    if "realisation" in columns:
        out = {}
        for m in variant_of:
            text = columns["realisation"][m]
            if not re.fullmatch(r"[0-9]+", text):
                raise ValueError(
                    f"'{files[m]}' (raw/{MANIFEST} line {columns[' line'][m]}): realisation "
                    f"{text!r} is not a non-negative integer; give every map the number of the "
                    "Gaussian draw it shares with its twins"
                )
            out[m] = int(text)
        return out
    out = {}
    for m, variant in variant_of.items():
        match = _FILE_NAME.fullmatch(osp.basename(files[m]))
        if match is not None and match.group(2) != variant:
            raise ValueError(
                f"'{files[m]}' is named as a {match.group(2)} map but labelled {variant} in "
                f"raw/{MANIFEST}: correct its label, or add a 'realisation' column (one "
                "integer per map, shared by the variants of one Gaussian draw)"
            )
        if match is None:
            raise ValueError(
                f"cannot tell which maps share a realisation: '{files[m]}' is not named as "
                "simulate_fisher_maps names its files (fisher_<realisation>_<variant>.fits); "
                f"add a 'realisation' column to raw/{MANIFEST} (one integer per map, shared by "
                "the variants of one Gaussian draw) or pass realisation=[...] (one per map_id)"
            )
        out[m] = int(match.group(1))
    return out


def _group(variant_of: dict, realisation_of: dict, names: tuple, files: list) -> dict:
    """realisation -> {variant: map_id}; raises on a missing or repeated variant."""
    groups: dict = {}
    for m in sorted(variant_of):
        r, variant = realisation_of[m], variant_of[m]
        if variant in groups.setdefault(r, {}):
            raise ValueError(
                f"realisation {r} has two {variant} maps ({files[groups[r][variant]]} and "
                f"{files[m]}): a realisation has one map of each variant; correct their labels "
                f"or realisations in raw/{MANIFEST}"
            )
        groups[r][variant] = m
    incomplete = {r: [n for n in names if n not in g] for r, g in groups.items()}
    incomplete = {r: miss for r, miss in incomplete.items() if miss}
    if incomplete:
        shown = "; ".join(f"realisation {r} lacks {', '.join(v)}" for r, v in incomplete.items())
        raise ValueError(
            f"{len(incomplete)} of {len(groups)} realisations miss variants in this split "
            f"({_listing(shown.split('; '), '; ')}): every realisation needs {', '.join(names)}; "
            f"simulate the missing maps, or drop the incomplete realisations from raw/{MANIFEST} "
            "(all variants of one realisation belong in one split)"
        )
    return groups


def _tidy(x: float) -> float:
    # 0.33 - 0.31 is 0.020000000000000018: keep 12 significant digits, as the designs do
    return float(f"{x:.12g}")


def _check_design(groups: dict, theta_of: np.ndarray, parameters: tuple, eps: float) -> tuple:
    """The fiducial point and the steps, float64 [p] each, checked in every realisation."""
    index = [PARAMETERS.index(a) for a in parameters]
    first = min(groups)
    theta = theta_of[groups[first]["fiducial"]][index]
    if not np.isfinite(theta).all():
        raise ValueError(
            f"the fiducial map of realisation {first} has no {' or '.join(parameters)} in "
            f"raw/{MANIFEST}: a Fisher design needs every map's parameters"
        )
    step = np.array(
        [
            _tidy(
                (theta_of[groups[first][f"{a}_plus"]][i] - theta_of[groups[first][f"{a}_minus"]][i])
                / 2
            )
            for a, i in zip(parameters, index)
        ]
    )
    tol = eps * max(1.0, float(np.abs(theta).max()))
    problems = []
    for r in sorted(groups):
        fid = theta_of[groups[r]["fiducial"]][index]
        if not np.allclose(fid, theta, rtol=0, atol=tol):
            problems.append(
                f"realisation {r}'s fiducial point is {fid.tolist()}, realisation {first}'s "
                f"{theta.tolist()} (one design has one fiducial point)"
            )
            continue
        for a, name in enumerate(parameters):
            for sign in (1, -1):
                variant = f"{name}_{'plus' if sign > 0 else 'minus'}"
                delta = (theta_of[groups[r][variant]][index] - fid) * sign
                expected = np.where(np.arange(len(parameters)) == a, step[a], 0.0)
                if not np.allclose(delta, expected, rtol=0, atol=tol):
                    at = theta_of[groups[r][variant]][index].tolist()
                    problems.append(
                        f"realisation {r}: {variant} is at {at}, the fiducial at {fid.tolist()}, "
                        f"but should differ in {name} only, by {'+' if sign > 0 else '-'}"
                        f"{step[a]:g} (the step of realisation {first})"
                    )
    if problems:
        raise ValueError(
            f"the Fisher design is inconsistent ({_listing(problems, '; ')}); every "
            "realisation needs the same fiducial point and twins at exactly fiducial +- the "
            f"same step of one parameter: correct omega_m / sigma_8 in raw/{MANIFEST}"
        )
    if not (step > 0).all():
        raise ValueError(
            f"the steps must be positive, got {dict(zip(parameters, step.tolist()))}: "
            "'<parameter>_plus' maps are at the larger value of the parameter"
        )
    return theta, step


def _listing(names: list, sep: str = ", ") -> str:
    shown = sep.join(map(str, names[:_LISTED]))
    return shown if len(names) <= _LISTED else f"{shown} and {len(names) - _LISTED} more"
