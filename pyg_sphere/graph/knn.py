"""Exact k nearest pixel centres on the HEALPix sphere.

Each of the 12 HEALPix base faces is an ``nside x nside`` grid (healpy's ``pix2xyf``). Away from
the face edges, the k nearest centres of a pixel lie in a small window of grid offsets around it,
so they are found by comparing a fixed set of candidates: on whole faces with array slices (no
gathers), on sparse regions with gathers. Pixels near a face edge, where the grid changes
orientation, are answered by a k-d tree over the band of pixels along all face edges. The result
equals a k-d tree query over the whole sphere (tested), at a fraction of its cost.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import healpy as hp
import numpy as np
from scipy.spatial import cKDTree

from .. import cache

MAX_K = 60

# Half-width W of the (2W+1)^2 window of candidates, by k. The windows hold 2-3x more
# candidates than needed, which covers the shear of the grid inside the faces.
_HALF_WIDTHS = ((8, 2), (20, 3), (40, 5), (MAX_K, 6))

# Rows processed at once, to bound the memory of the candidate distances.
_CHUNK = 1 << 18


def half_width(k: int) -> int:
    for k_max, w in _HALF_WIDTHS:
        if k <= k_max:
            return w
    raise ValueError(f"k must be at most {MAX_K}, got {k}")


def _window(w: int):
    dx, dy = np.meshgrid(np.arange(-w, w + 1), np.arange(-w, w + 1), indexing="ij")
    keep = (dx != 0) | (dy != 0)
    return dx[keep], dy[keep]


def _vec(nside: int, pix: np.ndarray) -> np.ndarray:
    return np.stack(hp.pix2vec(nside, pix, nest=True), axis=-1)


def _select(d2: np.ndarray, k: int):
    """Indices and values of the k smallest entries along the last axis."""
    sel = np.argpartition(d2, k - 1, axis=-1)[..., :k]
    return sel, np.take_along_axis(d2, sel, axis=-1)


@cache.memoize("knn_tree", cache.DEFAULT_LARGE_LIMIT)
def _edge_band_tree(nside: int, band: int):
    """A k-d tree over all pixels closer than `band` grid steps to the edge of their face."""
    if nside <= 2 * band:
        pix = np.arange(12 * nside**2)
    else:
        x, y = np.meshgrid(np.arange(nside), np.arange(nside), indexing="ij")
        dist = np.minimum(np.minimum(x, y), nside - 1 - np.maximum(x, y))
        x, y = x[dist < band], y[dist < band]
        pix = np.concatenate([hp.xyf2pix(nside, x, y, f, nest=True) for f in range(12)])
    return cKDTree(_vec(nside, pix)), pix


def _knn_tree(nside, pix, k, w):
    tree, tree_pix = _edge_band_tree(nside, 3 * w)
    nbr = np.empty((len(pix), k), dtype=np.int64)
    d2 = np.empty((len(pix), k), dtype=np.float32)
    for start in range(0, len(pix), _CHUNK):
        p = pix[start : start + _CHUNK]
        dist, idx = tree.query(_vec(nside, p), k=k + 1)
        cand = tree_pix[idx]
        # Drop the pixel itself (distance 0, so it is always among the k + 1 returned).
        keep = cand != p[:, None]
        keep[keep.sum(1) > k, -1] = False
        nbr[start : start + _CHUNK] = cand[keep].reshape(-1, k)
        d2[start : start + _CHUNK] = (dist[keep] ** 2).reshape(-1, k)
    return nbr, d2


def _knn_gather(nside, pix, x, y, face, k, w):
    dx, dy = _window(w)
    nbr = np.empty((len(pix), k), dtype=np.int64)
    d2 = np.empty((len(pix), k), dtype=np.float32)
    for start in range(0, len(pix), _CHUNK // len(dx) + 1):
        s = slice(start, start + _CHUNK // len(dx) + 1)
        cand = hp.xyf2pix(nside, x[s, None] + dx, y[s, None] + dy, face, nest=True)
        diff = _vec(nside, cand) - _vec(nside, pix[s])[:, None]
        sel, d2[s] = _select(np.einsum("ijk,ijk->ij", diff, diff), k)
        nbr[s] = np.take_along_axis(cand, sel, axis=1)
    return nbr, d2


def _knn_face(nside, face, k, w):
    """k-NN of all pixels of one face at least `w` steps from its edges, as [m, m, k] grids."""
    dx, dy = _window(w)
    m = nside - 2 * w
    gx, gy = np.meshgrid(np.arange(nside), np.arange(nside), indexing="ij")
    grid_pix = hp.xyf2pix(nside, gx, gy, face, nest=True)
    del gx, gy
    # One plane per coordinate: shifted planes subtract as contiguous blocks.
    pos = np.stack(hp.pix2vec(nside, grid_pix.ravel(), nest=True)).reshape(3, nside, nside)
    if 12 * nside**2 < 2**31:  # half the bytes of the face's neighbour lists
        grid_pix = grid_pix.astype(np.int32)
    nbr = np.empty((m, m, k), dtype=grid_pix.dtype)
    d2 = np.empty((m, m, k), dtype=np.float32)
    rows = max(1, _CHUNK // (m * len(dx)))
    for i0 in range(0, m, rows):
        i1 = min(m, i0 + rows)
        centre = pos[:, w + i0 : w + i1, w : w + m]
        cand_d2 = np.empty((len(dx), i1 - i0, m))
        diff = np.empty_like(centre)
        for o in range(len(dx)):
            np.subtract(
                centre, pos[:, w + i0 + dx[o] : w + i1 + dx[o], w + dy[o] : w + m + dy[o]], out=diff
            )
            np.square(diff, out=diff)
            np.sum(diff, axis=0, out=cand_d2[o])
        sel, d2[i0:i1] = _select(np.moveaxis(cand_d2, 0, -1), k)
        ii = np.arange(w + i0, w + i1)[:, None, None] + dx[sel]
        jj = np.arange(w, w + m)[None, :, None] + dy[sel]
        nbr[i0:i1] = grid_pix[ii, jj]
    return nbr, d2


def healpix_knn(nside: int, pixels: np.ndarray, k: int, out=None):
    """Returns the `k` nearest pixel centres (over the whole sphere) of nested `pixels`.

    Distances are Euclidean between unit vectors, compared in float64. Returns
    ``(neighbours [n, k] int64 nested ids, squared distances [n, k] float32)``, neighbours in
    no particular order; or fills `out`, a pair of such arrays (the ids may be int32).
    """
    pixels = np.asarray(pixels, dtype=np.int64)
    if not 1 <= k <= min(MAX_K, 12 * nside**2 - 1):
        raise ValueError(
            f"k must be between 1 and {min(MAX_K, 12 * nside**2 - 1)} at nside={nside}, got {k}"
        )
    w = half_width(k)
    if out is None:
        out = np.empty((len(pixels), k), dtype=np.int64), np.empty((len(pixels), k), np.float32)
    nbr, d2 = out
    x, y, face = hp.pix2xyf(nside, pixels, nest=True)
    inner = np.minimum(np.minimum(x, y), nside - 1 - np.maximum(x, y)) >= w

    edge = np.flatnonzero(~inner)
    if len(edge):
        nbr[edge], d2[edge] = _knn_tree(nside, pixels[edge], k, w)

    def one_face(f):  # faces fill disjoint rows
        rows = np.flatnonzero(inner & (face == f))
        if len(rows) == 0:
            return
        if len(rows) > (nside - 2 * w) ** 2 // 4:  # dense: whole-face slicing is cheaper
            face_nbr, face_d2 = _knn_face(nside, f, k, w)
            # Row by row chunks: no face-sized copies of the gathered lists.
            for start in range(0, len(rows), _CHUNK):
                r = rows[start : start + _CHUNK]
                gx, gy = x[r] - w, y[r] - w
                nbr[r], d2[r] = face_nbr[gx, gy], face_d2[gx, gy]
        else:
            nbr[rows], d2[rows] = _knn_gather(nside, pixels[rows], x[rows], y[rows], f, k, w)

    parallel_map(one_face, range(12), work=len(pixels) * k)
    return nbr, d2


def parallel_map(fn, items, work: int) -> list:
    """``[fn(i) for i in items]`` on a thread per core when there is enough work: numpy
    releases the GIL in its array loops, so independent blocks run on all cores."""
    workers = min(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        8,
    )
    if workers < 2 or work < _PARALLEL_MIN_WORK:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


# Below this many neighbour slots, starting threads costs more than it saves.
_PARALLEL_MIN_WORK = 1 << 20
