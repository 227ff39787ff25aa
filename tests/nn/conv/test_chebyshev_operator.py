"""ChebyshevOperator: built from the graph's content, so the layout and the values never depend
on where the tensors came from, and never go stale."""

import pickle

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

import pyg_sphere
from pyg_sphere.graph.laplacian import rescaled_laplacian
from pyg_sphere.nn import ChebyshevOperator, SphericalChebConv
from pyg_sphere.nn.conv import chebyshev_operator as operator_module


@pytest.fixture(scope="module")
def graph():
    return pyg_sphere.healpix_graph(4)


def reference(conv, x, edge_index, edge_weight, **kwargs):
    """The message-passing path, which rebuilds the Laplacian at every call."""
    conv.fused = False
    try:
        return conv(x, edge_index, edge_weight, **kwargs)
    finally:
        conv.fused = True


def make_conv(**kwargs):
    torch.manual_seed(0)
    return SphericalChebConv(2, 3, K=4, **kwargs)


def operator_of(g, **kwargs):
    return ChebyshevOperator(g.edge_index, g.edge_weight, g.num_nodes, lambda_max=1.7, **kwargs)


def test_the_split_layout_survives_copies_pickles_workers_and_batching(graph):
    # What selects the lean layout is the content of the edge list: any copy of a healpix
    # graph has it, and so does a PyG batch of them.
    copies = {
        "clone": graph.clone(),
        "pickle": pickle.loads(pickle.dumps(graph)),
        "to": graph.to("cpu", non_blocking=True),
    }
    loader = DataLoader([graph, graph], batch_size=2, num_workers=1)
    batch = next(iter(loader))
    reference_op = operator_of(graph)
    assert reference_op.layout == "split"
    x = torch.randn(graph.num_nodes, 5, dtype=torch.float64)
    expected = reference_op.matrix.to_dense()
    for name, g in copies.items():
        op = operator_of(g)
        assert op.layout == "split", name
        torch.testing.assert_close(op.matrix.to_dense(), expected)
    for b in (batch, Batch.from_data_list([graph, graph.clone()])):
        op = operator_of(b)
        assert op.layout == "split" and op.num_nodes == 2 * graph.num_nodes
        torch.testing.assert_close(
            op.apply(torch.cat([x, x]).float()).double(),
            torch.cat([expected.double() @ x, expected.double() @ x]),
            rtol=1e-5,
            atol=1e-5,
        )


def test_other_graphs_take_the_general_layout_with_the_same_result(graph):
    # Edges out of CSR order (a permuted edge list), asymmetric weights, a self loop.
    perm = torch.randperm(graph.num_edges, generator=torch.Generator().manual_seed(0))
    shuffled = Data(
        edge_index=graph.edge_index[:, perm], edge_weight=graph.edge_weight[perm], num_nodes=192
    )
    asymmetric = graph.clone()
    asymmetric.edge_weight = graph.edge_weight * (1 + 0.01 * torch.rand(graph.num_edges))
    dense = operator_of(graph, dtype=torch.float64).matrix.to_dense()
    op = operator_of(shuffled, dtype=torch.float64)
    assert op.layout == "csr" and op.symmetric and op.matrix_t is op.matrix
    torch.testing.assert_close(op.matrix.to_dense(), dense)
    op = operator_of(asymmetric, dtype=torch.float64)
    assert op.layout == "csr" and not op.symmetric
    # The general layout keeps the transpose for the backward pass.
    torch.testing.assert_close(op.matrix_t.to_dense(), op.matrix.to_dense().T)
    ei, ew = rescaled_laplacian(
        asymmetric.edge_index, asymmetric.edge_weight, 192, "sym", (1.7,), torch.float64
    )
    oracle = torch.zeros(192, 192, dtype=torch.float64).index_put((ei[1], ei[0]), ew, True)
    torch.testing.assert_close(op.matrix.to_dense(), oracle)
    looped = torch.cat([graph.edge_index, torch.tensor([[0], [0]])], dim=1)
    assert ChebyshevOperator(looped, lambda_max=1.7).layout == "csr"
    assert "layout='csr'" in repr(op)


def test_layers_share_an_operator_or_keep_their_own(graph):
    x = torch.randn(graph.num_nodes, 2)
    op = ChebyshevOperator(graph.edge_index, graph.edge_weight, lambda_max=graph.lambda_max)
    conv = make_conv()
    expected = conv(x, graph.edge_index, graph.edge_weight, lambda_max=graph.lambda_max)
    torch.testing.assert_close(conv(x, op), expected)
    kept = make_conv(cached=True)
    torch.testing.assert_close(kept(x, graph.edge_index, graph.edge_weight), expected)
    first = kept.operator
    assert first is not None and first.layout == "split" and "cached=True" in repr(kept)
    kept(x, graph.edge_index, graph.edge_weight)
    assert kept.operator is first  # reused
    kept.double()
    kept(x.double(), graph.edge_index, graph.edge_weight)
    assert kept.operator is not first and kept.operator.dtype == torch.float64  # rebuilt
    other = pyg_sphere.healpix_graph(2)
    with pytest.raises(ValueError, match="cached=True.*192 nodes.*48 nodes"):
        kept(torch.randn(48, 2, dtype=torch.float64), other.edge_index, other.edge_weight)
    kept.reset_parameters()
    assert kept.operator is None
    with pytest.raises(ValueError, match="without edge_weight or lambda_max"):
        conv(x, op, graph.edge_weight)
    with pytest.raises(ValueError, match="48 nodes along its node dimension"):
        conv(torch.randn(48, 2), op)
    with pytest.raises(ValueError, match="build the operator of x's graph with dtype"):
        conv.double()(x.double(), op)


def test_in_place_changes_are_seen(graph):
    conv = make_conv(lambda_max=2.0)
    x = torch.randn(graph.num_nodes, 2)
    edge_weight = graph.edge_weight.clone()
    before = conv(x, graph.edge_index, edge_weight)
    # Not a uniform scaling, which the normalized Laplacian ignores.
    edge_weight.mul_(torch.rand_like(edge_weight))
    after = conv(x, graph.edge_index, edge_weight)
    assert not torch.allclose(before, after, atol=1e-3)
    torch.testing.assert_close(after, reference(conv, x, graph.edge_index, edge_weight))
    edge_index = graph.edge_index.clone()
    edge_index.copy_(torch.randperm(graph.num_nodes)[edge_index])  # relabelled nodes
    torch.testing.assert_close(
        conv(x, edge_index, graph.edge_weight), reference(conv, x, edge_index, graph.edge_weight)
    )


def test_other_graph_dtype_normalization_and_lambda_max(graph):
    conv = make_conv()
    other = pyg_sphere.healpix_graph(4, num_neighbors=20)
    x = torch.randn(graph.num_nodes, 2)
    for g in (graph, other, graph):
        torch.testing.assert_close(
            conv(x, g.edge_index, g.edge_weight), reference(conv, x, g.edge_index, g.edge_weight)
        )
    for lam in (1.5, 2.0, 1.5):
        torch.testing.assert_close(
            conv(x, graph.edge_index, graph.edge_weight, lambda_max=lam),
            reference(conv, x, graph.edge_index, graph.edge_weight, lambda_max=lam),
        )
    for normalization in ("sym", "rw", None):
        c = make_conv(normalization=normalization, lambda_max=2.0 if normalization else 30.0)
        torch.testing.assert_close(
            c(x, graph.edge_index, graph.edge_weight),
            reference(c, x, graph.edge_index, graph.edge_weight),
        )
    conv32 = conv(x, graph.edge_index, graph.edge_weight)
    conv.double()
    out = conv(x.double(), graph.edge_index, graph.edge_weight)
    assert out.dtype == torch.float64
    # float64 all the way: far tighter than a float32 operator would allow.
    torch.testing.assert_close(
        out,
        reference(conv, x.double(), graph.edge_index, graph.edge_weight),
        rtol=1e-12,
        atol=1e-12,
    )
    assert (out - conv32.double()).abs().max() > 0


@pytest.mark.parametrize("channels", [2, 40])  # both CPU product kernels (narrow and wide x)
def test_products_match_message_passing(graph, channels):
    conv = SphericalChebConv(channels, 3, K=4)
    x = torch.randn(3, graph.num_nodes, channels)
    torch.testing.assert_close(
        conv(x, graph.edge_index, graph.edge_weight),
        reference(conv, x, graph.edge_index, graph.edge_weight),
    )


def test_csr_builders_agree_and_sum_duplicates():
    # The scipy builder (CPU) and the torch builder (other devices) give the same matrix
    # and transpose.
    row = torch.tensor([0, 2, 1, 0, 2, 0])
    col = torch.tensor([1, 0, 2, 1, 2, 0])
    value = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    dense = torch.zeros(3, 3).index_put_((row, col), value, accumulate=True)
    pairs = (
        operator_module._csr_and_transpose(row, col, value, 3),
        (
            operator_module._csr_torch(row, col, value, 3),
            operator_module._csr_torch(col, row, value, 3),
        ),
    )
    for a, a_t in pairs:
        for m, expected in ((a, dense), (a_t, dense.T)):
            assert m.layout == torch.sparse_csr and m.values().numel() == 5
            torch.testing.assert_close(m.to_dense(), expected)
            torch.testing.assert_close(operator_module._mm(m, torch.eye(3)), expected)


@pytest.mark.parametrize("normalization", [None, "sym", "rw"])
def test_rescaled_laplacian_matches_pyg(normalization):
    # Oracle: PyG's get_laplacian, then 2 L / lambda_max - I, on a graph with what PyG's
    # ChebConv has to handle: self loops (dropped), duplicate edges, an isolated node, and
    # two graphs with their own lambda_max.
    from torch_geometric.utils import get_laplacian

    edge_index = torch.tensor(
        [[0, 1, 1, 2, 2, 0, 3, 4, 5, 4, 1], [1, 0, 2, 1, 0, 2, 3, 5, 4, 5, 0]]
    )
    weight = torch.rand(edge_index.size(1), dtype=torch.float64, requires_grad=True)
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1])  # node 3: only a self loop; node 6: none
    lam = (1.7, 2.5)
    index, value = rescaled_laplacian(
        edge_index, weight, 7, normalization, lam, torch.float64, batch
    )
    ref_index, ref_value = get_laplacian(edge_index, weight, normalization, torch.float64, 7)
    scale = 2.0 / torch.tensor(lam, dtype=torch.float64)[batch[ref_index[0]]]
    ref_value = scale * ref_value - (ref_index[0] == ref_index[1]).double()
    dense = torch.zeros(7, 7, dtype=torch.float64).index_put(
        (index[0], index[1]), value, accumulate=True
    )
    ref = torch.zeros(7, 7, dtype=torch.float64).index_put(
        (ref_index[0], ref_index[1]), ref_value, accumulate=True
    )
    torch.testing.assert_close(dense, ref)
    probe = torch.randn(7, 7, dtype=torch.float64)
    (grad,) = torch.autograd.grad((dense * probe).sum(), weight)
    (ref_grad,) = torch.autograd.grad((ref * probe).sum(), weight)
    torch.testing.assert_close(grad, ref_grad)


def test_bad_operators_are_refused(graph):
    with pytest.raises(ValueError, match="refers to node 191 but the graph has 48 nodes"):
        ChebyshevOperator(graph.edge_index, graph.edge_weight, 48, lambda_max=1.7)
    with pytest.raises(ValueError, match="edge_weight has 3 entries"):
        ChebyshevOperator(graph.edge_index, torch.ones(3), lambda_max=1.7)
    with pytest.raises(ValueError, match="lambda_max must be positive"):
        ChebyshevOperator(graph.edge_index, graph.edge_weight, lambda_max=0.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        ChebyshevOperator(graph.edge_index, graph.edge_weight, lambda_max=1.7, dtype=torch.half)


def test_lambda_max_is_estimated_when_not_given(graph):
    op = ChebyshevOperator(graph.edge_index, graph.edge_weight)
    assert op.lambda_max[0] == pytest.approx(graph.lambda_max, rel=0.02)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(graph):
    conv = make_conv()
    x = torch.randn(3, graph.num_nodes, 2, requires_grad=True)
    out = conv(x, graph.edge_index, graph.edge_weight)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    conv_cuda, x_cuda = conv.cuda(), x.detach().cuda().requires_grad_()
    out_cuda = conv_cuda(x_cuda, graph.edge_index.cuda(), graph.edge_weight.cuda())
    (grad_cuda,) = torch.autograd.grad(out_cuda.square().sum(), x_cuda)
    assert ChebyshevOperator(graph.edge_index.cuda(), graph.edge_weight.cuda()).layout == "csr"
    torch.testing.assert_close(out_cuda.cpu(), out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_cuda.cpu(), grad, rtol=1e-4, atol=1e-5)
