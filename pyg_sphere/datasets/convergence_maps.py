"""Weak-lensing convergence maps cut into nested HEALPix patches, as a PyG dataset."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import os.path as osp
import re
import warnings
from typing import Callable, Optional, Sequence

import healpy as hp
import numpy as np
import torch
from torch_geometric.data import Data, Dataset

from ..graph import healpix_graph, nested_patches
from ..loader.shared_graph_loader import GRAPH_KEYS

SPLITS = ('train', 'val', 'test')
MANIFEST = 'manifest.csv'
_FORMAT_VERSION = 1
_FITS_SUFFIXES = ('.fits', '.fit', '.fits.gz', '.fit.gz')
_NPY_SUFFIXES = ('.npy', '.npz')


def _where(row: dict) -> str:
    """Names a manifest row in error messages."""
    return f"'{row['file']}' (raw/{MANIFEST} line {row['line']})"


def _is_pow2(n) -> bool:
    return (isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
            and n & (n - 1) == 0)


def _read_manifest(path: str, split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
                  split_seed: int = 0) -> list[dict]:
    """Reads and validates ``raw/manifest.csv``; assigns a split to every map.

    Columns: ``file`` and ``label`` (required), ``omega_m``, ``sigma_8``, ``split`` (optional;
    other columns are ignored). Without a ``split`` column, maps are split per class with a
    seeded permutation in the proportions ``split_fractions`` (train, val, test).

    Returns:
        One dict per map, in manifest order, with keys ``file``, ``line`` (line number in the
        file, header = 1), ``label`` (int), ``omega_m``, ``sigma_8`` (float, NaN when absent)
        and ``split``.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: put the maps in {osp.dirname(path)} with a {MANIFEST} listing "
            "them (header: file,label[,omega_m,sigma_8,split])")
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in ('file', 'label') if c not in header]
        if missing:
            raise ValueError(
                f"{path}: the header must name the columns 'file' and 'label' (optional: omega_m, "
                f"sigma_8, split), found {header}; missing {missing}")
        reader.fieldnames = header
        raw_rows = [(i + 2, {k: (v or '').strip() for k, v in r.items() if k is not None})
                    for i, r in enumerate(reader)]
    if not raw_rows:
        raise ValueError(f"{path} lists no maps: add one row per map (file,label,...)")

    rows, seen = [], {}
    for line, r in raw_rows:
        row = {'file': r['file'], 'line': line}
        if not row['file']:
            raise ValueError(f"raw/{MANIFEST} line {line}: empty 'file' entry")
        if row['file'] in seen:
            raise ValueError(f"{_where(row)} is listed twice (also on line {seen[row['file']]}): "
                             "each map may appear once, or its patches could land in two splits")
        seen[row['file']] = line
        label = r.get('label', '')
        if label == '':
            raise ValueError(f"{_where(row)}: missing label; give every map its integer class")
        try:
            row['label'] = int(label)
        except ValueError:
            raise ValueError(f"{_where(row)}: label {label!r} is not an integer class id") from None
        for key in ('omega_m', 'sigma_8'):
            value = r.get(key, '')
            try:
                row[key] = float(value) if value != '' else float('nan')
            except ValueError:
                raise ValueError(f"{_where(row)}: {key} {value!r} is not a number") from None
        if 'split' in header:
            if r['split'] not in SPLITS:
                raise ValueError(f"{_where(row)}: split {r['split']!r} is not one of {SPLITS}")
            row['split'] = r['split']
        rows.append(row)

    if 'split' not in header:
        fractions = np.asarray(split_fractions, dtype=float)
        rng = np.random.default_rng(split_seed)
        for label in sorted({r['label'] for r in rows}):
            members = [r for r in rows if r['label'] == label]
            n = len(members)
            n_val, n_test = (int(round(f * n)) for f in fractions[1:])
            n_test = min(n_test, n)
            n_val = min(n_val, n - n_test)
            names = ['test'] * n_test + ['val'] * n_val + ['train'] * (n - n_test - n_val)
            for r, i in zip(members, rng.permutation(n)):
                r['split'] = names[i]
    return rows


def _read_map(path: str, row: dict, npy_nest: bool = False) -> tuple[np.ndarray, bool]:
    """Reads one full-sky or partial HEALPix map.

    FITS goes through healpy and keeps the ordering of its ``ORDERING`` keyword; ``.npy`` holds
    one 1-D array and ``.npz`` a single array (or one named ``map``), in the ordering given by
    ``npy_nest``. Unobserved pixels are expected as ``healpy.UNSEEN``.

    Returns:
        ``(m, nest)``: the map as float64 [12 nside^2] and whether it is nested.
    """
    name = row['file'].lower()
    if not osp.isfile(path):
        raise FileNotFoundError(f"{_where(row)}: file not found at {path}")
    if name.endswith(_FITS_SUFFIXES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')  # astropy's truncation warning; we raise instead
                m, header = hp.read_map(path, nest=None, h=True)
        except Exception as e:
            raise ValueError(
                f"{_where(row)} could not be read as a HEALPix FITS map ({type(e).__name__}: {e}); "
                "the file is probably truncated or corrupt: write it again, e.g. with "
                "healpy.write_map") from e
        ordering = str(dict(header).get('ORDERING', 'RING')).strip().upper()
        nest = ordering.startswith('NEST')
    elif name.endswith(_NPY_SUFFIXES):
        try:
            m = np.load(path, allow_pickle=False)
            if isinstance(m, np.lib.npyio.NpzFile):
                with m:
                    keys = list(m.keys())
                    if len(keys) != 1 and 'map' not in keys:
                        raise ValueError(f"holds arrays {keys}: keep one, or name the map 'map'")
                    m = m['map' if 'map' in keys else keys[0]]
        except Exception as e:
            raise ValueError(f"{_where(row)} could not be read as a numpy map "
                             f"({type(e).__name__}: {e})") from e
        nest = bool(npy_nest)
    else:
        raise ValueError(f"{_where(row)}: unsupported file type; use FITS "
                         f"({', '.join(_FITS_SUFFIXES)}) or numpy (.npy, .npz)")
    m = np.asarray(m)
    if m.ndim != 1 or not hp.isnpixok(m.size):
        raise ValueError(
            f"{_where(row)}: a HEALPix map has 12*nside^2 values (nside a power of 2), "
            f"got shape {tuple(m.shape)}")
    if not np.issubdtype(m.dtype, np.number):
        raise ValueError(f"{_where(row)}: map values have dtype {m.dtype}, expected numbers")
    m = m.astype(np.float64)
    if not np.isfinite(m).all():
        bad = int((~np.isfinite(m)).sum())
        raise ValueError(f"{_where(row)}: {bad} pixels are NaN or infinite; mark unobserved pixels "
                         "with healpy.UNSEEN instead")
    return m, nest


def _prepare_map(m: np.ndarray, nest: bool, nside: int,
                smoothing_arcmin: Optional[float] = None) -> np.ndarray:
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
        m = hp.smoothing(m, fwhm=np.radians(smoothing_arcmin / 60.0), nest=nest,
                         use_pixel_weights=False)
    m[bad] = hp.UNSEEN
    if hp.npix2nside(m.size) != nside:
        m = hp.ud_grade(m, nside, order_in='NEST' if nest else 'RING', order_out='NEST')
    elif not nest:
        m = hp.reorder(m, r2n=True)
    return m


class ConvergenceMaps(Dataset):
    r"""HEALPix convergence maps (or any scalar sky maps) cut into nested patches, one per sample.

    This is the data of DeepSphere's cosmological model discrimination (Perraudin et al. 2019):
    full-sky or partial maps of two (or more) cosmologies, each cut into the :math:`12 o^2`
    patches of order :math:`o` (:math:`o = 1`: 1/12 of the sky, 2: 1/48, 4: 1/192).

    **Raw data** in ``root/raw/``: FITS maps written by healpy (ordering from the ``ORDERING``
    keyword) or ``.npy``/``.npz`` arrays (ordering given by ``npy_nest``), and ``manifest.csv``
    with the columns ``file,label`` and optionally ``omega_m,sigma_8,split`` (``train``, ``val``
    or ``test``). Without a ``split`` column, maps are split per class by a seeded permutation.
    Splits are always by map: the patches of one map never appear in two splits. Unobserved
    pixels are ``healpy.UNSEEN``.

    **Processing**, done once and cached in ``root/processed/<name from the options>/``: per map,
    remove the mean (over observed pixels), optionally smooth with a Gaussian beam, ``ud_grade``
    to ``nside``, convert to nested ordering and cut into patches. A patch is kept when at least
    ``min_observed`` of its pixels are observed (default 1.0: patches touching the mask are
    dropped, so no sample mixes sky and fill values); its unobserved pixels are set to 0 (the
    removed mean). Maps are processed one at a time into a float32 memory-mapped ``.npy`` per
    split, so collections larger than RAM are processed and read without loading them. Every
    file is written under a temporary name and renamed; ``meta.json`` comes last and marks the
    directory complete, so an interrupted run leaves nothing that loads and the next run redoes
    it. Other options, or another ``pre_transform``/``pre_filter``, give another directory; if
    ``manifest.csv`` or a raw file changed since processing, a warning is issued and the data is
    processed again.

    **One graph for all patches.** Items carry no ``edge_index``: every sample uses
    :attr:`graph`, the graph of patch 0, as DeepSphere did. In nested ordering the local index
    ``p - patch_id * N`` is the same quadtree position in every patch, so patch 0's graph links
    the same relative neighbours everywhere; what it misses is the distortion of the HEALPix
    faces. Measured with ``benchmarks/bench_loader.py`` (nside 64, k = 8; see
    ``docs/benchmarks.md``): the other polar patches have patch 0's graph up to ties, but the
    equatorial and southern patches' own graphs share only 75-87% of its edges (order 1), and
    their normalized Laplacians applied to a simulated patch differ from patch 0's by about 20%. One
    graph is still the better choice here: (1) patch positions are the same for every map and
    class, so the per-position distortion is a fixed nuisance, identical in training and test,
    that carries no label information; (2) one graph lets a batch mix positions as
    x [B, N, F] on one cached Laplacian (:class:`~pyg_sphere.loader.SharedGraphLoader`), where
    per-position graphs cost :math:`12 o^2` graphs (as much memory as the full-sphere graph)
    and batches grouped by position. For geometry-exact filtering of patch ``j``, its own
    graph is ``healpix_graph(nside, dataset.patch_pixels(j))`` (the induced subgraph of the
    full sphere), usable with PyG's ``DataLoader``.

    Each item is a :class:`~torch_geometric.data.Data` with ``x`` (the patch's pixel values in
    nested order), ``y`` (class), ``omega_m``, ``sigma_8``, ``map_id`` (row of the map in the
    manifest, 0-based) and ``patch_id`` (the sample's HEALPix ids are
    ``patch_id * N + arange(N)``). With ``attach_graph=True`` every item also carries the shared
    graph's ``edge_index``, ``edge_weight``, ``pixels`` and parameters (``nside``, ``nest``,
    ``k``, ``kernel_width``, ``variant``, ``lambda_max``; the same tensors, not copies), so
    PyG's standard :class:`~torch_geometric.loader.DataLoader` batches
    it as a disjoint union that works with every PyG layer.

    Args:
        root (str): Directory holding ``raw/`` (input) and ``processed/`` (cache).
        nside (int, optional): Target resolution, a power of 2; ``None`` keeps the maps' own
            nside, which must then be the same for all maps.
        order (int): Patch order :math:`o` (power of 2, at most ``nside``); :math:`12 o^2`
            patches of :math:`(nside / o)^2` pixels per map. (default: 1)
        split (str): ``'train'``, ``'val'`` or ``'test'``. (default: ``'train'``)
        smoothing_arcmin (float, optional): FWHM of a Gaussian smoothing applied at the maps'
            native resolution (DeepSphere used 3 arcmin). (default: ``None``, no smoothing)
        npy_nest (bool): Ordering of ``.npy``/``.npz`` maps (FITS say it in their header).
            (default: ``False``, ring)
        min_observed (float): Smallest fraction of observed pixels for a patch to be kept.
            (default: 1.0)
        split_fractions (tuple): (train, val, test) fractions of the maps of each class when the
            manifest has no ``split`` column. (default: ``(0.8, 0.1, 0.1)``)
        split_seed (int): Seed of that split. (default: 0)
        k (int): Neighbours per pixel of the shared graph. (default: 8)
        graph_kwargs (dict, optional): Further arguments of
            :func:`~pyg_sphere.healpix_graph` for the shared graph (``variant``,
            ``kernel_width``, ``cache_dir``).
        attach_graph (bool): Attach the shared graph to every item, for PyG's ``DataLoader``.
            (default: ``False``)
        transform, pre_transform, pre_filter, log, force_reload: As in
            :class:`~torch_geometric.data.Dataset`. ``pre_filter`` and ``pre_transform`` see each
            patch during processing as it would be served; ``pre_transform`` may change the
            values of ``x`` (keeping its shape [N, 1]), other changes are not stored.

    Shapes:
        - **item:** x [N, 1] float32 with :math:`N = (nside / o)^2`, y [1] int64,
          omega_m [1], sigma_8 [1] float32, map_id [1], patch_id [1] int64
        - **graph:** edge_index [2, E], edge_weight [E], pixels [N]

    Example::

        >>> import os, tempfile, healpy as hp, numpy as np
        >>> root = tempfile.mkdtemp()
        >>> os.makedirs(f'{root}/raw')
        >>> rng = np.random.default_rng(0)
        >>> with open(f'{root}/raw/manifest.csv', 'w') as f:
        ...     _ = f.write('file,label,split\n')
        ...     for i, split in enumerate(['train', 'train', 'test']):
        ...         m = rng.normal(size=12 * 8**2)
        ...         hp.write_map(f'{root}/raw/m{i}.fits', m, dtype=np.float64)
        ...         _ = f.write(f'm{i}.fits,{i % 2},{split}\n')
        >>> train = ConvergenceMaps(root, nside=4, order=1, split='train', log=False)
        >>> len(train), train.num_classes   # 2 maps x 12 patches
        (24, 2)
        >>> train[0]
        Data(x=[16, 1], y=[1], omega_m=[1], sigma_8=[1], map_id=[1], patch_id=[1])
        >>> train.graph.num_nodes
        16
    """

    def __init__(
        self,
        root: str,
        nside: Optional[int] = None,
        order: int = 1,
        split: str = 'train',
        *,
        smoothing_arcmin: Optional[float] = None,
        npy_nest: bool = False,
        min_observed: float = 1.0,
        split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        k: int = 8,
        graph_kwargs: Optional[dict] = None,
        attach_graph: bool = False,
        transform: Optional[Callable] = None,
        pre_transform: Optional[Callable] = None,
        pre_filter: Optional[Callable] = None,
        log: bool = True,
        force_reload: bool = False,
    ) -> None:
        if nside is not None and not (_is_pow2(nside) and nside <= 2**29):
            raise ValueError(f"nside must be a power of 2 (or None for the maps' own), "
                             f"got {nside!r}")
        if not _is_pow2(order) or (nside is not None and order > nside):
            raise ValueError(f"order must be a power of 2 no larger than nside, got {order!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if smoothing_arcmin is not None and not smoothing_arcmin > 0:
            raise ValueError(f"smoothing_arcmin must be positive or None, got {smoothing_arcmin!r}")
        if not 0.0 < min_observed <= 1.0:
            raise ValueError(f"min_observed must be in (0, 1], got {min_observed!r}")
        fractions = tuple(float(f) for f in split_fractions)
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError("split_fractions must be three non-negative (train, val, test) "
                             f"fractions summing to 1, got {split_fractions!r}")
        self.split = split
        self.k = k
        self.graph_kwargs = dict(graph_kwargs or {})
        self.attach_graph = attach_graph
        self.options = {
            'format': _FORMAT_VERSION, 'nside': nside, 'order': order,
            'smoothing_arcmin': smoothing_arcmin, 'npy_nest': bool(npy_nest),
            'min_observed': float(min_observed), 'split_fractions': fractions,
            'split_seed': int(split_seed),
            'pre_transform': _repr(pre_transform), 'pre_filter': _repr(pre_filter),
        }
        digest = hashlib.sha1(json.dumps(self.options, sort_keys=True).encode()).hexdigest()[:10]
        self._name = f"nside{nside or 'native'}_order{order}_{digest}"
        self._samples = None
        self._graph = None
        root = osp.expanduser(root)
        self.root = root  # PyG sets it again; needed here for the staleness check
        if not force_reload and self._raw_changed():
            warnings.warn(f"the raw data in {self.raw_dir} changed since it was processed into "
                          f"{self.processed_dir}: processing it again", stacklevel=2)
            force_reload = True
        super().__init__(root, transform, pre_transform, pre_filter, log, force_reload)
        self._load()

    # ----- PyG Dataset interface ------------------------------------------------------------
    @property
    def raw_file_names(self) -> list[str]:
        return [MANIFEST]

    @property
    def processed_dir(self) -> str:
        return osp.join(self.root, 'processed', self._name)

    @property
    def processed_file_names(self) -> list[str]:
        return [f'{s}.npy' for s in SPLITS] + ['samples.npz', 'meta.json']

    def len(self) -> int:
        return len(self._y)

    def get(self, idx: int) -> Data:
        if self._samples is None:  # opened lazily: a memmap must not be pickled to workers
            self._samples = np.load(osp.join(self.processed_dir, f'{self.split}.npy'),
                                    mmap_mode='r')
        x = torch.from_numpy(np.array(self._samples[idx])).unsqueeze(-1)
        s = slice(idx, idx + 1)
        data = Data(x=x, y=self._y[s], omega_m=self._omega_m[s], sigma_8=self._sigma_8[s],
                    map_id=self._map_id[s], patch_id=self._patch_id[s])
        if self.attach_graph:
            graph = self.graph
            for key in GRAPH_KEYS:
                if key in graph:
                    data[key] = graph[key]
        return data

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_samples'] = None
        return state

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({len(self)}, split='{self.split}', nside={self.nside}, "
                f"order={self.order})")

    # ----- properties -------------------------------------------------------------------------
    @property
    def nside(self) -> int:
        """Resolution of the processed maps."""
        return self.meta['nside']

    @property
    def order(self) -> int:
        """Patch order :math:`o`."""
        return self.meta['order']

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
        return len(self.meta['classes'])

    @property
    def num_node_features(self) -> int:
        return 1

    @property
    def files(self) -> list[str]:
        """Raw file of every map, indexed by ``map_id``."""
        return self.meta['files']

    @property
    def map_std(self) -> float:
        """Standard deviation of the processed training maps' observed pixels (of all maps if
        there are no training maps): the unit of :class:`~pyg_sphere.transforms.AddGaussianNoise`'s
        relative noise level, the same for every split."""
        return self.meta['map_std']

    @property
    def graph(self) -> Data:
        """The graph shared by all samples: :func:`~pyg_sphere.healpix_graph` of patch 0
        (nested, ``k`` neighbours), built on first use and memoised."""
        if self._graph is None:
            pixels = nested_patches(self.nside, self.order)[0]
            self._graph = healpix_graph(self.nside, pixels, k=self.k, nest=True,
                                        **self.graph_kwargs)
        return self._graph

    def patch_pixels(self, patch_id: int) -> torch.Tensor:
        """Nested HEALPix ids (at :attr:`nside`) of the pixels of patch ``patch_id``, [N]."""
        return nested_patches(self.nside, self.order)[patch_id]

    # ----- processing ---------------------------------------------------------------------------
    def _fingerprint(self) -> Optional[dict]:
        """Content hash of the manifest and size/mtime of every raw file it lists."""
        path = osp.join(self.raw_dir, MANIFEST)
        if not osp.isfile(path):
            return None
        with open(path, 'rb') as f:
            content = f.read()
        stats = {}
        with open(path, newline='') as f:
            for r in csv.DictReader(f):
                name = (r.get('file') or '').strip()
                full = osp.join(self.raw_dir, name)
                if name and osp.isfile(full):
                    st = os.stat(full)
                    stats[name] = [st.st_size, st.st_mtime_ns]
        return {'manifest_sha1': hashlib.sha1(content).hexdigest(), 'files': stats}

    def _raw_changed(self) -> bool:
        meta = osp.join(self.processed_dir, 'meta.json')
        if not osp.isfile(meta):
            return False
        fingerprint = self._fingerprint()
        if fingerprint is None:  # raw data removed: keep using the processed copy
            return False
        with open(meta) as f:
            return json.load(f).get('raw') != fingerprint

    def process(self) -> None:
        out = self.processed_dir
        marker = osp.join(out, 'meta.json')
        if osp.exists(marker):  # invalidate first: from here on nothing loads until we finish
            os.remove(marker)
        opts = self.options
        fingerprint = self._fingerprint()
        rows = _read_manifest(osp.join(self.raw_dir, MANIFEST), opts['split_fractions'],
                             opts['split_seed'])
        for row in rows:  # fail on a missing file before spending time on the others
            if not osp.isfile(osp.join(self.raw_dir, row['file'])):
                raise FileNotFoundError(f"{_where(row)}: file not found in {self.raw_dir}")

        order, nside = opts['order'], opts['nside']
        n_maps = {s: sum(r['split'] == s for r in rows) for s in SPLITS}
        parts = {s: osp.join(out, f'{s}.npy.part') for s in SPLITS}
        arrays, count, fields = {}, dict.fromkeys(SPLITS, 0), {s: [] for s in SPLITS}
        acc = {s: np.zeros(3) for s in SPLITS}  # count, sum, sum of squares of observed pixels
        native = None
        try:
            for map_id, row in enumerate(rows):
                m, nest = _read_map(osp.join(self.raw_dir, row['file']), row, opts['npy_nest'])
                map_nside = hp.npix2nside(m.size)
                if nside is None:
                    native = native or (map_nside, row)
                    if map_nside != native[0]:
                        raise ValueError(
                            f"maps of different nside without a target nside: {_where(row)} has "
                            f"nside {map_nside}, {_where(native[1])} has {native[0]}; pass nside= "
                            "to resample all maps to one resolution")
                target = nside or map_nside
                if order > target:
                    raise ValueError(f"order {order} is larger than the nside {target} of "
                                     f"{_where(row)}")
                if not arrays:  # patch size known from here on
                    patches = nested_patches(target, order).numpy()
                    for s in SPLITS:
                        arrays[s] = np.lib.format.open_memmap(
                            parts[s], mode='w+', dtype=np.float32,
                            shape=(n_maps[s] * patches.shape[0], patches.shape[1]))
                try:
                    m = _prepare_map(m, nest, target, opts['smoothing_arcmin'])
                except ValueError as e:
                    raise ValueError(f"{_where(row)}: {e}") from e
                values = m[patches]
                observed = values != hp.UNSEEN
                values[~observed] = 0.0
                s = row['split']
                for patch_id in range(len(values)):
                    if observed[patch_id].mean() < opts['min_observed']:
                        continue
                    x = values[patch_id]
                    if self.pre_filter is not None or self.pre_transform is not None:
                        x = self._pre(x, row, map_id, patch_id)
                        if x is None:
                            continue
                    arrays[s][count[s]] = x
                    count[s] += 1
                    fields[s].append((row['label'], row['omega_m'], row['sigma_8'], map_id,
                                      patch_id))
                    v = x[observed[patch_id]]
                    acc[s] += (v.size, v.sum(), np.square(v).sum())

            total = acc['train'] if acc['train'][0] > 0 else sum(acc.values())
            if total[0] == 0:
                raise ValueError("no patch was kept: every patch has unobserved pixels or was "
                                 "dropped by pre_filter; lower min_observed")
            mean = total[1] / total[0]
            std = float(np.sqrt(max(total[2] / total[0] - mean**2, 0.0)))

            samples = {}
            for s in SPLITS:
                arr = arrays.pop(s)
                if count[s] < len(arr):  # patches were dropped: copy into an exact-size file
                    arr = _shrink(arr, count[s], parts[s])
                arr.flush()
                del arr
                os.replace(parts[s], osp.join(out, f'{s}.npy'))
                f = np.array(fields[s], dtype=np.float64).reshape(-1, 5)
                samples.update({f'{s}_y': f[:, 0].astype(np.int64), f'{s}_omega_m': f[:, 1],
                                f'{s}_sigma_8': f[:, 2], f'{s}_map_id': f[:, 3].astype(np.int64),
                                f'{s}_patch_id': f[:, 4].astype(np.int64)})
            with open(osp.join(out, 'samples.npz.part'), 'wb') as fh:
                np.savez(fh, **samples)
            os.replace(osp.join(out, 'samples.npz.part'), osp.join(out, 'samples.npz'))

            meta = {
                'options': opts, 'raw': fingerprint, 'nside': int(nside or native[0]),
                'order': order, 'files': [r['file'] for r in rows],
                'classes': sorted({r['label'] for r in rows}),
                'num_samples': count, 'map_std': std,
            }
            with open(marker + '.part', 'w') as fh:
                json.dump(meta, fh, indent=1)
            os.replace(marker + '.part', marker)  # last: marks the directory complete
        finally:
            arrays.clear()
            for path in list(parts.values()) + [osp.join(out, 'samples.npz.part')]:
                if osp.exists(path):
                    os.remove(path)

    def _pre(self, x: np.ndarray, row: dict, map_id: int, patch_id: int) -> Optional[np.ndarray]:
        """Runs ``pre_filter``/``pre_transform`` on one patch; ``None`` drops it."""
        n = len(x)
        data = Data(x=torch.from_numpy(x.astype(np.float32)).unsqueeze(-1),
                    y=torch.tensor([row['label']]),
                    omega_m=torch.tensor([row['omega_m']], dtype=torch.float32),
                    sigma_8=torch.tensor([row['sigma_8']], dtype=torch.float32),
                    map_id=torch.tensor([map_id]), patch_id=torch.tensor([patch_id]))
        if self.pre_filter is not None and not self.pre_filter(data):
            return None
        if self.pre_transform is not None:
            data = self.pre_transform(data)
            if tuple(data.x.shape) != (n, 1):
                raise ValueError(f"pre_transform must keep x of shape [{n}, 1], "
                                 f"got {list(data.x.shape)}")
        return data.x.detach().cpu().numpy()[:, 0]

    def _load(self) -> None:
        with open(osp.join(self.processed_dir, 'meta.json')) as f:
            self.meta = json.load(f)
        s = self.split
        with np.load(osp.join(self.processed_dir, 'samples.npz')) as z:
            self._y = torch.from_numpy(z[f'{s}_y'])
            self._omega_m = torch.from_numpy(z[f'{s}_omega_m'].astype(np.float32))
            self._sigma_8 = torch.from_numpy(z[f'{s}_sigma_8'].astype(np.float32))
            self._map_id = torch.from_numpy(z[f'{s}_map_id'])
            self._patch_id = torch.from_numpy(z[f'{s}_patch_id'])


def _shrink(arr: np.memmap, rows: int, path: str) -> np.memmap:
    """Copies the first ``rows`` rows of a memmap into a new exact-size file at ``path``."""
    tmp = path + '.shrink'
    out = np.lib.format.open_memmap(tmp, mode='w+', dtype=arr.dtype, shape=(rows,) + arr.shape[1:])
    step = max(1, (64 << 20) // max(arr[0].nbytes, 1))  # ~64 MB at a time
    for i in range(0, rows, step):
        out[i:i + step] = arr[i:min(i + step, rows)]
    del arr
    os.replace(tmp, path)
    return out


def _repr(obj) -> str:
    """``repr`` without memory addresses (as PyG compares ``pre_transform``)."""
    return 'None' if obj is None else re.sub(r' at 0x[0-9a-fA-F]+', '', repr(obj))
