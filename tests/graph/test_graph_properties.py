"""Properties of HEALPix graphs that hold for any input, checked on random ones."""

import healpy as hp
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_sphere import close_hierarchy, healpix_graph, is_closed_hierarchy

NSIDES = st.sampled_from([1, 2, 4, 8])


def _pixel_sets(nside_strategy=NSIDES):
    return nside_strategy.flatmap(
        lambda nside: st.tuples(
            st.just(nside),
            st.sets(st.integers(0, 12 * nside**2 - 1), min_size=1, max_size=60),
        )
    )


def _edges(graph):
    """The weighted edges of a graph as a dict keyed by HEALPix ids."""
    pixels = graph.pixels.numpy()
    src, dst = pixels[graph.edge_index.numpy()]
    return dict(zip(zip(src.tolist(), dst.tolist()), graph.edge_weight.tolist()))


@settings(max_examples=40, deadline=None)
@given(_pixel_sets(), st.integers(0, 3))
def test_close_hierarchy_is_idempotent_and_closed(nside_pixels, levels):
    _, pixels = nside_pixels
    closed = close_hierarchy(sorted(pixels), levels)
    assert is_closed_hierarchy(closed, levels)
    assert set(pixels) <= set(closed.tolist())
    assert torch.equal(close_hierarchy(closed, levels), closed)
    # The smallest closed superset: every added pixel is a sibling of a given one.
    factor = 4**levels
    assert set((closed // factor).tolist()) == {p // factor for p in pixels}


@settings(max_examples=30, deadline=None)
@given(_pixel_sets(st.sampled_from([2, 4, 8])), st.sampled_from([8, 20]))
def test_region_graph_is_the_induced_subgraph(nside_pixels, num_neighbors):
    nside, pixels = nside_pixels
    if num_neighbors >= 12 * nside**2:
        num_neighbors = 8
    sphere = _edges(healpix_graph(nside, num_neighbors=num_neighbors, lambda_max=False))
    region = healpix_graph(nside, sorted(pixels), num_neighbors=num_neighbors, lambda_max=False)
    assert region.pixels.tolist() == sorted(pixels)
    expected = {e: w for e, w in sphere.items() if e[0] in pixels and e[1] in pixels}
    assert _edges(region) == expected


@settings(max_examples=10, deadline=None)
@given(NSIDES, st.sampled_from([8, 20]), st.booleans())
def test_ring_and_nest_graphs_are_equal_up_to_the_permutation(nside, num_neighbors, region):
    if num_neighbors >= 12 * nside**2:
        num_neighbors = 8
    npix = 12 * nside**2
    nest_pixels = np.arange(0, npix, 3) if region else None
    ring_pixels = None if nest_pixels is None else hp.nest2ring(nside, nest_pixels)
    nest = healpix_graph(nside, nest_pixels, num_neighbors=num_neighbors, lambda_max=False)
    ring = healpix_graph(
        nside, ring_pixels, nest=False, num_neighbors=num_neighbors, lambda_max=False
    )
    # Map the ring graph's pixel ids to nested ids: the same weighted edges.
    ring_edges = {
        (int(hp.ring2nest(nside, a)), int(hp.ring2nest(nside, b))): w
        for (a, b), w in _edges(ring).items()
    }
    assert ring_edges.keys() == _edges(nest).keys()
    np.testing.assert_allclose(
        [ring_edges[e] for e in sorted(ring_edges)],
        [w for _, w in sorted(_edges(nest).items())],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        ring.pos.numpy()[np.argsort(hp.ring2nest(nside, ring.pixels.numpy()))],
        nest.pos.numpy(),
        atol=1e-7,
    )
