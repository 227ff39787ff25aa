"""Pooling and unpooling of nested HEALPix maps: functions and modules."""

from ._healpix_pool import HealpixPool
from ._healpix_unpool import HealpixUnpool
from .functional import (
    healpix_max_pool_with_indices,
    healpix_max_unpool,
    healpix_pool,
    healpix_pool_data,
    healpix_pool_graph,
    healpix_unpool,
)

__all__ = [
    "HealpixPool",
    "HealpixUnpool",
    "healpix_pool",
    "healpix_max_pool_with_indices",
    "healpix_unpool",
    "healpix_max_unpool",
    "healpix_pool_graph",
    "healpix_pool_data",
]
