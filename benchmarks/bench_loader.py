"""Loading ConvergenceMaps: loader throughput, processing cost, and the shared patch graph.

    python benchmarks/bench_loader.py [--nside 256] [--orders 1 2] [--maps 8] [--batch-size 16]

1. Throughput in maps per second (a map = its 12 o^2 patches) of one pass over the training
   split, median of ``--repeats`` passes after a warm-up pass, data in the page cache, one
   process (``num_workers=0``) and one torch thread (as in a DataLoader worker), for:
   - the copy bound: slicing the memory-mapped array into batch tensors, no Data objects;
   - ``SharedGraphLoader`` (x [B, N, 1] and the graph once), without and with fresh noise;
   - PyG's ``DataLoader`` on items carrying the graph (``attach_graph=True``): the disjoint
     union, which is what a user of plain PyG would pick;
   - for scale, not a loader: one 16 -> 16 channel ``SphericalChebConv`` (K = 5) forward and
     backward over the same batches.
2. Processing time per map (read, mean removal, optional 3 arcmin smoothing, ud_grade, cut),
   at ``--nside`` and at ``--process-nside`` (default 1024, 2 and ``--process-maps`` maps), with
   the peak anonymous memory: it stays that of one map whatever the collection's size.
3. How far the graphs of the other patch positions are from patch 0's graph, which every
   sample uses: edge-set overlap (Jaccard) in local nested indices, and the relative
   difference ||L_j x - L_0 x|| / ||L_j x|| of the normalized Laplacians applied to the patch
   of a simulated map.

The maps come from ``simulate_convergence_maps`` (lognormal, seeded).
"""

import argparse
import os
import platform
import statistics
import tempfile
import threading
import time

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.loader import DataLoader

from pyg_sphere import healpix_graph, nested_patches
from pyg_sphere.datasets import ConvergenceMaps, simulate_convergence_maps
from pyg_sphere.loader import SharedGraphLoader
from pyg_sphere.nn import SphericalChebConv
from pyg_sphere.transforms import AddGaussianNoise


def timed(fn, repeats):
    fn()  # warm-up: page cache, allocator, graph memo
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def simulate(root, n_maps, nside):
    simulate_convergence_maps(
        root,
        n_per_class=max(1, n_maps // 2),
        nside=nside,
        split_fractions=(1.0, 0.0, 0.0),
        progress=False,
    )


def throughput(root, nside, order, batch_size, repeats, pyg_maps):
    ds = ConvergenceMaps(root, nside, order, log=False)
    t = time.perf_counter()
    graph = ds.graph
    graph_s = time.perf_counter() - t
    per_map = ds.num_patches
    noisy = ConvergenceMaps(
        root, nside, order, log=False, transform=AddGaussianNoise(1.0, ds.map_std)
    )
    attached = ConvergenceMaps(root, nside, order, attach_graph=True, log=False)
    attached = attached[: pyg_maps * per_map]  # the disjoint union is slow: fewer maps
    samples = np.load(os.path.join(ds.processed_dir, "train.npy"), mmap_mode="r")

    def copy_bound():
        for i in range(0, len(samples), batch_size):
            torch.from_numpy(np.array(samples[i : i + batch_size]))

    def drain(loader):
        return lambda: sum(b.num_graphs for b in loader)

    runs = [
        ("copy bound (memmap rows -> tensor)", copy_bound, len(ds)),
        ("SharedGraphLoader", drain(SharedGraphLoader(ds, batch_size)), len(ds)),
        (
            "SharedGraphLoader + AddGaussianNoise",
            drain(SharedGraphLoader(noisy, batch_size)),
            len(ds),
        ),
        (
            "PyG DataLoader, attach_graph=True",
            drain(DataLoader(attached, batch_size)),
            len(attached),
        ),
    ]
    # Context, not a loader: one 16 -> 16 channel SphericalChebConv (K = 5) forward + backward
    # over the same batches, the smallest layer of a DeepSphere network.
    conv = SphericalChebConv(16, 16, K=5)
    features = torch.randn(batch_size, ds.patch_size, 16)

    def one_layer():
        for _ in range(0, len(ds), batch_size):
            conv(
                features, graph.edge_index, graph.edge_weight, lambda_max=graph.lambda_max
            ).sum().backward()

    runs.append(("(context: one SphericalChebConv 16->16, K=5, fwd+bwd)", one_layer, len(ds)))
    rows = []
    for name, fn, n in runs:
        seconds = timed(fn, repeats if "PyG" not in name else max(1, repeats // 2))
        rows.append((name, n / per_map / seconds))
    return rows, graph, graph_s, ds.patch_size


def rss_anon_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon")) / 1024


def processing(root, nside, order, smoothing):
    """Seconds per map, and the peak of this process's anonymous memory above its start (MB,
    sampled every 5 ms; file-backed pages of the memory map are page cache, not counted)."""
    base, peak, done = rss_anon_mb(), [0.0], threading.Event()

    def sample():
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss_anon_mb() - base)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t = time.perf_counter()
    ds = ConvergenceMaps(
        root, nside, order, smoothing_arcmin=smoothing, force_reload=True, log=False
    )
    seconds = (time.perf_counter() - t) / len(ds.files)
    done.set()
    sampler.join()
    size = sum(
        os.path.getsize(os.path.join(ds.processed_dir, f"{s}.npy"))
        for s in ("train", "val", "test")
    )
    return seconds, peak[0], size / 2**20


def processing_rows(root, nside, n_maps, smooth=True):
    s_plain, mem_plain, size = processing(root, nside, 1, None)
    s_smooth, mem_smooth, _ = processing(root, nside, 1, 3.0) if smooth else (0, 0, 0)
    smoothed = (f"{s_smooth:.2f}", f" / {mem_smooth:.0f}") if smooth else ("-", "")
    print(
        f"| {nside} | {n_maps} | {s_plain:.2f} | {smoothed[0]} | {size:.0f} | "
        f"{mem_plain:.0f}{smoothed[1]} |"
    )


def graph_spread(root, nside, order):
    """Overlap and operator difference between patch 0's graph and every other position's."""
    ds = ConvergenceMaps(root, nside, order, log=False)
    patches = nested_patches(nside, order)
    n = patches.shape[1]

    def laplacian(j):
        g = healpix_graph(nside, patches[j], k=8)
        ei = g.edge_index.numpy()
        w = sp.csr_matrix((g.edge_weight.numpy().astype(np.float64), (ei[0], ei[1])), (n, n))
        d = sp.diags(np.asarray(w.sum(1)).ravel() ** -0.5)
        return sp.identity(n) - d @ w @ d, set((ei[0] * n + ei[1]).tolist())

    lap0, edges0 = laplacian(0)
    jaccard, error = [], []
    for j in range(1, len(patches)):
        lap, edges = laplacian(j)
        x = ds[j].x[:, 0].double().numpy()  # patch j of map 0
        jaccard.append(len(edges & edges0) / len(edges | edges0))
        error.append(np.linalg.norm(lap @ x - lap0 @ x) / np.linalg.norm(lap @ x))
    return jaccard, float(np.median(error)), max(error)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nside", type=int, default=256)
    p.add_argument("--orders", type=int, nargs="+", default=[1, 2])
    p.add_argument("--maps", type=int, default=8, help="maps in the collection")
    p.add_argument("--batch-size", type=int, default=16, help="patches per batch")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--pyg-maps", type=int, default=2, help="maps read by the PyG DataLoader")
    p.add_argument("--process-nside", type=int, default=1024)
    p.add_argument("--process-maps", type=int, default=6)
    p.add_argument("--graph-nside", type=int, default=64)
    args = p.parse_args()
    torch.set_num_threads(1)  # what a DataLoader worker runs with
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}"
    )

    with tempfile.TemporaryDirectory() as root:
        simulate(root, args.maps, args.nside)
        print(
            f"\n## Loader throughput, nside {args.nside}, batches of {args.batch_size} patches, "
            f"num_workers=0 (median of {args.repeats} passes)\n"
        )
        print("| order | N per patch | loader | maps/s | vs PyG DataLoader |")
        print("|---|---|---|---|---|")
        graphs = []
        for order in args.orders:
            rows, graph, graph_s, n = throughput(
                root, args.nside, order, args.batch_size, args.repeats, args.pyg_maps
            )
            graphs.append((order, graph, graph_s))
            pyg = rows[3][1]
            for name, rate in rows:
                ratio = "-" if name.startswith("(") else f"{rate / pyg:.0f}x"
                print(f"| {order} | {n} | {name} | {rate:.1f} | {ratio} |")
        print("\n| order | shared graph: nodes | edges | build s |")
        print("|---|---|---|---|")
        for order, g, s in graphs:
            print(f"| {order} | {g.num_nodes} | {g.edge_index.shape[1]} | {s:.2f} |")

        print("\n## Processing (order 1)\n")
        print(
            "| nside | maps | s/map, no smoothing | s/map, 3 arcmin smoothing | output MB "
            "| peak anonymous memory MB (no smoothing / smoothing) |"
        )
        print("|---|---|---|---|---|---|")
        processing_rows(root, args.nside, args.maps)
    for n_maps in (2, args.process_maps):
        with tempfile.TemporaryDirectory() as root:
            simulate(root, n_maps, args.process_nside)
            processing_rows(root, args.process_nside, n_maps, smooth=n_maps == 2)

    with tempfile.TemporaryDirectory() as root:
        simulate(root, 2, args.graph_nside)
        print(f"\n## Patch graphs vs patch 0's graph, nside {args.graph_nside}, k=8\n")
        print("| order | min edge Jaccard | median rel. diff of L x | max rel. diff of L x |")
        print("|---|---|---|---|")
        per_position = {}
        for order in args.orders:
            jaccard, med, worst = graph_spread(root, args.graph_nside, order)
            per_position[order] = jaccard
            print(f"| {order} | {min(jaccard):.3f} | {med:.3f} | {worst:.3f} |")
        for order, jaccard in per_position.items():
            print(
                f"\nEdge Jaccard with patch 0, order {order}, patches 1..:",
                " ".join(f"{j:.3f}" for j in jaccard),
            )


if __name__ == "__main__":
    main()
