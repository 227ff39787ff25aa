"""Gaussian kernel widths of the DeepSphere v2 HEALPix graphs."""

from .._validate import check_nside

# Kernel widths sigma tuned by DeepSphere v2 (Defferrard et al., ICLR 2020; pygsp's
# ``sphere-graphs`` notebooks) to make the k-NN HEALPix graph as rotation equivariant as
# possible. Units: Euclidean distance between unit vectors.
KERNEL_WIDTHS = {
    8: {32: 0.02500, 64: 0.01228, 128: 0.00614, 256: 0.00307, 512: 0.00154, 1024: 0.00077},
    20: {32: 0.03185, 64: 0.01564, 128: 0.00782, 256: 0.00391, 512: 0.00196, 1024: 0.00098},
    40: {
        32: 0.042432,
        64: 0.021354,
        128: 0.010595,
        256: 0.005551,
        512: 0.0027755,
        1024: 0.00138775,
    },
    60: {
        32: 0.051720,
        64: 0.025403,
        128: 0.012695,
        256: 0.006351,
        512: 0.0031755,
        1024: 0.00158775,
    },
}


def kernel_width(nside: int, num_neighbors: int = 8) -> float:
    r"""Returns the kernel width :math:`\sigma` of the DeepSphere v2 graph.

    Edge weights are :math:`w_{ij} = \exp(-\ln 2 \, d_{ij}^2 / \sigma^2)`, with :math:`d_{ij}`
    the Euclidean distance between the unit vectors of the pixel centres. The widths were tuned
    by DeepSphere v2 for :obj:`nside` 32 to 1024; outside that range they are extrapolated
    proportionally to the pixel size (:math:`\propto 1/n_\mathrm{side}`).

    Args:
        nside (int): HEALPix resolution (a power of 2).
        num_neighbors (int): number of nearest neighbours (8, 20, 40 or 60).

    Example:
        >>> from pyg_sphere import kernel_width
        >>> kernel_width(64, num_neighbors=8)
        0.01228
        >>> kernel_width(16, num_neighbors=8)  # 2x the nside-32 value
        0.05
    """
    nside = check_nside(nside)
    if num_neighbors not in KERNEL_WIDTHS:
        raise ValueError(
            f"No tuned kernel width for num_neighbors={num_neighbors}: the table "
            f"covers {sorted(KERNEL_WIDTHS)}. Pass kernel_width=<sigma> explicitly "
            f"to use another number of neighbours."
        )
    table = KERNEL_WIDTHS[num_neighbors]
    if nside in table:
        return table[nside]
    if nside < 32:
        return table[32] * 32 / nside
    return table[1024] * 1024 / nside
