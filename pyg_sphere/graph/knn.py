"""Exact k nearest pixel centres on the HEALPix sphere.

Away from the face edges, the k nearest centres of a pixel lie in a small window of grid offsets
around it (each face is an ``nside x nside`` grid, see :mod:`._geometry`), so they are found by
comparing a fixed set of candidates: on whole faces with array slices (no gathers), on sparse
regions with gathers. Pixels near a face edge, where the grid changes orientation, are answered
by a k-d tree over the band of pixels along all face edges. The result equals a k-d tree query
over the whole sphere (tested), at a fraction of its cost.

Every pixel's neighbours are found on face 0 or 4, by turning (and mirroring, south of the
equator) the pixel there (:func:`._geometry.fold`), and mapped back, so the lists (ties and
rounding included) have the sphere's symmetries exactly, and the full sphere costs the search
of two faces, not twelve. Squared distances are exactly symmetric: a pair within one face is
measured in the frame of face 0 or 4, a pair across faces between the true centres, by the
same sum of squares whichever end asks.
"""

import numpy as np

from .. import cache
from .._lazy import lazy
from .._parallel import parallel_map
from ._geometry import face_shift, fold, pixel_vectors, sq_dist, unfold

hp = lazy("healpy")
spatial = lazy("scipy.spatial")

MAX_K = 60

# Half-width W of the (2W+1)^2 window of candidates, by k. The windows hold 2-3x more
# candidates than needed, which covers the shear of the grid inside the faces.
_HALF_WIDTHS = ((8, 2), (20, 3), (40, 5), (MAX_K, 6))

# Candidates processed at once, to bound the memory of their distances (8 MB of float64):
# large enough for numpy's loops, not Python's, to take the time.
_CHUNK = 1 << 20


def half_width(k: int) -> int:
    for k_max, w in _HALF_WIDTHS:
        if k <= k_max:
            return w
    raise ValueError(f"k must be at most {MAX_K}, got {k}")


def _window(w: int):
    dx, dy = np.meshgrid(np.arange(-w, w + 1), np.arange(-w, w + 1), indexing="ij")
    keep = (dx != 0) | (dy != 0)
    return dx[keep], dy[keep]


def _select(d2: np.ndarray, k: int):
    """Indices and values of the k smallest entries along the last axis."""
    sel = np.argpartition(d2, k - 1, axis=-1)[..., :k]
    return sel, np.take_along_axis(d2, sel, axis=-1)


def _select_window(cand_d2: np.ndarray, k: int):
    """:func:`_select` of ``np.moveaxis(cand_d2, 0, -1)`` for candidates [c, ...] of a window.

    Neighbouring pixels mostly pick the same candidates: the sets a sample of the pixels picks
    most are tried first, each taken where its largest distance is strictly below the smallest
    of the others (its k are then the k nearest). The other pixels, exact ties among them, go
    through argpartition as every pixel did before. Past 20 neighbours the sets vary too much
    from pixel to pixel for the guesses to pay.
    """
    if k > 20:
        return _select(np.moveaxis(cand_d2, 0, -1), k)
    c, shape = len(cand_d2), cand_d2.shape[1:]
    flat = cand_d2.reshape(c, -1)
    sel = np.empty((flat.shape[1], k), dtype=np.int8)  # candidate numbers (c <= 48 here)
    sample = flat[:, :: max(1, flat.shape[1] // 256)].T
    picks = np.sort(np.argpartition(sample, k - 1, axis=1)[:, :k], axis=1)
    sets, counts = np.unique(picks, axis=0, return_counts=True)
    todo = np.arange(flat.shape[1])
    for guess in sets[np.argsort(-counts, kind="stable")[:4]]:
        sub = flat if len(todo) == flat.shape[1] else flat[:, todo]
        others = np.setdiff1d(np.arange(c), guess)
        largest, smallest = sub[guess[0]].copy(), sub[others[0]].copy()
        for g in guess[1:]:  # plane by plane: no [k, P] copies
            np.maximum(largest, sub[g], out=largest)
        for o in others[1:]:
            np.minimum(smallest, sub[o], out=smallest)
        taken = largest < smallest
        sel[todo[taken]] = guess
        todo = todo[~taken]
        if len(todo) == 0:
            break
    if len(todo):
        sel[todo] = np.argpartition(flat[:, todo].T, k - 1, axis=1)[:, :k]
    d2 = np.take_along_axis(flat.T, sel.astype(np.intp), axis=1)
    return sel.reshape(*shape, k), d2.reshape(*shape, k)


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
    return spatial.cKDTree(pixel_vectors(nside, pix)), pix


def _knn_tree(nside, pix, k, w):
    tree, tree_pix = _edge_band_tree(nside, 3 * w)
    nbr = np.empty((len(pix), k), dtype=np.int64)
    d2 = np.empty((len(pix), k), dtype=np.float32)
    for start in range(0, len(pix), _CHUNK // k):
        p = pix[start : start + _CHUNK // k]
        pos = pixel_vectors(nside, p)
        _, idx = tree.query(pos, k=k + 1)
        cand = tree_pix[idx]
        # Drop the pixel itself (distance 0, so it is always among the k + 1 returned).
        keep = cand != p[:, None]
        keep[keep.sum(1) > k, -1] = False
        cand = cand[keep].reshape(-1, k)
        nbr[start : start + _CHUNK // k] = cand
        d2[start : start + _CHUNK // k] = sq_dist(pos[:, None], pixel_vectors(nside, cand))
    return nbr, d2


def _knn_gather(nside, pix, x, y, face, k, w):
    dx, dy = _window(w)
    nbr = np.empty((len(pix), k), dtype=np.int64)
    d2 = np.empty((len(pix), k), dtype=np.float32)
    for start in range(0, len(pix), _CHUNK // len(dx) + 1):
        s = slice(start, start + _CHUNK // len(dx) + 1)
        cand = hp.xyf2pix(nside, x[s, None] + dx, y[s, None] + dy, face, nest=True)
        sel, d2[s] = _select(
            sq_dist(pixel_vectors(nside, pix[s])[:, None], pixel_vectors(nside, cand)), k
        )
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

    def stripe(i0):  # stripes fill disjoint rows
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
        sel, d2[i0:i1] = _select_window(cand_d2, k)
        ii = np.arange(w + i0, w + i1)[:, None, None] + dx[sel]
        jj = np.arange(w, w + m)[None, :, None] + dy[sel]
        nbr[i0:i1] = grid_pix[ii, jj]

    parallel_map(stripe, range(0, m, rows), m * m * len(dx))
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
    # Search on face 0 or 4 (turned, and mirrored south of the equator), then map back.
    first, turns, mirrored = fold(nside, pixels)
    x, y, face = hp.pix2xyf(nside, first, nest=True)
    inner = np.minimum(np.minimum(x, y), nside - 1 - np.maximum(x, y)) >= w

    edge = np.flatnonzero(~inner)
    if len(edge):
        # The eight images of a pixel share one query.
        unique, inverse = np.unique(first[edge], return_inverse=True)
        edge_nbr, edge_d2 = _knn_tree(nside, unique, k, w)
        edge_nbr = unfold(nside, edge_nbr[inverse], turns[edge], mirrored[edge])
        edge_d2 = edge_d2[inverse]
        # Pairs across faces are measured between the true centres (see the module's notes);
        # only pixels near a face edge have neighbours on another face.
        across = (edge_nbr >> face_shift(nside)) != (pixels[edge] >> face_shift(nside))[:, None]
        rows, slots = np.nonzero(across)
        edge_d2[rows, slots] = sq_dist(
            pixel_vectors(nside, pixels[edge[rows]]), pixel_vectors(nside, edge_nbr[rows, slots])
        )
        nbr[edge], d2[edge] = edge_nbr, edge_d2

    def copy(task):  # rows of a searched face, from its grids
        r, face_nbr, face_d2 = task
        at = (x[r] - w) * (nside - 2 * w) + (y[r] - w)  # row of (x, y) in the grids
        nbr[r] = unfold(nside, np.take(face_nbr, at, axis=0), turns[r], mirrored[r])
        d2[r] = np.take(face_d2, at, axis=0)

    def search(task):  # scattered rows, one by one
        r, f = task
        r_nbr, d2[r] = _knn_gather(nside, first[r], x[r], y[r], f, k, w)
        nbr[r] = unfold(nside, r_nbr, turns[r], mirrored[r])

    for f in (0, 4):  # one face at a time, its rows on all cores
        rows = np.flatnonzero(inner & (face == f))
        # Chunks of rows: no face-sized copies of the gathered lists.
        chunks = [rows[start : start + _CHUNK // k] for start in range(0, len(rows), _CHUNK // k)]
        if len(rows) > (nside - 2 * w) ** 2 // 4:  # dense: whole-face slicing is cheaper
            face_nbr, face_d2 = (a.reshape(-1, k) for a in _knn_face(nside, f, k, w))
            parallel_map(copy, [(r, face_nbr, face_d2) for r in chunks], len(rows) * k)
            del face_nbr, face_d2
        else:
            parallel_map(search, [(r, f) for r in chunks], len(rows) * k)
    return nbr, d2
