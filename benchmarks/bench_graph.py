"""Full-sphere graph construction: pyg_sphere.healpix_graph vs the straightforward k-d tree.

The straightforward construction is what a user would write: centres from healpy, a scipy
cKDTree query of the k + 1 nearest centres (on all cores), union-symmetrisation with scipy.sparse,
Gaussian weights. Each measurement runs in a fresh process, to read its peak memory. With
``--before PATH``, pyg_sphere from another source tree (e.g. a checkout of an earlier commit)
is measured in the same run, interleaved; several trees may be given.

    python benchmarks/bench_graph.py [--nsides 64 128 256 512 1024] [--ks 8 20] [--repeats 3]
    git worktree add /tmp/before <commit>
    python benchmarks/bench_graph.py --ks 8 --nsides 1024 --before /tmp/before [/tmp/older]
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys

CHILD = r"""
import json, math, resource, sys, time
method, nside, k, source = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if source:
    sys.path.insert(0, source)  # pyg_sphere from that tree
import healpy as hp, numpy as np, scipy.sparse as sp, torch
from scipy.spatial import cKDTree
import pyg_sphere

def straightforward(nside, k):
    n = 12 * nside**2
    pos = np.stack(hp.pix2vec(nside, np.arange(n), nest=True), -1)
    dist, nbr = cKDTree(pos).query(pos, k=k + 1, workers=-1)
    row = np.repeat(np.arange(n), k)
    adj = sp.csr_matrix((dist[:, 1:].ravel()**2, (row, nbr[:, 1:].ravel())), shape=(n, n))
    adj = adj.maximum(adj.T).tocsr()
    adj.sort_indices()
    weight = np.exp(-math.log(2) * adj.data / pyg_sphere.kernel_width(nside, k)**2)
    row = np.repeat(np.arange(n), np.diff(adj.indptr))
    edge_index = torch.from_numpy(np.stack([row, adj.indices.astype(np.int64)]))
    return edge_index, torch.from_numpy(weight.astype(np.float32))

base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if method != 'kdtree':
    g = pyg_sphere.healpix_graph(nside, num_neighbors=k, lambda_max=False)
    num_edges = g.edge_index.shape[1]
else:
    num_edges = straightforward(nside, k)[0].shape[1]
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(seconds=seconds, peak_gb=peak / 2**20, extra_gb=(peak - base) / 2**20,
                      num_edges=num_edges)))
"""


def measure(method, nside, k, source=""):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, method, str(nside), str(k), source],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsides", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 20])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--before", nargs="+", default=[], help="source trees of earlier pyg_sphere versions"
    )
    parser.add_argument(
        "--no-kdtree", action="store_true", help="skip the k-d tree (about 29 GB at nside 2048)"
    )
    args = parser.parse_args()
    # Edge counts may differ by a few edges: exactly tied k-th neighbours go either way.
    print(
        f"machine: {platform.machine()}, {platform.python_version()}, "
        f"{__import__('os').cpu_count()} cores; median of {args.repeats} runs, peak RSS"
    )
    before = "".join(f" | {f'before{i} s':>9} {'GB':>5} {'x':>5}" for i in range(len(args.before)))
    for i, path in enumerate(args.before):
        print(f"before{i}: {path}")
    print(
        f"{'k':>3} {'nside':>6} {'pixels':>10} {'edges':>11} {'kd-tree':>11} | "
        f"{'pyg_sphere s':>12} {'GB':>5} | {'kd-tree s':>9} {'GB':>5} | "
        f"{'speed-up':>8} {'us/pixel':>8}{before}"
    )
    sources = {"pyg_sphere": ""} if args.no_kdtree else {"pyg_sphere": "", "kdtree": ""}
    for i, path in enumerate(args.before):
        sources[f"before{i}"] = path
    for k in args.ks:
        for nside in args.nsides:
            runs = {method: [] for method in sources}
            for _ in range(args.repeats):  # interleaved, so all see the same machine load
                for method, source in sources.items():
                    runs[method].append(measure(method, nside, k, source))
            seconds = {m: statistics.median(r["seconds"] for r in runs[m]) for m in runs}
            peak = {m: max(r["peak_gb"] for r in runs[m]) for m in runs}
            if args.no_kdtree:
                runs["kdtree"] = [{"num_edges": 0}]
                seconds["kdtree"], peak["kdtree"] = float("nan"), float("nan")
            ours, ref = runs["pyg_sphere"], runs["kdtree"]
            line = (
                f"{k:>3} {nside:>6} {12 * nside**2:>10} {ours[0]['num_edges']:>11} "
                f"{ref[0]['num_edges']:>11} | "
                f"{seconds['pyg_sphere']:>12.2f} {peak['pyg_sphere']:>5.2f} | "
                f"{seconds['kdtree']:>9.2f} {peak['kdtree']:>5.2f} | "
                f"{seconds['kdtree'] / seconds['pyg_sphere']:>7.1f}x "
                f"{1e6 * seconds['pyg_sphere'] / (12 * nside**2):>8.2f}"
            )
            for i in range(len(args.before)):
                name = f"before{i}"
                line += (
                    f" | {seconds[name]:>9.2f} {peak[name]:>5.2f} "
                    f"{seconds[name] / seconds['pyg_sphere']:>4.1f}x"
                )
            print(line, flush=True)


if __name__ == "__main__":
    main()
