"""Neural posterior estimation: a linear-Gaussian toy with a known posterior, the box support,
gradients for joint training (VMIM), TARP coverage of exact, overconfident and underconfident
posteriors, and the errors on bad input."""

import numpy as np
import pytest
import torch
from scipy.stats import truncnorm

from pyg_sphere.inference import NeuralPosterior, expected_coverage

pytest.importorskip("zuko")
pytest.importorskip("tarp")

BOUNDS = torch.tensor([[0.0, 1.0], [-1.0, 1.0]])
SIGMA = torch.tensor([0.05, 0.1])  # noise, small against the box


@pytest.fixture(autouse=True)
def one_thread():
    # Small networks: threads only add overhead on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def simulate(n, generator):
    """theta uniform in the box, summary = theta + Gaussian noise."""
    theta = BOUNDS[:, 0] + (BOUNDS[:, 1] - BOUNDS[:, 0]) * torch.rand(n, 2, generator=generator)
    return theta, theta + SIGMA * torch.randn(n, 2, generator=generator)


def analytic_posterior(summaries):
    """The exact posterior: independent normals N(s, sigma^2) truncated to the box."""
    s, sigma = summaries.double().numpy(), SIGMA.double().numpy()
    lo, hi = (BOUNDS[:, 0].numpy() - s) / sigma, (BOUNDS[:, 1].numpy() - s) / sigma
    return truncnorm(lo, hi, loc=s, scale=sigma)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    theta, summaries = simulate(4000, g)
    posterior = NeuralPosterior(2, 2, bounds=BOUNDS, hidden=(64, 64), transforms=2)
    threads = torch.get_num_threads()  # module scope: set up before one_thread
    torch.set_num_threads(1)
    try:
        posterior.fit(theta, summaries, epochs=40, batch_size=256, lr=3e-3, seed=0)
    finally:
        torch.set_num_threads(threads)
    test_theta, test_summaries = simulate(1000, g)
    samples = posterior.sample(test_summaries, 200)  # [200, 1000, 2]
    return posterior, test_theta, test_summaries, samples


def test_fit_recovers_the_analytic_posterior(trained):
    posterior, test_theta, test_summaries, samples = trained
    assert samples.shape == (200, 1000, 2)
    inside = (samples >= BOUNDS[:, 0]) & (samples <= BOUNDS[:, 1])
    assert bool(inside.all())
    history = posterior.history
    assert len(history["train"]) == len(history["val"]) and history["best_epoch"] is not None

    exact = analytic_posterior(test_summaries)
    mean, std = exact.mean(), exact.std()
    # Points whose posterior is not cut by the box: the Gaussian regime of the brief.
    interior = (
        ((test_summaries - BOUNDS[:, 0] > 3 * SIGMA) & (BOUNDS[:, 1] - test_summaries > 3 * SIGMA))
        .all(1)
        .numpy()
    )
    assert interior.sum() > 300
    mean_error = (samples.mean(0).double().numpy() - mean) / std
    std_ratio = samples.std(0).double().numpy() / std
    # Measured: rms mean error 0.10 and 0.11 posterior std, std ratio median 1.04 and 1.05
    # (200 samples alone scatter the mean by 0.07 std and the std by 5%).
    rms = np.sqrt((mean_error[interior] ** 2).mean(0))
    assert (rms < 0.25).all(), rms
    median = np.median(std_ratio[interior], axis=0)
    assert (np.abs(median - 1) < 0.12).all(), median

    # The density: the flow's mean log posterior of the held-out truths is close to the
    # exact one's (measured 0.03 nats below; it cannot be higher on average, up to noise).
    flow_nll = -posterior.log_prob(test_theta, test_summaries).mean().item()
    exact_nll = -exact.logpdf(test_theta.double().numpy()).sum(1).mean()
    assert exact_nll - 0.05 < flow_nll < exact_nll + 0.1, (flow_nll, exact_nll)


def test_fitted_posterior_is_calibrated(trained):
    _, test_theta, test_summaries, samples = trained
    cov = expected_coverage(samples, test_theta, bounds=BOUNDS)  # measured 0.673, 0.951
    assert abs(cov[0.68] - 0.68) <= 0.05 and abs(cov[0.95] - 0.95) <= 0.05, cov
    # Paired with exact posterior samples on the same simulations and references, the
    # scatter of the held-out set (about 0.015 at 0.68) cancels (measured 0.679, 0.957).
    exact = analytic_posterior(test_summaries)
    exact_samples = exact.rvs(size=(200, 1000, 2), random_state=np.random.default_rng(1))
    reference = expected_coverage(exact_samples, test_theta, bounds=BOUNDS)
    for level in (0.68, 0.95):
        assert abs(cov[level] - reference[level]) <= 0.03, (cov, reference)


def test_coverage_of_exact_overconfident_and_underconfident_posteriors():
    g = torch.Generator().manual_seed(2)
    theta, summaries = simulate(500, g)
    exact = analytic_posterior(summaries)
    rng = np.random.default_rng(0)
    exact_samples = exact.rvs(size=(400, 500, 2), random_state=rng)
    cov = expected_coverage(exact_samples, theta, bounds=BOUNDS)
    assert abs(cov[0.68] - 0.68) <= 0.05 and abs(cov[0.95] - 0.95) <= 0.05, cov

    # Gaussians 3x too narrow, and 2x too wide, about the same centres.
    centres = summaries.numpy()
    narrow = centres + SIGMA.numpy() / 3 * rng.standard_normal((400, 500, 2))
    cov = expected_coverage(narrow, theta, bounds=BOUNDS)
    assert cov[0.68] < 0.6 and cov[0.95] < 0.85, cov  # under-covering: detected
    wide = centres + 2 * SIGMA.numpy() * rng.standard_normal((400, 500, 2))
    cov = expected_coverage(wide, theta, bounds=BOUNDS)
    assert cov[0.68] > 0.75 and cov[0.95] > 0.98, cov  # over-covering


def test_expected_coverage_leaves_numpy_global_state_alone():
    samples = np.random.default_rng(0).normal(size=(50, 20, 2))
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    first = expected_coverage(samples, np.zeros((20, 2)), bounds=[[-3, 3], [-3, 3]])
    assert np.random.random() == before  # tarp reseeds numpy; we restore it
    assert first == expected_coverage(samples, np.zeros((20, 2)), bounds=[[-3, 3], [-3, 3]])


def test_density_is_normalised_on_the_box_and_zero_outside():
    torch.manual_seed(0)
    posterior = NeuralPosterior(1, 3, bounds=[[2.0, 5.0]], hidden=(16,), transforms=1)
    posterior.fit_standardization(2 + 3 * torch.rand(100, 1), torch.randn(100, 3) * 4 + 1)
    summary = torch.tensor([0.5, -1.0, 2.0])
    grid = torch.linspace(2.0, 5.0, 200001)[1:-1, None]
    density = posterior.log_prob(grid, summary).exp()
    integral = torch.trapezoid(density, grid[:, 0]).item()
    assert integral == pytest.approx(1.0, abs=2e-3)
    outside = posterior.log_prob(torch.tensor([[1.9], [5.1]]), summary)
    assert torch.isneginf(outside).all()
    samples = posterior.sample(summary[None], 1000)
    assert samples.shape == (1000, 1, 1) and bool(((samples > 2) & (samples < 5)).all())


def test_gradients_flow_into_the_summaries_for_joint_training():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    theta, x = simulate(64, g)
    summary_net = torch.nn.Linear(2, 4)
    posterior = NeuralPosterior(2, 4, bounds=BOUNDS, hidden=(16,), transforms=1)
    loss = posterior.loss(theta, summary_net(x))  # the VMIM loss
    assert loss.shape == ()
    loss.backward()
    assert summary_net.weight.grad is not None and summary_net.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in posterior.flow.parameters())


def test_bad_input_is_refused():
    posterior = NeuralPosterior(2, 3, bounds=BOUNDS, hidden=(8,), transforms=1)
    theta, summaries = torch.full((10, 2), 0.5), torch.randn(10, 3)
    with pytest.raises(ValueError, match=r"bounds must be the prior box \[2, 2\]"):
        NeuralPosterior(2, 3, bounds=[[0, 1]])
    with pytest.raises(ValueError, match="lower < upper"):
        NeuralPosterior(1, 3, bounds=[[1, 0]])
    with pytest.raises(ValueError, match=r"summaries must be \[\.\.\., 3\]"):
        posterior.log_prob(theta, summaries[:, :2])
    with pytest.raises(ValueError, match=r"outside the prior box.*row 4"):
        bad = theta.clone()
        bad[4, 1] = 1.5
        posterior.loss(bad, summaries)
    with pytest.raises(ValueError, match=r"summaries contains 1 NaN.*\[7, 2\]"):
        bad = summaries.clone()
        bad[7, 2] = float("nan")
        posterior.loss(theta, bad)
    with pytest.raises(ValueError, match=r"component\(s\) \[1\] are constant"):
        bad = summaries.clone()
        bad[:, 1] = 3.0
        posterior.fit_standardization(theta, bad)
    with pytest.raises(ValueError, match="must pair row by row"):
        posterior.fit(theta, summaries[:9])
    with pytest.raises(ValueError, match="val_fraction"):
        posterior.fit(theta, summaries, val_fraction=1.0)
    with pytest.raises(ValueError, match=r"theta_true must be \[m, p\] = \[20, 2\]"):
        expected_coverage(np.zeros((5, 20, 2)), np.zeros((19, 2)))
    with pytest.raises(ValueError, match=r"levels must be probabilities"):
        expected_coverage(np.zeros((5, 20, 2)), np.zeros((20, 2)), levels=(0.68, 1.0))
    with pytest.raises(ValueError, match="pass the prior box as bounds"):
        expected_coverage(np.zeros((5, 20, 2)), np.zeros((20, 2)))
