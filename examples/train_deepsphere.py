"""
Train DeepSphere in plain PyTorch
=================================

Train DeepSphere on simulated convergence maps with a training loop in plain PyTorch.

Every step is in view: simulate a small collection of full-sky maps
(:func:`~pyg_sphere.datasets.simulate_convergence_maps`), cut them into nested patches
(:class:`~pyg_sphere.datasets.ConvergenceMaps`), batch the patches on their shared graph
(:class:`~pyg_sphere.loader.SharedGraphLoader`), add noise
(:class:`~pyg_sphere.transforms.AddGaussianNoise`: fresh for training, seeded for validation and
test), train :class:`~pyg_sphere.nn.DeepSphere` with Adam on the cross-entropy, validate after
every epoch, and test the weights of the best epoch.

The task: class 0 is lognormal convergence maps, skewed as the late-time matter distribution
is; class 1 is their Gaussian twins, Gaussian maps with exactly the same power spectrum. The
power spectrum cannot tell them apart; DeepSphere learns the non-Gaussian structure, here under
white noise as strong as the signal. A ``--data-dir`` that holds ``raw/manifest.csv`` (e.g.
written by ``pyg-sphere-simulate``) is read instead; otherwise the maps are simulated into it
or, by default, into a temporary folder::

    python examples/train_deepsphere.py [--noise 2] [--epochs 20] [--data-dir data/twin]

It takes about 40 seconds on a 2-core CPU. The output on this page comes from
``python examples/train_deepsphere.py``.

For long runs, the next step is the Lightning application ``pyg-sphere-train-cosmo``
(``python -m pyg_sphere.apps.train_cosmo``): the same data, model and noise, with checkpoints,
``--resume``, multi-process training, mixed precision and loggers.
"""

import argparse
import copy
import os.path as osp
import tempfile
import time

import torch
import torch.nn.functional as F

from pyg_sphere.datasets import ConvergenceMaps, simulate_convergence_maps
from pyg_sphere.loader import SharedGraphLoader
from pyg_sphere.nn import DeepSphere
from pyg_sphere.transforms import AddGaussianNoise

# The docstring's first sentence; sphinx-gallery runs the script with an empty __doc__.
parser = argparse.ArgumentParser(description=__doc__ and __doc__.split("\n\n")[1])
parser.add_argument("--data-dir", help="dataset root (raw/manifest.csv); simulated if absent")
parser.add_argument("--nside", type=int, default=128)
parser.add_argument("--order", type=int, default=4, help="12 * order^2 patches per map")
parser.add_argument("--n-per-class", type=int, default=16, help="maps to simulate per class")
parser.add_argument("--noise", type=float, default=1.0, help="relative to the maps' std")
parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
parser.add_argument("--epochs", type=int, default=8)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--lr", type=float, default=3e-3)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

# %%
# Data
# ----
# The simulated maps are split 60/20/20 by map (a map's patches stay in one split), then cut
# into ``12 * order**2`` patches each. Every patch is a sample ``x [N, 1]`` on the same graph.

torch.manual_seed(args.seed)  # initial weights, shuffling and training noise: reproducible
root = args.data_dir
if root is None:
    tmp = tempfile.TemporaryDirectory()  # removed at exit
    root = tmp.name
if not osp.isfile(osp.join(root, "raw", "manifest.csv")):
    simulate_convergence_maps(
        root, args.n_per_class, args.nside, seed=args.seed, gaussian_twin=True, progress=False
    )
splits = {
    split: ConvergenceMaps(root, nside=args.nside, order=args.order, split=split, log=False)
    for split in ("train", "val", "test")
}
train_set = splits["train"]
std = train_set.map_std  # noise levels are relative to the noiseless training maps' std
train_set.transform = AddGaussianNoise(args.noise, std)  # fresh noise at every access
# Seeded noise: the same noisy patches at every evaluation, so that epochs compare fairly.
splits["val"].transform = AddGaussianNoise(args.noise, std, seed=args.seed + 1)
splits["test"].transform = AddGaussianNoise(args.noise, std, seed=args.seed + 2)
print({split: len(ds) for split, ds in splits.items()}, "patches of", train_set.patch_size, "px")

# SharedGraphLoader stacks a batch as x [B, N, 1] on the graph they share, instead of the
# disjoint union of B copies that PyG's DataLoader builds (which would need
# ConvergenceMaps(attach_graph=True) and model(batch.x, batch.batch)).
train_loader = SharedGraphLoader(train_set, batch_size=args.batch_size, shuffle=True)
val_loader = SharedGraphLoader(splits["val"], batch_size=2 * args.batch_size)
test_loader = SharedGraphLoader(splits["test"], batch_size=2 * args.batch_size)

# %%
# Model
# -----
# DeepSphere on the patch's pixels: each level is a Chebyshev convolution, batch norm, ReLU and
# a pooling by 4; the head convolves to one channel per class and averages over the pixels.

model = DeepSphere(
    1, train_set.num_classes, args.nside, pixels=train_set.graph.pixels, channels=args.channels
)
print(model)
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)


def train():
    model.train()
    total_loss = 0.0
    for batch in train_loader:
        optimizer.zero_grad()
        out = model(batch.x / std)  # inputs in units of the maps' std: of order 1
        loss = F.cross_entropy(out, batch.y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * batch.num_graphs
    return total_loss / len(train_set)


@torch.no_grad()
def test(loader):
    model.eval()  # batch norm with its running statistics, not the batch's
    correct = 0
    for batch in loader:
        correct += int((model(batch.x / std).argmax(dim=-1) == batch.y).sum())
    return correct / len(loader.dataset)


# %%
# Training
# --------
# Validation accuracy varies from epoch to epoch (batch norm's running statistics, a few maps):
# keep the weights of the best validation epoch and test only those, so that the test set
# plays no part in choosing the model.

best_val, best_state = -1.0, None
for epoch in range(1, args.epochs + 1):
    start = time.time()
    loss = train()
    val_acc = test(val_loader)
    if val_acc > best_val:
        best_val, best_state = val_acc, copy.deepcopy(model.state_dict())
    print(
        f"Epoch: {epoch:02d}, Loss: {loss:.4f}, Val: {val_acc:.4f}, "
        f"Time: {time.time() - start:.1f}s"
    )

model.load_state_dict(best_state)
print(f"Test accuracy (best epoch, val {best_val:.4f}): {test(test_loader):.4f}")
