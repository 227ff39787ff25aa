from typing import Optional, Sequence

import torch
from torch import Tensor

from ..._validate import PixelsLike
from ..conv import SphericalChebConv
from ..pool import HealpixPool, HealpixUnpool
from ._base import SphereModel


class SphericalUNet(SphereModel):
    r"""An encoder-decoder with skip connections on HEALPix maps or regions, for per-pixel
    prediction (segmentation, or regression of maps), in the style of U-Net
    (Ronneberger et al., 2015) with the graph convolutions of DeepSphere.

    The encoder has :obj:`len(channels)` levels: level :math:`\ell` applies a
    :class:`~pyg_sphere.nn.SphericalChebConv` to :obj:`channels[l]` features, batch
    normalization and ReLU, then (except at the last, coarsest level) a
    :class:`~pyg_sphere.nn.HealpixPool` by 4. The decoder goes back up: at each level a
    :class:`~pyg_sphere.nn.HealpixUnpool`, concatenation with the encoder's features of that
    level (skip connection), and the same convolution block to :obj:`channels[l]`. Unpooling
    copies each pixel to its 4 children (as :func:`healpy.ud_grade` does); the skip connection
    brings back the detail. A final
    per-pixel linear layer gives :obj:`out_channels` values per pixel.

    The graphs are built once from :func:`pyg_sphere.healpix_hierarchy` and kept outside the
    state dict, as in :class:`~pyg_sphere.nn.DeepSphere`, whose configuration and
    checkpoint helpers (:attr:`config`, :meth:`from_config`, :meth:`load_checkpoint_state`,
    :meth:`check_data`) this model shares.

    Args:
        in_channels (int): Features per pixel.
        out_channels (int): Outputs per pixel (classes or regressed fields).
        nside (int): HEALPix resolution of the input maps.
        pixels (array or torch.Tensor, optional): Nested ids of the input region, closed under
            :obj:`len(channels) - 1` poolings. (default: :obj:`None`, the full sphere)
        channels (sequence of int): Features of each level, finest first; at least two.
            (default: :obj:`(16, 32, 64)`)
        K (int): Chebyshev coefficients per filter. (default: :obj:`5`)
        num_neighbors (int): Neighbours per pixel of the graphs. (default: :obj:`8`)
        pool (str): :obj:`'max'` or :obj:`'mean'` pooling. (default: :obj:`'max'`)
        batch_norm (bool): Batch normalization after each convolution. (default: :obj:`True`)
        dropout (float): Dropout probability at the coarsest level. (default: :obj:`0.0`)

    Shapes:
        - **input:** maps :math:`(B, N, F_{in})`, or a PyG batch :math:`(B \cdot N, F_{in})`
          with its batch vector, or one map :math:`(N, F_{in})`
        - **output:** :math:`(B, N, F_{out})`, or :math:`(B \cdot N, F_{out})` /
          :math:`(N, F_{out})` for 2-D inputs

    Example::

        >>> import torch
        >>> from pyg_sphere.nn import SphericalUNet
        >>> model = SphericalUNet(2, 3, nside=8, channels=(8, 16))
        >>> model(torch.randn(4, 768, 2)).shape
        torch.Size([4, 768, 3])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        nside: int,
        *,
        pixels: PixelsLike = None,
        channels: Sequence[int] = (16, 32, 64),
        K: int = 5,
        num_neighbors: int = 8,
        pool: str = "max",
        batch_norm: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        channels = self._check_arguments(in_channels, out_channels, channels, K, pool, dropout, 2)
        levels = len(channels) - 1
        pixels = self._build_hierarchy(
            nside, levels, pixels, num_neighbors, f"len(channels) - 1 = {levels}"
        )
        self._config = dict(
            in_channels=in_channels,
            out_channels=out_channels,
            nside=self.nside,
            pixels=pixels,
            channels=channels,
            K=K,
            num_neighbors=num_neighbors,
            pool=pool,
            batch_norm=bool(batch_norm),
            dropout=float(dropout),
        )
        self.channels = channels

        def block(c_in, c_out):
            return torch.nn.ModuleDict(
                {
                    "conv": SphericalChebConv(c_in, c_out, K, bias=not batch_norm),
                    "norm": torch.nn.BatchNorm1d(c_out) if batch_norm else torch.nn.Identity(),
                }
            )

        sizes = (in_channels,) + channels
        self.encoder = torch.nn.ModuleList([block(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
        # Decoder level l (coarse to fine): upsampled channels[l + 1] + skip channels[l].
        self.decoder = torch.nn.ModuleList(
            [
                block(channels[level + 1] + channels[level], channels[level])
                for level in range(levels)
            ]
        )
        self.pool = HealpixPool(reduce=pool)
        self.unpool = HealpixUnpool(mode="nearest")
        self.dropout = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(channels[0], out_channels)
        self._check_inputs_once()

    def reset_parameters(self):
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def _block(self, block: torch.nn.ModuleDict, h: Tensor, level: int) -> Tensor:
        h = self._conv(block["conv"], h, level)
        return self._per_pixel(block["norm"], h).relu()

    def forward(self, x: Tensor, batch: Optional[Tensor] = None) -> Tensor:
        """Per-pixel outputs.

        Args:
            x (torch.Tensor): Maps :math:`[B, N, F_{in}]`, or :math:`[N_{total}, F_{in}]` (a
                PyG batch of maps on the model's region, or one map without :obj:`batch`).
            batch (torch.Tensor, optional): The PyG batch vector :math:`[N_{total}]`.

        Returns:
            torch.Tensor: :math:`[B, N, F_{out}]`, or :math:`[N_{total}, F_{out}]` for a 2-D
            :obj:`x`.
        """
        h = self._as_maps(x, batch)
        skips = []
        for level, block in enumerate(self.encoder):
            h = self._block(block, h, level)
            if level < self.levels:
                skips.append(h)
                h = self.pool(h)
        h = self.dropout(h)
        for level in reversed(range(self.levels)):
            h = self.unpool(h)
            h = torch.cat([h, skips[level]], dim=-1)
            h = self._block(self.decoder[level], h, level)
        out = self.head(h)
        return out.reshape(x.shape[:-1] + (self.out_channels,))

    def extra_repr(self) -> str:
        region = "full sphere" if self._config["pixels"] is None else f"{self.num_nodes} pixels"
        return (
            f"{self.in_channels}, {self.out_channels}, nside={self.nside}, "
            f"region={region}, channels={self.channels}, K={self._config['K']}"
        )
