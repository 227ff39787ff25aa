"""A full sphere's graph keeps HEALPix's symmetries exactly (quarter turns about the polar axis,
the mirror through the equatorial plane), and its fast build (three faces, turned onto the other
nine) equals the general one."""

import healpy as hp
import numpy as np
import pytest
import torch
from torch_geometric.utils import is_undirected

from pyg_sphere import healpix_graph
from pyg_sphere.graph._geometry import centres, mirror_pixels, turn_pixels
from pyg_sphere.graph.knn import healpix_knn
from pyg_sphere.nn import SphericalChebConv

# The images of the sphere under its symmetries: (quarter turns, mirrored).
IMAGES = [(1, False), (2, False), (3, False), (0, True), (1, True)]


def image(nside: int, pixels, turns: int, mirrored: bool) -> np.ndarray:
    pixels = turn_pixels(nside, pixels, turns)
    return mirror_pixels(nside, pixels) if mirrored else pixels


def image_nodes(nside: int, turns: int, mirrored: bool = False) -> torch.Tensor:
    """Node p of a full nested sphere goes to node ``result[p]`` under the symmetry."""
    return torch.from_numpy(image(nside, np.arange(12 * nside**2), turns, mirrored))


@pytest.mark.parametrize("nside", [1, 4, 64])
@pytest.mark.parametrize("turns", [1, 2, 3])
def test_turn_pixels_is_a_rotation_about_the_pole(nside, turns):
    pixels = np.arange(12 * nside**2)
    theta, phi = hp.pix2ang(nside, pixels, nest=True)
    theta_t, phi_t = hp.pix2ang(nside, turn_pixels(nside, pixels, turns), nest=True)
    np.testing.assert_allclose(theta_t, theta, atol=1e-12)
    np.testing.assert_allclose(
        np.mod(phi_t - phi - turns * np.pi / 2 + np.pi, 2 * np.pi) - np.pi, 0, atol=1e-12
    )


@pytest.mark.parametrize("nside", [1, 4, 64, 1024])
def test_mirror_pixels_is_the_equatorial_mirror(nside):
    pixels = np.arange(12 * nside**2) if nside < 1024 else np.arange(0, 12 * nside**2, 997)
    mirrored = mirror_pixels(nside, pixels)
    # healpy's centres: x and y kept, z negated, bit for bit.
    v, u = hp.pix2vec(nside, pixels, nest=True), hp.pix2vec(nside, mirrored, nest=True)
    assert np.array_equal(u[0], v[0]) and np.array_equal(u[1], v[1])
    assert np.array_equal(u[2], -v[2])
    assert np.array_equal(mirror_pixels(nside, mirrored), pixels)  # its own inverse
    assert mirror_pixels(nside, pixels.astype(np.int32)).dtype == np.int32


@pytest.mark.parametrize("nside", [1, 2, 16])
def test_centres_are_healpy_s_with_the_sphere_s_symmetries(nside):
    pixels = np.arange(12 * nside**2)
    pos = centres(nside, pixels)
    assert pos.dtype == np.float32
    ref = np.stack(hp.pix2vec(nside, pixels, nest=True), -1)
    np.testing.assert_allclose(pos, ref, rtol=0, atol=6e-8)  # one float32 rounding
    for turns, mirrored in IMAGES:
        moved = centres(nside, image(nside, pixels, turns, mirrored))
        columns = [1, 0, 2] if turns % 2 else [0, 1, 2]
        signs = [((1, 1), (-1, 1), (-1, -1), (1, -1))[turns][i] for i in (0, 1)]
        expected = pos[:, columns] * np.array([*signs, -1 if mirrored else 1], np.float32)
        assert np.array_equal(moved, expected)
    # The graph's positions: full sphere (written face by face), regions and ring ordering.
    whole = healpix_graph(nside, lambda_max=False)
    assert np.array_equal(whole.pos.numpy(), pos)
    region = healpix_graph(nside, pixels[::3], lambda_max=False)
    assert np.array_equal(region.pos.numpy(), pos[::3])
    ring = healpix_graph(nside, nest=False, lambda_max=False)
    assert np.array_equal(ring.pos.numpy(), pos[hp.ring2nest(nside, np.arange(len(pixels)))])


@pytest.mark.parametrize("k", [8, 20, 60])
def test_neighbours_move_with_the_sphere(k):
    nside = 16
    face0 = np.arange(nside**2)
    nbr0, d0 = healpix_knn(nside, face0, k)
    for turns, mirrored in IMAGES:
        nbr, d = healpix_knn(nside, image(nside, face0, turns, mirrored), k)
        expected = image(nside, nbr0, turns, mirrored)
        order, order0 = np.argsort(nbr, 1), np.argsort(expected, 1)
        assert np.array_equal(
            np.take_along_axis(nbr, order, 1), np.take_along_axis(expected, order0, 1)
        )
        np.testing.assert_allclose(
            np.take_along_axis(d, order, 1), np.take_along_axis(d0, order0, 1), rtol=1e-6
        )


@pytest.mark.parametrize(
    "nside,k", [(1, 8), (2, 20), (4, 8), (4, 60), (8, 40), (16, 8), (32, 20), (64, 8)]
)
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_full_sphere_equals_the_region_of_all_pixels(nside, k, index_dtype):
    # The region of every pixel takes the general build (k-NN and symmetrisation of all rows).
    kwargs = dict(num_neighbors=k, lambda_max=False, index_dtype=index_dtype)
    whole = healpix_graph(nside, **kwargs)
    region = healpix_graph(nside, np.arange(12 * nside**2), **kwargs)
    assert torch.equal(whole.edge_index, region.edge_index)
    assert torch.equal(whole.edge_weight, region.edge_weight)


@pytest.mark.parametrize("nside,k", [(4, 8), (16, 8), (16, 20), (8, 60)])
def test_graph_is_unchanged_by_the_sphere_s_symmetries(nside, k):
    graph = healpix_graph(nside, num_neighbors=k, lambda_max=False)
    assert is_undirected(graph.edge_index, graph.edge_weight)  # weights symmetric, exactly
    n = graph.num_nodes
    for turns, mirrored in IMAGES:
        edge_index = image_nodes(nside, turns, mirrored)[graph.edge_index]
        order = (edge_index[0] * n + edge_index[1]).argsort()
        assert torch.equal(edge_index[:, order], graph.edge_index)
        assert torch.equal(graph.edge_weight[order], graph.edge_weight)


@pytest.mark.parametrize("turns,mirrored", [(1, False), (0, True)])
def test_filters_commute_with_the_sphere_s_symmetries(turns, mirrored):
    nside = 32
    graph = healpix_graph(nside)
    torch.manual_seed(0)
    conv = SphericalChebConv(3, 4, K=6)
    x = torch.randn(graph.num_nodes, 3)
    out = conv(x, graph.edge_index, graph.edge_weight)
    turn = image_nodes(nside, turns, mirrored)
    x_turned = torch.empty_like(x)
    x_turned[turn] = x
    out_turned = conv(x_turned, graph.edge_index, graph.edge_weight)
    # The mirror reorders the sums of each row: rounding differences of order 1e-6.
    torch.testing.assert_close(out_turned[turn], out, rtol=1e-5, atol=1e-5)
