"""Histogram and peak summaries per tomographic bin (maps [num_samples, n_bins, num_pixels])."""

import numpy as np
import pytest
import torch

from pyg_sphere.inference import (
    CombinedSummary,
    HistogramSummary,
    PeakCountSummary,
    TomographicPowerSpectrumSummary,
)

NSIDE = 16
PIXELS = np.arange(4 * 256, 5 * 256)  # nested patch 4 of order 1
FWHM = np.radians(5.0)


@pytest.fixture
def maps():
    """[30, 3, 256]: three bins with very different variances (and means)."""
    x = np.random.default_rng(1).standard_normal((30, 3, 256))
    return x * np.array([1e-3, 1.0, 40.0])[:, None] + np.array([0.0, 2.0, -5.0])[:, None]


def _oracle(make, maps):
    """The single-channel summary fitted and applied on each bin separately."""
    parts = [make().fit(maps[:, c]) for c in range(maps.shape[1])]
    out = np.concatenate([s(maps[:, c]) for c, s in enumerate(parts)], axis=1)
    return out, np.stack([s.edges for s in parts])


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: HistogramSummary(bins=8, **kw),
        lambda **kw: HistogramSummary(bins=5, fwhm=FWHM, nside=NSIDE, pixels=PIXELS, **kw),
        lambda **kw: PeakCountSummary(NSIDE, PIXELS, bins=4, fwhm=FWHM, **kw),
        lambda **kw: PeakCountSummary(NSIDE, PIXELS, bins=3, percentiles=(5, 95), **kw),
    ],
)
def test_per_bin_summary_is_the_single_channel_summary_of_each_bin(make, maps):
    s = make(n_bins=3).fit(maps)
    out = s(maps)
    expected, edges = _oracle(make, maps)
    single = make().fit(maps[:, 0])
    assert out.shape == (30, 3 * single(maps[:, 0]).shape[1])  # C x the per-bin count
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, expected)  # bin-major: bin 0's features first
    np.testing.assert_array_equal(s.edges, edges)  # each bin's edges fitted on its own values
    assert s.edges.shape == (3, single.edges.size)
    # torch input, and later data summarised with the kept edges
    np.testing.assert_array_equal(s(torch.as_tensor(2 * maps)), make(n_bins=3).fit(maps)(2 * maps))
    np.testing.assert_array_equal(s.edges, edges)


def test_per_bin_edges_follow_each_bins_spread(maps):
    s = HistogramSummary(bins=4, percentiles=(0, 100), n_bins=3).fit(maps)
    for c in range(3):
        assert s.edges[c, 0] == maps[:, c].min() and s.edges[c, -1] == maps[:, c].max()
    # one global range would put the narrow bin's pixels all in one histogram bin
    assert (s(maps)[:, :3] > 0).sum(axis=1).min() > 1


def test_one_bin_is_the_single_channel_summary(maps):
    x = maps[:, 1]
    for make in (
        lambda **kw: HistogramSummary(bins=6, **kw),
        lambda **kw: PeakCountSummary(NSIDE, PIXELS, bins=3, **kw),
    ):
        one, single = make(n_bins=1).fit(x[:, None]), make().fit(x)
        np.testing.assert_array_equal(one(x[:, None]), single(x))
        np.testing.assert_array_equal(one.edges[0], single.edges)


def test_combined_per_bin_histogram_and_tomographic_power_spectrum():
    from pyg_sphere.datasets import simulate_tomographic_maps, smail_bins

    bins = smail_bins(2)
    maps = np.stack([simulate_tomographic_maps(16, 0.31, 0.82, bins, rng=i) for i in range(4)])
    assert maps.shape == (4, 2, 3072)
    ps = TomographicPowerSpectrumSummary(16, 2, bins=3, lmax=16, iter=0)
    hist = HistogramSummary(bins=5, n_bins=2)
    s = CombinedSummary(ps, hist)
    with pytest.raises(RuntimeError, match="not fitted"):
        s(maps)
    out = s.fit(maps)(maps)
    assert out.shape == (4, 3 * 3 + 2 * 4)
    np.testing.assert_array_equal(out, np.c_[ps(maps), hist(maps)])
    np.testing.assert_array_equal(hist(maps), _oracle(lambda: HistogramSummary(bins=5), maps)[0])
    assert "n_bins=2" in repr(s)


def test_wrong_shapes_are_refused_naming_the_expected_shape(maps):
    s = HistogramSummary(bins=4, n_bins=3)
    expected = r"\[num_samples, n_bins, num_pixels\] = \[num_samples, 3, num_pixels\]"
    for bad in (maps[:, 0], maps[:, :2], maps[None], maps[:, :, :, None]):
        with pytest.raises(ValueError, match=expected):
            s.fit(bad)
    with pytest.raises(ValueError, match="moveaxis"):  # channel-last maps
        s.fit(np.moveaxis(maps, 1, -1))
    s.fit(maps)
    with pytest.raises(ValueError, match=expected):
        s(maps[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        bad = maps.copy()
        bad[3, 2, 7] = np.nan
        s(bad)
    # single-channel summaries point to n_bins= for tomographic maps
    for single in (HistogramSummary(bins=4), PeakCountSummary(NSIDE, PIXELS, bins=2)):
        with pytest.raises(ValueError, match=r"n_bins=3"):
            single.fit(maps)
    with pytest.raises(ValueError, match="n_bins"):
        HistogramSummary(n_bins=0)
    with pytest.raises(ValueError, match="tomographic bin 0: .*fewer than bins"):
        PeakCountSummary(NSIDE, PIXELS, bins=50, n_bins=3).fit(maps[:1])


def test_repr_shows_n_bins_only_when_set():
    assert (
        repr(HistogramSummary()) == "HistogramSummary(bins=20, percentiles=(1.0, 99.0), fwhm=None)"
    )
    assert repr(PeakCountSummary(16, bins=3, n_bins=2)) == (
        "PeakCountSummary(nside=16, bins=3, fwhm=None, n_bins=2)"
    )
