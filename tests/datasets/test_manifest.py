import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyg_sphere.datasets._manifest import (
    MANIFEST_COLUMNS,
    SPLITS,
    check_split_fractions,
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
