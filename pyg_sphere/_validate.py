"""Checks of user input shared by the whole package: each raises an error that names the
argument, what was wrong and how to fix it, and returns the value in canonical form."""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from torch import Tensor

#: What the functions taking a pixel set accept: HEALPix ids or a boolean mask.
PixelsLike = Union[None, Tensor, np.ndarray, list, tuple, range]


def check_int(name: str, value, minimum: Optional[int] = None) -> int:
    """Returns :obj:`value` as an :obj:`int`; raises unless it is an integer >= :obj:`minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        bound = "" if minimum is None else f" >= {minimum}"
        raise TypeError(f"{name} must be an integer{bound}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_real(name: str, value, hint: str = "") -> float:
    """Returns :obj:`value` as a :obj:`float`; raises unless it is a finite real number.
    :obj:`hint` says what the number is, in the error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        hint = f" ({hint})" if hint else ""
        raise ValueError(f"{name} must be a finite number{hint}, got {value!r}")
    return float(value)


def check_positive(name: str, value, *, allow_zero: bool = False, hint: str = "") -> float:
    """Returns :obj:`value` as a :obj:`float`; raises unless it is finite and positive (or
    zero, with :obj:`allow_zero`). :obj:`hint` says what the number is, in the error."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0))
    ):
        kind = "non-negative" if allow_zero else "positive"
        hint = f" ({hint})" if hint else ""
        raise ValueError(f"{name} must be a {kind} finite number{hint}, got {value!r}")
    return float(value)


def as_float_array(x, name: str, ndim: int, layout: str = "") -> np.ndarray:
    """:obj:`x` (array-like or tensor) as a float64 numpy array of :obj:`ndim` dimensions with
    finite values; :obj:`layout` names the expected shape in the error, e.g. ``"[n, d]"``."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != ndim:
        layout = layout or f"{ndim}-dimensional"
        raise ValueError(f"{name} must be {layout}, got shape {list(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values; remove those samples")
    return x


def check_choice(name: str, value, choices: Sequence):
    """Returns :obj:`value`; raises unless it is one of :obj:`choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_nside(nside, name: str = "nside") -> int:
    """Returns :obj:`nside` as an :obj:`int`; raises unless it is a power of 2 in [1, 2**29]."""
    if isinstance(nside, bool) or not isinstance(nside, numbers.Integral):
        raise TypeError(f"{name} must be an integer power of 2, got {nside!r}")
    nside = int(nside)
    if nside < 1 or nside > 2**29 or nside & (nside - 1):
        raise ValueError(f"{name} must be a power of 2 between 1 and 2**29, got {nside}")
    return nside


def check_levels(levels, minimum: int = 0) -> int:
    """Returns the number of nested levels (poolings by 4) as an :obj:`int` >= :obj:`minimum`."""
    if isinstance(levels, bool) or not isinstance(levels, numbers.Integral) or levels < minimum:
        raise ValueError(f"levels must be an integer >= {minimum}, got {levels!r}")
    return int(levels)


def check_channels(channels, minimum: int) -> Tuple[int, ...]:
    """Returns a sequence of channel counts (one per level) as a tuple of ints."""
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence):
        raise TypeError(
            f"channels must be a sequence of integers (one per level), got {channels!r}"
        )
    channels = tuple(channels)
    if len(channels) < minimum:
        raise ValueError(
            f"channels needs at least {minimum} entr{'y' if minimum == 1 else 'ies'} "
            f"(one per level), got {channels!r}"
        )
    return tuple(check_int("every entry of channels", c, 1) for c in channels)


def as_pixels(nside: int, pixels: PixelsLike, *, name: str = "pixels") -> Optional[np.ndarray]:
    """Validates a pixel set and returns it as sorted int64 ids (:obj:`None`: whole sphere).

    Accepts HEALPix ids (any integer array or tensor) or a boolean mask of length
    :math:`12 n_\\mathrm{side}^2`.
    """
    if pixels is None:
        return None
    npix = 12 * nside**2
    if isinstance(pixels, Tensor):
        pixels = pixels.detach().cpu().numpy()
    arr = np.asarray(pixels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {tuple(arr.shape)}")
    if arr.dtype == np.bool_:
        if arr.shape[0] != npix:
            raise ValueError(
                f"A boolean mask for {name} must have 12 * nside**2 = {npix} "
                f"entries at nside={nside}, got {arr.shape[0]}"
            )
        arr = np.flatnonzero(arr)
    elif arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{name} must hold integer HEALPix ids or be a boolean mask, got dtype {arr.dtype}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty: a graph needs at least one pixel")
    if arr.shape[0] == npix and arr.shape[0] > 2 and np.isin(arr, (0, 1)).all():
        # Ids would hold each pixel once: a 0/1 array as long as the map is a mask.
        raise ValueError(
            f"{name} is an integer array of 0s and 1s with one entry per pixel: it looks like "
            f"a mask; pass it as a boolean array (e.g. {name}.astype(bool)), or pass the ids "
            f"of the selected pixels (np.flatnonzero(mask))"
        )
    arr = np.sort(arr.astype(np.int64))
    if arr[0] < 0 or arr[-1] >= npix:
        bad = arr[0] if arr[0] < 0 else arr[-1]
        raise ValueError(f"{name} holds pixel id {bad}, outside [0, {npix}) at nside={nside}")
    dup = arr[1:] == arr[:-1]
    if dup.any():
        raise ValueError(
            f"{name} holds duplicated pixel ids (e.g. {arr[1:][dup][:5].tolist()}); "
            f"pass each pixel once, e.g. np.unique(pixels)"
        )
    return None if arr.shape[0] == npix else arr


def available_memory() -> Optional[int]:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or :obj:`None`
    where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(what: str, needed: int, hint: str) -> None:
    """Raises a :class:`MemoryError` before :obj:`what` starts when its estimated peak
    :obj:`needed` (bytes) exceeds the available memory, rather than failing after minutes of
    work or by the out-of-memory killer."""
    available = available_memory()
    if available is not None and needed > available:
        raise MemoryError(
            f"{what} needs about {needed / 2**30:.1f} GiB at its peak but {available / 2**30:.1f} "
            f"GiB are available: {hint}"
        )


def check_ell_bins(bins, lmax: int, name: str = "bins") -> np.ndarray:
    """Multipole bin edges as int64 ``[num_bins + 1]`` (bin ``i`` covers ``edges[i] <= ell <
    edges[i + 1]``): :obj:`bins` is a number of equal-width bins over ``0 ... lmax``, or the
    edges themselves, increasing integers within ``[0, lmax + 1]``."""
    if np.ndim(bins) == 0:
        num = int(bins)
        if num < 1 or num > lmax + 1:
            raise ValueError(f"`{name}` must be between 1 and lmax + 1 = {lmax + 1}, got {bins}.")
        return np.arange(num + 1, dtype=np.int64) * (lmax + 1) // num
    edges = np.asarray(bins)
    if (
        edges.ndim != 1
        or len(edges) < 2
        or not np.issubdtype(edges.dtype, np.integer)
        or (np.diff(edges) <= 0).any()
        or edges[0] < 0
        or edges[-1] > lmax + 1
    ):
        raise ValueError(
            f"`{name}` as edges must be increasing integers within [0, lmax + 1 = "
            f"{lmax + 1}], at least two, got {bins!r}."
        )
    return edges.astype(np.int64)


def as_generator(rng) -> np.random.Generator:
    """:obj:`rng` if it is a :class:`numpy.random.Generator`, else a new one seeded with it (an
    integer >= 0)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(check_int("rng seed", rng, 0))
