"""Classical baselines of DeepSphere: linear SVMs on power spectra or histograms, and the
classical weak-lensing statistics they build on (power spectrum, histogram, peak counts).

Needs scikit-learn for the classifiers: ``pip install pyg_sphere[baselines]``.
"""

from .classifiers import HistogramClassifier, PSDClassifier
from .features import (
    histogram,
    histogram_edges,
    local_maxima,
    peak_counts,
    power_spectrum,
    smooth,
)

__all__ = [
    "PSDClassifier",
    "HistogramClassifier",
    "power_spectrum",
    "histogram",
    "histogram_edges",
    "smooth",
    "local_maxima",
    "peak_counts",
]
