"""Pooling and unpooling of nested HEALPix maps."""
from .healpix_pool import HealpixPool
from .healpix_unpool import HealpixUnpool

__all__ = ['HealpixPool', 'HealpixUnpool']
