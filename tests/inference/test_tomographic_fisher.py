"""All auto- and cross-spectra of tomographic maps, and their analytic Fisher matrix against
simulations (the simulator, the summary and fisher_matrix together)."""

import doctest

import healpy as hp
import numpy as np
import pytest

import pyg_sphere.inference.tomographic_fisher as tf
from pyg_sphere.datasets.tomography import simulate_tomographic_maps, smail_bins
from pyg_sphere.inference import (
    PowerSpectrumSummary,
    TomographicPowerSpectrumSummary,
    cross_spectra,
    figure_of_merit,
    fisher_matrix,
    gaussian_cl_fisher,
    gaussian_cross_cl_fisher,
    marginal_errors,
    tomographic_fisher_forecast,
)

FIDUCIAL = np.array([0.31, 0.82])
STEP = np.array([0.02, 0.02])


def toy_spectra(n=3, lmax=48):
    """Spectra of n correlated fields and derivatives in an amplitude and a tilt."""
    ell = np.arange(lmax + 1)
    c = np.where(ell >= 2, 1e-3 / (ell + 5.0) ** 2.2, 0.0)
    mix = np.array([[1.0, 0.6, 0.3], [0.6, 2.0, 1.1], [0.3, 1.1, 3.0]])[:n, :n]
    cl = mix[:, :, None] * c
    tilt = cl * np.log(ell + 5.0)
    return cl, np.stack([cl, tilt])


# ------------------------------------------------------------------------------ spectra


def test_cross_spectra_are_anafast_of_each_pair():
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((3, hp.nside2npix(8)))
    maps[1] += maps[0]
    cl = cross_spectra(maps, lmax=20)
    for i in range(3):
        for j in range(3):
            np.testing.assert_allclose(cl[i, j], hp.anafast(maps[i], map2=maps[j], lmax=20))
    nest = hp.reorder(maps, r2n=True)
    np.testing.assert_allclose(cross_spectra(nest, lmax=20, nest=True), cl)
    with pytest.raises(ValueError, match="not a HEALPix map"):
        cross_spectra(maps[:, :700])
    with pytest.raises(ValueError, match=r"\[n_bins, num_pixels\]"):
        cross_spectra(maps[0])


def test_summary_layout_and_one_bin_is_the_power_spectrum_summary():
    nside = 8
    x = np.random.default_rng(1).standard_normal((4, 2, hp.nside2npix(nside)))
    edges = np.array([2, 5, 9, 17])
    s = TomographicPowerSpectrumSummary(nside, 2, bins=edges, lmax=16, iter=0)
    out = s(x)
    assert out.shape == (4, 9) and s.pairs == [(0, 0), (0, 1), (1, 1)]
    ell = np.arange(17)
    cross = hp.anafast(x[2, 0], map2=x[2, 1], lmax=16, iter=0) * ell * (ell + 1)
    np.testing.assert_allclose(out[2, 3:6], [cross[a:b].mean() for a, b in zip(edges, edges[1:])])
    # one bin, nested maps: PowerSpectrumSummary of the whole sky (pixels = all of them)
    nested = hp.reorder(x[:, 0], r2n=True)
    one = TomographicPowerSpectrumSummary(nside, 1, bins=edges, lmax=16, nest=True, iter=0)
    np.testing.assert_allclose(
        one(nested[:, None]), PowerSpectrumSummary(nside, bins=edges, lmax=16)(nested)
    )
    with pytest.raises(ValueError, match=r"\[num_samples, 2, 768\]"):
        s(x[:, :1])
    assert "n_bins=2" in repr(s)


def test_patch_summary_is_each_pairs_patch_pseudo_spectrum():
    """With pixels=, the patches of each bin are placed at their pixels in empty maps: the
    auto-spectra are PowerSpectrumSummary's of each bin's patch, the cross-spectra anafast's
    of the two zero-filled maps."""
    nside, edges = 8, np.array([2, 5, 9, 17])
    pixels = np.arange(64, 128)  # patch 1 of order 1, nested ids
    x = np.random.default_rng(2).standard_normal((3, 2, 64))
    s = TomographicPowerSpectrumSummary(nside, 2, bins=edges, lmax=16, pixels=pixels)
    out = s(x)
    assert out.shape == (3, 9) and s.iter == 0  # patches: PowerSpectrumSummary's default
    for c, block in ((0, slice(0, 3)), (1, slice(6, 9))):
        ps = PowerSpectrumSummary(nside, pixels, bins=edges, lmax=16)(x[:, c])
        np.testing.assert_allclose(out[:, block], ps)
    full = np.zeros((2, hp.nside2npix(nside)))
    full[:, hp.nest2ring(nside, pixels)] = x[1]
    ell = np.arange(17)
    cross = hp.anafast(full[0], map2=full[1], lmax=16, iter=0) * ell * (ell + 1)
    np.testing.assert_allclose(out[1, 3:6], [cross[a:b].mean() for a, b in zip(edges, edges[1:])])
    with pytest.raises(ValueError, match=r"\[num_samples, 2, 64\]"):
        s(x[:, :, :32])
    with pytest.raises(ValueError, match="duplicate"):
        TomographicPowerSpectrumSummary(nside, 2, pixels=[1, 1, 2])
    assert "num_pixels=64" in repr(s)


# ---------------------------------------------------------------------- analytic Fisher


def test_one_bin_is_gaussian_cl_fisher():
    cl, dcl = toy_spectra(1)
    noise = 3e-6
    for edges in (None, np.array([2, 6, 12, 24, 49])):
        np.testing.assert_allclose(
            gaussian_cross_cl_fisher(dcl, cl, noise, 0.3, edges),
            gaussian_cl_fisher(dcl[:, 0, 0], cl[0, 0], noise, 0.3, edges),
            rtol=1e-10,
        )


def test_unbinned_fisher_is_the_trace_formula():
    cl, dcl = toy_spectra(3)
    noise = np.array([1e-6, 2e-6, 4e-6])
    f = gaussian_cross_cl_fisher(dcl, cl, noise, f_sky=0.5)
    expected = np.zeros((2, 2))
    for ell in range(2, cl.shape[2]):
        cinv = np.linalg.inv(cl[:, :, ell] + np.diag(noise))
        for a in range(2):
            for b in range(2):
                tr = np.trace(cinv @ dcl[a, :, :, ell] @ cinv @ dcl[b, :, :, ell])
                expected[a, b] += (2 * ell + 1) * 0.5 / 2 * tr
    np.testing.assert_allclose(f, expected, rtol=1e-9)
    # bins lose information, never add; f_sky scales
    binned = gaussian_cross_cl_fisher(dcl, cl, noise, 0.5, np.arange(2, 50, 8))
    assert np.all(np.linalg.eigvalsh(f - binned) > -1e-9 * np.abs(f).max())
    np.testing.assert_allclose(gaussian_cross_cl_fisher(dcl, cl, noise, 0.25), f / 2)
    # per-multipole noise the same as white noise
    np.testing.assert_allclose(
        gaussian_cross_cl_fisher(dcl, cl, np.repeat(noise[:, None], 49, axis=1), 0.5), f
    )


def test_fisher_errors_name_the_problem():
    cl, dcl = toy_spectra(2)
    same = np.repeat(cl[:1, :1], 2, axis=0).repeat(2, axis=1)  # two identical bins, no noise
    with pytest.raises(ValueError, match="singular"):
        gaussian_cross_cl_fisher(dcl, same)
    gaussian_cross_cl_fisher(dcl, same, noise_cl=1e-6)  # noise lifts the degeneracy
    with pytest.raises(ValueError, match="f_sky"):
        gaussian_cross_cl_fisher(dcl, cl, f_sky=1.5)
    with pytest.raises(ValueError, match="like cl"):
        gaussian_cross_cl_fisher(dcl[..., :10], cl)
    asymmetric = cl.copy()
    asymmetric[0, 1] *= 2
    with pytest.raises(ValueError, match="symmetric"):
        gaussian_cross_cl_fisher(dcl, asymmetric)
    with pytest.raises(ValueError, match="noise_cl"):
        gaussian_cross_cl_fisher(dcl, cl, noise_cl=[-1.0, 1.0])
    with pytest.raises(ValueError, match="bin_edges"):
        gaussian_cross_cl_fisher(dcl, cl, bin_edges=[10, 5])


# ------------------------------------------------------------------- against simulations


def simulated_and_analytic(n_bins, nside, edges, n, seed=0, iter=0):
    """Fisher matrices of the tomographic spectra of noisy Gaussian maps: from n simulations
    at the fiducial and +- steps (shared seeds), and analytic (same bins, same noise)."""
    bins = smail_bins(n_bins)
    noise = dict(sigma_e=0.26, n_gal=30.0)
    lmax = int(edges[-1]) - 1
    thetas = [FIDUCIAL] + [FIDUCIAL + s * STEP[a] * np.eye(2)[a] for a in range(2) for s in (1, -1)]
    summary = TomographicPowerSpectrumSummary(nside, n_bins, bins=edges, lmax=lmax, iter=iter)
    values = np.empty((5, n, len(summary.pairs) * (len(edges) - 1)))
    for i in range(n):
        for v, theta in enumerate(thetas):
            m = simulate_tomographic_maps(
                nside, *theta, bins, rng=np.random.default_rng([seed, i]), gaussian=True, **noise
            )
            values[v, i] = summary(m[None])[0]
    simulated = fisher_matrix(values[0], values[[1, 3]], values[[2, 4]], STEP)
    analytic = tomographic_fisher_forecast(
        *FIDUCIAL, bins, lmax, **noise, bin_edges=edges, step=tuple(STEP)
    )
    return simulated, analytic


def test_simulated_two_bin_fisher_matches_the_cross_spectrum_oracle():
    # 400 realisations of 2 bins at nside 16 (18 summary components, 2 <= ell <= 32), noisy
    # Gaussian maps. Measured over 8 seeds: marginal errors within 8%, figure of merit within
    # 10% (seed 0: 1.6%, 1.2% and 2.8%); the slow test below meets 5% and 10% with 4 bins.
    pytest.importorskip("pyccl")
    edges = np.array([2, 5, 9, 14, 20, 27, 33])
    simulated, analytic = simulated_and_analytic(2, 16, edges, 400)
    np.testing.assert_allclose(marginal_errors(simulated), marginal_errors(analytic), rtol=0.15)
    assert figure_of_merit(simulated) == pytest.approx(figure_of_merit(analytic), rel=0.2)


@pytest.mark.slow
def test_simulated_four_bin_fisher_matches_the_cross_spectrum_oracle():
    # 2000 realisations of 4 bins at nside 32 (70 summary components, 2 <= ell <= 64), about
    # a minute. Measured over seeds 1, 2, 3: marginal errors within 0.9%, 1.8%, 0.9% and
    # figures of merit within 1.1%, 1.8%, 0.3%.
    pytest.importorskip("pyccl")
    edges = np.array([2, 6, 11, 18, 27, 38, 50, 65])
    simulated, analytic = simulated_and_analytic(4, 32, edges, 2000, seed=1)
    np.testing.assert_allclose(marginal_errors(simulated), marginal_errors(analytic), rtol=0.05)
    assert figure_of_merit(simulated) == pytest.approx(figure_of_merit(analytic), rel=0.1)


def test_four_bins_beat_one_on_the_same_footprint_and_galaxies():
    # Euclid-like n(z), sigma_e 0.26, 30 galaxies / arcmin^2 in total, 10 <= ell <= 1500
    # (every multipole), f_sky 0.36; F scales with f_sky, so the ratio does not depend on it.
    # Measured: FoM 9.50e4 (1 bin) and 4.86e5 (4 bins), 5.12x (2 bins: 3.92e5); marginal
    # errors on (Omega_m, sigma_8) from (0.0150, 0.0213) to (0.0032, 0.0044). The same
    # ratio with steps 0.005 or 0.02 and without the spline in ell: 5.11-5.13.
    pytest.importorskip("pyccl")
    kw = dict(lmax=1500, sigma_e=0.26, n_gal=30.0, f_sky=0.36, bin_edges=np.arange(10, 1502))
    one = tomographic_fisher_forecast(*FIDUCIAL, smail_bins(1), **kw)
    four = tomographic_fisher_forecast(*FIDUCIAL, smail_bins(4), **kw)
    assert figure_of_merit(four) == pytest.approx(5.12 * figure_of_merit(one), rel=0.05)
    assert np.all(marginal_errors(four) < marginal_errors(one))


def test_forecast_needs_a_galaxy_density_with_noise():
    with pytest.raises(ValueError, match="needs n_gal"):
        tomographic_fisher_forecast(*FIDUCIAL, smail_bins(1), 32, sigma_e=0.26)
    with pytest.raises(ValueError, match="step"):
        tf.tomographic_cl_derivatives(*FIDUCIAL, smail_bins(1), 32, step=(0.01, -0.01))


def test_docstring_examples():
    pytest.importorskip("pyccl")
    result = doctest.testmod(tf, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
