"""The demo (``make demo``) on tiny settings: its options are valid, command-line options
override them, and it ends with a deterministic table of three methods on the same test
patches."""

import contextlib
import io
import json
import math

import pytest

from pyg_sphere.apps import demo, train_cosmo

# nside 16, order 1: 12 patches of 256 pixels per map; 4 maps per class, one of them for test.
TINY = [
    "--nside",
    "16",
    "--order",
    "1",
    "--channels",
    "8,16",
    "--K",
    "3",
    "--n-per-class",
    "4",
    "--epochs",
    "1",
    "--quiet",
]
TEST_PATCHES = 12 * 2


def test_demo_options_are_valid():
    args = train_cosmo.build_parser().parse_args(demo.DEMO_ARGS)
    train_cosmo.check_args(args)
    assert (args.order, args.threads) == (2, 1)
    # classes with the same power spectrum, and noise that hides the one-point statistics
    assert args.gaussian_twin and args.noise >= 1.5
    assert args.out == "runs/demo" and args.data_dir.startswith("data/demo_")


def test_standard_error():
    assert demo.standard_error(0.5, 100) == pytest.approx(0.05)
    assert demo.standard_error(1.0, 10) == 0.0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny demos with the same seed and data: the baselines in a second process with the
    figures, then in this process without them."""
    root = tmp_path_factory.mktemp("demo")
    data = str(root / "data")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        first = demo.main(TINY + ["--data-dir", data, "--out", str(root / "a")])
    second = demo.main(
        TINY + ["--data-dir", data, "--out", str(root / "b"), "--no-figures"], parallel=False
    )
    return root, first, second, printed.getvalue()


def test_table(runs):
    root, metrics, _, _ = runs
    rows = metrics["comparison"]
    assert [r["method"] for r in rows] == list(demo.METHODS)
    for r in rows:
        assert r["count"] == TEST_PATCHES  # every method on the same test patches
        assert 0 <= r["acc"] <= 1
        assert r["stderr"] == pytest.approx(math.sqrt(r["acc"] * (1 - r["acc"]) / r["count"]))
    assert rows[0]["acc"] == metrics["test_acc"]

    written = json.loads((root / "a" / "comparison.json").read_text())
    assert [r["method"] for r in written["comparison"]] == list(demo.METHODS)
    assert [r["acc"] for r in written["comparison"]] == pytest.approx([r["acc"] for r in rows])
    assert written["args"]["nside"] == 16 and written["args"]["noise"] == 2  # the demo's noise
    assert metrics["figures"] == [
        str(root / "a" / f"{name}.png")
        for name in ("example_maps", "learning_curves", "confusion_matrix", "comparison")
    ]
    for path in metrics["figures"]:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert set(metrics["seconds"]) == {"simulation", "deepsphere", "baselines", "total"}


def test_format_table():
    rows = [
        {"method": m, "acc": a, "stderr": demo.standard_error(a, 24), "count": 24}
        for m, a in zip(demo.METHODS, (0.75, 0.5, 0.625))
    ]
    lines = demo.format_table(rows).splitlines()
    assert len(lines) == 4 and lines[0].split()[0] == "method"
    assert lines[1].split() == ["DeepSphere", "75.0%", "8.8%", "24"]
    assert lines[3].startswith("power spectrum + SVM")


def test_printed_summary(runs):
    root, metrics, _, printed = runs
    assert demo.format_table(metrics["comparison"]) in printed
    assert f"{TEST_PATCHES} test patches" in printed
    assert "nside 16, order-1 patches (256 pixels), smoothed to 60' FWHM, noise 2" in printed
    gap = 100 * (metrics["test_acc"] - metrics["comparison"][2]["acc"])
    assert f"{gap:+.1f} points over the power spectrum + SVM" in printed
    train = metrics["data"]["samples"]["train"]
    assert f"{train} training patches ({train} for the power spectrum)" in printed  # all of them
    assert f"Outputs in {root / 'a'}" in printed
    assert ", ".join(metrics["figures"]) in printed
    assert "Took " in printed


def test_deterministic(runs):
    _, first, second, _ = runs
    assert [r["acc"] for r in first["comparison"]] == [r["acc"] for r in second["comparison"]]
    assert first["history"][0]["train_loss"] == second["history"][0]["train_loss"]
    assert second["figures"] == []
