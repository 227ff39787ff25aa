r"""Survey footprints from simple geometry: boolean HEALPix masks for examples and tests.

Real surveys observe part of the sky: a cap, a stripe of latitude, a region that avoids the
Galactic plane, pierced by holes around bright stars. The generators here make such masks from
a few numbers, with no download, so that examples and tests run on realistic footprints:

* :func:`cap_mask`: the pixels within an angular radius of a point;
* :func:`stripe_mask`: a band of latitude, optionally limited in longitude;
* :func:`band_with_holes`: a band of latitude with circular holes at seeded random positions;
* :func:`survey_footprint`: a footprint of a given sky fraction :math:`f_\mathrm{sky}`, to the
  pixel: a cut around the equator (:math:`|b| > b_0`) or a union of patches, with holes;
* :func:`apply_mask`: a copy of a map with :data:`healpy.UNSEEN` outside a mask, the form
  :class:`~pyg_sphere.datasets.ConvergenceMaps` reads.

All masks are **pixel-exact, without apodisation**: a pixel is in the footprint when its
centre is (healpy's ``inclusive=False`` queries), and the arrays are boolean, ``True`` where
observed, of length :math:`12 n_\mathrm{side}^2`, in RING ordering (``nest=False``, healpy's
default) or NESTED ordering (``nest=True``). Every mask is computed in RING ordering and
renumbered, so both orderings hold the same set of pixels. Longitudes and latitudes are in
degrees, as healpy's ``lonlat=True``, in the coordinate system of the maps they will be applied
to (Galactic, equatorial, ...): a "Galactic-plane cut" is a cut around the equator of that
system. All geometry is healpy's (:func:`healpy.query_disc`, :func:`healpy.query_strip`,
:func:`healpy.pix2ang`, ...).

Randomness comes only from ``numpy.random.default_rng(seed)``: a seed gives the same mask in
every run and on every machine.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple

import numpy as np

from .._lazy import lazy
from .._validate import check_int, check_nside, check_positive, check_real

hp = lazy("healpy")

__all__ = ["cap_mask", "stripe_mask", "band_with_holes", "survey_footprint", "apply_mask"]


def _check_lat(name: str, value) -> float:
    """A latitude in degrees, in [-90, 90]."""
    lat = check_real(name, value, "degrees")
    if not -90.0 <= lat <= 90.0:
        raise ValueError(f"{name} must be a latitude in degrees within [-90, 90], got {value!r}")
    return lat


def _check_band(lat_min_deg, lat_max_deg) -> Tuple[float, float]:
    """The latitudes of a band, -90 <= lat_min < lat_max <= 90."""
    lat_min = _check_lat("lat_min_deg", lat_min_deg)
    lat_max = _check_lat("lat_max_deg", lat_max_deg)
    if lat_min >= lat_max:
        raise ValueError(
            f"lat_min_deg must be smaller than lat_max_deg, got lat_min_deg={lat_min_deg!r} >= "
            f"lat_max_deg={lat_max_deg!r}; swap them (the band is lat_min_deg <= lat <= "
            f"lat_max_deg)"
        )
    return lat_min, lat_max


def _check_pair(name: str, value, what: str) -> Tuple[float, float]:
    """Two finite numbers, e.g. (lon, lat)."""
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two numbers {what}, got {value!r}") from None
    return check_real(f"{name}[0]", a, "degrees"), check_real(f"{name}[1]", b, "degrees")


def _check_lon_range(lon_range_deg) -> Optional[Tuple[float, float]]:
    """None or (lon_min, lon_max) with lon_min < lon_max <= lon_min + 360."""
    if lon_range_deg is None:
        return None
    lo, hi = _check_pair("lon_range_deg", lon_range_deg, "(lon_min_deg, lon_max_deg)")
    if not lo < hi <= lo + 360.0:
        raise ValueError(
            f"lon_range_deg=(lon_min, lon_max) needs lon_min < lon_max <= lon_min + 360, got "
            f"{lon_range_deg!r}; for a range through longitude 0 give a negative lon_min, e.g. "
            f"(-60, 60) rather than (300, 60)"
        )
    return lo, hi


def _check_f_sky(f_sky) -> float:
    if (
        isinstance(f_sky, bool)
        or not isinstance(f_sky, numbers.Real)
        or not (math.isfinite(f_sky) and 0.0 < f_sky <= 1.0)
    ):
        raise ValueError(
            f"f_sky must be a sky fraction in (0, 1] (e.g. 0.35 for 35% of the sky), got {f_sky!r}"
        )
    return float(f_sky)


def _as_mask(nside: int, ring_pixels: np.ndarray, nest: bool, what: str, fix: str) -> np.ndarray:
    """The boolean mask of :obj:`ring_pixels` (RING ids) in the ordering given by :obj:`nest`;
    raises when it is empty, naming the footprint (:obj:`what`) and how to get pixels
    (:obj:`fix`)."""
    if ring_pixels.size == 0:
        raise ValueError(f"{what} holds no pixel centre at nside={nside}: {fix}")
    mask = np.zeros(hp.nside2npix(nside), dtype=bool)
    mask[hp.ring2nest(nside, ring_pixels) if nest else ring_pixels] = True
    return mask


def _holes(
    nside: int, candidates: np.ndarray, num_holes: int, radius_deg: float, rng
) -> np.ndarray:
    """A RING-ordered boolean array, True in :obj:`num_holes` discs of radius
    :obj:`radius_deg` centred on pixels drawn at random (uniformly: pixels have equal areas)
    from the RING ids :obj:`candidates`. Each disc holds at least the pixel at its centre."""
    holed = np.zeros(hp.nside2npix(nside), dtype=bool)
    if num_holes == 0:
        return holed
    centres = candidates[rng.integers(0, candidates.size, size=num_holes)]
    vectors = np.stack(hp.pix2vec(nside, centres), axis=-1)
    radius = math.radians(radius_deg)
    for vector in vectors:
        holed[hp.query_disc(nside, vector, radius, inclusive=False)] = True
    holed[centres] = True  # a disc smaller than a pixel still holds its own centre
    return holed


def cap_mask(
    nside: int,
    radius_deg: float,
    *,
    centre: Sequence[float] = (0.0, 90.0),
    nest: bool = False,
) -> np.ndarray:
    r"""A spherical cap: the pixels whose centres lie within :obj:`radius_deg` of
    :obj:`centre`, e.g. a deep field or a patch around a cluster.

    Pixel-exact, without apodisation (:func:`healpy.query_disc` with ``inclusive=False``). Its
    sky fraction tends to :math:`(1 - \cos r) / 2` as :obj:`nside` grows; the difference
    comes from the pixels along the edge and stays below the area they cover,
    :math:`\sin r \cdot \theta_\mathrm{pix} / 2` of the sky with :math:`\theta_\mathrm{pix}`
    = ``healpy.nside2resol(nside)`` (radians).

    Args:
        nside: HEALPix resolution, a power of 2.
        radius_deg: angular radius of the cap in degrees, in (0, 180].
        centre: ``(lon_deg, lat_deg)`` of the cap's centre, as healpy's ``lonlat=True``
            (default: the north pole).
        nest: ordering of the returned mask: NESTED if :obj:`True`, RING (healpy's default)
            otherwise.

    Returns:
        bool array ``[12 * nside**2]``, :obj:`True` in the cap.

    Example:
        >>> mask = cap_mask(16, 30.0)
        >>> mask.shape, mask.dtype
        ((3072,), dtype('bool'))
        >>> print(f"{mask.mean():.4f} vs {(1 - np.cos(np.radians(30))) / 2:.4f}")
        0.0716 vs 0.0670
    """
    nside = check_nside(nside)
    radius = check_positive("radius_deg", radius_deg, hint="the cap's radius in degrees")
    if radius > 180.0:
        raise ValueError(
            f"radius_deg must be at most 180 degrees (180 is the whole sphere), got {radius_deg!r}"
        )
    lon, lat = _check_pair("centre", centre, "(lon_deg, lat_deg)")
    _check_lat("centre[1] (the latitude)", lat)
    vector = hp.ang2vec(lon, lat, lonlat=True)
    pixels = hp.query_disc(nside, vector, math.radians(radius), inclusive=False)
    return _as_mask(
        nside,
        pixels,
        nest,
        f"the cap of radius {radius_deg!r} deg around {tuple(centre)!r}",
        f"give a radius larger than about half a pixel "
        f"({hp.nside2resol(nside, arcmin=True) / 120:.3g} deg) or a larger nside",
    )


def stripe_mask(
    nside: int,
    lat_min_deg: float,
    lat_max_deg: float,
    *,
    lon_range_deg: Optional[Sequence[float]] = None,
    nest: bool = False,
) -> np.ndarray:
    r"""A stripe: the pixels whose centres have ``lat_min_deg <= lat <= lat_max_deg``, e.g. a
    ground-based survey's range of declination, or the Galactic plane itself,
    :math:`|b| < b_0`.

    Pixel-exact, without apodisation (:func:`healpy.query_strip` with ``inclusive=False``,
    then the longitudes of :func:`healpy.pix2ang`). Its sky fraction tends to
    :math:`(\sin b_\mathrm{max} - \sin b_\mathrm{min}) / 2` (times the covered fraction of
    longitude) as :obj:`nside` grows; whole rings of pixels are in or out, so the difference
    is at most one ring along each edge.

    Args:
        nside: HEALPix resolution, a power of 2.
        lat_min_deg: southern edge in degrees, in [-90, 90).
        lat_max_deg: northern edge in degrees, in (lat_min_deg, 90].
        lon_range_deg: ``(lon_min, lon_max)`` in degrees to keep only the pixels whose
            longitude runs eastwards from ``lon_min`` to ``lon_max``
            (``lon_min < lon_max <= lon_min + 360``; for a range through longitude 0 give a
            negative ``lon_min``, e.g. ``(-60, 60)``). :obj:`None` (default): all longitudes.
        nest: ordering of the returned mask: NESTED if :obj:`True`, RING otherwise.

    Returns:
        bool array ``[12 * nside**2]``, :obj:`True` in the stripe.

    Example:
        >>> mask = stripe_mask(16, -30.0, 10.0)
        >>> print(f"{mask.mean():.4f} vs {(np.sin(np.radians(10)) + 0.5) / 2:.4f}")
        0.3333 vs 0.3368
        >>> half = stripe_mask(16, -30.0, 10.0, lon_range_deg=(-90, 90))
        >>> print(f"{half.sum() / mask.sum():.1f}")
        0.5
    """
    nside = check_nside(nside)
    lat_min, lat_max = _check_band(lat_min_deg, lat_max_deg)
    lon_range = _check_lon_range(lon_range_deg)
    # query_strip takes colatitudes, theta1 < theta2: the northern edge first.
    pixels = hp.query_strip(
        nside, math.radians(90.0 - lat_max), math.radians(90.0 - lat_min), inclusive=False
    )
    if lon_range is not None and pixels.size:
        lo, hi = lon_range
        lon = hp.pix2ang(nside, pixels, lonlat=True)[0]
        pixels = pixels[(lon - lo) % 360.0 <= hi - lo]
    return _as_mask(
        nside,
        pixels,
        nest,
        f"the stripe {lat_min_deg!r} <= lat <= {lat_max_deg!r}"
        + ("" if lon_range is None else f", lon in {tuple(lon_range_deg)!r}"),
        "widen it or use a larger nside",
    )


def band_with_holes(
    nside: int,
    lat_min_deg: float,
    lat_max_deg: float,
    *,
    num_holes: int,
    hole_radius_deg: float,
    seed: int = 0,
    nest: bool = False,
) -> np.ndarray:
    r"""A stripe of latitude pierced by circular holes, like the masks around bright stars.

    The band is :func:`stripe_mask`'s; the holes are :obj:`num_holes` discs of radius
    :obj:`hole_radius_deg` centred on pixels of the band drawn uniformly at random (with
    replacement: holes may overlap, and spill over the band's edges). Each hole removes at
    least the pixel at its centre, however small its radius. Pixel-exact, without
    apodisation.

    Args:
        nside: HEALPix resolution, a power of 2.
        lat_min_deg: southern edge of the band in degrees, in [-90, 90).
        lat_max_deg: northern edge of the band in degrees, in (lat_min_deg, 90].
        num_holes: number of holes (>= 0).
        hole_radius_deg: angular radius of the holes in degrees, positive and smaller than
            half the band's width, ``(lat_max_deg - lat_min_deg) / 2``.
        seed: non-negative integer seed of the holes' positions.
        nest: ordering of the returned mask: NESTED if :obj:`True`, RING otherwise.

    Returns:
        bool array ``[12 * nside**2]``, :obj:`True` in the band outside the holes.

    Example:
        >>> band = stripe_mask(16, 20.0, 60.0)
        >>> holed = band_with_holes(16, 20.0, 60.0, num_holes=10, hole_radius_deg=5.0, seed=1)
        >>> bool((holed <= band).all()), int(band.sum()), int(holed.sum())
        (True, 772, 713)
    """
    nside = check_nside(nside)
    lat_min, lat_max = _check_band(lat_min_deg, lat_max_deg)
    num_holes = check_int("num_holes", num_holes, 0)
    radius = check_positive("hole_radius_deg", hole_radius_deg, hint="the holes' radius")
    half_width = (lat_max - lat_min) / 2.0
    if radius >= half_width:
        raise ValueError(
            f"hole_radius_deg={hole_radius_deg!r} is too large for the band {lat_min_deg!r} <= "
            f"lat <= {lat_max_deg!r}: a hole must be narrower than the band, hole_radius_deg < "
            f"(lat_max_deg - lat_min_deg) / 2 = {half_width:g}; use smaller holes or a wider band"
        )
    seed = check_int("seed", seed, 0)
    band = hp.query_strip(
        nside, math.radians(90.0 - lat_max), math.radians(90.0 - lat_min), inclusive=False
    )
    what = f"the band {lat_min_deg!r} <= lat <= {lat_max_deg!r}"
    if band.size == 0:
        raise ValueError(f"{what} holds no pixel centre at nside={nside}: widen it or raise nside")
    holed = _holes(nside, band, num_holes, radius, np.random.default_rng(seed))
    return _as_mask(
        nside,
        band[~holed[band]],
        nest,
        f"{what} minus its holes (num_holes={num_holes}, hole_radius_deg={hole_radius_deg!r})",
        "the holes cover all of it; use fewer or smaller holes",
    )


def survey_footprint(
    nside: int,
    f_sky: float,
    *,
    num_patches: int = 0,
    num_holes: int = 0,
    hole_radius_deg: float = 1.0,
    seed: int = 0,
    nest: bool = False,
) -> np.ndarray:
    r"""A survey-like footprint that covers a given fraction of the sky, to the pixel.

    Its shape is one of two:

    * ``num_patches=0`` (default): a cut around the equator of the maps' coordinates, as
      Galactic-plane cuts :math:`|b| > b_0`, with :math:`b_0` such that the footprint holds
      :math:`f_\mathrm{sky}` of the sky. Whole rings of pixels go in from the poles down; the
      last ring taken may be taken in part (northern ring first, by increasing longitude) to
      reach the exact number of pixels.
    * ``num_patches=k >= 1``: the union of :obj:`k` caps of equal radius centred at random
      positions (uniform on the sphere), the radius such that the union holds
      :math:`f_\mathrm{sky}` of the sky; caps may overlap and merge.

    Then :obj:`num_holes` discs of radius :obj:`hole_radius_deg`, centred on pixels of the
    footprint drawn at random, are cut out, and the footprint grows along its edge by as many
    pixels as the holes removed, so that the sky fraction stays that asked for. Each hole
    removes at least the pixel at its centre.

    The footprint holds exactly ``round(f_sky * 12 * nside**2)`` pixels: its sky fraction is
    :obj:`f_sky` within half a pixel, :math:`0.5 / (12 n_\mathrm{side}^2)`. Pixel-exact,
    without apodisation.

    Args:
        nside: HEALPix resolution, a power of 2.
        f_sky: sky fraction in (0, 1], at least half a pixel's worth, ``0.5 / (12 * nside**2)``.
        num_patches: 0 for an equatorial cut, or the number of patches (>= 1).
        num_holes: number of holes (>= 0), e.g. around bright stars.
        hole_radius_deg: angular radius of the holes in degrees (> 0).
        seed: non-negative integer seed: the patches' centres are drawn first, then the
            holes' (``numpy.random.default_rng(seed)``). Unused when there are neither
            patches nor holes.
        nest: ordering of the returned mask: NESTED if :obj:`True`, RING otherwise.

    Returns:
        bool array ``[12 * nside**2]``, :obj:`True` in the footprint.

    Example:
        >>> mask = survey_footprint(16, 0.35, num_holes=5, hole_radius_deg=4.0, seed=0)
        >>> int(mask.sum()), round(0.35 * 3072)
        (1075, 1075)
        >>> patches = survey_footprint(16, 0.1, num_patches=3, seed=2, nest=True)
        >>> int(patches.sum()), round(0.1 * 3072)
        (307, 307)
    """
    nside = check_nside(nside)
    f_sky = _check_f_sky(f_sky)
    num_patches = check_int("num_patches", num_patches, 0)
    num_holes = check_int("num_holes", num_holes, 0)
    radius = check_positive("hole_radius_deg", hole_radius_deg, hint="the holes' radius")
    if radius > 180.0:
        raise ValueError(f"hole_radius_deg must be at most 180 degrees, got {hole_radius_deg!r}")
    seed = check_int("seed", seed, 0)
    npix = hp.nside2npix(nside)
    target = round(f_sky * npix)
    if target == 0:
        raise ValueError(
            f"f_sky={f_sky!r} is less than half a pixel at nside={nside} (one pixel is "
            f"1 / {npix} = {1 / npix:.3g} of the sky); raise f_sky or nside"
        )
    rng = np.random.default_rng(seed)
    x, y, z = hp.pix2vec(nside, np.arange(npix))  # RING ids 0 ... npix - 1
    if num_patches == 0:
        # Distance from the equator; rounding makes the pixels of mirrored rings tie exactly.
        score = np.round(np.abs(z), 12)
    else:
        lon = rng.uniform(0.0, 360.0, num_patches)
        lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, num_patches)))
        centres = np.atleast_2d(hp.ang2vec(lon, lat, lonlat=True))
        score = np.max(centres @ np.stack([x, y, z]), axis=0)  # cosine to the nearest centre
    # Best score first; the stable sort breaks ties by RING id (north first, then longitude).
    order = np.argsort(-score, kind="stable")
    if num_holes:
        holed = _holes(nside, order[:target], num_holes, radius, rng)
        order = order[~holed[order]]
        if order.size < target:
            raise ValueError(
                f"the holes (num_holes={num_holes}, hole_radius_deg={hole_radius_deg!r}) leave "
                f"{order.size} pixels, fewer than f_sky * 12 * nside**2 = {target}: use fewer "
                f"or smaller holes, or a smaller f_sky"
            )
    return _as_mask(nside, order[:target], nest, "the footprint", "raise f_sky")


def apply_mask(m, mask) -> np.ndarray:
    r"""A copy of the map :obj:`m` with :data:`healpy.UNSEEN` outside :obj:`mask`: the form
    in which healpy (:func:`healpy.mollview`, :func:`healpy.anafast`, ...) and
    :class:`~pyg_sphere.datasets.ConvergenceMaps` take a partly observed map.

    The mask is applied as is, pixel by pixel (no apodisation): map and mask must be in the
    same ordering (RING or NESTED), which cannot be checked.

    Args:
        m: map(s), array-like or tensor ``[..., 12 * nside**2]`` (e.g. ``[npix]`` or
            ``[nmaps, npix]``, as healpy's).
        mask: bool array ``[12 * nside**2]``, :obj:`True` where observed, e.g. from
            :func:`survey_footprint`.

    Returns:
        numpy array of the shape of :obj:`m`, float32 if :obj:`m` is float32 and float64
        otherwise, equal to :obj:`m` where :obj:`mask` is :obj:`True` and
        :data:`healpy.UNSEEN` elsewhere. :obj:`m` is left unchanged.

    Example:
        >>> import healpy as hp
        >>> mask = cap_mask(16, 60.0)
        >>> observed = apply_mask(np.ones(3072), mask)
        >>> bool((observed[mask] == 1).all()), bool((observed[~mask] == hp.UNSEEN).all())
        (True, True)
    """
    mask = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    if mask.dtype != np.bool_:
        raise TypeError(
            f"mask must be a boolean array, True where observed, got dtype {mask.dtype}; "
            f"convert it, e.g. mask.astype(bool) or mask > 0.5"
        )
    if mask.ndim != 1 or not hp.isnpixok(mask.size):
        raise ValueError(
            f"mask must be one-dimensional with 12 * nside**2 entries, got shape {list(mask.shape)}"
        )
    m = np.asarray(m.detach().cpu() if hasattr(m, "detach") else m)
    if m.ndim == 0 or m.shape[-1] != mask.size:
        raise ValueError(
            f"the map has shape {list(m.shape)} but the mask has {mask.size} pixels (nside="
            f"{hp.npix2nside(mask.size)}): the map's last axis must have one entry per pixel "
            f"of the mask; make the mask at the map's nside (and in its ordering)"
        )
    out = np.array(m, dtype=np.float32 if m.dtype == np.float32 else np.float64, copy=True)
    out[..., ~mask] = hp.UNSEEN
    return out
