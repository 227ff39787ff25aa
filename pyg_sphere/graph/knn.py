"""Exact k nearest pixel centres on the HEALPix sphere.

Each of the 12 HEALPix base faces is an ``nside x nside`` grid (healpy's ``pix2xyf``). Away from
the face edges, the k nearest centres of a pixel lie in a small window of grid offsets around it,
so they are found by comparing a fixed set of candidates: on whole faces with array slices (no
gathers), on sparse regions with gathers. Pixels near a face edge, where the grid changes
orientation, are answered by a k-d tree over the band of pixels along all face edges. The result
equals a k-d tree query over the whole sphere (tested), at a fraction of its cost.

The sphere turns into itself by a quarter turn about the polar axis: the four faces of each row
(north, equatorial, south) map onto each other, keeping their local pixel ids. It is also its
own mirror image through the equatorial plane, which maps the south row onto the north one and
each equatorial face onto itself. healpy's centres have both symmetries exactly (x and y kept,
z negated, bit for bit). Every pixel's neighbours are found on face 0 or 4, by turning (and
mirroring, south of the equator) the pixel there, and mapped back, so the lists (ties and
rounding included) have the sphere's symmetries exactly, and the full sphere costs the search
of two faces, not twelve. Squared distances are exactly symmetric: a pair within one face is
measured in the frame of face 0 or 4, a pair across faces between the true centres, by the
same sum of squares whichever end asks.
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


def _vec(nside: int, pix: np.ndarray) -> np.ndarray:
    return np.stack(hp.pix2vec(nside, pix, nest=True), axis=-1)


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distances between points [..., 3], summed x, y, z in this order: the same
    number for (a, b) as for (b, a), and as the whole-face search computes."""
    return (
        (a[..., 0] - b[..., 0]) ** 2 + (a[..., 1] - b[..., 1]) ** 2 + (a[..., 2] - b[..., 2]) ** 2
    )


def _face_shift(nside: int) -> int:
    """Bits of a nested id below its face number (``nside**2`` ids per face)."""
    return 2 * (nside.bit_length() - 1)


def turn_pixels(nside: int, pixels: np.ndarray, turns) -> np.ndarray:
    """Nested ids of `pixels` turned by `turns` quarter turns east about the polar axis.

    A quarter turn maps face ``4 r + q`` onto face ``4 r + (q + 1) % 4`` with the same local id
    (healpy's faces 0-3, 4-7 and 8-11 are the north, equatorial and south rows). `turns` is an
    int or an array that broadcasts against `pixels`; the dtype of `pixels` is kept.
    """
    pixels = np.asarray(pixels)
    shift = _face_shift(nside)
    face = pixels >> shift
    turned = (face & ~3) | ((face + turns) & 3)
    return ((turned << shift) | (pixels & (nside * nside - 1))).astype(pixels.dtype, copy=False)


def mirror_pixels(nside: int, pixels: np.ndarray) -> np.ndarray:
    """Nested ids of `pixels` mirrored through the equatorial plane (z to -z).

    The mirror maps face ``f`` onto face ``f + 8`` (north), ``f - 8`` (south) or itself
    (equatorial), and local coordinates ``(x, y)`` onto ``(nside - 1 - y, nside - 1 - x)``: in
    the nested id, the bits of x and y swap places and flip. It is its own inverse; the dtype of
    `pixels` is kept.
    """
    pixels = np.asarray(pixels)
    n2, shift = nside * nside, _face_shift(nside)
    x_bits = (n2 - 1) // 3  # the even bits of a local id: 0b...0101
    face, local = pixels >> shift, pixels & (n2 - 1)
    swapped = ((local & x_bits) << 1) | ((local >> 1) & x_bits)
    face = face ^ (8 - 2 * (face & 4))  # 0-3 <-> 8-11; 4-7 stay
    return ((face << shift) | (swapped ^ (n2 - 1))).astype(pixels.dtype, copy=False)


def _onto_searched_faces(nside: int, pixels: np.ndarray):
    """``(ids on face 0 or 4, turns, mirrored)`` of nested `pixels`: each pixel is turned onto
    the first face of its row, and mirrored if that is face 8. :func:`_back` undoes it."""
    turns = (pixels >> _face_shift(nside)) & 3
    first = turn_pixels(nside, pixels, -turns) if turns.any() else pixels
    mirrored = (first >> _face_shift(nside)) == 8
    if mirrored.any():
        first = np.where(mirrored, mirror_pixels(nside, first), first)
    return first, turns, mirrored


def _back(nside: int, ids: np.ndarray, turns: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
    """`ids` [n, k] found for pixels on the searched faces, mapped back (mirror, then turns:
    the two commute) to the pixels' own faces; `turns` and `mirrored` are [n]."""
    if mirrored.all():  # rows come in runs: mostly all or none
        ids = mirror_pixels(nside, ids)
    elif mirrored.any():
        ids = np.where(mirrored[:, None], mirror_pixels(nside, ids), ids)
    return turn_pixels(nside, ids, turns[:, None]) if turns.any() else ids


def _image_map(turns: int, mirrored: bool):
    """``(columns, signs)`` that turn vectors [n, 3] by `turns` quarter turns east and mirror
    them (z to -z) if `mirrored`: ``v[:, columns] * signs``, exact (swaps and signs)."""
    columns = [1, 0, 2] if turns & 1 else [0, 1, 2]  # (x, y) -> (-y, x), (-x, -y), (y, -x)
    xy = ((1, 1), (-1, 1), (-1, -1), (1, -1))[turns & 3]
    return columns, np.array([*xy, -1 if mirrored else 1], dtype=np.float32)


def centres(nside: int, pixels: np.ndarray) -> np.ndarray:
    """Unit vectors [n, 3] (float32) of the centres of nested `pixels`.

    healpy's centre of each pixel's image on face 0 or 4, mirrored and turned back by sign
    changes and swaps, which are exact: the centres have the sphere's symmetries exactly, and
    are within one float32 rounding of ``hp.pix2vec`` (which computes each face's angles
    afresh). :func:`full_sphere_centres` writes the same numbers for the whole sphere.
    """
    first, turns, mirrored = _onto_searched_faces(nside, np.asarray(pixels, dtype=np.int64))
    v = _vec(nside, first).astype(np.float32)  # rounding commutes with swaps and signs
    for q in range(4):
        for m in (False, True):
            at = (turns == q) & (mirrored == m)
            if at.any():
                columns, signs = _image_map(q, m)
                v[at] = v[at][:, columns] * signs
    return v


def full_sphere_centres(nside: int, out: np.ndarray) -> None:
    """Writes :func:`centres` of all nested pixels to `out` [12 nside^2, 3] (float32): faces 0
    and 4 from healpy, the other ten by turning and mirroring them."""
    n2 = nside * nside
    step = _CHUNK // 8  # rows: their float64 temporaries stay small
    blocks = [(r0, min(n2, r0 + step)) for r0 in range(0, n2, step)]

    def searched(task):
        f, (r0, r1) = task
        out[f * n2 + r0 : f * n2 + r1] = _vec(nside, np.arange(f * n2 + r0, f * n2 + r1))

    def image(task):
        f, (r0, r1) = task
        source = out[(4 if f // 4 == 1 else 0) * n2 :][:n2]
        if f >= 8:  # pixel i of face 8 mirrors pixel mirror(i) - 8 n2 of face 0
            rows = mirror_pixels(nside, np.arange(8 * n2 + r0, 8 * n2 + r1))
        else:
            rows = slice(r0, r1)
        columns, signs = _image_map(f, f >= 8)
        face = out[f * n2 + r0 : f * n2 + r1]
        face[:] = source[rows][:, columns]
        face *= signs

    parallel_map(searched, [(f, b) for f in (0, 4) for b in blocks], 2 * n2)
    others = [f for f in range(12) if f not in (0, 4)]
    parallel_map(image, [(f, b) for f in others for b in blocks], 10 * n2)


def _select(d2: np.ndarray, k: int):
    """Indices and values of the k smallest entries along the last axis."""
    sel = np.argpartition(d2, k - 1, axis=-1)[..., :k]
    return sel, np.take_along_axis(d2, sel, axis=-1)


def _contains(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether each of `values` [...] is among its row of `rows` [..., k]."""
    equal = rows == values[..., None]
    if equal.shape[-1] % 8 == 0:  # eight flags at once, as one 64-bit word
        words = equal.view(np.uint64)
        return words[..., 0] != 0 if words.shape[-1] == 1 else (words != 0).any(-1)
    return equal.any(-1)


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
    return cKDTree(_vec(nside, pix)), pix


def _knn_tree(nside, pix, k, w):
    tree, tree_pix = _edge_band_tree(nside, 3 * w)
    nbr = np.empty((len(pix), k), dtype=np.int64)
    d2 = np.empty((len(pix), k), dtype=np.float32)
    for start in range(0, len(pix), _CHUNK // k):
        p = pix[start : start + _CHUNK // k]
        pos = _vec(nside, p)
        _, idx = tree.query(pos, k=k + 1)
        cand = tree_pix[idx]
        # Drop the pixel itself (distance 0, so it is always among the k + 1 returned).
        keep = cand != p[:, None]
        keep[keep.sum(1) > k, -1] = False
        cand = cand[keep].reshape(-1, k)
        nbr[start : start + _CHUNK // k] = cand
        d2[start : start + _CHUNK // k] = _sq_dist(pos[:, None], _vec(nside, cand))
    return nbr, d2


def _knn_gather(nside, pix, x, y, face, k, w):
    dx, dy = _window(w)
    nbr = np.empty((len(pix), k), dtype=np.int64)
    d2 = np.empty((len(pix), k), dtype=np.float32)
    for start in range(0, len(pix), _CHUNK // len(dx) + 1):
        s = slice(start, start + _CHUNK // len(dx) + 1)
        cand = hp.xyf2pix(nside, x[s, None] + dx, y[s, None] + dy, face, nest=True)
        sel, d2[s] = _select(_sq_dist(_vec(nside, pix[s])[:, None], _vec(nside, cand)), k)
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
    first, turns, mirrored = _onto_searched_faces(nside, pixels)
    x, y, face = hp.pix2xyf(nside, first, nest=True)
    inner = np.minimum(np.minimum(x, y), nside - 1 - np.maximum(x, y)) >= w

    edge = np.flatnonzero(~inner)
    if len(edge):
        # The eight images of a pixel share one query.
        unique, inverse = np.unique(first[edge], return_inverse=True)
        edge_nbr, edge_d2 = _knn_tree(nside, unique, k, w)
        edge_nbr = _back(nside, edge_nbr[inverse], turns[edge], mirrored[edge])
        edge_d2 = edge_d2[inverse]
        # Pairs across faces are measured between the true centres (see the module's notes);
        # only pixels near a face edge have neighbours on another face.
        across = (edge_nbr >> _face_shift(nside)) != (pixels[edge] >> _face_shift(nside))[:, None]
        rows, slots = np.nonzero(across)
        edge_d2[rows, slots] = _sq_dist(
            _vec(nside, pixels[edge[rows]]), _vec(nside, edge_nbr[rows, slots])
        )
        nbr[edge], d2[edge] = edge_nbr, edge_d2

    def copy(task):  # rows of a searched face, from its grids
        r, face_nbr, face_d2 = task
        at = (x[r] - w) * (nside - 2 * w) + (y[r] - w)  # row of (x, y) in the grids
        nbr[r] = _back(nside, np.take(face_nbr, at, axis=0), turns[r], mirrored[r])
        d2[r] = np.take(face_d2, at, axis=0)

    def search(task):  # scattered rows, one by one
        r, f = task
        r_nbr, d2[r] = _knn_gather(nside, first[r], x[r], y[r], f, k, w)
        nbr[r] = _back(nside, r_nbr, turns[r], mirrored[r])

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
