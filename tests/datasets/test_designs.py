"""Maps at any cosmology and the prior and Fisher designs: files, shared realisations,
determinism, read-back by ConvergenceMaps, bad input."""

import csv
import doctest

import healpy as hp
import numpy as np
import pytest
import torch

import pyg_sphere.datasets.designs as designs
from pyg_sphere import cache
from pyg_sphere.datasets import (
    PRIOR_BOX,
    ConvergenceMaps,
    convergence_cl,
    latin_hypercube,
    lognormal_shift,
    simulate_cosmology_map,
    simulate_fisher_maps,
    simulate_prior_maps,
)
from pyg_sphere.datasets.designs import FISHER_STREAM, FISHER_VARIANTS, PRIOR_STREAM
from pyg_sphere.datasets.lognormal_maps import (
    _cosmology_gaussian_cl,
    gaussian_alm,
    gaussian_map,
    map_rng,
)
from pyg_sphere.datasets.tomography import (
    lognormal_shifts,
    simulate_tomographic_maps,
    smail_bins,
    tomographic_cl,
)


def read_manifest(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read(root, name):
    m, header = hp.read_map(root / "raw" / name, nest=None, h=True, dtype=None)
    return m, dict(header)


# --------------------------------------------------------------------- latin hypercube


def test_latin_hypercube_has_one_point_per_stratum():
    n = 20
    theta = latin_hypercube(n, seed=3)
    assert theta.shape == (n, 2) and theta.dtype == np.float64
    for k, name in enumerate(("omega_m", "sigma_8")):
        lo, hi = PRIOR_BOX[name]
        cells = np.floor((theta[:, k] - lo) / (hi - lo) * n).astype(int)
        assert sorted(cells.tolist()) == list(range(n))
    np.testing.assert_array_equal(theta, latin_hypercube(n, seed=3))
    assert not np.allclose(theta, latin_hypercube(n, seed=4))
    box = {"sigma_8": (0.7, 0.9), "omega_m": (0.2, 0.3)}  # column order is fixed, not the dict's
    theta = latin_hypercube(5, box)
    assert np.all((theta[:, 0] >= 0.2) & (theta[:, 0] <= 0.3))
    assert np.all((theta[:, 1] >= 0.7) & (theta[:, 1] <= 0.9))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=0), "n must be an integer >= 1"),
        (dict(seed=-1), "seed must be an integer >= 0"),
        (dict(box={"omega_m": (0.2, 0.3)}), "box must be a dict"),
        (dict(box=[(0.2, 0.3), (0.7, 0.9)]), "box must be a dict"),
        (dict(box={"omega_m": (0.3, 0.2), "sigma_8": (0.7, 0.9)}), r"low < high"),
        (dict(box={"omega_m": 0.3, "sigma_8": (0.7, 0.9)}), r"box\['omega_m'\] must be two"),
    ],
)
def test_latin_hypercube_bad_input(kwargs, match):
    args = dict(n=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        latin_hypercube(**args)


# --------------------------------------------------------------- maps at any cosmology


def test_cosmology_map():
    m = simulate_cosmology_map(32, 0.2, 1.0, rng=1)
    assert m.shape == (hp.nside2npix(32),)
    assert m.min() > -lognormal_shift(0.2) and abs(m.mean()) < 0.1 * m.std()
    same = simulate_cosmology_map(32, 0.2, 1.0, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(m, same)
    nest = simulate_cosmology_map(32, 0.2, 1.0, rng=1, nest=True)
    np.testing.assert_array_equal(hp.reorder(nest, n2r=True), m)
    # the Gaussian option is gaussian_map of the cosmology's spectrum, same draws
    g = simulate_cosmology_map(32, 0.2, 1.0, rng=1, gaussian=True, lmax=40)
    expected = gaussian_map(convergence_cl(0.2, 1.0, 40), 32, np.random.default_rng(1))
    np.testing.assert_allclose(g, expected, rtol=1e-12, atol=0)


def test_gaussian_map_has_the_target_spectrum():
    nside, lmax = 64, 191
    cl = convergence_cl(0.4, 0.6, lmax)
    measured = np.mean(
        [
            hp.anafast(simulate_cosmology_map(nside, 0.4, 0.6, rng=i, gaussian=True), lmax=lmax)
            for i in range(2)
        ],
        axis=0,
    )
    ell = np.arange(lmax + 1)
    for a, b in [(2, 30), (30, 100), (100, 192)]:
        w = 2 * ell[a:b] + 1
        ratio = np.sum(w * measured[a:b] / cl[a:b]) / w.sum()
        assert abs(ratio - 1) < 4 * np.sqrt(2 / w.sum() / 2) + 0.02, (a, b, ratio)


def test_cosmology_spectra_are_cached_and_read_only():
    cache.clear("cosmology_gaussian_cl")
    simulate_cosmology_map(8, 0.3, 0.8, rng=0)
    simulate_cosmology_map(8, 0.3, 0.8, rng=1)
    stats = cache.info()["cosmology_gaussian_cl"]
    assert (stats.hits, stats.misses) == (1, 1)
    assert not _cosmology_gaussian_cl(0.3, 0.8, 23, False).flags.writeable


def test_cosmology_map_bad_input():
    with pytest.raises(ValueError, match=r"omega_m=0.7 is outside.*\[0.12, 0.48\]"):
        simulate_cosmology_map(8, 0.7, 0.8)
    with pytest.raises(ValueError, match="nside must be a power of 2"):
        simulate_cosmology_map(12, 0.3, 0.8)
    with pytest.raises(ValueError, match="beyond the tabulated"):
        simulate_cosmology_map(8, 0.3, 0.8, lmax=7000)


# ------------------------------------------------------------------------ prior design


def test_prior_design_files_and_manifest(tmp_path):
    manifest = simulate_prior_maps(
        tmp_path, 5, 16, seed=2, split_fractions=(0.6, 0.2, 0.2), progress=False
    )
    assert manifest == tmp_path / "raw" / "manifest.csv"
    assert manifest.read_text().splitlines()[0] == "file,omega_m,sigma_8,split"
    rows = read_manifest(manifest)
    theta = latin_hypercube(5, seed=2)
    assert [r["file"] for r in rows] == [f"prior_{i:05d}.fits" for i in range(5)]
    assert [r["split"] for r in rows] == ["train", "train", "train", "val", "test"]
    np.testing.assert_array_equal([[float(r["omega_m"]), float(r["sigma_8"])] for r in rows], theta)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(
        [r["file"] for r in rows] + ["manifest.csv"]
    )
    for i, r in enumerate(rows):
        m, header = read(tmp_path, r["file"])
        assert m.dtype.itemsize == 4 and header["ORDERING"] == "RING"
        om, s8 = theta[i]
        assert header["DESIGN"] == "prior" and "LABEL" not in header
        assert (header["OMEGA_M"], header["SIGMA_8"]) == (om, s8)
        assert header["KSHIFT"] == pytest.approx(lognormal_shift(om), rel=1e-12)
        assert header["GAUSSIAN"] is False
        assert (header["SEED"], header["MAPID"], header["LMAX"]) == (2, i, 47)
        expected = simulate_cosmology_map(16, om, s8, rng=map_rng(2, PRIOR_STREAM, i))
        np.testing.assert_array_equal(m, expected.astype(np.float32))


def test_prior_design_is_deterministic(tmp_path):
    kw = dict(progress=False, gaussian=True, nest=True, lmax=20)
    simulate_prior_maps(tmp_path / "a", 3, 8, seed=1, **kw)
    simulate_prior_maps(tmp_path / "b", 3, 8, seed=1, **kw)
    simulate_prior_maps(tmp_path / "c", 3, 8, seed=2, **kw)
    a, b, c = (tmp_path / d / "raw" for d in "abc")
    assert (a / "manifest.csv").read_bytes() == (b / "manifest.csv").read_bytes()
    assert (a / "manifest.csv").read_bytes() != (c / "manifest.csv").read_bytes()
    for r in read_manifest(a / "manifest.csv"):
        ma, header = read(tmp_path / "a", r["file"])
        assert header["ORDERING"] == "NESTED" and header["GAUSSIAN"] is True
        assert "KSHIFT" not in header and header["LMAX"] == 20
        np.testing.assert_array_equal(ma, read(tmp_path / "b", r["file"])[0])
        assert not np.allclose(ma, read(tmp_path / "c", r["file"])[0])


def test_prior_design_reads_back_without_labels(tmp_path):
    simulate_prior_maps(tmp_path, 4, 8, split_fractions=(0.5, 0.25, 0.25), progress=False)
    rows = read_manifest(tmp_path / "raw" / "manifest.csv")
    train = ConvergenceMaps(str(tmp_path), order=1, split="train", log=False)
    test = ConvergenceMaps(str(tmp_path), order=1, split="test", log=False)
    assert len(train) == 2 * 12 and len(test) == 12
    assert train.classes == [] and train.num_classes == 0 and train.class_to_idx == {}
    assert torch.all(train.labels == -1) and train[0].y.item() == -1
    for ds in (train, test):
        for k in range(0, len(ds), 12):
            item = ds[k]
            row = rows[item.map_id.item()]
            assert item.omega_m.item() == pytest.approx(float(row["omega_m"]), rel=1e-6)
            assert item.sigma_8.item() == pytest.approx(float(row["sigma_8"]), rel=1e-6)
            assert row["split"] == ds.split


# ----------------------------------------------------------------------- Fisher design


def test_fisher_design_files_and_manifest(tmp_path):
    manifest = simulate_fisher_maps(
        tmp_path, 2, 8, fiducial=(0.3, 0.8), steps=(0.03, 0.05), seed=5, progress=False
    )
    rows = read_manifest(manifest)
    assert manifest.read_text().splitlines()[0] == "file,label,omega_m,sigma_8,split"
    assert [r["label"] for r in rows] == list(FISHER_VARIANTS) * 2
    assert [r["file"] for r in rows[:5]] == [f"fisher_0000_{v}.fits" for v in FISHER_VARIANTS]
    cosmologies = [(0.3, 0.8), (0.33, 0.8), (0.27, 0.8), (0.3, 0.85), (0.3, 0.75)]
    assert [(r["omega_m"], r["sigma_8"]) for r in rows[:5]] == [
        (repr(om), repr(s8)) for om, s8 in cosmologies
    ]
    assert {r["split"] for r in rows} == {"test"}
    for k, r in enumerate(rows):
        i, (om, s8) = k // 5, cosmologies[k % 5]
        m, header = read(tmp_path, r["file"])
        assert header["DESIGN"] == "fisher" and header["LABEL"] == r["label"]
        assert (header["OMEGA_M"], header["SIGMA_8"], header["MAPID"]) == (om, s8, i)
        assert header["KSHIFT"] == pytest.approx(lognormal_shift(om), rel=1e-12)
        expected = simulate_cosmology_map(8, om, s8, rng=map_rng(5, FISHER_STREAM, i))
        np.testing.assert_array_equal(m, expected.astype(np.float32))
    # one realisation: near-identical maps; two realisations: unrelated
    fid, plus = read(tmp_path, rows[0]["file"])[0], read(tmp_path, rows[3]["file"])[0]
    other = read(tmp_path, rows[5]["file"])[0]
    assert np.corrcoef(fid, plus)[0, 1] > 0.99
    assert abs(np.corrcoef(fid, other)[0, 1]) < 0.3


def test_fisher_maps_share_one_gaussian_draw(tmp_path):
    lmax, seed = 23, 3
    simulate_fisher_maps(tmp_path, 1, 8, seed=seed, gaussian=True, lmax=lmax, progress=False)
    rows = read_manifest(tmp_path / "raw" / "manifest.csv")
    cl = {r["label"]: convergence_cl(float(r["omega_m"]), float(r["sigma_8"]), lmax) for r in rows}
    fid = gaussian_alm(cl["fiducial"], map_rng(seed, FISHER_STREAM, 0))
    ell, _ = hp.Alm.getlm(lmax)
    keep = ell >= 2
    for r in rows:
        variant = r["label"]
        alm = gaussian_alm(cl[variant], map_rng(seed, FISHER_STREAM, 0))
        # the same unit draw, scaled by each spectrum: the ratio is sqrt(C_step / C_fid)
        np.testing.assert_allclose(
            alm[keep] / fid[keep],
            np.sqrt(cl[variant][2:] / cl["fiducial"][2:])[ell[keep] - 2],
            rtol=1e-12,
        )
        # and the file holds the map of those coefficients
        expected = hp.alm2map(alm, 8, lmax=lmax, mmax=lmax, pixwin=False)
        m = read(tmp_path, r["file"])[0]
        np.testing.assert_allclose(m, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    # equal spectra, equal maps: the fiducial maps do not depend on the steps
    kw = dict(seed=seed, gaussian=True, lmax=lmax, progress=False)
    simulate_fisher_maps(tmp_path / "b", 1, 8, steps=(0.01, 0.04), **kw)
    np.testing.assert_array_equal(
        read(tmp_path, rows[0]["file"])[0], read(tmp_path / "b", rows[0]["file"])[0]
    )


def test_fisher_design_splits_by_realisation_and_reads_back(tmp_path):
    simulate_fisher_maps(tmp_path, 4, 8, split_fractions=(0.5, 0.25, 0.25), progress=False)
    rows = read_manifest(tmp_path / "raw" / "manifest.csv")
    splits = [r["split"] for r in rows]
    assert splits == ["train"] * 10 + ["val"] * 5 + ["test"] * 5
    ds = ConvergenceMaps(str(tmp_path), order=1, split="val", log=False)
    assert ds.classes == sorted(FISHER_VARIANTS)
    assert len(ds) == 5 * 12
    for k in range(0, len(ds), 12):
        item = ds[k]
        row = rows[item.map_id.item()]
        assert ds.classes[item.y.item()] == row["label"]
        assert item.omega_m.item() == pytest.approx(float(row["omega_m"]), rel=1e-6)
        assert item.sigma_8.item() == pytest.approx(float(row["sigma_8"]), rel=1e-6)


def test_fisher_steps_stay_inside_the_prior_box_corners(tmp_path):
    # the table is padded: default steps at the corners of the prior box are fine
    (om, _), (s8, _) = PRIOR_BOX["omega_m"], PRIOR_BOX["sigma_8"]
    simulate_fisher_maps(tmp_path, 1, 4, fiducial=(om, s8), lmax=8, progress=False)
    assert len(read_manifest(tmp_path / "raw" / "manifest.csv")) == 5


# ------------------------------------------------------------------- tomographic designs


def read_columns(root, name):
    """All columns of a file, [C, npix] in the file's dtype, and its header."""
    m, header = hp.read_map(root / "raw" / name, field=None, nest=None, h=True, dtype=None)
    return np.atleast_2d(m), dict(header)


def test_tomographic_prior_design_round_trips(tmp_path):
    bins = smail_bins(2)
    seed = 3
    simulate_prior_maps(tmp_path, 3, 8, seed=seed, nest=True, bins=bins, progress=False)
    rows = read_manifest(tmp_path / "raw" / "manifest.csv")
    # the design is the one-bin design's: same points, files and splits
    simulate_prior_maps(tmp_path / "one", 3, 8, seed=seed, nest=True, progress=False)
    assert read_manifest(tmp_path / "one" / "raw" / "manifest.csv") == rows
    for i, r in enumerate(rows):
        m, header = read_columns(tmp_path, r["file"])
        om, s8 = float(r["omega_m"]), float(r["sigma_8"])
        # the oracle: the simulator called directly, with the generator of map i
        expected = simulate_tomographic_maps(
            8, om, s8, bins, rng=map_rng(seed, PRIOR_STREAM, i), nest=True
        )
        assert m.dtype == np.float32 and m.shape == (2, 768)
        np.testing.assert_array_equal(m, expected.astype(np.float32))
        assert header["TTYPE1"] == "KAPPA_BIN1" and header["TTYPE2"] == "KAPPA_BIN2"
        assert header["ORDERING"] == "NESTED" and header["NBINS"] == 2
        assert (header["DESIGN"], header["OMEGA_M"], header["SIGMA_8"]) == ("prior", om, s8)
        assert (header["SEED"], header["MAPID"], header["LMAX"]) == (seed, i, 23)
        assert header["GAUSSIAN"] is False and "KSHIFT" not in header
        shifts = lognormal_shifts(om, bins)
        assert [header["KSHIFT1"], header["KSHIFT2"]] == pytest.approx(shifts, rel=1e-12)
        for k in range(2):
            assert header[f"ZMEAN{k + 1}"] == pytest.approx(bins.mean_z[k], rel=1e-12)
            assert header[f"NZFRAC{k + 1}"] == pytest.approx(bins.fractions[k], rel=1e-12)
            assert header[f"ZLO{k + 1}"] == pytest.approx(bins.edges[k], rel=1e-12)
            assert header[f"ZHI{k + 1}"] == pytest.approx(bins.edges[k + 1], rel=1e-12)
    # read back: the columns are the channels of x [N, C], each with its mean removed
    ds = ConvergenceMaps(str(tmp_path), order=1, field=(0, 1), split="train", log=False)
    assert ds.num_node_features == 2
    item = ds[0]
    m = read_columns(tmp_path, rows[item.map_id.item()]["file"])[0].astype(np.float64)
    m -= m.mean(axis=1, keepdims=True)
    k = item.patch_id.item()
    np.testing.assert_allclose(item.x.numpy(), m[:, k * 64 : (k + 1) * 64].T, atol=1e-7)


def test_tomographic_fisher_variants_share_one_draw(tmp_path):
    bins, seed = smail_bins(2), 4
    kw = dict(seed=seed, gaussian=True, bins=bins, progress=False)
    simulate_fisher_maps(tmp_path, 2, 8, **kw)
    rows = read_manifest(tmp_path / "raw" / "manifest.csv")
    assert [r["label"] for r in rows] == list(FISHER_VARIANTS) * 2
    maps = []
    for k, r in enumerate(rows):
        m, header = read_columns(tmp_path, r["file"])
        om, s8 = float(r["omega_m"]), float(r["sigma_8"])
        assert header["LABEL"] == r["label"] and header["MAPID"] == k // 5
        assert header["GAUSSIAN"] is True and "KSHIFT1" not in header
        # generators in the same state for the five variants of a realisation
        rng = map_rng(seed, FISHER_STREAM, k // 5)
        expected = simulate_tomographic_maps(8, om, s8, bins, rng=rng, gaussian=True)
        np.testing.assert_array_equal(m, expected.astype(np.float32))
        maps.append(m)
    maps = np.array(maps, dtype=np.float64)  # [10, 2, npix]
    for b in range(2):
        for v in range(1, 5):  # one draw: the twins differ from the fiducial map, but barely
            assert not np.array_equal(maps[v, b], maps[0, b])
            assert np.corrcoef(maps[0, b], maps[v, b])[0, 1] > 0.99
        assert abs(np.corrcoef(maps[0, b], maps[5, b])[0, 1]) < 0.5  # another realisation
    # Gaussian twins: the first bin's coefficients are L_00 z = sqrt(C^00) z (Cholesky), so
    # an omega_m twin's spectrum over the fiducial one's is the ratio of the target spectra
    cl = {
        r["label"]: tomographic_cl(float(r["omega_m"]), float(r["sigma_8"]), bins, 23)
        for r in rows[:5]
    }
    fid = hp.anafast(maps[0, 0], lmax=16)
    twin = hp.anafast(maps[1, 0], lmax=16)
    ratio = cl["omega_m_plus"][0, 0, 2:17] / cl["fiducial"][0, 0, 2:17]
    # (the ratio moves by 3% over these multipoles; the pixel-space estimate is good to 0.1%)
    np.testing.assert_allclose(twin[2:] / fid[2:], ratio, rtol=3e-3)
    # the fiducial maps do not depend on the steps
    simulate_fisher_maps(tmp_path / "b", 1, 8, steps=(0.01, 0.04), **kw)
    np.testing.assert_array_equal(maps[0], read_columns(tmp_path / "b", rows[0]["file"])[0])


def test_designs_without_bins_hold_one_map_at_one_source_plane(tmp_path):
    simulate_prior_maps(tmp_path, 2, 8, seed=1, progress=False)
    theta = latin_hypercube(2, PRIOR_BOX, seed=1)
    m, header = read(tmp_path, "prior_00001.fits")
    assert m.ndim == 1 and "NBINS" not in header and "KSHIFT1" not in header
    assert header["KSHIFT"] == pytest.approx(lognormal_shift(theta[1, 0]))
    expected = simulate_cosmology_map(8, *theta[1], rng=map_rng(1, PRIOR_STREAM, 1))
    np.testing.assert_array_equal(m, expected.astype(np.float32))


@pytest.mark.parametrize("simulate", [simulate_prior_maps, simulate_fisher_maps])
def test_bins_must_be_source_bins(tmp_path, simulate):
    with pytest.raises(TypeError, match=r"bins must be a SourceBins \(e.g. smail_bins\(4\)"):
        simulate(tmp_path, 1, 8, bins=4, progress=False)
    assert not (tmp_path / "raw").exists()


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_maps=0), "n_maps must be an integer >= 1"),
        (dict(nside=12), "nside must be a power of 2"),
        (dict(seed=-1), "seed must be an integer >= 0"),
        (dict(split_fractions=(0.5, 0.2, 0.2)), "summing to 1"),
        (dict(gaussian="yes"), "gaussian must be True or False"),
        (dict(lmax=7000), "beyond the tabulated"),
        (
            dict(box={"omega_m": (0.1, 0.3), "sigma_8": (0.6, 0.9)}),
            r"box\['omega_m'\] = \(0.1, 0.3\) reaches outside.*omega_m in \[0.12, 0.48\]",
        ),
        (dict(box={"omega_m": (0.2, 0.3)}), "box must be a dict"),
    ],
)
def test_prior_design_bad_input(tmp_path, kwargs, match):
    args = dict(out_dir=tmp_path, n_maps=2, nside=8, progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        simulate_prior_maps(**args)
    assert not (tmp_path / "raw" / "manifest.csv").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_maps=0), "n_maps must be an integer >= 1"),
        (dict(fiducial=(0.6, 0.8)), r"omega_m=0.6 is outside.*\[0.12, 0.48\]"),
        (
            dict(fiducial=(0.3, 1.14)),
            r"fiducial sigma_8 1.14 \+- step 0.02 reaches outside.*sigma_8 in \[0.45, 1.15\]",
        ),
        (dict(steps=(0.0, 0.02)), "omega_m step must be a positive"),
        (dict(steps=(0.02, -0.1)), "sigma_8 step must be a positive"),
        (dict(steps=0.02), r"steps must be two numbers"),
        (dict(fiducial=(0.3,)), r"fiducial must be two numbers"),
        (dict(split_fractions=(0.5, 0.5)), "three"),
    ],
)
def test_fisher_design_bad_input(tmp_path, kwargs, match):
    args = dict(out_dir=tmp_path, n_maps=1, nside=8, progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        simulate_fisher_maps(**args)
    assert not (tmp_path / "raw").exists()


def test_docstring_examples():
    result = doctest.testmod(designs)
    assert result.attempted > 0 and result.failed == 0
