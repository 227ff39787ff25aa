"""
Parameter inference: what DeepSphere knows beyond the power spectrum
====================================================================

How much do summaries of one convergence patch tell about (Omega_m, sigma_8), and are the
posteriors they give calibrated? This script compares, on the same simulations:

- classical summaries: the binned power spectrum (PS), the histogram, peak counts and their
  combinations PS + histogram, PS + peaks, PS + histogram + peaks;
- DeepSphere, a :class:`~pyg_sphere.nn.models.DeepSphere` whose outputs are the summary,
  trained to maximise their Fisher information at the fiducial cosmology
  (:func:`~pyg_sphere.inference.fisher_information_loss`) on fresh simulations streamed by
  :class:`~pyg_sphere.datasets.FisherStream` (Fluri et al. 2022; Charnock et al. 2018);
- hybrid: DeepSphere's outputs with PS + histogram appended, the Fisher information of the
  whole vector maximised (Makinen et al. 2024).

For each, at noise levels 0, 1 and 2 (noise std in units of the noiseless fiducial patches'
std), and on Gaussian maps as a sanity check (where the power spectrum is sufficient):

- a Fisher forecast (:func:`~pyg_sphere.inference.fisher_matrix`) on held-out fiducial and
  +-step realisations, with bootstrap errors over realisations;
- a neural posterior (:class:`~pyg_sphere.inference.NeuralPosterior`, a zuko flow) trained
  on a Latin hypercube of prior maps, its coverage (TARP,
  :func:`~pyg_sphere.inference.expected_coverage`) on held-out prior maps, and its width on
  held-out fiducial patches against the Fisher forecast.

The networks train through Lightning (:class:`~pyg_sphere.apps.compressors.FisherCompressor`);
model selection uses a validation set of its own; the evaluation realisations never enter
training or selection. Results are kept in ``--out``, so an interrupted run continues where it
stopped. At the end it prints the table and writes the page ``--docs`` and its figures::

    python examples/infer_cosmo.py --threads 2     # the documented run, docs/inference.md
    python examples/infer_cosmo.py --nside 16 --n-fisher 8 --n-val 4 --n-prior 16 \\
        --n-observed 24 --train-maps 4 --epochs-first 1 --epochs 1 --hybrid-epochs 1 --noise 0 2 \\
        --channels 8 16 --out /tmp/infer --docs /tmp/infer/page.md
    python examples/infer_cosmo.py --accelerator gpu --nside 256 ...   # on a GPU
    python examples/infer_cosmo.py --threads 1 --workers 1 --bins 4 --noise 0 --n-prior 400 \\
        --n-observed 200 --train-maps 32 --epochs-first 40 --epochs 25 --hybrid-epochs 15 \\
        --hybrid-batch-size 192 --out runs/infer_bins4 --docs docs/inference_tomographic.md

**Tomographic maps.** With ``--bins C`` every map is ``C`` correlated convergence maps of
source bins (a Smail n(z) split in ``C`` equipopulated bins,
:func:`~pyg_sphere.datasets.smail_bins`; spectra from pyccl), fed to the network as ``C``
channels, each divided by its own noiseless fiducial std. The noise is then shape noise in
physical units: a level multiplies ``--sigma-e`` (0: noiseless; 1: sigma_e = 0.26 with
``--n-gal`` 30 galaxies per arcmin^2 shared by the bins). The classical summaries become all
auto- and cross-spectra of the bins
(:class:`~pyg_sphere.inference.TomographicPowerSpectrumSummary`, ``--ps-bins`` multipole bins
each) and one histogram and one peak count per bin; mode counting uses the analytic
cross-spectrum Fisher matrix (:func:`~pyg_sphere.inference.tomographic_fisher_forecast`).
The 4-bin run above wrote :doc:`/inference_tomographic`.

This script takes too long to run for this page: its documented run wrote :doc:`/inference`,
with this figure.

.. image:: /inference_posteriors.png
   :alt: Posterior contours of one held-out patch from four summaries, per noise level.
"""

# sphinx_gallery_thumbnail_path = "inference_posteriors.png"

from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import platform
import sys
import time

import numpy as np
import torch

from pyg_sphere.apps.compressors import FisherCompressor, StreamDataModule, WithFeatures
from pyg_sphere.apps.engine import best_checkpoint, make_trainer
from pyg_sphere.datasets import (
    PRIOR_BOX,
    FisherStream,
    PriorStream,
    convergence_cl,
    fiducial_patch_std,
    smail_bins,
)
from pyg_sphere.inference import (
    CombinedSummary,
    HistogramSummary,
    NeuralPosterior,
    PeakCountSummary,
    PowerSpectrumSummary,
    TomographicPowerSpectrumSummary,
    expected_coverage,
    figure_of_merit,
    fisher_ellipse,
    fisher_matrix,
    gaussian_cl_fisher,
    marginal_errors,
    summary_layout,
    tomographic_fisher_forecast,
)
from pyg_sphere.nn import DeepSphere

FIDUCIAL = (0.31, 0.82)
STEPS = (0.02, 0.02)
PARAMETERS = ("omega_m", "sigma_8")
CLASSICAL = ("power spectrum", "histogram", "peaks")
COMBINED = {
    "PS + histogram": ("power spectrum", "histogram"),
    "PS + peaks": ("power spectrum", "peaks"),
    "PS + histogram + peaks": ("power spectrum", "histogram", "peaks"),
}
NETWORKS = ("DeepSphere", "hybrid")
SUMMARIES = CLASSICAL + tuple(COMBINED) + NETWORKS
#: Summaries whose posteriors are estimated and tested.
POSTERIORS = ("power spectrum", "PS + histogram", "DeepSphere", "hybrid")
#: Seeds of the sets: distinct SeedSequence nodes, so no set shares a map with another.
SEEDS = {"fisher": 101, "val": 102, "train": 103, "prior": 104, "observed": 105}
LEVELS = (0.68, 0.95)
#: The settings that runs made before the tomographic options had, without saying so.
LEGACY_SETTINGS = {"bins": 0, "sigma_e": None, "n_gal": None, "ps_bins": 10, "hist_bins": 16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Fisher forecasts and posteriors of summaries.")
    p.add_argument("--nside", type=int, default=64)
    p.add_argument("--order", type=int, default=1, help="patch order: 12 order^2 patches per map")
    p.add_argument(
        "--noise",
        type=float,
        nargs="+",
        default=[0.0, 1.0, 2.0],
        help="noise levels: std in units of the noiseless fiducial patches' std; with --bins, "
        "multiples of --sigma-e",
    )
    p.add_argument(
        "--bins",
        type=int,
        default=0,
        help="tomographic source bins as channels (0: one source plane at z = 0.8)",
    )
    p.add_argument(
        "--sigma-e", type=float, default=None, help="ellipticity dispersion (--bins; 0.26)"
    )
    p.add_argument(
        "--n-gal", type=float, default=None, help="galaxies per arcmin^2, all bins (--bins; 30)"
    )
    p.add_argument(
        "--ps-bins", type=int, default=None, help="multipole bins of the PS (10; 5 with --bins)"
    )
    p.add_argument(
        "--hist-bins",
        type=int,
        default=None,
        help="histogram bins per map (16; 8 per bin with --bins)",
    )
    p.add_argument("--n-fisher", type=int, default=80, help="evaluation Fisher realisations")
    p.add_argument("--n-val", type=int, default=20, help="validation Fisher realisations")
    p.add_argument("--n-prior", type=int, default=800, help="prior maps for the posteriors")
    p.add_argument("--n-observed", type=int, default=300, help="held-out prior maps (coverage)")
    p.add_argument("--train-maps", type=int, default=16, help="fresh realisations per epoch")
    p.add_argument("--epochs-first", type=int, default=60, help="epochs of the first network")
    p.add_argument("--epochs", type=int, default=40, help="epochs of each warm-started network")
    p.add_argument("--batch-size", type=int, default=32, help="Fisher items per step")
    p.add_argument("--hybrid-epochs", type=int, default=15, help="epochs of each hybrid")
    p.add_argument(
        "--hybrid-batch-size",
        type=int,
        default=None,
        help="items per step of the hybrid, whose batch covariance has outputs + PS + histogram "
        "components (96; with --bins, 4 x the components or an epoch's items if fewer)",
    )
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument(
        "--hybrid-lr", type=float, default=3e-4, help="learning rate of the warm-started hybrid"
    )
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 32])
    p.add_argument("--outputs", type=int, default=2, help="DeepSphere summary components")
    p.add_argument("--pool", choices=("max", "mean"), default="mean")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamplings")
    p.add_argument("--samples", type=int, default=1000, help="posterior samples per map")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="simulating loader processes")
    p.add_argument("--accelerator", default="cpu", help="cpu, gpu, ... (Lightning)")
    p.add_argument("--out", default="runs/infer")
    p.add_argument(
        "--docs", default="docs/inference.md", help="page to write (and PAGE_posteriors.png)"
    )
    args = p.parse_args(argv)
    if args.bins < 0:
        p.error(f"--bins must be 0 (one source plane) or a number of bins, got {args.bins}")
    tomographic = args.bins > 0
    for flag, value, default in (("--sigma-e", "sigma_e", 0.26), ("--n-gal", "n_gal", 30.0)):
        if not tomographic and getattr(args, value) is not None:
            p.error(f"{flag} sets the shape noise of tomographic maps: give --bins C too")
        if tomographic and getattr(args, value) is None:
            setattr(args, value, default)
    if args.ps_bins is None:
        args.ps_bins = 5 if tomographic else 10
    if args.hist_bins is None:
        args.hist_bins = 8 if tomographic else 16
    if args.ps_bins < 1 or args.hist_bins < 2:
        p.error(
            f"--ps-bins must be >= 1 and --hist-bins >= 2 (a histogram of one bin says nothing), "
            f"got {args.ps_bins} and {args.hist_bins}"
        )
    # Fisher items per training epoch that the least-served loader worker holds: each drops
    # its incomplete last batch.
    items = args.train_maps // max(args.workers, 1) * 12 * args.order**2
    components = hybrid_components(args)
    defaulted = args.hybrid_batch_size is None
    if defaulted:
        args.hybrid_batch_size = min(4 * components, items) if tomographic else 96
    if args.hybrid_batch_size <= components:
        fix = (
            "raise --train-maps (an epoch's items must exceed them) or lower --ps-bins / "
            "--hist-bins"
            if defaulted
            else "give about 4x that"
        )
        p.error(
            f"the hybrid's batch of {args.hybrid_batch_size} items must exceed its {components} "
            f"components (its batch covariance would be singular): {fix}"
        )
    for flag, size in (
        ("--batch-size", args.batch_size),
        ("--hybrid-batch-size", args.hybrid_batch_size),
    ):
        if size > items:
            p.error(
                f"{flag} {size} is more than the {items} items of an epoch that a loader worker "
                f"serves (--train-maps {args.train_maps} / {max(args.workers, 1)} worker(s) x "
                f"{12 * args.order**2} patches): raise --train-maps or lower {flag}"
            )
    return args


def n_bins(args) -> int:
    """Channels of the maps: the tomographic bins, or 1."""
    return max(args.bins, 1)


def hybrid_components(args) -> int:
    """The hybrid's summary length: the network's outputs, the PS (every pair of bins) and one
    histogram per bin (``hist_bins - 1`` fractions: the last one is 1 minus the others)."""
    c = n_bins(args)
    ps = c * (c + 1) // 2 * (len(ps_edges(args)) - 1)
    return args.outputs + ps + c * (args.hist_bins - 1)


# ----- data ------------------------------------------------------------------------------------
def streams(kind: str, noise: float, args, scale: float) -> dict:
    """The sets of one setting, as streams: evaluation, validation and training Fisher
    realisations, prior maps for the posteriors and held-out prior maps (one patch each)."""
    common = map_options(kind, args)
    if args.bins:  # shape noise in physical units
        common.update(sigma_e=noise * args.sigma_e, n_gal=args.n_gal if noise else None)
    else:
        common.update(noise=noise, noise_scale=scale)
    fixed = dict(common, evaluation=True)
    return {
        "fisher": FisherStream(**fixed, num_maps=args.n_fisher, seed=SEEDS["fisher"]),
        "val": FisherStream(**fixed, num_maps=args.n_val, seed=SEEDS["val"]),
        "train": FisherStream(**common, num_maps=args.train_maps, seed=SEEDS["train"]),
        "prior": PriorStream(**fixed, num_maps=args.n_prior, seed=SEEDS["prior"]),
        "observed": PriorStream(
            **fixed, num_maps=args.n_observed, seed=SEEDS["observed"], patches=[0]
        ),
    }


def map_options(kind: str, args) -> dict:
    """What the maps of a setting are: resolution, patches, lognormal or Gaussian, the bins."""
    options = dict(nside=args.nside, order=args.order, gaussian=kind == "gaussian")
    if args.bins:
        options["bins"] = smail_bins(args.bins)
    return options


def input_scale(kind: str, args):
    """The networks' input unit: the std of noiseless fiducial patches, one per bin with
    ``--bins`` (a low-redshift bin has several times less signal than the last one)."""
    bins = smail_bins(args.bins) if args.bins else None
    scale = fiducial_patch_std(args.nside, gaussian=kind == "gaussian", bins=bins)
    return scale if bins is None else scale.tolist()


def collect(stream) -> dict:
    """All items of a fixed stream as arrays: ``x`` [n, (5,) N, C], ``theta``, ``draw``."""
    items = list(stream)
    return {k: torch.stack([it[k] for it in items]).numpy() for k in ("x", "theta", "draw")}


def classical_summaries(args, pixels, fit_x) -> dict:
    """PS over every multipole of the maps (all auto- and cross-spectra with --bins), a
    histogram and peak counts (one per bin), fitted on the prior maps (never on the
    evaluation set)."""
    import healpy as hp

    lmax = 3 * args.nside - 1
    edges = ps_edges(args)
    fwhm = 2 * hp.nside2resol(args.nside)
    if args.bins:
        c = args.bins
        ps = TomographicPowerSpectrumSummary(
            args.nside, c, bins=edges, lmax=lmax, pixels=pixels, iter=0
        )
    else:
        c, ps = None, PowerSpectrumSummary(args.nside, pixels, bins=edges, lmax=lmax)
    summaries = {
        "power spectrum": ps,
        "histogram": HistogramSummary(bins=args.hist_bins, n_bins=c),
        "peaks": PeakCountSummary(
            args.nside, pixels, bins=8, fwhm=fwhm, percentiles=(2, 98), n_bins=c
        ),
    }
    for summary in summaries.values():
        summary.fit(summary_layout(fit_x))
    return summaries


def ps_edges(args) -> np.ndarray:
    """``--ps-bins`` logarithmic multipole bins over 2 <= ell <= 3 nside - 1."""
    edges = np.geomspace(2, 3 * args.nside, args.ps_bins + 1)
    return np.unique(edges.round().astype(int))


def mode_counting(args, noise: float, scale: float) -> dict:
    """The analytic Fisher matrix of a Gaussian map's spectrum on a patch, by mode counting
    (f_sky = the patch's share of the sphere, white noise as N_ell): every multipole, and the
    PS's bins. An approximation for a patch; the simulated PS is a pseudo-spectrum, which
    mixes modes and keeps less. With ``--bins``, all auto- and cross-spectra and the
    shape noise of each bin."""
    import healpy as hp

    lmax = 3 * args.nside - 1
    f_sky = 1 / (12 * args.order**2)
    if args.bins:
        out = {}
        for name, edges in (("every multipole", None), ("PS bins", ps_edges(args))):
            f = tomographic_fisher_forecast(
                *FIDUCIAL,
                smail_bins(args.bins),
                lmax,
                sigma_e=noise * args.sigma_e,
                n_gal=args.n_gal if noise else None,
                f_sky=f_sky,
                bin_edges=edges,
                step=STEPS,
            )
            out[name] = {"fom": figure_of_merit(f), "sigma": marginal_errors(f).tolist()}
        return out
    cl = convergence_cl(*FIDUCIAL, lmax)
    dcl = []
    for a, step in enumerate(STEPS):
        up, down = list(FIDUCIAL), list(FIDUCIAL)
        up[a] += step
        down[a] -= step
        dcl.append((convergence_cl(*up, lmax) - convergence_cl(*down, lmax)) / (2 * step))
    noise_cl = (noise * scale) ** 2 * hp.nside2pixarea(args.nside)
    out = {}
    for name, edges in (("every multipole", None), ("PS bins", ps_edges(args))):
        f = gaussian_cl_fisher(np.array(dcl), cl, noise_cl, f_sky, bin_edges=edges)
        out[name] = {"fom": figure_of_merit(f), "sigma": marginal_errors(f).tolist()}
    return out


def apply(fn, x: np.ndarray) -> np.ndarray:
    """A summary of ``x`` [..., N, C] (Fisher sets [n, 5, N, C]) as [..., d]."""
    return np.asarray(fn(summary_layout(x))).reshape(*x.shape[:-2], -1)


def features_fn(summaries: dict) -> CombinedSummary:
    """PS + histogram of patches (in the summaries' layout), the hybrid's appended features: a
    picklable object, since the simulating loader workers are spawned processes."""
    return CombinedSummary(summaries["power spectrum"], summaries["histogram"])


# ----- networks --------------------------------------------------------------------------------
def train_network(name, sets, args, scale, init, log, features=None, arrays=None) -> str:
    """Trains a :class:`FisherCompressor` (``features``: the hybrid) on fresh Fisher
    realisations; returns its best checkpoint (by validation ln det F). A checkpoint of an
    earlier run with the same settings is reused."""
    out = osp.join(args.out, name)
    done = osp.join(out, "best.ckpt")
    if osp.isfile(osp.join(out, "done")):
        log(f"  {name}: trained earlier, {done}")
        return done
    torch.manual_seed(args.seed)
    pixels = sets["train"].patch_pixels(0)
    model = DeepSphere(
        n_bins(args),
        args.outputs,
        args.nside,
        pixels=pixels,
        channels=tuple(args.channels),
        pool=args.pool,
    )
    extra = {}
    train, val = sets["train"], sets["val"]
    if features is not None:
        fid = apply(features, arrays["val"]["x"][:, 0])
        chol = np.linalg.cholesky(np.cov(fid, rowvar=False))
        extra = dict(
            feature_mean=torch.as_tensor(fid.mean(0)),
            feature_whitening=torch.as_tensor(np.linalg.inv(chol)),
        )
        train, val = WithFeatures(train, features), WithFeatures(val, features)
    lr = args.lr if features is None else args.hybrid_lr
    module = FisherCompressor(model.config, STEPS, input_scale=scale, lr=lr, **extra)
    if init:
        state = torch.load(init, map_location="cpu", weights_only=False)["state_dict"]
        module.model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    epochs = (
        args.hybrid_epochs if features is not None else args.epochs if init else args.epochs_first
    )
    trainer = make_trainer(
        out, max_epochs=epochs, monitor=module.monitor, quiet=True, accelerator=args.accelerator
    )
    batch_size = args.batch_size if features is None else args.hybrid_batch_size
    data = StreamDataModule(train, val, batch_size=batch_size, num_workers=args.workers)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    history = module.history
    log(
        f"  {name}: {epochs} epochs of {args.train_maps} fresh realisations in "
        f"{time.perf_counter() - start:.0f} s; validation ln det F "
        + ", ".join(f"{h['val_log_det_fisher']:.2f}" for h in history)
    )
    with open(osp.join(out, "done"), "w") as f:
        json.dump({"seconds": time.perf_counter() - start, "history": history}, f)
    return best_checkpoint(trainer)


@torch.no_grad()
def network_values(path: str, x: np.ndarray, features=None) -> np.ndarray:
    """The summaries of patches ``x`` [..., N, C] by the compressor of a checkpoint."""
    module = FisherCompressor.load_from_checkpoint(path, map_location="cpu").eval()
    flat = x.reshape(-1, *x.shape[-2:])
    out = []
    for i in range(0, len(flat), 256):
        xb = torch.as_tensor(flat[i : i + 256], dtype=torch.float32)
        fb = (
            None
            if features is None
            else torch.as_tensor(features(summary_layout(flat[i : i + 256])))
        )
        out.append(module(xb, None if fb is None else fb.float()).double().numpy())
    return np.concatenate(out).reshape(*x.shape[:-2], -1)


# ----- Fisher forecasts and posteriors ---------------------------------------------------------
def forecast(values: np.ndarray, realisation: np.ndarray, resamplings: list) -> dict:
    """Marginal errors and figure of merit of a summary from its values on the Fisher set
    ``[n, 5, d]`` (fiducial, plus, minus), bootstrap errors over realisations (the same
    resamplings for every summary, so ratios are paired)."""
    rows = {r: np.flatnonzero(realisation == r) for r in np.unique(realisation)}

    def matrix(realisations):
        v = values[np.concatenate([rows[r] for r in realisations])]
        return fisher_matrix(
            v[:, 0], v[:, 1:3].transpose(1, 0, 2), v[:, 3:5].transpose(1, 0, 2), np.array(STEPS)
        )

    f = matrix(sorted(rows))
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


def posterior(values: dict, arrays: dict, args, bounds) -> dict:
    """A neural posterior trained on the prior maps' summaries; its coverage on the held-out
    prior maps, its mean standard deviations on held-out fiducial patches, and samples for
    the first held-out fiducial patch (the figure)."""
    s_prior = torch.as_tensor(values["prior"], dtype=torch.float32)
    theta = torch.as_tensor(arrays["prior"]["theta"], dtype=torch.float32)
    torch.manual_seed(args.seed)
    flow = NeuralPosterior(2, s_prior.shape[1], bounds=bounds)
    flow.fit(theta, s_prior, seed=args.seed)
    with torch.no_grad():
        s_obs = torch.as_tensor(values["observed"], dtype=torch.float32)
        samples = flow.sample(s_obs, args.samples)  # [S, m, p]
        coverage = expected_coverage(samples, arrays["observed"]["theta"], LEVELS, bounds=bounds)
        fiducial = torch.as_tensor(values["fisher"][:100, 0], dtype=torch.float32)
        fid_samples = flow.sample(fiducial, args.samples)  # [S, 100, p]
    return {
        "coverage": {str(k): float(v) for k, v in coverage.items()},
        "fiducial_std": fid_samples.std(0).mean(0).tolist(),
        "fiducial_bias": (fid_samples.mean(0).mean(0) - torch.tensor(FIDUCIAL)).tolist(),
        "example": fid_samples[:, 0].tolist(),
        "epochs": len(flow.history["train"]),
    }


def run_setting(kind, noise, args, log, init) -> dict:
    """Every summary of one setting (maps, noise): forecasts and posteriors."""
    scale = input_scale(kind, args)
    sets = streams(kind, noise, args, scale)
    t = time.perf_counter()
    arrays = {k: collect(sets[k]) for k in ("fisher", "val", "prior", "observed")}
    log(f"  simulated the fixed sets in {time.perf_counter() - t:.0f} s")
    pixels = sets["fisher"].patch_pixels(0).numpy()
    classical = classical_summaries(args, pixels, arrays["prior"]["x"])
    t = time.perf_counter()
    values = {
        name: {k: apply(s, arrays[k]["x"]) for k in ("fisher", "prior", "observed")}
        for name, s in classical.items()
    }
    for name, parts in COMBINED.items():
        values[name] = {
            k: np.concatenate([values[n][k] for n in parts], -1) for k in values[CLASSICAL[0]]
        }
    log(f"  classical summaries in {time.perf_counter() - t:.0f} s")

    tag = f"{kind}_noise{noise:g}"
    nets = {
        "DeepSphere": (f"deepsphere_{tag}", None),
        "hybrid": (f"hybrid_{tag}", features_fn(classical)),
    }
    paths, train_seconds = {}, 0.0
    for name, (folder, features) in nets.items():
        if kind == "gaussian" and name == "hybrid":
            continue
        start = time.perf_counter()
        start_from = init if name == "DeepSphere" else paths["DeepSphere"]
        paths[name] = train_network(folder, sets, args, scale, start_from, log, features, arrays)
        train_seconds += time.perf_counter() - start
        values[name] = {
            k: network_values(paths[name], arrays[k]["x"], features)
            for k in ("fisher", "prior", "observed")
        }

    realisation = arrays["fisher"]["draw"] // sets["fisher"].num_patches
    rng = np.random.default_rng(args.seed)
    reals = np.unique(realisation)
    resamplings = [rng.choice(reals, len(reals)) for _ in range(args.bootstrap)]
    bounds = [PRIOR_BOX[p] for p in PARAMETERS]
    results = {}
    for name in SUMMARIES:
        if name not in values or (
            kind == "gaussian" and name not in ("power spectrum", "DeepSphere")
        ):
            continue
        results[name] = forecast(values[name]["fisher"], realisation, resamplings)
        line = f"  {name}: FoM {results[name]['fom']:.0f}"
        if name in POSTERIORS:
            t = time.perf_counter()
            results[name]["posterior"] = posterior(values[name], arrays, args, bounds)
            cov = results[name]["posterior"]["coverage"]
            line += f", coverage {cov} [{time.perf_counter() - t:.0f} s]"
        log(line)
    return {
        "summaries": results,
        "mode_counting": mode_counting(args, noise, scale) if kind == "gaussian" else None,
        "models": paths,
        "train_seconds": train_seconds,
        "noise_sigma": sets["fisher"].sigma.tolist() if args.bins else noise * scale,
        "n_fisher_patches": len(arrays["fisher"]["x"]),
        "n_prior_patches": len(arrays["prior"]["x"]),
        "n_observed": len(arrays["observed"]["x"]),
    }


# ----- report ----------------------------------------------------------------------------------
def ratio(a: dict, b: dict) -> tuple[float, float]:
    """FoM ratio a/b and its standard deviation over the (shared) bootstrap resamplings."""
    ratios = np.array(a["fom_boot"], dtype=float) / np.array(b["fom_boot"], dtype=float)
    return a["fom"] / b["fom"], float(np.nanstd(ratios))


def table(results: dict) -> str:
    lines = [
        "| maps | noise | summary | σ(Ωm) | σ(σ8) | FoM | FoM / PS | FoM / (PS + hist.) "
        "| coverage 68% | coverage 95% |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, level in results["levels"].items():
        kind, noise = key.split("|")
        s = level["summaries"]
        ps, psh = s["power spectrum"], s.get("PS + histogram")
        for name in SUMMARIES:
            if name not in s:
                continue
            r = s[name]
            a, ea = ratio(r, ps)
            b = "—" if psh is None else "{:.2f} ± {:.2f}".format(*ratio(r, psh))
            cov = r.get("posterior", {}).get("coverage", {})
            c68, c95 = (f"{cov[str(x)]:.2f}" if cov else "—" for x in LEVELS)
            lines.append(
                f"| {kind} | {noise} | {name} | {r['sigma'][0]:.4f} ± {r['sigma_sd'][0]:.4f} | "
                f"{r['sigma'][1]:.4f} ± {r['sigma_sd'][1]:.4f} | {r['fom']:.0f} ± "
                f"{r['fom_sd']:.0f} | {a:.2f} ± {ea:.2f} | {b} | {c68} | {c95} |"
            )
    return "\n".join(lines)


def width_table(results: dict) -> str:
    """Posterior standard deviations on held-out fiducial patches against the forecasts."""
    lines = [
        "| maps | noise | summary | posterior σ(Ωm) | Fisher σ(Ωm) | posterior σ(σ8) "
        "| Fisher σ(σ8) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, level in results["levels"].items():
        kind, noise = key.split("|")
        for name, r in level["summaries"].items():
            if "posterior" not in r:
                continue
            post = r["posterior"]["fiducial_std"]
            lines.append(
                f"| {kind} | {noise} | {name} | {post[0]:.4f} | {r['sigma'][0]:.4f} | "
                f"{post[1]:.4f} | {r['sigma'][1]:.4f} |"
            )
    return "\n".join(lines)


def goal_lines(results: dict) -> list[str]:
    """The goals, each with its figure and whether it is met."""
    out = []
    for key, level in results["levels"].items():
        kind, noise = key.split("|")
        s = level["summaries"]
        ds, ps = s["DeepSphere"], s["power spectrum"]
        if kind == "gaussian":
            a, ea = ratio(ds, ps)
            modes = level["mode_counting"]["every multipole"]["fom"]
            out.append(
                f"Gaussian maps, noise {noise}: DeepSphere / PS = {a:.2f} ± {ea:.2f} (goal ≥ 0.95: "
                f"{'met' if a >= 0.95 else 'missed'}); mode counting on the patch (every "
                f"multipole, f_sky = 1/{12 * results['settings']['order'] ** 2}) gives FoM "
                f"{modes:.0f}, {modes / ps['fom']:.2f}x the simulated PS; DeepSphere reaches "
                f"{ds['fom'] / modes:.2f}x mode counting"
            )
        else:
            psh = s["PS + histogram"]
            a, ea = ratio(ds, psh)
            target = 1.0 if float(noise) < 2 else 0.95
            out.append(
                f"Lognormal, noise {noise}: DeepSphere / (PS + histogram) = {a:.2f} ± {ea:.2f} "
                f"(goal ≥ {target:g}: {'met' if a >= target else 'missed'})"
            )
            h, eh = ratio(s["hybrid"], psh)
            target = 1.2 if float(noise) == 0 else 1.1
            out.append(
                f"Lognormal, noise {noise}: hybrid / (PS + histogram) = {h:.2f} ± {eh:.2f} "
                f"(goal ≥ {target:g}: {'met' if h >= target else 'missed'})"
            )
        for name, r in s.items():
            if "posterior" in r:
                cov = r["posterior"]["coverage"]
                ok = all(abs(cov[str(x)] - x) <= 0.05 for x in LEVELS)
                out.append(
                    f"{kind} maps, noise {noise}, {name}: coverage "
                    + ", ".join(f"{cov[str(x)]:.2f} at {x:g}" for x in LEVELS)
                    + f" (goal within ±0.05: {'met' if ok else 'missed'})"
                )
    return out


def plot_posteriors(results: dict, path: str) -> None:
    """Posterior samples of one held-out fiducial patch from each summary with a posterior,
    68% and 95% contours (kernel density), one panel per lognormal noise level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import gaussian_kde

    keys = [k for k in results["levels"] if k.startswith("lognormal")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4), squeeze=False)
    colors = dict(zip(POSTERIORS, ["C0", "C1", "C3", "C2"]))
    for ax, key in zip(axes[0], keys):
        for name in POSTERIORS:
            r = results["levels"][key]["summaries"][name]
            pts = np.array(r["posterior"]["example"]).T
            kde = gaussian_kde(pts)
            lo, hi = pts.min(1), pts.max(1)
            gx, gy = np.meshgrid(*(np.linspace(a, b, 80) for a, b in zip(lo, hi)))
            dens = kde(np.vstack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
            level = np.sort(kde(pts))[[int(0.05 * len(pts.T)), int(0.32 * len(pts.T))]]
            ax.contour(gx, gy, dens, levels=level, colors=colors[name], linewidths=(0.8, 1.6))
            ax.plot([], [], color=colors[name], label=name)
            ell = fisher_ellipse(np.array(r["fisher"]), FIDUCIAL)
            ax.plot(ell[:, 0], ell[:, 1], color=colors[name], ls=":", lw=0.8)
        ax.plot(*FIDUCIAL, "k+", ms=10)
        ax.set_title(f"lognormal maps, noise {key.split('|')[1]}", fontsize=10)
        ax.set_xlabel(r"$\Omega_m$")
        ax.set_ylabel(r"$\sigma_8$")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(
        "Posteriors of one held-out fiducial patch (68%, 95%)"
        + ("; " if len(keys) > 1 else "\n")  # one panel is too narrow for one line
        + "dotted: 68% Fisher ellipses",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_page(results: dict, args, argv, path: str) -> None:
    figure = osp.splitext(path)[0] + "_posteriors.png"  # docs/inference_posteriors.png
    per_pair = ", every auto- and cross-spectrum of the bins" if args.bins else ""
    per_bin = ", one per bin" if args.bins else ""
    plot_posteriors(results, figure)
    r = results
    goals = "\n".join(f"- {line}" for line in goal_lines(results))
    first = next(iter(r["levels"].values()))
    of_bins = f", {args.bins} tomographic bins" if args.bins else ""
    text = f"""# Parameter inference: information-maximising DeepSphere summaries{of_bins}

How much does one convergence patch tell about (Ωm, σ8), with which summary, and are the
posteriors calibrated? Every row below comes from the same run and the same simulations.
Generated by

```
python examples/infer_cosmo.py {" ".join(argv)}
```

## What is compared

- **Classical summaries**: the power spectrum (PS, {len(ps_edges(args)) - 1} logarithmic bins
  of ℓ(ℓ+1)C_ℓ over 2 ≤ ℓ ≤ {3 * args.nside - 1}, every multipole of the maps{per_pair}), a
  histogram of {args.hist_bins} bins{per_bin}, peak counts (8 height bins of the local maxima after
  a two-pixel smoothing{per_bin}), and PS + histogram, PS + peaks, PS + histogram + peaks.
- **DeepSphere**: `DeepSphere(channels={tuple(args.channels)}, K=5, pool='{args.pool}')` with
  {args.outputs} outputs, trained with `pyg_sphere.inference.fisher_information_loss`
  (−ln det F of the batch plus the IMNN covariance regulariser) on fresh simulations
  (`pyg_sphere.datasets.FisherStream`: {args.train_maps} new realisations of the fiducial map
  and its ±step twins per epoch, never the same map twice), through Lightning
  (`pyg_sphere.apps.compressors.FisherCompressor`); {args.epochs_first} epochs for the first
  network, {args.epochs} for each warm-started one (noise 1 from noise 0, noise 2 from noise 1,
  Gaussian maps from lognormal noise 0); the epoch of largest ln det F on a validation set of
  {args.n_val} realisations.
- **Hybrid**: the same network with PS + histogram appended (whitened by their validation
  covariance), the Fisher information of the whole vector maximised, started from the
  DeepSphere network of its noise level: {args.hybrid_epochs} epochs at learning rate
  {args.hybrid_lr:g}, batches of {args.hybrid_batch_size} (its covariance has
  {hybrid_components(args)} components).
- Maps: shifted lognormal fields (and Gaussian ones for the sanity rows), nside {args.nside},
  patches of order {args.order} ({12 * args.order**2} per map,
  {(args.nside // args.order) ** 2} pixels). {maps_text(args)}
- **Fisher forecasts**: {args.n_fisher} held-out realisations at the fiducial (Ωm, σ8) =
  {FIDUCIAL} and ±{STEPS} ({first["n_fisher_patches"]} fiducial patches), Hartlap-corrected;
  errors: standard deviations over {args.bootstrap} bootstrap resamplings of the realisations
  (paired between summaries).
- **Posteriors**: `pyg_sphere.inference.NeuralPosterior` (a zuko flow on the prior box Ωm ∈
  {PRIOR_BOX["omega_m"]}, σ8 ∈ {PRIOR_BOX["sigma_8"]}) trained on the summaries of a Latin
  hypercube of {args.n_prior} prior maps ({first["n_prior_patches"]} patches); coverage by TARP
  (`pyg_sphere.inference.expected_coverage`) on {first["n_observed"]} held-out prior maps (one
  patch each), {args.samples} samples each.
- Machine: {r["machine"]}; wall time {r["seconds"] / 60:.0f} min, of which
  {r["train_seconds"] / 60:.0f} min training the networks.

## Figures of merit and coverage (one patch)

{table(results)}

![Posteriors]({osp.basename(figure)})

## Goals

{goals}{goals_note(args)}

## Sanity check: Gaussian maps

{sanity(results)}

## Posterior widths against the forecasts

Mean posterior standard deviation on held-out fiducial patches against the Fisher marginal
error of the same summary:

{width_table(results)}

{reading(results)}

## What a GPU run would change

Training is {r["train_seconds"] / 60:.0f} of the {r["seconds"] / 60:.0f} minutes here, on one
CPU thread with one simulating worker. `--accelerator gpu` trains the networks on a GPU; the
same wall time then buys more fresh realisations per epoch, more epochs and larger maps
(`--nside`), which this run could not afford. The simulations (healpy's transforms), the
classical summaries and the posteriors' flows stay on the CPU; with more CPU cores, more
`--workers` simulate in parallel.
"""
    with open(path + ".part", "w") as f:
        f.write(text)
    os.replace(path + ".part", path)


def goals_note(args) -> str:
    """With --bins, what the goals' noise thresholds are measured against."""
    if not args.bins:
        return ""
    return (
        "\n\nThe goals were set for one source plane with white noise in units of the patches' "
        "std; here a noise level multiplies the shape noise σ_e, so their thresholds are a "
        "reference, not a target."
    )


def maps_text(args) -> str:
    """What the maps and their noise are, for the page."""
    if not args.bins:
        return "Noise: white, std = noise × the std of the noiseless fiducial patches."
    return (
        f"{args.bins} tomographic source bins as channels (a Smail n(z) in equipopulated bins, "
        f"`pyg_sphere.datasets.smail_bins({args.bins})`, spectra from pyccl), each divided by "
        f"its noiseless fiducial std. Noise: shape noise, σ_e = noise × {args.sigma_e:g} with "
        f"{args.n_gal:g} galaxies per arcmin² shared by the bins (σ_e / √(n_i Ω_pix) per pixel)."
    )


def sanity(results: dict) -> str:
    """The Gaussian rows against mode counting, and forecasts against posteriors."""
    out = []
    for key, level in results["levels"].items():
        kind, noise = key.split("|")
        if kind != "gaussian":
            continue
        s, modes = level["summaries"], level["mode_counting"]
        ps, ds = s["power spectrum"], s["DeepSphere"]
        every, binned = modes["every multipole"]["fom"], modes["PS bins"]["fom"]
        out.append(
            f"On Gaussian maps (noise {noise}) the spectrum of the whole sky is a sufficient "
            f"statistic; on a patch, mode counting (f_sky = the patch's share) gives a figure of "
            f"merit of {every:.0f} (every multipole; {binned:.0f} in the PS's bins), "
            f"{every / ps['fom']:.2f}x that of the simulated pseudo-spectrum of the patch "
            f"({ps['fom']:.0f}), which mixes modes at the patch's edges. DeepSphere's forecast "
            f"is {ds['fom']:.0f}, {ds['fom'] / every:.2f}x mode counting."
        )
        post = [p / f for p, f in zip(ds["posterior"]["fiducial_std"], ds["sigma"])]
        post_ps = [p / f for p, f in zip(ps["posterior"]["fiducial_std"], ps["sigma"])]
        text = (
            f"The standard deviations of its posterior on held-out fiducial patches are "
            f"{post[0]:.1f}x (Ωm) and {post[1]:.1f}x (σ8) its forecast's, where the PS's are "
            f"{post_ps[0]:.1f}x and {post_ps[1]:.1f}x its own."
        )
        if max(post) > 1.5:
            text += (
                " A Fisher forecast of a summary is local: a Gaussian likelihood with a fixed "
                "covariance and a linear response over ± one step at the fiducial point. A "
                "network trained to maximise it at that point can make its outputs steep there "
                "without that steepness holding over the prior; the posterior, trained over "
                "the whole prior box and checked by the coverage test, is the measure to trust "
                "where the two disagree."
            )
        out.append(text)
    return "\n\n".join(out)


def reading(results: dict) -> str:
    """Where the Fisher forecast is optimistic: posteriors wider than it by over 10%."""
    wider = []
    for key, level in results["levels"].items():
        for name, r in level["summaries"].items():
            if "posterior" in r:
                post, fisher = r["posterior"]["fiducial_std"], r["sigma"]
                excess = max(p / f for p, f in zip(post, fisher))
                if excess > 1.1:
                    wider.append(f"{name} ({key.replace('|', ', noise ')}: ×{excess:.2f})")
    if not wider:
        return "No posterior is more than 10% wider than its Fisher forecast."
    return (
        "The Fisher forecast is optimistic (the posterior is over 10% wider) for: "
        + "; ".join(wider)
        + ". A Fisher matrix is the curvature at the fiducial point of a Gaussian likelihood "
        "with a parameter-independent covariance; it ignores the non-Gaussian tails of a "
        "patch's likelihood and the prior's edges, and the posterior also carries the "
        "flow's own approximation error."
    )


def save(results: dict, path: str) -> None:
    """Writes the results atomically."""
    with open(path + ".part", "w") as f:
        json.dump(results, f)
    os.replace(path + ".part", path)


def cpu_name() -> str:
    """The processor's model name (Linux), else the architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return names[0] if names else platform.machine()
    except OSError:
        return platform.machine()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()

    def log(msg):
        print(msg, flush=True)

    state_path = osp.join(args.out, "results.json")
    # What the results depend on (not where they go, threads, workers or the device).
    settings = {
        k: v
        for k, v in vars(args).items()
        if k not in ("out", "docs", "threads", "workers", "accelerator", "noise")
    }
    results = {"levels": {}, "settings": settings}
    if osp.isfile(state_path):
        with open(state_path) as f:
            results = json.load(f)
        # Results of runs from before the tomographic options were made without them.
        results["settings"] = {**LEGACY_SETTINGS, **results.get("settings", {})}
        if results["settings"] != settings:
            raise SystemExit(
                f"{state_path} holds results made with other options "
                f"({results.get('settings')}); use another --out, or delete it to start over"
            )
        log(f"resuming: {len(results['levels'])} settings done in {state_path}")
    else:  # the options are on record before any network is trained into --out
        save(results, state_path)
    # Warm starts: each lognormal level from the one before, Gaussian maps from the first.
    first = previous = None
    for kind, noise in [("lognormal", n) for n in args.noise] + [("gaussian", args.noise[0])]:
        key = f"{kind}|{noise:g}"
        if key not in results["levels"]:
            log(f"{kind} maps, noise {noise:g}")
            t = time.perf_counter()
            init = previous if kind == "lognormal" else first
            level = run_setting(kind, noise, args, log, init)
            level["seconds"] = time.perf_counter() - t
            results["levels"][key] = level
            save(results, state_path)
        if kind == "lognormal":
            previous = results["levels"][key]["models"]["DeepSphere"]
            first = first or previous
    levels = results["levels"].values()
    results["train_seconds"] = sum(v["train_seconds"] for v in levels)
    results["seconds"] = sum(v["seconds"] for v in levels)
    results["machine"] = (
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} "
        f"torch thread(s), {args.workers} simulating worker(s), "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print()
    print(table(results))
    print()
    print("\n".join(goal_lines(results)))
    print(f"\n{(time.perf_counter() - start) / 60:.1f} min in this call")
    if args.docs:
        write_page(results, args, argv, args.docs)
        print(f"\nwrote {args.docs}")
    return results


if __name__ == "__main__":
    main()
