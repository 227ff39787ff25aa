"""Checks and coarse graphs shared by :class:`HealpixPool` and :class:`HealpixUnpool`.

In NESTED ordering the :math:`4^l` children of a pixel ``p`` at :math:`l` levels finer are the
consecutive ids ``p * 4**l + j``, ``j < 4**l``. A graph stores its pixels in ascending order,
so when its region is closed under the hierarchy (every pixel comes with all its siblings)
the children of each coarse pixel are consecutive rows, and pooling is a reshape. A PyG
:class:`~torch_geometric.data.Batch` concatenates such graphs, each with a node count
divisible by :math:`4^l`, so the reshape pools every graph of the batch separately.
"""
import copy
from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from pyg_sphere.nn._sparse import IdentityCache

_CLOSED = IdentityCache(maxsize=32)
_COARSE_BATCHES = IdentityCache(maxsize=8)
_ON_DEVICE = IdentityCache(maxsize=16)

CLOSE_HINT = ("close the region first with pyg_sphere.close_hierarchy(pixels, levels) and "
              "build the graph on the returned pixels")


def check_levels(levels) -> int:
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be an integer >= 1, got {levels!r}")
    return levels


def check_divisible(num_nodes: int, levels: int, what: str = 'x'):
    group = 4**levels
    if num_nodes % group != 0:
        raise ValueError(f"{what} has {num_nodes} pixels, not divisible by 4**{levels} = "
                         f"{group}: a nested map can only be pooled {levels} level(s) when "
                         f"its pixels are closed under the hierarchy; {CLOSE_HINT}")


def is_batch(graph) -> bool:
    return isinstance(graph, Batch) and getattr(graph, 'ptr', None) is not None


def _graph_values(graph, key: str) -> list:
    """A graph attribute as a list (one entry per graph of a batch)."""
    value = getattr(graph, key, None)
    if value is None:
        raise ValueError(f"graph has no `{key}`: pass a graph built by "
                         f"pyg_sphere.healpix_graph (or a PyG Batch of such graphs)")
    if isinstance(value, Tensor):
        return value.reshape(-1).tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def check_graph(graph, num_nodes: int, levels: int, shared_maps: bool) -> List[int]:
    """Checks that :obj:`graph` can be pooled :obj:`levels` times with features of
    :obj:`num_nodes` rows; returns the nside of each graph."""
    if not isinstance(graph, Data) and not isinstance(graph, Batch):
        raise TypeError(f"graph must be a torch_geometric Data or Batch from "
                        f"pyg_sphere.healpix_graph, got {type(graph).__name__}")
    if not all(bool(v) for v in _graph_values(graph, 'nest')):
        raise ValueError("pooling needs maps and graphs in NESTED ordering, but graph.nest is "
                         "False: build the graph with healpix_graph(..., nest=True) and reorder "
                         "maps with healpy.reorder(m, r2n=True)")
    nsides = [int(v) for v in _graph_values(graph, 'nside')]
    if shared_maps and len(set(nsides)) > 1:
        raise ValueError(f"x of shape [B, N, F] holds maps that share one graph, but the graph "
                         f"batch mixes nsides {sorted(set(nsides))}: maps of different nside "
                         f"cannot share a graph; group them by nside, or use a PyG Batch "
                         f"with x of shape [N_total, F]")
    for nside in nsides:
        if nside % 2**levels != 0:
            raise ValueError(f"nside {nside} cannot be pooled {levels} level(s) "
                             f"(needs nside divisible by {2**levels})")
    if graph.num_nodes != num_nodes:
        raise ValueError(f"x has {num_nodes} nodes along its node dimension (-2) but the graph "
                         f"has {graph.num_nodes}: x must be [N, F] or [B, N, F] with "
                         f"N = graph.num_nodes")
    if is_batch(graph):
        counts = (graph.ptr[1:] - graph.ptr[:-1]).tolist()
        for i, count in enumerate(counts):
            check_divisible(count, levels, what=f"graph {i} of the batch")
    else:
        check_divisible(num_nodes, levels, what='the graph')
    check_closed(graph.pixels, levels)
    return nsides


def check_closed(pixels: Tensor, levels: int):
    """Raises unless each run of :math:`4^l` rows holds the children of one coarse pixel."""
    group = 4**levels

    def closed() -> bool:
        p = pixels.reshape(-1, group)
        children = p[:, :1] // group * group + torch.arange(group, device=p.device)
        return bool(torch.equal(p, children))

    if not _CLOSED.get((pixels, ), levels, closed):
        raise ValueError(f"the graph's pixels are not closed under {levels} nested "
                         f"pooling(s) (some pixels lack siblings, or they are not sorted "
                         f"ascending); {CLOSE_HINT}")


# Per-graph attributes of healpix_graph outputs that coarsen_graph reads.
_GRAPH_KEYS = ('nside', 'nest', 'k', 'kernel_width', 'variant', 'lambda_max')


def coarse_graph(graph, levels: int, device: torch.device):
    """The graph after :obj:`levels` poolings, a Batch for a Batch, on :obj:`device`.

    Memoised: the same input graph (or sequence of graphs in a batch) gives a shallow copy of
    the same tensors at every call, so the convolutions' operator caches keep hitting.
    """
    from pyg_sphere.graph import coarsen_graph

    if not is_batch(graph):
        coarse = coarsen_graph(graph, levels)
    else:
        # Describe each graph of the batch by its pixels and graph-level attributes only:
        # cheaper than slicing out its edges with get_example.
        ptr = graph.ptr.tolist()
        values = {key: _graph_values(graph, key) for key in _GRAPH_KEYS if key in graph}
        graphs = []
        for i in range(graph.num_graphs):
            fine = Data(pixels=graph.pixels[ptr[i]:ptr[i + 1]], num_nodes=ptr[i + 1] - ptr[i],
                        **{key: value[i] for key, value in values.items()})
            graphs.append(coarsen_graph(fine, levels))
        # The memoised coarse graphs share their tensors across calls, so the batch of the
        # same sequence of graphs is collated once.
        coarse = _COARSE_BATCHES.get([c.edge_index for c in graphs], levels,
                                     lambda: Batch.from_data_list(graphs))
    if coarse.edge_index.device != device:
        coarse = _ON_DEVICE.get([coarse.edge_index], device, lambda: coarse.to(device))
    return copy.copy(coarse)


def with_features(coarse, source, x: Tensor):
    """:obj:`coarse` (a graph or batch, not modified) with node features :obj:`x` and the
    graph-level attributes of :obj:`source` (like a label :obj:`y`)."""
    out = copy.copy(coarse)
    out.x = x
    graph_keys = [key for key in source.keys() if key not in coarse and key != 'x'
                  and key not in ('batch', 'ptr') and not source.is_node_attr(key)
                  and not source.is_edge_attr(key)]
    for key in graph_keys:
        out[key] = source[key]
    if is_batch(out):
        # Keep the batch splittable (to_data_list / get_example).
        out._slice_dict = dict(out._slice_dict)
        out._inc_dict = dict(out._inc_dict)
        out._slice_dict['x'] = out.ptr
        out._inc_dict['x'] = None
        for key in graph_keys:
            if key in getattr(source, '_slice_dict', {}):
                out._slice_dict[key] = source._slice_dict[key]
                out._inc_dict[key] = source._inc_dict[key]
    return out


def pool_features(x: Tensor, levels: int, reduce: str, return_indices: bool
                  ) -> Tuple[Tensor, Optional[Tensor]]:
    """Reduces each run of :math:`4^l` rows along the node dimension (-2)."""
    group = x.unflatten(-2, (-1, 4**levels))
    if reduce == 'mean':
        return group.mean(-2), None
    if return_indices:
        values, indices = group.max(-2)
        return values, indices
    return group.amax(-2), None
