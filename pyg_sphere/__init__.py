"""pyg_sphere: deep learning on the HEALPix sphere with PyTorch Geometric.

The layers of the package, each built on the ones before it: :mod:`pyg_sphere.graph` (HEALPix
graphs), :mod:`pyg_sphere.nn` (convolution, pooling, models), :mod:`pyg_sphere.datasets`,
:mod:`pyg_sphere.loader` and :mod:`pyg_sphere.transforms` (data), :mod:`pyg_sphere.baselines`
and :mod:`pyg_sphere.inference` (classical statistics, Fisher forecasts);
:mod:`pyg_sphere.cache` holds every cache. Command-line programs live beside the library, in
:mod:`pyg_sphere.apps`, which the library never imports.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.2.0.dev0"

# The subpackages of __all__ and the names re-exported here (with their modules) load on first
# access (PEP 562), so that ``import pyg_sphere`` costs next to nothing and ``import
# pyg_sphere.nn`` pays for the graphs and layers only, not for the data, the baselines or the
# inference tools.
_EXPORTS = {
    "healpix_graph": "graph",
    "healpix_hierarchy": "graph",
    "coarsen_graph": "graph",
    "kernel_width": "graph",
    "close_hierarchy": "graph",
    "is_closed_hierarchy": "graph",
    "nested_patches": "graph",
    "estimate_lambda_max": "graph",
    "equivariance_error": "equivariance",
}

if TYPE_CHECKING:  # what static tools and IDEs see; at run time __getattr__ loads these
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


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value  # later accesses skip __getattr__
        return value
    if name in __all__:  # a subpackage
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


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
