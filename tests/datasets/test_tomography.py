"""Tomographic simulations: source bins, pyccl spectra, correlated lognormal maps, noise."""

import doctest
import warnings

import healpy as hp
import numpy as np
import pytest
from scipy import stats
from scipy.integrate import trapezoid
from scipy.special import eval_legendre

import pyg_sphere.datasets._tomography_bins as tbins
import pyg_sphere.datasets._tomography_fields as tfields
import pyg_sphere.datasets._tomography_spectra as tspectra
import pyg_sphere.datasets.tomography as tomo
from pyg_sphere.datasets import convergence_cl, lognormal_shift
from pyg_sphere.datasets.lognormal_maps import gaussian_map, lognormal_gaussian_cl, lognormal_map
from pyg_sphere.datasets.tomography import (
    SourceBins,
    correlated_gaussian_alm,
    equipopulated_bins,
    lognormal_gaussian_cls,
    lognormal_shifts,
    shape_noise_cl,
    shape_noise_std,
    simulate_tomographic_maps,
    smail_bins,
    smail_nz,
    tomographic_cl,
    tomographic_gaussian_maps,
    tomographic_lognormal_maps,
)

FIDUCIAL = (0.31, 0.82)


def binned_ratio(measured, target, edges):
    """(2l+1)-weighted mean of measured/target per multipole bin."""
    ell = np.arange(len(target))
    return np.array(
        [
            np.sum((2 * ell[a:b] + 1) * measured[a:b] / target[a:b]) / np.sum(2 * ell[a:b] + 1)
            for a, b in zip(edges[:-1], edges[1:])
        ]
    )


# ------------------------------------------------------------------------------------ bins


def test_smail_nz_is_normalised_and_rejects_what_cannot_be():
    z = np.linspace(0, 8, 8001)
    for alpha, beta, z0 in [(2.0, 1.5, 0.64), (0.5, 1.0, 0.3), (1.0, 2.0, 1.0)]:
        nz = smail_nz(z, alpha, beta, z0)
        assert trapezoid(nz, z) == pytest.approx(1.0, abs=1e-4)
    for kwargs, match in [
        (dict(alpha=-1.0), "alpha > -1"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(beta=0.0), "beta"),
        (dict(z0=-0.5), "z0"),
    ]:
        with pytest.raises(ValueError, match=match):
            smail_nz(z, **kwargs)
    with pytest.raises(ValueError, match="non-negative"):
        smail_nz([-0.1, 0.2])


@pytest.mark.parametrize("scatter", [0.0, 0.05])
def test_equipopulated_bins(scatter):
    bins = smail_bins(4, photo_z_scatter=scatter)
    assert bins.n_bins == 4 and bins.nz.shape == (4, 2001)
    np.testing.assert_allclose(bins.fractions, 0.25, atol=1e-5)
    np.testing.assert_allclose(trapezoid(bins.nz, bins.z), 1.0, rtol=1e-12)
    assert np.all(np.diff(bins.edges) > 0) and np.all(np.diff(bins.mean_z) > 0)
    # the bins add up to the parent distribution
    parent = smail_nz(bins.z)
    total = (bins.nz * bins.fractions[:, None]).sum(axis=0) * trapezoid(parent, bins.z)
    np.testing.assert_allclose(total, parent, atol=1e-6 * parent.max())
    overlap = trapezoid(np.minimum(bins.nz[0], bins.nz[1]), bins.z)
    assert overlap > 0.05 if scatter else overlap < 2e-3  # photo-z scatter: neighbours overlap
    assert not bins.nz.flags.writeable


def test_source_bins_are_values():
    a, b = smail_bins(3), smail_bins(3)
    assert a == b and hash(a) == hash(b) and a != smail_bins(2)
    assert {a: 1}[b] == 1
    z = np.linspace(0, 2, 101)
    one = SourceBins(z, np.exp(-((z - 1) ** 2) / 0.02))
    assert one.n_bins == 1 and one.fractions.tolist() == [1.0]
    assert "n_bins=1" in repr(one)


def test_bad_bins_name_the_fix():
    z = np.linspace(0, 2, 101)
    nz = np.exp(-((z - 1) ** 2) / 0.02)
    with pytest.raises(ValueError, match="n_bins must be an integer >= 1"):
        equipopulated_bins(z, nz, 0)
    with pytest.raises(ValueError, match="n_bins must be >= 1"):
        SourceBins(z, np.zeros((0, z.size)))
    with pytest.raises(ValueError, match=r"bin\(s\) \[1\] have no galaxies"):
        SourceBins(z, [nz, np.zeros_like(z)])
    with pytest.raises(ValueError, match=r"bin\(s\) \[0\] have no galaxies"):
        SourceBins(z, [nz, nz], fractions=[0.0, 1.0])
    with pytest.raises(ValueError, match="not normalisable"):
        equipopulated_bins(z, np.zeros_like(z), 2)
    with pytest.raises(ValueError, match="non-negative"):
        SourceBins(z, -nz)
    with pytest.raises(ValueError, match="strictly increasing"):
        SourceBins(z[::-1], nz)
    with pytest.raises(ValueError, match=r"\[n_bins, 101\]"):
        SourceBins(z, nz[:50])
    with pytest.raises(TypeError, match="SourceBins"):
        tomographic_cl(0.31, 0.82, nz, 32)


# ---------------------------------------------------------------------------------- noise


def test_shape_noise_in_physical_units():
    area_arcmin2 = hp.nside2pixarea(64, degrees=True) * 3600
    std = shape_noise_std(64, 0.26, [7.5, 7.5, 15.0])
    np.testing.assert_allclose(std, 0.26 / np.sqrt(np.array([7.5, 7.5, 15.0]) * area_arcmin2))
    # white noise: C_ell = std^2 x pixel area (sr), whatever nside
    np.testing.assert_allclose(
        shape_noise_cl(0.26, [7.5]), std[0] ** 2 * hp.nside2pixarea(64), rtol=1e-12
    )
    dens = tomo.bin_densities(smail_bins(4), 30.0)
    np.testing.assert_allclose(dens.sum(), 30.0)
    np.testing.assert_allclose(dens, 7.5, rtol=0.01)
    for args, match in [
        ((64, -0.1, [10.0]), "sigma_e must be a non-negative"),
        ((64, 0.26, [-1.0]), "n_gal must be non-negative"),
        ((64, 0.26, [10.0, 0.0]), r"bin\(s\) \[1\] have no galaxies"),
    ]:
        with pytest.raises(ValueError, match=match):
            shape_noise_std(*args)
    with pytest.raises(ValueError, match="n_gal must be a positive"):
        tomo.bin_densities(smail_bins(2), -3.0)


def test_noisy_maps_need_a_density_and_a_valid_dispersion():
    bins = smail_bins(2)
    with pytest.raises(ValueError, match="give n_gal"):
        simulate_tomographic_maps(8, *FIDUCIAL, bins, sigma_e=0.26, gaussian=True)
    with pytest.raises(ValueError, match="sigma_e must be a non-negative"):
        simulate_tomographic_maps(8, *FIDUCIAL, bins, sigma_e=-0.26, n_gal=30, gaussian=True)
    with pytest.raises(ValueError, match="no galaxies"):
        simulate_tomographic_maps(8, *FIDUCIAL, bins, sigma_e=0.26, n_gal=[30, 0], gaussian=True)


def test_noise_has_the_stated_level():
    pytest.importorskip("pyccl")
    bins = smail_bins(2)
    kw = dict(rng=3, gaussian=True, n_gal=[2.0, 1.0])
    clean = simulate_tomographic_maps(16, *FIDUCIAL, bins, **kw)
    noisy = simulate_tomographic_maps(16, *FIDUCIAL, bins, sigma_e=0.3, **kw)
    noise = noisy - clean  # same generator state: same signal
    expected = shape_noise_std(16, 0.3, [2.0, 1.0])
    np.testing.assert_allclose(noise.std(axis=1), expected, rtol=0.05)
    assert abs(np.corrcoef(noise)[0, 1]) < 0.05  # independent between bins


# --------------------------------------------------------------------- fields, no pyccl


def test_gaussian_cls_match_a_direct_quadrature():
    lmax = 24
    ell = np.arange(lmax + 1)
    c = np.where(ell >= 2, 2e-4 / (ell + 2.0) ** 2, 0.0)
    cl = np.array([[c, 0.7 * c], [0.7 * c, 1.5 * c]])
    shifts = np.array([0.015, 0.03])
    clg = lognormal_gaussian_cls(cl, shifts)
    x, w = np.polynomial.legendre.leggauss(200)
    p = np.array([eval_legendre(k, x) for k in ell])  # [lmax + 1, nodes]
    for i, j in [(0, 0), (0, 1), (1, 1)]:
        xi = ((2 * ell + 1) / (4 * np.pi) * cl[i, j]) @ p
        direct = 2 * np.pi * p @ (w * np.log1p(xi / (shifts[i] * shifts[j])))
        # 2 lmax + 2 nodes against 200: the quadrature is converged to ~1e-6
        np.testing.assert_allclose(clg[i, j], direct, rtol=1e-5, atol=1e-9 * direct.max())
    np.testing.assert_array_equal(clg[0, 1], clg[1, 0])
    # anticorrelated bins: xi_01(0) = -0.9 xi(0) < -shift**2, the autos are fine
    shift = np.sqrt(np.sum((2 * ell + 1) * c) / (4 * np.pi) / 2)
    with pytest.raises(ValueError, match="bins 0 and 1 are too small"):
        lognormal_gaussian_cls(np.array([[c, -0.9 * c], [-0.9 * c, c]]), [shift, shift])
    with pytest.raises(ValueError, match="symmetric"):
        lognormal_gaussian_cls(np.array([[c, c], [0.5 * c, c]]), shifts)
    with pytest.raises(ValueError, match="shifts must be 2 positive"):
        lognormal_gaussian_cls(cl, [0.01, -0.01])


def test_one_bin_is_the_single_bin_simulator():
    nside, lmax, shift = 16, 47, lognormal_shift(0.31)
    c = convergence_cl(*FIDUCIAL, lmax=lmax)
    mine = tomographic_lognormal_maps(
        lognormal_gaussian_cls(c[None, None], [shift]), [shift], nside, np.random.default_rng(4)
    )
    theirs = lognormal_map(lognormal_gaussian_cl(c, shift), shift, nside, np.random.default_rng(4))
    np.testing.assert_allclose(mine[0], theirs, rtol=1e-9, atol=1e-12)
    twin = tomographic_gaussian_maps(c[None, None], nside, np.random.default_rng(4), nest=True)
    np.testing.assert_allclose(twin[0], gaussian_map(c, nside, np.random.default_rng(4), nest=True))


def test_correlated_alm_statistics_and_clipping():
    lmax = 64
    ell = np.arange(lmax + 1)
    c = np.where(ell >= 2, 1.0, 0.0)
    cl = np.array([[c, 0.6 * c, 0.3 * c], [0.6 * c, 2 * c, c], [0.3 * c, c, 3 * c]])
    alms = [correlated_gaussian_alm(cl, np.random.default_rng(s)) for s in range(20)]
    est = np.mean([[[hp.alm2cl(a[i], a[j]) for j in range(3)] for i in range(3)] for a in alms], 0)
    band = slice(10, lmax + 1)
    modes = 20 * np.sum(2 * ell[band] + 1)
    diag = np.diagonal(cl[..., 20])
    err = np.sqrt((np.outer(diag, diag) + cl[..., 20] ** 2) / modes)  # Gaussian sampling error
    mean = np.average(est[..., band], axis=-1, weights=2 * ell[band] + 1)
    assert np.all(np.abs(mean - cl[..., 20]) < 4 * err), (mean, err)
    # a target correlation above 1 cannot be met: clipped to the nearest PSD matrix, warned of
    bad = np.array([[c, 1.5 * c], [1.5 * c, c]])
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        alm = correlated_gaussian_alm(bad, np.random.default_rng(0))
    # eigenvalues 2.5 and -0.5 -> 2.5 only: both bins get 1.25 and are fully correlated
    np.testing.assert_allclose(alm[0], alm[1], rtol=0, atol=1e-3)
    np.testing.assert_allclose(hp.alm2cl(alm[0])[10:].mean(), 1.25, rtol=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the monopole and dipole are never warned of
        correlated_gaussian_alm(cl, np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng must be a numpy.random.Generator"):
        correlated_gaussian_alm(cl, 0)


# -------------------------------------------------------------------------- with pyccl


def test_single_narrow_bin_reproduces_the_shipped_tables():
    pytest.importorskip("pyccl")
    z = np.linspace(0.0, 1.6, 1601)
    narrow = SourceBins(z, np.exp(-0.5 * ((z - 0.8) / 0.05) ** 2))
    lmax = 1500
    cl = tomographic_cl(*FIDUCIAL, narrow, lmax)
    np.testing.assert_allclose(cl[0, 0, 2:], convergence_cl(*FIDUCIAL, lmax=lmax)[2:], rtol=0.01)
    for om in (0.2, 0.31, 0.4):
        assert lognormal_shifts(om, narrow)[0] == pytest.approx(lognormal_shift(om), rel=2e-3)


def test_tomographic_spectra_and_shifts(monkeypatch):
    pytest.importorskip("pyccl")
    bins = smail_bins(4)
    cl = tomographic_cl(*FIDUCIAL, bins, 500)
    assert cl.shape == (4, 4, 501) and np.all(cl[:, :, :2] == 0)
    np.testing.assert_array_equal(cl, cl.transpose(1, 0, 2))
    # higher bins are lensed more; every pair is positively correlated, neighbours most
    auto = np.array([cl[i, i, 100] for i in range(4)])
    assert np.all(np.diff(auto) > 0)
    r = cl[:, :, 100] / np.sqrt(np.outer(auto, auto))
    assert 0.2 < r[0, 3] < r[0, 1] < 1 and 0.8 < r[2, 3] < 1
    # the spline above ell = 400 matches pyccl's value at every multipole (measured: 0.07%
    # up to ell = 3000)
    spline = tomographic_cl(*FIDUCIAL, bins, 1000)
    monkeypatch.setattr(tspectra, "_DIRECT_LMAX", 2000)
    direct = tomographic_cl(*FIDUCIAL, bins, 999)  # another lmax: not the cached spline
    np.testing.assert_allclose(spline[..., 400:1000], direct[..., 400:], rtol=1e-3)
    shifts = lognormal_shifts(0.31, bins)
    assert np.all(np.diff(shifts) > 0) and shifts[0] > 0.003 and shifts[-1] < 0.1
    assert np.all(lognormal_shifts(0.25, bins) < shifts)  # ~ Omega_m
    assert tomographic_cl(0.3, 0.8, bins, 32).flags.writeable  # a copy of the cached one
    with pytest.raises(ValueError, match="omega_m"):
        tomographic_cl(0.04, 0.8, bins, 32)


def maps_and_spectra(nside, n, bins, **kw):
    lmax = 2 * nside
    out = []
    for seed in range(n):
        m = simulate_tomographic_maps(nside, *FIDUCIAL, bins, rng=seed, **kw)
        out.append([[hp.anafast(m[i], map2=m[j], lmax=lmax) for j in range(4)] for i in range(4)])
    return m, np.mean(out, axis=0)


@pytest.mark.parametrize("gaussian", [False, True])
def test_maps_have_the_target_auto_and_cross_spectra(gaussian):
    # Measured (nside 64, 16 realisations, 16 <= ell <= 128): lognormal within 3.5%, Gaussian
    # twins within 3%, over the 10 spectra and 4 multipole bins.
    pytest.importorskip("pyccl")
    nside, bins = 64, smail_bins(4)
    target = tomographic_cl(*FIDUCIAL, bins, 2 * nside)
    _, est = maps_and_spectra(nside, 16, bins, gaussian=gaussian)
    edges = [16, 32, 64, 96, 129]
    for i in range(4):
        for j in range(i, 4):
            ratio = binned_ratio(est[i, j], target[i, j], edges)
            assert np.all(np.abs(ratio - 1) < 0.05), (gaussian, i, j, ratio)


def test_each_bin_is_shifted_lognormal():
    pytest.importorskip("pyccl")
    nside, bins = 64, smail_bins(4)
    shifts = lognormal_shifts(FIDUCIAL[0], bins)
    skew, var = [], []
    for seed in range(6):
        m = simulate_tomographic_maps(nside, *FIDUCIAL, bins, rng=seed)
        assert np.all(m.min(axis=1) > -shifts)
        g = np.log1p(m / shifts[:, None])
        assert np.all(np.abs(stats.skew(g, axis=1)) < 0.1)  # Gaussian underneath
        skew.append(stats.skew(m, axis=1))
        var.append(m.var(axis=1))
    u = np.mean(var, axis=0) / shifts**2  # e^{sigma^2} - 1 from the maps' variance
    predicted = (u + 3) * np.sqrt(u)  # (e^{s^2} + 2) sqrt(e^{s^2} - 1)
    np.testing.assert_allclose(np.mean(skew, axis=0), predicted, rtol=0.1)
    assert np.all(np.mean(skew, axis=0) > 0.2)


def test_seeds_orderings_and_common_random_numbers():
    pytest.importorskip("pyccl")
    bins = smail_bins(3)
    a = simulate_tomographic_maps(16, *FIDUCIAL, bins, rng=5)
    b = simulate_tomographic_maps(16, *FIDUCIAL, bins, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    nest = simulate_tomographic_maps(16, *FIDUCIAL, bins, rng=5, nest=True)
    np.testing.assert_array_equal(hp.reorder(nest, n2r=True), a)
    assert (
        abs(np.corrcoef(a[0], simulate_tomographic_maps(16, *FIDUCIAL, bins, rng=6)[0])[0, 1]) < 0.3
    )
    # a nearby cosmology from the same seed: the same realisation, slightly rescaled
    c = simulate_tomographic_maps(16, 0.32, 0.83, bins, rng=5)
    assert np.all([np.corrcoef(a[i], c[i])[0, 1] > 0.99 for i in range(3)])


def test_docstring_examples():
    for module in (tbins, tfields, tspectra, tomo):
        if module in (tspectra, tomo):
            pytest.importorskip("pyccl")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__
