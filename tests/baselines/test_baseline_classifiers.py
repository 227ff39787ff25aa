import sys

import healpy as hp
import numpy as np
import pytest
import torch
from sklearn.svm import LinearSVC

from pyg_sphere.baselines import HistogramClassifier, PSDClassifier

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
    with pytest.raises(ValueError, match="num_samples, num_pixels"):
        clf.fit(x[..., None].repeat(2, axis=2), y, x, y)
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
