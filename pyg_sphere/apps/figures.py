"""Figures of the applications: example patches, learning curves, confusion matrices.

PNG files only (matplotlib's Agg backend, the ``[plot]`` extra), each written atomically.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from pyg_sphere._io import atomic_open
from pyg_sphere.datasets import ConvergenceMaps

__all__ = ["pyplot", "save", "plot_example_maps", "plot_learning_curves", "plot_confusion"]


def pyplot():
    """matplotlib.pyplot on the Agg backend, or an error naming the [plot] extra."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(
            "the PNG figures need matplotlib: pip install 'pyg_sphere[plot]', or pass --no-figures"
        ) from err
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str) -> None:
    """Writes a figure as PNG atomically and closes it."""
    plt = pyplot()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)


def plot_example_maps(
    dataset: ConvergenceMaps, path: str, class_names: Optional[Sequence[str]] = None
) -> None:
    """One test patch per class (as the model sees it, noise included): its place on the sphere
    (Mollweide, the patch in an otherwise UNSEEN map) and a gnomonic close-up, titled with
    :obj:`class_names` (by class index) or else the cosmological parameters."""
    plt = pyplot()
    labels = dataset.labels.tolist()
    picks = [labels.index(c) for c in sorted(set(labels))][:2]
    fig = plt.figure(figsize=(10, 4.2 * len(picks)))
    for row, i in enumerate(picks):
        _plot_patch(dataset, dataset[i], fig, (len(picks), 2, 2 * row + 1), class_names)
    save(fig, path)


def _plot_patch(dataset: ConvergenceMaps, data, fig, sub: tuple[int, int, int], names) -> None:
    """A patch on the whole sphere in panel :obj:`sub`, and its close-up in the next panel."""
    import healpy as hp

    pid, label = int(data.patch_id), int(data.y)
    full = np.full(12 * dataset.nside**2, hp.UNSEEN)
    pixels = dataset.patch_pixels(pid).numpy()
    full[pixels] = data.x[:, 0].numpy()
    name = f"class {label}"
    if names is not None and 0 <= label < len(names):
        name += f" ({names[label]})"
    elif math.isfinite(float(data.omega_m)):
        name += f" ($\\Omega_m$={float(data.omega_m):.2f}, $\\sigma_8$={float(data.sigma_8):.3f})"
    centre = np.mean(hp.pix2vec(dataset.nside, pixels, nest=True), axis=1)
    lon, lat = hp.vec2ang(centre, lonlat=True)
    side = dataset.nside // dataset.order
    title = f"{name}, patch {pid}"
    hp.mollview(full, nest=True, fig=fig.number, sub=sub, title=title, cbar=True, notext=True)
    hp.gnomview(
        full,
        nest=True,
        rot=(float(lon[0]), float(lat[0])),
        xsize=int(1.6 * side),
        reso=hp.nside2resol(dataset.nside, arcmin=True),
        fig=fig.number,
        sub=(sub[0], sub[1], sub[2] + 1),
        title=f"close-up ({side}x{side} pixels)",
        notext=True,
    )


def plot_learning_curves(history: list[dict], path: str) -> None:
    """Training and validation loss and accuracy per epoch, side by side."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key in zip(axes, ("loss", "acc")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy" if key == "loss" else "accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save(fig, path)


def plot_confusion(confusion: np.ndarray, path: str) -> None:
    """The test confusion matrix (rows: true class, columns: predicted), counts written in."""
    plt = pyplot()
    confusion = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(confusion, cmap="Blues")
    for (i, j), v in np.ndenumerate(confusion):
        color = "white" if v > confusion.max() / 2 else "black"
        ax.text(j, i, str(v), ha="center", va="center", color=color)
    names = [f"model {i + 1}" for i in range(len(confusion))]
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test accuracy {np.trace(confusion) / max(confusion.sum(), 1):.3f}")
    fig.tight_layout()
    save(fig, path)
