"""The base of pyg_sphere's models: the graph hierarchy they are built on, the input layouts
they accept, and the checks that data fits them."""

from typing import Any, Dict, List, Optional

import torch
from torch import Tensor
from torch_geometric.data import Data

from ... import checkpoint
from ..._validate import PixelsLike, as_pixels, check_channels, check_choice, check_int, check_nside
from ...checkpoint import describe_region
from ...graph import healpix_hierarchy, is_closed_hierarchy
from .._values import check_input
from ..conv import ChebyshevOperator, SphericalChebConv


class SphereModel(torch.nn.Module):
    """A model on a fixed HEALPix region and its :obj:`levels + 1` nested resolutions.

    Subclasses call :meth:`_build_hierarchy` in their constructor and store their constructor
    arguments in :obj:`self._config`. The graphs of every resolution are built once
    (:attr:`graphs`, on the CPU), and the model owns the :class:`~pyg_sphere.nn.
    ChebyshevOperator` of each level (:attr:`operators`), which all its convolutions on that
    level share: built at the first forward pass for the input's device and precision, and
    again when these change (after :meth:`to`, :meth:`cuda` or :meth:`double`; half
    precision is filtered in float32). Graphs and operators are not buffers: they are not
    saved in checkpoints (the config rebuilds them), not broadcast at every step by
    :class:`~torch.nn.parallel.DistributedDataParallel` (gigabytes on a large sphere), and not
    rounded by :meth:`half`.
    """

    def _check_arguments(
        self, in_channels, out_channels, channels, K, pool, dropout, min_levels: int
    ):
        """Checks the arguments that every model takes; returns :obj:`channels` as a tuple."""
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.out_channels = check_int("out_channels", out_channels, 1)
        check_int("K", K, 1)
        check_choice("pool", pool, ("max", "mean"))
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        return check_channels(channels, min_levels)

    def _build_hierarchy(
        self, nside: int, levels: int, pixels: PixelsLike, num_neighbors: int, what: str
    ) -> Optional[List[int]]:
        nside = check_nside(nside)
        if nside < 2**levels:
            raise ValueError(
                f"nside={nside} is too small for {levels} poolings by 4 ({what}): the coarsest "
                f"level would be below nside 1. Use fewer levels (shorter channels) or maps at "
                f"nside >= {2**levels}"
            )
        check_int("num_neighbors", num_neighbors, 1)
        coarse_npix = 12 * (nside >> levels) ** 2
        if num_neighbors >= coarse_npix:
            raise ValueError(
                f"num_neighbors={num_neighbors} neighbours cannot be found at the coarsest level "
                f"(nside {nside >> levels}, {coarse_npix} pixels on the whole sphere) after "
                f"{levels} poolings ({what}); use num_neighbors < {coarse_npix}, fewer levels or "
                f"a larger nside"
            )
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
                f"pyg_sphere.close_hierarchy(pixels, {levels}) and feed maps on those pixels"
            )
        graphs = healpix_hierarchy(nside, levels, region, num_neighbors=num_neighbors)
        self.levels = levels
        self.nside = nside
        self.num_nodes = graphs[0].num_nodes
        # A single-pixel graph has no edges and lambda_max 0; any positive value gives a
        # valid Chebyshev filter of that pixel's value.
        self.lambda_max = [float(g.lambda_max) if g.lambda_max > 0 else 2.0 for g in graphs]
        self._operators: Dict[int, ChebyshevOperator] = {}
        self._graph_tensors = {"pixels": graphs[0].pixels}
        for level, g in enumerate(graphs):
            self._graph_tensors[f"edge_index_{level}"] = g.edge_index
            self._graph_tensors[f"edge_weight_{level}"] = g.edge_weight
        return None if region is None else graphs[0].pixels.tolist()

    @property
    def pixels(self) -> Tensor:
        """The nested ids of the input region, :math:`[N]`."""
        return self._graph_tensors["pixels"]

    @property
    def graphs(self) -> List[Data]:
        """The graph of every level, finest first (edges, weights, :obj:`lambda_max`)."""
        return [
            Data(
                edge_index=self._graph_tensors[f"edge_index_{level}"],
                edge_weight=self._graph_tensors[f"edge_weight_{level}"],
                lambda_max=self.lambda_max[level],
                num_nodes=self.num_nodes // 4**level,
            )
            for level in range(self.levels + 1)
        ]

    @property
    def operators(self) -> Dict[int, ChebyshevOperator]:
        """The operator of each level built so far (level: operator), for inspection: its
        :attr:`~pyg_sphere.nn.ChebyshevOperator.layout`, dtype, device and memory."""
        return dict(self._operators)

    def _operator(self, level: int, x: Tensor, normalization) -> ChebyshevOperator:
        """The operator of a level for features x, built once per device and precision."""
        dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        op = self._operators.get(level)
        if (
            op is None
            or not op.matches(self.num_nodes // 4**level, dtype, x.device)
            or op.normalization != normalization
        ):
            t = self._graph_tensors
            op = ChebyshevOperator(
                t[f"edge_index_{level}"].to(x.device),
                t[f"edge_weight_{level}"].to(x.device),
                self.num_nodes // 4**level,
                normalization=normalization,
                lambda_max=self.lambda_max[level],
                dtype=dtype,
                device=x.device,
            )
            self._operators[level] = op
        return op

    def _conv(self, conv: SphericalChebConv, x: Tensor, level: int) -> Tensor:
        return conv(x, self._operator(level, x, conv.normalization))

    def _region_text(self) -> str:
        return (
            f"{type(self).__name__} was built for "
            f"{describe_region(self._config['pixels'], self.nside)} at nside {self.nside}"
        )

    #: When :meth:`forward` checks its input for UNSEEN (:data:`healpy.UNSEEN`) and non-finite
    #: values before touching any state: ``"train"`` (in training mode, where one bad value
    #: would corrupt the batch-norm statistics for good; the default), ``"always"`` or
    #: ``"never"``. The check is one pass over the input.
    input_check: str = "train"

    def _check_inputs_once(self) -> None:
        """The model checks its input (:attr:`input_check`): its layers need not check again.
        Called at the end of the subclasses' constructors."""
        for module in self.modules():
            if isinstance(module, SphericalChebConv):
                module.input_check = "never"

    def _check_values(self, x: Tensor, force: bool = False) -> None:
        check_input(self, x, "; model.input_check = 'never' skips this check", force)

    def _as_maps(self, x: Tensor, batch: Optional[Tensor]) -> Tensor:
        """:obj:`x` as maps on the model's region, [B, N, F] (a view where possible), after
        the input checks."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a tensor, got {type(x).__name__}")
        self._check_values(x)
        n = self.num_nodes
        if x.dim() == 3:
            if batch is not None:
                raise ValueError(
                    "batch is only for x of shape [N_total, F] (a PyG batch); "
                    "x of shape [B, N, F] already holds one map per row"
                )
            if x.size(1) != n:
                raise ValueError(
                    f"x has {x.size(1)} pixels per map (x of shape {tuple(x.shape)}) but "
                    f"{self._region_text()}, {n} pixels: build the model with the data's nside "
                    f"and pixels (e.g. pixels=dataset.graph.pixels), or feed maps of its region"
                )
            maps = x
        elif x.dim() == 2:
            if batch is None:
                if x.size(0) != n:
                    raise ValueError(
                        f"x has {x.size(0)} pixels (one map of shape {tuple(x.shape)}; pass "
                        f"batch= for a PyG batch) but {self._region_text()}, {n} pixels"
                    )
                maps = x.unsqueeze(0)
            else:
                maps = x.reshape(self._check_batch(x, batch), n, x.size(1))
        else:
            raise ValueError(
                f"x must be [B, N, F] (maps on one graph) or [N_total, F] with "
                f"batch (a PyG batch), got shape {tuple(x.shape)}"
            )
        if maps.size(-1) != self.in_channels:
            raise ValueError(
                f"x has {maps.size(-1)} features per pixel but the model takes "
                f"in_channels={self.in_channels}"
            )
        return maps

    def _check_batch(self, x: Tensor, batch: Tensor) -> int:
        """Number of graphs of a PyG batch vector, checked to hold whole model regions."""
        n = self.num_nodes
        if (
            not isinstance(batch, Tensor)
            or batch.dim() != 1
            or batch.numel() != x.size(0)
            or batch.dtype.is_floating_point
        ):
            raise ValueError(
                f"batch must be an integer tensor [N_total] with one entry per row "
                f"of x ({x.size(0)}), got "
                f"{tuple(batch.shape) if isinstance(batch, Tensor) else batch!r}"
            )
        num_graphs = x.size(0) // n
        expected = torch.arange(num_graphs, device=batch.device).repeat_interleave(n)
        if x.size(0) % n == 0 and torch.equal(batch, expected):
            return num_graphs
        counts = torch.bincount(batch.long()).tolist() if batch.numel() else []
        if counts and all(c == n for c in counts):
            raise ValueError(
                "batch must list the nodes of each graph consecutively, graph 0 "
                "first (as torch_geometric's Batch does)"
            )
        shown = ", ".join(str(c) for c in counts[:8]) + (", ..." if len(counts) > 8 else "")
        raise ValueError(
            f"the graphs of the batch have [{shown}] nodes but "
            f"{self._region_text()}, {n} pixels: every sample must be a map on the "
            f"model's region (same nside and patch size)"
        )

    @staticmethod
    def _per_pixel(module: torch.nn.Module, h: Tensor) -> Tensor:
        """Applies a module acting on [M, C] (batch norm) to every pixel of h [B, N, C]."""
        # Fold through [N, B, C], the layout SphericalChebConv returns: no copy.
        nodes_first = h.transpose(0, 1)
        out = module(nodes_first.reshape(-1, h.size(-1)))
        return out.view(nodes_first.shape).transpose(0, 1)

    # Configuration and checkpoints (implemented in pyg_sphere.checkpoint) -----------------

    @property
    def config(self) -> Dict[str, Any]:
        """The constructor arguments, JSON-serialisable (:obj:`pixels` as a list or None)."""
        return checkpoint.model_config(self)

    @classmethod
    def from_config(cls, config: Dict[str, Any]):
        """Builds a model from :attr:`config` (e.g. read back from a checkpoint or JSON)."""
        return checkpoint.model_from_config(cls, config)

    def config_differences(self, config: Dict[str, Any]) -> List[str]:
        """Lists how a checkpoint's config differs from this model's (empty if it matches);
        see :func:`pyg_sphere.checkpoint.config_differences`."""
        return checkpoint.config_differences(self, config)

    def load_checkpoint_state(
        self, state_dict: Dict[str, Tensor], config: Optional[Dict[str, Any]] = None
    ):
        """Loads trained weights after checking that they fit this model; see
        :func:`pyg_sphere.checkpoint.load_checkpoint_state`. Returns the model."""
        return checkpoint.load_checkpoint_state(self, state_dict, config)

    def _describe_architecture(self) -> str:
        return f"channels {tuple(self._config['channels'])}"

    def check_data(self, data) -> None:
        """Checks that a graph or batch (its :obj:`nside`, :obj:`pixels`, :obj:`x`) is on this
        model's region; raises a :class:`ValueError` saying what differs.

        Accepts a graph (e.g. :attr:`ConvergenceMaps.graph
        <pyg_sphere.datasets.ConvergenceMaps.graph>`), a :class:`SharedGraphLoader
        <pyg_sphere.loader.SharedGraphLoader>` batch, or a PyG batch of items carrying their
        graph: its nside, ordering (:obj:`nest`), pixel ids, and :obj:`x` (shape, UNSEEN and
        non-finite values). Fields that are absent are not checked.
        """
        nside = getattr(data, "nside", None)
        if nside is not None:
            values = nside.reshape(-1).tolist() if isinstance(nside, Tensor) else [nside]
            others = sorted({int(v) for v in values} - {self.nside})
            if others:
                raise ValueError(
                    f"the data has nside {others[0]} but {self._region_text()}: "
                    f"build the model with nside={others[0]} or the data at nside "
                    f"{self.nside}"
                )
        pixels = getattr(data, "pixels", None)
        if isinstance(pixels, Tensor):
            own = self.pixels.to(pixels.device)
            if pixels.numel() % own.numel() != 0 or not bool(
                (pixels.reshape(-1, own.numel()) == own).all()
            ):
                per_map = pixels.numel() if getattr(data, "batch", None) is None else None
                size = f"{per_map} pixels" if per_map is not None else "other pixels"
                raise ValueError(
                    f"the data's pixels ({size}) are not the model's region: "
                    f"{self._region_text()}; build the model with "
                    f"pixels=dataset.graph.pixels"
                )
        nest = getattr(data, "nest", None)
        if nest is not None:
            values = nest.reshape(-1).tolist() if isinstance(nest, Tensor) else [nest]
            if not all(bool(v) for v in values):
                raise ValueError(
                    "the data is in RING ordering (nest=False) but the model works on NESTED "
                    "maps: build the graph with healpix_graph(..., nest=True) and reorder maps "
                    "with healpy.reorder(m, r2n=True)"
                )
        x = getattr(data, "x", None)
        if isinstance(x, Tensor):
            self._as_maps(x, getattr(data, "batch", None))
            self._check_values(x, force=True)
