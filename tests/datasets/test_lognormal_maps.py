import csv
import doctest

import healpy as hp
import numpy as np
import pytest
from scipy import stats
from scipy.special import eval_legendre

import pyg_sphere.datasets._lognormal_field as field
import pyg_sphere.datasets.lognormal_maps as sim
from pyg_sphere import cache
from pyg_sphere.datasets.lognormal_maps import (
    cosmology_models,
    gaussian_alm,
    lognormal_gaussian_cl,
    lognormal_map,
    map_rng,
    simulate_convergence_map,
    simulate_convergence_maps,
)


def read_manifest(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def binned_ratio(measured, target, edges):
    """(2l+1)-weighted mean of measured/target per bin, and its Gaussian sampling error."""
    ell = np.arange(len(target))
    out, err = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        w = 2 * ell[a:b] + 1
        out.append(np.sum(w * measured[a:b] / target[a:b]) / w.sum())
        err.append(np.sqrt(2 / w.sum()))
    return np.array(out), np.array(err)


# ---------------------------------------------------------------- the shipped table


def test_table_models_and_power_matching():
    m1, m2 = cosmology_models()
    _, m2pm = cosmology_models(power_matched=True)
    assert (m1.label, m1.omega_m, m1.sigma_8) == (0, 0.31, 0.82)
    assert (m2.label, m2.omega_m, m2.sigma_8) == (1, 0.26, 0.91)
    assert m2pm.label == 1 and m2pm.omega_m == 0.26 and 0.85 < m2pm.sigma_8 < 0.91
    assert m1.lmax == 6144
    for m in (m1, m2, m2pm):
        assert np.all(m.cl[:2] == 0) and np.all(m.cl[2:] > 0)
        assert not m.cl.flags.writeable
    # the shift is a convergence minimum of a few percent, shallower for lower Omega_m
    assert 0.015 < m2.shift < m1.shift < 0.035 and m2pm.shift == m2.shift

    band = np.arange(101, 1000)
    dev = np.log(m2.cl[band] / m1.cl[band])
    dev_pm = np.log(m2pm.cl[band] / m1.cl[band])
    # power-matched: agree to a few percent on 100 < ell < 1000 ...
    assert np.max(np.abs(dev_pm)) < 0.03
    assert np.sqrt(np.mean(dev_pm**2)) < 0.015
    # ... better than the original pair, which differ clearly elsewhere
    assert np.sqrt(np.mean(dev**2)) > 1.5 * np.sqrt(np.mean(dev_pm**2))
    assert abs(np.log(m2.cl[10] / m1.cl[10])) > 0.15
    assert abs(np.log(m2.cl[5000] / m1.cl[5000])) > 0.03


def test_table_matches_pyccl():
    ccl = pytest.importorskip("pyccl")
    t = sim._load_table()
    ell = np.array([2, 30, 300, 3000, 6144])
    z = np.linspace(0.0, 1.6, 1601)
    nz = np.exp(-0.5 * ((z - float(t["z_mean"])) / float(t["z_sigma"])) ** 2)
    for i in range(3):
        om, s8 = float(t["omega_m"][i]), float(t["sigma_8"][i])
        cosmo = ccl.Cosmology(
            Omega_c=om - 0.05,
            Omega_b=0.05,
            h=0.7,
            sigma8=s8,
            n_s=0.96,
            transfer_function="eisenstein_hu",
            matter_power_spectrum="halofit",
        )
        # independent route: shear spectrum converted to convergence,
        # C^kk = C^gg * [l(l+1)]^2 / ((l+2)(l+1)l(l-1))
        shear = ccl.WeakLensingTracer(cosmo, dndz=(z, nz))
        cl_gg = ccl.angular_cl(cosmo, shear, shear, ell.astype(float))
        cl_kk = cl_gg * (ell * (ell + 1.0)) ** 2 / ((ell + 2.0) * (ell + 1) * ell * (ell - 1))
        np.testing.assert_allclose(t["cl"][i][ell], cl_kk, rtol=2e-3)


def test_tables_are_registered_read_only_caches():
    cache.clear("gaussian_cl")
    info = cache.info()
    assert {"cl_table", "legendre_nodes", "gaussian_cl"} <= set(info)
    a = sim._model_gaussian_cl(False, 0, 47)
    b = sim._model_gaussian_cl(False, 0, 47)
    assert a is b and not a.flags.writeable
    stats = cache.info()["gaussian_cl"]
    assert (stats.hits, stats.misses, stats.entries) == (1, 1, 1)
    x, w = sim._legendre_nodes(16)
    assert not x.flags.writeable and not w.flags.writeable
    cache.clear()  # emptied caches are rebuilt on demand
    assert np.array_equal(sim._model_gaussian_cl(False, 0, 47), a)
    assert cosmology_models()[0].lmax == 6144


# ------------------------------------------------------------- lognormal transform


def test_gaussian_cl_inverts_the_lognormal_correlation():
    # Build kappa's spectrum from a known Gaussian one through the forward relation
    # xi_kappa = shift^2 (exp(xi_g) - 1), using scipy's Legendre polynomials and a
    # least-squares Legendre fit on Chebyshev points; the inverse must return it.
    lmax, shift = 200, 0.01
    ell = np.arange(lmax + 1)
    clg_true = np.exp(-ell * (ell + 1) / (2 * 15.0**2))
    clg_true *= 0.8 / np.sum((2 * ell + 1) / (4 * np.pi) * clg_true)  # var_g = 0.8
    x = np.cos(np.pi * (np.arange(2000) + 0.5) / 2000)
    xi_g = ((2 * ell + 1) / (4 * np.pi) * clg_true) @ eval_legendre(ell[:, None], x)
    coef = np.polynomial.legendre.legfit(x, shift**2 * np.expm1(xi_g), lmax)
    cl = coef * 4 * np.pi / (2 * ell + 1)

    clg = lognormal_gaussian_cl(cl, shift)
    assert clg.shape == (lmax + 1,)
    np.testing.assert_allclose(clg, clg_true, rtol=0, atol=1e-7 * clg_true.max())
    # the non-linearity matters: the naive rescaling C_l / shift^2 is far off
    assert np.max(np.abs(cl / shift**2 / clg_true - 1)[:100]) > 0.3


def test_gaussian_cl_lmax_truncates():
    m1, _ = cosmology_models()
    full = lognormal_gaussian_cl(m1.cl[:101], m1.shift)
    cut = lognormal_gaussian_cl(m1.cl, m1.shift, lmax=100)
    np.testing.assert_allclose(cut, full, rtol=1e-12, atol=0)


def test_gaussian_cl_quadrature_is_converged(monkeypatch):
    # the default 2 lmax + 2 Gauss-Legendre nodes agree with twice as many
    m1, _ = cosmology_models()
    clg = lognormal_gaussian_cl(m1.cl, m1.shift, lmax=383)
    nodes = field._legendre_nodes
    monkeypatch.setattr(field, "_legendre_nodes", lambda n: nodes(2 * n))
    fine = lognormal_gaussian_cl(m1.cl, m1.shift, lmax=383)
    np.testing.assert_allclose(clg[2:], fine[2:], rtol=1e-5)


def test_gaussian_alm_statistics():
    lmax = 256
    cl = 1.0 / (np.arange(lmax + 1) + 10.0)
    alm = gaussian_alm(cl, np.random.default_rng(0))
    ell, m = hp.Alm.getlm(lmax)
    assert alm.dtype == np.complex128 and alm.shape == (hp.Alm.getsize(lmax),)
    assert np.all(alm[m == 0].imag == 0)
    # <|a_lm|^2> = C_l, with real and imaginary parts sharing it equally for m > 0
    norm = alm / np.sqrt(cl[ell])
    assert abs(np.mean(norm[m == 0].real ** 2) - 1) < 0.1
    assert abs(np.mean(norm[m > 0].real ** 2) - 0.5) < 0.01
    assert abs(np.mean(norm[m > 0].imag ** 2) - 0.5) < 0.01
    # healpy's estimator agrees within cosmic variance
    ratio, err = binned_ratio(hp.alm2cl(alm), cl, [2, 32, 64, 128, 257])
    assert np.all(np.abs(ratio - 1) < 4 * err)


# --------------------------------------------------------------------- map statistics


@pytest.mark.parametrize("label", [0, 1])
def test_maps_have_target_spectrum_and_lognormal_pdf(label):
    nside = 128
    model = cosmology_models()[label]
    lmax = 3 * nside - 1
    cls, maps = [], []
    for i in range(2):
        m = simulate_convergence_map(nside, label, rng=map_rng(7, label, i))
        maps.append(m)
        cls.append(hp.anafast(m, lmax=lmax, use_pixel_weights=False))
    edges = [10, 32, 64, 96, 128, 160, 192, 256]
    ratio, err = binned_ratio(np.mean(cls, axis=0), model.cl[: lmax + 1], edges)
    err /= np.sqrt(len(maps))
    # sampling error of a Gaussian field (inflated 1.5x for the non-Gaussian one)
    # plus 1.5% for pixelisation near lmax
    assert np.all(np.abs(ratio - 1) < 4 * 1.5 * err + 0.015), ratio

    m = maps[0]
    clg = lognormal_gaussian_cl(model.cl, model.shift, lmax)
    var_g = np.sum((2 * np.arange(lmax + 1) + 1) * clg) / (4 * np.pi)
    assert m.min() > -model.shift
    assert abs(m.mean()) < 0.1 * m.std()
    # one-point distribution: log(1 + kappa/shift) is Gaussian with the predicted moments,
    # so kappa is positively skewed with the lognormal skewness
    g = np.log1p(m / model.shift)
    assert abs(g.mean() + var_g / 2) < 0.05 * var_g
    assert abs(g.var() / var_g - 1) < 0.05
    assert abs(stats.skew(g)) < 0.05
    skew_pred = (np.exp(var_g) + 2) * np.sqrt(np.expm1(var_g))
    assert stats.skew(m) > 0.3
    assert abs(stats.skew(m) / skew_pred - 1) < 0.1


def test_strongly_non_gaussian_map_keeps_the_target_spectrum():
    # a small shift makes the field very skewed; only the correlation-function
    # transform keeps the spectrum (feeding C_l / shift^2 to g gives +20% to +50%)
    nside, shift = 128, 0.006
    model = cosmology_models()[0]
    lmax = 3 * nside - 1
    clg = lognormal_gaussian_cl(model.cl, shift, lmax)
    cls = []
    for seed in range(2):
        m = lognormal_map(clg, shift, nside, np.random.default_rng(seed))
        assert m.min() >= -shift and stats.skew(m) > 3
        cls.append(hp.anafast(m, lmax=lmax, use_pixel_weights=False))
    ratio, err = binned_ratio(
        np.mean(cls, axis=0), model.cl[: lmax + 1], [10, 32, 64, 96, 128, 160, 192]
    )
    assert np.all(np.abs(ratio - 1) < 0.05), ratio


def test_same_seed_same_map_and_different_seeds_differ():
    a = simulate_convergence_map(32, 0, rng=5)
    b = simulate_convergence_map(32, 0, rng=np.random.default_rng(5))
    c = simulate_convergence_map(32, 0, rng=6)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert abs(np.corrcoef(a, c)[0, 1]) < 0.2
    nest = simulate_convergence_map(32, 0, rng=5, nest=True)
    np.testing.assert_array_equal(hp.reorder(nest, n2r=True), a)


# ----------------------------------------------------------------- written collections


@pytest.mark.parametrize("nest", [False, True])
def test_collection_format(tmp_path, nest):
    manifest = simulate_convergence_maps(
        tmp_path, 5, 16, seed=3, nest=nest, split_fractions=(0.6, 0.2, 0.2), progress=False
    )
    assert manifest == tmp_path / "raw" / "manifest.csv"
    with open(manifest) as f:
        assert f.readline().strip() == "file,label,omega_m,sigma_8,split"
    rows = read_manifest(manifest)
    assert len(rows) == 10
    assert sorted(f.name for f in (tmp_path / "raw").iterdir()) == sorted(
        [r["file"] for r in rows] + ["manifest.csv"]
    )
    for label, (om, s8) in enumerate([(0.31, 0.82), (0.26, 0.91)]):
        mine = [r for r in rows if int(r["label"]) == label]
        assert len(mine) == 5
        assert {(float(r["omega_m"]), float(r["sigma_8"])) for r in mine} == {(om, s8)}
        assert [r["split"] for r in mine].count("train") == 3
        assert [r["split"] for r in mine].count("val") == 1
        assert [r["split"] for r in mine].count("test") == 1
    for i, r in enumerate(rows[:5]):
        m, header = hp.read_map(tmp_path / "raw" / r["file"], nest=None, h=True, dtype=None)
        header = dict(header)
        assert m.dtype.kind == "f" and m.dtype.itemsize == 4  # float32 (FITS: big-endian)
        assert m.shape == (hp.nside2npix(16),)
        assert header["ORDERING"] == ("NESTED" if nest else "RING")
        assert header["LABEL"] == 0 and header["MAPID"] == i and header["SEED"] == 3
        # the file holds exactly the documented map
        expected = simulate_convergence_map(16, 0, rng=map_rng(3, 0, i), nest=nest)
        np.testing.assert_array_equal(m, expected.astype(np.float32))


def test_collection_is_deterministic(tmp_path):
    kw = dict(progress=False)
    simulate_convergence_maps(tmp_path / "a", 2, 16, seed=1, **kw)
    simulate_convergence_maps(tmp_path / "b", 2, 16, seed=1, **kw)
    simulate_convergence_maps(tmp_path / "c", 2, 16, seed=2, **kw)
    for r in read_manifest(tmp_path / "a" / "raw" / "manifest.csv"):
        a, b, c = (hp.read_map(tmp_path / d / "raw" / r["file"]) for d in "abc")
        assert np.array_equal(a, b) and not np.allclose(a, c)
    assert (tmp_path / "a/raw/manifest.csv").read_bytes() == (
        tmp_path / "b/raw/manifest.csv"
    ).read_bytes()


def test_power_matched_collection(tmp_path):
    manifest = simulate_convergence_maps(tmp_path, 1, 8, power_matched=True, progress=False)
    rows = read_manifest(manifest)
    assert float(rows[1]["sigma_8"]) == cosmology_models(power_matched=True)[1].sigma_8
    assert rows[0]["split"] == rows[1]["split"] == "train"


def test_gaussian_twin_collection(tmp_path):
    manifest = simulate_convergence_maps(
        tmp_path, 2, 16, seed=4, gaussian_twin=True, progress=False
    )
    rows = read_manifest(manifest)
    m1, _ = cosmology_models()
    # both classes are model 1's cosmology; label 1 is its Gaussian twin
    assert [int(r["label"]) for r in rows] == [0, 0, 1, 1]
    assert {(float(r["omega_m"]), float(r["sigma_8"])) for r in rows} == {(0.31, 0.82)}
    lmax = 3 * 16 - 1
    for r in rows:
        label, i = int(r["label"]), int(r["file"][-9:-5])
        m, header = hp.read_map(tmp_path / "raw" / r["file"], h=True, dtype=None)
        header = dict(header)
        rng = map_rng(4, label, i)
        if label == 1:
            assert header["GAUSSIAN"] is True and "KSHIFT" not in header
            expected = sim.gaussian_map(m1.cl[: lmax + 1], 16, rng)
        else:
            assert header["KSHIFT"] == pytest.approx(m1.shift) and "GAUSSIAN" not in header
            expected = simulate_convergence_map(16, 0, rng=rng)
        np.testing.assert_array_equal(m, expected.astype(np.float32))
        twin = simulate_convergence_map(16, label, rng=map_rng(4, label, i), gaussian_twin=True)
        np.testing.assert_array_equal(m, twin.astype(np.float32))


def test_gaussian_twin_shares_the_spectrum_not_the_skewness():
    # Same seeds for both classes: the spectra agree draw for draw up to the lognormal
    # transform's own fluctuations, so 12 maps at nside 64 pin them to a few percent.
    nside, lmax = 64, 127
    cls, skews, variances = {0: [], 1: []}, {0: [], 1: []}, {0: [], 1: []}
    for label in (0, 1):
        for i in range(12):
            m = simulate_convergence_map(nside, label, rng=100 + i, gaussian_twin=True)
            cls[label].append(hp.anafast(m, lmax=lmax))
            variances[label].append(m.var())
            skews[label].append(stats.skew(m))
    target = cosmology_models()[0].cl[: lmax + 1]
    # Up to 2 nside, what the power-spectrum baselines read (the pixelised lognormal
    # transform loses a few percent of power towards its band limit, 3 nside).
    edges = [2, 20, 60, 128]
    for label in (0, 1):
        ratio, err = binned_ratio(np.mean(cls[label], 0), target, edges)
        # the lognormal field's spectrum scatters more than a Gaussian one's: 4 sigma
        assert np.all(np.abs(ratio - 1) < 4 * err / np.sqrt(12) + 0.02), (label, ratio)
    assert np.mean(variances[1]) == pytest.approx(np.mean(variances[0]), rel=0.03)
    assert np.min(skews[0]) > 0.3  # the lognormal field is skewed
    assert np.max(np.abs(skews[1])) < 0.1  # its twin is not


def test_gaussian_twin_excludes_power_matched(tmp_path):
    with pytest.raises(ValueError, match="set one of them"):
        simulate_convergence_maps(tmp_path, 1, 8, power_matched=True, gaussian_twin=True)
    with pytest.raises(ValueError, match="set one of them"):
        simulate_convergence_map(8, 1, power_matched=True, gaussian_twin=True)
    assert not (tmp_path / "raw" / "manifest.csv").exists()


def test_interrupted_run_leaves_no_manifest_and_no_temporaries(tmp_path, monkeypatch):
    real_write = hp.write_map
    calls = []

    def failing_write(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            with open(path, "wb") as f:  # a half-written file, then the crash
                f.write(b"SIMPLE  =")
            raise OSError("disk full")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(sim.hp, "write_map", failing_write)
    with pytest.raises(OSError, match="disk full"):
        simulate_convergence_maps(tmp_path, 3, 8, progress=False)
    names = sorted(f.name for f in (tmp_path / "raw").iterdir())
    assert names == ["class0_0000.fits", "class0_0001.fits"]
    monkeypatch.undo()
    # running again completes the collection
    rows = read_manifest(simulate_convergence_maps(tmp_path, 3, 8, progress=False))
    assert len(rows) == 6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(nside=12), "nside must be a power of 2"),
        (dict(nside=0), "nside must be a power of 2"),
        (dict(nside=16.0), "nside must be an integer power of 2"),
        (dict(n_per_class=0), "n_per_class must be an integer >= 1"),
        (dict(n_per_class=2.5), "n_per_class must be an integer"),
        (dict(seed=-1), "seed must be an integer >= 0"),
        (dict(split_fractions=(0.5, 0.2, 0.2)), "summing to 1"),
        (dict(split_fractions=(1.2, -0.2, 0.0)), "non-negative"),
        (dict(split_fractions=(0.5, 0.5)), "three"),
        (dict(lmax=7000), "beyond the tabulated"),
        (dict(lmax=1), "lmax must be an integer >= 2"),
    ],
)
def test_bad_input(tmp_path, kwargs, match):
    args = dict(out_dir=tmp_path, n_per_class=1, nside=8, progress=False)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        simulate_convergence_maps(**args)
    assert not (tmp_path / "raw" / "manifest.csv").exists()


def test_bad_input_low_level():
    with pytest.raises(ValueError, match="shift must be a positive"):
        lognormal_gaussian_cl(np.ones(10), 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        lognormal_gaussian_cl(np.r_[0.0, 0.0, -1.0, 1.0], 1.0)
    with pytest.raises(ValueError, match="1-D"):
        lognormal_gaussian_cl(np.ones((3, 3)), 1.0)
    with pytest.raises(ValueError, match="exceeds"):
        lognormal_gaussian_cl(np.ones(10), 1.0, lmax=20)
    # an anticorrelation deeper than -shift^2 has no lognormal counterpart
    with pytest.raises(ValueError, match="too small"):
        lognormal_gaussian_cl(np.r_[0.0, 1.0, 0.0], 0.1)
    with pytest.raises(ValueError, match="Generator"):
        gaussian_alm(np.ones(4), 0)
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        simulate_convergence_map(8, 2)


def test_docstring_examples():
    for module in (sim, field):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0
