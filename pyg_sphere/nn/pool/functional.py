"""Pooling and unpooling of nested HEALPix maps, as functions.

In NESTED ordering the :math:`4^l` children of a pixel ``p`` at :math:`l` levels finer are the
consecutive ids ``p * 4**l + j``, ``j < 4**l``. A graph stores its pixels in ascending order,
so when its region is closed under the hierarchy (every pixel comes with all its siblings,
see :func:`pyg_sphere.close_hierarchy`) the children of each coarse pixel are consecutive
rows, and pooling is a reshape. A PyG :class:`~torch_geometric.data.Batch` concatenates such
graphs, each with a node count divisible by :math:`4^l`, so the same reshape pools every graph
of the batch separately.

Tensor functions (:func:`healpix_pool`, :func:`healpix_max_pool_with_indices`,
:func:`healpix_unpool`, :func:`healpix_max_unpool`) act along the node dimension (-2) of
:math:`[N, F]` or :math:`[B, N, F]` features; graph functions (:func:`healpix_pool_graph`,
:func:`healpix_pool_data`) give the coarser graph, memoised so that nothing is rebuilt from
one call to the next.
"""

from __future__ import annotations

import copy
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from ..._validate import check_choice, check_levels
from ...graph import coarsen_graph
from ...graph._keys import GRAPH_KEYS, GRAPH_PARAMS

__all__ = [
    "healpix_pool",
    "healpix_max_pool_with_indices",
    "healpix_unpool",
    "healpix_max_unpool",
    "healpix_pool_graph",
    "healpix_pool_data",
]

CLOSE_HINT = (
    "close the region first with pyg_sphere.close_hierarchy(pixels, levels) and "
    "build the graph on the returned pixels"
)

GraphLike = Union[Data, Batch]


def _check_features(x) -> None:
    if not isinstance(x, Tensor) or x.dim() < 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor [N, F] or [B, N, F] (node dimension -2), got {shape}")


def _check_divisible(num_nodes: int, levels: int, what: str = "x") -> None:
    group = 4**levels
    if num_nodes % group != 0:
        raise ValueError(
            f"{what} has {num_nodes} pixels, not divisible by 4**{levels} = {group}: a nested "
            f"map can only be pooled {levels} level(s) when its pixels are closed under the "
            f"hierarchy; {CLOSE_HINT}"
        )


def _is_batch(graph) -> bool:
    return isinstance(graph, Batch) and getattr(graph, "ptr", None) is not None


def _graph_values(graph, key: str) -> list:
    """A graph attribute as a list (one entry per graph of a batch)."""
    value = getattr(graph, key, None)
    if value is None:
        raise ValueError(
            f"graph has no `{key}`: pass a graph built by pyg_sphere.healpix_graph (or a PyG "
            f"Batch of such graphs); items of ConvergenceMaps carry their graph only with "
            f"attach_graph=True"
        )
    if isinstance(value, Tensor):
        return value.reshape(-1).tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _check_graph(graph, num_nodes: int, levels: int, shared_maps: bool) -> None:
    """Checks that :obj:`graph` can be pooled :obj:`levels` times with features of
    :obj:`num_nodes` rows."""
    if not isinstance(graph, (Data, Batch)):
        raise TypeError(
            f"graph must be a torch_geometric Data or Batch from pyg_sphere.healpix_graph, "
            f"got {type(graph).__name__}"
        )
    if not all(bool(v) for v in _graph_values(graph, "nest")):
        raise ValueError(
            "pooling needs maps and graphs in NESTED ordering, but graph.nest is False: build "
            "the graph with healpix_graph(..., nest=True) and reorder maps with "
            "healpy.reorder(m, r2n=True)"
        )
    nsides = sorted({int(v) for v in _graph_values(graph, "nside")})
    if shared_maps and len(nsides) > 1:
        raise ValueError(
            f"x of shape [B, N, F] holds maps that share one graph, but the graph batch mixes "
            f"nsides {nsides}: maps of different nside cannot share a graph; group them by "
            f"nside, or use a PyG Batch with x of shape [N_total, F]"
        )
    for nside in nsides:
        if nside % 2**levels != 0:
            raise ValueError(
                f"nside {nside} cannot be pooled {levels} level(s) (needs nside divisible by "
                f"{2**levels})"
            )
    if graph.num_nodes != num_nodes:
        raise ValueError(
            f"x has {num_nodes} nodes along its node dimension (-2) but the graph has "
            f"{graph.num_nodes}: x must be [N, F] or [B, N, F] with N = graph.num_nodes"
        )
    if _is_batch(graph):
        counts = (graph.ptr[1:] - graph.ptr[:-1]).tolist()
        for i, count in enumerate(counts):
            _check_divisible(count, levels, what=f"graph {i} of the batch")
    else:
        _check_divisible(num_nodes, levels, what="the graph")
    _check_closed(_graph_pixels(graph), levels)


def _graph_pixels(graph) -> Tensor:
    pixels = getattr(graph, "pixels", None)
    if not isinstance(pixels, Tensor):
        _graph_values(graph, "pixels")  # raises with the explanation
    return pixels


def _check_closed(pixels: Tensor, levels: int) -> None:
    """Raises unless each run of :math:`4^l` rows holds the children of one coarse pixel."""
    group = 4**levels
    # A vectorised comparison, linear in N: cheaper than any cache lookup worth keeping.
    p = pixels.reshape(-1, group)
    children = p[:, :1] // group * group + torch.arange(group, device=p.device)
    if not torch.equal(p, children):
        raise ValueError(
            f"the graph's pixels are not closed under {levels} nested pooling(s) (some pixels "
            f"lack siblings, or they are not sorted ascending); {CLOSE_HINT}"
        )


def _prepare(x: Tensor, levels, graph: Optional[GraphLike]) -> int:
    _check_features(x)
    levels = check_levels(levels, minimum=1)
    if graph is None:
        _check_divisible(x.size(-2), levels)
    else:
        _check_graph(graph, x.size(-2), levels, shared_maps=x.dim() > 2)
    return levels


def healpix_pool(
    x: Tensor, levels: int = 1, reduce: str = "max", *, graph: Optional[GraphLike] = None
) -> Tensor:
    r"""Pools nested HEALPix features by :math:`4^{\text{levels}}`: each pixel of the coarser
    map (:math:`n_\text{side} / 2^\text{levels}`) takes the maximum or the mean of its children.

    Mean pooling equals :func:`healpy.ud_grade` with :obj:`order_in='NEST'`.

    Args:
        x (torch.Tensor): Features :math:`[N, F]` or :math:`[B, N, F]` in nested order.
        levels (int): Number of nside halvings. (default: :obj:`1`)
        reduce (str): :obj:`"max"` or :obj:`"mean"`. (default: :obj:`"max"`)
        graph (Data or Batch, optional): The graph of :obj:`x` (from
            :func:`pyg_sphere.healpix_graph`, or a PyG batch of such graphs): checks that
            :obj:`x` fits it and that its pixels are closed under the hierarchy. Without it,
            only the divisibility of :math:`N` is checked (fine for full-sphere maps).

    Shapes:
        - **input:** :math:`(N, F)` or :math:`(B, N, F)`
        - **output:** :math:`(N / 4^l, F)` or :math:`(B, N / 4^l, F)`

    Example:
        >>> import torch
        >>> from pyg_sphere.nn.pool import healpix_pool
        >>> healpix_pool(torch.arange(8.).view(8, 1), reduce='mean').view(-1).tolist()
        [1.5, 5.5]
    """
    levels = _prepare(x, levels, graph)
    check_choice("reduce", reduce, ("max", "mean"))
    group = x.unflatten(-2, (-1, 4**levels))
    return group.mean(-2) if reduce == "mean" else group.amax(-2)


def healpix_max_pool_with_indices(
    x: Tensor, levels: int = 1, *, graph: Optional[GraphLike] = None
) -> Tuple[Tensor, Tensor]:
    r"""Max pooling (:func:`healpix_pool`) that also returns, for every output value, the
    position of the maximum among its :math:`4^l` children (an offset in :math:`[0, 4^l)`),
    for :func:`healpix_max_unpool`.

    Returns:
        (torch.Tensor, torch.Tensor): the pooled features and the offsets, both of shape
        :math:`(\dots, N / 4^l, F)`.

    Example:
        >>> import torch
        >>> from pyg_sphere.nn.pool import healpix_max_pool_with_indices
        >>> out, idx = healpix_max_pool_with_indices(torch.tensor([[1.], [3.], [2.], [0.]]))
        >>> out.view(-1).tolist(), idx.view(-1).tolist()
        ([3.0], [1])
    """
    levels = _prepare(x, levels, graph)
    values, indices = x.unflatten(-2, (-1, 4**levels)).max(-2)
    return values, indices


def healpix_unpool(x: Tensor, levels: int = 1) -> Tensor:
    r"""Copies each pixel of nested features to its :math:`4^l` children (as
    :func:`healpy.ud_grade` does when raising the resolution of a NESTED map): the inverse of
    :func:`healpix_pool` on the same layouts (full maps, closed regions, PyG batches).

    Shapes:
        - **input:** :math:`(N, F)` or :math:`(B, N, F)`
        - **output:** :math:`(4^l N, F)` or :math:`(B, 4^l N, F)`

    Example:
        >>> import torch
        >>> from pyg_sphere.nn.pool import healpix_unpool
        >>> healpix_unpool(torch.tensor([[1.], [2.]])).view(-1).tolist()
        [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    """
    _check_features(x)
    group = 4 ** check_levels(levels, minimum=1)
    shape = x.shape[:-1] + (group, x.size(-1))
    return x.unsqueeze(-2).expand(shape).flatten(-3, -2)


def healpix_max_unpool(x: Tensor, indices: Tensor, levels: int = 1) -> Tensor:
    r"""Puts each value back where :func:`healpix_max_pool_with_indices` found the maximum,
    zeros elsewhere.

    Args:
        x (torch.Tensor): Pooled features :math:`[N, F]` or :math:`[B, N, F]`.
        indices (torch.Tensor): The offsets returned with them, same shape.
        levels (int): Number of nside doublings. (default: :obj:`1`)

    Shapes:
        - **output:** :math:`(4^l N, F)` or :math:`(B, 4^l N, F)`
    """
    _check_features(x)
    group = 4 ** check_levels(levels, minimum=1)
    if not isinstance(indices, Tensor) or indices.shape != x.shape:
        shape = tuple(indices.shape) if isinstance(indices, Tensor) else type(indices).__name__
        raise ValueError(
            f"indices must be the tensor returned by healpix_max_pool_with_indices, of the shape "
            f"of x {tuple(x.shape)}; got {shape}"
        )
    out = x.new_zeros(x.shape[:-1] + (group, x.size(-1)))
    out = out.scatter(-2, indices.unsqueeze(-2), x.unsqueeze(-2))
    return out.flatten(-3, -2)


def healpix_pool_graph(
    graph: GraphLike, levels: int = 1, *, device: Optional[torch.device] = None
) -> GraphLike:
    r"""The graph after :obj:`levels` poolings (a :class:`~torch_geometric.data.Batch` for a
    batch), on :obj:`device` (default: the graph's).

    The coarse graph of each graph comes from the ``'graph'`` cache of :mod:`pyg_sphere.cache`
    (by its parameters and pixels); a batch's is collated at every call, as PyG collates.

    Example:
        >>> from pyg_sphere import healpix_graph
        >>> from pyg_sphere.nn.pool import healpix_pool_graph
        >>> coarse = healpix_pool_graph(healpix_graph(4))
        >>> coarse.nside, coarse.num_nodes
        (2, 48)
    """
    levels = check_levels(levels, minimum=1)
    if not _is_batch(graph):
        if isinstance(graph, Data):
            _check_graph(graph, graph.num_nodes, levels, shared_maps=False)
        coarse = coarsen_graph(graph, levels)
    else:
        _check_graph(graph, graph.num_nodes, levels, shared_maps=False)
        coarse = Batch.from_data_list(_coarse_graphs(graph, levels))
    if device is not None and coarse.edge_index.device != torch.device(device):
        coarse = coarse.to(device)
    return copy.copy(coarse)


def _coarse_graphs(batch: Batch, levels: int) -> List[Data]:
    """The memoised coarse graph of every graph of a batch."""
    # Describe each graph by its pixels and graph parameters only: cheaper than slicing out
    # its edges.
    ptr = batch.ptr.tolist()
    values = {key: _graph_values(batch, key) for key in GRAPH_PARAMS if key in batch}
    graphs = []
    for i in range(batch.num_graphs):
        fine = Data(
            pixels=batch.pixels[ptr[i] : ptr[i + 1]],
            num_nodes=ptr[i + 1] - ptr[i],
            **{key: value[i] for key, value in values.items()},
        )
        graphs.append(coarsen_graph(fine, levels))
    return graphs


def healpix_pool_data(data: GraphLike, levels: int = 1, reduce: str = "max") -> GraphLike:
    r"""Pools a :class:`~torch_geometric.data.Data` or :class:`~torch_geometric.data.Batch`
    holding :obj:`x` and its HEALPix graph, like :func:`torch_geometric.nn.pool.max_pool`.

    Returns the coarse graph (:func:`healpix_pool_graph`) with the pooled :obj:`x` and the
    graph-level attributes of :obj:`data` (e.g. a label :obj:`y`); other node-level
    attributes are dropped. A batch stays a batch that :meth:`~torch_geometric.data.Batch.
    to_data_list` splits.

    Example:
        >>> import torch
        >>> from pyg_sphere import healpix_graph
        >>> from pyg_sphere.nn.pool import healpix_pool_data
        >>> data = healpix_graph(4)
        >>> data.x, data.y = torch.randn(192, 3), torch.tensor([1])
        >>> out = healpix_pool_data(data)
        >>> out.x.shape, out.nside, out.y.tolist()
        (torch.Size([48, 3]), 2, [1])
    """
    if not isinstance(data, (Data, Batch)) or not isinstance(getattr(data, "x", None), Tensor):
        raise ValueError("healpix_pool_data needs a Data or Batch with node features data.x")
    x = healpix_pool(data.x, levels, reduce, graph=data)
    if not _is_batch(data):
        out = healpix_pool_graph(data, levels, device=x.device)
        out.x = x
        for key in _graph_level_keys(data, out):
            out[key] = data[key]
        return out
    # Rebuilt with PyG's public collation, so the result splits like any batch.
    items = []
    start = 0
    for fine, coarse in zip(data.to_data_list(), _coarse_graphs(data, levels)):
        item = copy.copy(coarse)
        item.x = x[start : start + coarse.num_nodes]
        start += coarse.num_nodes
        for key in _graph_level_keys(fine, item):
            item[key] = fine[key]
        items.append(item)
    return Batch.from_data_list(items).to(x.device)


def _graph_level_keys(source: Data, coarse: Data) -> List[str]:
    return [
        key
        for key in source.keys()
        if key not in coarse
        and key != "x"
        and key not in GRAPH_KEYS
        and not source.is_node_attr(key)
        and not source.is_edge_attr(key)
    ]
