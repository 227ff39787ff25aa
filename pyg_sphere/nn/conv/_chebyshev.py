"""The Chebyshev recursion of :class:`~pyg_sphere.nn.SphericalChebConv`: the terms
:math:`T_k(\\tilde{L}) x` and their backward pass by Clenshaw's recurrence, with the whole
filter (:func:`chebyshev_filter`) projecting the terms as they come."""

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


def _terms_backward(op: ChebyshevOperator, first, add_grad, K: int, buffers=()) -> Tensor:
    """:math:`\\sum_k T_k(\\tilde{L}^\\top) G_k` [N, C] of the gradients :math:`G_k` of the
    terms, by Clenshaw's recurrence: K - 1 sparse products with the cached transpose (the very
    same matrix when :math:`\\tilde{L}` is symmetric).

    :obj:`first` () is a new [N, C] tensor holding :math:`G_{K-1}`, :obj:`add_grad(acc, k)` adds
    :math:`G_k` to :obj:`acc` [N, C] in place and returns it: no gradient of a term is stored.
    On the split layout the recurrence writes into the [N, C] tensors of :obj:`buffers` (dead
    tensors of the caller) and recycles its own: at most three new tensors in all.
    """
    pool = list(buffers) if op.layout == "split" else []
    recycle = op.layout == "split"
    b2, b1 = None, first()
    for k in range(K - 2, 0, -1):
        out = pool.pop() if pool else None
        if b2 is None:
            bk = op.apply(b1, transpose=True, alpha=2.0, out=out)
        else:
            bk = op.step(b1, b2, transpose=True, out=out)
            if recycle:
                pool.append(b2)  # dead now
        b2, b1 = b1, add_grad(bk, k)
    out = op.apply(b1, transpose=True, out=pool.pop() if pool else None)
    add_grad(out, 0)
    if b2 is not None:
        out.sub_(b2)
    return out


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

        def add_grad(acc, k):
            acc.view(n, b, f).add_(grad[:, :, k])
            return acc

        def first():  # a new tensor: the recurrence recycles it
            return grad[:, :, K - 1].clone(memory_format=torch.contiguous_format).view(n, b * f)

        return _terms_backward(ctx.op, first, add_grad, K).view(n, b, f), None, None


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
    """The whole filter, :math:`\\sum_k T_k(\\tilde{L}) x \\Theta_k + b`, in the cheaper of two
    forms for its widths. Narrowing or keeping the width (:math:`F_{out} \\le F`), one product
    per term accumulates the projection (:math:`[NB, F] \\times [F, F_{out}]`) and the backward
    adds each term's gradient :math:`G_k = g \\Theta_k^\\top` into Clenshaw's recurrence as it
    goes: no tensor of the K terms side by side. Widening, the K terms are stacked [N, B, K, F]
    and projected by one product, which reads the narrow terms rather than the wide output K
    times.

    The terms are kept for the weights' gradient, then serve as the recurrence's buffers (a
    backward through the graph again, ``retain_graph=True``, recomputes them). With
    :obj:`keep` false, only x and the weights are kept: the backward runs the recursion again,
    K - 1 more sparse products for about K B F floats less per node.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, op, K: int, keep: bool) -> Tensor:
        n, b, f = x.shape
        ctx.stacked = weight.size(0) > f
        if ctx.stacked:
            terms = _terms(op, x, K).view(n * b, K * f)
            out = terms.mm(weight.t()) if bias is None else torch.addmm(bias, terms, weight.t())
            kept = [terms] if keep else []
        else:
            out, kept = None, []
            for k, t in enumerate(_iter_terms(op, x.view(n, b * f), K)):
                rows, w_k = t.view(n * b, f), weight[:, k * f : (k + 1) * f].t()
                if out is None:
                    out = rows.mm(w_k) if bias is None else torch.addmm(bias, rows, w_k)
                else:
                    out.addmm_(rows, w_k)
                if k > 0 and keep:
                    kept.append(t)
        ctx.op, ctx.K, ctx.has_bias = op, K, bias is not None
        # Stored on ctx, not saved: the backward takes them as its buffers.
        ctx.terms = kept or None
        ctx.save_for_backward(x, weight)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        terms, ctx.terms = ctx.terms, None  # a second backward recomputes them
        op, K = ctx.op, ctx.K
        n, b, f = x.shape
        xs, grad = x.view(n, b * f), grad.contiguous()
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            grad_t = grad.t()
            if terms is not None and ctx.stacked:
                grad_weight = grad_t.mm(terms[0])
            else:
                every = [xs, *terms] if terms is not None else _iter_terms(op, xs, K)
                grad_weight = torch.cat([grad_t.mm(t.view(n * b, f)) for t in every], dim=1)
        if ctx.needs_input_grad[2] and ctx.has_bias:
            grad_bias = grad.sum(0)
        if ctx.needs_input_grad[0]:
            if ctx.stacked:
                # The terms' gradients [N, B, K, F] in one product; the stack, dead now, gives
                # the recurrence K buffers of [N, B F].
                grad_terms = grad.mm(weight).view(n, b, K, f)
                buffers = terms[0].view(K, n, b * f).unbind(0) if terms is not None else ()

                def add_grad(acc, k):
                    acc.view(n, b, f).add_(grad_terms[:, :, k])
                    return acc

                def first():
                    return grad_terms[:, :, K - 1].clone(memory_format=torch.contiguous_format)

            else:
                buffers = terms or ()

                def add_grad(acc, k):  # acc [N, B F] += G_k, by the product itself
                    acc.view(n * b, f).addmm_(grad, weight[:, k * f : (k + 1) * f])
                    return acc

                def first():
                    return grad.mm(weight[:, (K - 1) * f :])

            grad_x = _terms_backward(op, lambda: first().view(n, b * f), add_grad, K, buffers)
            grad_x = grad_x.view(n, b, f)
        return grad_x, grad_weight, grad_bias, None, None, None


def chebyshev_filter(
    op: ChebyshevOperator,
    x: Tensor,
    K: int,
    weight: Tensor,
    bias: Optional[Tensor],
    recompute: bool = False,
) -> Tensor:
    """:math:`\\sum_k T_k(\\tilde{L}) x \\Theta_k + b` [N B, F_out] of x [N, B, F], with
    :obj:`weight` [F_out, K F] (the :math:`\\Theta_k^\\top` side by side): the product of
    :func:`chebyshev_basis` with the weights, without forming it; with :obj:`recompute`, the
    terms are recomputed in the backward rather than kept."""
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias)
    )
    return _ChebyshevFilter.apply(x.contiguous(), weight, bias, op, K, needs_grad and not recompute)
