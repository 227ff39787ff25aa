"""Graph Laplacians: the one definition (:func:`laplacian`) that the convolutions, the
analysis tools and the spectral bound (:func:`estimate_lambda_max`) share."""

from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp
import torch
from scipy.linalg import eigvalsh_tridiagonal
from torch import Tensor

# The estimate is a Lanczos Ritz value theta (a lower bound of lambda_max) times this margin.
# After LANCZOS_STEPS steps from a random start, theta >= (1 - eps) lambda_max with
# probability >= 1 - 1.648 sqrt(N) exp(-(2m - 1) sqrt(eps)) (Kuczynski & Wozniakowski 1992,
# Theorem 4.2): for m = 100 and N up to 5e7 (nside 2048), eps = 0.67% at probability 99.9%,
# so theta * 1.01 lies in [1.003, 1.01] lambda_max. DeepSphere used eigsh and 2%.
LAMBDA_MAX_MARGIN = 1.01
LANCZOS_STEPS = 100
# Lanczos goes on past LANCZOS_STEPS until its value settles, up to this many steps.
MAX_LANCZOS_STEPS = 500
# Below this many nodes the spectrum is computed exactly (dense), in a few milliseconds.
_DENSE_NODES = 256


NORMALIZATIONS = (None, "sym", "rw")

# Edges per block where a pass over the edge list needs no autograd: keeps its temporaries in
# cache and bounded (a few MiB) on graphs of hundreds of millions of edges.
EDGE_BLOCK = 1 << 20


def check_normalization(normalization: Optional[str]) -> Optional[str]:
    """Returns :obj:`normalization` if it is one of :data:`NORMALIZATIONS`, else raises."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be 'sym', 'rw' or None, got {normalization!r}")
    return normalization


class Laplacian(NamedTuple):
    """A graph Laplacian as its off-diagonal entries and its diagonal:
    :math:`L_{ij}` = :obj:`off_weight[e]` for ``(i, j) = (row[e], col[e])`` and
    :math:`L_{ii}` = :obj:`diagonal[i]`. :obj:`row` and :obj:`col` are views of the graph's
    :obj:`edge_index` when it has no self loops (no copy)."""

    row: Tensor
    col: Tensor
    off_weight: Tensor
    diagonal: Tensor


def laplacian(
    edge_index: Tensor,
    edge_weight: Optional[Tensor],
    num_nodes: int,
    normalization: Optional[str] = "sym",
    dtype: torch.dtype = torch.float32,
) -> Laplacian:
    r"""The graph Laplacian of the message-passing convention: an edge ``(j, i)`` of weight
    :math:`w` is the entry :math:`L_{ij}`, as in :class:`torch_geometric.nn.ChebConv`.

    :obj:`normalization` is :obj:`None` (:math:`L = D - W`), :obj:`'sym'`
    (:math:`L = I - D^{-1/2} W D^{-1/2}`) or :obj:`'rw'` (:math:`L = I - D^{-1} W`), with
    :math:`D_{ii} = \sum_j w_{ij}` summed over the edges of source :math:`i` (the two agree
    on a symmetric graph). Self loops are left out, as :func:`torch_geometric.utils.
    get_laplacian` leaves them out for :class:`~torch_geometric.nn.ChebConv`, and the
    normalized Laplacians have 1 on the whole diagonal (isolated nodes included), as there.
    This is the one Laplacian of pyg_sphere: the convolutions, :func:`laplacian_matrix` and
    :func:`estimate_lambda_max` are built on it.

    Differentiable in :obj:`edge_weight`; when no gradient is needed, it is computed block by
    block, with no temporaries the size of the edge list besides the result.

    Args:
        edge_index (torch.Tensor): Edges :math:`[2, E]`, int64 or int32.
        edge_weight (torch.Tensor, optional): Weights :math:`[E]` (default: ones).
        num_nodes (int): Number of nodes :math:`N`.
        normalization (str, optional): :obj:`'sym'`, :obj:`'rw'` or :obj:`None`.
        dtype (torch.dtype): Floating-point type of the result.

    Returns:
        :class:`Laplacian` (:obj:`row`, :obj:`col`, :obj:`off_weight` :math:`[E']`,
        :obj:`diagonal` :math:`[N]`), :math:`E'` the edges that are not self loops.

    Example:
        >>> import torch
        >>> from pyg_sphere.graph import laplacian
        >>> edge_index = torch.tensor([[0, 1], [1, 0]])
        >>> lap = laplacian(edge_index, None, 2, normalization=None)
        >>> lap.off_weight.tolist(), lap.diagonal.tolist()
        ([-1.0, -1.0], [1.0, 1.0])
    """
    check_normalization(normalization)
    row, col = edge_index[0], edge_index[1]
    device = row.device
    weight = (
        torch.ones(row.numel(), dtype=dtype, device=device)
        if edge_weight is None
        else edge_weight.to(dtype)
    )
    loops = row == col
    if bool(loops.any()):
        keep = ~loops
        row, col, weight = row[keep], col[keep], weight[keep]
    degree = torch.zeros(num_nodes, dtype=dtype, device=device).index_add(0, row, weight)
    if normalization is None:
        return Laplacian(row, col, -weight, degree)
    inv = degree.pow(-0.5 if normalization == "sym" else -1.0)
    inv = inv.masked_fill(torch.isinf(inv), 0.0)
    diagonal = torch.ones_like(degree)
    if weight.requires_grad and torch.is_grad_enabled():
        off = inv[row] * weight * inv[col] if normalization == "sym" else inv[row] * weight
        return Laplacian(row, col, off.neg(), diagonal)
    off = torch.empty_like(weight)
    for e0 in range(0, off.numel(), EDGE_BLOCK):
        e = slice(e0, e0 + EDGE_BLOCK)
        torch.mul(inv[row[e]], weight[e], out=off[e])
        if normalization == "sym":
            off[e].mul_(inv[col[e]])
    return Laplacian(row, col, off.neg_(), diagonal)


def rescaled_laplacian(
    edge_index: Tensor,
    edge_weight: Optional[Tensor],
    num_nodes: int,
    normalization: Optional[str],
    lambda_max: Sequence[float],
    dtype: torch.dtype = torch.float32,
    batch: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    r"""The edges ``[2, E' + N]`` (int64, the diagonal last) and weights of
    :math:`	ilde{L} = 2L/\lambda_{\max} - I`, the operator of Chebyshev filters, in the
    message-passing convention of :func:`laplacian`; differentiable in :obj:`edge_weight`.

    :obj:`lambda_max` holds one value, or one per graph of a disjoint batch, picked for each
    node by :obj:`batch`.
    """
    lap = laplacian(edge_index, edge_weight, num_nodes, normalization, dtype)
    row, col = lap.row.long(), lap.col.long()  # PyG's message passing indexes with int64
    device = row.device
    if len(lambda_max) == 1:
        node_scale = torch.tensor(2.0 / lambda_max[0], dtype=dtype, device=device)
        edge_scale = node_scale
    else:
        if batch is None:
            raise ValueError(
                f"lambda_max holds {len(lambda_max)} values (one per graph): "
                f"pass the `batch` vector too, or a single float"
            )
        lam = torch.tensor(list(lambda_max), dtype=dtype, device=device)
        if int(batch.max()) >= lam.numel():
            raise ValueError(
                f"batch refers to graph {int(batch.max())} but lambda_max holds "
                f"only {lam.numel()} values"
            )
        node_scale = (2.0 / lam)[batch]
        edge_scale = node_scale[row]
    nodes = torch.arange(num_nodes, dtype=row.dtype, device=device)
    rescaled_index = torch.cat([torch.stack([row, col]), nodes.expand(2, -1)], dim=1)
    weight = torch.cat([edge_scale * lap.off_weight, node_scale * lap.diagonal - 1.0])
    return rescaled_index, weight


def laplacian_matrix(
    edge_index: Tensor,
    edge_weight: Optional[Tensor],
    num_nodes: int,
    normalization: Optional[str] = "sym",
) -> sp.csr_matrix:
    """Returns the :func:`laplacian` as a scipy CSR matrix (float64), for analysis (spectra,
    the equivariance measure), not for the filters.

    Example:
        >>> import pyg_sphere
        >>> from pyg_sphere.graph import laplacian_matrix
        >>> g = pyg_sphere.healpix_graph(2)
        >>> laplacian_matrix(g.edge_index, g.edge_weight, g.num_nodes).shape
        (48, 48)
    """
    with torch.no_grad():
        lap = laplacian(edge_index.cpu(), edge_weight, num_nodes, normalization, torch.float64)
    off = sp.csr_matrix(
        (lap.off_weight.cpu().numpy(), (lap.row.cpu().numpy(), lap.col.cpu().numpy())),
        shape=(num_nodes, num_nodes),
    )
    return (off + sp.diags(lap.diagonal.cpu().numpy())).tocsr()


def estimate_lambda_max(
    edge_index: Tensor,
    edge_weight: Optional[Tensor] = None,
    num_nodes: Optional[int] = None,
    normalization: Optional[str] = "sym",
) -> float:
    r"""Estimates the largest eigenvalue of a graph Laplacian from above, within about 1%.

    This is what Chebyshev filters need to map the spectrum onto :math:`[-1, 1]`
    (:math:`\tilde{L} = 2L/\lambda_{\max} - I`). The value is the largest Ritz value of
    :data:`LANCZOS_STEPS` (100) Lanczos steps, a lower bound of :math:`\lambda_{\max}`, times
    :data:`LAMBDA_MAX_MARGIN` (1.01). From a random start, 100 steps leave the Ritz value
    within 0.67% of :math:`\lambda_{\max}` with probability 99.9% for graphs of up to
    :math:`5 \cdot 10^7` nodes (Kuczyński & Woźniakowski, 1992), so the estimate lies between
    :math:`1.003\lambda_{\max}` and :math:`1.01\lambda_{\max}`; measured on HEALPix graphs
    (tests and ``docs/benchmarks.md``) it always did. Graphs of up to 256 nodes get the exact
    value times the margin.

    Lanczos runs twice, from a vector computed from each node's weighted degree and squared
    weights (not from its index) and from a seeded random vector, and keeps the larger value.
    The random start reaches the eigenvectors that a symmetric graph's structure cannot (a
    vector computed from the graph alone is unchanged by its symmetries, such as the quarter
    turns of a full HEALPix sphere). Each run goes on until its value settles, so the estimate
    does not depend on the order of the nodes (the same graph under a permutation gives the
    same value to rounding). The cost is twice 100 or more sparse products with
    the normalized adjacency matrix, built from the edge list without a copy of the indices
    when the list is sorted by source node (as :func:`~pyg_sphere.healpix_graph` returns it).
    Self loops are left out, as :class:`~pyg_sphere.nn.SphericalChebConv` leaves them out. The
    :obj:`'rw'` Laplacian has the spectrum of the :obj:`'sym'` one.

    Args:
        edge_index (torch.Tensor): Edges, shape :obj:`[2, E]` (symmetric graph).
        edge_weight (torch.Tensor, optional): Weights, shape :obj:`[E]`.
        num_nodes (int, optional): Number of nodes (default: inferred).
        normalization (str, optional): :obj:`None`, :obj:`'sym'` or :obj:`'rw'`.

    Example:
        >>> import pyg_sphere
        >>> g = pyg_sphere.healpix_graph(8, lambda_max=False)
        >>> lam = pyg_sphere.graph.estimate_lambda_max(g.edge_index, g.edge_weight, g.num_nodes)
        >>> 1.0 < lam <= 2.02
        True
    """
    check_normalization(normalization)
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
    if num_nodes == 0:
        return 0.0
    diagonal, sums, squares, adjacency = _adjacency(
        edge_index, edge_weight, num_nodes, normalization
    )
    if adjacency.nnz == 0:  # lambda_max 0 tells the filters that only K = 1 applies
        return 0.0
    if num_nodes <= _DENSE_NODES:
        lap = np.diag(diagonal) - adjacency.toarray()
        value = float(np.linalg.eigvalsh(lap).max())
    else:
        value = max(
            _lanczos_max(lambda v: diagonal * v - adjacency @ v, start)
            for start in _start_vectors(sums, squares)
        )
    return float(LAMBDA_MAX_MARGIN * value)


def _adjacency(edge_index, edge_weight, num_nodes, normalization):
    """Row sums [N] and sums of squares [N] of the (normalized) adjacency, and the adjacency
    itself as a float64 scipy CSR matrix: minus the off-diagonal part of :func:`laplacian`."""
    if normalization == "rw":  # the spectrum of the 'sym' Laplacian, which is symmetric
        normalization = "sym"
    with torch.no_grad():
        ew = None if edge_weight is None else edge_weight.detach().cpu()
        lap = laplacian(edge_index.detach().cpu(), ew, num_nodes, normalization, torch.float64)
    row, col = lap.row.numpy(), lap.col.numpy()
    weight = lap.off_weight.neg_().numpy()
    sums = np.bincount(row, weights=weight, minlength=num_nodes)
    squares = np.bincount(row, weights=weight * weight, minlength=num_nodes)
    if row.size > 1 and not (row[1:] >= row[:-1]).all():
        order = np.argsort(row, kind="stable")
        row, col, weight = row[order], col[order], weight[order]
    indptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=num_nodes), out=indptr[1:])
    # Already in CSR order: no sort, and scipy's product is fast and multi-type.
    adjacency = sp.csr_matrix((weight, col, indptr), shape=(num_nodes, num_nodes))
    return lap.diagonal.numpy(), sums, squares, adjacency


def _start_vectors(degree: np.ndarray, squares: np.ndarray) -> list:
    """The two start vectors of the estimate: one that looks random but depends only on each
    node's neighbourhood (the sums of its weights and of their squares), hence not
    on the node order; and a seeded random one. A vector computed from the graph alone is
    unchanged by the graph's symmetries (the quarter turns and the mirror of a full HEALPix
    sphere), so the Krylov space it spans misses every eigenvector that they change: the
    random start reaches those."""
    structural = np.sin(1e4 * degree + 3e3 * squares) + np.cos(7e3 * squares + 1e3 * degree)
    random = np.random.default_rng(0).standard_normal(degree.size)
    if structural.std() < 1e-6 * (np.abs(structural).mean() + 1e-300):
        return [random]  # every node looks the same (a regular graph)
    return [structural, random]


def _lanczos_max(
    apply, v0: np.ndarray, steps: int = LANCZOS_STEPS, max_steps: int = MAX_LANCZOS_STEPS
) -> float:
    """The largest Ritz value of at least :obj:`steps` Lanczos steps (three-term recurrence:
    the extreme Ritz values need no reorthogonalization), a lower bound of the largest
    eigenvalue. Past :obj:`steps`, it goes on (up to :obj:`max_steps`) until 20 more steps
    change the value by less than 1e-8: a converged value no longer carries the rounding
    errors that differ from one node order to another."""
    q = v0 / np.linalg.norm(v0)
    q_prev = np.zeros_like(q)
    alphas, betas = [], []
    beta, value, checked = 0.0, -np.inf, -np.inf
    for step in range(1, min(max_steps, q.size) + 1):
        w = apply(q)
        if beta:
            w -= beta * q_prev
        alpha = float(q @ w)
        w -= alpha * q
        alphas.append(alpha)
        beta = float(np.linalg.norm(w))
        if beta <= 1e-12 * max(abs(alpha), 1.0):  # an invariant subspace: the values are exact
            break
        if step >= steps and step % 20 == 0:
            value = _largest_ritz_value(alphas, betas)
            if value - checked <= 1e-8 * abs(value):
                return value
            checked = value
        betas.append(beta)
        w /= beta
        q_prev, q = q, w
    return _largest_ritz_value(alphas, betas)


def _largest_ritz_value(alphas, betas) -> float:
    n = len(alphas)
    return float(
        eigvalsh_tridiagonal(
            np.array(alphas), np.array(betas[: n - 1]), select="i", select_range=(n - 1, n - 1)
        )[0]
    )
