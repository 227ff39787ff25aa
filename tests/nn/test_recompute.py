"""SphericalChebConv(recompute=True): the terms computed again in the backward."""

import pytest
import torch

import pyg_sphere
from pyg_sphere.nn import ChebyshevOperator, SphericalChebConv
from pyg_sphere.nn.conv._chebyshev import chebyshev_filter


@pytest.fixture(scope="module")
def graph():
    return pyg_sphere.healpix_graph(4)


def operator(graph, normalization, num_nodes=None):
    """The operator of the graph's first num_nodes nodes (their induced subgraph)."""
    n = graph.num_nodes if num_nodes is None else num_nodes
    keep = (graph.edge_index < n).all(0)
    return ChebyshevOperator(
        graph.edge_index[:, keep],
        graph.edge_weight[keep],
        n,
        normalization=normalization,
        lambda_max=1.7,
        dtype=torch.float64,
    )


# 'sym': the split layout, whose backward writes into the kept terms; 'rw': the csr layout.
@pytest.mark.parametrize("normalization", ["sym", "rw"])
@pytest.mark.parametrize("K", [2, 3, 5])
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("out_channels", [1, 3])  # narrowing: per-term; widening: stacked
def test_filter_gradients(graph, normalization, K, recompute, out_channels):
    op = operator(graph, normalization, 64)  # a small region: gradcheck's cost is quadratic
    assert op.layout == ("split" if normalization == "sym" else "csr")
    x = torch.randn(graph.num_nodes, 2, 2, dtype=torch.float64)[:64].requires_grad_()
    weight = torch.randn(out_channels, K * 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(out_channels, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: chebyshev_filter(op, x, K, w, b, recompute), (x, weight, bias)
    )
    assert torch.autograd.gradcheck(
        lambda x, w: chebyshev_filter(op, x, K, w, None, recompute), (x, weight)
    )


@pytest.mark.parametrize("out_channels", [2, 4])
def test_second_backward_through_the_graph_gives_the_same_gradients(graph, out_channels):
    # The first backward writes into the kept terms; retain_graph must not see them changed.
    op = operator(graph, "sym")
    x = torch.randn(graph.num_nodes, 2, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(out_channels, 5 * 3, dtype=torch.float64, requires_grad=True)
    x_prev = x * 1.0  # not a leaf: the filter's input is the output of an earlier layer
    loss = chebyshev_filter(op, x_prev, 5, weight, None).square().sum()
    first = torch.autograd.grad(loss, (x, weight), retain_graph=True)
    second = torch.autograd.grad(loss, (x, weight))
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("maps", [None, 3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_outputs_and_gradients_as_the_stored_terms(graph, maps, bias, dtype):
    torch.manual_seed(0)
    stored = SphericalChebConv(2, 5, K=4, bias=bias).to(dtype)
    recomputed = SphericalChebConv(2, 5, K=4, bias=bias, recompute=True).to(dtype)
    recomputed.load_state_dict(stored.state_dict())
    shape = (graph.num_nodes, 2) if maps is None else (maps, graph.num_nodes, 2)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    probe = torch.randn(shape[:-1] + (5,), dtype=dtype)
    args = (graph.edge_index, graph.edge_weight)
    out, out2 = stored(x, *args), recomputed(x2, *args)
    torch.testing.assert_close(out2, out)
    (out * probe).sum().backward()
    (out2 * probe).sum().backward()
    torch.testing.assert_close(x2.grad, x.grad)
    for a, b in zip(recomputed.parameters(), stored.parameters()):
        torch.testing.assert_close(a.grad, b.grad)


def test_message_path_and_repr(graph):
    torch.manual_seed(0)
    conv = SphericalChebConv(2, 3, K=3, recompute=True)
    assert "recompute=True" in repr(conv)
    x = torch.randn(graph.num_nodes, 2)
    fused = conv(x, graph.edge_index, graph.edge_weight)
    conv.fused = False
    torch.testing.assert_close(fused, conv(x, graph.edge_index, graph.edge_weight))
