"""
Classify convergence maps
=========================

Train DeepSphere on simulated convergence maps, then use the trained model.

DeepSphere's cosmological task [Perraudin2019]_: tell apart weak-lensing convergence maps of two
cosmologies with (nearly) the same power spectrum, from patches of the sky under noise. The
training itself is :mod:`pyg_sphere.apps.train_cosmo` (also the ``pyg-sphere-train-cosmo``
command): on first use it simulates a small collection of power-matched maps
(:func:`~pyg_sphere.datasets.simulate_convergence_maps`), then trains
:class:`~pyg_sphere.nn.DeepSphere` on batches of patches sharing one graph
(:class:`~pyg_sphere.loader.SharedGraphLoader`) with fresh noise every epoch
(:class:`~pyg_sphere.transforms.AddGaussianNoise`), keeps the best epoch on validation, and
writes checkpoints, ``metrics.json``, ``history.csv`` and figures into ``--out``. This script
runs it with any of its options, then shows how the pieces fit together afterwards::

    python examples/classify_cosmologies.py --nside 64 --order 1 --noise 0.5 --epochs 5 \\
        --out runs/example
    python examples/classify_cosmologies.py --help      # all the options
    make demo                        # lognormal maps against their Gaussian twins, 7 epochs

``--resume`` continues an interrupted run exactly; ``--devices 2`` (or ``torchrun
--nproc_per_node 2 -m pyg_sphere.apps.train_cosmo``) trains data-parallel. To see the training
loop itself, read ``examples/train_deepsphere.py``; :doc:`/training` describes the application.

The output on this page comes from a run in seconds (10 maps per class are far too few for this
task, and the accuracy stays near chance; :doc:`/results` shows what full-size runs reach)::

    python examples/classify_cosmologies.py --nside 32 --order 1 --n-per-class 10 --epochs 5 \\
        --lr 2e-3 --batch-size 8 --quiet
"""

# sphinx_gallery_multi_image = "single"

import os.path as osp
import sys

import torch

from pyg_sphere.apps.train_cosmo import build_parser, load_checkpoint, model_from_checkpoint, run
from pyg_sphere.datasets import ConvergenceMaps
from pyg_sphere.loader import SharedGraphLoader
from pyg_sphere.transforms import AddGaussianNoise

# %%
# Training
# --------
# :func:`~pyg_sphere.apps.train_cosmo.run` takes the command's options as a list: simulate the
# maps if needed, train (or ``--resume``), and test the best epoch.

if __name__ == "__main__":
    metrics = run(sys.argv[1:])  # train (or --resume) as the command does
    args = build_parser().parse_args(sys.argv[1:])

# %%
# The model from its checkpoint
# -----------------------------
# The best checkpoint (a Lightning checkpoint) holds the model's config and weights: rebuild
# it without knowing the options it was trained with.

if __name__ == "__main__":
    ckpt = load_checkpoint(osp.join(args.out, "best.ckpt"))
    scale = ckpt["hyper_parameters"]["input_scale"]
    model = model_from_checkpoint(ckpt).eval()
    print(model)

# %%
# Classify the test patches ourselves: the same seeded noise as train_cosmo's test set, batches
# of patches ``[B, N, 1]`` on one shared graph, inputs in units of the maps' std.

if __name__ == "__main__":
    test_set = ConvergenceMaps(
        metrics["data"]["root"],
        nside=metrics["data"]["nside"],
        order=metrics["data"]["order"],
        split="test",
        log=False,
    )
    test_set.transform = AddGaussianNoise(args.noise, test_set.map_std, seed=args.seed + 2)
    correct = 0
    with torch.no_grad():
        for batch in SharedGraphLoader(test_set, batch_size=64):
            model.check_data(batch)  # a clear error if the data is not the model's region
            prediction = model(batch.x / scale).argmax(dim=-1)
            correct += int((prediction == batch.y).sum())
    print(
        f"test accuracy recomputed from best.ckpt: {correct / len(test_set):.4f} "
        f"(train_cosmo reported {metrics['test_acc']:.4f})"
    )

# %%
# The run's figures
# -----------------
# Unless ``--no-figures``, ``train_cosmo`` wrote PNG figures into ``--out``: a test patch of
# each class, on the sphere and close up; the learning curves; the test confusion matrix.
# Opened as matplotlib figures here, they appear in the documentation's gallery (and in a
# session that shows its figures).


def open_figures(out_dir: str) -> None:
    names = ("example_maps.png", "learning_curves.png", "confusion_matrix.png")
    paths = [osp.join(out_dir, name) for name in names if osp.isfile(osp.join(out_dir, name))]
    if not paths:
        return
    import matplotlib.pyplot as plt  # the figures' presence implies matplotlib

    for path in paths:
        image = plt.imread(path)
        fig = plt.figure(figsize=(image.shape[1] / 100, image.shape[0] / 100), dpi=100)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(image)
        ax.set_axis_off()


if __name__ == "__main__":
    open_figures(args.out)
