"""Summary networks trained through Lightning: the Fisher compressor gains information on a
fixed validation set, hybrids append features, checkpoints rebuild, divergence stops with a
message, VMIM trains. The whole inference workflow runs in tests/test_examples.py."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pyg_sphere.apps.compressors import (
    FisherCompressor,
    PosteriorCompressor,
    StreamDataModule,
    WithFeatures,
)
from pyg_sphere.apps.engine import best_checkpoint, make_trainer
from pyg_sphere.datasets import FisherStream, PriorStream, fiducial_patch_std
from pyg_sphere.inference import HistogramSummary, fisher_matrix
from pyg_sphere.nn import DeepSphere

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model(stream, outputs=2):
    return DeepSphere(
        1, outputs, stream.nside, pixels=stream.patch_pixels(0), channels=(4, 8), K=3, pool="mean"
    )


def fisher_streams(**kw):
    common = dict(nside=16, order=1, gaussian=True, **kw)
    train = FisherStream(**common, num_maps=16, seed=1)
    val = FisherStream(**common, num_maps=6, seed=2, evaluation=True)
    return train, val


def log_det_fisher(module, items) -> float:
    """ln det F of a compressor's summaries of Fisher items, by numpy's fisher_matrix."""
    x = torch.stack([it["x"] for it in items])
    with torch.no_grad():
        s = module.eval()(x.flatten(0, 1)).view(len(items), 5, -1).double().numpy()
    fisher = fisher_matrix(
        s[:, 0], s[:, 1:3].transpose(1, 0, 2), s[:, 3:].transpose(1, 0, 2), [0.02, 0.02]
    )
    return float(np.log(np.linalg.det(fisher)))


def test_fisher_compressor_learns_and_its_checkpoint_rebuilds(tmp_path):
    # A random network's information varies with its weights (ln det F from 0.2 to 8.7 over
    # four seeds): a seed whose start is poor shows what training adds.
    torch.manual_seed(1)
    train, val = fisher_streams()
    items = list(val)
    model = small_model(train)
    scale = fiducial_patch_std(16, gaussian=True)
    module = FisherCompressor(model.config, train.steps, input_scale=scale, lr=3e-3, seed=1)
    untrained = log_det_fisher(module, items)
    trainer = make_trainer(str(tmp_path), max_epochs=4, monitor=module.monitor, quiet=True)
    trainer.fit(module, datamodule=StreamDataModule(train, val, batch_size=24))
    logdet = [h["val_log_det_fisher"] for h in module.history]
    assert len(logdet) == 4 and all(math.isfinite(v) for v in logdet)
    # Trained on fresh maps, the summaries carry more information on a fixed validation set.
    assert max(logdet) > untrained + 3.0  # measured: 0.15 -> 5.94
    assert bool(module.calibrated)  # outputs scaled on the first batch, saved in checkpoints

    # The best checkpoint rebuilds the compressor; the Fisher matrix of its summaries
    # (numpy's independent estimate) is the one logged for its epoch.
    best = FisherCompressor.load_from_checkpoint(best_checkpoint(trainer))
    assert log_det_fisher(best, items) == pytest.approx(max(logdet), abs=1e-3)


def test_hybrid_appends_whitened_features(tmp_path):
    train, val = fisher_streams()
    hist = HistogramSummary(bins=5).fit(torch.stack([it["x"][0, :, 0] for it in val]).numpy())
    model = small_model(train)
    k = 4
    mean, whitening = torch.randn(k), torch.eye(k) * 2
    module = FisherCompressor(
        model.config, train.steps, feature_mean=mean, feature_whitening=whitening
    )
    x = torch.randn(3, model.num_nodes, 1)
    features = torch.randn(3, k)
    with torch.no_grad():
        out = module(x, features)
    assert out.shape == (3, 2 + k)
    assert torch.allclose(out[:, 2:], 2 * (features - mean))
    with pytest.raises(ValueError, match="needs the items' features"):
        module._batch_summaries({"x": torch.randn(2, 5, model.num_nodes, 1)})

    # Trained with the features computed in the loader, and rebuilt with its buffers.
    module = FisherCompressor(
        model.config, train.steps, feature_mean=torch.zeros(k), feature_whitening=torch.eye(k)
    )
    trainer = make_trainer(str(tmp_path), max_epochs=1, monitor=module.monitor, quiet=True)
    data = StreamDataModule(WithFeatures(train, hist), WithFeatures(val, hist), batch_size=24)
    trainer.fit(module, datamodule=data)
    rebuilt = FisherCompressor.load_from_checkpoint(best_checkpoint(trainer))
    assert rebuilt.num_features == k and torch.equal(rebuilt.feature_whitening, torch.eye(k))


def test_divergence_stops_with_a_message(tmp_path):
    train, val = fisher_streams()
    model = small_model(train)
    module = FisherCompressor(model.config, train.steps)
    # A network whose outputs do not depend on the map: a singular covariance.
    for p in module.model.parameters():
        p.data.zero_()
        p.requires_grad_(False)
    trainer = make_trainer(str(tmp_path), max_epochs=1, monitor=module.monitor, quiet=True)
    with pytest.raises(ValueError, match="constant|singular|diverg|non-finite"):
        trainer.fit(module, datamodule=StreamDataModule(train, val, batch_size=24))
    assert not (tmp_path / "last.ckpt").exists()  # no checkpoint of a broken state


def test_posterior_compressor_vmim(tmp_path):
    common = dict(nside=16, order=1, gaussian=True)
    train = PriorStream(**common, num_maps=16, seed=3)
    val = PriorStream(**common, num_maps=4, seed=4, evaluation=True)
    model = small_model(train, outputs=3)
    bounds = [[0.15, 0.45], [0.5, 1.1]]
    module = PosteriorCompressor(
        model.config,
        bounds,
        input_scale=fiducial_patch_std(16, gaussian=True),
        lr=3e-3,
        flow_options={"transforms": 1},
    )
    trainer = make_trainer(
        str(tmp_path), max_epochs=3, monitor=module.monitor, mode=module.monitor_mode, quiet=True
    )
    trainer.fit(module, datamodule=StreamDataModule(train, val, batch_size=32))
    losses = [h["val_loss"] for h in module.history]
    assert all(math.isfinite(v) for v in losses) and min(losses) < losses[0]
    best = torch.load(best_checkpoint(trainer), weights_only=False)
    assert best["history"][-1]["val_loss"] == min(losses)  # the lowest validation loss
    rebuilt = PosteriorCompressor.load_from_checkpoint(best_checkpoint(trainer)).eval()
    with torch.no_grad():
        s = rebuilt(torch.randn(2, model.num_nodes, 1) * 0.01)
        samples = rebuilt.posterior.sample(s, 50)
    assert samples.shape == (50, 2, 2)


def test_tomographic_streams_channels_scales_and_features(tmp_path):
    """Bins as channels: one input scale per bin, features of the bins-first maps, and a
    compressor trained on them."""
    from pyg_sphere.datasets import smail_bins

    common = dict(nside=8, order=1, gaussian=True, bins=smail_bins(2))
    train = FisherStream(**common, num_maps=4, seed=1)
    val = FisherStream(**common, num_maps=4, seed=2, evaluation=True)
    model = DeepSphere(2, 2, 8, pixels=train.patch_pixels(0), channels=(4,), K=3, pool="mean")
    scale = (2e-3, 5e-3)
    scaled = FisherCompressor(model.config, train.steps, input_scale=scale)
    plain = FisherCompressor(model.config, train.steps)
    plain.model.load_state_dict(scaled.model.state_dict())
    x = torch.randn(3, model.num_nodes, 2) * 1e-3
    with torch.no_grad():
        assert torch.allclose(scaled(x), plain(x / torch.tensor(scale)))
    for bad in ((1.0, 2.0, 3.0), (1.0, -1.0), "a"):
        with pytest.raises(ValueError, match="one per input channel"):
            FisherCompressor(model.config, train.steps, input_scale=bad)

    items = list(val)
    hist = HistogramSummary(bins=4, n_bins=2)
    hist.fit(torch.stack([it["x"][0] for it in items]).permute(0, 2, 1).numpy())
    with_features = list(WithFeatures(val, hist))
    for it, wf in zip(items, with_features):
        expected = hist(it["x"].permute(0, 2, 1).numpy())  # [5 variants, 2 bins, N]
        np.testing.assert_allclose(wf["features"].numpy(), expected, rtol=1e-6)

    module = FisherCompressor(model.config, train.steps, input_scale=scale)
    trainer = make_trainer(str(tmp_path), max_epochs=1, monitor=module.monitor, quiet=True)
    trainer.fit(module, datamodule=StreamDataModule(train, val, batch_size=24))
    assert len(module.history) == 1 and math.isfinite(module.history[0]["val_log_det_fisher"])
    rebuilt = FisherCompressor.load_from_checkpoint(best_checkpoint(trainer))
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), module.eval()(x))


def test_a_batch_larger_than_a_workers_share_is_refused():
    """Each worker drops its incomplete last batch: a batch beyond a worker's items would train
    on nothing, silently."""
    train, val = fisher_streams()  # 16 maps x 12 patches
    assert train.fewest_worker_items(0) == 192 and train.fewest_worker_items(3) == 60
    assert WithFeatures(train, None).fewest_worker_items(2) == 96
    loader = StreamDataModule(train, val, batch_size=96, num_workers=2).train_dataloader()
    assert len(loader) == 2
    with pytest.raises(ValueError, match="one of the 2 loader worker"):
        StreamDataModule(train, val, batch_size=97, num_workers=2).train_dataloader()
