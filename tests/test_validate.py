"""The shared argument checks name the problem and the fix."""

import numpy as np
import pytest
import torch

from pyg_sphere import healpix_graph
from pyg_sphere._validate import as_pixels, check_int, check_nside


def test_integer_mask_is_recognised():
    mask = np.zeros(12 * 4**2, dtype=np.int64)
    mask[:10] = 1
    with pytest.raises(ValueError, match=r"looks like a mask.*astype\(bool\)"):
        healpix_graph(4, pixels=mask)
    with pytest.raises(ValueError, match="looks like a mask"):
        as_pixels(4, torch.from_numpy(mask))
    # The boolean mask it stands for works, and so do the ids.
    assert healpix_graph(4, pixels=mask.astype(bool)).num_nodes == 10
    assert healpix_graph(4, pixels=np.flatnonzero(mask)).num_nodes == 10
    # Ids 0 and 1 alone are not a mask.
    assert as_pixels(4, [0, 1]).tolist() == [0, 1]


def test_checks_name_the_argument():
    with pytest.raises(TypeError, match="nside must be an integer"):
        check_nside(16.0)
    with pytest.raises(ValueError, match="power of 2"):
        check_nside(24)
    with pytest.raises(ValueError, match="K must be an integer >= 1"):
        check_int("K", 0, 1)
