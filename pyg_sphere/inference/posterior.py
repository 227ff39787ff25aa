r"""Neural posterior estimation over a prior box, and coverage tests of posteriors.

:class:`NeuralPosterior` is a conditional normalising flow (:mod:`zuko`) that learns
:math:`p(\theta \mid s)` from pairs :math:`(\theta_i, s_i)`, :math:`\theta_i` drawn from a
uniform prior box (e.g. :func:`pyg_sphere.datasets.simulate_prior_maps`) and :math:`s_i` the
summaries of their maps: power spectra, peak counts, or a network's outputs. Minimising the mean
:math:`-\ln q(\theta_i \mid s_i)` over the pairs fits the posterior (for fixed summaries, with
:meth:`NeuralPosterior.fit`); training the summary network through the same loss maximises a
variational lower bound on the mutual information between summaries and parameters (VMIM,
Jeffrey, Alsing & Lanusse 2021), which makes the summaries as informative as the flow can use.

:func:`expected_coverage` checks a posterior on held-out simulations with TARP (Lemos, Coogan
et al. 2023): a calibrated posterior's :math:`\alpha`-credible regions hold the true parameters
a fraction :math:`\alpha` of the time.

.. code-block:: python

    posterior = NeuralPosterior(2, summaries.shape[1], bounds=[[0.1, 0.5], [0.5, 1.2]])
    posterior.fit(theta, summaries)
    samples = posterior.sample(observed_summary, 10000)  # [10000, 2]
    expected_coverage(posterior.sample(test_summaries, 1000), test_theta, bounds=posterior.bounds)
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .._validate import as_float_array, check_int, check_positive

__all__ = ["NeuralPosterior", "expected_coverage"]

BoundsLike = Union[Tensor, np.ndarray, Sequence[Sequence[float]]]

# The logit of a uniform variable on (0, 1) is standard logistic: mean 0, std pi / sqrt(3).
_LOGISTIC_STD = math.pi / math.sqrt(3.0)


def _check_bounds(bounds, num_parameters: Optional[int] = None) -> Tensor:
    if isinstance(bounds, Tensor):
        b = bounds.detach().cpu().to(torch.float64)
    else:
        b = torch.as_tensor(np.asarray(bounds, dtype=np.float64))
    if b.ndim != 2 or b.shape[1] != 2 or (num_parameters is not None and len(b) != num_parameters):
        p = "p" if num_parameters is None else num_parameters
        raise ValueError(
            f"bounds must be the prior box [{p}, 2] (lower, upper) per parameter, got shape "
            f"{tuple(b.shape)}"
        )
    if not bool(torch.isfinite(b).all()) or not bool((b[:, 1] > b[:, 0]).all()):
        raise ValueError(
            f"bounds must be finite with lower < upper for every parameter, got {b.tolist()}"
        )
    return b


class NeuralPosterior(torch.nn.Module):
    r"""A conditional normalising flow :math:`q(\theta \mid s)` for the posterior of
    :math:`p` parameters given a :math:`d`-component summary, supported on a prior box.

    The box is built in: the flow models :math:`u = \mathrm{logit}((\theta - l)/(h - l))`,
    which maps the box :math:`(l, h)` onto :math:`\mathbb{R}^p`, and the change of variables

    .. math::
        \ln q(\theta \mid s) = \ln q_u(u \mid s) - \sum_a \ln\big((h_a - l_a)\,
        y_a (1 - y_a)\big), \qquad y = (\theta - l)/(h - l),

    puts no mass outside the box: samples map back by the sigmoid, so they always lie inside
    it, and :math:`\ln q = -\infty` outside. (Rejection sampling would be the alternative; it
    wastes samples, and an unbounded flow's density does not integrate to one on the box.)
    For a uniform prior :math:`u` is standard logistic; :math:`u` and the summaries are
    standardised (buffers, fitted by :meth:`fit_standardization` or :meth:`fit`; until then
    :math:`u` uses the logistic moments and summaries pass unchanged), because zuko's splines
    act on :math:`[-5, 5]`.

    The flow (:mod:`zuko`): one masked autoregressive affine transform (a location and scale
    that depend on :math:`s`, which does most of the work when posteriors are much narrower
    than the box) followed by :obj:`transforms` autoregressive rational-quadratic spline
    transforms (as :class:`zuko.flows.NSF`) for non-Gaussian shapes; hyper-networks are MLPs
    with :obj:`hidden` features, conditioned on the summaries.

    Gradients flow through :meth:`log_prob` and :meth:`loss` into the summaries, so a
    summary network can be trained jointly with the flow through :meth:`loss` (VMIM);
    :meth:`sample` does not track gradients.

    Args:
        num_parameters (int): Number of parameters :math:`p`.
        summary_dim (int): Components :math:`d` of the summaries.
        bounds (array-like): The prior box, ``[p, 2]`` (lower, upper) per parameter.
        hidden (sequence of int): Hidden features of the hyper-networks.
            (default: :obj:`(64, 64)`)
        transforms (int): Spline transforms after the affine one. (default: :obj:`3`)
        bins (int): Spline bins per transform. (default: :obj:`8`)

    Attributes:
        bounds (torch.Tensor): The prior box :math:`(p, 2)`.
        flow (zuko.flows.Flow): The flow over standardised :math:`u`, conditioned on
            standardised summaries.
        history (dict): After :meth:`fit`: the training and validation losses per epoch
            (``"train"``, ``"val"``) and the epoch whose weights were kept (``"best_epoch"``);
            :obj:`None` before.

    Shapes:
        - **theta:** :math:`(*, p)`; **summaries:** :math:`(*, d)`, broadcast together
        - **log_prob output:** :math:`(*)`
        - **sample:** summaries :math:`(d)` to :math:`(S, p)`, or :math:`(m, d)` to
          :math:`(S, m, p)`

    Example::

        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> posterior = NeuralPosterior(2, 3, bounds=[[0.1, 0.5], [0.5, 1.2]], transforms=1)
        >>> theta = torch.tensor([[0.3, 0.8], [0.2, 1.0]])
        >>> posterior.log_prob(theta, torch.randn(2, 3)).shape
        torch.Size([2])
        >>> samples = posterior.sample(torch.randn(3), 100)
        >>> samples.shape, bool((samples[:, 0] > 0.1).all() and (samples[:, 0] < 0.5).all())
        (torch.Size([100, 2]), True)
    """

    def __init__(
        self,
        num_parameters: int,
        summary_dim: int,
        *,
        bounds: BoundsLike,
        hidden: Sequence[int] = (64, 64),
        transforms: int = 3,
        bins: int = 8,
    ):
        super().__init__()
        import zuko  # an optional dependency: pyg_sphere[inference]

        p = check_int("num_parameters", num_parameters, 1)
        d = check_int("summary_dim", summary_dim, 1)
        transforms = check_int("transforms", transforms, 0)
        bins = check_int("bins", bins, 2)
        hidden = tuple(check_int("every entry of hidden", h, 1) for h in hidden)
        box = _check_bounds(bounds, p).to(torch.get_default_dtype())
        self.num_parameters, self.summary_dim = p, d
        self.register_buffer("bounds", box)
        self.register_buffer("summary_mean", torch.zeros(d))
        self.register_buffer("summary_std", torch.ones(d))
        self.register_buffer("u_mean", torch.zeros(p))
        self.register_buffer("u_std", torch.full((p,), _LOGISTIC_STD))

        affine = zuko.flows.MaskedAutoregressiveTransform(p, d, hidden_features=hidden)
        splines = zuko.flows.NSF(p, d, transforms=transforms, bins=bins, hidden_features=hidden)
        self.flow = zuko.flows.Flow([affine, *splines.transform.transforms], splines.base)
        self.history: Optional[dict] = None

    # -- transforms between theta and the flow's variable ------------------------------------

    def _unbounded(self, theta: Tensor):
        """u = logit of the box-rescaled theta, standardised; the log |d z / d theta|; and
        whether each row lies in the box."""
        low, width = self.bounds[:, 0], self.bounds[:, 1] - self.bounds[:, 0]
        y = (theta - low) / width
        inside = ((y >= 0) & (y <= 1)).all(-1)
        # On the boundary (a prior draw can land on it in float32) the density stays finite.
        tiny = torch.finfo(y.dtype).eps
        y = y.clamp(tiny, 1 - tiny)
        u = torch.log(y) - torch.log1p(-y)
        z = (u - self.u_mean) / self.u_std
        log_jacobian = -(torch.log(y) + torch.log1p(-y) + torch.log(width * self.u_std)).sum(-1)
        return z, log_jacobian, inside

    def _context(self, summaries: Tensor) -> Tensor:
        return (summaries - self.summary_mean) / self.summary_std

    def _as_input(self, value, name: str, last: int) -> Tensor:
        value = torch.as_tensor(value, dtype=self.bounds.dtype, device=self.bounds.device)
        if value.ndim == 0 or value.shape[-1] != last:
            what = "parameters p" if name == "theta" else "summary components d"
            raise ValueError(
                f"{name} must be [..., {last}] ({last} {what}, as at construction), got shape "
                f"{tuple(value.shape)}"
            )
        bad = ~torch.isfinite(value.detach())
        if bool(bad.any()):
            first = [int(i) for i in bad.nonzero()[0]]
            raise ValueError(
                f"{name} contains {int(bad.sum())} NaN or infinite value(s), the first at index "
                f"{first}; remove those rows (or, for a network's outputs, training diverged)"
            )
        return value

    # -- the posterior -------------------------------------------------------------------

    def log_prob(self, theta: Tensor, summaries: Tensor) -> Tensor:
        r"""The posterior log-density :math:`\ln q(\theta \mid s)`, :math:`-\infty` outside
        the prior box; differentiable in :obj:`theta`, :obj:`summaries` and the flow."""
        theta = self._as_input(theta, "theta", self.num_parameters)
        summaries = self._as_input(summaries, "summaries", self.summary_dim)
        z, log_jacobian, inside = self._unbounded(theta)
        log_q = self.flow(self._context(summaries)).log_prob(z) + log_jacobian
        return torch.where(inside, log_q, torch.full_like(log_q, -math.inf))

    def loss(self, theta: Tensor, summaries: Tensor) -> Tensor:
        r"""The mean negative log posterior :math:`-\frac1n \sum_i \ln q(\theta_i \mid s_i)`
        of training pairs: the NPE loss, and the VMIM loss when the summaries come from a
        network trained through it. Every :obj:`theta` must lie in the prior box.

        Shapes:
            - **theta:** :math:`(n, p)`; **summaries:** :math:`(n, d)`
            - **output:** :math:`()`
        """
        theta = self._as_input(theta, "theta", self.num_parameters)
        summaries = self._as_input(summaries, "summaries", self.summary_dim)
        if theta.ndim != 2 or summaries.shape != (len(theta), self.summary_dim):
            raise ValueError(
                f"loss takes pairs: theta [n, {self.num_parameters}] and summaries "
                f"[n, {self.summary_dim}], got {tuple(theta.shape)} and {tuple(summaries.shape)}"
            )
        self._check_inside(theta)
        return -self.log_prob(theta, summaries).mean()

    def _check_inside(self, theta: Tensor) -> None:
        low, high = self.bounds[:, 0], self.bounds[:, 1]
        outside = ((theta < low) | (theta > high)).any(-1).nonzero().flatten()
        if len(outside):
            i = int(outside[0])
            raise ValueError(
                f"{len(outside)} training parameter vector(s) lie outside the prior box "
                f"{self.bounds.tolist()}, e.g. row {i}: {theta[i].tolist()}; the posterior has "
                "no mass there. Pass the box the parameters were drawn from as bounds"
            )

    @torch.no_grad()
    def sample(self, summaries: Tensor, num_samples: int) -> Tensor:
        r"""Draws :obj:`num_samples` parameter vectors from :math:`q(\theta \mid s)`, inside the
        prior box. Summaries ``[d]`` give ``[num_samples, p]``; ``[m, d]`` (one posterior per
        row) give ``[num_samples, m, p]``."""
        num_samples = check_int("num_samples", num_samples, 1)
        summaries = self._as_input(summaries, "summaries", self.summary_dim)
        if summaries.ndim > 2:
            raise ValueError(f"summaries must be [d] or [m, d], got shape {tuple(summaries.shape)}")
        z = self.flow(self._context(summaries)).sample((num_samples,))
        u = z * self.u_std + self.u_mean
        return self.bounds[:, 0] + (self.bounds[:, 1] - self.bounds[:, 0]) * torch.sigmoid(u)

    # -- fitting -------------------------------------------------------------------------

    @torch.no_grad()
    def fit_standardization(self, theta: Tensor, summaries: Tensor) -> "NeuralPosterior":
        """Sets the summaries' and the unbounded parameters' means and standard deviations
        from training pairs, ``[n, p]`` and ``[n, d]`` (:obj:`fit` calls it); returns
        ``self``."""
        theta, summaries = self._check_pairs(theta, summaries)
        std = summaries.std(0)
        constant = (std <= 1e-12 * summaries.abs().amax(0)).nonzero().flatten().tolist()
        if constant:
            raise ValueError(
                f"summary component(s) {constant} are constant over the training set: they "
                "carry no information; drop them"
            )
        z, _, _ = self._unbounded(theta)
        u = z * self.u_std + self.u_mean
        self.summary_mean.copy_(summaries.mean(0))
        self.summary_std.copy_(std)
        self.u_mean.copy_(u.mean(0))
        self.u_std.copy_(u.std(0).clamp_min(1e-6))
        return self

    def _check_pairs(self, theta, summaries):
        theta = self._as_input(theta, "theta", self.num_parameters)
        summaries = self._as_input(summaries, "summaries", self.summary_dim)
        if theta.ndim != 2 or summaries.ndim != 2 or len(theta) != len(summaries):
            raise ValueError(
                f"theta [n, {self.num_parameters}] and summaries [n, {self.summary_dim}] must "
                f"pair row by row, got {tuple(theta.shape)} and {tuple(summaries.shape)}"
            )
        if len(theta) < 2:
            raise ValueError(f"fitting needs at least 2 training pairs, got {len(theta)}")
        self._check_inside(theta)
        return theta, summaries

    def fit(
        self,
        theta: Tensor,
        summaries: Tensor,
        *,
        epochs: int = 300,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        val_fraction: float = 0.1,
        patience: int = 30,
        standardize: bool = True,
        seed: int = 0,
    ) -> "NeuralPosterior":
        r"""Trains the flow on fixed training pairs by minimising :meth:`loss` (Adam, cosine
        learning-rate decay); returns ``self``, in eval mode, with the weights of the epoch
        of lowest validation loss.

        Args:
            theta (torch.Tensor): Training parameters ``[n, p]``, inside the prior box.
            summaries (torch.Tensor): Their summaries ``[n, d]``. (Every method takes
                :obj:`theta` first, as in :math:`q(\theta \mid s)`.)
            epochs (int): Most passes over the training pairs. (default: :obj:`300`)
            batch_size (int): Pairs per step. (default: :obj:`256`)
            lr (float): Initial learning rate. (default: :obj:`1e-3`)
            weight_decay (float): Adam's L2 penalty. (default: :obj:`0.0`)
            val_fraction (float): Fraction of pairs held out for early stopping, in
                :math:`[0, 1)`; :obj:`0` trains on all and keeps the last epoch.
                (default: :obj:`0.1`)
            patience (int): Stop after this many epochs without a better validation loss.
                (default: :obj:`30`)
            standardize (bool): Call :meth:`fit_standardization` on the training pairs first.
                (default: :obj:`True`)
            seed (int): Seed of the validation split and of the batch order.
                (default: :obj:`0`)
        """
        epochs = check_int("epochs", epochs, 1)
        batch_size = check_int("batch_size", batch_size, 1)
        patience = check_int("patience", patience, 1)
        lr = check_positive("lr", lr)
        if not isinstance(val_fraction, numbers.Real) or not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        theta, summaries = self._check_pairs(theta, summaries)
        n = len(theta)
        generator = torch.Generator().manual_seed(check_int("seed", seed, 0))
        order = torch.randperm(n, generator=generator).to(theta.device)
        n_val = round(val_fraction * n) if val_fraction > 0 else 0
        if val_fraction > 0 and not 1 <= n_val <= n - 2:
            raise ValueError(
                f"val_fraction {val_fraction} of {n} pairs leaves no validation or training "
                "set; use more pairs or another fraction"
            )
        val, train = order[:n_val], order[n_val:]
        if standardize:
            self.fit_standardization(theta[train], summaries[train])

        optimizer = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
        history = {"train": [], "val": [], "best_epoch": None}
        best, best_state, waited = math.inf, None, 0
        self.train()
        for epoch in range(epochs):
            total = 0.0
            shuffled = train[torch.randperm(len(train), generator=generator).to(train.device)]
            for batch in shuffled.split(batch_size):
                loss = self.loss(theta[batch], summaries[batch])
                if not bool(torch.isfinite(loss.detach())):
                    raise FloatingPointError(
                        f"the training loss is not finite at epoch {epoch}: training diverged; "
                        "lower lr"
                    )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            schedule.step()
            history["train"].append(total / len(train))
            if n_val:
                with torch.no_grad():
                    current = float(self.loss(theta[val], summaries[val]))
                history["val"].append(current)
            else:
                current = history["train"][-1]
            if current < best:
                best, waited, history["best_epoch"] = current, 0, epoch
                best_state = copy.deepcopy(self.state_dict())
            else:
                waited += 1
                if waited >= patience:
                    break
        if n_val and best_state is not None:
            self.load_state_dict(best_state)
        self.history = history
        return self.eval()


def expected_coverage(
    samples,
    theta_true,
    levels: Sequence[float] = (0.68, 0.95),
    *,
    bounds: Optional[BoundsLike] = None,
    seed: int = 0,
) -> Dict[float, float]:
    r"""The expected coverage probability of a posterior's credible regions at each level,
    by TARP (Lemos, Coogan et al. 2023; the :mod:`tarp` package).

    For each of :math:`m` held-out simulations with true parameters :math:`\theta^*_j`,
    TARP draws a random reference point :math:`r_j` in the prior box and takes as the
    :math:`\alpha`-credible region the ball around :math:`r_j` that holds a fraction
    :math:`\alpha` of the posterior samples. The expected coverage at :math:`\alpha` is the
    fraction of simulations whose :math:`\theta^*_j` falls inside its region.

    How to read it: for a calibrated posterior the coverage is :math:`\approx \alpha` (within
    the binomial error :math:`\sqrt{\alpha(1 - \alpha)/m}`, 0.02 for :math:`m = 500` at
    0.68). At levels above 1/2, the usual 0.68 and 0.95, coverage below :math:`\alpha` means
    an overconfident (too narrow) or biased posterior, whose quoted errors are too small, and
    coverage above :math:`\alpha` an underconfident (too wide) one. (Below 1/2 the signs
    flip: TARP's regions are balls around points away from the posterior, so for a too narrow
    posterior the truth's credibility piles up near 0 and 1 and its coverage curve crosses
    the diagonal at 1/2: a posterior too narrow covers more than :math:`\alpha` at 0.1, less
    at 0.68 and 0.95; docs/benchmarks.md, section *Coverage of miscalibrated posteriors*,
    has the figures.) Random references make this a test of the whole
    posterior, not only of its marginals (TARP's coverage curve over all :math:`\alpha` is a
    necessary and sufficient test of calibration); a few levels summarise that curve.

    Parameters are rescaled to the unit box (by :obj:`bounds`, or by the range of
    :obj:`theta_true` when it is :obj:`None`) before distances are taken, so that each
    counts alike whatever its units. The result is deterministic for a given :obj:`seed`
    (the references), and numpy's global random state is left as it was (:mod:`tarp`
    reseeds it).

    Args:
        samples (torch.Tensor or numpy.ndarray): Posterior samples for each held-out
            simulation, e.g. :meth:`NeuralPosterior.sample` of the held-out summaries.
        theta_true (torch.Tensor or numpy.ndarray): The true parameters of each simulation.
        levels (sequence of float): Credibility levels in :math:`(0, 1)`.
            (default: :obj:`(0.68, 0.95)`)
        bounds (array-like, optional): The prior box ``[p, 2]``. (default: :obj:`None`)
        seed (int): Seed of the reference points. (default: :obj:`0`)

    Returns:
        dict: ``{level: expected coverage}``, floats.

    Shapes:
        - **samples:** :math:`(S, m, p)`, :math:`S \ge 2` samples per simulation
        - **theta_true:** :math:`(m, p)`, :math:`m \ge 10`

    Example::

        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> theta = torch.rand(500, 2, generator=g)
        >>> observed = theta + 0.01 * torch.randn(500, 2, generator=g)
        >>> exact = observed + 0.01 * torch.randn(1000, 500, 2, generator=g)  # true posterior
        >>> cov = expected_coverage(exact, theta, bounds=[[0, 1], [0, 1]])
        >>> abs(cov[0.68] - 0.68) < 0.05, abs(cov[0.95] - 0.95) < 0.05
        (True, True)
        >>> narrow = observed + 0.003 * torch.randn(1000, 500, 2, generator=g)  # overconfident
        >>> cov = expected_coverage(narrow, theta, bounds=[[0, 1], [0, 1]])
        >>> cov[0.68] < 0.6, cov[0.95] < 0.8
        (True, True)
    """
    import tarp  # an optional dependency: pyg_sphere[inference]

    samples = as_float_array(samples, "samples", 3, "[S, m, p] (samples, simulations, parameters)")
    theta_true = as_float_array(theta_true, "theta_true", 2, "[m, p]")
    num_samples, m, p = samples.shape
    if theta_true.shape != (m, p):
        raise ValueError(
            f"theta_true must be [m, p] = [{m}, {p}] to match samples [S, m, p] = "
            f"{list(samples.shape)}, got {list(theta_true.shape)}"
        )
    if num_samples < 2 or m < 10:
        raise ValueError(
            f"coverage needs S >= 2 samples for each of m >= 10 simulations (hundreds of both "
            f"for a useful estimate), got S = {num_samples}, m = {m}"
        )
    if isinstance(levels, numbers.Real):
        levels = (levels,)
    levels = tuple(float(a) for a in levels)
    if not levels or not all(0 < a < 1 for a in levels):
        raise ValueError(f"levels must be probabilities in (0, 1), got {levels}")
    if bounds is None:
        low, high = theta_true.min(0), theta_true.max(0)
        if not (high > low).all():
            raise ValueError(
                "theta_true does not vary in every parameter: pass the prior box as bounds"
            )
    else:
        box = _check_bounds(bounds, p).numpy()
        low, high = box[:, 0], box[:, 1]
    scale = high - low
    unit_samples, unit_theta = (samples - low) / scale, (theta_true - low) / scale
    references = np.random.default_rng(check_int("seed", seed, 0)).uniform(size=(m, p))

    state = np.random.get_state()
    try:
        ecp, alpha = tarp.get_tarp_coverage(
            unit_samples,
            unit_theta,
            references=references,
            metric="euclidean",
            num_alpha_bins=m,  # the finest grid: each bin edge is the fraction covered there
            norm=False,
            bootstrap=False,
        )
    finally:
        np.random.set_state(state)
    # ecp is the cumulative distribution of the credibility of the true parameters, at bin
    # edges that span their observed range; outside it the distribution is 0 or 1.
    return {a: float(np.interp(a, alpha, ecp, left=0.0, right=1.0)) for a in levels}
