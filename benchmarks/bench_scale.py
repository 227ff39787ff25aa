"""Scale: graph build, operator build, convolution and a training step at nside 256 to 2048.

Every measurement runs in a fresh process, so that its peak RSS (``ru_maxrss``, what
``/usr/bin/time -v`` reports as "Maximum resident set size") is its own:

- ``graph``: ``healpix_graph(nside)`` with its defaults (lambda_max included): seconds, peak
  RSS, the bytes of the returned ``Data`` and per pixel.
- ``conv``: the graph, then one ``SphericalChebConv(1, 16, K=5)`` forward+backward on one
  full-sky map (loss ``out.square().mean()``): the first call (operator build included), the
  median of later calls, the bytes of the cached operator, peak RSS.
- ``conv-grad``: the same, with the backward driven by a given upstream gradient (one [N, 16]
  tensor, what the next layer of a network hands back) rather than a loss: the layer's own
  footprint, without the output-sized temporaries of the loss's backward (``square`` and
  ``mean`` allocate four).
  With ``--recompute``, these two stages run ``SphericalChebConv(..., recompute=True)`` (the
  Chebyshev terms computed again in the backward rather than kept).
- ``coo``: the same filter as the straightforward recursion of the original DeepSphere PyTorch
  code (a COO ``torch.sparse.mm`` per Chebyshev order on the rescaled Laplacian).
- ``chebconv``: PyG's ``ChebConv`` with the same weights (``lambda_max`` passed).
- ``train``: one DeepSphere training step (forward, backward, Adam) on a batch of order-2
  patches at the given nside.

Usage::

    python benchmarks/bench_scale.py                          # nside 256, 512, 1024
    python benchmarks/bench_scale.py --nsides 2048 --what graph conv
    python benchmarks/bench_scale.py --device cuda            # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

STAGES = ("graph", "conv", "conv-grad", "coo", "chebconv", "train")


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def nbytes(data) -> int:
    import torch

    return sum(v.numel() * v.element_size() for v in data.to_dict().values() if torch.is_tensor(v))


def sync(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def fwd_bwd(fn, x, device, repeats, grad=None):
    """Seconds of the first forward+backward and the median of the next ones; the backward of
    ``out.square().mean()``, or of ``out`` with the upstream gradient `grad`."""
    times = []
    for _ in range(1 + repeats):
        sync(device)
        t = time.perf_counter()
        out = fn(x)
        if grad is None:
            out.square().mean().backward()
        else:
            out.backward(grad)
        sync(device)
        times.append(time.perf_counter() - t)
        x.grad = None
        del out
    return times[0], statistics.median(times[1:]) if repeats else float("nan")


def child(
    stage: str,
    nside: int,
    device: str,
    repeats: int,
    recompute: bool = False,
    index_dtype: str = "int64",
    batch: int = 8,
) -> dict:
    import torch

    import pyg_sphere
    from pyg_sphere.nn import SphericalChebConv

    torch.manual_seed(0)
    if stage == "train":  # the model builds the graphs of its patch: no full-sphere graph
        return train_step(nside, device, repeats, batch)
    t = time.perf_counter()
    graph = pyg_sphere.healpix_graph(nside, index_dtype=getattr(torch, index_dtype))
    build = time.perf_counter() - t
    n = graph.num_nodes
    result = {"graph_s": build, "graph_bytes": nbytes(graph), "edges": graph.num_edges}
    if stage == "graph":
        result["peak_gb"] = peak_gb()
        return result
    # cached=True: the layer keeps the operator it builds at the first call, as a model does.
    conv = SphericalChebConv(1, 16, K=5, recompute=recompute, cached=True).to(device)
    x = torch.randn(n, 1, device=device, requires_grad=True)
    edge_index, edge_weight = graph.edge_index.to(device), graph.edge_weight.to(device)
    lam = float(graph.lambda_max)
    if stage in ("conv", "conv-grad"):

        def fn(x):
            return conv(x, edge_index, edge_weight, lambda_max=lam)

        grad = torch.randn(n, 16, device=device) if stage == "conv-grad" else None
        first, steady = fwd_bwd(fn, x, device, repeats, grad)
        result["operator_bytes"] = conv.operator.nbytes
    elif stage == "coo":
        from torch_geometric.utils import get_laplacian

        ei, ew = get_laplacian(edge_index, edge_weight, normalization="sym", num_nodes=n)
        # L~ = 2 L / lambda_max - I as one COO matrix, as the original code builds it.
        ew = ew * (2.0 / lam)
        loops = ei[0] == ei[1]
        ew[loops] -= 1.0
        lap = torch.sparse_coo_tensor(ei, ew, (n, n)).coalesce()
        del ei, ew
        weight = torch.nn.Parameter(torch.randn(5, 1, 16, device=device) * 0.1)

        def fn(x):
            t0, t1 = x, torch.sparse.mm(lap, x)
            terms = [t0, t1]
            for _ in range(2, 5):
                t0, t1 = t1, 2 * torch.sparse.mm(lap, t1) - t0
                terms.append(t1)
            return torch.einsum("kni,kio->no", torch.stack(terms), weight)

        first, steady = fwd_bwd(fn, x, device, repeats)
    elif stage == "chebconv":
        from torch_geometric.nn import ChebConv

        cheb = ChebConv(1, 16, K=5).to(device)

        def fn(x):
            return cheb(x, edge_index, edge_weight, lambda_max=torch.tensor(lam, device=device))

        first, steady = fwd_bwd(fn, x, device, repeats)
    result.update(first_s=first, steady_s=steady, peak_gb=peak_gb())
    if device.startswith("cuda"):
        result["cuda_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def train_step(nside: int, device: str, repeats: int, batch: int = 8) -> dict:
    import torch

    from pyg_sphere import nested_patches
    from pyg_sphere.nn import DeepSphere

    pixels = nested_patches(nside, 2)[0]
    model = DeepSphere(1, 2, nside, pixels=pixels).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, pixels.numel(), 1, device=device)
    y = torch.randint(0, 2, (batch,), device=device)
    times = []
    for _ in range(1 + repeats):
        sync(device)
        t = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        sync(device)
        times.append(time.perf_counter() - t)
    out = {"patch_pixels": pixels.numel(), "batch": batch, "first_s": times[0]}
    out["steady_s"] = statistics.median(times[1:]) if repeats else float("nan")
    out["peak_gb"] = peak_gb()
    return out


def measure(stage, nside, device, repeats, timeout, **options):
    """Runs :func:`child` in a fresh process; its options travel as JSON."""
    cmd = [sys.executable, __file__, "--child", stage, str(nside), device, str(repeats)]
    cmd.append(json.dumps(options))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["killed"])[-1]
        return {"error": f"exit {proc.returncode}: {last[:80]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsides", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--what", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per measurement")
    parser.add_argument("--recompute", action="store_true", help="conv stages with recompute=True")
    parser.add_argument(
        "--index-dtype",
        default="int64",
        choices=("int64", "int32"),
        help="healpix_graph(index_dtype=...) of the graph and conv stages (default int64)",
    )
    parser.add_argument("--batch", type=int, default=8, help="patches per training step")
    args = parser.parse_args()
    options = dict(recompute=args.recompute, index_dtype=args.index_dtype, batch=args.batch)
    import torch

    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"device {args.device}; fresh process per row, steady = median of {args.repeats}"
    )
    print(
        "| nside | what | graph s | graph GB | B/pixel | first s | steady s | op GB | peak GB "
        "| peak B/pixel | peak / graph |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for nside in args.nsides:
        for stage in args.what:
            r = measure(stage, nside, args.device, args.repeats, args.timeout, **options)
            if "error" in r:
                print(f"| {nside} | {stage} | {r['error']} | | | | | | | | |", flush=True)
                continue
            npix = 12 * nside**2
            op = r.get("operator_bytes")
            peak = r.get("cuda_peak_gb", r["peak_gb"])
            if stage == "train":
                what = f"train ({r['batch']}x{r['patch_pixels']} px)"
                graph_cells = "| | "  # no full-sphere graph: the model holds its patch's
                per_graph = ""
            else:
                what = stage + (" (recompute)" if args.recompute and "conv" in stage else "")
                what += " (int32)" if args.index_dtype == "int32" else ""
                gb = r["graph_bytes"]
                graph_cells = f"{r['graph_s']:.1f} | {gb / 2**30:.2f} | {gb / npix:.0f}"
                per_graph = f"{peak * 2**30 / gb:.2f}"
            print(
                f"| {nside} | {what} | {graph_cells} | {r.get('first_s', float('nan')):.2f} | "
                f"{r.get('steady_s', float('nan')):.2f} | "
                f"{'' if op is None else f'{op / 2**30:.2f}'} | {peak:.2f} | "
                f"{peak * 2**30 / npix:.0f} | {per_graph} |",
                flush=True,
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        stage, nside, device, repeats = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
        print(json.dumps(child(stage, nside, device, repeats, **json.loads(sys.argv[6]))))
    else:
        main()
