"""Weak-lensing convergence maps cut into nested HEALPix patches, as a PyG dataset."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import os.path as osp
import re
import sys
import uuid
import warnings
from typing import Callable, Optional, Sequence

import healpy as hp
import numpy as np
import torch
from filelock import FileLock, Timeout
from torch_geometric.data import Data, Dataset

from .._io import atomic_open, atomic_path, atomic_write_text
from .._validate import check_choice, check_int, check_nside, check_positive
from ..graph import healpix_graph, nested_patches
from ..graph._keys import GRAPH_KEYS
from ._manifest import (
    MANIFEST,
    SPLITS,
    check_split_fractions,
    class_index,
    read_manifest,
    where,
)

__all__ = ["ConvergenceMaps"]

# Bump when the processed content changes: the version is part of the folder key, so folders of
# an older format are never read (2: y holds class indices, not the manifest's labels).
_FORMAT_VERSION = 2
_FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz")
_NPY_SUFFIXES = (".npy", ".npz")
_FIELDS = ("y", "omega_m", "sigma_8", "map_id", "patch_id")  # per-sample fields, in order
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Larger values would overflow the float32 storage (mean removal can double them).
_MAX_ABS_VALUE = 1e37
_LISTED = 10  # maps named in a warning or error before "... and n more"


class ConvergenceMaps(Dataset):
    r"""HEALPix convergence maps (or any scalar sky maps) cut into nested patches, one per sample.

    This is the data of DeepSphere's cosmological model discrimination (Perraudin et al. 2019):
    full-sky or partial maps of two (or more) cosmologies, each cut into the :math:`12 o^2`
    patches of order :math:`o` (:math:`o = 1`: 1/12 of the sky, 2: 1/48, 4: 1/192).

    **Raw data** in ``root/raw/``: FITS maps written by healpy (ordering from the ``ORDERING``
    keyword; column ``field`` of a multi-column file) or ``.npy``/``.npz`` arrays (ordering given
    by ``npy_nest``), of a power-of-2 nside, and ``manifest.csv`` with the columns ``file,label``
    (``label`` may be left out, see below) and optionally ``omega_m,sigma_8,split``
    (``train``, ``val`` or ``test``). Without a ``split`` column, maps are split per class by a
    seeded permutation. Splits are always by map: the patches of one map never appear in two
    splits. Unobserved pixels are ``healpy.UNSEEN``. Errors name the file and its line in the
    manifest.

    **Labels** may be any integers or strings: the classes are the distinct labels in sorted
    order (numerically if all are integers, else as strings), available as :attr:`classes`, and
    ``y`` holds the index of a map's class in that list (0 ... C-1, as a loss expects), like
    torchvision's ``ImageFolder``: labels ``{0, 5}`` give ``classes == [0, 5]``, ``y`` 0 and 1;
    :attr:`class_to_idx` maps a label to its index. A manifest without a ``label`` column holds
    maps without classes, for regression of ``omega_m`` and ``sigma_8`` (as
    :func:`~pyg_sphere.datasets.simulate_prior_maps` writes): :attr:`classes` is then empty and
    every sample's ``y`` is -1.

    **Processing**, done once and cached in ``root/processed/<folder named by the options>/``:
    per map, remove the mean (over observed pixels), optionally smooth with a Gaussian beam,
    ``ud_grade`` to ``nside``, convert to nested ordering and cut into patches. A patch is kept
    when at least ``min_observed`` of its pixels are observed; its unobserved pixels are set to 0
    (the removed mean). A warning lists the maps that contribute no patch, and a split whose
    maps contribute none is an error. Asking for a higher ``nside`` than a map has warns:
    upgrading invents no information. Patches go into a float32 memory-mapped ``.npy`` per
    split, so collections larger than RAM are processed and read without loading them. Other
    options, or another ``pre_transform``/``pre_filter`` (told apart by their ``repr``, or by
    ``name``), give another folder; if ``manifest.csv`` or a raw file changed since processing,
    a warning is issued and the data is processed again. Processes that construct the same
    dataset at once (every rank of a distributed job) are safe: a lock file next to the folder
    lets one of them process while the others wait, then load the result. See
    ``docs/data.md`` for the layout, the processing and why every sample shares one graph.

    Each item is a :class:`~torch_geometric.data.Data` with ``x`` (the patch's pixel values in
    nested order), ``y`` (class index, -1 without labels), ``omega_m``, ``sigma_8``, ``map_id``
    (row of the map in the manifest, 0-based) and ``patch_id`` (the sample's HEALPix ids are
    ``patch_id * N + arange(N)``). **Which loader:** items carry no ``edge_index`` by default,
    because every sample uses :attr:`graph`, the graph of patch 0;
    :class:`~pyg_sphere.loader.SharedGraphLoader` batches them as x [B, N, F] on that graph and
    needs nothing more. PyG's :class:`~torch_geometric.loader.DataLoader` needs
    ``attach_graph=True``: every item then also carries the shared graph's ``edge_index``,
    ``edge_weight``, ``pixels`` and parameters (``nside``, ``nest``, ``num_neighbors``,
    ``kernel_width``, ``variant``, ``lambda_max``; the same tensors, not copies), which PyG
    batches as a disjoint union that works with every PyG layer. Without it, a batch from PyG's
    loader has no ``edge_index`` for convolutions or pooling to use.

    The arguments come in groups: what to read (``root``, ``nside``, ``order``, ``split``), how
    to process it (``field`` to ``name``: each combination is processed once, into its own
    folder) and the shared graph (``num_neighbors``, ``graph_kwargs``, ``attach_graph``: not
    part of the processed data).

    Args:
        root (str): Directory holding ``raw/`` (input) and ``processed/`` (cache).
        nside (int, optional): Target resolution, a power of 2; ``None`` keeps the maps' own
            nside, which must then be the same for all maps. A target above a map's nside
            upgrades it with a warning.
        order (int): Patch order :math:`o` (power of 2, at most ``nside``); :math:`12 o^2`
            patches of :math:`(nside / o)^2` pixels per map. (default: 1)
        split (str): ``'train'``, ``'val'`` or ``'test'``. (default: ``'train'``)
        field (int): Column of the FITS files to read (healpy's ``field``: 0 is the first map
            column, e.g. temperature or kappa; 1 the next, e.g. Q or gamma1). ``.npy``/``.npz``
            maps have one column, field 0. (default: 0)
        smoothing_arcmin (float, optional): FWHM of a Gaussian smoothing applied at the maps'
            native resolution (DeepSphere used 3 arcmin). (default: ``None``, no smoothing)
        npy_nest (bool): Ordering of ``.npy``/``.npz`` maps (FITS say it in their header).
            (default: ``False``, ring)
        min_observed (float): Smallest fraction of observed pixels for a patch to be kept.
            (default: 1.0: patches touching the mask are dropped, so no sample mixes sky and
            fill values)
        split_fractions (tuple): (train, val, test) fractions of the maps of each class when the
            manifest has no ``split`` column. (default: ``(0.8, 0.1, 0.1)``)
        split_seed (int): Seed of that split. (default: 0)
        pre_transform, pre_filter (callable, optional): As in
            :class:`~torch_geometric.data.Dataset`: they see each patch during processing as it
            would be served (``y`` is the class index); ``pre_transform`` may change the values
            of ``x`` (keeping its shape [N, 1]), other changes are not stored. Their ``repr``
            names the processed folder, so it must be stable (e.g. a
            :class:`~torch_geometric.transforms.BaseTransform`); for a lambda or a plain
            function, pass ``name``.
        name (str, optional): Names the processed variant (letters, digits, ``.``, ``_``,
            ``-``); it goes into the folder name. Needed when ``pre_transform`` or
            ``pre_filter`` has no stable ``repr``. (default: ``None``)
        num_neighbors (int): Neighbours per pixel of the shared graph. (default: 8)
        graph_kwargs (dict, optional): Further arguments of
            :func:`~pyg_sphere.healpix_graph` for the shared graph (``variant``,
            ``kernel_width``, ``cache_dir``).
        attach_graph (bool): Attach the shared graph to every item: needed for PyG's
            ``DataLoader``, not for :class:`~pyg_sphere.loader.SharedGraphLoader`.
            (default: ``False``)
        transform, log, force_reload: As in :class:`~torch_geometric.data.Dataset`.
        k (int, optional): Deprecated name of ``num_neighbors``.

    Shapes:
        - **item:** x [N, 1] float32 with :math:`N = (nside / o)^2`, y [1] int64,
          omega_m [1], sigma_8 [1] float32, map_id [1], patch_id [1] int64
        - **graph:** edge_index [2, E], edge_weight [E], pixels [N]
        - **labels:** [len(dataset)] int64

    Example::

        >>> import os, tempfile, healpy as hp, numpy as np
        >>> root = tempfile.mkdtemp()
        >>> os.makedirs(f'{root}/raw')
        >>> rng = np.random.default_rng(0)
        >>> with open(f'{root}/raw/manifest.csv', 'w') as f:
        ...     _ = f.write('file,label,split\n')
        ...     for i, (label, split) in enumerate([(5, 'train'), (0, 'train'), (5, 'test')]):
        ...         m = rng.normal(size=12 * 8**2)
        ...         hp.write_map(f'{root}/raw/m{i}.fits', m, dtype=np.float64)
        ...         _ = f.write(f'm{i}.fits,{label},{split}\n')
        >>> train = ConvergenceMaps(root, nside=4, order=1, split='train', log=False)
        >>> len(train), train.num_classes   # 2 maps x 12 patches
        (24, 2)
        >>> train.classes, train.class_to_idx   # labels 0 and 5 are the indices 0 and 1
        ([0, 5], {0: 0, 5: 1})
        >>> train[0]
        Data(x=[16, 1], y=[1], omega_m=[1], sigma_8=[1], map_id=[1], patch_id=[1])
        >>> train[0].y.item(), train.labels.bincount().tolist()
        (1, [12, 12])
        >>> train.graph.num_nodes
        16
    """

    def __init__(
        self,
        root: str,
        nside: Optional[int] = None,
        order: int = 1,
        split: str = "train",
        *,
        field: int = 0,
        smoothing_arcmin: Optional[float] = None,
        npy_nest: bool = False,
        min_observed: float = 1.0,
        split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        pre_transform: Optional[Callable] = None,
        pre_filter: Optional[Callable] = None,
        name: Optional[str] = None,
        num_neighbors: int = 8,
        graph_kwargs: Optional[dict] = None,
        attach_graph: bool = False,
        transform: Optional[Callable] = None,
        log: bool = True,
        force_reload: bool = False,
        k: Optional[int] = None,
    ) -> None:
        if k is not None:
            warnings.warn(
                "ConvergenceMaps(k=...) is deprecated: use num_neighbors=", FutureWarning, 2
            )
            num_neighbors = k
        self.split = check_choice("split", split, SPLITS)
        self.num_neighbors = check_int("num_neighbors", num_neighbors, 1)
        self.graph_kwargs = dict(graph_kwargs or {})
        self.attach_graph = bool(attach_graph)
        self.options = _processing_options(
            nside,
            order,
            field,
            smoothing_arcmin,
            npy_nest,
            min_observed,
            split_fractions,
            split_seed,
        )
        self.options.update(_variant(pre_transform, pre_filter, name))
        digest = hashlib.sha1(json.dumps(self.options, sort_keys=True).encode()).hexdigest()[:10]
        label = "" if name is None else f"{name}_"
        self._name = f"nside{nside or 'native'}_order{order}_{label}{digest}"
        self._samples = None
        self._graph = None
        # PyG's __init__ runs _process (below): it processes under a lock, or finds it done.
        super().__init__(root, transform, pre_transform, pre_filter, log, force_reload)
        self._load()

    # ----- PyG Dataset interface --------------------------------------------------------------
    @property
    def raw_file_names(self) -> list[str]:
        return [MANIFEST]

    @property
    def processed_dir(self) -> str:
        return osp.join(self.root, "processed", self._name)

    @property
    def processed_file_names(self) -> list[str]:
        return [f"{s}.npy" for s in SPLITS] + ["samples.npz", "meta.json"]

    def len(self) -> int:
        return len(self._y)

    def get(self, idx: int) -> Data:
        if self._samples is None:  # opened lazily: a memmap must not be pickled to workers
            path = osp.join(self.processed_dir, f"{self.split}.npy")
            self._samples = np.load(path, mmap_mode="r")
        x = torch.from_numpy(np.array(self._samples[idx])).unsqueeze(-1)
        s = slice(idx, idx + 1)
        data = Data(
            x=x,
            y=self._y[s],
            omega_m=self._omega_m[s],
            sigma_8=self._sigma_8[s],
            map_id=self._map_id[s],
            patch_id=self._patch_id[s],
        )
        if self.attach_graph:
            graph = self.graph
            for key in GRAPH_KEYS:
                if key in graph:
                    data[key] = graph[key]
        return data

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_samples"] = None
        return state

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({len(self)}, split='{self.split}', nside={self.nside}, "
            f"order={self.order})"
        )

    # ----- properties -------------------------------------------------------------------------
    @property
    def nside(self) -> int:
        """Resolution of the processed maps."""
        return self.meta["nside"]

    @property
    def order(self) -> int:
        """Patch order :math:`o`."""
        return self.meta["order"]

    @property
    def num_patches(self) -> int:
        """Patches per map, :math:`12 o^2`."""
        return 12 * self.order**2

    @property
    def patch_size(self) -> int:
        """Pixels per patch, :math:`N = (nside / o)^2`."""
        return (self.nside // self.order) ** 2

    @property
    def num_classes(self) -> int:
        """Number of distinct labels in the whole collection (all splits)."""
        return len(self.meta["classes"])

    @property
    def classes(self) -> list:
        """The labels of the manifest (all splits), in sorted order: integers numerically when
        all labels are integers, else strings. ``y == i`` means class ``classes[i]``."""
        return list(self.meta["classes"])

    @property
    def class_to_idx(self) -> dict:
        """Maps each label of the manifest to its class index, the value of ``y``."""
        return {c: i for i, c in enumerate(self.meta["classes"])}

    @property
    def num_node_features(self) -> int:
        return 1

    @property
    def labels(self) -> torch.Tensor:
        """The class of every sample of the dataset, int64 [len(dataset)] (a copy; it follows
        the indices of a subset such as ``dataset[:10]`` or ``dataset.shuffle()``), e.g. to
        count classes or stratify without reading the patches."""
        if self._indices is None:
            return self._y.clone()
        return self._y[torch.as_tensor(self.indices(), dtype=torch.long)]

    @property
    def files(self) -> list[str]:
        """Raw file of every map, indexed by ``map_id``."""
        return self.meta["files"]

    @property
    def map_std(self) -> float:
        """Standard deviation of the processed training maps' observed pixels (of all maps if
        there are no training maps): the unit of :class:`~pyg_sphere.transforms.AddGaussianNoise`'s
        relative noise level, the same for every split."""
        return self.meta["map_std"]

    @property
    def graph(self) -> Data:
        """The graph shared by all samples: :func:`~pyg_sphere.healpix_graph` of patch 0
        (nested, :attr:`num_neighbors` neighbours), built on first use and memoised."""
        if self._graph is None:
            pixels = nested_patches(self.nside, self.order)[0]
            self._graph = healpix_graph(
                self.nside,
                pixels,
                num_neighbors=self.num_neighbors,
                nest=True,
                **self.graph_kwargs,
            )
        return self._graph

    def patch_pixels(self, patch_id: int) -> torch.Tensor:
        """Nested HEALPix ids (at :attr:`nside`) of the pixels of patch ``patch_id``, [N]."""
        return nested_patches(self.nside, self.order)[patch_id]

    def _graph_nodes(self) -> tuple[int, bool, torch.Tensor]:
        """``(nside, nest, pixel ids)`` of the items' graph, without building it: what
        :class:`~pyg_sphere.loader.SharedGraphLoader` checks a ``graph=`` against."""
        return self.nside, True, self.patch_pixels(0)

    # ----- processing under a lock, once ---------------------------------------------------------
    def _process(self) -> None:
        """Processes the raw data unless the processed folder is complete and up to date.

        Replaces PyG's check-then-process: every process that constructs the dataset (every
        rank of a distributed job) runs this at once, so the check is repeated under a lock
        (``processed/<folder>.lock``): one process processes while the others wait, then find
        the folder complete and load it."""
        if not self.force_reload and self._up_to_date(warn=False):
            return  # complete: read without the lock (the folder may be read-only)
        seen = self._build_id()
        os.makedirs(osp.dirname(self.processed_dir), exist_ok=True)
        lock = FileLock(self.processed_dir + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if self.log:
                print(
                    f"Waiting for another process to process {self.processed_dir}", file=sys.stderr
                )
            lock.acquire()
        try:
            if self.force_reload:
                # processed by another process since this one asked: that is the reload
                build = self._build_id()
                if build is not None and build != seen:
                    return
            elif self._up_to_date(warn=True):
                return
            if self.log and "PYTEST_CURRENT_TEST" not in os.environ:
                print("Processing...", file=sys.stderr)
            os.makedirs(self.processed_dir, exist_ok=True)
            self.process()
            for key in ("pre_transform", "pre_filter"):  # PyG's record of the variant
                with atomic_open(osp.join(self.processed_dir, f"{key}.pt"), "wb") as f:
                    torch.save(self.options[key], f)
            if self.log and "PYTEST_CURRENT_TEST" not in os.environ:
                print("Done!", file=sys.stderr)
        finally:
            lock.release()

    def _meta_on_disk(self) -> Optional[dict]:
        try:
            with open(osp.join(self.processed_dir, "meta.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _build_id(self) -> Optional[str]:
        """Identifies one run of :meth:`process` (``None``: no complete folder)."""
        meta = self._meta_on_disk()
        return None if meta is None else meta.get("build")

    def _up_to_date(self, warn: bool) -> bool:
        """Whether the processed folder is complete, of these options and of the current raw
        data (warns, if :obj:`warn`, when only the raw data changed)."""
        meta = self._meta_on_disk()
        options = json.loads(json.dumps(self.options))  # as stored: tuples become lists
        if meta is None or meta.get("options") != options:
            return False
        if not all(osp.isfile(p) for p in self.processed_paths):
            return False
        fingerprint = self._fingerprint()
        if fingerprint is None or meta.get("raw") == fingerprint:
            return True  # raw data removed: keep using the processed copy
        if warn:
            warnings.warn(
                f"the raw data in {self.raw_dir} changed since it was processed into "
                f"{self.processed_dir}: processing it again",
                stacklevel=5,  # the caller of ConvergenceMaps(...)
            )
        return False

    def _fingerprint(self, rows: Optional[list] = None) -> Optional[dict]:
        """Content hash of the manifest and size/mtime of every raw file it lists (``None``
        without a manifest; no file list when the manifest cannot be read)."""
        path = osp.join(self.raw_dir, MANIFEST)
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
            full = osp.join(self.raw_dir, r["file"])
            if osp.isfile(full):
                st = os.stat(full)
                stats[r["file"]] = [st.st_size, st.st_mtime_ns]
        return {"manifest_sha1": hashlib.sha1(content).hexdigest(), "files": stats}

    # ----- processing: read, prepare, write -----------------------------------------------------
    def process(self) -> None:
        out = self.processed_dir
        _invalidate(out)  # from here on nothing loads until meta.json is written again
        rows = self._read_rows()
        fingerprint = self._fingerprint(rows)
        classes, class_to_idx = class_index(rows)
        maps_per_split = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
        upgraded: dict = {}  # native nside -> maps resampled to a higher nside
        masked = []  # maps without a patch observed enough to keep
        with contextlib.ExitStack() as stack:  # temporaries renamed on success, else removed
            writer = _SplitWriter(out, maps_per_split, stack)
            first, nside = None, None
            for map_id, row in enumerate(rows):
                m, nest = _read_map(
                    osp.join(self.raw_dir, row["file"]),
                    row,
                    self.options["npy_nest"],
                    self.options["field"],
                )
                map_nside = hp.npix2nside(m.size)
                first = first or (map_nside, row)
                nside = self._target_nside(map_nside, row, first)
                if map_nside < nside:
                    upgraded.setdefault(map_nside, []).append(where(row))
                y = -1 if row["label"] is None else class_to_idx[row["label"]]
                if not self._add_map(writer, m, nest, nside, row, map_id, y):
                    masked.append(row)
            if upgraded:
                self._warn_upgrade(nside, upgraded)
            self._check_observed(rows, masked)
            writer.close()
        writer.write_samples(osp.join(out, "samples.npz"))
        meta = {
            "options": self.options,
            "raw": fingerprint,
            "nside": int(nside),
            "order": self.options["order"],
            "files": [r["file"] for r in rows],
            "classes": classes,
            "num_samples": writer.count,
            "map_std": writer.map_std(),
            "build": uuid.uuid4().hex,
        }
        atomic_write_text(osp.join(out, "meta.json"), json.dumps(meta, indent=1))  # last

    def _warn_upgrade(self, nside: int, upgraded: dict) -> None:
        n = sum(map(len, upgraded.values()))
        lowest = min(upgraded)
        groups = "; ".join(f"nside {k}: {_listing(v)}" for k, v in sorted(upgraded.items()))
        warnings.warn(
            f"nside={nside} is higher than the nside of {n} map{'s' if n > 1 else ''} ({groups}):"
            " they are upgraded with healpy.ud_grade, which invents no information (each pixel "
            f"is repeated); pass the maps' nside (nside={lowest}), or nside=None to keep the "
            "maps' own",
            stacklevel=6,  # the caller of ConvergenceMaps(...)
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
                stacklevel=6,  # the caller of ConvergenceMaps(...)
            )

    def _read_rows(self) -> list[dict]:
        """The manifest's rows; fails on a missing file before any map is processed."""
        rows = read_manifest(
            osp.join(self.raw_dir, MANIFEST),
            self.options["split_fractions"],
            self.options["split_seed"],
        )
        for row in rows:
            if not osp.isfile(osp.join(self.raw_dir, row["file"])):
                raise FileNotFoundError(f"{where(row)}: file not found in {self.raw_dir}")
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
        self, writer, m: np.ndarray, nest: bool, nside: int, row: dict, map_id: int, y: int
    ) -> int:
        """Prepares one map (of class index :obj:`y`), cuts it into patches and hands the kept
        ones to :obj:`writer`; returns how many were observed enough to keep (before
        ``pre_filter``)."""
        try:
            m = _prepare_map(m, nest, nside, self.options["smoothing_arcmin"])
        except ValueError as e:
            raise ValueError(f"{where(row)}: {e}") from e
        values = m[writer.patches(nside, self.options["order"])]
        observed = values != hp.UNSEEN
        values[~observed] = 0.0
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
        """Runs ``pre_filter``/``pre_transform`` on one patch (its sample fields as
        :data:`_FIELDS`); ``None`` drops it."""
        n = len(x)
        y, omega_m, sigma_8, map_id, patch_id = fields
        data = Data(
            x=torch.from_numpy(x.astype(np.float32)).unsqueeze(-1),
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
            if tuple(data.x.shape) != (n, 1):
                raise ValueError(
                    f"pre_transform must keep x of shape [{n}, 1], got {list(data.x.shape)}"
                )
        return data.x.detach().cpu().numpy()[:, 0]

    def _load(self) -> None:
        with open(osp.join(self.processed_dir, "meta.json")) as f:
            self.meta = json.load(f)
        s = self.split
        with np.load(osp.join(self.processed_dir, "samples.npz")) as z:
            self._y = torch.from_numpy(z[f"{s}_y"])
            self._omega_m = torch.from_numpy(z[f"{s}_omega_m"].astype(np.float32))
            self._sigma_8 = torch.from_numpy(z[f"{s}_sigma_8"].astype(np.float32))
            self._map_id = torch.from_numpy(z[f"{s}_map_id"])
            self._patch_id = torch.from_numpy(z[f"{s}_patch_id"])


# ----- options ----------------------------------------------------------------------------------
def _processing_options(
    nside, order, field, smoothing_arcmin, npy_nest, min_observed, split_fractions, split_seed
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
    return {
        "format": _FORMAT_VERSION,
        "nside": nside,
        "order": order,
        "field": check_int("field", field, 0),
        "smoothing_arcmin": smoothing_arcmin,
        "npy_nest": bool(npy_nest),
        "min_observed": float(min_observed),
        "split_fractions": check_split_fractions(split_fractions),
        "split_seed": check_int("split_seed", split_seed, 0),
    }


def _variant(pre_transform, pre_filter, name: Optional[str]) -> dict:
    """The part of the folder key that tells processing variants apart: the ``repr`` of
    ``pre_transform`` and ``pre_filter`` (refused when it holds a memory address, unless
    ``name`` is given) and ``name``."""
    if name is not None and not (isinstance(name, str) and _NAME.fullmatch(name)):
        raise ValueError(
            f"name must be a non-empty string of letters, digits, '.', '_' and '-' (it names "
            f"a folder), got {name!r}"
        )
    variant = {}
    for key, fn in (("pre_transform", pre_transform), ("pre_filter", pre_filter)):
        text = "None" if fn is None else repr(fn)
        if name is None and _ADDRESS.search(text):
            raise ValueError(
                f"{key}={text} has no stable repr (it holds a memory address), so it cannot "
                f"tell its processed data apart from another {key}'s: pass name='...' to name "
                f"this processed variant, or give the callable a stable __repr__ (e.g. make it "
                f"a torch_geometric.transforms.BaseTransform)"
            )
        variant[key] = _ADDRESS.sub("", text)
    if name is not None:
        variant["name"] = name
    return variant


# ----- read -------------------------------------------------------------------------------------
def _read_map(
    path: str, row: dict, npy_nest: bool = False, field: int = 0
) -> tuple[np.ndarray, bool]:
    """Reads one full-sky or partial HEALPix map.

    FITS goes through healpy, reads column :obj:`field` (0: the first map column; a partial
    file's pixel-index column does not count) and keeps the ordering of its ``ORDERING``
    keyword; ``.npy`` holds one 1-D array and ``.npz`` a single array (or one named ``map``),
    in the ordering given by ``npy_nest``. Unobserved pixels are expected as ``healpy.UNSEEN``.
    Every error names the file and its manifest line.

    Returns:
        ``(m, nest)``: the map as float64 [12 nside^2] (nside a power of 2) and whether it is
        nested.
    """
    name = row["file"].lower()
    if not osp.isfile(path):
        raise FileNotFoundError(f"{where(row)}: file not found at {path}")
    if name.endswith(_FITS_SUFFIXES):
        m, nest = _read_fits(path, row, field)
    elif name.endswith(_NPY_SUFFIXES):
        m, nest = _read_npy(path, row), bool(npy_nest)
        if field != 0:
            raise ValueError(
                f"{where(row)}: field={field}, but a numpy map has 1 column (field 0); field= "
                "selects a column of FITS files: pass field=0 for numpy maps"
            )
    else:
        raise ValueError(
            f"{where(row)}: unsupported file type; use FITS "
            f"({', '.join(_FITS_SUFFIXES)}) or numpy (.npy, .npz)"
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
    if values.size and np.abs(values).max() > _MAX_ABS_VALUE:
        raise ValueError(
            f"{where(row)}: values up to {np.abs(values).max():.3g} do not fit the float32 "
            f"storage (|value| <= {_MAX_ABS_VALUE:g}); is the file corrupt, or in other units?"
        )
    return m


def _listing(names: list[str]) -> str:
    """Names the first :data:`_LISTED` entries of :obj:`names`, then counts the others."""
    shown = ", ".join(names[:_LISTED])
    return shown if len(names) <= _LISTED else f"{shown} and {len(names) - _LISTED} more"


# ----- prepare ----------------------------------------------------------------------------------
def _prepare_map(
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


# ----- write ------------------------------------------------------------------------------------
def _invalidate(out: str) -> None:
    """Removes ``meta.json`` (the marker of a complete folder) and the temporaries that an
    interrupted run may have left in :obj:`out`."""
    marker = osp.join(out, "meta.json")
    if osp.exists(marker):
        os.remove(marker)
    for path in glob.glob(osp.join(out, "*.part")) + glob.glob(osp.join(out, ".*.tmp*")):
        os.remove(path)


class _SplitWriter:
    """Streams the kept patches of every split into a float32 ``.npy`` memory map under a
    temporary name (renamed into place when :obj:`stack` closes without error, removed
    otherwise), with their per-sample fields and the statistics of their observed pixels."""

    def __init__(self, out: str, maps_per_split: dict, stack: contextlib.ExitStack):
        self.out, self.maps_per_split, self.stack = out, maps_per_split, stack
        self.tmp: dict = {}  # split -> temporary path
        self.arrays: dict = {}  # split -> open memmap
        self.count = dict.fromkeys(SPLITS, 0)
        self.fields: dict = {s: [] for s in SPLITS}
        self.acc = {s: np.zeros(3) for s in SPLITS}  # count, sum, sum of squares
        self._patches = None

    def patches(self, nside: int, order: int) -> np.ndarray:
        """Nested pixel ids of every patch, [12 o^2, N]; opens the memmaps on first call."""
        if self._patches is None:
            self._patches = nested_patches(nside, order).numpy()
            rows, size = self._patches.shape
            for s in SPLITS:
                self.tmp[s] = self.stack.enter_context(atomic_path(osp.join(self.out, f"{s}.npy")))
                shape = (self.maps_per_split[s] * rows, size)
                self.arrays[s] = np.lib.format.open_memmap(
                    self.tmp[s], mode="w+", dtype=np.float32, shape=shape
                )
            self.stack.callback(self.arrays.clear)  # runs first: unmap, then rename or remove
        return self._patches

    def add(self, split: str, x: np.ndarray, observed: np.ndarray, fields: tuple) -> None:
        self.arrays[split][self.count[split]] = x
        self.count[split] += 1
        self.fields[split].append(fields)
        v = x[observed]
        self.acc[split] += (v.size, v.sum(), np.square(v).sum())

    def map_std(self) -> float:
        """Standard deviation of the observed pixels of the training split (of all splits
        when it is empty)."""
        total = self.acc["train"] if self.acc["train"][0] > 0 else sum(self.acc.values())
        if total[0] == 0:
            raise ValueError(
                "no patch was kept: every patch has fewer than min_observed of its pixels "
                "observed or was dropped by pre_filter; lower min_observed or keep more "
                "patches in pre_filter"
            )
        mean = total[1] / total[0]
        return float(np.sqrt(max(total[2] / total[0] - mean**2, 0.0)))

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
            f = np.array(self.fields[s], dtype=np.float64).reshape(-1, len(_FIELDS))
            for i, key in enumerate(_FIELDS):
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
