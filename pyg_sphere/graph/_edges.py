"""Directed neighbour lists to a symmetric, coalesced edge list, block by block.

A build finds, for each row (a node), its k nearest pixels and their squared distances: the
directed lists, in scratch memory (:class:`NeighbourLists`) whose pages go back to the system
block by block as the edge list fills, so that a build peaks at about the size of the graph it
returns. :func:`symmetrise` turns them into the union-symmetrised edge list: rather than sorting
all E edges (what scipy's ``A.maximum(A.T)`` costs), each row is sorted on its own and the few
missing reverse edges (j -> i with i not among j's neighbours) are merged in, block by block on
all cores.

:func:`symmetric_edges` is the general case, a row per node. The whole nested sphere is the
special case of :mod:`._full_sphere`: rows for three faces only, their reverse edges found by
turning, written with room for the other nine faces, which are then turned from them.
"""

import mmap

import numpy as np
import torch

from .._parallel import parallel_map

# Rows per block: keeps the temporaries of each step in cache.
BLOCK_ROWS = 1 << 17


def row_blocks(n: int) -> list:
    """``(r0, r1)`` blocks of :data:`BLOCK_ROWS` rows covering ``range(n)``."""
    return [(r0, min(n, r0 + BLOCK_ROWS)) for r0 in range(0, n, BLOCK_ROWS)]


def edge_chunks(count: int) -> list:
    """``(c0, c1)`` chunks covering an edge list of `count` edges, of about a block's edges."""
    chunk = BLOCK_ROWS * 8
    return [(c0, min(count, c0 + chunk)) for c0 in range(0, count, chunk)]


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


class NeighbourLists:
    """Directed neighbour lists of `rows` rows in scratch memory: :attr:`col` [rows, k] (ids of
    `id_dtype`) and :attr:`d2` [rows, k] (float32 squared distances), processed in
    :attr:`blocks` (disjoint row ranges; default :func:`row_blocks`)."""

    def __init__(self, rows: int, k: int, id_dtype, blocks=None):
        self._col, self._d2 = _Scratch((rows, k), id_dtype), _Scratch((rows, k), np.float32)
        self.col, self.d2 = self._col.array, self._d2.array
        self.blocks = row_blocks(rows) if blocks is None else blocks

    def release(self, r0, r1):
        """Hands rows r0 to r1 of both arrays back to the system (their data is lost)."""
        self._col.release_rows(r0, r1)
        self._d2.release_rows(r0, r1)


def contains(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether each of `values` [...] is among its row of `rows` [..., k]."""
    equal = rows == values[..., None]
    if equal.shape[-1] % 8 == 0:  # eight flags at once, as one 64-bit word
        words = equal.view(np.uint64)
        return words[..., 0] != 0 if words.shape[-1] == 1 else (words != 0).any(-1)
    return equal.any(-1)


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


def _fill_rows(lists, missing, row_ids, starts, extras, out, weight_fn):
    """Writes the sorted list rows, with their sorted extra edges merged in, to the edge list.

    Row r of the lists (neighbours below `missing`) is node ``row_ids[r]`` and its edges start
    at ``starts[r]`` of ``out = (edge_index [2, E], edge_weight [E])`` (numpy views); rows of a
    block are written contiguously, and the block is handed back once written.
    """
    col, d2, blocks = lists.col, lists.d2, lists.blocks
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
        lists.release(r0, r1)

    parallel_map(write, range(len(blocks)), col.size)


def symmetrise(lists, missing_reverse, place, weight_fn, index_dtype, row_ids=None, missing=None):
    """The symmetric edge list of directed neighbour lists: the pipeline of every build.

    Row r of `lists` (a :class:`NeighbourLists`, modified in place and handed back as the edge
    list fills) is node ``row_ids[r]`` (default: node r); its neighbours are the ids below
    `missing` (default: the number of rows). Each row is sorted by neighbour id, then
    ``missing_reverse((r0, r1))`` gives the reverse edges missing from the lists, as (list row,
    column, squared distance) arrays, for the rows of a block. ``place(length)``, given the
    edges of each row, returns ``(starts, count)``: where each row's edges start in an edge list
    of `count` edges. Rows are written there with their missing edges merged in, weighted by
    ``weight_fn(d2)``; the edges that `place` leaves no row for are left uninitialised.
    """
    col, d2, blocks = lists.col, lists.d2, lists.blocks
    missing = len(col) if missing is None else missing
    _sort_rows(col, d2, blocks)
    extras = _sorted_extras(parallel_map(missing_reverse, blocks, col.size))
    starts, count = place(_row_lengths(col, missing, extras[0], blocks))
    edge_index, edge_weight = _empty_edges(count, index_dtype)
    out = edge_index.numpy(), edge_weight.numpy()
    if row_ids is None:
        row_ids = np.arange(len(col), dtype=np.int64)
    _fill_rows(lists, missing, row_ids, starts, extras, out, weight_fn)
    return edge_index, edge_weight


def symmetric_edges(lists: NeighbourLists, weight_fn, index_dtype=torch.int64):
    """Union-symmetrises directed neighbour lists into a coalesced ``edge_index`` and weights.

    Row i of `lists` is node i; its :attr:`~NeighbourLists.col` holds node ids (n, the number
    of rows, where there is none). The lists are modified and handed back (see
    :func:`symmetrise`).
    """
    col, d2 = lists.col, lists.d2
    n = len(col)

    def missing_reverse(block):
        r0, r1 = block
        c = col[r0:r1]
        rows = np.arange(r0, r1, dtype=col.dtype)
        # i -> j is mutual if i is among j's neighbours; else j -> i must be added.
        mutual = contains(np.take(col, np.where(c < n, c, 0), axis=0), rows[:, None])
        src, slot = np.nonzero((c < n) & ~mutual)
        return c[src, slot], rows[src], d2[r0:r1][src, slot]

    def place(length):  # row after row
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(length, out=indptr[1:])
        return indptr, int(indptr[-1])

    return symmetrise(lists, missing_reverse, place, weight_fn, index_dtype)
