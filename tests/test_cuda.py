"""The CUDA path: the same results as on the CPU (skipped without a GPU; benchmarks/gpu_check.sh
runs these on a CUDA machine)."""

import pytest
import torch

import pyg_sphere
from pyg_sphere import nested_patches
from pyg_sphere.nn import DeepSphere, SphericalChebConv
from pyg_sphere.nn.pool import healpix_pool, healpix_pool_graph, healpix_unpool

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def graph():
    return pyg_sphere.healpix_graph(16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_convolution_on_cuda_matches_cpu(graph, dtype):
    torch.manual_seed(0)
    conv = SphericalChebConv(3, 8, K=5)
    x = torch.randn(4, graph.num_nodes, 3)
    ref = conv(x, graph.edge_index, graph.edge_weight, lambda_max=graph.lambda_max)
    cuda = conv.to("cuda", dtype)
    out = cuda(
        x.to("cuda", dtype),
        graph.edge_index.cuda(),
        graph.edge_weight.cuda(),
        lambda_max=graph.lambda_max,
    )
    assert out.dtype == dtype and out.is_cuda
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    assert float((out.float().cpu() - ref).abs().max() / ref.abs().max()) < tol
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = conv.float()(
            x.cuda(), graph.edge_index.cuda(), graph.edge_weight.cuda(), lambda_max=graph.lambda_max
        )
    assert float((out.float().cpu() - ref).abs().max() / ref.abs().max()) < 2e-2


def test_pooling_on_cuda(graph):
    x = torch.randn(2, graph.num_nodes, 3)
    cuda = healpix_pool(x.cuda(), 2, "mean", graph=graph.to("cuda"))
    torch.testing.assert_close(cuda.cpu(), healpix_pool(x, 2, "mean"))
    torch.testing.assert_close(healpix_unpool(cuda, 2).cpu(), healpix_unpool(cuda.cpu(), 2))
    coarse = healpix_pool_graph(graph, device="cuda")
    assert coarse.edge_index.is_cuda and coarse.nside == 8


def test_deepsphere_training_step_on_cuda_matches_cpu():
    pixels = nested_patches(32, 2)[5]
    torch.manual_seed(0)
    cpu = DeepSphere(1, 2, 32, pixels=pixels, channels=(8, 16, 16))
    cuda = DeepSphere(1, 2, 32, pixels=pixels, channels=(8, 16, 16))
    cuda.load_state_dict(cpu.state_dict())
    cuda = cuda.cuda()
    assert all(g.edge_index.is_cuda for g in cuda.graphs)
    x, y = torch.randn(6, pixels.numel(), 1), torch.tensor([0, 1, 0, 1, 1, 0])
    losses = []
    for model, device in ((cpu, "cpu"), (cuda, "cuda")):
        loss = torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device))
        loss.backward()
        losses.append(float(loss))
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    for a, b in zip(cpu.parameters(), cuda.parameters()):
        torch.testing.assert_close(a.grad, b.grad.cpu(), rtol=1e-3, atol=1e-5)
