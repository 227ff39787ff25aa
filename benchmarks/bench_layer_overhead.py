"""One SphericalChebConv's forward+backward vs the kernels it runs: where the layer's time goes.

SphericalChebConv(32, 32, K=5) on 8 maps x [8, N, 32] (float32) of the full-sphere
``healpix_graph(nside)``; the backward of ``(out * g).sum()`` with a fixed g, x and the
weights requiring gradients. In the same process and interleaved, it times:

- ``layer``: the layer's forward+backward, given its operator: ``conv(x, op)`` with a
  :class:`~pyg_sphere.nn.ChebyshevOperator` built once (``operator``), ``cached=True``
  (``cached``), and plain tensors with no cache, the operator built at every call
  (``per-call``). With the code of before the operator was public (no ``ChebyshevOperator``),
  ``conv(x, edge_index, edge_weight, lambda_max=...)`` from its second call on, its global
  operator cache warm (``old-cache``).
- ``kernels``: what that layer must run, alone: the 2 (K - 1) sparse products (K - 1 in the
  forward on [N, 8 * 32], K - 1 with the transpose in the backward, with the operator's own
  ``apply`` and ``step``) and the projection GEMMs (forward [N*8, K*32] @ [K*32, 32]; backward
  [32, N*8] @ [N*8, K*32] for the weights and [N*8, 32] @ [32, K*32] for the terms). The old
  code has no public operator: its kernels run the same torch calls on a copy of its layout
  (off-diagonal CSR with 32-bit indices, the 'sym' diagonal as one number) built here with
  scipy, which the new code's rows also time (``kernels (replica)``) as a check.

The table gives medians (ms) over interleaved repeats after a warm-up, and layer / kernels.
``--pieces`` times the layer's other operations alone at its shapes (the input check, layout
copies, the stacking of the K terms, the loss, Clenshaw's element-wise updates, ...);
``--profile`` prints torch.profiler's table of one layer call. ``--json`` prints one JSON
line of the medians (for ``bench_versions.py``).

Run against another checkout (e.g. an earlier commit, ``git worktree add ../old <commit>``)
with its package first on the path, from that checkout::

    cd ../old && PYTHONPATH=$PWD python ../pyg_sphere/benchmarks/bench_layer_overhead.py
    python benchmarks/bench_layer_overhead.py [--nsides 64 256] [--repeats 7] [--pieces]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import time

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

import pyg_sphere
from pyg_sphere.nn import SphericalChebConv

try:
    from pyg_sphere.nn import ChebyshevOperator
except ImportError:  # the code before the operator was public
    ChebyshevOperator = None

B, F_IN, F_OUT, K = 8, 32, 32, 5


class SplitReplica:
    r""":math:`\tilde{L} = 2L/\lambda_{\max} - I` ('sym' normalization) of a graph with
    symmetric weights, in the layout of the library's CPU operator: its off-diagonal part as a
    CSR tensor with 32-bit indices, its diagonal as one number (:math:`2/\lambda_{\max} - 1`).
    Built with scipy (no library internals); :meth:`apply` and :meth:`step` make the same torch
    calls as the library's."""

    def __init__(self, edge_index, edge_weight, n: int, lambda_max: float):
        row = edge_index[0].long().numpy()
        col = edge_index[1].long().numpy()
        w = edge_weight.double().numpy()
        degree = np.bincount(row, weights=w, minlength=n)
        with np.errstate(divide="ignore"):
            inv = np.where(degree > 0, 1.0 / np.sqrt(degree), 0.0)
        values = -(2.0 / lambda_max) * inv[row] * w * inv[col]
        # Message-passing convention: edge (j, i) adds w x_j to row i.
        m = sp.csr_matrix((values.astype(np.float32), (col, row)), shape=(n, n))
        m.sum_duplicates()
        self.off_diagonal = torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int32)),
            torch.from_numpy(m.indices.astype(np.int32)),
            torch.from_numpy(m.data),
            (n, n),
        )
        self.diagonal = 2.0 / lambda_max - 1.0

    def apply(self, x, transpose=False):  # symmetric: the transpose is the same matrix
        return torch.addmm(x, self.off_diagonal, x, beta=self.diagonal)

    def step(self, x, previous, transpose=False):
        rest = torch.sub(previous, x, alpha=2.0 * self.diagonal)
        return torch.addmm(rest, self.off_diagonal, x, beta=-1.0, alpha=2.0)


def kernels(op, xs, A, W, bias, G):
    """The kernels of one forward+backward of the layer: 2 (K - 1) sparse products on
    [N, B F] and the three projection GEMMs, in the layer's order (same calls as
    ``_iter_terms`` and ``_terms_backward``, without their element-wise updates)."""
    t0, t1 = xs, op.apply(xs)
    for _ in range(2, K):
        t0, t1 = t1, op.step(t1, t0)
    del t0, t1
    out = F.linear(A, W, bias)  # [N B, K F] @ [K F, F_out]
    del out
    grad_w = G.t().mm(A)  # [F_out, N B] @ [N B, K F]
    del grad_w
    grad_terms = G.mm(W)  # [N B, F_out] @ [F_out, K F]
    del grad_terms
    b2, b1 = None, op.apply(xs, transpose=True)
    for _ in range(K - 3):
        b2, b1 = b1, op.step(b1, xs if b2 is None else b2, transpose=True)
    op.apply(b1, transpose=True)


def clock(fn):
    """Milliseconds of fn() and the minor page faults it took."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = time.perf_counter()
    fn()
    ms = (time.perf_counter() - t) * 1e3
    return ms, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


class Bench:
    """The layer and its kernels at one nside."""

    def __init__(self, nside: int, variants, with_kernels: bool = True):
        graph = pyg_sphere.healpix_graph(nside)
        self.n = n = graph.num_nodes
        self.ei, self.ew, self.lam = graph.edge_index, graph.edge_weight, float(graph.lambda_max)
        torch.manual_seed(0)
        self.conv = SphericalChebConv(F_IN, F_OUT, K)
        self.x = torch.randn(B, n, F_IN, requires_grad=True)
        self.g = torch.randn(B, n, F_OUT)
        self.replica = SplitReplica(self.ei, self.ew, n, self.lam) if with_kernels else None
        self.layers = {}
        if ChebyshevOperator is None:
            self.layers["old-cache"] = lambda x: self.conv(x, self.ei, self.ew, lambda_max=self.lam)
            if "cached" in variants:  # a second layer on the same cached operator
                other = SphericalChebConv(F_IN, F_OUT, K)
                other.load_state_dict(self.conv.state_dict())
                self.cached = other
                self.layers["old-cache-2"] = lambda x: other(
                    x, self.ei, self.ew, lambda_max=self.lam
                )
            self.kernel_ops = {"kernels (replica)": self.replica}
        else:
            self.op = ChebyshevOperator(self.ei, self.ew, n, lambda_max=self.lam)
            cached = SphericalChebConv(F_IN, F_OUT, K, cached=True)
            cached.load_state_dict(self.conv.state_dict())
            self.cached = cached
            options = {
                "operator": lambda x: self.conv(x, self.op),
                "cached": lambda x: cached(x, self.ei, self.ew, lambda_max=self.lam),
                "per-call": lambda x: self.conv(x, self.ei, self.ew, lambda_max=self.lam),
            }
            self.layers = {k: v for k, v in options.items() if k in variants}
            self.kernel_ops = {"kernels": self.op, "kernels (replica)": self.replica}
        if not with_kernels:
            self.kernel_ops = {}
            return
        # The kernels' operands, at the layer's shapes.
        self.xs = torch.randn(n, B * F_IN)
        self.A = torch.randn(n * B, K * F_IN)
        self.W = torch.randn(F_OUT, K * F_IN) * 0.1
        self.bias = torch.zeros(F_OUT)
        self.G = torch.randn(n * B, F_OUT)
        self.check()

    def check(self):
        """The replica's products equal the operator's (new code), and each layer's output
        its definition with the replica, on one map."""
        with torch.no_grad():
            if ChebyshevOperator is not None:
                a, b = self.op.apply(self.xs), self.replica.apply(self.xs)
                assert float((a - b).abs().max()) < 1e-5 * float(a.abs().max()), "replica"
            x0 = self.x.detach()[0]
            terms = [x0, self.replica.apply(x0)]
            for _ in range(2, K):
                terms.append(self.replica.step(terms[-1], terms[-2]))
            weight = torch.cat([lin.weight for lin in self.conv.lins], dim=1)
            ref = F.linear(torch.cat(terms, 1), weight, self.conv.bias)
            for name, fn in self.layers.items():
                out = fn(self.x.detach()[:1])[0]
                err = float((out - ref).abs().max() / ref.abs().max())
                assert err < 1e-4, f"{name}: output differs from its definition ({err:.1e})"

    def layer_call(self, name):
        x, g, fn, conv = self.x, self.g, self.layers[name], self.conv

        def run():
            out = fn(x)
            (out * g).sum().backward()

        def reset():
            x.grad = None
            conv.zero_grad(set_to_none=True)
            if hasattr(self, "cached"):
                self.cached.zero_grad(set_to_none=True)

        return run, reset

    def kernel_call(self, name):
        op = self.kernel_ops[name]
        return (lambda: kernels(op, self.xs, self.A, self.W, self.bias, self.G)), (lambda: None)

    def methods(self):
        out = {name: self.layer_call(name) for name in self.layers}
        out.update({name: self.kernel_call(name) for name in self.kernel_ops})
        return out


def time_methods(methods, repeats, warmup):
    """Median ms and page faults of each method, interleaved, in a new random order at each
    repeat (a rotation would keep each method after the same one: the call after the
    kernels, which free more memory than they keep, is slower on some machines)."""
    for run, reset in methods.values():
        for _ in range(warmup):
            run()
            reset()
    times = {name: [] for name in methods}
    faults = {name: [] for name in methods}
    names = list(methods)
    rng = random.Random(0)
    for _ in range(repeats):
        order = rng.sample(names, len(names))
        for name in order:
            run, reset = methods[name]
            ms, flt = clock(run)
            reset()
            times[name].append(ms)
            faults[name].append(flt)
    return (
        {k: statistics.median(v) for k, v in times.items()},
        {k: statistics.median(v) for k, v in faults.items()},
        times,
    )


def pieces(bench: Bench, repeats: int):
    """The layer's operations other than its kernels, each alone at the layer's shapes."""
    n, x = bench.n, bench.x.detach()
    nb = torch.randn(n, B, F_IN)  # a nodes-first term
    terms2d = [torch.randn(n, B * F_IN) for _ in range(K)]
    stacked = torch.randn(n, B, K, F_IN)  # the stacked terms and their gradient
    out = torch.randn(n, B, F_OUT).transpose(0, 1)  # the layer's output: a transposed view
    g = bench.g
    grad_out = g.transpose(0, 1)  # the output's gradient as the linear's backward sees it
    lins = [lin.weight for lin in bench.conv.lins]
    acc = torch.randn(n, B * F_IN)
    items = {
        "input check: torch.aminmax(x) [B, N, F]": lambda: torch.aminmax(x),
        "x.transpose(0, 1).contiguous() [B,N,F]->[N,B,F]": lambda: x.transpose(0, 1).contiguous(),
        "torch.stack(K terms, dim=2) -> [N, B, K, F]": lambda: torch.stack(
            [t.view(n, B, F_IN) for t in terms2d], dim=2
        ),
        "weight torch.cat(K [F_out, F]) -> [F_out, K F]": lambda: torch.cat(lins, dim=1),
        "loss fwd: (out * g).sum()": lambda: (out * g).sum(),
        "loss bwd: mul backward g * ones (expand)": lambda: g * torch.ones(()).expand_as(out),
        "grad_out.reshape(N B, F_out) (copy of transposed grad)": lambda: grad_out.reshape(
            n * B, F_OUT
        ),
        "bias grad: grad.sum(0) [N B, F_out]": lambda: g.view(n * B, F_OUT).sum(0),
        "Clenshaw: grad(K-1).reshape(N, B F) (strided copy)": lambda: stacked[:, :, K - 1].reshape(
            n, B * F_IN
        ),
        "Clenshaw: K-1 strided add_(grad(k)) + mul_ + sub_": lambda: _clenshaw_elementwise(
            acc, stacked, n
        ),
        "x.grad accumulate: clone of transposed grad": lambda: nb.transpose(0, 1).contiguous(),
        "nodes_first[N,B,F] -> x.grad view copy (none)": lambda: nb.transpose(0, 1),
    }
    with torch.no_grad():
        for fn in items.values():
            fn()
        times = {k: [] for k in items}
        for _ in range(repeats):
            for k, fn in items.items():
                times[k].append(clock(fn)[0])
    return {k: statistics.median(v) for k, v in times.items()}


def _clenshaw_elementwise(acc, stacked, n):
    """The element-wise updates of ``_terms_backward`` on [N, B F]: mul_(2) once, the
    strided add_ of each term's gradient (K - 1 of them: k = K - 2 ... 0), one sub_."""
    acc.mul_(2.0)
    for k in range(K - 2, -1, -1):
        acc.view(n, B, F_IN).add_(stacked[:, :, k])
    acc.sub_(acc)


def profile(bench: Bench, name: str, rows: int):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    run, reset = bench.methods()[name]
    run()
    reset()
    with prof(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
        run()
    reset()
    print(f"\n## torch.profiler, one call of {name!r} at N = {bench.n}")
    print(
        p.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40
        )
    )


def header(args):
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    version = "old (global operator cache)" if ChebyshevOperator is None else "new (operator)"
    return (
        f"# {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads; pyg_sphere "
        f"{os.path.dirname(pyg_sphere.__file__)} = {version}; load average {load}; "
        f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', '')!s}; "
        f"medians of {args.repeats} interleaved repeats after {args.warmup} warm-up calls"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsides", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["operator", "cached", "per-call"],
        choices=["operator", "cached", "per-call"],
        help="layer variants of the new code",
    )
    parser.add_argument("--pieces", action="store_true", help="time the layer's other ops")
    parser.add_argument("--profile", type=int, default=0, help="profiler rows (0: no profile)")
    parser.add_argument("--json", action="store_true", help="one JSON line of the medians")
    parser.add_argument("--layer-only", action="store_true", help="time the layer alone")
    parser.add_argument(
        "--no-replica", action="store_true", help="new code: time its operator's kernels only"
    )
    parser.add_argument("--save", help="write the results, each call's time included, as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(header(args), flush=True)
    results = []
    if not args.json:
        print(
            "| nside | N | layer | layer ms | kernels ms | layer / kernels | per-repeat ratio "
            "(median, range) | kernels (replica) ms | page faults layer / kernels |\n"
            "|---|---|---|---|---|---|---|---|---|"
        )
    for nside in args.nsides:
        bench = Bench(nside, args.variants, with_kernels=not args.layer_only)
        if args.no_replica and "kernels" in bench.kernel_ops:
            del bench.kernel_ops["kernels (replica)"]
        medians, faults, raw = time_methods(bench.methods(), args.repeats, args.warmup)
        nan = float("nan")
        kern = medians.get("kernels", medians.get("kernels (replica)", nan))
        kflt = faults.get("kernels", faults.get("kernels (replica)", nan))
        row = {"nside": nside, "n": bench.n, "medians_ms": medians, "faults": faults, "raw": raw}
        results.append(row)
        if not args.json:
            kraw = raw.get("kernels", raw.get("kernels (replica)"))
            for name in bench.layers:
                ratios = [a / b for a, b in zip(raw[name], kraw)]
                print(
                    f"| {nside} | {bench.n} | {name} | {medians[name]:.1f} | {kern:.1f} | "
                    f"{medians[name] / kern:.2f} | {statistics.median(ratios):.2f} "
                    f"({min(ratios):.2f}-{max(ratios):.2f}) | "
                    f"{medians.get('kernels (replica)', nan):.1f} | "
                    f"{faults[name]:.0f} / {kflt:.0f} |",
                    flush=True,
                )
        if args.pieces:
            print(f"\n## nside {nside}: the layer's other operations, alone (median ms)")
            for k, v in sorted(pieces(bench, args.repeats).items(), key=lambda kv: -kv[1]):
                print(f"| {k} | {v:.2f} |")
            print(flush=True)
        if args.profile:
            for name in bench.layers:
                if name in ("operator", "old-cache"):
                    profile(bench, name, args.profile)
            profile(bench, next(iter(bench.kernel_ops)), args.profile)
        del bench
    summary = {"header": header(args), "version": pyg_sphere.__file__, "results": results}
    if args.save:
        with open(args.save, "w") as f:
            json.dump(summary, f)
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
