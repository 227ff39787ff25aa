import pytest
import torch
from torch.func import functional_call
from torch_geometric.data import Batch
from torch_geometric.nn import ChebConv

import pyg_sphere
from pyg_sphere.graph import estimate_lambda_max
from pyg_sphere.nn import ChebyshevOperator, SphericalChebConv


@pytest.fixture(scope="module")
def graph():
    return pyg_sphere.healpix_graph(8)


def pair(in_channels, out_channels, K, normalization="sym", **kwargs):
    """A ChebConv and a SphericalChebConv holding its weights (random, non-zero bias)."""
    torch.manual_seed(0)
    cheb = ChebConv(in_channels, out_channels, K, normalization=normalization)
    torch.nn.init.normal_(cheb.bias)
    conv = SphericalChebConv(in_channels, out_channels, K, normalization=normalization, **kwargs)
    conv.load_state_dict(cheb.state_dict())
    return cheb, conv


@pytest.mark.parametrize("normalization", ["sym", "rw", None])
@pytest.mark.parametrize("K", [1, 2, 5])
def test_matches_pyg_chebconv(graph, normalization, K):
    cheb, conv = pair(3, 4, K, normalization)
    lam = 1.7 if normalization is not None else 40.0
    x = torch.randn(graph.num_nodes, 3)
    expected = cheb(x, graph.edge_index, graph.edge_weight, lambda_max=lam)
    out = conv(x, graph.edge_index, graph.edge_weight, lambda_max=lam)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # The same lambda_max given to the constructor.
    conv_lam = SphericalChebConv(3, 4, K, normalization=normalization, lambda_max=lam)
    conv_lam.load_state_dict(cheb.state_dict())
    torch.testing.assert_close(
        conv_lam(x, graph.edge_index, graph.edge_weight), expected, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("normalization", ["sym", "rw"])
def test_lambda_max_2_is_chebconv_default(graph, normalization):
    cheb, conv = pair(2, 3, 4, normalization, lambda_max=2.0)
    x = torch.randn(graph.num_nodes, 2)
    torch.testing.assert_close(
        conv(x, graph.edge_index, graph.edge_weight),
        cheb(x, graph.edge_index, graph.edge_weight),
        rtol=1e-5,
        atol=1e-5,
    )


def test_default_lambda_max_is_the_graph_eigenvalue(graph):
    assert graph.lambda_max < 1.9  # far from PyG's bound 2 on HEALPix graphs
    cheb, conv = pair(2, 3, 4)
    x = torch.randn(graph.num_nodes, 2)
    expected = cheb(x, graph.edge_index, graph.edge_weight, lambda_max=graph.lambda_max)
    torch.testing.assert_close(
        conv(x, graph.edge_index, graph.edge_weight), expected, rtol=1e-5, atol=1e-5
    )
    # Without lambda_max in the graph, the same value is estimated.
    lam = estimate_lambda_max(graph.edge_index, graph.edge_weight, graph.num_nodes)
    assert lam == pytest.approx(graph.lambda_max, rel=1e-6)


def test_fused_equals_message_passing(graph):
    _, conv = pair(3, 4, 5)
    x = torch.randn(6, graph.num_nodes, 3, requires_grad=True)
    outs, grads = [], []
    for fused in (True, False):
        conv.fused = fused
        conv.zero_grad()
        out = conv(x, graph.edge_index, graph.edge_weight)
        (grad_x,) = torch.autograd.grad((out * out.detach().sin()).sum(), x, retain_graph=True)
        out.sum().backward()
        outs.append(out)
        grads.append([grad_x] + [p.grad.clone() for p in conv.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_maps_on_a_shared_graph_equal_one_by_one(graph):
    _, conv = pair(3, 4, 4)
    x = torch.randn(5, graph.num_nodes, 3)
    out = conv(x, graph.edge_index, graph.edge_weight)
    assert out.shape == (5, graph.num_nodes, 4)
    for b in range(5):
        torch.testing.assert_close(
            out[b], conv(x[b], graph.edge_index, graph.edge_weight), rtol=1e-5, atol=1e-5
        )


def test_K1_is_a_per_pixel_linear_layer(graph):
    _, conv = pair(3, 4, 1)
    x = torch.randn(2, graph.num_nodes, 3)
    expected = x @ conv.lins[0].weight.T + conv.bias
    torch.testing.assert_close(conv(x, graph.edge_index, graph.edge_weight), expected)


@pytest.mark.parametrize(
    "normalization,K", [("sym", 1), ("sym", 2), ("sym", 4), ("rw", 4), (None, 3)]
)
def test_gradcheck_float64(normalization, K):
    g = pyg_sphere.healpix_graph(1)  # 12 nodes
    torch.manual_seed(0)
    conv = SphericalChebConv(
        2, 3, K, normalization=normalization, lambda_max=2.0 if normalization else 20.0
    ).double()
    x = torch.randn(2, 12, 2, dtype=torch.float64, requires_grad=True)
    names = [name for name, _ in conv.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in conv.parameters()]

    def f(x, *params, edge_weight=g.edge_weight):
        return functional_call(conv, dict(zip(names, params)), (x, g.edge_index, edge_weight))

    # The custom backward through the cached operator (fused path) on [B, N, F] and [N, F],
    assert torch.autograd.gradcheck(f, (x, *params))
    assert torch.autograd.gradcheck(lambda x, *p: f(x[0], *p), (x, *params))
    # and the edge weights through the message-passing path.
    edge_weight = g.edge_weight.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: f(x, *params, edge_weight=w), (x, edge_weight))


def test_parameter_gradients_match_autograd_reference(graph):
    # Dense reference: sum_k T_k(L~) X W_k with L~ a dense matrix.
    _, conv = pair(2, 3, 4)
    conv.double()
    x = torch.randn(graph.num_nodes, 2, dtype=torch.float64)
    lap = torch.zeros(graph.num_nodes, graph.num_nodes, dtype=torch.float64)
    lap[graph.edge_index[0], graph.edge_index[1]] = graph.edge_weight.double()
    deg = lap.sum(1)
    lap = torch.eye(graph.num_nodes, dtype=torch.float64) - lap / torch.outer(deg, deg).sqrt()
    lt = 2 * lap / graph.lambda_max - torch.eye(graph.num_nodes, dtype=torch.float64)
    terms = [x, lt @ x]
    for _ in range(2):
        terms.append(2 * lt @ terms[-1] - terms[-2])
    weights = [lin.weight.detach().clone().requires_grad_() for lin in conv.lins]
    expected = sum(t @ w.T for t, w in zip(terms, weights)) + conv.bias.detach()
    out = conv(x, graph.edge_index, graph.edge_weight)
    torch.testing.assert_close(out, expected)
    (out**2).sum().backward()
    (expected**2).sum().backward()
    for lin, w in zip(conv.lins, weights):
        torch.testing.assert_close(lin.weight.grad, w.grad)


def test_dtypes_no_grad_and_inference(graph):
    _, conv = pair(3, 4, 3)
    x = torch.randn(2, graph.num_nodes, 3)
    out32 = conv(x, graph.edge_index, graph.edge_weight)
    with torch.no_grad():
        torch.testing.assert_close(conv(x, graph.edge_index, graph.edge_weight), out32)
    with torch.inference_mode():
        torch.testing.assert_close(conv(x, graph.edge_index, graph.edge_weight), out32)
    # An operator built under inference mode does not break autograd afterwards.
    out = conv(x.requires_grad_(), graph.edge_index, graph.edge_weight)
    out.sum().backward()
    assert x.grad is not None
    conv64 = conv.double()
    out64 = conv64(x.detach().double(), graph.edge_index, graph.edge_weight)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out32, rtol=1e-5, atol=1e-5)


def test_per_graph_lambda_max_on_a_batch():
    graphs = [pyg_sphere.healpix_graph(4), pyg_sphere.healpix_graph(8, pixels=range(64))]
    assert graphs[0].lambda_max != pytest.approx(graphs[1].lambda_max)
    for g in graphs:
        g.x = torch.randn(g.num_nodes, 3)
    batch = Batch.from_data_list(graphs)
    assert batch.lambda_max.shape == (2,)
    cheb, conv = pair(3, 4, 4)
    out = conv(batch.x, batch.edge_index, batch.edge_weight, batch.batch, batch.lambda_max)
    expected = cheb(batch.x, batch.edge_index, batch.edge_weight, batch.batch, batch.lambda_max)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for i, g in enumerate(graphs):
        torch.testing.assert_close(
            out[batch.ptr[i] : batch.ptr[i + 1]],
            conv(g.x, g.edge_index, g.edge_weight),
            rtol=1e-5,
            atol=1e-5,
        )
    with pytest.raises(ValueError, match="batch"):
        conv(batch.x, batch.edge_index, batch.edge_weight, lambda_max=batch.lambda_max)


def test_edge_weight_requiring_grad_uses_message_passing(graph):
    _, conv = pair(3, 4, 3)
    x = torch.randn(graph.num_nodes, 3)
    edge_weight = graph.edge_weight.clone().requires_grad_()
    out = conv(x, graph.edge_index, edge_weight)
    torch.testing.assert_close(out, conv(x, graph.edge_index, graph.edge_weight))
    out.sum().backward()
    assert edge_weight.grad is not None and edge_weight.grad.abs().sum() > 0


def test_hooks_see_messages_on_the_message_path(graph):
    _, conv = pair(3, 4, 3)
    x = torch.randn(graph.num_nodes, 3)
    expected = conv(x, graph.edge_index, graph.edge_weight)
    seen = []
    handle = conv.register_message_forward_hook(lambda module, inputs, out: seen.append(out))
    conv(x, graph.edge_index, graph.edge_weight)
    assert seen == []  # the fused path has no messages: hooks need fused=False
    conv.fused = False
    torch.testing.assert_close(
        conv(x, graph.edge_index, graph.edge_weight), expected, rtol=1e-5, atol=1e-5
    )
    handle.remove()
    assert len(seen) == 2  # K - 1 propagations
    # Laplacian edges: the graph's edges plus one self loop per node.
    assert seen[0].shape == (graph.edge_index.size(1) + graph.num_nodes, 3)


def test_lazy_in_channels(graph):
    conv = SphericalChebConv(-1, 4, K=3)
    x = torch.randn(2, graph.num_nodes, 5)
    out = conv(x, graph.edge_index, graph.edge_weight)
    assert out.shape == (2, graph.num_nodes, 4) and conv.lins[0].weight.shape == (4, 5)
    conv.fused = False
    expected = conv(x, graph.edge_index, graph.edge_weight)
    conv.fused = True
    torch.testing.assert_close(
        conv(x, graph.edge_index, graph.edge_weight), expected, rtol=1e-5, atol=1e-5
    )


def test_compile_matches_eager(graph):
    _, conv = pair(3, 4, 4)
    x = torch.randn(2, graph.num_nodes, 3, requires_grad=True)
    compiled = torch.compile(conv, backend="aot_eager")
    out = compiled(x, graph.edge_index, graph.edge_weight)
    torch.testing.assert_close(out, conv(x, graph.edge_index, graph.edge_weight))
    (grad,) = torch.autograd.grad(out.sum(), x)
    (expected,) = torch.autograd.grad(conv(x, graph.edge_index, graph.edge_weight).sum(), x)
    torch.testing.assert_close(grad, expected)


@pytest.mark.slow
def test_compile_inductor_matches_eager():
    g = pyg_sphere.healpix_graph(4)
    _, conv = pair(3, 4, 3)
    x = torch.randn(2, g.num_nodes, 3)
    compiled = torch.compile(conv)
    torch.testing.assert_close(
        compiled(x, g.edge_index, g.edge_weight),
        conv(x, g.edge_index, g.edge_weight),
        rtol=1e-5,
        atol=1e-5,
    )


def test_bad_input(graph):
    conv = SphericalChebConv(3, 4, K=3)
    with pytest.raises(ValueError, match="graph.num_nodes"):
        conv(torch.randn(100, 3), graph.edge_index, graph.edge_weight)
    with pytest.raises(ValueError, match="graph.num_nodes"):  # [N, B, F] instead of [B, N, F]
        conv(torch.randn(graph.num_nodes, 2, 3), graph.edge_index, graph.edge_weight)
    with pytest.raises(ValueError, match=r"\[B, N, F\]"):
        conv(torch.randn(graph.num_nodes), graph.edge_index, graph.edge_weight)
    with pytest.raises(ValueError, match="batch"):
        conv(
            torch.randn(graph.num_nodes, 3),
            graph.edge_index,
            graph.edge_weight,
            batch=torch.zeros(10, dtype=torch.long),
        )
    with pytest.raises(ValueError, match="lambda_max"):
        conv(torch.randn(graph.num_nodes, 3), graph.edge_index, lambda_max=-1.0)
    with pytest.raises(ValueError, match="K"):
        SphericalChebConv(3, 4, K=0)
    with pytest.raises(ValueError, match="normalization"):
        SphericalChebConv(3, 4, K=2, normalization="left")
    with pytest.raises(ValueError, match="lambda_max"):
        SphericalChebConv(3, 4, K=2, lambda_max="max")


@pytest.mark.parametrize("fused", [True, False])
def test_graph_without_edges(fused):
    # One pixel: no edges, lambda_max 0. K = 1 is a per-pixel linear layer and still works;
    # K > 1 names the problem instead of dividing by zero.
    single = pyg_sphere.healpix_graph(4, pixels=[5])
    assert single.edge_index.numel() == 0 and single.lambda_max == 0.0
    x = torch.randn(1, 3)
    conv = SphericalChebConv(3, 4, K=1, fused=fused)
    out = conv(x, single.edge_index, single.edge_weight, lambda_max=single.lambda_max)
    torch.testing.assert_close(out, conv.lins[0](x) + conv.bias)
    with pytest.raises(ValueError, match="no edges"):
        SphericalChebConv(3, 4, K=3, fused=fused)(x, single.edge_index, single.edge_weight)
    with pytest.raises(ValueError, match="without edges"):
        SphericalChebConv(3, 4, K=3, fused=fused)(
            x, single.edge_index, single.edge_weight, lambda_max=single.lambda_max
        )


def test_repr():
    assert repr(SphericalChebConv(3, 4, K=5)) == (
        "SphericalChebConv(3, 4, K=5, normalization=sym, lambda_max=auto)"
    )


def test_node_counts_are_checked_both_ways():
    from torch_geometric import EdgeIndex

    sphere = pyg_sphere.healpix_graph(8)
    region = pyg_sphere.healpix_graph(8, pixels=range(256))
    coarse = pyg_sphere.coarsen_graph(sphere)
    conv = SphericalChebConv(1, 2, K=3)
    x = torch.randn(sphere.num_nodes, 1)
    # Features of the full sphere with the edges of a region or of the coarser level: refused
    # where the graph says its size (a PyG EdgeIndex, an operator).
    for small in (region, coarse):
        sized = EdgeIndex(small.edge_index, sparse_size=(small.num_nodes, small.num_nodes))
        for fused in (True, False):
            conv.fused = fused
            with pytest.raises(ValueError, match=f"belongs to a graph of {small.num_nodes} nodes"):
                conv(x, sized, small.edge_weight)
        conv.fused = True
        op = ChebyshevOperator(small.edge_index, small.edge_weight, small.num_nodes)
        with pytest.raises(ValueError, match=f"operator is for {small.num_nodes} nodes"):
            conv(x.expand(3, -1, -1), op)
    # Fewer rows than the graph's nodes: refused on both paths.
    for fused in (True, False):
        conv.fused = fused
        with pytest.raises(ValueError, match="refers to node 767 but the graph has 100 nodes"):
            conv(x[:100], sphere.edge_index, sphere.edge_weight)
    # The matching pairs work, through a PyG batch too.
    assert conv(x[:256], region.edge_index, region.edge_weight).shape == (256, 2)
    batch = Batch.from_data_list([region, region])
    assert conv(torch.randn(512, 1), batch.edge_index, batch.edge_weight).shape == (512, 2)


def test_unsupported_inputs_name_the_fix(graph):
    conv = SphericalChebConv(1, 2, K=3)
    x = torch.randn(graph.num_nodes, 1)
    with pytest.raises(TypeError, match=r"floating-point.*x.float\(\)"):
        conv(x.long(), graph.edge_index, graph.edge_weight)
    with pytest.raises(TypeError, match=r"x is torch.float64 but the layer's parameters"):
        conv(x.double(), graph.edge_index, graph.edge_weight)
    with pytest.raises(ValueError, match="attach_graph=True"):
        conv(x, None, None)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fused", [True, False])
@torch.no_grad()
def test_half_precision_within_2e_2_of_float32(graph, dtype, fused):
    torch.manual_seed(0)
    conv = SphericalChebConv(3, 4, K=4, fused=fused)
    x = torch.randn(2, graph.num_nodes, 3)
    ref = conv(x, graph.edge_index, graph.edge_weight)
    half = SphericalChebConv(3, 4, K=4, fused=fused).to(dtype)
    half.load_state_dict(conv.state_dict())
    out = half(x.to(dtype), graph.edge_index, graph.edge_weight)
    assert out.dtype == dtype
    assert float((out.float() - ref).abs().max() / ref.abs().max()) < 2e-2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x, graph.edge_index, graph.edge_weight)
    # The message path adds the float32 bias after autocast's products, as ChebConv does.
    assert out.dtype == torch.bfloat16 if fused else out.dtype in (torch.bfloat16, torch.float32)
    assert float((out.float() - ref).abs().max() / ref.abs().max()) < 2e-2
