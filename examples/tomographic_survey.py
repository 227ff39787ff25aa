"""
A tomographic survey
====================

Four redshift bins as four input channels, on a survey footprint, from simulation to a
DeepSphere forward pass, and what the bins are worth to the power spectrum.

Weak-lensing surveys split their source galaxies into tomographic redshift bins; the
convergence maps of the bins are correlated (the same matter lenses them all) and the published
DeepSphere analyses feed them to the network as the channels of one map. This example:

1. splits a Smail-type n(z) into 4 equipopulated bins
   (:func:`~pyg_sphere.datasets.smail_bins`) and draws a survey-like footprint of a given sky
   fraction with holes (:func:`~pyg_sphere.datasets.survey_footprint`);
2. simulates correlated lognormal convergence maps of the 4 bins with shape noise in physical
   units (:func:`~pyg_sphere.datasets.simulate_tomographic_maps`: pyccl spectra, sigma_e and
   galaxies per arcmin^2) and writes each realisation as one 4-column FITS file, ``UNSEEN``
   outside the footprint (:func:`~pyg_sphere.datasets.apply_mask`);
3. reads them with :class:`~pyg_sphere.datasets.ConvergenceMaps` (``field=(0, 1, 2, 3)``: the
   columns become channels, and ``observed_channel=True`` adds the observed fraction of each
   pixel as a fifth), batches them with :class:`~pyg_sphere.loader.SharedGraphLoader` and runs
   a :class:`~pyg_sphere.nn.DeepSphere` with 5 input channels;
4. compares the analytic Fisher matrices of (Omega_m, sigma_8) from the power spectrum of
   1 bin and of all auto- and cross-spectra of 4 bins, the same galaxies on the same
   footprint (:func:`~pyg_sphere.inference.tomographic_fisher_forecast`).

::

    python examples/tomographic_survey.py                       # nside 64, f_sky 0.35
    python examples/tomographic_survey.py --nside 128 --maps 8 --f-sky 0.15

The output on this page comes from the first command.
"""

import argparse
import os
import tempfile

import healpy as hp
import numpy as np
import torch

from pyg_sphere.datasets import (
    ConvergenceMaps,
    apply_mask,
    simulate_tomographic_maps,
    smail_bins,
    survey_footprint,
)
from pyg_sphere.inference import figure_of_merit, tomographic_fisher_forecast
from pyg_sphere.loader import SharedGraphLoader
from pyg_sphere.nn import DeepSphere


def parse_args(argv=None):
    # The docstring's first sentence; sphinx-gallery runs the script with an empty __doc__.
    p = argparse.ArgumentParser(description=__doc__ and __doc__.split("\n\n")[1])
    p.add_argument("--nside", type=int, default=64)
    p.add_argument("--bins", type=int, default=4, help="tomographic bins")
    p.add_argument("--maps", type=int, default=4, help="realisations to simulate")
    p.add_argument("--f-sky", type=float, default=0.35, help="sky fraction of the footprint")
    p.add_argument("--sigma-e", type=float, default=0.26, help="ellipticity dispersion")
    p.add_argument("--n-gal", type=float, default=30.0, help="galaxies per arcmin^2, all bins")
    p.add_argument("--order", type=int, default=2, help="patches of 1/(12 order^2) of the sky")
    p.add_argument("--root", default=None, help="data folder (default: a temporary one)")
    return p.parse_args(argv)


def simulate(root, args, bins, footprint):
    """Writes ``args.maps`` realisations, each a FITS file of one column per bin."""
    os.makedirs(os.path.join(root, "raw"), exist_ok=True)
    rows = ["file,omega_m,sigma_8,split"]
    for i in range(args.maps):
        kappa = simulate_tomographic_maps(
            args.nside, 0.31, 0.82, bins, rng=i, sigma_e=args.sigma_e, n_gal=args.n_gal
        )
        name = f"survey_{i:03d}.fits"
        columns = [f"KAPPA_{b}" for b in range(bins.n_bins)]
        hp.write_map(
            os.path.join(root, "raw", name),
            apply_mask(kappa.astype(np.float32), footprint),
            column_names=columns,
            overwrite=True,
            dtype=np.float32,
        )
        rows.append(f"{name},0.31,0.82,train")
    with open(os.path.join(root, "raw", "manifest.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(0)
    bins = smail_bins(args.bins)
    footprint = survey_footprint(args.nside, args.f_sky, num_holes=20, seed=0)
    print(
        f"{bins.n_bins} equipopulated bins of a Smail n(z), galaxy fractions "
        f"{np.round(bins.fractions, 3).tolist()}; footprint: {footprint.mean():.3f} of the sky"
    )

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or tmp
        simulate(root, args, bins, footprint)
        data = ConvergenceMaps(
            root,
            nside=args.nside,
            order=args.order,
            field=tuple(range(bins.n_bins)),
            observed_channel=True,
            min_observed=0.5,
            log=False,
        )
        print(
            f"{len(data)} patches of {data.patch_size} pixels from {args.maps} maps, "
            f"x [N, C] with C = {data.num_node_features} (the bins and the observed fraction)"
        )
        loader = SharedGraphLoader(data, batch_size=8, shuffle=True)
        batch = next(iter(loader))
        model = DeepSphere(
            data.num_node_features,
            2,
            data.nside,
            pixels=data.patch_pixels(0),
            channels=(16, 32),
            K=5,
        ).eval()
        with torch.no_grad():
            out = model(batch.x / data.map_std)
        print(f"batch x {tuple(batch.x.shape)} -> DeepSphere -> {tuple(out.shape)}")

    # What the bins are worth to the power spectrum: the same galaxies, the same footprint.
    lmax = 3 * args.nside - 1
    options = dict(sigma_e=args.sigma_e, n_gal=args.n_gal, f_sky=float(footprint.mean()))
    print(f"\nPower-spectrum Fisher forecast, 10 <= ell <= {lmax}, f_sky {footprint.mean():.3f}:")
    print("bins  sigma(Omega_m)  sigma(sigma_8)  figure of merit")
    edges = np.arange(10, lmax + 2)
    foms = {}
    for n in sorted({1, bins.n_bins}):
        fisher = tomographic_fisher_forecast(
            0.31, 0.82, smail_bins(n), lmax, bin_edges=edges, **options
        )
        errors = np.sqrt(np.diag(np.linalg.inv(fisher)))
        foms[n] = figure_of_merit(fisher)
        print(f"{n:>4}  {errors[0]:14.4f}  {errors[1]:14.4f}  {foms[n]:15.4g}")
    if len(foms) > 1:
        print(f"{bins.n_bins} bins / 1 bin: {foms[bins.n_bins] / foms[1]:.2f}x the figure of merit")


if __name__ == "__main__":
    main()
