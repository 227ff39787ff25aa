"""Geometry of the nested HEALPix sphere: faces, its symmetries, and pixel centres.

Each of the 12 HEALPix base faces is an ``nside x nside`` grid (healpy's ``pix2xyf``) of
``nside**2`` consecutive nested ids. The sphere turns into itself by a quarter turn about the
polar axis: the four faces of each row (north 0-3, equatorial 4-7, south 8-11) map onto each
other, keeping their local pixel ids (:func:`turn_pixels`). It is also its own mirror image
through the equatorial plane, which maps the south row onto the north one and each equatorial
face onto itself (:func:`mirror_pixels`). healpy's centres have both symmetries exactly (x and
y kept, z negated, bit for bit).

Every pixel is the image of a pixel of face 0 or 4 (:func:`fold`, undone by :func:`unfold`):
the k-NN search (:mod:`.knn`) runs on those two faces, and :func:`centres` takes healpy's
centres there and turns them (exact swaps and sign changes), so that both have the sphere's
symmetries exactly. Squared distances (:func:`sq_dist`) are the same sum of squares whichever
end asks.

The k-NN search (:mod:`.knn`), the full sphere's build (:mod:`._full_sphere`) and
:func:`~pyg_sphere.healpix_graph` share these helpers.
"""

import numpy as np

from .._lazy import lazy
from .._parallel import parallel_map

hp = lazy("healpy")

# Rows of centres computed at once: their float64 temporaries stay small.
_ROWS = 1 << 17


def face_shift(nside: int) -> int:
    """Bits of a nested id below its face number (``nside**2`` ids per face)."""
    return 2 * (nside.bit_length() - 1)


def pixel_vectors(nside: int, pix: np.ndarray) -> np.ndarray:
    """healpy's unit vectors [..., 3] (float64) of the centres of nested `pix`."""
    return np.stack(hp.pix2vec(nside, pix, nest=True), axis=-1)


def sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distances between points [..., 3], summed x, y, z in this order: the same
    number for (a, b) as for (b, a), and as the whole-face search computes."""
    return (
        (a[..., 0] - b[..., 0]) ** 2 + (a[..., 1] - b[..., 1]) ** 2 + (a[..., 2] - b[..., 2]) ** 2
    )


def turn_pixels(nside: int, pixels: np.ndarray, turns) -> np.ndarray:
    """Nested ids of `pixels` turned by `turns` quarter turns east about the polar axis.

    A quarter turn maps face ``4 r + q`` onto face ``4 r + (q + 1) % 4`` with the same local id
    (healpy's faces 0-3, 4-7 and 8-11 are the north, equatorial and south rows). `turns` is an
    int or an array that broadcasts against `pixels`; the dtype of `pixels` is kept.
    """
    pixels = np.asarray(pixels)
    shift = face_shift(nside)
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
    n2, shift = nside * nside, face_shift(nside)
    x_bits = (n2 - 1) // 3  # the even bits of a local id: 0b...0101
    face, local = pixels >> shift, pixels & (n2 - 1)
    swapped = ((local & x_bits) << 1) | ((local >> 1) & x_bits)
    face = face ^ (8 - 2 * (face & 4))  # 0-3 <-> 8-11; 4-7 stay
    return ((face << shift) | (swapped ^ (n2 - 1))).astype(pixels.dtype, copy=False)


def fold(nside: int, pixels: np.ndarray):
    """``(ids on face 0 or 4, turns, mirrored)`` of nested `pixels`: each pixel is turned onto
    the first face of its row, and mirrored if that is face 8. :func:`unfold` undoes it."""
    turns = (pixels >> face_shift(nside)) & 3
    first = turn_pixels(nside, pixels, -turns) if turns.any() else pixels
    mirrored = (first >> face_shift(nside)) == 8
    if mirrored.any():
        first = np.where(mirrored, mirror_pixels(nside, first), first)
    return first, turns, mirrored


def unfold(nside: int, ids: np.ndarray, turns: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
    """`ids` [n, k] found for :func:`fold`-ed pixels, mapped back (mirror, then turns: the two
    commute) to the pixels' own faces; `turns` and `mirrored` are [n]."""
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
    afresh). :func:`write_centres` writes the same numbers, block by block.
    """
    first, turns, mirrored = fold(nside, np.asarray(pixels, dtype=np.int64))
    v = pixel_vectors(nside, first).astype(np.float32)  # rounding commutes with swaps and signs
    for q in range(4):
        for m in (False, True):
            at = (turns == q) & (mirrored == m)
            if at.any():
                columns, signs = _image_map(q, m)
                v[at] = v[at][:, columns] * signs
    return v


def write_centres(nside: int, pixels, out: np.ndarray, nest: bool = True) -> None:
    """Writes the :func:`centres` of `pixels` (ids in the ordering given by `nest`) to `out`
    [n, 3] (float32), block by block on all cores, with no [n, 3] float64 copies.

    With `pixels` ``None`` (the whole nested sphere), faces 0 and 4 come from healpy and the
    other ten are their images (:func:`_full_sphere_centres`).
    """
    if pixels is None:
        _full_sphere_centres(nside, out)
        return
    n = len(pixels)

    def block(r0):
        ids = pixels[r0 : r0 + _ROWS]
        out[r0 : r0 + _ROWS] = centres(nside, ids if nest else hp.ring2nest(nside, ids))

    parallel_map(block, range(0, n, _ROWS), 8 * n)


def _full_sphere_centres(nside: int, out: np.ndarray) -> None:
    """Writes :func:`centres` of all nested pixels to `out` [12 nside^2, 3] (float32): faces 0
    and 4 from healpy, the other ten by turning and mirroring them."""
    n2 = nside * nside
    blocks = [(r0, min(n2, r0 + _ROWS)) for r0 in range(0, n2, _ROWS)]

    def searched(task):
        f, (r0, r1) = task
        out[f * n2 + r0 : f * n2 + r1] = pixel_vectors(nside, np.arange(f * n2 + r0, f * n2 + r1))

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
