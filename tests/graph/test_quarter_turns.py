"""A full sphere's graph keeps HEALPix's quarter-turn symmetry exactly, and its fast build
(three faces, turned onto the other nine) equals the general one."""

import healpy as hp
import numpy as np
import pytest
import torch
from torch_geometric.utils import is_undirected

from pyg_sphere import healpix_graph
from pyg_sphere.graph.knn import healpix_knn, turn_pixels
from pyg_sphere.nn import SphericalChebConv


def turned_nodes(nside: int, turns: int) -> torch.Tensor:
    """Node p of a full nested sphere goes to node ``result[p]`` under the turns."""
    return torch.from_numpy(turn_pixels(nside, np.arange(12 * nside**2), turns))


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


@pytest.mark.parametrize("k", [8, 20, 60])
def test_neighbours_turn_with_the_sphere(k):
    nside = 16
    face0 = np.arange(nside**2)
    nbr0, d0 = healpix_knn(nside, face0, k)
    for turns in (1, 2, 3):
        nbr, d = healpix_knn(nside, turn_pixels(nside, face0, turns), k)
        expected = turn_pixels(nside, nbr0, turns)
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
def test_graph_is_unchanged_by_quarter_turns(nside, k):
    graph = healpix_graph(nside, num_neighbors=k, lambda_max=False)
    assert is_undirected(graph.edge_index, graph.edge_weight)  # weights symmetric, exactly
    n = graph.num_nodes
    for turns in (1, 2, 3):
        edge_index = turned_nodes(nside, turns)[graph.edge_index]
        order = (edge_index[0] * n + edge_index[1]).argsort()
        assert torch.equal(edge_index[:, order], graph.edge_index)
        assert torch.equal(graph.edge_weight[order], graph.edge_weight)


def test_filters_commute_with_quarter_turns():
    nside = 32
    graph = healpix_graph(nside)
    torch.manual_seed(0)
    conv = SphericalChebConv(3, 4, K=6)
    x = torch.randn(graph.num_nodes, 3)
    out = conv(x, graph.edge_index, graph.edge_weight)
    turn = turned_nodes(nside, 1)
    x_turned = torch.empty_like(x)
    x_turned[turn] = x
    out_turned = conv(x_turned, graph.edge_index, graph.edge_weight)
    torch.testing.assert_close(out_turned[turn], out, rtol=1e-5, atol=1e-6)
