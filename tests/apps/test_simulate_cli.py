"""The ``pyg-sphere-simulate`` command on tiny collections: files, progress, bad input."""

import csv
import doctest
import runpy
import sys

import healpy as hp
import numpy as np
import pytest

from pyg_sphere.apps import simulate as cli
from pyg_sphere.datasets import simulate_convergence_maps


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
