"""Readers of the raw maps of a collection: HEALPix maps in FITS files (through healpy, one or
several columns) and in numpy arrays (``.npy``, ``.npz``), each checked to be a finite 1-D map
of a power-of-2 nside whose values fit the float32 storage of the processed folder, and the
files of one manifest row read together as the channels of one sample
(:func:`read_channels`). Every error names the file, its line in the manifest and, for
several columns, the column."""

from __future__ import annotations

import os.path as osp
import warnings

import healpy as hp
import numpy as np

from ._manifest import where, where_file

FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz")
NPY_SUFFIXES = (".npy", ".npz")
# Larger values would overflow the float32 storage (mean removal can double them).
MAX_ABS_VALUE = 1e37


def read_channels(
    raw_dir: str, row: dict, npy_nest: bool = False, field=0, masked_value=None
) -> tuple[np.ndarray, bool, np.ndarray, list[str]]:
    """Reads the maps of one manifest row: column(s) :obj:`field` of each of its files, in
    that order (file-major: file 0's columns, then file 1's, ...), as the channels of one
    sample.

    The files of a row must share nside and ordering, or the error names both files. Every
    error names the file, its manifest line (:obj:`row`, as
    :func:`~pyg_sphere.datasets._manifest.read_manifest` returns it) and, for several
    columns, the column.

    Returns:
        ``(maps, nest, counts, names)``: the maps as float64 [C, 12 nside^2] with
        ``healpy.UNSEEN`` at unobserved pixels (also where a map equals :obj:`masked_value`),
        whether they are nested, per channel the number of pixels equal to
        :obj:`masked_value` (of pixels exactly 0 when it is ``None``), and the channels' names
        for messages.
    """
    fields = [field] if isinstance(field, int) else list(field)
    maps, counts, names, first = [], [], [], None
    for i, file in enumerate(row["files"]):
        name = where_file(row, i)
        m, nest, c = read_map(osp.join(raw_dir, file), name, npy_nest, fields, masked_value)
        nside = hp.npix2nside(m.shape[1])
        if first is None:
            first = (name, nside, nest)
        elif (nside, nest) != first[1:]:
            raise ValueError(
                f"the files of {where(row)} disagree: {first[0]} has nside {first[1]}, "
                f"{_ordering(first[2])} ordering, but {name} has nside {nside}, "
                f"{_ordering(nest)} ordering; the files of a row are the channels of one sample "
                "and must share nside and ordering: write them at one nside (healpy.ud_grade) "
                "and one ordering (healpy.reorder)"
            )
        maps.append(m)
        counts.extend(c)
        names.extend(f"{name} column {f}" if len(fields) > 1 else name for f in fields)
    return np.concatenate(maps), first[2], np.asarray(counts), names


def read_map(
    path: str, name: str, npy_nest: bool = False, field=0, masked_value=None
) -> tuple[np.ndarray, bool, np.ndarray]:
    """Reads one full-sky or partial HEALPix file: one map, or several columns of a FITS file.

    FITS goes through healpy, reads the column(s) :obj:`field` (an int or a list of them; 0:
    the first map column; a partial file's pixel-index column does not count) and keeps the
    ordering of its ``ORDERING`` keyword; ``.npy`` holds one 1-D array and ``.npz`` a single
    array (or one named ``map``), in the ordering given by ``npy_nest``. Unobserved pixels are
    ``healpy.UNSEEN``, and also those equal to :obj:`masked_value` (any number, or NaN) when
    it is given. Every error starts with :obj:`name`, the file and its manifest line.

    Returns:
        ``(m, nest, counts)``: the map(s) as float64 [F, 12 nside^2] (nside a power of 2),
        whether they are nested and, per column, the pixels equal to :obj:`masked_value` (the
        pixels exactly 0 when it is ``None``).
    """
    fields = [field] if isinstance(field, int) else list(field)
    lower = path.lower()
    if not osp.isfile(path):
        raise FileNotFoundError(f"{name}: file not found at {path}")
    if lower.endswith(FITS_SUFFIXES):
        m, nest = _read_fits(path, name, fields)
    elif lower.endswith(NPY_SUFFIXES):
        m, nest = _read_npy(path, name), bool(npy_nest)
        if fields != [0]:
            raise ValueError(
                f"{name}: field={max(fields)}, but a numpy map has 1 column (field 0); field= "
                "selects columns of FITS files: pass field=0 for numpy maps, or list the maps "
                "of a sample as several files in the manifest ('a.npy;b.npy')"
            )
        m = [np.asarray(m)]  # one column, of any shape: checked below
    else:
        raise ValueError(
            f"{name}: unsupported file type; use FITS "
            f"({', '.join(FITS_SUFFIXES)}) or numpy (.npy, .npz)"
        )
    columns = len(m) > 1
    checked = [
        _check_map(np.asarray(c), f"{name}, column {f}" if columns else name, masked_value)
        for c, f in zip(m, fields)
    ]
    return np.stack([c for c, _ in checked]), nest, np.array([n for _, n in checked])


def _ordering(nest: bool) -> str:
    return "nested" if nest else "ring"


def _read_fits(path: str, name: str, fields: list) -> tuple[list, bool]:
    from astropy.io import fits  # healpy's own FITS reader

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy's truncation warning; we raise instead
            with fits.open(path) as hdul:
                table = hdul[1]
                names = list(table.columns.names)
                if str(table.header.get("INDXSCHM", "")).strip().upper() == "EXPLICIT":
                    names = names[1:]  # the pixel ids of a partial map
            if max(fields) < len(names):
                which = fields[0] if len(fields) == 1 else tuple(fields)
                m, header = hp.read_map(path, field=which, nest=None, h=True)
    except Exception as e:
        raise ValueError(
            f"{name} could not be read as a HEALPix FITS map ({type(e).__name__}: {e}); "
            "the file is probably truncated or corrupt: write it again, e.g. with "
            "healpy.write_map"
        ) from e
    if max(fields) >= len(names):
        n, bad = len(names), max(fields)
        raise ValueError(
            f"{name}: field={bad}, but the file has {n} map column{'s' if n != 1 else ''} "
            f"({', '.join(names)}): pass field= between 0 and {n - 1}"
        )
    ordering = str(dict(header).get("ORDERING", "RING")).strip().upper()
    return list(np.asarray(m).reshape(len(fields), -1)), ordering.startswith("NEST")


def _read_npy(path: str, name: str) -> np.ndarray:
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
            f"{name} could not be read as a numpy map ({type(e).__name__}: {e})"
        ) from e
    return m


def _check_map(m: np.ndarray, name: str, masked_value=None) -> tuple[np.ndarray, int]:
    """Returns the map as float64, with ``UNSEEN`` where it equals :obj:`masked_value`, and
    the number of such pixels (of pixels exactly 0 when :obj:`masked_value` is ``None``);
    raises unless it is a finite 1-D HEALPix map of a power-of-2 nside with values that fit
    the float32 storage."""
    if m.ndim != 1 or not hp.isnpixok(m.size):
        raise ValueError(
            f"{name}: a HEALPix map has 12*nside^2 values (nside a power of 2), "
            f"got shape {tuple(m.shape)}"
        )
    nside = hp.npix2nside(m.size)
    if nside & (nside - 1):
        raise ValueError(
            f"{name}: the map has nside {nside} ({m.size} = 12*{nside}^2 values), but "
            "only a power of 2 (1, 2, 4, 8, ...) can be cut into nested patches; resample "
            "the map to a power-of-2 nside (e.g. with healpy.map2alm and healpy.alm2map)"
        )
    if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
        raise ValueError(f"{name}: map values have dtype {m.dtype}, expected real numbers")
    if masked_value is None:
        hit = m == 0
    elif np.isnan(masked_value):
        hit = np.isnan(m)
    elif np.issubdtype(m.dtype, np.floating):  # compared in the file's precision
        hit = m == m.dtype.type(masked_value)
    else:
        hit = m == masked_value
    m = m.astype(np.float64)
    count = int(hit.sum())
    if masked_value is not None:
        m[hit] = hp.UNSEEN
    if not np.isfinite(m).all():
        bad = int((~np.isfinite(m)).sum())
        raise ValueError(
            f"{name}: {bad} pixels are NaN or infinite; mark unobserved pixels "
            "with healpy.UNSEEN instead, or pass masked_value=float('nan') if NaN marks them"
        )
    values = m[~hp.mask_bad(m)]
    if values.size and np.abs(values).max() > MAX_ABS_VALUE:
        raise ValueError(
            f"{name}: values up to {np.abs(values).max():.3g} do not fit the float32 "
            f"storage (|value| <= {MAX_ABS_VALUE:g}); is the file corrupt, or in other units?"
        )
    return m, count
