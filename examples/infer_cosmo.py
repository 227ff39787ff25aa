"""
Parameter inference: what DeepSphere knows beyond the power spectrum
====================================================================

How much information on (Omega_m, sigma_8) do summaries of convergence patches carry? A
Fisher forecast from simulations answers for any summary: simulate maps at a fiducial
cosmology (for the covariance) and at +-steps of each parameter sharing their Gaussian
realisations (for the derivatives), summarise every patch, and compute
:func:`pyg_sphere.inference.fisher_matrix`.

The summaries compared, at relative noise levels 0, 1 and 2 (noise standard deviation in units
of the noiseless fiducial patches' standard deviation, the convention of the paper
reproduction): the binned power spectrum, the one-point histogram, peak counts, power
spectrum + peaks, and DeepSphere: a :class:`~pyg_sphere.nn.models.DeepSphere` regressor of
(Omega_m, sigma_8) trained on a Latin hypercube of lognormal maps over the prior box, whose two
outputs are the summary (Fluri et al. 2019, 2022). Uncertainties come from a bootstrap over
realisations. A sanity row repeats the forecast on Gaussian maps, where the power spectrum is
a sufficient statistic: a network must not appear to know more.

Steps and their results are kept in ``--out`` (simulations in ``--data-dir``), so an
interrupted run continues where it stopped. At the end it prints the table and writes the
page ``--docs`` (markdown) and its figure of Fisher ellipses::

    python examples/infer_cosmo.py                  # the documented run, docs/inference.md
    python examples/infer_cosmo.py --nside 16 --n-prior 24 --n-fisher 12 --epochs 1 \\
        --noise 0 2 --out /tmp/infer --data-dir /tmp/infer/data --docs /tmp/infer/page.md

This script takes too long to run for this page: its documented run wrote :doc:`/inference`,
with this figure.

.. image:: /inference_ellipses.png
   :alt: Fisher ellipses of (Omega_m, sigma_8) for each summary at each noise level.
"""

# sphinx_gallery_thumbnail_path = "inference_ellipses.png"

from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import platform
import sys
import time

import healpy as hp
import numpy as np
import torch

from pyg_sphere.datasets import (
    PRIOR_BOX,
    ConvergenceMaps,
    simulate_fisher_maps,
    simulate_prior_maps,
)
from pyg_sphere.datasets.designs import FISHER_VARIANTS
from pyg_sphere.inference import (
    HistogramSummary,
    NetworkSummary,
    PeakCountSummary,
    PowerSpectrumSummary,
    figure_of_merit,
    fisher_ellipse,
    fisher_matrix,
    marginal_errors,
)
from pyg_sphere.nn import DeepSphere

SUMMARIES = ("power spectrum", "histogram", "peaks", "power spectrum + peaks", "DeepSphere")
PARAMETERS = ("omega_m", "sigma_8")
FIDUCIAL = (0.31, 0.82)
STEPS = (0.02, 0.02)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__ and __doc__.split("\n\n")[1])
    p.add_argument("--nside", type=int, default=64)
    p.add_argument("--order", type=int, default=1, help="patch order: 12 order^2 patches per map")
    p.add_argument("--n-prior", type=int, default=400, help="maps of the prior design")
    p.add_argument("--n-fisher", type=int, default=80, help="realisations of the Fisher design")
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    p.add_argument("--epochs", type=int, default=8, help="epochs per warm-started level")
    p.add_argument(
        "--epochs-first", type=int, default=16, help="epochs of the first (noiseless) network"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 64])
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamplings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default="data/infer")
    p.add_argument("--out", default="runs/infer")
    p.add_argument("--docs", default="docs/inference.md", help="page to write (and its .png)")
    return p.parse_args(argv)


# ----- data ------------------------------------------------------------------------------------
def simulate(args) -> dict:
    """The four collections (prior and Fisher designs, lognormal and Gaussian), made once."""
    roots = {}
    for gaussian in (False, True):
        kind = "gaussian" if gaussian else "lognormal"
        prior = osp.join(args.data_dir, f"prior_{kind}_nside{args.nside}")
        fisher = osp.join(args.data_dir, f"fisher_{kind}_nside{args.nside}")
        if not osp.isfile(osp.join(prior, "raw", "manifest.csv")):
            simulate_prior_maps(
                prior, args.n_prior, args.nside, seed=args.seed, gaussian=gaussian, progress=False
            )
        if not osp.isfile(osp.join(fisher, "raw", "manifest.csv")):
            simulate_fisher_maps(
                fisher,
                args.n_fisher,
                args.nside,
                fiducial=FIDUCIAL,
                steps=STEPS,
                seed=args.seed + 1,
                gaussian=gaussian,
                progress=False,
            )
        roots[kind] = (prior, fisher)
    return roots


def patches(root: str, args, split: str) -> dict:
    """All patches of a split as arrays: ``x`` [n, N] float32, ``theta`` [n, 2], ``label``
    (the Fisher variant), ``realisation`` (the Gaussian draw a map shares with others)."""
    ds = ConvergenceMaps(root, nside=args.nside, order=args.order, split=split)
    items = [ds[i] for i in range(len(ds))]
    labels = np.array([ds.classes[int(d.y)] if int(d.y) >= 0 else "" for d in items])
    map_id = np.array([int(d.map_id) for d in items])
    return {
        "x": np.stack([d.x[:, 0].numpy() for d in items]),
        "theta": np.array([[float(d.omega_m), float(d.sigma_8)] for d in items]),
        "label": labels,
        # Fisher manifests list the variants of a realisation together.
        "realisation": map_id // len(FISHER_VARIANTS),
        "patch": np.array([int(d.patch_id) for d in items]),
        "pixels": ds.patch_pixels(0).numpy(),
    }


def add_noise(x: np.ndarray, sigma: float, keys: np.ndarray, seed: int) -> np.ndarray:
    """x plus white noise; a sample's noise depends only on its key, so the maps of one Fisher
    realisation (same key) get the same noise and it cancels in the derivatives."""
    if sigma == 0:
        return x.astype(np.float64)
    out = np.empty(x.shape)
    for i, key in enumerate(keys):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(map(int, key))))
        out[i] = x[i] + sigma * rng.standard_normal(x.shape[1])
    return out


# ----- DeepSphere regressor --------------------------------------------------------------------
def box_scale():
    lo = np.array([PRIOR_BOX[p][0] for p in PARAMETERS])
    hi = np.array([PRIOR_BOX[p][1] for p in PARAMETERS])
    return (lo + hi) / 2, (hi - lo) / 2


def train_network(train, val, sigma, args, init_path, path, log, epochs):
    """A DeepSphere regressor of the standardised (Omega_m, sigma_8), trained with fresh noise
    of std ``sigma`` every epoch; keeps the epoch with the lowest validation loss."""
    torch.manual_seed(args.seed)
    center, half = box_scale()
    model = DeepSphere(1, 2, args.nside, pixels=train["pixels"], channels=tuple(args.channels), K=5)
    if init_path and osp.isfile(init_path):
        model.load_state_dict(torch.load(init_path, weights_only=True))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    scale = float(train["x"].std())
    x = torch.as_tensor(train["x"], dtype=torch.float32)
    y = torch.as_tensor((train["theta"] - center) / half, dtype=torch.float32)
    x_val = torch.as_tensor(
        add_noise(val["x"], sigma, np.c_[val["realisation"], val["patch"]], args.seed + 7) / scale,
        dtype=torch.float32,
    )
    y_val = torch.as_tensor((val["theta"] - center) / half, dtype=torch.float32)
    gen = torch.Generator().manual_seed(args.seed)
    best = float("inf")
    for epoch in range(epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), args.batch_size):
            idx = order[i : i + args.batch_size]
            batch = x[idx] + sigma * torch.randn(x[idx].shape, generator=gen)
            loss = torch.nn.functional.mse_loss(model((batch / scale)[..., None]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(x_val[i : i + 64, :, None]) for i in range(0, len(x_val), 64)])
        val_loss = float(torch.nn.functional.mse_loss(pred, y_val))
        if val_loss < best:
            best = val_loss
            torch.save(model.state_dict(), path)
        log(
            f"  epoch {epoch + 1}/{epochs}: train mse {total / len(x):.4f}, "
            f"val mse {val_loss:.4f} [{time.perf_counter() - start:.0f} s]"
        )
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval(), scale


# ----- Fisher forecasts ------------------------------------------------------------------------
def forecast(values: dict, realisation_of: dict, resamplings: list) -> dict:
    """Marginal errors and figure of merit of one summary from its ``values`` on each Fisher
    variant, with bootstrap uncertainties: the same resamplings of the realisations (each with
    all its patches) for every summary, so that ratios between summaries are paired."""
    rows = {
        name: {r: np.flatnonzero(of == r) for r in np.unique(of)}
        for name, of in realisation_of.items()
    }

    def matrix(realisations):
        def take(name):
            return values[name][np.concatenate([rows[name][r] for r in realisations])]

        plus = np.stack([take(f"{p}_plus") for p in PARAMETERS])
        minus = np.stack([take(f"{p}_minus") for p in PARAMETERS])
        return fisher_matrix(take("fiducial"), plus, minus, np.array(STEPS))

    f = matrix(sorted(rows["fiducial"]))
    boot = np.full((len(resamplings), 3), np.nan)
    for i, realisations in enumerate(resamplings):
        try:
            fb = matrix(realisations)
            boot[i] = [*marginal_errors(fb), figure_of_merit(fb)]
        except ValueError:  # a resampling with a singular covariance: left out
            pass
    return {
        "fisher": f.tolist(),
        "sigma": marginal_errors(f).tolist(),
        "fom": figure_of_merit(f),
        "sigma_sd": np.nanstd(boot[:, :2], axis=0).tolist(),
        "fom_sd": float(np.nanstd(boot[:, 2])),
        "fom_boot": boot[:, 2].tolist(),
    }


def classical_summaries(nside, pixels):
    fwhm = 2 * hp.nside2resol(nside)  # smoothing of the peaks: two pixels
    # Every multipole of the simulated maps (band limit 3 nside - 1), so that on Gaussian maps
    # the binned spectrum keeps nearly all the information a network could find.
    lmax = 3 * nside - 1
    edges = np.unique(np.geomspace(2, lmax + 1, 11).round().astype(int))
    return {
        "power spectrum": PowerSpectrumSummary(nside, pixels, bins=edges, lmax=lmax),
        "histogram": HistogramSummary(bins=16),
        "peaks": PeakCountSummary(nside, pixels, bins=8, fwhm=fwhm, percentiles=(2, 98)),
    }


def run_level(kind, noise, data, args, log, rng, init_path, networks: dict) -> dict:
    prior_train, prior_val, fisher = data
    tag = f"{kind}_noise{noise:g}"
    # One noise scale for every cosmology: the std of the noiseless fiducial patches.
    fid = fisher["label"] == "fiducial"
    sigma = noise * float(fisher["x"][fid].std())
    fisher_keys = np.c_[fisher["realisation"], fisher["patch"]]
    noisy = add_noise(fisher["x"], sigma, fisher_keys, args.seed + 11)
    names = ("fiducial",) + tuple(f"{p}_{s}" for p in PARAMETERS for s in ("plus", "minus"))
    fisher_x = {n: noisy[fisher["label"] == n] for n in names}
    realisation_of = {n: fisher["realisation"][fisher["label"] == n] for n in names}
    realisations = np.unique(realisation_of["fiducial"])
    resamplings = [rng.choice(realisations, len(realisations)) for _ in range(args.bootstrap)]
    train_keys = np.c_[np.arange(len(prior_train["x"])), prior_train["patch"]]
    train_noisy = add_noise(prior_train["x"], sigma, train_keys, args.seed + 13)

    results = {}
    summaries = classical_summaries(args.nside, prior_train["pixels"])
    if kind == "gaussian":  # the sanity row compares the network with the power spectrum
        summaries = {"power spectrum": summaries["power spectrum"]}
    values = {}
    for name, summary in summaries.items():
        start = time.perf_counter()
        summary.fit(train_noisy)
        values[name] = {n: summary(x) for n, x in fisher_x.items()}
        log(f"  {name} [{time.perf_counter() - start:.0f} s]")
    if "peaks" in values:  # the combination, without computing its parts twice
        ps, peaks = values["power spectrum"], values["peaks"]
        values["power spectrum + peaks"] = {n: np.c_[ps[n], peaks[n]] for n in names}
    for name, v in values.items():
        results[name] = forecast(v, realisation_of, resamplings)
        log(f"  {name}: FoM {results[name]['fom']:.0f}")

    path = osp.join(args.out, f"deepsphere_{tag}.pt")
    reused = tag in networks and osp.isfile(path)
    if reused:  # trained by an earlier run with these settings
        log(f"  DeepSphere: the network trained earlier, {path}")
        model = DeepSphere(
            1, 2, args.nside, pixels=prior_train["pixels"], channels=tuple(args.channels), K=5
        )
        model.load_state_dict(torch.load(path, weights_only=True))
        model, scale = model.eval(), float(prior_train["x"].std())
    else:
        log(f"  DeepSphere on {len(prior_train['x'])} training patches, noise {noise:g}")
        start = time.perf_counter()
        epochs = args.epochs if init_path else args.epochs_first
        model, scale = train_network(
            prior_train, prior_val, sigma, args, init_path, path, log, epochs
        )
        networks[tag] = {"model": path, "train_seconds": time.perf_counter() - start}
    train_seconds = networks[tag]["train_seconds"]
    net = NetworkSummary(model, scale=scale, batch_size=64)
    values = {n: net(x) for n, x in fisher_x.items()}
    results["DeepSphere"] = forecast(values, realisation_of, resamplings)
    log(f"  DeepSphere: FoM {results['DeepSphere']['fom']:.0f}")
    return {
        "sigma_noise": sigma,
        "summaries": results,
        "model": path,
        "train_seconds": train_seconds,
        "network_reused": reused,
    }


# ----- report ----------------------------------------------------------------------------------
def ratio_with_error(a: dict, b: dict) -> tuple[float, float]:
    """FoM ratio a/b and its standard deviation over the (shared) bootstrap resamplings."""
    ratios = np.array(a["fom_boot"], dtype=float) / np.array(b["fom_boot"], dtype=float)
    return a["fom"] / b["fom"], float(np.nanstd(ratios))


def table(results: dict) -> str:
    lines = [
        "| data | noise | summary | σ(Ωm) | σ(σ8) | figure of merit | FoM / power spectrum |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, level in results["levels"].items():
        kind, noise = key.split("|")
        ps = level["summaries"]["power spectrum"]
        for name in SUMMARIES:
            if name not in level["summaries"]:
                continue
            r = level["summaries"][name]
            ratio, err = ratio_with_error(r, ps)
            lines.append(
                f"| {kind} | {noise} | {name} | {r['sigma'][0]:.4f} ± {r['sigma_sd'][0]:.4f} | "
                f"{r['sigma'][1]:.4f} ± {r['sigma_sd'][1]:.4f} | {r['fom']:.0f} ± "
                f"{r['fom_sd']:.0f} | {ratio:.2f} ± {err:.2f} |"
            )
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [k for k in results["levels"] if k.startswith("lognormal")]
    fig, axes = plt.subplots(1, len(levels), figsize=(4 * len(levels), 3.8), squeeze=False)
    colors = dict(zip(SUMMARIES, ["C0", "C7", "C2", "C1", "C3"]))
    for ax, key in zip(axes[0], levels):
        for name in SUMMARIES:
            r = results["levels"][key]["summaries"].get(name)
            if r is None:
                continue
            pts = fisher_ellipse(np.array(r["fisher"]), FIDUCIAL)
            ax.plot(pts[:, 0], pts[:, 1], color=colors[name], label=name)
        ax.plot(*FIDUCIAL, "k+")
        ax.set_title(f"lognormal maps, noise {key.split('|')[1]}", fontsize=10)
        ax.set_xlabel(r"$\Omega_m$")
        ax.set_ylabel(r"$\sigma_8$")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("68% Fisher ellipses per patch", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_page(results: dict, args, argv, path: str) -> None:
    figure = osp.splitext(path)[0] + "_ellipses.png"
    plot(results, figure)
    r = results
    goal = goal_lines(results)
    pixel_arcmin = np.degrees(hp.nside2resol(args.nside)) * 60
    text = f"""# Parameter inference: Fisher information of DeepSphere and classical summaries

How much do summaries of one convergence patch constrain (Ωm, σ8)? Fisher forecasts from
simulations, `pyg_sphere.inference.fisher_matrix` (Hartlap-corrected), for the binned power
spectrum, the histogram, peak counts, power spectrum + peaks (the two summaries side by side, as
`pyg_sphere.inference.CombinedSummary` makes them) and a DeepSphere regressor of
(Ωm, σ8) whose two outputs are the summary. Generated by

```
python examples/infer_cosmo.py {" ".join(argv)}
```

- Maps: shifted lognormal (and, for the sanity rows, Gaussian) fields with the spectra of
  `pyg_sphere.datasets.convergence_cl`, nside {args.nside}, patches of order {args.order}
  ({12 * args.order**2} per map, {(args.nside // args.order) ** 2} pixels).
- Fisher design: {args.n_fisher} realisations at the fiducial (Ωm, σ8) = {FIDUCIAL} and at
  ±{STEPS} per parameter, sharing their Gaussian draws and their noise
  ({r["n_fisher_patches"]} fiducial patches). Uncertainties: standard deviations over
  {args.bootstrap} bootstrap resamplings of the realisations.
- DeepSphere: channels {tuple(args.channels)}, K = 5, trained with mean squared error on a
  Latin hypercube of {args.n_prior} maps over Ωm ∈ {PRIOR_BOX["omega_m"]}, σ8 ∈
  {PRIOR_BOX["sigma_8"]} ({r["n_train_patches"]} training patches), {args.epochs_first}
  epochs without noise, then {args.epochs} epochs per noise level (fresh noise every epoch),
  each level starting from the previous one, and the Gaussian-map network from the noiseless
  lognormal one; the epoch with the lowest validation loss.
- Noise: white, standard deviation = noise × the standard deviation of the noiseless
  fiducial patches (the same for every cosmology).
- Power spectrum: {r["ps_bins"]} logarithmic bins of ℓ(ℓ+1)C_ℓ over 2 ≤ ℓ ≤ {3 * args.nside - 1}
  (every multipole of the maps); histogram: 16
  bins (15 components); peaks: 8 height bins of the local maxima after a
  {np.degrees(2 * hp.nside2resol(args.nside)):.1f}° FWHM smoothing.
- Machine: {r["machine"]}; wall time {r["seconds"] / 60:.0f} min.

## Marginal errors and figures of merit (one patch)

{table(results)}

![Fisher ellipses]({osp.basename(figure)})

## Reading the table

{reading_lines(results)}

The maps are at nside {args.nside} ({pixel_arcmin:.0f}′ pixels), where the lognormal transform
of the band-limited field is mild, and the network had the training budget of a 2-core CPU
({args.epochs_first} + {args.epochs} epochs on {r["n_train_patches"]} patches). Its figures
of merit are what this budget buys, not a bound on what a DeepSphere summary can carry: a
network that reached the information of the histogram and the spectrum together would beat
both.

## Goal and sanity check

{goal}

## What a GPU run would change

The cost is DeepSphere's training ({r["train_seconds"] / 60:.0f} of the
{r["seconds"] / 60:.0f} minutes here). On a GPU the same script trains at nside 256-1024 and on
thousands of prior maps in minutes, where the network's advantage is expected to grow (more
non-Gaussian small-scale structure per patch, and a regressor closer to the posterior mean);
the classical summaries' cost is the spherical-harmonic transforms of `healpy`, on the CPU.
"""
    with open(path + ".part", "w") as f:
        f.write(text)
    os.replace(path + ".part", path)


def reading_lines(results: dict) -> str:
    """Per noise level: the best classical summary and what peaks add to the spectrum."""
    out = []
    for key, level in results["levels"].items():
        kind, noise = key.split("|")
        s = level["summaries"]
        if kind != "lognormal":
            continue
        classical = [n for n in SUMMARIES if n != "DeepSphere" and n in s]
        best = max(classical, key=lambda n: s[n]["fom"])
        ps = s["power spectrum"]["fom"]
        out.append(
            f"- Noise {noise}: the best classical summary is the {best} "
            f"({s[best]['fom'] / ps:.2f}x the power spectrum's figure of merit); peaks add "
            f"{100 * (s['power spectrum + peaks']['fom'] / ps - 1):.0f}% to the power "
            f"spectrum; DeepSphere reaches {s['DeepSphere']['fom'] / ps:.2f}x."
        )
    return "\n".join(out)


def goal_lines(results: dict) -> str:
    out = []
    levels = results["levels"]
    for key, level in levels.items():
        kind, noise = key.split("|")
        s = level["summaries"]
        ds, ps = s["DeepSphere"], s["power spectrum"]
        ratio, err = ratio_with_error(ds, ps)
        if kind == "gaussian":
            # Bound: F_network <= F_spectrum, so its marginal errors cannot be smaller either.
            sigma_ok = all(
                d >= p - 2 * np.hypot(dd, pd)
                for d, p, dd, pd in zip(ds["sigma"], ps["sigma"], ds["sigma_sd"], ps["sigma_sd"])
            )
            verdict = "passes" if ratio <= 1 + 2 * err and sigma_ok else "FAILS"
            out.append(
                f"- Sanity, Gaussian maps, noise {noise}: DeepSphere / power spectrum = "
                f"{ratio:.2f} ± {err:.2f}, marginal errors "
                f"{', '.join(f'{d:.4f}' for d in ds['sigma'])} against "
                f"{', '.join(f'{p:.4f}' for p in ps['sigma'])}; a network cannot beat a "
                f"sufficient statistic: {verdict} (neither a figure of merit above the power "
                "spectrum's nor a smaller marginal error, beyond 2 standard deviations)."
            )
            continue
        combo = s["power spectrum + peaks"]
        rc, ec = ratio_with_error(ds, combo)
        target = " (goal ≥ 1.3)" if float(noise) == 0 else ""
        out.append(
            f"- Lognormal, noise {noise}: DeepSphere / power spectrum = {ratio:.2f} ± {err:.2f}"
            f"{target}; DeepSphere / (power spectrum + peaks) = {rc:.2f} ± {ec:.2f} (goal ≥ 1)."
        )
    return "\n".join(out)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()

    def log(msg):
        print(msg, flush=True)

    state_path = osp.join(args.out, "results.json")
    # What the results depend on (not where they go, threads or the bootstrap's size).
    settings = {
        k: v
        for k, v in vars(args).items()
        if k not in ("out", "docs", "threads", "data_dir", "noise")
    }
    results = {"levels": {}, "settings": settings}
    if osp.isfile(state_path):
        with open(state_path) as f:
            results = json.load(f)
        if results.get("settings") != settings:
            raise SystemExit(
                f"{state_path} holds results made with other options "
                f"({results.get('settings')}); use another --out, or delete it to start over"
            )
        log(f"resuming: {len(results['levels'])} levels done in {state_path}")
    roots = simulate(args)
    setup_seconds = time.perf_counter() - start
    for kind in ("lognormal", "gaussian"):
        prior, fisher_root = roots[kind]
        t = time.perf_counter()
        data = (
            patches(prior, args, "train"),
            patches(prior, args, "val"),
            patches(fisher_root, args, "test"),
        )
        setup_seconds += time.perf_counter() - t
        noises = args.noise if kind == "lognormal" else args.noise[:1]
        # The Gaussian network starts from the noiseless lognormal one.
        first = f"lognormal|{args.noise[0]:g}"
        init = results["levels"][first]["model"] if kind == "gaussian" else None
        for noise in noises:
            key = f"{kind}|{noise:g}"
            if key in results["levels"]:
                init = results["levels"][key]["model"]
                continue
            log(f"{kind} maps, noise {noise:g}")
            t = time.perf_counter()
            rng = np.random.default_rng(args.seed)
            networks = results.setdefault("networks", {})
            level = run_level(kind, noise, data, args, log, rng, init, networks)
            # the time the level takes from scratch, training included
            level["seconds"] = time.perf_counter() - t
            if level.pop("network_reused"):
                level["seconds"] += level["train_seconds"]
            results["levels"][key] = level
            init = level["model"]
            results.update(
                n_fisher_patches=int((data[2]["label"] == "fiducial").sum()),
                n_train_patches=len(data[0]["x"]),
            )
            with open(state_path + ".part", "w") as f:
                json.dump(results, f)
            os.replace(state_path + ".part", state_path)
    levels = results["levels"].values()
    results["train_seconds"] = sum(v["train_seconds"] for v in levels)
    # every level (of this run or an earlier one) plus this run's simulation and reading
    results["seconds"] = sum(v["seconds"] for v in levels) + setup_seconds
    results["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} threads"
    )
    edges = classical_summaries(args.nside, None)["power spectrum"].bins
    results["ps_bins"] = len(edges) - 1
    print()
    print(table(results))
    print()
    print(goal_lines(results))
    if args.docs:
        write_page(results, args, argv, args.docs)
        print(f"\nwrote {args.docs}")
    return results


if __name__ == "__main__":
    main()
