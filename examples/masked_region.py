"""
A masked sky region
===================

Filter and pool a masked sky region on its own graph, as if it were on the full sphere.

Surveys observe part of the sky: the other pixels of their maps are ``healpy.UNSEEN``. Here a
simulated convergence map is masked by a galactic-cut style mask (the map's latitude standing
for galactic latitude: pixels with ``|b| < --cut`` degrees are unseen) or by a disc-shaped
footprint. The network only runs on the observed region:

1. :func:`close_hierarchy(observed, levels) <pyg_sphere.close_hierarchy>` adds the few unseen
   siblings that pooling by 4 needs (they get the value 0, the mean, and a second input channel
   flags observed pixels);
2. :func:`healpix_graph(nside, pixels=region) <pyg_sphere.healpix_graph>` builds the region's
   graph: the induced subgraph of the full sphere's graph, with the same edge weights;
3. :class:`~pyg_sphere.nn.SphericalChebConv` -> :class:`~pyg_sphere.nn.HealpixPool` ->
   ``SphericalChebConv`` -> ``HealpixPool`` on it, each pooling returning the coarser region's
   graph.

The same layers are then run on the full sphere (same weights, same lambda_max) and the outputs
compared. A Chebyshev filter of order K - 1 reads K - 1 hops, and the normalized Laplacian one
more (the degrees of the neighbours), so pixels more than K hops inside the region's border
must agree with the full sphere up to float rounding; pixels near the border differ, as they
should, since they lost their outside neighbours (see :ref:`masked-regions`)::

    python examples/masked_region.py                        # nside 32, |b| > 20 degrees
    python examples/masked_region.py --mask disc --radius 50 --nside 64 --K 4

The output on this page comes from the first command, ``python examples/masked_region.py``.
"""

# sphinx_gallery_thumbnail_path = "figures/convergence_map.png"

import argparse

import healpy as hp
import numpy as np
import scipy.sparse as sp
import torch

from pyg_sphere import close_hierarchy, healpix_graph
from pyg_sphere.datasets.lognormal_maps import simulate_convergence_map
from pyg_sphere.nn import HealpixPool, SphericalChebConv
from pyg_sphere.nn.pool import healpix_pool_graph


def parse_args(argv=None):
    # The docstring's first sentence; sphinx-gallery runs the script with an empty __doc__.
    p = argparse.ArgumentParser(description=__doc__ and __doc__.split("\n\n")[1])
    p.add_argument("--nside", type=int, default=32)
    p.add_argument(
        "--mask",
        choices=["cut", "disc"],
        default="cut",
        help="galactic-cut style band, or a disc-shaped footprint",
    )
    p.add_argument(
        "--cut",
        type=float,
        default=20.0,
        help="unseen below this |latitude| in degrees (--mask cut)",
    )
    p.add_argument(
        "--radius", type=float, default=40.0, help="footprint radius in degrees (--mask disc)"
    )
    p.add_argument("--K", type=int, default=3, help="Chebyshev coefficients of each filter")
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# %%
# The data: a simulated map with the unseen pixels of a mask, and the input channels of a
# region's pixels.


def masked_map(args) -> np.ndarray:
    """A NESTED convergence map with hp.UNSEEN outside the observed footprint."""
    m = simulate_convergence_map(args.nside, 0, rng=args.seed, nest=True)
    if args.mask == "cut":
        band = np.radians([90 - args.cut, 90 + args.cut])
        unseen = hp.query_strip(args.nside, *band, inclusive=False, nest=True)
        m[unseen] = hp.UNSEEN
    else:
        seen = hp.query_disc(
            args.nside,
            hp.ang2vec(np.radians(40.0), np.radians(60.0)),
            np.radians(args.radius),
            nest=True,
        )
        keep = np.zeros(m.shape, bool)
        keep[seen] = True
        m[~keep] = hp.UNSEEN
    return m


def features(m: np.ndarray, pixels: np.ndarray) -> torch.Tensor:
    """Input channels on `pixels`: the map in units of its std (0 where unseen), and a flag
    of observed pixels."""
    observed = m != hp.UNSEEN
    std = m[observed].std()
    values = np.where(observed, m / std, 0.0)[pixels]
    return torch.tensor(np.stack([values, observed[pixels]], -1), dtype=torch.float32)


# %%
# Which outputs must agree: a filter with :math:`K` coefficients on the normalized Laplacian
# reads :math:`K` hops, so full-sphere pixels farther than that from every unseen pixel see
# the same inputs in the region's graph as in the sphere's.


def far_from(graph, outside: np.ndarray, hops: int) -> np.ndarray:
    """Nodes of a full-sphere graph more than `hops` hops away from every `outside` node."""
    n = graph.num_nodes
    row, col = graph.edge_index.numpy()
    adj = sp.csr_matrix((np.ones(len(row)), (row, col)), shape=(n, n))
    reached = outside.astype(float)
    for _ in range(hops):
        reached = reached + adj @ reached
    return reached == 0


# %%
# The region's graph, the layers, and the comparison with the full sphere after each layer.


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    nside, levels = args.nside, 2
    m = masked_map(args)
    observed = m != hp.UNSEEN

    # The region: observed pixels plus the unseen siblings needed to pool twice.
    region = close_hierarchy(observed, levels)
    graph = healpix_graph(nside, pixels=region)
    sphere = healpix_graph(nside)
    print(
        f"nside {nside}: {observed.sum()} observed pixels ({observed.mean():.1%} of the sky), "
        f"{graph.num_nodes - observed.sum()} unseen siblings added by close_hierarchy"
    )
    print(
        f"region graph: {graph.num_nodes} nodes, {graph.num_edges} edges "
        f"(full sphere: {sphere.num_nodes} nodes, {sphere.num_edges} edges)"
    )

    convs = [
        SphericalChebConv(2, args.channels, K=args.K),
        SphericalChebConv(args.channels, args.channels, K=args.K),
    ]
    pool = HealpixPool(reduce="max")

    x_region = features(m, graph.pixels.numpy())
    x_sphere = features(m, np.arange(12 * nside**2))
    inside = np.zeros(12 * nside**2, bool)  # full-sphere pixels whose value must agree
    inside[graph.pixels.numpy()] = True

    # Differences: the largest absolute difference between region and full-sphere outputs.
    print(
        "| step | nside | region nodes | nodes > K hops inside | difference there "
        "| difference elsewhere |"
    )
    print("|---|---|---|---|---|---|")
    with torch.no_grad():
        for step, conv in enumerate(convs, 1):
            # Both graphs filter with the full sphere's lambda_max, so that only the
            # region's border can make a difference.
            lam = sphere.lambda_max
            x_region = conv(x_region, graph.edge_index, graph.edge_weight, lambda_max=lam)
            x_sphere = conv(x_sphere, sphere.edge_index, sphere.edge_weight, lambda_max=lam)
            inside = inside & far_from(sphere, ~inside, args.K)
            report(f"conv {step}", graph, x_region, x_sphere, inside)
            x_region, graph = pool(torch.relu(x_region), graph), healpix_pool_graph(graph)
            x_sphere, sphere = pool(torch.relu(x_sphere), sphere), healpix_pool_graph(sphere)
            inside = inside.reshape(-1, 4).all(1)  # a parent agrees if its 4 children do
            report(f"pool {step}", graph, x_region, x_sphere, inside)
    print(f"output: {tuple(x_region.shape)} on {graph.num_nodes} pixels at nside {graph.nside}")


def report(step, graph, x_region, x_sphere, inside):
    pix = graph.pixels.numpy()
    diff = (x_region - x_sphere[pix]).abs().amax(-1).numpy()
    there = inside[pix]
    if there.any():
        scale = float(x_sphere[pix][there].abs().max())
        max_inside = diff[there].max()
        assert max_inside <= 1e-5 * max(scale, 1.0), (step, max_inside)
        agree = f"{max_inside:.1e}"
    else:
        agree = "-"
    other = f"{diff[~there].max():.1e}" if (~there).any() else "-"
    print(f"| {step} | {graph.nside} | {graph.num_nodes} | {there.sum()} | {agree} | {other} |")


# %%
# Run it: the largest difference between the region's outputs and the full sphere's, where
# they must agree (more than :math:`K` hops inside the border) and elsewhere.

if __name__ == "__main__":
    main()
