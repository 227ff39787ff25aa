"""The nested HEALPix hierarchy: patches, closure under pooling, and coarser graphs."""

from typing import List, Optional

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from .._lazy import lazy
from .._validate import PixelsLike, as_pixels, check_levels, check_nside
from ._healpix_graph import healpix_graph
from ._kernel_width import kernel_width as default_kernel_width

hp = lazy("healpy")


def _nested_ids(pixels: PixelsLike) -> np.ndarray:
    if isinstance(pixels, Tensor):
        pixels = pixels.detach().cpu().numpy()
    arr = np.asarray(pixels)
    if arr.dtype == np.bool_:  # a mask: its length gives nside
        ids = as_pixels(hp.npix2nside(arr.shape[0]), arr)
        return np.arange(arr.shape[0], dtype=np.int64) if ids is None else ids  # full sphere
    if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0):
        raise ValueError("pixels must be non-negative integer (nested) HEALPix ids")
    return np.asarray(pixels, dtype=np.int64).ravel()


def close_hierarchy(pixels: PixelsLike, levels: int = 1) -> Tensor:
    r"""Adds the missing siblings of a nested pixel set, so that it can be pooled
    :obj:`levels` times by 4.

    In the nested ordering, the :math:`4^\ell` descendants of a pixel :math:`\ell` levels up
    are the consecutive ids :math:`4^\ell p, \dots, 4^\ell p + 4^\ell - 1`. A region can be
    pooled by reshaping only if it holds every descendant of each of its ancestors.

    Args:
        pixels (array or torch.Tensor): Nested HEALPix ids, or a boolean mask.
        levels (int): Number of poolings by 4 to allow. (default: 1)

    Returns:
        torch.Tensor: The closed set, sorted, shape :math:`[N']` with :math:`N' \geq N`.

    Example:
        >>> from pyg_sphere import close_hierarchy
        >>> close_hierarchy([5, 17], levels=1).tolist()
        [4, 5, 6, 7, 16, 17, 18, 19]
    """
    factor = 4 ** check_levels(levels)
    parents = np.unique(_nested_ids(pixels) // factor)
    return torch.from_numpy((parents[:, None] * factor + np.arange(factor)).ravel())


def is_closed_hierarchy(pixels: PixelsLike, levels: int = 1) -> bool:
    """Whether a nested pixel set can be pooled :obj:`levels` times by 4 (see
    :func:`close_hierarchy`).

    Example:
        >>> from pyg_sphere import is_closed_hierarchy
        >>> is_closed_hierarchy(range(8)), is_closed_hierarchy([0, 1, 2])
        (True, False)
    """
    pix = np.unique(_nested_ids(pixels))
    factor = 4 ** check_levels(levels)
    return len(pix) == factor * len(np.unique(pix // factor))


def nested_patches(nside: int, order: int) -> Tensor:
    r"""Returns the pixels of the :math:`12 o^2` equal patches of DeepSphere's "order" split.

    Patch :math:`i` is the set of nested pixels whose ancestor at resolution :obj:`order` is
    pixel :math:`i`: a curved square of :math:`(n_\mathrm{side}/o)^2` pixels covering
    :math:`1/(12 o^2)` of the sphere (order 1: the 12 base pixels; 2: 1/48; 4: 1/192).

    Args:
        nside (int): Resolution of the maps.
        order (int): Resolution of the split, a power of 2 not above :obj:`nside`.

    Returns:
        torch.Tensor: Nested pixel ids, shape :math:`[12 o^2, (n_\mathrm{side}/o)^2]`, each row
        sorted.

    Example:
        >>> from pyg_sphere import nested_patches
        >>> nested_patches(16, order=2).shape
        torch.Size([48, 64])
    """
    nside = check_nside(nside)
    order = check_nside(order)
    if order > nside:
        raise ValueError(f"order ({order}) must not exceed nside ({nside})")
    size = (nside // order) ** 2
    return torch.arange(12 * nside**2).view(12 * order**2, size)


def coarsen_graph(graph: Data, levels: int = 1, *, lambda_max: Optional[bool] = None) -> Data:
    r"""Returns the graph of the parents of a nested graph's pixels, :obj:`levels` up.

    The coarse graph is built like the fine one (same :obj:`num_neighbors` and variant), at
    :math:`n_\mathrm{side}/2^\ell` on the pixels :obj:`graph.pixels // 4**levels`. Its kernel
    width is the tuned default at the coarse resolution if the fine graph used the default,
    else the fine width times :math:`2^\ell` (pixels are :math:`2^\ell` times larger). Graphs are
    memoised (:mod:`pyg_sphere.cache`), so calling this at every step of a network costs nothing
    after the first call while the graphs fit the cache's memory limit.

    Args:
        graph (torch_geometric.data.Data): A graph from :func:`~pyg_sphere.healpix_graph`
            with :obj:`nest=True`.
        levels (int): Number of levels up. (default: 1)
        lambda_max (bool, optional): Whether to estimate :obj:`lambda_max` (default: if the
            fine graph has it).

    Example:
        >>> import pyg_sphere
        >>> g = pyg_sphere.healpix_graph(8)
        >>> pyg_sphere.coarsen_graph(g, 2).num_nodes
        48
    """
    levels = check_levels(levels)
    for attr in ("nside", "nest", "pixels", "num_neighbors", "variant", "kernel_width"):
        if attr not in graph:
            raise ValueError(
                f"coarsen_graph needs a graph from pyg_sphere.healpix_graph; "
                f"this one has no '{attr}' attribute"
            )
    if not graph.nest:
        raise ValueError(
            "Pooling and coarsening need the nested ordering: build the graph "
            "with healpix_graph(..., nest=True) and reorder maps with "
            "healpy.reorder(m, r2n=True)"
        )
    nside = int(graph.nside)
    if nside >> levels == 0:
        raise ValueError(f"Cannot coarsen nside={nside} by {levels} levels")
    coarse_nside = nside >> levels
    kernel_width = None
    if graph.variant == "v2" and not np.isclose(
        graph.kernel_width, _default_or_none(nside, graph.num_neighbors)
    ):
        kernel_width = graph.kernel_width * 2**levels
    pixels = None
    if graph.num_nodes != 12 * nside**2:
        pixels = torch.unique(graph.pixels.cpu() // 4**levels)
    if lambda_max is None:
        lambda_max = "lambda_max" in graph
    return healpix_graph(
        coarse_nside,
        pixels,
        num_neighbors=int(graph.num_neighbors),
        nest=True,
        kernel_width=kernel_width,
        variant=graph.variant,
        lambda_max=lambda_max,
        # The coarse graph keeps the fine one's index type (a graph without edges: int64).
        index_dtype=torch.int64 if graph.edge_index is None else graph.edge_index.dtype,
    )


def _default_or_none(nside, k):
    try:
        return default_kernel_width(nside, k)
    except ValueError:
        return np.nan


def healpix_hierarchy(
    nside: int, levels: int, pixels: PixelsLike = None, *, num_neighbors: int = 8, **kwargs
) -> List[Data]:
    r"""Returns the graphs at :obj:`nside`, :obj:`nside // 2`, ..., :obj:`nside // 2**levels`.

    Level :math:`\ell + 1` holds the parents (:obj:`pix // 4`) of level :math:`\ell`'s pixels,
    which is what :class:`~pyg_sphere.nn.HealpixPool` produces. Pixels are nested ids.

    Args:
        nside (int): Finest resolution.
        levels (int): Number of coarsenings.
        pixels (array or torch.Tensor, optional): Region at the finest level (default: the
            whole sphere). Close it with :func:`close_hierarchy` to pool it by reshaping.
        num_neighbors (int): Number of neighbours. (default: 8)
        **kwargs: Other arguments of :func:`~pyg_sphere.healpix_graph`.

    Example:
        >>> import pyg_sphere
        >>> graphs = pyg_sphere.healpix_hierarchy(16, 2, pixels=range(256))
        >>> [(g.nside, g.num_nodes) for g in graphs]
        [(16, 256), (8, 64), (4, 16)]
    """
    if "nest" in kwargs and not kwargs.pop("nest"):
        raise ValueError("The hierarchy is defined on nested pixel ids; use nest=True")
    levels = check_levels(levels)
    graphs = [healpix_graph(nside, pixels, num_neighbors=num_neighbors, nest=True, **kwargs)]
    for _ in range(levels):
        graphs.append(coarsen_graph(graphs[-1], 1))
    return graphs
