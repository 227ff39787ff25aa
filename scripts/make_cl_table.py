"""Regenerate the convergence power-spectrum table shipped with pyg_sphere.

The simulator (:mod:`pyg_sphere.datasets.lognormal_maps`) reads
``pyg_sphere/datasets/data/convergence_cl.npz`` and needs no cosmology code at
run time. This script recomputes that table with `pyccl` (install the extra:
``pip install pyg_sphere[cosmo]``) and runs offline in a few seconds::

    python scripts/make_cl_table.py            # writes the packaged table
    python scripts/make_cl_table.py --out x.npz

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
"""

from __future__ import annotations

import argparse
import os
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
DEFAULT_OUT = (
    Path(__file__).resolve().parents[1] / "pyg_sphere" / "datasets" / "data" / "convergence_cl.npz"
)


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


def make_table():
    import pyccl as ccl

    ell = np.arange(LMAX + 1)
    (om1, s81), (om2, s82) = MODELS["model1"], MODELS["model2"]
    cl1 = convergence_cl(om1, s81, ell)
    cl2 = convergence_cl(om2, s82, ell)
    s82_pm = match_sigma8(cl1, om2)
    cl2_pm = convergence_cl(om2, s82_pm, ell)

    # Millennium Simulation cosmology, the one Hilbert et al. (2011) fitted kappa_0 in
    k_mill = empty_beam_kappa(0.25, h=0.73, omega_b=0.045)
    scale = hilbert_kappa0(Z_MEAN) / k_mill
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
        provenance=np.array(
            f"pyccl {ccl.__version__}; transfer_function=eisenstein_hu, "
            f"matter_power_spectrum=halofit; Limber; Gaussian n(z) z={Z_MEAN} "
            f"sigma_z={Z_SIGMA}; shift = HHS11 kappa_0(z) x kappa_empty/kappa_empty(Millennium)"
        ),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz path")
    args = parser.parse_args(argv)
    table = make_table()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **table)
    os.replace(tmp, args.out)

    cl = table["cl"]
    ell = np.arange(MATCH_RANGE[0] + 1, MATCH_RANGE[1])
    for i, name in enumerate(table["name"]):
        print(
            f"{name:22s} Omega_m={table['omega_m'][i]:.4f} sigma_8={table['sigma_8'][i]:.5f} "
            f"shift={table['shift'][i]:.5f} |ln C/C_model1| max on 100<ell<1000: "
            f"{np.max(np.abs(np.log(cl[i, ell] / cl[0, ell]))):.4f}"
        )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
