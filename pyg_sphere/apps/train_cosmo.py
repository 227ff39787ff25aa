r"""Train DeepSphere to tell apart two cosmologies from weak-lensing convergence maps.

The task of Perraudin et al. (2019): maps of two LCDM models with (nearly) the same power
spectrum, cut into nested HEALPix patches of order :math:`o`, classified by
:class:`~pyg_sphere.nn.models.DeepSphere` under additive Gaussian noise of a level relative to
the maps' standard deviation. Usage::

    pyg-sphere-train-cosmo --nside 128 --order 2 --noise 1.0 --epochs 10 --out runs/a
    python -m pyg_sphere.apps.train_cosmo --resume --out runs/a --epochs 20  # continue that run
    pyg-sphere-train-cosmo --nside 128 --order 2 --noise 1.5 --init runs/a/best.pt --out runs/c
    torchrun --nproc_per_node 2 -m pyg_sphere.apps.train_cosmo --out runs/b  # data-parallel

Without maps in ``--data-dir`` (``raw/manifest.csv``), a small collection is simulated there
first (:func:`~pyg_sphere.datasets.simulate_convergence_maps`): model 1 against the
power-matched model 2, or with ``--gaussian-twin`` against Gaussian maps of model 1's spectrum.
Any other collection in the :class:`~pyg_sphere.datasets.ConvergenceMaps` layout works too.

Training: Adam, learning rate ``--lr`` decayed by 0.999 per step (the paper), cross-entropy;
batches on one shared graph (:class:`~pyg_sphere.loader.SharedGraphLoader`); fresh noise for
every training sample at every epoch, fixed seeded noise for validation and test
(:class:`~pyg_sphere.transforms.AddGaussianNoise`). Validation after every epoch; the best
epoch (validation accuracy, then loss) is kept and evaluated on the test split at the end.

Writes into ``--out`` (only rank 0 when distributed, every file atomically):
``last.pt`` and ``best.pt`` (model config and weights, optimizer, scheduler, epoch, history and
RNG states), ``metrics.json``, ``history.csv``, ``example_maps.png``, ``learning_curves.png``
and ``confusion_matrix.png``.

Deterministic on CPU for a given ``--seed``: every epoch reseeds torch from
``(seed, epoch, rank)``, so ``--resume`` continues exactly as an uninterrupted run.

The steps are functions of their own, for scripts that need only some of them: :func:`setup`
(data, model, optimizer, checkpoint to resume), :func:`train_epoch`, :func:`evaluate`,
:func:`save_checkpoints`, :func:`finish` (test of the best epoch, metrics and figures).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import os.path as osp
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DistributedSampler, Subset

from pyg_sphere._io import atomic_open, atomic_write_text
from pyg_sphere._validate import check_choice, check_int, check_nside, check_positive
from pyg_sphere.datasets import ConvergenceMaps, simulate_convergence_maps
from pyg_sphere.loader import SharedGraphLoader
from pyg_sphere.nn.models import DeepSphere
from pyg_sphere.transforms import AddGaussianNoise

__all__ = [
    "main",
    "run",
    "build_parser",
    "check_args",
    "train",
    "setup",
    "train_epoch",
    "run_epoch",
    "evaluate",
    "finish",
    "TrainingRun",
    "prepare_data",
    "build_model",
    "check_compatible",
    "save_checkpoints",
    "load_checkpoint",
    "model_from_checkpoint",
    "write_history",
    "plot_example_maps",
    "plot_learning_curves",
    "plot_confusion",
]

HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


# ----- command line ---------------------------------------------------------------------------
def _channels(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"channels must be integers separated by commas, e.g. 16,32,64,64,64; got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"channels must be positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of :func:`run` and :func:`main`.

    Example::

        >>> args = build_parser().parse_args(['--nside', '256', '--order', '4', '--noise', '2'])
        >>> args.lr, args.lr_decay, args.channels, args.num_neighbors, args.device
        (0.0002, 0.999, (16, 32, 64, 64, 64), 8, 'auto')
    """
    p = argparse.ArgumentParser(
        prog="pyg-sphere-train-cosmo",
        description="Train DeepSphere to classify convergence maps of two cosmologies "
        "(simulates a small collection on first use).",
    )
    _add_data_options(p.add_argument_group("data"))
    _add_model_options(p.add_argument_group("model"))
    _add_optimisation_options(p.add_argument_group("optimisation"))
    _add_run_options(p.add_argument_group("run"))
    return p


def _add_data_options(group) -> None:
    group.add_argument(
        "--data-dir",
        default=None,
        help="ConvergenceMaps root (raw/manifest.csv); simulated there if absent "
        "(default: ./data/cosmo_nside{nside})",
    )
    group.add_argument("--nside", type=int, default=64, help="HEALPix resolution (default 64)")
    group.add_argument(
        "--order", type=int, default=1, help="patch order: 12*order^2 patches per map (default 1)"
    )
    group.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="noise std relative to the maps' std (paper: 0 to 2; default 0)",
    )
    group.add_argument(
        "--n-per-class",
        type=int,
        default=12,
        help="maps per class when simulating (default 12; split 60/20/20)",
    )
    group.add_argument(
        "--power-matched",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="simulate the power-matched model 2, so that only non-Gaussian information "
        "separates the classes (default: on)",
    )
    group.add_argument(
        "--gaussian-twin",
        action="store_true",
        help="simulate model 1 against Gaussian maps of the same spectrum instead of model 2 "
        "(the spectra agree on every scale; --power-matched then does not apply)",
    )
    group.add_argument(
        "--smoothing",
        type=float,
        default=None,
        help="Gaussian smoothing FWHM in arcmin before resampling (default none)",
    )


def _add_model_options(group) -> None:
    group.add_argument(
        "--num-neighbors", type=int, default=8, help="neighbours per pixel (default 8)"
    )
    # The former spelling, still accepted so that older command lines keep working.
    group.add_argument(
        "--k", dest="num_neighbors", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    group.add_argument(
        "--channels",
        type=_channels,
        default=(16, 32, 64, 64, 64),
        help="channels per level, each level pools by 4 (default 16,32,64,64,64)",
    )
    group.add_argument("--K", type=int, default=5, help="Chebyshev polynomial order (default 5)")
    group.add_argument(
        "--head",
        choices=("fcn", "cnn"),
        default="fcn",
        help="fcn: Chebyshev layer + global average (default); cnn: linear",
    )
    group.add_argument(
        "--pool",
        choices=("max", "mean"),
        default="max",
        help="pooling by 4 between levels: max (the paper's, default) or mean",
    )
    group.add_argument("--dropout", type=float, default=0.0)


def _add_optimisation_options(group) -> None:
    group.add_argument("--epochs", type=int, default=10, help="total epochs (default 10)")
    group.add_argument(
        "--batch-size", type=int, default=32, help="samples per step and per process (default 32)"
    )
    group.add_argument(
        "--lr",
        type=float,
        default=2e-4,
        help="Adam learning rate, times 0.999 per step (default 2e-4)",
    )
    group.add_argument("--lr-decay", type=float, default=0.999, help="per-step decay (0.999)")
    group.add_argument("--weight-decay", type=float, default=0.0)


def _add_run_options(group) -> None:
    group.add_argument("--out", default="runs/train_cosmo", help="output directory")
    group.add_argument(
        "--init",
        default=None,
        metavar="CHECKPOINT",
        help="start from the weights of this checkpoint (e.g. best.pt of a run at a lower "
        "noise level, or on patches of another order with the fcn head) instead of random "
        "ones; fresh optimizer",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/last.pt (same options; --epochs may be raised)",
    )
    group.add_argument(
        "--device", default="auto", help="auto (cuda if available), cpu, cuda:0, ..."
    )
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--num-workers", type=int, default=0, help="data-loading processes")
    group.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads per process (default: torch's choice)",
    )
    group.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def check_args(args: argparse.Namespace) -> None:
    """Raises ``ValueError`` on options that cannot make a run, naming the option.

    Example::

        >>> check_args(build_parser().parse_args(['--nside', '16', '--order', '4']))
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: patches of order 4 at nside 16 are 4x4 pixels: too small for 5 poolings ...
    """
    check_nside(args.nside, "--nside")
    check_nside(args.order, "--order")
    if args.order > args.nside:
        raise ValueError(f"--order must be no larger than --nside, got {args.order}")
    side, levels = args.nside // args.order, len(args.channels)
    if side < 2**levels:
        raise ValueError(
            f"patches of order {args.order} at nside {args.nside} are {side}x{side} pixels: too "
            f"small for {levels} poolings by 4 (needs a side of at least {2**levels}); lower "
            f"--order, raise --nside or give fewer --channels"
        )
    for name in ("epochs", "batch_size", "n_per_class", "num_neighbors", "K"):
        check_int(f"--{name.replace('_', '-')}", getattr(args, name), 1)
    if not args.noise >= 0:
        raise ValueError(f"--noise must be >= 0, got {args.noise}")
    check_positive("--lr", args.lr)
    if not 0 < args.lr_decay <= 1:
        raise ValueError(f"--lr-decay must be in (0, 1], got {args.lr_decay}")
    check_choice("--head", args.head, ("fcn", "cnn"))


# ----- distributed helpers --------------------------------------------------------------------
def _init_distributed(device_arg: str) -> tuple[int, int, torch.device]:
    """Starts the process group when launched by torchrun; returns (rank, world, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        if device_arg == "auto":
            return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return 0, 1, torch.device(device_arg)
    want_cuda = device_arg == "auto" and torch.cuda.is_available() or device_arg.startswith("cuda")
    device = torch.device("cpu")
    if want_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _all_sum(values: Sequence[float], world: int, device) -> list[float]:
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(t)
    return t.tolist()


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _shard(dataset, rank: int, world: int):
    """Every world-th sample from rank: an exact partition for distributed evaluation."""
    return dataset if world == 1 else Subset(dataset, range(rank, len(dataset), world))


# ----- data -----------------------------------------------------------------------------------
def default_data_dir(args) -> str:
    """Where the default collection of the options :obj:`args` lives: one directory per pair
    of classes, ``data/cosmo_nside{nside}`` (power-matched), ``data/cosmo_unmatched_nside{nside}``
    (``--no-power-matched``) or ``data/twin_nside{nside}`` (``--gaussian-twin``), so that a
    run never reads the maps of another pair."""
    return osp.join("data", f"{_pair(args)[0]}_nside{args.nside}")


def _pair(args) -> tuple[str, str]:
    """The pair of classes the options simulate: a short name and a description."""
    if args.gaussian_twin:
        return "twin", "model 1 and its Gaussian twin"
    if args.power_matched:
        return "cosmo", "model 1 and the power-matched model 2"
    return "cosmo_unmatched", "model 1 and model 2"


def prepare_data(args, rank: int = 0, world: int = 1) -> dict[str, ConvergenceMaps]:
    """Simulates the default collection if needed (rank 0), then opens the three splits.

    Returns:
        ``{'train', 'val', 'test'}`` datasets with their noise transforms: fresh noise at every
        access for training, seeded noise (``seed + 1``, ``seed + 2``) for validation and test.
    """
    root = args.data_dir or default_data_dir(args)
    if rank == 0 and not osp.isfile(osp.join(root, "raw", "manifest.csv")):
        print(
            f"No maps in {root}: simulating {args.n_per_class} per class at nside "
            f"{args.nside} ({_pair(args)[1]})",
            flush=True,
        )
        # Seed 0 whatever --seed is: the default collection is always the same maps.
        simulate_convergence_maps(
            root,
            args.n_per_class,
            args.nside,
            seed=0,
            power_matched=args.power_matched and not args.gaussian_twin,
            gaussian_twin=args.gaussian_twin,
            progress=not args.quiet,
        )
    kwargs = dict(
        nside=args.nside,
        order=args.order,
        num_neighbors=args.num_neighbors,
        smoothing_arcmin=args.smoothing,
        log=False,
    )
    if rank == 0:  # process once before the other ranks read the cache
        ConvergenceMaps(root, split="train", **kwargs)
    _barrier(world)
    splits = {s: ConvergenceMaps(root, split=s, **kwargs) for s in ("train", "val", "test")}
    for s, ds in splits.items():
        if len(ds) == 0:
            raise ValueError(
                f"the {s} split of {root} is empty: simulate more maps (--n-per-class) or give "
                f"the manifest a split column"
            )
    std = splits["train"].map_std
    splits["train"].transform = AddGaussianNoise(args.noise, std)
    splits["val"].transform = AddGaussianNoise(args.noise, std, seed=args.seed + 1)
    splits["test"].transform = AddGaussianNoise(args.noise, std, seed=args.seed + 2)
    return splits


def check_compatible(config: dict, dataset: ConvergenceMaps) -> None:
    """Raises ``ValueError`` if a model configuration does not fit a dataset's patches.

    Checks the resolution, the region (pixel count and ids of the shared patch graph) and the
    number of classes, and says what differs.
    """
    problems = []
    if int(config["nside"]) != dataset.nside:
        problems.append(f"nside: model {config['nside']}, data {dataset.nside}")
    pixels = config.get("pixels")
    n_model = len(pixels) if pixels is not None else 12 * int(config["nside"]) ** 2
    if n_model != dataset.patch_size:
        region = "the full sphere" if pixels is None else "a patch"
        problems.append(
            f"pixels per sample: model {n_model} (a region of {region}), data "
            f"{dataset.patch_size} (order-{dataset.order} patches)"
        )
    elif pixels is not None and not torch.equal(
        torch.as_tensor(pixels).long().cpu(), dataset.patch_pixels(0).long()
    ):
        problems.append("region: the model's pixels are not the data's patch-0 pixels")
    if int(config["out_channels"]) != dataset.num_classes:
        problems.append(f"classes: model {config['out_channels']}, data {dataset.num_classes}")
    if problems:
        raise ValueError(
            "the model does not match the data (" + "; ".join(problems) + "): train a new "
            "model for this data, or use the nside/order it was trained on"
        )


# ----- model and checkpoints ------------------------------------------------------------------
def build_model(args, dataset: ConvergenceMaps) -> DeepSphere:
    """The DeepSphere classifier of the options, on the region of the dataset's patches."""
    return DeepSphere(
        1,
        dataset.num_classes,
        dataset.nside,
        pixels=dataset.patch_pixels(0),
        channels=tuple(args.channels),
        K=args.K,
        pool=args.pool,
        head=args.head,
        num_neighbors=args.num_neighbors,
        batch_norm=True,
        dropout=args.dropout,
    )


def _rng_states() -> dict:
    states = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _rename_k(options: dict) -> dict:
    """Options saved under the neighbour count's former name ``k``, renamed ``num_neighbors``."""
    if "k" not in options:
        return options
    options = dict(options)
    options.setdefault("num_neighbors", options["k"])
    del options["k"]
    return options


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Reads a checkpoint written by :func:`train` (``best.pt`` or ``last.pt``).

    Checkpoints of earlier versions, whose config and options name the neighbour count ``k``,
    are read with it renamed ``num_neighbors``. Checkpoints hold pickled RNG states and
    options: load only checkpoints you trust.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}: train first, or drop --resume/--init")
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(
            f"{path} is not a checkpoint of pyg_sphere.apps.train_cosmo (no model config and "
            "state_dict)"
        )
    ckpt["config"] = _rename_k(ckpt["config"])
    if isinstance(ckpt.get("args"), dict):
        ckpt["args"] = _rename_k(ckpt["args"])
    return ckpt


def model_from_checkpoint(ckpt: dict) -> DeepSphere:
    """Rebuilds the model of a checkpoint (``DeepSphere.from_config``) and loads its weights.

    Example::

        model = model_from_checkpoint(load_checkpoint('runs/a/best.pt')).eval()
    """
    model = DeepSphere.from_config(_rename_k(ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model


_RESUME_KEYS = (
    "nside",
    "order",
    "noise",
    "num_neighbors",
    "channels",
    "K",
    "head",
    "dropout",
    "batch_size",
    "lr",
    "lr_decay",
    "weight_decay",
    "seed",
    "power_matched",
    "gaussian_twin",
    "smoothing",
)


def _check_resume(ckpt: dict, args, dataset: ConvergenceMaps) -> None:
    old = ckpt.get("args", {})
    diff = [
        f"--{k.replace('_', '-')} {old[k]!r} -> {getattr(args, k)!r}"
        for k in _RESUME_KEYS
        if k in old and _norm(old[k]) != _norm(getattr(args, k))
    ]
    if diff:
        raise ValueError(
            "--resume needs the options of the interrupted run; changed: "
            + ", ".join(diff)
            + " (only --epochs, --device, --num-workers and --quiet may change)"
        )
    check_compatible(ckpt["config"], dataset)


def _norm(v):
    return list(v) if isinstance(v, (tuple, list)) else v


# ----- the state of a run ---------------------------------------------------------------------
@dataclass
class TrainingRun:
    """Everything a training run carries from epoch to epoch (built by :func:`setup`).

    :obj:`model` is the bare model, :obj:`net` the module that trains (the model, or its
    ``DistributedDataParallel`` wrapper when distributed); inputs are divided by :obj:`scale`
    (the training maps' standard deviation). :obj:`best` holds the epoch, validation accuracy
    and loss of the best epoch so far, :obj:`best_state` its weights (on the CPU).
    """

    args: argparse.Namespace
    rank: int
    world: int
    device: torch.device
    splits: dict[str, ConvergenceMaps]
    scale: float
    model: DeepSphere
    optimizer: torch.optim.Optimizer
    scheduler: Any
    net: Optional[torch.nn.Module] = None
    sampler: Optional[DistributedSampler] = None
    loader_gen: torch.Generator = field(default_factory=torch.Generator)
    train_loader: Optional[SharedGraphLoader] = None
    eval_loaders: dict[str, SharedGraphLoader] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    start_epoch: int = 0
    best: dict = field(default_factory=lambda: {"epoch": -1, "val_acc": -1.0, "val_loss": math.inf})
    best_state: Optional[dict] = None

    @property
    def main_rank(self) -> bool:
        """Whether this process writes the outputs (rank 0)."""
        return self.rank == 0

    @property
    def num_classes(self) -> int:
        return self.splits["train"].num_classes


# ----- setup ----------------------------------------------------------------------------------
def setup(args, rank: int = 0, world: int = 1, device="cpu") -> TrainingRun:
    """Opens the data, builds the model and optimizer, loads ``--init`` or ``--resume``
    weights and makes the loaders: a run ready for its first (or next) epoch.

    Args:
        args: parsed options (:func:`build_parser`), checked by :func:`check_args`.
        rank, world: this process and the number of processes (1 when not distributed).
        device: where the model trains.

    Example::

        state = setup(build_parser().parse_args(['--nside', '32', '--epochs', '2']))
        for epoch in range(state.start_epoch, state.args.epochs):
            run_epoch(state, epoch)
        metrics = finish(state, seconds=0.0)
    """
    torch.manual_seed(args.seed)
    splits = prepare_data(args, rank, world)
    train_set = splits["train"]
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
    ckpt = None
    if args.resume:
        ckpt = load_checkpoint(osp.join(args.out, "last.pt"))
        _check_resume(ckpt, args, train_set)
    torch.manual_seed(args.seed)  # same initial weights on every rank
    model = build_model(args, train_set).to(device)
    model.check_data(train_set.graph)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=args.lr_decay)
    scale = float(train_set.map_std)  # inputs in units of the noiseless maps' std
    state = TrainingRun(
        args, rank, world, torch.device(device), splits, scale, model, optimizer, scheduler
    )
    if ckpt is not None:
        _resume(state, ckpt)
    elif args.init:
        _init_weights(model, args.init)
    _make_loaders(state)
    return state


def _init_weights(model: DeepSphere, path: str) -> None:
    """Fine-tuning: the weights of a checkpoint only, fresh optimizer and schedule."""
    init = load_checkpoint(path)
    config = dict(init["config"])
    if config.get("head") == "fcn":
        # Filters act on neighbourhoods and the head averages over pixels: a fully
        # convolutional model's weights fit every region at its nside, so a model trained on
        # patches of another order is a valid start.
        config["pixels"] = model.config["pixels"]
    model.load_checkpoint_state(init["state_dict"], config)


def _resume(state: TrainingRun, ckpt: dict) -> None:
    """Restores weights, optimizer, schedule, history, best epoch and RNG states."""
    state.model.load_checkpoint_state(ckpt["state_dict"], ckpt["config"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    state.history, state.best = ckpt["history"], ckpt["best"]
    state.start_epoch = ckpt["epoch"] + 1
    best_path = osp.join(state.args.out, "best.pt")
    if osp.isfile(best_path):
        state.best_state = load_checkpoint(best_path)["state_dict"]
    _set_rng_states(ckpt["rng"])


def _make_loaders(state: TrainingRun) -> None:
    """The (distributed) training module, the training loader and the evaluation loaders."""
    args, device, rank, world = state.args, state.device, state.rank, state.world
    state.net = state.model
    if world > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        state.net = torch.nn.parallel.DistributedDataParallel(state.model, device_ids=device_ids)
    train_set = state.splits["train"]
    state.sampler = DistributedSampler(
        train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed, drop_last=False
    )
    common = dict(
        num_workers=args.num_workers, pin_memory=device.type == "cuda", persistent_workers=False
    )
    state.train_loader = SharedGraphLoader(
        train_set,
        batch_size=args.batch_size,
        sampler=state.sampler,
        generator=state.loader_gen,
        **common,
    )
    state.eval_loaders = {
        s: SharedGraphLoader(
            _shard(state.splits[s], rank, world),
            batch_size=2 * args.batch_size,
            graph=state.splits[s].graph,
            **common,
        )
        for s in ("val", "test")
    }


# ----- training and evaluation ----------------------------------------------------------------
def _forward(model, batch, scale: float, device):
    return model(batch.x.to(device, non_blocking=True) / scale)


def _train_step(state: TrainingRun, batch) -> tuple[float, int, int]:
    """One optimizer step; returns the summed loss, the correct count and the batch size."""
    y = batch.y.to(state.device)
    out = _forward(state.net, batch, state.scale, state.device)
    loss = F.cross_entropy(out, y)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    state.scheduler.step()
    return loss.item() * len(y), int((out.argmax(-1) == y).sum()), len(y)


def train_epoch(state: TrainingRun, epoch: int) -> dict:
    """Trains one epoch (0-based); returns its mean ``loss`` and ``acc`` over all ranks."""
    from tqdm.auto import tqdm

    args = state.args
    # Randomness of an epoch (shuffle, noise, dropout) depends on (seed, epoch, rank) only:
    # runs are reproducible and --resume continues exactly.
    epoch_seed = _epoch_seed(args.seed, epoch, state.rank)
    torch.manual_seed(epoch_seed)
    state.loader_gen.manual_seed(epoch_seed)
    state.sampler.set_epoch(epoch)
    state.net.train()
    loss_sum = correct = count = 0.0
    bar = tqdm(
        state.train_loader,
        desc=f"epoch {epoch + 1}/{args.epochs}",
        unit="batch",
        disable=args.quiet or not state.main_rank,
        leave=False,
        file=sys.stdout,
    )
    for batch in bar:
        step_loss, step_correct, step_count = _train_step(state, batch)
        loss_sum, correct, count = loss_sum + step_loss, correct + step_correct, count + step_count
        bar.set_postfix(loss=f"{loss_sum / count:.3f}", acc=f"{correct / count:.3f}")
    bar.close()
    count, correct, loss_sum = _all_sum([count, correct, loss_sum], state.world, state.device)
    return {"loss": loss_sum / count, "acc": correct / count}


def evaluate(model, loader, scale: float, device, world: int = 1, num_classes: int = 2) -> dict:
    """Loss, accuracy and confusion matrix over a loader (summed over ranks).

    Returns:
        dict with ``loss`` (mean cross-entropy), ``acc``, ``count`` (samples) and
        ``confusion`` (``[num_classes, num_classes]`` counts, rows the true classes).
    """
    model.eval()
    total = correct = loss_sum = 0.0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    with torch.no_grad():
        for batch in loader:
            y = batch.y.to(device)
            out = _forward(model, batch, scale, device)
            loss_sum += F.cross_entropy(out, y, reduction="sum").item()
            pred = out.argmax(-1)
            correct += (pred == y).sum().item()
            total += len(y)
            ones = torch.ones(len(y), dtype=torch.float64)
            confusion.index_put_((y.cpu(), pred.cpu()), ones, accumulate=True)
    sums = _all_sum([total, correct, loss_sum, *confusion.flatten().tolist()], world, device)
    total, correct, loss_sum = sums[:3]
    return {
        "loss": loss_sum / max(total, 1),
        "acc": correct / max(total, 1),
        "count": int(total),
        "confusion": np.asarray(sums[3:]).reshape(num_classes, num_classes).astype(int),
    }


def _evaluate_split(state: TrainingRun, split: str) -> dict:
    loader = state.eval_loaders[split]
    return evaluate(state.model, loader, state.scale, state.device, state.world, state.num_classes)


def run_epoch(state: TrainingRun, epoch: int) -> dict:
    """Trains and validates one epoch, keeps the best weights and (rank 0) writes the
    checkpoints and history; returns the epoch's row of the history."""
    t0 = time.perf_counter()
    fit = train_epoch(state, epoch)
    val = _evaluate_split(state, "val")
    row = {
        "epoch": epoch + 1,
        "train_loss": fit["loss"],
        "train_acc": fit["acc"],
        "val_loss": val["loss"],
        "val_acc": val["acc"],
        "lr": state.scheduler.get_last_lr()[0],
        "seconds": time.perf_counter() - t0,
    }
    state.history.append(row)
    best = state.best
    improved = (val["acc"], -val["loss"]) > (best["val_acc"], -best["val_loss"])
    if improved:
        state.best = {"epoch": epoch + 1, "val_acc": val["acc"], "val_loss": val["loss"]}
        state.best_state = {
            k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()
        }
    if state.main_rank:
        _print_epoch(state.args, row, improved)
        save_checkpoints(state, epoch, improved)
        write_history(state.history, state.args.out)
    _barrier(state.world)
    return row


def _print_epoch(args, row: dict, improved: bool) -> None:
    print(
        f"epoch {row['epoch']}/{args.epochs}  train loss {row['train_loss']:.4f} "
        f"acc {row['train_acc']:.3f} | val loss {row['val_loss']:.4f} acc "
        f"{row['val_acc']:.3f}{'  (best)' if improved else ''}  [{row['seconds']:.0f} s]",
        flush=True,
    )


# ----- checkpoints, metrics and history -------------------------------------------------------
def save_checkpoints(state: TrainingRun, epoch: int, improved: bool) -> None:
    """Writes ``last.pt`` after epoch :obj:`epoch` (0-based), and ``best.pt`` if it improved.

    A checkpoint holds the model config and weights, optimizer, scheduler, epoch, best epoch,
    history, RNG states, the options, the input scale and the data's nside and order.
    """
    train_set = state.splits["train"]
    payload = {
        "config": state.model.config,
        "state_dict": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "epoch": epoch,
        "best": state.best,
        "history": state.history,
        "rng": _rng_states(),
        "args": vars(state.args),
        "input_scale": state.scale,
        "data": {"nside": train_set.nside, "order": train_set.order},
    }
    names = ("best.pt", "last.pt") if improved else ("last.pt",)
    for name in names:
        with atomic_open(osp.join(state.args.out, name), "wb") as f:
            torch.save(payload, f)


def _metrics(state: TrainingRun, test: dict, seconds: float) -> dict:
    train_set = state.splits["train"]
    return {
        "best_epoch": state.best["epoch"],
        "best_val_acc": state.best["val_acc"],
        "test_acc": test["acc"],
        "test_loss": test["loss"],
        "test_count": test["count"],
        "confusion_matrix": test["confusion"].tolist(),
        "history": state.history,
        "train_seconds": seconds,
        "world_size": state.world,
        "device": str(state.device),
        "config": _summary(state.model.config),
        "args": _jsonable(vars(state.args)),
        "data": {
            "root": train_set.root,
            "nside": train_set.nside,
            "order": train_set.order,
            "patch_pixels": train_set.patch_size,
            "map_std": state.scale,
            "samples": {s: len(d) for s, d in state.splits.items()},
        },
    }


def _summary(config: dict) -> dict:
    """The model config for metrics.json, with the pixel count instead of the pixel ids."""
    out = _jsonable(config)
    if out.get("pixels") is not None:
        out["pixels"] = f"{len(out['pixels'])} pixels (patch 0)"
    return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def write_history(history: list[dict], out_dir: str) -> None:
    """Writes the per-epoch rows to ``out_dir/history.csv`` (columns :data:`HISTORY_FIELDS`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(osp.join(out_dir, "history.csv"), buf.getvalue())


def finish(state: TrainingRun, seconds: float) -> dict:
    """Evaluates the best epoch's weights on the test split; rank 0 writes ``metrics.json``
    and the figures. Returns the metrics (see :func:`train`)."""
    if state.best_state is not None:
        state.model.load_state_dict(state.best_state)
    test = _evaluate_split(state, "test")
    metrics = _metrics(state, test, seconds)
    if state.main_rank:
        out_dir, best = state.args.out, state.best
        atomic_write_text(osp.join(out_dir, "metrics.json"), json.dumps(metrics, indent=1) + "\n")
        if not state.args.no_figures:
            plot_learning_curves(state.history, osp.join(out_dir, "learning_curves.png"))
            plot_confusion(test["confusion"], osp.join(out_dir, "confusion_matrix.png"))
        print(
            f"best epoch {best['epoch']} (val acc {best['val_acc']:.3f}); "
            f"test accuracy {test['acc']:.4f} on {test['count']} patches",
            flush=True,
        )
    _barrier(state.world)
    return metrics


# ----- the whole run --------------------------------------------------------------------------
def train(args) -> dict:
    """Runs a training as described by parsed options; returns the metrics (rank 0 writes them).

    Returns:
        dict with ``history`` (one dict per epoch), ``best_epoch``, ``best_val_acc``,
        ``test_acc``, ``test_loss``, ``test_count``, ``confusion_matrix``, ``config``,
        ``args`` and ``data``.
    """
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world, device = _init_distributed(args.device)
    try:
        state = setup(args, rank, world, device)
        if state.main_rank and not args.no_figures and state.start_epoch == 0:
            names = ("lognormal", "Gaussian twin") if args.gaussian_twin else None
            plot_example_maps(state.splits["test"], osp.join(args.out, "example_maps.png"), names)
        t_start = time.perf_counter()
        for epoch in range(state.start_epoch, args.epochs):
            run_epoch(state, epoch)
        return finish(state, time.perf_counter() - t_start)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


# ----- figures --------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(
            "the PNG figures need matplotlib: pip install 'pyg_sphere[plot]', or pass --no-figures"
        ) from err
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    plt = _pyplot()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)


def plot_example_maps(
    dataset: ConvergenceMaps, path: str, class_names: Optional[Sequence[str]] = None
) -> None:
    """One test patch per class (as the model sees it, noise included): its place on the sphere
    (Mollweide, the patch in an otherwise UNSEEN map) and a gnomonic close-up, titled with
    :obj:`class_names` (by class index) or else the cosmological parameters."""
    plt = _pyplot()
    labels = dataset.labels.tolist()
    picks = [labels.index(c) for c in sorted(set(labels))][:2]
    fig = plt.figure(figsize=(10, 4.2 * len(picks)))
    for row, i in enumerate(picks):
        _plot_patch(dataset, dataset[i], fig, (len(picks), 2, 2 * row + 1), class_names)
    _save(fig, path)


def _plot_patch(dataset: ConvergenceMaps, data, fig, sub: tuple[int, int, int], names) -> None:
    """A patch on the whole sphere in panel :obj:`sub`, and its close-up in the next panel."""
    import healpy as hp

    pid, label = int(data.patch_id), int(data.y)
    full = np.full(12 * dataset.nside**2, hp.UNSEEN)
    pixels = dataset.patch_pixels(pid).numpy()
    full[pixels] = data.x[:, 0].numpy()
    name = f"class {label}"
    if names is not None and 0 <= label < len(names):
        name += f" ({names[label]})"
    elif math.isfinite(float(data.omega_m)):
        name += f" ($\\Omega_m$={float(data.omega_m):.2f}, $\\sigma_8$={float(data.sigma_8):.3f})"
    centre = np.mean(hp.pix2vec(dataset.nside, pixels, nest=True), axis=1)
    lon, lat = hp.vec2ang(centre, lonlat=True)
    side = dataset.nside // dataset.order
    title = f"{name}, patch {pid}"
    hp.mollview(full, nest=True, fig=fig.number, sub=sub, title=title, cbar=True, notext=True)
    hp.gnomview(
        full,
        nest=True,
        rot=(float(lon[0]), float(lat[0])),
        xsize=int(1.6 * side),
        reso=hp.nside2resol(dataset.nside, arcmin=True),
        fig=fig.number,
        sub=(sub[0], sub[1], sub[2] + 1),
        title=f"close-up ({side}x{side} pixels)",
        notext=True,
    )


def plot_learning_curves(history: list[dict], path: str) -> None:
    """Training and validation loss and accuracy per epoch, side by side."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key in zip(axes, ("loss", "acc")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy" if key == "loss" else "accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(confusion: np.ndarray, path: str) -> None:
    """The test confusion matrix (rows: true class, columns: predicted), counts written in."""
    plt = _pyplot()
    confusion = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(confusion, cmap="Blues")
    for (i, j), v in np.ndenumerate(confusion):
        color = "white" if v > confusion.max() / 2 else "black"
        ax.text(j, i, str(v), ha="center", va="center", color=color)
    names = [f"model {i + 1}" for i in range(len(confusion))]
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test accuracy {np.trace(confusion) / max(confusion.sum(), 1):.3f}")
    fig.tight_layout()
    _save(fig, path)


# ----- entry points ---------------------------------------------------------------------------
def run(argv: Optional[Sequence[str]] = None) -> dict:
    """Trains with command-line options given as a list (``None``: ``sys.argv``).

    Raises ``ValueError``/``FileNotFoundError`` on bad input.

    Returns:
        The metrics, as written to ``metrics.json`` (see :func:`train`).
    """
    return train(build_parser().parse_args(argv))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point (``pyg-sphere-train-cosmo``, or
    ``python -m pyg_sphere.apps.train_cosmo``): bad input ends with a one-line error and exit
    status 2."""
    try:
        run(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
