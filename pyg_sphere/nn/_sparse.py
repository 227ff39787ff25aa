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
    edge_index = edge_index.long()  # PyG's message passing indexes with int64 (a no-op then)
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
    """:math:`\\tilde{L}` and its transpose for the backward pass, with the products of the
    Chebyshev recursion (:meth:`apply`, :meth:`step`).

    The general form is a CSR tensor (rows are target nodes, 32-bit indices where they fit; the
    transpose is the same tensor when :math:`\\tilde{L}` is symmetric, which is checked, not
    assumed): about 8 bytes per edge and 12 per node. The operator of a
    :func:`~pyg_sphere.healpix_graph` is split (:func:`_split_laplacian`): its off-diagonal part
    as a CSR tensor and its diagonal as a number (or a vector), which the products add in the
    same call: 8 bytes per edge and 4 per node (8 with a diagonal vector), and faster products
    (8 stored entries a row rather than 9 on a sphere)."""

    def __init__(self, edge_index: Tensor, weight: Tensor, num_nodes: int, split=None):
        self.num_nodes = num_nodes
        self.symmetric = False
        self.diagonal = None
        if split is not None:  # built by _split_laplacian, symmetric by construction
            self.symmetric = True
            self.off_diagonal, self.diagonal = split
            return
        l1, l1_t = _csr_and_transpose(edge_index[1], edge_index[0], weight, num_nodes)
        if _nearly_equal(l1, l1_t):
            self.symmetric = True
            l1_t = l1
        self.matrix = l1
        self.matrix_t = l1_t

    def __getattr__(self, name):
        # The whole matrix of a split operator, for inspection only (the products use the
        # split form): built on first access.
        if name in ("matrix", "matrix_t") and "off_diagonal" in self.__dict__:
            self.matrix = self.matrix_t = _with_diagonal(self.off_diagonal, self.diagonal)
            return self.matrix
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def apply(self, x: Tensor, transpose: bool = False) -> Tensor:
        """:math:`\\tilde{L} x` (or :math:`\\tilde{L}^\\top x`) of a 2-D :obj:`x`."""
        if self.diagonal is None:
            return _mm(self.matrix_t if transpose else self.matrix, x)
        d = self.diagonal
        if isinstance(d, float):
            return torch.addmm(x, self.off_diagonal, x, beta=d)
        return torch.addmm(x * d.unsqueeze(1), self.off_diagonal, x)

    def step(self, x: Tensor, previous: Tensor, transpose: bool = False) -> Tensor:
        """:math:`2 \\tilde{L} x - previous`, the step of the Chebyshev recursion, in one
        product (no stored copy of :math:`2 \\tilde{L}`)."""
        if self.diagonal is None:
            return _mm2(self.matrix_t if transpose else self.matrix, x, previous)
        d = self.diagonal
        # previous - 2 D x, then 2 A x - (previous - 2 D x) in the product itself.
        if isinstance(d, float):
            rest = torch.sub(previous, x, alpha=2.0 * d)
        else:
            rest = torch.addcmul(previous, d.unsqueeze(1), x, value=-2.0)
        return torch.addmm(rest, self.off_diagonal, x, beta=-1.0, alpha=2.0)


def _with_diagonal(off_diagonal: Tensor, diagonal: Union[float, Tensor]) -> Tensor:
    n = off_diagonal.size(0)
    m = sp.csr_matrix(
        (
            off_diagonal.values().numpy(),
            off_diagonal.col_indices().numpy(),
            off_diagonal.crow_indices().numpy(),
        ),
        shape=(n, n),
    )
    d = np.full(n, diagonal) if isinstance(diagonal, float) else diagonal.numpy()
    return _from_scipy((m + sp.diags(d.astype(m.dtype), format="csr")).tocsr())


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


def _split_laplacian(
    edge_index: Tensor,
    edge_weight: Tensor,
    num_nodes: int,
    normalization: Optional[str],
    lambda_max: float,
    dtype: torch.dtype,
) -> Tuple[Tensor, Union[float, Tensor]]:
    """:math:`\\tilde{L}` of a graph of :func:`~pyg_sphere.healpix_graph`, as its off-diagonal
    part (a CSR tensor) and its diagonal (a number with the ``'sym'`` normalization, else the
    vector of rescaled degrees).

    The edge list is already in CSR order (sorted by row, coalesced, no self loops): one pass,
    block by block (no edge-sized temporaries besides the matrix), no sort and no transpose
    (the matrix is symmetric). With the diagonal apart, the products read 8 entries a row
    rather than 9 and add the diagonal in the same call (:meth:`ChebOperator.apply`). The
    column indices are ``edge_index[1]`` itself when the graph has 32-bit indices
    (``healpix_graph(..., index_dtype=torch.int32)``: no copy), else a 32-bit copy of it:
    torch's CSR products are 2-3x slower with int64 indices on few channels (CPU, torch 2.13).
    """
    row, col = edge_index[0], edge_index[1]
    weight = edge_weight.detach()
    degree = torch.zeros(num_nodes, dtype=dtype).index_add_(0, row, weight.to(dtype))
    scale = 2.0 / lambda_max
    values = torch.empty(weight.numel(), dtype=dtype)
    if normalization == "sym":
        inv = degree.pow(-0.5)
        inv.masked_fill_(torch.isinf(inv), 0.0)
        # L's diagonal is 1, isolated nodes included (as get_laplacian has it for ChebConv).
        diagonal = scale - 1.0
        for e0 in range(0, values.numel(), _EDGE_BLOCK):
            e = slice(e0, e0 + _EDGE_BLOCK)
            torch.mul(inv[row[e]], weight[e], out=values[e])
            values[e].mul_(inv[col[e]]).mul_(-scale)
    else:
        values.copy_(weight).mul_(-scale)  # in the operator's dtype, not the weights'
        diagonal = degree.mul_(scale).sub_(1.0)
    index_dtype = torch.int32 if max(num_nodes, row.numel()) < 2**31 else torch.int64
    crow = torch.zeros(num_nodes + 1, dtype=index_dtype)
    torch.cumsum(torch.bincount(row, minlength=num_nodes), 0, out=crow[1:])
    return _csr_tensor(crow, col.to(index_dtype), values, num_nodes), diagonal


# Edges per block of the operator build: keeps its temporaries in cache.
_EDGE_BLOCK = 1 << 20


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
                split = _split_laplacian(
                    edge_index, edge_weight, num_nodes, normalization, lambda_max[0], dtype
                )
                return ChebOperator(None, None, num_nodes, split=split)
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


def _iter_terms(op: "ChebOperator", x: Tensor, K: int):
    """The terms :math:`T_k(\\tilde{L}) x`, k = 0 ... K - 1 (K >= 2), of a 2-D x, one at a
    time: the recursion holds only the last two."""
    t0, t1 = x, op.apply(x)
    yield t0
    yield t1
    for _ in range(2, K):
        t0, t1 = t1, op.step(t1, t0)
        yield t1


def _terms(op: "ChebOperator", x: Tensor, K: int) -> Tensor:
    """The stacked terms :math:`T_k(\\tilde{L}) x` [N, B, K, F] of x [N, B, F]."""
    n, b, f = x.shape
    terms = _iter_terms(op, x.reshape(n, b * f), K)
    return torch.stack([t.view(n, b, f) for t in terms], dim=2)


def _terms_backward(op: "ChebOperator", grad, K: int, shape) -> Tensor:
    """:math:`\\sum_k T_k(\\tilde{L}^\\top) G_k` [N, B, F] of the gradients :math:`G_k` of the
    terms, :obj:`grad(k)` (viewable as [N, B, F] = :obj:`shape`), by Clenshaw's recurrence:
    K - 1 sparse products with the cached transpose (the very same matrix when
    :math:`\\tilde{L}` is symmetric), no copies of the gradients."""
    n, b, f = shape
    b2, b1 = None, grad(K - 1).reshape(n, b * f)
    for k in range(K - 2, 0, -1):
        if b2 is None:
            bk = op.apply(b1, transpose=True).mul_(2.0)
        else:
            bk = op.step(b1, b2, transpose=True)
        bk.view(n, b, f).add_(grad(k).view(n, b, f))
        b2, b1 = b1, bk
    out = op.apply(b1, transpose=True)
    out.view(n, b, f).add_(grad(0).view(n, b, f))
    if b2 is not None:
        out.sub_(b2)
    return out.view(n, b, f)


class _ChebyshevBasis(torch.autograd.Function):
    """The stacked terms :math:`T_k(\\tilde{L}) x`, with no autograd graph of the recursion:
    the backward is :func:`_terms_backward`."""

    @staticmethod
    def forward(ctx, x: Tensor, op: "ChebOperator", K: int) -> Tensor:
        ctx.op = op
        return _terms(op, x, K)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        n, b, K, f = grad.shape
        return _terms_backward(ctx.op, lambda k: grad[:, :, k], K, (n, b, f)), None, None


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


class _ChebyshevFilter(torch.autograd.Function):
    """The whole filter, :math:`\\sum_k T_k(\\tilde{L}) x \\Theta_k + b`, keeping only x (and
    the weights) for the backward. The K terms are freed after the forward; the backward runs
    the recursion again, one term at a time, for the weights' gradient, and forms the terms'
    gradients one at a time inside Clenshaw's recurrence: it holds no tensor of K terms. K - 1
    more sparse products per backward, for 2 K B F floats less per node at its peak."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], op, K: int) -> Tensor:
        n, b, f = x.shape
        out = torch.nn.functional.linear(_terms(op, x, K).view(n * b, K * f), weight, bias)
        ctx.op, ctx.K, ctx.has_bias = op, K, bias is not None
        ctx.save_for_backward(x, weight)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        op, K = ctx.op, ctx.K
        n, b, f = x.shape
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            grad_t = grad.t()
            terms = _iter_terms(op, x.reshape(n, b * f), K)
            grad_weight = torch.cat([grad_t.mm(t.view(n * b, f)) for t in terms], dim=1)
        if ctx.needs_input_grad[2] and ctx.has_bias:
            grad_bias = grad.sum(0)
        if ctx.needs_input_grad[0]:

            def grad_term(k):  # the gradient of T_k, [N B, F]
                return grad.mm(weight[:, k * f : (k + 1) * f])

            grad_x = _terms_backward(op, grad_term, K, (n, b, f))
        return grad_x, grad_weight, grad_bias, None, None


def chebyshev_filter(
    op: ChebOperator, x: Tensor, K: int, weight: Tensor, bias: Optional[Tensor]
) -> Tensor:
    """:math:`\\sum_k T_k(\\tilde{L}) x \\Theta_k + b` [N B, F_out] of x [N, B, F], with
    :obj:`weight` [F_out, K F] (the :math:`\\Theta_k^\\top` side by side): the product of
    :func:`chebyshev_basis` with the weights, recomputing the terms in the backward rather than
    keeping them."""
    return _ChebyshevFilter.apply(x.contiguous(), weight, bias, op, K)
