"""The Chebyshev recursion of :class:`~pyg_sphere.nn.SphericalChebConv`: the terms
:math:`T_k(\\tilde{L}) x` and their backward pass by Clenshaw's recurrence, with the whole
filter recomputing the terms in its backward rather than keeping them."""

from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .chebyshev_operator import ChebyshevOperator


def _iter_terms(op: ChebyshevOperator, x: Tensor, K: int):
    """The terms :math:`T_k(\\tilde{L}) x`, k = 0 ... K - 1 (K >= 2), of a 2-D x, one at a
    time: the recursion holds only the last two."""
    t0, t1 = x, op.apply(x)
    yield t0
    yield t1
    for _ in range(2, K):
        t0, t1 = t1, op.step(t1, t0)
        yield t1


def _terms(op: ChebyshevOperator, x: Tensor, K: int) -> Tensor:
    """The stacked terms :math:`T_k(\\tilde{L}) x` [N, B, K, F] of x [N, B, F]."""
    n, b, f = x.shape
    terms = _iter_terms(op, x.reshape(n, b * f), K)
    return torch.stack([t.view(n, b, f) for t in terms], dim=2)


def _terms_backward(op: ChebyshevOperator, grad, K: int, shape) -> Tensor:
    """:math:`\\sum_k T_k(\\tilde{L}^\\top) G_k` [N, B, F] of the gradients :math:`G_k` of the
    terms, :obj:`grad(k)` (viewable as [N, B, F] = :obj:`shape`), by Clenshaw's recurrence:
    K - 1 sparse products with the cached transpose (the very same matrix when
    :math:`\\tilde{L}` is symmetric), no copies of the gradients."""
    n, b, f = shape
    b2, b1 = None, grad(K - 1).reshape(n, b * f)
    for k in range(K - 2, 0, -1):
        if b2 is None:
            bk = op.apply(b1, transpose=True).mul_(2.0)
        else:
            bk = op.step(b1, b2, transpose=True)
        bk.view(n, b, f).add_(grad(k).view(n, b, f))
        b2, b1 = b1, bk
    out = op.apply(b1, transpose=True)
    out.view(n, b, f).add_(grad(0).view(n, b, f))
    if b2 is not None:
        out.sub_(b2)
    return out.view(n, b, f)


class _ChebyshevBasis(torch.autograd.Function):
    """The stacked terms :math:`T_k(\\tilde{L}) x`, with no autograd graph of the recursion:
    the backward is :func:`_terms_backward`."""

    @staticmethod
    def forward(ctx, x: Tensor, op: ChebyshevOperator, K: int) -> Tensor:
        ctx.op = op
        return _terms(op, x, K)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        n, b, K, f = grad.shape
        return _terms_backward(ctx.op, lambda k: grad[:, :, k], K, (n, b, f)), None, None


def chebyshev_basis(op: ChebyshevOperator, x: Tensor, K: int) -> Tensor:
    """Stacks :math:`T_0(\\tilde{L})x, \\dots, T_{K-1}(\\tilde{L})x` along a new dim.

    Args:
        op: the operator of the graph.
        x: node features :math:`[N, B, F]` (B maps on the graph; any strides).
        K: number of Chebyshev terms, at least 2.

    Returns:
        :math:`[N, B, K, F]`, contiguous.
    """
    return _ChebyshevBasis.apply(x.contiguous(), op, K)


class _ChebyshevFilter(torch.autograd.Function):
    """The whole filter, :math:`\\sum_k T_k(\\tilde{L}) x \\Theta_k + b`, keeping only x (and
    the weights) for the backward. The K terms are freed after the forward; the backward runs
    the recursion again, one term at a time, for the weights' gradient, and forms the terms'
    gradients one at a time inside Clenshaw's recurrence: it holds no tensor of K terms. K - 1
    more sparse products per backward, for 2 K B F floats less per node at its peak."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], op, K: int) -> Tensor:
        n, b, f = x.shape
        out = torch.nn.functional.linear(_terms(op, x, K).view(n * b, K * f), weight, bias)
        ctx.op, ctx.K, ctx.has_bias = op, K, bias is not None
        ctx.save_for_backward(x, weight)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        op, K = ctx.op, ctx.K
        n, b, f = x.shape
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            grad_t = grad.t()
            terms = _iter_terms(op, x.reshape(n, b * f), K)
            grad_weight = torch.cat([grad_t.mm(t.view(n * b, f)) for t in terms], dim=1)
        if ctx.needs_input_grad[2] and ctx.has_bias:
            grad_bias = grad.sum(0)
        if ctx.needs_input_grad[0]:

            def grad_term(k):  # the gradient of T_k, [N B, F]
                return grad.mm(weight[:, k * f : (k + 1) * f])

            grad_x = _terms_backward(op, grad_term, K, (n, b, f))
        return grad_x, grad_weight, grad_bias, None, None


def chebyshev_filter(
    op: ChebyshevOperator, x: Tensor, K: int, weight: Tensor, bias: Optional[Tensor]
) -> Tensor:
    """:math:`\\sum_k T_k(\\tilde{L}) x \\Theta_k + b` [N B, F_out] of x [N, B, F], with
    :obj:`weight` [F_out, K F] (the :math:`\\Theta_k^\\top` side by side): the product of
    :func:`chebyshev_basis` with the weights, recomputing the terms in the backward rather than
    keeping them."""
    return _ChebyshevFilter.apply(x.contiguous(), weight, bias, op, K)
