import numpy as np
import pytest
import torch

from pyg_sphere.inference import (
    figure_of_merit,
    fisher_ellipse,
    fisher_matrix,
    gaussian_cl_fisher,
    marginal_errors,
)


def linear_gaussian(n, m, rng, shared=True):
    """Summaries s = A theta + L z (d = 4, p = 2) at the fiducial and +- steps; the analytic
    Fisher matrix is A^T (L L^T)^-1 A."""
    a = np.array([[1.0, 0.5], [0.2, -1.0], [0.0, 2.0], [1.5, 0.3]])
    low = np.tril(np.random.default_rng(42).standard_normal((4, 4))) + 2 * np.eye(4)
    step = np.array([0.05, 0.02])
    fid = rng.standard_normal((n, 4)) @ low.T
    z = rng.standard_normal((m, 4)) @ low.T
    plus = np.stack([z + a @ (step * e) for e in np.eye(2)])
    minus_noise = z if shared else rng.standard_normal((m, 4)) @ low.T
    minus = np.stack([minus_noise - a @ (step * e) for e in np.eye(2)])
    analytic = a.T @ np.linalg.solve(low @ low.T, a)
    return fid, plus, minus, step, analytic


def test_linear_gaussian_summaries_give_the_analytic_fisher_matrix():
    rng = np.random.default_rng(0)
    fid, plus, minus, step, analytic = linear_gaussian(20000, 10, rng)
    fisher = fisher_matrix(fid, plus, minus, step)
    np.testing.assert_allclose(fisher, analytic, rtol=0.03)
    # shared seeds: the noise cancels in the derivative, which is then exact
    assert fisher.shape == (2, 2) and np.allclose(fisher, fisher.T)
    # torch input works the same
    same = fisher_matrix(*(torch.as_tensor(t) for t in (fid, plus, minus, step)))
    np.testing.assert_allclose(same, fisher)


def test_the_hartlap_factor_removes_the_bias_of_few_simulations():
    rng = np.random.default_rng(1)
    n, trials = 12, 3000  # d = 4: the plain inverse is (n - 1)/(n - d - 2) = 1.83x too large
    with_factor, without = [], []
    for _ in range(trials):
        fid, plus, minus, step, analytic = linear_gaussian(n, 4, rng)
        with_factor.append(fisher_matrix(fid, plus, minus, step))
        without.append(fisher_matrix(fid, plus, minus, step, hartlap=False))
    mean_with = np.mean(with_factor, axis=0)
    mean_without = np.mean(without, axis=0)
    diag = np.diag(analytic)
    np.testing.assert_allclose(np.diag(mean_with), diag, rtol=0.06)
    np.testing.assert_allclose(np.diag(mean_without), diag * (n - 1) / (n - 4 - 2), rtol=0.06)


def test_marginal_errors_figure_of_merit_and_ellipse_against_dense_algebra():
    rng = np.random.default_rng(2)
    b = rng.standard_normal((3, 3))
    fisher = b @ b.T + 3 * np.eye(3)
    cov = np.linalg.inv(fisher)
    np.testing.assert_allclose(marginal_errors(fisher), np.sqrt(np.diag(cov)))
    np.testing.assert_allclose(figure_of_merit(fisher), 1 / np.sqrt(np.linalg.det(cov)))
    pts = fisher_ellipse(fisher, center=(0.3, 0.8), i=0, j=2, level=0.9)
    block = np.linalg.inv(cov[np.ix_([0, 2], [0, 2])])
    d = pts - [0.3, 0.8]
    np.testing.assert_allclose(np.einsum("ni,ij,nj->n", d, block, d), -2 * np.log(0.1))


def test_errors_name_the_problem():
    rng = np.random.default_rng(3)
    fid, plus, minus, step, _ = linear_gaussian(50, 5, rng)
    with pytest.raises(ValueError, match="too few"):
        fisher_matrix(fid[:6], plus, minus, step)
    with pytest.raises(ValueError, match="do not vary"):
        fisher_matrix(
            np.c_[fid, np.ones(50)],
            np.c_[plus, np.ones((2, 5, 1))],
            np.c_[minus, np.ones((2, 5, 1))],
            step,
        )
    with pytest.raises(ValueError, match="linear combinations"):
        extra = fid[:, :1] + fid[:, 1:2]
        p2 = np.concatenate([plus, plus[..., :1] + plus[..., 1:2]], axis=2)
        m2 = np.concatenate([minus, minus[..., :1] + minus[..., 1:2]], axis=2)
        fisher_matrix(np.c_[fid, extra], p2, m2, step)
    with pytest.raises(ValueError, match=r"\[p, m, d\]"):
        fisher_matrix(fid, plus[:1], minus[:1], step)
    with pytest.raises(ValueError, match="same shape"):
        fisher_matrix(fid, plus, minus[:, :3], step)
    with pytest.raises(ValueError, match="positive"):
        fisher_matrix(fid, plus, minus, [0.1, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        fisher_matrix(np.where(fid > 2, np.nan, fid), plus, minus, step)
    with pytest.raises(ValueError, match="positive definite"):
        marginal_errors([[1.0, 1.0], [1.0, 1.0]])


def test_gaussian_cl_fisher_mode_counting():
    ell = np.arange(65)
    cl = np.where(ell >= 2, 1e-3 / (ell + 5.0) ** 2.2, 0.0)
    dcl = np.stack([cl, cl * np.log(ell + 5.0)])  # amplitude and tilt
    noise = 2e-7
    unbinned = gaussian_cl_fisher(dcl, cl, noise)
    by_hand = sum(
        (2 * k + 1) / 2 * np.outer(dcl[:, k], dcl[:, k]) / (cl[k] + noise) ** 2
        for k in range(2, 65)
    )
    np.testing.assert_allclose(unbinned, by_hand)
    # f_sky scales it; bins lose information, never add
    np.testing.assert_allclose(gaussian_cl_fisher(dcl, cl, noise, f_sky=0.25), unbinned / 4)
    binned = gaussian_cl_fisher(dcl, cl, noise, bin_edges=np.arange(2, 66, 8))
    assert np.all(np.linalg.eigvalsh(unbinned - binned) > -1e-9 * np.abs(unbinned).max())
    with pytest.raises(ValueError, match="f_sky"):
        gaussian_cl_fisher(dcl, cl, f_sky=2.0)
    with pytest.raises(ValueError, match="bin_edges"):
        gaussian_cl_fisher(dcl, cl, bin_edges=[10, 5])


def test_components_of_very_different_sizes_are_not_mistaken_for_constants():
    rng = np.random.default_rng(4)
    fid, plus, minus, step, analytic = linear_gaussian(5000, 4, rng)
    # Rescaling a component changes nothing in F (an invertible linear map of the summary).
    scales = np.array([1e-9, 1.0, 1e6, 1.0])
    scaled = fisher_matrix(fid * scales, plus * scales, minus * scales, step)
    np.testing.assert_allclose(scaled, fisher_matrix(fid, plus, minus, step), rtol=1e-6)
