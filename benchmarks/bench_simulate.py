"""Time the lognormal convergence-map simulator, stage by stage.

    python benchmarks/bench_simulate.py              # nside 256, 512, 1024
    python benchmarks/bench_simulate.py --nside 1024 --repeats 5

For each nside (lmax = 3 nside - 1) it reports medians over ``--repeats`` maps:
the one-off Gaussian-spectrum transform (computed once per cosmology and
cached), drawing the alm, ``healpy.alm2map``, the lognormal transform, writing
the float32 FITS file, and the whole per-map cost. The comparison is what a
user would otherwise pick: ``healpy.synfast`` at the same lmax, which makes a
*Gaussian* map from healpy's global RNG (not reproducible per map, and with
the wrong one-point distribution), timed in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import healpy as hp
import numpy as np

import pyg_sphere.datasets.lognormal_maps as sim
from pyg_sphere import cache


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def bench(nside: int, repeats: int, workdir: Path) -> dict:
    model = sim.cosmology_models()[0]
    lmax = 3 * nside - 1
    cache.clear("legendre_nodes")
    clg, t_clg = timed(sim.lognormal_gaussian_cl, model.cl, model.shift, lmax)
    var_g = float(np.sum((2 * np.arange(lmax + 1) + 1) * clg) / (4 * np.pi))
    rows = {k: [] for k in ("alm", "alm2map", "lognormal", "write", "total", "synfast")}
    for i in range(repeats):
        rng = sim.map_rng(0, 0, i)
        t_start = time.perf_counter()
        alm, t = timed(sim.gaussian_alm, clg, rng)
        rows["alm"].append(t)
        g, t = timed(hp.alm2map, alm, nside, lmax=lmax, mmax=lmax, pixwin=False)
        rows["alm2map"].append(t)
        t0 = time.perf_counter()
        g -= 0.5 * var_g
        np.expm1(g, out=g)
        g *= model.shift
        rows["lognormal"].append(time.perf_counter() - t0)
        path = workdir / f"bench_{nside}_{i}.fits"
        _, t = timed(hp.write_map, str(path), g, dtype=np.float32, overwrite=True)
        rows["write"].append(t)
        rows["total"].append(time.perf_counter() - t_start)
        path.unlink()
        del alm, g
        np.random.seed(i)  # synfast's only seeding: numpy's global state
        _, t = timed(hp.synfast, model.cl[: lmax + 1], nside, lmax=lmax, pixwin=False)
        rows["synfast"].append(t)
    med = {k: statistics.median(v) for k, v in rows.items()}
    med["clg"] = t_clg
    return med


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nside", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, "
        f"healpy {hp.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print(f"# medians over {args.repeats} maps, seconds; lmax = 3 nside - 1; model 1")
    cols = (
        "nside",
        "C_l^g once",
        "draw alm",
        "alm2map",
        "lognormal",
        "write FITS",
        "per map",
        "synfast",
        "per map / synfast",
    )
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    with tempfile.TemporaryDirectory() as d:
        for nside in args.nside:
            r = bench(nside, args.repeats, Path(d))
            print(
                f"| {nside} | {r['clg']:.3f} | {r['alm']:.3f} | {r['alm2map']:.3f} | "
                f"{r['lognormal']:.3f} | {r['write']:.3f} | {r['total']:.3f} | "
                f"{r['synfast']:.3f} | {r['total'] / r['synfast']:.3f} |",
                flush=True,
            )
        # what a user runs: two maps (one per class), including both one-off transforms
        nside = max(args.nside)
        cache.clear("gaussian_cl")
        cache.clear("legendre_nodes")
        _, t = timed(sim.simulate_convergence_maps, d, 1, nside, progress=False)
        print(
            f"\nend to end: simulate_convergence_maps(out, n_per_class=1, nside={nside}) "
            f"wrote 2 maps in {t:.1f} s"
        )


if __name__ == "__main__":
    main()
