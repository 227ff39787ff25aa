"""One SphericalChebConv's steady forward+backward, two trees of the code side by side.

Runs ``bench_layer_overhead.py --layer-only --json`` in alternating fresh processes (old, new,
old, new, ...), each with its tree's package first on the path and that tree as working
directory: SphericalChebConv(32, 32, K=5) on x [8, N, 32] (float32, 2 threads) of the
full-sphere graph, the backward of ``(out * g).sum()``. The old tree (global operator cache) is
timed with plain tensors from its second call on (cache warm); the new one with its
ChebyshevOperator built once (``operator``), ``cached=True`` and per call (the operator built
at every call). Each process gives medians of its repeats; the table gives the median over
processes (ms), their range, and new / old: the ratio of those medians and the median of the
per-round ratios (round i: the i-th old and new processes, run back to back).

    python benchmarks/bench_versions.py --old ../old [--new .] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_layer_overhead.py")


def child(tree, args):
    cmd = [sys.executable, SCRIPT, "--json", "--layer-only", "--nsides"]
    cmd += [str(n) for n in args.nsides]
    cmd += ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    cmd += ["--threads", str(args.threads), "--variants", *args.variants]
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: {proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = os.path.join(os.path.abspath(tree), "pyg_sphere")
    assert os.path.dirname(out["version"]) == expected, (out["version"], expected)
    return {r["nside"]: r["medians_ms"] for r in out["results"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="checkout of the earlier code")
    parser.add_argument("--new", default=os.path.dirname(os.path.dirname(SCRIPT)))
    parser.add_argument("--nsides", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--rounds", type=int, default=4, help="processes per tree")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per process")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["operator", "cached", "per-call"],
        choices=["operator", "cached", "per-call"],
    )
    args = parser.parse_args()
    load0 = os.getloadavg()
    runs = {"old": [], "new": []}
    for r in range(args.rounds):
        for name in ("old", "new"):
            runs[name].append(child(getattr(args, name), args))
            print(f"# round {r + 1} {name}: {json.dumps(runs[name][-1])}", flush=True)
    load1 = os.getloadavg()
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, {args.threads} threads; old "
        f"{args.old}, new {args.new}; {args.rounds} fresh processes per tree, alternating, "
        f"each the median of {args.repeats} calls after {args.warmup} warm-up calls; load "
        f"average {load0[0]:.2f} at start, {load1[0]:.2f} at end"
    )
    print(
        "| nside | new layer | old ms (range) | new ms (range) | new / old (medians) | "
        "new / old (median per round) |\n|---|---|---|---|---|---|"
    )
    for nside in args.nsides:
        old = [run[nside]["old-cache"] for run in runs["old"]]
        for variant in args.variants:
            new = [run[nside][variant] for run in runs["new"]]
            paired = statistics.median(n / o for n, o in zip(new, old))
            print(
                f"| {nside} | {variant} | {statistics.median(old):.1f} "
                f"({min(old):.1f}-{max(old):.1f}) | {statistics.median(new):.1f} "
                f"({min(new):.1f}-{max(new):.1f}) | "
                f"{statistics.median(new) / statistics.median(old):.3f} | {paired:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
