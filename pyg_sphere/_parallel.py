"""Independent blocks of numpy work on all cores."""

import os
from concurrent.futures import ThreadPoolExecutor

# Below this many units of work (neighbour slots, array entries), starting threads costs more
# than it saves.
_PARALLEL_MIN_WORK = 1 << 20

_MAX_WORKERS = 8


def parallel_map(fn, items, work: int) -> list:
    """``[fn(i) for i in items]`` on a thread per core when there is enough `work`: numpy
    releases the GIL in its array loops, so independent blocks run on all cores."""
    workers = min(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        _MAX_WORKERS,
    )
    if workers < 2 or work < _PARALLEL_MIN_WORK:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))
