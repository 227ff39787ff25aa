"""Draws the figures of the documentation into docs/figures/ (needs the [plot] extra).

    python docs/make_figures.py

- ``convergence_map.png``: a simulated convergence map (Mollweide) with the borders of the 12
  order-1 patches;
- ``neighbourhood.png``: a pixel's neighbours in the k = 8 graph and the weights of its edges,
  at an ordinary pixel and where three base faces meet (gnomonic views).
"""

import io
import os
import os.path as osp

import healpy as hp
import matplotlib
import numpy as np
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pyg_sphere import healpix_graph  # noqa: E402
from pyg_sphere.datasets.lognormal_maps import simulate_convergence_map  # noqa: E402

FIGURES = osp.join(osp.dirname(osp.abspath(__file__)), "figures")


def save(fig, name):
    path = osp.join(FIGURES, name)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90, bbox_inches="tight")
    # A 256-colour palette: the same look at a third of the size of RGBA.
    image = Image.open(buffer).convert("RGB").quantize(256)
    image.save(path + ".part.png", optimize=True)
    os.replace(path + ".part.png", path)
    plt.close(fig)
    print(f"wrote {path} ({os.path.getsize(path) // 1024} KB)")


def draw_pixel(nside, pix, nest, step=4, **kwargs):
    """Outline of one pixel on the current healpy axes."""
    corners = hp.boundaries(nside, pix, step=step, nest=nest)
    corners = np.concatenate([corners, corners[:, :1]], axis=1)
    hp.projplot(*hp.vec2ang(corners.T), **kwargs)


def convergence_map():
    nside = 64
    m = simulate_convergence_map(nside, label=0, rng=0)
    fig = plt.figure(figsize=(6.4, 3.8))
    hp.mollview(
        m,
        fig=fig,
        title=f"Simulated convergence map, model 1, nside {nside}",
        unit=r"$\kappa$",
        cmap="magma",
        min=-0.02,
        max=0.04,
        hold=True,
        xsize=560,
    )
    for base in range(12):  # the order-1 patches are the 12 base pixels
        draw_pixel(1, base, True, step=64, color="white", lw=0.8)
    save(fig, "convergence_map.png")


def neighbourhood():
    nside, k = 16, 8
    graph = healpix_graph(nside, k=k, lambda_max=False)
    row, col = graph.edge_index.numpy()
    weight = graph.edge_weight.numpy()
    # An ordinary pixel, and one at a corner shared by three base pixels (fewer, farther
    # neighbours around it).
    centres = [
        ("ordinary pixel", hp.ang2pix(nside, np.radians(60), np.radians(30), nest=True)),
        (
            "where three base pixels meet",
            hp.ang2pix(nside, np.arccos(2 / 3) + 1e-3, np.radians(0.1), nest=True),
        ),
    ]
    fig = plt.figure(figsize=(9, 4.4))
    for i, (title, pix) in enumerate(centres):
        edges = row == pix
        m = np.full(12 * nside**2, hp.UNSEEN)
        m[col[edges]] = weight[edges]
        theta, phi = hp.pix2ang(nside, pix, nest=True)
        hp.gnomview(
            m,
            rot=(np.degrees(phi), 90 - np.degrees(theta)),
            nest=True,
            reso=4.0,
            xsize=260,
            fig=fig,
            sub=(1, 2, i + 1),
            min=0,
            max=1,
            cmap="viridis",
            badcolor="whitesmoke",
            unit="edge weight",
            notext=True,
            title=f"k = {k}, {title}: {int(edges.sum())} edges",
            hold=False,
        )
        for nb in hp.get_all_neighbours(nside, pix, nest=True):
            for q in hp.get_all_neighbours(nside, nb, nest=True):  # two rings of outlines
                if q >= 0:
                    draw_pixel(nside, q, True, color="0.6", lw=0.5)
        draw_pixel(nside, pix, True, color="red", lw=1.5)
        for j in col[edges]:
            hp.projplot(
                *hp.vec2ang(np.stack([graph.pos[pix].numpy(), graph.pos[j].numpy()])),
                color="k",
                lw=0.8,
            )
    save(fig, "neighbourhood.png")


if __name__ == "__main__":
    os.makedirs(FIGURES, exist_ok=True)
    convergence_map()
    neighbourhood()
