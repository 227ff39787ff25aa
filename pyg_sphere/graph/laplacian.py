"""Spectral bound of graph Laplacians, for the rescaling of Chebyshev filters."""

from typing import Optional

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


def laplacian_matrix(
    edge_index: Tensor,
    edge_weight: Optional[Tensor],
    num_nodes: int,
    normalization: Optional[str] = "sym",
) -> sp.csr_matrix:
    """Returns the graph Laplacian as a scipy CSR matrix (float64).

    :obj:`normalization` is :obj:`None` (:math:`L = D - W`), :obj:`'sym'`
    (:math:`L = I - D^{-1/2} W D^{-1/2}`) or :obj:`'rw'` (:math:`L = I - D^{-1} W`), as in
    :func:`torch_geometric.utils.get_laplacian`. Isolated nodes get a zero row.
    """
    if normalization not in (None, "sym", "rw"):
        raise ValueError(f"normalization must be None, 'sym' or 'rw', got {normalization!r}")
    row, col = edge_index.detach().cpu().numpy()
    weight = (
        np.ones(row.shape[0])
        if edge_weight is None
        else edge_weight.detach().cpu().double().numpy()
    )
    adj = sp.csr_matrix((weight, (row, col)), shape=(num_nodes, num_nodes))
    deg = np.asarray(adj.sum(axis=1)).ravel()
    if normalization is None:
        return (sp.diags(deg) - adj).tocsr()
    with np.errstate(divide="ignore"):
        scale = deg ** (-0.5 if normalization == "sym" else -1.0)
    scale[~np.isfinite(scale)] = 0.0
    if normalization == "sym":
        norm_adj = sp.diags(scale) @ adj @ sp.diags(scale)
    else:
        norm_adj = sp.diags(scale) @ adj
    return (sp.diags((deg > 0).astype(float)) - norm_adj).tocsr()


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
    if normalization not in (None, "sym", "rw"):
        raise ValueError(f"normalization must be None, 'sym' or 'rw', got {normalization!r}")
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
    if num_nodes == 0:
        return 0.0
    degree, squares, adjacency = _adjacency(edge_index, edge_weight, num_nodes, normalization)
    diagonal = degree if normalization is None else (degree > 0).astype(np.float64)
    if num_nodes <= _DENSE_NODES:
        lap = np.diag(diagonal) - adjacency.toarray()
        value = float(np.linalg.eigvalsh(lap).max())
    else:
        value = max(
            _lanczos_max(lambda v: diagonal * v - adjacency @ v, start)
            for start in _start_vectors(degree, squares)
        )
    return float(LAMBDA_MAX_MARGIN * value)


def _adjacency(edge_index, edge_weight, num_nodes, normalization):
    """Weighted degrees [N], sums of squared (normalized) weights [N] and the (normalized, for
    'sym'/'rw') adjacency as a float64 scipy CSR matrix."""
    row, col = edge_index.detach().cpu().numpy()
    weight = (
        np.ones(row.shape[0])
        if edge_weight is None
        else edge_weight.detach().cpu().to(torch.float64).numpy()
    )
    loops = row == col
    if loops.any():
        row, col, weight = row[~loops], col[~loops], weight[~loops]
    degree = np.bincount(row, weights=weight, minlength=num_nodes)
    if normalization is not None:
        with np.errstate(divide="ignore"):
            inv = np.where(degree > 0, degree, np.inf) ** -0.5
        weight = inv[row] * weight * inv[col]
    squares = np.bincount(row, weights=weight * weight, minlength=num_nodes)
    if row.size > 1 and not (row[1:] >= row[:-1]).all():
        order = np.argsort(row, kind="stable")
        row, col, weight = row[order], col[order], weight[order]
    indptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=num_nodes), out=indptr[1:])
    # Already in CSR order: no sort, and scipy's product is fast and multi-type.
    adjacency = sp.csr_matrix((weight, col, indptr), shape=(num_nodes, num_nodes))
    return degree, squares, adjacency


def _start_vectors(degree: np.ndarray, squares: np.ndarray) -> list:
    """The two start vectors of the estimate: one that looks random but depends only on each
    node's neighbourhood (its weighted degree and the sum of its squared weights), hence not
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
