import json

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data

from pyg_sphere import healpix_graph, nested_patches
from pyg_sphere.nn import DeepSphere, SphericalUNet


def test_shapes_both_layouts_agree():
    torch.manual_seed(0)
    pixels = nested_patches(16, 1)[4]
    model = SphericalUNet(2, 3, 16, pixels=pixels, channels=(8, 16, 16), K=3)
    assert model.levels == 2 and model.num_nodes == 256
    x = torch.randn(4, 256, 2)
    out = model(x)
    assert out.shape == (4, 256, 3)
    # A PyG batch of the same maps, each carrying its graph: same per-pixel outputs.
    graph = healpix_graph(16, pixels)
    batch = Batch.from_data_list([Data(x=m, edge_index=graph.edge_index) for m in x])
    flat = model(batch.x, batch.batch)
    assert flat.shape == (1024, 3)
    torch.testing.assert_close(flat.view(4, 256, 3), out, rtol=1e-5, atol=1e-6)
    model.eval()
    torch.testing.assert_close(model(x[1]), model(x)[1], rtol=1e-5, atol=1e-6)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = SphericalUNet(1, 2, 8, channels=(4, 8, 8), K=3)
    x = torch.randn(2, 768, 1, requires_grad=True)
    model(x).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_skip_connections_carry_detail():
    # Per-pixel regression of a map's own fine-scale pattern, which pooling alone loses:
    # the loss must drop well below what the coarse path can reach (the variance of the
    # pattern within each group of 4 children).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 768, 1, generator=g)
    target = x.clone()
    torch.manual_seed(0)
    model = SphericalUNet(1, 1, 8, channels=(8, 8), K=2)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(40):
        loss = F.mse_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    within_groups = x.view(16, -1, 4, 1) - x.view(16, -1, 4, 1).mean(2, keepdim=True)
    assert loss.item() < 0.2 * within_groups.square().mean().item()


def test_config_round_trip_and_bad_input():
    torch.manual_seed(0)
    model = SphericalUNet(1, 2, 16, pixels=nested_patches(16, 1)[0], channels=(4, 8)).eval()
    config = json.loads(json.dumps(model.config))
    clone = SphericalUNet.from_config(config).eval()
    clone.load_checkpoint_state(model.state_dict(), config)
    x = torch.randn(2, 256, 1)
    torch.testing.assert_close(clone(x), model(x))
    deep = DeepSphere(1, 2, 16, pixels=nested_patches(16, 1)[0], channels=(4, 8))
    with pytest.raises(ValueError, match="another architecture"):
        model.load_checkpoint_state(deep.state_dict(), deep.config)
    with pytest.raises(ValueError, match="another architecture"):
        SphericalUNet.from_config(deep.config)
    with pytest.raises(ValueError, match=r"x has 768 pixels per map .* 256 pixels"):
        model(torch.randn(2, 768, 1))
    with pytest.raises(ValueError, match="channels needs at least 2"):
        SphericalUNet(1, 2, 8, channels=(8,))
    with pytest.raises(ValueError, match=r"pooled 1 time.*close_hierarchy\(pixels, 2\)"):
        SphericalUNet(1, 2, 8, pixels=range(4), channels=(4, 4, 4))
