import glob
import os
import warnings

import healpy as hp
import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from pyg_sphere.datasets import ConvergenceMaps, _map_processing
from pyg_sphere.datasets._manifest import SPLITS
from pyg_sphere.transforms import AddGaussianNoise

HEADER = "file,label,omega_m,sigma_8,split"
PARAMS = {0: (0.31, 0.82), 1: (0.26, 0.91)}


def gaussian_map(seed, nside=16):
    """A full-sky Gaussian field in RING ordering (healpy's synfast, seeded global RNG)."""
    np.random.seed(seed)
    ell = np.arange(3 * nside)
    return hp.synfast(1.0 / (ell + 5.0) ** 2, nside) + 0.3  # non-zero mean on purpose


def write_manifest(root, rows, header=HEADER):
    raw = root / "raw"
    raw.mkdir(exist_ok=True)
    lines = [header] + [",".join(str(v) for v in r) for r in rows]
    (raw / "manifest.csv").write_text("\n".join(lines) + "\n")


def write_fits(root, name, m, nest=False):
    (root / "raw").mkdir(exist_ok=True)
    hp.write_map(
        str(root / "raw" / name),
        hp.reorder(m, r2n=True) if nest else m,
        nest=nest,
        dtype=np.float64,
        overwrite=True,
    )


def collection(root, n=4, nside=16, splits=("train", "train", "val", "test")):
    """n RING FITS maps with alternating labels; returns the maps."""
    maps, rows = [], []
    for i in range(n):
        m = gaussian_map(i, nside)
        write_fits(root, f"map{i}.fits", m)
        maps.append(m)
        rows.append((f"map{i}.fits", i % 2, *PARAMS[i % 2], splits[i % len(splits)]))
    write_manifest(root, rows)
    return maps


def oracle(m, nside, order, fwhm_arcmin=None):
    """healpy alone: mean removal, smoothing, ud_grade to NEST; patches by reshape."""
    m = m - m.mean()
    if fwhm_arcmin:
        m = hp.smoothing(m, fwhm=np.radians(fwhm_arcmin / 60), use_pixel_weights=False)
    nest = hp.ud_grade(m, nside, order_in="RING", order_out="NEST")
    return nest.reshape(12 * order**2, -1)


def test_ring_nest_npy_npz_match_healpy(tmp_path):
    m = gaussian_map(7)
    write_fits(tmp_path, "ring.fits", m)
    write_fits(tmp_path, "nest.fits", m, nest=True)
    np.save(tmp_path / "raw" / "ring.npy", m)
    np.savez(tmp_path / "raw" / "ring.npz", map=m)
    write_manifest(
        tmp_path,
        [(f, 1, 0.26, 0.91, "train") for f in ("ring.fits", "nest.fits", "ring.npy", "ring.npz")],
    )
    ds = ConvergenceMaps(str(tmp_path), nside=8, order=2, log=False)
    expected = oracle(m, 8, 2)
    assert len(ds) == 4 * 48 and ds.patch_size == 16 and ds.num_patches == 48
    for i in range(len(ds)):
        d = ds[i]
        assert d.map_id.item() == i // 48 and d.patch_id.item() == i % 48
        np.testing.assert_allclose(d.x[:, 0].numpy(), expected[i % 48], rtol=1e-6, atol=1e-7)
    assert ds.files == ["ring.fits", "nest.fits", "ring.npy", "ring.npz"]


def test_native_nside_with_smoothing(tmp_path):
    maps = collection(tmp_path, n=2, splits=("train",))
    ds = ConvergenceMaps(str(tmp_path), None, order=1, smoothing_arcmin=600.0, log=False)
    assert ds.nside == 16 and len(ds) == 24
    for map_id, m in enumerate(maps):
        x = torch.stack([ds[map_id * 12 + p].x[:, 0] for p in range(12)]).numpy()
        np.testing.assert_allclose(x, oracle(m, 16, 1, 600.0), rtol=1e-5, atol=1e-6)


def test_items_graph_and_pyg_batching(tmp_path):
    collection(tmp_path)
    ds = ConvergenceMaps(str(tmp_path), nside=8, order=1, log=False)
    d = ds[17]
    assert d.x.shape == (64, 1) and d.x.dtype == torch.float32
    assert d.y.tolist() == [1] and d.y.dtype == torch.long
    assert d.omega_m.item() == pytest.approx(0.26) and d.sigma_8.item() == pytest.approx(0.91)
    assert "edge_index" not in d and ds.num_classes == 2 and ds.num_node_features == 1
    g = ds.graph
    assert g.num_nodes == 64 and g.pixels.tolist() == list(range(64)) and g.nside == 8
    assert ds.patch_pixels(3).tolist() == list(range(192, 256))

    attached = ConvergenceMaps(str(tmp_path), nside=8, order=1, attach_graph=True, log=False)
    a = attached[17]
    assert torch.equal(a.x, d.x)
    # shared, not copied: every item points at the graph's own storage
    assert a.edge_index.data_ptr() == attached.graph.edge_index.data_ptr()
    assert a.edge_weight.data_ptr() == attached.graph.edge_weight.data_ptr()
    batch = next(iter(DataLoader(attached, batch_size=3)))
    assert batch.num_graphs == 3 and batch.x.shape == (192, 1)
    assert batch.edge_index.shape[1] == 3 * g.edge_index.shape[1]
    assert batch.edge_index.max().item() == 191  # offsets added by PyG; pixels not offset
    assert batch.pixels.max().item() == 63


def test_splits_by_map(tmp_path):
    collection(tmp_path, n=8)
    by_split = {s: ConvergenceMaps(str(tmp_path), 8, 1, s, log=False) for s in SPLITS}
    maps = {s: set(d._map_id.tolist()) for s, d in by_split.items()}
    assert maps == {"train": {0, 1, 4, 5}, "val": {2, 6}, "test": {3, 7}}
    assert all(len(d) == 12 * len(maps[s]) for s, d in by_split.items())


def test_seeded_split_without_column(tmp_path):
    for i in range(10):
        write_fits(tmp_path, f"m{i}.fits", gaussian_map(i, 4))
    write_manifest(tmp_path, [(f"m{i}.fits", i % 2) for i in range(10)], header="file,label")

    def assignment(seed):
        out = {}
        for s in SPLITS:
            ds = ConvergenceMaps(
                str(tmp_path), 4, 1, s, split_fractions=(0.6, 0.2, 0.2), split_seed=seed, log=False
            )
            out[s] = sorted(set(ds._map_id.tolist()))
        return out

    a = assignment(0)
    assert sorted(sum(a.values(), [])) == list(range(10))  # every map in exactly one split
    for s, n in (("train", 3), ("val", 1), ("test", 1)):  # stratified: n per class
        assert [sum(i % 2 == c for i in a[s]) for c in (0, 1)] == [n, n]
    assert assignment(0) == a and assignment(1) != a


def test_memmap_storage_and_options_dirs(tmp_path):
    collection(tmp_path)
    ds = ConvergenceMaps(str(tmp_path), nside=8, order=2, log=False)
    arr = np.load(os.path.join(ds.processed_dir, "train.npy"), mmap_mode="r")
    assert isinstance(arr, np.memmap) and arr.dtype == np.float32 and arr.shape == (96, 16)
    assert os.path.basename(ds.processed_dir).startswith("nside8_order2_")
    # map_std: std over the training split's pixels
    assert ds.map_std == pytest.approx(float(np.asarray(arr, np.float64).std()), rel=1e-6)
    other = ConvergenceMaps(str(tmp_path), nside=8, order=2, smoothing_arcmin=3.0, log=False)
    assert other.processed_dir != ds.processed_dir


def test_cached_then_reprocessed_when_raw_changes(tmp_path, monkeypatch):
    collection(tmp_path)
    ds = ConvergenceMaps(str(tmp_path), nside=8, order=1, log=False)
    calls = []
    original = ConvergenceMaps.process
    monkeypatch.setattr(ConvergenceMaps, "process", lambda self: calls.append(1) or original(self))
    again = ConvergenceMaps(str(tmp_path), nside=8, order=1, log=False)
    assert calls == [] and torch.equal(again[3].x, ds[3].x)

    write_fits(tmp_path, "extra.fits", gaussian_map(99))
    with open(tmp_path / "raw" / "manifest.csv", "a") as f:
        f.write("extra.fits,0,0.31,0.82,train\n")
    with pytest.warns(UserWarning, match="changed since it was processed") as record:
        grown = ConvergenceMaps(str(tmp_path), nside=8, order=1, log=False)
    assert record[0].filename == __file__  # the warning names the caller's line
    assert calls == [1] and len(grown) == len(ds) + 12


def test_interrupted_process_leaves_nothing_valid(tmp_path, monkeypatch):
    maps = collection(tmp_path)
    good = ConvergenceMaps(str(tmp_path), nside=8, order=1, log=False)
    out = good.processed_dir
    (tmp_path / "processed" / os.path.basename(out) / "train.npy.part").write_bytes(b"junk")

    calls = []
    original = _map_processing.prepare_map

    def crash_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # like a user's Ctrl-C in the middle of processing
        return original(*args, **kwargs)

    monkeypatch.setattr(_map_processing, "prepare_map", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        ConvergenceMaps(str(tmp_path), nside=8, order=1, force_reload=True, log=False)
    assert not os.path.exists(os.path.join(out, "meta.json"))  # the old marker went first
    assert glob.glob(os.path.join(out, "*.part")) == []

    monkeypatch.setattr(_map_processing, "prepare_map", original)
    redone = ConvergenceMaps(str(tmp_path), nside=8, order=1, log=False)
    assert len(redone) == 24 and os.path.exists(os.path.join(out, "meta.json"))
    np.testing.assert_allclose(
        redone[12].x[:, 0].numpy(), oracle(maps[1], 8, 1)[0], rtol=1e-6, atol=1e-7
    )


def test_partial_maps(tmp_path):
    m = gaussian_map(3)
    theta, _ = hp.pix2ang(16, np.arange(m.size))
    observed = theta > np.radians(50)  # the northern cap is unobserved
    partial = np.where(observed, m, hp.UNSEEN)
    (tmp_path / "raw").mkdir()  # a cut-sky FITS file (explicit pixel indices), as healpy writes it
    hp.write_map(str(tmp_path / "raw" / "partial.fits"), partial, partial=True, dtype=np.float64)
    write_manifest(tmp_path, [("partial.fits", 0, "", "", "train")])

    expected = partial.copy()
    expected[observed] -= m[observed].mean()
    expected = hp.ud_grade(expected, 8, order_in="RING", order_out="NEST").reshape(12, -1)
    seen = expected != hp.UNSEEN

    # healpy's ud_grade keeps a pixel observed when one child is: degrade_observed=0
    full = ConvergenceMaps(str(tmp_path), nside=8, order=1, degrade_observed=0.0, log=False)
    keep = np.flatnonzero(seen.all(1))
    assert 0 < len(keep) < 12 and full._patch_id.tolist() == keep.tolist()
    x = torch.stack([d.x[:, 0] for d in full]).numpy()
    np.testing.assert_allclose(x, expected[keep], rtol=1e-6, atol=1e-7)
    assert np.isnan(full[0].omega_m.item())

    half = ConvergenceMaps(
        str(tmp_path), nside=8, order=1, min_observed=0.5, degrade_observed=0.0, log=False
    )
    keep = np.flatnonzero(seen.mean(1) >= 0.5)
    assert half._patch_id.tolist() == keep.tolist() and len(keep) > len(full)
    x = torch.stack([d.x[:, 0] for d in half]).numpy()
    np.testing.assert_allclose(x, np.where(seen, expected, 0)[keep], rtol=1e-6, atol=1e-7)
    # the noise unit ignores unobserved pixels
    assert half.map_std == pytest.approx(expected[keep][seen[keep]].std(), rel=1e-5)


def test_no_patch_fully_observed(tmp_path):
    m = gaussian_map(3)
    m[::40] = hp.UNSEEN  # holes everywhere
    write_fits(tmp_path, "holes.fits", m)
    write_manifest(tmp_path, [("holes.fits", 0, "", "", "train")])
    _error(tmp_path, "no patch was kept.*lower min_observed", nside=16)
    assert len(ConvergenceMaps(str(tmp_path), nside=16, min_observed=0.9, log=False)) == 12


def test_pre_filter_and_pre_transform(tmp_path):
    collection(tmp_path)
    plain = ConvergenceMaps(str(tmp_path), nside=8, order=1, log=False)

    def even_patches(data):
        return data.patch_id.item() % 2 == 0

    def double(data):
        data.x = 2 * data.x
        return data

    ds = ConvergenceMaps(
        str(tmp_path),
        nside=8,
        order=1,
        pre_filter=even_patches,
        pre_transform=double,
        name="even_doubled",
        log=False,
    )
    assert ds.processed_dir != plain.processed_dir and len(ds) == len(plain) // 2
    assert "even_doubled" in os.path.basename(ds.processed_dir)
    assert torch.allclose(ds[1].x, 2 * plain[2].x)


def _error(tmp_path, match, **kwargs):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        ConvergenceMaps(str(tmp_path), log=False, **{"nside": 8, **kwargs})
    assert glob.glob(str(tmp_path / "processed" / "*" / "meta.json")) == []


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda b: b"not a FITS file" * 100, "could not be read"),
        (lambda b: b[: len(b) // 2], "truncated or corrupt"),
    ],
)
def test_corrupt_and_truncated_fits(tmp_path, damage, match):
    collection(tmp_path, n=3)
    path = tmp_path / "raw" / "map1.fits"
    path.write_bytes(damage(path.read_bytes()))
    _error(tmp_path, rf"'map1.fits' \(raw/manifest.csv line 3\).*{match}")


def test_bad_maps(tmp_path):
    collection(tmp_path, n=2)
    raw = tmp_path / "raw"
    np.save(raw / "short.npy", np.zeros(1000))
    write_manifest(tmp_path, [("map0.fits", 0, "", "", "train"), ("short.npy", 1, "", "", "test")])
    _error(tmp_path, r"'short.npy' \(raw/manifest.csv line 3\).*12\*nside\^2.*\(1000,\)")

    m = gaussian_map(1)
    m[5] = np.nan
    np.save(raw / "nan.npy", m)
    write_manifest(tmp_path, [("nan.npy", 1, "", "", "train")])
    _error(tmp_path, r"'nan.npy' \(raw/manifest.csv line 2\): 1 pixels are NaN.*UNSEEN")

    write_manifest(tmp_path, [("map0.fits", 0, "", "", "train"), ("gone.fits", 1, "", "", "test")])
    _error(tmp_path, r"'gone.fits' \(raw/manifest.csv line 3\): file not found")


def test_mixed_nside(tmp_path):
    write_fits(tmp_path, "a.fits", gaussian_map(0, 16))
    write_fits(tmp_path, "b.fits", gaussian_map(1, 8))
    write_manifest(tmp_path, [("a.fits", 0, "", "", "train"), ("b.fits", 1, "", "", "train")])
    _error(
        tmp_path,
        r"different nside.*'b.fits' \(raw/manifest.csv line 3\) has nside 8.*"
        r"'a.fits' \(raw/manifest.csv line 2\) has 16.*pass nside=",
        nside=None,
    )
    ds = ConvergenceMaps(str(tmp_path), nside=8, order=1, log=False)  # a target nside resolves it
    assert len(ds) == 24


@pytest.mark.parametrize(
    "header, row, match",
    [
        ("name,class", ("map0.fits", 0), r"header must name the columns 'file' and 'label'"),
        (
            "file,label",
            ("map0.fits", ""),
            r"'map0.fits' \(raw/manifest.csv line 2\): missing label",
        ),
        ("file,label,omega_m", ("map0.fits", 0, "high"), r"line 2\): omega_m 'high' is not a"),
        ("file,label,split", ("map0.fits", 0, "dev"), r"line 2\): split 'dev' is not one of"),
    ],
)
def test_bad_manifest(tmp_path, header, row, match):
    collection(tmp_path, n=1)
    write_manifest(tmp_path, [row], header=header)
    _error(tmp_path, match)


def test_duplicate_row(tmp_path):
    collection(tmp_path, n=1)
    write_manifest(tmp_path, [("map0.fits", 0), ("map0.fits", 0)], header="file,label")
    _error(tmp_path, r"line 3\) is listed twice \(also on line 2\)")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"nside": 12}, "nside must be a power of 2"),
        ({"order": 3}, "order must be a power of 2"),
        ({"nside": 4, "order": 8}, "no larger than nside"),
        ({"split": "dev"}, "split must be one of"),
        ({"min_observed": 0.0}, r"min_observed must be in \(0, 1\]"),
        ({"split_fractions": (0.5, 0.5, 0.5)}, "summing to 1"),
        ({"num_neighbors": 0}, "num_neighbors must be an integer >= 1"),
        ({"smoothing_arcmin": -3.0}, "smoothing_arcmin must be a positive"),
        ({"split_seed": -1}, "split_seed must be an integer >= 0"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConvergenceMaps(str(tmp_path), **{"nside": 8, **kwargs})


def test_reads_the_simulator_output(tmp_path):
    from pyg_sphere.datasets import simulate_convergence_maps

    simulate_convergence_maps(
        tmp_path, n_per_class=2, nside=16, split_fractions=(0.5, 0.0, 0.5), progress=False
    )
    train = ConvergenceMaps(str(tmp_path), nside=8, order=1, log=False)
    test = ConvergenceMaps(str(tmp_path), nside=8, order=1, split="test", log=False)
    assert len(train) == len(test) == 24
    assert not set(train._map_id.tolist()) & set(test._map_id.tolist())
    m = hp.read_map(str(tmp_path / "raw" / train.files[0]), dtype=np.float64)
    np.testing.assert_allclose(
        torch.stack([train[i].x[:, 0] for i in range(12)]).numpy(),
        oracle(m, 8, 1),
        rtol=1e-5,
        atol=1e-6,
    )
    assert sorted(set(train.labels.tolist())) == [0, 1]
    assert {round(train[i].omega_m.item(), 2) for i in range(len(train))} == {0.31, 0.26}


def test_unstable_repr_needs_a_name(tmp_path):
    collection(tmp_path, n=2, splits=("train",))

    class Scale:  # a local class without __repr__: its repr holds a memory address
        def __call__(self, data):
            data.x = 3 * data.x
            return data

    for kwargs in (
        {"pre_transform": lambda d: d},
        {"pre_filter": lambda d: True},
        {"pre_transform": Scale()},
    ):
        key = next(iter(kwargs))
        with pytest.raises(ValueError, match=rf"{key}=.* no stable repr.*pass name="):
            ConvergenceMaps(str(tmp_path), nside=8, log=False, **kwargs)
    assert glob.glob(str(tmp_path / "processed" / "*")) == []

    def times(factor):
        def transform(data):
            data.x = factor * data.x
            return data

        return transform

    plain = ConvergenceMaps(str(tmp_path), nside=8, log=False)
    two = ConvergenceMaps(str(tmp_path), nside=8, pre_transform=times(2), name="x2", log=False)
    three = ConvergenceMaps(str(tmp_path), nside=8, pre_transform=times(3), name="x3", log=False)
    assert len({plain.processed_dir, two.processed_dir, three.processed_dir}) == 3
    assert torch.allclose(two[5].x, 2 * plain[5].x) and torch.allclose(three[5].x, 3 * plain[5].x)
    # a stable repr names the variant by itself
    noisy = ConvergenceMaps(
        str(tmp_path), nside=8, log=False, pre_transform=AddGaussianNoise(1.0, seed=0)
    )
    assert noisy.processed_dir not in (plain.processed_dir, two.processed_dir)
    assert not torch.equal(noisy[0].x, plain[0].x)


@pytest.mark.parametrize("name", ["", "a/b", "../up", " x", 3])
def test_bad_name(tmp_path, name):
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        ConvergenceMaps(str(tmp_path), nside=8, name=name, log=False)


def test_labels(tmp_path):
    collection(tmp_path, n=4, splits=("train",))
    ds = ConvergenceMaps(str(tmp_path), nside=8, order=1, log=False)
    labels = ds.labels
    assert labels.dtype == torch.long and labels.shape == (len(ds),) == (48,)
    assert labels.tolist() == [ds[i].y.item() for i in range(len(ds))]
    labels[:] = 7  # a copy: the dataset is untouched
    assert ds[0].y.item() == 0 and set(ds.labels.tolist()) == {0, 1}
    subset = ds[torch.tensor([13, 0, 25])]
    assert subset.labels.tolist() == [1, 0, 0]
    shuffled = ds.shuffle()
    assert shuffled.labels.tolist() == [d.y.item() for d in shuffled]
    for sliced in (ds[10:20], ds[::-1], ds[30:4:-3], ds[5:5]):  # subsets as ranges
        assert sliced.labels.tolist() == [d.y.item() for d in sliced]
    with pytest.raises(AttributeError):
        ds.labels = torch.zeros(48, dtype=torch.long)


def test_num_neighbors(tmp_path):
    collection(tmp_path, n=1, splits=("train",))
    ds = ConvergenceMaps(str(tmp_path), nside=8, order=1, num_neighbors=20, log=False)
    default = ConvergenceMaps(str(tmp_path), nside=8, order=1, log=False)
    assert ds.processed_dir == default.processed_dir  # the graph is not part of processing
    assert ds.num_neighbors == 20 and default.num_neighbors == 8
    assert ds.graph.num_neighbors == 20
    assert ds.graph.edge_index.shape[1] > default.graph.edge_index.shape[1]
    with pytest.raises(TypeError, match="'k'"):  # num_neighbors= is the only spelling
        ConvergenceMaps(str(tmp_path), nside=8, order=1, k=20, log=False)


def test_processing_leaves_only_its_files(tmp_path):
    collection(tmp_path, n=3, splits=("train", "test"))
    ds = ConvergenceMaps(
        str(tmp_path), nside=8, order=2, min_observed=1.0, log=False, pre_filter=PatchesBelow(40)
    )
    names = sorted(os.listdir(ds.processed_dir))
    assert names == [
        "meta.json",
        "pre_filter.pt",
        "pre_transform.pt",
        "samples.npz",
        "test.npy",
        "train.npy",
        "val.npy",
    ]
    arr = np.load(os.path.join(ds.processed_dir, "train.npy"), mmap_mode="r")
    assert arr.shape == (2 * 40, 16) == (len(ds), 16)  # trimmed to the kept patches
    assert ConvergenceMaps(
        str(tmp_path), nside=8, order=2, split="val", log=False, pre_filter=PatchesBelow(40)
    ).labels.shape == (0,)


class PatchesBelow:
    """A pre_filter with a stable repr: keeps the patches with patch_id < limit."""

    def __init__(self, limit):
        self.limit = limit

    def __call__(self, data):
        return data.patch_id.item() < self.limit

    def __repr__(self):
        return f"PatchesBelow({self.limit})"


# ----- maps that contribute no patch; empty splits ---------------------------------------------
def _holes(m):
    m = m.copy()
    m[::40] = hp.UNSEEN  # a hole in every patch: nothing is fully observed
    return m


def test_map_without_patches_warns(tmp_path):
    maps = collection(tmp_path, n=4, splits=("train", "train", "test", "test"))
    write_fits(tmp_path, "map1.fits", _holes(maps[1]))
    with pytest.warns(UserWarning, match=r"1 map contributed no patch") as record:
        ds = ConvergenceMaps(str(tmp_path), nside=16, order=1, log=False)
    message = str(record[0].message)
    assert record[0].filename == __file__
    assert "'map1.fits' (raw/manifest.csv line 3)" in message and "map0.fits" not in message
    assert "min_observed=1.0" in message
    assert sorted(set(ds._map_id.tolist())) == [0] and len(ds) == 12
    test = ConvergenceMaps(str(tmp_path), nside=16, order=1, split="test", log=False)
    assert len(test) == 24


def test_split_without_patches_fails(tmp_path):
    maps = collection(tmp_path, n=4, splits=("train", "train", "test", "test"))
    for i in (2, 3):
        write_fits(tmp_path, f"map{i}.fits", _holes(maps[i]))
    _error(
        tmp_path,
        r"no patch was kept for split 'test'.*2 maps.*'map2.fits' \(raw/manifest.csv line 4\)"
        r".*lower min_observed.*mask",
        nside=16,
    )
    # the maps that do have patches are still served at a lower threshold
    assert (
        len(ConvergenceMaps(str(tmp_path), nside=16, min_observed=0.9, split="test", log=False))
        == 24
    )


# ----- resolution -------------------------------------------------------------------------------
def test_upgrading_warns(tmp_path):
    collection(tmp_path, n=2, nside=8, splits=("train",))
    with pytest.warns(UserWarning, match=r"nside=16.*upgrad") as record:
        ds = ConvergenceMaps(str(tmp_path), nside=16, order=1, log=False)
    message = str(record[0].message)
    assert record[0].filename == __file__
    for text in ("'map0.fits' (raw/manifest.csv line 2)", "'map1.fits'", "nside 8", "nside=None"):
        assert text in message
    assert ds.nside == 16
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # same or lower nside: no warning
        ConvergenceMaps(str(tmp_path), nside=8, order=1, log=False)
        ConvergenceMaps(str(tmp_path), nside=4, order=1, log=False)
        ConvergenceMaps(str(tmp_path), nside=None, order=1, log=False)


@pytest.mark.parametrize("suffix", [".npy", ".fits"])
def test_nside_not_a_power_of_two(tmp_path, suffix):
    m = np.random.default_rng(0).normal(size=12 * 24**2)  # nside 24
    (tmp_path / "raw").mkdir()
    if suffix == ".npy":
        np.save(tmp_path / "raw" / "n24.npy", m)
    else:  # healpy writes a ring map of any nside in one column
        from astropy.io import fits

        cols = [fits.Column(name="T", format="D", array=m)]
        hdu = fits.BinTableHDU.from_columns(cols)
        hdu.header.update(PIXTYPE="HEALPIX", ORDERING="RING", NSIDE=24, INDXSCHM="IMPLICIT")
        hdu.writeto(tmp_path / "raw" / "n24.fits")
    write_manifest(tmp_path, [(f"n24{suffix}", 0, "", "", "train")])
    _error(
        tmp_path,
        rf"'n24{suffix}' \(raw/manifest.csv line 2\).*nside 24.*power of 2.*",
        nside=None,
    )


# ----- labels -----------------------------------------------------------------------------------
def _labelled(root, labels, header="file,label,split", splits=None):
    rows = []
    for i, label in enumerate(labels):
        write_fits(root, f"m{i}.fits", gaussian_map(i, 4))
        rows.append((f"m{i}.fits", label, (splits or ["train"] * len(labels))[i]))
    write_manifest(root, rows, header=header)


def test_labels_are_mapped_to_indices(tmp_path):
    _labelled(tmp_path, [5, 0, 10, 5])
    ds = ConvergenceMaps(str(tmp_path), nside=4, order=1, log=False)
    assert ds.classes == [0, 5, 10]  # integers: numeric order (as strings '10' < '5')
    assert ds.class_to_idx == {0: 0, 5: 1, 10: 2} and ds.num_classes == 3
    assert ds.labels.tolist() == [1] * 12 + [0] * 12 + [2] * 12 + [1] * 12
    assert ds[13].y.tolist() == [0] and ds.meta["classes"] == [0, 5, 10]
    # what the labels are for: a loss over num_classes outputs accepts them
    batch = next(iter(DataLoader(ds, batch_size=len(ds))))
    loss = torch.nn.functional.cross_entropy(torch.zeros(len(ds), ds.num_classes), batch.y)
    assert torch.isfinite(loss)


def test_string_labels(tmp_path):
    _labelled(tmp_path, ["wcdm", "lcdm", "0", "lcdm"], splits=["train", "train", "test", "test"])
    ds = ConvergenceMaps(str(tmp_path), nside=4, order=1, log=False)
    assert ds.classes == ["0", "lcdm", "wcdm"] and ds.class_to_idx == {"0": 0, "lcdm": 1, "wcdm": 2}
    assert ds.labels.tolist() == [2] * 12 + [1] * 12
    test = ConvergenceMaps(str(tmp_path), nside=4, order=1, split="test", log=False)
    assert test.classes == ds.classes and test.labels.tolist() == [0] * 12 + [1] * 12


def test_pre_filter_sees_the_class_index(tmp_path):
    _labelled(tmp_path, [7, 3])
    ds = ConvergenceMaps(
        str(tmp_path), nside=4, order=1, pre_filter=KeepClass(1), log=False
    )  # class index 1 is label 7
    assert ds.classes == [3, 7] and ds.labels.tolist() == [1] * 12
    assert ds._map_id.tolist() == [0] * 12


class KeepClass:
    """A pre_filter with a stable repr: keeps the patches of class index ``y``."""

    def __init__(self, y):
        self.y = y

    def __call__(self, data):
        return data.y.item() == self.y

    def __repr__(self):
        return f"KeepClass({self.y})"


# ----- FITS columns -----------------------------------------------------------------------------
def test_fits_field(tmp_path):
    m0, m1 = gaussian_map(0), gaussian_map(1)
    (tmp_path / "raw").mkdir()
    hp.write_map(str(tmp_path / "raw" / "two.fits"), [m0, m1], dtype=np.float64)
    write_manifest(tmp_path, [("two.fits", 0, "", "", "train")])
    first = ConvergenceMaps(str(tmp_path), nside=8, order=1, log=False)
    second = ConvergenceMaps(str(tmp_path), nside=8, order=1, field=1, log=False)
    assert first.processed_dir != second.processed_dir
    for ds, m in ((first, m0), (second, m1)):
        x = torch.stack([d.x[:, 0] for d in ds]).numpy()
        np.testing.assert_allclose(x, oracle(m, 8, 1), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match=r"'two.fits' \(raw/manifest.csv line 2\).*field=2.*2 map"):
        ConvergenceMaps(str(tmp_path), nside=8, order=1, field=2, log=False)

    npy = tmp_path / "npy"  # another collection: a numpy map has one column
    (npy / "raw").mkdir(parents=True)
    np.save(npy / "raw" / "one.npy", m0)
    write_manifest(npy, [("one.npy", 0, "", "", "train")])
    with pytest.raises(
        ValueError, match=r"'one.npy' \(raw/manifest.csv line 2\).*field=1.*1 column"
    ):
        ConvergenceMaps(str(npy), nside=8, order=1, field=1, log=False)


def test_fits_field_of_partial_maps(tmp_path):
    m = gaussian_map(3)
    theta, _ = hp.pix2ang(16, np.arange(m.size))
    partial = np.where(theta > np.radians(50), m, hp.UNSEEN)
    (tmp_path / "raw").mkdir()
    hp.write_map(
        str(tmp_path / "raw" / "p.fits"), [partial, 2 * partial], partial=True, dtype=np.float64
    )
    write_manifest(tmp_path, [("p.fits", 0, "", "", "train")])
    one = ConvergenceMaps(str(tmp_path), nside=8, order=1, log=False)
    two = ConvergenceMaps(str(tmp_path), nside=8, order=1, field=1, log=False)
    assert torch.allclose(two[0].x, 2 * one[0].x, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"field=2.*2 map columns"):  # PIXEL is no map column
        ConvergenceMaps(str(tmp_path), nside=8, order=1, field=2, log=False)


@pytest.mark.parametrize("field, error", [(-1, ValueError), ("0", TypeError), (1.0, TypeError)])
def test_bad_field(tmp_path, field, error):
    with pytest.raises(error, match="field must be an integer"):
        ConvergenceMaps(str(tmp_path), nside=8, field=field, log=False)
