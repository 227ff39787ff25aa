from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear, is_uninitialized_parameter
from torch_geometric.nn.inits import zeros
from torch_geometric.typing import OptTensor

from ...graph.laplacian import check_normalization, rescaled_laplacian
from .._values import check_input
from ._chebyshev import chebyshev_basis, chebyshev_filter
from .chebyshev_operator import ChebyshevOperator, check_graph_size, lambda_max_values


class SphericalChebConv(MessagePassing):
    r"""Chebyshev graph convolution on the sphere (DeepSphere), a fast drop-in for
    :class:`torch_geometric.nn.ChebConv`.

    .. math::
        \mathbf{X}^{\prime} = \sum_{k=0}^{K-1} T_k(\tilde{\mathbf{L}})\,\mathbf{X}\,
        \mathbf{\Theta}^{(k)} + \mathbf{b},
        \qquad \tilde{\mathbf{L}} = \frac{2\mathbf{L}}{\lambda_{\max}} - \mathbf{I},

    with the Chebyshev polynomials :math:`T_0(\tilde{L})X = X`, :math:`T_1(\tilde{L})X =
    \tilde{L}X` and :math:`T_k = 2\tilde{L}T_{k-1} - T_{k-2}`: a filter localized to
    :math:`K-1` hops whose response is a polynomial of the graph frequencies (Defferrard et al.,
    NeurIPS 2016; Perraudin et al. 2019).

    Arguments, parameters (:obj:`lins`, :obj:`bias`) and outputs match
    :class:`~torch_geometric.nn.ChebConv`, so a :class:`ChebConv` state dict loads and gives
    the same outputs for the same :math:`\lambda_{\max}`. The differences:

    - :math:`\lambda_{\max}` defaults to the graph's largest eigenvalue (the
      :obj:`lambda_max` that :func:`pyg_sphere.healpix_graph` stores, passed to
      :meth:`forward`, or estimated) rather than the bound 2, which leaves part of
      :math:`[-1, 1]` unused. :obj:`lambda_max=2.0` gives :class:`ChebConv`'s operator for
      the :obj:`"sym"` and :obj:`"rw"` normalizations.
    - :math:`\tilde{L}` is a :class:`ChebyshevOperator` (a CSR matrix; on CPU, for the
      graphs of :func:`~pyg_sphere.healpix_graph`, its off-diagonal part with the diagonal
      apart), and all maps of a batch are filtered by one sparse-dense product per order:
      :obj:`x` of shape :math:`[B, N, F]` (maps sharing one graph) is folded to
      :math:`[N, B \cdot F]`. The K weight matrices are applied by a single matrix product.
    - Features holding UNSEEN (:data:`healpy.UNSEEN`), NaN or infinite values are refused in
      training mode (:attr:`input_check`), as the DeepSphere models refuse them.

    The operator is built from :obj:`edge_index` and :obj:`edge_weight` at every call (a few
    linear passes over the edges), unless :meth:`forward` is given one
    (:obj:`conv(x, operator)`: build it once per graph and share it between layers, as the
    DeepSphere models do) or the layer keeps its own (:obj:`cached=True`, as in
    :class:`~torch_geometric.nn.GCNConv`: for a graph that does not change; dropped by
    :meth:`reset_parameters`, rebuilt for another device or dtype). :attr:`operator` shows the
    kept one and its :attr:`~ChebyshevOperator.layout`.

    The gather-scatter :meth:`message` path of :class:`~torch_geometric.nn.MessagePassing` is
    used instead (same result) when :obj:`fused=False`, when :obj:`edge_weight` requires
    gradients, or under an explainer. Hooks on :meth:`propagate`, :meth:`message` and
    :meth:`aggregate` run only on that path: set :obj:`fused=False` to use them.

    Args:
        in_channels (int): Size of each input sample, or :obj:`-1` to derive it from the
            first input.
        out_channels (int): Size of each output sample.
        K (int): Number of Chebyshev coefficients (polynomial order :math:`K-1`; :obj:`K=1`
            is a per-pixel linear layer).
        normalization (str, optional): Laplacian normalization: :obj:`"sym"`
            (:math:`I - D^{-1/2} A D^{-1/2}`), :obj:`"rw"` (:math:`I - D^{-1} A`) or
            :obj:`None` (:math:`D - A`). (default: :obj:`"sym"`)
        lambda_max (float or str, optional): :math:`\lambda_{\max}` used when :meth:`forward`
            is not given one: a float, or :obj:`"auto"` to estimate it once per graph with
            :func:`pyg_sphere.graph.estimate_lambda_max` (hundreds of sparse products, at
            every call unless :obj:`cached=True`; for a disjoint batch without per-graph
            values, the largest over its graphs). A :obj:`lambda_max` passed to
            :meth:`forward` always takes precedence. (default: :obj:`"auto"`)
        bias (bool, optional): If :obj:`False`, no additive bias. (default: :obj:`True`)
        fused (bool, optional): If :obj:`False`, always use the message-passing path.
            (default: :obj:`True`)
        cached (bool, optional): If :obj:`True`, the layer keeps the operator of the graph of
            its first call and reuses it; a graph with another node or edge count is then
            refused. (default: :obj:`False`)
        recompute (bool, optional): If :obj:`True`, the :math:`K-1` Chebyshev terms beyond
            the input are not kept from the forward to the backward pass (where they serve as
            the backward's buffers) but computed again there, one at a time:
            :math:`(K-1) B F_{in}` floats less per node held for autograd (4x the input at
            :obj:`K=5`), for :math:`K-1` more sparse products per backward; the same results
            up to rounding. Applies to the fused path in float32 and float64 without autocast.
            (default: :obj:`False`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, F_{in})` (one graph or a disjoint batch) or
          :math:`(B, |\mathcal{V}|, F_{in})` (:math:`B` maps on one graph),
          edge indices :math:`(2, |\mathcal{E}|)` or a :class:`ChebyshevOperator`,
          edge weights :math:`(|\mathcal{E}|)` *(optional)*,
          batch vector :math:`(|\mathcal{V}|)` *(optional)*,
          :obj:`lambda_max`: float or :math:`(|\mathcal{G}|)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})` or
          :math:`(B, |\mathcal{V}|, F_{out})`

    Example::

        >>> import torch
        >>> from pyg_sphere import healpix_graph
        >>> from pyg_sphere.nn import SphericalChebConv
        >>> graph = healpix_graph(nside=4)
        >>> conv = SphericalChebConv(3, 16, K=4)
        >>> x = torch.randn(8, graph.num_nodes, 3)  # 8 maps
        >>> out = conv(x, graph.edge_index, graph.edge_weight, lambda_max=graph.lambda_max)
        >>> out.shape
        torch.Size([8, 192, 16])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        K: int,
        *,
        normalization: Optional[str] = "sym",
        lambda_max: Union[float, str] = "auto",
        bias: bool = True,
        fused: bool = True,
        cached: bool = False,
        recompute: bool = False,
        **kwargs,
    ):
        kwargs.setdefault("aggr", "add")
        super().__init__(**kwargs)
        if isinstance(K, bool) or not isinstance(K, int) or K < 1:
            raise ValueError(
                f"K (number of Chebyshev coefficients) must be an integer >= 1, got {K!r}"
            )
        self.normalization = check_normalization(normalization)
        if isinstance(lambda_max, str):
            if lambda_max != "auto":
                raise ValueError(
                    f"lambda_max must be 'auto' or a positive float, got {lambda_max!r}"
                )
        else:
            lambda_max = float(lambda_max)
            lambda_max_values(lambda_max)  # checks it is positive and finite
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.K = K
        self.lambda_max = lambda_max
        self.fused = fused
        self.cached = bool(cached)
        self.operator: Optional[ChebyshevOperator] = None
        self.recompute = bool(recompute)
        self.lins = torch.nn.ModuleList(
            [
                Linear(in_channels, out_channels, bias=False, weight_initializer="glorot")
                for _ in range(K)
            ]
        )
        if bias:
            self.bias = Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        self.operator = None
        for lin in self.lins:
            lin.reset_parameters()
        zeros(self.bias)

    def forward(
        self,
        x: Tensor,
        edge_index: Union[Tensor, ChebyshevOperator],
        edge_weight: OptTensor = None,
        batch: OptTensor = None,
        lambda_max: Optional[Union[float, Tensor]] = None,
    ) -> Tensor:
        """Runs the filter.

        Args:
            x (torch.Tensor): Node features :math:`[N, F_{in}]` or :math:`[B, N, F_{in}]`.
            edge_index (torch.Tensor or ChebyshevOperator): Graph edges :math:`[2, E]`,
                int64 or int32, or the graph's operator (which carries its weights and
                :math:`\\lambda_{\\max}`: then pass nothing else).
            edge_weight (torch.Tensor, optional): Edge weights :math:`[E]`.
            batch (torch.Tensor, optional): Graph of each node :math:`[N]`, needed with
                per-graph :obj:`lambda_max`.
            lambda_max (float or torch.Tensor, optional): :math:`\\lambda_{\\max}` of the
                graph, or one per graph :math:`[G]` (as collated from the :obj:`lambda_max`
                of :func:`pyg_sphere.healpix_graph` outputs).
        """
        if not isinstance(x, Tensor) or x.dim() not in (2, 3):
            raise ValueError(
                f"x must be a tensor [N, F] or [B, N, F], got "
                f"{tuple(x.shape) if isinstance(x, Tensor) else type(x)}"
            )
        operator = edge_index if isinstance(edge_index, ChebyshevOperator) else None
        if operator is None and (
            not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.size(0) != 2
        ):
            got = tuple(edge_index.shape) if isinstance(edge_index, Tensor) else edge_index
            raise ValueError(
                f"edge_index must be a tensor [2, E] of node indices or a ChebyshevOperator, "
                f"got {got}"
                + (
                    ": items of pyg_sphere.datasets.ConvergenceMaps carry their graph only with "
                    "attach_graph=True (for PyG's DataLoader); with SharedGraphLoader, pass "
                    "batch.edge_index of the shared graph"
                    if edge_index is None
                    else ""
                )
            )
        self._check_dtype(x)
        check_input(self, x, "; conv.input_check = 'never' skips this check")
        num_nodes = x.size(-2)
        if batch is not None and batch.numel() != num_nodes:
            raise ValueError(
                f"batch has {batch.numel()} entries but x has {num_nodes} nodes "
                f"(x must be [N, F] or [B, N, F])"
            )
        if operator is not None:
            self._check_operator(operator, x, edge_weight, batch, lambda_max)
        if self.K > 1 and self._use_message_path(edge_weight, operator):
            if operator is not None:
                edge_index, edge_weight = operator.edge_index, operator.edge_weight
                lam = operator.lambda_max
            else:
                check_graph_size(edge_index, num_nodes)
                lam = self._lambda_max(edge_index, edge_weight, num_nodes, lambda_max)
            return self._forward_message(x, edge_index, edge_weight, batch, lam)
        if self.K > 1 and operator is None:  # T_0 = I: K = 1 needs no operator
            operator = self._operator(x, edge_index, edge_weight, batch, lambda_max)
        return self._forward_fused(x, operator)

    #: When :meth:`forward` refuses UNSEEN (:data:`healpy.UNSEEN`) and non-finite features, as
    #: the models do: ``"train"`` (in training mode, the default), ``"always"`` or ``"never"``.
    #: One pass over :obj:`x` (``docs/benchmarks.md``).
    input_check: str = "train"

    def _check_dtype(self, x: Tensor) -> None:
        if not x.is_floating_point():
            raise TypeError(
                f"x must hold floating-point features, got {x.dtype}: convert it, e.g. x.float()"
            )
        weight = self.lins[0].weight
        if is_uninitialized_parameter(weight) or torch.is_autocast_enabled(x.device.type):
            return
        if x.dtype != weight.dtype:
            raise TypeError(
                f"x is {x.dtype} but the layer's parameters are {weight.dtype}: convert the "
                f"input (x.to({weight.dtype})) or the layer or model (.to({x.dtype})), or run "
                f"under torch.autocast"
            )

    def _check_operator(self, operator, x, edge_weight, batch, lambda_max) -> None:
        if edge_weight is not None or lambda_max is not None:
            raise ValueError(
                "an operator carries its graph's weights and lambda_max: call conv(x, operator) "
                "without edge_weight or lambda_max"
            )
        if operator.normalization != self.normalization:
            raise ValueError(
                f"the operator has normalization={operator.normalization!r} but the layer "
                f"{self.normalization!r}: build it with the layer's"
            )
        dtype = _compute_dtype(x)
        if not operator.matches(x.size(-2), dtype, x.device):
            raise ValueError(
                f"the operator is for {operator.num_nodes} nodes in {operator.dtype} on "
                f"{operator.device} but x has {x.size(-2)} nodes along its node dimension (-2) "
                f"and is filtered in {dtype} on {x.device}: build the operator of x's graph "
                f"with dtype={dtype} and device={x.device}"
            )

    def _lambda_max(self, edge_index, edge_weight, num_nodes, lambda_max, estimate=True):
        """The given lambda_max, else the layer's value, else the estimate (or None, for the
        operator to estimate once it has checked the graph)."""
        if lambda_max is None:
            lambda_max = self.lambda_max
        if isinstance(lambda_max, str):
            if edge_index.numel() == 0:
                raise ValueError(
                    f"the graph has no edges, so lambda_max cannot be estimated "
                    f"for a Chebyshev filter of K={self.K} coefficients: use K=1 "
                    f"(a per-pixel linear layer), a graph with edges, or pass "
                    f"lambda_max explicitly"
                )
            if not estimate:
                return None
            from ...graph import estimate_lambda_max

            ew = None if edge_weight is None else edge_weight.detach()
            lambda_max = estimate_lambda_max(edge_index, ew, num_nodes, self.normalization)
        return lambda_max_values(lambda_max)

    @torch.compiler.disable
    def _operator(self, x, edge_index, edge_weight, batch, lambda_max) -> ChebyshevOperator:
        """The operator of the graph for x: the kept one (cached=True) or a new one."""
        num_nodes, dtype = x.size(-2), _compute_dtype(x)
        kept = self.operator if self.cached else None
        if kept is not None:
            if kept.num_nodes != num_nodes or kept.num_edges != edge_index.size(1):
                raise ValueError(
                    f"the layer keeps (cached=True) the operator of a graph of {kept.num_nodes} "
                    f"nodes and {kept.num_edges} edges, but this call's graph has {num_nodes} "
                    f"nodes and {edge_index.size(1)} edges: use cached=False for graphs that "
                    f"change, or call reset_parameters() to forget the kept one"
                )
            same_lambda = lambda_max is None or lambda_max_values(lambda_max) == kept.lambda_max
            if same_lambda and kept.matches(num_nodes, dtype, x.device):
                return kept
            if lambda_max is None:
                lambda_max = kept.lambda_max
        lam = self._lambda_max(edge_index, edge_weight, num_nodes, lambda_max, estimate=False)
        operator = ChebyshevOperator(
            edge_index,
            edge_weight,
            num_nodes,
            normalization=self.normalization,
            lambda_max=lam,
            batch=batch if lam is not None and len(lam) > 1 else None,
            dtype=dtype,
            device=x.device,
        )
        if self.cached:
            self.operator = operator
        return operator

    def _use_message_path(self, edge_weight: OptTensor, operator) -> bool:
        if operator is not None:
            edge_weight = operator.edge_weight
        return (
            not self.fused
            or self.explain
            or (edge_weight is not None and edge_weight.requires_grad and torch.is_grad_enabled())
            or any(is_uninitialized_parameter(lin.weight) for lin in self.lins)
        )

    def _forward_message(self, x, edge_index, edge_weight, batch, lam) -> Tensor:
        Tx_0 = x
        out = self.lins[0](Tx_0)
        if len(self.lins) > 1:
            edge_index, norm = rescaled_laplacian(
                edge_index, edge_weight, x.size(-2), self.normalization, lam, x.dtype, batch
            )
            Tx_1 = self.propagate(edge_index, x=x, norm=norm)
            out = out + self.lins[1](Tx_1)
            for lin in self.lins[2:]:
                Tx_2 = 2.0 * self.propagate(edge_index, x=Tx_1, norm=norm) - Tx_0
                out = out + lin(Tx_2)
                Tx_0, Tx_1 = Tx_1, Tx_2
        if self.bias is not None:
            out = out + self.bias
        return out

    def _forward_fused(self, x: Tensor, operator: Optional[ChebyshevOperator]) -> Tensor:
        # Maps on a shared graph are filtered together: [B, N, F] is handled as [N, B*F].
        nodes_first = x.unsqueeze(1) if x.dim() == 2 else x.transpose(0, 1)
        # One product with the K weight matrices side by side: [N*B, K*F_in] @ [K*F_in, F_out].
        weight = torch.cat([lin.weight for lin in self.lins], dim=1)
        n, b = nodes_first.shape[:2]
        if self.K == 1:
            out = F.linear(nodes_first.reshape(n * b, -1), weight, self.bias)
        elif x.dtype not in _HALF_DTYPES and not torch.is_autocast_enabled(x.device.type):
            out = _filter(operator, nodes_first, self.K, weight, self.bias, self.recompute)
        else:
            if x.dtype in _HALF_DTYPES:
                # Sparse kernels lack half precision (on CPU): filter in float32, then back.
                nodes_first = nodes_first.float()
            terms = _terms(operator, nodes_first, self.K)
            if x.dtype in _HALF_DTYPES:
                terms = terms.to(x.dtype)
            out = F.linear(terms.view(n * b, -1), weight, self.bias)
        if x.dim() == 2:
            return out
        # [N, B, F_out] viewed as [B, N, F_out]: the next layer folds it back without a copy.
        return out.view(n, b, -1).transpose(0, 1)

    def message(self, x_j: Tensor, norm: Tensor) -> Tensor:
        return norm.view(-1, 1) * x_j

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"K={self.K}, normalization={self.normalization}, "
            f"lambda_max={self.lambda_max}"
            f"{', cached=True' if self.cached else ''}"
            f"{', recompute=True' if self.recompute else ''})"
        )


_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype of the sparse products for x: half precision is filtered in float32."""
    return torch.float32 if x.dtype in _HALF_DTYPES else x.dtype


@torch.compiler.disable
def _terms(operator: ChebyshevOperator, x: Tensor, K: int) -> Tensor:
    """The K Chebyshev terms [N, B, K, F] of x [N, B, F]."""
    # The sparse products run in x's precision: autocast would cast them to half precision,
    # which the sparse kernels lack; the weights' product after them still autocasts.
    with torch.autocast(x.device.type, enabled=False):
        return chebyshev_basis(operator, x, K)


@torch.compiler.disable
def _filter(operator, x: Tensor, K: int, weight: Tensor, bias, recompute: bool) -> Tensor:
    """The whole filter [N B, F_out] of x [N, B, F] (the terms recomputed in the backward with
    :obj:`recompute`)."""
    return chebyshev_filter(operator, x, K, weight, bias, recompute)
