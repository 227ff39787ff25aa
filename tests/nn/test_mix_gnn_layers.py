"""SphericalChebConv and HealpixPool next to stock PyG layers, over a PyG DataLoader."""

import healpy as hp
import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GATConv, GCNConv, global_mean_pool

from pyg_sphere import close_hierarchy, healpix_graph
from pyg_sphere.nn import HealpixPool, SphericalChebConv
from pyg_sphere.nn.pool import healpix_pool_graph


class MixedNet(torch.nn.Module):
    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.cheb = SphericalChebConv(in_channels, 16, K=4)
        self.pool1 = HealpixPool(reduce="max")
        self.gcn = GCNConv(16, 16)
        self.pool2 = HealpixPool(reduce="mean")
        self.gat = GATConv(16, 16, heads=2, concat=False)
        self.head = torch.nn.Linear(16, num_classes)

    def forward(self, data):
        x = F.relu(
            self.cheb(data.x, data.edge_index, data.edge_weight, data.batch, data.lambda_max)
        )
        x, graph = self.pool1(x, data), healpix_pool_graph(data)
        x = F.relu(self.gcn(x, graph.edge_index, graph.edge_weight))
        x, graph = self.pool2(x, graph), healpix_pool_graph(graph)
        x = F.relu(self.gat(x, graph.edge_index))
        return self.head(global_mean_pool(x, graph.batch))


def make_dataset(num=24, seed=0):
    """Smooth (label 0) or rough (label 1) maps on full spheres and on closed regions."""
    rng = np.random.default_rng(seed)
    region = close_hierarchy(hp.query_disc(16, [0.0, 0.0, 1.0], 0.8, nest=True), 2)
    graphs = [healpix_graph(8), healpix_graph(16, region)]
    dataset = []
    for i in range(num):
        graph = graphs[i % 2]
        label = (i // 2) % 2
        m = rng.standard_normal(12 * graph.nside**2)
        if label == 0:  # blocky: constant over groups of 16 pixels
            m = hp.ud_grade(
                hp.ud_grade(m, graph.nside // 4, order_in="NEST"), graph.nside, order_in="NEST"
            )
        x = m[graph.pixels.numpy()]
        data = graph.clone()
        data.x = torch.from_numpy((x - x.mean()) / x.std()).float().view(-1, 1)
        data.y = torch.tensor([label])
        dataset.append(data)
    return dataset


def test_train_a_mixed_model_on_batches():
    torch.manual_seed(0)
    dataset = make_dataset()
    model = MixedNet(1, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    full = next(iter(DataLoader(dataset, batch_size=len(dataset))))

    def full_loss():
        with torch.no_grad():
            return float(F.cross_entropy(model(full), full.y))

    before = full_loss()
    loader = DataLoader(dataset, batch_size=6, shuffle=True)
    for _ in range(3):
        for batch in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(batch), batch.y)
            loss.backward()
            optimizer.step()
    after = full_loss()
    assert after < 0.7 * before

    # A batch gives what the graphs give one by one.
    model.eval()
    with torch.no_grad():
        out = model(full)
        assert out.shape == (len(dataset), 2)
        for i, data in enumerate(dataset):
            torch.testing.assert_close(out[i : i + 1], model(data), rtol=1e-4, atol=1e-5)
