"""Train DeepSphere on simulated convergence maps, then use the trained model.

The training itself is :mod:`pyg_sphere.apps.train_cosmo` (also the ``pyg-sphere-train-cosmo``
command): it simulates a small power-matched collection on first use, trains with a progress
bar, validates every epoch, keeps the best checkpoint and writes metrics and figures. This
example runs it with any of its options, then shows how the pieces fit together afterwards::

    python examples/classify_cosmologies.py --nside 64 --order 1 --noise 0.5 --epochs 5 \\
        --out runs/example
    python examples/classify_cosmologies.py --help      # all the options
"""

import os.path as osp
import sys

import torch

from pyg_sphere.apps.train_cosmo import build_parser, load_checkpoint, model_from_checkpoint, run
from pyg_sphere.datasets import ConvergenceMaps
from pyg_sphere.loader import SharedGraphLoader
from pyg_sphere.transforms import AddGaussianNoise

if __name__ == "__main__":
    metrics = run(sys.argv[1:])  # train (or --resume) as the command does
    args = build_parser().parse_args(sys.argv[1:])

    # The best checkpoint holds the model's config and weights: rebuild it without knowing
    # the options it was trained with.
    ckpt = load_checkpoint(osp.join(args.out, "best.pt"))
    model = model_from_checkpoint(ckpt).eval()
    print(model)

    # Classify the test patches ourselves: the same seeded noise as train_cosmo's test set,
    # batches of patches [B, N, 1] on one shared graph, inputs in units of the maps' std.
    test_set = ConvergenceMaps(
        metrics["data"]["root"],
        nside=ckpt["data"]["nside"],
        order=ckpt["data"]["order"],
        split="test",
        log=False,
    )
    test_set.transform = AddGaussianNoise(args.noise, test_set.map_std, seed=args.seed + 2)
    correct = 0
    with torch.no_grad():
        for batch in SharedGraphLoader(test_set, batch_size=64):
            model.check_data(batch)  # a clear error if the data is not the model's region
            prediction = model(batch.x / ckpt["input_scale"]).argmax(dim=-1)
            correct += int((prediction == batch.y).sum())
    print(
        f"test accuracy recomputed from best.pt: {correct / len(test_set):.4f} "
        f"(train_cosmo reported {metrics['test_acc']:.4f})"
    )
