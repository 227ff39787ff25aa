"""Tabulates the largest Laplacian eigenvalue of the full-sphere HEALPix graphs.

``healpix_graph(nside)`` (full sphere, default kernel width) reads lambda_max from the table
this script writes, ``pyg_sphere/graph/_lambda_table.py``, instead of estimating it at every
build: at nside 1024 an estimate costs 100 sparse products with 100 M edges.

Each value is the largest Ritz value of long Lanczos runs (a lower bound of lambda_max, which
they approach from below), the larger of the runs from the estimator's two start vectors (the
structural one alone misses the eigenvectors that the sphere's quarter turns change); the runs
stop when 200 more steps change the value by less than 1e-7 (relative), and the script
records that change. Graphs of up to 256 nodes are solved exactly.

Usage::

    python scripts/make_lambda_table.py                 # the default set (about 20 minutes)
    python scripts/make_lambda_table.py --update        # only the entries the table lacks
    python scripts/make_lambda_table.py --max-nside 256 # quicker, smaller table
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

import pyg_sphere
from pyg_sphere._io import atomic_write_text
from pyg_sphere.graph.laplacian import _DENSE_NODES, _adjacency, _lanczos_max, _start_vectors

OUT = os.path.join(os.path.dirname(__file__), "..", "pyg_sphere", "graph", "_lambda_table.py")
# (variant, num_neighbors) -> largest nside tabulated by default.
GRAPHS = {("v2", 8): 512, ("v2", 20): 128, ("v2", 40): 128, ("v2", 60): 128, ("v1", 8): 128}


def converged_lambda_max(graph, chunk: int = 200, max_steps: int = 2000):
    degree, squares, adjacency = _adjacency(
        graph.edge_index, graph.edge_weight, graph.num_nodes, "sym"
    )
    diagonal = (degree > 0).astype(np.float64)
    if graph.num_nodes <= _DENSE_NODES:
        return float(np.linalg.eigvalsh(np.diag(diagonal) - adjacency.toarray()).max()), 0.0, 0
    starts = _start_vectors(degree, squares)
    previous, steps = None, chunk
    while True:
        value = max(
            _lanczos_max(lambda v: diagonal * v - adjacency @ v, start, steps) for start in starts
        )
        if previous is not None and (value - previous) <= 1e-7 * value or steps >= max_steps:
            return value, (value - previous) / value, steps
        previous, steps = value, steps + chunk


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-nside", type=int, default=None, help="cap every graph's nside")
    parser.add_argument(
        "--update", action="store_true", help="keep the values already in the table"
    )
    args = parser.parse_args()
    known = {}
    if args.update:
        from pyg_sphere.graph._lambda_table import FULL_SPHERE_LAMBDA_MAX as known
    lines = [
        '"""Largest eigenvalue of the normalized Laplacian of the full-sphere HEALPix graphs',
        "(default kernel widths), written by scripts/make_lambda_table.py: converged Lanczos",
        f"values on {platform.machine()}, pyg_sphere {pyg_sphere.__version__}.",
        '"""',
        "",
        "# (variant, num_neighbors) -> {nside: lambda_max}",
        "FULL_SPHERE_LAMBDA_MAX = {",
    ]
    for (variant, k), max_nside in GRAPHS.items():
        if args.max_nside:
            max_nside = min(max_nside, args.max_nside)
        lines.append(f'    ("{variant}", {k}): {{')
        nside = 1
        while nside <= max_nside:
            if nside in known.get((variant, k), {}):
                lines.append(f"        {nside}: {known[(variant, k)][nside]:.9f},")
            elif k < 12 * nside**2:
                t = time.perf_counter()
                graph = pyg_sphere.healpix_graph(
                    nside, num_neighbors=k, variant=variant, lambda_max=False
                )
                value, change, steps = converged_lambda_max(graph)
                seconds = time.perf_counter() - t
                print(
                    f"{variant} k={k} nside={nside}: {value:.9f} (last change {change:.1e}, "
                    f"{steps} steps, {seconds:.1f} s)",
                    flush=True,
                )
                lines.append(f"        {nside}: {value:.9f},")
                del graph
                pyg_sphere.cache.clear()
            nside *= 2
        lines.append("    },")
    lines.append("}")
    atomic_write_text(OUT, "\n".join(lines) + "\n")
    print(f"wrote {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
