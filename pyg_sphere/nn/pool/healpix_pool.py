from typing import Optional

import torch
from torch import Tensor
from torch_geometric.data import Data

from pyg_sphere.nn.pool import _hierarchy as H


class HealpixPool(torch.nn.Module):
    r"""Pooling of nested HEALPix maps by :math:`4^{\text{levels}}`: each pixel of the coarser
    map (:math:`n_\text{side} / 2^\text{levels}`) takes the maximum or mean of its children.

    In NESTED ordering the children of a pixel are consecutive, so pooling is a reshape, for
    full-sphere maps, for regions closed under the hierarchy (see
    :func:`pyg_sphere.close_hierarchy`) and for PyG batches of such graphs (each graph is pooled
    separately). Average pooling equals :func:`healpy.ud_grade` with :obj:`order_in='NEST'`.

    Three call forms:

    - ``x, graph = pool(x, graph)``: :obj:`graph` is a graph from
      :func:`pyg_sphere.healpix_graph` (or a PyG :class:`~torch_geometric.data.Batch` of
      them); the returned graph is the memoised coarser graph
      (:func:`pyg_sphere.coarsen_graph`; for a batch, the batch of coarse graphs with its
      :obj:`batch` and :obj:`ptr`), ready for the next convolution: nothing is rebuilt from
      one step to the next.
    - ``data = pool(data)``: the same on a :class:`~torch_geometric.data.Data` or
      :class:`~torch_geometric.data.Batch` holding :obj:`x`, like
      :func:`torch_geometric.nn.pool.max_pool`. The output holds the coarse graph, the pooled
      :obj:`x` and the graph-level attributes of :obj:`data` (e.g. a label :obj:`y`); other
      node-level attributes are dropped.
    - ``x = pool(x)``: plain tensors whose node dimension holds whole nested groups (e.g.
      full-sphere maps); nothing is checked but the divisibility.

    With :obj:`return_indices=True` each form also returns the arg-max of every output value
    among its :math:`4^l` children (an offset in :math:`[0, 4^l)`, same shape as the pooled
    features), for max-unpooling with :class:`HealpixUnpool`.

    Args:
        reduce (str, optional): :obj:`"max"` or :obj:`"mean"`. (default: :obj:`"max"`)
        levels (int, optional): number of nside halvings. (default: :obj:`1`)

    Shapes:
        - **input:** node features :math:`(N, F)` or :math:`(B, N, F)` (the node
          dimension is -2), graph with :math:`N` nodes *(optional)*
        - **output:** node features :math:`(N / 4^l, F)` or :math:`(B, N / 4^l, F)`,
          coarse graph, indices like the features *(optional)*

    Example::

        >>> import torch
        >>> from pyg_sphere import healpix_graph
        >>> from pyg_sphere.nn import HealpixPool
        >>> graph = healpix_graph(nside=4)
        >>> x = torch.randn(8, graph.num_nodes, 3)
        >>> out, coarse = HealpixPool('max')(x, graph)
        >>> out.shape, coarse.nside, coarse.num_nodes
        (torch.Size([8, 48, 3]), 2, 48)
    """
    def __init__(self, reduce: str = 'max', levels: int = 1):
        super().__init__()
        if reduce not in ('max', 'mean'):
            raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
        self.reduce = reduce
        self.levels = H.check_levels(levels)

    def forward(self, x, graph: Optional[Data] = None, *, return_indices: bool = False):
        """Pools :obj:`x` (a tensor, or a Data/Batch holding :obj:`x`); see the class
        documentation for the call forms and what they return."""
        if return_indices and self.reduce != 'max':
            raise ValueError("return_indices=True needs reduce='max'")
        if isinstance(x, Data):
            if graph is not None:
                raise TypeError("pass either pool(data) or pool(x, graph), not both")
            data = x
            if not isinstance(data.x, Tensor):
                raise ValueError("pool(data) needs node features data.x")
            out, coarse, indices = self._pool(data.x, data, return_indices)
            out = H.with_features(coarse, data, out)
            return (out, indices) if return_indices else out
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise ValueError("x must be a tensor [N, F] or [B, N, F] (node dimension -2)")
        if graph is None:
            H.check_divisible(x.size(-2), self.levels)
            out, indices = H.pool_features(x, self.levels, self.reduce, return_indices)
            return (out, indices) if return_indices else out
        out, coarse, indices = self._pool(x, graph, return_indices)
        return (out, coarse, indices) if return_indices else (out, coarse)

    def _pool(self, x: Tensor, graph, return_indices: bool):
        H.check_graph(graph, x.size(-2), self.levels, shared_maps=x.dim() > 2)
        out, indices = H.pool_features(x, self.levels, self.reduce, return_indices)
        return out, H.coarse_graph(graph, self.levels, x.device), indices

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(reduce={self.reduce}, levels={self.levels})'
