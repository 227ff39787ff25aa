"""Filtering one full-sphere map: graph (Chebyshev polynomial of the Laplacian) vs spherical
harmonics (healpy.smoothing), nside 64 ... 1024.

Graph: a SphericalChebConv(1, 1, K=5) holding the Chebyshev coefficients of a heat kernel
exp(-2 lambda) on the sym Laplacian of the k=8 graph (lambda_max = 2, the bound of that
spectrum, so that no eigenvalue estimate is needed), float32, under torch.no_grad: a
degree-4 polynomial, 4 sparse products. The one-off costs are reported apart: building the graph
(pyg_sphere.healpix_graph) and the layer's first call (building its cached CSR operator).

Spherical harmonics: ``healpy.smoothing(m, fwhm=4 pixel sizes, lmax=3 nside - 1,
use_pixel_weights=False)`` (float64; its default 3 Jacobi iterations of the analysis), and, as
the floor of that route, the same with ``iter=0`` (one analysis, one synthesis).

The cost of the graph filter grows as N (number of pixels), that of a spherical-harmonic
transform as N^{3/2} (lmax^3 on an isolatitude grid). Methods are interleaved within each
repeat; medians. nside 1024 is run once.

    python benchmarks/bench_filtering.py [--nsides 64 128 256 512 1024] [--repeats 3]
        [--json results.json] [--figure docs/figures/filtering_scaling.png]
    python benchmarks/bench_filtering.py --plot-only results.json --figure ...
"""

import argparse
import json
import os
import platform
import statistics
import time

import healpy as hp
import numpy as np
import torch

import pyg_sphere
from pyg_sphere.nn import SphericalChebConv

K = 5
LAMBDA_MAX = 2.0


def heat_kernel_conv():
    """SphericalChebConv(1, 1, K) whose response is the Chebyshev interpolant of exp(-2 x)
    on [0, LAMBDA_MAX]."""
    # Chebyshev coefficients in the rescaled variable t = 2 x / lambda_max - 1.
    coeffs = np.polynomial.chebyshev.chebinterpolate(
        lambda t: np.exp(-2 * (t + 1) * LAMBDA_MAX / 2), K - 1
    )
    conv = SphericalChebConv(1, 1, K, lambda_max=LAMBDA_MAX, bias=False)
    with torch.no_grad():
        for lin, c in zip(conv.lins, coeffs):
            lin.weight.fill_(float(c))
    return conv


def seconds(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(nsides, repeats):
    rows = []
    conv = heat_kernel_conv()
    for nside in nsides:
        reps = repeats if nside < 1024 else 1
        t_build = time.perf_counter()
        graph = pyg_sphere.healpix_graph(nside, lambda_max=False)
        t_build = time.perf_counter() - t_build
        npix = graph.num_nodes
        m = hp.synfast(
            1.0 / (1 + np.arange(3 * nside)) ** 2, nside, lmax=3 * nside - 1, new=True
        )  # RING
        x = torch.from_numpy(hp.reorder(m, r2n=True).astype(np.float32))[:, None]
        fwhm = 4 * hp.nside2resol(nside)

        def graph_filter(x=x, graph=graph):
            with torch.no_grad():
                return conv(x, graph.edge_index, graph.edge_weight)

        methods = {
            "graph": graph_filter,
            "smoothing": lambda: hp.smoothing(
                m, fwhm=fwhm, lmax=3 * nside - 1, use_pixel_weights=False
            ),
            "smoothing_iter0": lambda: hp.smoothing(
                m, fwhm=fwhm, lmax=3 * nside - 1, iter=0, use_pixel_weights=False
            ),
        }
        t_first = seconds(graph_filter)  # builds the cached operator
        times = {name: [] for name in methods}
        for _ in range(reps):
            for name, fn in methods.items():
                times[name].append(seconds(fn))
        row = dict(
            nside=nside,
            npix=npix,
            graph_build=t_build,
            num_edges=graph.num_edges,
            repeats=reps,
            **{k: statistics.median(v) for k, v in times.items()},
        )
        row["operator_build"] = t_first - row["graph"]
        rows.append(row)
        print(
            f"{nside:>5} {npix:>9} {1e3 * row['graph']:>10.1f} "
            f"{1e3 * row['smoothing']:>12.1f} {1e3 * row['smoothing_iter0']:>12.1f} "
            f"{row['smoothing'] / row['graph']:>9.1f}x "
            f"{row['smoothing_iter0'] / row['graph']:>9.1f}x "
            f"{t_build:>8.2f} {row['operator_build']:>8.2f} {reps:>3}",
            flush=True,
        )
        del graph, x
        _clear()
    return rows


def _clear():
    from pyg_sphere import cache

    cache.clear()


def slopes(rows, key):
    """Least-squares exponent a in t ~ N^a over the rows with nside >= 256 (at smaller sizes
    fixed per-call costs dominate)."""
    sel = [r for r in rows if r["nside"] >= 256] or rows
    if len(sel) < 2:
        return float("nan")
    return float(np.polyfit(np.log([r["npix"] for r in sel]), np.log([r[key] for r in sel]), 1)[0])


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([r["npix"] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=100)
    styles = [
        ("smoothing", "healpy.smoothing (iter=3)", "C3", "s"),
        ("smoothing_iter0", "healpy.smoothing (iter=0)", "C1", "D"),
        ("graph", f"graph, Chebyshev K={K} (SphericalChebConv)", "C0", "o"),
    ]
    for key, label, color, marker in styles:
        t = np.array([r[key] for r in rows])
        ax.loglog(n, t, marker=marker, color=color, label=f"{label}: ~N^{slopes(rows, key):.2f}")
    # Reference slopes through the largest measurement of each route.
    ref_n = np.array([n[0], n[-1]])
    ax.loglog(ref_n, rows[-1]["graph"] * (ref_n / n[-1]), ":", color="C0", lw=1, label="~N")
    ax.loglog(
        ref_n, rows[-1]["smoothing"] * (ref_n / n[-1]) ** 1.5, ":", color="C3", lw=1, label="~N^1.5"
    )
    ax.set_xlabel("pixels N (nside " + ", ".join(str(r["nside"]) for r in rows) + ")")
    ax.set_ylabel("seconds per map")
    ax.set_title("Filtering one HEALPix map", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    print(f"figure: {path} ({os.path.getsize(path) / 1024:.0f} kB)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsides", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--figure", help="write the scaling plot (PNG) here")
    parser.add_argument("--plot-only", metavar="JSON", help="plot earlier measurements")
    args = parser.parse_args()
    if args.plot_only:
        with open(args.plot_only) as f:
            rows = json.load(f)["rows"]
    else:
        print(
            f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), healpy {hp.__version__}; load average "
            f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}; medians, seconds in ms"
        )
        print(
            f"{'nside':>5} {'N':>9} {'graph ms':>10} {'smooth ms':>12} {'iter0 ms':>12} "
            f"{'smooth/g':>10} {'iter0/g':>10} {'build s':>8} {'op s':>8} {'rep':>3}"
        )
        rows = run(args.nsides, args.repeats)
        print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": platform.machine(), "rows": rows}, f, indent=1)
    for key in ("graph", "smoothing", "smoothing_iter0"):
        print(f"growth exponent (nside >= 256) of {key}: N^{slopes(rows, key):.2f}")
    if args.figure:
        plot(rows, args.figure)


if __name__ == "__main__":
    main()
