r"""Lightning modules that train summary networks (compressors) for parameter inference.

A compressor maps a patch to a few numbers that keep what the patch says about the parameters.
Two ways to train one, both on fresh simulations streamed by
:class:`~pyg_sphere.datasets.FisherStream` and :class:`~pyg_sphere.datasets.PriorStream`:

- :class:`FisherCompressor`: maximises the Fisher information of the summaries at a fiducial
  point (:func:`pyg_sphere.inference.fisher_information_loss`, the IMNN / "delta" loss of
  Charnock et al. 2018 and Fluri et al. 2022) from fiducial maps and their :math:`\pm` step
  twins. With ``features``, fixed classical summaries of each patch (e.g. power spectrum and
  histogram) are appended to the network's outputs, and the Fisher information of the whole
  vector is what the loss maximises ("hybrid" summaries, Makinen et al. 2024).
- :class:`PosteriorCompressor`: variational mutual-information maximisation (VMIM, Jeffrey et
  al. 2021): the network and a conditional normalising flow
  (:class:`~pyg_sphere.inference.NeuralPosterior`) trained together on prior draws to
  minimise :math:`-\ln q(\theta \mid s)`.

:class:`StreamDataModule` serves the streams (a new epoch of maps every epoch). Both modules keep
a history row per epoch in their checkpoints and seed every step from ``(seed, epoch, rank,
step)``, as :class:`~pyg_sphere.apps.engine.MapClassifier` does; train them with
:func:`~pyg_sphere.apps.engine.make_trainer`. Lightning is the ``[train]`` extra, the flow the
``[inference]`` extra.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from pyg_sphere.apps.engine import build_model, pl, seed_step
from pyg_sphere.inference import (
    NeuralPosterior,
    fisher_information_loss,
    summary_fisher,
    summary_layout,
)

__all__ = ["WithFeatures", "StreamDataModule", "FisherCompressor", "PosteriorCompressor"]


class WithFeatures(IterableDataset):
    """A stream whose items gain ``features``: :obj:`fn` of the item's ``x`` as a numpy array,
    computed in the loader's workers.

    :obj:`fn` gets the maps in the layout of :mod:`pyg_sphere.inference`'s summaries
    (:func:`~pyg_sphere.inference.summary_layout`): ``[m, N]`` from a single-channel stream,
    ``[m, C, N]`` (bins first) from a stream of ``C`` tomographic bins, so that e.g.
    ``HistogramSummary(n_bins=C)`` or ``TomographicPowerSpectrumSummary(nside, C, pixels=...)``
    can be given as they are.

    Args:
        stream: A :class:`~pyg_sphere.datasets.FisherStream` or
            :class:`~pyg_sphere.datasets.PriorStream` (or any stream of dict items whose
            ``x`` is ``[..., N, C]``).
        fn (callable): float32 maps ``[m, N]`` (or ``[m, C, N]``) to features ``[m, k]``,
            e.g. a :class:`~pyg_sphere.inference.Summary`.
    """

    def __init__(self, stream, fn: Callable) -> None:
        self.stream, self.fn = stream, fn

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.stream)

    def fewest_worker_items(self, num_workers: int) -> Optional[int]:
        return self.stream.fewest_worker_items(num_workers)

    def __iter__(self):
        for item in self.stream:
            x = item["x"].numpy()  # [..., N, C]
            features = np.asarray(self.fn(summary_layout(x)), dtype=np.float32)
            item["features"] = torch.from_numpy(features.reshape(*x.shape[:-2], -1))
            yield item


class StreamDataModule(pl.LightningDataModule):
    """Streams of simulations for training and validation.

    The training stream gets :meth:`set_epoch` with the epoch before each epoch's loader is
    made (fresh maps every epoch); the validation stream should be a fixed set
    (``evaluation=True``), the same every epoch.

    Args:
        train: The training stream.
        val (optional): The validation stream.
        batch_size (int): Items per step.
        val_batch_size (int, optional): Items per validation batch. (default: :obj:`batch_size`)
        num_workers (int): Loader processes that simulate. (default: :obj:`0`)

    Raises:
        ValueError: from :meth:`train_dataloader`, when a loader worker serves fewer training
            items per epoch than a batch (``fewest_worker_items`` of the stream).
    """

    def __init__(
        self,
        train,
        val=None,
        *,
        batch_size: int,
        val_batch_size: Optional[int] = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.train, self.val = train, val
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        self.train.set_epoch(self.trainer.current_epoch if self.trainer is not None else 0)
        fewest = getattr(self.train, "fewest_worker_items", None)
        share = None if fewest is None else fewest(self.num_workers)
        if share is not None and share < self.batch_size:
            raise ValueError(
                f"a training batch of {self.batch_size} items is more than the {share} items "
                f"that one of the {max(self.num_workers, 1)} loader worker(s) serves per epoch "
                "(incomplete batches are dropped, so it would train on nothing): give the "
                "stream more maps (num_maps), use fewer workers or a smaller batch_size"
            )
        return DataLoader(
            self.train,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            multiprocessing_context=_worker_context(self.num_workers),
            persistent_workers=False,
            drop_last=True,  # a loss on batch statistics needs full batches
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val,
            batch_size=self.val_batch_size,
            num_workers=self.num_workers,
            multiprocessing_context=_worker_context(self.num_workers),
        )


def _worker_context(num_workers: int) -> Optional[str]:
    """Spawned workers: they simulate with healpy, whose OpenMP runtime hangs in a process
    forked from one that has used it (the main process computes spectra and Fisher sets)."""
    return "spawn" if num_workers > 0 else None


def _check_input_scale(scale, channels: int) -> torch.Tensor:
    """The input scale as a float32 tensor ``[1]`` or ``[channels]``, positive and finite."""
    try:
        t = torch.as_tensor(scale, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        t = None
    if (
        t is None
        or len(t) not in (1, channels)
        or not bool(torch.isfinite(t).all() & (t > 0).all())
    ):
        raise ValueError(
            f"input_scale must be a positive number or one per input channel ({channels}), "
            f"got {scale!r}"
        )
    return t.float()


class _Compressor(pl.LightningModule):
    """What both compressors share: the network, its input scale, appended features, Adam,
    per-step seeds and the per-epoch history."""

    #: The validation metric that selects the best epoch, and whether larger is better.
    monitor, monitor_mode = "", "max"

    def __init__(self, model_config: dict, model_class: str, input_scale) -> None:
        super().__init__()
        self.model = build_model(model_class, model_config)
        scale = _check_input_scale(input_scale, int(model_config["in_channels"]))
        # A buffer follows the module to its device; not persistent: the hparams hold it.
        self.register_buffer("_input_scale", scale, persistent=False)
        self.history: list[dict] = []
        self._epoch_start = time.perf_counter()
        self._train_losses: list[float] = []

    def summaries(self, x: torch.Tensor, features: Optional[torch.Tensor] = None):
        """The summaries of maps ``x`` ``[B, N, C]`` (and their ``features`` ``[B, k]``)."""
        s = self._network(x)
        if features is None:
            return s
        return torch.cat([s, self._standardised(features)], dim=-1)

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        return x / self._input_scale.to(x.dtype)

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._scaled(x))

    def _standardised(self, features: torch.Tensor) -> torch.Tensor:
        return features

    def forward(self, x: torch.Tensor, features: Optional[torch.Tensor] = None):
        return self.summaries(x, features)

    def configure_optimizers(self):
        hp = self.hparams
        return torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        self._train_losses = []

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        seed_step(self, batch_idx)

    def _record(self, loss: torch.Tensor) -> None:
        self._train_losses.append(float(loss.detach()))
        self.log("train_loss", loss.detach(), prog_bar=True, batch_size=1)

    def _end_epoch(self, values: dict) -> None:
        """Appends the epoch's history row (after its validation), logs and prints it."""
        if self.trainer.sanity_checking or self.trainer.state.fn != "fit":
            return
        row = {
            "epoch": self.current_epoch + 1,
            "train_loss": float(np.mean(self._train_losses)) if self._train_losses else np.nan,
            **values,
            "seconds": time.perf_counter() - self._epoch_start,
        }
        sign = 1 if self.monitor_mode == "max" else -1
        improved = all(sign * row[self.monitor] > sign * h[self.monitor] for h in self.history)
        self.history.append(row)
        for key, value in values.items():
            self.log(key, value, batch_size=1)
        if self.trainer.progress_bar_callback is not None:
            text = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch",))
            best = "  (best)" if improved else ""
            self.print(f"epoch {row['epoch']}/{self.trainer.max_epochs}  {text}{best}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = list(checkpoint.get("history", []))


class FisherCompressor(_Compressor):
    r"""A network whose outputs maximise their Fisher information at a fiducial point.

    Trained on batches of :class:`~pyg_sphere.datasets.FisherStream` items (each a fiducial
    patch and its :math:`\pm` step twins sharing their random draws) with
    :func:`~pyg_sphere.inference.fisher_information_loss`; validated by
    :math:`\ln \det F` of a fixed validation set (logged ``val_log_det_fisher``, the metric
    that selects the best epoch). The network's outputs are shifted and scaled to unit
    variance on the first training batch (:meth:`calibrate`). With :obj:`feature_mean` and
    :obj:`feature_whitening`, the
    items' ``features`` (fixed classical summaries, :class:`WithFeatures`) are whitened,
    :math:`W (f - \mu)`, and appended to the network's outputs: a hybrid summary whose whole
    Fisher information is maximised.

    Args:
        model_config (dict): The network's config (e.g. a
            :class:`~pyg_sphere.nn.models.DeepSphere` with :math:`d` outputs).
        step (sequence of float): The finite-difference steps :math:`\delta_a` of the stream.
        model_class (str): Its class in :mod:`pyg_sphere.nn.models`. (default: ``'DeepSphere'``)
        input_scale (float or sequence of float): Inputs are divided by it: one number, or one
            per input channel (tomographic bins differ in amplitude by several times).
            (default: :obj:`1.0`)
        feature_mean (torch.Tensor, optional): :math:`\mu`, ``[k]``.
        feature_whitening (torch.Tensor, optional): :math:`W`, ``[k, k]``, e.g. the inverse
            Cholesky factor of the features' fiducial covariance.
        lr, weight_decay (float): Adam. (default: :obj:`1e-3`, :obj:`0`)
        regularization (float): Strength of the covariance regulariser of the loss.
            (default: :obj:`1.0`)
        seed (int): Seed of the per-step randomness. (default: :obj:`0`)

    Shapes:
        - **input:** maps :math:`(B, N, C)`, features :math:`(B, k)` (hybrid)
        - **output:** summaries :math:`(B, d)` or :math:`(B, d + k)` (hybrid)
    """

    monitor, monitor_mode = "val_log_det_fisher", "max"

    def __init__(
        self,
        model_config: dict,
        step: Sequence[float],
        *,
        model_class: str = "DeepSphere",
        input_scale=1.0,
        feature_mean: Optional[torch.Tensor] = None,
        feature_whitening: Optional[torch.Tensor] = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        regularization: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(model_config, model_class, input_scale)
        self.save_hyperparameters(logger=False)
        if (feature_mean is None) != (feature_whitening is None):
            raise ValueError("give both feature_mean and feature_whitening, or neither")
        k = 0 if feature_mean is None else len(feature_mean)
        self.register_buffer("feature_mean", torch.zeros(k) if k == 0 else feature_mean.float())
        whitening = torch.zeros(0, 0) if k == 0 else feature_whitening.float()
        if whitening.shape != (k, k):
            raise ValueError(
                f"feature_whitening must be [k, k] = [{k}, {k}], got {tuple(whitening.shape)}"
            )
        self.register_buffer("feature_whitening", whitening)
        outputs = int(model_config["out_channels"])
        self.register_buffer("output_shift", torch.zeros(outputs))
        self.register_buffer("output_scale", torch.ones(outputs))
        self.register_buffer("calibrated", torch.tensor(False))
        self._val: list[torch.Tensor] = []

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        return (self.model(self._scaled(x)) - self.output_shift) / self.output_scale

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Sets the network outputs' shift and scale to their mean and standard deviation over
        maps ``x`` ``[B, N, C]``, so that training starts with summaries of unit covariance
        (a data-dependent initialisation, as ActNorm's): an untrained network's outputs vary
        by orders of magnitude less than one, and the loss's covariance regulariser would
        otherwise dominate the first steps. Done on the first training batch unless already
        calibrated."""
        self.output_shift.zero_()
        self.output_scale.fill_(1.0)
        s = self._network(x)
        self.output_shift.copy_(s.mean(0))
        self.output_scale.copy_(s.std(0).clamp_min(torch.finfo(s.dtype).tiny))
        self.calibrated.fill_(True)

    @property
    def num_features(self) -> int:
        """The number :math:`k` of appended features (0: the network's outputs alone)."""
        return len(self.feature_mean)

    def _standardised(self, features: torch.Tensor) -> torch.Tensor:
        if self.num_features == 0:
            raise ValueError(
                "this compressor was built without features: give feature_mean and "
                "feature_whitening to append them, or drop the stream's features"
            )
        return (features - self.feature_mean) @ self.feature_whitening.T

    def _batch_summaries(self, batch: dict) -> torch.Tensor:
        """Summaries ``[B, 1 + 2p, d]`` of a :class:`~pyg_sphere.datasets.FisherStream` batch."""
        x = batch["x"]
        b, v = x.shape[:2]
        features = batch.get("features")
        if features is not None:
            features = features.flatten(0, 1)
        elif self.num_features:
            raise ValueError(
                "this hybrid compressor needs the items' features: wrap the stream in "
                "WithFeatures(stream, summary)"
            )
        return self.summaries(x.flatten(0, 1), features).view(b, v, -1)

    def _split(self, s: torch.Tensor):
        p = len(self.hparams.step)
        return s[:, 0], s[:, 1 : 1 + p], s[:, 1 + p : 1 + 2 * p]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if not self.calibrated:
            self.calibrate(batch["x"][:, 0])
        fiducial, plus, minus = self._split(self._batch_summaries(batch))
        loss = fisher_information_loss(
            fiducial,
            plus,
            minus,
            self.hparams.step,
            regularization=self.hparams.regularization,
        )
        self._record(loss)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._val.append(self._batch_summaries(batch).detach())

    def on_validation_epoch_end(self) -> None:
        s = torch.cat(self._val)
        self._val = []
        fisher = summary_fisher(*self._split(s.double()), self.hparams.step)
        self._end_epoch({"val_log_det_fisher": float(torch.logdet(fisher))})


class PosteriorCompressor(_Compressor):
    r"""A network trained with a conditional flow by variational mutual-information
    maximisation: the loss is :math:`-\ln q(\theta \mid s(x))` of
    :class:`~pyg_sphere.inference.NeuralPosterior` over prior draws
    (:class:`~pyg_sphere.datasets.PriorStream` items), with gradients into the network.
    Validated by the mean loss of a fixed validation set (``val_loss``, which selects the best
    epoch).

    Args:
        model_config (dict): The network's config (:math:`d` outputs).
        bounds (array-like): The prior box, ``[p, 2]``.
        model_class, input_scale, lr, weight_decay, seed: As in :class:`FisherCompressor`.
        flow_options (dict, optional): More arguments of
            :class:`~pyg_sphere.inference.NeuralPosterior` (``hidden``, ``transforms``, ...).

    Shapes:
        - **input:** maps :math:`(B, N, C)`
        - **output:** summaries :math:`(B, d)`
    """

    monitor, monitor_mode = "val_loss", "min"

    def __init__(
        self,
        model_config: dict,
        bounds,
        *,
        model_class: str = "DeepSphere",
        input_scale=1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        seed: int = 0,
        flow_options: Optional[dict] = None,
    ) -> None:
        super().__init__(model_config, model_class, input_scale)
        self.save_hyperparameters(logger=False)
        bounds = torch.as_tensor(bounds, dtype=torch.float32)
        outputs = int(model_config["out_channels"])
        self.posterior = NeuralPosterior(
            len(bounds), outputs, bounds=bounds, **(flow_options or {})
        )
        self._val: list[float] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.posterior.loss(batch["theta"], self.summaries(batch["x"]))
        self._record(loss)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = self.posterior.loss(batch["theta"], self.summaries(batch["x"]))
        self._val.append((float(loss), len(batch["theta"])))

    def on_validation_epoch_end(self) -> None:
        total = sum(n for _, n in self._val)
        value = sum(loss * n for loss, n in self._val) / max(total, 1)
        self._val = []
        self._end_epoch({"val_loss": value})
