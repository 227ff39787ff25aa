"""One Chebyshev layer: pyg_sphere.nn.SphericalChebConv vs torch_geometric.nn.ChebConv, same run.

K=5, 32 -> 32 channels, 8 maps on the full-sphere k=8 graph, float32, both layers holding the
same weights and given the graph's lambda_max (their outputs are checked equal). Timed: forward
(under torch.no_grad, as in evaluation) and forward+backward (input and weights require
gradients, as for an inner layer in training), in two layouts:

(a) shared graph: x [B, N, F] with the graph's edge_index (ChebConv broadcasts over B);
(b) PyG disjoint batch: x [B*N, F] with the union of B copies of the graph and `batch`, as a
    torch_geometric DataLoader would collate it.

In both, "operator" passes the graph's ChebyshevOperator, built once (what the DeepSphere models
and ``SphericalChebConv(cached=True)`` do), and "per call" passes edge_index and edge_weight,
from which the layer builds the operator in the timed call (as for each new DataLoader batch).
Both are compared with the same ChebConv timings.

ChebConv needs about 3 x B x E x F x 4 bytes at once (17 GB at nside 256); when that does not fit
comfortably in the available memory it is run on the maps in equal chunks (forward and backward
of one chunk before the next), as a user would have to: its cost is linear in the number of
maps, and the chunk size is printed.

The methods are interleaved within each repeat so that they see the same machine load; the
table gives medians (ms) and the ratio ChebConv / SphericalChebConv.

    python benchmarks/bench_conv.py [--nsides 64 256] [--repeats 3] [--cheb-maps C]
"""

import argparse
import os
import platform
import statistics
import time

import torch
from torch_geometric.nn import ChebConv

import pyg_sphere
from pyg_sphere.nn import ChebyshevOperator, SphericalChebConv

B, F_IN, F_OUT, K = 8, 32, 32, 5


def mem_available_gb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def disjoint_union(graph, copies):
    n, e = graph.num_nodes, graph.edge_index.size(1)
    offsets = torch.arange(copies).repeat_interleave(e) * n
    edge_index = graph.edge_index.repeat(1, copies) + offsets
    edge_weight = graph.edge_weight.repeat(copies)
    batch = torch.arange(copies).repeat_interleave(n)
    return edge_index, edge_weight, batch


def run(fn, backward):
    """fn() (and the backward of its output, all ones); returns the output, detached."""
    out = fn()
    if backward:
        out.backward(torch.ones_like(out))
    return out.detach()


def timed(fn, backward):
    """Seconds for one call of fn(backward)."""
    with torch.set_grad_enabled(backward):
        t = time.perf_counter()
        fn(backward)
        return time.perf_counter() - t


def maps_per_call(message_gb_per_map):
    """Largest divisor of B whose ChebConv call needs under 40% of the available memory."""
    budget = 0.4 * mem_available_gb()
    return max(
        [c for c in range(1, B + 1) if B % c == 0 and 3 * c * message_gb_per_map < budget] or [0]
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsides", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cheb-maps",
        type=int,
        default=0,
        help="maps per ChebConv call (a divisor of 8; default: what fits)",
    )
    args = parser.parse_args()
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); load average "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}; "
        f"medians of {args.repeats} interleaved repeats after a warm-up call"
    )
    print(
        f"{'nside':>5} {'layout':<22} {'pass':<8} {'SphericalChebConv ms':>20} "
        f"{'ChebConv ms':>12} {'speed-up':>8}"
    )
    for nside in args.nsides:
        graph = pyg_sphere.healpix_graph(nside)
        n, lam = graph.num_nodes, graph.lambda_max
        torch.manual_seed(0)
        cheb = ChebConv(F_IN, F_OUT, K)
        conv = SphericalChebConv(F_IN, F_OUT, K)
        conv.load_state_dict(cheb.state_dict())
        x_shared = torch.randn(B, n, F_IN, requires_grad=True)
        x_flat = x_shared.detach().reshape(B * n, F_IN).requires_grad_(True)
        ei, ew, batch = disjoint_union(graph, B)
        # ChebConv materializes the gathered inputs and the messages, [B*E, F] floats each
        # (and more: its peak is about 3x that), at once.
        chunk = args.cheb_maps or maps_per_call(graph.edge_index.size(1) * F_IN * 4 / 2**30)
        chunk_graph = disjoint_union(graph, chunk) if chunk else None

        def cheb_shared(backward):
            return torch.cat(
                [
                    run(
                        lambda: cheb(
                            x_shared[i : i + chunk],
                            graph.edge_index,
                            graph.edge_weight,
                            lambda_max=lam,
                        ),
                        backward,
                    )
                    for i in range(0, B, chunk)
                ]
            )

        def cheb_disjoint(backward):
            ei_c, ew_c, batch_c = chunk_graph if chunk < B else (ei, ew, batch)
            return torch.cat(
                [
                    run(
                        lambda: cheb(
                            x_flat[i * n : (i + chunk) * n], ei_c, ew_c, batch_c, lambda_max=lam
                        ),
                        backward,
                    )
                    for i in range(0, B, chunk)
                ]
            )

        op_shared = ChebyshevOperator(graph.edge_index, graph.edge_weight, n, lambda_max=lam)
        op_union = ChebyshevOperator(ei, ew, B * n, lambda_max=lam)
        layouts = {
            "(a) shared": {
                "operator": lambda bw: run(lambda: conv(x_shared, op_shared), bw),
                "per call": lambda bw: run(
                    lambda: conv(x_shared, graph.edge_index, graph.edge_weight, lambda_max=lam), bw
                ),
                "ChebConv": cheb_shared,
            },
            "(b) disjoint": {
                "operator": lambda bw: run(lambda: conv(x_flat, op_union), bw),
                "per call": lambda bw: run(lambda: conv(x_flat, ei, ew, batch, lambda_max=lam), bw),
                "ChebConv": cheb_disjoint,
            },
        }
        if not chunk:
            print(
                f"  nside {nside}: ChebConv skipped, one map needs more than 40% of the "
                f"{mem_available_gb():.0f} GB available"
            )
        elif chunk < B:
            print(
                f"  nside {nside}: ChebConv run on {B // chunk} chunks of {chunk} maps "
                f"({mem_available_gb():.0f} GB available)"
            )
        for layout, methods in layouts.items():
            if not chunk:
                methods.pop("ChebConv", None)
            with torch.no_grad():  # warm-up, checks
                outs = {name: fn(False) for name, fn in methods.items()}
            if "ChebConv" in outs:
                ref = outs.pop("ChebConv")
                for out in outs.values():
                    err = float((out - ref).abs().max() / ref.abs().max())
                    assert err < 1e-4, f"outputs differ ({err:.1e})"
            del outs
            for backward in (False, True):
                times = {name: [] for name in methods}
                for _ in range(args.repeats):
                    for name, fn in methods.items():
                        x_shared.grad = x_flat.grad = None
                        conv.zero_grad(set_to_none=True)
                        cheb.zero_grad(set_to_none=True)
                        times[name].append(timed(fn, backward))
                ref = statistics.median(times["ChebConv"]) * 1e3 if "ChebConv" in times else None
                for name in methods:
                    if name == "ChebConv":
                        continue
                    ours = statistics.median(times[name]) * 1e3
                    if ref is not None:
                        ref_s, ratio = f"{ref:12.1f}", f"{ref / ours:7.1f}x"
                    else:
                        ref_s, ratio = f"{'-':>12}", f"{'-':>8}"
                    label = f"{layout} {name}"
                    print(
                        f"{nside:>5} {label:<22} {'fwd+bwd' if backward else 'fwd':<8} "
                        f"{ours:>20.1f} {ref_s} {ratio}",
                        flush=True,
                    )
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
