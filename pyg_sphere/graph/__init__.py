"""HEALPix graphs: the sphere, or a region of it, as a PyG :class:`~torch_geometric.data.Data`."""

from ._healpix_graph import healpix_graph
from ._kernel_width import kernel_width
from .hierarchy import (
    close_hierarchy,
    coarsen_graph,
    healpix_hierarchy,
    is_closed_hierarchy,
    nested_patches,
)
from .laplacian import Laplacian, estimate_lambda_max, laplacian, laplacian_matrix

__all__ = [
    "healpix_graph",
    "kernel_width",
    "close_hierarchy",
    "is_closed_hierarchy",
    "nested_patches",
    "coarsen_graph",
    "healpix_hierarchy",
    "estimate_lambda_max",
    "laplacian",
    "laplacian_matrix",
    "Laplacian",
]
