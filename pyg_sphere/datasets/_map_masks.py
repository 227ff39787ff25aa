"""The masks of a collection's samples: the observed pixels shared by the channels of a sample
(:func:`combined_observed`), what is left of them at the processed nside (:func:`observed_fraction`
and the rule of :func:`observed_after`), and how the footprint changed (:func:`footprint_log`).

**The degrading rule.** Resampling to a lower nside merges the :math:`4^k` children of every
pixel. healpy's ``ud_grade`` keeps a merged pixel observed as soon as one child is
(``pess=False``, its default: the footprint widens, e.g. from 61.9% to 77.4% of the sky for a
real survey mask) or only when all are (``pess=True``: it shrinks, to 41%). Here a merged pixel
is observed when the observed fraction of its children is at least ``degrade_observed``
(default 0.5, the majority; ``0`` gives healpy's default, ``1`` its ``pess=True``), and its
value is the mean of its observed children. The majority keeps the observed area close to the
mask's own (pixels cut by the mask's edge are in about as often as out), and no pixel's value
rests on a few children only."""

from __future__ import annotations

import healpy as hp
import numpy as np

#: Default of ``degrade_observed``: a merged pixel is observed when most of its children are.
DEGRADE_OBSERVED = 0.5


def combined_observed(maps: np.ndarray) -> np.ndarray:
    """The pixels observed in every channel of a sample: a pixel unobserved (``UNSEEN``) in
    one channel is unobserved in all.

    Shapes:
        - **input:** maps [C, npix] float64, ``UNSEEN`` at unobserved pixels
        - **output:** [npix] bool
    """
    observed = np.ones(maps.shape[1], dtype=bool)
    for m in maps:
        observed &= ~hp.mask_bad(m)
    return observed


def observed_fraction(observed: np.ndarray, nest: bool, nside: int) -> np.ndarray:
    """Fraction of every pixel of :obj:`nside` that is observed at the maps' own resolution:
    the mean of its children's flags when degrading, its parent's flag when upgrading, the flag
    itself otherwise.

    Shapes:
        - **input:** observed [12 nside_in^2] bool, ring (``nest=False``) or nested
        - **output:** [12 nside^2] float64, nested

    Example::

        >>> import numpy as np
        >>> observed = np.zeros(12 * 2**2, dtype=bool)
        >>> observed[:3] = True  # 3 of the 4 children of nested pixel 0 at nside 1
        >>> observed_fraction(observed, nest=True, nside=1)[:2].tolist()
        [0.75, 0.0]
    """
    flags = observed.astype(np.float64)
    if not nest:
        flags = hp.reorder(flags, r2n=True)
    nside_in = hp.npix2nside(flags.size)
    if nside_in > nside:
        return flags.reshape(12 * nside**2, -1).mean(axis=1)
    if nside_in < nside:
        return np.repeat(flags, (nside // nside_in) ** 2)
    return flags


def observed_after(fraction: np.ndarray, threshold: float) -> np.ndarray:
    """The pixels kept as observed: an observed fraction of at least :obj:`threshold`, and
    above 0 (``threshold=0`` is healpy's ``ud_grade`` default, ``1`` its ``pess=True``)."""
    return (fraction > 0) & (fraction >= threshold)


def footprint_log(before: list, after: list, nside: int, threshold: float) -> str:
    """The processing log's line on the observed footprint: the mean observed fraction of the
    sky at the maps' own resolution (:obj:`before`, one entry per map) and at :obj:`nside`
    (:obj:`after`)."""
    b, a = 100 * float(np.mean(before)), 100 * float(np.mean(after))
    n = len(before)
    rule = f"{100 * threshold:g}% of its children are" if threshold else "one child is"
    return (
        f"Observed footprint ({'mean of ' if n > 1 else ''}{n} map{'s' if n > 1 else ''}, "
        f"every channel observed): {b:.1f}% of the sky at the maps' resolution -> {a:.1f}% at "
        f"nside {nside} (degrade_observed={threshold:g}: a pixel is observed when at least "
        f"{rule})"
    )
