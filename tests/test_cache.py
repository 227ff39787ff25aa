"""pyg_sphere.cache: one registry, bounded by memory, inspectable and clearable."""

import pytest
import torch

import pyg_sphere
from pyg_sphere import cache, nested_patches
from pyg_sphere.nn import SphericalChebConv


def test_every_cache_of_the_package_is_registered():
    import pyg_sphere.datasets  # noqa: F401  (its tables register on import)

    names = set(cache.info())
    assert {"graph", "knn_tree"} <= names
    # Only caches keyed by value: nothing by the identity of a tensor.
    assert all(type(c) is cache.Memo for c in cache._REGISTRY.values())
    assert not {"operator", "lambda_max", "node_count", "coarse_batch", "graph_on_device"} & names
    for stats in cache.info().values():
        assert stats.limit > 0 and stats.size >= 0 and stats.entries >= 0


def test_info_counts_hits_and_misses_and_clear_resets():
    cache.clear()
    g = pyg_sphere.healpix_graph(4)
    conv = SphericalChebConv(1, 2, K=3)
    for _ in range(3):
        conv(torch.randn(g.num_nodes, 1), g.edge_index, g.edge_weight, lambda_max=g.lambda_max)
    pyg_sphere.healpix_graph(4)
    info = cache.info()
    assert (info["graph"].hits, info["graph"].misses, info["graph"].entries) == (1, 1, 1)
    # Bytes: at least the graph's edges and weights (int64 + float32 per edge).
    assert info["graph"].size >= g.num_edges * 12
    cache.clear()
    assert all(s.entries == 0 and s.hits == 0 and s.misses == 0 for s in cache.info().values())


def test_48_patch_graphs_stay_cached_over_passes():
    cache.clear()
    misses = []
    for _ in range(3):
        for pixels in nested_patches(32, 2):
            pyg_sphere.healpix_graph(32, pixels)
        misses.append(cache.info()["graph"].misses)
    assert misses == [48, 48, 48]


def test_graph_cache_is_bounded_by_bytes():
    cache.clear()
    one = pyg_sphere.healpix_graph(8)
    size = cache.info()["graph"].size
    cache.set_limit("graph", size)
    try:
        pyg_sphere.healpix_graph(8, num_neighbors=20)
        info = cache.info()["graph"]
        assert info.entries == 1 and info.size <= max(info.limit, info.size)
        # Evicted, so built again: a miss.
        again = pyg_sphere.healpix_graph(8)
        assert cache.info()["graph"].misses == 3
        assert torch.equal(again.edge_index, one.edge_index)
    finally:
        cache.set_limit("graph", cache.DEFAULT_LARGE_LIMIT)


def test_bad_names_and_limits():
    with pytest.raises(KeyError, match="no cache named"):
        cache.clear("graphs")
    with pytest.raises(ValueError, match="bytes"):
        cache.set_limit("graph", -1)
