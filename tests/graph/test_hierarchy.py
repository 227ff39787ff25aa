import healpy as hp
import numpy as np
import pytest
import torch

import pyg_sphere
from pyg_sphere import (
    close_hierarchy,
    coarsen_graph,
    healpix_graph,
    healpix_hierarchy,
    is_closed_hierarchy,
    nested_patches,
)


def test_nested_patches_match_healpy_parents():
    nside, order = 16, 4
    patches = nested_patches(nside, order)
    assert patches.shape == (12 * order**2, (nside // order) ** 2)
    assert torch.equal(patches.flatten().sort().values, torch.arange(12 * nside**2))
    # the patch of a pixel is its ancestor at nside=order: check with healpy's geometry
    theta, phi = hp.pix2ang(nside, patches.numpy().ravel(), nest=True)
    parent = hp.ang2pix(order, theta, phi, nest=True).reshape(patches.shape)
    assert (parent == np.arange(12 * order**2)[:, None]).all()
    with pytest.raises(ValueError, match="exceed"):
        nested_patches(4, 8)


def test_close_hierarchy():
    assert close_hierarchy([5, 17]).tolist() == [4, 5, 6, 7, 16, 17, 18, 19]
    closed = close_hierarchy(torch.tensor([3, 70]), levels=2)
    assert closed.tolist() == list(range(0, 16)) + list(range(64, 80))
    assert is_closed_hierarchy(closed, 2) and not is_closed_hierarchy([3, 70], 1)
    mask = np.zeros(12 * 4**2, dtype=bool)
    mask[[1, 9]] = True
    assert close_hierarchy(mask).tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    full = np.ones(12 * 4**2, dtype=bool)  # a mask of the whole sphere is closed at every level
    assert close_hierarchy(full, levels=2).tolist() == list(range(12 * 4**2))
    assert is_closed_hierarchy(full, levels=2)


@pytest.mark.parametrize("pixels", [None, "region"])
def test_hierarchy_parents_match_ud_grade(pixels):
    nside, levels = 32, 3
    if pixels == "region":
        rng = np.random.default_rng(0)
        pixels = close_hierarchy(rng.choice(12 * nside**2, 40, replace=False), levels)
    graphs = healpix_hierarchy(nside, levels, pixels, lambda_max=False)
    assert [g.nside for g in graphs] == [32, 16, 8, 4]
    mask = np.zeros(12 * nside**2)
    mask[graphs[0].pixels.numpy()] = 1
    for g in graphs[1:]:
        coarse = hp.ud_grade(mask, g.nside, order_in="NEST", order_out="NEST")
        assert np.array_equal(np.flatnonzero(coarse > 0), g.pixels.numpy())
        # a closed region stays closed: every parent has all its children
        assert np.all(coarse[g.pixels.numpy()] == 1.0)
        assert g.kernel_width == pyg_sphere.kernel_width(g.nside, 8)


def test_coarsen_graph_is_healpix_graph_of_parents():
    g = healpix_graph(16, pixels=range(512), kernel_width=0.08)
    c = coarsen_graph(g, 2)
    ref = healpix_graph(4, pixels=range(32), kernel_width=0.32)
    assert torch.equal(c.edge_index, ref.edge_index)
    assert torch.allclose(c.edge_weight, ref.edge_weight)
    assert c.lambda_max == pytest.approx(ref.lambda_max)
    with pytest.raises(ValueError, match="nested"):
        coarsen_graph(healpix_graph(4, nest=False), 1)
    with pytest.raises(ValueError, match="Cannot coarsen"):
        coarsen_graph(healpix_graph(4), 3)
    with pytest.raises(ValueError, match="nest=True"):
        healpix_hierarchy(8, 1, nest=False)
