"""The simulation streams with tomographic bins: one channel per bin, each realisation the
maps of simulate_tomographic_maps from its spawn key, processed and cut as one-bin maps are,
Fisher twins sharing their unit draws and shape noise, bad options refused."""

import itertools
import pickle

import healpy as hp
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pyg_sphere.datasets import (
    FisherStream,
    PriorStream,
    fiducial_patch_std,
    simulate_tomographic_maps,
    smail_bins,
)
from pyg_sphere.datasets.designs import FISHER_STREAM, PRIOR_STREAM
from pyg_sphere.datasets.lognormal_maps import map_rng
from pyg_sphere.datasets.tomography import bin_densities, shape_noise_std

NSIDE = 16
BINS = smail_bins(2)


def take(stream, n=None):
    return list(itertools.islice(iter(stream), n))


def key_rng(seed, key):
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def oracle(stream, omega_m, sigma_8, rng):
    """The patches of simulate_tomographic_maps' maps drawn from ``rng``, processed by hand
    as ConvergenceMaps processes a file: [len(patches), N, n_bins]."""
    maps = simulate_tomographic_maps(
        NSIDE, omega_m, sigma_8, stream.bins, rng=rng, gaussian=stream.gaussian, lmax=stream.lmax
    )
    out = []
    for m in maps:
        m = m.astype(np.float32).astype(np.float64)
        m -= m.mean()
        if stream.smoothing_arcmin is not None:
            fwhm = np.radians(stream.smoothing_arcmin / 60.0)
            m = hp.smoothing(m, fwhm=fwhm, nest=False, use_pixel_weights=False)
        nested = hp.reorder(m, r2n=True).reshape(stream.num_patches, -1)
        out.append(nested[stream.patches].astype(np.float32))
    return np.stack(out, axis=-1)


def test_items_have_one_channel_per_bin():
    fisher = FisherStream(NSIDE, bins=BINS, num_maps=1, patches=[0, 7])
    batch = next(iter(DataLoader(fisher, batch_size=2)))
    assert fisher.num_channels == 2 and batch["x"].shape == (2, 5, 256, 2)
    assert batch["theta"].shape == (2, 5, 2) and batch["patch_id"].tolist() == [0, 7]
    prior = PriorStream(NSIDE, order=2, bins=smail_bins(3), num_maps=1, patches=[1])
    (item,) = take(prior)
    assert prior.num_channels == 3 and item["x"].shape == (prior.patch_size, 3)
    assert item["x"].dtype == torch.float32
    assert FisherStream(NSIDE, num_maps=1).num_channels == 1  # one-bin maps: unchanged


def test_prior_evaluation_maps_are_simulate_tomographic_maps_of_the_designs_key():
    stream = PriorStream(NSIDE, bins=BINS, num_maps=2, evaluation=True, seed=5, patches=[2, 9])
    items = take(stream)
    for i in range(2):
        om, s8 = (float(v) for v in stream.theta(i))
        expected = oracle(stream, om, s8, map_rng(5, PRIOR_STREAM, i))
        got = np.stack([items[2 * i + k]["x"].numpy() for k in range(2)])
        np.testing.assert_array_equal(got, expected)
        assert torch.allclose(items[2 * i]["theta"], torch.tensor([om, s8]))
    # a second bin's map is not the first's, and the bins are correlated
    x = np.concatenate([item["x"].numpy() for item in items[:2]])
    assert 0.3 < np.corrcoef(x.T)[0, 1] < 0.999


def test_fisher_variants_share_their_unit_draws_and_differ_smoothly():
    stream = FisherStream(
        NSIDE, bins=BINS, gaussian=True, smoothing_arcmin=60.0, num_maps=1, epoch=2, seed=1
    )
    items = take(stream)
    x = np.stack([item["x"].numpy() for item in items])  # [patches, variants, N, bins]
    training_key = (FISHER_STREAM, 1, 2, 0)  # (stream, _TRAINING, epoch, j)
    for v, (om, s8) in enumerate(stream.cosmologies):
        np.testing.assert_array_equal(x[:, v], oracle(stream, om, s8, key_rng(1, training_key)))
    fid, plus, minus = x[:, 0], x[:, 1:3], x[:, 3:]
    for b in range(2):  # common random numbers: the twins are the fiducial map, slightly off
        assert np.std(plus[..., b] - minus[..., b]) < 0.2 * np.std(fid[..., b])


def test_lognormal_fisher_evaluation_set_follows_map_rng():
    stream = FisherStream(NSIDE, bins=BINS, num_maps=1, evaluation=True, seed=2, patches=[4])
    (item,) = take(stream)
    for v, (om, s8) in enumerate(stream.cosmologies):
        expected = oracle(stream, om, s8, map_rng(2, FISHER_STREAM, 0))
        np.testing.assert_array_equal(item["x"][v].numpy(), expected[0])


def test_shape_noise_is_per_bin_shared_by_the_twins_and_from_the_noise_key():
    options = dict(bins=BINS, num_maps=1, seed=3, patches=[0, 1, 2])
    clean = np.stack([i["x"].numpy() for i in take(FisherStream(NSIDE, **options))])
    noisy_stream = FisherStream(NSIDE, sigma_e=0.26, n_gal=[20.0, 10.0], **options)
    noisy = np.stack([i["x"].numpy() for i in take(noisy_stream)])
    noise = noisy - clean
    std = shape_noise_std(NSIDE, 0.26, bin_densities(BINS, [20.0, 10.0]))
    np.testing.assert_allclose(noisy_stream.sigma, std)
    for v in range(1, 5):  # the same noise on every variant
        np.testing.assert_allclose(noise[:, v], noise[:, 0], rtol=0, atol=1e-6)
    # the noise of the child key (stream, 1, 0, 0, 0), one full-sky draw per bin
    unit = key_rng(3, (FISHER_STREAM, 1, 0, 0, 0)).standard_normal((2, 12 * NSIDE**2), "f4")
    unit = unit.reshape(2, 12, -1)[:, [0, 1, 2]].transpose(1, 2, 0)
    np.testing.assert_allclose(noise[:, 0], unit * std.astype(np.float32), rtol=1e-3, atol=1e-6)
    assert "sigma_e=0.26" in repr(noisy_stream) and "n_gal=(20.0, 10.0)" in repr(noisy_stream)


def test_epochs_and_shards_hold_distinct_reproducible_maps():
    stream = FisherStream(NSIDE, bins=BINS, num_maps=2, patches=[0])
    first = [i["x"] for i in take(stream)]
    assert all(torch.equal(a, b["x"]) for a, b in zip(first, take(stream)))
    copy = pickle.loads(pickle.dumps(stream))  # as a worker receives it
    assert all(torch.equal(a, b["x"]) for a, b in zip(first, take(copy)))
    stream.set_epoch(1)
    assert not any(torch.equal(a, b["x"]) for a, b in zip(first, take(stream)))
    shards = [
        take(FisherStream(NSIDE, bins=BINS, num_maps=2, patches=[0], shard=(r, 2))) for r in (0, 1)
    ]
    assert torch.equal(shards[0][0]["x"], first[0]) and torch.equal(shards[1][0]["x"], first[1])


def test_reprs_mention_the_bins():
    fisher = FisherStream(NSIDE, bins=BINS, num_maps=1)
    prior = PriorStream(NSIDE, bins=smail_bins(3), sigma_e=0.26, n_gal=30)
    assert "bins=SourceBins(n_bins=2" in repr(fisher) and "no shape noise" in repr(fisher)
    assert "bins=SourceBins(n_bins=3" in repr(prior) and "n_gal=30.0" in repr(prior)
    assert "bins" not in repr(FisherStream(NSIDE, num_maps=1))
    np.testing.assert_array_equal(fisher.sigma, [0.0, 0.0])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(bins=4), TypeError, "SourceBins"),
        (dict(bins=BINS, n_gal=30), ValueError, "sigma_e > 0"),
        (dict(bins=BINS, sigma_e=0.26), ValueError, "n_gal"),
        (dict(sigma_e=0.26, n_gal=30), ValueError, "bins="),
        (dict(n_gal=30), ValueError, "bins="),
        (dict(bins=BINS, noise=1.0), ValueError, "shape noise in physical units"),
        (dict(bins=BINS, noise_scale=0.002), ValueError, "shape noise in physical units"),
        (dict(bins=BINS, sigma_e=-0.1, n_gal=30), ValueError, "sigma_e"),
        (dict(bins=BINS, sigma_e="x", n_gal=30), ValueError, "sigma_e"),
        (dict(bins=BINS, sigma_e=0.26, n_gal=[30, 10, 5]), ValueError, "n_gal"),
        (dict(bins=BINS, sigma_e=[0.2, 0.3, 0.1], n_gal=30), ValueError, "sigma_e"),
        (dict(bins=BINS, sigma_e=0.26, n_gal=[30, 0]), ValueError, "no galaxies"),
    ],
)
def test_bad_bin_options_are_refused_with_the_reason(kwargs, error, match):
    for cls in (FisherStream, PriorStream):
        with pytest.raises(error, match=match):
            cls(NSIDE, num_maps=1, **kwargs)


def test_fiducial_patch_std_of_each_bin():
    """The input unit of tomographic maps: the std of each bin's noiseless fiducial maps, as
    the simulator makes them (float32, mean removed)."""
    bins = smail_bins(2)
    std = fiducial_patch_std(8, n_maps=2, bins=bins, seed=3)
    maps = []
    for i in range(2):
        m = simulate_tomographic_maps(8, 0.31, 0.82, bins, rng=map_rng(3, FISHER_STREAM, i))
        m = m.astype(np.float32).astype(np.float64)
        maps.append(m - m.mean(axis=1, keepdims=True))
    expected = np.concatenate(maps, axis=1).std(axis=1)
    assert std.shape == (2,) and std[0] < std[1]  # the nearer bin has less lensing
    np.testing.assert_allclose(std, expected, rtol=1e-5)
