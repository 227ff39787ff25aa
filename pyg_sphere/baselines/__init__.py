"""Classical baselines of DeepSphere: linear SVMs on power spectra or histograms.

Needs scikit-learn for the classifiers: ``pip install pyg_sphere[baselines]``.
"""

from .classifiers import HistogramClassifier, PSDClassifier
from .features import histogram, histogram_edges, power_spectrum

__all__ = [
    "PSDClassifier",
    "HistogramClassifier",
    "power_spectrum",
    "histogram",
    "histogram_edges",
]
