import healpy as hp
import numpy as np
import pytest
import torch

import pyg_sphere
from pyg_sphere.equivariance import equivariance_error
from pyg_sphere.nn import SphericalChebConv


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Transforms of these small maps and norms of 10^4-vectors gain nothing from threads, and
    # OpenMP/BLAS threads waiting on busy cores make them tens of times slower.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield


def graph(nside, **kwargs):
    return pyg_sphere.healpix_graph(nside, lambda_max=False, **kwargs)


def test_error_falls_with_num_neighbors():
    """DeepSphere v2 (Defferrard et al. 2020, fig. 2): v1 graph worst, then 8, 20, 40
    neighbours."""
    nside, ell = 32, 50
    errors = {}
    for name, kwargs in [
        ("v1", dict(variant="v1")),
        ("k8", dict(num_neighbors=8)),
        ("k20", dict(num_neighbors=20)),
        ("k40", dict(num_neighbors=40)),
    ]:
        errors[name] = equivariance_error(
            graph(nside, **kwargs), ell, num_signals=2, num_rotations=2
        )
    # The measurement's own error: rotating through a least-squares harmonic analysis.
    baseline = equivariance_error(
        graph(nside), ell, lambda x, *_: x, num_signals=2, num_rotations=2
    )
    assert errors["v1"] > errors["k8"] > errors["k20"] > errors["k40"] > 100 * baseline
    assert errors["v1"] > 5 * errors["k8"]  # the default graph: measured about 17x better
    assert 1e-4 < errors["k8"] < 1e-2


def test_nest_and_ring_orderings_agree():
    nside, ell = 16, 20
    nested, ring = graph(nside, nest=True), graph(nside, nest=False)
    for normalization in ("sym", None):
        a = equivariance_error(nested, ell, normalization=normalization, return_all=True)
        b = equivariance_error(ring, ell, normalization=normalization, return_all=True)
        np.testing.assert_allclose(a, b, rtol=1e-8)
    torch.manual_seed(0)
    conv = SphericalChebConv(2, 3, K=4, lambda_max=2.0).double()  # the same on both
    a = equivariance_error(nested, ell, conv, num_signals=2, num_rotations=2, return_all=True)
    b = equivariance_error(ring, ell, conv, num_signals=2, num_rotations=2, return_all=True)
    assert a.shape == (2, 2)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_equivariant_and_non_equivariant_operators():
    """Independent checks of the measure: an isotropic harmonic-space filter commutes with
    rotations, a pixel-wise modulation by a fixed map does not."""
    nside, ell, lmax = 16, 20, 47
    g = graph(nside, nest=False)
    beam = hp.gauss_beam(np.radians(5.0), lmax=lmax)

    def isotropic(x, *_):  # ring-ordered [N, 1]
        alm = hp.map2alm_lsq(x[:, 0].numpy(), lmax, lmax, maxiter=100)[0]
        return torch.from_numpy(hp.alm2map(hp.almxfl(alm, beam), nside, lmax=lmax))[:, None]

    z = torch.from_numpy(hp.pix2vec(nside, np.arange(12 * nside**2))[2])
    assert equivariance_error(g, ell, isotropic, num_signals=2, num_rotations=2) < 1e-6
    assert equivariance_error(g, ell, lambda x, *_: 3 * x, num_signals=2) < 1e-6
    modulated = equivariance_error(
        g, ell, lambda x, *_: x * (1 + z[:, None]), return_all=True, squared=False
    )
    assert modulated.min() > 0.1
    # The same draws (same seed) squared, and relative to the input's norm.
    squared = equivariance_error(g, ell, lambda x, *_: x * (1 + z[:, None]), return_all=True)
    np.testing.assert_allclose(squared, modulated**2, rtol=1e-10)
    scaled = equivariance_error(
        g,
        ell,
        lambda x, *_: 2 * x * (1 + z[:, None]),
        return_all=True,
        squared=False,
        relative_to="input",
    )
    assert np.all(scaled > modulated)  # ||2 (1 + z) f|| > ||f|| for every draw


def test_layer_on_better_graph_is_more_equivariant():
    nside, ell = 16, 20
    torch.manual_seed(0)
    conv = SphericalChebConv(1, 2, K=4).double()
    v1 = equivariance_error(graph(nside, variant="v1"), ell, conv)
    v2 = equivariance_error(graph(nside), ell, conv)
    assert v1 > 3 * v2


def test_bad_input():
    g = graph(8)
    with pytest.raises(ValueError, match="full-sphere"):
        equivariance_error(graph(8, pixels=np.arange(100)), 4)
    with pytest.raises(ValueError, match="band limit"):
        equivariance_error(g, 24)
    with pytest.raises(ValueError, match="relative_to"):
        equivariance_error(g, 4, relative_to="max")
    with pytest.raises(ValueError, match="normalization"):
        equivariance_error(g, 4, normalization="combinatorial")
    with pytest.raises(TypeError, match="callable"):
        equivariance_error(g, 4, op="laplacian")
    with pytest.raises(TypeError, match="Data"):
        equivariance_error(g.edge_index, 4)
    with pytest.raises(ValueError, match="zero"):
        equivariance_error(g, 4, lambda x, *_: 0 * x)
    with pytest.raises(ValueError, match=r"\[N, C'\]"):
        equivariance_error(g, 4, lambda x, *_: x.sum())
    with pytest.raises(ValueError, match="num_signals must be an integer >= 1"):
        equivariance_error(g, 4, num_signals=0)
    with pytest.raises(TypeError, match="ell must be an integer"):
        equivariance_error(g, 2.5)


def test_nothing_is_downloaded(monkeypatch):
    import astropy.utils.data

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(astropy.utils.data, "get_pkg_data_filename", no_download)
    monkeypatch.setattr(astropy.utils.data, "download_file", no_download)
    assert equivariance_error(graph(8), 6, num_signals=1, num_rotations=1) > 0
