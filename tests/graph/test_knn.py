import healpy as hp
import numpy as np
import pytest
from scipy.spatial import cKDTree

from pyg_sphere.graph.knn import healpix_knn


def _check_against_tree(nside, pixels, k):
    pos = np.stack(hp.pix2vec(nside, np.arange(12 * nside**2), nest=True), -1)
    dist, _ = cKDTree(pos).query(pos[pixels], k=k + 1)
    nbr, d2 = healpix_knn(nside, pixels, k)
    # Same k smallest distances as a brute-force tree query (neighbour ids may differ only
    # between exactly tied candidates).
    np.testing.assert_allclose(np.sort(d2, 1), dist[:, 1:] ** 2, rtol=1e-6, atol=0)
    np.testing.assert_allclose(
        ((pos[nbr] - pos[pixels][:, None]) ** 2).sum(-1), d2, rtol=1e-6, atol=0
    )
    assert (nbr != pixels[:, None]).all()
    assert (np.diff(np.sort(nbr, 1), axis=1) > 0).all()  # no repeated neighbour


@pytest.mark.parametrize("nside", [1, 2, 4, 16, 64])
@pytest.mark.parametrize("k", [8, 20, 40, 60])
def test_full_sphere_matches_kdtree(nside, k):
    if k >= 12 * nside**2:
        pytest.skip("more neighbours than pixels")
    _check_against_tree(nside, np.arange(12 * nside**2), k)


@pytest.mark.slow
@pytest.mark.parametrize("nside,k", [(256, 8), (128, 60)])
def test_full_sphere_matches_kdtree_larger(nside, k):
    _check_against_tree(nside, np.arange(12 * nside**2), k)


@pytest.mark.parametrize("k", [8, 40])
def test_sparse_region_matches_kdtree(k):
    rng = np.random.default_rng(0)
    pixels = np.sort(rng.choice(12 * 128**2, size=3000, replace=False))
    _check_against_tree(128, pixels, k)
