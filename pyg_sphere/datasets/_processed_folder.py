"""The processed folder of a :class:`~pyg_sphere.datasets.ConvergenceMaps`,
``root/processed/<name>/``: the options that name it (:func:`processing_options`,
:func:`variant`, :func:`folder_name`), whether it is complete and up to date with the raw data
(its ``meta.json`` and a fingerprint of the raw files, :func:`raw_fingerprint`), and the lock
under which one process fills it while the others wait (:func:`process_once`).

A folder is complete when its ``meta.json`` exists: it is written last, and removed first when
the folder is processed again."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import os.path as osp
import re
import sys
import warnings
from typing import TYPE_CHECKING, Optional

import torch
from filelock import FileLock, Timeout

from .._io import atomic_open
from .._validate import check_int, check_nside, check_positive
from ._manifest import MANIFEST, check_split_fractions, read_manifest
from ._map_masks import DEGRADE_OBSERVED

if TYPE_CHECKING:
    from .convergence_maps import ConvergenceMaps

# Bump when the processed content changes: the version is part of the folder key, so folders of
# an older format are never read (2: y holds class indices, not the manifest's labels; 3:
# channels, masked_value and the degrading rule of the observed pixels).
FORMAT_VERSION = 3
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# ----- the key: options and variant -------------------------------------------------------------
def processing_options(
    nside,
    order,
    field,
    smoothing_arcmin,
    npy_nest,
    min_observed,
    split_fractions,
    split_seed,
    masked_value=None,
    observed_channel=False,
    degrade_observed=DEGRADE_OBSERVED,
) -> dict:
    """Validates the options that shape the processed data; returns them as a JSON-able dict
    (its hash names the processed folder)."""
    if nside is not None:
        nside = check_nside(nside)
    order = check_nside(order, name="order")
    if nside is not None and order > nside:
        raise ValueError(f"order must be a power of 2 no larger than nside ({nside}), got {order}")
    if smoothing_arcmin is not None:
        smoothing_arcmin = check_positive("smoothing_arcmin", smoothing_arcmin)
    if not 0.0 < min_observed <= 1.0:
        raise ValueError(f"min_observed must be in (0, 1], got {min_observed!r}")
    if (
        isinstance(degrade_observed, bool)
        or not isinstance(degrade_observed, numbers.Real)
        or not 0.0 <= degrade_observed <= 1.0
    ):
        raise ValueError(
            "degrade_observed must be a number in [0, 1] (the observed fraction of its children "
            f"that keeps a pixel of the lower nside observed), got {degrade_observed!r}"
        )
    return {
        "format": FORMAT_VERSION,
        "nside": nside,
        "order": order,
        "field": _check_field(field),
        "smoothing_arcmin": smoothing_arcmin,
        "npy_nest": bool(npy_nest),
        "min_observed": float(min_observed),
        "split_fractions": check_split_fractions(split_fractions),
        "split_seed": check_int("split_seed", split_seed, 0),
        "masked_value": _check_masked_value(masked_value),
        "observed_channel": bool(observed_channel),
        "degrade_observed": float(degrade_observed),
    }


def _check_field(field):
    """``field`` as an int, or as a list of ints for several columns."""
    if isinstance(field, (list, tuple)) and not isinstance(field, str):
        if not field:
            raise ValueError("field must name at least one column, e.g. field=(0, 1)")
        return [check_int("field", f, 0) for f in field]
    try:
        return check_int("field", field, 0)
    except (TypeError, ValueError) as e:
        raise type(e)(
            f"field must be an integer >= 0 or a tuple of them (healpy's field=(0, 1, ...)), "
            f"got {field!r}"
        ) from None


def _check_masked_value(value):
    """``masked_value`` as ``None``, a finite float, or ``'nan'`` (JSON has no NaN, and NaN is
    not equal to itself, which would make every folder look out of date)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isinf(value):
        raise ValueError(
            "masked_value must be a finite number or NaN (the value that marks unobserved "
            f"pixels in the files, e.g. 0), or None for healpy.UNSEEN alone; got {value!r}"
        )
    return "nan" if math.isnan(value) else float(value)


def variant(pre_transform, pre_filter, name: Optional[str]) -> dict:
    """The part of the folder key that tells processing variants apart: the ``repr`` of
    ``pre_transform`` and ``pre_filter`` (refused when it holds a memory address, unless
    ``name`` is given) and ``name``."""
    if name is not None and not (isinstance(name, str) and _NAME.fullmatch(name)):
        raise ValueError(
            f"name must be a non-empty string of letters, digits, '.', '_' and '-' (it names "
            f"a folder), got {name!r}"
        )
    out = {}
    for key, fn in (("pre_transform", pre_transform), ("pre_filter", pre_filter)):
        text = "None" if fn is None else repr(fn)
        if name is None and _ADDRESS.search(text):
            raise ValueError(
                f"{key}={text} has no stable repr (it holds a memory address), so it cannot "
                f"tell its processed data apart from another {key}'s: pass name='...' to name "
                f"this processed variant, or give the callable a stable __repr__ (e.g. make it "
                f"a torch_geometric.transforms.BaseTransform)"
            )
        out[key] = _ADDRESS.sub("", text)
    if name is not None:
        out["name"] = name
    return out


def folder_name(options: dict) -> str:
    """``nside<nside or 'native'>_order<order>_[<name>_]<hash of the options>``, from the
    options of :func:`processing_options` and :func:`variant`."""
    digest = hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]
    label = f"{options['name']}_" if "name" in options else ""
    return f"nside{options['nside'] or 'native'}_order{options['order']}_{label}{digest}"


# ----- complete and up to date ------------------------------------------------------------------
def read_meta(folder: str) -> Optional[dict]:
    """The ``meta.json`` of :obj:`folder` (``None``: the folder is not complete)."""
    try:
        with open(osp.join(folder, "meta.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def raw_fingerprint(raw_dir: str, rows: Optional[list] = None) -> Optional[dict]:
    """Content hash of the manifest and size/mtime of every raw file it lists (``None``
    without a manifest; no file list when the manifest cannot be read). :obj:`rows`: the
    manifest's rows, when they have been read already."""
    path = osp.join(raw_dir, MANIFEST)
    if not osp.isfile(path):
        return None
    with open(path, "rb") as f:
        content = f.read()
    if rows is None:
        try:
            rows = read_manifest(path)
        except ValueError:
            return {"manifest_sha1": hashlib.sha1(content).hexdigest(), "files": None}
    stats = {}
    for r in rows:
        for file in r["files"]:
            full = osp.join(raw_dir, file)
            if osp.isfile(full):
                st = os.stat(full)
                stats[file] = [st.st_size, st.st_mtime_ns]
    return {"manifest_sha1": hashlib.sha1(content).hexdigest(), "files": stats}


def is_up_to_date(dataset: ConvergenceMaps, warn: bool) -> bool:
    """Whether the dataset's processed folder is complete, of its options and of the current
    raw data (warns, if :obj:`warn`, when only the raw data changed)."""
    meta = read_meta(dataset.processed_dir)
    options = json.loads(json.dumps(dataset.options))  # as stored: tuples become lists
    if meta is None or meta.get("options") != options:
        return False
    if not all(osp.isfile(p) for p in dataset.processed_paths):
        return False
    fingerprint = raw_fingerprint(dataset.raw_dir)
    if fingerprint is None or meta.get("raw") == fingerprint:
        return True  # raw data removed: keep using the processed copy
    if warn:
        warnings.warn(
            f"the raw data in {dataset.raw_dir} changed since it was processed into "
            f"{dataset.processed_dir}: processing it again",
            stacklevel=4,  # the caller of ConvergenceMaps(...), through process_once
        )
    return False


# ----- processing under a lock, once ------------------------------------------------------------
def process_once(dataset: ConvergenceMaps) -> None:
    """Runs ``dataset.process()`` unless its processed folder is complete and up to date (or,
    with ``dataset.force_reload``, unless another process reprocessed it meanwhile).

    Every process that constructs the dataset (every rank of a distributed job) runs this at
    once, so the check is repeated under a lock (``processed/<folder>.lock``): one process
    processes while the others wait, then find the folder complete and load it. After
    processing it records ``pre_transform.pt`` and ``pre_filter.pt`` in the folder, as PyG
    does."""
    folder = dataset.processed_dir
    if not dataset.force_reload and is_up_to_date(dataset, warn=False):
        return  # complete: read without the lock (the folder may be read-only)
    seen = _build_id(folder)
    os.makedirs(osp.dirname(folder), exist_ok=True)
    lock = FileLock(folder + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if dataset.log:
            print(f"Waiting for another process to process {folder}", file=sys.stderr)
        lock.acquire()
    try:
        if dataset.force_reload:
            # processed by another process since this one asked: that is the reload
            build = _build_id(folder)
            if build is not None and build != seen:
                return
        elif is_up_to_date(dataset, warn=True):
            return
        talk = dataset.log and "PYTEST_CURRENT_TEST" not in os.environ
        if talk:
            print("Processing...", file=sys.stderr)
        os.makedirs(folder, exist_ok=True)
        dataset.process()
        for key in ("pre_transform", "pre_filter"):  # PyG's record of the variant
            with atomic_open(osp.join(folder, f"{key}.pt"), "wb") as f:
                torch.save(dataset.options[key], f)
        if talk:
            print("Done!", file=sys.stderr)
    finally:
        lock.release()


def _build_id(folder: str) -> Optional[str]:
    """Identifies one run of the processing (``None``: no complete folder)."""
    meta = read_meta(folder)
    return None if meta is None else meta.get("build")
