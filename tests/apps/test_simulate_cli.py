"""The ``pyg-sphere-simulate`` command on tiny collections: files, progress, bad input."""

import csv
import doctest
import re
import runpy
import sys

import healpy as hp
import numpy as np
import pytest

from pyg_sphere.apps import simulate as cli
from pyg_sphere.datasets import (
    simulate_convergence_maps,
    simulate_fisher_maps,
    simulate_prior_maps,
    smail_bins,
)


def read_manifest(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_writes_the_libraries_collection(tmp_path, capsys):
    argv = ["--seed", "4", "--nest", "--power-matched", "--split", "0.5", "0.5", "0"]
    out = tmp_path / "cli"
    assert (
        cli.main(["--out", str(out), "--n-per-class", "2", "--nside", "8", *argv, "--no-progress"])
        == 0
    )
    assert "manifest.csv" in capsys.readouterr().err
    rows = read_manifest(out / "raw" / "manifest.csv")
    assert [r["split"] for r in rows] == ["train", "val", "train", "val"]
    assert sorted(r["label"] for r in rows) == ["0", "0", "1", "1"]
    # The same maps as the library function called with the same options.
    ref = tmp_path / "library"
    simulate_convergence_maps(
        ref,
        2,
        8,
        seed=4,
        power_matched=True,
        nest=True,
        split_fractions=(0.5, 0.5, 0),
        progress=False,
    )
    assert read_manifest(ref / "raw" / "manifest.csv") == rows
    for row in rows:
        a = hp.read_map(out / "raw" / row["file"], nest=True)
        b = hp.read_map(ref / "raw" / row["file"], nest=True)
        np.testing.assert_array_equal(a, b)


def test_progress_bar(tmp_path, capsys):
    cli.main(["--out", str(tmp_path), "--n-per-class", "1", "--nside", "4"])
    assert "2/2" in capsys.readouterr().err


def test_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--out", str(tmp_path), "--n-per-class", "1", "--nside", "12"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "pyg-sphere-simulate: error:" in err and "nside" in err
    with pytest.raises(SystemExit) as exc:
        cli.main(["--n-per-class", "1", "--nside", "8"])  # no --out
    assert exc.value.code == 2


def same_collection(a, b):
    rows = read_manifest(a / "raw" / "manifest.csv")
    assert read_manifest(b / "raw" / "manifest.csv") == rows
    for row in rows:
        ma = hp.read_map(a / "raw" / row["file"], nest=None)
        np.testing.assert_array_equal(ma, hp.read_map(b / "raw" / row["file"], nest=None))
    return rows


def test_prior_design(tmp_path, capsys):
    box = ["--box", "0.2", "0.4", "0.6", "1.0"]
    argv = ["--design", "prior", "--n-maps", "4", "--nside", "8", "--seed", "2", *box]
    assert cli.main(["--out", str(tmp_path / "cli"), *argv, "--gaussian", "--no-progress"]) == 0
    assert "wrote 4 maps" in capsys.readouterr().err
    simulate_prior_maps(
        tmp_path / "library",
        4,
        8,
        box={"omega_m": (0.2, 0.4), "sigma_8": (0.6, 1.0)},
        seed=2,
        gaussian=True,
        progress=False,
    )
    rows = same_collection(tmp_path / "cli", tmp_path / "library")
    assert [r["split"] for r in rows] == ["train"] * 3 + ["val"]  # default 0.8 0.1 0.1
    assert all(0.2 <= float(r["omega_m"]) <= 0.4 for r in rows)


def test_fisher_design(tmp_path, capsys):
    argv = ["--design", "fisher", "--n-maps", "2", "--nside", "4", "--nest", "--lmax", "8"]
    argv += ["--fiducial", "0.3", "0.8", "--steps", "0.01", "0.05", "--split", "0.5", "0", "0.5"]
    assert cli.main(["--out", str(tmp_path / "cli"), *argv, "--no-progress"]) == 0
    assert "wrote 10 maps" in capsys.readouterr().err
    simulate_fisher_maps(
        tmp_path / "library",
        2,
        4,
        fiducial=(0.3, 0.8),
        steps=(0.01, 0.05),
        split_fractions=(0.5, 0, 0.5),
        nest=True,
        lmax=8,
        progress=False,
    )
    rows = same_collection(tmp_path / "cli", tmp_path / "library")
    assert [r["split"] for r in rows] == ["train"] * 5 + ["test"] * 5
    assert [r["label"] for r in rows[:2]] == ["fiducial", "omega_m_plus"]
    assert rows[1]["omega_m"] == "0.31"


def test_fisher_design_defaults_to_all_test(tmp_path):
    argv = ["--design", "fisher", "--n-maps", "1", "--nside", "4", "--no-progress"]
    assert cli.main(["--out", str(tmp_path), *argv]) == 0
    rows = read_manifest(tmp_path / "raw" / "manifest.csv")
    assert {r["split"] for r in rows} == {"test"} and rows[0]["omega_m"] == "0.31"


def test_tomographic_designs(tmp_path, capsys):
    argv = ["--n-maps", "1", "--nside", "8", "--seed", "3", "--gaussian", "--bins", "2"]
    out = tmp_path / "cli"
    assert cli.main(["--design", "fisher", "--out", str(out), *argv, "--no-progress"]) == 0
    assert "wrote 5 maps of 2 bins" in capsys.readouterr().err
    ref = tmp_path / "library"
    simulate_fisher_maps(ref, 1, 8, seed=3, gaussian=True, bins=smail_bins(2), progress=False)
    rows = read_manifest(out / "raw" / "manifest.csv")
    assert read_manifest(ref / "raw" / "manifest.csv") == rows and len(rows) == 5
    for row in rows:
        a, header = hp.read_map(out / "raw" / row["file"], field=None, h=True, dtype=None)
        assert a.shape == (2, 768) and dict(header)["NBINS"] == 2
        b = hp.read_map(ref / "raw" / row["file"], field=None, dtype=None)
        np.testing.assert_array_equal(a, b)
    argv = ["--design", "prior", "--n-maps", "2", "--nside", "8", "--bins", "2", "--no-progress"]
    assert cli.main(["--out", str(tmp_path / "prior"), *argv]) == 0
    for row in read_manifest(tmp_path / "prior" / "raw" / "manifest.csv"):
        m = hp.read_map(tmp_path / "prior" / "raw" / row["file"], field=None, dtype=None)
        assert m.shape == (2, 768)


@pytest.mark.parametrize(
    "argv, match",
    [
        ([], "--design classes needs --n-per-class"),
        (["--n-per-class", "1", "--bins", "2"], "--bins applies to --design prior or fisher"),
        (["--design", "prior", "--n-maps", "1", "--bins", "0"], "--bins must be a number of"),
        (["--design", "fisher", "--n-maps", "1", "--bins", "-2"], "tomographic bins >= 1"),
        (["--n-maps", "2"], "--n-maps applies to --design prior or fisher, not classes"),
        (["--design", "prior", "--n-per-class", "2"], "--n-per-class applies to --design classes"),
        (["--design", "prior"], "--design prior needs --n-maps"),
        (["--design", "fisher", "--n-maps", "1", "--power-matched"], "--power-matched applies"),
        (["--n-per-class", "1", "--gaussian"], "--gaussian applies to --design prior or fisher"),
        (["--design", "prior", "--n-maps", "1", "--gaussian-twin"], "--gaussian-twin applies"),
        (["--n-per-class", "1", "--power-matched", "--gaussian-twin"], "set one of them"),
        (["--design", "fisher", "--n-maps", "1", "--box", "0.2", "0.3", "0.7", "0.9"], "--box"),
        (["--design", "prior", "--n-maps", "1", "--fiducial", "0.3", "0.8"], "--fiducial"),
        (["--n-per-class", "1", "--steps", "0.01", "0.01"], "--steps applies to --design fisher"),
        (["--design", "mcmc", "--n-maps", "1"], "invalid choice"),
        (
            ["--design", "prior", "--n-maps", "1", "--box", "0.05", "0.3", "0.7", "0.9"],
            r"reaches outside the range of the tabulated spectra, omega_m in \[0.12, 0.48\]",
        ),
        (["--design", "fisher", "--n-maps", "1", "--fiducial", "0.9", "0.8"], "outside"),
        (["--design", "fisher", "--n-maps", "1", "--steps", "0", "0.02"], "step must be"),
    ],
)
def test_bad_design_options(tmp_path, capsys, argv, match):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--out", str(tmp_path), "--nside", "4", "--no-progress", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "pyg-sphere-simulate: error:" in err
    assert re.search(match, err), err
    assert not (tmp_path / "raw" / "manifest.csv").exists()


# runpy warns that the module is already imported, which is expected here.
@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
def test_run_as_a_module(tmp_path, monkeypatch):
    """``python -m pyg_sphere.apps.simulate``, run in this process."""
    argv = ["--out", str(tmp_path), "--n-per-class", "1", "--nside", "4", "--no-progress"]
    monkeypatch.setattr(sys, "argv", ["pyg-sphere-simulate", *argv])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("pyg_sphere.apps.simulate", run_name="__main__")
    assert exc.value.code == 0
    assert len(read_manifest(tmp_path / "raw" / "manifest.csv")) == 2


def test_docstring_examples():
    result = doctest.testmod(cli)
    assert result.attempted > 0 and result.failed == 0
