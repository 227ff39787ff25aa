# ruff: noqa: E402 (OMP_NUM_THREADS is set before healpy is imported)
"""What tomographic bins cost the simulation streams: one source plane against C bins.

    python benchmarks/bench_streams_bins.py                 # nside 64, order 1, 1 2 4 bins
    python benchmarks/bench_streams_bins.py --bins 2 4 --repeats 5

Measured in one process (no loader workers), medians over ``--repeats``:

1. The spectra of a new cosmology, which a :class:`~pyg_sphere.datasets.PriorStream` pays for
   every map and a :class:`~pyg_sphere.datasets.FisherStream` five times per stream: the pyccl
   auto- and cross-spectra (``tomographic_cl``), the lognormal shifts of the bins, and the
   Gaussian-field spectra and their Cholesky factors; for one source plane, the interpolated
   tables of ``convergence_cl``.
2. Throughput of the streams (lognormal, noiseless, then shape noise of sigma_e = 0.26 with 30
   galaxies per arcmin^2): maps (full skies, every bin) and patches per second, with the caches
   warm for the Fisher stream (its five cosmologies) and cold for the prior stream (a new
   cosmology per map, as in training).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before healpy loads its OpenMP runtime

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from pyg_sphere import cache
from pyg_sphere.datasets import FisherStream, PriorStream, smail_bins
from pyg_sphere.datasets._tomography_spectra import _lognormal_shifts, _tomographic_cl
from pyg_sphere.datasets.lognormal_maps import _cosmology_gaussian_cl
from pyg_sphere.datasets.tomography import _factor

#: What a new cosmology computes (the tables and the bins' reference depths stay warm, as in a
#: stream that has run for a while).
PER_COSMOLOGY = (
    "cosmology_gaussian_cl",
    "tomographic_cl",
    "tomographic_shifts",
    "tomographic_factor",
)


def new_cosmology() -> None:
    for name in PER_COSMOLOGY:
        cache.clear(name)


def spectrum_seconds(n_bins: int, lmax: int, repeats: int) -> dict:
    """Median seconds of each step of a new cosmology's spectra (caches cleared each time)."""
    rng = np.random.default_rng(0)
    bins = None if n_bins == 0 else smail_bins(n_bins)
    times = {"C_l (pyccl)": [], "shifts": [], "Gaussian field + Cholesky": [], "total": []}
    if bins is None:
        times = {"C_l^g (tables)": [], "total": []}
    for _ in range(repeats):
        om, s8 = float(rng.uniform(0.2, 0.4)), float(rng.uniform(0.7, 0.9))
        new_cosmology()
        if bins is None:
            t = time.perf_counter()
            _cosmology_gaussian_cl(om, s8, lmax, False)
            times["C_l^g (tables)"].append(time.perf_counter() - t)
            times["total"].append(times["C_l^g (tables)"][-1])
            continue
        t0 = time.perf_counter()
        _tomographic_cl(om, s8, lmax, bins)
        t1 = time.perf_counter()
        shifts = tuple(float(s) for s in _lognormal_shifts(om, bins))
        t2 = time.perf_counter()
        _factor(om, s8, lmax, bins, shifts, False)
        t3 = time.perf_counter()
        times["C_l (pyccl)"].append(t1 - t0)
        times["shifts"].append(t2 - t1)
        times["Gaussian field + Cholesky"].append(t3 - t2)
        times["total"].append(t3 - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def stream_rate(make, num_maps: int, repeats: int, warm: bool) -> float:
    """Median maps per second of a stream made by ``make(seed)``."""
    rates = []
    list(make(999))  # the Fisher stream's five cosmologies, the tables, the reference depths
    for r in range(repeats):
        if not warm:
            new_cosmology()
        stream = make(r)
        t = time.perf_counter()
        for _ in stream:
            pass
        rates.append(num_maps / (time.perf_counter() - t))
    return statistics.median(rates)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nside", type=int, default=64)
    p.add_argument("--order", type=int, default=1)
    p.add_argument("--bins", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--maps", type=int, default=8, help="realisations per pass")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    lmax = 3 * args.nside - 1
    patches = 12 * args.order**2
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, nside "
        f"{args.nside}, order {args.order}, medians of {args.repeats}"
    )
    print("\n| maps | new cosmology: step | seconds |\n|---|---|---|")
    for c in [0, *args.bins]:
        name = "one source plane" if c == 0 else f"{c} bins"
        spectrum_seconds(c, lmax, 1)  # tables and reference depths loaded
        for step, s in spectrum_seconds(c, lmax, args.repeats).items():
            print(f"| {name} | {step} | {s:.4f} |")

    print("\n| stream | maps | noise | maps/s | patches/s |\n|---|---|---|---|---|")
    for c in [0, *args.bins]:
        name = "one source plane" if c == 0 else f"{c} bins"
        for noisy in (False, True):
            options = dict(nside=args.nside, order=args.order, num_maps=args.maps)
            if c:
                options["bins"] = smail_bins(c)
                if noisy:
                    options.update(sigma_e=0.26, n_gal=30)
            elif noisy:
                options["noise"] = 1.0
            for kind, cls, warm in (("Fisher", FisherStream, True), ("prior", PriorStream, False)):
                if kind == "prior" and noisy:
                    continue
                per = 5 if kind == "Fisher" else 1  # maps per realisation

                def make(seed, cls=cls, options=options):
                    return cls(**options, seed=seed)

                rate = per * stream_rate(make, args.maps, args.repeats, warm)
                noise = "shape" if noisy and c else "white" if noisy else "none"
                print(f"| {kind} | {name} | {noise} | {rate:.1f} | {rate * patches:.0f} |")


if __name__ == "__main__":
    main()
