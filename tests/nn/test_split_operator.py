"""The split layout of the operator of healpix graphs (off-diagonal CSR plus diagonal) against
dense oracles."""

import pytest
import torch
from torch_geometric.utils import get_laplacian, to_dense_adj

import pyg_sphere
from pyg_sphere.nn import ChebyshevOperator, SphericalChebConv
from pyg_sphere.nn.conv._chebyshev import chebyshev_basis

CPU = torch.device("cpu")


def dense_scaled_laplacian(graph, normalization, lam):
    """Oracle: PyG's Laplacian, densified, then 2 L / lambda_max - I."""
    index, value = get_laplacian(
        graph.edge_index, graph.edge_weight.double(), normalization, num_nodes=graph.num_nodes
    )
    lap = to_dense_adj(index, edge_attr=value, max_num_nodes=graph.num_nodes)[0]
    return 2.0 * lap / lam - torch.eye(graph.num_nodes, dtype=torch.float64)


GRAPHS = {
    "sphere": lambda: pyg_sphere.healpix_graph(4),
    # A region with two isolated nodes (no neighbour inside): a diagonal that varies.
    "region": lambda: pyg_sphere.healpix_graph(8, pixels=list(range(200)) + [500, 700]),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("normalization", ["sym", None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_products_match_the_dense_operator(name, normalization, dtype):
    graph = GRAPHS[name]()
    lam = 1.7 if normalization == "sym" else 40.0
    op = ChebyshevOperator(
        graph.edge_index,
        graph.edge_weight,
        graph.num_nodes,
        normalization=normalization,
        lambda_max=lam,
        dtype=dtype,
    )
    assert op.layout == "split" and op.symmetric  # not the general form
    # One number with the normalized Laplacian; the degrees (which vary) without.
    assert isinstance(op.diagonal, float) == (normalization == "sym")
    dense = dense_scaled_laplacian(graph, normalization, lam)
    x = torch.randn(graph.num_nodes, 3, dtype=torch.float64)
    prev = torch.randn(graph.num_nodes, 3, dtype=torch.float64)
    tol = {} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    for transpose in (False, True):
        got = op.apply(x.to(dtype), transpose=transpose).double()
        torch.testing.assert_close(got, dense @ x, **tol)
        got = op.step(x.to(dtype), prev.to(dtype), transpose=transpose).double()
        torch.testing.assert_close(got, 2 * dense @ x - prev, **tol)
    # The whole matrix, for inspection, is the same operator.
    torch.testing.assert_close(op.matrix.to_dense().double(), dense, **tol)
    assert op.matrix_t is op.matrix


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_chebyshev_basis_gradients(name):
    graph = GRAPHS[name]()
    op = ChebyshevOperator(
        graph.edge_index,
        graph.edge_weight,
        graph.num_nodes,
        normalization="sym",
        lambda_max=1.7,
        dtype=torch.float64,
    )
    x = torch.randn(graph.num_nodes, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: chebyshev_basis(op, x, 4), (x,))
    # The terms against the dense recursion.
    dense = dense_scaled_laplacian(graph, "sym", 1.7)
    flat = x.detach().reshape(graph.num_nodes, -1)
    terms = [flat, dense @ flat]
    for _ in range(2, 4):
        terms.append(2 * dense @ terms[-1] - terms[-2])
    expected = torch.stack([t.view(graph.num_nodes, 2, 3) for t in terms], dim=2)
    torch.testing.assert_close(chebyshev_basis(op, x.detach(), 4), expected)


@pytest.mark.parametrize("normalization", ["sym", None])
def test_layer_matches_pyg_chebconv_on_a_healpix_graph(normalization):
    from torch_geometric.nn import ChebConv

    graph = pyg_sphere.healpix_graph(8, pixels=list(range(200)) + [500])
    lam = 1.8 if normalization == "sym" else 40.0
    torch.manual_seed(0)
    ours = SphericalChebConv(3, 4, K=5, normalization=normalization, lambda_max=lam).double()
    theirs = ChebConv(3, 4, K=5, normalization=normalization).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(graph.num_nodes, 3, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out = ours(x, graph.edge_index, graph.edge_weight)
    ref = theirs(
        x_ref,
        graph.edge_index,
        graph.edge_weight.double(),
        lambda_max=torch.tensor(lam, dtype=torch.float64),
    )
    torch.testing.assert_close(out, ref)
    probe = torch.randn_like(out)
    (out * probe).sum().backward()
    (ref * probe).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_int32_graph_shares_its_columns_and_filters_alike(name):
    graph = GRAPHS[name]()
    pixels = None if name == "sphere" else graph.pixels
    small = pyg_sphere.healpix_graph(graph.nside, pixels=pixels, index_dtype=torch.int32)
    assert small.edge_index.dtype == torch.int32
    assert torch.equal(small.edge_index.long(), graph.edge_index)
    assert torch.equal(small.edge_weight, graph.edge_weight)
    op = ChebyshevOperator(
        small.edge_index,
        small.edge_weight,
        small.num_nodes,
        normalization="sym",
        lambda_max=1.7,
        dtype=torch.float32,
    )
    # The operator's column indices are the graph's edge_index[1], not a copy ...
    columns = op.off_diagonal.col_indices()
    assert columns.data_ptr() == small.edge_index[1].data_ptr()
    # ... and the operator does not count them: 4 bytes per edge less than with int64 ones.
    wide = ChebyshevOperator(graph.edge_index, graph.edge_weight, graph.num_nodes, lambda_max=1.7)
    assert op.nbytes == wide.nbytes - 4 * small.num_edges
    torch.testing.assert_close(
        op.matrix.to_dense().double(),
        dense_scaled_laplacian(graph, "sym", 1.7),
        rtol=1e-5,
        atol=1e-5,
    )
    # The layer gives the same outputs and gradients on either graph, on its fast path and on
    # its message path (edge weights that require a gradient).
    torch.manual_seed(0)
    conv = SphericalChebConv(2, 3, K=4, lambda_max=1.7)
    x = torch.randn(graph.num_nodes, 2, requires_grad=True)
    for weight in (None, graph.edge_weight.clone().requires_grad_()):
        results = []
        for g in (graph, small):
            w = g.edge_weight if weight is None else weight
            out = conv(x, g.edge_index, w)
            (grad,) = torch.autograd.grad(out.square().sum(), x)
            results.append((out, grad))
        torch.testing.assert_close(results[0], results[1])


def test_int32_index_dtype_is_checked():
    with pytest.raises(ValueError, match="index_dtype must be torch.int64 or torch.int32"):
        pyg_sphere.healpix_graph(4, index_dtype=torch.int16)
    # The memory estimate follows the index size: 64 bytes per pixel less.
    from pyg_sphere.graph._healpix_graph import graph_memory

    saved = graph_memory(1024) - graph_memory(1024, index_dtype=torch.int32)
    assert saved == pytest.approx(1.2 * 12 * 1024**2 * 8.6 * 8, rel=1e-6)


def test_int32_graphs_batch_pool_and_coarsen_like_int64_ones():
    from torch_geometric.data import Batch

    from pyg_sphere.nn.pool import healpix_pool_data, healpix_pool_graph

    graphs = {}
    for dtype in (torch.int64, torch.int32):
        g = pyg_sphere.healpix_graph(8, index_dtype=dtype)
        g.x = torch.randn(g.num_nodes, 1, generator=torch.Generator().manual_seed(0))
        graphs[dtype] = g
    # Coarser graphs keep the index type, with the same edges.
    coarse = {d: healpix_pool_graph(g) for d, g in graphs.items()}
    assert coarse[torch.int32].edge_index.dtype == torch.int32
    assert torch.equal(coarse[torch.int32].edge_index.long(), coarse[torch.int64].edge_index)
    # A PyG Batch keeps int32 indices; the layer and pooling give the same results.
    batches = {d: Batch.from_data_list([g, g]) for d, g in graphs.items()}
    assert batches[torch.int32].edge_index.dtype == torch.int32
    conv = SphericalChebConv(1, 2, K=3, lambda_max=1.9)
    out = [conv(b.x, b.edge_index, b.edge_weight, batch=b.batch) for b in batches.values()]
    torch.testing.assert_close(out[0], out[1])
    pooled = [healpix_pool_data(b) for b in batches.values()]
    assert torch.equal(pooled[0].x, pooled[1].x)
    assert torch.equal(pooled[1].edge_index.long(), pooled[0].edge_index)
