"""What ``make demo`` runs: DeepSphere against two classical baselines, a few minutes on CPU.

The question the demo asks: is a patch of sky Gaussian? Its two classes have the same power
spectrum on every scale. Class 0 is the lognormal convergence field of model 1 (Omega_m = 0.31,
sigma_8 = 0.82), skewed like the late-time matter distribution; class 1 is its Gaussian twin, a
Gaussian field with exactly that spectrum (:func:`~pyg_sphere.datasets.simulate_convergence_maps`
with ``gaussian_twin=True``). The maps are smoothed (60' FWHM) and white noise of twice their
standard deviation is added, as shape noise adds to a lensing map. So:

- the power spectrum cannot tell the classes apart, by construction;
- the histogram of a patch's pixels could without noise (a noiseless lognormal patch is skewed,
  a Gaussian one is not), but noise dominates every pixel and hides most of the skewness from
  one-point statistics;
- DeepSphere can filter the noise spatially first (the signal is correlated over a few
  pixels, the noise is not) and take its non-linear statistics of what remains. That is what
  a graph convolution on the sphere is for: non-Gaussian information, under noise, that the
  classical statistics miss.

``python -m pyg_sphere.apps.demo [extra train_cosmo options]`` simulates (once) the maps in
``data/demo_twin_nside128``, trains :class:`~pyg_sphere.nn.models.DeepSphere` with
:mod:`pyg_sphere.apps.train_cosmo` on noisy order-2 patches, fits the two baselines of
:mod:`pyg_sphere.baselines` (a linear SVM on the histogram of each patch, one on its power
spectrum) on the same patches in a second process meanwhile, and ends with a table of the
three test accuracies on the same test patches with the same seeded noise, each with its
binomial standard error. Options given on the command line override the demo's (``--noise``,
``--epochs``, ``--out``, ...). The two cosmologies of the paper are the harder task (their
simulated spectra still differ on the largest scales of a patch, and the non-Gaussian
difference is small): :mod:`~pyg_sphere.apps.train_cosmo`, ``examples/reproduce_paper.py``
and ``docs/results.md``.

Writes into ``--out`` (``runs/demo``) what :mod:`~pyg_sphere.apps.train_cosmo` writes
(checkpoints, ``metrics.json``, ``history.csv``, figures) plus ``comparison.json`` (the table)
and ``comparison.png`` (the accuracies with their standard errors). Deterministic for a given
``--seed``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os.path as osp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Optional, Sequence

import numpy as np
import torch

from pyg_sphere._io import atomic_write_text
from pyg_sphere.apps import figures, train_cosmo
from pyg_sphere.transforms import AddGaussianNoise

#: The demo's options for :func:`pyg_sphere.apps.train_cosmo.train`. One torch thread: on a
#: busy 2-core machine, two threads made the sparse products slower (spinning threads; see
#: docs/benchmarks.md, section *Demo: torch threads*); the second core fits the baselines
#: meanwhile.
DEMO_ARGS = tuple(
    (
        "--nside 128 --order 2 --gaussian-twin --smoothing 60 --noise 2 --n-per-class 60 "
        "--epochs 7 --batch-size 16 --lr 3e-3 --threads 1 --data-dir data/demo_twin_nside128 "
        "--out runs/demo"
    ).split()
)

#: The methods of the table, in its order.
METHODS = ("DeepSphere", "histogram + SVM", "power spectrum + SVM")

#: At most this many training and validation patches for the power-spectrum baseline (a seeded
#: subset), which costs one healpy ``anafast`` per patch: above the demo's 3456 and 1152, so
#: that it learns from every patch (fewer leave it weaker: docs/benchmarks.md, section *Demo:
#: power-spectrum baseline subset*), and bounds its time on larger collections. It is scored
#: on every test patch, as the other methods are.
PSD_MAX = (4000, 2000)

#: Bins of the histogram baseline (Perraudin et al. 2019).
HISTOGRAM_BINS = 100


# ----- baselines ------------------------------------------------------------------------------
def noisy_patches(dataset, transform) -> tuple[np.ndarray, np.ndarray]:
    """The patches of a split as the models see them, noise included.

    Returns:
        ``([num_patches, patch_pixels, channels] float32 values, [num_patches] labels)``.
    """
    dataset.transform = transform
    try:
        x = np.stack([dataset[i].x.numpy() for i in range(len(dataset))])
    finally:
        dataset.transform = None
    return x, dataset.labels.numpy()


def _subset(x: np.ndarray, y: np.ndarray, n: int, seed: int):
    """At most :obj:`n` samples, a seeded random subset in the original order."""
    if len(x) <= n:
        return x, y
    keep = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
    return x[keep], y[keep]


def run_baselines(args, psd_max: tuple[int, int] = PSD_MAX) -> dict:
    """Fits the histogram and power-spectrum baselines on the demo's noisy patches and scores
    them on its test split.

    The patches are those of :func:`pyg_sphere.apps.train_cosmo.prepare_data` for the options
    :obj:`args`: validation and test carry the noise DeepSphere is evaluated on (seeds
    ``seed + 1`` and ``seed + 2``), training one seeded draw (``seed + 3``) since an SVM is
    fitted once. ``C`` is chosen on validation.

    Returns:
        ``{method: {"acc", "count", "seconds"}}`` for the two baselines (``seconds``: its
        fit and test), and ``"seconds"``: the wall time of the whole call.
    """
    from pyg_sphere.baselines import HistogramClassifier, PSDClassifier

    start = time.perf_counter()
    torch.set_num_threads(1)
    splits = train_cosmo.prepare_data(args)
    std = train_cosmo.noise_unit(splits["train"])
    seeds = {"train": args.seed + 3, "val": args.seed + 1, "test": args.seed + 2}
    data = {
        s: noisy_patches(splits[s], AddGaussianNoise(args.noise, std, seed=seeds[s])) for s in seeds
    }
    results = {}
    t = time.perf_counter()
    hist = HistogramClassifier(bins=HISTOGRAM_BINS).fit(*data["train"], *data["val"])
    results["histogram + SVM"] = _score(hist, data["test"], t)
    t = time.perf_counter()
    fit = [_subset(*data[s], n, args.seed) for s, n in zip(("train", "val"), psd_max)]
    psd = PSDClassifier(args.nside, splits["train"].patch_pixels(0), lmax=2 * args.nside - 1)
    psd.fit(*fit[0], *fit[1])
    results["power spectrum + SVM"] = _score(psd, data["test"], t)
    results["power spectrum + SVM"]["fit_patches"] = [len(v[1]) for v in fit]
    results["seconds"] = time.perf_counter() - start
    return results


def _score(classifier, test: tuple[np.ndarray, np.ndarray], start: float) -> dict:
    return {
        "acc": classifier.score(*test),
        "count": len(test[1]),
        "seconds": time.perf_counter() - start,
    }


# ----- the table ------------------------------------------------------------------------------
def standard_error(acc: float, count: int) -> float:
    """Binomial standard error of an accuracy measured on :obj:`count` samples,
    ``sqrt(p (1 - p) / n)``.

    Example::

        >>> round(standard_error(0.5, 100), 3)
        0.05
    """
    return math.sqrt(acc * (1 - acc) / count) if count else float("nan")


def comparison_rows(metrics: dict, baselines: dict) -> list[dict]:
    """One row per method (:data:`METHODS`): ``method``, ``acc``, ``stderr`` and ``count``
    (test patches)."""
    accs = {"DeepSphere": (metrics["test_acc"], metrics["test_count"])}
    accs.update({m: (baselines[m]["acc"], baselines[m]["count"]) for m in METHODS[1:]})
    return [
        {"method": m, "acc": a, "stderr": standard_error(a, n), "count": n}
        for m, (a, n) in ((m, accs[m]) for m in METHODS)
    ]


def format_table(rows: list[dict]) -> str:
    """The rows as a plain-text table: accuracy and standard error in percent, test patches."""
    width = max(len(r["method"]) for r in rows)
    lines = [f"{'method':<{width}}  test accuracy  std. error  test patches"]
    for r in rows:
        lines.append(
            f"{r['method']:<{width}}  {100 * r['acc']:12.1f}%  {100 * r['stderr']:9.1f}%  "
            f"{r['count']:12d}"
        )
    return "\n".join(lines)


def plot_comparison(rows: list[dict], path: str, title: str) -> None:
    """The test accuracies of the methods as bars with their standard errors, chance marked."""
    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.2))
    names = [r["method"] for r in rows]
    ax.barh(
        names[::-1],
        [100 * r["acc"] for r in rows][::-1],
        xerr=[100 * r["stderr"] for r in rows][::-1],
        color=["#9aa5b1", "#9aa5b1", "#2f6db5"],
        capsize=4,
    )
    ax.axvline(50, color="k", lw=0.8, ls="--")
    ax.text(50.5, -0.45, "chance", fontsize=8)
    top = max(100 * (r["acc"] + r["stderr"]) for r in rows)
    ax.set_xlim(40, min(100, 10 * math.ceil(top / 10 + 0.5)))
    ax.set_xlabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    figures.save(fig, path)


# ----- the demo -------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None):
    """The demo's options (:data:`DEMO_ARGS`) overridden by :obj:`argv` (default
    ``sys.argv[1:]``), parsed and checked by :mod:`~pyg_sphere.apps.train_cosmo`."""
    extra = list(sys.argv[1:] if argv is None else argv)
    args = train_cosmo.build_parser().parse_args(list(DEMO_ARGS) + extra)
    train_cosmo.check_args(args)
    return args


def main(argv: Optional[Sequence[str]] = None, *, parallel: bool = True) -> dict:
    """Runs the demo and prints its table; returns the metrics of
    :func:`pyg_sphere.apps.train_cosmo.train` with ``comparison`` (the rows of
    :func:`comparison_rows`), ``baselines`` (what :func:`run_baselines` returned), ``figures``
    (paths written) and ``seconds`` (wall time of the simulation, DeepSphere, the baselines and
    the whole demo) added.

    Args:
        argv: extra ``train_cosmo`` options, which override the demo's (default
            ``sys.argv[1:]``).
        parallel: fit the baselines in a second process while DeepSphere trains (the same
            results as one after the other, in less time on two cores).
    """
    args = parse_args(argv)
    start = time.perf_counter()
    train_cosmo.prepare_data(args)  # simulates the maps once, before both processes read them
    simulated = time.perf_counter()
    if parallel:
        # The baselines fit in a process of their own while DeepSphere trains in this one.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            future = pool.submit(run_baselines, args)
            metrics = train_cosmo.train(args)
            trained = time.perf_counter()
            baselines = future.result()
    else:
        metrics = train_cosmo.train(args)
        trained = time.perf_counter()
        baselines = run_baselines(args)
    end = time.perf_counter()

    rows = comparison_rows(metrics, baselines)
    data = metrics["data"]
    smoothed = f"smoothed to {args.smoothing:g}' FWHM, " if args.smoothing else ""
    setting = (
        f"nside {data['nside']}, order-{data['order']} patches ({data['patch_pixels']} pixels), "
        f"{smoothed}noise {args.noise:g} x the maps' std"
    )
    figures = []
    if not args.no_figures:
        figures = [
            osp.join(args.out, f"{name}.png")
            for name in ("example_maps", "learning_curves", "confusion_matrix")
        ]
        figures = [p for p in figures if osp.isfile(p)]
        path = osp.join(args.out, "comparison.png")
        plot_comparison(rows, path, setting)
        figures.append(path)
    seconds = {
        "simulation": simulated - start,
        "deepsphere": trained - simulated,
        "baselines": baselines["seconds"],
        "total": end - start,
    }
    summary = {
        "setting": setting,
        "comparison": rows,
        "baselines": baselines,
        "seconds": seconds,
        "args": metrics["args"],
    }
    _write_json(osp.join(args.out, "comparison.json"), summary)
    metrics.update(comparison=rows, baselines=baselines, figures=figures, seconds=seconds)
    _print_summary(args, metrics, setting, parallel)
    return metrics


def _write_json(path: str, obj) -> None:
    """Writes :obj:`obj` as JSON atomically, so a reader never sees half of it."""
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def _print_summary(args, metrics: dict, setting: str, parallel: bool) -> None:
    rows, seconds = metrics["comparison"], metrics["seconds"]
    samples = metrics["data"]["samples"]
    psd_fit = metrics["baselines"]["power spectrum + SVM"]["fit_patches"]
    print(
        f"\nLognormal maps against their Gaussian twins (the same power spectrum), {setting}; "
        f"{samples['train']} training patches ({psd_fit[0]} for the power spectrum), "
        f"{rows[0]['count']} test patches, the same patches and seeded noise for every "
        "method:\n"
    )
    print(format_table(rows))
    ours = rows[0]["acc"]
    print(
        "\nDeepSphere: "
        + ", ".join(
            f"{100 * (ours - r['acc']):+.1f} points over the {r['method']}" for r in rows[1:]
        )
        + ". The power spectrum cannot separate the classes: they share it by construction. "
        "Noise hides the skewness of the lognormal maps from the histogram of a patch's "
        "pixels; DeepSphere filters the noise spatially before its non-linear statistics and "
        "finds it."
    )
    print(
        f"Outputs in {args.out}: checkpoints, metrics.json, history.csv, comparison.json"
        + (f"; figures: {', '.join(metrics['figures'])}" if metrics["figures"] else "")
    )
    print(
        f"Took {seconds['total'] / 60:.1f} min: simulation and data {seconds['simulation']:.0f} s, "
        f"DeepSphere {seconds['deepsphere']:.0f} s, the baselines {seconds['baselines']:.0f} s"
        f"{' alongside' if parallel else ''}."
    )


if __name__ == "__main__":
    main()
