from typing import Optional, Sequence

import torch
from torch import Tensor

from ..._validate import PixelsLike
from ..conv import SphericalChebConv
from ..pool import HealpixPool
from ._base import SphereModel


class DeepSphere(SphereModel):
    r"""The DeepSphere classifier/regressor of Perraudin et al. (2019) on HEALPix maps or regions.

    Each of the :obj:`len(channels)` levels applies a
    :class:`~pyg_sphere.nn.SphericalChebConv` (:obj:`K` coefficients), batch normalization,
    ReLU and a :class:`~pyg_sphere.nn.HealpixPool` by 4. The head maps the coarsest features
    to :obj:`out_channels` scores (classes, or targets such as :math:`(\Omega_m, \sigma_8)`):

    - :obj:`head='fcn'`: a last Chebyshev convolution to :obj:`out_channels`, then the mean over
      pixels. Its weights do not depend on the region size, and the output is invariant to
      the rotations that map the pixelization and the graph onto themselves.
    - :obj:`head='cnn'`: the flattened coarsest features through a linear layer (fixed region).

    The graphs of the :obj:`len(channels) + 1` resolutions are built once from
    :func:`pyg_sphere.healpix_hierarchy` on :obj:`pixels` (:attr:`graphs`; moved by :meth:`to`
    like buffers, not saved: :attr:`config` rebuilds them). Maps must hold the region's pixels in
    ascending nested order, as :func:`pyg_sphere.healpix_graph` and
    :class:`~pyg_sphere.datasets.ConvergenceMaps` store them.

    Args:
        in_channels (int): Features per pixel.
        out_channels (int): Number of classes or regression targets.
        nside (int): HEALPix resolution of the input maps.
        pixels (array or torch.Tensor, optional): Nested ids of the input region, e.g. a row of
            :func:`pyg_sphere.nested_patches` or :obj:`dataset.graph.pixels`; it must be closed
            under :obj:`len(channels)` poolings (see :func:`pyg_sphere.close_hierarchy`).
            (default: :obj:`None`, the full sphere)
        channels (sequence of int): Output channels of each level; one pooling per entry.
            (default: :obj:`(16, 32, 64, 64, 64)`)
        K (int): Chebyshev coefficients per filter. (default: :obj:`5`)
        num_neighbors (int): Neighbours per pixel of the graphs. (default: :obj:`8`)
        pool (str): :obj:`'max'` or :obj:`'mean'` pooling. (default: :obj:`'max'`)
        batch_norm (bool): Batch normalization after each convolution. (default: :obj:`True`)
        dropout (float): Dropout probability before the head. (default: :obj:`0.0`)
        head (str): :obj:`'fcn'` or :obj:`'cnn'`. (default: :obj:`'fcn'`)

    Attributes:
        nside (int): Resolution of the input maps.
        num_nodes (int): Pixel count :math:`N` of the input region.
        levels (int): Number of poolings.
        pixels (torch.Tensor): The region's nested ids :math:`[N]`.
        graphs (list of Data): The graph of every level, finest first.
        config (dict): The constructor arguments; see also :meth:`from_config`,
            :meth:`load_checkpoint_state` and :meth:`check_data`.

    Shapes:
        - **input:** maps :math:`(B, N, F_{in})` sharing the model's graph, or a PyG batch
          :math:`(B \cdot N, F_{in})` with its batch vector :math:`(B \cdot N)`, or one map
          :math:`(N, F_{in})`, with :math:`N` the region's pixel count
        - **output:** :math:`(B, F_{out})` (:math:`(1, F_{out})` for one map)

    Example::

        >>> import torch
        >>> from pyg_sphere.nn import DeepSphere
        >>> model = DeepSphere(1, 2, nside=8, channels=(8, 16))
        >>> model(torch.randn(4, 768, 1)).shape  # 4 full-sphere maps
        torch.Size([4, 2])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        nside: int,
        *,
        pixels: PixelsLike = None,
        channels: Sequence[int] = (16, 32, 64, 64, 64),
        K: int = 5,
        num_neighbors: int = 8,
        pool: str = "max",
        batch_norm: bool = True,
        dropout: float = 0.0,
        head: str = "fcn",
    ):
        super().__init__()
        channels = self._check_arguments(in_channels, out_channels, channels, K, pool, dropout, 1)
        if head not in ("fcn", "cnn"):
            raise ValueError(
                f"head must be 'fcn' (convolution and mean over pixels) or 'cnn' "
                f"(flatten and linear layer), got {head!r}"
            )
        pixels = self._build_hierarchy(
            nside, len(channels), pixels, num_neighbors, f"len(channels) = {len(channels)}"
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
            head=head,
        )
        self.channels = channels
        self.head_type = head

        sizes = (in_channels,) + channels
        # The conv bias is redundant before batch normalization.
        self.convs = torch.nn.ModuleList(
            [
                SphericalChebConv(c_in, c_out, K, bias=not batch_norm)
                for c_in, c_out in zip(sizes[:-1], sizes[1:])
            ]
        )
        self.norms = torch.nn.ModuleList(
            [torch.nn.BatchNorm1d(c) if batch_norm else torch.nn.Identity() for c in channels]
        )
        self.pool = HealpixPool(reduce=pool)
        self.dropout = torch.nn.Dropout(dropout)
        if head == "fcn":
            self.head = SphericalChebConv(channels[-1], out_channels, K)
        else:
            coarse_nodes = self.num_nodes // 4**self.levels
            self.head = torch.nn.Linear(coarse_nodes * channels[-1], out_channels)
        self._check_inputs_once()

    def reset_parameters(self):
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: Tensor, batch: Optional[Tensor] = None) -> Tensor:
        """Scores of each map.

        Args:
            x (torch.Tensor): Maps :math:`[B, N, F_{in}]`, or :math:`[N_{total}, F_{in}]` (a
                PyG batch of maps on the model's region, or one map without :obj:`batch`).
            batch (torch.Tensor, optional): The PyG batch vector :math:`[N_{total}]`.

        Returns:
            torch.Tensor: :math:`[B, F_{out}]`.
        """
        h = self._as_maps(x, batch)
        for level, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = self._conv(conv, h, level)
            h = self._per_pixel(norm, h).relu()
            h = self.pool(h)
        h = self.dropout(h)
        if self.head_type == "fcn":
            return self._conv(self.head, h, self.levels).mean(dim=1)
        return self.head(h.flatten(1))

    def _describe_architecture(self) -> str:
        return f"channels {self.channels}, head {self.head_type!r}"

    def extra_repr(self) -> str:
        region = "full sphere" if self._config["pixels"] is None else f"{self.num_nodes} pixels"
        return (
            f"{self.in_channels}, {self.out_channels}, nside={self.nside}, "
            f"region={region}, channels={self.channels}, K={self._config['K']}, "
            f"head={self.head_type}"
        )
