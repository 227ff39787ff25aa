"""
Measuring rotation equivariance
===============================

Measure how rotation equivariant the HEALPix graphs are (DeepSphere v2, Defferrard et al. 2020).

A filter on a graph is a polynomial of its Laplacian, so a graph whose Laplacian commutes with
rotations gives rotation-equivariant convolutions. For random signals of one spherical-harmonic
degree ``ell`` and random rotations, :func:`pyg_sphere.equivariance.equivariance_error` measures
the normalized squared error between "apply the Laplacian, then rotate" and "rotate, then apply".
This script compares the DeepSphere v1 graph (healpy's 8 neighbours) with the v2 k-NN graphs
(k = 8, 20, 40, with the tuned kernel widths), and prints the error of the measurement itself
(the identity operator) as the floor below which nothing can be told apart::

    python examples/measure_equivariance.py                         # nside 16, ell 20: seconds
    python examples/measure_equivariance.py --nside 32 --ell 50     # the figures in the docs
    python examples/measure_equivariance.py --layer                 # also SphericalChebConv

Larger ``ell`` (finer structure, relative to the pixel size) gives larger errors; more signals
and rotations give steadier means. The figures at nside 32 and :math:`\\ell = 50` are discussed in
:ref:`rotation-equivariance` [Defferrard2020]_. The output on this page comes from
``python examples/measure_equivariance.py --layer``.
"""

# sphinx_gallery_thumbnail_path = "figures/neighbourhood.png"

import argparse
import contextlib
import time

import torch

from pyg_sphere import healpix_graph
from pyg_sphere.equivariance import equivariance_error
from pyg_sphere.nn import SphericalChebConv

GRAPHS = (
    ("v1 (healpy 8 neighbours)", dict(variant="v1")),
    ("v2, k = 8", dict(num_neighbors=8)),
    ("v2, k = 20", dict(num_neighbors=20)),
    ("v2, k = 40", dict(num_neighbors=40)),
)


def parse_args(argv=None):
    # The docstring's first sentence; sphinx-gallery runs the script with an empty __doc__.
    p = argparse.ArgumentParser(description=__doc__ and __doc__.split("\n\n")[1])
    p.add_argument("--nside", type=int, default=16)
    p.add_argument(
        "--ell",
        type=int,
        default=20,
        help="spherical-harmonic degree of the test signals (at most 3 nside - 1)",
    )
    p.add_argument("--signals", type=int, default=2, help="random signals averaged over")
    p.add_argument("--rotations", type=int, default=2, help="random rotations per signal")
    p.add_argument(
        "--normalization",
        choices=["sym", "combinatorial"],
        default="sym",
        help="Laplacian: I - D^-1/2 W D^-1/2 (what the layers filter with) or the paper's D - W",
    )
    p.add_argument(
        "--layer",
        action="store_true",
        help="also measure random SphericalChebConv layers (K = 5) on each graph",
    )
    p.add_argument("--layers", type=int, default=3, help="random layers averaged over with --layer")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


@contextlib.contextmanager
def one_thread():
    """Small transforms gain nothing from threads, and threads waiting on busy cores are slow."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield


# %%
# For each graph, the error of its Laplacian (and with ``--layer``, of random
# :class:`~pyg_sphere.nn.SphericalChebConv` layers) on random signals of degree ``ell``, and
# the error of the identity: what the measurement itself gets wrong.


def measure(args) -> dict:
    """Returns {name: (graph, error of the Laplacian, error of the layer or None)}."""
    normalization = None if args.normalization == "combinatorial" else "sym"
    common = dict(num_signals=args.signals, num_rotations=args.rotations, seed=args.seed)
    results = {}
    for name, kwargs in GRAPHS:
        graph = healpix_graph(args.nside, lambda_max=args.layer, **kwargs)
        lap = equivariance_error(graph, args.ell, normalization=normalization, **common)
        layer = None
        if args.layer:
            # Relative to the input: a random filter can nearly cancel degree ell, which would
            # inflate an error relative to its output.
            torch.manual_seed(args.seed)
            errors = []
            for _ in range(args.layers):
                conv = SphericalChebConv(1, 1, K=5, lambda_max=graph.lambda_max).double()
                errors.append(
                    equivariance_error(graph, args.ell, conv, relative_to="input", **common)
                )
            layer = sum(errors) / len(errors)
        results[name] = (graph, lap, layer)
    # The measure's own error: rotations through a least-squares harmonic analysis.
    floor = equivariance_error(
        healpix_graph(args.nside, lambda_max=False), args.ell, lambda x, *_: x, **common
    )
    results["identity (floor of the measure)"] = (None, floor, None)
    return results


def print_table(results, args):
    v1 = results[GRAPHS[0][0]][1]
    header = ["graph", "edges per pixel", "sigma", "Laplacian error", "v1 / this"]
    if args.layer:
        header.append(f"SphericalChebConv error (/ input, {args.layers} layers)")
    print(
        f"nside {args.nside}, ell {args.ell}, {args.normalization} Laplacian, "
        f"{args.signals} signals x {args.rotations} rotations (mean squared relative error)"
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, (graph, lap, layer) in results.items():
        if graph is None:
            cells = [name, "-", "-", f"{lap:.2e}", "-"]
        else:
            # v1 weighs exp(-d^2 / sigma^2) with its own sigma: only v2 widths compare.
            sigma = f"{graph.kernel_width:.4f}" if graph.variant == "v2" else "-"
            cells = [
                name,
                f"{graph.num_edges / graph.num_nodes:.1f}",
                sigma,
                f"{lap:.2e}",
                f"{v1 / lap:.1f}x",
            ]
        if args.layer:
            cells.append("-" if layer is None else f"{layer:.2e}")
        print("| " + " | ".join(cells) + " |")


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    with one_thread():
        results = measure(args)
    print_table(results, args)
    print(f"({time.perf_counter() - start:.1f} s)")
    return results


# %%
# Run it: a markdown table, one graph a row.

if __name__ == "__main__":
    main()
