import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_sphere.datasets._manifest import (
    MANIFEST_COLUMNS,
    SPLITS,
    check_split_fractions,
    class_index,
    read_manifest,
    write_manifest,
)


def test_write_then_read(tmp_path):
    path = tmp_path / "raw" / "manifest.csv"
    write_manifest(path, [("a.fits", 0, 0.31, 0.82, "train"), ("b.npy", 1, "", "", "test")])
    assert path.read_text().splitlines()[0] == ",".join(MANIFEST_COLUMNS)
    rows = read_manifest(str(path))
    assert [(r["file"], r["line"], r["label"], r["split"]) for r in rows] == [
        ("a.fits", 2, 0, "train"),
        ("b.npy", 3, 1, "test"),
    ]
    assert rows[0]["omega_m"] == 0.31 and math.isnan(rows[1]["sigma_8"])
    assert [p.name for p in path.parent.iterdir()] == ["manifest.csv"]  # no temporaries


fractions = (
    st.lists(st.integers(0, 10), min_size=3, max_size=3)
    .filter(any)
    .map(lambda w: tuple(x / sum(w) for x in w))
)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    fractions=fractions,
    seed=st.integers(0, 2**32 - 1),
)
def test_seeded_split_is_stratified_and_reproducible(tmp_path_factory, sizes, fractions, seed):
    path = tmp_path_factory.mktemp("m") / "manifest.csv"
    files = [(f"c{c}_{i}.fits", c) for c, n in enumerate(sizes) for i in range(n)]
    path.write_text("file,label\n" + "".join(f"{f},{c}\n" for f, c in files))
    rows = read_manifest(str(path), fractions, seed)
    assert [r["file"] for r in rows] == [f for f, _ in files]
    assert {r["split"] for r in rows} <= set(SPLITS)
    for c, n in enumerate(sizes):
        splits = [r["split"] for r in rows if r["label"] == c]
        n_test = min(round(fractions[2] * n), n)
        n_val = min(round(fractions[1] * n), n - n_test)
        assert (splits.count("test"), splits.count("val")) == (n_test, n_val)
        assert splits.count("train") == n - n_test - n_val
    again = read_manifest(str(path), fractions, seed)
    assert [r["split"] for r in again] == [r["split"] for r in rows]


@pytest.mark.parametrize(
    "value, match",
    [
        ((0.5, 0.5, 0.5), "summing to 1"),
        ((1.2, -0.2, 0.0), "non-negative"),
        ((0.5, 0.5), "three"),
        (("a", "b", "c"), "three numbers"),
        (None, "three numbers"),
        ((float("nan"), 0.5, 0.5), "non-negative"),
    ],
)
def test_bad_split_fractions(value, match):
    with pytest.raises(ValueError, match=match):
        check_split_fractions(value)


def test_split_fractions_as_floats():
    assert check_split_fractions([1, 0, 0]) == (1.0, 0.0, 0.0)


def _read(tmp_path, text, **kwargs):
    path = tmp_path / "manifest.csv"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return read_manifest(str(path), **kwargs)


@pytest.mark.parametrize(
    "labels, expected",
    [
        (["5", "0", "10"], [5, 0, 10]),  # all integers: ints (numeric order for the classes)
        (["-1", "+2", " 3 "], [-1, 2, 3]),
        (["lcdm", "0", "wcdm"], ["lcdm", "0", "wcdm"]),  # any non-integer: all strings
        (["1.0", "2"], ["1.0", "2"]),
        (["Ωm 0.3", "σ8"], ["Ωm 0.3", "σ8"]),
    ],
)
def test_labels_are_integers_or_strings(tmp_path, labels, expected):
    text = "file,label\n" + "".join(f"m{i}.fits,{lab}\n" for i, lab in enumerate(labels))
    rows = _read(tmp_path, text)
    assert [r["label"] for r in rows] == expected
    assert all(type(r["label"]) is type(expected[0]) for r in rows)


def test_string_labels_are_split_per_class(tmp_path):
    text = "file,label\n" + "".join(f"m{i}.fits,{'ab'[i % 2]}\n" for i in range(10))
    rows = _read(tmp_path, text, split_fractions=(0.6, 0.2, 0.2))
    for label in "ab":
        splits = [r["split"] for r in rows if r["label"] == label]
        assert sorted(splits) == ["test", "train", "train", "train", "val"]


def test_excel_manifest_with_bom_and_crlf(tmp_path):
    rows = _read(tmp_path, "\ufefffile,label\r\na.fits,0\r\nb.fits,1\r\n".encode())
    assert [(r["file"], r["label"]) for r in rows] == [("a.fits", 0), ("b.fits", 1)]


@pytest.mark.parametrize(
    "text, match",
    [
        (b"file,label\na.fits,\xff\xfe\n", r"manifest.csv.*line 2.*UTF-8"),
        ("file,label,label\na.fits,0,1\n", r"manifest.csv.*'label' twice"),
        ("file,label\na,b.fits,0\n", r"manifest.csv line 2.*3 values.*2 columns.*quote"),
        ("file,label\na.fits,0\n./a.fits,1\n", r"'./a.fits' \(raw/manifest.csv line 3\).*twice"),
        ('file,label\n"a.fits,0\nb.fits,1\n', r"manifest.csv line 2.*label"),
        ("file,label\n\x00a.fits,0\n", r"line 2.*NUL"),
    ],
)
def test_garbage_manifests(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        _read(tmp_path, text)


def test_manifest_without_labels(tmp_path):
    text = "file,omega_m,sigma_8\n" + "".join(f"m{i}.fits,0.3,0.8\n" for i in range(10))
    rows = _read(tmp_path, text, split_fractions=(0.6, 0.2, 0.2), split_seed=1)
    assert all(r["label"] is None for r in rows)
    assert sorted(r["split"] for r in rows) == ["test"] * 2 + ["train"] * 6 + ["val"] * 2
    assert class_index(rows) == ([], {})
    assert rows[0]["omega_m"] == 0.3
    path = tmp_path / "written.csv"
    columns = ("file", "omega_m", "sigma_8", "split")
    write_manifest(path, [("a.fits", 0.3, 0.8, "val")], columns=columns)
    rows = read_manifest(str(path))
    assert [(r["file"], r["label"], r["split"]) for r in rows] == [("a.fits", None, "val")]


def test_manifest_needs_a_file_column(tmp_path):
    with pytest.raises(ValueError, match=r"must name the columns 'file' and 'label' \(or 'file'"):
        _read(tmp_path, "name,omega_m\na.fits,0.3\n")
