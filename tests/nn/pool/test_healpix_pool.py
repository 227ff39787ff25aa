import healpy as hp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn.pool import avg_pool_x, max_pool_x

import pyg_sphere
from pyg_sphere import cache, close_hierarchy, coarsen_graph, healpix_graph, nested_patches
from pyg_sphere.nn import HealpixPool
from pyg_sphere.nn.pool import (
    healpix_max_pool_with_indices,
    healpix_pool,
    healpix_pool_data,
    healpix_pool_graph,
)


@pytest.mark.parametrize("levels", [1, 2])
def test_mean_pool_equals_healpy_ud_grade(levels):
    nside = 16
    graph = healpix_graph(nside)
    x = torch.randn(3, graph.num_nodes, 2, dtype=torch.float64)
    out = healpix_pool(x, levels, "mean", graph=graph)
    assert torch.equal(HealpixPool(levels, "mean")(x, graph), out)
    assert out.shape == (3, graph.num_nodes // 4**levels, 2)
    for b in range(3):
        for f in range(2):
            expected = hp.ud_grade(
                x[b, :, f].numpy(), nside // 2**levels, order_in="NEST", order_out="NEST"
            )
            np.testing.assert_allclose(out[b, :, f].numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("levels", [1, 2])
def test_max_pool_equals_numpy_reshape(levels):
    graph = healpix_graph(8)
    x = torch.randn(graph.num_nodes, 3)
    out, indices = healpix_max_pool_with_indices(x, levels, graph=graph)
    groups = x.numpy().reshape(-1, 4**levels, 3)
    np.testing.assert_array_equal(out.numpy(), groups.max(1))
    np.testing.assert_array_equal(indices.numpy(), groups.argmax(1))
    # Without the graph (only divisibility checked) and as a module: the same values.
    torch.testing.assert_close(healpix_pool(x, levels), out)
    torch.testing.assert_close(HealpixPool(levels)(x), out)


def test_pool_graph_is_the_memoised_coarse_graph():
    graph = healpix_graph(8)
    coarse = healpix_pool_graph(graph, 2)
    expected = coarsen_graph(graph, 2)
    assert coarse.nside == 2 and coarse.num_nodes == 48
    assert coarse.edge_index is expected.edge_index  # nothing rebuilt
    assert coarse.edge_weight is expected.edge_weight


def test_coarse_graph_follows_the_requested_device():
    # 'meta' stands in for an accelerator; the memoised coarse graph stays where it is.
    graph = healpix_graph(8)
    coarse = healpix_pool_graph(graph, device="meta")
    assert coarse.edge_index.device.type == "meta"
    assert coarsen_graph(graph).edge_index.device.type == "cpu"


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_region_closed_under_the_hierarchy(reduce):
    nside, levels = 16, 2
    m = np.random.default_rng(0).standard_normal(12 * nside**2)
    pixels = close_hierarchy(hp.query_disc(nside, [1.0, 0.0, 0.0], 0.5, nest=True), levels)
    graph = healpix_graph(nside, pixels)
    x = torch.from_numpy(m[graph.pixels.numpy()]).view(-1, 1)
    out = healpix_pool(x, levels, reduce, graph=graph)
    coarse = healpix_pool_graph(graph, levels)
    assert torch.equal(coarse.pixels, torch.unique(graph.pixels // 4**levels))
    children = m.reshape(-1, 4**levels)[coarse.pixels.numpy()]
    expected = children.mean(1) if reduce == "mean" else children.max(1)
    np.testing.assert_allclose(out.view(-1).numpy(), expected, rtol=1e-12)


def make_graphs():
    """Graphs of different nside and regions, each holding maps x and a label y."""
    g = torch.Generator().manual_seed(0)
    graphs = [
        healpix_graph(8),
        healpix_graph(16, close_hierarchy(range(300), 2)),
        healpix_graph(4),
        healpix_graph(8, close_hierarchy([5, 400, 700], 2)),
    ]
    out = []
    for i, graph in enumerate(graphs):
        data = graph.clone()
        data.x = torch.randn(graph.num_nodes, 3, generator=g)
        data.y = torch.tensor([i])
        out.append(data)
    return out


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_batch_equals_graph_by_graph(reduce):
    graphs = make_graphs()
    batch = next(iter(DataLoader(graphs, batch_size=len(graphs))))
    out = healpix_pool(batch.x, 2, reduce, graph=batch)
    coarse = healpix_pool_graph(batch, 2)
    assert isinstance(coarse, Batch) and coarse.num_graphs == len(graphs)
    expected = Batch.from_data_list([coarsen_graph(g, 2) for g in graphs])
    for key in ("edge_index", "edge_weight", "pixels", "batch", "ptr", "nside"):
        assert torch.equal(coarse[key], expected[key]), key
    for i, g in enumerate(graphs):
        x_i = healpix_pool(g.x, 2, reduce, graph=g)
        torch.testing.assert_close(out[coarse.ptr[i] : coarse.ptr[i + 1]], x_i)
    # PyG's cluster pooling gives the same (slower: it sorts clusters, scatters).
    cluster = batch.pixels // 16 + 10**6 * batch.batch  # parent pixel, per graph
    _, cluster = torch.unique(cluster, return_inverse=True)
    pyg_pool = max_pool_x if reduce == "max" else avg_pool_x
    torch.testing.assert_close(out, pyg_pool(cluster, batch.x, batch.batch)[0])
    # Pooling the same sequence of graphs again reuses the collated coarse batch.
    batch2 = Batch.from_data_list(graphs)
    assert torch.equal(healpix_pool_graph(batch2, 2).edge_index, coarse.edge_index)


def test_data_in_data_out():
    graphs = make_graphs()
    out = healpix_pool_data(graphs[0])
    assert out.x.shape == (graphs[0].num_nodes // 4, 3) and out.nside == 4
    assert torch.equal(out.y, graphs[0].y)
    assert out.edge_index is coarsen_graph(graphs[0]).edge_index
    batch = Batch.from_data_list(graphs)
    out = healpix_pool_data(batch, reduce="mean")
    assert isinstance(out, Batch) and out.num_graphs == len(graphs)
    assert torch.equal(out.y, batch.y)
    assert torch.equal(out.x, healpix_pool(batch.x, reduce="mean", graph=batch))
    assert torch.equal(out.batch, healpix_pool_graph(batch).batch)
    for i, d in enumerate(out.to_data_list()):  # still splittable
        assert torch.equal(d.x, healpix_pool_data(graphs[i], reduce="mean").x) and d.y.item() == i
        assert torch.equal(d.edge_index, coarsen_graph(graphs[i]).edge_index)
    # Pooling did not touch the cached coarse graph.
    assert "x" not in coarsen_graph(graphs[0])


def test_48_patch_graphs_are_built_once():
    patches = nested_patches(32, 2)
    passes = []
    for _ in range(3):
        graphs = [healpix_graph(32, p) for p in patches]
        batch = Batch.from_data_list(graphs)
        healpix_pool_graph(batch, 2)
        passes.append({name: info.misses for name, info in cache.info().items()})
    assert passes[1] == passes[0] and passes[2] == passes[0]
    assert cache.info()["graph"].entries >= 2 * 48  # fine and coarse graphs


def test_gradients_flow_to_the_maxima():
    graph = healpix_graph(4)
    x = torch.randn(2, graph.num_nodes, 3, requires_grad=True)
    out, indices = healpix_max_pool_with_indices(x, graph=graph)
    out.sum().backward()
    expected = torch.zeros(2, graph.num_nodes // 4, 4, 3)
    expected.scatter_(2, indices.unsqueeze(2), 1.0)
    torch.testing.assert_close(x.grad, expected.view_as(x))


def test_bad_input():
    pool = HealpixPool()
    graph = healpix_graph(8)
    with pytest.raises(ValueError, match="close_hierarchy"):  # 10 pixels: not divisible by 4
        pool(torch.randn(10, 1), healpix_graph(8, pixels=range(10)))
    with pytest.raises(ValueError, match="close_hierarchy"):  # 4 pixels, not siblings
        pool(torch.randn(4, 1), healpix_graph(8, pixels=[0, 1, 2, 5]))
    with pytest.raises(ValueError, match="close_hierarchy"):
        pool(torch.randn(2, 10, 1))
    with pytest.raises(ValueError, match="NEST"):
        pool(torch.randn(graph.num_nodes, 1), healpix_graph(8, nest=False))
    with pytest.raises(ValueError, match="graph.num_nodes"):
        pool(torch.randn(graph.num_nodes // 4, 1), graph)
    with pytest.raises(ValueError, match="nside 1"):
        pool(torch.randn(12, 1), healpix_graph(1))
    with pytest.raises(ValueError, match="mixes nsides"):  # maps sharing a graph
        mixed = Batch.from_data_list([healpix_graph(4), healpix_graph(8)])
        pool(torch.randn(2, mixed.num_nodes, 1), mixed)
    with pytest.raises(ValueError, match="attach_graph"):
        pool(
            torch.randn(graph.num_nodes, 1),
            Data(edge_index=graph.edge_index, num_nodes=graph.num_nodes),
        )
    with pytest.raises(ValueError, match="x must be a tensor"):
        pool(graph, graph)
    with pytest.raises(ValueError, match="data.x"):
        healpix_pool_data(graph)
    with pytest.raises(ValueError, match="reduce"):
        HealpixPool(reduce="sum")
    with pytest.raises(ValueError, match="levels"):
        HealpixPool(levels=0)


def test_repr():
    assert repr(HealpixPool(2, "mean")) == "HealpixPool(levels=2, reduce=mean)"
    assert pyg_sphere.nn.HealpixPool is HealpixPool


@settings(max_examples=30, deadline=None)
@given(
    nside_log=st.integers(1, 4),
    levels=st.integers(1, 2),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_unpool_of_pool_round_trip_on_random_closed_regions(nside_log, levels, seed, data):
    from pyg_sphere.nn.pool import healpix_unpool

    nside = 2**nside_log
    if nside < 2**levels:
        levels = nside_log
    parents = 12 * (nside // 2**levels) ** 2
    chosen = data.draw(st.sets(st.integers(0, parents - 1), min_size=1, max_size=8))
    group = 4**levels
    pixels = (np.array(sorted(chosen))[:, None] * group + np.arange(group)).ravel()
    graph = healpix_graph(nside, pixels, lambda_max=False)
    x = torch.randn(2, graph.num_nodes, 3, generator=torch.Generator().manual_seed(seed))
    # A map constant on each group survives pool -> unpool exactly, whatever the reduction.
    constant = healpix_unpool(healpix_pool(x, levels, "mean", graph=graph), levels)
    for reduce in ("mean", "max"):
        pooled = healpix_pool(constant, levels, reduce, graph=graph)
        torch.testing.assert_close(healpix_unpool(pooled, levels), constant)
    # Pooling the unpooled map gives back the pooled one.
    pooled = healpix_pool(x, levels, "max", graph=graph)
    torch.testing.assert_close(healpix_pool(healpix_unpool(pooled, levels), levels), pooled)
