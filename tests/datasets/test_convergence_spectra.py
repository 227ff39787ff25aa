"""Spectra and shifts at any (Omega_m, sigma_8): the grid table, its interpolation, pyccl."""

import doctest

import numpy as np
import pytest

import pyg_sphere.datasets.convergence_spectra as spectra
from pyg_sphere import cache
from pyg_sphere.datasets import PRIOR_BOX, convergence_cl, lognormal_shift
from pyg_sphere.datasets.lognormal_maps import cosmology_models

LMAX = 6144


def pyccl_cl(om, s8, ell):
    """C_ell^kk by an independent route: pyccl's shear spectrum converted to convergence,
    C^kk = C^gg [l(l+1)]^2 / ((l+2)(l+1)l(l-1))."""
    ccl = pytest.importorskip("pyccl")
    t = spectra._load_grid()
    z = np.linspace(0.0, 1.6, 1601)
    nz = np.exp(-0.5 * ((z - float(t["z_mean"])) / float(t["z_sigma"])) ** 2)
    cosmo = ccl.Cosmology(
        Omega_c=om - float(t["omega_b"]),
        Omega_b=float(t["omega_b"]),
        h=float(t["h"]),
        sigma8=s8,
        n_s=float(t["n_s"]),
        transfer_function="eisenstein_hu",
        matter_power_spectrum="halofit",
    )
    shear = ccl.WeakLensingTracer(cosmo, dndz=(z, nz))
    ell = np.asarray(ell, dtype=np.float64)
    cl_gg = ccl.angular_cl(cosmo, shear, shear, ell)
    return cl_gg * (ell * (ell + 1)) ** 2 / ((ell + 2) * (ell + 1) * ell * (ell - 1))


def box_points(n, seed):
    """The four corners of the prior box and n uniform points inside it."""
    (om_lo, om_hi), (s8_lo, s8_hi) = PRIOR_BOX["omega_m"], PRIOR_BOX["sigma_8"]
    rng = np.random.default_rng(seed)
    corners = [(om_lo, s8_lo), (om_lo, s8_hi), (om_hi, s8_lo), (om_hi, s8_hi)]
    return corners + list(zip(rng.uniform(om_lo, om_hi, n), rng.uniform(s8_lo, s8_hi, n)))


# ------------------------------------------------------------------------------- the table


def test_prior_box_and_table():
    assert dict(PRIOR_BOX) == {"omega_m": (0.15, 0.45), "sigma_8": (0.5, 1.1)}
    with pytest.raises(TypeError):
        PRIOR_BOX["omega_m"] = (0.0, 1.0)  # read-only: a default argument of the designs
    table = spectra._load_grid()
    assert spectra.GRID_TABLE.stat().st_size < 300 * 1024
    assert table["ell"][0] == 2 and table["ell"][-1] == LMAX
    assert np.all(np.diff(table["ell"]) > 0)
    assert table["ln_cl"].shape == (table["omega_m"].size, table["sigma_8"].size, table["ell"].size)
    assert all(not v.flags.writeable for v in table.values())
    # the grid pads the prior box, so that default Fisher steps (0.02) at its edges fit
    padded = spectra.tabulated_box()
    for name, (lo, hi) in PRIOR_BOX.items():
        assert padded[name][0] <= lo - 0.02 and padded[name][1] >= hi + 0.02
    om_range = (table["shift_omega_m"][0], table["shift_omega_m"][-1])
    assert om_range == padded["omega_m"]
    assert "cl_grid_table" in cache.info()


def test_shape_and_zero_monopole_and_dipole():
    cl = convergence_cl(0.3, 0.8)
    assert cl.shape == (LMAX + 1,) and cl.dtype == np.float64
    assert cl[0] == cl[1] == 0 and np.all(cl[2:] > 0)
    short = convergence_cl(0.3, 0.8, lmax=100)
    assert short.shape == (101,)
    np.testing.assert_allclose(short, cl[:101], rtol=1e-13)
    cl[5] = -1.0  # a fresh array each call: writing to it changes nothing else
    assert convergence_cl(0.3, 0.8)[5] > 0


def test_grid_nodes_are_reproduced_exactly():
    # splines interpolate: at a grid cosmology and a tabulated ell, the table's value
    t = spectra._load_grid()
    i, j = 4, 7
    cl = convergence_cl(t["omega_m"][i], t["sigma_8"][j])
    np.testing.assert_allclose(np.log(cl[t["ell"]]), t["ln_cl"][i, j], rtol=0, atol=1e-10)


def test_more_matter_and_more_clustering_mean_more_lensing():
    ell = np.r_[2, 10, 100, 1000, 6000]
    low, high_s8 = convergence_cl(0.3, 0.7)[ell], convergence_cl(0.3, 0.9)[ell]
    high_om = convergence_cl(0.35, 0.7)[ell]
    assert np.all(high_s8 > 1.4 * low)
    # at fixed sigma_8, more matter lenses more on small scales (the shape of P(k) changes
    # with Omega_m h, which lowers the largest scales)
    assert np.all(high_om[2:] > 1.1 * low[2:])
    # linear scales: C_ell ~ sigma_8^2 (halofit adds more on small scales)
    assert abs(high_s8[1] / low[1] / (0.9 / 0.7) ** 2 - 1) < 0.05
    assert high_s8[-1] / low[-1] > high_s8[1] / low[1]


def test_agrees_with_the_two_model_table():
    for model in (*cosmology_models(), cosmology_models(power_matched=True)[1]):
        cl = convergence_cl(model.omega_m, model.sigma_8)
        np.testing.assert_allclose(cl[2:], model.cl[2:], rtol=0.01)
        assert lognormal_shift(model.omega_m) == pytest.approx(model.shift, rel=5e-3)


def test_shift():
    om = np.linspace(0.12, 0.48, 25)
    shift = np.array([lognormal_shift(x) for x in om])
    assert np.all(np.diff(shift) > 0)  # more matter, deeper empty beams
    # kappa_empty is Omega_m times a distance integral, which shrinks as Omega_m grows
    ratio = shift / om
    assert np.all(np.diff(ratio) < 0) and ratio.max() / ratio.min() < 2
    t = spectra._load_grid()
    np.testing.assert_allclose(
        [lognormal_shift(x) for x in t["shift_omega_m"]], t["shift"], rtol=1e-12
    )
    np.testing.assert_allclose(
        t["shift"], t["kappa0"] * t["kappa_empty"] / t["kappa_empty_millennium"], rtol=1e-12
    )


# ------------------------------------------------------------------------------- vs pyccl


def check_against_pyccl(points, ell):
    worst = 0.0
    for om, s8 in points:
        exact = pyccl_cl(om, s8, ell)
        approx = convergence_cl(om, s8)[ell]
        worst = max(worst, float(np.max(np.abs(approx / exact - 1))))
    assert worst < 0.01, worst
    return worst


def test_matches_pyccl_at_a_few_cosmologies():
    pytest.importorskip("pyccl")
    rng = np.random.default_rng(0)
    # decades of ell, plus integers between the table's nodes
    ell = np.unique(np.r_[2, 3, 4, 7, 13, 50, 333, 2024, 5000, 6144, rng.integers(2, 6145, 10)])
    check_against_pyccl(box_points(1, seed=0)[3:], ell)


@pytest.mark.slow
def test_matches_pyccl_across_the_prior_box():
    pytest.importorskip("pyccl")
    check_against_pyccl(box_points(16, seed=1), np.arange(2, LMAX + 1))


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "args, match",
    [
        ((0.6, 0.8), r"omega_m=0.6 is outside.*omega_m in \[0.12, 0.48\].*sigma_8 in"),
        ((0.3, 0.3), r"sigma_8=0.3 is outside.*sigma_8 in \[0.45, 1.15\]"),
        ((0.3, 1.2), r"sigma_8=1.2 is outside"),
        ((float("nan"), 0.8), r"omega_m=nan is outside"),
        (("a", 0.8), "omega_m must be a number"),
        ((None, 0.8), "omega_m must be a number"),
    ],
)
def test_outside_the_table(args, match):
    with pytest.raises(ValueError, match=match):
        convergence_cl(*args)


def test_bad_lmax_and_shift():
    with pytest.raises(ValueError, match="beyond the tabulated spectra"):
        convergence_cl(0.3, 0.8, lmax=LMAX + 1)
    with pytest.raises(ValueError, match="lmax must be an integer >= 2"):
        convergence_cl(0.3, 0.8, lmax=1)
    with pytest.raises(ValueError, match=r"omega_m=0.05 is outside.*\[0.12, 0.48\]"):
        lognormal_shift(0.05)


def test_docstring_examples():
    result = doctest.testmod(spectra)
    assert result.attempted > 0 and result.failed == 0
