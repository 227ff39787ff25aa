"""The manifest of a map collection, ``raw/manifest.csv``: its columns, reader and writer.

One row per map: ``file`` (relative to ``raw/``) is required; ``label`` (the map's class: an
integer or any string), ``omega_m``, ``sigma_8`` and ``split`` (one of :data:`SPLITS`) are
optional; other columns are ignored. A row whose sample is made of several maps (one per
tomographic bin: the channels of one sample) lists them in its ``file`` cell separated by
:data:`FILE_SEPARATOR` (``bin0.fits;bin1.fits``); every row lists the same number of files.
A manifest without a ``label`` column describes maps without classes (regression of the
parameters): every row's label is ``None``. The file is UTF-8 (a byte-order mark, as
spreadsheets write it, is accepted). The simulators
(:func:`~pyg_sphere.datasets.simulate_convergence_maps`, and the designs of
:mod:`~pyg_sphere.datasets.designs`) write it and :class:`~pyg_sphere.datasets.ConvergenceMaps`
reads it.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import os.path as osp
import re
from typing import Iterable, Sequence

import numpy as np

from .._io import atomic_open

#: The splits of a collection, in order.
SPLITS = ("train", "val", "test")
#: File name of the manifest inside ``raw/``.
MANIFEST = "manifest.csv"
#: Header of the manifest as written by the simulator.
MANIFEST_COLUMNS = ("file", "label", "omega_m", "sigma_8", "split")

#: Separates the files of one row (the channels of one sample) in the ``file`` cell.
FILE_SEPARATOR = ";"

_INTEGER = re.compile(r"[+-]?[0-9]+")


def where(row: dict) -> str:
    """Names a manifest row in error messages."""
    return f"'{row['file']}' (raw/{MANIFEST} line {row['line']})"


def where_file(row: dict, i: int) -> str:
    """Names file :obj:`i` of a manifest row in error messages (the row itself when it lists
    one file)."""
    files = row.get("files") or [row["file"]]
    if len(files) == 1:
        return where(row)
    return f"'{files[i]}' (file {i + 1} of {len(files)} on raw/{MANIFEST} line {row['line']})"


def check_split_fractions(split_fractions) -> tuple[float, float, float]:
    """Returns (train, val, test) fractions as floats; raises unless they are three finite
    non-negative numbers summing to 1."""
    try:
        fractions = tuple(float(f) for f in split_fractions)
    except (TypeError, ValueError):
        raise ValueError(
            f"split_fractions must be three numbers (train, val, test), got {split_fractions!r}"
        ) from None
    if (
        len(fractions) != 3
        or not all(math.isfinite(f) and f >= 0 for f in fractions)
        or abs(sum(fractions) - 1) > 1e-6
    ):
        raise ValueError(
            "split_fractions must be three non-negative numbers (train, val, test) "
            f"summing to 1, got {split_fractions!r}"
        )
    return fractions  # type: ignore[return-value]


def write_manifest(
    path, rows: Iterable[Sequence], columns: Sequence[str] = MANIFEST_COLUMNS
) -> None:
    """Writes the header :obj:`columns` (default :data:`MANIFEST_COLUMNS`) and :obj:`rows` to
    :obj:`path` atomically."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)


def read_manifest(
    path: str, split_fractions: Sequence[float] = (0.8, 0.1, 0.1), split_seed: int = 0
) -> list[dict]:
    """Reads and validates a manifest; assigns a split to every map.

    Labels are integers when every label of the file is one (``-1``, ``7``), else strings
    (``lcdm``, ``0.3``), and ``None`` for every row when the file has no ``label`` column.
    Without a ``split`` column, the maps of each class (all maps, without labels) are split
    by a permutation seeded with :obj:`split_seed`, in the proportions
    :obj:`split_fractions` (train, val, test).

    Returns:
        One dict per map, in manifest order, with keys ``file`` (the cell as written),
        ``files`` (the paths it lists, split at :data:`FILE_SEPARATOR`; the same number in
        every row), ``line`` (line number in the
        file where the row starts, header = 1), ``label`` (int or str, the same type for all
        rows, or ``None`` for all), ``omega_m``, ``sigma_8`` (float, NaN when absent) and
        ``split``.
    """
    header, raw_rows = _read_csv(path)
    rows, seen = [], {}
    for line, values in raw_rows:
        row = _parse_row(line, values, header)
        for i, name in enumerate(row["files"]):
            key = osp.normpath(name)  # 'a.fits' and './a.fits' are one file
            if key in seen:
                also = "in this row" if seen[key] == line else f"also on line {seen[key]}"
                raise ValueError(
                    f"{where_file(row, i)} is listed twice ({also}): "
                    "each map may appear once, or its patches could land in two splits"
                )
            seen[key] = line
        if rows and len(row["files"]) != len(rows[0]["files"]):
            n, first = len(row["files"]), rows[0]
            raise ValueError(
                f"{where(row)} lists {n} file{'s' if n > 1 else ''} but {where(first)} lists "
                f"{len(first['files'])}: every row must list the same files, one per channel "
                f"(e.g. one per tomographic bin, in the same order), separated by "
                f"'{FILE_SEPARATOR}'"
            )
        rows.append(row)
    if "label" in header and all(_INTEGER.fullmatch(r["label"]) for r in rows):
        for r in rows:
            r["label"] = int(r["label"])
    if "split" not in header:
        _assign_splits(rows, split_fractions, split_seed)
    return rows


def _read_csv(path: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """The header and the (line number, stripped values) of every non-empty row."""
    if not osp.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: put the maps in {osp.dirname(path)} with a {MANIFEST} listing "
            "them (header: file[,label,omega_m,sigma_8,split])"
        )
    with open(path, "rb") as f:
        content = f.read()
    start = len(codecs.BOM_UTF8) if content.startswith(codecs.BOM_UTF8) else 0  # spreadsheets
    try:
        text = content[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        line = content[: start + e.start].count(b"\n") + 1
        raise ValueError(
            f"raw/{MANIFEST} line {line} ({path}) is not valid UTF-8 text ({e.reason} at byte "
            f"{start + e.start}): save the manifest as UTF-8 CSV"
        ) from None
    records = _records(io.StringIO(text, newline=""), path)
    if not records:
        raise ValueError(f"{path} is empty: its first line must be the header file,label,...")
    header = [h.strip() for h in records[0][1]]
    if "file" not in header:
        raise ValueError(
            f"{path}: the header must name the columns 'file' and 'label' (or 'file' alone, "
            f"for maps without classes; optional: omega_m, sigma_8, split), found {header}; "
            "missing 'file'"
        )
    twice = sorted({h for h in header if h and header.count(h) > 1})
    if twice:
        raise ValueError(
            f"{path}: the header names {', '.join(map(repr, twice))} twice; name each column once"
        )
    rows = []
    for line, values in records[1:]:
        if len(values) > len(header):
            raise ValueError(
                f"raw/{MANIFEST} line {line} has {len(values)} values but the header names "
                f'{len(header)} columns: quote values that contain commas ("a,b.fits")'
            )
        values = values + [""] * (len(header) - len(values))  # trailing empty values omitted
        rows.append((line, {h: v.strip() for h, v in zip(header, values) if h}))
    if not rows:
        raise ValueError(f"{path} lists no maps: add one row per map (file,label,...)")
    return header, rows


def _records(f, path: str) -> list[tuple[int, list[str]]]:
    """The (first line, values) of every non-empty CSV record of :obj:`f`; a quoted value may
    span lines."""
    reader = csv.reader(f)
    out, end = [], 0
    try:
        for values in reader:
            start, end = end + 1, reader.line_num
            if values and any(v.strip() for v in values):
                out.append((start, values))
    except csv.Error as e:
        raise ValueError(
            f"raw/{MANIFEST} line {reader.line_num} ({path}) is not valid CSV: {e}"
        ) from None
    for line, values in out:
        if any("\x00" in v for v in values):
            raise ValueError(
                f"raw/{MANIFEST} line {line} ({path}) holds a NUL character: the file is "
                "binary or in another encoding than UTF-8; save it as UTF-8 CSV"
            )
    return out


def _parse_row(line: int, values: dict, header: list[str]) -> dict:
    row = {"file": values["file"], "line": line}
    if not row["file"]:
        raise ValueError(f"raw/{MANIFEST} line {line}: empty 'file' entry")
    row["files"] = [f.strip() for f in row["file"].split(FILE_SEPARATOR)]
    if not all(row["files"]):
        raise ValueError(
            f"{where(row)}: an empty path between '{FILE_SEPARATOR}' separators; list the "
            f"files of a row as 'bin0.fits{FILE_SEPARATOR}bin1.fits', each one non-empty"
        )
    if "label" in header:
        label = values["label"]
        if label == "":
            raise ValueError(
                f"{where(row)}: missing label; give every map its class, or drop the label "
                "column for maps without classes"
            )
        row["label"] = label
    else:
        row["label"] = None
    for key in ("omega_m", "sigma_8"):
        value = values.get(key, "")
        try:
            row[key] = float(value) if value != "" else float("nan")
        except ValueError:
            raise ValueError(f"{where(row)}: {key} {value!r} is not a number") from None
    if "split" in header:
        if values["split"] not in SPLITS:
            raise ValueError(f"{where(row)}: split {values['split']!r} is not one of {SPLITS}")
        row["split"] = values["split"]
    return row


def class_index(rows: list[dict]) -> tuple[list, dict]:
    """The classes of a manifest's rows in sorted order (integers numerically, strings
    lexicographically) and the map from each label to its index 0 ... C-1 (none when the
    manifest has no labels)."""
    classes = sorted({r["label"] for r in rows if r["label"] is not None})
    return classes, {c: i for i, c in enumerate(classes)}


def _assign_splits(rows: list[dict], split_fractions: Sequence[float], split_seed: int) -> None:
    fractions = np.asarray(split_fractions, dtype=float)
    rng = np.random.default_rng(split_seed)
    for label in class_index(rows)[0] or [None]:  # without labels: all maps, one group
        members = [r for r in rows if r["label"] == label]
        n = len(members)
        n_val, n_test = (int(round(f * n)) for f in fractions[1:])
        n_test = min(n_test, n)
        n_val = min(n_val, n - n_test)
        names = ["test"] * n_test + ["val"] * n_val + ["train"] * (n - n_test - n_val)
        for r, i in zip(members, rng.permutation(n)):
            r["split"] = names[i]
