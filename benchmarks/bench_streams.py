# ruff: noqa: E402 (OMP_NUM_THREADS is set before healpy is imported)
"""Can the simulation streams keep up with training? Their throughput against a DeepSphere step.

    python benchmarks/bench_streams.py                  # nside 64, order 1
    python benchmarks/bench_streams.py --workers 0 1 2 --repeats 5

Measured in one run, medians over ``--repeats``:

1. Where a map's time goes (one process): the unit-variance harmonic draw, colouring it with a
   cosmology's spectrum, ``healpy.alm2map``, the lognormal transform, float32 rounding and mean
   removal, cutting the patches, the noise; for the prior stream also the spectrum of each new
   cosmology (``convergence_cl`` and its lognormal transform), which the Fisher stream computes
   once.
2. Throughput of ``FisherStream`` and ``PriorStream`` (lognormal, noise 1) through a torch
   ``DataLoader`` with 0, 1 and 2 workers: maps (full skies) per second and patches per second
   (a Fisher item holds 5 patches), timed after the first batch (workers started and warm).
3. One DeepSphere training step (channels 16, 32, 64, 64, K = 5, Adam) on a Fisher batch of
   ``--batch`` items x 5 variants of order-1 patches, forward and backward, with 1 and 2 torch
   threads; and the same step fed by the stream (1 worker simulating beside 1 training thread).

healpy's OpenMP threads are set to 1 (``OMP_NUM_THREADS``, unless set) so that workers do not
oversubscribe the cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before healpy loads its OpenMP runtime

import argparse
import itertools
import platform
import statistics
import time

import healpy as hp
import numpy as np
import torch
from torch.utils.data import DataLoader

from pyg_sphere.datasets import FisherStream, PriorStream
from pyg_sphere.datasets.convergence_spectra import convergence_cl, lognormal_shift
from pyg_sphere.datasets.lognormal_maps import (
    _alm_layout,
    _colour_alm,
    _cosmology_gaussian_cl,
    _lognormal_transform,
    lognormal_gaussian_cl,
    map_rng,
)
from pyg_sphere.nn import DeepSphere


def stages(nside: int, order: int, repeats: int) -> dict:
    """Median seconds per map of each stage of the streams' pipeline."""
    lmax = 3 * nside - 1
    clg = _cosmology_gaussian_cl(0.31, 0.82, lmax, False)
    shift = lognormal_shift(0.31)
    ell, m0 = _alm_layout(lmax)
    size = hp.Alm.getsize(lmax)
    ring = hp.nest2ring(nside, np.arange(12 * nside**2).reshape(12 * order**2, -1))
    times = {k: [] for k in ("draw", "colour", "alm2map", "lognormal", "float32+mean", "patches")}
    times.update({"noise": [], "spectrum (prior only)": []})
    for i in range(repeats * 10):
        rng = map_rng(0, 9, i)
        t = [time.perf_counter()]
        white = rng.standard_normal(2 * size).view(np.complex128)
        t.append(time.perf_counter())
        alm = _colour_alm(white, clg, ell, m0)
        t.append(time.perf_counter())
        g = hp.alm2map(alm, nside, lmax=lmax, mmax=lmax, pixwin=False)
        t.append(time.perf_counter())
        _lognormal_transform(g, clg, shift)
        t.append(time.perf_counter())
        m = g.astype(np.float32).astype(np.float64)
        m -= m.mean()
        t.append(time.perf_counter())
        m[ring].astype(np.float32)
        t.append(time.perf_counter())
        rng.standard_normal(12 * nside**2, dtype=np.float32)
        t.append(time.perf_counter())
        om = 0.2 + 0.2 * rng.random()  # a new cosmology, as every prior map has
        lognormal_gaussian_cl(convergence_cl(om, 0.8, lmax), lognormal_shift(om), lmax)
        t.append(time.perf_counter())
        for key, a, b in zip(times, t[:-1], t[1:]):
            times[key].append(b - a)
    return {k: statistics.median(v) for k, v in times.items()}


def stream_rate(stream, workers: int, batch: int, realisations: int, repeats: int) -> float:
    """Median realisations per second of the stream through a DataLoader, after its first
    batch."""
    per_batch = batch / len(stream.patches)
    rates = []
    for r in range(repeats):
        stream.set_epoch(r)
        loader = DataLoader(stream, batch_size=batch, num_workers=workers)
        it = iter(loader)
        next(it)  # workers started, tables built
        n = max(1, int(realisations / per_batch))
        start = time.perf_counter()
        for _ in itertools.islice(it, n):
            pass
        rates.append(n * per_batch / (time.perf_counter() - start))
        del it
    return statistics.median(rates)


def train_step_rate(nside, order, batch, threads, steps, stream=None) -> float:
    """Median steps per second of DeepSphere on Fisher batches [batch * 5, N, 1]: a fixed
    batch, or batches from ``stream`` through a DataLoader with 1 worker."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    pixels = np.arange((nside // order) ** 2)
    model = DeepSphere(1, 2, nside, pixels=pixels, channels=(16, 32, 64, 64), K=5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    if stream is None:
        fixed = next(iter(DataLoader(FisherStream(nside, order), batch_size=batch)))
        batches = itertools.repeat(fixed)
    else:
        batches = iter(DataLoader(stream, batch_size=batch, num_workers=1))
    times = []
    for i, b in enumerate(itertools.islice(batches, steps + 1)):
        start = time.perf_counter() if i else None
        x = b["x"].flatten(0, 1) / 0.01  # [batch * 5, N, 1], about unit scale
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if start is not None:  # the first step builds the operators
            times.append(time.perf_counter() - start)
    return 1 / statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nside", type=int, default=64)
    parser.add_argument("--order", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--realisations", type=int, default=48, help="per throughput pass")
    parser.add_argument("--batch", type=int, default=16, help="Fisher items per training step")
    parser.add_argument("--steps", type=int, default=5, help="training steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    nside, order = args.nside, args.order
    patches = 12 * order**2
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"healpy {hp.__version__}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; "
        f"nside {nside}, order {order} ({patches} patches of {(nside // order) ** 2} pixels); "
        f"load average {os.getloadavg()[0]:.1f}"
    )

    times = stages(nside, order, args.repeats)
    # A Fisher realisation draws its coefficients and its noise once for its five maps, and its
    # spectra once per stream; a prior map pays all three.
    shared = ("draw", "noise")
    fisher_map = sum(t / 5 if k in shared else t for k, t in times.items() if "prior" not in k)
    prior_map = sum(times.values())
    print("\n| stage (per map) | ms | share of a Fisher map | share of a prior map |")
    print("|---|---|---|---|")
    for key, t in times.items():
        per_fisher = 0 if "prior" in key else t / 5 if key in shared else t
        fisher = f"{100 * per_fisher / fisher_map:.0f}%" + (" (1/5)" if key in shared else "")
        print(f"| {key} | {1e3 * t:.2f} | {fisher} | {100 * t / prior_map:.0f}% |")
    print(f"| whole map | | {1e3 * fisher_map:.2f} ms | {1e3 * prior_map:.2f} ms |")

    torch.set_num_threads(1)
    rows = []
    for workers in args.workers:
        fisher = FisherStream(nside, order, noise=1.0, noise_scale=0.01)
        rate = stream_rate(fisher, workers, args.batch, args.realisations, args.repeats)
        rows.append(("FisherStream", workers, 5 * rate, 5 * rate * patches, rate * patches))
        prior = PriorStream(nside, order, noise=1.0, noise_scale=0.01)
        rate = stream_rate(prior, workers, args.batch, args.realisations, args.repeats)
        rows.append(("PriorStream", workers, rate, rate * patches, rate * patches))
    print("\n| stream | workers | maps/s | patches/s | items/s |")
    print("|---|---|---|---|---|")
    for name, workers, maps, patches_s, items in rows:
        print(f"| {name} | {workers} | {maps:.0f} | {patches_s:.0f} | {items:.0f} |")

    print(
        f"\n| DeepSphere training step ({args.batch} items x 5 variants) | steps/s | items/s "
        "| patches/s |"
    )
    print("|---|---|---|---|")
    for threads in (1, 2):
        rate = train_step_rate(nside, order, args.batch, threads, args.steps)
        print(
            f"| fixed batch, {threads} thread{'s' if threads > 1 else ''} | {rate:.2f} | "
            f"{rate * args.batch:.1f} | {rate * args.batch * 5:.0f} |"
        )
    stream = FisherStream(nside, order, noise=1.0, noise_scale=0.01)
    rate = train_step_rate(nside, order, args.batch, 1, args.steps, stream)
    print(
        f"| fed by FisherStream (1 worker), 1 thread | {rate:.2f} | {rate * args.batch:.1f} | "
        f"{rate * args.batch * 5:.0f} |"
    )
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
