"""
Mixing with PyG's layers
========================

Spherical and stock PyG layers in one model, trained over a PyG DataLoader.

The samples are HEALPix maps on graphs of different resolutions and sky coverage: full spheres
at nside 8 and polar caps at nside 16 (closed under the hierarchy so that they can be pooled
twice). The task is to tell maps that are smooth on a scale of 4 pixels from white noise of the
same variance. The model alternates :class:`~pyg_sphere.nn.SphericalChebConv`,
:class:`~pyg_sphere.nn.HealpixPool`, :class:`~torch_geometric.nn.conv.GCNConv`,
:class:`~torch_geometric.nn.conv.GATConv` and
:func:`~torch_geometric.nn.pool.global_mean_pool`::

    SphericalChebConv -> HealpixPool(max) -> GCNConv -> HealpixPool(mean) -> GATConv
    -> global_mean_pool -> Linear

Each pooling returns the coarser graph (cached), which the next PyG layer takes as is. At the
end, a whole batch is checked to give the same outputs as the graphs one by one::

    python examples/mix_gnn_layers.py [--epochs 5]

The output on this page comes from ``python examples/mix_gnn_layers.py --epochs 3``.
"""

import argparse

import healpy as hp
import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GATConv, GCNConv, global_mean_pool

from pyg_sphere import close_hierarchy, healpix_graph
from pyg_sphere.nn import HealpixPool, SphericalChebConv
from pyg_sphere.nn.pool import healpix_pool_graph

# %%
# The model: each PyG layer takes the graph the previous pooling returned, a
# :class:`~torch_geometric.data.Batch` when the input is one.


class MixedNet(torch.nn.Module):
    def __init__(self, in_channels: int, hidden: int, num_classes: int):
        super().__init__()
        self.cheb = SphericalChebConv(in_channels, hidden, K=4)
        self.pool1 = HealpixPool(reduce="max")
        self.gcn = GCNConv(hidden, hidden)
        self.pool2 = HealpixPool(reduce="mean")
        self.gat = GATConv(hidden, hidden, heads=2, concat=False)
        self.head = torch.nn.Linear(hidden, num_classes)

    def forward(self, data):
        # data: one graph, or a Batch of graphs of any nside/region, with x [N, F].
        x = F.relu(
            self.cheb(data.x, data.edge_index, data.edge_weight, data.batch, data.lambda_max)
        )
        # The coarse graph (a Batch for a batch: edge_index, batch, ...) is memoised.
        x, graph = self.pool1(x, data), healpix_pool_graph(data)
        x = F.relu(self.gcn(x, graph.edge_index, graph.edge_weight))
        x, graph = self.pool2(x, graph), healpix_pool_graph(graph)
        x = F.relu(self.gat(x, graph.edge_index))
        return self.head(global_mean_pool(x, graph.batch))


# %%
# The data: full spheres at nside 8 and polar caps at nside 16, smooth maps (label 0) and
# white noise (label 1), each sample a copy of its graph with its features ``x`` and label
# ``y``.


def make_dataset(num: int, seed: int):
    rng = np.random.default_rng(seed)
    cap = close_hierarchy(hp.query_disc(16, [0.0, 0.0, 1.0], 0.8, nest=True), 2)
    graphs = [healpix_graph(8), healpix_graph(16, cap)]
    dataset = []
    for i in range(num):
        graph = graphs[i % 2]
        label = int(rng.integers(2))
        m = rng.standard_normal(12 * graph.nside**2)
        if label == 0:  # smooth: constant over groups of 16 pixels
            m = hp.ud_grade(
                hp.ud_grade(m, graph.nside // 4, order_in="NEST"), graph.nside, order_in="NEST"
            )
        x = m[graph.pixels.numpy()]
        data = graph.clone()
        data.x = torch.from_numpy((x - x.mean()) / x.std()).float().view(-1, 1)
        data.y = torch.tensor([label])
        dataset.append(data)
    return dataset


@torch.no_grad()
def accuracy(model, loader):
    model.eval()
    correct = total = 0
    for batch in loader:
        correct += int((model(batch).argmax(1) == batch.y).sum())
        total += batch.num_graphs
    return correct / total


# %%
# Training over PyG's :class:`~torch_geometric.loader.DataLoader`, which collates graphs of
# different sizes into one :class:`~torch_geometric.data.Batch`, then the check that a batch
# gives the outputs of its graphs one by one.


def main():
    # The docstring's first sentence; sphinx-gallery runs the script with an empty __doc__.
    parser = argparse.ArgumentParser(description=__doc__ and __doc__.split("\n\n")[1])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    train = make_dataset(128, args.seed)
    test = make_dataset(64, args.seed + 1)
    train_loader = DataLoader(train, batch_size=16, shuffle=True)
    test_loader = DataLoader(test, batch_size=32)
    model = MixedNet(1, 16, 2)
    print(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    for epoch in range(1, args.epochs + 1):
        model.train()
        total = 0.0
        for batch in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(batch), batch.y)
            loss.backward()
            optimizer.step()
            total += loss.item() * batch.num_graphs
        print(
            f"epoch {epoch}: train loss {total / len(train):.4f}, "
            f"test accuracy {accuracy(model, test_loader):.3f}"
        )

    # A Batch gives the same outputs as evaluating its graphs one by one.
    model.eval()
    with torch.no_grad():
        batch = next(iter(test_loader))
        batched = model(batch)
        single = torch.cat([model(data) for data in batch.to_data_list()])
    diff = float((batched - single).abs().max())
    print(f"max |Batch - graph by graph| = {diff:.2e}")
    assert diff < 1e-4


# %%
# Run it.


if __name__ == "__main__":
    main()
