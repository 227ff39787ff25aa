import inspect
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from pyg_sphere.graph import healpix_hierarchy, is_closed_hierarchy
from pyg_sphere.graph.healpix_graph import PixelsLike, as_pixels
from pyg_sphere.graph.kernel_width import check_nside
from pyg_sphere.nn.conv import SphericalChebConv
from pyg_sphere.nn.pool import HealpixPool

# Constructor arguments that do not change the parameters nor the outputs of a trained model.
_TRAINING_ONLY = ('dropout', )


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_channels(channels, minimum: int) -> Tuple[int, ...]:
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence):
        raise TypeError(f"channels must be a sequence of integers (one per level), got "
                        f"{channels!r}")
    channels = tuple(channels)
    if len(channels) < minimum:
        raise ValueError(f"channels needs at least {minimum} entr{'y' if minimum == 1 else 'ies'}"
                         f" (one per level), got {channels!r}")
    for c in channels:
        _check_int('every entry of channels', c)
    return channels


def _describe_region(pixels: Optional[List[int]], nside) -> str:
    if pixels is None:
        return (f"the full sphere ({12 * nside**2} pixels)" if isinstance(nside, int)
                else "the full sphere")
    if len(pixels) and pixels[-1] - pixels[0] == len(pixels) - 1:
        return f"a region of {len(pixels)} pixels (nested ids {pixels[0]}..{pixels[-1]})"
    return f"a region of {len(pixels)} pixels"


def _normalise_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """A config as read back from JSON (lists) in the form :attr:`config` returns."""
    out = dict(config)
    if isinstance(out.get('channels'), (list, tuple)):
        out['channels'] = tuple(int(c) for c in out['channels'])
    if out.get('pixels') is not None:
        pixels = out['pixels']
        if isinstance(pixels, Tensor):
            pixels = pixels.tolist()
        out['pixels'] = [int(p) for p in pixels]
    return out


def _architecture_problem(config: Dict[str, Any], arguments: Sequence[str], name: str) -> str:
    """Says how a config's argument names differ from a class's ('' if they match)."""
    unknown = sorted(set(config) - set(arguments))
    missing = [key for key in arguments if key not in config]
    if not unknown and not missing:
        return ''
    parts = ([f"has arguments {unknown} that {name} does not take"] if unknown else []) + \
        ([f"lacks arguments {missing} of {name}"] if missing else [])
    return (f"the checkpoint's config {' and '.join(parts)}: it was saved from another "
            f"architecture (config arguments: {sorted(config)})")


class _SphereModel(torch.nn.Module):
    """Graph hierarchy, input layouts, config and checkpoint checks shared by the models.

    The graphs of the :obj:`levels + 1` resolutions are built once, and their tensors are
    non-persistent buffers: :meth:`to` moves them, checkpoints do not store them (the config
    rebuilds them)."""

    def _build_hierarchy(self, nside: int, levels: int, pixels: PixelsLike, k: int,
                         what: str) -> Optional[List[int]]:
        nside = check_nside(nside)
        if nside < 2**levels:
            raise ValueError(
                f"nside={nside} is too small for {levels} poolings by 4 ({what}): the coarsest "
                f"level would be below nside 1. Use fewer levels (shorter channels) or maps at "
                f"nside >= {2**levels}")
        _check_int('k', k)
        coarse_npix = 12 * (nside >> levels)**2
        if k >= coarse_npix:
            raise ValueError(
                f"k={k} neighbours cannot be found at the coarsest level (nside "
                f"{nside >> levels}, {coarse_npix} pixels on the whole sphere) after {levels} "
                f"poolings ({what}); use k < {coarse_npix}, fewer levels or a larger nside")
        region = as_pixels(nside, pixels)
        if region is not None and not is_closed_hierarchy(region, levels):
            poolable = 0
            while poolable < levels and is_closed_hierarchy(region, poolable + 1):
                poolable += 1
            raise ValueError(
                f"the region ({len(region)} pixels at nside {nside}) cannot be pooled {levels} "
                f"times by 4 ({what}): each pixel needs all the siblings of its ancestor "
                f"{levels} levels up, in nested ordering; this region can be pooled "
                f"{poolable} time(s). Use fewer levels, or close the region with "
                f"pyg_sphere.close_hierarchy(pixels, {levels}) and feed maps on those pixels")
        graphs = healpix_hierarchy(nside, levels, region, k=k)
        self.levels = levels
        self.nside = nside
        self.num_nodes = graphs[0].num_nodes
        # A single-pixel graph has no edges and lambda_max 0; any positive value gives a
        # valid Chebyshev filter of that pixel's value.
        self.lambda_max = [float(g.lambda_max) if g.lambda_max > 0 else 2.0 for g in graphs]
        self.register_buffer('pixels', graphs[0].pixels, persistent=False)
        names = ['pixels']
        for level, g in enumerate(graphs):
            self.register_buffer(f'edge_index_{level}', g.edge_index, persistent=False)
            self.register_buffer(f'edge_weight_{level}', g.edge_weight, persistent=False)
            names += [f'edge_index_{level}', f'edge_weight_{level}']
        # DDP must not broadcast the graphs: an in-place copy would bump their version
        # counters and invalidate the cached Chebyshev operators at every step.
        self._ddp_params_and_buffers_to_ignore = names
        return None if region is None else graphs[0].pixels.tolist()

    def _graph(self, level: int) -> Tuple[Tensor, Tensor, float]:
        return (getattr(self, f'edge_index_{level}'), getattr(self, f'edge_weight_{level}'),
                self.lambda_max[level])

    def _conv(self, conv: SphericalChebConv, x: Tensor, level: int) -> Tensor:
        edge_index, edge_weight, lambda_max = self._graph(level)
        return conv(x, edge_index, edge_weight, lambda_max=lambda_max)

    def _region_text(self) -> str:
        return (f"{type(self).__name__} was built for "
                f"{_describe_region(self._config['pixels'], self.nside)} at nside {self.nside}")

    def _as_maps(self, x: Tensor, batch: Optional[Tensor]) -> Tensor:
        """:obj:`x` as maps on the model's region, [B, N, F] (a view where possible)."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a tensor, got {type(x).__name__}")
        n = self.num_nodes
        if x.dim() == 3:
            if batch is not None:
                raise ValueError("batch is only for x of shape [N_total, F] (a PyG batch); "
                                 "x of shape [B, N, F] already holds one map per row")
            if x.size(1) != n:
                raise ValueError(
                    f"x has {x.size(1)} pixels per map (x of shape {tuple(x.shape)}) but "
                    f"{self._region_text()}, {n} pixels: build the model with the data's nside "
                    f"and pixels (e.g. pixels=dataset.graph.pixels), or feed maps of its region")
            maps = x
        elif x.dim() == 2:
            if batch is None:
                if x.size(0) != n:
                    raise ValueError(
                        f"x has {x.size(0)} pixels (one map of shape {tuple(x.shape)}; pass "
                        f"batch= for a PyG batch) but {self._region_text()}, {n} pixels")
                maps = x.unsqueeze(0)
            else:
                maps = x.reshape(self._check_batch(x, batch), n, x.size(1))
        else:
            raise ValueError(f"x must be [B, N, F] (maps on one graph) or [N_total, F] with "
                             f"batch (a PyG batch), got shape {tuple(x.shape)}")
        if maps.size(-1) != self.in_channels:
            raise ValueError(f"x has {maps.size(-1)} features per pixel but the model takes "
                             f"in_channels={self.in_channels}")
        return maps

    def _check_batch(self, x: Tensor, batch: Tensor) -> int:
        """Number of graphs of a PyG batch vector, checked to hold whole model regions."""
        n = self.num_nodes
        if not isinstance(batch, Tensor) or batch.dim() != 1 or batch.numel() != x.size(0) \
                or batch.dtype.is_floating_point:
            raise ValueError(f"batch must be an integer tensor [N_total] with one entry per row "
                             f"of x ({x.size(0)}), got "
                             f"{tuple(batch.shape) if isinstance(batch, Tensor) else batch!r}")
        num_graphs = x.size(0) // n
        expected = torch.arange(num_graphs, device=batch.device).repeat_interleave(n)
        if x.size(0) % n == 0 and torch.equal(batch, expected):
            return num_graphs
        counts = torch.bincount(batch.long()).tolist() if batch.numel() else []
        if counts and all(c == n for c in counts):
            raise ValueError("batch must list the nodes of each graph consecutively, graph 0 "
                             "first (as torch_geometric's Batch does)")
        shown = ', '.join(str(c) for c in counts[:8]) + (', ...' if len(counts) > 8 else '')
        raise ValueError(f"the graphs of the batch have [{shown}] nodes but "
                         f"{self._region_text()}, {n} pixels: every sample must be a map on the "
                         f"model's region (same nside and patch size)")

    @staticmethod
    def _per_pixel(module: torch.nn.Module, h: Tensor) -> Tensor:
        """Applies a module acting on [M, C] (batch norm) to every pixel of h [B, N, C]."""
        # Fold through [N, B, C], the layout SphericalChebConv returns: no copy.
        nodes_first = h.transpose(0, 1)
        out = module(nodes_first.reshape(-1, h.size(-1)))
        return out.view(nodes_first.shape).transpose(0, 1)

    # Configuration and checkpoints ----------------------------------------------------------

    @property
    def config(self) -> Dict[str, Any]:
        """The constructor arguments, JSON-serialisable (:obj:`pixels` as a list or None)."""
        cfg = dict(self._config)
        cfg['channels'] = list(cfg['channels'])
        cfg['pixels'] = None if cfg['pixels'] is None else list(cfg['pixels'])
        return cfg

    @classmethod
    def from_config(cls, config: Dict[str, Any]):
        """Builds a model from :attr:`config` (e.g. read back from a checkpoint or JSON)."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict of constructor arguments, got "
                            f"{type(config).__name__}")
        problem = _architecture_problem(config, cls._argument_names(), cls.__name__)
        if problem:
            raise ValueError(problem)
        return cls(**_normalise_config(config))

    @classmethod
    def _argument_names(cls) -> List[str]:
        return list(inspect.signature(cls.__init__).parameters)[1:]

    def config_differences(self, config: Dict[str, Any]) -> List[str]:
        """Lists how a checkpoint's config differs from this model's (empty if it matches).

        :obj:`dropout` is ignored: it changes training, not the weights or the outputs.
        """
        theirs = _normalise_config(config)
        mine = self._config
        name = type(self).__name__
        problem = _architecture_problem(theirs, list(mine), name)
        if problem:
            return [problem]
        diffs = []
        for key, value in mine.items():
            if key in _TRAINING_ONLY:
                continue
            if key == 'pixels':
                if theirs[key] != value:
                    diffs.append(self._region_difference(theirs))
            elif theirs[key] != value:
                diffs.append(f"checkpoint has {key} {theirs[key]!r} but model has {value!r}")
        return diffs

    def _region_difference(self, theirs: Dict[str, Any]) -> str:
        a, b = theirs['pixels'], self._config['pixels']
        text = (f"checkpoint was trained on {_describe_region(a, theirs.get('nside'))} but model "
                f"has {_describe_region(b, self.nside)}")
        if a is not None and b is not None and len(a) == len(b):
            text += " (same size, other pixels)"
        return text

    def load_checkpoint_state(self, state_dict: Dict[str, Tensor],
                              config: Optional[Dict[str, Any]] = None):
        """Loads trained weights after checking that they fit this model.

        Raises a :class:`ValueError` that says what differs, e.g. ``checkpoint has channels
        (16, 32) but model has (16, 32, 64)``, another nside or region, or missing,
        unexpected or differently shaped tensors. A state dict saved from a
        :class:`~torch.nn.parallel.DistributedDataParallel` wrapper (keys prefixed with
        ``module.``) is accepted.

        Args:
            state_dict (dict): The checkpoint's :meth:`state_dict`.
            config (dict, optional): The checkpoint's :attr:`config`; compared first, for the
                clearest message.

        Returns:
            The model itself.
        """
        name = type(self).__name__
        if config is not None:
            if not isinstance(config, dict):
                raise TypeError(f"config must be the checkpoint's config dict, got "
                                f"{type(config).__name__}")
            problem = _architecture_problem(config, list(self._config), name)
            if problem:
                raise ValueError(f"the checkpoint does not fit this {name}: {problem}")
            diffs = self.config_differences(config)
            if diffs:
                raise ValueError(f"the checkpoint does not fit this {name}: " + '; '.join(diffs)
                                 + f". Rebuild the model with {name}.from_config(checkpoint "
                                 f"config) to use it")
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        if state_dict and all(key.startswith('module.') for key in state_dict):
            state_dict = {key[len('module.'):]: value for key, value in state_dict.items()}
        own = self.state_dict()
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        shapes = [f"{key} {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}"
                  for key in own if key in state_dict
                  and tuple(state_dict[key].shape) != tuple(own[key].shape)]
        problems = []
        for what, items in (('missing', missing), ('unexpected', unexpected),
                            ('with other shapes (checkpoint vs model)', shapes)):
            if items:
                problems.append(f"{len(items)} tensor(s) {what}: " + ', '.join(items[:4])
                                + (', ...' if len(items) > 4 else ''))
        if problems:
            raise ValueError(f"the checkpoint's weights do not fit this {name} "
                             f"({self._describe_architecture()}): " + '; '.join(problems)
                             + ". Was it saved from another architecture or configuration?")
        self.load_state_dict(state_dict)
        return self

    def _describe_architecture(self) -> str:
        return f"channels {tuple(self._config['channels'])}"

    def check_data(self, data) -> None:
        """Checks that a graph or batch (its :obj:`nside`, :obj:`pixels`, :obj:`x`) is on this
        model's region; raises a :class:`ValueError` saying what differs.

        Accepts a graph (e.g. :attr:`ConvergenceMaps.graph
        <pyg_sphere.datasets.ConvergenceMaps.graph>`), a :class:`SharedGraphLoader
        <pyg_sphere.loader.SharedGraphLoader>` batch, or a PyG batch of items carrying their
        graph. Fields that are absent are not checked.
        """
        nside = getattr(data, 'nside', None)
        if nside is not None:
            values = nside.reshape(-1).tolist() if isinstance(nside, Tensor) else [nside]
            others = sorted({int(v) for v in values} - {self.nside})
            if others:
                raise ValueError(f"the data has nside {others[0]} but {self._region_text()}: "
                                 f"build the model with nside={others[0]} or the data at nside "
                                 f"{self.nside}")
        pixels = getattr(data, 'pixels', None)
        if isinstance(pixels, Tensor):
            own = self.pixels.to(pixels.device)
            if pixels.numel() % own.numel() != 0 or not bool(
                    (pixels.reshape(-1, own.numel()) == own).all()):
                per_map = pixels.numel() if getattr(data, 'batch', None) is None else None
                size = f"{per_map} pixels" if per_map is not None else "other pixels"
                raise ValueError(f"the data's pixels ({size}) are not the model's region: "
                                 f"{self._region_text()}; build the model with "
                                 f"pixels=dataset.graph.pixels")
        x = getattr(data, 'x', None)
        if isinstance(x, Tensor):
            self._as_maps(x, getattr(data, 'batch', None))


class DeepSphere(_SphereModel):
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
    :func:`pyg_sphere.healpix_hierarchy` on :obj:`pixels` and kept as non-persistent buffers
    (moved by :meth:`to`, rebuilt from :attr:`config`). Maps must hold the region's pixels in
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
        pool (str): :obj:`'max'` or :obj:`'mean'` pooling. (default: :obj:`'max'`)
        head (str): :obj:`'fcn'` or :obj:`'cnn'`. (default: :obj:`'fcn'`)
        k (int): Neighbours per pixel of the graphs. (default: :obj:`8`)
        batch_norm (bool): Batch normalization after each convolution. (default: :obj:`True`)
        dropout (float): Dropout probability before the head. (default: :obj:`0.0`)

    Attributes:
        nside (int): Resolution of the input maps.
        num_nodes (int): Pixel count :math:`N` of the input region.
        levels (int): Number of poolings.
        pixels (torch.Tensor): The region's nested ids :math:`[N]` (a buffer).
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

    def __init__(self, in_channels: int, out_channels: int, nside: int, *,
                 pixels: PixelsLike = None,
                 channels: Sequence[int] = (16, 32, 64, 64, 64), K: int = 5,
                 pool: str = 'max', head: str = 'fcn', k: int = 8, batch_norm: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.in_channels = _check_int('in_channels', in_channels)
        self.out_channels = _check_int('out_channels', out_channels)
        channels = _check_channels(channels, 1)
        if pool not in ('max', 'mean'):
            raise ValueError(f"pool must be 'max' or 'mean', got {pool!r}")
        if head not in ('fcn', 'cnn'):
            raise ValueError(f"head must be 'fcn' (convolution and mean over pixels) or 'cnn' "
                             f"(flatten and linear layer), got {head!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        pixels = self._build_hierarchy(nside, len(channels), pixels, k,
                                       f"len(channels) = {len(channels)}")
        self._config = dict(in_channels=in_channels, out_channels=out_channels,
                            nside=self.nside, pixels=pixels, channels=channels, K=K, pool=pool,
                            head=head, k=k, batch_norm=bool(batch_norm), dropout=float(dropout))
        self.channels = channels
        self.head_type = head

        sizes = (in_channels, ) + channels
        # The conv bias is redundant before batch normalization.
        self.convs = torch.nn.ModuleList([
            SphericalChebConv(c_in, c_out, K, bias=not batch_norm)
            for c_in, c_out in zip(sizes[:-1], sizes[1:])
        ])
        self.norms = torch.nn.ModuleList([
            torch.nn.BatchNorm1d(c) if batch_norm else torch.nn.Identity() for c in channels
        ])
        self.pool = HealpixPool(pool)
        self.dropout = torch.nn.Dropout(dropout)
        if head == 'fcn':
            self.head = SphericalChebConv(channels[-1], out_channels, K)
        else:
            coarse_nodes = self.num_nodes // 4**self.levels
            self.head = torch.nn.Linear(coarse_nodes * channels[-1], out_channels)

    def reset_parameters(self):
        for module in self.modules():
            if module is not self and hasattr(module, 'reset_parameters'):
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
        if self.head_type == 'fcn':
            return self._conv(self.head, h, self.levels).mean(dim=1)
        return self.head(h.flatten(1))

    def _describe_architecture(self) -> str:
        return f"channels {self.channels}, head {self.head_type!r}"

    def extra_repr(self) -> str:
        region = 'full sphere' if self._config['pixels'] is None else f'{self.num_nodes} pixels'
        return (f'{self.in_channels}, {self.out_channels}, nside={self.nside}, '
                f'region={region}, channels={self.channels}, K={self._config["K"]}, '
                f'head={self.head_type}')
