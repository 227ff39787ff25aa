"""Every cache of pyg_sphere, in one place: inspect them with :func:`info`, empty them with
:func:`clear`, bound them with :func:`set_limit`.

pyg_sphere remembers what is expensive to rebuild and cheap to keep, always by value: HEALPix
graphs (:func:`~pyg_sphere.healpix_graph`, by their arguments), the k-NN search trees, and a few
tables (spectra, quadrature nodes). Nothing is keyed by the identity of a tensor: what a layer
needs to know about a graph travels with the objects the user holds (the
:class:`~pyg_sphere.nn.ChebyshevOperator` of a graph, kept by the models or by a layer with
``cached=True``). Every cache is bounded by memory,
not by entry count: a cache evicts its least recently used entries once the bytes of its
tensors and arrays exceed its limit, but always keeps the entry it just stored (a single graph
larger than the limit is still built only once while it is in use). So the 48 small graphs of
order-2 patches all stay cached, while a few nside-1024 graphs cannot exhaust memory.

Default limits: :data:`DEFAULT_LARGE_LIMIT` (a quarter of the machine's physical memory) for
the caches of graphs and operators, :data:`DEFAULT_SMALL_LIMIT` (64 MiB) for the others.

Example:
    >>> import pyg_sphere
    >>> from pyg_sphere import cache
    >>> cache.clear()
    >>> _ = pyg_sphere.healpix_graph(4)
    >>> _ = pyg_sphere.healpix_graph(4)
    >>> stats = cache.info()['graph']
    >>> stats.hits, stats.misses, stats.entries
    (1, 1, 1)
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, Hashable, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor

__all__ = ["CacheInfo", "info", "clear", "set_limit", "DEFAULT_LARGE_LIMIT", "DEFAULT_SMALL_LIMIT"]


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 16 GiB
        return 16 << 30


#: Limit of the caches of graphs and operators: a quarter of physical memory.
DEFAULT_LARGE_LIMIT: int = _physical_memory() // 4
#: Limit of the other caches (tables, estimates): 64 MiB.
DEFAULT_SMALL_LIMIT: int = 64 << 20

# Bookkeeping cost counted per entry, so that entries without arrays still add up.
_ENTRY_OVERHEAD = 256


class CacheInfo(NamedTuple):
    """Statistics of one cache, as returned by :func:`info`."""

    hits: int
    misses: int
    entries: int
    #: Bytes held by the cached tensors and arrays (plus a small overhead per entry).
    size: int
    #: Bound on :attr:`size`, in bytes.
    limit: int


def nbytes(value: Any) -> int:
    """Approximate memory held by a cached value: its tensors and arrays, recursively."""
    seen = set()

    def walk(v) -> int:
        if isinstance(v, Tensor):
            if v.layout == torch.sparse_csr:
                return sum(walk(t) for t in (v.crow_indices(), v.col_indices(), v.values()))
            # Tensors that share storage (views, CSR matrices sharing indices) count once.
            key = ("storage", v.untyped_storage().data_ptr(), v.device)
            if key in seen:
                return 0
            seen.add(key)
            return v.untyped_storage().nbytes()
        if id(v) in seen:
            return 0
        seen.add(id(v))
        if isinstance(v, np.ndarray):
            return v.nbytes
        # A k-d tree, whose points and permutation dominate (there is none unless scipy.spatial
        # is loaded: it is imported where trees are built, not here).
        spatial = sys.modules.get("scipy.spatial")
        if spatial is not None and isinstance(v, spatial.cKDTree):
            return v.data.nbytes + v.indices.nbytes
        if isinstance(v, (list, tuple)):
            return sum(walk(x) for x in v)
        if isinstance(v, dict):
            return sum(walk(x) for x in v.values())
        if hasattr(v, "to_dict") and callable(v.to_dict):  # a PyG Data or Batch
            return walk(v.to_dict())
        if hasattr(v, "__dict__"):
            return walk(vars(v))
        return 0

    return walk(value) + _ENTRY_OVERHEAD


class _Cache:
    """An LRU mapping bounded by the bytes of its values."""

    def __init__(self, name: str, limit: int):
        self.name = name
        self.limit = int(limit)
        self.hits = 0
        self.misses = 0
        self._entries: "OrderedDict[Hashable, tuple]" = OrderedDict()  # key -> (value, bytes)
        self._size = 0
        self._lock = threading.RLock()

    def _lookup(self, key):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            return entry

    def _store(self, key, value):
        size = nbytes(value)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= old[1]
            self._entries[key] = (value, size)
            self._size += size
            self._evict()

    def _evict(self):
        while self._size > self.limit and len(self._entries) > 1:
            _, entry = self._entries.popitem(last=False)
            self._size -= entry[1]

    def clear(self):
        with self._lock:
            self._entries.clear()
            self._size = 0
            self.hits = self.misses = 0

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self.hits, self.misses, len(self._entries), self._size, self.limit)

    def __len__(self):
        return len(self._entries)

    def __repr__(self):
        i = self.info()
        return (
            f"{type(self).__name__}({self.name!r}, entries={i.entries}, size={i.size}, "
            f"limit={i.limit})"
        )


class Memo(_Cache):
    """A cache keyed on hashable values: :meth:`get` returns ``build()`` for a new key."""

    def get(self, key: Hashable, build: Callable[[], Any]):
        entry = self._lookup(key)
        if entry is not None:
            return entry[0]
        value = build()
        self._store(key, value)
        return value

    def peek(self, key: Hashable):
        """The cached value of :obj:`key`, or :obj:`None`; counts as a hit or a miss."""
        entry = self._lookup(key)
        return None if entry is None else entry[0]

    def put(self, key: Hashable, value: Any):
        self._store(key, value)


_REGISTRY: Dict[str, _Cache] = {}


def register(cache: _Cache) -> _Cache:
    """Adds a cache to the registry that :func:`info`, :func:`clear` and :func:`set_limit`
    act on (for pyg_sphere's own modules)."""
    if cache.name in _REGISTRY:
        raise ValueError(f"a cache named {cache.name!r} is already registered")
    _REGISTRY[cache.name] = cache
    return cache


def memo(name: str, limit: int = DEFAULT_SMALL_LIMIT) -> Memo:
    """A new registered :class:`Memo`."""
    return register(Memo(name, limit))  # type: ignore[return-value]


def memoize(name: str, limit: int = DEFAULT_SMALL_LIMIT):
    """Decorator: memoises a function of hashable arguments in a registered cache."""

    def decorate(fn):
        cache = memo(name, limit)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return cache.get((args, tuple(sorted(kwargs.items()))), lambda: fn(*args, **kwargs))

        wrapper.cache = cache
        return wrapper

    return decorate


def _get(name: str) -> _Cache:
    if name not in _REGISTRY:
        raise KeyError(f"no cache named {name!r}; the caches are {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def info() -> Dict[str, CacheInfo]:
    """Returns, per cache name, its hits, misses, entries, size (bytes) and limit (bytes).

    Hits and misses count from the start of the process or the last :func:`clear`.
    """
    return {name: c.info() for name, c in sorted(_REGISTRY.items())}


def clear(name: Optional[str] = None) -> None:
    """Empties every cache (or the one named :obj:`name`) and resets its statistics."""
    for c in _REGISTRY.values() if name is None else [_get(name)]:
        c.clear()


def set_limit(name: str, limit: int) -> None:
    """Sets the memory bound of the cache :obj:`name` to :obj:`limit` bytes (``0``: keep only
    the latest entry), evicting what no longer fits.

    Example:
        >>> from pyg_sphere import cache
        >>> cache.set_limit('graph', 8 << 30)  # 8 GiB of graphs
    """
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0:
        raise ValueError(f"limit must be a non-negative number of bytes, got {limit!r}")
    c = _get(name)
    with c._lock:
        c.limit = int(limit)
        c._evict()
