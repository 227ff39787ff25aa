import healpy as hp
import numpy as np
import pytest
import torch

from pyg_sphere.baselines import features, histogram, histogram_edges, power_spectrum

NSIDE, ORDER = 32, 2
NPIX = hp.nside2npix(NSIDE)
PATCH = (NSIDE // ORDER) ** 2  # 256 pixels


def anafast_by_hand(values, nested_pixels, nside, lmax, iter, fill=0.0):
    full = np.full(hp.nside2npix(nside), fill)
    full[nested_pixels] = values
    cl = hp.anafast(hp.reorder(full, n2r=True), lmax=lmax, iter=iter, use_pixel_weights=False)
    ell = np.arange(lmax + 1)
    return ell * (ell + 1) * cl


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((3, PATCH))


@pytest.mark.parametrize("iter", [0, 3])
def test_power_spectrum_matches_anafast_of_the_patch_in_a_zero_map(x, iter):
    pixels = np.arange(5 * PATCH, 6 * PATCH)  # nested patch 5 of order 2
    features = power_spectrum(x, NSIDE, pixels, lmax=40, iter=iter)
    assert features.shape == (3, 41)
    for row, values in zip(features, x):
        np.testing.assert_allclose(
            row, anafast_by_hand(values, pixels, NSIDE, 40, iter), rtol=1e-10, atol=1e-14
        )


def test_power_spectrum_unseen_elsewhere_is_the_same(x):
    # Documented: UNSEEN outside the patch gives the same spectrum as zeros.
    np.testing.assert_allclose(
        power_spectrum(x[:1], NSIDE)[0],
        anafast_by_hand(x[0], np.arange(PATCH), NSIDE, 3 * NSIDE - 1, 0, fill=hp.UNSEEN),
        rtol=1e-10,
        atol=1e-14,
    )


def test_power_spectrum_default_is_patch_zero_and_full_lmax(x):
    features = power_spectrum(x, NSIDE)
    assert features.shape == (3, 3 * NSIDE)
    np.testing.assert_allclose(features, power_spectrum(x, NSIDE, np.arange(PATCH)))
    # A patch elsewhere has a (slightly) different pseudo-spectrum.
    elsewhere = power_spectrum(x, NSIDE, np.arange(20 * PATCH, 21 * PATCH))
    assert not np.allclose(features, elsewhere)


def test_power_spectrum_on_a_patch_of_nested_patches(x):
    from pyg_sphere import nested_patches

    patch = nested_patches(NSIDE, ORDER)[5]  # LongTensor of nested ids
    np.testing.assert_allclose(
        power_spectrum(x, NSIDE, patch, lmax=30),
        power_spectrum(x, NSIDE, np.arange(5 * PATCH, 6 * PATCH), lmax=30),
    )


def test_power_spectrum_scattered_pixels(x):
    pixels = np.random.default_rng(1).choice(NPIX, PATCH, replace=False)
    np.testing.assert_allclose(
        power_spectrum(x, NSIDE, pixels, lmax=20)[1],
        anafast_by_hand(x[1], pixels, NSIDE, 20, 0),
        rtol=1e-10,
    )


def test_power_spectrum_binning(x):
    full = power_spectrum(x, NSIDE, lmax=29)
    edges = [2, 5, 11, 30]
    expected = np.stack([[row[a:b].mean() for a, b in zip(edges[:-1], edges[1:])] for row in full])
    np.testing.assert_allclose(power_spectrum(x, NSIDE, lmax=29, bins=edges), expected)
    even = power_spectrum(x, NSIDE, lmax=29, bins=3)  # ell 0-9, 10-19, 20-29
    np.testing.assert_allclose(even, full.reshape(3, 3, 10).mean(axis=2))


def test_power_spectrum_accepts_torch_and_trailing_channel(x):
    expected = power_spectrum(x, NSIDE, lmax=10)
    np.testing.assert_allclose(
        power_spectrum(torch.tensor(x)[:, :, None], NSIDE, lmax=10), expected
    )
    np.testing.assert_allclose(
        power_spectrum(x.astype(np.float32), NSIDE, torch.arange(PATCH), lmax=10),
        power_spectrum(x.astype(np.float32).astype(np.float64), NSIDE, lmax=10),
    )


def test_histogram_matches_numpy(x):
    edges = np.linspace(-1.5, 2.0, 8)
    features = histogram(x, edges)
    assert features.shape == (3, 7)
    for row, values in zip(features, x):
        counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), edges)
        np.testing.assert_allclose(row, counts / PATCH)
    np.testing.assert_allclose(features.sum(axis=1), 1.0)
    # Non-uniform edges, torch input with a channel dimension.
    edges = np.array([-3.0, -1.0, 0.0, 0.1, 4.0])
    counts = np.stack([np.histogram(np.clip(v, -3, 4), edges)[0] for v in x])
    np.testing.assert_allclose(histogram(torch.tensor(x)[..., None], edges), counts / PATCH)


def test_histogram_edges_from_percentiles():
    x = np.random.default_rng(2).standard_normal((40, 100))
    edges = histogram_edges(x, bins=100)
    lo, hi = np.percentile(x, [0.1, 99.9])
    np.testing.assert_allclose(edges, np.linspace(lo, hi, 101))
    edges = histogram_edges(x[..., None], bins=10, percentiles=(0, 100))
    np.testing.assert_allclose(edges, np.linspace(x.min(), x.max(), 11))
    # Large inputs are subsampled deterministically: still close to the exact range.
    sub = histogram_edges(x, bins=4, percentiles=(5, 95), max_values=1000)
    np.testing.assert_allclose(sub[[0, -1]], np.percentile(x, [5, 95]), rtol=0.1)


def test_large_inputs_are_processed_in_blocks(monkeypatch):
    values = np.random.default_rng(3).standard_normal((50, PATCH)).astype(np.float32)
    edges = histogram_edges(values, bins=20)
    expected = histogram(values, edges)
    monkeypatch.setattr(features, "_BLOCK_VALUES", 3 * PATCH)  # blocks of 3 rows
    np.testing.assert_array_equal(histogram(values, edges), expected)
    np.testing.assert_array_equal(histogram(values[..., None], edges), expected)
    values[-1, 7] = np.nan  # in the last block
    with pytest.raises(ValueError, match="NaN"):
        histogram(values, edges)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros(PATCH), r"\[1, num_pixels\]"),
        (np.zeros((2, PATCH, 3)), "num_samples, num_pixels"),
        (np.zeros((0, PATCH)), "empty"),
        (np.full((2, PATCH), np.nan), "NaN"),
        (np.full((2, PATCH), hp.UNSEEN), "UNSEEN"),
        (np.full((2, PATCH), hp.UNSEEN, dtype=np.float32), "UNSEEN"),
    ],
)
def test_bad_samples(bad, match):
    with pytest.raises(ValueError, match=match):
        power_spectrum(bad, NSIDE)
    with pytest.raises(ValueError, match=match):
        histogram(bad, [0.0, 1.0])


def test_bad_arguments(x):
    with pytest.raises(TypeError, match="real numbers"):
        power_spectrum(np.array([["a"] * PATCH]), NSIDE)
    with pytest.raises(ValueError, match="power of 2"):
        power_spectrum(x, 30)
    with pytest.raises(ValueError, match="one id per column"):
        power_spectrum(x, NSIDE, np.arange(PATCH + 1))
    with pytest.raises(ValueError, match=r"\[0, 12288\)"):
        power_spectrum(x, NSIDE, np.arange(NPIX - 10, NPIX + PATCH - 10))
    with pytest.raises(ValueError, match="duplicate"):
        power_spectrum(x, NSIDE, np.zeros(PATCH, dtype=int))
    with pytest.raises(ValueError, match="sphere has only 3072"):
        power_spectrum(np.zeros((1, 4000)), 16)
    with pytest.raises(ValueError, match="bins"):
        power_spectrum(x, NSIDE, lmax=9, bins=11)
    with pytest.raises(ValueError, match="increasing"):
        power_spectrum(x, NSIDE, lmax=9, bins=[0, 5, 5, 10])
    with pytest.raises(ValueError, match="increasing"):
        histogram(x, [1.0, 0.0])
    with pytest.raises(ValueError, match="constant"):
        histogram_edges(np.ones((2, 5)))
    with pytest.raises(ValueError, match="percentiles"):
        histogram_edges(x, percentiles=(50, 10))


def test_as_channels_splits_the_last_axis_and_checks_each_channel(x):
    # One channel: exactly as_samples's array, for [S, N] and [S, N, 1].
    for single in (x, x[..., None], torch.tensor(x)[..., None]):
        (channel,) = features.as_channels(single)
        np.testing.assert_array_equal(channel, features.as_samples(single))
        assert channel.dtype == np.float64
    # Several: one [S, N] view per channel, in order; torch too.
    stacked = np.stack([x, 2 * x, 3 * x], axis=-1)
    channels = features.as_channels(stacked)
    assert len(channels) == 3 and all(np.shares_memory(c, stacked) for c in channels)
    for c, channel in enumerate(channels):
        np.testing.assert_array_equal(channel, (c + 1) * x)
    from_torch = features.as_channels(torch.tensor(stacked, dtype=torch.float32))
    np.testing.assert_array_equal(from_torch[2], (3 * x).astype(np.float32))
    # Errors name the channel, or the accepted shapes.
    stacked[1, 4, 2] = np.nan
    with pytest.raises(ValueError, match=r"`x\[:, :, 2\]` contains NaN"):
        features.as_channels(stacked)
    for bad, match in [
        (
            np.zeros((2, PATCH, 2, 1)),
            r"num_samples, num_pixels, num_channels\], got \(2, 256, 2, 1\)",
        ),
        (np.zeros((2, PATCH, 0)), "num_channels"),
        (np.zeros(PATCH), r"\[1, num_pixels\]"),
        (np.zeros((2, 0, 3)), "empty"),
    ]:
        with pytest.raises(ValueError, match=match):
            features.as_channels(bad, "x")
