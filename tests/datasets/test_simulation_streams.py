"""The simulation streams: reproducible per seed, distinct per worker, epoch and mode, twins
sharing their draws, and equal to the on-disk designs read through ConvergenceMaps."""

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pyg_sphere.datasets import (
    ConvergenceMaps,
    FisherStream,
    PriorStream,
    fiducial_patch_std,
    simulate_fisher_maps,
    simulate_prior_maps,
)
from pyg_sphere.datasets.designs import FISHER_VARIANTS

NSIDE = 16


def take(stream, n=None):
    return list(itertools.islice(iter(stream), n))


def draws(items):
    return [int(item["draw"]) for item in items]


def test_same_seed_same_items_and_other_seed_other_maps():
    a = take(FisherStream(NSIDE, seed=3, noise=1.0, noise_scale=0.002), 24)
    b = take(FisherStream(NSIDE, seed=3, noise=1.0, noise_scale=0.002), 24)
    c = take(FisherStream(NSIDE, seed=4, noise=1.0, noise_scale=0.002), 24)
    assert draws(a) == draws(b)
    assert all(torch.equal(x["x"], y["x"]) for x, y in zip(a, b))
    assert not any(torch.equal(x["x"], y["x"]) for x, y in zip(a, c))


def test_workers_simulate_disjoint_shards_that_do_not_depend_on_their_number():
    stream = PriorStream(NSIDE, order=1, patches=[0, 5], num_maps=6, seed=1)
    alone = {
        int(b["draw"][i]): b["x"][i] for b in DataLoader(stream, 4) for i in range(len(b["x"]))
    }
    # Spawned: the main process has run healpy's OpenMP threads, which a fork cannot inherit.
    loader = DataLoader(stream, batch_size=4, num_workers=2, multiprocessing_context="spawn")
    batches = list(loader)
    together = {int(d): x for b in batches for d, x in zip(b["draw"], b["x"])}
    assert len(together) == 12 == len(stream)  # 6 maps x 2 patches, none twice
    assert together.keys() == alone.keys()
    assert all(torch.equal(together[d], alone[d]) for d in alone)
    # the two workers' batches hold different maps
    realisations = [set((b["draw"] // stream.num_patches).tolist()) for b in batches[:2]]
    assert not realisations[0] & realisations[1]


def test_no_draw_twice_within_a_pass_across_epochs_or_against_evaluation():
    stream = FisherStream(NSIDE, patches=[3], seed=0)  # endless
    first = take(stream, 40)
    assert len(set(draws(first))) == 40
    stream.set_epoch(1)
    second = take(stream, 40)
    assert not set(draws(first)) & set(draws(second))
    assert not any(torch.equal(a["x"], b["x"]) for a, b in zip(first, second))
    evaluation = take(FisherStream(NSIDE, patches=[3], seed=0, evaluation=True, num_maps=40))
    assert not set(draws(evaluation)) & set(draws(first) + draws(second))
    assert not any(torch.equal(a["x"], b["x"]) for a, b in zip(first, evaluation))
    # an evaluation set is the same every epoch
    again = FisherStream(NSIDE, patches=[3], seed=0, evaluation=True, num_maps=40, epoch=5)
    assert all(torch.equal(a["x"], b["x"]) for a, b in zip(evaluation, take(again)))


def test_twins_share_the_gaussian_and_the_noise_draw():
    same = take(FisherStream(NSIDE, steps=(0, 0), noise=2.0, noise_scale=0.002), 12)
    for item in same:
        assert all(torch.equal(item["x"][v], item["x"][0]) for v in range(5))
    stream = FisherStream(NSIDE, noise=2.0, noise_scale=0.002)
    x = torch.stack([item["x"] for item in take(stream, 24)])[..., 0].double()  # [24, 5, N]
    fid, plus, minus = x[:, 0], x[:, 1:3], x[:, 3:]
    # plus - minus is the signal's response to 2 steps: the noise (2x the signal) cancels
    assert (plus - minus).std() < 0.15 * fid.std()
    # without common random numbers it would be about sqrt(2) times the scatter
    shuffled = plus[torch.roll(torch.arange(24), 12)]
    assert (shuffled - minus).std() > 1.2 * fid.std()


def test_noise_level_is_noise_times_the_scale():
    clean = take(FisherStream(NSIDE, seed=2), 12)
    noisy = take(FisherStream(NSIDE, seed=2, noise=1.5, noise_scale=0.004), 12)
    diff = torch.stack([n["x"] - c["x"] for n, c in zip(noisy, clean)])
    assert abs(diff.std().item() / (1.5 * 0.004) - 1) < 0.02
    # one noise draw for every variant (up to float32 rounding of the sums)
    assert torch.allclose(diff[:, 0], diff[:, 4], rtol=0, atol=1e-8)
    assert not torch.allclose(diff[0], diff[1], rtol=0, atol=1e-3)  # per patch


def test_a_batch_has_the_documented_layout():
    stream = FisherStream(NSIDE, order=2, patches=[1, 0, 7], num_maps=2)
    assert len(stream) == 6 and stream.patch_size == 64
    batch = next(iter(DataLoader(stream, batch_size=6)))
    assert batch["x"].shape == (6, 5, 64, 1) and batch["x"].dtype == torch.float32
    assert batch["theta"].shape == (6, 5, 2) and batch["draw"].dtype == torch.int64
    assert batch["patch_id"].tolist() == [0, 1, 7, 0, 1, 7]  # ascending, then the next map
    theta = batch["theta"][0].double()
    assert np.allclose(theta[1] - theta[0], [0.02, 0], atol=1e-6)  # omega_m_plus
    assert np.allclose(theta[0] - theta[4], [0, 0.02], atol=1e-6)  # sigma_8_minus
    prior = next(iter(DataLoader(PriorStream(NSIDE, num_maps=1), batch_size=12)))
    assert prior["x"].shape == (12, 256, 1) and prior["theta"].shape == (12, 2)


def test_evaluation_streams_equal_the_designs_read_through_the_dataset(tmp_path):
    simulate_fisher_maps(tmp_path / "fisher", 2, NSIDE, seed=5, progress=False)
    ds = ConvergenceMaps(tmp_path / "fisher", order=1, split="test", smoothing_arcmin=90.0)
    disk = {(int(d.map_id), int(d.patch_id)): d.x for d in ds}
    stream = FisherStream(NSIDE, evaluation=True, num_maps=2, seed=5, smoothing_arcmin=90.0)
    items = take(stream)
    assert len(items) == 24
    for item in items:
        realisation, patch = divmod(int(item["draw"]), 12)
        for v, variant in enumerate(stream.variants):
            map_id = 5 * realisation + FISHER_VARIANTS.index(variant)
            assert torch.equal(item["x"][v], disk[map_id, patch])
    # the noise unit is the scatter of these fiducial patches
    fid = np.stack([disk[5 * r, k].numpy() for r in range(2) for k in range(12)])
    scale = fiducial_patch_std(NSIDE, n_maps=2, seed=5, smoothing_arcmin=90.0)
    assert scale == pytest.approx(fid.astype(np.float64).std(), rel=1e-12)

    simulate_prior_maps(tmp_path / "prior", 3, NSIDE, seed=5, split_fractions=(1, 0, 0))
    ds = ConvergenceMaps(tmp_path / "prior", order=1)
    items = take(PriorStream(NSIDE, evaluation=True, num_maps=3, seed=5))
    assert len(items) == len(ds) == 36
    for item, data in zip(items, ds):
        assert torch.equal(item["x"], data.x)
        assert torch.equal(item["theta"], torch.cat([data.omega_m, data.sigma_8]))


def test_prior_parameters_stay_in_the_box_and_latin_blocks_fill_it():
    box = {"omega_m": (0.2, 0.4), "sigma_8": (0.6, 1.0)}
    stream = PriorStream(NSIDE, patches=[0], box=box, sampling="latin", block_size=8, seed=7)
    theta = np.stack([stream.theta(j) for j in range(16)])
    lo, hi = np.array([0.2, 0.6]), np.array([0.4, 1.0])
    assert ((theta >= lo) & (theta <= hi)).all()
    for block in (theta[:8], theta[8:]):
        cells = np.floor((block - lo) / (hi - lo) * 8).astype(int)
        assert all(sorted(cells[:, a]) == list(range(8)) for a in range(2))
    items = take(stream, 3)
    assert np.allclose(torch.stack([i["theta"] for i in items]).numpy(), theta[:3], atol=1e-7)
    uniform = PriorStream(NSIDE, box=box, seed=7)
    assert not np.allclose(uniform.theta(0), stream.theta(0))


def test_shuffle_buffer_mixes_the_same_items_reproducibly():
    plain = take(FisherStream(NSIDE, patches=[0, 1, 2], num_maps=4))
    mixed = take(FisherStream(NSIDE, patches=[0, 1, 2], num_maps=4, shuffle_buffer=5))
    again = take(FisherStream(NSIDE, patches=[0, 1, 2], num_maps=4, shuffle_buffer=5))
    assert sorted(draws(mixed)) == draws(plain) != draws(mixed) == draws(again)


def test_shards_of_a_data_parallel_job_are_disjoint():
    ranks = [take(PriorStream(NSIDE, patches=[0], num_maps=5, shard=(r, 2))) for r in (0, 1)]
    assert [len(r) for r in ranks] == [3, 2]
    assert sorted(draws(ranks[0]) + draws(ranks[1])) == draws(
        take(PriorStream(NSIDE, patches=[0], num_maps=5))
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"patches": [12]}, "outside"),
        ({"patches": [1, 1]}, "twice"),
        ({"patches": []}, "non-empty"),
        ({"order": 32}, "order"),
        ({"evaluation": True}, "num_maps"),
        ({"noise": -1.0}, "noise"),
        ({"steps": (-0.02, 0.02)}, "step"),
        ({"fiducial": (0.9, 0.8)}, "omega_m"),
        ({"shard": (2, 2)}, "rank"),
        ({"epoch": 10**9}, "epoch"),
    ],
)
def test_bad_options_are_refused_with_the_reason(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FisherStream(NSIDE, **kwargs)


def test_an_endless_stream_has_no_length_and_the_box_is_checked():
    with pytest.raises(TypeError, match="num_maps"):
        len(FisherStream(NSIDE))
    with pytest.raises(ValueError, match="sampling"):
        PriorStream(NSIDE, sampling="sobol")
    with pytest.raises(ValueError, match="tabulated"):
        PriorStream(NSIDE, box={"omega_m": (0.05, 0.4), "sigma_8": (0.6, 1.0)})
