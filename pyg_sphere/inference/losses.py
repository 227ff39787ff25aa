r"""Information-maximising losses: train any model to compress maps into summaries that keep
the Fisher information on the parameters (IMNN), or to output a Gaussian posterior.

The Fisher matrix of a summary :math:`s \in \mathbb{R}^d` under a Gaussian likelihood with a
parameter-independent covariance is :math:`F = J^\top C^{-1} J`, with
:math:`J = \partial \langle s \rangle / \partial \theta` (:math:`d \times p`) and :math:`C` the
covariance of :math:`s` (see :mod:`pyg_sphere.inference.fisher`). Here both are estimated from
a batch of summaries, differentiably, so that :math:`-\ln \det F` can be minimised by gradient
descent through the network that produced them (Charnock, Lavaux & Wandelt 2018; Makinen et
al. 2021): :math:`J` by central finite differences over "twins", simulations at
:math:`\theta \pm \delta_a e_a` that share the random draws (seeds) of a fiducial simulation, so
that the noise cancels in the difference; :math:`C` from the fiducial simulations. A typical
training step:

.. code-block:: python

    s, s_plus, s_minus = model(x), model(x_plus), model(x_minus)  # [n, d], [n, p, d] twice
    loss = fisher_information_loss(s, s_plus, s_minus, step)
    loss.backward()
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .._validate import check_positive

__all__ = ["summary_fisher", "fisher_information_loss", "gaussian_nll_loss"]

StepLike = Union[Tensor, Sequence[float], float]


def summary_fisher(
    fiducial: Tensor,
    plus: Tensor,
    minus: Tensor,
    step: StepLike,
    *,
    hartlap: bool = True,
    fiducial_draws: Optional[Tensor] = None,
    plus_draws: Optional[Tensor] = None,
    minus_draws: Optional[Tensor] = None,
) -> Tensor:
    r"""The Fisher matrix :math:`F = J^\top C^{-1} J` of a batch of summaries, differentiable.

    :math:`J = \frac{1}{m} \sum_i (s^+_{ia} - s^-_{ia}) / (2 \delta_a)` (:math:`d \times p`) is
    the mean central difference over the twins and :math:`C` the sample covariance
    (``ddof=1``) of the :math:`n` fiducial summaries; :math:`F` is what
    :func:`pyg_sphere.inference.fisher_matrix` computes from numpy arrays, here in torch so
    that gradients flow back to the summaries. The algebra runs in float64 (the inverse of a
    covariance loses digits in float32) and the result has the summaries' dtype.

    The Hartlap, Simon & Schneider (2007) factor :math:`h = (n - d - 2)/(n - 1)` multiplies
    :math:`C^{-1}` by default: :math:`C^{-1}` estimated from :math:`n` samples is biased high
    by :math:`1/h`, so without it the Fisher information, and any figure of merit quoted from
    it, is overestimated (by 11% for :math:`n = 100`, :math:`d = 10`). It is a constant factor,
    so it does not change the gradients of :func:`fisher_information_loss`.

    Args:
        fiducial (torch.Tensor): Summaries of :math:`n` simulations at the fiducial parameters.
        plus (torch.Tensor): :obj:`plus[i, a]` is the summary of realisation :math:`i` (same
            random draws as :obj:`fiducial[i]`) at :math:`\theta + \delta_a e_a`. There may be
            fewer twins than fiducial simulations (:math:`m \le n`): they pair with the first
            :math:`m` fiducial ones. (Note the layout: :func:`~pyg_sphere.inference.fisher_matrix`
            takes ``[p, m, d]``; pass :obj:`plus.transpose(0, 1)` there.)
        minus (torch.Tensor): The same at :math:`\theta - \delta_a e_a`.
        step (torch.Tensor or sequence of float): The steps :math:`\delta_a > 0`, one per
            parameter.
        hartlap (bool): Multiply :math:`C^{-1}` by the Hartlap factor. (default: :obj:`True`)
        fiducial_draws (torch.Tensor, optional): Integer ids (e.g. seeds) of the random draws
            of each fiducial simulation. (default: :obj:`None`)
        plus_draws (torch.Tensor, optional): Ids of the draws of each :obj:`plus` simulation;
            checked against :obj:`minus_draws` (each pair must share its draw) and against
            :obj:`fiducial_draws` if given. (default: :obj:`None`)
        minus_draws (torch.Tensor, optional): Ids of the draws of each :obj:`minus`
            simulation. (default: :obj:`None`)

    Returns:
        torch.Tensor: The symmetric Fisher matrix :math:`F`.

    Raises:
        ValueError: shapes that do not match (naming the expected layout), non-finite
            summaries (naming the input and the first bad entry), fewer than :math:`d + 3`
            fiducial simulations, a summary component that is constant over the fiducial
            simulations (naming it), components that are linear combinations of others, a
            step that is not positive, or twins whose draws do not match.
        FloatingPointError: the covariance overflows (summaries too large: diverged).

    Shapes:
        - **fiducial:** :math:`(n, d)`, :math:`n \ge d + 3`
        - **plus, minus:** :math:`(m, p, d)`, :math:`1 \le m \le n`
        - **step:** :math:`(p)`
        - **fiducial_draws:** :math:`(n)`; **plus_draws, minus_draws:** :math:`(m, p)`
        - **output:** :math:`(p, p)`

    Example::

        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> noise = torch.randn(5000, 2, generator=g, dtype=torch.float64)  # s = theta + noise
        >>> step = torch.tensor([0.1, 0.1], dtype=torch.float64)
        >>> plus = noise[:, None] + torch.diag(step)  # realisation i at theta + step_a e_a
        >>> minus = noise[:, None] - torch.diag(step)
        >>> fisher = summary_fisher(noise, plus, minus, step)  # unit noise: F = I
        >>> torch.allclose(fisher, torch.eye(2, dtype=torch.float64), atol=0.05)
        True
    """
    fiducial, plus, minus, step = _check_inputs(
        fiducial, plus, minus, step, fiducial_draws, plus_draws, minus_draws
    )
    fisher, _ = _fisher_and_covariance(fiducial, plus, minus, step, hartlap)
    return fisher.to(fiducial.dtype)


def fisher_information_loss(
    fiducial: Tensor,
    plus: Tensor,
    minus: Tensor,
    step: StepLike,
    *,
    regularization: float = 1.0,
    closeness: Optional[float] = 0.1,
    hartlap: bool = True,
    fiducial_draws: Optional[Tensor] = None,
    plus_draws: Optional[Tensor] = None,
    minus_draws: Optional[Tensor] = None,
) -> Tensor:
    r"""The information-maximising loss :math:`-\ln \det F + r(\Lambda_C)\,\Lambda_C` of the
    IMNN (Charnock, Lavaux & Wandelt 2018; Makinen et al. 2021).

    :math:`F` is :func:`summary_fisher` of the batch. Minimising :math:`-\ln \det F` maximises
    the volume of the Fisher information, i.e. shrinks the Cramér-Rao bound on every parameter
    together; it is the same objective as the determinant loss
    :math:`\ln \det C - 2 \ln |\det J|` used when :math:`d = p` (e.g. Fluri et al. 2022).

    :math:`\det F` is unchanged when the summary goes through any invertible affine map
    :math:`s \mapsto A s + b` (:math:`J \to A J`, :math:`C \to A C A^\top`), so the loss alone
    leaves the scale and orientation of the summary free to drift (and the covariance free to
    grow or collapse numerically). The regulariser fixes the scale:

    .. math::
        \Lambda_C = \|C - I\|_F^2 + \|C^{-1} - I\|_F^2,

    zero only when the summaries are whitened (:math:`C = I`, up to a rotation of the
    summary space). The two terms keep :math:`C` from growing and from shrinking, each
    quadratically. The IMNN package uses unsquared norms; squared ones are smooth at
    :math:`C = I`, where unsquared norms have no gradient. The offset :math:`b` (the
    fiducial mean of the summaries) affects neither term and stays free; subtract the
    fiducial mean when a centred summary is wanted.

    With :obj:`closeness` :math:`\epsilon` the strength adapts as in the IMNN, so that the
    regulariser switches itself off once the covariance is close to the identity and the
    loss is then the Fisher information alone:

    .. math::
        r(\Lambda_C) = \frac{\lambda \Lambda_C}{\Lambda_C + \exp(-\alpha \Lambda_C)}, \qquad
        \alpha = -\ln\!\big(\epsilon(\lambda - 1) + \epsilon^2 / (1 + \epsilon)\big) / \epsilon,

    which tends to :math:`\lambda` for :math:`\Lambda_C \gg \epsilon`, is
    :math:`\lambda / (\lambda + \epsilon / (1 + \epsilon))` (about 1) at
    :math:`\Lambda_C = \epsilon` and vanishes as :math:`\lambda \Lambda_C` below (the
    gradient flows through :math:`r` too, as in the IMNN; :math:`\alpha` needs
    :math:`\lambda > 1 - \epsilon / (1 + \epsilon)`). With :obj:`closeness=None` the
    strength is the constant :math:`\lambda`.

    The default :math:`\lambda = 1` is weaker than the :math:`\lambda = 10` of the IMNN's
    examples (which square no norm): the regulariser is evaluated on the batch covariance,
    whose sampling noise enters its gradient in proportion to :math:`\lambda`. With
    :math:`\lambda = 10`, a linear compressor of linear-Gaussian data (batches of 256, Adam)
    reached 0.80-0.96 of the optimal :math:`\det F` in 800 steps against 0.999 with
    :math:`\lambda = 1`, which still whitens the summaries (:math:`C \approx I` to a few
    percent) from any starting scale.

    Args:
        fiducial (torch.Tensor): Summaries of the fiducial simulations (see
            :func:`summary_fisher`).
        plus (torch.Tensor): Summaries of the twins at :math:`\theta + \delta_a e_a`.
        minus (torch.Tensor): Summaries of the twins at :math:`\theta - \delta_a e_a`.
        step (torch.Tensor or sequence of float): The steps :math:`\delta_a > 0`.
        regularization (float): The strength :math:`\lambda \ge 0` of the covariance
            regulariser; :obj:`0` turns it off. (default: :obj:`1.0`)
        closeness (float, optional): The :math:`\epsilon > 0` of the adaptive strength, or
            :obj:`None` for the constant strength :math:`\lambda`. (default: :obj:`0.1`)
        hartlap (bool): Apply the Hartlap factor to :math:`F` (see :func:`summary_fisher`; a
            constant shift of the loss, which then reads :math:`-\ln \det` of an unbiased
            Fisher estimate). (default: :obj:`True`)
        fiducial_draws, plus_draws, minus_draws (torch.Tensor, optional): Ids of the random
            draws, checked as in :func:`summary_fisher`. (default: :obj:`None`)

    Returns:
        torch.Tensor: The scalar loss, in the summaries' dtype.

    Raises:
        ValueError: bad input, as :func:`summary_fisher`, or a negative :obj:`regularization`
            or a :obj:`closeness` that is not positive.
        FloatingPointError: :math:`\ln \det F` is not finite: :math:`F` is singular (the
            summaries do not respond to some parameter) or training diverged.

    Shapes:
        - **fiducial:** :math:`(n, d)`, :math:`n \ge d + 3`
        - **plus, minus:** :math:`(m, p, d)`, :math:`1 \le m \le n`
        - **step:** :math:`(p)`
        - **output:** :math:`()`

    Example::

        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(1000, 5, generator=g)  # data = theta * (1, 1, 1, 1, 1) + noise
        >>> step = torch.tensor([0.1])
        >>> x_plus, x_minus = (x + 0.1)[:, None], (x - 0.1)[:, None]  # [n, p = 1, 5]
        >>> model = torch.nn.Linear(5, 1)
        >>> loss = fisher_information_loss(model(x), model(x_plus), model(x_minus), step)
        >>> loss.backward()  # minimise: the Fisher information of model(x) on theta grows
        >>> loss.shape, model.weight.grad.shape
        (torch.Size([]), torch.Size([1, 5]))
    """
    check_positive(
        "regularization", regularization, allow_zero=True, hint="0 turns the regulariser off"
    )
    if closeness is not None:
        closeness = check_positive("closeness (None for a constant strength)", closeness)
        if regularization > 0 and regularization <= 1 - closeness / (1 + closeness):
            raise ValueError(
                f"the adaptive strength needs regularization > 1 - closeness / (1 + closeness) "
                f"= {1 - closeness / (1 + closeness):.3g}, got {regularization}; use a larger "
                "regularization, or closeness=None for a constant strength"
            )
    fiducial, plus, minus, step = _check_inputs(
        fiducial, plus, minus, step, fiducial_draws, plus_draws, minus_draws
    )
    fisher, cov = _fisher_and_covariance(fiducial, plus, minus, step, hartlap)
    sign, logdet = torch.linalg.slogdet(fisher)
    if not (bool(torch.isfinite(logdet.detach())) and float(sign.detach()) > 0):
        raise FloatingPointError(_singular_fisher_message(fisher))
    loss = -logdet
    if regularization > 0:
        eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        lam_c = (cov - eye).square().sum() + (torch.linalg.inv(cov) - eye).square().sum()
        if closeness is None:
            strength = regularization
        else:
            eps = closeness
            alpha = -math.log(eps * (regularization - 1) + eps**2 / (1 + eps)) / eps
            strength = regularization * lam_c / (lam_c + torch.exp(-alpha * lam_c))
        loss = loss + strength * lam_c
    if not bool(torch.isfinite(loss.detach())):
        raise FloatingPointError(
            "the covariance regulariser is not finite: the summaries' covariance overflowed; "
            "training diverged (lower the learning rate, or normalise the network's inputs)"
        )
    return loss.to(fiducial.dtype)


def gaussian_nll_loss(mean: Tensor, cholesky_params: Tensor, theta: Tensor) -> Tensor:
    r"""The mean negative log-likelihood of :obj:`theta` under Gaussians
    :math:`\mathcal{N}(\mu, L L^\top)` whose mean and Cholesky factor a network outputs.

    Trained on :math:`(\theta, x)` pairs from the prior, a network that outputs
    :math:`(\mu(x), L(x))` learns a Gaussian approximation of the posterior
    :math:`p(\theta \mid x)` (the minimum of the expected loss is the posterior when it is
    Gaussian). :math:`L` is lower triangular, filled row by row from :obj:`cholesky_params`
    (:math:`L_{00}, L_{10}, L_{11}, L_{20}, \dots`); its diagonal is the exponential of the
    corresponding parameters, so every output of the network gives a valid covariance:

    .. math::
        -\ln p(\theta) = \tfrac12 \|L^{-1}(\theta - \mu)\|^2 + \sum_a \ln L_{aa}
        + \tfrac{p}{2} \ln 2\pi.

    Args:
        mean (torch.Tensor): Posterior means :math:`\mu`.
        cholesky_params (torch.Tensor): The :math:`p(p+1)/2` entries of :math:`L` per sample,
            log-diagonal.
        theta (torch.Tensor): True parameters.

    Returns:
        torch.Tensor: The scalar mean over the batch.

    Shapes:
        - **mean, theta:** :math:`(n, p)`
        - **cholesky_params:** :math:`(n, p(p+1)/2)`
        - **output:** :math:`()`

    Example::

        >>> import math, torch
        >>> mean, theta = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])
        >>> params = torch.tensor([[math.log(2.0), 0.0, 0.0]])  # L = diag(2, 1)
        >>> loss = gaussian_nll_loss(mean, params, theta)  # (1/2)(1/2)^2 + ln 2 + ln 2 pi
        >>> round(loss.item(), 4), round(0.125 + math.log(2) + math.log(2 * math.pi), 4)
        (2.656, 2.656)
    """
    for name, value in (("mean", mean), ("cholesky_params", cholesky_params), ("theta", theta)):
        if not isinstance(value, Tensor) or value.ndim != 2:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a 2-D tensor [n, ...], got {shape}")
    n, p = mean.shape
    if theta.shape != mean.shape:
        raise ValueError(
            f"theta must be [n, p] like mean, {tuple(mean.shape)}, got {tuple(theta.shape)}"
        )
    if cholesky_params.shape != (n, p * (p + 1) // 2):
        raise ValueError(
            f"cholesky_params must be [n, p(p+1)/2] = [{n}, {p * (p + 1) // 2}] (the lower "
            f"triangle of L row by row), got {tuple(cholesky_params.shape)}"
        )
    rows, cols = torch.tril_indices(p, p, device=mean.device)
    diagonal = rows == cols
    log_diag = cholesky_params[:, diagonal]
    entries = torch.where(diagonal, cholesky_params.exp(), cholesky_params)
    tril = mean.new_zeros(n, p, p)
    tril[:, rows, cols] = entries
    # L^-1 (theta - mu) by triangular solve: no explicit inverse.
    z = torch.linalg.solve_triangular(tril, (theta - mean).unsqueeze(-1), upper=False)
    nll = 0.5 * z.squeeze(-1).square().sum(-1) + log_diag.sum(-1) + 0.5 * p * math.log(2 * math.pi)
    return nll.mean()


def _check_inputs(fiducial, plus, minus, step, fiducial_draws, plus_draws, minus_draws):
    for name, value, ndim, layout in (
        ("fiducial", fiducial, 2, "[n, d]"),
        ("plus", plus, 3, "[m, p, d]"),
        ("minus", minus, 3, "[m, p, d]"),
    ):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(value).__name__}")
        if value.ndim != ndim:
            raise ValueError(f"{name} must be {layout}, got shape {tuple(value.shape)}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {value.dtype}")
    n, d = fiducial.shape
    step = torch.as_tensor(step, device=fiducial.device).to(torch.float64).reshape(-1)
    p = step.numel()
    if plus.shape != minus.shape:
        raise ValueError(
            f"plus and minus must have the same shape [m, p, d], got {tuple(plus.shape)} and "
            f"{tuple(minus.shape)}"
        )
    m = plus.shape[0]
    if plus.shape[1:] != (p, d) or m == 0:
        hint = ""
        if plus.shape[0] == p and plus.shape[2] == d and plus.shape[1] != p:
            hint = (
                "; this looks like the [p, m, d] layout of fisher_matrix: pass "
                "plus.transpose(0, 1) and minus.transpose(0, 1)"
            )
        raise ValueError(
            f"plus and minus must be [m, p, d] = [m, {p}, {d}] with 1 <= m (p = len(step) "
            f"parameters, d = fiducial.shape[1] summary components), got {tuple(plus.shape)}"
            f"{hint}"
        )
    if m > n:
        raise ValueError(
            f"plus and minus hold {m} twins but fiducial only {n} simulations: each twin pairs "
            "with the fiducial simulation of the same index, so m <= n"
        )
    if not bool(torch.isfinite(step).all() and (step > 0).all()):
        raise ValueError(f"every step must be positive and finite, got {step.tolist()}")
    for name, value in (("fiducial", fiducial), ("plus", plus), ("minus", minus)):
        bad = ~torch.isfinite(value.detach())
        if bool(bad.any()):
            first = [int(i) for i in bad.nonzero()[0]]
            where = (
                "realisation {}, component {}"
                if value.ndim == 2
                else ("realisation {}, parameter {}, component {}")
            )
            raise ValueError(
                f"{name} contains {int(bad.sum())} NaN or infinite value(s) (the first at "
                f"{where.format(*first)}): the summaries must be finite; if a network made "
                "them, training has diverged (lower the learning rate) or its input is bad"
            )
    if n < d + 3:
        raise ValueError(
            f"{n} fiducial simulations are too few for a {d}-component summary: the covariance "
            f"needs n >= d + 3 = {d + 3} (and n >> d for a precise inverse); use more "
            "simulations per batch or fewer summary components"
        )
    _check_draws(n, m, p, fiducial_draws, plus_draws, minus_draws)
    return fiducial, plus, minus, step


def _check_draws(n, m, p, fiducial_draws, plus_draws, minus_draws):
    if plus_draws is None and minus_draws is None:
        if fiducial_draws is not None:
            raise ValueError(
                "fiducial_draws alone checks nothing: also give plus_draws and minus_draws "
                "(the draw ids of the twins), or none of the three"
            )
        return
    if plus_draws is None or minus_draws is None:
        raise ValueError("give plus_draws and minus_draws together (the draw ids of both twins)")
    draws = {}
    for name, value, shape in (
        ("fiducial_draws", fiducial_draws, (n,)),
        ("plus_draws", plus_draws, (m, p)),
        ("minus_draws", minus_draws, (m, p)),
    ):
        if value is None:
            continue
        value = torch.as_tensor(value)
        if value.is_floating_point() or value.is_complex() or tuple(value.shape) != shape:
            raise ValueError(
                f"{name} must be an integer tensor of shape {list(shape)} (the id of the random "
                f"draw of each simulation), got {value.dtype} {tuple(value.shape)}"
            )
        draws[name] = value.cpu()
    bad = (draws["plus_draws"] != draws["minus_draws"]).nonzero()
    if len(bad):
        i, a = (int(v) for v in bad[0])
        raise ValueError(
            f"the plus and minus twins do not share their random draws at {len(bad)} place(s), "
            f"e.g. realisation {i}, parameter {a}: plus_draws = "
            f"{int(draws['plus_draws'][i, a])}, minus_draws = {int(draws['minus_draws'][i, a])}. "
            "The finite difference only cancels the noise when both twins use the same draw: "
            "simulate them with the same seed (and keep the batches in the same order)"
        )
    if "fiducial_draws" in draws:
        expected = draws["fiducial_draws"][:m, None].expand(m, p)
        bad = (draws["plus_draws"] != expected).nonzero()
        if len(bad):
            i, a = (int(v) for v in bad[0])
            raise ValueError(
                f"twin {i} (parameter {a}) does not share the draw of fiducial simulation {i}: "
                f"plus_draws = {int(draws['plus_draws'][i, a])}, fiducial_draws = "
                f"{int(draws['fiducial_draws'][i])} ({len(bad)} mismatch(es)). plus[i] and "
                "minus[i] must be realisation i of fiducial; keep the three batches aligned"
            )


def _fisher_and_covariance(fiducial, plus, minus, step, hartlap):
    """F (float64) and the raw sample covariance C (float64) of checked inputs."""
    n, d = fiducial.shape
    fid = fiducial.to(torch.float64)
    jacobian = (plus.to(torch.float64) - minus.to(torch.float64)).mean(0) / (2 * step[:, None])
    jacobian = jacobian.T  # [d, p]
    centred = fid - fid.mean(0)
    cov = centred.T @ centred / (n - 1)
    if not bool(torch.isfinite(cov.detach()).all() and torch.isfinite(jacobian.detach()).all()):
        raise FloatingPointError(
            "the summaries' covariance or mean derivative overflowed (summaries of order "
            f"{float(fid.detach().abs().max()):.1e}): training diverged, or the summaries need "
            "rescaling before the Fisher matrix can be computed"
        )
    scale = cov.diagonal().sqrt()
    with torch.no_grad():
        # Constant up to rounding, relative to each component's own size (components may
        # differ by many orders of magnitude: spectra ~1e-5, counts ~100).
        constant = (scale <= 1e-12 * fid.abs().amax(0)).nonzero().flatten().tolist()
    if constant:
        raise ValueError(
            f"the covariance is singular: summary component(s) {constant} do not vary over the "
            "fiducial simulations; drop them (e.g. empty histogram bins), or, for a network, "
            "its output unit is dead (e.g. a ReLU before the output layer; reinitialise it)"
        )
    # Work with the correlation matrix: its conditioning says whether C can be inverted,
    # whatever the units of the components.
    corr = cov / (scale[:, None] * scale[None, :])
    with torch.no_grad():
        eig = torch.linalg.eigvalsh(corr)
        degenerate = not bool(eig[0] > 1e-10 * eig[-1])
    if degenerate:
        cond = float(eig[-1] / eig[0].clamp_min(1e-300))
        raise ValueError(
            f"the covariance is singular (condition number {cond:.1e}): some summary "
            "components are linear combinations of others (e.g. normalised histogram bins "
            "that sum to 1, or more network outputs than the data constrain); drop one of "
            "them or use fewer components"
        )
    chol = torch.linalg.cholesky(corr)
    j = jacobian / scale[:, None]
    fisher = j.T @ torch.cholesky_solve(j, chol)
    if hartlap:
        fisher = fisher * ((n - d - 2) / (n - 1))
    return 0.5 * (fisher + fisher.T), cov


def _singular_fisher_message(fisher: Tensor) -> str:
    diag = fisher.detach().diagonal()
    flat = (diag <= 0).nonzero().flatten().tolist()
    if not bool(torch.isfinite(fisher).all()):
        return (
            "ln det F is not finite: the Fisher matrix overflowed; training diverged (lower "
            "the learning rate, or check that the summaries stay bounded)"
        )
    if flat:
        return (
            f"ln det F = -inf: the summaries do not respond to parameter(s) {flat} (plus and "
            "minus twins give the same summaries); check the steps, that the twins were "
            "simulated at theta +- step, and that the network is not saturated"
        )
    return (
        "ln det F = -inf: the Fisher matrix is singular, the summaries respond to the "
        "parameters only along fewer directions than there are parameters (use at least as "
        "many summary components as parameters, and check that the parameters are not "
        "degenerate at these steps)"
    )
