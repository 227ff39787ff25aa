import importlib
import math

import healpy as hp
import numpy as np
import pytest
import torch
from torch_geometric.utils import degree, is_undirected

import pyg_sphere
from pyg_sphere import cache, healpix_graph

graph_module = importlib.import_module("pyg_sphere.graph._healpix_graph")


def _dense_reference(nside, k, sigma):
    """Brute-force DeepSphere v2 graph from the full distance matrix.

    Returns the weight matrix where the k-NN union is unambiguous, and a boolean matrix of the
    edges that exact distance ties at the k-th neighbour make optional.
    """
    pos = np.stack(hp.pix2vec(nside, np.arange(12 * nside**2), nest=True), -1)
    d2 = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    kth = np.sort(d2, axis=1)[:, k - 1 : k]
    sure = d2 < kth * (1 - 1e-9)
    maybe = d2 <= kth * (1 + 1e-9)
    sure, maybe = sure | sure.T, maybe | maybe.T
    weight = np.exp(-math.log(2) * np.where(maybe, d2, 0) / sigma**2)
    return np.where(sure, weight, 0.0), maybe & ~sure, weight


def _dense(g):
    w = np.zeros((g.num_nodes, g.num_nodes))
    w[g.edge_index[0].numpy(), g.edge_index[1].numpy()] = g.edge_weight.numpy()
    return w


def test_structure():
    g = healpix_graph(16)
    n = 12 * 16**2
    assert g.num_nodes == n and g.nside == 16 and g.nest is True and g.num_neighbors == 8
    assert g.edge_index.dtype == torch.int64 and g.edge_weight.dtype == torch.float32
    assert is_undirected(g.edge_index, g.edge_weight)
    assert (g.edge_index[0] != g.edge_index[1]).all()
    key = g.edge_index[0] * n + g.edge_index[1]
    assert (key[1:] > key[:-1]).all()  # coalesced: sorted, no duplicates
    assert torch.equal(g.pixels, torch.arange(n))
    ref_pos = np.stack(hp.pix2vec(16, np.arange(n), nest=True), -1)
    np.testing.assert_allclose(g.pos.numpy(), ref_pos, atol=1e-6)
    assert "index" not in "".join(k for k in g.keys() if k != "edge_index")


@pytest.mark.parametrize("nside,k", [(4, 8), (8, 8), (8, 20), (8, 40), (4, 60)])
def test_weights_match_dense_computation(nside, k):
    _assert_matches_reference(
        healpix_graph(nside, num_neighbors=k), k, pyg_sphere.kernel_width(nside, k)
    )


def _assert_matches_reference(g, k, sigma):
    ref, tied, weight = _dense_reference(g.nside, k, sigma)
    ours = _dense(g)
    # Exactly tied k-th neighbours may go either way; each k-NN row must still hold k of them.
    np.testing.assert_allclose(np.where(tied, 0, ours), ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours[tied & (ours > 0)], weight[tied & (ours > 0)], rtol=1e-5)
    assert ((ours > 0).sum(1) >= k).all()


def test_kernel_width_override():
    g = healpix_graph(8, kernel_width=0.3)
    _assert_matches_reference(g, 8, 0.3)
    assert g.kernel_width == 0.3


@pytest.mark.parametrize("k", [8, 20, 40, 60])
def test_degrees(k):
    g = healpix_graph(32, num_neighbors=k, lambda_max=False)
    deg = degree(g.edge_index[0], g.num_nodes)
    assert deg.min() == k  # union symmetrisation only adds edges
    assert deg.mean() < 1.1 * k


def test_v1_graph():
    nside = 8
    g = healpix_graph(nside, variant="v1")
    deg = degree(g.edge_index[0], g.num_nodes).long()
    assert torch.bincount(deg).tolist()[7:] == [24, 12 * nside**2 - 24]
    nbr = hp.get_all_neighbours(nside, np.arange(12 * nside**2), nest=True)
    pos = np.stack(hp.pix2vec(nside, np.arange(12 * nside**2), nest=True), -1)
    rows, cols = np.nonzero(nbr.T >= 0)
    cols = nbr.T[rows, cols]
    d2 = ((pos[rows] - pos[cols]) ** 2).sum(-1)
    ref = np.zeros((len(pos), len(pos)))
    ref[rows, cols] = np.exp(-d2 / (2 * d2.mean()))
    np.testing.assert_allclose(_dense(g), ref, rtol=1e-5, atol=1e-7)


def _assert_induced_subgraph(full, region):
    sub = _dense(full)[np.ix_(region.pixels.numpy(), region.pixels.numpy())]
    np.testing.assert_allclose(_dense(region), sub, rtol=1e-6, atol=0)


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_region_is_induced_subgraph(variant):
    full = healpix_graph(16, variant=variant)
    rng = np.random.default_rng(1)
    pixels = rng.choice(12 * 16**2, 500, replace=False)
    region = healpix_graph(16, pixels, variant=variant)
    assert torch.equal(region.pixels, torch.from_numpy(np.sort(pixels)))
    _assert_induced_subgraph(full, region)
    patch = healpix_graph(16, pyg_sphere.nested_patches(16, 2)[7], variant=variant)
    _assert_induced_subgraph(full, patch)


def test_mask_and_ids_agree():
    mask = np.zeros(12 * 16**2, dtype=bool)
    mask[100:900] = True
    a = healpix_graph(16, mask)
    b = healpix_graph(16, torch.arange(100, 900))
    assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.pixels, b.pixels)


@pytest.mark.parametrize("region", [False, True])
def test_ring_and_nest_graphs_are_equal_up_to_permutation(region):
    nside = 16
    nest_pix = np.arange(0, 12 * nside**2, 3) if region else None
    g_nest = healpix_graph(nside, nest_pix)
    ring_pix = None if nest_pix is None else hp.nest2ring(nside, nest_pix)
    g_ring = healpix_graph(nside, ring_pix, nest=False)
    assert (g_ring.pixels[1:] > g_ring.pixels[:-1]).all() and g_ring.nest is False
    # node i of the ring graph is ring pixel p; find its node in the nested graph
    as_nest = hp.ring2nest(nside, g_ring.pixels.numpy())
    perm = np.searchsorted(g_nest.pixels.numpy(), as_nest)
    np.testing.assert_allclose(_dense(g_ring), _dense(g_nest)[np.ix_(perm, perm)], rtol=1e-6)
    np.testing.assert_allclose(g_ring.pos.numpy(), g_nest.pos.numpy()[perm], atol=1e-7)


def test_lambda_max_matches_dense_eigenvalue():
    g = healpix_graph(8)
    w = _dense(g)
    d = w.sum(1)
    lap = np.eye(len(w)) - w / np.sqrt(d[:, None] * d[None])
    assert g.lambda_max == pytest.approx(1.01 * np.linalg.eigvalsh(lap).max(), rel=1e-5)
    assert "lambda_max" not in healpix_graph(4, lambda_max=False)


def test_memoised_and_disk_cache(tmp_path, monkeypatch):
    a = healpix_graph(16, num_neighbors=20)
    b = healpix_graph(16, num_neighbors=20)
    assert a is not b and a.edge_index.data_ptr() == b.edge_index.data_ptr()
    b.x = torch.zeros(3)  # attributes set on a copy do not leak into the memo
    assert "x" not in healpix_graph(16, num_neighbors=20)

    c = healpix_graph(8, pixels=range(200), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    cache.clear("graph")

    def fail(*args):
        raise AssertionError("rebuilt instead of loading the cache")

    monkeypatch.setattr(graph_module, "_build", fail)
    d = healpix_graph(8, pixels=range(200), cache_dir=tmp_path)
    assert torch.equal(c.edge_index, d.edge_index) and torch.equal(c.edge_weight, d.edge_weight)
    assert d.lambda_max == c.lambda_max and d.nside == 8


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(nside=12), "power of 2"),
        (dict(nside=0), "power of 2"),
        (dict(nside=2**30), "power of 2"),
        (dict(nside=4, pixels=[0, 192]), "outside"),
        (dict(nside=4, pixels=[-1, 3]), "outside"),
        (dict(nside=4, pixels=[3, 5, 3]), "duplicated"),
        (dict(nside=4, pixels=[]), "empty"),
        (dict(nside=4, pixels=np.ones(100, dtype=bool)), "boolean mask"),
        (dict(nside=4, num_neighbors=7), "kernel_width"),
        (dict(nside=4, num_neighbors=61, kernel_width=0.1), "Unsupported num_neighbors"),
        (dict(nside=4, num_neighbors=0, kernel_width=0.1), "Unsupported num_neighbors"),
        (dict(nside=4, variant="v1", num_neighbors=20), "v1"),
        (dict(nside=4, variant="v3"), "variant"),
        (dict(nside=4, kernel_width=-1.0), "positive"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        healpix_graph(**kwargs)


def test_bad_types():
    with pytest.raises(TypeError):
        healpix_graph(4.0)
    with pytest.raises(TypeError):
        healpix_graph(4, pixels=np.array([0.5, 1.0]))


def test_graph_too_large_for_memory_fails_at_once(monkeypatch):
    import time

    from pyg_sphere import _validate

    if (_validate.available_memory() or 0) > 180 << 30:
        pytest.skip("this machine could build the nside-8192 graph")
    start = time.perf_counter()
    with pytest.raises(MemoryError, match=r"nside=8192.*needs about 17\d\.\d GiB"):
        healpix_graph(8192)
    assert time.perf_counter() - start < 5  # refused before any work
    # The same check guards the convolution's operator.
    g = healpix_graph(16)
    monkeypatch.setattr(_validate, "available_memory", lambda: 1 << 10)
    conv = pyg_sphere.nn.SphericalChebConv(1, 2, K=3)
    with pytest.raises(MemoryError, match="Chebyshev operator"):
        conv(torch.randn(g.num_nodes, 1), g.edge_index, g.edge_weight.clone())
