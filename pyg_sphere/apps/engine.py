r"""The training engine of the applications: Lightning modules, a data module and a trainer.

Everything a training run needs beyond the model and its loss comes from Lightning
(checkpoints and ``ckpt_path`` resume, best-epoch selection, early stopping, progress bars, CSV
and TensorBoard logs, ``precision=``, accelerators, DDP on one machine, under ``torchrun`` or
SLURM) and torchmetrics (metrics summed exactly over processes). What is here is what
Lightning leaves to the task:

- :class:`MapClassifier`: a :mod:`pyg_sphere.nn.models` network as a classifier
  (cross-entropy, Adam with a per-step exponential decay, accuracy and confusion matrix), a
  history row per epoch kept in its checkpoints, and per-step reseeding so that a resumed run
  continues exactly as an uninterrupted one.
- :class:`SharedGraphDataModule`: the train/val/test splits of a map dataset in
  :class:`~pyg_sphere.loader.SharedGraphLoader` batches, sharded over processes.
- :func:`make_trainer`: a :class:`lightning.pytorch.Trainer` with the checkpointing of the
  applications (``best.ckpt`` by a monitored metric, ``last.ckpt`` every epoch).

Lightning and torchmetrics are the ``[train]`` extra (``pip install 'pyg_sphere[train]'``);
the library itself never imports this module.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import os.path as osp
import time
import warnings
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, DistributedSampler, Subset

try:
    import lightning.pytorch as pl
    import torchmetrics
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "training needs Lightning and torchmetrics, the [train] extra: "
        "pip install 'pyg_sphere[train]'"
    ) from err

from pyg_sphere._io import atomic_write_text
from pyg_sphere.loader import SharedGraphLoader
from pyg_sphere.nn import models

__all__ = [
    "EpochSeededItems",
    "seed_of",
    "seed_step",
    "build_model",
    "MapClassifier",
    "SharedGraphDataModule",
    "make_trainer",
    "add_trainer_options",
    "trainer_options",
    "load_checkpoint",
    "model_from_checkpoint",
    "model_state",
    "best_checkpoint",
    "HistoryFile",
    "write_csv",
    "HISTORY_FIELDS",
]

#: Columns of a classifier's per-epoch history (``history.csv``).
HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


def build_model(model_class: str, model_config: dict) -> torch.nn.Module:
    """A model of :mod:`pyg_sphere.nn.models` (``'DeepSphere'``, ...) from its config."""
    cls = getattr(models, model_class, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise ValueError(
            f"unknown model class {model_class!r}: use one of pyg_sphere.nn.models "
            f"({', '.join(n for n in models.__all__ if hasattr(getattr(models, n), 'config'))})"
        )
    return cls.from_config(model_config)


def seed_of(*key: int) -> int:
    """A torch seed that depends only on :obj:`key` (e.g. seed, epoch, rank, step)."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0])


def seed_step(module: pl.LightningModule, batch_idx: int) -> None:
    """Seeds torch for a training step from ``(seed, epoch, rank, step)``: the randomness of
    a step (dropout, ...) then does not depend on how many loader iterators Lightning made
    before it, and a run resumed from a checkpoint continues exactly."""
    key = (module.hparams.seed, module.current_epoch, module.global_rank, batch_idx)
    seed = seed_of(*key)
    if module.device.type == "cpu":
        # The CPU generator alone: torch.manual_seed also queues a seed for every accelerator
        # backend, formatting a stack trace each time (measurable at every step).
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


class EpochSeededItems(Dataset):
    """A dataset whose items draw their randomness (e.g. fresh noise from
    :class:`~pyg_sphere.transforms.AddGaussianNoise`, which uses torch's global generator) from
    a seed of ``(seed, epoch, index)``: new draws every epoch, the same whatever the loader
    workers, prefetching or a resume from a checkpoint."""

    def __init__(self, dataset, seed: int = 0) -> None:
        self.dataset, self.seed, self.epoch = dataset, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        # Items are drawn on the CPU: its generator alone is seeded (torch.manual_seed would
        # also queue a seed, with a stack trace, for every accelerator backend, at every item).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed_of(self.seed, self.epoch, index))
            return self.dataset[index]


def _rank_and_world(module: pl.LightningModule | pl.LightningDataModule) -> tuple[int, int]:
    trainer = getattr(module, "_trainer", None) or getattr(module, "trainer", None)
    if trainer is None:
        return 0, 1
    return trainer.global_rank, trainer.world_size


class MapClassifier(pl.LightningModule):
    r"""A network of :mod:`pyg_sphere.nn.models` trained as a classifier of maps.

    Cross-entropy on maps divided by :obj:`input_scale`; Adam with learning rate :obj:`lr`
    multiplied by :obj:`lr_decay` after every step (Perraudin et al. 2019); accuracy, mean loss
    and (validation and test) confusion matrix as torchmetrics, so that they are exact sums
    over every process. After each validation, a row of :data:`HISTORY_FIELDS` is appended to
    :attr:`history`, which the checkpoints carry. Every training step starts by seeding torch
    from ``(seed, epoch, rank, step)``: runs are reproducible and a run resumed from a
    checkpoint continues exactly.

    Args:
        model_config (dict): The network's :attr:`config` (its constructor arguments), so
            that a checkpoint rebuilds it (:meth:`load_from_checkpoint`).
        model_class (str): Its class in :mod:`pyg_sphere.nn.models`. (default: ``'DeepSphere'``)
        input_scale (float): Inputs are divided by it (e.g. the training maps' std).
        lr, lr_decay, weight_decay (float): Adam and its per-step decay.
        seed (int): Seed of the per-step randomness.
        run_options (dict, optional): The options of the run, kept in the checkpoint so that a
            resume can be checked against them.

    Shapes:
        - **input:** a :class:`~pyg_sphere.loader.SharedGraphLoader` batch: x [B, N, F], y [B]
        - **output:** scores [B, num_classes]

    Example::

        >>> import torch
        >>> from pyg_sphere.nn import DeepSphere
        >>> config = DeepSphere(1, 2, nside=8, channels=(8, 16)).config
        >>> module = MapClassifier(config, lr=1e-3)
        >>> module(torch.randn(4, 768, 1)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        model_config: dict,
        *,
        model_class: str = "DeepSphere",
        input_scale: float = 1.0,
        lr: float = 2e-4,
        lr_decay: float = 0.999,
        weight_decay: float = 0.0,
        seed: int = 0,
        run_options: Optional[dict] = None,
    ) -> None:
        super().__init__()
        # Not in the loggers' hparams: the config holds the region's pixel ids.
        self.save_hyperparameters(logger=False)
        self.model = build_model(model_class, model_config)
        n = int(model_config["out_channels"])
        accuracy = torchmetrics.classification.MulticlassAccuracy
        confusion = torchmetrics.classification.MulticlassConfusionMatrix
        metrics = {}
        for stage in _STAGES:
            metrics[f"{stage}_loss"] = torchmetrics.MeanMetric()
            metrics[f"{stage}_acc"] = accuracy(num_classes=n, average="micro")
            if stage != "train":
                metrics[f"{stage}_confusion"] = confusion(num_classes=n)
        self.metrics = torch.nn.ModuleDict(metrics)
        self.history: list[dict] = []
        self.test_results: dict = {}
        self._epoch_start = time.perf_counter()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x / self.hparams.input_scale)

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=hp.lr_decay)
        schedule = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    # ----- steps ------------------------------------------------------------------------------
    def _step(self, batch, stage: str) -> torch.Tensor:
        out = self(batch.x)
        losses = F.cross_entropy(out, batch.y, reduction="none")
        self.metrics[f"{stage}_loss"].update(losses.detach())
        self.metrics[f"{stage}_acc"].update(out.detach(), batch.y)
        if f"{stage}_confusion" in self.metrics:
            self.metrics[f"{stage}_confusion"].update(out.detach().argmax(-1), batch.y)
        return losses.mean()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def _compute(self, stage: str) -> dict:
        """The stage's metrics over every process (``loss``, ``acc``, ``confusion``), reset."""
        out = {}
        for name in ("loss", "acc", "confusion"):
            metric = self.metrics[f"{stage}_{name}"] if f"{stage}_{name}" in self.metrics else None
            if metric is not None:
                value = metric.compute()
                out[name] = value.cpu().numpy().astype(int) if name == "confusion" else float(value)
                metric.reset()
        return out

    # ----- epochs -----------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        seed_step(self, batch_idx)

    def on_validation_epoch_end(self) -> None:
        val = self._compute("val")
        if self.trainer.sanity_checking or self.trainer.state.fn != "fit":
            return
        fit = self._compute("train")
        row = {
            "epoch": self.current_epoch + 1,
            "train_loss": fit["loss"],
            "train_acc": fit["acc"],
            "val_loss": val["loss"],
            "val_acc": val["acc"],
            "lr": self.lr_schedulers().get_last_lr()[0],
            "seconds": time.perf_counter() - self._epoch_start,
        }
        improved = all(row["val_acc"] > h["val_acc"] for h in self.history)
        self.history.append(row)
        # Logged after the epoch's own updates: what ModelCheckpoint and EarlyStopping monitor.
        # Every process holds the same (synced) values.
        for key in HISTORY_FIELDS[1:5]:
            self.log(key, row[key])
        if self.trainer.progress_bar_callback is not None:
            self.print(
                f"epoch {row['epoch']}/{self.trainer.max_epochs}  train loss "
                f"{row['train_loss']:.4f} acc {row['train_acc']:.3f} | val loss "
                f"{row['val_loss']:.4f} acc {row['val_acc']:.3f}"
                f"{'  (best)' if improved else ''}  [{row['seconds']:.0f} s]"
            )

    def on_test_epoch_end(self) -> None:
        test = self._compute("test")
        test["count"] = int(test["confusion"].sum())
        self.test_results = test
        self.log_dict({"test_loss": test["loss"], "test_acc": test["acc"]})

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = list(checkpoint.get("history", []))


_STAGES = ("train", "val", "test")


class SharedGraphDataModule(pl.LightningDataModule):
    r"""Train, validation and test splits of a map dataset, in
    :class:`~pyg_sphere.loader.SharedGraphLoader` batches.

    The training split is shuffled by a :class:`~torch.utils.data.DistributedSampler` (one
    process: all of it; :math:`W` processes: a :math:`1/W` share each), whose permutation
    depends on :obj:`seed` and the epoch only, and its items' random draws (fresh noise) on
    ``(seed, epoch, index)`` (:class:`EpochSeededItems`). Evaluation splits are split exactly
    between processes (every :math:`W`-th sample from the rank), so that summed metrics count
    every sample once. Give the trainer ``use_distributed_sampler=False`` and
    ``reload_dataloaders_every_n_epochs=1`` (:func:`make_trainer` does).

    Args:
        splits (dict): ``{'train', 'val', 'test'}`` datasets of maps on one graph each
            (e.g. :class:`~pyg_sphere.datasets.ConvergenceMaps`, with their transforms).
        batch_size (int): Samples per training step and process.
        eval_batch_size (int, optional): Samples per evaluation batch.
            (default: twice :obj:`batch_size`)
        num_workers (int): Loading processes. (default: :obj:`0`)
        seed (int): Seed of the shuffle. (default: :obj:`0`)
    """

    def __init__(
        self,
        splits: dict,
        batch_size: int,
        *,
        eval_batch_size: Optional[int] = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.splits = splits
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._train_items = EpochSeededItems(splits["train"], seed)

    def _loader_options(self) -> dict:
        on_cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return dict(num_workers=self.num_workers, pin_memory=on_cuda)

    def train_dataloader(self) -> SharedGraphLoader:
        # Made again every epoch (make_trainer reloads it) with the epoch's seeds.
        rank, world = _rank_and_world(self)
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        self._train_items.set_epoch(epoch)
        sampler = DistributedSampler(self._train_items, world, rank, shuffle=True, seed=self.seed)
        sampler.set_epoch(epoch)
        return SharedGraphLoader(
            self._train_items,
            batch_size=self.batch_size,
            sampler=sampler,
            graph=self.splits["train"].graph,
            **self._loader_options(),
        )

    def _eval_loader(self, split: str) -> SharedGraphLoader:
        rank, world = _rank_and_world(self)
        dataset = self.splits[split]
        shard = dataset if world == 1 else Subset(dataset, range(rank, len(dataset), world))
        return SharedGraphLoader(
            shard, batch_size=self.eval_batch_size, graph=dataset.graph, **self._loader_options()
        )

    def val_dataloader(self) -> SharedGraphLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> SharedGraphLoader:
        return self._eval_loader("test")


def _launched_devices(devices):
    """Devices and nodes of a run started by torchrun (or another launcher that sets
    ``LOCAL_WORLD_SIZE``): Lightning must be given what the launcher started."""
    local = os.environ.get("LOCAL_WORLD_SIZE")
    if devices in ("auto", None) and local is not None:
        world = int(os.environ.get("WORLD_SIZE", local))
        return int(local), max(1, world // int(local))
    return devices, None


def add_trainer_options(parser) -> None:
    """Adds Lightning's run options to an :mod:`argparse` parser or group: ``--accelerator``,
    ``--devices``, ``--num-nodes``, ``--strategy``, ``--precision`` and ``--logger``; read
    them back with :func:`trainer_options`."""
    parser.add_argument("--accelerator", default="auto", help="auto, cpu, gpu, ... (default auto)")
    parser.add_argument(
        "--devices",
        default="auto",
        help="devices (processes) per node: auto, a count such as 2, or a list such as 0,1; "
        "under torchrun or SLURM, what the launcher started (default auto)",
    )
    parser.add_argument("--num-nodes", type=int, default=None, help="nodes (SLURM; default 1)")
    parser.add_argument("--strategy", default="auto", help="auto, ddp, ... (default auto)")
    parser.add_argument(
        "--precision",
        default="32-true",
        help="32-true (default), bf16-mixed, 16-mixed (CUDA)",
    )
    parser.add_argument(
        "--logger",
        action="append",
        choices=("csv", "tensorboard"),
        default=None,
        help="logs in OUT/logs (csv, the default) and/or OUT/tb (tensorboard); repeatable",
    )


def trainer_options(args) -> dict:
    """The options of :func:`add_trainer_options` as keyword arguments of :func:`make_trainer`."""
    devices = str(args.devices)
    if devices != "auto":
        try:
            values = [int(v) for v in devices.split(",")]
        except ValueError:
            raise ValueError(
                f"--devices must be auto, a count or a list such as 0,1; got {devices!r}"
            ) from None
        devices = values if "," in str(args.devices) else values[0]
    return dict(
        accelerator=args.accelerator,
        devices=devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy,
        precision=args.precision,
        loggers=tuple(args.logger or ("csv",)),
    )


def make_trainer(
    out_dir: str,
    *,
    max_epochs: int,
    monitor: str,
    mode: str = "max",
    patience: Optional[int] = None,
    accelerator: str = "auto",
    devices: Any = "auto",
    num_nodes: Optional[int] = None,
    strategy: str = "auto",
    precision: Any = "32-true",
    loggers: Sequence[str] = ("csv",),
    quiet: bool = False,
    callbacks: Sequence[pl.Callback] = (),
    **trainer_kwargs,
) -> pl.Trainer:
    """A Lightning trainer that writes into :obj:`out_dir`: ``best.ckpt`` (the best epoch by
    :obj:`monitor`; ties keep the earlier epoch), ``last.ckpt`` (after every epoch, for
    ``ckpt_path=`` resume) and the logs of :obj:`loggers` (``'csv'``: ``logs/``,
    ``'tensorboard'``: ``tb/``).

    Args:
        out_dir (str): Output directory.
        max_epochs (int): Epochs in all (a resumed run continues up to it).
        monitor (str): Logged metric that selects the best epoch, e.g. ``'val_acc'``.
        mode (str): ``'max'`` or ``'min'``.
        patience (int, optional): Stop after this many epochs without improvement.
        accelerator, devices, num_nodes, strategy, precision: as for
            :class:`lightning.pytorch.Trainer`; under ``torchrun``, ``devices='auto'`` takes
            the processes the launcher started.
        loggers (sequence of str): ``'csv'`` and/or ``'tensorboard'``.
        quiet (bool): No progress bar, per-epoch lines or Lightning banners.
        callbacks: More callbacks.
        **trainer_kwargs: More :class:`~lightning.pytorch.Trainer` options.
    """
    # Two callbacks: ModelCheckpoint's save_last writes only in epochs that improve.
    best = ModelCheckpoint(
        dirpath=out_dir, filename="best", monitor=monitor, mode=mode, enable_version_counter=False
    )
    last = ModelCheckpoint(dirpath=out_dir, filename="last", enable_version_counter=False)
    extra = list(callbacks)
    if patience is not None:
        extra.append(EarlyStopping(monitor=monitor, mode=mode, patience=patience))
    devices, nodes = _launched_devices(devices)
    logger_list = []
    for name in loggers:
        if name == "csv":
            logger_list.append(pl.loggers.CSVLogger(out_dir, name="logs"))
        elif name == "tensorboard":
            logger_list.append(pl.loggers.TensorBoardLogger(out_dir, name="tb"))
        else:
            raise ValueError(f"unknown logger {name!r}: use 'csv' and/or 'tensorboard'")
    if quiet:
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    # One loader worker is this project's default on small machines; Lightning's advice about
    # more workers is noise there.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", ".*isinstance.treespec, LeafSpec.*")
    return pl.Trainer(
        default_root_dir=out_dir,
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes or nodes or 1,
        strategy=strategy,
        precision=precision,
        logger=logger_list or False,
        callbacks=[best, last, *extra],
        enable_progress_bar=not quiet,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        reload_dataloaders_every_n_epochs=1,
        **trainer_kwargs,
    )


class HistoryFile(pl.Callback):
    """Writes the module's :attr:`history` rows to ``path`` as CSV (columns :obj:`fields`)
    after every validation of a fit, from the first process, atomically."""

    def __init__(self, path: str, fields: Sequence[str] = HISTORY_FIELDS) -> None:
        self.path, self.fields = path, tuple(fields)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            write_csv(self.path, pl_module.history, self.fields)


def write_csv(path: str, rows: Sequence[dict], fields: Sequence[str]) -> None:
    """Writes dict rows as CSV with the columns :obj:`fields`, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def load_checkpoint(path: str) -> dict:
    """Reads a checkpoint of a :class:`MapClassifier` (or a module with the same
    hyper-parameters), e.g. ``best.ckpt`` or ``last.ckpt`` of ``pyg-sphere-train-cosmo``: a
    Lightning checkpoint whose ``hyper_parameters`` hold the model's class and config, the input
    scale and the run's options. Checkpoints hold pickled options: load only checkpoints you
    trust."""
    if not osp.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}: train first, or drop --resume/--init")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or "model_config" not in hparams:
        raise ValueError(
            f"{path} is not a checkpoint of pyg_sphere's training engine (no model config in its "
            "hyper_parameters): give a best.ckpt or last.ckpt written by pyg-sphere-train-cosmo"
        )
    return ckpt


def model_state(ckpt: dict) -> dict:
    """The network's own weights in a checkpoint of a module that holds it as ``model``."""
    prefix = "model."
    return {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    """Rebuilds the network of a checkpoint from its config and loads its weights; its inputs
    are maps divided by ``ckpt['hyper_parameters']['input_scale']``.

    Example::

        ckpt = load_checkpoint('runs/a/best.ckpt')
        model = model_from_checkpoint(ckpt).eval()
        scores = model(x / ckpt['hyper_parameters']['input_scale'])
    """
    hparams = ckpt["hyper_parameters"]
    model = build_model(hparams.get("model_class", "DeepSphere"), hparams["model_config"])
    return model.load_checkpoint_state(model_state(ckpt), hparams["model_config"])


def best_checkpoint(trainer: pl.Trainer) -> str:
    """The path of the best checkpoint of a finished :meth:`~lightning.pytorch.Trainer.fit`
    (the last one if no epoch was monitored)."""
    callback = trainer.checkpoint_callback
    path = callback.best_model_path if callback is not None else ""
    if path and osp.isfile(path):
        return path
    return osp.join(trainer.default_root_dir, "last.ckpt")
