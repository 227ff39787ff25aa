"""pyg_sphere: deep learning on the HEALPix sphere with PyTorch Geometric.

The layers of the package, each built on the ones before it: :mod:`pyg_sphere.graph` (HEALPix
graphs), :mod:`pyg_sphere.nn` (convolution, pooling, models), :mod:`pyg_sphere.datasets`,
:mod:`pyg_sphere.loader` and :mod:`pyg_sphere.transforms` (data), :mod:`pyg_sphere.baselines`
and :mod:`pyg_sphere.inference` (classical statistics, Fisher forecasts);
:mod:`pyg_sphere.cache` holds every cache. Command-line programs live beside the library, in
:mod:`pyg_sphere.apps`, which the library never imports.
"""

from . import baselines, cache, checkpoint, datasets, graph, inference, loader, nn, transforms
from .equivariance import equivariance_error
from .graph import (
    close_hierarchy,
    coarsen_graph,
    estimate_lambda_max,
    healpix_graph,
    healpix_hierarchy,
    is_closed_hierarchy,
    kernel_width,
    nested_patches,
)

__version__ = "0.2.0.dev0"

__all__ = [
    "baselines",
    "cache",
    "checkpoint",
    "datasets",
    "graph",
    "inference",
    "loader",
    "nn",
    "transforms",
    "healpix_graph",
    "healpix_hierarchy",
    "coarsen_graph",
    "kernel_width",
    "close_hierarchy",
    "is_closed_hierarchy",
    "nested_patches",
    "estimate_lambda_max",
    "equivariance_error",
]
