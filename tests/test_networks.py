"""cyclelib.networks against the official CycleGAN networks and the CyCADA digit networks.

``data/official-cyclegan-nets.pt`` holds small networks of the official code
(junyanz/pytorch-CycleGAN-and-pix2pix) with their weights, an input and the output
they gave in eval mode. ``data/official-cyclegan-full-size-keys.json`` lists every
state_dict key and shape of the full-size (width 64) official networks.
"""
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cyclelib import (DTN, FeatureDiscriminator, LeNet, build_classifier, build_discriminator, build_generator,
                      init_weights, load_official, save_official)

DATA = Path(__file__).parent / "data"
FIXTURE_NAMES = ["resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256_batch", "basic_D",
                 "n_layers5_D", "pixel_D"]


@pytest.fixture(scope="module")
def official():
    return torch.load(DATA / "official-cyclegan-nets.pt", map_location="cpu", weights_only=True)


def build(config):
    """Build (not load) the network a fixture ``config`` describes."""
    config = dict(config)
    if config.pop("kind") == "G":
        return build_generator(**config)
    return build_discriminator(**config)


def _sd_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- official equivalence

def test_fixture_covers_every_architecture(official):
    assert sorted(official) == sorted(FIXTURE_NAMES)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_official_weights_give_official_outputs(official, name):
    entry = official[name]
    net = load_official(entry["state_dict"], **entry["config"]).eval()
    with torch.no_grad():
        out = net(entry["input"])
    assert out.shape == entry["output"].shape
    torch.testing.assert_close(out, entry["output"], atol=1e-5, rtol=0)


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() == "DEFAULT",
                    reason="needs the vectorized RNG path (see the docstring)")
def test_same_seed_gives_official_initial_weights(official):
    """The fixture was made by seeding 1234 once, then for each network in turn: the
    official define_G/define_D (default init, then N(0, 0.02)) and an input
    rand * 2 - 1. Modules created in the official order consume the random stream
    identically, so weights and inputs come out bit-equal.

    Needs the vectorized RNG path that made the fixture: ATen's ``normal_`` turns the same
    uniform draws into normal ones with vectorized log/cos (AVX2 and up), which round the last
    bit of some values differently from the scalar functions that ``ATEN_CPU_CAPABILITY=default``
    (or a CPU without AVX2) uses: measured there, 24 of resnet_9blocks' weight tensors differ
    by one ulp in a few values (e.g. 0.013851730 against 0.013851725). Skipped there."""
    torch.manual_seed(1234)
    for name in FIXTURE_NAMES:
        entry = official[name]
        assert _sd_equal(build(entry["config"]).state_dict(), entry["state_dict"]), name
        assert torch.equal(torch.rand(entry["input"].shape) * 2 - 1, entry["input"]), name


FULL_SIZE = {  # json entry -> how the official network was built
    "resnet_9blocks": dict(kind="G", arch="resnet_9blocks", norm="instance"),
    "resnet_6blocks": dict(kind="G", arch="resnet_6blocks", norm="instance"),
    "unet_256": dict(kind="G", arch="unet_256", norm="batch"),
    "basic_D": dict(kind="D", arch="basic", norm="instance"),
}


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_full_size_keys_shapes_and_parameter_counts(name):
    reference = json.loads((DATA / "official-cyclegan-full-size-keys.json").read_text())[name]
    with torch.device("meta"):  # shapes only: no memory, no initialisation work
        net = build(FULL_SIZE[name])
    shapes = {key: list(value.shape) for key, value in net.state_dict().items()}
    assert list(shapes) == list(reference["keys"])  # same keys, same order
    assert shapes == reference["keys"]
    assert sum(p.numel() for p in net.parameters()) == reference["params"]


def test_published_parameter_counts():
    counts = {"resnet_9blocks": 11_378_179, "resnet_6blocks": 7_837_699}
    with torch.device("meta"):
        for arch, count in counts.items():
            assert sum(p.numel() for p in build_generator(arch).parameters()) == count
        assert sum(p.numel() for p in build_generator("unet_256", norm="batch").parameters()) == 54_413_955
        assert sum(p.numel() for p in build_discriminator("basic").parameters()) == 2_764_737


# ---------------------------------------------------------------- shapes and structure

def test_resnet_generator_keeps_shape_and_range():
    g = build_generator("resnet_6blocks", width=4).eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        y = g(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1


def test_any_number_of_resnet_blocks():
    g = build_generator("resnet_1blocks", input_nc=1, output_nc=2, width=4)
    assert g(torch.zeros(2, 1, 16, 16)).shape == (2, 2, 16, 16)
    assert "model.10.conv_block.1.weight" in g.state_dict()
    assert "model.11.conv_block.1.weight" not in g.state_dict()


def test_resnet_dropout_shifts_second_conv_as_officially():
    keys = build_generator("resnet_1blocks", width=4, dropout=True).state_dict()
    assert "model.10.conv_block.6.weight" in keys and "model.10.conv_block.5.weight" not in keys


def test_unet_128_and_general_unet():
    g = build_generator("unet_128", width=4).eval()
    with torch.no_grad():
        assert g(torch.zeros(1, 3, 128, 128)).shape == (1, 3, 128, 128)
        assert build_generator("unet_32", width=4).eval()(torch.zeros(1, 3, 64, 32)).shape == (1, 3, 64, 32)
    with pytest.raises(ValueError, match="divisible by 128"):
        g(torch.zeros(1, 3, 100, 128))


def test_unet_dropout_only_in_middle_blocks():
    g = build_generator("unet_256", width=2, dropout=True)
    dropouts = [name for name, m in g.named_modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 3  # the 8w levels between the 4 outer ones and the innermost


def test_basic_discriminator_gives_30x30_patches_for_256():
    d = build_discriminator("basic", width=8).eval()
    with torch.no_grad():
        assert d(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)


def test_pixel_discriminator_keeps_spatial_size():
    d = build_discriminator("pixel", input_nc=1, width=4)
    assert d(torch.zeros(2, 1, 20, 24)).shape == (2, 1, 20, 24)


def test_norm_choices_follow_official_bias_rule():
    def conv_biases(net):
        return [m.bias is not None for m in net.modules() if isinstance(m, nn.Conv2d)]

    instance = build_discriminator("pixel", width=4, norm="instance")
    batch = build_discriminator("pixel", width=4, norm="batch")
    none = build_discriminator("pixel", width=4, norm="none")
    assert conv_biases(instance) == [True, True, True]
    # Official quirk: the bias goes with InstanceNorm only, even in the last pixel conv.
    assert conv_biases(batch) == conv_biases(none) == [True, False, False]
    assert isinstance(batch.net[3], nn.BatchNorm2d) and isinstance(none.net[3], nn.Identity)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for m in none.modules())
    inorm = instance.net[3]
    assert not inorm.affine and not inorm.track_running_stats
    plain = build_generator("resnet_1blocks", width=4, norm="none")
    assert plain(torch.zeros(1, 3, 8, 8)).shape == (1, 3, 8, 8)


@pytest.mark.parametrize("call, match", [
    (lambda: build_generator("resnet_0blocks"), "resnet_<n>blocks"),
    (lambda: build_generator("unet_100"), "unet_128, unet_256"),
    (lambda: build_generator("unet_16"), "unet_<size>"),
    (lambda: build_generator("vgg"), "resnet_9blocks"),
    (lambda: build_discriminator("patch"), "basic, n_layers, pixel"),
    (lambda: build_generator(norm="layer"), "instance, batch, syncbatch, none"),
    (lambda: build_discriminator(norm="group"), "instance, batch, syncbatch, none"),
    (lambda: build_generator(init="uniform"), "normal, xavier, kaiming, orthogonal"),
    (lambda: init_weights(nn.Conv2d(1, 1, 1), "he"), "normal, xavier, kaiming, orthogonal"),
    (lambda: build_classifier("resnet"), "lenet, dtn"),
])
def test_unknown_names_list_valid_values(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("net", [
    build_generator("resnet_1blocks", width=2), build_generator("unet_32", width=2),
    build_discriminator("basic", width=2), build_discriminator("pixel", width=2)],
    ids=["resnet", "unet", "patchgan", "pixel"])
def test_channel_mismatch_is_a_clear_error(net):
    with pytest.raises(ValueError, match=r"N x 3 x H x W .*\(1, 1, 32, 32\)"):
        net(torch.zeros(1, 1, 32, 32))


# ---------------------------------------------------------------- load_official / save_official

def test_legacy_instance_norm_stats_and_module_prefix(official):
    entry = official["resnet_9blocks"]
    state = dict(entry["state_dict"])
    # Pre-0.4 InstanceNorm layers (model.2, model.10.conv_block.2, ...) saved running stats.
    for norm in ("model.2", "model.10.conv_block.2", "model.23"):
        state[f"{norm}.running_mean"] = torch.zeros(8)
        state[f"{norm}.running_var"] = torch.ones(8)
        state[f"{norm}.num_batches_tracked"] = torch.tensor(0)
    wrapped = {f"module.{key}": value for key, value in state.items()}  # saved from DataParallel
    net = load_official(wrapped, **entry["config"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(net(entry["input"]), entry["output"], atol=1e-5, rtol=0)


def test_batch_norm_files_without_num_batches_tracked(official):
    entry = official["unet_256_batch"]  # files from before PyTorch 0.4 lack num_batches_tracked
    state = {k: v for k, v in entry["state_dict"].items() if not k.endswith("num_batches_tracked")}
    assert len(state) < len(entry["state_dict"])
    net = load_official(state, **entry["config"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(net(entry["input"]), entry["output"], atol=1e-5, rtol=0)


def test_wrong_arch_is_explained(official):
    entry = official["resnet_9blocks"]
    with pytest.raises(ValueError, match=r"arch='resnet_6blocks'.*missing keys \(4\): model\.16\.weight"
                                         r".*unexpected keys \(16\): model\.16\.conv_block.*Hint: check arch"):
        load_official(entry["state_dict"], **{**entry["config"], "arch": "resnet_6blocks"})


def test_wrong_width_names_shapes(official):
    entry = official["basic_D"]
    with pytest.raises(ValueError, match=r"width=16.*shape mismatches \(9\): model\.0\.weight: "
                                         r"file \(8, 3, 4, 4\) vs network \(16, 3, 4, 4\)"):
        load_official(entry["state_dict"], **{**entry["config"], "width": 16})


def test_wrong_norm_hints_batch(official):
    entry = official["unet_256_batch"]
    with pytest.raises(ValueError, match="try norm='batch'"):
        load_official(entry["state_dict"], **{**entry["config"], "norm": "instance"})
    with pytest.raises(ValueError, match="try norm='instance'"):
        load_official(official["unet_128"]["state_dict"], **{**official["unet_128"]["config"],
                                                             "norm": "batch"})


def test_bad_kind():
    with pytest.raises(ValueError, match="G .*D "):
        load_official({}, kind="generator", arch="resnet_9blocks")


def test_load_from_file_path(official, tmp_path):
    entry = official["pixel_D"]
    path = tmp_path / "latest_net_D_A.pth"
    torch.save(entry["state_dict"], path)
    for where in (path, str(path)):
        net = load_official(where, **entry["config"]).eval()
        with torch.no_grad():
            torch.testing.assert_close(net(entry["input"]), entry["output"], atol=1e-5, rtol=0)


def test_unreadable_files_are_named(tmp_path):
    garbage = tmp_path / "horse2zebra.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="horse2zebra.pth"):
        load_official(garbage, kind="G", arch="resnet_9blocks")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_official(tmp_path / "missing.pth", kind="G", arch="resnet_9blocks")
    nested = tmp_path / "full_checkpoint.pt"
    torch.save({"G_A": {"model.1.weight": torch.zeros(1)}}, nested)
    with pytest.raises(ValueError, match="full_checkpoint.pt is not a state_dict"):
        load_official(nested, kind="G", arch="resnet_9blocks")


def test_save_official_round_trip(tmp_path):
    net = build_generator("unet_32", input_nc=1, output_nc=3, width=2, norm="batch").eval()
    path = tmp_path / "models" / "latest_net_G_A.pth"
    assert save_official(nn.DataParallel(net), path) == path  # wrappers are unwrapped
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left

    # What the official code does: torch.load + load_state_dict into a fresh network.
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert list(state) == list(net.state_dict())
    assert all(v.device.type == "cpu" for v in state.values())
    fresh = build_generator("unet_32", input_nc=1, output_nc=3, width=2, norm="batch")
    fresh.load_state_dict(state, strict=True)
    assert _sd_equal(fresh.state_dict(), net.state_dict())

    loaded = load_official(path, kind="G", arch="unet_32", input_nc=1, output_nc=3, width=2,
                           norm="batch").eval()
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


# ---------------------------------------------------------------- initialisation

def _conv_weights(net):
    return torch.cat([m.weight.flatten() for m in net.modules()
                      if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])


def test_normal_init_matches_official():
    torch.manual_seed(0)
    g = build_generator("unet_64", width=8, norm="batch", init="normal", init_gain=0.02)
    weights = _conv_weights(g)
    assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001
    assert all(m.bias is None or not m.bias.any() for m in g.modules() if isinstance(m, nn.Conv2d))
    bn_weight = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)]).detach()
    assert abs(bn_weight.mean().item() - 1) < 0.005 and abs(bn_weight.std().item() - 0.02) < 0.005
    assert not torch.cat([m.bias for m in g.modules() if isinstance(m, nn.BatchNorm2d)]).any()


def test_other_init_types():
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 64, 3)
    init_weights(conv, "xavier", gain=0.5)
    assert abs(conv.weight.std().item() - 0.5 * (2 / (2 * 64 * 9)) ** 0.5) < 0.002
    init_weights(conv, "kaiming", gain=0.5)  # gain ignored, as in the official code
    assert abs(conv.weight.std().item() - (2 / (64 * 9)) ** 0.5) < 0.003
    init_weights(conv, "orthogonal", gain=1.0)
    rows = conv.weight.flatten(1)
    torch.testing.assert_close(rows @ rows.T, torch.eye(64), atol=1e-4, rtol=0)
    assert not conv.bias.any()


# ---------------------------------------------------------------- CyCADA digit networks

@pytest.mark.parametrize("name, cls, shape", [("lenet", LeNet, (1, 28, 28)), ("dtn", DTN, (3, 32, 32))])
def test_digit_classifiers(name, cls, shape):
    net = build_classifier(name)
    assert type(net) is cls
    assert (cls.channels, cls.image_size, cls.image_size) == shape
    assert net(torch.zeros(4, *shape)).shape == (4, 10)
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, *shape)).shape == (1, 10)
    wrong = (3, 32, 32) if name == "lenet" else (1, 28, 28)
    expected = " x ".join(map(str, shape))
    with pytest.raises(ValueError, match=rf"N x {expected}, got .*\(2, {', '.join(map(str, wrong))}\)"):
        net(torch.zeros(2, *wrong))


def test_classifier_keys_follow_cycada_release():
    assert list(LeNet().state_dict()) == ["conv_params.0.weight", "conv_params.0.bias",
                                          "conv_params.3.weight", "conv_params.3.bias",
                                          "fc_params.weight", "fc_params.bias",
                                          "classifier.2.weight", "classifier.2.bias"]
    keys = DTN().state_dict()
    assert keys["fc_params.0.weight"].shape == (512, 4096) and "fc_params.1.running_mean" in keys
    assert keys["classifier.2.weight"].shape == (10, 512)


def test_feature_discriminator():
    d = FeatureDiscriminator()
    assert [tuple(m.weight.shape) for m in d if isinstance(m, nn.Linear)] == [(500, 10), (500, 500), (2, 500)]
    assert d(torch.zeros(5, 10)).shape == (5, 2)
    with pytest.raises(ValueError, match=r"N x 10, got .*\(5, 12\)"):
        d(torch.zeros(5, 12))
