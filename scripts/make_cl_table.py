"""Regenerate the convergence power-spectrum tables shipped with pyg_sphere.

The simulator reads two tables and needs no cosmology code at run time:

* ``pyg_sphere/datasets/data/convergence_cl.npz``: the spectra and shifts of the
  two DeepSphere cosmologies, every ell (:mod:`pyg_sphere.datasets.lognormal_maps`);
* ``pyg_sphere/datasets/data/convergence_cl_grid.npz``: ln C_ell on a grid of
  (Omega_m, sigma_8) and the shift on a grid of Omega_m, interpolated to any
  cosmology of the prior box (:mod:`pyg_sphere.datasets.convergence_spectra`).

This script recomputes them with `pyccl` (install the extra:
``pip install pyg_sphere[cosmo]``) and runs offline, the first table in a few
seconds and the grid in about two minutes on one core::

    python scripts/make_cl_table.py                     # writes both packaged tables
    python scripts/make_cl_table.py --only models --out x.npz
    python scripts/make_cl_table.py --only grid --grid-out g.npz --check 20

What it computes
----------------
* The two DeepSphere cosmologies (Perraudin et al. 2019): model 1
  Omega_m = 0.31, sigma_8 = 0.82 and model 2 Omega_m = 0.26, sigma_8 = 0.91,
  both with h = 0.7, n_s = 0.96, Omega_b = 0.05, flat LCDM, massless neutrinos.
  Linear matter power from the Eisenstein & Hu (1998) transfer function, made
  non-linear with halofit (Takahashi et al. 2012), as implemented in pyccl.
* Sources: a narrow Gaussian redshift distribution, mean z = 0.8 and standard
  deviation 0.05. It stands for the single source plane at z ~ 0.8 of the
  DeepSphere maps; a narrow distribution rather than a delta because pyccl
  integrates n(z) numerically (its spectrum is within 1% of pyccl's
  single-plane convergence tracer on 100 < ell < 1000).
* The convergence auto-spectrum C_ell^kk (Limber), ell = 0 ... 6144
  (= 3 * 2048, enough for nside 2048 maps); C_0 = C_1 = 0.
* The "power-matched" variant of model 2: its sigma_8 is fitted (a 1-D bounded
  minimisation) so that ln C_ell of model 2 matches ln C_ell of model 1 in the
  least-squares sense on 100 < ell < 1000. The two classes then differ only by
  what the spectrum does not capture on those scales.
* The lognormal shift lambda of each model (the convergence minimum of the
  shifted-lognormal model, kappa >= -lambda). Hilbert, Hartlap & Schneider
  (2011, A&A 536, A85, eq. 38) fitted
  kappa_0(z_s) = 0.008 z_s + 0.029 z_s^2 - 0.0079 z_s^3 + 0.00065 z_s^4
  to ray-traced maps of the Millennium Simulation (Omega_m = 0.25,
  Omega_Lambda = 0.75, h = 0.73). That fit holds for one cosmology; the depth
  of the convergence minimum scales with the empty-beam convergence
  kappa_empty = int W(chi) dchi (a line of sight with delta = -1 everywhere,
  proportional to Omega_m), so for each model
  lambda = kappa_0^HHS11(0.8) * kappa_empty(model) / kappa_empty(Millennium),
  with kappa_empty computed by pyccl for the same n(z). This carries the
  Omega_m dependence of the non-Gaussianity (the reduced skewness of kappa
  scales roughly as 1/Omega_m in perturbation theory), so the two classes
  differ in their one-point distribution even when their spectra match.
* The grid table, with the same cosmology, n(z), spectrum and shift: ln C_ell
  at 56 multipoles log-spaced from 2 to 6144, on 13 x 15 points of
  Omega_m in [0.12, 0.48] x sigma_8 in [0.45, 1.15] (the prior box
  [0.15, 0.45] x [0.5, 1.1] padded, so that finite differences at its edges
  stay inside), and kappa_empty and the shift on 37 values of Omega_m in
  [0.12, 0.48]. Interpolated with tensor-product cubic splines in
  (Omega_m, sigma_8) and a cubic spline in ln ell, it reproduces pyccl to
  better than 0.5% over the box and 2 <= ell <= 6144 (``--check N`` measures
  this at N random cosmologies).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

LMAX = 6144
Z_MEAN = 0.8
Z_SIGMA = 0.05
H = 0.7
N_S = 0.96
OMEGA_B = 0.05
MODELS = {"model1": (0.31, 0.82), "model2": (0.26, 0.91)}
MATCH_RANGE = (100, 1000)  # exclusive bounds, as in "100 < ell < 1000"
DATA = Path(__file__).resolve().parents[1] / "pyg_sphere" / "datasets" / "data"
DEFAULT_OUT = DATA / "convergence_cl.npz"
DEFAULT_GRID_OUT = DATA / "convergence_cl_grid.npz"
# The interpolation grid: the prior box Omega_m in [0.15, 0.45], sigma_8 in [0.5, 1.1], padded.
PRIOR_BOX = ((0.15, 0.45), (0.5, 1.1))
GRID_OMEGA_M = np.round(np.linspace(0.12, 0.48, 13), 10)
GRID_SIGMA_8 = np.round(np.linspace(0.45, 1.15, 15), 10)
GRID_ELL = np.unique(np.round(np.geomspace(2, LMAX, 60)).astype(np.int64))
SHIFT_OMEGA_M = np.round(np.linspace(0.12, 0.48, 37), 10)
# Millennium Simulation cosmology, the one Hilbert et al. (2011) fitted kappa_0 in
MILLENNIUM = dict(omega_m=0.25, h=0.73, omega_b=0.045)


def hilbert_kappa0(z_s: float) -> float:
    """Lognormal convergence shift fitted by Hilbert, Hartlap & Schneider (2011), eq. 38."""
    return 0.008 * z_s + 0.029 * z_s**2 - 0.0079 * z_s**3 + 0.00065 * z_s**4


def source_nz():
    z = np.linspace(0.0, 1.6, 1601)
    return z, np.exp(-0.5 * ((z - Z_MEAN) / Z_SIGMA) ** 2)


def cosmology(omega_m, sigma_8, *, h=H, omega_b=OMEGA_B, n_s=N_S):
    import pyccl as ccl

    return ccl.Cosmology(
        Omega_c=omega_m - omega_b,
        Omega_b=omega_b,
        h=h,
        sigma8=sigma_8,
        n_s=n_s,
        transfer_function="eisenstein_hu",
        matter_power_spectrum="halofit",
    )


def convergence_tracer(cosmo):
    """kappa tracer for the source n(z): the lensing kernel with the ell(ell+1) prefactor."""
    import pyccl as ccl

    kernel = ccl.tracers.get_lensing_kernel(cosmo, dndz=source_nz())
    tracer = ccl.Tracer()
    tracer.add_tracer(cosmo, kernel=kernel, der_bessel=-1, der_angles=1)
    return tracer, kernel


def convergence_cl(omega_m, sigma_8, ell):
    """C_ell^kk of one cosmology at integer multipoles ``ell`` (0 and 1 give 0)."""
    import pyccl as ccl

    cosmo = cosmology(omega_m, sigma_8)
    tracer, _ = convergence_tracer(cosmo)
    ell = np.asarray(ell)
    cl = np.zeros(ell.shape, dtype=np.float64)
    keep = ell >= 2
    cl[keep] = ccl.angular_cl(cosmo, tracer, tracer, ell[keep].astype(np.float64))
    return cl


def empty_beam_kappa(omega_m, *, h=H, omega_b=OMEGA_B):
    """Depth of the empty-beam convergence, int W(chi) dchi (positive number)."""
    # sigma_8 and n_s do not enter the background kernel
    _, (chi, w) = convergence_tracer(cosmology(omega_m, 0.8, h=h, omega_b=omega_b))
    return float(np.trapezoid(w, chi))


def match_sigma8(cl_reference, omega_m, bounds=(0.6, 1.2)):
    """sigma_8 for which ln C_ell best matches ``cl_reference`` on MATCH_RANGE (least squares)."""
    from scipy.optimize import minimize_scalar

    ell = np.arange(MATCH_RANGE[0] + 1, MATCH_RANGE[1])
    target = np.log(cl_reference[ell])

    def cost(s8):
        return float(np.sum((np.log(convergence_cl(omega_m, s8, ell)) - target) ** 2))

    res = minimize_scalar(cost, bounds=bounds, method="bounded", options={"xatol": 1e-7})
    if not res.success:
        raise RuntimeError(f"sigma_8 fit failed: {res.message}")
    return float(res.x)


def shift_scale():
    """kappa_0^HHS11(z) / kappa_empty(Millennium): the shift is this times kappa_empty."""
    k_mill = empty_beam_kappa(
        MILLENNIUM["omega_m"], h=MILLENNIUM["h"], omega_b=MILLENNIUM["omega_b"]
    )
    return hilbert_kappa0(Z_MEAN) / k_mill


def provenance():
    import pyccl as ccl

    return np.array(
        f"pyccl {ccl.__version__}; transfer_function=eisenstein_hu, "
        f"matter_power_spectrum=halofit; Limber; Gaussian n(z) z={Z_MEAN} "
        f"sigma_z={Z_SIGMA}; shift = HHS11 kappa_0(z) x kappa_empty/kappa_empty(Millennium)"
    )


def make_table():
    ell = np.arange(LMAX + 1)
    (om1, s81), (om2, s82) = MODELS["model1"], MODELS["model2"]
    cl1 = convergence_cl(om1, s81, ell)
    cl2 = convergence_cl(om2, s82, ell)
    s82_pm = match_sigma8(cl1, om2)
    cl2_pm = convergence_cl(om2, s82_pm, ell)

    scale = shift_scale()
    k_empty = np.array([empty_beam_kappa(om1), empty_beam_kappa(om2), empty_beam_kappa(om2)])

    return dict(
        ell=ell,
        cl=np.stack([cl1, cl2, cl2_pm]),
        name=np.array(["model1", "model2", "model2_power_matched"]),
        label=np.array([0, 1, 1]),
        omega_m=np.array([om1, om2, om2]),
        sigma_8=np.array([s81, s82, s82_pm]),
        shift=k_empty * scale,
        kappa_empty=k_empty,
        h=np.float64(H),
        n_s=np.float64(N_S),
        omega_b=np.float64(OMEGA_B),
        z_mean=np.float64(Z_MEAN),
        z_sigma=np.float64(Z_SIGMA),
        match_range=np.array(MATCH_RANGE),
        provenance=provenance(),
    )


def make_grid_table(log=print):
    """ln C_ell on GRID_OMEGA_M x GRID_SIGMA_8 at GRID_ELL, and the shift on SHIFT_OMEGA_M."""
    ln_cl = np.empty((GRID_OMEGA_M.size, GRID_SIGMA_8.size, GRID_ELL.size))
    for i, om in enumerate(GRID_OMEGA_M):
        for j, s8 in enumerate(GRID_SIGMA_8):
            ln_cl[i, j] = np.log(convergence_cl(om, s8, GRID_ELL))
        log(f"  Omega_m = {om:.3f} done ({i + 1}/{GRID_OMEGA_M.size})")
    k_empty = np.array([empty_beam_kappa(om) for om in SHIFT_OMEGA_M])
    scale = shift_scale()
    return dict(
        ell=GRID_ELL,
        omega_m=GRID_OMEGA_M,
        sigma_8=GRID_SIGMA_8,
        ln_cl=ln_cl,
        shift_omega_m=SHIFT_OMEGA_M,
        kappa_empty=k_empty,
        shift=k_empty * scale,
        kappa0=np.float64(hilbert_kappa0(Z_MEAN)),
        kappa_empty_millennium=np.float64(hilbert_kappa0(Z_MEAN) / scale),
        prior_box=np.array(PRIOR_BOX),
        h=np.float64(H),
        n_s=np.float64(N_S),
        omega_b=np.float64(OMEGA_B),
        z_mean=np.float64(Z_MEAN),
        z_sigma=np.float64(Z_SIGMA),
        provenance=provenance(),
    )


def check_grid_table(path, n, seed=0, log=print):
    """Largest relative error of the interpolated C_ell against pyccl, at ``n`` cosmologies
    drawn uniformly in the prior box (its four corners included), every ell in [2, LMAX]."""
    from pyg_sphere.datasets import convergence_spectra

    with np.load(path, allow_pickle=False) as f:
        table = {k: f[k] for k in f.files}
    rng = np.random.default_rng(seed)
    (om_lo, om_hi), (s8_lo, s8_hi) = PRIOR_BOX
    points = [(om_lo, s8_lo), (om_lo, s8_hi), (om_hi, s8_lo), (om_hi, s8_hi)]
    points += list(zip(rng.uniform(om_lo, om_hi, n), rng.uniform(s8_lo, s8_hi, n)))
    ell = np.arange(LMAX + 1)
    worst = 0.0
    for om, s8 in points:
        approx = convergence_spectra._interpolate_cl(table, om, s8, LMAX)
        exact = convergence_cl(om, s8, ell)
        err = float(np.max(np.abs(approx[2:] / exact[2:] - 1)))
        worst = max(worst, err)
        log(f"  Omega_m={om:.4f} sigma_8={s8:.4f}: max |C_interp / C_pyccl - 1| = {err:.5f}")
    return worst


def _save(table, out):
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **table)
    os.replace(tmp, out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output .npz path of the two-model table"
    )
    parser.add_argument(
        "--grid-out", type=Path, default=DEFAULT_GRID_OUT, help="output .npz path of the grid"
    )
    parser.add_argument(
        "--only", choices=("models", "grid"), default=None, help="write one table only"
    )
    parser.add_argument(
        "--check",
        type=int,
        default=0,
        metavar="N",
        help="compare the grid's interpolation with pyccl at N random cosmologies plus the "
        "prior box's corners",
    )
    args = parser.parse_args(argv)
    if args.only != "grid":
        write_models_table(args.out)
    if args.only != "models":
        start = time.perf_counter()
        print("computing the grid table ...")
        _save(make_grid_table(), args.grid_out)
        print(
            f"wrote {args.grid_out} ({args.grid_out.stat().st_size / 1024:.0f} kB) "
            f"in {time.perf_counter() - start:.0f} s"
        )
        if args.check > 0:
            worst = check_grid_table(args.grid_out, args.check)
            print(f"largest interpolation error over the prior box: {worst:.5f}")


def write_models_table(out):
    table = make_table()
    _save(table, out)
    cl = table["cl"]
    ell = np.arange(MATCH_RANGE[0] + 1, MATCH_RANGE[1])
    for i, name in enumerate(table["name"]):
        print(
            f"{name:22s} Omega_m={table['omega_m'][i]:.4f} sigma_8={table['sigma_8'][i]:.5f} "
            f"shift={table['shift'][i]:.5f} |ln C/C_model1| max on 100<ell<1000: "
            f"{np.max(np.abs(np.log(cl[i, ell] / cl[0, ell]))):.4f}"
        )
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
