"""The training entry point on tiny simulated data: outputs, determinism, resume, DDP, bad input."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from pyg_sphere.apps import train_cosmo
from pyg_sphere.apps.train_cosmo import check_compatible, load_checkpoint, model_from_checkpoint
from pyg_sphere.datasets import ConvergenceMaps

# nside 16, order 1: 12 patches of 256 pixels per map; two poolings down to 16 pixels.
TINY = [
    "--nside",
    "16",
    "--order",
    "1",
    "--channels",
    "8,16",
    "--K",
    "3",
    "--batch-size",
    "16",
    "--n-per-class",
    "4",
    "--lr",
    "1e-3",
    "--threads",
    "1",
    "--quiet",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One simulated collection for the whole module (simulated by the first run)."""
    return str(tmp_path_factory.mktemp("cosmo") / "data")


def fit(data_dir, out, *extra):
    return train_cosmo.run(TINY + ["--data-dir", data_dir, "--out", str(out), *extra])


def strip_times(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_outputs(data_dir, tmp_path):
    metrics = fit(data_dir, tmp_path, "--epochs", "2", "--noise", "0.5")
    # Simulated on first use: 4 maps per class split 60/20/20 by map.
    with open(os.path.join(data_dir, "raw", "manifest.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["label"] for r in rows} == {"0", "1"}

    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["test_acc"] == pytest.approx(metrics["test_acc"])
    test_set = ConvergenceMaps(data_dir, nside=16, order=1, split="test", log=False)
    assert written["test_count"] == len(test_set) == 12 * 2  # one test map per class
    confusion = torch.tensor(written["confusion_matrix"])
    assert confusion.sum() == len(test_set)
    assert confusion.trace() / confusion.sum() == pytest.approx(written["test_acc"])
    assert [h["epoch"] for h in written["history"]] == [1, 2]
    assert 1 <= written["best_epoch"] <= 2
    assert written["best_val_acc"] == max(h["val_acc"] for h in written["history"])

    with open(tmp_path / "history.csv") as f:
        table = list(csv.DictReader(f))
    assert [float(r["val_acc"]) for r in table] == [h["val_acc"] for h in written["history"]]
    # The paper's schedule: lr * 0.999 per step, 3 steps per epoch (48 patches, batch 16).
    assert float(table[-1]["lr"]) == pytest.approx(1e-3 * 0.999**6)

    for name in ("example_maps", "learning_curves", "confusion_matrix"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]

    # The best checkpoint rebuilds the model and reproduces the reported test accuracy.
    ckpt = load_checkpoint(str(tmp_path / "best.ckpt"))
    assert ckpt["epoch"] + 1 == written["best_epoch"]
    model = model_from_checkpoint(ckpt).eval()
    from pyg_sphere.transforms import AddGaussianNoise

    test_set.transform = AddGaussianNoise(0.5, test_set.map_std, seed=0 + 2)
    x = (
        torch.stack([test_set[i].x for i in range(len(test_set))])
        / ckpt["hyper_parameters"]["input_scale"]
    )
    with torch.no_grad():
        acc = (model(x).argmax(-1) == test_set.labels).float().mean().item()
    assert acc == pytest.approx(written["test_acc"])


def test_deterministic_and_exact_resume(data_dir, tmp_path):
    a = fit(data_dir, tmp_path / "a", "--epochs", "2", "--noise", "1", "--no-figures")
    b = fit(data_dir, tmp_path / "b", "--epochs", "2", "--noise", "1", "--no-figures")
    assert strip_times(a["history"]) == strip_times(b["history"])
    assert a["test_acc"] == b["test_acc"]

    # Interrupted after one epoch, then resumed: the same as the uninterrupted run.
    fit(data_dir, tmp_path / "c", "--epochs", "1", "--noise", "1", "--no-figures")
    c = fit(data_dir, tmp_path / "c", "--epochs", "2", "--noise", "1", "--no-figures", "--resume")
    assert strip_times(c["history"]) == strip_times(a["history"])
    last_a = load_checkpoint(str(tmp_path / "a" / "last.ckpt"))["state_dict"]
    last_c = load_checkpoint(str(tmp_path / "c" / "last.ckpt"))["state_dict"]
    assert all(torch.equal(last_a[k], last_c[k]) for k in last_a)

    # Another seed gives another run.
    d = fit(
        data_dir, tmp_path / "d", "--epochs", "2", "--noise", "1", "--no-figures", "--seed", "1"
    )
    assert strip_times(d["history"]) != strip_times(a["history"])


def test_bad_input(data_dir, tmp_path, capsys):
    fit(data_dir, tmp_path, "--epochs", "1", "--no-figures")
    # Resuming with another architecture.
    with pytest.raises(ValueError, match="--channels"):
        fit(data_dir, tmp_path, "--epochs", "2", "--no-figures", "--resume", "--channels", "8,8")
    # A checkpoint of another architecture under the same options.
    ckpt = load_checkpoint(str(tmp_path / "last.ckpt"))
    other = {f"model.{k}": v for k, v in torch.nn.Linear(3, 2).state_dict().items()}
    torch.save({**ckpt, "state_dict": other}, tmp_path / "last.ckpt")
    with pytest.raises(ValueError, match="do not fit"):
        fit(data_dir, tmp_path, "--epochs", "2", "--no-figures", "--resume")
    # Data at another nside or patch order than the model.
    for nside, order, what in ((32, 2, "nside"), (16, 2, "pixels per sample")):
        other_data = ConvergenceMaps(data_dir, nside=nside, order=order, log=False)
        with pytest.raises(ValueError, match=what):
            check_compatible(ckpt["hyper_parameters"]["model_config"], other_data)
    # A checkpoint of another task (a summary network of parameter inference).
    from pyg_sphere.apps.compressors import FisherCompressor

    other_task = FisherCompressor(ckpt["hyper_parameters"]["model_config"], [0.02, 0.02])
    torch.save({**ckpt, "hyper_parameters": dict(other_task.hparams)}, tmp_path / "last.ckpt")
    with pytest.raises(ValueError, match="another task"):
        fit(data_dir, tmp_path, "--epochs", "2", "--no-figures", "--resume")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fit(data_dir, tmp_path / "empty", "--epochs", "1", "--resume")
    # Patches too small for the number of poolings; on the command line, a one-line error.
    with pytest.raises(ValueError, match="too small"):
        fit(data_dir, tmp_path, "--order", "8")
    argv = TINY + ["--data-dir", data_dir, "--out", str(tmp_path), "--order", "8"]
    assert train_cosmo.main(argv) == 2
    assert "error: patches of order 8 at nside 16 are 2x2 pixels" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "lightning"])
def test_ddp_two_cpu_processes(data_dir, tmp_path, launcher):
    """Lightning's DDP on 2 CPU processes (gloo), started by torchrun or by Lightning itself."""
    fit(data_dir, tmp_path / "single", "--epochs", "1", "--no-figures")  # data ready
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    if launcher == "torchrun":
        start = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    else:
        start = []
    cmd = [
        sys.executable,
        *start,
        "-m",
        "pyg_sphere.apps.train_cosmo",
        *TINY,
        "--epochs",
        "2",
        "--data-dir",
        data_dir,
        "--out",
        str(out),
        "--accelerator",
        "cpu",
        *([] if launcher == "torchrun" else ["--devices", "2", "--strategy", "ddp"]),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    # Validation and test are sharded across the ranks and summed: every patch once.
    assert metrics["test_count"] == 24
    assert sum(sum(r) for r in metrics["confusion_matrix"]) == 24
    assert len(metrics["history"]) == 2
    # Each rank takes half the training patches per epoch: 2 steps of 16 (48 / 2 = 24) per
    # epoch instead of 3, visible in the learning rate.
    assert metrics["history"][-1]["lr"] == pytest.approx(1e-3 * 0.999**4)
    assert proc.stdout.count("test accuracy") == 1  # only rank 0 reports and writes
    assert sorted(os.listdir(out)) == [
        "best.ckpt",
        "confusion_matrix.png",
        "example_maps.png",
        "history.csv",
        "last.ckpt",
        "learning_curves.png",
        "logs",
        "metrics.json",
    ]


def test_init_from_checkpoint(data_dir, tmp_path):
    fit(data_dir, tmp_path / "a", "--epochs", "1", "--no-figures")
    start = load_checkpoint(str(tmp_path / "a" / "best.ckpt"))["state_dict"]
    # Adam steps of 1e-30 leave float32 weights as the checkpoint's (batch-norm running
    # statistics do move), unlike a run from the seed's random weights.
    fit(
        data_dir,
        tmp_path / "b",
        "--epochs",
        "1",
        "--no-figures",
        "--lr",
        "1e-30",
        "--seed",
        "1",
        "--init",
        str(tmp_path / "a" / "best.ckpt"),
    )
    tuned = load_checkpoint(str(tmp_path / "b" / "last.ckpt"))["state_dict"]
    weights = [k for k in start if k.endswith("weight")]
    assert weights and all(torch.equal(start[k], tuned[k]) for k in weights)
    # The fcn head fits patches of every order at the same nside; another nside does not.
    fit(
        data_dir,
        tmp_path / "d",
        "--epochs",
        "1",
        "--no-figures",
        "--order",
        "2",
        "--init",
        str(tmp_path / "a" / "best.ckpt"),
    )
    with pytest.raises(ValueError, match="nside"):
        fit(
            data_dir,
            tmp_path / "e",
            "--epochs",
            "1",
            "--no-figures",
            "--nside",
            "32",
            "--init",
            str(tmp_path / "a" / "best.ckpt"),
        )
    # A checkpoint of another architecture: the error says what differs.
    with pytest.raises(ValueError, match="channels"):
        fit(
            data_dir,
            tmp_path / "c",
            "--epochs",
            "1",
            "--no-figures",
            "--channels",
            "8,8",
            "--init",
            str(tmp_path / "a" / "best.ckpt"),
        )


def test_num_neighbors_option():
    parser = train_cosmo.build_parser()
    assert parser.parse_args([]).num_neighbors == 8
    assert parser.parse_args(["--num-neighbors", "12"]).num_neighbors == 12
    # --K (Chebyshev order) is another option.
    args = parser.parse_args(["--num-neighbors", "6", "--K", "3"])
    assert (args.num_neighbors, args.K) == (6, 3)


def test_engine_pieces_in_a_script(data_dir, tmp_path):
    """The engine's pieces used directly, as a script of one's own would: data module, module,
    trainer, then the best checkpoint rebuilt without the options."""
    from pyg_sphere.apps.engine import MapClassifier, SharedGraphDataModule, make_trainer

    args = train_cosmo.build_parser().parse_args(TINY + ["--data-dir", data_dir])
    splits = train_cosmo.prepare_data(args)
    model = train_cosmo.make_model(args, splits["train"])
    module = MapClassifier(model.config, input_scale=splits["train"].map_std, lr=1e-3)
    trainer = make_trainer(str(tmp_path), max_epochs=2, monitor="val_acc", quiet=True)
    trainer.fit(module, datamodule=SharedGraphDataModule(splits, batch_size=16))
    assert [h["epoch"] for h in module.history] == [1, 2]
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith(".ckpt")) == [
        "best.ckpt",
        "last.ckpt",
    ]
    ckpt = load_checkpoint(str(tmp_path / "last.ckpt"))
    assert ckpt["history"] == module.history
    rebuilt = model_from_checkpoint(ckpt)
    assert all(
        torch.equal(v, module.model.state_dict()[k]) for k, v in rebuilt.state_dict().items()
    )


def test_missing_lightning_names_the_extra():
    code = (
        "import sys; sys.modules['lightning'] = None\n"
        "try:\n    import pyg_sphere.apps.engine\n"
        "except ImportError as e:\n    print(e)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'pyg_sphere[train]'" in proc.stdout, proc.stderr[-2000:]


def test_pool_option_reaches_the_model_and_its_checkpoint(data_dir, tmp_path):
    assert train_cosmo.build_parser().parse_args([]).pool == "max"
    fit(data_dir, tmp_path / "mean", "--epochs", "1", "--pool", "mean")
    model = model_from_checkpoint(load_checkpoint(str(tmp_path / "mean" / "best.ckpt")))
    assert model.config["pool"] == "mean"


def test_default_data_dir_is_one_per_pair_of_classes():
    parse = train_cosmo.build_parser().parse_args
    dirs = [
        train_cosmo.default_data_dir(parse(["--nside", "64", *extra]))
        for extra in ([], ["--no-power-matched"], ["--gaussian-twin"])
    ]
    assert dirs == [
        os.path.join("data", name)
        for name in ("cosmo_nside64", "cosmo_unmatched_nside64", "twin_nside64")
    ]


def test_gaussian_twin_simulates_model_1_and_its_twin(tmp_path):
    fit(
        str(tmp_path / "data"), tmp_path / "run", "--epochs", "1", "--gaussian-twin", "--no-figures"
    )
    with open(tmp_path / "data" / "raw" / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["label"] for r in rows} == {"0", "1"}
    assert {(r["omega_m"], r["sigma_8"]) for r in rows} == {("0.31", "0.82")}  # one cosmology
    ckpt = load_checkpoint(tmp_path / "run" / "best.ckpt")
    assert ckpt["hyper_parameters"]["run_options"]["gaussian_twin"] is True
