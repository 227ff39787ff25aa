from typing import Optional, Union

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from ..._validate import check_choice, check_levels
from .functional import healpix_pool


class HealpixPool(torch.nn.Module):
    r"""Pooling of nested HEALPix maps by :math:`4^{\text{levels}}`: each pixel of the coarser
    map (:math:`n_\text{side} / 2^\text{levels}`) takes the maximum or the mean of its children
    (the module form of :func:`~pyg_sphere.nn.pool.healpix_pool`).

    In NESTED ordering the children of a pixel are consecutive, so pooling is a reshape, for
    full-sphere maps, for regions closed under the hierarchy (see
    :func:`pyg_sphere.close_hierarchy`) and for PyG batches of such graphs (each graph is
    pooled separately). Average pooling equals :func:`healpy.ud_grade` with
    :obj:`order_in='NEST'`. The coarser graph, for the next convolution, is
    :func:`~pyg_sphere.nn.pool.healpix_pool_graph` (graphs memoised by their parameters:
    nothing is rebuilt from one step to the next); :func:`~pyg_sphere.nn.pool.healpix_pool_data`
    pools a whole :class:`~torch_geometric.data.Data` or :class:`~torch_geometric.data.Batch`.

    Args:
        levels (int, optional): Number of nside halvings. (default: :obj:`1`)
        reduce (str, optional): :obj:`"max"` or :obj:`"mean"`. (default: :obj:`"max"`)

    Shapes:
        - **input:** node features :math:`(N, F)` or :math:`(B, N, F)` (the node dimension is
          -2), the graph of :math:`N` nodes *(optional, to check that the features fit it)*
        - **output:** node features :math:`(N / 4^l, F)` or :math:`(B, N / 4^l, F)`

    Example::

        >>> import torch
        >>> from pyg_sphere import healpix_graph
        >>> from pyg_sphere.nn import HealpixPool
        >>> from pyg_sphere.nn.pool import healpix_pool_graph
        >>> graph = healpix_graph(nside=4)
        >>> x = torch.randn(8, graph.num_nodes, 3)
        >>> out = HealpixPool(reduce='max')(x, graph)
        >>> coarse = healpix_pool_graph(graph)
        >>> out.shape, coarse.nside, coarse.num_nodes
        (torch.Size([8, 48, 3]), 2, 48)
    """

    def __init__(self, levels: int = 1, reduce: str = "max"):
        super().__init__()
        if isinstance(levels, str):
            raise TypeError(
                f"HealpixPool takes (levels, reduce) like HealpixUnpool(levels, mode); got "
                f"levels={levels!r}: pass the reduction by keyword, HealpixPool(reduce={levels!r})"
            )
        self.levels = check_levels(levels, minimum=1)
        self.reduce = check_choice("reduce", reduce, ("max", "mean"))

    def forward(self, x: Tensor, graph: Optional[Union[Data, Batch]] = None) -> Tensor:
        """Pools :obj:`x` :math:`[N, F]` or :math:`[B, N, F]`; with :obj:`graph`, first checks
        that :obj:`x` lives on it and that its pixels are closed under the hierarchy."""
        return healpix_pool(x, self.levels, self.reduce, graph=graph)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(levels={self.levels}, reduce={self.reduce})"
