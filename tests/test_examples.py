"""The tutorial scripts in examples/ run end to end on small settings and print what they claim.

Each script runs in its own process, as a user would run it, from a temporary directory so that
default output paths land there.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import healpy as hp
import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG = b"\x89PNG\r\n\x1a\n"


def run_example(name, *args, cwd, check=True):
    """The example's stdout; with ``check=False`` its finished process, whatever its status."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if not check:
        return proc
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def table_rows(stdout, first_cells):
    """The cells of the markdown table rows whose first cell starts with one of first_cells."""
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in stdout.splitlines()
        if line.startswith("|")
    ]
    return [r for r in rows if r[0].startswith(first_cells)]


def test_every_example_is_tested():
    tested = {
        "classify_cosmologies.py",
        "mix_gnn_layers.py",
        "masked_region.py",
        "measure_equivariance.py",
        "reproduce_paper.py",
        "infer_cosmo.py",
        "train_deepsphere.py",
        "tomographic_survey.py",
    }
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_measure_equivariance(tmp_path):
    out = run_example(
        "measure_equivariance.py", "--nside", 16, "--ell", 20, "--layer", cwd=tmp_path
    )
    rows = {r[0]: r for r in table_rows(out, ("v1", "v2", "identity"))}
    assert len(rows) == 5
    laplacian = [
        float(rows[name][3])
        for name in ("v1 (healpy 8 neighbours)", "v2, k = 8", "v2, k = 20", "v2, k = 40")
    ]
    floor = float(rows["identity (floor of the measure)"][3])
    # DeepSphere v2's ordering: the v1 graph is the least equivariant, more neighbours help,
    # and all are far above the error of the measurement itself.
    assert laplacian == sorted(laplacian, reverse=True)
    assert laplacian[-1] > 100 * floor
    assert rows["v2, k = 8"][4] == f"{laplacian[0] / laplacian[1]:.1f}x"
    assert float(rows["v2, k = 20"][1]) == pytest.approx(20, abs=1)  # edges per pixel
    layers = [float(rows[name][5]) for name in ("v1 (healpy 8 neighbours)", "v2, k = 8")]
    assert layers[0] > layers[1]


@pytest.mark.parametrize("args", [[], ["--mask", "disc", "--radius", 50, "--K", 4]])
def test_masked_region(tmp_path, args):
    out = run_example("masked_region.py", *args, cwd=tmp_path)
    rows = table_rows(out, ("conv", "pool"))
    assert [r[0] for r in rows] == ["conv 1", "pool 1", "conv 2", "pool 2"]
    assert [int(r[1]) for r in rows] == [32, 16, 16, 8]
    for _step, _nside, nodes, inside, agree, elsewhere in rows:
        assert 0 < int(inside) < int(nodes)
        # Inside, the region's graph gives the full sphere's outputs; at its border it does not.
        assert float(agree) < 1e-5
        assert float(elsewhere) > 1e-3
    # The region is pooled with its graph: a quarter of the nodes at each pooling.
    assert int(rows[1][2]) * 4 == int(rows[0][2])
    assert int(rows[3][2]) * 4 == int(rows[2][2])


def test_classify_cosmologies(tmp_path):
    out = run_example(
        "classify_cosmologies.py",
        "--nside",
        16,
        "--order",
        1,
        "--channels",
        "8,16",
        "--K",
        3,
        "--batch-size",
        16,
        "--n-per-class",
        4,
        "--epochs",
        1,
        "--threads",
        1,
        "--quiet",
        "--no-figures",
        "--data-dir",
        tmp_path / "data",
        "--out",
        tmp_path / "run",
        cwd=tmp_path,
    )
    match = re.search(r"recomputed from best.ckpt: ([\d.]+) \(train_cosmo reported ([\d.]+)\)", out)
    assert match, out
    # The checkpoint rebuilt without the training options classifies the test set the same.
    assert match.group(1) == match.group(2)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert f"{metrics['test_acc']:.4f}" == match.group(2)
    assert "DeepSphere(" in out


def printed_test_accuracy(stdout):
    match = re.search(r"Test accuracy \(best epoch, val ([\d.]+)\): ([\d.]+)$", stdout, re.M)
    assert match, stdout
    return float(match.group(2))


TINY = ["--nside", 16, "--order", 1, "--channels", 8, 16, "--batch-size", 16]


def test_train_deepsphere(tmp_path):
    # The default path: maps simulated into a temporary folder, the twin task.
    out = run_example("train_deepsphere.py", *TINY, "--n-per-class", 5, "--epochs", 1, cwd=tmp_path)
    assert "DeepSphere(" in out and re.search(r"^Epoch: 01, Loss: [\d.]+, Val: [\d.]+", out, re.M)
    assert 0 <= printed_test_accuracy(out) <= 1
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_train_deepsphere_learns(tmp_path):
    # A --data-dir with a manifest is read, not simulated into: white-noise maps whose classes
    # differ by their amplitude (the labels 3 and 7 are the classes 0 and 1), which a few
    # epochs separate.
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, files = ["file,label,split"], {"manifest.csv"}
    for label, amplitude in ((3, 1.0), (7, 2.0)):
        for i, split in enumerate(["train"] * 4 + ["val", "test"]):
            files.add(name := f"m{label}_{i}.fits")
            m = amplitude * rng.standard_normal(12 * 16**2)
            hp.write_map(str(raw / name), m, dtype=np.float64)
            rows.append(f"{name},{label},{split}")
    (raw / "manifest.csv").write_text("\n".join(rows) + "\n")
    args = [*TINY, "--epochs", 6, "--noise", 0.2, "--lr", 1e-2, "--data-dir", tmp_path / "data"]
    out = run_example("train_deepsphere.py", *args, cwd=tmp_path)
    assert "{'train': 96, 'val': 24, 'test': 24}" in out
    assert printed_test_accuracy(out) >= 0.9
    assert {p.name for p in raw.iterdir()} == files  # nothing simulated


@pytest.mark.slow
def test_mix_gnn_layers(tmp_path):
    out = run_example("mix_gnn_layers.py", "--epochs", 1, cwd=tmp_path)
    assert "GATConv" in out and "SphericalChebConv" in out
    assert re.search(r"epoch 1: train loss [\d.]+, test accuracy [\d.]+", out)
    diff = float(re.search(r"max \|Batch - graph by graph\| = (\S+)", out).group(1))
    assert diff < 1e-4


@pytest.mark.slow
def test_reproduce_paper(tmp_path):
    args = [
        "--nside",
        64,
        "--n-per-class",
        4,
        "--epochs",
        1,
        "--epochs-first",
        1,
        "--orders",
        1,
        2,
        "--noise",
        0,
        2,
        "--threads",
        1,
        "--data-dir",
        tmp_path / "data",
        "--out",
        tmp_path / "run",
        "--docs",
        tmp_path / "docs",
    ]
    out = run_example("reproduce_paper.py", *args, cwd=tmp_path)
    assert len(re.findall(r"^order [12] noise \d", out, re.M)) == 4
    state = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(state["results"]) == {"1/0", "1/2", "2/0", "2/2"}
    methods = ("DeepSphere", "PSD + SVM", "histogram + SVM")
    for result in state["results"].values():
        assert all(0 <= result[m] <= 1 for m in methods)
    assert state["samples"]["1"] == {"train": 48, "val": 24, "test": 24}  # 12 patches per map
    # Warm starts: each order chains along the noise levels; the noiseless order-1 model
    # starts from the order-2 one (smaller patches, trained first).
    inits = {
        key: json.loads((tmp_path / "run" / key / "metrics.json").read_text())["args"]["init"]
        for key in ("order2_noise0", "order2_noise2", "order1_noise0", "order1_noise2")
    }
    assert inits["order2_noise0"] is None
    assert inits["order2_noise2"].endswith(os.path.join("order2_noise0", "best.ckpt"))
    assert inits["order1_noise0"].endswith(os.path.join("order2_noise0", "best.ckpt"))
    assert inits["order1_noise2"].endswith(os.path.join("order1_noise0", "best.ckpt"))

    text = (tmp_path / "docs" / "results.md").read_text()
    rows = table_rows(text, ("1", "2"))
    accuracy = [r for r in rows if len(r) == 4]  # order, method, two noise levels
    assert [r[1] for r in accuracy] == list(methods) * 2
    for row in accuracy:
        assert [float(c) for c in row[2:]] == [
            round(100 * state["results"][f"{row[0]}/{lv}"][row[1]], 1) for lv in ("0", "2")
        ]
    # The margins: DeepSphere minus the better baseline, per order and noise level.
    margins = [r for r in rows if len(r) == 3]
    assert [r[0] for r in margins] == ["1", "2"]
    for row in margins:
        for cell, lv in zip(row[1:], ("0", "2")):
            r = state["results"][f"{row[0]}/{lv}"]
            best = max(r["PSD + SVM"], r["histogram + SVM"])
            assert float(cell) == pytest.approx(round(100 * (r["DeepSphere"] - best), 1))
    assert (tmp_path / "docs" / "results_accuracy.png").read_bytes()[:8] == PNG

    # A second run finds every result in results.json and trains nothing again; --name
    # writes the same results to another page.
    again = run_example("reproduce_paper.py", *args, "--name", "other", cwd=tmp_path)
    assert "noise 0:" not in again and "wrote" in again
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == state
    assert table_rows((tmp_path / "docs" / "other.md").read_text(), ("1", "2")) == rows
    assert (tmp_path / "docs" / "other_accuracy.png").read_bytes()[:8] == PNG


def test_infer_cosmo(tmp_path):
    """The inference workflow end to end at nside 16: every summary's forecast, the
    posteriors and their coverage, the page and its figure; reruns resume."""
    args = "--nside 16 --n-fisher 8 --n-val 4 --n-prior 16 --n-observed 24 --train-maps 4"
    args += " --epochs-first 1 --epochs 1 --hybrid-epochs 1 --noise 0 2 --channels 8 16"
    args = args.split() + ["--hybrid-batch-size", 48, "--bootstrap", 10, "--samples", 100]
    args += ["--threads", 1, "--workers", 0, "--out", tmp_path / "run"]
    args += ["--docs", tmp_path / "page.md"]
    out = run_example("infer_cosmo.py", *args, cwd=tmp_path)
    state = json.loads((tmp_path / "run" / "results.json").read_text())
    assert list(state["levels"]) == ["lognormal|0", "lognormal|2", "gaussian|0"]
    summaries = (
        "power spectrum",
        "histogram",
        "peaks",
        "PS + histogram",
        "PS + peaks",
        "PS + histogram + peaks",
        "DeepSphere",
        "hybrid",
    )
    assert tuple(state["levels"]["lognormal|2"]["summaries"]) == summaries
    assert tuple(state["levels"]["gaussian|0"]["summaries"]) == ("power spectrum", "DeepSphere")
    rows = table_rows(out, ("lognormal", "gaussian"))
    assert len(rows) == 2 * 8 + 2
    for row in rows:
        r = state["levels"][f"{row[0]}|{row[1]}"]["summaries"][row[2]]
        assert row[5].startswith(f"{r['fom']:.0f} ")
        assert float(row[3].split()[0]) == pytest.approx(r["sigma"][0], abs=1e-4)
        assert r["fom"] > 0 and all(s > 0 for s in r["sigma"])
        has_posterior = row[2] in ("power spectrum", "PS + histogram", "DeepSphere", "hybrid")
        assert ("posterior" in r) == has_posterior == (row[8] != "—")
        if has_posterior:
            coverage = r["posterior"]["coverage"]
            assert float(row[8]) == pytest.approx(coverage["0.68"], abs=0.005)
            assert 0 <= coverage["0.68"] <= coverage["0.95"] <= 1
    # noise costs information for the power spectrum
    ps = [state["levels"][f"lognormal|{n}"]["summaries"]["power spectrum"]["fom"] for n in (0, 2)]
    assert ps[0] > ps[1]
    # the Gaussian rows' reference: mode counting on the patch
    modes = state["levels"]["gaussian|0"]["mode_counting"]
    assert modes["every multipole"]["fom"] >= modes["PS bins"]["fom"] > 0
    assert "Gaussian maps, noise 0: DeepSphere / PS" in out and "coverage" in out
    page = (tmp_path / "page.md").read_text()
    assert (
        "python examples/infer_cosmo.py --nside 16" in page and "| lognormal | 2 | hybrid |" in page
    )
    assert "## Sanity check: Gaussian maps" in page
    assert (tmp_path / "page_posteriors.png").read_bytes()[:8] == PNG

    # A second run finds every setting in results.json and trains nothing again.
    again = run_example("infer_cosmo.py", *args, cwd=tmp_path)
    assert "resuming: 3 settings" in again and "epochs of" not in again
    assert json.loads((tmp_path / "run" / "results.json").read_text())["levels"] == state["levels"]
    # Results of a run from before the tomographic options (none in its settings) resume too.
    legacy = ("bins", "sigma_e", "n_gal", "ps_bins", "hist_bins")
    old = {k: v for k, v in state["settings"].items() if k not in legacy}
    (tmp_path / "run" / "results.json").write_text(json.dumps(dict(state, settings=old)))
    assert "resuming: 3 settings" in run_example("infer_cosmo.py", *args, cwd=tmp_path)
    # Without the settings, the summaries are computed again and the trained networks reused:
    # the same figures, no training.
    (tmp_path / "run" / "results.json").write_text(json.dumps(dict(state, levels={})))
    third = run_example("infer_cosmo.py", *args, cwd=tmp_path)
    assert "trained earlier" in third and "epochs of" not in third
    redone = json.loads((tmp_path / "run" / "results.json").read_text())["levels"]
    for key, level in state["levels"].items():
        for name, r in level["summaries"].items():
            assert redone[key]["summaries"][name]["fom"] == pytest.approx(r["fom"], rel=1e-6)
    # Other options refuse the results made with these.
    proc = run_example("infer_cosmo.py", *args, "--lr", "0.5", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "other options" in proc.stderr


def test_infer_cosmo_tomographic(tmp_path):
    """--bins: maps of 2 source bins as channels of the network, every auto- and cross-spectrum
    as the PS, one histogram per bin, shape noise, the analytic cross-spectrum Fisher matrix
    as the Gaussian rows' reference."""
    args = "--nside 16 --n-fisher 8 --n-val 4 --n-prior 16 --n-observed 24 --train-maps 4"
    args += " --epochs-first 1 --epochs 1 --hybrid-epochs 1 --noise 0 2 --channels 8 16"
    args = args.split() + ["--bins", 2, "--hybrid-batch-size", 40, "--bootstrap", 10]
    # one simulating worker, a spawned process: the hybrid's features must pickle
    args += ["--samples", 100, "--threads", 1, "--workers", 1, "--out", tmp_path / "run"]
    args += ["--docs", tmp_path / "page.md"]
    out = run_example("infer_cosmo.py", *args, cwd=tmp_path)
    state = json.loads((tmp_path / "run" / "results.json").read_text())
    assert state["settings"]["bins"] == 2
    assert list(state["levels"]) == ["lognormal|0", "lognormal|2", "gaussian|0"]
    # shape noise in physical units, one std per bin: sigma_e / sqrt(n_i Omega_pix)
    noisy = state["levels"]["lognormal|2"]["noise_sigma"]
    n_i = 30.0 / 2 * hp.nside2pixarea(16, degrees=True) * 3600
    assert noisy == pytest.approx([2 * 0.26 / np.sqrt(n_i)] * 2, rel=1e-6)
    assert state["levels"]["lognormal|0"]["noise_sigma"] == [0.0, 0.0]
    ps = [state["levels"][f"lognormal|{n}"]["summaries"]["power spectrum"]["fom"] for n in (0, 2)]
    assert ps[0] > ps[1] > 0
    modes = state["levels"]["gaussian|0"]["mode_counting"]
    assert modes["every multipole"]["fom"] >= modes["PS bins"]["fom"] > 0
    # the networks take the bins as channels
    import torch

    ckpt = torch.load(
        state["levels"]["lognormal|0"]["models"]["DeepSphere"],
        map_location="cpu",
        weights_only=False,
    )
    config = ckpt["hyper_parameters"]["model_config"]
    assert config["in_channels"] == 2
    assert len(ckpt["hyper_parameters"]["input_scale"]) == 2
    assert "| lognormal | 2 | hybrid |" in out
    page = (tmp_path / "page.md").read_text()
    assert "2 tomographic source bins as channels" in page and "cross-spectrum" in page
    # a hybrid batch too small for its covariance is refused before anything runs
    small = [*args[:-4], "--out", tmp_path / "x", "--hybrid-batch-size", 24]
    proc = run_example("infer_cosmo.py", *small, cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "31 components" in proc.stderr


def test_tomographic_survey(tmp_path):
    out = run_example(
        "tomographic_survey.py", "--nside", 32, "--maps", 2, "--order", 1, cwd=tmp_path
    )
    # 4 bins and the observed fraction as channels, through DeepSphere
    assert "C = 5" in out and "-> DeepSphere -> (8, 2)" in out
    rows = {
        int(line.split()[0]): line.split()
        for line in out.splitlines()
        if re.match(r"\s+[14]\s", line)
    }
    errors_1, errors_4 = [float(v) for v in rows[1][1:3]], [float(v) for v in rows[4][1:3]]
    # the cross-spectra of 4 bins constrain both parameters better than 1 bin's spectrum
    assert all(e4 < e1 for e1, e4 in zip(errors_1, errors_4))
    assert float(rows[4][3]) > 2 * float(rows[1][3])
