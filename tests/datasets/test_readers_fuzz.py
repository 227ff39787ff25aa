"""Damaged inputs (truncated or random-byte maps, garbage manifests) end in a ValueError or a
FileNotFoundError that names the file (and the manifest line), never in another exception; a
truncated file never gives a dataset built from part of it. Tiny maps (nside 4) keep each
example to milliseconds."""

import csv
import io
import os

import healpy as hp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pyg_sphere.datasets import ConvergenceMaps
from pyg_sphere.datasets._manifest import read_manifest

NSIDE = 4
FUZZ = settings(max_examples=30, deadline=None)


def _map(seed):
    return np.random.default_rng(seed).normal(size=12 * NSIDE**2)


def _intact_files(folder):
    """The bytes of a FITS, a .npy and a .npz map."""
    hp.write_map(str(folder / "a.fits"), _map(0), dtype=np.float64, overwrite=True)
    np.save(folder / "b.npy", _map(1))
    np.savez(folder / "c.npz", map=_map(2))
    return {name: (folder / name).read_bytes() for name in ("a.fits", "b.npy", "c.npz")}


@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    return _intact_files(tmp_path_factory.mktemp("intact"))


@pytest.fixture(scope="module")
def expected(tmp_path_factory, intact):
    """What the intact collection serves: x of every sample, by split."""
    root = tmp_path_factory.mktemp("expected")
    _collection(root, intact)
    return _served(root)


def _collection(root, files):
    (root / "raw").mkdir(exist_ok=True)
    for name, content in files.items():
        (root / "raw" / name).write_bytes(content)
    (root / "raw" / "manifest.csv").write_text(
        "file,label,split\na.fits,0,train\nb.npy,1,train\nc.npz,1,test\n"
    )


def _served(root):
    out = {}
    for split in ("train", "test"):
        ds = ConvergenceMaps(str(root), nside=None, order=1, split=split, log=False)
        out[split] = np.stack([d.x[:, 0].numpy() for d in ds])
    return out


def _line(name):
    return {"a.fits": 2, "b.npy": 3, "c.npz": 4}[name]


def _check_error(e, name):
    assert f"'{name}' (raw/manifest.csv line {_line(name)})" in str(e)


names = st.sampled_from(["a.fits", "b.npy", "c.npz"])


@FUZZ
@given(name=names, noise=st.binary(max_size=3000))
def test_random_bytes_are_refused(tmp_path_factory, intact, name, noise):
    root = tmp_path_factory.mktemp("noise")
    _collection(root, {**intact, name: noise})
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        _served(root)
    _check_error(info.value, name)


@FUZZ
@given(name=names, cut=st.floats(0, 1, exclude_max=True))
def test_truncated_map_never_loads_other_values(tmp_path_factory, intact, expected, name, cut):
    root = tmp_path_factory.mktemp("truncated")
    _collection(root, {**intact, name: intact[name][: int(cut * len(intact[name]))]})
    try:
        served = _served(root)
    except (ValueError, FileNotFoundError) as e:
        _check_error(e, name)
        return
    assert name == "a.fits"  # only a cut into the FITS padding after the values may load ...
    for split in expected:  # ... and then serves the intact values
        np.testing.assert_array_equal(served[split], expected[split])


@FUZZ
@given(
    name=names,
    at=st.floats(0, 1),
    garbage=st.binary(min_size=1, max_size=64),
    append=st.booleans(),
)
def test_overwritten_or_appended_bytes(
    tmp_path_factory, intact, expected, name, at, garbage, append
):
    """Bytes written over the file or after its end: a clear error, or a dataset (values that a
    file without checksum cannot tell apart are served as read; bytes after the end change
    nothing)."""
    root = tmp_path_factory.mktemp("overwritten")
    b = intact[name]
    i = int(at * len(b))
    damaged = b + garbage if append else b[:i] + garbage + b[i + len(garbage) :]
    _collection(root, {**intact, name: damaged})
    try:
        served = _served(root)
    except (ValueError, FileNotFoundError) as e:
        _check_error(e, name)
        return
    assert all(np.isfinite(v).all() for v in served.values())
    if append:
        for split in expected:
            np.testing.assert_array_equal(served[split], expected[split])


# ----- manifests --------------------------------------------------------------------------------
cell = st.one_of(
    st.sampled_from(["a.fits", "b.npy", "0", "1", "train", "test", "val", "", " ", "0.3"]),
    st.text(max_size=8),
    st.text(alphabet='",\n\r\t ;\x00\ufeffé', max_size=6),
)


@st.composite
def manifests(draw):
    """A manifest's bytes: a header and rows of cells, with CSV quoting broken at times, in UTF-8
    or not, maybe duplicated rows."""
    header = draw(
        st.one_of(
            st.just(["file", "label", "split"]),
            st.lists(st.sampled_from(["file", "label", "split", "omega_m", "x", ""]), max_size=5),
        )
    )
    rows = draw(st.lists(st.lists(cell, max_size=5), max_size=5))
    if rows and draw(st.booleans()):
        rows.append(list(rows[0]))  # a duplicated row
    buf = io.StringIO()
    writer = csv.writer(
        buf, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_NONE])), escapechar="\\"
    )
    try:
        writer.writerow(header)
        writer.writerows(rows)
    except csv.Error:
        assume(False)
    text = buf.getvalue()
    if draw(st.booleans()):  # break the quoting
        text = text.replace(",", draw(st.sampled_from(['",', ',"', '"'])), 1)
    content = text.encode(draw(st.sampled_from(["utf-8", "utf-16", "latin-1"])), "replace")
    if draw(st.booleans()):
        content = content[: draw(st.integers(0, len(content)))]
    return content


@settings(max_examples=50, deadline=None)
@given(content=manifests())
def test_garbage_manifest(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("manifest") / "manifest.csv"
    path.write_bytes(content)
    try:
        rows = read_manifest(str(path))
    except (ValueError, FileNotFoundError) as e:
        assert "manifest.csv" in str(e)
        return
    # accepted: every row is a complete, typed entry, each file once
    assert rows and len({os.path.normpath(r["file"]) for r in rows}) == len(rows)
    assert len({type(r["label"]) for r in rows}) == 1
    for r in rows:
        assert r["file"] and "\x00" not in r["file"] and r["split"] in ("train", "val", "test")
        assert isinstance(r["label"], int) or r["label"] != ""
        assert isinstance(r["line"], int) and r["line"] >= 2


@settings(max_examples=20, deadline=None)
@given(content=manifests())
def test_garbage_manifest_in_a_dataset(tmp_path_factory, intact, content):
    root = tmp_path_factory.mktemp("dataset")
    _collection(root, intact)
    (root / "raw" / "manifest.csv").write_bytes(content)
    try:
        ds = ConvergenceMaps(str(root), nside=None, order=1, log=False)
    except (ValueError, FileNotFoundError) as e:
        assert "manifest.csv" in str(e)
        return
    assert set(ds.files) <= {"a.fits", "b.npy", "c.npz"}
