r"""Parameter inference: how much summaries of maps know about cosmological parameters.

:mod:`~pyg_sphere.inference.summaries` turns patches into summary vectors (power spectrum,
histogram, peak counts, combinations, a trained network's outputs);
:mod:`~pyg_sphere.inference.fisher` measures their Fisher information on the parameters from
simulations at a fiducial point and finite-difference steps (see
:func:`pyg_sphere.datasets.simulate_fisher_maps`), with the analytic Gaussian power-spectrum
Fisher matrix as an oracle. :mod:`~pyg_sphere.inference.losses` trains networks to keep that
information (the IMNN loss, a Gaussian posterior head);
:mod:`~pyg_sphere.inference.posterior` learns posteriors over a prior box with a conditional
normalising flow and checks their coverage (TARP).
"""

from .fisher import (
    figure_of_merit,
    fisher_ellipse,
    fisher_matrix,
    gaussian_cl_fisher,
    marginal_errors,
)
from .losses import fisher_information_loss, gaussian_nll_loss, summary_fisher
from .posterior import NeuralPosterior, expected_coverage
from .summaries import (
    CombinedSummary,
    HistogramSummary,
    NetworkSummary,
    PeakCountSummary,
    PowerSpectrumSummary,
    Summary,
    summary_layout,
)
from .tomographic_fisher import (
    TomographicPowerSpectrumSummary,
    cross_spectra,
    gaussian_cross_cl_fisher,
    tomographic_cl_derivatives,
    tomographic_fisher_forecast,
)

__all__ = [
    "fisher_matrix",
    "marginal_errors",
    "figure_of_merit",
    "fisher_ellipse",
    "gaussian_cl_fisher",
    "Summary",
    "PowerSpectrumSummary",
    "HistogramSummary",
    "PeakCountSummary",
    "CombinedSummary",
    "NetworkSummary",
    "summary_fisher",
    "fisher_information_loss",
    "gaussian_nll_loss",
    "NeuralPosterior",
    "expected_coverage",
    "TomographicPowerSpectrumSummary",
    "cross_spectra",
    "gaussian_cross_cl_fisher",
    "tomographic_cl_derivatives",
    "tomographic_fisher_forecast",
    "summary_layout",
]
