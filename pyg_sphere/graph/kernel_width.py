"""Gaussian kernel widths of the DeepSphere v2 HEALPix graphs."""

# Kernel widths sigma tuned by DeepSphere v2 (Defferrard et al., ICLR 2020; pygsp's
# ``sphere-graphs`` notebooks) to make the k-NN HEALPix graph as rotation equivariant as
# possible. Units: Euclidean distance between unit vectors.
KERNEL_WIDTHS = {
    8: {32: 0.02500, 64: 0.01228, 128: 0.00614, 256: 0.00307, 512: 0.00154, 1024: 0.00077},
    20: {32: 0.03185, 64: 0.01564, 128: 0.00782, 256: 0.00391, 512: 0.00196, 1024: 0.00098},
    40: {32: 0.042432, 64: 0.021354, 128: 0.010595, 256: 0.005551, 512: 0.0027755,
         1024: 0.00138775},
    60: {32: 0.051720, 64: 0.025403, 128: 0.012695, 256: 0.006351, 512: 0.0031755,
         1024: 0.00158775},
}


def check_nside(nside) -> int:
    """Returns :obj:`nside` as an :obj:`int`, or raises if it is not a valid HEALPix nside."""
    if isinstance(nside, bool) or not hasattr(nside, '__index__'):
        raise TypeError(f"nside must be an integer power of 2, got {nside!r}")
    nside = int(nside)
    if nside < 1 or nside > 2**29 or nside & (nside - 1):
        raise ValueError(f"nside must be a power of 2 between 1 and 2**29, got {nside}")
    return nside


def kernel_width(nside: int, k: int = 8) -> float:
    r"""Returns the kernel width :math:`\sigma` of the DeepSphere v2 graph.

    Edge weights are :math:`w_{ij} = \exp(-\ln 2 \, d_{ij}^2 / \sigma^2)`, with :math:`d_{ij}`
    the Euclidean distance between the unit vectors of the pixel centres. The widths were tuned
    by DeepSphere v2 for :obj:`nside` 32 to 1024; outside that range they are extrapolated
    proportionally to the pixel size (:math:`\propto 1/n_\mathrm{side}`).

    Args:
        nside (int): HEALPix resolution (a power of 2).
        k (int): number of nearest neighbours (8, 20, 40 or 60).

    Example:
        >>> from pyg_sphere import kernel_width
        >>> kernel_width(64, k=8)
        0.01228
        >>> kernel_width(16, k=8)  # 2x the nside-32 value
        0.05
    """
    nside = check_nside(nside)
    if k not in KERNEL_WIDTHS:
        raise ValueError(f"No tuned kernel width for k={k}: the table covers k in "
                         f"{sorted(KERNEL_WIDTHS)}. Pass kernel_width=<sigma> explicitly "
                         f"to use another k.")
    table = KERNEL_WIDTHS[k]
    if nside in table:
        return table[nside]
    if nside < 32:
        return table[32] * 32 / nside
    return table[1024] * 1024 / nside
