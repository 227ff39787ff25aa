"""Several processes constructing the same ConvergenceMaps at once, as every rank of a
distributed job does: one processes, the others wait and load the same data."""

import multiprocessing as mp
import os
import sys
import traceback

import healpy as hp
import numpy as np
import pytest
import torch

from pyg_sphere.datasets import ConvergenceMaps

NUM_PROCESSES = 3


class RecordCalls:
    """A pre_filter that appends its process id to a file at every call (keeps every patch);
    its stable repr makes it part of the processed folder's key like any other pre_filter."""

    def __init__(self, path):
        self.path = path

    def __call__(self, data):
        with open(self.path, "a") as f:
            f.write(f"{os.getpid()}\n")
        return True

    def __repr__(self):
        return "RecordCalls()"


def _construct(root, counter, out, barrier):
    """One 'rank': waits for the others, then constructs the dataset and saves what it serves."""
    try:
        torch.set_num_threads(1)  # as DataLoader workers do: no thread pool inherited by fork
        barrier.wait(timeout=120)
        ds = ConvergenceMaps(root, nside=8, order=2, pre_filter=RecordCalls(counter), log=False)
        x = np.stack([d.x[:, 0].numpy() for d in ds])
        np.savez(out, x=x, y=ds.labels.numpy(), map_id=ds._map_id.numpy())
    except BaseException:
        with open(out + ".error", "w") as f:
            f.write(traceback.format_exc())
        raise


def _collection(root):
    (root / "raw").mkdir()
    rows = []
    for i in range(4):
        np.random.seed(i)
        m = hp.synfast(1.0 / (np.arange(48) + 5.0) ** 2, 16)
        hp.write_map(str(root / "raw" / f"m{i}.fits"), m, dtype=np.float64)
        rows.append(f"m{i}.fits,{i % 2},0.3,0.8,{'train' if i < 3 else 'test'}")
    (root / "raw" / "manifest.csv").write_text(
        "file,label,omega_m,sigma_8,split\n" + "\n".join(rows)
    )


def _start_methods():
    # fork starts in milliseconds (the parent has imported everything); spawn starts fresh
    # interpreters, as distributed launchers do, at the cost of importing the package 3 times.
    methods = []
    if sys.platform == "linux":
        methods.append("fork")
    methods.append(pytest.param("spawn", marks=pytest.mark.slow) if methods else "spawn")
    return methods


@pytest.mark.parametrize("method", _start_methods())
def test_processes_constructing_at_once(tmp_path, method):
    _collection(tmp_path)
    counter = str(tmp_path / "calls.txt")
    ctx = mp.get_context(method)
    barrier = ctx.Barrier(NUM_PROCESSES)
    outs = [str(tmp_path / f"out{i}.npz") for i in range(NUM_PROCESSES)]
    procs = [
        ctx.Process(target=_construct, args=(str(tmp_path), counter, out, barrier)) for out in outs
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=300)
    finally:
        for p in procs:
            if p.is_alive():  # hung: end it rather than leave it behind
                p.kill()
                p.join()
    errors = [open(o + ".error").read() for o in outs if os.path.exists(o + ".error")]
    assert errors == [] and [p.exitcode for p in procs] == [0] * NUM_PROCESSES

    with open(counter) as f:
        pids = f.read().split()
    assert len(set(pids)) == 1  # exactly one process ran the processing
    assert len(pids) == 4 * 48  # once: every patch of the 4 maps was seen once

    results = [np.load(o) for o in outs]
    for r in results[1:]:
        for key in ("x", "y", "map_id"):
            np.testing.assert_array_equal(r[key], results[0][key])
    assert results[0]["x"].shape == (3 * 48, 16)

    # the parent finds the folder complete: it loads, processes nothing, gets the same data
    ds = ConvergenceMaps(
        str(tmp_path), nside=8, order=2, pre_filter=RecordCalls(counter), log=False
    )
    with open(counter) as f:
        assert len(f.read().split()) == 4 * 48
    np.testing.assert_array_equal(np.stack([d.x[:, 0].numpy() for d in ds]), results[0]["x"])
    name = os.path.basename(ds.processed_dir)
    assert [n for n in os.listdir(ds.processed_dir) if n.startswith(".")] == []  # temporaries
    assert set(os.listdir(os.path.dirname(ds.processed_dir))) <= {name, name + ".lock"}
