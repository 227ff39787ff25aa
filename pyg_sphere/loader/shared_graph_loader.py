"""Batches of maps on one shared graph: x as [B, N, F] plus a single edge_index."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torch_geometric.data import Data

from ..graph._keys import GRAPH_KEYS

__all__ = ["SharedGraphCollater", "SharedGraphLoader"]

#: What identifies the nodes of a :func:`~pyg_sphere.healpix_graph`: nside, nest, pixel ids.
_Nodes = Tuple[int, bool, Tensor]


class SharedGraphCollater:
    r"""Collates items that live on the same graph into one :class:`~torch_geometric.data.Data`.

    What is node-level follows PyG's own rules (:meth:`~torch_geometric.data.Data.is_node_attr`
    and :meth:`~torch_geometric.data.Data.__cat_dim__` of the items, as for PyG's
    :class:`~torch_geometric.loader.DataLoader`): node-level tensors (``x`` and any tensor with
    N entries along its concatenation dimension) are stacked into [B, N, ...], every item's
    holding N rows; graph-level tensors are concatenated along their ``__cat_dim__`` (``y`` [1]
    becomes [B]), or stacked into [B, ...] when ``__cat_dim__`` is ``None`` or they are
    0-dimensional; Python numbers become a tensor [B]; anything else a list. On a one-node graph
    every tensor has one row, so there only ``x`` is taken as node-level.

    The graph's ``edge_index``, ``edge_weight``, ``pixels`` and its parameters (``nside``,
    ``nest``, ``num_neighbors``, ``kernel_width``, ``variant``, ``lambda_max``: what
    convolutions and :class:`~pyg_sphere.nn.HealpixPool` read) are attached once (the same
    tensors, not copies); graph fields present on the items are ignored. ``num_nodes`` is N and
    ``num_graphs`` is B; there is no ``batch`` vector (``data.batch`` is ``None``), which is how
    PyG's global pooling functions and :class:`~pyg_sphere.nn.SphericalChebConv` recognise a
    shared-graph batch.

    Items that carry a graph of their own (``nside``, ``nest``, ``pixels``, as
    ``ConvergenceMaps(attach_graph=True)`` gives) must be on the same pixels as :obj:`graph`:
    the same nside, ordering and pixel ids, else a :class:`ValueError` says what differs.

    Args:
        graph (Data): The shared graph, e.g. :attr:`ConvergenceMaps.graph
            <pyg_sphere.datasets.ConvergenceMaps.graph>`.

    Shapes:
        - **input:** B items with x [N, F] and graph-level fields such as y [1]
        - **output:** x [B, N, F], y [B]; edge_index [2, E], edge_weight [E] of the graph

    Example::

        >>> import torch
        >>> from torch_geometric.data import Data
        >>> graph = Data(edge_index=torch.tensor([[0, 1, 2], [1, 2, 0]]), num_nodes=3)
        >>> items = [Data(x=torch.randn(3, 2), y=torch.tensor([i]), w=0.5) for i in range(4)]
        >>> batch = SharedGraphCollater(graph)(items)
        >>> batch.x.shape, batch.y.tolist(), batch.w.shape, batch.num_graphs
        (torch.Size([4, 3, 2]), [0, 1, 2, 3], torch.Size([4]), 4)
    """

    def __init__(self, graph: Data) -> None:
        if getattr(graph, "edge_index", None) is None or graph.num_nodes is None:
            raise TypeError(
                "graph must be a Data with edge_index and num_nodes, "
                "e.g. pyg_sphere.healpix_graph(...)"
            )
        self.graph = graph

    def __call__(self, items: Sequence[Data]) -> Data:
        if len(items) == 0:
            raise ValueError("cannot collate an empty batch")
        self._check_items(items)
        out = Data()
        for key in items[0].keys():
            if key in GRAPH_KEYS or key == "num_nodes":
                continue
            out[key] = self._collate(key, [item[key] for item in items], items[0])
        for key in GRAPH_KEYS:
            if key in self.graph:
                out[key] = self.graph[key]
        out.num_nodes = self.graph.num_nodes
        out.num_graphs = len(items)
        return out

    def _check_items(self, items: Sequence[Data]) -> None:
        """Checks the graph that items carry, if any, against :attr:`graph`."""
        mine = getattr(self.graph, "pixels", None)
        for item in items:
            pixels = getattr(item, "pixels", None)
            if pixels is None or pixels is mine:  # none, or the very same graph's
                continue
            nodes = _nodes_of(item)
            if nodes is not None:
                _check_nodes(self.graph, nodes, "the items")

    def _collate(self, key: str, values: list, item: Data):
        first = values[0]
        if isinstance(first, (bool, int, float)):
            return torch.tensor(values)
        if not isinstance(first, Tensor):
            return values
        if self._is_node_level(key, item):
            return self._stack_nodes(key, values, item.__cat_dim__(key, first))
        cat_dim = item.__cat_dim__(key, first)
        if cat_dim is None or first.dim() == 0:
            return torch.stack(values)
        try:
            return torch.cat(values, dim=cat_dim)
        except RuntimeError as e:
            raise ValueError(
                f"items' graph-level '{key}' cannot be concatenated along dimension {cat_dim} "
                f"(shapes {[tuple(v.shape) for v in values[:3]]}...): {e}"
            ) from e

    def _is_node_level(self, key: str, item: Data) -> bool:
        if key == "x":
            return True
        # A new batch dimension (cat_dim None) is graph-level; torch-geometric 2.5's
        # is_node_attr fails on it, so it is not asked.
        if item.__cat_dim__(key, item[key]) is None:
            return False
        return self.graph.num_nodes > 1 and item.is_node_attr(key)

    def _stack_nodes(self, key: str, values: list, cat_dim) -> Tensor:
        n, first = self.graph.num_nodes, values[0]
        dim = 0 if cat_dim is None else cat_dim
        bad = [tuple(v.shape) for v in values if v.shape != first.shape]
        if first.dim() == 0 or first.size(dim) != n or bad:
            raise ValueError(
                f"items' '{key}' must all have {n} rows (the shared graph's node count) and "
                f"one shape; got {tuple(first.shape)} and {bad[:3]}: are the items from "
                "another nside or patch order than the graph?"
            )
        return torch.stack(values)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_nodes={self.graph.num_nodes})"


class SharedGraphLoader(DataLoader):
    r"""A :class:`torch.utils.data.DataLoader` whose batches put B samples on one shared graph.

    The fast alternative to PyG's :class:`~torch_geometric.loader.DataLoader` when all samples
    live on the same graph (the patches of :class:`~pyg_sphere.datasets.ConvergenceMaps`):
    instead of a disjoint union that repeats and offsets ``edge_index`` B times, each batch holds
    ``x`` as [B, N, F] and the graph once, which is what the batched path of
    :class:`~pyg_sphere.nn.SphericalChebConv` (and every PyG layer that accepts [B, N, F] with a
    static graph) consumes. The same model code accepts both loaders' batches, as long as it
    reads ``data.batch`` (``None`` here) for its pooling. Items are read through
    ``dataset[i]``, so the dataset's ``transform`` (e.g. noise) applies.

    A :obj:`graph` passed for a dataset that has its own (such as
    :class:`~pyg_sphere.datasets.ConvergenceMaps`) must be a :func:`~pyg_sphere.healpix_graph`
    on the same pixels: the same nside, ordering (``nest``) and pixel ids, so that row ``i``
    of every sample is node ``i`` of the graph; other graph options (``num_neighbors``,
    ``kernel_width``, ``variant``) may differ. A graph of another nside, a ring graph with
    the same number of pixels or a plain :class:`~torch_geometric.data.Data` is refused with
    a :class:`ValueError` that says what differs.

    Args:
        dataset (Dataset): Items with ``x`` [N, F] and graph-level fields; no ``edge_index``
            needed.
        batch_size (int): Samples per batch. (default: 1)
        shuffle (bool): Reshuffle every epoch. (default: ``False``)
        graph (Data, optional): The shared graph; defaults to ``dataset.graph``. For
            :class:`~pyg_sphere.datasets.ConvergenceMaps`, another graph on the same pixels
            is e.g. ``healpix_graph(ds.nside, ds.patch_pixels(0), num_neighbors=20)``.
        **kwargs: Other :class:`torch.utils.data.DataLoader` arguments (``num_workers``,
            ``drop_last``, ``sampler``, ``pin_memory``, ...).

    Shapes:
        - **batch:** x [B, N, F], y [B], other graph-level fields [B, ...];
          edge_index [2, E], edge_weight [E], pixels [N] of the shared graph

    Example::

        >>> import torch
        >>> from torch_geometric.data import Data
        >>> graph = Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=2)
        >>> items = [Data(x=torch.randn(2, 1), y=torch.tensor([i % 2])) for i in range(5)]
        >>> batch = next(iter(SharedGraphLoader(items, batch_size=4, graph=graph)))
        >>> batch.x.shape, batch.y.shape, batch.edge_index.shape, batch.batch
        (torch.Size([4, 2, 1]), torch.Size([4]), torch.Size([2, 2]), None)
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: Optional[int] = 1,
        shuffle: bool = False,
        graph: Optional[Data] = None,
        **kwargs,
    ) -> None:
        if batch_size is None:
            raise ValueError(
                "SharedGraphLoader collates batches: batch_size must be an int, "
                "got None; for single items, index the dataset"
            )
        if "collate_fn" in kwargs:
            raise TypeError(
                "SharedGraphLoader sets collate_fn itself; use torch's DataLoader for a custom one"
            )
        if graph is None:
            graph = getattr(dataset, "graph", None)
            if graph is None:
                raise ValueError("the dataset has no .graph: pass the shared graph as graph=")
        else:
            nodes = _dataset_nodes(dataset)
            if nodes is not None:
                _check_nodes(graph, nodes, "the dataset's items")
        super().__init__(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=SharedGraphCollater(graph),
            **kwargs,
        )
        self.graph = graph


def _nodes_of(graph: Data) -> Optional[_Nodes]:
    """``(nside, nest, pixel ids)`` of a graph made by :func:`~pyg_sphere.healpix_graph` (or
    an item carrying one); ``None`` when it lacks these attributes."""
    values = [getattr(graph, key, None) for key in ("nside", "nest", "pixels")]
    if any(v is None for v in values):
        return None
    nside, nest, pixels = values
    return int(nside), bool(nest), torch.as_tensor(pixels).reshape(-1)


def _dataset_nodes(dataset: Any) -> Optional[_Nodes]:
    """The nodes a dataset's items live on, if it says: cheaply when it can tell without
    building its graph, else from its ``.graph``."""
    own = getattr(dataset, "_graph_nodes", None)
    if callable(own):
        return own()
    graph = getattr(dataset, "graph", None)
    return _nodes_of(graph) if isinstance(graph, Data) else None


def _span(pixels: Tensor) -> str:
    """Pixel ids in a few words: a range when they are consecutive."""
    n = pixels.numel()
    if n == 0:
        return "none"
    first, last = int(pixels[0]), int(pixels[-1])
    if last - first == n - 1 and bool((pixels.diff() == 1).all()):
        return f"{first}...{last}"
    head = ", ".join(str(int(p)) for p in pixels[:4])
    return f"[{head}{', ...' if n > 4 else ''}] ({n} ids)"


def _check_nodes(graph: Data, nodes: _Nodes, whose: str) -> None:
    """Raises unless :obj:`graph` is a :func:`~pyg_sphere.healpix_graph` on :obj:`nodes`
    (``(nside, nest, pixel ids)`` of :obj:`whose`, e.g. ``"the items"``), naming what differs."""
    nside, nest, pixels = nodes

    def ordering(n):
        return "nested" if n else "ring"

    got = _nodes_of(graph)
    if got is None:
        raise ValueError(
            "the shared graph has no nside, nest or pixels attributes, so it cannot be checked "
            f"against the pixels of {whose} (nside {nside}, {ordering(nest)}, {pixels.numel()} "
            "pixels): it must come from pyg_sphere.healpix_graph, e.g. the dataset's own graph "
            "(dataset.graph)"
        )
    g_nside, g_nest, g_pixels = got
    problems = []
    if g_nside != nside:
        problems.append(f"nside {g_nside} where {whose} have nside {nside}")
    if g_nest != nest:
        problems.append(f"{ordering(g_nest)} ordering where {whose} are {ordering(nest)}")
    if g_pixels.numel() != pixels.numel():
        problems.append(f"{g_pixels.numel()} nodes where {whose} have {pixels.numel()} pixels")
    elif not torch.equal(g_pixels.cpu(), pixels.cpu()):
        problems.append(f"pixel ids {_span(g_pixels)} where {whose} have {_span(pixels)}")
    if problems:
        raise ValueError(
            f"the shared graph does not fit {whose}: it has {'; '.join(problems)}. Pass the "
            "dataset's own graph (dataset.graph), or build one on its pixels, e.g. "
            "pyg_sphere.healpix_graph(ds.nside, ds.patch_pixels(0), nest=True, ...) for "
            "ConvergenceMaps"
        )
