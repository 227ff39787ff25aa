import healpy as hp
import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from pyg_sphere import close_hierarchy, healpix_graph
from pyg_sphere.nn import HealpixUnpool
from pyg_sphere.nn.pool import (
    healpix_max_pool_with_indices,
    healpix_max_unpool,
    healpix_pool,
    healpix_pool_graph,
    healpix_unpool,
)


@pytest.mark.parametrize("levels", [1, 2])
def test_nearest_equals_healpy_ud_grade(levels):
    nside = 4
    x = torch.randn(2, 12 * nside**2, 3, dtype=torch.float64)
    out = HealpixUnpool(levels)(x)
    assert torch.equal(healpix_unpool(x, levels), out)
    assert out.shape == (2, 12 * (nside * 2**levels) ** 2, 3)
    for b in range(2):
        for f in range(3):
            expected = hp.ud_grade(
                x[b, :, f].numpy(), nside * 2**levels, order_in="NEST", order_out="NEST"
            )
            np.testing.assert_array_equal(out[b, :, f].numpy(), expected)


@pytest.mark.parametrize("levels", [1, 2])
def test_max_unpool_puts_values_back_at_the_maxima(levels):
    graph = healpix_graph(8)
    x = torch.randn(2, graph.num_nodes, 3)
    pooled, indices = healpix_max_pool_with_indices(x, levels, graph=graph)
    out = HealpixUnpool(levels, mode="max")(pooled, indices)
    assert torch.equal(healpix_max_unpool(pooled, indices, levels), out)
    # Numpy oracle: keep each group's maximum where it was, zero the rest.
    groups = x.numpy().reshape(2, -1, 4**levels, 3)
    keep = groups == groups.max(2, keepdims=True)
    np.testing.assert_array_equal(out.numpy(), np.where(keep, groups, 0).reshape(x.shape))


def test_unpool_inverts_pool_on_a_batch():
    graphs = [healpix_graph(4), healpix_graph(8, close_hierarchy(range(40), 1))]
    batch = Batch.from_data_list(graphs)
    # Constant over each group of siblings: mean pooling then nearest unpooling is identity.
    x = torch.randn(batch.num_nodes // 4, 2).repeat_interleave(4, dim=0)
    pooled = healpix_pool(x, reduce="mean", graph=batch)
    coarse = healpix_pool_graph(batch)
    torch.testing.assert_close(HealpixUnpool()(pooled), x)
    assert coarse.num_nodes * 4 == batch.num_nodes


def test_gradient_of_max_unpool():
    pooled = torch.randn(5, 2, requires_grad=True)
    indices = torch.randint(0, 4, (5, 2))
    out = HealpixUnpool(mode="max")(pooled, indices)
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    expected = weight.view(5, 4, 2).gather(1, indices.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(pooled.grad, expected)


def test_bad_input():
    with pytest.raises(ValueError, match="healpix_max_pool_with_indices"):
        HealpixUnpool(mode="max")(torch.randn(4, 1))
    with pytest.raises(ValueError, match="shape"):
        HealpixUnpool(mode="max")(torch.randn(4, 1), torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="mode='max'"):
        HealpixUnpool()(torch.randn(4, 1), torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="mode"):
        HealpixUnpool(mode="bilinear")
    with pytest.raises(ValueError, match="levels"):
        HealpixUnpool(levels=-1)
    assert repr(HealpixUnpool(2, "max")) == "HealpixUnpool(levels=2, mode=max)"
