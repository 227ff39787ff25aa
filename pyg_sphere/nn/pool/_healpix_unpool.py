from typing import Optional

import torch
from torch import Tensor

from ..._validate import check_choice, check_levels
from .functional import healpix_max_unpool, healpix_unpool


class HealpixUnpool(torch.nn.Module):
    r"""Unpooling of nested HEALPix maps by :math:`4^{\text{levels}}`, the inverse of
    :class:`HealpixPool` (e.g. in the decoder of a U-Net).

    :obj:`mode="nearest"` copies each pixel to its :math:`4^l` children (as
    :func:`healpy.ud_grade` does when raising the resolution of a NESTED map;
    :func:`~pyg_sphere.nn.pool.healpix_unpool`); :obj:`mode="max"` puts each value back where
    max pooling found the maximum (the :obj:`indices` of
    :func:`~pyg_sphere.nn.pool.healpix_max_pool_with_indices`) and zeros elsewhere. Works on the
    same layouts as :class:`HealpixPool` (full maps, closed regions, PyG batches): the children
    of the rows of :obj:`x` come out as consecutive rows, in the order of the finer graph that
    was pooled.

    Args:
        levels (int, optional): Number of nside doublings. (default: :obj:`1`)
        mode (str, optional): :obj:`"nearest"` or :obj:`"max"`. (default: :obj:`"nearest"`)

    Shapes:
        - **input:** node features :math:`(N, F)` or :math:`(B, N, F)`, indices of the same
          shape (:obj:`mode="max"`)
        - **output:** node features :math:`(4^l N, F)` or :math:`(B, 4^l N, F)`

    Example::

        >>> import torch
        >>> from pyg_sphere.nn import HealpixUnpool
        >>> from pyg_sphere.nn.pool import healpix_max_pool_with_indices
        >>> x = torch.randn(2, 192, 3)  # two full-sphere nside-4 maps, NESTED
        >>> pooled, indices = healpix_max_pool_with_indices(x)
        >>> up = HealpixUnpool(mode='max')(pooled, indices)
        >>> up.shape, torch.equal(up.unflatten(1, (48, 4)).sum(2), pooled)  # one value per group
        (torch.Size([2, 192, 3]), True)
    """

    def __init__(self, levels: int = 1, mode: str = "nearest"):
        super().__init__()
        self.levels = check_levels(levels, minimum=1)
        self.mode = check_choice("mode", mode, ("nearest", "max"))

    def forward(self, x: Tensor, indices: Optional[Tensor] = None) -> Tensor:
        """Unpools :obj:`x` :math:`[N, F]` or :math:`[B, N, F]`; :obj:`indices` (same shape)
        are required by :obj:`mode="max"` and refused by :obj:`mode="nearest"`."""
        if self.mode == "nearest":
            if indices is not None:
                raise ValueError("indices are only used by mode='max'")
            return healpix_unpool(x, self.levels)
        if indices is None:
            raise ValueError(
                "mode='max' needs the indices returned by "
                "pyg_sphere.nn.pool.healpix_max_pool_with_indices"
            )
        return healpix_max_unpool(x, indices, self.levels)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(levels={self.levels}, mode={self.mode})"
