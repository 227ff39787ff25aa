"""pyg_sphere: deep learning on the HEALPix sphere with PyTorch Geometric."""
from . import baselines, datasets, graph, loader, nn, transforms
from .equivariance import equivariance_error
from .graph import (close_hierarchy, coarsen_graph, estimate_lambda_max, healpix_graph,
                    healpix_hierarchy, is_closed_hierarchy, kernel_width, nested_patches)

__version__ = '0.1.0'

__all__ = [
    'healpix_graph',
    'healpix_hierarchy',
    'coarsen_graph',
    'kernel_width',
    'close_hierarchy',
    'is_closed_hierarchy',
    'nested_patches',
    'estimate_lambda_max',
    'equivariance_error',
]
