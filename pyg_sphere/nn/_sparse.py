"""Cached rescaled Laplacians and the sparse products of the Chebyshev recursion.

:class:`~pyg_sphere.nn.SphericalChebConv` multiplies by the same operator
:math:`\\tilde{L} = 2L/\\lambda_{\\max} - I` at every layer and every step. It is built once per
graph as a CSR tensor and kept in the ``'operator'`` cache of :mod:`pyg_sphere.cache`, keyed on
the *identity* of the graph tensors (never on their content, which would cost as much as
rebuilding). Device, dtype, node count, normalization and :math:`\\lambda_{\\max}` are part of
the key.
"""

import math
import warnings
from typing import Optional, Tuple, Union

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .. import cache
from .._validate import check_memory
from ..graph._healpix_graph import (
    is_canonical_graph,
    registered_lambda_max,
    registered_num_nodes,
)

LambdaMax = Union[float, Tensor]

NORMALIZATIONS = (None, "sym", "rw")


# Registered in pyg_sphere.cache; operators are large (about 12 bytes per edge, twice when
# L~ is not symmetric) and bounded with the graphs, the other two hold one number per graph.
OPERATOR_CACHE = cache.identity_memo("operator", cache.DEFAULT_LARGE_LIMIT)
LAMBDA_CACHE = cache.identity_memo("lambda_max")
NODE_CACHE = cache.identity_memo("node_count")


@torch.compiler.disable
def check_node_count(edge_index: Tensor, num_nodes: int):
    """Raises unless features of :obj:`num_nodes` rows fit :obj:`edge_index`: never when it
    refers to nodes beyond them, nor when it belongs to a graph of
    :func:`~pyg_sphere.healpix_graph` with another node count (checked once per graph)."""
    largest = NODE_CACHE.get(
        (edge_index,), (), lambda: int(edge_index.max()) if edge_index.numel() > 0 else -1
    )
    known = registered_num_nodes(edge_index)
    if largest >= num_nodes or (known is not None and known != num_nodes):
        graph = f"a graph of {known} nodes" if known is not None else f"node {largest}"
        raise ValueError(
            f"x has {num_nodes} nodes along its node dimension (-2) but edge_index "
            f"{'belongs to' if known is not None else 'refers to'} {graph}: x must be [N, F] or "
            f"[B, N, F] with N the number of nodes of the graph (graph.num_nodes); features of "
            f"the full sphere go with the full sphere's graph, those of a region or a coarser "
            f"level with that region's or level's graph"
        )


def check_normalization(normalization):
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be 'sym', 'rw' or None, got {normalization!r}")
    return normalization


@torch.compiler.disable
def estimated_lambda_max(
    edge_index: Tensor, edge_weight: Optional[Tensor], num_nodes: int, normalization: Optional[str]
) -> float:
    """Largest Laplacian eigenvalue of a graph: the one :func:`~pyg_sphere.healpix_graph`
    stored with these very tensors, else estimated once per graph and cached."""
    from pyg_sphere.graph import estimate_lambda_max

    if normalization in ("sym", "rw"):  # the spectrum that healpix_graph's value describes
        known = registered_lambda_max(edge_index, edge_weight)
        if known is not None:
            return float(known)

    def build():
        ew = None if edge_weight is None else edge_weight.detach()
        return float(estimate_lambda_max(edge_index, ew, num_nodes, normalization=normalization))

    return LAMBDA_CACHE.get((edge_index, edge_weight), (num_nodes, normalization), build)


@torch.compiler.disable
def lambda_max_key(lambda_max: LambdaMax) -> Tuple[float, ...]:
    """The value(s) of :obj:`lambda_max` as a tuple of floats, checked positive and finite."""
    if isinstance(lambda_max, Tensor):
        values = tuple(float(v) for v in lambda_max.detach().reshape(-1).tolist())
    else:
        values = (float(lambda_max),)
    if len(values) == 0 or not all(math.isfinite(v) and v > 0 for v in values):
        hint = " (a graph without edges has lambda_max 0: use K=1 there)" if 0.0 in values else ""
        raise ValueError(f"lambda_max must be positive and finite, got {values}{hint}")
    if len(set(values)) == 1:  # one value for all graphs: no need for `batch`
        values = values[:1]
    return values


def scaled_laplacian(
    edge_index: Tensor,
    edge_weight: Optional[Tensor],
    num_nodes: int,
    normalization: Optional[str],
    lambda_max: Tuple[float, ...],
    dtype: torch.dtype,
    batch: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Edges and weights of :math:`\\tilde{L} = 2L/\\lambda_{\\max} - I`, differentiable in
    :obj:`edge_weight`.

    Same convention as :class:`torch_geometric.nn.ChebConv`: an edge ``(j, i)`` of weight
    ``w`` contributes ``w * x[j]`` to row ``i``. :obj:`lambda_max` holds one value, or one per
    graph of a batch, picked for each edge by ``batch[edge_index[0]]``.
    """
    row, col = edge_index[0], edge_index[1]
    weight = (
        torch.ones(row.numel(), dtype=dtype, device=row.device)
        if edge_weight is None
        else edge_weight.to(dtype)
    )
    loops = row == col
    if bool(loops.any()):  # ChebConv drops self loops before normalizing
        keep = ~loops
        row, col, weight = row[keep], col[keep], weight[keep]
    if len(lambda_max) == 1:
        scale = torch.tensor(2.0 / lambda_max[0], dtype=dtype, device=row.device)
        node_scale = scale
    else:
        if batch is None:
            raise ValueError(
                f"lambda_max holds {len(lambda_max)} values (one per graph): "
                f"pass the `batch` vector too, or a single float"
            )
        lam = torch.tensor(lambda_max, dtype=dtype, device=row.device)
        if int(batch.max()) >= lam.numel():
            raise ValueError(
                f"batch refers to graph {int(batch.max())} but lambda_max holds "
                f"only {lam.numel()} values"
            )
        node_scale = (2.0 / lam)[batch]
        scale = node_scale[row]
    # L = D - W (None), I - D^-1/2 W D^-1/2 ('sym') or I - D^-1 W ('rw'), computed in one pass
    # rather than with get_laplacian (several copies of the edge list on large batches).
    degree = torch.zeros(num_nodes, dtype=dtype, device=row.device).index_add(0, row, weight)
    if normalization is None:
        off = weight
        diag = degree
    else:
        inv = degree.pow(-0.5 if normalization == "sym" else -1.0)
        inv = inv.masked_fill(torch.isinf(inv), 0.0)
        off = inv[row] * weight * inv[col] if normalization == "sym" else inv[row] * weight
        diag = torch.ones_like(degree)
    nodes = torch.arange(num_nodes, dtype=row.dtype, device=row.device)
    edge_index = torch.cat([torch.stack([row, col]), nodes.expand(2, -1)], dim=1)
    # L~ = 2 L / lambda_max - I
    weight = torch.cat([-scale * off, node_scale * diag - 1.0])
    return edge_index, weight


class ChebOperator:
    """:math:`\\tilde{L}` as a CSR tensor (rows are target nodes, 32-bit indices where they
    fit) and its transpose for the backward pass (the same tensor when :math:`\\tilde{L}` is
    symmetric, which is checked, not assumed). About 8 bytes per edge and 12 per node."""

    def __init__(self, edge_index: Tensor, weight: Tensor, num_nodes: int, matrix=None):
        self.num_nodes = num_nodes
        self.symmetric = False
        if matrix is not None:  # built by _canonical_laplacian, symmetric by construction
            self.symmetric = True
            self.matrix = self.matrix_t = matrix
            return
        l1, l1_t = _csr_and_transpose(edge_index[1], edge_index[0], weight, num_nodes)
        if _nearly_equal(l1, l1_t):
            self.symmetric = True
            l1_t = l1
        self.matrix = l1
        self.matrix_t = l1_t


def _nearly_equal(a: Tensor, b: Tensor) -> bool:
    # The sym normalization w_ij / sqrt(d_i d_j) is symmetric up to rounding of the products.
    if not (
        torch.equal(a.crow_indices(), b.crow_indices())
        and torch.equal(a.col_indices(), b.col_indices())
    ):
        return False
    va, vb = a.values(), b.values()
    if va.numel() == 0:
        return True
    tol = 8 * torch.finfo(va.dtype).eps * float(va.abs().max())
    return float((va - vb).abs().max()) <= tol


def _csr_and_transpose(row: Tensor, col: Tensor, value: Tensor, n: int) -> Tuple[Tensor, Tensor]:
    """CSR matrices with entries ``(row[e], col[e]) = value[e]`` and its transpose, duplicates
    summed (as message passing sums them)."""
    if value.device.type == "cpu" and value.dtype in (torch.float32, torch.float64):
        # scipy's conversion is a linear-time bucket sort, several times faster than sorting,
        # and its CSC -> CSR transpose is another linear pass.
        m = sp.csr_matrix((value.numpy(), (row.numpy(), col.numpy())), shape=(n, n))
        m.sum_duplicates()  # canonical: sorted column indices, no duplicates
        return _from_scipy(m), _from_scipy(m.T.tocsr())
    return _csr_torch(row, col, value, n), _csr_torch(col, row, value, n)


def _canonical_laplacian(
    edge_index: Tensor,
    edge_weight: Tensor,
    num_nodes: int,
    normalization: Optional[str],
    lambda_max: float,
    dtype: torch.dtype,
) -> Tensor:
    """:math:`\\tilde{L}` of a graph of :func:`~pyg_sphere.healpix_graph` in one pass over its
    edge list, which is already in CSR order: no edge-list copies, no sort, no transpose (the
    matrix is symmetric); the peak is about the finished matrix plus one weight per edge."""
    row, col = edge_index[0], edge_index[1]
    weight = edge_weight.detach().to(dtype)
    degree = torch.zeros(num_nodes, dtype=dtype).index_add_(0, row, weight)
    scale = 2.0 / lambda_max
    if normalization == "sym":
        inv = degree.pow(-0.5)
        inv.masked_fill_(torch.isinf(inv), 0.0)
        off = inv[row].mul_(weight).mul_(inv[col]).mul_(-scale)
        diagonal = (degree > 0).to(dtype).mul_(scale).sub_(1.0)
    else:
        off = weight.mul(-scale)
        diagonal = degree.mul(scale).sub_(1.0)
    indptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(row.numpy(), minlength=num_nodes), out=indptr[1:])
    index_dtype = np.int32 if max(num_nodes, row.numel() + num_nodes) < 2**31 else np.int64
    off_diagonal = sp.csr_matrix(
        (off.numpy(), col.numpy().astype(index_dtype), indptr.astype(index_dtype)),
        shape=(num_nodes, num_nodes),
    )
    del off
    off_diagonal.has_sorted_indices = True  # a coalesced edge list is sorted by (row, col)
    matrix = (off_diagonal + sp.diags(diagonal.numpy(), format="csr")).tocsr()
    return _from_scipy(matrix)


def _from_scipy(m: sp.csr_matrix) -> Tensor:
    return _csr_tensor(
        torch.from_numpy(m.indptr),
        torch.from_numpy(m.indices),
        torch.from_numpy(m.data),
        m.shape[0],
    )


def _csr_torch(row: Tensor, col: Tensor, value: Tensor, n: int) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        coo = torch.sparse_coo_tensor(
            torch.stack([row, col]), value, (n, n), check_invariants=False
        ).coalesce()
        return coo.to_sparse_csr()


def _csr_tensor(crow: Tensor, col: Tensor, values: Tensor, n: int) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        return torch.sparse_csr_tensor(crow, col, values, (n, n), check_invariants=False)


def cheb_operator(
    edge_index: Tensor,
    edge_weight: Optional[Tensor],
    num_nodes: int,
    normalization: Optional[str],
    lambda_max: Tuple[float, ...],
    dtype: torch.dtype,
    device: torch.device,
    batch: Optional[Tensor] = None,
) -> ChebOperator:
    """The cached :class:`ChebOperator` of a graph (built on first use)."""
    tensors = (edge_index, edge_weight, batch if len(lambda_max) > 1 else None)

    def build():
        if (
            torch.device(device).type == "cpu"
            and dtype in (torch.float32, torch.float64)
            and len(lambda_max) == 1
            and normalization in ("sym", None)
            and is_canonical_graph(edge_index, edge_weight)
        ):
            with torch.inference_mode(False), torch.no_grad():
                return ChebOperator(
                    None,
                    None,
                    num_nodes,
                    matrix=_canonical_laplacian(
                        edge_index, edge_weight, num_nodes, normalization, lambda_max[0], dtype
                    ),
                )
        if torch.device(device).type == "cpu":
            nnz = edge_index.size(1) + num_nodes
            # Rescaled edge list (int64 pairs, weights) and the CSR matrices built from it.
            check_memory(
                f"the Chebyshev operator of a graph of {num_nodes} nodes and "
                f"{edge_index.size(1)} edges",
                nnz * (16 + 3 * torch.finfo(dtype).bits // 8 + 8),
                "filter a region or a coarser graph, or use a machine with more memory",
            )
        # Never record autograd history or create inference tensors inside a cached value.
        with torch.inference_mode(False), torch.no_grad():
            ei = edge_index.to(device)
            ew = None if edge_weight is None else edge_weight.detach().to(device)
            b = None if batch is None else batch.to(device)
            ei, w = scaled_laplacian(ei, ew, num_nodes, normalization, lambda_max, dtype, b)
            return ChebOperator(ei, w, num_nodes)

    return OPERATOR_CACHE.get(
        tensors, (num_nodes, normalization, lambda_max, dtype, torch.device(device)), build
    )


# On CPU, the CSR 'sum' reduction kernel wins from about 32 columns (up to 2x faster at 64-128),
# the generic product below (2-5x faster for 1-16 columns): benchmarks/bench_bandwidth.py.
_SUM_KERNEL_MIN_COLUMNS = 32


def _mm(a: Tensor, x: Tensor) -> Tensor:
    if x.device.type == "cpu" and x.size(1) >= _SUM_KERNEL_MIN_COLUMNS:
        return torch.sparse.mm(a, x.contiguous(), "sum")
    return torch.sparse.mm(a, x)  # narrow inputs on CPU; cuSPARSE on CUDA


def _mm2(a: Tensor, x: Tensor, previous: Tensor) -> Tensor:
    """:math:`2 a x - previous`, the step of the Chebyshev recursion, in one product (no
    stored copy of :math:`2a`)."""
    if x.device.type == "cpu" and x.size(1) >= _SUM_KERNEL_MIN_COLUMNS:
        return torch.sparse.mm(a, x.contiguous(), "sum").mul_(2.0).sub_(previous)
    return torch.addmm(previous, a, x, beta=-1.0, alpha=2.0)


class _ChebyshevBasis(torch.autograd.Function):
    """The stacked terms :math:`T_k(\\tilde{L}) x`; the backward runs Clenshaw's recurrence
    with the cached transpose (the very same matrix when :math:`\\tilde{L}` is symmetric):
    :math:`\\sum_k T_k(\\tilde{L}^\\top) G_k` in K - 1 sparse products, with no autograd
    graph of the recursion and no copies of the incoming gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, op: "ChebOperator", K: int) -> Tensor:
        ctx.op = op
        n, b, f = x.shape
        t0 = x.reshape(n, b * f)
        t1 = _mm(op.matrix, t0)
        terms = [t0, t1]
        for _ in range(2, K):
            t0, t1 = t1, _mm2(op.matrix, t1, t0)
            terms.append(t1)
        return torch.stack([t.view(n, b, f) for t in terms], dim=2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        op = ctx.op
        n, b, K, f = grad.shape
        b2, b1 = None, grad[:, :, K - 1].reshape(n, b * f)
        for k in range(K - 2, 0, -1):
            if b2 is None:
                bk = _mm(op.matrix_t, b1).mul_(2.0)
            else:
                bk = _mm2(op.matrix_t, b1, b2)
            bk.view(n, b, f).add_(grad[:, :, k])
            b2, b1 = b1, bk
        out = _mm(op.matrix_t, b1)
        out.view(n, b, f).add_(grad[:, :, 0])
        if b2 is not None:
            out.sub_(b2)
        return out.view(n, b, f), None, None


def chebyshev_basis(op: ChebOperator, x: Tensor, K: int) -> Tensor:
    """Stacks :math:`T_0(\\tilde{L})x, \\dots, T_{K-1}(\\tilde{L})x` along a new dim.

    Args:
        op: the operator of the graph.
        x: node features :math:`[N, B, F]` (B maps on the graph; any strides).
        K: number of Chebyshev terms, at least 2.

    Returns:
        :math:`[N, B, K, F]`, contiguous.
    """
    return _ChebyshevBasis.apply(x.contiguous(), op, K)
