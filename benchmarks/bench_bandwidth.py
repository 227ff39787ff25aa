"""Achieved memory bandwidth of the CSR sparse-dense product that SphericalChebConv runs.

The product is Y = L~ X with L~ the cached rescaled Laplacian of the full-sphere k=8 graph (CSR,
float32 values) and X [N, C] float32, through the same call as the layer (``_mm``: the
generic ``torch.sparse.mm`` below 32 columns, the CSR ``'sum'`` kernel from 32). Its traffic is
counted with a compulsory-traffic model:

    bytes = nnz * (value bytes + column-index bytes) + (N + 1) * row-pointer bytes
            + N * C * 4 (X read once) + N * C * 4 (Y written once)

i.e. every row of X is assumed to be read from memory once, its other uses hitting the caches
(neighbouring nested pixels are close in memory); extra misses only make the true traffic higher
than counted. The reference is the copy bandwidth measured in the same run:
``dst.copy_(src)`` on 1 GiB float32 tensors, counted as 2 GiB moved (read + write, as STREAM's
Copy; write-allocate traffic not counted). Both use the same number of torch threads. Methods are
interleaved within each repeat; medians.

    python benchmarks/bench_bandwidth.py [--nsides 64 256] [--columns 1 32 256] [--repeats 5]
        [--kernels 1 4 16 32 64 128] [--threads 1]
"""

import argparse
import os
import platform
import statistics
import time

import torch

import pyg_sphere
from pyg_sphere.nn import ChebyshevOperator
from pyg_sphere.nn.conv.chebyshev_operator import _mm

COPY_BYTES = 1 << 30


def seconds(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def nbytes(t):
    return t.numel() * t.element_size()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsides", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--columns", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--kernels",
        type=int,
        nargs="*",
        default=[],
        help="also compare the two CPU kernels at these column counts",
    )
    args = parser.parse_args()
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; load "
        f"average {' '.join(f'{v:.1f}' for v in os.getloadavg())}; medians of "
        f"{args.repeats} interleaved repeats"
    )

    src = torch.rand(COPY_BYTES // 4)
    dst = torch.empty_like(src)
    ops = {}
    for nside in args.nsides:
        g = pyg_sphere.healpix_graph(nside)
        op = ChebyshevOperator(g.edge_index, g.edge_weight, g.num_nodes, lambda_max=g.lambda_max)
        m = op.matrix  # the whole matrix, diagonal included
        matrix_bytes = nbytes(m.values()) + nbytes(m.col_indices()) + nbytes(m.crow_indices())
        ops[nside] = (m, matrix_bytes)
        print(
            f"nside {nside}: N={g.num_nodes}, nnz={m.values().numel()} "
            f"({m.values().numel() / g.num_nodes:.1f}/row), values {m.values().dtype}, "
            f"indices {m.col_indices().dtype}; matrix {matrix_bytes / 2**20:.1f} MiB"
        )

    print(
        f"{'threads':>7} {'nside':>5} {'C':>4} {'MiB moved':>9} {'spmm ms':>9} "
        f"{'spmm GB/s':>9} {'copy GB/s':>9} {'% of copy':>9}"
    )
    for threads in args.threads:
        torch.set_num_threads(threads)
        for nside, (m, matrix_bytes) in ops.items():
            n = m.size(0)
            for c in args.columns:
                x = torch.rand(n, c)
                moved = matrix_bytes + 2 * n * c * 4
                _mm(m, x)  # warm-up
                dst.copy_(src)
                t_mm, t_copy = [], []
                for _ in range(args.repeats):
                    t_mm.append(seconds(lambda: _mm(m, x)))
                    t_copy.append(seconds(lambda: dst.copy_(src)))
                mm, cp = statistics.median(t_mm), statistics.median(t_copy)
                bw_mm, bw_copy = moved / mm / 1e9, 2 * COPY_BYTES / cp / 1e9
                print(
                    f"{threads:>7} {nside:>5} {c:>4} {moved / 2**20:>9.1f} {mm * 1e3:>9.2f} "
                    f"{bw_mm:>9.2f} {bw_copy:>9.2f} {100 * bw_mm / bw_copy:>8.0f}%",
                    flush=True,
                )
    if args.kernels:
        compare_kernels(ops, args)
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


def compare_kernels(ops, args):
    """Both CPU kernels on the same inputs, interleaved: the CSR 'sum' reduction and the
    generic torch.sparse.mm, which _mm picks between by the number of columns."""
    print(f"kernels, {torch.get_num_threads()} thread(s): ms, medians of {args.repeats}")
    print(f"{'nside':>5} {'C':>4} {'sum ms':>9} {'generic ms':>10} {'sum/generic':>11}")
    for nside, (m, _) in ops.items():
        for c in args.kernels:
            x = torch.rand(m.size(0), c)
            t_sum, t_gen = [], []
            for _ in range(args.repeats):
                t_sum.append(seconds(lambda: torch.sparse.mm(m, x, "sum")))
                t_gen.append(seconds(lambda: torch.sparse.mm(m, x)))
            a, b = statistics.median(t_sum), statistics.median(t_gen)
            print(f"{nside:>5} {c:>4} {a * 1e3:>9.2f} {b * 1e3:>10.2f} {a / b:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
