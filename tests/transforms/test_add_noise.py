import healpy as hp
import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from pyg_sphere.datasets import ConvergenceMaps
from pyg_sphere.transforms import AddGaussianNoise


def item(map_id=0, patch_id=0, n=20000, dtype=torch.float32):
    return Data(
        x=torch.zeros(n, 1, dtype=dtype),
        map_id=torch.tensor([map_id]),
        patch_id=torch.tensor([patch_id]),
    )


@pytest.mark.parametrize("seed", [None, 4])
def test_noise_level_is_relative_to_std(seed):
    noise = AddGaussianNoise(1.5, std=2.0, seed=seed)(item()).x
    assert noise.dtype == torch.float32 and noise.shape == (20000, 1)
    assert noise.std().item() == pytest.approx(3.0, rel=0.03)  # 20000 draws: ~0.5% scatter
    assert abs(noise.mean().item()) < 0.1


def test_fresh_noise_each_access_reproducible_with_torch_seed():
    t = AddGaussianNoise(1.0)
    data = item()
    a, b = t(data).x, t(data).x
    assert not torch.equal(a, b)
    torch.manual_seed(0)
    c = t(data).x
    torch.manual_seed(0)
    assert torch.equal(c, t(data).x)
    assert torch.equal(data.x, torch.zeros_like(data.x))  # input untouched


def test_seeded_noise_fixed_per_map_and_patch():
    a = AddGaussianNoise(1.0, seed=7)(item(3, 5)).x
    assert torch.equal(a, AddGaussianNoise(1.0, seed=7)(item(3, 5)).x)  # any instance, any time
    assert not torch.equal(a, AddGaussianNoise(1.0, seed=7)(item(3, 6)).x)
    assert not torch.equal(a, AddGaussianNoise(1.0, seed=7)(item(4, 5)).x)
    assert not torch.equal(a, AddGaussianNoise(1.0, seed=8)(item(3, 5)).x)
    # level scales the same draw
    assert torch.allclose(AddGaussianNoise(2.5, std=2.0, seed=7)(item(3, 5)).x, 5 * a)
    b = AddGaussianNoise(1.0, seed=7)(item(3, 5, dtype=torch.float64)).x
    assert b.dtype == torch.float64


def test_level_zero_is_identity():
    data = Data(x=torch.randn(10, 2))
    assert torch.equal(AddGaussianNoise(0.0, seed=1)(data).x, data.x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"level": -1.0}, "level must be a non-negative"),
        ({"level": 1.0, "std": 0.0}, "std must be a positive finite number.*map_std"),
        ({"level": 1.0, "std": float("inf")}, "std must be a positive finite number"),
        ({"level": 1.0, "seed": -3}, "seed must be an integer >= 0"),
        ({"level": 1.0, "seed": 1.5}, "seed must be an integer"),
        ({"level": 1.0, "seed": True}, "seed must be an integer"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        AddGaussianNoise(**kwargs)


def test_seeded_noise_needs_sample_ids():
    with pytest.raises(ValueError, match="needs a single data.map_id"):
        AddGaussianNoise(1.0, seed=0)(Data(x=torch.zeros(4, 1)))


def test_with_convergence_maps(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    np.random.seed(0)
    rows = []
    for i in range(3):
        hp.write_map(str(raw / f"m{i}.fits"), hp.synfast(np.ones(24), 8), dtype=np.float64)
        rows.append(f"m{i}.fits,{i % 2},,,{'test' if i == 2 else 'train'}")
    (raw / "manifest.csv").write_text("file,label,omega_m,sigma_8,split\n" + "\n".join(rows))
    train = ConvergenceMaps(str(tmp_path), 8, 1, "train", log=False)
    clean = ConvergenceMaps(str(tmp_path), 8, 1, "test", log=False)
    noisy = ConvergenceMaps(
        str(tmp_path),
        8,
        1,
        "test",
        log=False,
        transform=AddGaussianNoise(2.0, train.map_std, seed=0),
    )
    noise = torch.cat([noisy[i].x - clean[i].x for i in range(len(clean))])
    assert noise.std().item() == pytest.approx(2.0 * train.map_std, rel=0.1)  # 768 draws
    assert torch.equal(noisy[4].x, noisy[4].x)
    train.transform = AddGaussianNoise(2.0, train.map_std)
    assert not torch.equal(train[4].x, train[4].x)


# ----- a std per channel ------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [None, 3])
def test_std_per_channel(seed):
    data = Data(x=torch.zeros(20000, 3), map_id=torch.tensor([1]), patch_id=torch.tensor([2]))
    t = AddGaussianNoise(2.0, std=[0.5, 0.0, 3.0], seed=seed)
    assert t.sigma == (1.0, 0.0, 6.0) and repr(t).startswith("AddGaussianNoise(level=2.0, std=(")
    noise = t(data).x
    assert noise.shape == (20000, 3) and noise.dtype == torch.float32
    assert noise.std(0).numpy() == pytest.approx([1.0, 0.0, 6.0], rel=0.03, abs=1e-12)
    assert (noise[:, 1] == 0).all()  # a std of 0 leaves the channel (e.g. observed flags) as is
    if seed is not None:  # the same draw as one scalar std, scaled per channel
        one = AddGaussianNoise(2.0, std=1.0, seed=seed)(data).x
        assert torch.allclose(noise, one * torch.tensor([0.5, 0.0, 3.0]))


def test_std_per_channel_must_match_the_channels():
    t = AddGaussianNoise(1.0, std=(1.0, 2.0))
    with pytest.raises(
        ValueError,
        match=r"std has 2 entries, one per channel, but x has shape "
        r"\[4, 3\].*channel_std",
    ):
        t(Data(x=torch.zeros(4, 3)))
    assert torch.equal(
        AddGaussianNoise(1.0, std=[0.0, 0.0])(Data(x=torch.ones(4, 2))).x, torch.ones(4, 2)
    )


@pytest.mark.parametrize("std", [[], [1.0, -1.0], [1.0, float("nan")]])
def test_bad_std_per_channel(std):
    with pytest.raises(ValueError, match="std must"):
        AddGaussianNoise(1.0, std=std)
