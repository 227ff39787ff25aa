"""The models own one ChebyshevOperator per level: built once, shared by the level's layers,
rebuilt for another device or precision, never broadcast by DDP nor saved in checkpoints."""

import copy
import pickle

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from pyg_sphere.nn import DeepSphere, SphericalUNet

SMALL = dict(channels=(8, 16), K=3)


def test_one_operator_per_level_built_once_and_shared():
    model = DeepSphere(1, 2, 8, **SMALL)
    x = torch.randn(2, 768, 1)
    model(x)
    ops = model.operators
    # Two convolutions and the head's, on three levels.
    assert sorted(ops) == [0, 1, 2] and all(op.layout == "split" for op in ops.values())
    assert [ops[level].num_nodes for level in range(3)] == [768, 192, 48]
    model(x)
    assert all(model.operators[level] is op for level, op in ops.items())  # reused
    # Not module state: nothing of the graph in the state dict or among the buffers.
    assert not any("operator" in k or "edge" in k for k in model.state_dict())
    # Another precision gets its own operators, from the same float32 graphs.
    out64 = model.double()(x.double())
    assert out64.dtype == torch.float64 and model.operators[0].dtype == torch.float64
    torch.testing.assert_close(out64.float(), model.float()(x), rtol=1e-4, atol=1e-5)


def test_copies_and_pickles_keep_the_split_layout():
    model = SphericalUNet(1, 1, 8, **SMALL)
    x = torch.randn(2, 768, 1)
    expected = model(x)
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert all(op.layout == "split" for op in other.operators.values())
        torch.testing.assert_close(other(x), expected)
    # So does a layer that keeps its operator.
    from pyg_sphere import healpix_graph
    from pyg_sphere.nn import SphericalChebConv

    graph = healpix_graph(8)
    conv = SphericalChebConv(1, 2, K=3, cached=True)
    out = conv(x, graph.edge_index, graph.edge_weight, lambda_max=graph.lambda_max)
    other = pickle.loads(pickle.dumps(conv))
    assert other.operator.layout == "split"
    torch.testing.assert_close(other(x, graph.edge_index, graph.edge_weight), out)


def test_ddp_broadcasts_no_graph_and_keeps_the_operators(tmp_path):
    # One gloo process: DDP wraps the model, syncs its state and reduces its gradients.
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        torch.manual_seed(0)
        model = DeepSphere(1, 2, 8, **SMALL)
        reference = copy.deepcopy(model)
        ddp = DistributedDataParallel(model)
        x, y = torch.randn(4, 768, 1), torch.tensor([0, 1, 0, 1])
        for _ in range(2):
            ddp.zero_grad()
            torch.nn.functional.cross_entropy(ddp(x), y).backward()
        ops = model.operators
        assert all(op.layout == "split" for op in ops.values())
        ddp(x)
        assert all(model.operators[level] is op for level, op in ops.items())
        reference.zero_grad()
        torch.nn.functional.cross_entropy(reference(x), y).backward()
        for a, b in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(a.grad, b.grad)
    finally:
        dist.destroy_process_group()
