import pytest

from pyg_sphere import kernel_width


def test_table_and_extrapolation():
    assert kernel_width(64, 8) == 0.01228
    assert kernel_width(1024, 40) == 0.00138775
    assert kernel_width(8, 20) == pytest.approx(0.03185 * 4)
    assert kernel_width(2048, 60) == pytest.approx(0.00158775 / 2)
    # widths follow the pixel size: roughly halve when nside doubles
    for k in (8, 20, 40, 60):
        assert kernel_width(512, k) / kernel_width(256, k) == pytest.approx(0.5, rel=0.05)


def test_errors():
    with pytest.raises(ValueError, match="num_neighbors=9"):
        kernel_width(64, 9)
    with pytest.raises(ValueError, match="power of 2"):
        kernel_width(48, 8)
