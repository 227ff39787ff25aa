"""The arrays of a processed folder: the kept patches of every split streamed into a float32
``.npy`` memory map per split (``train.npy``, ``val.npy``, ``test.npy``: [samples, N] for one
channel, as before channels existed, [samples, N, C] for several), and the
per-sample fields of every split in ``samples.npz`` (``{split}_{field}`` for each field of
:data:`FIELDS`). Every file is written under a temporary name and renamed into place
(:mod:`pyg_sphere._io`), so a reader never sees a partial array."""

from __future__ import annotations

import contextlib
import glob
import os
import os.path as osp

import numpy as np

from .._io import atomic_open, atomic_path
from ..graph import nested_patches
from ._manifest import SPLITS

FIELDS = ("y", "omega_m", "sigma_8", "map_id", "patch_id")  # per-sample fields, in order


def invalidate(out: str) -> None:
    """Removes ``meta.json`` (the marker of a complete folder) and the temporaries that an
    interrupted run may have left in :obj:`out`."""
    marker = osp.join(out, "meta.json")
    if osp.exists(marker):
        os.remove(marker)
    for path in glob.glob(osp.join(out, "*.part")) + glob.glob(osp.join(out, ".*.tmp*")):
        os.remove(path)


class SplitWriter:
    """Streams the kept patches of every split into a float32 ``.npy`` memory map under a
    temporary name (renamed into place when :obj:`stack` closes without error, removed
    otherwise), with their per-sample fields and the statistics of their observed pixels.

    A patch has :obj:`values` channels read from the maps, then the observed channel if
    :obj:`observed_channel`; the statistics are those of the map channels."""

    def __init__(
        self,
        out: str,
        maps_per_split: dict,
        stack: contextlib.ExitStack,
        values: int = 1,
        observed_channel: bool = False,
    ):
        self.out, self.maps_per_split, self.stack = out, maps_per_split, stack
        self.values = values
        self.observed_channel = bool(observed_channel)
        self.channels = values + self.observed_channel
        self.tmp: dict = {}  # split -> temporary path
        self.arrays: dict = {}  # split -> open memmap
        self.count = dict.fromkeys(SPLITS, 0)
        self.fields: dict = {s: [] for s in SPLITS}
        self.acc = {s: np.zeros((3, values)) for s in SPLITS}  # count, sum, sum of squares
        self._patches = None

    def patches(self, nside: int, order: int) -> np.ndarray:
        """Nested pixel ids of every patch, [12 o^2, N]; opens the memmaps on first call."""
        if self._patches is None:
            self._patches = nested_patches(nside, order).numpy()
            rows, size = self._patches.shape
            for s in SPLITS:
                self.tmp[s] = self.stack.enter_context(atomic_path(osp.join(self.out, f"{s}.npy")))
                shape = (self.maps_per_split[s] * rows, size)
                if self.channels > 1:
                    shape += (self.channels,)
                self.arrays[s] = np.lib.format.open_memmap(
                    self.tmp[s], mode="w+", dtype=np.float32, shape=shape
                )
            self.stack.callback(self.arrays.clear)  # runs first: unmap, then rename or remove
        return self._patches

    def add(self, split: str, x: np.ndarray, observed: np.ndarray, fields: tuple) -> None:
        """Appends patch :obj:`x` [N, C] (its :data:`FIELDS` in :obj:`fields`) to
        :obj:`split`; :obj:`observed` [N] flags its observed pixels."""
        self.arrays[split][self.count[split]] = x if self.channels > 1 else x[:, 0]
        self.count[split] += 1
        self.fields[split].append(fields)
        v = x[observed][:, : self.values]
        self.acc[split] += np.stack([np.full(self.values, len(v)), v.sum(0), np.square(v).sum(0)])

    def _moments(self) -> np.ndarray:
        """Count, sum and sum of squares per map channel, [3, values], of the observed pixels
        of the training split (of all splits when it is empty)."""
        total = self.acc["train"] if self.acc["train"][0, 0] > 0 else sum(self.acc.values())
        if total[0, 0] == 0:
            raise ValueError(
                "no patch was kept: every patch has fewer than min_observed of its pixels "
                "observed or was dropped by pre_filter; lower min_observed or keep more "
                "patches in pre_filter"
            )
        return total

    def map_std(self) -> float:
        """Standard deviation of the observed pixels of the training split (of all splits
        when it is empty), all map channels together."""
        count, total, squares = self._moments().sum(axis=1)
        mean = total / count
        return float(np.sqrt(max(squares / count - mean**2, 0.0)))

    def channel_std(self) -> list[float]:
        """:meth:`map_std` of every channel; 0 for the observed channel."""
        count, total, squares = self._moments()
        std = np.sqrt(np.maximum(squares / count - (total / count) ** 2, 0.0))
        return [float(v) for v in std] + [0.0] * self.observed_channel

    def close(self) -> None:
        """Checks that a patch was kept, then trims every memmap to its kept rows and flushes it."""
        self.map_std()
        for s in SPLITS:
            arr = self.arrays.pop(s)
            if self.count[s] < len(arr):  # patches were dropped: copy into an exact-size file
                arr = _shrink(arr, self.count[s], self.tmp[s])
            arr.flush()
            del arr

    def write_samples(self, path: str) -> None:
        """Writes the per-sample fields of every split, ``{split}_{field}``, to :obj:`path`."""
        samples = {}
        for s in SPLITS:
            f = np.array(self.fields[s], dtype=np.float64).reshape(-1, len(FIELDS))
            for i, key in enumerate(FIELDS):
                dtype = np.float64 if key in ("omega_m", "sigma_8") else np.int64
                samples[f"{s}_{key}"] = f[:, i].astype(dtype)
        with atomic_open(path, "wb") as fh:
            np.savez(fh, **samples)


def _shrink(arr: np.memmap, rows: int, path: str) -> np.memmap:
    """Copies the first ``rows`` rows of a memmap into a new exact-size file at ``path``."""
    with atomic_path(path) as tmp:
        shape = (rows,) + arr.shape[1:]
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=arr.dtype, shape=shape)
        step = max(1, (64 << 20) // max(arr[0].nbytes, 1))  # ~64 MB at a time
        for i in range(0, rows, step):
            out[i : i + step] = arr[i : min(i + step, rows)]
        out.flush()
    return out
