from typing import Optional

import torch
from torch import Tensor

from pyg_sphere.nn.pool import _hierarchy as H


class HealpixUnpool(torch.nn.Module):
    r"""Unpooling of nested HEALPix maps by :math:`4^{\text{levels}}`, the inverse of
    :class:`HealpixPool` (e.g. in the decoder of a U-Net).

    :obj:`mode="nearest"` copies each pixel to its :math:`4^l` children (as
    :func:`healpy.ud_grade` does when raising the resolution of a NESTED map);
    :obj:`mode="max"` puts each value back where :class:`HealpixPool` found the maximum (the
    :obj:`indices` it returns with :obj:`return_indices=True`) and zeros elsewhere. Works on the
    same layouts as :class:`HealpixPool` (full maps, closed regions, PyG batches): the children
    of the rows of :obj:`x` come out as consecutive rows, in the order of the finer graph that
    was pooled.

    Args:
        levels (int, optional): number of nside doublings. (default: :obj:`1`)
        mode (str, optional): :obj:`"nearest"` or :obj:`"max"`. (default: :obj:`"nearest"`)

    Shapes:
        - **input:** node features :math:`(N, F)` or :math:`(B, N, F)`, indices of the same
          shape (:obj:`mode="max"`)
        - **output:** node features :math:`(4^l N, F)` or :math:`(B, 4^l N, F)`

    Example::

        >>> import torch
        >>> from pyg_sphere.nn import HealpixPool, HealpixUnpool
        >>> x = torch.randn(2, 192, 3)  # two full-sphere nside-4 maps, NESTED
        >>> pooled, indices = HealpixPool('max')(x, return_indices=True)
        >>> up = HealpixUnpool(mode='max')(pooled, indices)
        >>> up.shape, torch.equal(up.unflatten(1, (48, 4)).sum(2), pooled)  # one value per group
        (torch.Size([2, 192, 3]), True)
    """
    def __init__(self, levels: int = 1, mode: str = 'nearest'):
        super().__init__()
        if mode not in ('nearest', 'max'):
            raise ValueError(f"mode must be 'nearest' or 'max', got {mode!r}")
        self.levels = H.check_levels(levels)
        self.mode = mode

    def forward(self, x: Tensor, indices: Optional[Tensor] = None) -> Tensor:
        """Unpools :obj:`x` [N, F] or [B, N, F]; :obj:`indices` (same shape) are the arg-max
        offsets returned by :class:`HealpixPool` and are required by :obj:`mode="max"`."""
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise ValueError("x must be a tensor [N, F] or [B, N, F] (node dimension -2)")
        group = 4**self.levels
        if self.mode == 'nearest':
            if indices is not None:
                raise ValueError("indices are only used by mode='max'")
            shape = x.shape[:-1] + (group, x.size(-1))
            return x.unsqueeze(-2).expand(shape).flatten(-3, -2)
        if indices is None:
            raise ValueError("mode='max' needs the indices returned by "
                             "HealpixPool('max', ...)(..., return_indices=True)")
        if indices.shape != x.shape:
            raise ValueError(f"indices must have the shape of x, got {tuple(indices.shape)} "
                             f"and {tuple(x.shape)}")
        out = x.new_zeros(x.shape[:-1] + (group, x.size(-1)))
        out = out.scatter(-2, indices.unsqueeze(-2), x.unsqueeze(-2))
        return out.flatten(-3, -2)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(levels={self.levels}, mode={self.mode})'
