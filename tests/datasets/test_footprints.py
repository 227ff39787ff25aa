"""Survey footprints: membership of pixel centres against angles computed with numpy, sky
fractions against the analytic areas, f_sky to the pixel, RING and NESTED holding the same set,
seeds, holes, connectivity, apply_mask, and the errors on bad input."""

import math

import healpy as hp
import numpy as np
import pytest
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pyg_sphere.datasets import (
    apply_mask,
    band_with_holes,
    cap_mask,
    stripe_mask,
    survey_footprint,
)

EPS = 1e-9  # pixel centres this close to an edge (radians) are not compared


def centres(nside, nest=False):
    """Unit vectors [npix, 3] of the pixel centres."""
    return np.stack(hp.pix2vec(nside, np.arange(hp.nside2npix(nside)), nest=nest), axis=-1)


def unit(lon_deg, lat_deg):
    """The unit vector at (lon, lat) in degrees, with numpy only."""
    lon, lat = np.radians(lon_deg), np.radians(lat_deg)
    return np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


def lonlat(v):
    """Longitudes in [0, 360) and latitudes, degrees, of unit vectors [n, 3]."""
    lon = np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 360.0
    return lon, np.degrees(np.arcsin(np.clip(v[:, 2], -1.0, 1.0)))


def angle_to(v, c):
    """Angles (radians) between unit vectors [n, 3] and the unit vector c."""
    return np.arccos(np.clip(v @ c, -1.0, 1.0))


def same_set_in_both_orderings(nside, ring, nest):
    """The NESTED mask is the RING mask renumbered."""
    assert ring.dtype == nest.dtype == np.bool_
    assert ring.shape == nest.shape == (hp.nside2npix(nside),)
    assert np.array_equal(hp.reorder(ring.astype(float), r2n=True) == 1.0, nest)


def num_components(nside, mask):
    """Number of connected pieces of a RING mask (pixels touching by a side or a corner)."""
    pix = np.flatnonzero(mask)
    neigh = hp.get_all_neighbours(nside, pix)  # [8, n], -1 where there is none
    src = np.broadcast_to(pix, neigh.shape)
    keep = (neigh >= 0) & mask[np.maximum(neigh, 0)]
    npix = hp.nside2npix(nside)
    adj = coo_matrix((np.ones(keep.sum()), (src[keep], neigh[keep])), shape=(npix, npix))
    labels = connected_components(adj, directed=False)[1]
    return np.unique(labels[pix]).size


# ---------------------------------------------------------------- cap_mask


@pytest.mark.parametrize("nest", [False, True])
@pytest.mark.parametrize("centre", [(0.0, 90.0), (200.0, -35.0), (17.0, 0.0)])
@pytest.mark.parametrize("radius", [10.0, 45.0, 120.0])
def test_cap_holds_the_pixel_centres_within_its_radius(nest, centre, radius):
    nside = 16
    mask = cap_mask(nside, radius, centre=centre, nest=nest)
    angle = angle_to(centres(nside, nest), unit(*centre))
    clear = np.abs(angle - math.radians(radius)) > EPS
    assert np.array_equal(mask[clear], (angle <= math.radians(radius))[clear])


@pytest.mark.parametrize("radius", [5.0, 30.0, 90.0, 150.0])
@pytest.mark.parametrize("centre", [(0.0, 90.0), (37.0, -12.0)])
def test_cap_area_tends_to_the_analytic_one(radius, centre):
    exact = (1.0 - math.cos(math.radians(radius))) / 2.0
    bounds = []
    for nside in (16, 64, 256):
        f_sky = cap_mask(nside, radius, centre=centre).mean()
        # Below the area of the ring of pixels along the edge, which shrinks as 1 / nside.
        bound = math.sin(math.radians(radius)) * hp.nside2resol(nside) / 2.0
        assert abs(f_sky - exact) <= bound, (nside, f_sky, exact)
        bounds.append(bound)
    assert bounds[-1] < bounds[0] / 10


def test_cap_of_180_degrees_is_the_whole_sphere():
    assert cap_mask(8, 180.0, centre=(12.0, 34.0)).all()


@pytest.mark.parametrize("centre", [(0.0, 90.0), (250.0, 40.0)])
def test_cap_same_set_in_both_orderings(centre):
    same_set_in_both_orderings(
        32, cap_mask(32, 25.0, centre=centre), cap_mask(32, 25.0, centre=centre, nest=True)
    )


# ---------------------------------------------------------------- stripe_mask


@pytest.mark.parametrize("nest", [False, True])
@pytest.mark.parametrize(
    "lat_min, lat_max", [(-30.0, 10.0), (0.0, 90.0), (-90.0, -60.0), (-5.0, 5.0)]
)
@pytest.mark.parametrize("lon_range", [None, (-60.0, 60.0), (100.0, 250.0), (0.0, 360.0)])
def test_stripe_holds_the_pixel_centres_within_its_edges(nest, lat_min, lat_max, lon_range):
    nside = 16
    mask = stripe_mask(nside, lat_min, lat_max, lon_range_deg=lon_range, nest=nest)
    lon, lat = lonlat(centres(nside, nest))
    inside = (lat >= lat_min) & (lat <= lat_max)
    clear = (np.abs(lat - lat_min) > EPS) & (np.abs(lat - lat_max) > EPS)
    if lon_range is not None:
        lo, hi = lon_range
        inside &= ((lon - lo) % 360.0 <= hi - lo) | (hi - lo == 360.0)
        for edge in lon_range:
            gap = np.abs((lon - edge + 180.0) % 360.0 - 180.0)
            clear &= gap > 1e-7
    assert np.array_equal(mask[clear], inside[clear])


@pytest.mark.parametrize("lat_min, lat_max", [(-30.0, 10.0), (20.0, 75.0), (-90.0, 90.0)])
def test_stripe_area_tends_to_the_analytic_one(lat_min, lat_max):
    exact = (math.sin(math.radians(lat_max)) - math.sin(math.radians(lat_min))) / 2.0
    for nside in (16, 64, 256):
        f_sky = stripe_mask(nside, lat_min, lat_max).mean()
        # Whole rings are in or out: at most one ring of 4 nside pixels along each edge.
        assert abs(f_sky - exact) <= 2 * 4 * nside / hp.nside2npix(nside), (nside, f_sky)
        quarter = stripe_mask(nside, lat_min, lat_max, lon_range_deg=(-45.0, 45.0)).mean()
        # ... and at most two pixels per ring at the edges in longitude.
        tol = 2 * 4 * nside / hp.nside2npix(nside) + 2 * 4 * nside / hp.nside2npix(nside)
        assert abs(quarter - exact / 4.0) <= tol, (nside, quarter)


def test_stripe_same_set_in_both_orderings():
    for lon_range in (None, (-60.0, 60.0)):
        same_set_in_both_orderings(
            32,
            stripe_mask(32, -20.0, 35.0, lon_range_deg=lon_range),
            stripe_mask(32, -20.0, 35.0, lon_range_deg=lon_range, nest=True),
        )


# ---------------------------------------------------------------- band_with_holes


def test_holes_remove_pixels_of_the_band_only():
    band = stripe_mask(32, -20.0, 20.0)
    holed = band_with_holes(32, -20.0, 20.0, num_holes=15, hole_radius_deg=3.0, seed=4)
    assert (holed <= band).all()
    removed = int(band.sum() - holed.sum())
    # One hole covers about pi r^2 of the sky: 15 of them, overlapping or spilling out, less.
    one_hole = (1.0 - math.cos(math.radians(3.0))) / 2.0 * hp.nside2npix(32)
    assert 15 <= removed <= 15 * 2 * one_hole, removed


def test_band_without_holes_is_the_stripe():
    assert np.array_equal(
        band_with_holes(16, 10.0, 50.0, num_holes=0, hole_radius_deg=2.0, seed=3),
        stripe_mask(16, 10.0, 50.0),
    )


def test_holes_are_seeded():
    kwargs = dict(num_holes=8, hole_radius_deg=4.0)
    a = band_with_holes(32, -30.0, 30.0, seed=7, **kwargs)
    assert np.array_equal(a, band_with_holes(32, -30.0, 30.0, seed=7, **kwargs))
    assert not np.array_equal(a, band_with_holes(32, -30.0, 30.0, seed=8, **kwargs))


def test_larger_holes_at_the_same_seed_remove_more():
    small = band_with_holes(32, -30.0, 30.0, num_holes=8, hole_radius_deg=2.0, seed=1)
    large = band_with_holes(32, -30.0, 30.0, num_holes=8, hole_radius_deg=6.0, seed=1)
    assert (large <= small).all() and large.sum() < small.sum()


def test_holes_smaller_than_a_pixel_remove_their_centre_pixel():
    band = stripe_mask(16, -30.0, 30.0)
    holed = band_with_holes(16, -30.0, 30.0, num_holes=5, hole_radius_deg=0.01, seed=0)
    assert 1 <= band.sum() - holed.sum() <= 5


def test_band_with_holes_same_set_in_both_orderings():
    kwargs = dict(num_holes=12, hole_radius_deg=3.0, seed=5)
    same_set_in_both_orderings(
        32,
        band_with_holes(32, -25.0, 40.0, **kwargs),
        band_with_holes(32, -25.0, 40.0, nest=True, **kwargs),
    )


# ---------------------------------------------------------------- survey_footprint

F_SKY = [0.01, 0.1, 0.35, 0.5, 0.77, 1.0]
SHAPES = [
    dict(),
    dict(num_patches=3, seed=11),
    dict(num_holes=20, hole_radius_deg=2.0, seed=5),
    dict(num_patches=2, num_holes=10, hole_radius_deg=3.0, seed=2),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nside", [8, 32, 128])
def test_survey_footprint_reaches_f_sky_to_half_a_pixel(nside, shape):
    npix = hp.nside2npix(nside)
    for f_sky in F_SKY:
        if f_sky == 1.0 and shape.get("num_holes"):
            continue  # no room for holes
        mask = survey_footprint(nside, f_sky, **shape)
        assert mask.dtype == np.bool_ and mask.shape == (npix,)
        assert abs(mask.mean() - f_sky) <= 0.5 / npix, (f_sky, mask.mean())


@pytest.mark.parametrize("f_sky", [0.2, 0.5, 0.8])
def test_equatorial_cut_keeps_the_pixels_farthest_from_the_equator(f_sky):
    nside = 32
    mask = survey_footprint(nside, f_sky)
    abs_z = np.abs(centres(nside)[:, 2])
    assert abs_z[mask].min() >= abs_z[~mask].max() - 1e-12
    # b0 is, within one ring, the cut whose area is f_sky: 1 - sin b0 = f_sky.
    b0 = np.degrees(np.arcsin(abs_z[mask].min()))
    assert abs((1.0 - math.sin(math.radians(b0))) - f_sky) <= 2 * 4 * nside / hp.nside2npix(nside)


def test_equatorial_cut_is_two_pieces_and_one_patch_is_one():
    assert num_components(32, survey_footprint(32, 0.4)) == 2
    assert num_components(32, survey_footprint(32, 0.15, num_patches=1, seed=3)) == 1


def test_one_patch_is_a_cap():
    nside = 64
    mask = survey_footprint(nside, 0.1, num_patches=1, seed=9)
    v = centres(nside)
    c = v[mask].sum(axis=0)
    c /= np.linalg.norm(c)  # the centroid of a pixelised cap is its centre, to a pixel
    angle = angle_to(v, c)
    assert angle[mask].max() <= angle[~mask].min() + hp.nside2resol(nside)


def test_holes_keep_f_sky_by_growing_the_edge():
    nside = 32
    plain = survey_footprint(nside, 0.3)
    holed = survey_footprint(nside, 0.3, num_holes=15, hole_radius_deg=3.0, seed=1)
    assert plain.sum() == holed.sum()
    lost, gained = plain & ~holed, holed & ~plain
    assert lost.sum() >= 15 and gained.sum() == lost.sum()
    abs_z = np.abs(centres(nside)[:, 2])
    # The holes are inside the cut; what replaces them lies beyond its edge.
    assert abs_z[gained].max() <= abs_z[plain].min() + 1e-12


def test_survey_footprint_is_seeded():
    kwargs = dict(num_patches=4, num_holes=6, hole_radius_deg=3.0)
    a = survey_footprint(32, 0.25, seed=0, **kwargs)
    assert np.array_equal(a, survey_footprint(32, 0.25, seed=0, **kwargs))
    assert not np.array_equal(a, survey_footprint(32, 0.25, seed=1, **kwargs))


@pytest.mark.parametrize("shape", SHAPES)
def test_survey_footprint_same_set_in_both_orderings(shape):
    same_set_in_both_orderings(
        32, survey_footprint(32, 0.3, **shape), survey_footprint(32, 0.3, nest=True, **shape)
    )


def test_full_sky():
    assert survey_footprint(8, 1.0).all() and survey_footprint(8, 1.0, num_patches=2).all()


# ---------------------------------------------------------------- apply_mask


def test_apply_mask_sets_unseen_outside_and_copies():
    mask = cap_mask(16, 50.0)
    m = np.arange(3072, dtype=np.float64)
    out = apply_mask(m, mask)
    assert np.array_equal(out[mask], m[mask]) and (out[~mask] == hp.UNSEEN).all()
    assert np.array_equal(m, np.arange(3072))  # the input is unchanged
    assert np.array_equal(hp.mask_bad(out), ~mask)


def test_apply_mask_dtypes_stacks_and_tensors():
    mask = stripe_mask(8, -10.0, 40.0)
    assert apply_mask(np.ones(768, np.float32), mask).dtype == np.float32
    assert apply_mask(np.ones(768, np.int64), mask).dtype == np.float64
    stack = apply_mask(np.ones((3, 768)), mask)
    assert stack.shape == (3, 768) and (stack[:, ~mask] == hp.UNSEEN).all()
    out = apply_mask(torch.ones(768), torch.from_numpy(mask))
    assert isinstance(out, np.ndarray) and (out[mask] == 1).all()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: cap_mask(15, 10.0), ValueError, "power of 2"),
        (lambda: cap_mask(16, 0.0), ValueError, "radius_deg must be a positive"),
        (lambda: cap_mask(16, -3.0), ValueError, "radius_deg must be a positive"),
        (lambda: cap_mask(16, 200.0), ValueError, "at most 180"),
        (lambda: cap_mask(16, 10.0, centre=(0.0, 95.0)), ValueError, r"within \[-90, 90\]"),
        (lambda: cap_mask(16, 10.0, centre=5.0), ValueError, "two numbers"),
        (lambda: cap_mask(16, 10.0, centre=(np.nan, 0.0)), ValueError, "finite number"),
        (lambda: cap_mask(16, 0.1), ValueError, "no pixel centre at nside=16"),
        (lambda: stripe_mask(16, 10.0, 10.0), ValueError, "smaller than lat_max_deg"),
        (lambda: stripe_mask(16, 30.0, 10.0), ValueError, "swap them"),
        (lambda: stripe_mask(16, -100.0, 10.0), ValueError, r"within \[-90, 90\]"),
        (
            lambda: stripe_mask(16, 0.0, 10.0, lon_range_deg=(300.0, 60.0)),
            ValueError,
            r"\(-60, 60\) rather than \(300, 60\)",
        ),
        (
            lambda: stripe_mask(16, 0.0, 10.0, lon_range_deg=(0.0, 400.0)),
            ValueError,
            r"lon_max <= lon_min \+ 360",
        ),
        (lambda: stripe_mask(16, 0.1, 0.2), ValueError, "no pixel centre.*widen it"),
        (
            lambda: band_with_holes(16, 0.0, 10.0, num_holes=3, hole_radius_deg=6.0),
            ValueError,
            "too large for the band.* < .* = 5",
        ),
        (
            lambda: band_with_holes(16, 0.0, 10.0, num_holes=3, hole_radius_deg=0.0),
            ValueError,
            "hole_radius_deg must be a positive",
        ),
        (
            lambda: band_with_holes(16, 0.0, 30.0, num_holes=-1, hole_radius_deg=1.0),
            ValueError,
            "num_holes must be an integer >= 0",
        ),
        (
            lambda: band_with_holes(16, 0.0, 30.0, num_holes=2.5, hole_radius_deg=1.0),
            TypeError,
            "num_holes must be an integer",
        ),
        (
            lambda: band_with_holes(16, -10.0, 10.0, num_holes=2000, hole_radius_deg=9.0),
            ValueError,
            "the holes cover all of it",
        ),
        (
            lambda: survey_footprint(16, 0.0),
            ValueError,
            r"f_sky must be a sky fraction in \(0, 1\]",
        ),
        (lambda: survey_footprint(16, 1.5), ValueError, r"sky fraction in \(0, 1\]"),
        (lambda: survey_footprint(16, float("nan")), ValueError, r"sky fraction in \(0, 1\]"),
        (lambda: survey_footprint(16, True), ValueError, r"sky fraction in \(0, 1\]"),
        (lambda: survey_footprint(16, 1e-5), ValueError, "less than half a pixel at nside=16"),
        (
            lambda: survey_footprint(16, 1.0, num_holes=1),
            ValueError,
            "fewer than f_sky \\* 12 \\* nside\\*\\*2 = 3072",
        ),
        (lambda: survey_footprint(16, 0.3, seed=-1), ValueError, "seed must be an integer >= 0"),
        (lambda: survey_footprint(16, 0.3, num_patches=-2), ValueError, "num_patches"),
        (
            lambda: apply_mask(np.ones(3072), np.ones(3072)),
            TypeError,
            "mask must be a boolean array",
        ),
        (
            lambda: apply_mask(np.ones(768), cap_mask(16, 30.0)),
            ValueError,
            "make the mask at the map's nside",
        ),
        (lambda: apply_mask(np.ones(5), np.ones(5, bool)), ValueError, "12 \\* nside\\*\\*2"),
    ],
)
def test_bad_input_is_refused_with_a_fix(call, error, match):
    with pytest.raises(error, match=match):
        call()
