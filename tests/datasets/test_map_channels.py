"""Several maps per sample as channels (FITS columns, several files per manifest row), one mask
for all channels, the observed channel, masked_value and the degrading rule, each checked
against numpy."""

import os

import healpy as hp
import numpy as np
import pytest
import torch

from pyg_sphere.datasets import ConvergenceMaps
from pyg_sphere.loader import SharedGraphLoader
from pyg_sphere.nn import DeepSphere
from pyg_sphere.transforms import AddGaussianNoise

NSIDE = 16


def gaussian(seed, nside=NSIDE):
    """A full-sky RING map with a non-zero mean."""
    np.random.seed(seed)
    return hp.synfast(1.0 / (np.arange(3 * nside) + 5.0) ** 2, nside) + 0.3


def cap(nside=NSIDE, degrees=50, south=False):
    """RING flags: observed outside a polar cap of the given radius."""
    theta, _ = hp.pix2ang(nside, np.arange(12 * nside**2))
    return theta < np.radians(180 - degrees) if south else theta > np.radians(degrees)


def write_manifest(root, rows, header="file,label,split"):
    (root / "raw").mkdir(parents=True, exist_ok=True)
    lines = [header] + [",".join(str(v) for v in r) for r in rows]
    (root / "raw" / "manifest.csv").write_text("\n".join(lines) + "\n")


def write(root, name, maps, nest=False):
    (root / "raw").mkdir(parents=True, exist_ok=True)
    maps = [hp.reorder(m, r2n=True) if nest else m for m in maps]
    hp.write_map(str(root / "raw" / name), maps, nest=nest, dtype=np.float64, overwrite=True)


def xs(ds):
    return torch.stack([d.x for d in ds]).numpy()


def nested_patches_of(m_ring, order=1):
    return hp.reorder(m_ring, r2n=True).reshape(12 * order**2, -1)


# ----- one sample, several maps: columns, files, datasets -------------------------------------
def test_columns_files_and_single_datasets_agree(tmp_path):
    maps = [[gaussian(10 * i + c) for c in range(4)] for i in range(2)]
    for i in range(2):
        maps[i] = [np.where(cap(), m, hp.UNSEEN) for m in maps[i]]  # one mask for all bins
    cols, files = tmp_path / "cols", tmp_path / "files"
    rows_cols, rows_files = [], []
    for i, ms in enumerate(maps):
        write(cols, f"m{i}.fits", ms)
        rows_cols.append((f"m{i}.fits", i, "train"))
        for c, m in enumerate(ms):
            write(files, f"m{i}_bin{c}.fits", [m])
        rows_files.append((";".join(f"m{i}_bin{c}.fits" for c in range(4)), i, "train"))
    write_manifest(cols, rows_cols)
    write_manifest(files, rows_files)
    kw = dict(nside=8, order=1, min_observed=0.5, log=False)
    by_cols = ConvergenceMaps(str(cols), field=(0, 1, 2, 3), **kw)
    by_files = ConvergenceMaps(str(files), **kw)
    singles = [ConvergenceMaps(str(cols), field=c, **kw) for c in range(4)]
    assert by_cols.num_node_features == by_files.num_node_features == 4
    assert by_cols[0].x.shape == (64, 4) and len(by_cols) == len(by_files) == len(singles[0])
    np.testing.assert_array_equal(xs(by_cols), xs(by_files))
    np.testing.assert_array_equal(xs(by_cols), np.concatenate([xs(s) for s in singles], -1))
    assert by_cols._patch_id.tolist() == singles[0]._patch_id.tolist()
    assert by_files.files[0] == "m0_bin0.fits;m0_bin1.fits;m0_bin2.fits;m0_bin3.fits"
    assert by_cols.channel_std == pytest.approx([s.map_std for s in singles], rel=1e-6)
    arr = np.load(os.path.join(by_cols.processed_dir, "train.npy"), mmap_mode="r")
    assert arr.shape == (len(by_cols), 64, 4)


def test_columns_of_several_files_go_file_by_file(tmp_path):
    a, b = [gaussian(1), gaussian(2)], [gaussian(3), gaussian(4)]
    write(tmp_path, "a.fits", a)
    write(tmp_path, "b.fits", b)
    write_manifest(tmp_path, [("a.fits;b.fits", 0, "train")])
    ds = ConvergenceMaps(str(tmp_path), nside=8, field=(0, 1), log=False)
    got = xs(ds)  # [12, 64, 4]
    for c, m in enumerate(a + b):
        expected = hp.ud_grade(m - m.mean(), 8, order_in="RING", order_out="NEST")
        np.testing.assert_allclose(got[..., c], expected.reshape(12, -1), rtol=1e-5, atol=1e-6)


def test_row_files_must_agree(tmp_path):
    write(tmp_path, "a.fits", [gaussian(1)])
    write(tmp_path, "low.fits", [gaussian(2, nside=8)])
    write(tmp_path, "nest.fits", [gaussian(3)], nest=True)
    write_manifest(tmp_path, [("a.fits;low.fits", 0, "train")])
    with pytest.raises(
        ValueError,
        match=r"'a.fits' \(file 1 of 2 .*line 2\) has nside 16.*"
        r"'low.fits' \(file 2 of 2.*nside 8.*healpy.ud_grade",
    ):
        ConvergenceMaps(str(tmp_path), nside=8, log=False)
    write_manifest(tmp_path, [("a.fits;nest.fits", 0, "train")])
    with pytest.raises(ValueError, match=r"ring ordering, but 'nest.fits'.*nested.*healpy.reorder"):
        ConvergenceMaps(str(tmp_path), nside=8, log=False)


@pytest.mark.parametrize(
    "rows, match",
    [
        (
            [("a.fits;gone.fits", 0, "train")],
            r"'gone.fits' \(file 2 of 2 on raw/manifest.csv "
            r"line 2\): file not found.*remove the row",
        ),
        (
            [("a.fits;b.fits", 0, "train"), ("c.fits", 1, "train")],
            r"'c.fits' \(raw/manifest.csv line 3\) lists 1 file but .* lists 2",
        ),
        ([("a.fits;a.fits", 0, "train")], r"'a.fits' \(file 2 of 2.*listed twice \(in this row"),
        ([("a.fits;", 0, "train")], r"line 2\): an empty path"),
    ],
)
def test_bad_rows(tmp_path, rows, match):
    for name in ("a.fits", "b.fits", "c.fits"):
        write(tmp_path, name, [gaussian(1)])
    write_manifest(tmp_path, rows)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        ConvergenceMaps(str(tmp_path), nside=8, log=False)


def test_field_beyond_the_columns(tmp_path):
    write(tmp_path, "two.fits", [gaussian(1), gaussian(2)])
    write_manifest(tmp_path, [("two.fits", 0, "train")])
    with pytest.raises(
        ValueError,
        match=r"'two.fits' \(raw/manifest.csv line 2\): field=3, but "
        r"the file has 2 map columns.*between 0 and 1",
    ):
        ConvergenceMaps(str(tmp_path), nside=8, field=(0, 3), log=False)
    with pytest.raises(ValueError, match="field must name at least one column"):
        ConvergenceMaps(str(tmp_path), nside=8, field=(), log=False)
    with pytest.raises(ValueError, match=r"field must be an integer >= 0, got -1"):
        ConvergenceMaps(str(tmp_path), nside=8, field=(0, -1), log=False)


# ----- one mask; the observed channel -----------------------------------------------------------
def test_masks_are_combined_and_the_observed_channel_is_their_oracle(tmp_path):
    m0, m1 = gaussian(5), gaussian(6)
    seen0, seen1 = cap(), cap(degrees=40, south=True)
    write(tmp_path, "k.fits", [np.where(seen0, m0, hp.UNSEEN), np.where(seen1, m1, hp.UNSEEN)])
    write_manifest(tmp_path, [("k.fits", 0, "train")])
    ds = ConvergenceMaps(
        str(tmp_path), field=(0, 1), observed_channel=True, min_observed=0.01, log=False
    )
    seen = seen0 & seen1  # a pixel masked in one channel only is unobserved in both
    flags = nested_patches_of(seen.astype(float))
    keep = np.flatnonzero(flags.mean(1) >= 0.01)
    assert ds._patch_id.tolist() == keep.tolist() and ds.num_node_features == 3
    got = xs(ds)
    np.testing.assert_array_equal(got[..., 2], flags[keep])
    for c, m in enumerate((m0, m1)):
        expected = nested_patches_of(np.where(seen, m - m[seen].mean(), 0.0))[keep]
        np.testing.assert_allclose(got[..., c], expected, rtol=1e-5, atol=1e-6)
    assert (got[..., :2][got[..., 2] == 0] == 0).all()
    assert ds.channel_std[2] == 0.0 and ds.footprint["raw"] == pytest.approx(seen.mean())


def test_single_channel_with_observed_flags(tmp_path):
    m = np.where(cap(), gaussian(7), hp.UNSEEN)
    write(tmp_path, "p.fits", [m])
    write_manifest(tmp_path, [("p.fits", 0, "train")])
    ds = ConvergenceMaps(str(tmp_path), observed_channel=True, min_observed=0.5, log=False)
    plain = ConvergenceMaps(str(tmp_path), min_observed=0.5, log=False)
    got = xs(ds)
    np.testing.assert_array_equal(got[..., :1], xs(plain))
    np.testing.assert_array_equal(got[..., 1], nested_patches_of(cap().astype(float))[ds._patch_id])
    assert plain.num_node_features == 1 and ds.map_std == plain.map_std


# ----- masked_value -----------------------------------------------------------------------------
def test_masked_value_zero(tmp_path):
    m, seen = gaussian(8), cap()
    unseen, zeros, nan = (tmp_path / d for d in ("unseen", "zeros", "nan"))
    write(unseen, "unseen.fits", [np.where(seen, m, hp.UNSEEN)])
    write(zeros, "zeros.fits", [np.where(seen, m, 0.0)])
    (nan / "raw").mkdir(parents=True)
    np.save(nan / "raw" / "nan.npy", np.where(seen, m, np.nan))
    for root, name in ((unseen, "unseen.fits"), (zeros, "zeros.fits"), (nan, "nan.npy")):
        write_manifest(root, [(name, 0, "train")])
    kw = dict(nside=8, min_observed=0.5, log=False)
    reference = xs(ConvergenceMaps(str(unseen), **kw))
    np.testing.assert_array_equal(xs(ConvergenceMaps(str(zeros), masked_value=0, **kw)), reference)
    with pytest.warns(
        UserWarning, match=r"'zeros.fits' \(raw/manifest.csv line 2\) \(.*% zeros\).*masked_value=0"
    ):
        kept_as_data = ConvergenceMaps(str(zeros), **kw)
    assert len(kept_as_data) == 12  # the zeros are sky: every patch is fully observed
    with pytest.warns(UserWarning, match=r"masked_value=-99 never occurs in 1 map: 'zeros.fits'"):
        ConvergenceMaps(str(zeros), masked_value=-99, **kw)
    with pytest.raises(ValueError, match=r"NaN or infinite.*masked_value=float\('nan'\)"):
        ConvergenceMaps(str(nan), **kw)
    by_nan = ConvergenceMaps(str(nan), masked_value=float("nan"), **kw)
    np.testing.assert_allclose(xs(by_nan), reference, rtol=1e-6, atol=1e-7)
    again = ConvergenceMaps(str(nan), masked_value=float("nan"), **kw)  # NaN in the key
    assert again.meta["build"] == by_nan.meta["build"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"masked_value": float("inf")}, "masked_value must be a finite number or NaN"),
        ({"masked_value": "0"}, "masked_value must be a finite number or NaN"),
        ({"degrade_observed": 1.5}, r"degrade_observed must be a number in \[0, 1\]"),
        ({"degrade_observed": True}, r"degrade_observed must be a number in \[0, 1\]"),
    ],
)
def test_bad_mask_options(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConvergenceMaps(str(tmp_path), nside=8, log=False, **kwargs)


# ----- degrading --------------------------------------------------------------------------------
def test_degrade_rule_matches_the_children_fractions(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    m = gaussian(9)
    seen = cap(degrees=40) & (rng.random(m.size) > 0.3)  # a cap and scattered holes
    write(tmp_path, "p.fits", [np.where(seen, m, hp.UNSEEN)])
    write_manifest(tmp_path, [("p.fits", 0, "train")])
    children = hp.reorder(seen.astype(float), r2n=True).reshape(-1, 4)
    fraction = children.mean(1)
    values = hp.reorder(np.where(seen, m - m[seen].mean(), 0.0), r2n=True).reshape(-1, 4)
    mean = values.sum(1) / np.maximum(children.sum(1), 1)
    kw = dict(nside=8, observed_channel=True, min_observed=0.01, log=False)
    for threshold in (0.0, 0.5, 1.0):
        ds = ConvergenceMaps(str(tmp_path), degrade_observed=threshold, **kw)
        observed = (fraction > 0) & (fraction >= threshold)
        keep = np.flatnonzero(observed.reshape(12, -1).mean(1) >= 0.01)
        assert ds._patch_id.tolist() == keep.tolist()
        got = xs(ds)
        flags = np.where(observed, fraction, 0.0).reshape(12, -1)[keep]
        np.testing.assert_array_equal(got[..., 1], flags)
        expected = np.where(observed, mean, 0.0).reshape(12, -1)[keep]
        np.testing.assert_allclose(got[..., 0], expected, rtol=1e-5, atol=1e-6)
        assert ds.footprint == pytest.approx({"raw": seen.mean(), "processed": observed.mean()})
    # healpy's rule: 0 is ud_grade's default, 1 its pess=True
    grade = hp.ud_grade(np.where(seen, m, hp.UNSEEN), 8, order_in="RING", order_out="NEST")
    assert ((grade != hp.UNSEEN) == (fraction > 0)).all()
    pess = hp.ud_grade(
        np.where(seen, m, hp.UNSEEN), 8, pess=True, order_in="RING", order_out="NEST"
    )
    assert ((pess != hp.UNSEEN) == (fraction == 1)).all()
    # the default is the majority, and the log says what happened to the footprint
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    ds = ConvergenceMaps(str(tmp_path), **{**kw, "log": True, "min_observed": 0.02})
    assert ds.options["degrade_observed"] == 0.5
    err = capsys.readouterr().err
    before, after = 100 * seen.mean(), 100 * ((fraction >= 0.5) & (fraction > 0)).mean()
    assert f"{before:.1f}% of the sky at the maps' resolution -> {after:.1f}% at nside 8" in err
    assert "degrade_observed=0.5" in err


# ----- channels downstream: pre_transform, noise, loader, model ----------------------------------
class Scale:
    def __call__(self, data):
        data.x = data.x * torch.tensor([1.0, 2.0])
        return data

    def __repr__(self):
        return "Scale()"


def test_pre_transform_sees_every_channel(tmp_path):
    write(tmp_path, "two.fits", [gaussian(1), gaussian(2)])
    write_manifest(tmp_path, [("two.fits", 0, "train")])
    plain = ConvergenceMaps(str(tmp_path), nside=8, field=(0, 1), log=False)
    scaled = ConvergenceMaps(str(tmp_path), nside=8, field=(0, 1), pre_transform=Scale(), log=False)
    np.testing.assert_allclose(xs(scaled), xs(plain) * [1.0, 2.0], rtol=1e-6)


def test_four_channels_through_noise_loader_and_deepsphere(tmp_path):
    for i in range(2):
        write(tmp_path, f"m{i}.fits", [3.0**c * gaussian(4 * i + c) for c in range(3)])
    write_manifest(tmp_path, [(f"m{i}.fits", i, "train") for i in range(2)])
    base = dict(nside=8, order=1, field=(0, 1, 2), observed_channel=True, log=False)
    ds = ConvergenceMaps(str(tmp_path), **base)
    std = ds.channel_std
    assert len(std) == 4 and std[3] == 0.0 and std[0] < std[1] < std[2]
    noisy = ConvergenceMaps(str(tmp_path), transform=AddGaussianNoise(1.0, std, seed=0), **base)
    diff = torch.stack([noisy[i].x - ds[i].x for i in range(len(ds))])
    assert (diff[..., 3] == 0).all()  # the observed flags get no noise
    assert diff[..., :3].flatten(0, 1).std(0).numpy() == pytest.approx(std[:3], rel=0.1)
    batch = next(iter(SharedGraphLoader(noisy, batch_size=5)))
    assert batch.x.shape == (5, 64, 4) and batch.y.shape == (5,)
    model = DeepSphere(
        ds.num_node_features, 2, ds.nside, pixels=ds.graph.pixels, channels=(4, 4), K=2
    )
    assert model(batch.x).shape == (5, 2)
