"""Exported generators (ONNX, TorchScript, safetensors) compute what the PyTorch generator does,
at every batch size and image size from one file, and run without cyclelib."""
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from cyclelib import (CycleGAN, LeNet, build_generator, digit_domain, export_generator, load_cyclegan,
                      load_generator, load_official, train_cyclegan)
from cyclelib.checkpoints import make_checkpoint, save_checkpoint
from helpers import ROOT, cli, equal_states, smoke

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

# Largest |ONNX - PyTorch| measured on these inputs in fp32: 2.4e-6 (ResNet), 4.9e-7 (U-Net),
# 1.6e-6 against the official code's stored output (resnet_6blocks);
# onnxruntime sums the convolutions in another order than PyTorch's kernels.
ONNX_BOUND = 1e-5
# TorchScript runs PyTorch's own kernels: measured 0.0.
TORCHSCRIPT_BOUND = 1e-6

GENERATORS = {  # small, with what export must handle: reflection pads, skip connections, a noise input
    "resnet": dict(arch="resnet_2blocks", width=8),
    "unet": dict(arch="unet_32", width=8),
    "unet-noise": dict(arch="unet_32", width=8, noise_nc=2, noise_injection="modulate"),
}


def photo_crops(height, width):
    """Two real photographs (scikit-learn's samples), cropped, as [2, 3, H, W] in [-1, 1]."""
    crops = [load_sample_image(name)[100:100 + height, 200:200 + width] for name in ("china.jpg", "flower.jpg")]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1


def sample_images():
    """Batches of several sizes and batch sizes, random and real: all go through one exported file."""
    generator = torch.Generator().manual_seed(0)
    digits = digit_domain("mnist5k", split="test")
    return {"random 1x64x96": torch.rand(1, 3, 64, 96, generator=generator) * 2 - 1,
            "random 3x128x32": torch.rand(3, 3, 128, 32, generator=generator) * 2 - 1,
            "photos 2x96x128": photo_crops(96, 128),
            "digits 5x32x32": torch.stack([digits[i][0] for i in range(5)])}


@pytest.fixture(scope="module", params=list(GENERATORS))
def exported(request, tmp_path_factory):
    """A small generator and its ONNX and TorchScript exports."""
    torch.manual_seed(0)
    options = dict(GENERATORS[request.param])
    generator = build_generator(options.pop("arch"), 3, 3, options.pop("width"), **options).eval()
    folder = tmp_path_factory.mktemp(request.param)
    files = {fmt: export_generator(generator, folder / f"g.{fmt}", fmt) for fmt in ("onnx", "torchscript")}
    return generator, files


def inputs_for(generator, images):
    """The generator's inputs for ``images``: the images, and a noise draw where it takes one."""
    if generator.__class__.__name__ != "NoiseInput":
        return (images,)
    return images, torch.rand(len(images), generator.noise_nc, 1, 1, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_onnx_matches_pytorch_at_every_size(exported):
    generator, files = exported
    session = ort.InferenceSession(str(files["onnx"]))
    names = [i.name for i in session.get_inputs()]
    assert names[0] == "image" and [o.name for o in session.get_outputs()] == ["translated"]
    for what, images in sample_images().items():
        inputs = inputs_for(generator, images)
        with torch.no_grad():
            expected = generator(*inputs).numpy()
        (out,) = session.run(None, {name: t.numpy() for name, t in zip(names, inputs)})
        assert out.shape == expected.shape, what
        assert np.abs(out - expected).max() < ONNX_BOUND, what


def test_torchscript_matches_pytorch_at_every_size(exported):
    generator, files = exported
    traced = torch.jit.load(str(files["torchscript"]))
    for what, images in sample_images().items():
        inputs = inputs_for(generator, images)
        with torch.no_grad():
            expected, out = generator(*inputs), traced(*inputs)
        assert out.shape == expected.shape, what
        assert (out - expected).abs().max() < TORCHSCRIPT_BOUND, what


def test_exports_say_what_goes_in_and_out(exported):
    generator, files = exported
    metadata = {p.key: p.value for p in onnx.load(str(files["onnx"])).metadata_props}
    with zipfile.ZipFile(files["torchscript"]) as archive:
        extra = next(n for n in archive.namelist() if n.endswith("extra/cyclelib.json"))
        assert json.loads(archive.read(extra)) == metadata
    assert metadata["input_range"].startswith("[-1, 1]") and metadata["layout"] == "NCHW float32"
    assert metadata["input_channels"] == metadata["output_channels"] == "3"
    assert metadata["size_multiple"] == ("4" if metadata["arch"] == "resnet_2blocks" else "32")
    assert "direction" not in metadata  # a bare generator module has no direction to record
    assert ("noise" in metadata) == (generator.__class__.__name__ == "NoiseInput")
    session = ort.InferenceSession(str(files["onnx"]))
    assert session.get_modelmeta().custom_metadata_map == metadata
    assert {o.domain: o.version for o in onnx.load(str(files["onnx"])).opset_import}[""] == 18


def test_safetensors_round_trip(tmp_path):
    torch.manual_seed(0)
    generator = build_generator("resnet_2blocks", 3, 3, 8)
    path = export_generator(generator, tmp_path / "g.safetensors", "safetensors")
    assert equal_states(load_generator(path, arch="resnet_2blocks", width=8).state_dict(), generator.state_dict())


# ------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A smoke-trained CycleGAN run (resnet_2blocks, ngf 8, digits)."""
    out = tmp_path_factory.mktemp("run") / "run"
    train_cyclegan(smoke(out, max_steps=2))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_cli_exports_either_direction_of_a_run(run_folder, tmp_path, direction):
    target = tmp_path / "g.onnx"
    assert cli("export", "--checkpoint", str(run_folder), "--direction", direction, "--output", str(target)) == (0, "")
    model = load_cyclegan(run_folder / "checkpoint.pt")
    generator = model.G_A if direction == "AtoB" else model.G_B
    images = sample_images()["digits 5x32x32"]
    with torch.no_grad():
        expected = generator(images).numpy()
    session = ort.InferenceSession(str(target))
    (out,) = session.run(None, {"image": images.numpy()})
    assert np.abs(out - expected).max() < ONNX_BOUND
    assert session.get_modelmeta().custom_metadata_map["direction"] == direction
    # The other generator gives other images: the direction was applied, not recorded only.
    other = model.G_B if direction == "AtoB" else model.G_A
    with torch.no_grad():
        assert np.abs(out - other(images).numpy()).max() > 1e-3


@pytest.mark.slow
def test_cli_exports_torchscript_and_safetensors_of_a_checkpoint(run_folder, tmp_path):
    checkpoint = run_folder / "checkpoint.pt"
    generator = load_cyclegan(checkpoint).G_B
    for fmt in ("torchscript", "safetensors"):
        target = tmp_path / f"g.{fmt}"
        assert cli("export", "--checkpoint", str(checkpoint), "--direction", "BtoA", "--format", fmt,
                   "--output", str(target)) == (0, "")
    assert equal_states(torch.jit.load(str(tmp_path / "g.torchscript")).state_dict(), generator.state_dict())
    reloaded = load_generator(tmp_path / "g.safetensors", arch="resnet_2blocks", width=8)
    assert equal_states(reloaded.state_dict(), generator.state_dict())


@pytest.mark.parametrize("name, other_shape", [("resnet_6blocks", (3, 3, 64, 80)),
                                               ("unet_256_batch", (1, 1, 512, 256))])
def test_cli_exports_an_official_generator(tmp_path, name, other_shape):
    """An official file: the ONNX model computes the output the official code gave (stored with
    its input in the fixture; unet_256_batch: BatchNorm's running statistics, 1 -> 2 channels),
    and PyTorch's at another batch and size."""
    entry = torch.load(ROOT / "tests" / "data" / "official-cyclegan-nets.pt", weights_only=True)[name]
    torch.save(entry["state_dict"], tmp_path / "latest_net_G_A.pth")
    config = {k: str(v) for k, v in entry["config"].items() if k != "kind"}
    target = tmp_path / "g.onnx"
    code, err = cli("export", "--checkpoint", str(tmp_path / "latest_net_G_A.pth"), "--output", str(target),
                    *(f"--{k.replace('_', '-')}={v}" for k, v in config.items()))
    assert code == 0, err
    session = ort.InferenceSession(str(target))
    (out,) = session.run(None, {"image": entry["input"].numpy()})
    assert np.abs(out - entry["output"].numpy()).max() < ONNX_BOUND
    assert "direction" not in session.get_modelmeta().custom_metadata_map  # one generator, no direction
    reference = load_official(entry["state_dict"], **entry["config"]).eval()
    images = torch.rand(other_shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        assert np.abs(session.run(None, {"image": images.numpy()})[0] - reference(images).numpy()).max() < ONNX_BOUND


def test_bad_input_gets_a_clear_error(tmp_path):
    torch.manual_seed(0)
    generator = build_generator("resnet_2blocks", 3, 3, 8)
    with pytest.raises(ValueError, match="unknown export format 'keras'; valid values: onnx, torchscript, "
                                         "safetensors"):
        export_generator(generator, tmp_path / "g.h5", "keras")
    with pytest.raises(ValueError, match="unknown direction 'AB'; valid values: AtoB, BtoA"):
        export_generator(generator, tmp_path / "g.onnx", direction="AB")
    with pytest.raises(ValueError, match="got a LeNet"):
        export_generator(LeNet(), tmp_path / "g.onnx")

    code, err = cli("export", "--checkpoint", "x.pt", "--format", "keras", "--output", str(tmp_path / "g"))
    assert code == 2 and "unknown export format 'keras'; valid values: onnx, torchscript, safetensors" in err
    classifier = save_checkpoint(make_checkpoint("classifier", {"classifier": "lenet"}, LeNet().state_dict()),
                                 tmp_path / "source.pt")
    code, err = cli("export", "--checkpoint", str(classifier), "--output", str(tmp_path / "g.onnx"))
    assert (code, err) == (2, f"cyclelib: error: {classifier} is a cyclelib classifier checkpoint, not a CycleGAN "
                              "one: only CycleGAN generators can be exported\n")
    official = tmp_path / "net_G.pth"
    torch.save(generator.state_dict(), official)
    code, err = cli("export", "--checkpoint", str(official), "--output", str(tmp_path))
    assert (code, err) == (2, f"cyclelib: error: the output {tmp_path} is a folder; give the file to write, e.g. "
                              f"{tmp_path / 'generator.onnx'}\n")
    code, err = cli("export", "--checkpoint", str(official), "--output", str(tmp_path / "g.onnx"))  # 9 blocks
    assert code == 2 and f"{official} does not fit the network built with" in err
    code, err = cli("export", "--checkpoint", str(tmp_path / "no-run"), "--output", str(tmp_path / "g.onnx"))
    assert (code, err) == (2, f"cyclelib: error: checkpoint not found: {tmp_path / 'no-run'}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net_G.pth", "source.pt"]  # nothing half-written


def test_onnx_without_its_packages_says_what_to_install(tmp_path, monkeypatch):
    torch.manual_seed(0)
    official = tmp_path / "net_G.pth"
    torch.save(build_generator("resnet_2blocks", 3, 3, 8).state_dict(), official)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    code, err = cli("export", "--checkpoint", str(official), "--arch", "resnet_2blocks", "--width", "8",
                    "--output", str(tmp_path / "g.onnx"))
    assert code == "cyclelib: error: ONNX export needs the onnx and onnxscript packages (import of onnxscript " \
                   "halted; None in sys.modules): pip install 'cyclelib[export]'"
    assert not (tmp_path / "g.onnx").exists()


def test_a_cyclegan_module_exports_the_chosen_direction(tmp_path):
    torch.manual_seed(0)
    model = CycleGAN(smoke(tmp_path))
    export_generator(model, tmp_path / "g.pt", "torchscript", direction="BtoA")
    assert equal_states(torch.jit.load(str(tmp_path / "g.pt")).state_dict(), model.G_B.state_dict())


# ------------------------------------------------------------------ without cyclelib

# The README's example: translate one image with the exported file, with onnxruntime, numpy and PIL.
STANDALONE = """
import sys
import numpy as np, onnxruntime as ort
from PIL import Image

session = ort.InferenceSession(sys.argv[1])
multiple = int(session.get_modelmeta().custom_metadata_map["size_multiple"])  # 4 for ResNet generators
image = np.asarray(Image.open(sys.argv[2]).convert("RGB"), dtype=np.float32)  # H x W x 3 in 0..255
h, w = image.shape[0] // multiple * multiple, image.shape[1] // multiple * multiple
x = (image[:h, :w] / 127.5 - 1).transpose(2, 0, 1)[None]  # 1 x 3 x H x W in [-1, 1]
y = session.run(None, {"image": x})[0][0]  # 3 x H x W in [-1, 1]
Image.fromarray(((y.transpose(1, 2, 0) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)).save(sys.argv[3])

assert not {"cyclelib", "torch"} & set(sys.modules), "the example must not need cyclelib or torch"
"""


def test_the_onnx_file_runs_without_cyclelib(tmp_path):
    torch.manual_seed(0)
    generator = build_generator("resnet_2blocks", 3, 3, 8).eval()
    model = export_generator(generator, tmp_path / "g.onnx")
    photo = Image.fromarray(load_sample_image("china.jpg")[100:199, 200:330])  # 130 x 99: cropped to 128 x 96
    photo.save(tmp_path / "photo.png")
    subprocess.run([sys.executable, "-c", STANDALONE, str(model), str(tmp_path / "photo.png"),
                    str(tmp_path / "out.png")], check=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    out = np.asarray(Image.open(tmp_path / "out.png"), dtype=np.int16)
    with torch.no_grad():
        expected = generator(photo_crops(96, 128)[:1]).squeeze(0).permute(1, 2, 0).numpy()
    expected = np.round((expected + 1) * 127.5)
    assert out.shape == (96, 128, 3)
    assert np.abs(out - expected).max() <= 1  # 8-bit rounding of values that differ by < 1e-5
