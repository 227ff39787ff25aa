import numpy as np
import pytest
import torch

from pyg_sphere.baselines import histogram, histogram_edges, peak_counts, power_spectrum
from pyg_sphere.inference import (
    CombinedSummary,
    HistogramSummary,
    NetworkSummary,
    PeakCountSummary,
    PowerSpectrumSummary,
)
from pyg_sphere.nn import DeepSphere

NSIDE = 16
PIXELS = np.arange(4 * 256, 5 * 256)  # nested patch 4 of order 1


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((30, 256))


def test_power_spectrum_summary_is_the_binned_feature(x):
    s = PowerSpectrumSummary(NSIDE, PIXELS, bins=np.array([2, 8, 16, 33]))
    np.testing.assert_allclose(s(x), power_spectrum(x, NSIDE, PIXELS, lmax=32, bins=[2, 8, 16, 33]))
    np.testing.assert_allclose(
        PowerSpectrumSummary(NSIDE, PIXELS, bins=[2, 8, 16, 33], log=True)(x), np.log(s(x))
    )
    assert PowerSpectrumSummary(NSIDE, bins=5, lmin=4)(x).shape == (30, 5)


def test_histogram_summary_drops_the_redundant_bin(x):
    s = HistogramSummary(bins=8).fit(x)
    full = histogram(x, histogram_edges(x, 8, (1.0, 99.0)))
    np.testing.assert_allclose(s(x), full[:, :-1])
    # what is left is not a linear combination of a constant: its covariance is invertible
    assert np.linalg.matrix_rank(np.cov(s(x + 0.1 * x[::-1]), rowvar=False)) == 7


def test_peak_summary_edges_come_from_training_peaks_and_are_kept(x):
    s = PeakCountSummary(NSIDE, PIXELS, bins=4, fwhm=np.radians(5.0)).fit(x)
    counts = s(x)
    np.testing.assert_array_equal(
        counts, peak_counts(x, NSIDE, PIXELS, edges=s.edges, fwhm=np.radians(5.0))
    )
    assert counts.sum(axis=0).min() > 0  # quantile edges: no empty bin on the training data
    edges = s.edges.copy()
    s(3 * x)  # summarising other data does not refit
    np.testing.assert_array_equal(s.edges, edges)


def test_combined_summary_concatenates_and_fits_its_parts(x):
    parts = (PowerSpectrumSummary(NSIDE, PIXELS, bins=3), PeakCountSummary(NSIDE, PIXELS, bins=2))
    s = CombinedSummary(*parts)
    with pytest.raises(RuntimeError, match="fit"):
        s(x)
    out = s.fit(x)(x)
    np.testing.assert_allclose(out, np.c_[parts[0](x), parts[1](x)])


def test_network_summary_is_the_model_output_in_eval_mode(x):
    torch.manual_seed(0)
    model = DeepSphere(1, 2, nside=NSIDE, pixels=PIXELS, channels=(4, 8)).train()
    out = NetworkSummary(model, scale=2.0, batch_size=7)(x)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        expected = model(torch.as_tensor(x / 2.0, dtype=torch.float32)[..., None])
    np.testing.assert_allclose(out, expected.double().numpy(), rtol=1e-5, atol=1e-6)
    assert repr(NetworkSummary(model)).startswith("NetworkSummary(DeepSphere")


def test_unfitted_and_bad_summaries_raise(x):
    with pytest.raises(RuntimeError, match="not fitted"):
        HistogramSummary()(x)
    with pytest.raises(ValueError, match="nside"):
        HistogramSummary(fwhm=0.1)
    with pytest.raises(ValueError, match="fewer than bins"):
        PeakCountSummary(NSIDE, PIXELS, bins=50).fit(x[:1])
    with pytest.raises(TypeError, match="Summary"):
        CombinedSummary("power spectrum")
