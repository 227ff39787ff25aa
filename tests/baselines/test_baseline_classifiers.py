import sys

import healpy as hp
import numpy as np
import pytest
import torch
from sklearn.svm import LinearSVC

from pyg_sphere.baselines import (
    HistogramClassifier,
    PSDClassifier,
    histogram,
    histogram_edges,
    power_spectrum,
)

NSIDE, ORDER = 32, 2
LMAX = 3 * NSIDE - 1
PER_MAP = 12 * ORDER**2  # 48 patches of 256 pixels per map
ELL = np.arange(LMAX + 1)


def gaussian_patches(cl, nside, order, num_maps, rng):
    """Patches [num_maps * 12 * order**2, (nside // order)**2] of Gaussian maps.

    The maps are drawn from a seeded Generator (healpy's synfast uses the global
    RNG) and made with healpy's alm2map; patches are nested, in patch order.
    """
    lmax = len(cl) - 1
    ell, m = hp.Alm.getlm(lmax)
    maps = []
    for _ in range(num_maps):
        alm = rng.standard_normal(len(ell)) + 1j * rng.standard_normal(len(ell))
        alm *= np.sqrt(cl[ell] / 2)
        alm[m == 0] = alm[m == 0].real * np.sqrt(2)  # real a_l0, variance C_l
        maps.append(hp.reorder(hp.alm2map(alm, nside, lmax=lmax), r2n=True))
    return np.stack(maps).reshape(-1, (nside // order) ** 2)


def spectrum(slope):
    """C_ell ~ (ell + 1)^-slope normalised to unit map variance."""
    cl = (ELL + 1.0) ** -slope
    return cl / np.sum((2 * ELL + 1) * cl / (4 * np.pi))


def splits(cl_a, cl_b, seed):
    """Train / val / test sets of patches, split by map (4 / 2 / 2 maps per class)."""
    rng = np.random.default_rng(seed)
    sets = []
    for num_maps in (4, 2, 2):
        x = np.concatenate(
            [gaussian_patches(cl, NSIDE, ORDER, num_maps, rng) for cl in (cl_a, cl_b)]
        )
        sets += [x, np.repeat([0, 1], num_maps * PER_MAP)]
    return sets


def test_psd_classifier_separates_spectral_shapes():
    # Same variance, different spectral slope: a histogram sees (nearly) nothing.
    x, y, x_val, y_val, x_test, y_test = splits(spectrum(1.0), spectrum(1.5), seed=0)
    clf = PSDClassifier(NSIDE, bins=16).fit(x, y, x_val, y_val)
    assert clf.score(x_test, y_test) > 0.9
    assert clf.best_C in clf.Cs
    assert repr(clf) == (
        f"PSDClassifier(nside=32, patch 0, lmax={LMAX}, bins=16, best_C={clf.best_C:g})"
    )


def test_psd_classifier_near_chance_on_identical_classes():
    x, y, x_val, y_val, x_test, y_test = splits(spectrum(1.0), spectrum(1.0), seed=1)
    clf = PSDClassifier(NSIDE, np.arange(256), lmax=40).fit(x, y, x_val, y_val)
    assert abs(clf.score(x_test, y_test) - 0.5) < 0.15  # 192 test samples: 3 sigma ~ 0.11


def test_histogram_classifier_separates_variances_and_not_identical_classes():
    x, y, x_val, y_val, x_test, y_test = splits(spectrum(1.0), 1.3**2 * spectrum(1.0), seed=2)
    clf = HistogramClassifier().fit(x, y, x_val, y_val)
    assert clf.edges.shape == (101,)
    assert clf.transform(x_test).shape == (len(x_test), 100)
    assert clf.score(x_test, y_test) > 0.9

    x, y, x_val, y_val, x_test, y_test = splits(spectrum(1.0), spectrum(1.0), seed=3)
    clf = HistogramClassifier().fit(x, y, x_val, y_val)
    assert abs(clf.score(x_test, y_test) - 0.5) < 0.15


def test_c_is_chosen_on_validation_data():
    rng = np.random.default_rng(4)
    # Many noisy features, few samples: the choice of C matters.
    x = rng.standard_normal((120, 256)) * np.repeat([1.0, 1.1], 60)[:, None]
    y = np.repeat([0, 1], 60)
    perm = rng.permutation(120)
    x, y = x[perm], y[perm]
    Cs = [1e-4, 1e-2, 1.0, 100.0]
    clf = HistogramClassifier(bins=30, Cs=Cs).fit(x[:60], y[:60], x[60:90], y[60:90])
    # Oracle: one LinearSVC per C on the same standardised features.
    train, val = clf.transform(x[:60]), clf.transform(x[60:90])
    expected = [
        LinearSVC(C=C, max_iter=10_000, random_state=0).fit(train, y[:60]).score(val, y[60:90])
        for C in Cs
    ]
    np.testing.assert_allclose(clf.val_accuracies, expected)
    assert clf.best_C == Cs[int(np.argmax(expected))]  # first maximum: smallest C
    assert len(set(expected)) > 1  # the choice was not trivial
    # The kept model is the one fitted with best_C.
    np.testing.assert_array_equal(
        clf.predict(x[90:]),
        LinearSVC(C=clf.best_C, max_iter=10_000, random_state=0)
        .fit(train, y[:60])
        .predict(clf.transform(x[90:])),
    )
    # Standardisation uses training statistics only.
    np.testing.assert_allclose(train.mean(axis=0)[train.std(axis=0) > 0], 0, atol=1e-12)


def test_single_c_without_validation_and_torch_inputs():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((80, 64)) * np.repeat([1.0, 2.0], 40)[:, None]
    y = np.repeat([0, 1], 40)
    clf = HistogramClassifier(bins=10, Cs=[0.1]).fit(x, y)
    assert clf.best_C == 0.1 and clf.val_accuracies is None
    xt, yt = torch.tensor(x, dtype=torch.float32)[..., None], torch.tensor(y)
    np.testing.assert_array_equal(clf.predict(xt), clf.predict(x.astype(np.float32)))
    assert clf.score(xt, yt[:, None]) == clf.score(x.astype(np.float32), y)
    psd = PSDClassifier(8, Cs=[1.0]).fit(xt, yt)
    assert psd.predict(x).shape == (80,)


def test_bad_input():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((20, 64)), np.repeat([0, 1], 10)
    clf = HistogramClassifier(bins=5)
    with pytest.raises(RuntimeError, match="fit"):
        clf.predict(x)
    with pytest.raises(ValueError, match="validation data"):
        clf.fit(x, y)
    with pytest.raises(ValueError, match="both"):
        clf.fit(x, y, x_val=x)
    with pytest.raises(ValueError, match="one label per sample"):
        clf.fit(x, y[:-1], x, y)
    with pytest.raises(ValueError, match="two classes"):
        clf.fit(x, np.zeros(20), x, y)
    with pytest.raises(ValueError, match="num_samples, num_pixels, num_channels"):
        clf.fit(x[..., None, None], y, x, y)
    clf.fit(x, y, x, y)
    with pytest.raises(ValueError, match="fitted on 64"):
        clf.predict(x[:, :32])
    with pytest.raises(ValueError, match=r"\[1, num_pixels\]"):
        clf.predict(x[0])
    with pytest.raises(ValueError, match="positive"):
        HistogramClassifier(Cs=[0.0, 1.0])
    with pytest.raises(ValueError, match="bins must be an integer >= 1"):
        HistogramClassifier(bins=0)
    with pytest.raises(TypeError, match="bins must be an integer"):
        HistogramClassifier(bins=2.5)
    with pytest.raises(ValueError, match="nside must be a power of 2"):
        PSDClassifier(nside=12)
    with pytest.raises(ValueError, match="lmax must be an integer >= 0"):
        PSDClassifier(nside=8, lmax=-1)
    with pytest.raises(ValueError, match="one id per column"):
        PSDClassifier(8, np.arange(64)).fit(x[:, :16], y, x[:, :16], y)


def test_missing_scikit_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.svm", None)  # import now fails
    with pytest.raises(ImportError, match=r"pip install pyg_sphere\[baselines\]"):
        PSDClassifier(8)


def standardised(features):
    """The classifiers' standardisation with the statistics of the features themselves."""
    std = features.std(axis=0)
    return (features - features.mean(axis=0)) / np.where(std > 0, std, 1.0)


def two_classes(rng, num_samples=80, num_pixels=64):
    """Labels and 3 channels: channel 1 has a class-dependent scale, 0 and 2 do not."""
    y = np.repeat([0, 1], num_samples // 2)
    x = rng.standard_normal((num_samples, num_pixels, 3)) * [1.0, 1.0, 3.0]
    x[:, :, 1] *= np.where(y == 1, 1.5, 1.0)[:, None]
    return x, y


def test_channel_features_are_the_per_channel_features_concatenated():
    x, y = two_classes(np.random.default_rng(7))
    # Oracle: the feature functions called on each channel, concatenated.
    psd = PSDClassifier(8, bins=5, Cs=[1.0]).fit(x, y)
    expected = np.concatenate([power_spectrum(x[..., c], 8, bins=5) for c in range(3)], axis=1)
    np.testing.assert_allclose(psd.transform(x), standardised(expected), rtol=1e-12, atol=1e-12)
    assert psd.num_channels == 3

    hist = HistogramClassifier(bins=7, Cs=[1.0]).fit(x, y)
    edges = [histogram_edges(x[..., c], bins=7) for c in range(3)]  # each channel its own
    np.testing.assert_array_equal(hist.edges, np.stack(edges))
    assert not np.allclose(edges[0], edges[2])  # channel 2 is 3 times wider
    expected = np.concatenate([histogram(x[..., c], edges[c]) for c in range(3)], axis=1)
    np.testing.assert_allclose(hist.transform(x), standardised(expected), rtol=1e-12, atol=1e-12)
    # torch input [S, N, C], the layout of PyG node features: the same.
    np.testing.assert_array_equal(hist.transform(torch.tensor(x)), hist.transform(x))

    # `channels` selects and orders the channels of the input.
    picked = HistogramClassifier(bins=7, Cs=[1.0], channels=[2, 0]).fit(x, y)
    np.testing.assert_array_equal(picked.edges, np.stack([edges[2], edges[0]]))
    expected = np.concatenate([histogram(x[..., c], edges[c]) for c in (2, 0)], axis=1)
    np.testing.assert_allclose(picked.transform(x), standardised(expected), rtol=1e-12, atol=1e-12)
    assert picked.num_channels == 3
    assert (
        repr(picked)
        == "HistogramClassifier(bins=7, percentiles=(0.1, 99.9), channels=(2, 0), best_C=1)"
    )


def test_single_channel_is_unchanged():
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((60, 64)), np.repeat([0, 1], 30)
    edges = histogram_edges(x, bins=9)
    expected = standardised(histogram(x, edges))
    other = np.stack([rng.standard_normal(x.shape), x], axis=-1)  # x is channel 1 of two
    inputs = [(x, None), (x[..., None], None), (torch.tensor(x)[..., None], None), (other, [1])]
    for single, channels in inputs:
        clf = HistogramClassifier(bins=9, Cs=[1.0], channels=channels).fit(single, y)
        assert clf.edges.shape == (10,)  # 1-D for one channel, as before
        np.testing.assert_array_equal(clf.edges, edges)
        np.testing.assert_array_equal(clf.transform(single), expected)
    psd = PSDClassifier(8, bins=4, Cs=[1.0]).fit(x[..., None], y)
    np.testing.assert_array_equal(psd.transform(x), standardised(power_spectrum(x, 8, bins=4)))


def test_classifiers_fitted_on_two_channels_predict():
    rng = np.random.default_rng(9)
    x, y = two_classes(rng, num_samples=200, num_pixels=256)
    x = x[..., :2]  # channel 1 tells the classes apart
    train, val, test = slice(0, None, 2), slice(1, None, 4), slice(3, None, 4)
    hist = HistogramClassifier(bins=20).fit(x[train], y[train], x[val], y[val])
    assert hist.edges.shape == (2, 21)
    assert hist.transform(x[test]).shape == (50, 40)
    assert hist.predict(x[test]).shape == (50,)
    assert hist.score(x[test], y[test]) > 0.9
    # Channel 0 alone carries nothing.
    blind = HistogramClassifier(bins=20, channels=0).fit(x[train], y[train], x[val], y[val])
    assert blind.score(x[test], y[test]) < 0.75
    psd = PSDClassifier(16, bins=4, Cs=[1.0]).fit(torch.tensor(x[train]), y[train])
    assert psd.transform(x[test]).shape == (50, 8)
    assert psd.score(x[test], y[test]) > 0.9


def test_channel_errors():
    rng = np.random.default_rng(10)
    x, y = two_classes(rng, num_samples=20)
    x = x[..., :2]
    clf = HistogramClassifier(bins=5, Cs=[1.0]).fit(x, y)
    with pytest.raises(
        ValueError, match="`x` has 1 channel per pixel but the classifier was fitted on 2 channels"
    ):
        clf.predict(x[..., 0])
    with pytest.raises(ValueError, match="has 3 channels per pixel .* fitted on 2 channels"):
        clf.predict(np.concatenate([x, x[..., :1]], axis=-1))
    with pytest.raises(ValueError, match="`x_val` has 1 channel per pixel .* fitted on 2"):
        HistogramClassifier(bins=5).fit(x, y, x[..., :1], y)
    with pytest.raises(ValueError, match=r"`x\[:, :, 1\]` contains NaN"):
        clf.predict(np.where(np.arange(2) == 1, np.nan, x))
    with pytest.raises(ValueError, match="selects channel 2 but `x_train` has 2 channels"):
        PSDClassifier(8, Cs=[1.0], channels=[0, 2]).fit(x, y)
    # An observed-pixel flag channel (all ones on fully observed patches) cannot be binned:
    # the error names it and says how to leave it out.
    flagged = np.concatenate([x, np.ones_like(x[..., :1])], axis=-1)
    with pytest.raises(ValueError, match=r"Channel 2 of `x_train` .*constant.*`channels`"):
        HistogramClassifier(bins=5, Cs=[1.0]).fit(flagged, y)
    with pytest.raises(ValueError, match=r"Channel 2 of `x_train`"):
        HistogramClassifier(bins=5, Cs=[1.0], channels=[2]).fit(flagged, y)
    HistogramClassifier(bins=5, Cs=[1.0], channels=range(2)).fit(flagged, y).predict(flagged)
    for bad, error in [([], ValueError), ([0, 0], ValueError), (-1, ValueError), (1.5, TypeError)]:
        with pytest.raises(error, match="channels"):
            HistogramClassifier(channels=bad)
