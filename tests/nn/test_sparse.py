"""The cached Chebyshev operator never serves a stale graph."""

import pytest
import torch

import pyg_sphere
from pyg_sphere import cache
from pyg_sphere.nn import SphericalChebConv, _sparse


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


def test_operator_is_built_once_per_graph(graph):
    cache.clear()
    conv, other = make_conv(), SphericalChebConv(2, 5, K=3)
    x = torch.randn(graph.num_nodes, 2)
    for _ in range(3):
        conv(x, graph.edge_index, graph.edge_weight)
        other(x, graph.edge_index, graph.edge_weight)  # layers share the operator
    assert cache.info()["operator"].entries == 1


def test_in_place_change_of_edge_weight(graph):
    conv = make_conv(lambda_max=2.0)
    x = torch.randn(graph.num_nodes, 2)
    edge_weight = graph.edge_weight.clone()
    before = conv(x, graph.edge_index, edge_weight)
    # Not a uniform scaling, which the normalized Laplacian ignores.
    edge_weight.mul_(torch.rand_like(edge_weight))
    after = conv(x, graph.edge_index, edge_weight)
    assert not torch.allclose(before, after, atol=1e-3)
    torch.testing.assert_close(after, reference(conv, x, graph.edge_index, edge_weight))


def test_in_place_change_of_edge_index(graph):
    conv = make_conv(lambda_max=2.0)
    x = torch.randn(graph.num_nodes, 2)
    edge_index = graph.edge_index.clone()
    conv(x, edge_index, graph.edge_weight)
    edge_index.copy_(torch.randperm(graph.num_nodes)[edge_index])  # relabelled nodes
    torch.testing.assert_close(
        conv(x, edge_index, graph.edge_weight), reference(conv, x, edge_index, graph.edge_weight)
    )


def test_new_graphs_in_recycled_memory(graph):
    # A freed tensor gives its id, and often its memory, to the next one: the cache must not
    # mistake the new graph for the old one.
    conv = make_conv(lambda_max=2.0)
    x = torch.randn(graph.num_nodes, 2)

    def run(seed):
        edge_weight = torch.rand(
            graph.edge_weight.shape, generator=torch.Generator().manual_seed(seed)
        )
        return conv(x, graph.edge_index, edge_weight)  # edge_weight is freed on return

    outs = [run(seed) for seed in range(10)]
    for seed, out in enumerate(outs):
        edge_weight = torch.rand(
            graph.edge_weight.shape, generator=torch.Generator().manual_seed(seed)
        )
        torch.testing.assert_close(out, reference(conv, x, graph.edge_index, edge_weight))


def test_other_graph_dtype_and_lambda_max(graph):
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


def test_normalizations_do_not_share(graph):
    x = torch.randn(graph.num_nodes, 2)
    outs = {}
    for normalization in ("sym", "rw", None):
        conv = make_conv(normalization=normalization, lambda_max=2.0 if normalization else 30.0)
        outs[normalization] = conv(x, graph.edge_index, graph.edge_weight)
        torch.testing.assert_close(
            outs[normalization], reference(conv, x, graph.edge_index, graph.edge_weight)
        )


def test_cache_is_bounded_by_memory(graph):
    conv = make_conv(lambda_max=2.0)
    x = torch.randn(graph.num_nodes, 2)
    cache.clear()
    alive = [graph.edge_weight.clone() for _ in range(10)]
    conv(x, graph.edge_index, alive[0])
    one = cache.info()["operator"].size
    cache.set_limit("operator", 3 * one)
    try:
        for edge_weight in alive:
            conv(x, graph.edge_index, edge_weight)
        info = cache.info()["operator"]
        assert info.entries == 3 and info.size <= info.limit
        assert info.misses == 10 and info.hits == 1  # alive[0] again: still cached then
        cache.set_limit("operator", 0)  # keeps only the latest entry
        assert cache.info()["operator"].entries == 1
        cache.clear()
        assert cache.info()["operator"].entries == 0
    finally:
        cache.set_limit("operator", cache.DEFAULT_LARGE_LIMIT)


def test_freed_graphs_leave_the_cache(graph):
    # A DataLoader brings new graph tensors at every batch: once a batch is gone, its
    # operator must not keep it (and the memory of its edges) alive.
    cache.clear()
    conv = make_conv(lambda_max=2.0)
    x = torch.randn(graph.num_nodes, 2)
    edge_weight = graph.edge_weight.clone()
    conv(x, graph.edge_index, edge_weight)
    assert cache.info()["operator"].entries == 1 and cache.info()["node_count"].entries == 1
    del edge_weight
    assert cache.info()["operator"].entries == 0
    edge_index = graph.edge_index.clone()
    conv(x, edge_index, graph.edge_weight)
    del edge_index
    assert cache.info()["operator"].entries == 0 and cache.info()["node_count"].entries == 1


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
        _sparse._csr_and_transpose(row, col, value, 3),
        (_sparse._csr_torch(row, col, value, 3), _sparse._csr_torch(col, row, value, 3)),
    )
    for a, a_t in pairs:
        for m, expected in ((a, dense), (a_t, dense.T)):
            assert m.layout == torch.sparse_csr and m.values().numel() == 5
            torch.testing.assert_close(m.to_dense(), expected)
            torch.testing.assert_close(_sparse._mm(m, torch.eye(3)), expected)


@pytest.mark.parametrize("normalization", [None, "sym", "rw"])
def test_scaled_laplacian_matches_pyg(normalization):
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
    index, value = _sparse.scaled_laplacian(
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(graph):
    conv = make_conv()
    x = torch.randn(3, graph.num_nodes, 2, requires_grad=True)
    out = conv(x, graph.edge_index, graph.edge_weight)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    conv_cuda, x_cuda = conv.cuda(), x.detach().cuda().requires_grad_()
    out_cuda = conv_cuda(x_cuda, graph.edge_index.cuda(), graph.edge_weight.cuda())
    (grad_cuda,) = torch.autograd.grad(out_cuda.square().sum(), x_cuda)
    torch.testing.assert_close(out_cuda.cpu(), out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_cuda.cpu(), grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("normalization", ["sym", None])
def test_operator_of_healpix_graphs_built_in_one_pass_equals_the_general_build(normalization):
    graph = pyg_sphere.healpix_graph(8, range(300))  # a region: degrees vary
    lam = (1.7,)
    args = (graph.num_nodes, normalization, lam, torch.float64, torch.device("cpu"))
    fast = _sparse.cheb_operator(graph.edge_index, graph.edge_weight, *args)
    general = _sparse.cheb_operator(graph.edge_index.clone(), graph.edge_weight.clone(), *args)
    assert fast.symmetric and fast.matrix_t is fast.matrix
    torch.testing.assert_close(fast.matrix.to_dense(), general.matrix.to_dense())
