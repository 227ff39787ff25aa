"""Processing of a map collection into its processed folder (:class:`MapProcessor`): the maps
of every manifest row (its files and columns: the channels of one sample) are read
(:mod:`._map_readers`), masked alike (a pixel unobserved in one channel is unobserved in all),
prepared channel by channel (:func:`prepare_map`: mean removal, smoothing, resampling, nested
ordering), given the observed pixels of the degrading rule (:mod:`._map_masks`) and cut into
nested patches; the patches observed enough to keep go through ``pre_filter``/``pre_transform``
to the :class:`~pyg_sphere.datasets._patch_writer.SplitWriter`, and ``meta.json``, the marker of
a complete folder, is written last."""

from __future__ import annotations

import contextlib
import json
import os.path as osp
import sys
import uuid
import warnings
from typing import Callable, Optional

import healpy as hp
import numpy as np
import torch
from torch_geometric.data import Data

from .._io import atomic_write_text
from ._manifest import MANIFEST, SPLITS, class_index, read_manifest, where, where_file
from ._map_masks import combined_observed, footprint_log, observed_after, observed_fraction
from ._map_readers import read_channels
from ._patch_writer import SplitWriter, invalidate
from ._processed_folder import raw_fingerprint

_LISTED = 10  # maps named in a warning or error before "... and n more"
_ZEROS = 0.01  # a map with this fraction of its pixels exactly 0 may hold a mask written as 0
# The warnings below name the line that constructs the dataset: ConvergenceMaps.__init__ ->
# process_once -> ConvergenceMaps.process -> MapProcessor.run -> the method that warns.
_CALLER = 6


class MapProcessor:
    """Writes the processed folder of the maps listed in ``raw_dir/manifest.csv``, with the
    options of :func:`~pyg_sphere.datasets._processed_folder.processing_options` (and the
    ``pre_transform``/``pre_filter`` they name): see :class:`~pyg_sphere.datasets.ConvergenceMaps`
    for what it does to each map."""

    def __init__(
        self,
        raw_dir: str,
        options: dict,
        pre_transform: Optional[Callable] = None,
        pre_filter: Optional[Callable] = None,
        log: bool = False,
    ):
        self.raw_dir, self.options = raw_dir, options
        self.pre_transform, self.pre_filter = pre_transform, pre_filter
        self.log = log
        masked = options.get("masked_value")
        self.masked_value = float(masked) if masked is not None else None
        self.fields = options["field"] if isinstance(options["field"], list) else [options["field"]]
        self.threshold = options.get("degrade_observed", 0.0)
        self.observed_channel = bool(options.get("observed_channel", False))

    def run(self, out: str) -> None:
        """Processes every map into the folder :obj:`out` (which must exist)."""
        invalidate(out)  # from here on nothing loads until meta.json is written again
        rows = self._read_rows()
        fingerprint = raw_fingerprint(self.raw_dir, rows)
        classes, class_to_idx = class_index(rows)
        maps_per_split = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
        values = len(rows[0]["files"]) * len(self.fields)  # channels read from the files
        upgraded: dict = {}  # native nside -> maps resampled to a higher nside
        masked = []  # maps without a patch observed enough to keep
        self.suspect: list = []  # channels: masked_value never occurs, or many exact zeros
        self.footprint: tuple = ([], [])  # observed fraction of every map, before and after
        with contextlib.ExitStack() as stack:  # temporaries renamed on success, else removed
            writer = SplitWriter(out, maps_per_split, stack, values, self.observed_channel)
            first, nside = None, None
            for map_id, row in enumerate(rows):
                maps, nest, counts, names = read_channels(
                    self.raw_dir, row, self.options["npy_nest"], self.fields, self.masked_value
                )
                self._note_masks(maps, counts, names)
                map_nside = hp.npix2nside(maps.shape[1])
                first = first or (map_nside, row)
                nside = self._target_nside(map_nside, row, first)
                if map_nside < nside:
                    upgraded.setdefault(map_nside, []).append(where(row))
                y = -1 if row["label"] is None else class_to_idx[row["label"]]
                if not self._add_map(writer, maps, nest, nside, row, map_id, y):
                    masked.append(row)
            if upgraded:
                self._warn_upgrade(nside, upgraded)
            self._warn_masks()
            self._check_observed(rows, masked)
            writer.close()
        writer.write_samples(osp.join(out, "samples.npz"))
        before, after = self.footprint
        if self.log and min(before) < 1:
            print(footprint_log(before, after, nside, self.threshold), file=sys.stderr)
        meta = {
            "options": self.options,
            "raw": fingerprint,
            "nside": int(nside),
            "order": self.options["order"],
            "files": [r["file"] for r in rows],
            "classes": classes,
            "num_samples": writer.count,
            "channels": writer.channels,
            "map_std": writer.map_std(),
            "channel_std": writer.channel_std(),
            "footprint": {"raw": float(np.mean(before)), "processed": float(np.mean(after))},
            "build": uuid.uuid4().hex,
        }
        atomic_write_text(osp.join(out, "meta.json"), json.dumps(meta, indent=1))  # last

    def _read_rows(self) -> list[dict]:
        """The manifest's rows; fails on a missing file before any map is processed."""
        rows = read_manifest(
            osp.join(self.raw_dir, MANIFEST),
            self.options["split_fractions"],
            self.options["split_seed"],
        )
        for row in rows:
            for i, file in enumerate(row["files"]):
                if not osp.isfile(osp.join(self.raw_dir, file)):
                    several = len(row["files"]) > 1
                    raise FileNotFoundError(
                        f"{where_file(row, i)}: file not found in {self.raw_dir}"
                        + (
                            "; every file of a row is a channel of its sample: add the file, "
                            "correct its path in the 'file' cell, or remove the row"
                            if several
                            else ""
                        )
                    )
        return rows

    def _target_nside(self, map_nside: int, row: dict, first: tuple) -> int:
        """The nside a map is resampled to; checks it against the patch order and, without a
        target nside, against the first map's."""
        nside, order = self.options["nside"], self.options["order"]
        if nside is None and map_nside != first[0]:
            raise ValueError(
                f"maps of different nside without a target nside: {where(row)} has "
                f"nside {map_nside}, {where(first[1])} has {first[0]}; pass nside= "
                "to resample all maps to one resolution"
            )
        target = nside or map_nside
        if order > target:
            raise ValueError(f"order {order} is larger than the nside {target} of {where(row)}")
        return target

    def _add_map(
        self, writer, maps: np.ndarray, nest: bool, nside: int, row: dict, map_id: int, y: int
    ) -> int:
        """Prepares the channels of one sample (of class index :obj:`y`) on their common mask,
        cuts them into patches and hands the kept ones to :obj:`writer`; returns how many were
        observed enough to keep (before ``pre_filter``)."""
        seen_raw = combined_observed(maps)
        if len(maps) > 1 and not seen_raw.any():
            raise ValueError(
                f"{where(row)}: no pixel is observed in every channel (a pixel unobserved in "
                "one channel is unobserved in all): check the masks of its files and columns"
            )
        channels = []
        for m in maps:
            m[~seen_raw] = hp.UNSEEN
            try:
                channels.append(prepare_map(m, nest, nside, self.options["smoothing_arcmin"]))
            except ValueError as e:
                raise ValueError(f"{where(row)}: {e}") from e
        fraction = observed_fraction(seen_raw, nest, nside)
        observed = observed_after(fraction, self.threshold)
        self.footprint[0].append(float(seen_raw.mean()))
        self.footprint[1].append(float(observed.mean()))
        patches = writer.patches(nside, self.options["order"])  # nested: patch j is a block
        if self.observed_channel:
            channels.append(np.where(observed, fraction, 0.0))
        values = np.stack(channels, axis=-1).reshape(len(patches), patches.shape[1], -1)
        observed = observed.reshape(patches.shape)
        values[~observed] = 0.0  # [patches, N, C]
        kept = 0
        for patch_id, (x, seen) in enumerate(zip(values, observed)):
            if seen.mean() < self.options["min_observed"]:
                continue
            kept += 1
            fields = (y, row["omega_m"], row["sigma_8"], map_id, patch_id)
            if self.pre_filter is not None or self.pre_transform is not None:
                x = self._pre(x, fields)
                if x is None:
                    continue
            writer.add(row["split"], x, seen, fields)
        return kept

    def _pre(self, x: np.ndarray, fields: tuple) -> Optional[np.ndarray]:
        """Runs ``pre_filter``/``pre_transform`` on one patch [N, C] (its sample fields as
        :data:`~pyg_sphere.datasets._patch_writer.FIELDS`); ``None`` drops it."""
        shape = x.shape
        y, omega_m, sigma_8, map_id, patch_id = fields
        data = Data(
            x=torch.from_numpy(x.astype(np.float32)),
            y=torch.tensor([y]),
            omega_m=torch.tensor([omega_m], dtype=torch.float32),
            sigma_8=torch.tensor([sigma_8], dtype=torch.float32),
            map_id=torch.tensor([map_id]),
            patch_id=torch.tensor([patch_id]),
        )
        if self.pre_filter is not None and not self.pre_filter(data):
            return None
        if self.pre_transform is not None:
            data = self.pre_transform(data)
            if tuple(data.x.shape) != shape:
                raise ValueError(
                    f"pre_transform must keep x of shape {list(shape)}, got {list(data.x.shape)}"
                )
        return data.x.detach().cpu().numpy()

    def _note_masks(self, maps: np.ndarray, counts: np.ndarray, names: list) -> None:
        """Notes the channels whose mask may be wrong: ``masked_value`` never occurs, or
        (without ``masked_value``) many pixels are exactly 0, as a mask written as 0 is."""
        for count, name in zip(counts, names):
            if self.masked_value is None and count >= _ZEROS * maps.shape[1]:
                self.suspect.append(f"{name} ({100 * count / maps.shape[1]:.1f}% zeros)")
            elif self.masked_value is not None and count == 0:
                self.suspect.append(name)

    def _warn_masks(self) -> None:
        if not self.suspect:
            return
        n, listing = len(self.suspect), _listing(self.suspect)
        s = "s" if n > 1 else ""
        if self.masked_value is None:
            text = (
                f"{n} map{s} have many pixels exactly 0: {listing}. They are read as data; if "
                "they mark unobserved pixels (a mask written as 0), pass masked_value=0 (only "
                "healpy.UNSEEN marks unobserved pixels by default)"
            )
        else:
            text = (
                f"masked_value={self.masked_value:g} never occurs in {n} map{s}: {listing}; "
                "they are read as observed wherever they are not healpy.UNSEEN. Pass the "
                "value that marks unobserved pixels in these files, or masked_value=None if "
                "they use healpy.UNSEEN"
            )
        warnings.warn(text, stacklevel=_CALLER)

    def _warn_upgrade(self, nside: int, upgraded: dict) -> None:
        n = sum(map(len, upgraded.values()))
        lowest = min(upgraded)
        groups = "; ".join(f"nside {k}: {_listing(v)}" for k, v in sorted(upgraded.items()))
        warnings.warn(
            f"nside={nside} is higher than the nside of {n} map{'s' if n > 1 else ''} ({groups}):"
            " they are upgraded with healpy.ud_grade, which invents no information (each pixel "
            f"is repeated); pass the maps' nside (nside={lowest}), or nside=None to keep the "
            "maps' own",
            stacklevel=_CALLER,
        )

    def _check_observed(self, rows: list, masked: list) -> None:
        """Raises if every map of a split lacks a patch observed enough to keep; else warns
        about the maps that lack one (patches dropped by ``pre_filter`` are wanted: no word)."""
        threshold = f"min_observed={self.options['min_observed']}"
        masked_lines = {r["line"] for r in masked}
        for s in SPLITS:
            members = [r for r in rows if r["split"] == s]
            if members and all(r["line"] in masked_lines for r in members):
                n = len(members)
                raise ValueError(
                    f"no patch was kept for split '{s}': its {n} map{'s' if n > 1 else ''} in "
                    f"raw/{MANIFEST} ({_listing([where(r) for r in members])}) have no patch "
                    f"with at least {threshold} of its pixels observed; lower min_observed (e.g. "
                    "0.9: patches that touch the mask are kept, their unobserved pixels set to "
                    "0) or check the maps' mask (unobserved pixels are healpy.UNSEEN)"
                )
        if masked:
            n = len(masked)
            warnings.warn(
                f"{n} map{'s' if n > 1 else ''} contributed no patch, as none of their patches "
                f"has at least {threshold} of its pixels observed: "
                f"{_listing([where(r) for r in masked])}; lower min_observed or check these "
                "maps' mask (unobserved pixels are healpy.UNSEEN)",
                stacklevel=_CALLER,
            )


def prepare_map(
    m: np.ndarray, nest: bool, nside: int, smoothing_arcmin: Optional[float] = None
) -> np.ndarray:
    """Mean removal, optional Gaussian smoothing, resampling to ``nside`` and nested ordering.

    Unobserved (``UNSEEN``) pixels stay ``UNSEEN``: the mean is taken over observed pixels and
    smoothing runs on the map with unobserved pixels set to 0 (the mean), then masks them again.

    Shapes:
        - **input:** m [12 nside_in^2] float64 in ring (``nest=False``) or nested ordering
        - **output:** [12 nside^2] float64, nested
    """
    bad = hp.mask_bad(m)
    if bad.all():
        raise ValueError("the map has no observed pixels (all UNSEEN)")
    m = m - m[~bad].mean()
    m[bad] = 0.0
    if smoothing_arcmin:
        # No download: healpy's pixel weights and window functions are never used here.
        fwhm = np.radians(smoothing_arcmin / 60.0)
        m = hp.smoothing(m, fwhm=fwhm, nest=nest, use_pixel_weights=False)
    m[bad] = hp.UNSEEN
    if hp.npix2nside(m.size) != nside:
        m = hp.ud_grade(m, nside, order_in="NEST" if nest else "RING", order_out="NEST")
    elif not nest:
        m = hp.reorder(m, r2n=True)
    return m


def _listing(names: list[str]) -> str:
    """Names the first :data:`_LISTED` entries of :obj:`names`, then counts the others."""
    shown = ", ".join(names[:_LISTED])
    return shown if len(names) <= _LISTED else f"{shown} and {len(names) - _LISTED} more"
