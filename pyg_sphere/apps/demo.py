"""What ``make demo`` runs: DeepSphere on a small simulated cosmology task, two minutes on CPU.

``python -m pyg_sphere.apps.demo [extra train_cosmo options]`` simulates (once) a small
collection of power-matched convergence maps in ``data/demo_nside128``, trains
:class:`~pyg_sphere.nn.models.DeepSphere` with :mod:`pyg_sphere.apps.train_cosmo` to tell the
two cosmologies apart, writes checkpoints, metrics and figures to ``runs/demo`` and ends with
the test accuracy. Options given on the command line override the demo's.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, Sequence

from pyg_sphere.apps import train_cosmo

#: The demo's options for :func:`pyg_sphere.apps.train_cosmo.run`. One torch thread: on a busy
#: 2-core machine, two threads made the sparse products several times slower (spinning
#: threads), one loses little on an idle one.
DEMO_ARGS = tuple(
    "--nside 128 --order 2 --noise 0 --n-per-class 60 --epochs 10 --batch-size 16 --lr 1e-3 "
    "--threads 1 --data-dir data/demo_nside128 --out runs/demo".split()
)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Runs the demo; returns the metrics of :func:`pyg_sphere.apps.train_cosmo.run`.

    Args:
        argv: extra ``train_cosmo`` options, which override the demo's (default
            ``sys.argv[1:]``).
    """
    extra = list(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    metrics = train_cosmo.run(list(DEMO_ARGS) + extra)
    minutes = (time.perf_counter() - start) / 60
    data = metrics["data"]
    print(
        f"\nDeepSphere, nside {data['nside']}, order-{data['order']} patches "
        f"({data['patch_pixels']} pixels), {data['samples']['train']} training patches, "
        f"{minutes:.1f} min; outputs in {metrics['args']['out']}"
    )
    print(
        f"Test accuracy: {100 * metrics['test_acc']:.1f}% "
        f"({metrics['test_count']} test patches, chance 50%)"
    )
    return metrics


if __name__ == "__main__":
    main()
