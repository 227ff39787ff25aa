"""The demo (``make demo``) on tiny settings: its options are valid and command-line options
override them."""

import json

from pyg_sphere.apps import demo, train_cosmo

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
    "--no-figures",
]


def test_demo_options_are_valid():
    args = train_cosmo.build_parser().parse_args(demo.DEMO_ARGS)
    train_cosmo.check_args(args)
    assert (args.nside, args.order, args.epochs, args.threads) == (128, 2, 10, 1)
    assert (args.data_dir, args.out) == ("data/demo_nside128", "runs/demo")


def test_demo_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # any default path lands in the temporary directory
    out = tmp_path / "run"
    metrics = demo.main(TINY + ["--data-dir", str(tmp_path / "data"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert f"Test accuracy: {100 * metrics['test_acc']:.1f}%" in printed
    assert f"({metrics['test_count']} test patches, chance 50%)" in printed
    assert "DeepSphere, nside 16, order-1 patches (256 pixels)" in printed
    written = json.loads((out / "metrics.json").read_text())
    assert written["args"]["nside"] == 16 and written["args"]["lr"] == 1e-3  # the demo's lr
    assert len(written["history"]) == 1
