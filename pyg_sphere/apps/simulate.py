"""Command line: simulate a labelled collection of lognormal convergence maps.

Usage::

    python -m pyg_sphere.apps.simulate --out data/cosmo --n-per-class 30 --nside 1024
    pyg-sphere-simulate --out data/pm --n-per-class 10 --nside 256 --power-matched

writes ``OUT/raw/*.fits`` and ``OUT/raw/manifest.csv``, the layout that
:class:`pyg_sphere.datasets.ConvergenceMaps` reads (see
:func:`pyg_sphere.datasets.simulate_convergence_maps`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from pyg_sphere.datasets import simulate_convergence_maps


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of :func:`main`.

    Example::

        >>> args = build_parser().parse_args(["--out", "d", "--n-per-class", "2", "--nside", "8"])
        >>> args.seed, args.split, args.nest
        (0, (0.6, 0.2, 0.2), False)
    """
    parser = argparse.ArgumentParser(
        prog="pyg-sphere-simulate",
        description="Simulate lognormal weak-lensing convergence maps of the two DeepSphere "
        "cosmologies (Omega_m=0.31, sigma_8=0.82 vs Omega_m=0.26, sigma_8=0.91) "
        "as HEALPix FITS files plus raw/manifest.csv.",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="dataset root; maps are written to OUT/raw/"
    )
    parser.add_argument("--n-per-class", required=True, type=int, help="maps per cosmology")
    parser.add_argument("--nside", required=True, type=int, help="HEALPix nside (power of two)")
    parser.add_argument("--seed", type=int, default=0, help="collection seed (default 0)")
    parser.add_argument(
        "--power-matched",
        action="store_true",
        help="tune sigma_8 of model 2 so both spectra agree on 100<ell<1000",
    )
    parser.add_argument(
        "--split",
        type=float,
        nargs=3,
        default=(0.6, 0.2, 0.2),
        metavar=("TRAIN", "VAL", "TEST"),
        help="fractions of maps per split (default 0.6 0.2 0.2)",
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
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        manifest = simulate_convergence_maps(
            args.out,
            args.n_per_class,
            args.nside,
            seed=args.seed,
            power_matched=args.power_matched,
            split_fractions=args.split,
            nest=args.nest,
            lmax=args.lmax,
            progress=not args.no_progress,
        )
    except ValueError as err:
        parser.error(str(err))
    print(f"wrote {2 * args.n_per_class} maps and {manifest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
