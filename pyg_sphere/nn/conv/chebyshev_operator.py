import math
import warnings
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from ..._validate import check_memory
from ...graph.laplacian import EDGE_BLOCK, check_normalization, laplacian, rescaled_laplacian

LambdaMax = Union[float, Sequence[float], Tensor]


class ChebyshevOperator:
    r"""The rescaled Laplacian :math:`\tilde{L} = 2L/\lambda_{\max} - I` of a graph, built once
    for the sparse products of Chebyshev filters (:class:`SphericalChebConv`).

    Everything a filter needs to know about the graph travels with this object: its node and
    edge counts, normalization, :math:`\lambda_{\max}`, dtype and device, and the matrix in
    one of two layouts, shown by :attr:`layout`:

    - :obj:`'split'`: the off-diagonal part as a CSR matrix with 32-bit indices, the diagonal
      apart (a number with the :obj:`'sym'` normalization): 8 bytes per edge and 4 per node,
      and 8 stored entries a row rather than 9 on a sphere. Used on CPU (float32, float64)
      with the :obj:`'sym'` or :obj:`None` normalization and one :math:`\lambda_{\max}`
      whenever the edge list is in CSR order (sorted by source node, then target, without
      duplicates) and its weights are symmetric: the graphs of
      :func:`~pyg_sphere.healpix_graph` and their copies, clones, pickles and PyG batches.
      The edge list is checked when the operator is built (linear passes, by blocks), so the
      layout depends on the graph's content, never on where the tensors came from. A graph
      with 32-bit indices (``healpix_graph(..., index_dtype=torch.int32)``) lends its
      :obj:`edge_index[1]` as the column indices (no copy).
    - :obj:`'csr'`: any other graph: the whole matrix and, unless it is symmetric (which is
      checked), its transpose for the backward pass.

    Build it once and pass it as :obj:`edge_index` to every :class:`SphericalChebConv` on the
    graph (as the DeepSphere models do), or let a layer keep its own with
    :obj:`SphericalChebConv(cached=True)`.

    Args:
        edge_index (torch.Tensor): Edges :math:`[2, E]` (int64 or int32), in the
            message-passing convention: an edge ``(j, i)`` of weight :math:`w` adds
            :math:`w x_j` to node :math:`i`.
        edge_weight (torch.Tensor, optional): Weights :math:`[E]`.
        num_nodes (int, optional): Number of nodes (default: the largest index plus one).
        normalization (str, optional): :obj:`'sym'`, :obj:`'rw'` or :obj:`None`, as in
            :func:`pyg_sphere.graph.laplacian`. (default: :obj:`'sym'`)
        lambda_max (float or list or torch.Tensor, optional): :math:`\lambda_{\max}`, or one
            value per graph of a disjoint batch (with :obj:`batch`). (default: estimated with
            :func:`~pyg_sphere.graph.estimate_lambda_max`, hundreds of sparse products: pass
            the graph's :obj:`lambda_max` where it has one)
        batch (torch.Tensor, optional): Graph of each node :math:`[N]`, with per-graph
            :obj:`lambda_max`.
        dtype (torch.dtype): Floating-point type of the products. (default:
            :obj:`torch.float32`)
        device (torch.device, optional): Device of the products (default: the graph's).

    Example:
        >>> import torch
        >>> from pyg_sphere import healpix_graph
        >>> from pyg_sphere.nn import ChebyshevOperator, SphericalChebConv
        >>> graph = healpix_graph(4)
        >>> op = ChebyshevOperator(graph.edge_index, graph.edge_weight, graph.num_nodes,
        ...                        lambda_max=graph.lambda_max)
        >>> op.layout, op.num_nodes
        ('split', 192)
        >>> conv = SphericalChebConv(3, 16, K=4)
        >>> conv(torch.randn(8, 192, 3), op).shape
        torch.Size([8, 192, 16])
    """

    def __init__(
        self,
        edge_index: Tensor,
        edge_weight: Optional[Tensor] = None,
        num_nodes: Optional[int] = None,
        *,
        normalization: Optional[str] = "sym",
        lambda_max: Optional[LambdaMax] = None,
        batch: Optional[Tensor] = None,
        dtype: torch.dtype = torch.float32,
        device: Optional[Union[str, torch.device]] = None,
    ):
        if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.size(0) != 2:
            got = tuple(edge_index.shape) if isinstance(edge_index, Tensor) else edge_index
            raise ValueError(f"edge_index must be a tensor [2, E] of node indices, got {got}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(
                f"the products of a Chebyshev filter run in float32 or float64, got {dtype}: "
                f"half-precision inputs are filtered in float32"
            )
        self.normalization = check_normalization(normalization)
        num_nodes = check_graph_size(edge_index, num_nodes)
        if edge_weight is not None and edge_weight.numel() != edge_index.size(1):
            raise ValueError(
                f"edge_weight has {edge_weight.numel()} entries but edge_index has "
                f"{edge_index.size(1)} edges"
            )
        if lambda_max is None:
            from ...graph import estimate_lambda_max

            lambda_max = estimate_lambda_max(edge_index, edge_weight, num_nodes, normalization)
        self.num_nodes = int(num_nodes)
        self.num_edges = int(edge_index.size(1))
        self.lambda_max = lambda_max_values(lambda_max)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else edge_index.device
        # The graph, for the message-passing path of the layers (references, no copies).
        self.edge_index, self.edge_weight = edge_index, edge_weight
        self.symmetric = False
        self.diagonal: Optional[Union[float, Tensor]] = None
        # Never record autograd history or create inference tensors inside the operator.
        with torch.inference_mode(False), torch.no_grad():
            if self._can_split(edge_index, edge_weight):
                self._build_split(edge_index, edge_weight)
            else:
                self._build_csr(edge_index, edge_weight, batch)

    @property
    def layout(self) -> str:
        """:obj:`'split'` (off-diagonal CSR and diagonal apart) or :obj:`'csr'`."""
        return "split" if self.diagonal is not None else "csr"

    @property
    def nbytes(self) -> int:
        """Bytes held by the operator's own tensors (not those shared with the graph)."""
        shared = {t.untyped_storage().data_ptr() for t in (self.edge_index,) if t is not None}
        tensors = [self.matrix] if self.diagonal is None else [self.off_diagonal]
        if self.diagonal is None and self.matrix_t is not self.matrix:
            tensors.append(self.matrix_t)
        if isinstance(self.diagonal, Tensor):
            tensors.append(self.diagonal)
        total = 0
        for t in tensors:
            parts = (t.crow_indices(), t.col_indices(), t.values()) if t.is_sparse_csr else (t,)
            for p in parts:
                if p.untyped_storage().data_ptr() not in shared:
                    total += p.numel() * p.element_size()
        return total

    def matches(self, num_nodes: int, dtype: torch.dtype, device: torch.device) -> bool:
        """Whether the operator filters features of :obj:`num_nodes` rows in this dtype and
        device."""
        return (
            self.num_nodes == num_nodes
            and self.dtype == dtype
            and self.device == torch.device(device)
        )

    def __repr__(self) -> str:
        lam = self.lambda_max[0] if len(self.lambda_max) == 1 else list(self.lambda_max)
        return (
            f"{type(self).__name__}(num_nodes={self.num_nodes}, num_edges={self.num_edges}, "
            f"normalization={self.normalization!r}, lambda_max={lam}, layout={self.layout!r}, "
            f"dtype={self.dtype}, device={self.device})"
        )

    # Construction -------------------------------------------------------------------------

    def _can_split(self, edge_index: Tensor, edge_weight: Optional[Tensor]) -> bool:
        return (
            self.device.type == "cpu"
            and edge_index.device.type == "cpu"
            and len(self.lambda_max) == 1
            and self.normalization in ("sym", None)
            and _in_csr_order(edge_index, self.num_nodes)
            and _symmetric_weights(edge_index, edge_weight, self.num_nodes)
        )

    def _build_split(self, edge_index: Tensor, edge_weight: Optional[Tensor]) -> None:
        """The off-diagonal part in CSR form and the diagonal apart: the edge list is in CSR
        order and symmetric (checked), so there is no sort and no transpose."""
        n, count = self.num_nodes, edge_index.size(1)
        check_memory(
            f"the Chebyshev operator of a graph of {n} nodes and {count} edges",
            # Values, column indices unless the graph lends its own, row pointers, degrees.
            count * (torch.finfo(self.dtype).bits // 8 + (edge_index.dtype != torch.int32) * 4)
            + 16 * n,
            "filter a region or a coarser graph, or use a machine with more memory",
        )
        lap = laplacian(edge_index, edge_weight, self.num_nodes, self.normalization, self.dtype)
        scale = 2.0 / self.lambda_max[0]
        values = lap.off_weight.mul_(scale)
        # Edges beyond 2^31 need 64-bit indices; torch's CSR products are several times
        # slower with them on few channels (docs/benchmarks.md), so 32 bits where they fit.
        index_dtype = torch.int32 if max(self.num_nodes, values.numel()) < 2**31 else torch.int64
        crow = torch.zeros(self.num_nodes + 1, dtype=index_dtype)
        torch.cumsum(torch.bincount(lap.row, minlength=self.num_nodes), 0, out=crow[1:])
        self.off_diagonal = _csr_tensor(crow, lap.col.to(index_dtype), values, self.num_nodes)
        # The 'sym' diagonal is 1 everywhere: one number.
        diagonal = lap.diagonal.mul_(scale).sub_(1.0)
        self.diagonal = (2.0 / self.lambda_max[0] - 1.0) if self.normalization else diagonal
        self.symmetric = True

    def _build_csr(self, edge_index: Tensor, edge_weight: Optional[Tensor], batch) -> None:
        n = self.num_nodes
        if self.device.type == "cpu":
            nnz = edge_index.size(1) + n
            # The rescaled edge list (int64 pairs, weights) and the CSR matrices built from it.
            check_memory(
                f"the Chebyshev operator of a graph of {n} nodes and {edge_index.size(1)} edges",
                nnz * (16 + 3 * torch.finfo(self.dtype).bits // 8 + 8),
                "filter a region or a coarser graph, or use a machine with more memory",
            )
        ei = edge_index.to(self.device)
        ew = None if edge_weight is None else edge_weight.detach().to(self.device)
        b = None if batch is None else batch.to(self.device)
        ei, w = rescaled_laplacian(ei, ew, n, self.normalization, self.lambda_max, self.dtype, b)
        matrix, matrix_t = _csr_and_transpose(ei[1], ei[0], w, n)
        if _nearly_equal(matrix, matrix_t):
            self.symmetric = True
            matrix_t = matrix
        self.matrix, self.matrix_t = matrix, matrix_t

    def __getstate__(self):
        # Sparse CSR tensors cannot be pickled or deep-copied: their parts can.
        return {
            k: ("csr", v.crow_indices(), v.col_indices(), v.values(), v.size(0))
            if isinstance(v, Tensor) and v.layout == torch.sparse_csr
            else v
            for k, v in self.__dict__.items()
        }

    def __setstate__(self, state):
        for k, v in state.items():
            if isinstance(v, tuple) and len(v) == 5 and v[0] == "csr":
                v = _csr_tensor(*v[1:])
            self.__dict__[k] = v
        if self.__dict__.get("matrix_t") is not None and self.symmetric:
            self.matrix_t = self.matrix  # one matrix again, not two copies

    def __getattr__(self, name):
        # The whole matrix of a split operator, for inspection only (the products use the
        # split form): built on first access.
        if name in ("matrix", "matrix_t") and "off_diagonal" in self.__dict__:
            self.matrix = self.matrix_t = _with_diagonal(self.off_diagonal, self.diagonal)
            return self.matrix
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # Products ---------------------------------------------------------------------------

    def apply(
        self,
        x: Tensor,
        transpose: bool = False,
        *,
        alpha: float = 1.0,
        out: Optional[Tensor] = None,
    ) -> Tensor:
        """:math:`\\alpha \\tilde{L} x` (or :math:`\\alpha \\tilde{L}^\\top x`) of a 2-D
        :obj:`x` [N, C], written into :obj:`out` (a contiguous [N, C] tensor other than x) if
        given: the split layout writes it in place, the csr layout copies its product there."""
        if self.diagonal is None:
            y = _mm(self.matrix_t if transpose else self.matrix, x)
            if alpha != 1.0:
                y.mul_(alpha)
            return y if out is None else out.copy_(y)
        d, a = self.diagonal, self.off_diagonal
        if out is None:
            if isinstance(d, float):
                return torch.addmm(x, a, x, beta=alpha * d, alpha=alpha)
            return torch.addmm(x * (alpha * d).unsqueeze(1), a, x, alpha=alpha)
        scale = alpha * d if isinstance(d, float) else (alpha * d).unsqueeze(1)
        return torch.mul(x, scale, out=out).addmm_(a, x, alpha=alpha)

    def step(
        self, x: Tensor, previous: Tensor, transpose: bool = False, *, out: Optional[Tensor] = None
    ) -> Tensor:
        """:math:`2 \\tilde{L} x - previous`, the step of the Chebyshev recursion, in one
        product (no stored copy of :math:`2 \\tilde{L}`), written into :obj:`out` as
        :meth:`apply` does."""
        if self.diagonal is None:
            y = _mm2(self.matrix_t if transpose else self.matrix, x, previous)
            return y if out is None else out.copy_(y)
        d = self.diagonal
        # previous - 2 D x, then 2 A x - (previous - 2 D x) added in place by the product.
        if isinstance(d, float):
            rest = torch.sub(previous, x, alpha=2.0 * d, out=out)
        else:
            rest = torch.addcmul(previous, d.unsqueeze(1), x, value=-2.0, out=out)
        return rest.addmm_(self.off_diagonal, x, beta=-1.0, alpha=2.0)


def check_graph_size(edge_index: Tensor, num_nodes: Optional[int]) -> int:
    """The node count of a graph (:obj:`num_nodes`, else the largest index plus one), refused
    if :obj:`edge_index` refers to nodes beyond it, or if it is a PyG
    :class:`~torch_geometric.EdgeIndex` of another size."""
    hint = (
        "features must have one row per node of the graph (graph.num_nodes) along their node "
        "dimension (-2): those of the full sphere go with the full sphere's graph, those of a "
        "region or a coarser level with that region's or level's graph"
    )
    size = edge_index.sparse_size(0) if callable(getattr(edge_index, "sparse_size", None)) else None
    if size is not None and num_nodes is not None and size != num_nodes:
        raise ValueError(
            f"edge_index belongs to a graph of {size} nodes but the features have {num_nodes}: "
            f"{hint}"
        )
    largest = int(edge_index.max()) if edge_index.numel() > 0 else -1
    if num_nodes is None:
        return largest + 1 if size is None else size
    if largest >= num_nodes:
        raise ValueError(
            f"edge_index refers to node {largest} but the graph has {num_nodes} nodes: {hint}"
        )
    return int(num_nodes)


def lambda_max_values(lambda_max: LambdaMax) -> Tuple[float, ...]:
    """The value(s) of :obj:`lambda_max` as a tuple of floats, checked positive and finite; one
    value when all are equal."""
    if isinstance(lambda_max, Tensor):
        values = tuple(float(v) for v in lambda_max.detach().reshape(-1).tolist())
    elif isinstance(lambda_max, (list, tuple)):
        values = tuple(float(v) for v in lambda_max)
    else:
        values = (float(lambda_max),)
    if len(values) == 0 or not all(math.isfinite(v) and v > 0 for v in values):
        hint = " (a graph without edges has lambda_max 0: use K=1 there)" if 0.0 in values else ""
        raise ValueError(f"lambda_max must be positive and finite, got {values}{hint}")
    if len(set(values)) == 1:  # one value for all graphs: no need for `batch`
        values = values[:1]
    return values


def _in_csr_order(edge_index: Tensor, num_nodes: int) -> bool:
    """Whether the edges are sorted by source node, then by target, without duplicates (one
    pass, by blocks)."""
    previous = -1
    for e0 in range(0, edge_index.size(1), EDGE_BLOCK):
        block = edge_index[:, e0 : e0 + EDGE_BLOCK]
        key = block[0].long() * num_nodes + block[1].long()
        if int(key[0]) <= previous or not bool((key[1:] > key[:-1]).all()):
            return False
        previous = int(key[-1])
    return True


def _symmetric_weights(edge_index: Tensor, edge_weight: Optional[Tensor], num_nodes: int) -> bool:
    """Whether :math:`W = W^\\top` (to float32 rounding), for a graph without duplicate edges.

    A randomised test (Freivalds): :math:`W v` and :math:`W^\\top v` for a random :math:`v`,
    accumulated in float64 by blocks of edges (no transpose, no edge-sized temporaries). An
    asymmetric :math:`W` passes only if :math:`(W - W^\\top) v` vanishes, which has
    probability zero, or if its asymmetry is within rounding."""
    row_all, col_all = edge_index[0], edge_index[1]
    if bool((row_all == col_all).any()):
        return False  # a self loop is not an off-diagonal entry: the general layout
    v = torch.randn(num_nodes, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    wv = torch.zeros(num_nodes, dtype=torch.float64)
    wtv = torch.zeros(num_nodes, dtype=torch.float64)
    bound = torch.zeros(num_nodes, dtype=torch.float64)
    for e0 in range(0, edge_index.size(1), EDGE_BLOCK):
        e = slice(e0, e0 + EDGE_BLOCK)
        row, col = row_all[e].long(), col_all[e].long()
        w = (
            torch.ones(row.numel(), dtype=torch.float64)
            if edge_weight is None
            else edge_weight[e].detach().double()
        )
        wv.index_add_(0, row, w * v[col])
        wtv.index_add_(0, col, w * v[row])
        bound.index_add_(0, row, w.abs() * v[col].abs())
    return bool(((wv - wtv).abs() <= 8 * torch.finfo(torch.float32).eps * bound).all())


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


# On CPU, the CSR 'sum' reduction kernel wins from about 32 columns, the generic product below
# it (benchmarks/bench_bandwidth.py).
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
