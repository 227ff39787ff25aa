"""The graph build in many small blocks (scratch released block by block) gives the same graph."""

import sys

import numpy as np
import pytest
import torch

from pyg_sphere import kernel_width
from pyg_sphere.graph import _edges, _geometry, _healpix_graph


@pytest.mark.parametrize(
    "pixels, nest, variant",
    [
        (None, True, "v2"),
        (None, False, "v2"),
        (np.arange(100, 2500, 3), True, "v2"),
        (np.arange(100, 2500, 3), False, "v2"),
        (None, True, "v1"),
    ],
)
def test_small_blocks_give_the_same_graph(monkeypatch, pixels, nest, variant):
    sigma = kernel_width(16, 8) if variant == "v2" else None
    whole = _healpix_graph._build(16, pixels, 8, nest, sigma, variant)
    # 37 rows: many blocks whose edges fall inside memory pages, several blocks per page.
    monkeypatch.setattr(_edges, "BLOCK_ROWS", 37)
    monkeypatch.setattr(_geometry, "_ROWS", 37)
    blocks = _healpix_graph._build(16, pixels, 8, nest, sigma, variant)
    for key in ("edge_index", "edge_weight", "pos", "pixels"):
        assert torch.equal(whole[key], blocks[key]), key


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise semantics of Linux")
def test_released_scratch_rows():
    scratch = _edges._Scratch((5000, 8), np.int32)
    scratch.array[:] = 7
    scratch.release_rows(0, 2048)  # 2048 rows of 32 bytes: 16 pages
    assert (scratch.array[2048:] == 7).all()  # nothing past the rows is lost
    scratch.release_rows(2048, 5000)  # the map's last, partial page included
    assert not (scratch.array == 7).any()  # pages went back: they read as zeros


def test_more_edges_than_the_index_dtype_counts_is_refused():
    # 8-bit indices stand for int32 with more than 2**31 - 1 edges (nside 8192 and beyond).
    sigma = kernel_width(4, 8)
    with pytest.raises(ValueError, match=r"edges, more than torch.int8 edge indices can count"):
        _healpix_graph._build(4, None, 8, True, sigma, "v2", torch.int8)
