import json

import healpy as hp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from pyg_sphere import close_hierarchy, nested_patches
from pyg_sphere.datasets import ConvergenceMaps
from pyg_sphere.loader import SharedGraphLoader
from pyg_sphere.nn import DeepSphere, SphericalUNet

SMALL = dict(channels=(8, 16), K=3)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("maps")
    (root / "raw").mkdir()
    np.random.seed(3)
    ell = np.arange(48)
    rows = []
    for i in range(3):
        hp.write_map(
            str(root / "raw" / f"m{i}.fits"), hp.synfast(1 / (ell + 3.0) ** 2, 16), dtype=np.float64
        )
        rows.append(f"m{i}.fits,{i % 2},0.3,0.8,train")
    (root / "raw" / "manifest.csv").write_text(
        "file,label,omega_m,sigma_8,split\n" + "\n".join(rows)
    )
    return str(root)


@pytest.mark.parametrize("head", ["fcn", "cnn"])
def test_shapes_full_sphere_and_patch(head):
    torch.manual_seed(0)
    full = DeepSphere(2, 3, 8, head=head, **SMALL)
    assert full.num_nodes == 768 and full(torch.randn(5, 768, 2)).shape == (5, 3)
    assert full(torch.randn(768, 2)).shape == (1, 3)  # one map, no batch vector
    patch = DeepSphere(1, 2, 16, pixels=nested_patches(16, 2)[7], head=head, **SMALL)
    assert patch.num_nodes == 64 and patch(torch.randn(4, 64, 1)).shape == (4, 2)
    # The paper's default: five levels, a 32x32 patch pooled down to one pixel.
    paper = DeepSphere(1, 2, 32, pixels=nested_patches(32, 1)[0], head=head)
    assert paper.channels == (16, 32, 64, 64, 64) and paper.levels == 5
    assert paper(torch.randn(2, 1024, 1)).shape == (2, 2)
    # Graphs follow the model's device but are not saved.
    assert not any(key.startswith(("edge_", "pixels")) for key in full.state_dict())
    full = full.double()
    assert full.graphs[0].edge_weight.dtype == torch.float32  # the graph keeps its precision
    assert full(torch.randn(2, 768, 2, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("head", ["fcn", "cnn"])
def test_shared_and_pyg_batches_agree(root, head):
    shared = ConvergenceMaps(root, 16, 1, log=False)  # 3 maps x 12 patches of 256 pixels
    pyg = ConvergenceMaps(root, 16, 1, attach_graph=True, log=False)
    torch.manual_seed(0)
    model = DeepSphere(1, 2, shared.nside, pixels=shared.graph.pixels, head=head, **SMALL)
    for train in (True, False):  # batch statistics, then running statistics
        model.train(train)
        a, b = [], []
        for sb, pb in zip(SharedGraphLoader(shared, batch_size=10), DataLoader(pyg, batch_size=10)):
            model.check_data(sb)
            model.check_data(pb)
            assert sb.x.dim() == 3 and pb.x.dim() == 2
            a.append(model(sb.x, sb.batch))
            b.append(model(pb.x, pb.batch))
        a, b = torch.cat(a), torch.cat(b)
        assert a.shape == (36, 2)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _variance_classes(n, generator):
    y = torch.arange(n) % 2
    return torch.randn(n, 256, 1, generator=generator) * (1 + 0.5 * y).view(-1, 1, 1), y


def test_training_separates_two_variances():
    g = torch.Generator().manual_seed(1)
    x_train, y_train = _variance_classes(128, g)
    x_test, y_test = _variance_classes(64, g)
    torch.manual_seed(0)
    model = DeepSphere(1, 2, 16, pixels=nested_patches(16, 1)[0], channels=(8, 8), K=3)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    losses = []
    for _ in range(30):
        i = torch.randint(0, 128, (32,), generator=g)
        loss = F.cross_entropy(model(x_train[i]), y_train[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:3])
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy >= 0.9


def test_regression_of_two_targets():
    # Targets (scale, offset) of the maps, like (sigma_8, omega_m) of convergence maps.
    g = torch.Generator().manual_seed(2)
    target = torch.rand(64, 2, generator=g) + 0.5
    x = torch.randn(64, 256, 1, generator=g) * target[:, :1, None] + target[:, 1:, None]
    torch.manual_seed(2)
    model = DeepSphere(
        1, 2, 16, pixels=nested_patches(16, 1)[3], channels=(8, 8), K=3, batch_norm=False
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    with torch.no_grad():
        before = F.mse_loss(model(x), target).item()
    for _ in range(50):
        loss = F.mse_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Well below the error of predicting the mean target, Var(target) ~ 1/12.
    assert loss.item() < 0.5 * target.var(0).mean().item()
    assert loss.item() < 0.05 * before


def test_permuting_maps_permutes_outputs():
    torch.manual_seed(0)
    model = DeepSphere(1, 4, 8, **SMALL)
    x = torch.randn(6, 768, 1)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    for train in (True, False):  # batch norm statistics do not depend on the order either
        model.train(train)
        out = model(x)
        torch.testing.assert_close(model(x[perm]), out[perm], rtol=1e-5, atol=1e-6)


def _rotation_z90(nside):
    """Nested permutation sending each pixel to its image by a 90 degree rotation about z."""
    theta, phi = hp.pix2ang(nside, np.arange(12 * nside**2), nest=True)
    return torch.from_numpy(hp.ang2pix(nside, theta, phi + np.pi / 2, nest=True))


def test_fcn_nearly_invariant_to_rotation_about_z():
    # HEALPix maps onto itself under a 90 degree rotation about z, but the k-NN graph does
    # not quite: among neighbours at tied distances, the kept edges depend on the pixel
    # ids (48 of 24904 edges at nside 16). So invariance is approximate; a random
    # rearrangement of the pixels (another map) changes the output far more.
    nside = 16
    rot = _rotation_z90(nside)
    torch.manual_seed(0)
    model = DeepSphere(1, 4, nside, channels=(8, 16, 16), K=3).eval()
    x = torch.randn(8, 12 * nside**2, 1)
    rotated, shuffled = torch.empty_like(x), x[:, torch.randperm(x.size(1))]
    rotated[:, rot] = x
    with torch.no_grad():
        out = model(x)
        rotation_change = (model(rotated) - out).abs().mean()
        shuffle_change = (model(shuffled) - out).abs().mean()
    assert rotation_change < 0.2 * shuffle_change


def test_errors_on_bad_input():
    model = DeepSphere(1, 2, 16, pixels=nested_patches(16, 1)[0], **SMALL)
    with pytest.raises(ValueError, match=r"x has 64 pixels per map .* 256 pixels"):
        model(torch.randn(2, 64, 1))
    with pytest.raises(ValueError, match="in_channels=1"):
        model(torch.randn(2, 256, 3))
    with pytest.raises(ValueError, match=r"have \[256, 64\] nodes .* 256 pixels"):
        model(torch.randn(320, 1), torch.tensor([0] * 256 + [1] * 64))
    with pytest.raises(ValueError, match="consecutively"):
        model(torch.randn(512, 1), torch.arange(512) % 2)
    with pytest.raises(ValueError, match="batch is only for x of shape"):
        model(torch.randn(2, 256, 1), torch.zeros(512, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(2, 256, 1, 1))
    # Same pixel count, other resolution (nside 32, order 2 patches also have 256 pixels).
    with pytest.raises(ValueError, match="data has nside 32 .* nside 16"):
        model.check_data(Data(nside=32, pixels=nested_patches(32, 2)[0]))
    with pytest.raises(ValueError, match="not the model's region"):
        model.check_data(Data(nside=16, pixels=nested_patches(16, 1)[1]))
    model.check_data(Data(nside=16, pixels=nested_patches(16, 1)[0], x=torch.randn(256, 1)))


def test_errors_on_bad_construction():
    with pytest.raises(ValueError, match=r"nside=16 is too small for 5 poolings"):
        DeepSphere(1, 2, 16)
    region = nested_patches(16, 2)[0]  # 64 pixels: 3 poolings at most
    with pytest.raises(ValueError, match=r"pooled 3 time.*close_hierarchy\(pixels, 4\)"):
        DeepSphere(1, 2, 16, pixels=region, channels=(4, 4, 4, 4))
    closed = close_hierarchy(region, 4)
    assert DeepSphere(1, 2, 16, pixels=closed, channels=(4, 4, 4, 4)).num_nodes == 256
    with pytest.raises(
        ValueError, match="num_neighbors=20 neighbours cannot be found at the coarsest"
    ):
        DeepSphere(1, 2, 8, channels=(4, 4, 4), num_neighbors=20)
    with pytest.raises(ValueError, match="head must be"):
        DeepSphere(1, 2, 8, head="mlp", **SMALL)
    with pytest.raises(ValueError, match="pool must be"):
        DeepSphere(1, 2, 8, pool="min", **SMALL)
    with pytest.raises(ValueError, match="channels needs at least 1"):
        DeepSphere(1, 2, 8, channels=())
    with pytest.raises(ValueError, match="nside must be a power of 2"):
        DeepSphere(1, 2, 12, **SMALL)


@pytest.mark.parametrize("head", ["fcn", "cnn"])
def test_config_round_trip(head):
    torch.manual_seed(0)
    model = DeepSphere(
        1, 2, 16, pixels=nested_patches(16, 1)[2], head=head, dropout=0.1, **SMALL
    ).eval()
    config = json.loads(json.dumps(model.config))
    assert config["pixels"] == nested_patches(16, 1)[2].tolist()
    assert config["channels"] == [8, 16] and config["head"] == head
    clone = DeepSphere.from_config(config).eval()
    assert clone.config == model.config
    clone.load_checkpoint_state(model.state_dict(), config)
    x = torch.randn(3, 256, 1)
    torch.testing.assert_close(clone(x), model(x))
    assert DeepSphere.from_config(DeepSphere(1, 2, 8, **SMALL).config).config["pixels"] is None


def test_checkpoint_mismatch_says_what_differs():
    torch.manual_seed(0)
    model = DeepSphere(1, 2, 16, pixels=nested_patches(16, 1)[0], channels=(16, 32, 64))
    small = DeepSphere(1, 2, 16, pixels=nested_patches(16, 1)[0], channels=(16, 32))
    with pytest.raises(
        ValueError,
        match=r"checkpoint has channels \(16, 32\) but model has "
        r"\(16, 32, 64\)",
    ):
        model.load_checkpoint_state(small.state_dict(), json.loads(json.dumps(small.config)))
    # Without the config, the tensors still say it.
    with pytest.raises(ValueError, match=r"missing: convs\.2\.lins\.0\.weight"):
        model.load_checkpoint_state(small.state_dict())
    other_nside = DeepSphere(1, 2, 32, pixels=nested_patches(32, 2)[0], channels=(16, 32, 64))
    with pytest.raises(ValueError, match="checkpoint has nside 32 but model has 16"):
        model.load_checkpoint_state(other_nside.state_dict(), other_nside.config)
    patch = DeepSphere(1, 2, 16, pixels=nested_patches(16, 1)[5], channels=(16, 32, 64))
    with pytest.raises(
        ValueError,
        match=r"trained on a region of 256 pixels \(nested ids "
        r"1280..1535\) .*same size, other pixels",
    ):
        model.load_checkpoint_state(patch.state_dict(), patch.config)
    unet = SphericalUNet(1, 2, 16, pixels=nested_patches(16, 1)[0], channels=(16, 32))
    with pytest.raises(ValueError, match="another architecture"):
        model.load_checkpoint_state(unet.state_dict(), unet.config)
    with pytest.raises(ValueError, match="another architecture"):
        DeepSphere.from_config(unet.config)
    # A differing dropout does not matter; a DistributedDataParallel prefix neither.
    same = DeepSphere(1, 2, 16, pixels=nested_patches(16, 1)[0], channels=(16, 32, 64), dropout=0.5)
    prefixed = {"module." + key: value for key, value in same.state_dict().items()}
    assert model.load_checkpoint_state(prefixed, same.config) is model
    assert torch.equal(model.convs[1].lins[2].weight, same.convs[1].lins[2].weight)


@pytest.mark.parametrize("bad", [-1.6375e30, float("nan"), float("inf")])
def test_unseen_and_non_finite_inputs_are_refused_before_any_state_changes(bad):
    torch.manual_seed(0)
    model = DeepSphere(1, 2, 8, **SMALL)
    x = torch.randn(4, 768, 1)
    x[1, 100, 0] = bad
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="UNSEEN.*input_check"):
        model(x)  # training mode: checked
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # batch-norm statistics untouched
    model.eval()
    model(x)  # evaluation: not checked by default (one pass over x saved)
    model.input_check = "always"
    with pytest.raises(ValueError, match="UNSEEN"):
        model(x)
    model.train()
    model.input_check = "never"
    model(x)
    with pytest.raises(ValueError, match="input_check must be"):
        model.input_check = "sometimes"
        model(x)


def test_check_data_compares_ordering_and_pixels():
    model = DeepSphere(1, 2, 8, **SMALL)
    from pyg_sphere import healpix_graph

    model.check_data(healpix_graph(8))
    with pytest.raises(ValueError, match="RING"):
        model.check_data(healpix_graph(8, nest=False))
    with pytest.raises(ValueError, match="nside 4"):
        model.check_data(healpix_graph(4))
    with pytest.raises(ValueError, match="not the model's region"):
        model.check_data(healpix_graph(8, pixels=range(16)))
    bad = Data(x=torch.full((768, 1), float("nan")), nside=8)
    with pytest.raises(ValueError, match="NaN"):
        model.check_data(bad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@torch.no_grad()
def test_half_precision_model(dtype):
    torch.manual_seed(0)
    model = DeepSphere(1, 2, 8, **SMALL).eval()
    x = torch.randn(3, 768, 1)
    ref = model(x)
    out = model.to(dtype)(x.to(dtype))
    assert out.dtype == dtype and model.graphs[0].edge_weight.dtype == torch.float32
    assert float((out.float() - ref).abs().max() / ref.abs().max()) < 2e-2
