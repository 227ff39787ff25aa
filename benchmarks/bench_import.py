"""Import time of pyg_sphere: what ``import pyg_sphere`` and its subpackages cost on top of
``import torch_geometric`` (which a user of the package pays anyway).

Each measurement runs in a fresh process: ``import torch_geometric`` first (the first row times
it alone), then the timed import of the module of the row. Rows are interleaved over the
repeats; the table holds medians. With ``--source PATH``, pyg_sphere is imported from that tree
(e.g. an export of an earlier commit) instead of the installed one.

    python benchmarks/bench_import.py [--repeats 5]
    mkdir /tmp/before && git archive HEAD pyg_sphere | tar -x -C /tmp/before
    python benchmarks/bench_import.py --source /tmp/before

``python -X importtime -c "import pyg_sphere.nn"`` says which module the time goes to.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys

MODULES = (
    "pyg_sphere",
    "pyg_sphere.nn",
    "pyg_sphere.datasets",
    "pyg_sphere.baselines",
    "pyg_sphere.inference",
)

CHILD = r"""
import sys, time
module, source = sys.argv[1], sys.argv[2]
if source:
    sys.path.insert(0, source)
t = time.perf_counter()
import torch_geometric
base = time.perf_counter() - t
if module == 'torch_geometric':
    print(base)
else:
    t = time.perf_counter()
    __import__(module)
    print(time.perf_counter() - t)
"""


def measure(module: str, source: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, module, source],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.abspath(__file__)),  # not the checkout: no stray pyg_sphere
    )
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per row")
    parser.add_argument("--source", default="", help="import pyg_sphere from this tree")
    parser.add_argument("--modules", nargs="+", default=list(MODULES), help="rows after the first")
    args = parser.parse_args(argv)
    rows = ["torch_geometric"] + args.modules
    times = {row: [] for row in rows}
    for _ in range(args.repeats):
        for row in rows:
            times[row].append(measure(row, os.path.abspath(args.source) if args.source else ""))

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, median of {args.repeats} fresh processes"
        + (f", pyg_sphere from {args.source}" if args.source else "")
    )
    print("| import | median s | min s | max s |")
    print("|---|---|---|---|")
    for row in rows:
        label = row if row == "torch_geometric" else f"+ {row}"
        t = times[row]
        print(f"| {label} | {statistics.median(t):.3f} | {min(t):.3f} | {max(t):.3f} |")


if __name__ == "__main__":
    main()
