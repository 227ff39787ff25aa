"""Weak-lensing convergence maps cut into nested HEALPix patches, as a PyG dataset.

The dataset class lives here; what it is made of lives beside it: the readers of the raw maps
(:mod:`._map_readers`), the processing of a collection (:mod:`._map_processing`) and the arrays
it writes (:mod:`._patch_writer`), and the processed folder's key, freshness and lock
(:mod:`._processed_folder`)."""

from __future__ import annotations

import json
import os
import os.path as osp
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch_geometric.data import Data, Dataset

from .._validate import check_choice, check_int
from ..graph import healpix_graph, nested_patches
from ..graph._keys import GRAPH_KEYS
from ._manifest import MANIFEST, SPLITS
from ._map_masks import DEGRADE_OBSERVED
from ._map_processing import MapProcessor
from ._processed_folder import folder_name, process_once, processing_options, variant

__all__ = ["ConvergenceMaps"]


class ConvergenceMaps(Dataset):
    r"""HEALPix convergence maps (or any scalar sky maps) cut into nested patches, one per sample.

    This is the data of DeepSphere's cosmological model discrimination (Perraudin et al. 2019):
    full-sky or partial maps of two (or more) cosmologies, each cut into the :math:`12 o^2`
    patches of order :math:`o` (:math:`o = 1`: 1/12 of the sky, 2: 1/48, 4: 1/192).

    **Raw data** in ``root/raw/``: FITS maps written by healpy (ordering from the ``ORDERING``
    keyword; column(s) ``field`` of a multi-column file) or ``.npy``/``.npz`` arrays (ordering
    given by ``npy_nest``), of a power-of-2 nside, and ``manifest.csv`` with the columns
    ``file,label``
    (``label`` may be left out, see below) and optionally ``omega_m,sigma_8,split``
    (``train``, ``val`` or ``test``). Without a ``split`` column, maps are split per class by a
    seeded permutation. Splits are always by map: the patches of one map never appear in two
    splits. Unobserved pixels are ``healpy.UNSEEN`` (or ``masked_value``). Errors name the file
    and its line in the manifest.

    **Channels**: a sample may hold several maps of one sky, e.g. one per tomographic bin, as
    the channels of ``x`` [N, C]: several FITS columns (``field=(0, 1, 2, 3)``, as healpy's
    ``read_map``) and/or several files per manifest row, separated by ``;`` in the ``file``
    cell (``bin0.fits;bin1.fits;bin2.fits``; every row lists as many, which share nside and
    ordering). Channels go file by file, then column by column. They share one mask: a pixel
    unobserved in one channel is unobserved in all, so a patch is kept or dropped for all its
    channels at once. ``observed_channel=True`` appends the observed fraction of every pixel
    (1 or 0 at the maps' resolution) as a last channel.

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
    ``ud_grade`` to ``nside``, convert to nested ordering and cut into patches. Degrading to a
    lower nside keeps a pixel observed when at least ``degrade_observed`` of its children are
    (default: half; healpy's own default keeps any pixel with one observed child, which widens a
    survey's footprint); the log (``log=True``) gives the observed footprint before and after. A
    patch is kept when at least ``min_observed`` of its pixels are observed; its unobserved
    pixels are set to 0 (the removed mean). A warning lists the maps that contribute no patch,
    and a split whose maps contribute none is an error. Asking for a higher ``nside`` than a map
    has warns: upgrading invents no information. Patches go into a float32 memory-mapped
    ``.npy`` per split, so collections larger than RAM are processed and read without loading
    them. Other options, or another ``pre_transform``/``pre_filter`` (told apart by their
    ``repr``, or by ``name``), give another folder; if ``manifest.csv`` or a raw file changed
    since processing, a warning is issued and the data is processed again. Processes that
    construct the same dataset at once (every rank of a distributed job) are safe: a lock file
    next to the folder lets one of them process while the others wait, then load the result. See
    ``docs/data.md`` for the layout, the processing and why every sample shares one graph.

    Each item is a :class:`~torch_geometric.data.Data` with ``x`` (the patch's pixel values in
    nested order, one column per channel), ``y`` (class index, -1 without labels), ``omega_m``,
    ``sigma_8``, ``map_id`` (row of the map in the manifest, 0-based) and ``patch_id`` (the
    sample's HEALPix ids are ``patch_id * N + arange(N)``). **Which loader:** items carry no
    ``edge_index`` by default, because every sample uses :attr:`graph`, the graph of patch 0;
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
        field (int or tuple of int): Column(s) of the FITS files to read (healpy's ``field``:
            0 is the first map column, e.g. temperature or kappa; 1 the next, e.g. Q or gamma1);
            a tuple reads several columns as channels. ``.npy``/``.npz`` maps have one column,
            field 0. (default: 0)
        smoothing_arcmin (float, optional): FWHM of a Gaussian smoothing applied at the maps'
            native resolution (DeepSphere used 3 arcmin). (default: ``None``, no smoothing)
        npy_nest (bool): Ordering of ``.npy``/``.npz`` maps (FITS say it in their header).
            (default: ``False``, ring)
        min_observed (float): Smallest fraction of observed pixels for a patch to be kept.
            (default: 1.0: patches touching the mask are dropped, so no sample mixes sky and
            fill values)
        masked_value (float, optional): A value that marks unobserved pixels in the files
            besides ``healpy.UNSEEN``, e.g. ``0`` for a mask written as zeros, or ``nan``. A
            warning names the maps where it never occurs, or, without it, the maps with many
            pixels exactly 0. (default: ``None``: only ``UNSEEN``)
        observed_channel (bool): Append the observed fraction of every pixel as a last
            channel (1 or 0 at the maps' resolution; after degrading, the fraction of observed
            children of an observed pixel; always 0 where a pixel is unobserved), e.g. as a
            (value, observed) input. (default: ``False``)
        degrade_observed (float): Fraction of its children that must be observed for a pixel
            of a lower ``nside`` to be observed, in [0, 1]; ``0``: one child is enough
            (healpy's ``ud_grade``), ``1``: all (``pess=True``). (default: 0.5, which keeps
            the observed area close to the mask's)
        split_fractions (tuple): (train, val, test) fractions of the maps of each class when the
            manifest has no ``split`` column. (default: ``(0.8, 0.1, 0.1)``)
        split_seed (int): Seed of that split. (default: 0)
        pre_transform, pre_filter (callable, optional): As in
            :class:`~torch_geometric.data.Dataset`: they see each patch during processing as it
            would be served (``y`` is the class index); ``pre_transform`` may change the values
            of ``x`` (keeping its shape [N, C]), other changes are not stored. Their ``repr``
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

    Shapes:
        - **item:** x [N, C] float32 with :math:`N = (nside / o)^2` and C channels (1 by
          default; :attr:`num_node_features`), y [1] int64,
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
        >>> flagged = ConvergenceMaps(root, nside=4, observed_channel=True, log=False)
        >>> flagged[0].x.shape, flagged.num_node_features  # the map, then its observed flags
        (torch.Size([16, 2]), 2)
    """

    def __init__(
        self,
        root: str,
        nside: Optional[int] = None,
        order: int = 1,
        split: str = "train",
        *,
        field: Union[int, Sequence[int]] = 0,
        smoothing_arcmin: Optional[float] = None,
        npy_nest: bool = False,
        min_observed: float = 1.0,
        masked_value: Optional[float] = None,
        observed_channel: bool = False,
        degrade_observed: float = DEGRADE_OBSERVED,
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
    ) -> None:
        self.split = check_choice("split", split, SPLITS)
        self.num_neighbors = check_int("num_neighbors", num_neighbors, 1)
        self.graph_kwargs = dict(graph_kwargs or {})
        self.attach_graph = bool(attach_graph)
        self.options = processing_options(
            nside,
            order,
            field,
            smoothing_arcmin,
            npy_nest,
            min_observed,
            split_fractions,
            split_seed,
            masked_value,
            observed_channel,
            degrade_observed,
        )
        self.options.update(variant(pre_transform, pre_filter, name))
        self._name = folder_name(self.options)
        self._samples = None
        self._graph = None
        super().__init__(root, transform, pre_transform, pre_filter, log, force_reload)
        process_once(self)  # under a lock, unless the folder is complete and up to date
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

    @property
    def has_process(self) -> bool:
        """``False``: PyG's constructor, which checks then processes, leaves the processing to
        :meth:`__init__`, which processes under a lock and checks the raw data for changes
        (PyG's public hook for such datasets)."""
        return False

    def process(self) -> None:
        """Processes the raw data into :attr:`processed_dir` (called under a lock by
        :meth:`__init__` when the folder is missing or out of date)."""
        talk = self.log and "PYTEST_CURRENT_TEST" not in os.environ  # as process_once
        processor = MapProcessor(
            self.raw_dir, self.options, self.pre_transform, self.pre_filter, log=talk
        )
        processor.run(self.processed_dir)

    def len(self) -> int:
        return len(self._y)

    def get(self, idx: int) -> Data:
        if self._samples is None:  # opened lazily: a memmap must not be pickled to workers
            path = osp.join(self.processed_dir, f"{self.split}.npy")
            self._samples = np.load(path, mmap_mode="r")
        x = torch.from_numpy(np.array(self._samples[idx]))
        if x.dim() == 1:  # one channel is stored as [samples, N]
            x = x.unsqueeze(-1)
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
        """Channels C of ``x`` [N, C]: the maps read per sample, plus the observed channel."""
        return self.meta["channels"]

    @property
    def labels(self) -> torch.Tensor:
        """The class of every sample of the dataset, int64 [len(dataset)] (a copy; it follows
        the indices of a subset such as ``dataset[:10]`` or ``dataset.shuffle()``), e.g. to
        count classes or stratify without reading the patches."""
        indices = self.indices()
        if isinstance(indices, range):  # the whole split, or a slice of it
            return self._y[torch.arange(indices.start, indices.stop, indices.step)]
        return self._y[torch.as_tensor(indices, dtype=torch.long)]

    @property
    def files(self) -> list[str]:
        """Raw file of every map, indexed by ``map_id``."""
        return self.meta["files"]

    @property
    def map_std(self) -> float:
        """Standard deviation of the processed training maps' observed pixels (of all maps if
        there are no training maps; all map channels together): the unit of
        :class:`~pyg_sphere.transforms.AddGaussianNoise`'s relative noise level, the same for
        every split."""
        return self.meta["map_std"]

    @property
    def channel_std(self) -> list[float]:
        """:attr:`map_std` of every channel of ``x`` (0 for the observed channel), e.g. the
        ``std`` of :class:`~pyg_sphere.transforms.AddGaussianNoise` for noise per channel."""
        return list(self.meta["channel_std"])

    @property
    def footprint(self) -> dict:
        """Mean observed fraction of the sky over the maps (every channel observed): ``'raw'``
        at the maps' resolution, ``'processed'`` at :attr:`nside` after the degrading rule."""
        return dict(self.meta["footprint"])

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

    def _load(self) -> None:
        """Reads ``meta.json`` and the per-sample fields of :attr:`split`; the patches are
        opened on first access (:meth:`get`)."""
        with open(osp.join(self.processed_dir, "meta.json")) as f:
            self.meta = json.load(f)
        s = self.split
        with np.load(osp.join(self.processed_dir, "samples.npz")) as z:
            self._y = torch.from_numpy(z[f"{s}_y"])
            self._omega_m = torch.from_numpy(z[f"{s}_omega_m"].astype(np.float32))
            self._sigma_8 = torch.from_numpy(z[f"{s}_sigma_8"].astype(np.float32))
            self._map_id = torch.from_numpy(z[f"{s}_map_id"])
            self._patch_id = torch.from_numpy(z[f"{s}_patch_id"])
