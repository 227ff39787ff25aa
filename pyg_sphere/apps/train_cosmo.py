r"""Train DeepSphere to tell apart two cosmologies from weak-lensing convergence maps.

The task of Perraudin et al. (2019): maps of two LCDM models with (nearly) the same power
spectrum, cut into nested HEALPix patches of order :math:`o`, classified by
:class:`~pyg_sphere.nn.models.DeepSphere` under additive Gaussian noise of a level relative to
the maps' standard deviation. Usage::

    pyg-sphere-train-cosmo --nside 128 --order 2 --noise 1.0 --epochs 10 --out runs/a
    python -m pyg_sphere.apps.train_cosmo --resume --out runs/a --epochs 20  # continue that run
    pyg-sphere-train-cosmo --nside 128 --order 2 --noise 1.5 --init runs/a/best.ckpt --out runs/c
    pyg-sphere-train-cosmo --devices 2 --out runs/b  # data-parallel, 2 processes (Lightning DDP)
    torchrun --nproc_per_node 2 -m pyg_sphere.apps.train_cosmo --out runs/b  # the same

Without maps in ``--data-dir`` (``raw/manifest.csv``), a small collection is simulated there
first (:func:`~pyg_sphere.datasets.simulate_convergence_maps`): model 1 against the
power-matched model 2, or with ``--gaussian-twin`` against Gaussian maps of model 1's spectrum.
Any other collection in the :class:`~pyg_sphere.datasets.ConvergenceMaps` layout works too.

Training runs on Lightning (:mod:`pyg_sphere.apps.engine`, the ``[train]`` extra): Adam at
``--lr`` decayed by 0.999 per step (the paper), cross-entropy, fresh noise for every training
sample at every epoch and seeded noise for validation and test; validation after every epoch,
and the best epoch (validation accuracy; ties keep the earlier one) is tested at the end.
Accelerator, devices, nodes, strategy, precision and loggers are Lightning's options.

Writes into ``--out`` (the first process only): ``best.ckpt`` and ``last.ckpt`` (Lightning
checkpoints, with the model's config, the history and the options), ``metrics.json``,
``history.csv``, ``logs/`` (CSV; ``tb/`` with ``--logger tensorboard``) and the figures
``example_maps.png``, ``learning_curves.png`` and ``confusion_matrix.png``. Deterministic for a
given ``--seed`` on CPU, and ``--resume`` continues exactly as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import Optional, Sequence

import numpy as np
import torch
from filelock import FileLock

from pyg_sphere._io import atomic_write_text
from pyg_sphere._validate import check_choice, check_int, check_nside, check_positive
from pyg_sphere.apps.engine import (
    HistoryFile,
    MapClassifier,
    SharedGraphDataModule,
    add_trainer_options,
    best_checkpoint,
    load_checkpoint,
    make_trainer,
    model_from_checkpoint,
    model_state,
    trainer_options,
)
from pyg_sphere.apps.figures import plot_confusion, plot_example_maps, plot_learning_curves
from pyg_sphere.datasets import ConvergenceMaps, simulate_convergence_maps
from pyg_sphere.nn.models import DeepSphere
from pyg_sphere.transforms import AddGaussianNoise

__all__ = [
    "main",
    "run",
    "build_parser",
    "check_args",
    "train",
    "prepare_data",
    "default_data_dir",
    "make_model",
    "check_compatible",
    "load_checkpoint",
    "model_from_checkpoint",
]


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
        >>> args.lr, args.lr_decay, args.channels, args.num_neighbors, args.accelerator
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
    add_trainer_options(p.add_argument_group("trainer (Lightning)"))
    return p


def _add_data_options(g) -> None:
    g.add_argument(
        "--data-dir",
        default=None,
        help="ConvergenceMaps root (raw/manifest.csv), simulated if absent "
        "(default: data/cosmo_nside{nside}, one directory per pair of classes)",
    )
    g.add_argument("--nside", type=int, default=64, help="HEALPix resolution (default 64)")
    g.add_argument("--order", type=int, default=1, help="patch order, 12 order^2 per map (1)")
    g.add_argument("--noise", type=float, default=0.0, help="noise std / the maps' std (0)")
    g.add_argument("--n-per-class", type=int, default=12, help="maps per class to simulate (12)")
    g.add_argument(
        "--power-matched",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="simulate the power-matched model 2: only non-Gaussian information separates them",
    )
    g.add_argument(
        "--gaussian-twin",
        action="store_true",
        help="simulate model 1 against Gaussian maps of its spectrum instead of model 2",
    )
    g.add_argument("--smoothing", type=float, default=None, help="smoothing FWHM in arcmin")


def _add_model_options(g) -> None:
    g.add_argument("--num-neighbors", type=int, default=8, help="neighbours per pixel (8)")
    g.add_argument(
        "--channels",
        type=_channels,
        default=(16, 32, 64, 64, 64),
        help="channels per level, each pooling by 4 (16,32,64,64,64)",
    )
    g.add_argument("--K", type=int, default=5, help="Chebyshev polynomial order (5)")
    g.add_argument("--head", choices=("fcn", "cnn"), default="fcn", help="fcn (default) or cnn")
    g.add_argument("--pool", choices=("max", "mean"), default="max", help="max (default), mean")
    g.add_argument("--dropout", type=float, default=0.0)


def _add_optimisation_options(g) -> None:
    g.add_argument("--epochs", type=int, default=10, help="total epochs (10)")
    g.add_argument("--batch-size", type=int, default=32, help="per step and process (32)")
    g.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (2e-4)")
    g.add_argument("--lr-decay", type=float, default=0.999, help="decay per step (0.999)")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--patience", type=int, default=None, help="early stopping (default off)")


def _add_run_options(g) -> None:
    g.add_argument("--out", default="runs/train_cosmo", help="output directory")
    g.add_argument(
        "--init",
        default=None,
        metavar="CHECKPOINT",
        help="start from this checkpoint's weights (fresh optimizer); the fcn head fits "
        "patches of any order at the same nside",
    )
    g.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--num-workers", type=int, default=0, help="data-loading processes")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    g.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    g.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")


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
    if args.patience is not None:
        check_int("--patience", args.patience, 1)
    if not args.noise >= 0:
        raise ValueError(f"--noise must be >= 0, got {args.noise}")
    check_positive("--lr", args.lr)
    if not 0 < args.lr_decay <= 1:
        raise ValueError(f"--lr-decay must be in (0, 1], got {args.lr_decay}")
    check_choice("--head", args.head, ("fcn", "cnn"))


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


def prepare_data(args) -> dict[str, ConvergenceMaps]:
    """Simulates the default collection if needed, then opens the three splits.

    Processes started together (DDP) simulate once: the first to take the lock on
    ``DATA_DIR.lock`` simulates, the others then find the manifest; processing the patches has
    its own lock (:class:`~pyg_sphere.datasets.ConvergenceMaps`).

    Returns:
        ``{'train', 'val', 'test'}`` datasets with their noise transforms: fresh noise at every
        access for training, seeded noise (``seed + 1``, ``seed + 2``) for validation and test.
    """
    root = args.data_dir or default_data_dir(args)
    os.makedirs(osp.dirname(osp.abspath(root)), exist_ok=True)
    with FileLock(osp.abspath(root) + ".lock"):
        if not osp.isfile(osp.join(root, "raw", "manifest.csv")):
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
    splits = {s: ConvergenceMaps(root, split=s, **kwargs) for s in ("train", "val", "test")}
    for s, ds in splits.items():
        if len(ds) == 0:
            raise ValueError(
                f"the {s} split of {root} is empty: simulate more maps (--n-per-class) or give "
                f"the manifest a split column"
            )
    std = noise_unit(splits["train"])
    splits["train"].transform = AddGaussianNoise(args.noise, std)
    splits["val"].transform = AddGaussianNoise(args.noise, std, seed=args.seed + 1)
    splits["test"].transform = AddGaussianNoise(args.noise, std, seed=args.seed + 2)
    return splits


def noise_unit(train: ConvergenceMaps):
    """The std that ``--noise`` multiplies: the training maps' std, or one per channel (none on
    an observed-pixel channel) when there are several."""
    return train.map_std if train.num_node_features == 1 else train.channel_std


def check_compatible(config: dict, dataset: ConvergenceMaps) -> None:
    """Raises ``ValueError`` if a model configuration does not fit a dataset's patches.

    Checks the resolution, the region (pixel count and ids of the shared patch graph), the
    number of input channels and of classes, and says what differs.
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
    if int(config["in_channels"]) != dataset.num_node_features:
        problems.append(
            f"input channels: model {config['in_channels']}, data {dataset.num_node_features}"
        )
    if int(config["out_channels"]) != dataset.num_classes:
        problems.append(f"classes: model {config['out_channels']}, data {dataset.num_classes}")
    if problems:
        raise ValueError(
            "the model does not match the data (" + "; ".join(problems) + "): train a new "
            "model for this data, or use the nside/order it was trained on"
        )


# ----- model and checkpoints ------------------------------------------------------------------
def make_model(args, dataset: ConvergenceMaps) -> DeepSphere:
    """The DeepSphere classifier of the options, on the region of the dataset's patches."""
    return DeepSphere(
        dataset.num_node_features,
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


_RESUME_KEYS = (
    "nside",
    "order",
    "noise",
    "num_neighbors",
    "channels",
    "K",
    "head",
    "pool",
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


def _check_resume(ckpt: dict, args, model: torch.nn.Module, dataset: ConvergenceMaps) -> None:
    """Refuses to resume a checkpoint of other options, model or data, saying what differs."""
    old = ckpt["hyper_parameters"].get("run_options")
    if not isinstance(old, dict):
        raise ValueError(
            "--resume needs a checkpoint of pyg-sphere-train-cosmo; this one is of another task "
            f"({', '.join(sorted(ckpt['hyper_parameters']))}): use another --out"
        )
    diff = [
        f"--{k.replace('_', '-')} {old[k]!r} -> {_norm(getattr(args, k))!r}"
        for k in _RESUME_KEYS
        if k in old and _norm(old[k]) != _norm(getattr(args, k))
    ]
    if diff:
        raise ValueError(
            "--resume needs the options of the interrupted run; changed: "
            + ", ".join(diff)
            + " (--epochs, --patience, the run options and --quiet may change)"
        )
    config = ckpt["hyper_parameters"]["model_config"]
    check_compatible(config, dataset)
    model.load_checkpoint_state(model_state(ckpt), config)  # says if the weights do not fit


def _norm(v):
    return list(v) if isinstance(v, (tuple, list)) else v


def _init_weights(model: DeepSphere, path: str) -> None:
    """Fine-tuning: the weights of a checkpoint only, fresh optimizer and schedule."""
    init = load_checkpoint(path)
    config = dict(init["hyper_parameters"]["model_config"])
    if config.get("head") == "fcn":
        # Filters act on neighbourhoods and the head averages over pixels: a fully
        # convolutional model's weights fit every region at its nside, so a model trained on
        # patches of another order is a valid start.
        config["pixels"] = model.config["pixels"]
    model.load_checkpoint_state(model_state(init), config)


# ----- the whole run --------------------------------------------------------------------------
def train(args) -> dict:
    """Runs a training as described by parsed options; returns the metrics (the first process
    writes them).

    Returns:
        dict with ``history`` (one dict per epoch), ``best_epoch``, ``best_val_acc``,
        ``test_acc``, ``test_loss``, ``test_count``, ``confusion_matrix``, ``train_seconds``,
        ``world_size``, ``device``, ``config``, ``args`` and ``data``.
    """
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = prepare_data(args)
    train_set = splits["train"]
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)  # the same initial weights in every process
    model = make_model(args, train_set)
    model.check_data(train_set.graph)
    ckpt_path = osp.join(args.out, "last.ckpt") if args.resume else None
    if ckpt_path:
        _check_resume(load_checkpoint(ckpt_path), args, model, train_set)
    elif args.init:
        _init_weights(model, args.init)
    module = MapClassifier(
        model.config,
        input_scale=float(train_set.map_std),  # inputs in units of the noiseless maps' std
        lr=args.lr,
        lr_decay=args.lr_decay,
        weight_decay=args.weight_decay,
        seed=args.seed,
        run_options=dict(vars(args)),  # JSON-serialisable
    )
    module.model.load_state_dict(model.state_dict())
    trainer = make_trainer(
        args.out,
        max_epochs=args.epochs,
        monitor="val_acc",
        patience=args.patience,
        quiet=args.quiet,
        **trainer_options(args),
        callbacks=[HistoryFile(osp.join(args.out, "history.csv"))],
    )
    data = SharedGraphDataModule(
        splits, args.batch_size, num_workers=args.num_workers, seed=args.seed
    )
    if trainer.is_global_zero and not args.no_figures and not args.resume:
        names = ("lognormal", "Gaussian twin") if args.gaussian_twin else None
        plot_example_maps(splits["test"], osp.join(args.out, "example_maps.png"), names)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    seconds = time.perf_counter() - start
    history = list(module.history)  # testing loads the best checkpoint, and its history
    trainer.test(module, datamodule=data, ckpt_path=best_checkpoint(trainer), verbose=False)
    metrics = _metrics(module, history, splits, trainer, seconds)
    if trainer.is_global_zero:
        _write_outputs(args, metrics, module.test_results["confusion"])
    return metrics


def _metrics(module: MapClassifier, history, splits, trainer, seconds: float) -> dict:
    best = max(history, key=lambda h: h["val_acc"])  # the first of equals, as the checkpoint
    test, train_set = module.test_results, splits["train"]
    return {
        "best_epoch": best["epoch"],
        "best_val_acc": best["val_acc"],
        "test_acc": test["acc"],
        "test_loss": test["loss"],
        "test_count": test["count"],
        "confusion_matrix": test["confusion"].tolist(),
        "history": history,
        "train_seconds": seconds,
        "world_size": trainer.world_size,
        "device": str(trainer.strategy.root_device),
        "config": _summary(module.hparams.model_config),
        "args": module.hparams.run_options,
        "data": {
            "root": train_set.root,
            "nside": train_set.nside,
            "order": train_set.order,
            "patch_pixels": train_set.patch_size,
            "map_std": module.hparams.input_scale,
            "samples": {s: len(d) for s, d in splits.items()},
        },
    }


def _write_outputs(args, metrics: dict, confusion: np.ndarray) -> None:
    out_dir = args.out
    atomic_write_text(osp.join(out_dir, "metrics.json"), json.dumps(metrics, indent=1) + "\n")
    if not args.no_figures:
        plot_learning_curves(metrics["history"], osp.join(out_dir, "learning_curves.png"))
        plot_confusion(confusion, osp.join(out_dir, "confusion_matrix.png"))
    print(
        f"best epoch {metrics['best_epoch']} (val acc {metrics['best_val_acc']:.3f}); "
        f"test accuracy {metrics['test_acc']:.4f} on {metrics['test_count']} patches",
        flush=True,
    )


def _summary(config: dict) -> dict:
    """The model config for metrics.json, with the pixel count instead of the pixel ids."""
    out = dict(config)  # JSON-serialisable (SphereModel.config)
    if out.get("pixels") is not None:
        out["pixels"] = f"{len(out['pixels'])} pixels (patch 0)"
    return out


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
