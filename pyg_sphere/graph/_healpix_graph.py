"""HEALPix spheres and regions of them as PyG graphs."""

import copy
import hashlib
import math
import os
from typing import Optional

import numpy as np
import torch
from torch_geometric.data import Data

from .. import cache
from .._io import atomic_open
from .._lazy import lazy
from .._parallel import parallel_map
from .._validate import PixelsLike, as_pixels, check_int, check_memory, check_nside
from ._edges import NeighbourLists, row_blocks, symmetric_edges
from ._full_sphere import full_sphere_edges
from ._geometry import pixel_vectors, write_centres
from ._kernel_width import kernel_width as default_kernel_width
from ._lambda_table import FULL_SPHERE_LAMBDA_MAX
from .knn import MAX_K, healpix_knn
from .laplacian import LAMBDA_MAX_MARGIN, estimate_lambda_max

hp = lazy("healpy")

# Bump when the construction changes, to invalidate on-disk caches.
_FORMAT_VERSION = 4

# Graphs by their arguments (bounded by bytes; see pyg_sphere.cache).
_GRAPHS = cache.memo("graph", cache.DEFAULT_LARGE_LIMIT)


def _v1_mean_d2(nside: int) -> float:
    """Mean squared edge length of the full-sphere v1 graph (healpy's 8 neighbours)."""
    total, count = 0.0, 0
    for start in range(0, 12 * nside**2, 1 << 20):
        pix = np.arange(start, min(start + (1 << 20), 12 * nside**2))
        nbr = hp.get_all_neighbours(nside, pix, nest=True)
        valid = nbr >= 0
        diff = pixel_vectors(nside, np.where(valid, nbr, 0)) - pixel_vectors(nside, pix)
        d2 = (diff**2).sum(-1)
        total += d2[valid].sum()
        count += valid.sum()
    return total / count


def _neighbours(nside, pix_nest, k, variant, out):
    """Fills `out` with the directed neighbour lists (nested ids, -1 where missing) and the
    squared distances."""
    if variant == "v2":
        healpix_knn(nside, pix_nest, k, out=out)
        return
    nbr, d2 = out
    for r0, r1 in row_blocks(len(pix_nest)):
        pix = pix_nest[r0:r1]
        block = hp.get_all_neighbours(nside, pix, nest=True).T  # [n, 8]
        valid = block >= 0
        diff = pixel_vectors(nside, np.where(valid, block, 0)) - pixel_vectors(nside, pix)[:, None]
        nbr[r0:r1], d2[r0:r1] = np.where(valid, block, -1), (diff**2).sum(-1)


def _edges(nside, node_pix, pixels, k, nest, variant, scale, index_dtype):
    """The symmetric edge list and weights :math:`\\exp(scale \\, d^2)` of the nodes."""
    if pixels is None and nest and variant == "v2":
        return full_sphere_edges(nside, k, lambda d: np.exp(scale * d), index_dtype)
    n = len(node_pix)
    pix_nest = node_pix if nest else hp.ring2nest(nside, node_pix)
    # The directed lists, in scratch memory handed back block by block as the edge list
    # fills: the build peaks at about the size of the graph it returns.
    lists = NeighbourLists(n, k, np.int32 if max(12 * nside**2, n) < 2**31 - 1 else np.int64)
    col = lists.col
    _neighbours(nside, pix_nest, k, variant, (col, lists.d2))
    del pix_nest

    def local_ids(block):
        # Nested ids -> node ids, n where there is none. A region keeps the edges whose both
        # ends are nodes: the induced subgraph of the sphere's graph.
        r0, r1 = block
        nbr = col[r0:r1].astype(np.int64)
        valid = nbr >= 0
        if not nest:
            nbr = hp.nest2ring(nside, np.maximum(nbr, 0))
        if pixels is not None:
            local = np.minimum(np.searchsorted(node_pix, nbr), n - 1)
            valid &= node_pix[local] == nbr
            nbr = local
        col[r0:r1] = np.where(valid, nbr, n)

    parallel_map(local_ids, lists.blocks, n * k)
    return symmetric_edges(lists, lambda d: np.exp(scale * d), index_dtype)


def _build(nside, pixels, k, nest, sigma, variant, index_dtype=torch.int64):
    node_pix = np.arange(12 * nside**2, dtype=np.int64) if pixels is None else pixels
    n = len(node_pix)
    if variant == "v1":
        sigma = math.sqrt(2 * _v1_mean_d2(nside))
        scale = -1.0 / sigma**2
    else:
        scale = -math.log(2) / sigma**2
    edge_index, edge_weight = _edges(nside, node_pix, pixels, k, nest, variant, scale, index_dtype)
    pos = torch.empty((n, 3), dtype=torch.float32)
    write_centres(nside, None if pixels is None and nest else node_pix, pos.numpy(), nest)
    # The full sphere's ids are ours (no copy); a region's are copied, not shared with the
    # caller's array.
    node_pix = torch.from_numpy(node_pix if pixels is None else node_pix.astype(np.int64))
    return Data(
        edge_index=edge_index,
        edge_weight=edge_weight,
        pos=pos,
        pixels=node_pix,
        nside=nside,
        nest=nest,
        num_neighbors=k,
        kernel_width=float(sigma),
        variant=variant,
        num_nodes=n,
    )


def graph_memory(
    nside: int,
    num_neighbors: int = 8,
    num_nodes: Optional[int] = None,
    index_dtype: torch.dtype = torch.int64,
) -> int:
    """Estimated peak bytes of building a graph: the returned Data (edge indices of
    :obj:`index_dtype` and float32 weights for about ``num_neighbors + 0.6`` edges per node
    after symmetrisation, float32 positions, int64 pixel ids) and what is left of the build's
    temporaries when it is complete (the neighbour lists are handed back as the edge list
    fills), with a margin; the measured peaks are in ``docs/benchmarks.md``."""
    n = 12 * nside**2 if num_nodes is None else num_nodes
    index_bytes = torch.iinfo(index_dtype).bits // 8
    data = n * ((num_neighbors + 0.6) * (2 * index_bytes + 4) + 20)
    return int(1.2 * data)


def _lambda_max(data: Data, default_full_sphere: bool) -> float:
    """lambda_max of a new graph: from the table of full-sphere graphs where it applies."""
    table = FULL_SPHERE_LAMBDA_MAX.get((data.variant, int(data.num_neighbors)))
    if default_full_sphere and table:
        nside, last = int(data.nside), max(table)
        if nside in table:
            return LAMBDA_MAX_MARGIN * table[nside]
        # Past the table, the values have converged with nside (the graphs are self-similar
        # once the kernel width scales with the pixel size): the margin covers the rest.
        if nside > last and table[last] - table[last // 2] < 2e-3 * table[last]:
            return LAMBDA_MAX_MARGIN * table[last]
    return estimate_lambda_max(data.edge_index, data.edge_weight, data.num_nodes)


def _cache_path(cache_dir, key, pixels):
    digest = hashlib.blake2b(repr(key).encode(), digest_size=16)
    if pixels is not None:
        digest.update(pixels.tobytes())
    return os.path.join(cache_dir, f"healpix_graph_{digest.hexdigest()}.pt")


def _load(path):
    try:
        return Data.from_dict(torch.load(path, weights_only=True))
    except Exception:  # an unreadable cache file is rebuilt, never trusted
        return None


def _save(path, data):
    with atomic_open(path) as f:
        torch.save(data.to_dict(), f)


def healpix_graph(
    nside: int,
    pixels: PixelsLike = None,
    *,
    num_neighbors: int = 8,
    nest: bool = True,
    kernel_width: Optional[float] = None,
    variant: str = "v2",
    lambda_max: bool = True,
    cache_dir: Optional[str] = None,
    index_dtype: torch.dtype = torch.int64,
) -> Data:
    r"""Builds the DeepSphere graph of a HEALPix sphere, or of a region of it.

    Nodes are the pixels (all :math:`12 n_\mathrm{side}^2`, or only :obj:`pixels`) in ascending
    pixel id. With :obj:`variant='v2'` (default, DeepSphere v2), each pixel is linked to the
    :obj:`num_neighbors` nearest pixel centres (Euclidean distance :math:`d` between unit
    vectors), the graph is symmetrised by union and weighted by
    :math:`w = \exp(-\ln 2 \, d^2/\sigma^2)`, with :math:`\sigma` from
    :func:`~pyg_sphere.kernel_width` (tuned for rotation equivariance) unless
    :obj:`kernel_width` is given. :obj:`variant='v1'` reproduces DeepSphere v1: healpy's
    8 neighbours (7 at a few corner pixels), :math:`w = \exp(-d^2 / (2 \overline{d^2}))` with
    :math:`\overline{d^2}` the mean over the full sphere's edges.

    A region's graph is the induced subgraph of the full sphere's graph, with the same weights:
    a border pixel keeps its inside neighbours and loses the others, so a filter acts inside a
    region exactly as on the full sphere. It is built without building the full sphere.

    The graph keeps the sphere's symmetries exactly (quarter turns about the polar axis, the
    mirror through the equatorial plane; ties and rounding included), so a filter commutes
    with them. The k-NN search covers two of the twelve base pixels, and the full sphere in
    nested ordering (v2) is symmetrised and weighted on three and turned onto the others
    (``docs/benchmarks.md``).

    Graphs are memoised in the ``'graph'`` cache of :mod:`pyg_sphere.cache` (bounded by
    memory): building the same graph again in a process returns a shallow copy sharing the
    tensors (do not modify them in place). With :obj:`cache_dir`, graphs are also stored on
    disk and reused across runs.

    Args:
        nside (int): HEALPix resolution, a power of 2.
        pixels (array or torch.Tensor, optional): HEALPix ids of the region's pixels in the
            ordering given by :obj:`nest`, or a boolean mask of length
            :math:`12 n_\mathrm{side}^2`. (default: :obj:`None`, the whole sphere)
        num_neighbors (int): Number of nearest neighbours (v2). The kernel width table covers
            8, 20, 40 and 60; other values up to 60 need :obj:`kernel_width`. (default: 8)
        nest (bool): Whether pixel ids use the nested ordering (else ring). (default: True)
        kernel_width (float, optional): Overrides :math:`\sigma` (v2 only).
        variant (str): :obj:`'v2'` or :obj:`'v1'`. (default: :obj:`'v2'`)
        lambda_max (bool): Whether to store an upper estimate of the largest eigenvalue of
            the normalized Laplacian as :obj:`data.lambda_max` (used to rescale Chebyshev
            filters), within about 1% above it: tabulated for the full sphere with the default
            kernel width (free), else :func:`~pyg_sphere.graph.estimate_lambda_max` (twice
            100 or more sparse products). (default: True)
        cache_dir (str, optional): Directory of an on-disk graph cache.
        index_dtype (torch.dtype): :obj:`torch.int64` (PyG's convention) or
            :obj:`torch.int32` for :obj:`edge_index`. 32-bit indices halve the bytes of
            :obj:`edge_index`, and :class:`~pyg_sphere.nn.ChebyshevOperator` then shares
            :obj:`edge_index[1]` as the column indices of its operator (the bytes per pixel,
            and the memory at nside 2048, are in ``docs/benchmarks.md``). Coarsened graphs
            keep the index type. int64 is PyG's convention: a layer or utility that expects it
            gets :obj:`edge_index.long()`. (default: :obj:`torch.int64`)

    Returns:
        :class:`torch_geometric.data.Data` with :obj:`edge_index` :math:`[2, E]` (symmetric,
        coalesced, no self loops), :obj:`edge_weight` :math:`[E]` (float32), :obj:`pos`
        :math:`[N, 3]` (unit vectors of the pixel centres, within one float32 rounding of
        :func:`healpy.pix2vec` and exactly symmetric), :obj:`pixels` :math:`[N]` (the
        HEALPix id of every node), :obj:`nside`, :obj:`nest`, :obj:`num_neighbors`,
        :obj:`kernel_width`,
        :obj:`variant`, :obj:`num_nodes` and :obj:`lambda_max`.

    Example:
        >>> import pyg_sphere
        >>> g = pyg_sphere.healpix_graph(16)
        >>> g.num_nodes, g.edge_index.shape[0], round(g.kernel_width, 3)
        (3072, 2, 0.05)
        >>> region = pyg_sphere.healpix_graph(16, pixels=range(256))  # one base pixel
        >>> region.pixels[:4].tolist()
        [0, 1, 2, 3]
    """
    nside = check_nside(nside)
    if variant not in ("v1", "v2"):
        raise ValueError(f"variant must be 'v1' or 'v2', got {variant!r}")
    k = check_int("num_neighbors", num_neighbors)
    if variant == "v1":
        if k != 8:
            raise ValueError(
                f"The v1 graph uses healpy's 8 neighbours; got num_neighbors={k}. "
                f"Use variant='v2' for other values."
            )
        if kernel_width is not None:
            raise ValueError(
                "The v1 graph sets its kernel width from the mean edge length; "
                "kernel_width applies to variant='v2' only"
            )
    elif not 1 <= k <= min(MAX_K, 12 * nside**2 - 1):
        raise ValueError(
            f"Unsupported num_neighbors={k}: it must be between 1 and "
            f"{min(MAX_K, 12 * nside**2 - 1)} at nside={nside}"
        )
    if index_dtype not in (torch.int64, torch.int32):
        raise ValueError(f"index_dtype must be torch.int64 or torch.int32, got {index_dtype!r}")
    pixels = as_pixels(nside, pixels)
    sigma = None
    if variant == "v2":
        sigma = float(kernel_width) if kernel_width is not None else default_kernel_width(nside, k)
        if not sigma > 0:
            raise ValueError(f"kernel_width must be positive, got {kernel_width}")

    key = (
        _FORMAT_VERSION,
        nside,
        k,
        bool(nest),
        sigma,
        variant,
        None if pixels is None else hashlib.blake2b(pixels.tobytes()).hexdigest(),
        str(index_dtype),
    )
    path = None if cache_dir is None else _cache_path(cache_dir, key, pixels)
    data = _GRAPHS.peek(key)
    if data is None and path is not None and os.path.exists(path):
        data = _load(path)
    if data is None:
        check_memory(
            f"healpix_graph(nside={nside}, num_neighbors={k})",
            graph_memory(nside, k, None if pixels is None else len(pixels), index_dtype),
            "build a region (pixels=...) or a smaller nside, or use a machine with more memory",
        )
        data = _build(nside, pixels, k, bool(nest), sigma, variant, index_dtype)
        if path is not None and not lambda_max:
            _save(path, data)
    if lambda_max and "lambda_max" not in data:
        # A copy: a graph that is already cached (or shared) without lambda_max is not changed.
        data = copy.copy(data)
        data.lambda_max = _lambda_max(data, pixels is None and kernel_width is None)
        if path is not None:
            _save(path, data)
    _GRAPHS.put(key, data)
    data = copy.copy(data)
    if not lambda_max and "lambda_max" in data:  # the same output whatever the cache holds
        del data.lambda_max
    return data
