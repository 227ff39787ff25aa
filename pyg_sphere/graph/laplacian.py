"""Spectral bound of graph Laplacians, for the rescaling of Chebyshev filters."""

from typing import Optional

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh
from torch import Tensor

# DeepSphere inflates the estimated largest eigenvalue by 2% so that the rescaled spectrum
# 2 L / lambda_max - I surely lies in [-1, 1], where Chebyshev polynomials are bounded.
LAMBDA_MAX_MARGIN = 1.02


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
    r"""Estimates the largest eigenvalue of a graph Laplacian, with a 2% safety margin.

    This is what Chebyshev filters need to map the spectrum onto :math:`[-1, 1]`
    (:math:`\tilde{L} = 2L/\lambda_{\max} - I`). As in DeepSphere, the value is
    :obj:`scipy.sparse.linalg.eigsh`'s estimate times 1.02. The :obj:`'rw'` Laplacian has the
    spectrum of the :obj:`'sym'` one.

    Args:
        edge_index (torch.Tensor): Edges, shape :obj:`[2, E]` (symmetric graph).
        edge_weight (torch.Tensor, optional): Weights, shape :obj:`[E]`.
        num_nodes (int, optional): Number of nodes (default: inferred).
        normalization (str, optional): :obj:`None`, :obj:`'sym'` or :obj:`'rw'`.

    Example:
        >>> import pyg_sphere
        >>> g = pyg_sphere.healpix_graph(8, lambda_max=False)
        >>> lam = pyg_sphere.graph.estimate_lambda_max(g.edge_index, g.edge_weight, g.num_nodes)
        >>> 1.0 < lam <= 2.04
        True
    """
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
    if normalization == "rw":
        normalization = "sym"
    lap = laplacian_matrix(edge_index, edge_weight, num_nodes, normalization)
    if num_nodes < 3 or lap.nnz == 0:
        value = np.linalg.eigvalsh(lap.toarray()).max() if num_nodes else 0.0
    else:
        # The starting vector is fixed so that the estimate is reproducible.
        v0 = np.random.default_rng(0).standard_normal(num_nodes)
        value = eigsh(lap, k=1, which="LA", tol=1e-4, v0=v0, return_eigenvectors=False)[0]
    return float(LAMBDA_MAX_MARGIN * value)
