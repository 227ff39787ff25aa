"""Batches of maps on one shared graph: x as [B, N, F] plus a single edge_index."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torch_geometric.data import Data

# Fields of a healpix_graph that a batch carries: what convolutions read (edges, lambda_max)
# and what pooling needs to find the coarser graph (pixels and the graph's parameters).
GRAPH_KEYS = ('edge_index', 'edge_weight', 'pixels', 'nside', 'nest', 'k', 'kernel_width',
              'variant', 'lambda_max')


class SharedGraphCollater:
    r"""Collates items that live on the same graph into one :class:`~torch_geometric.data.Data`.

    Node-level tensors (``x`` and any tensor with ``graph.num_nodes`` rows) are stacked into
    [B, N, ...]; graph-level tensors such as ``y`` [1] are concatenated into [B, ...]; Python
    numbers become a tensor [B]. The graph's ``edge_index``, ``edge_weight``, ``pixels`` and
    its parameters (``nside``, ``nest``, ``k``, ``kernel_width``, ``variant``, ``lambda_max``:
    what convolutions and :class:`~pyg_sphere.nn.HealpixPool` read) are attached once (the
    same tensors, not copies); graph fields present on the items are ignored. ``num_nodes`` is N and ``num_graphs`` is B; there is no
    ``batch`` vector (``data.batch`` is ``None``), which is how PyG's global pooling functions and
    :class:`~pyg_sphere.nn.SphericalChebConv` recognise a shared-graph batch.

    Args:
        graph (Data): The shared graph, e.g. :attr:`ConvergenceMaps.graph
            <pyg_sphere.datasets.ConvergenceMaps.graph>`.
    """

    def __init__(self, graph: Data) -> None:
        if getattr(graph, 'edge_index', None) is None or graph.num_nodes is None:
            raise TypeError("graph must be a Data with edge_index and num_nodes, "
                            "e.g. pyg_sphere.healpix_graph(...)")
        self.graph = graph

    def __call__(self, items: Sequence[Data]) -> Data:
        if len(items) == 0:
            raise ValueError("cannot collate an empty batch")
        n = self.graph.num_nodes
        out = Data()
        for key in items[0].keys():
            if key in GRAPH_KEYS or key == 'num_nodes':
                continue
            values = [item[key] for item in items]
            first = values[0]
            if isinstance(first, Tensor):
                if key == 'x' or (first.dim() >= 1 and first.size(0) == n and n > 1):
                    bad = [tuple(v.shape) for v in values if v.shape != first.shape]
                    if key == 'x' and first.size(0) != n or bad:
                        raise ValueError(
                            f"items' '{key}' must all have {n} rows (the shared graph's node "
                            f"count) and one shape; got {tuple(first.shape)} and {bad[:3]}: "
                            "are the items from another nside or patch order than the graph?")
                    out[key] = torch.stack(values)
                elif first.dim() == 0:
                    out[key] = torch.stack(values)
                else:
                    out[key] = torch.cat(values)
            elif isinstance(first, (bool, int, float)):
                out[key] = torch.tensor(values)
            else:
                out[key] = values
        for key in GRAPH_KEYS:
            if key in self.graph:
                out[key] = self.graph[key]
        out.num_nodes = n
        out.num_graphs = len(items)
        return out

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(num_nodes={self.graph.num_nodes})'


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

    Args:
        dataset (Dataset): Items with ``x`` [N, F] and graph-level fields; no ``edge_index``
            needed.
        batch_size (int): Samples per batch. (default: 1)
        shuffle (bool): Reshuffle every epoch. (default: ``False``)
        graph (Data, optional): The shared graph; defaults to ``dataset.graph``.
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

    def __init__(self, dataset: Any, batch_size: Optional[int] = 1, shuffle: bool = False,
                 graph: Optional[Data] = None, **kwargs) -> None:
        if batch_size is None:
            raise ValueError("SharedGraphLoader collates batches: batch_size must be an int, "
                             "got None; for single items, index the dataset")
        if 'collate_fn' in kwargs:
            raise TypeError("SharedGraphLoader sets collate_fn itself; use torch's DataLoader "
                            "for a custom one")
        if graph is None:
            graph = getattr(dataset, 'graph', None)
            if graph is None:
                raise ValueError("the dataset has no .graph: pass the shared graph as graph=")
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle,
                         collate_fn=SharedGraphCollater(graph), **kwargs)
        self.graph = graph
