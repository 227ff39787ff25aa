"""Information-maximising losses: the torch Fisher matrix against the numpy one, the training
oracle on linear-Gaussian data with a known Fisher matrix, and the errors on bad input."""

import math

import numpy as np
import pytest
import torch

from pyg_sphere.inference import (
    fisher_information_loss,
    fisher_matrix,
    gaussian_nll_loss,
    summary_fisher,
)

F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    # Small matrices: threads only add overhead (5x slower with 2 busy cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_batch(n=300, m=None, p=2, d=4, seed=0):
    """Non-linear, correlated summaries with twins sharing the fiducial draw."""
    g = torch.Generator().manual_seed(seed)
    m = n if m is None else m
    z = torch.randn(n, d, generator=g, dtype=F64) @ torch.randn(d, d, generator=g, dtype=F64)
    fid = z + 0.3 * z.square()
    response = torch.randn(p, d, generator=g, dtype=F64)
    step = torch.tensor([0.05, 0.02, 0.1][:p], dtype=F64)
    plus = fid[:m, None] + step[:, None] * response * (1 + 0.1 * z[:m, None].tanh())
    minus = fid[:m, None] - step[:, None] * response * (1 - 0.1 * z[:m, None].tanh())
    return fid, plus, minus, step


@pytest.mark.parametrize("hartlap", [True, False])
@pytest.mark.parametrize("m", [300, 120])
def test_summary_fisher_matches_the_numpy_fisher_matrix(hartlap, m):
    fid, plus, minus, step = random_batch(m=m)
    ours = summary_fisher(fid, plus, minus, step, hartlap=hartlap)
    # fisher_matrix takes the twins as [p, m, d]
    reference = fisher_matrix(
        fid.numpy(),
        plus.transpose(0, 1).numpy(),
        minus.transpose(0, 1).numpy(),
        step.numpy(),
        hartlap=hartlap,
    )
    assert ours.shape == (2, 2) and ours.dtype == F64
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-10)
    # the Hartlap factor is exactly (n - d - 2) / (n - 1)
    if hartlap:
        plain = summary_fisher(fid, plus, minus, step, hartlap=False)
        torch.testing.assert_close(ours, plain * (300 - 4 - 2) / 299)


def test_float32_summaries_give_a_float32_fisher_matrix_with_gradients():
    fid, plus, minus, step = (t.float() for t in random_batch())
    fid.requires_grad_(True)
    fisher = summary_fisher(fid, plus, minus, step.tolist())
    assert fisher.dtype == torch.float32
    fisher.trace().backward()
    assert fid.grad is not None and bool(torch.isfinite(fid.grad).all())
    assert float(fid.grad.abs().max()) > 0


def test_fisher_and_loss_gradients_are_exact():
    fid, plus, minus, step = random_batch(n=9, d=3)
    fid, plus, minus = (t.clone().requires_grad_(True) for t in (fid, plus, minus))
    assert torch.autograd.gradcheck(lambda *t: summary_fisher(*t, step), (fid, plus, minus))
    assert torch.autograd.gradcheck(
        lambda *t: fisher_information_loss(*t, step), (fid, plus, minus)
    )


def test_loss_is_minus_log_det_plus_the_covariance_regulariser():
    fid, plus, minus, step = random_batch()
    logdet = torch.logdet(summary_fisher(fid, plus, minus, step))
    loss = fisher_information_loss(fid, plus, minus, step, regularization=0.0)
    torch.testing.assert_close(loss, -logdet)

    # Whitened summaries (sample covariance exactly I): the regulariser is zero.
    centred = fid - fid.mean(0)
    white = torch.linalg.solve_triangular(
        torch.linalg.cholesky(centred.T @ centred / (len(fid) - 1)), centred.T, upper=False
    ).T
    assert torch.allclose(torch.cov(white.T), torch.eye(4, dtype=F64), atol=1e-12)
    w_plus, w_minus = plus - fid[:, None] + white[:, None], minus - fid[:, None] + white[:, None]
    w_logdet = torch.logdet(summary_fisher(white, w_plus, w_minus, step))
    torch.testing.assert_close(
        fisher_information_loss(white, w_plus, w_minus, step, closeness=None), -w_logdet
    )
    # Summaries scaled by 2: C = 4 I, Lambda_C = d (3^2 + 0.75^2); det F is unchanged.
    lam_c = 4 * (9 + 0.75**2)
    scaled = (2 * white, 2 * w_plus, 2 * w_minus)
    torch.testing.assert_close(
        fisher_information_loss(*scaled, step, regularization=3.0, closeness=None),
        -w_logdet + 3.0 * lam_c,
    )
    # Adaptive strength (IMNN): r = lam * L / (L + exp(-alpha L)).
    eps, lam = 0.1, 10.0
    alpha = -math.log(eps * (lam - 1) + eps**2 / (1 + eps)) / eps
    r = lam * lam_c / (lam_c + math.exp(-alpha * lam_c))
    torch.testing.assert_close(
        fisher_information_loss(*scaled, step, regularization=lam, closeness=eps),
        -w_logdet + r * lam_c,
    )


def test_training_a_linear_compressor_reaches_the_analytic_fisher_information():
    """The oracle: data x = A theta + n, n ~ N(0, Sigma), dim 16, p = 2, carry
    F = A^T Sigma^-1 A. A linear compressor to 2 summaries trained with the loss on fresh
    fiducial batches and their +- step twins (same noise draw) must keep >= 97% of det F,
    measured on independent samples (and exactly, for a linear map)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    dim, p = 16, 2
    a = torch.randn(dim, p, generator=g, dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=F64))
    sigma = q @ torch.diag(torch.logspace(-0.5, 0.5, dim, dtype=F64)) @ q.T  # correlated
    chol = torch.linalg.cholesky(sigma)
    analytic = a.T @ torch.linalg.solve(sigma, a)
    step = torch.tensor([0.05, 0.05], dtype=F64)

    def simulate(n):
        x = torch.randn(n, dim, generator=g, dtype=F64) @ chol.T  # fiducial theta = 0
        shift = (a * step).T  # [p, dim]: the mean moves by A step_a e_a
        return x, x[:, None] + shift, x[:, None] - shift

    model = torch.nn.Linear(dim, 2, dtype=F64)

    def fraction_of_det_f():
        w = model.weight.detach()
        j, c = w @ a, w @ sigma @ w.T
        return float(torch.det(j.T @ torch.linalg.solve(c, j)) / torch.det(analytic))

    start = fraction_of_det_f()
    assert start < 0.1  # a random projection loses most of the information

    steps = 800
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        x, x_plus, x_minus = simulate(256)
        loss = fisher_information_loss(model(x), model(x_plus), model(x_minus), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()

    # Measured: 0.0006 at the start; 0.9994 exactly and 0.996 from the 20000 samples (whose
    # estimate scatters by about 1.5%).
    assert fraction_of_det_f() >= 0.97
    with torch.no_grad():
        x, x_plus, x_minus = simulate(20000)
        measured = summary_fisher(model(x), model(x_plus), model(x_minus), step)
    assert float(torch.det(measured) / torch.det(analytic)) >= 0.97
    # The regulariser whitened the summaries.
    with torch.no_grad():
        cov = torch.cov(model(x).T)
    assert torch.allclose(cov, torch.eye(2, dtype=F64), atol=0.1)


def test_gaussian_nll_matches_torch_multivariate_normal():
    g = torch.Generator().manual_seed(0)
    n, p = 7, 3
    mean, theta = torch.randn(n, p, generator=g), torch.randn(n, p, generator=g)
    params = 0.5 * torch.randn(n, p * (p + 1) // 2, generator=g)
    rows, cols = torch.tril_indices(p, p)
    tril = torch.zeros(n, p, p)
    tril[:, rows, cols] = torch.where(rows == cols, params.exp(), params)
    expected = -torch.distributions.MultivariateNormal(mean, scale_tril=tril).log_prob(theta)
    torch.testing.assert_close(gaussian_nll_loss(mean, params, theta), expected.mean())
    with pytest.raises(ValueError, match=r"cholesky_params must be \[n, p\(p\+1\)/2\] = \[7, 6\]"):
        gaussian_nll_loss(mean, params[:, :5], theta)


# Bad input: each error names the problem and the fix.


def test_mismatched_shapes_are_refused():
    fid, plus, minus, step = random_batch()
    with pytest.raises(ValueError, match="plus and minus must have the same shape"):
        summary_fisher(fid, plus, minus[:, :1], step)
    with pytest.raises(ValueError, match=r"must be \[m, p, d\] = \[m, 3, 4\]"):
        summary_fisher(fid, plus, minus, [0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match=r"must be \[m, p, d\] = \[m, 2, 3\]"):
        summary_fisher(fid[:, :3], plus, minus, step)
    with pytest.raises(ValueError, match=r"fisher_matrix: pass plus.transpose\(0, 1\)"):
        summary_fisher(fid, plus.transpose(0, 1), minus.transpose(0, 1), step)
    with pytest.raises(ValueError, match="m <= n"):
        summary_fisher(fid[:100], plus, minus, step)
    with pytest.raises(ValueError, match=r"fiducial must be \[n, d\]"):
        fisher_information_loss(fid[0], plus, minus, step)
    with pytest.raises(ValueError, match="every step must be positive"):
        summary_fisher(fid, plus, minus, [0.1, -0.1])


def test_too_few_fiducial_simulations_are_refused():
    fid, plus, minus, step = random_batch(n=6, d=4)
    with pytest.raises(ValueError, match=r"6 fiducial simulations are too few.*n >= d \+ 3 = 7"):
        fisher_information_loss(fid, plus, minus, step)


def test_a_constant_summary_component_is_named():
    fid, plus, minus, step = random_batch()
    fid[:, 2] = 0.5  # a dead network output
    with pytest.raises(ValueError, match=r"component\(s\) \[2\] do not vary"):
        fisher_information_loss(fid, plus, minus, step)
    fid, plus, minus, step = random_batch()
    fid[:, 3] = fid[:, 0] - 2 * fid[:, 1]
    with pytest.raises(ValueError, match="linear combinations of others"):
        summary_fisher(fid, plus, minus, step)


def test_non_finite_summaries_name_the_input():
    fid, plus, minus, step = random_batch()
    plus[5, 1, 3] = float("nan")
    with pytest.raises(ValueError, match=r"plus contains 1 NaN.*realisation 5, parameter 1, comp"):
        fisher_information_loss(fid, plus, minus, step)
    fid, plus, minus, step = random_batch()
    fid[7, 0] = float("inf")
    with pytest.raises(ValueError, match=r"fiducial contains 1 NaN or infinite.*realisation 7"):
        summary_fisher(fid, plus, minus, step)


def test_twins_that_do_not_share_draws_are_refused():
    fid, plus, minus, step = random_batch(m=50)
    seeds = torch.arange(300) * 7 + 1
    twins = seeds[:50, None].expand(50, 2)
    loss = fisher_information_loss(
        fid, plus, minus, step, fiducial_draws=seeds, plus_draws=twins, minus_draws=twins
    )
    assert torch.isfinite(loss)
    shuffled = twins.clone()
    shuffled[10, 1] = seeds[11]
    with pytest.raises(ValueError, match="realisation 10, parameter 1.*same seed"):
        summary_fisher(fid, plus, minus, step, plus_draws=twins, minus_draws=shuffled)
    with pytest.raises(ValueError, match="twin 10 .parameter 1. does not share the draw"):
        summary_fisher(
            fid,
            plus,
            minus,
            step,
            fiducial_draws=seeds,
            plus_draws=shuffled,
            minus_draws=shuffled,
        )
    with pytest.raises(ValueError, match="give plus_draws and minus_draws together"):
        summary_fisher(fid, plus, minus, step, plus_draws=twins)
    with pytest.raises(
        ValueError, match=r"plus_draws must be an integer tensor of shape \[50, 2\]"
    ):
        summary_fisher(fid, plus, minus, step, plus_draws=twins.double(), minus_draws=twins)


def test_a_singular_or_overflowing_fisher_matrix_raises_instead_of_returning_nan():
    fid, plus, minus, step = random_batch()
    # summaries that ignore parameter 1: det F = 0, -ln det F = inf
    plus[:, 1], minus[:, 1] = fid, fid
    assert torch.isfinite(summary_fisher(fid, plus, minus, step)).all()  # F itself is fine
    with pytest.raises(FloatingPointError, match=r"do not respond to parameter\(s\) \[1\]"):
        fisher_information_loss(fid, plus, minus, step)
    fid, plus, minus, step = random_batch()
    with pytest.raises(FloatingPointError, match="overflowed.*diverged"):
        fisher_information_loss(fid * 1e300, plus * 1e300, minus * 1e300, step)


def test_bad_regularisation_settings_are_refused():
    fid, plus, minus, step = random_batch()
    with pytest.raises(ValueError, match="regularization must be a non-negative finite number"):
        fisher_information_loss(fid, plus, minus, step, regularization=-1.0)
    with pytest.raises(ValueError, match="closeness=None for a constant strength"):
        fisher_information_loss(fid, plus, minus, step, regularization=0.5)
    with pytest.raises(ValueError, match="closeness"):
        fisher_information_loss(fid, plus, minus, step, closeness=0.0)
