"""lambda_max: an upper estimate within 1%, independent of the node order, free on full spheres."""

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import eigsh

import pyg_sphere
from pyg_sphere import healpix_graph, nested_patches
from pyg_sphere.graph import estimate_lambda_max
from pyg_sphere.graph._lambda_table import FULL_SPHERE_LAMBDA_MAX
from pyg_sphere.graph.laplacian import LAMBDA_MAX_MARGIN, laplacian_matrix
from pyg_sphere.nn import SphericalChebConv


def true_lambda_max(graph, normalization="sym"):
    lap = laplacian_matrix(graph.edge_index, graph.edge_weight, graph.num_nodes, normalization)
    if graph.num_nodes <= 2000:
        return float(np.linalg.eigvalsh(lap.toarray()).max())
    return float(eigsh(lap, k=1, which="LA", tol=1e-10, return_eigenvectors=False)[0])


def permuted(graph, seed=0):
    perm = torch.randperm(graph.num_nodes, generator=torch.Generator().manual_seed(seed))
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(graph.num_nodes)
    return inverse[graph.edge_index], perm


GRAPHS = [
    ("sphere nside 32", lambda: healpix_graph(32, lambda_max=False)),
    ("sphere k=20", lambda: healpix_graph(16, num_neighbors=20, lambda_max=False)),
    ("sphere v1", lambda: healpix_graph(16, variant="v1", lambda_max=False)),
    ("patch", lambda: healpix_graph(64, nested_patches(64, 2)[17], lambda_max=False)),
    ("disc", lambda: healpix_graph(32, np.arange(0, 12 * 32**2, 7), lambda_max=False)),
    ("wide kernel", lambda: healpix_graph(16, kernel_width=0.3, lambda_max=False)),
]


@pytest.mark.parametrize("name,make", GRAPHS, ids=[g[0] for g in GRAPHS])
@pytest.mark.parametrize("normalization", ["sym", None])
def test_upper_estimate_within_one_percent(name, make, normalization):
    graph = make()
    true = true_lambda_max(graph, normalization)
    est = estimate_lambda_max(graph.edge_index, graph.edge_weight, graph.num_nodes, normalization)
    assert true <= est <= LAMBDA_MAX_MARGIN * true * (1 + 1e-9)
    # The random-walk Laplacian has the spectrum of the symmetric one.
    if normalization == "sym":
        rw = estimate_lambda_max(graph.edge_index, graph.edge_weight, graph.num_nodes, "rw")
        assert rw == est


@pytest.mark.parametrize("name,make", GRAPHS[:4], ids=[g[0] for g in GRAPHS[:4]])
def test_does_not_depend_on_the_node_order(name, make):
    graph = make()
    est = estimate_lambda_max(graph.edge_index, graph.edge_weight, graph.num_nodes)
    for seed in range(3):
        edge_index, _ = permuted(graph, seed)
        other = estimate_lambda_max(edge_index, graph.edge_weight, graph.num_nodes)
        assert other == pytest.approx(est, rel=1e-7)


def test_convolution_outputs_do_not_depend_on_the_node_order():
    graph = healpix_graph(16, lambda_max=False)
    torch.manual_seed(0)
    conv = SphericalChebConv(2, 3, K=5)  # lambda_max='auto': estimated on each graph
    x = torch.randn(graph.num_nodes, 2)
    out = conv(x, graph.edge_index, graph.edge_weight)
    edge_index, perm = permuted(graph)
    out_perm = conv(x[perm], edge_index, graph.edge_weight)
    torch.testing.assert_close(out_perm, out[perm], rtol=1e-5, atol=1e-6)


def test_full_sphere_value_is_tabulated_and_an_upper_bound():
    table = FULL_SPHERE_LAMBDA_MAX[("v2", 8)]
    for nside in (4, 8, 16):
        graph = healpix_graph(nside)
        assert graph.lambda_max == LAMBDA_MAX_MARGIN * table[nside]
        true = true_lambda_max(graph)
        assert true <= graph.lambda_max <= LAMBDA_MAX_MARGIN * true * (1 + 1e-6)
    # A region or another kernel width is estimated, not looked up.
    region = healpix_graph(16, range(500))
    assert region.lambda_max == estimate_lambda_max(
        region.edge_index, region.edge_weight, region.num_nodes
    )


def test_table_values_match_a_fresh_computation():
    for (variant, k), values in FULL_SPHERE_LAMBDA_MAX.items():
        for nside in (4, 16):
            if nside in values:
                graph = healpix_graph(nside, num_neighbors=k, variant=variant, lambda_max=False)
                assert values[nside] == pytest.approx(true_lambda_max(graph), rel=1e-7)


def test_graphs_without_edges_and_tiny_graphs():
    single = healpix_graph(4, [5])
    assert single.lambda_max == 0.0
    pair = pyg_sphere.healpix_graph(1, [0, 1], num_neighbors=1, kernel_width=0.5)
    assert pair.num_edges == 0 and pair.lambda_max == 0.0  # edgeless: K = 1 only
    # A tiny graph with edges and an isolated node: the exact value times the margin.
    tiny = pyg_sphere.healpix_graph(1, [0, 4, 10], num_neighbors=1, kernel_width=0.5)
    assert tiny.num_edges > 0 and bool((torch.bincount(tiny.edge_index[0], minlength=3) == 0).any())
    assert tiny.lambda_max == pytest.approx(LAMBDA_MAX_MARGIN * true_lambda_max(tiny))


def test_symmetric_graphs_reach_their_largest_eigenvalue():
    # The full sphere is unchanged by quarter turns. A start vector computed from the graph
    # alone is too, and so is the Krylov space it spans: here its largest Ritz value stays
    # 8e-5 below lambda_max. The seeded random start reaches the top eigenvector.
    graph = healpix_graph(16, num_neighbors=60, lambda_max=False)
    est = estimate_lambda_max(graph.edge_index, graph.edge_weight, graph.num_nodes)
    assert est / LAMBDA_MAX_MARGIN == pytest.approx(true_lambda_max(graph), rel=1e-7)
