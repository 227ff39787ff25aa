"""Readers of the raw maps of a collection: HEALPix maps in FITS files (through healpy) and in
numpy arrays (``.npy``, ``.npz``), each checked to be a finite 1-D map of a power-of-2 nside
whose values fit the float32 storage of the processed folder. Every error names the file and
its line in the manifest."""

from __future__ import annotations

import os.path as osp
import warnings

import healpy as hp
import numpy as np

from ._manifest import where

FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz")
NPY_SUFFIXES = (".npy", ".npz")
# Larger values would overflow the float32 storage (mean removal can double them).
MAX_ABS_VALUE = 1e37


def read_map(
    path: str, row: dict, npy_nest: bool = False, field: int = 0
) -> tuple[np.ndarray, bool]:
    """Reads one full-sky or partial HEALPix map.

    FITS goes through healpy, reads column :obj:`field` (0: the first map column; a partial
    file's pixel-index column does not count) and keeps the ordering of its ``ORDERING``
    keyword; ``.npy`` holds one 1-D array and ``.npz`` a single array (or one named ``map``),
    in the ordering given by ``npy_nest``. Unobserved pixels are expected as ``healpy.UNSEEN``.
    Every error names the file and its manifest line (:obj:`row`, as
    :func:`~pyg_sphere.datasets._manifest.read_manifest` returns it).

    Returns:
        ``(m, nest)``: the map as float64 [12 nside^2] (nside a power of 2) and whether it is
        nested.
    """
    name = row["file"].lower()
    if not osp.isfile(path):
        raise FileNotFoundError(f"{where(row)}: file not found at {path}")
    if name.endswith(FITS_SUFFIXES):
        m, nest = _read_fits(path, row, field)
    elif name.endswith(NPY_SUFFIXES):
        m, nest = _read_npy(path, row), bool(npy_nest)
        if field != 0:
            raise ValueError(
                f"{where(row)}: field={field}, but a numpy map has 1 column (field 0); field= "
                "selects a column of FITS files: pass field=0 for numpy maps"
            )
    else:
        raise ValueError(
            f"{where(row)}: unsupported file type; use FITS "
            f"({', '.join(FITS_SUFFIXES)}) or numpy (.npy, .npz)"
        )
    return _check_map(np.asarray(m), row), nest


def _read_fits(path: str, row: dict, field: int = 0) -> tuple[np.ndarray, bool]:
    from astropy.io import fits  # healpy's own FITS reader

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy's truncation warning; we raise instead
            with fits.open(path) as hdul:
                table = hdul[1]
                names = list(table.columns.names)
                if str(table.header.get("INDXSCHM", "")).strip().upper() == "EXPLICIT":
                    names = names[1:]  # the pixel ids of a partial map
            if field < len(names):
                m, header = hp.read_map(path, field=field, nest=None, h=True)
    except Exception as e:
        raise ValueError(
            f"{where(row)} could not be read as a HEALPix FITS map ({type(e).__name__}: {e}); "
            "the file is probably truncated or corrupt: write it again, e.g. with "
            "healpy.write_map"
        ) from e
    if field >= len(names):
        n = len(names)
        raise ValueError(
            f"{where(row)}: field={field}, but the file has {n} map column{'s' if n != 1 else ''} "
            f"({', '.join(names)}): pass field= between 0 and {n - 1}"
        )
    ordering = str(dict(header).get("ORDERING", "RING")).strip().upper()
    return m, ordering.startswith("NEST")


def _read_npy(path: str, row: dict) -> np.ndarray:
    try:
        m = np.load(path, allow_pickle=False)
        if isinstance(m, np.lib.npyio.NpzFile):
            with m:
                keys = list(m.keys())
                if len(keys) != 1 and "map" not in keys:
                    raise ValueError(f"holds arrays {keys}: keep one, or name the map 'map'")
                m = m["map" if "map" in keys else keys[0]]
    except Exception as e:
        raise ValueError(
            f"{where(row)} could not be read as a numpy map ({type(e).__name__}: {e})"
        ) from e
    return m


def _check_map(m: np.ndarray, row: dict) -> np.ndarray:
    """Returns the map as float64; raises unless it is a finite 1-D HEALPix map of a
    power-of-2 nside with values that fit the float32 storage."""
    if m.ndim != 1 or not hp.isnpixok(m.size):
        raise ValueError(
            f"{where(row)}: a HEALPix map has 12*nside^2 values (nside a power of 2), "
            f"got shape {tuple(m.shape)}"
        )
    nside = hp.npix2nside(m.size)
    if nside & (nside - 1):
        raise ValueError(
            f"{where(row)}: the map has nside {nside} ({m.size} = 12*{nside}^2 values), but "
            "only a power of 2 (1, 2, 4, 8, ...) can be cut into nested patches; resample "
            "the map to a power-of-2 nside (e.g. with healpy.map2alm and healpy.alm2map)"
        )
    if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
        raise ValueError(f"{where(row)}: map values have dtype {m.dtype}, expected real numbers")
    m = m.astype(np.float64)
    if not np.isfinite(m).all():
        bad = int((~np.isfinite(m)).sum())
        raise ValueError(
            f"{where(row)}: {bad} pixels are NaN or infinite; mark unobserved pixels "
            "with healpy.UNSEEN instead"
        )
    values = m[~hp.mask_bad(m)]
    if values.size and np.abs(values).max() > MAX_ABS_VALUE:
        raise ValueError(
            f"{where(row)}: values up to {np.abs(values).max():.3g} do not fit the float32 "
            f"storage (|value| <= {MAX_ABS_VALUE:g}); is the file corrupt, or in other units?"
        )
    return m
