"""Rotation equivariance error of graph operators and layers on the HEALPix sphere.

A graph convolution on the sphere is only approximately rotation equivariant: how close it
comes depends on the graph (DeepSphere v2, Defferrard et al., ICLR 2020, section 3). The
measure here follows that paper: signals of a single spherical-harmonic degree, random
rotations applied through spherical harmonics, and the normalized error between "filter then
rotate" and "rotate then filter".
"""

from typing import Callable, Optional, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from ._lazy import lazy
from ._validate import check_choice, check_int
from .graph.laplacian import laplacian_matrix

hp = lazy("healpy")
transform = lazy("scipy.spatial.transform")

Operator = Callable[[Tensor, Tensor, Optional[Tensor]], Tensor]


def equivariance_error(
    graph: Data,
    ell: int,
    op: Optional[Operator] = None,
    *,
    normalization: Optional[str] = "sym",
    num_signals: int = 4,
    num_rotations: int = 4,
    channels: Optional[int] = None,
    relative_to: str = "output",
    squared: bool = True,
    lmax: Optional[int] = None,
    maxiter: int = 50,
    seed: Union[int, np.random.Generator] = 0,
    return_all: bool = False,
) -> Union[float, np.ndarray]:
    r"""Mean rotation equivariance error of a graph Laplacian or a layer on the full sphere.

    For random signals :math:`f` made of the single spherical-harmonic degree :obj:`ell` and
    random rotations :math:`g` (uniform on :math:`SO(3)`), measures how far the operator
    :math:`F` is from commuting with rotations (DeepSphere v2, Defferrard et al. 2020, eq. 4-5):

    .. math::
        E(f, g) = \left(\frac{\lVert R(g)\,F f - F\,R(g) f\rVert}{\lVert F f\rVert}\right)^2,

    averaged over signals and rotations (with :obj:`relative_to='input'` the denominator is
    :math:`\lVert f\rVert`; with :obj:`squared=False` the ratio is not squared). Zero for an
    operator that commutes with rotations.

    Rotations act on spherical-harmonic coefficients (:func:`healpy.rotate_alm`, exact within
    the band limit :obj:`lmax`). The input :math:`f` is band-limited, so :math:`R(g) f` is
    exact. The output :math:`F f` is not: its coefficients are the least-squares fit of the map
    by degrees up to :obj:`lmax` (:func:`healpy.map2alm_lsq`, which runs :func:`healpy.map2alm`
    without pixel weights: nothing is downloaded). Any part of :math:`F R(g) f` beyond the band
    limit therefore counts as error, as it should: an equivariant operator keeps a degree-ell
    signal within degree ell. The error of this procedure itself (the identity operator,
    :obj:`op=lambda x, *_: x`) is about :math:`10^{-8}` at :obj:`nside=32`, :obj:`ell=50`.

    Args:
        graph (torch_geometric.data.Data): A full-sphere HEALPix graph, e.g. from
            :func:`pyg_sphere.healpix_graph` (needs :obj:`nside`, :obj:`nest`,
            :obj:`edge_index`, :obj:`edge_weight`; ring or nested ordering).
        ell (int): Spherical-harmonic degree of the test signals, at most :obj:`lmax`.
        op (callable, optional): The operator :math:`F`, called as
            ``op(x, graph.edge_index, graph.edge_weight)`` with ``x`` of shape
            :math:`[N, C_{in}]` in the graph's node order, like a PyG layer (e.g. a
            :class:`~pyg_sphere.nn.SphericalChebConv`). It runs under :func:`torch.no_grad`,
            in the dtype and on the device of its parameters (float64 on the CPU for a plain
            function). :obj:`None` (default): the graph Laplacian with :obj:`normalization`.
        normalization (str, optional): Laplacian used when :obj:`op` is :obj:`None`:
            :obj:`'sym'` (:math:`I - D^{-1/2} W D^{-1/2}`, the one the layers filter with),
            :obj:`'rw'` or :obj:`None` (combinatorial :math:`D - W`, the paper's choice).
            (default: :obj:`'sym'`)
        num_signals (int): Random signals averaged over. (default: :obj:`4`)
        num_rotations (int): Random rotations per signal. (default: :obj:`4`)
        channels (int, optional): Input channels :math:`C_{in}` given to :obj:`op` (each an
            independent random signal of degree :obj:`ell`). Default: :obj:`op.in_channels`
            when it is a positive int, else 1.
        relative_to (str): :obj:`'output'` (:math:`\lVert F f\rVert`, as DeepSphere) or
            :obj:`'input'` (:math:`\lVert f\rVert`). (default: :obj:`'output'`)
        squared (bool): Average the squared ratio (DeepSphere's normalized mean squared
            error) rather than the ratio. (default: :obj:`True`)
        lmax (int, optional): Band limit of the rotations. (default: :math:`3 n_{side} - 1`)
        maxiter (int): Iterations of the least-squares harmonic analysis. (default: 50)
        seed (int or numpy.random.Generator): Seed of the signals and rotations.
        return_all (bool): Return the errors of every signal and rotation,
            :math:`[\mathrm{num\_signals}, \mathrm{num\_rotations}]`, instead of their mean.

    Returns:
        float: the mean error (or a numpy array with :obj:`return_all=True`).

    Example::

        >>> from pyg_sphere import healpix_graph
        >>> from pyg_sphere.equivariance import equivariance_error
        >>> g = healpix_graph(8)
        >>> err = equivariance_error(g, ell=6, num_signals=1, num_rotations=2)  # Laplacian
        >>> bool(0 < err < 0.01)
        True
        >>> import torch
        >>> from pyg_sphere.nn import SphericalChebConv
        >>> _ = torch.manual_seed(0)  # the error depends on the random filter
        >>> conv = SphericalChebConv(1, 2, K=3)
        >>> bool(equivariance_error(g, 6, conv, num_signals=1, num_rotations=2) < 0.01)
        True
    """
    nside, nest = _check_graph(graph)
    lmax = 3 * nside - 1 if lmax is None else check_int("lmax", lmax, 0)
    ell = check_int("ell", ell, 0)
    if ell > lmax:
        raise ValueError(
            f"ell={ell} is above the band limit lmax={lmax} (at most "
            f"3 * nside - 1 = {3 * nside - 1} by default): rotations through "
            f"spherical harmonics would not be exact; lower ell or raise lmax"
        )
    num_signals = check_int("num_signals", num_signals, 1)
    num_rotations = check_int("num_rotations", num_rotations, 1)
    maxiter = check_int("maxiter", maxiter, 1)
    check_choice("relative_to", relative_to, ("output", "input"))
    if channels is None:
        in_ch = getattr(op, "in_channels", None)
        channels = in_ch if isinstance(in_ch, int) and in_ch > 0 else 1
    channels = check_int("channels", channels, 1)
    if op is None and channels != 1:
        raise ValueError("channels must be 1 when op is None (the Laplacian filters one map)")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    apply = _laplacian(graph, normalization) if op is None else _layer(graph, op, channels)

    # All maps are in RING ordering here (healpy's transforms); `apply` reorders for the graph.
    alms = _random_alms(rng, num_signals * channels, ell, lmax).reshape(num_signals, channels, -1)
    rotations = transform.Rotation.random(num_rotations, random_state=rng).as_matrix()
    signals = np.stack([_alm2map(a, nside, lmax) for a in alms])  # [S, C, N]
    rotated = np.stack(
        [[_alm2map(_rotate(a, m, lmax), nside, lmax) for m in rotations] for a in alms]
    )  # [S, R, C, N]
    out = apply(signals)  # F f: [S, C', N]
    out_of_rotated = apply(rotated.reshape(-1, *rotated.shape[2:])).reshape(
        num_signals, num_rotations, -1, signals.shape[-1]
    )  # F R f: [S, R, C', N]

    errors = np.empty((num_signals, num_rotations))
    for s in range(num_signals):
        scale = np.linalg.norm(out[s] if relative_to == "output" else signals[s])
        if scale == 0:
            raise ValueError(
                f"the {relative_to} signal is zero (op maps degree {ell} to "
                f"zero): its relative error is undefined; use another ell or "
                f"relative_to='input'"
            )
        out_alm, _, _ = hp.map2alm_lsq(out[s], lmax, lmax, pol=False, tol=1e-10, maxiter=maxiter)
        out_alm = np.atleast_2d(out_alm)
        for r, matrix in enumerate(rotations):
            rotated_out = _alm2map(_rotate(out_alm, matrix, lmax), nside, lmax)
            errors[s, r] = np.linalg.norm(rotated_out - out_of_rotated[s, r]) / scale
    if squared:
        errors = errors**2
    return errors if return_all else float(errors.mean())


def _check_graph(graph):
    if not isinstance(graph, Data):
        raise TypeError(
            f"graph must be a torch_geometric.data.Data from "
            f"pyg_sphere.healpix_graph, got {type(graph).__name__}"
        )
    nside, nest = getattr(graph, "nside", None), getattr(graph, "nest", None)
    if nside is None or nest is None or graph.edge_index is None:
        raise ValueError(
            "graph needs nside, nest and edge_index: build it with pyg_sphere.healpix_graph(nside)"
        )
    nside = int(nside)
    pixels = getattr(graph, "pixels", None)
    if graph.num_nodes != 12 * nside**2 or (
        pixels is not None
        and not torch.equal(pixels.cpu(), torch.arange(12 * nside**2, dtype=pixels.dtype))
    ):
        raise ValueError(
            f"equivariance_error needs a full-sphere graph (12 * nside**2 = "
            f"{12 * nside**2} nodes at nside={nside}, in pixel order), got "
            f"{graph.num_nodes} nodes: rotations move signals across any region "
            f"boundary; build it with pyg_sphere.healpix_graph(nside)"
        )
    return nside, bool(nest)


def _random_alms(rng, count, ell, lmax):
    """`count` coefficient vectors of degree `ell` only, isotropic: a_l0 real, a_lm complex
    with independent real and imaginary parts of variance 1/2."""
    alms = np.zeros((count, hp.Alm.getsize(lmax)), dtype=np.complex128)
    idx = hp.Alm.getidx(lmax, ell, np.arange(ell + 1))
    values = rng.standard_normal((count, ell + 1)) + 1j * rng.standard_normal((count, ell + 1))
    values[:, 1:] /= np.sqrt(2)
    values[:, 0] = values[:, 0].real
    alms[:, idx] = values
    return alms


def _rotate(alm, matrix, lmax):
    alm = np.array(alm, dtype=np.complex128, ndmin=2)  # rotate_alm works in place
    for a in alm:
        hp.rotate_alm(a, matrix=matrix, lmax=lmax, mmax=lmax)
    return alm


def _alm2map(alm, nside, lmax):
    alm = np.atleast_2d(alm)
    return np.stack([hp.alm2map(a, nside, lmax=lmax, mmax=lmax) for a in alm])


def _laplacian(graph, normalization):
    check_choice("normalization", normalization, ("sym", "rw", None))
    lap = laplacian_matrix(graph.edge_index, graph.edge_weight, graph.num_nodes, normalization)
    nest = bool(graph.nest)

    def apply(maps):  # [B, 1, N] in RING ordering
        x = maps[:, 0]
        if nest:
            x = hp.reorder(x, r2n=True)
        y = (lap @ np.atleast_2d(x).T).T
        if nest:
            y = hp.reorder(y, n2r=True)
        return np.atleast_2d(y)[:, None]

    return apply


def _layer(graph, op, channels):
    if not callable(op):
        raise TypeError(
            f"op must be None (the graph Laplacian) or callable as "
            f"op(x, edge_index, edge_weight), got {type(op).__name__}"
        )
    params = list(op.parameters()) if isinstance(op, torch.nn.Module) else []
    dtype = params[0].dtype if params else torch.float64
    device = params[0].device if params else torch.device("cpu")
    edge_index = graph.edge_index.to(device)
    edge_weight = None if graph.edge_weight is None else graph.edge_weight.to(device, dtype)
    nest = bool(graph.nest)

    def apply(maps):  # [B, C, N] in RING ordering -> [B, C', N]
        outs = []
        for m in maps:
            if nest:
                m = np.atleast_2d(hp.reorder(m, r2n=True))
            x = torch.as_tensor(m.T.copy(), dtype=dtype, device=device)
            with torch.no_grad():
                y = op(x, edge_index, edge_weight)
            if not isinstance(y, Tensor) or y.dim() != 2 or y.size(0) != x.size(0):
                raise ValueError(
                    f"op must map x [N, C] to a tensor [N, C'], got "
                    f"{tuple(y.shape) if isinstance(y, Tensor) else type(y)}"
                )
            y = y.detach().cpu().double().numpy().T
            if nest:
                y = np.atleast_2d(hp.reorder(y, n2r=True))
            outs.append(y)
        return np.stack(outs)

    return apply
