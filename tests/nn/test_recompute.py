"""SphericalChebConv(recompute=True): the terms computed again in the backward."""

import pytest
import torch

import pyg_sphere
from pyg_sphere.nn import ChebyshevOperator, SphericalChebConv
from pyg_sphere.nn.conv._chebyshev import chebyshev_filter


@pytest.fixture(scope="module")
def graph():
    return pyg_sphere.healpix_graph(4)


def test_filter_gradients(graph):
    op = ChebyshevOperator(
        graph.edge_index,
        graph.edge_weight,
        graph.num_nodes,
        normalization="sym",
        lambda_max=1.7,
        dtype=torch.float64,
    )
    x = torch.randn(graph.num_nodes, 2, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3 * 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: chebyshev_filter(op, x, 3, w, b), (x, weight, bias)
    )
    assert torch.autograd.gradcheck(lambda x, w: chebyshev_filter(op, x, 3, w, None), (x, weight))


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
