"""File writing shared by the package: every file is written under a unique temporary name in
its destination folder and renamed into place, so a reader never sees a partial file and
concurrent writers never share a temporary file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Iterator, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: restore it at once
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = "") -> Iterator[str]:
    """Yields a unique temporary path next to :obj:`path`; on success it replaces
    :obj:`path`, on error it is removed. :obj:`suffix` keeps an extension that a writer needs
    (e.g. ``'.fits'`` for healpy)."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=folder, prefix=f".{os.path.basename(path)}.", suffix=f".tmp{suffix}"
    )
    os.close(fd)
    # mkstemp creates the file private (0600); give it the permissions of a plain open().
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """Opens a unique temporary file next to :obj:`path` for writing; it replaces
    :obj:`path` when the block ends without error (``open``'s keyword arguments pass through)."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: PathLike, text: str) -> None:
    """Writes :obj:`text` (UTF-8) to :obj:`path` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def read_table(path: PathLike) -> dict:
    """The arrays of a ``.npz`` table (no pickles), made read-only so that a cached table
    cannot be changed by its users."""
    with np.load(path, allow_pickle=False) as f:
        table = {k: f[k] for k in f.files}
    for v in table.values():
        v.flags.writeable = False
    return table
