"""Command line: simulate a collection of lognormal convergence maps.

Usage::

    python -m pyg_sphere.apps.simulate --out data/cosmo --n-per-class 30 --nside 1024
    pyg-sphere-simulate --out data/pm --n-per-class 10 --nside 256 --power-matched
    pyg-sphere-simulate --out data/twin --n-per-class 10 --nside 128 --gaussian-twin
    pyg-sphere-simulate --design prior --out data/prior --n-maps 1000 --nside 256
    pyg-sphere-simulate --design fisher --out data/fisher --n-maps 100 --nside 256 \
        --fiducial 0.31 0.82 --steps 0.02 0.02
    pyg-sphere-simulate --design prior --out data/prior4 --n-maps 1000 --nside 256 --bins 4

writes ``OUT/raw/*.fits`` and ``OUT/raw/manifest.csv``, the layout that
:class:`pyg_sphere.datasets.ConvergenceMaps` reads. Three designs:

* ``classes`` (default): the two DeepSphere cosmologies, ``--n-per-class`` maps each
  (:func:`pyg_sphere.datasets.simulate_convergence_maps`), or with ``--gaussian-twin`` model 1
  and Gaussian maps of the same spectrum;
* ``prior``: ``--n-maps`` maps on a Latin hypercube over ``--box``
  (:func:`pyg_sphere.datasets.simulate_prior_maps`);
* ``fisher``: ``--n-maps`` realisations at ``--fiducial`` and fiducial +- ``--steps``,
  five maps sharing one Gaussian draw (:func:`pyg_sphere.datasets.simulate_fisher_maps`).

With ``--bins C`` the prior and fisher designs are tomographic: the Smail n(z) of
:func:`pyg_sphere.datasets.smail_bins` split into ``C`` bins of equal galaxy numbers, each file
holding the ``C`` correlated, noiseless maps of the bins as its columns (``KAPPA_BIN1``, ...);
read them back with ``ConvergenceMaps(OUT, field=tuple(range(C)))``. The classes design has
no tomographic variant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from pyg_sphere.datasets import (
    simulate_convergence_maps,
    simulate_fisher_maps,
    simulate_prior_maps,
    smail_bins,
)

DESIGNS = ("classes", "prior", "fisher")
# Options that only one design or two take (dest -> designs), and the default splits.
_ONLY = {
    "n_per_class": ("classes",),
    "power_matched": ("classes",),
    "gaussian_twin": ("classes",),
    "n_maps": ("prior", "fisher"),
    "gaussian": ("prior", "fisher"),
    "box": ("prior",),
    "fiducial": ("fisher",),
    "steps": ("fisher",),
    "bins": ("prior", "fisher"),
}
_DEFAULT_SPLIT = {"classes": (0.6, 0.2, 0.2), "prior": (0.8, 0.1, 0.1), "fisher": (0.0, 0.0, 1.0)}


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of :func:`main`.

    Example::

        >>> args = build_parser().parse_args(["--out", "d", "--n-per-class", "2", "--nside", "8"])
        >>> args.design, args.seed, args.split, args.nest, args.bins
        ('classes', 0, None, False, None)
    """
    parser = argparse.ArgumentParser(
        prog="pyg-sphere-simulate",
        description="Simulate lognormal weak-lensing convergence maps as HEALPix FITS files "
        "plus raw/manifest.csv: of the two DeepSphere cosmologies (Omega_m=0.31, sigma_8=0.82 "
        "vs Omega_m=0.26, sigma_8=0.91; --design classes), on a Latin hypercube over a prior "
        "box of (Omega_m, sigma_8) (--design prior), or at a fiducial cosmology and its "
        "finite-difference steps for a Fisher forecast (--design fisher).",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="dataset root; maps are written to OUT/raw/"
    )
    parser.add_argument(
        "--design", choices=DESIGNS, default="classes", help="what to simulate (default classes)"
    )
    parser.add_argument(
        "--n-per-class", type=int, default=None, help="maps per cosmology (design classes)"
    )
    parser.add_argument(
        "--n-maps",
        type=int,
        default=None,
        help="design points (design prior) or realisations of five maps (design fisher)",
    )
    parser.add_argument("--nside", required=True, type=int, help="HEALPix nside (power of two)")
    parser.add_argument("--seed", type=int, default=0, help="collection seed (default 0)")
    parser.add_argument(
        "--power-matched",
        action="store_true",
        help="design classes: tune sigma_8 of model 2 so both spectra agree on 100<ell<1000",
    )
    parser.add_argument(
        "--gaussian-twin",
        action="store_true",
        help="design classes: class 1 is a Gaussian field with model 1's spectrum (the same "
        "power spectrum on every scale, no non-Gaussian structure)",
    )
    parser.add_argument(
        "--gaussian",
        action="store_true",
        help="designs prior and fisher: Gaussian maps instead of shifted lognormal ones",
    )
    parser.add_argument(
        "--box",
        type=float,
        nargs=4,
        default=None,
        metavar=("OM_LO", "OM_HI", "S8_LO", "S8_HI"),
        help="design prior: the box of (Omega_m, sigma_8) (default 0.15 0.45 0.5 1.1)",
    )
    parser.add_argument(
        "--fiducial",
        type=float,
        nargs=2,
        default=None,
        metavar=("OM", "S8"),
        help="design fisher: the fiducial Omega_m and sigma_8 (default 0.31 0.82)",
    )
    parser.add_argument(
        "--steps",
        type=float,
        nargs=2,
        default=None,
        metavar=("DOM", "DS8"),
        help="design fisher: finite-difference steps in Omega_m and sigma_8 (default 0.02 0.02)",
    )
    parser.add_argument(
        "--bins",
        type=int,
        default=None,
        metavar="C",
        help="designs prior and fisher: tomographic maps of C source bins (the Smail n(z) split "
        "into C bins of equal galaxy numbers), one FITS column each (default: one map at "
        "source redshift 0.8)",
    )
    parser.add_argument(
        "--split",
        type=float,
        nargs=3,
        default=None,
        metavar=("TRAIN", "VAL", "TEST"),
        help="fractions of maps per split (default 0.6 0.2 0.2 for classes, 0.8 0.1 0.1 for "
        "prior; fisher splits realisations, default all test: 0 0 1)",
    )
    parser.add_argument("--nest", action="store_true", help="write NESTED maps (default RING)")
    parser.add_argument(
        "--lmax",
        type=int,
        default=None,
        help="band limit of the Gaussian field (default 3*nside-1, max 6144)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m pyg_sphere.apps.simulate`` (console script
    ``pyg-sphere-simulate``).

    Args:
        argv: argument list (default ``sys.argv[1:]``).

    Returns:
        0 on success; bad arguments exit with status 2 and a message.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     main(["--out", root, "--n-per-class", "1", "--nside", "8", "--no-progress"])
        0
        >>> with tempfile.TemporaryDirectory() as root:
        ...     main(["--design", "prior", "--out", root, "--n-maps", "2", "--nside", "8",
        ...           "--no-progress"])
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    for dest, designs in _ONLY.items():
        value = getattr(args, dest)
        if value not in (None, False) and args.design not in designs:
            option = "--" + dest.replace("_", "-")
            allowed = " or ".join(designs)
            parser.error(f"{option} applies to --design {allowed}, not {args.design}")
    if args.bins is not None and args.bins < 1:
        parser.error(f"--bins must be a number of tomographic bins >= 1, got {args.bins}")
    count = "n_per_class" if args.design == "classes" else "n_maps"
    if getattr(args, count) is None:
        parser.error(f"--design {args.design} needs --{count.replace('_', '-')}")
    common = dict(
        seed=args.seed,
        split_fractions=args.split or _DEFAULT_SPLIT[args.design],
        nest=args.nest,
        lmax=args.lmax,
        progress=not args.no_progress,
    )
    try:
        if args.bins is not None:
            common["bins"] = smail_bins(args.bins)
        if args.design == "classes":
            manifest = simulate_convergence_maps(
                args.out,
                args.n_per_class,
                args.nside,
                power_matched=args.power_matched,
                gaussian_twin=args.gaussian_twin,
                **common,
            )
            n = 2 * args.n_per_class
        elif args.design == "prior":
            if args.box is not None:
                om_lo, om_hi, s8_lo, s8_hi = args.box
                common["box"] = {"omega_m": (om_lo, om_hi), "sigma_8": (s8_lo, s8_hi)}
            manifest = simulate_prior_maps(
                args.out, args.n_maps, args.nside, gaussian=args.gaussian, **common
            )
            n = args.n_maps
        else:
            for key in ("fiducial", "steps"):
                if getattr(args, key) is not None:
                    common[key] = tuple(getattr(args, key))
            manifest = simulate_fisher_maps(
                args.out, args.n_maps, args.nside, gaussian=args.gaussian, **common
            )
            n = 5 * args.n_maps
    except ValueError as err:
        parser.error(str(err))
    columns = "" if args.bins is None else f" of {args.bins} bins"
    print(f"wrote {n} maps{columns} and {manifest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
