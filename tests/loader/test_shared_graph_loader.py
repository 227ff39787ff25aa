import healpy as hp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import ChebConv, global_mean_pool

from pyg_sphere import healpix_graph
from pyg_sphere.datasets import ConvergenceMaps
from pyg_sphere.loader import SharedGraphCollater, SharedGraphLoader
from pyg_sphere.nn import HealpixPool, SphericalChebConv
from pyg_sphere.nn.pool import healpix_pool_graph
from pyg_sphere.transforms import AddGaussianNoise


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("maps")
    (root / "raw").mkdir()
    np.random.seed(1)
    ell = np.arange(48)
    rows = []
    for i in range(3):
        hp.write_map(
            str(root / "raw" / f"m{i}.fits"), hp.synfast(1 / (ell + 3.0) ** 2, 16), dtype=np.float64
        )
        rows.append(f"m{i}.fits,{i % 2},0.3,0.8,train")
    (root / "raw" / "manifest.csv").write_text(
        "file,label,omega_m,sigma_8,split\n" + "\n".join(rows)
    )
    return str(root)


def test_batches_share_one_graph(root):
    ds = ConvergenceMaps(root, 8, 2, log=False)  # 3 maps x 48 patches of 16 pixels
    batches = list(SharedGraphLoader(ds, batch_size=64))
    assert [b.num_graphs for b in batches] == [64, 64, 16]
    b = batches[0]
    assert b.x.shape == (64, 16, 1) and b.y.shape == (64,) and b.patch_id.shape == (64,)
    assert b.batch is None and b.num_nodes == 16
    assert b.edge_index is ds.graph.edge_index and b.edge_weight is ds.graph.edge_weight
    assert b.lambda_max == ds.graph.lambda_max and b.nside == 8 and b.num_neighbors == 8
    assert torch.equal(b.x[10], ds[10].x) and b.y[50].item() == ds[50].y.item()
    assert b.map_id.tolist() == [ds[i].map_id.item() for i in range(64)]
    assert len(list(SharedGraphLoader(ds, batch_size=64, drop_last=True))) == 2


def _cheb_model(conv_cls):
    torch.manual_seed(0)
    conv = conv_cls(1, 3, K=4)

    def model(data):  # the same code for both kinds of batch
        h = conv(
            data.x, data.edge_index, data.edge_weight, batch=data.batch, lambda_max=data.lambda_max
        )
        return global_mean_pool(h.relu(), data.batch)

    return conv, model


def _dense_oracle(conv, graph, x):
    """sum_k T_k(2L/lambda_max - I) x W_k + b with L the dense normalized Laplacian (numpy)."""
    n = graph.num_nodes
    w = np.zeros((n, n))
    w[graph.edge_index[0].numpy(), graph.edge_index[1].numpy()] = graph.edge_weight.numpy()
    d = w.sum(1) ** -0.5
    lap = np.eye(n) - d[:, None] * w * d[None, :]
    lap = 2 * lap / graph.lambda_max - np.eye(n)
    t = [x, lap @ x]
    while len(t) < len(conv.lins):
        t.append(2 * lap @ t[-1] - t[-2])
    out = sum(tk @ lin.weight.detach().double().numpy().T for tk, lin in zip(t, conv.lins))
    out = np.maximum(out + conv.bias.detach().double().numpy(), 0)
    return out.mean(0)


def test_same_model_same_outputs_both_loaders(root):
    shared = ConvergenceMaps(root, 8, 1, log=False)
    pyg = ConvergenceMaps(root, 8, 1, attach_graph=True, log=False)
    conv, model = _cheb_model(ChebConv)
    a = torch.cat([model(b) for b in SharedGraphLoader(shared, batch_size=5)])
    batch = next(iter(DataLoader(pyg, batch_size=5)))
    assert batch.x.shape == (5 * 64, 1) and batch.lambda_max.shape == (5,)
    b = torch.cat([model(b) for b in DataLoader(pyg, batch_size=5)])
    assert a.shape == (36, 3)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for i in (0, 17, 35):
        x = shared[i].x.double().numpy()
        np.testing.assert_allclose(
            a[i].detach().numpy(), _dense_oracle(conv, shared.graph, x), rtol=1e-4, atol=1e-6
        )


def test_same_outputs_with_spherical_cheb_conv(root):
    shared = ConvergenceMaps(root, 8, 1, log=False)
    pyg = ConvergenceMaps(root, 8, 1, attach_graph=True, log=False)
    conv, model = _cheb_model(SphericalChebConv)
    a = torch.cat([model(b) for b in SharedGraphLoader(shared, batch_size=8)])
    b = torch.cat([model(b) for b in DataLoader(pyg, batch_size=8)])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    x = shared[20].x.double().numpy()
    np.testing.assert_allclose(
        a[20].detach().numpy(), _dense_oracle(conv, shared.graph, x), rtol=1e-4, atol=1e-6
    )


def test_same_outputs_with_pooling(root):
    """conv -> HealpixPool -> conv -> global mean: the batches carry what pooling needs."""
    torch.manual_seed(0)
    conv1, conv2, pool = SphericalChebConv(1, 4, K=3), SphericalChebConv(4, 2, K=3), HealpixPool()

    def model(data):
        h = conv1(
            data.x, data.edge_index, data.edge_weight, batch=data.batch, lambda_max=data.lambda_max
        ).relu()
        h, coarse = pool(h, data), healpix_pool_graph(data)
        h = conv2(
            h,
            coarse.edge_index,
            coarse.edge_weight,
            batch=coarse.batch,
            lambda_max=coarse.lambda_max,
        )
        return global_mean_pool(h, coarse.batch)

    shared = ConvergenceMaps(root, 8, 1, log=False)
    pyg = ConvergenceMaps(root, 8, 1, attach_graph=True, log=False)
    a = torch.cat([model(b) for b in SharedGraphLoader(shared, batch_size=8)])
    b = torch.cat([model(b) for b in DataLoader(pyg, batch_size=8)])
    assert a.shape == (36, 2)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_transform_and_workers(root):
    train = ConvergenceMaps(root, 8, 1, log=False)
    ds = ConvergenceMaps(
        root, 8, 1, log=False, transform=AddGaussianNoise(1.0, train.map_std, seed=3)
    )
    expected = torch.stack([ds[i].x for i in range(len(ds))])
    loader = SharedGraphLoader(ds, batch_size=7, num_workers=1)
    x = torch.cat([b.x for b in loader])
    assert torch.equal(x, expected) and not torch.equal(x, torch.stack([d.x for d in train]))


def test_shuffle_is_seeded(root):
    ds = ConvergenceMaps(root, 8, 1, log=False)

    def order(seed):
        g = torch.Generator().manual_seed(seed)
        return torch.cat(
            [
                b.patch_id * 100 + b.map_id
                for b in SharedGraphLoader(ds, 10, shuffle=True, generator=g)
            ]
        )

    assert torch.equal(order(0), order(0)) and not torch.equal(order(0), order(1))
    assert sorted(order(0).tolist()) == sorted(p * 100 + m for m in range(3) for p in range(12))


def test_errors(root):
    ds = ConvergenceMaps(root, 8, 1, log=False)
    wrong = ConvergenceMaps(root, 8, 2, log=False).graph  # 16 nodes, items have 64
    items = [ds[i] for i in range(4)]  # a list: no dataset graph to compare with
    with pytest.raises(ValueError, match="must all have 16 rows"):
        next(iter(SharedGraphLoader(items, batch_size=4, graph=wrong)))
    with pytest.raises(ValueError, match="pass the shared graph as graph="):
        SharedGraphLoader([ds[0]], batch_size=1)
    with pytest.raises(ValueError, match="batch_size must be an int"):
        SharedGraphLoader(ds, batch_size=None)
    with pytest.raises(TypeError, match="sets collate_fn itself"):
        SharedGraphLoader(ds, collate_fn=list)
    with pytest.raises(TypeError, match="Data with edge_index"):
        SharedGraphCollater(Data(x=torch.zeros(3, 1)))


class Summarised(Data):
    """Items whose ``summary`` is one row per sample (PyG: a new batch dimension) and whose
    ``profile`` [N, 1] is a graph-level column, concatenated along dimension 1."""

    def __cat_dim__(self, key, value, *args, **kwargs):
        if key == "summary":
            return None
        if key == "profile":
            return 1
        return super().__cat_dim__(key, value, *args, **kwargs)


def test_graph_level_by_pyg_rules():
    n = 4
    graph = Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=n)
    items = [
        Summarised(
            x=torch.full((n, 2), float(i)),
            y=torch.tensor([i]),
            summary=torch.arange(3.0) + i,
            profile=torch.full((n, 1), float(i)),
            pos=torch.randn(n, 3),
            scale=torch.tensor(2.0 * i),
            name=f"m{i}",
            w=i,
        )
        for i in range(5)
    ]
    assert items[0].__cat_dim__("summary", items[0].summary) is None
    assert not items[0].is_node_attr("profile")
    batch = SharedGraphCollater(graph)(items)
    assert batch.summary.shape == (5, 3)  # stacked, not concatenated into [15]
    assert torch.equal(batch.summary[:, 0], torch.arange(5.0))
    assert batch.profile.shape == (n, 5)  # N rows, yet graph-level: not stacked as [5, N, 1]
    assert torch.equal(batch.profile[0], torch.arange(5.0))
    assert batch.x.shape == (5, n, 2) and batch.pos.shape == (5, n, 3)
    assert batch.y.tolist() == [0, 1, 2, 3, 4] and batch.scale.shape == (5,)
    assert batch.name == [f"m{i}" for i in range(5)] and batch.w.tolist() == [0, 1, 2, 3, 4]
    # the same layout as PyG's own batch for every graph-level field
    pyg = Batch.from_data_list(items)
    for key in ("summary", "profile", "y", "scale"):
        assert torch.equal(batch[key], pyg[key])
    assert torch.equal(batch.x.reshape(-1, 2), pyg.x)


def test_one_node_graph():
    graph = Data(edge_index=torch.zeros(2, 0, dtype=torch.long), num_nodes=1)
    items = [Data(x=torch.ones(1, 3), y=torch.tensor([i])) for i in range(3)]
    batch = SharedGraphCollater(graph)(items)
    assert batch.x.shape == (3, 1, 3) and batch.y.shape == (3,)


@st.composite
def batches(draw):
    """Items on a graph of n nodes with random node-level and graph-level fields."""
    n = draw(st.integers(2, 6))
    b = draw(st.integers(1, 5))
    node_shapes = draw(st.lists(st.lists(st.integers(1, 3), max_size=2), max_size=3))
    graph_shapes = draw(st.lists(st.lists(st.integers(1, 7), min_size=1, max_size=2), max_size=3))
    scalars = draw(st.integers(0, 2))
    items = []
    for i in range(b):
        fields = {"x": torch.randn(n, draw(st.integers(1, 3))) if i == 0 else None}
        fields.update({f"node{j}": torch.randn(n, *s) for j, s in enumerate(node_shapes)})
        fields.update({f"graph{j}": torch.randn(*s) for j, s in enumerate(graph_shapes)})
        fields.update({f"number{j}": float(i + j) for j in range(scalars)})
        items.append(fields)
    for fields in items[1:]:
        fields["x"] = torch.randn_like(items[0]["x"])
    return n, [Data(**fields) for fields in items]


@settings(max_examples=60, deadline=None)
@given(batches())
def test_collate_matches_pyg_batch(case):
    n, items = case
    graph = Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=n)
    batch = SharedGraphCollater(graph)(items)
    pyg = Batch.from_data_list(items)
    assert batch.num_graphs == len(items) and batch.num_nodes == n and batch.batch is None
    for key in items[0].keys():
        value = batch[key]
        if isinstance(items[0][key], float):
            assert value.shape == (len(items),)
        elif items[0].is_node_attr(key):  # stacked: [B, N, ...], PyG's rows in blocks of N
            assert value.shape == (len(items), *items[0][key].shape)
            assert torch.equal(value.reshape(-1, *value.shape[2:]), pyg[key])
        else:  # graph-level: exactly PyG's concatenation
            assert torch.equal(value, pyg[key])


def test_mismatched_node_rows():
    graph = Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=3)
    items = [
        Data(x=torch.zeros(3, 1), pos=torch.zeros(3, 2)),
        Data(x=torch.zeros(3, 1), pos=torch.zeros(3, 4)),
    ]
    with pytest.raises(ValueError, match="'pos' must all have 3 rows"):
        SharedGraphCollater(graph)(items)
    items = [
        Data(x=torch.zeros(3, 1), y=torch.zeros(2, 2)),
        Data(x=torch.zeros(3, 1), y=torch.zeros(2, 5)),
    ]
    with pytest.raises(ValueError, match="graph-level 'y' cannot be concatenated"):
        SharedGraphCollater(graph)(items)
    with pytest.raises(ValueError, match="empty batch"):
        SharedGraphCollater(graph)([])


def test_graph_must_be_the_datasets(root):
    ds = ConvergenceMaps(root, 8, 1, log=False)  # patches of 64 nested pixels at nside 8
    cases = [
        (healpix_graph(16, pixels=range(64)), r"nside 16.*dataset's.*nside 8"),
        (healpix_graph(8, pixels=range(64), nest=False), r"ring.*dataset's.*nested"),
        (healpix_graph(8, pixels=range(64, 128)), r"pixel ids.*64.*dataset's.*0"),
        (wrong_size := healpix_graph(8, pixels=range(16)), r"16 nodes.*64"),
    ]
    for graph, match in cases:
        with pytest.raises(ValueError, match=match):
            SharedGraphLoader(ds, batch_size=4, graph=graph)
    plain = Data(edge_index=ds.graph.edge_index, num_nodes=64)
    with pytest.raises(ValueError, match=r"no nside.*pyg_sphere.healpix_graph"):
        SharedGraphLoader(ds, batch_size=4, graph=plain)
    assert wrong_size.num_nodes == 16

    # the same pixels with another neighbourhood: a legitimate choice
    denser = healpix_graph(8, pixels=range(64), num_neighbors=20)
    batch = next(iter(SharedGraphLoader(ds, batch_size=4, graph=denser)))
    assert batch.edge_index is denser.edge_index
    subset = ds[torch.arange(10)]  # a subset keeps the dataset's graph, so the check
    with pytest.raises(ValueError, match="nside 16"):
        SharedGraphLoader(subset, batch_size=4, graph=cases[0][0])


def test_collater_checks_items_that_carry_a_graph(root):
    attached = ConvergenceMaps(root, 8, 1, attach_graph=True, log=False)
    items = [attached[i] for i in range(3)]
    assert SharedGraphCollater(attached.graph)(items).x.shape == (3, 64, 1)
    ring = healpix_graph(8, pixels=range(64), nest=False)  # same node count
    with pytest.raises(ValueError, match=r"ring.*items.*nested"):
        SharedGraphCollater(ring)(items)
    with pytest.raises(ValueError, match=r"pixel ids"):
        SharedGraphCollater(healpix_graph(8, pixels=range(64, 128)))(items)
