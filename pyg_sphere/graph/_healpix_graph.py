"""HEALPix spheres and regions of them as PyG graphs."""

import copy
import hashlib
import math
import mmap
import os
from typing import Optional

import healpy as hp
import numpy as np
import torch
from torch_geometric.data import Data

from .. import cache
from .._io import atomic_open
from .._validate import PixelsLike, as_pixels, check_int, check_memory, check_nside
from ._kernel_width import kernel_width as default_kernel_width
from ._lambda_table import FULL_SPHERE_LAMBDA_MAX
from .knn import (
    MAX_K,
    _contains,
    _face_shift,
    _sq_dist,
    _vec,
    centres,
    full_sphere_centres,
    healpix_knn,
    parallel_map,
    turn_pixels,
)
from .laplacian import LAMBDA_MAX_MARGIN, estimate_lambda_max

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
        pos = np.stack(hp.pix2vec(nside, pix, nest=True), -1)
        nbr_pos = np.stack(hp.pix2vec(nside, np.where(valid, nbr, 0), nest=True), -1)
        d2 = ((nbr_pos - pos) ** 2).sum(-1)
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
    for r0, r1 in _blocks(len(pix_nest)):
        pix = pix_nest[r0:r1]
        block = hp.get_all_neighbours(nside, pix, nest=True).T  # [n, 8]
        valid = block >= 0
        diff = (
            np.stack(hp.pix2vec(nside, np.where(valid, block, 0), nest=True), -1)
            - np.stack(hp.pix2vec(nside, pix, nest=True), -1)[:, None]
        )
        nbr[r0:r1], d2[r0:r1] = np.where(valid, block, -1), (diff**2).sum(-1)


class _Scratch:
    """A temporary array in its own anonymous memory map, whose pages go back to the system
    range by range as they are consumed: numpy frees only whole arrays, so the neighbour lists
    would otherwise stay resident until the edge list that replaces them is complete."""

    def __init__(self, shape, dtype):
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        # Private: released pages are freed (those of a shared map would stay in memory).
        private = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}
        self._map = mmap.mmap(-1, max(1, count * dtype.itemsize), **private)
        self.array = np.frombuffer(self._map, dtype=dtype, count=count).reshape(shape)

    def release_rows(self, r0, r1):
        """Hands back the pages that lie wholly within rows r0 to r1 (their data is lost)."""
        advice = getattr(mmap, "MADV_DONTNEED", None)
        if advice is None or not hasattr(self._map, "madvise"):
            return
        row, page = self.array.strides[0], mmap.PAGESIZE
        start = -(-r0 * row // page) * page
        # The map's last page holds nothing else: it goes with the last rows.
        stop = len(self._map) if r1 == len(self.array) else r1 * row // page * page
        if stop > start:
            self._map.madvise(advice, start, stop - start)


def _scratch_lists(rows: int, k: int, id_dtype):
    """Directed neighbour lists [rows, k] (ids of `id_dtype`, float32 squared distances) in
    scratch memory, and ``release(r0, r1)``, which hands rows r0 to r1 of both back."""
    col, d2 = _Scratch((rows, k), id_dtype), _Scratch((rows, k), np.float32)

    def release(r0, r1):
        col.release_rows(r0, r1)
        d2.release_rows(r0, r1)

    return col.array, d2.array, release


_ROWS = 1 << 17  # rows per block: keeps the temporaries of each step in cache


def _blocks(n):
    return [(r0, min(n, r0 + _ROWS)) for r0 in range(0, n, _ROWS)]


def _sort_rows(col: np.ndarray, d2: np.ndarray, blocks) -> None:
    """Sorts each row of `col` [m, k] by neighbour id, carrying `d2` along, in place."""

    def sort_rows(block):
        r0, r1 = block
        # Sort the row by neighbour id, carrying the distance in the low 32 bits.
        key = (col[r0:r1].astype(np.uint64) << np.uint64(32)) | d2[r0:r1].view(np.uint32).astype(
            np.uint64
        )
        key.sort(axis=1)
        col[r0:r1] = key >> np.uint64(32)
        d2[r0:r1] = (key & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.float32)

    parallel_map(sort_rows, blocks, col.size)  # blocks are disjoint rows


def _sorted_extras(extras):
    """Concatenates per-block (list row, column, d2) triples, sorted by list row then column."""
    extra_row, extra_col, extra_d2 = (np.concatenate(e) for e in zip(*extras))
    order = np.lexsort((extra_col, extra_row))
    return extra_row[order], extra_col[order], extra_d2[order]


def _row_lengths(col: np.ndarray, missing: int, extra_row: np.ndarray, blocks) -> np.ndarray:
    """Edges of each list row: its neighbours (ids below `missing`) and its extra edges."""
    length = np.bincount(extra_row, minlength=len(col)).astype(np.int64)
    for r0, r1 in blocks:  # block by block: no [m, k] temporaries
        length[r0:r1] += (col[r0:r1] < missing).sum(1)
    return length


def _empty_edges(count: int, index_dtype):
    """An uninitialised ``edge_index`` [2, count] and ``edge_weight`` [count], refused with a
    clear error when `index_dtype` cannot count the edges."""
    if count > torch.iinfo(index_dtype).max:
        raise ValueError(
            f"the graph has {count} edges, more than {index_dtype} edge indices can "
            "count: use index_dtype=torch.int64"
        )
    return torch.empty((2, count), dtype=index_dtype), torch.empty(count, dtype=torch.float32)


def _fill_rows(col, d2, missing, row_ids, starts, extras, out, weight_fn, blocks, release=None):
    """Writes the sorted list rows, with their sorted extra edges merged in, to the edge list.

    Row r of `col`/`d2` (neighbours below `missing`) is node ``row_ids[r]`` and its edges start
    at ``starts[r]`` of ``out = (edge_index [2, E], edge_weight [E])`` (numpy views); rows of a
    block are written contiguously. ``release(r0, r1)`` is called once a block is written.
    """
    extra_row, extra_col, extra_d2 = extras
    out_index, out_weight = out
    bounds = np.searchsorted(extra_row, [r1 for _, r1 in blocks])
    firsts = np.searchsorted(extra_row, [r0 for r0, _ in blocks])

    def write(i):  # each block fills its own slice of the output
        (r0, r1), x0, x1 = blocks[i], firsts[i], bounds[i]
        valid = col[r0:r1] < missing
        row = np.repeat(row_ids[r0:r1], valid.sum(1))
        c, dd = col[r0:r1][valid], d2[r0:r1][valid]
        if x1 > x0:  # merge the extra edges at their sorted place in their rows
            xr, xc = extra_row[x0:x1], extra_col[x0:x1]
            local_ptr = np.concatenate([[0], np.cumsum(valid.sum(1))])
            at = local_ptr[xr - r0] + (col[xr] < xc[:, None]).sum(1)
            row, c, dd = (
                np.insert(row, at, row_ids[xr]),
                np.insert(c, at, xc),
                np.insert(dd, at, extra_d2[x0:x1]),
            )
        e0 = starts[r0]
        out_index[0, e0 : e0 + len(c)], out_index[1, e0 : e0 + len(c)] = row, c
        out_weight[e0 : e0 + len(c)] = weight_fn(dd)
        if release is not None:
            release(r0, r1)

    parallel_map(write, range(len(blocks)), col.size)


def _symmetric_edges(
    col: np.ndarray, d2: np.ndarray, weight_fn, release=None, index_dtype=torch.int64
):
    """Union-symmetrises directed neighbour lists into a coalesced ``edge_index`` and weights.

    `col` [n, k] holds local neighbour ids (n where there is none), `d2` the squared distances;
    both are modified in place, and ``release(r0, r1)`` (if given) is called once rows r0 to
    r1 of both are no longer needed. Rather than sorting all E edges (what scipy's
    ``A.maximum(A.T)`` costs), each row is sorted on its own and the few missing reverse edges
    (j -> i with i not among j's neighbours) are merged in, block by block.
    """
    n = len(col)
    blocks = _blocks(n)

    def missing_reverse(block):
        r0, r1 = block
        c = col[r0:r1]
        rows = np.arange(r0, r1, dtype=col.dtype)
        # i -> j is mutual if i is among j's neighbours; else j -> i must be added.
        mutual = _contains(np.take(col, np.where(c < n, c, 0), axis=0), rows[:, None])
        src, slot = np.nonzero((c < n) & ~mutual)
        return c[src, slot], rows[src], d2[r0:r1][src, slot]

    _sort_rows(col, d2, blocks)
    extras = _sorted_extras(parallel_map(missing_reverse, blocks, col.size))  # after the sort
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(_row_lengths(col, n, extras[0], blocks), out=indptr[1:])
    edge_index, edge_weight = _empty_edges(int(indptr[-1]), index_dtype)
    out = edge_index.numpy(), edge_weight.numpy()
    rows = np.arange(n, dtype=np.int64)
    _fill_rows(col, d2, n, rows, indptr, extras, out, weight_fn, blocks, release)
    return edge_index, edge_weight


def _full_sphere_edges(nside: int, k: int, weight_fn, index_dtype=torch.int64):
    """The v2 edge list of the whole nested sphere, from the rows of faces 0, 4 and 8.

    A quarter turn about the polar axis maps the sphere's graph onto itself (see
    :mod:`.knn`): the rows of face ``4 r + q`` are those of face ``4 r`` turned by ``q``. The
    symmetrisation and the weights are computed on the three first faces (their k-NN lists
    come from faces 0 and 4: :func:`.knn.healpix_knn` mirrors face 8 onto face 0) and written
    to the other nine, re-measuring the edges across faces and re-sorting their rows.
    The result equals the general build's (tested).
    """
    n2, shift = nside * nside, _face_shift(nside)
    n = 12 * n2
    firsts = (0, 4, 8)
    row_ids = np.concatenate([np.arange(f * n2, (f + 1) * n2) for f in firsts])
    col, d2, release = _scratch_lists(3 * n2, k, np.int32 if n < 2**31 - 1 else np.int64)
    healpix_knn(nside, row_ids, k, out=(col, d2))
    # Blocks within one face: each face's rows go to their own part of the edge list.
    blocks = [(r0 + r * n2, r1 + r * n2) for r in range(3) for r0, r1 in _blocks(n2)]

    def list_row(pix):  # row of the lists holding a pixel of a first face
        return (pix >> shift) // 4 * n2 + (pix & (n2 - 1))

    def missing_reverse(block):
        # Pixel p of a first face with neighbour c: turned by t (c onto its row's first face),
        # p' -> c' is an edge of the graph, and c' -> p' is missing unless p' is in row c'.
        # Flat [b * k] arrays of the ids' own dtype: np.take of whole rows is the fast gather.
        r0, r1 = block
        c_first = col[r0:r1].ravel().copy()
        p_turned = np.repeat(row_ids[r0:r1].astype(col.dtype), k)
        # Most neighbours lie on a first face (no turn): only the others are turned.
        turned = np.flatnonzero(c_first >> shift & 3)
        turns = -(c_first[turned] >> shift) & 3
        c_first[turned] = turn_pixels(nside, c_first[turned], turns)
        p_turned[turned] = turn_pixels(nside, p_turned[turned], turns)
        c_row = list_row(c_first)
        missing = np.flatnonzero(~_contains(np.take(col, c_row, axis=0), p_turned))
        rows, cols = c_row[missing], p_turned[missing].astype(np.int64)
        dist = d2[r0:r1].ravel()[missing]
        across = (cols >> shift) != (row_ids[rows] >> shift)  # measured between true centres
        dist[across] = _sq_dist(_vec(nside, row_ids[rows[across]]), _vec(nside, cols[across]))
        return rows, cols, dist

    _sort_rows(col, d2, blocks)
    extras = _sorted_extras(parallel_map(missing_reverse, blocks, col.size))
    length = _row_lengths(col, n, extras[0], blocks)
    face_edges = [int(length[r * n2 : (r + 1) * n2].sum()) for r in range(3)]
    face_start = [4 * sum(face_edges[:r]) for r in range(3)]  # of faces 0, 4 and 8
    edge_index, edge_weight = _empty_edges(4 * sum(face_edges), index_dtype)
    out = edge_index.numpy(), edge_weight.numpy()
    starts = np.empty(3 * n2, dtype=np.int64)
    for r in range(3):
        rows = slice(r * n2, (r + 1) * n2)
        starts[rows] = face_start[r] + np.cumsum(length[rows]) - length[rows]
    _fill_rows(col, d2, n, row_ids, starts, extras, out, weight_fn, blocks, release)
    _turn_onto_other_faces(nside, out, face_start, face_edges, starts, length, weight_fn)
    return edge_index, edge_weight


def _turn_onto_other_faces(nside, out, face_start, face_edges, starts, length, weight_fn):
    """Writes the edges of faces ``4 r + q`` (q = 1, 2, 3) from those of face ``4 r``.

    ``out`` is (edge_index, edge_weight) as numpy views, whose parts for faces 0, 4 and 8 are
    written (``face_edges[r]`` edges from ``face_start[r]``; ``starts`` and ``length`` give
    each of their rows). Rows and same-face neighbours move by q faces; neighbours on another
    face are turned, their edges measured again between the true centres, and the rows
    holding them re-sorted.
    """
    out_index, out_weight = out
    n2, shift = nside * nside, _face_shift(nside)

    def copy(task):
        e0, count, q, c0, c1 = task
        dst = e0 + q * count
        np.add(out_index[:, e0 + c0 : e0 + c1], q * n2, out=out_index[:, dst + c0 : dst + c1])
        out_weight[dst + c0 : dst + c1] = out_weight[e0 + c0 : e0 + c1]

    chunk = _ROWS * 8
    tasks = [
        (e0, count, q, c0, min(count, c0 + chunk))
        for e0, count in zip(face_start, face_edges)
        for q in (1, 2, 3)
        for c0 in range(0, count, chunk)
    ]
    parallel_map(copy, tasks, 3 * sum(face_edges))

    def find_across(task):  # positions of the edges of face 4 r to another face
        r, e0, c0, c1 = task
        return c0 + np.flatnonzero((out_index[1, e0 + c0 : e0 + c1] >> shift) != 4 * r)

    tasks = [
        (r, e0, c0, min(count, c0 + chunk))
        for r, (e0, count) in enumerate(zip(face_start, face_edges))
        for c0 in range(0, count, chunk)
    ]
    found = parallel_map(find_across, tasks, sum(face_edges))
    for r, (e0, count) in enumerate(zip(face_start, face_edges)):
        first = slice(e0, e0 + count)
        # The edges across faces, and every edge of their rows (to re-sort).
        across = np.concatenate([a for task, a in zip(tasks, found) if task[0] == r])
        rows_across = r * n2 + np.unique(out_index[0, first][across]) - 4 * r * n2
        row_length = length[rows_across]
        in_rows = np.repeat(
            starts[rows_across] - e0 - np.cumsum(row_length) + row_length, row_length
        )
        in_rows += np.arange(len(in_rows))
        for q in (1, 2, 3):
            dst = e0 + q * count
            at = dst + across
            out_index[1, at] = turn_pixels(nside, out_index[1, e0 + across], q)
            dist = _sq_dist(_vec(nside, out_index[0, at]), _vec(nside, out_index[1, at]))
            out_weight[at] = weight_fn(dist.astype(np.float32))
            at = dst + in_rows
            order = np.lexsort((out_index[1, at], out_index[0, at]))
            out_index[1, at], out_weight[at] = out_index[1, at][order], out_weight[at][order]


def _edges(nside, node_pix, pixels, k, nest, variant, scale, index_dtype):
    """The symmetric edge list and weights :math:`\\exp(scale \\, d^2)` of the nodes."""
    if pixels is None and nest and variant == "v2":
        return _full_sphere_edges(nside, k, lambda d: np.exp(scale * d), index_dtype)
    n = len(node_pix)
    pix_nest = node_pix if nest else hp.ring2nest(nside, node_pix)
    # The directed lists, in scratch memory handed back block by block as the edge list
    # fills: the build peaks at about the size of the graph it returns.
    id_dtype = np.int32 if max(12 * nside**2, n) < 2**31 - 1 else np.int64
    col, d2, release = _scratch_lists(n, k, id_dtype)
    _neighbours(nside, pix_nest, k, variant, (col, d2))
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

    parallel_map(local_ids, _blocks(n), n * k)
    return _symmetric_edges(col, d2, lambda d: np.exp(scale * d), release, index_dtype)


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
    out_pos = pos.numpy()
    if pixels is None and nest:
        full_sphere_centres(nside, out_pos)
    else:  # block by block, straight into float32 (no [n, 3] float64 copies)

        def positions(block):
            r0, r1 = block
            ids = node_pix[r0:r1]
            out_pos[r0:r1] = centres(nside, ids if nest else hp.ring2nest(nside, ids))

        parallel_map(positions, _blocks(n), 8 * n)
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
            :obj:`torch.int32` for :obj:`edge_index`. 32-bit indices take 64 of the 180 bytes
            per pixel of a full-sphere graph off the :obj:`Data`, and
            :class:`~pyg_sphere.nn.ChebyshevOperator` then shares :obj:`edge_index[1]` as the
            column indices of its operator (32 bytes per pixel less; the memory at nside 2048
            is in ``docs/benchmarks.md``). Coarsened graphs keep the index type. int64 is PyG's
            convention: a layer or utility that expects it
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
