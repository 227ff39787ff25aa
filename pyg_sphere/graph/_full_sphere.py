"""The v2 edge list of the whole nested sphere: three faces built, turned onto the other nine.

A quarter turn about the polar axis maps the sphere's graph onto itself (see
:mod:`._geometry`): the rows of face ``4 r + q`` are those of face ``4 r`` turned by ``q``.
:func:`full_sphere_edges` is the special case of the general build (:mod:`._edges`) for it:
the lists are searched (:func:`.knn.healpix_knn`: faces 0 and 4, face 8 mirrored onto face 0),
symmetrised and weighted for the rows of faces 0, 4 and 8 only, and written to the edge list
with room for the other nine faces, which :func:`_turn_onto_other_faces` then fills, re-measuring
the edges across faces and re-sorting their rows. The result equals the general build's
(tested); the time and memory it saves are in ``docs/benchmarks.md``.
"""

import numpy as np
import torch

from .._parallel import parallel_map
from ._edges import NeighbourLists, contains, edge_chunks, row_blocks, symmetrise
from ._geometry import face_shift, pixel_vectors, sq_dist, turn_pixels
from .knn import healpix_knn


def full_sphere_edges(nside: int, k: int, weight_fn, index_dtype=torch.int64):
    """The symmetric, coalesced v2 ``edge_index`` and ``edge_weight`` (``weight_fn`` of the
    squared distances) of the k-NN graph of all nested pixels."""
    n2, shift = nside * nside, face_shift(nside)
    n = 12 * n2
    firsts = (0, 4, 8)
    row_ids = np.concatenate([np.arange(f * n2, (f + 1) * n2) for f in firsts])
    # Blocks within one face: each face's rows go to their own part of the edge list.
    blocks = [(r0 + r * n2, r1 + r * n2) for r in range(3) for r0, r1 in row_blocks(n2)]
    lists = NeighbourLists(3 * n2, k, np.int32 if n < 2**31 - 1 else np.int64, blocks)
    col, d2 = lists.col, lists.d2
    healpix_knn(nside, row_ids, k, out=(col, d2))

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
        missing = np.flatnonzero(~contains(np.take(col, c_row, axis=0), p_turned))
        rows, cols = c_row[missing], p_turned[missing].astype(np.int64)
        dist = d2[r0:r1].ravel()[missing]
        across = (cols >> shift) != (row_ids[rows] >> shift)  # measured between true centres
        dist[across] = sq_dist(
            pixel_vectors(nside, row_ids[rows[across]]), pixel_vectors(nside, cols[across])
        )
        return rows, cols, dist

    layout = _FaceLayout(n2)
    edge_index, edge_weight = symmetrise(
        lists, missing_reverse, layout, weight_fn, index_dtype, row_ids=row_ids, missing=n
    )
    _turn_onto_other_faces(nside, (edge_index.numpy(), edge_weight.numpy()), layout, weight_fn)
    return edge_index, edge_weight


class _FaceLayout:
    """Where the rows of faces 0, 4 and 8 go in the edge list: the ``place`` of
    :func:`._edges.symmetrise`, which it calls with the edges of each row (kept for the turns).

    Each of the three faces is followed by room for its three turns: face ``4 r`` has
    ``face_edges[r]`` edges from ``face_start[r]``, and row i of the lists ``length[i]`` edges
    from ``starts[i]``.
    """

    def __init__(self, n2: int):
        self.n2 = n2

    def __call__(self, length):
        n2 = self.n2
        self.length = length
        self.face_edges = [int(length[r * n2 : (r + 1) * n2].sum()) for r in range(3)]
        self.face_start = [4 * sum(self.face_edges[:r]) for r in range(3)]
        self.starts = np.empty(3 * n2, dtype=np.int64)
        for r in range(3):
            rows = slice(r * n2, (r + 1) * n2)
            self.starts[rows] = self.face_start[r] + np.cumsum(length[rows]) - length[rows]
        return self.starts, 4 * sum(self.face_edges)


def _turn_onto_other_faces(nside, out, layout, weight_fn):
    """Writes the edges of faces ``4 r + q`` (q = 1, 2, 3) from those of face ``4 r``.

    ``out`` is (edge_index, edge_weight) as numpy views, whose parts for faces 0, 4 and 8 are
    written where `layout` (a :class:`_FaceLayout`) says. Rows and same-face neighbours move
    by q faces; neighbours on another face are turned, their edges measured again between the
    true centres, and the rows holding them re-sorted.
    """
    out_index, out_weight = out
    n2, shift = nside * nside, face_shift(nside)
    face_start, face_edges = layout.face_start, layout.face_edges
    starts, length = layout.starts, layout.length

    def copy(task):
        e0, count, q, c0, c1 = task
        dst = e0 + q * count
        np.add(out_index[:, e0 + c0 : e0 + c1], q * n2, out=out_index[:, dst + c0 : dst + c1])
        out_weight[dst + c0 : dst + c1] = out_weight[e0 + c0 : e0 + c1]

    tasks = [
        (e0, count, q, c0, c1)
        for e0, count in zip(face_start, face_edges)
        for q in (1, 2, 3)
        for c0, c1 in edge_chunks(count)
    ]
    parallel_map(copy, tasks, 3 * sum(face_edges))

    def find_across(task):  # positions of the edges of face 4 r to another face
        r, e0, c0, c1 = task
        return c0 + np.flatnonzero((out_index[1, e0 + c0 : e0 + c1] >> shift) != 4 * r)

    tasks = [
        (r, e0, c0, c1)
        for r, (e0, count) in enumerate(zip(face_start, face_edges))
        for c0, c1 in edge_chunks(count)
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
            dist = sq_dist(
                pixel_vectors(nside, out_index[0, at]), pixel_vectors(nside, out_index[1, at])
            )
            out_weight[at] = weight_fn(dist.astype(np.float32))
            at = dst + in_rows
            order = np.lexsort((out_index[1, at], out_index[0, at]))
            out_index[1, at], out_weight[at] = out_index[1, at][order], out_weight[at][order]
