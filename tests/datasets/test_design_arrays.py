"""fisher_arrays and prior_arrays: the arrays of inference from a collection on disk, the same
as the recipe they replace, refusing designs they cannot trust; the tutorial page that uses
them runs as written."""

import contextlib
import csv
import io
import itertools
import re
import shlex
import shutil
from pathlib import Path

import healpy as hp
import numpy as np
import pytest

from pyg_sphere.datasets import (
    PRIOR_BOX,
    ConvergenceMaps,
    FisherStream,
    fisher_arrays,
    latin_hypercube,
    prior_arrays,
    simulate_cosmology_map,
    simulate_fisher_maps,
    simulate_prior_maps,
)
from pyg_sphere.datasets.tomography import smail_bins
from pyg_sphere.inference import (
    PowerSpectrumSummary,
    TomographicPowerSpectrumSummary,
    fisher_matrix,
)

NSIDE = 16
PAGE = Path(__file__).resolve().parents[2] / "docs" / "own_simulations.md"


@pytest.fixture(scope="module")
def fisher_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fisher")
    simulate_fisher_maps(root, 3, NSIDE, seed=1, progress=False)
    return root


def dataset(root, **kwargs):
    return ConvergenceMaps(root, nside=NSIDE, order=1, split="test", log=False, **kwargs)


def edited_copy(root, tmp_path, edit):
    """A copy of the collection whose manifest rows went through ``edit`` (list of dicts)."""
    copy = tmp_path / "copy"
    shutil.copytree(root / "raw", copy / "raw")
    path = copy / "raw" / "manifest.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    rows = edit(rows)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return copy


def test_fisher_arrays_equal_the_recipe_and_the_evaluation_stream(fisher_root):
    ds = dataset(fisher_root)
    arrays = fisher_arrays(ds)
    assert arrays.fiducial.shape == (36, 256) and arrays.plus.shape == (36, 2, 256)
    assert arrays.step.tolist() == [0.02, 0.02] and arrays.theta.tolist() == [0.31, 0.82]
    assert arrays.realisation.tolist() == [r for r in range(3) for _ in range(12)]

    # the recipe of examples/infer_cosmo.py: labels from the classes, realisation = map_id // 5
    items = list(ds)
    label = np.array([ds.classes[int(d.y)] for d in items])
    x = np.stack([d.x[:, 0].numpy() for d in items])
    assert np.array_equal(arrays.fiducial, x[label == "fiducial"])
    for a, p in enumerate(("omega_m", "sigma_8")):
        assert np.array_equal(arrays.plus[:, a], x[label == f"{p}_plus"])
        assert np.array_equal(arrays.minus[:, a], x[label == f"{p}_minus"])
    summary = PowerSpectrumSummary(NSIDE, bins=np.array([2, 8, 16, 24, 33]), lmax=32)
    s = {name: summary(x[label == name]) for name in set(label)}
    expected = fisher_matrix(
        s["fiducial"],
        np.stack([s["omega_m_plus"], s["sigma_8_plus"]]),
        np.stack([s["omega_m_minus"], s["sigma_8_minus"]]),
        np.array([0.02, 0.02]),
    )
    assert np.allclose(fisher_matrix(*arrays.summarise(summary).fisher_args()), expected)

    stream = FisherStream(NSIDE, evaluation=True, num_maps=3, seed=1)
    items = list(stream)
    assert [int(i["draw"]) for i in items] == arrays.draw.tolist()
    served = np.stack([i["x"][..., 0].numpy() for i in items])  # [36, 5, N]
    assert np.array_equal(served[:, 0], arrays.fiducial)
    assert np.array_equal(served[:, 1:3], arrays.plus)
    assert np.array_equal(served[:, 3:], arrays.minus)


def test_without_the_raw_manifest_the_processed_parameters_serve(fisher_root, tmp_path):
    copy = edited_copy(fisher_root, tmp_path, lambda rows: rows)
    dataset(copy)  # processed while the raw data is there
    shutil.rmtree(copy / "raw")
    arrays = fisher_arrays(dataset(copy))
    assert np.allclose(arrays.step, [0.02, 0.02], rtol=1e-5)
    assert arrays.fiducial.shape == (36, 256)


def drop(name):
    return lambda rows: [r for r in rows if r["file"] != name]


def set_value(name, key, value):
    def edit(rows):
        for r in rows:
            if r["file"] == name:
                r[key] = value
        return rows

    return edit


def shift_realisation(rows):  # realisation 2 with omega_m steps of 0.01
    return set_value("fisher_0002_omega_m_minus.fits", "omega_m", "0.3")(
        set_value("fisher_0002_omega_m_plus.fits", "omega_m", "0.32")(rows)
    )


def relabel_with_realisations(rows):  # a realisation column, and one variant given twice
    for r in rows:
        r["realisation"] = r["file"].split("_")[1]
    return set_value("fisher_0001_sigma_8_plus.fits", "label", "sigma_8_minus")(rows)


@pytest.mark.parametrize(
    "edit, match",
    [
        (drop("fisher_0001_sigma_8_minus.fits"), "realisation 1 lacks sigma_8_minus"),
        (set_value("fisher_0002_sigma_8_plus.fits", "sigma_8", "0.85"), "realisation 2: sigma_8"),
        (shift_realisation, "realisation 2: omega_m_plus .* by \\+0.02"),
        (set_value("fisher_0001_fiducial.fits", "omega_m", "0.3"), "fiducial point"),
        (set_value("fisher_0001_sigma_8_plus.fits", "label", "sigma_8_minus"), "labelled"),
        (relabel_with_realisations, "realisation 1 has two sigma_8_minus maps"),
        (set_value("fisher_0000_fiducial.fits", "label", "baseline"), "'baseline'"),
    ],
)
def test_a_broken_fisher_design_is_refused_with_its_realisation(fisher_root, tmp_path, edit, match):
    with pytest.raises(ValueError, match=match):
        fisher_arrays(dataset(edited_copy(fisher_root, tmp_path, edit)))


def test_maps_without_a_known_realisation_are_refused(fisher_root, tmp_path):
    copy = edited_copy(fisher_root, tmp_path, lambda rows: rows)
    raw = copy / "raw"
    text = (raw / "manifest.csv").read_text()
    for f in raw.glob("fisher_*.fits"):
        f.rename(raw / f.name.replace("fisher_", "sim_"))
    (raw / "manifest.csv").write_text(text.replace("fisher_", "sim_"))
    ds = dataset(copy)
    with pytest.raises(ValueError, match="'realisation' column"):
        fisher_arrays(ds)
    # the realisation of every manifest row, given by hand
    arrays = fisher_arrays(ds, realisation=[i // 5 for i in range(15)])
    assert arrays.fiducial.shape == (36, 256)
    with pytest.raises(ValueError, match="one integer per map"):
        fisher_arrays(ds, realisation=[0, 1])


def write_suite(root, variants, runs, realisation=True):
    """A suite of .npy maps with a realisation column (the layout of the tutorial)."""
    raw = Path(root) / "raw"
    raw.mkdir(parents=True)
    header = ["file", "label", "omega_m", "sigma_8"] + (["realisation"] if realisation else [])
    lines = [",".join(header + ["split"])]
    for run, (label, (om, s8)) in itertools.product(runs, variants.items()):
        np.save(raw / f"r{run}_{label}.npy", simulate_cosmology_map(NSIDE, om, s8, rng=run))
        extra = [str(run)] if realisation else []
        lines.append(",".join([f"r{run}_{label}.npy", label, str(om), str(s8)] + extra + ["test"]))
    (raw / "manifest.csv").write_text("\n".join(lines) + "\n")


def test_a_suite_of_your_own_varying_one_parameter(tmp_path):
    variants = {"sigma_8_minus": (0.3, 0.75), "fiducial": (0.3, 0.8), "sigma_8_plus": (0.3, 0.85)}
    write_suite(tmp_path, variants, runs=(7, 3))
    arrays = fisher_arrays(dataset(tmp_path))
    assert arrays.parameters == ("sigma_8",)
    assert arrays.plus.shape == (24, 1, 256) and arrays.step.tolist() == [0.05]
    assert sorted(set(arrays.realisation.tolist())) == [3, 7]
    assert np.array_equal(arrays.draw, arrays.realisation * 12 + arrays.patch_id)
    # twins share their draw: the sign of a patch's response does not flip between patches
    response = (arrays.plus[:, 0] - arrays.minus[:, 0]).std(1) / arrays.fiducial.std(1)
    assert (response < 0.3).all()


def test_integer_labels_and_unlabelled_maps_are_not_a_fisher_design(tmp_path):
    write_suite(tmp_path / "a", {"0": (0.3, 0.8), "1": (0.3, 0.85)}, runs=(0,))
    with pytest.raises(ValueError, match="do not name a Fisher variant"):
        fisher_arrays(dataset(tmp_path / "a"))
    simulate_prior_maps(tmp_path / "b", 2, NSIDE, split_fractions=(0, 0, 1), progress=False)
    with pytest.raises(ValueError, match="no labels"):
        fisher_arrays(dataset(tmp_path / "b"))
    with pytest.raises(TypeError, match="ConvergenceMaps"):
        fisher_arrays([1, 2, 3])


def test_prior_arrays_hold_the_design_parameters_exactly(tmp_path):
    simulate_prior_maps(tmp_path, 5, NSIDE, seed=4, split_fractions=(0, 0, 1), progress=False)
    arrays = prior_arrays(dataset(tmp_path))
    assert arrays.x.shape == (60, 256) and arrays.theta.dtype == np.float64
    design = latin_hypercube(5, PRIOR_BOX, seed=4)
    assert np.array_equal(arrays.theta, design[arrays.map_id])
    assert arrays.summarise(lambda x: x[:, :3]).x.shape == (60, 3)
    (tmp_path / "c" / "raw").mkdir(parents=True)
    shutil.copy(tmp_path / "raw" / "prior_00000.fits", tmp_path / "c" / "raw")
    (tmp_path / "c" / "raw" / "manifest.csv").write_text("file,split\nprior_00000.fits,test\n")
    with pytest.raises(ValueError, match="no omega_m or sigma_8"):
        prior_arrays(dataset(tmp_path / "c"))


def nested_patches(root, name):
    """The columns of a file as ConvergenceMaps serves them: mean removed, nested, cut into the
    12 patches of order 1; [12, N, C]."""
    m, header = hp.read_map(root / "raw" / name, field=None, nest=None, h=True, dtype=np.float64)
    assert dict(header)["ORDERING"] == "NESTED"
    m = m - m.mean(axis=1, keepdims=True)
    return m.reshape(len(m), 12, -1).transpose(1, 2, 0)


def test_tomographic_fisher_design_as_arrays(tmp_path):
    simulate_fisher_maps(tmp_path, 2, NSIDE, seed=2, nest=True, bins=smail_bins(2), progress=False)
    arrays = fisher_arrays(dataset(tmp_path, field=(0, 1)))
    assert arrays.fiducial.shape == (24, 256, 2) and arrays.plus.shape == (24, 2, 256, 2)
    assert arrays.minus.shape == (24, 2, 256, 2) and arrays.fiducial.dtype == np.float32
    assert arrays.step.tolist() == [0.02, 0.02] and arrays.theta.tolist() == [0.31, 0.82]
    # every channel is its column of the right file, at the right patch
    for i, (r, k) in enumerate(zip(arrays.realisation, arrays.patch_id)):
        fid = nested_patches(tmp_path, f"fisher_{r:04d}_fiducial.fits")
        np.testing.assert_allclose(arrays.fiducial[i], fid[k], rtol=0, atol=1e-7)
        for a, p in enumerate(("omega_m", "sigma_8")):
            for twins, sign in ((arrays.plus, "plus"), (arrays.minus, "minus")):
                expected = nested_patches(tmp_path, f"fisher_{r:04d}_{p}_{sign}.fits")[k]
                np.testing.assert_allclose(twins[i, a], expected, rtol=0, atol=1e-7)
    # a summary sees whole patches [m, N, C]: the twins are not flattened into [m, N * C]
    shapes = []

    def summary(x):
        shapes.append(x.shape)
        return x[:, :3].reshape(len(x), -1)

    summarised = arrays.summarise(summary)
    assert shapes == [(24, 256, 2), (96, 256, 2)]
    assert np.array_equal(summarised.plus, arrays.plus[:, :, :3].reshape(24, 2, 6))
    assert np.array_equal(summarised.minus, arrays.minus[:, :, :3].reshape(24, 2, 6))
    # the tomographic summaries take [m, C, N]
    tomo = TomographicPowerSpectrumSummary(NSIDE, 2, bins=3, pixels=np.arange(256), iter=0)
    features = arrays.summarise(lambda x: tomo(x.swapaxes(1, 2)))
    assert features.fiducial.shape == (24, 9) and features.plus.shape == (24, 2, 9)
    # the first channel alone is the one-channel layout
    first = fisher_arrays(dataset(tmp_path, field=0))
    assert first.fiducial.shape == (24, 256)
    assert np.array_equal(first.fiducial, arrays.fiducial[..., 0])


def test_tomographic_prior_design_as_arrays(tmp_path):
    bins = smail_bins(2)
    simulate_prior_maps(
        tmp_path, 2, NSIDE, seed=6, nest=True, split_fractions=(0, 0, 1), bins=bins, progress=False
    )
    arrays = prior_arrays(dataset(tmp_path, field=(0, 1)))
    assert arrays.x.shape == (24, 256, 2)
    assert np.array_equal(arrays.theta, latin_hypercube(2, PRIOR_BOX, seed=6)[arrays.map_id])
    for i, (m, k) in enumerate(zip(arrays.map_id, arrays.patch_id)):
        expected = nested_patches(tmp_path, f"prior_{m:05d}.fits")[k]
        np.testing.assert_allclose(arrays.x[i], expected, rtol=0, atol=1e-7)
    assert arrays.summarise(lambda x: x[:, 0]).x.shape == (24, 2)


def test_the_tutorial_page_runs_as_written(tmp_path, monkeypatch):
    """Every block of docs/own_simulations.md, in order: the shell lines through the command's
    entry point, the Python blocks in one namespace, each output equal to the text block after
    it."""
    from pyg_sphere.apps.simulate import main

    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```(\w+)\n(.*?)```", PAGE.read_text(), re.S)
    assert [lang for lang, _ in blocks].count("python") >= 5
    namespace, printed = {}, None
    for lang, code in blocks:
        if lang == "bash":
            for line in code.strip().splitlines():
                command, *args = shlex.split(line)
                assert command == "pyg-sphere-simulate" and main(args) == 0
        elif lang == "python":
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(code, str(PAGE), "exec"), namespace)
            printed = out.getvalue()
        elif lang == "text":
            assert printed.strip() == code.strip()
            printed = None
