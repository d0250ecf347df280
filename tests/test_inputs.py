"""Bad input gets a clear message naming the option or file, before training: non-finite numbers,
out-of-range seeds and counts, networks no image fits, images cyclelib cannot read as they are
meant (float, EXIF-rotated, LAB, too large), too small images in every preprocess mode, DTN
batches of one, and failed or unsafe downloads."""
import io
import math
import os
import socket
import tarfile
import typing
import zipfile
from dataclasses import fields

import numpy as np
import pytest
import torch
from PIL import Image

from cyclelib import CyCADAConfig, CycleGANConfig, download, images
from cyclelib.config import SEED_LIMIT
from cyclelib.data import EpochSampler
from cyclelib.download import download_dataset
from cyclelib.images import load_image
from cyclelib.weights import save_official
from cyclelib.networks import build_generator
from cyclelib.runtime import seed_everything
from cyclelib.cyclegan_run import train_cyclegan
from helpers import cli, rgb, smoke
from test_data import server  # noqa: F401 (a fixture: the local HTTP server on 127.0.0.1)

# --------------------------------------------------------------------------- options


def float_fields(cls) -> list[str]:
    hints = typing.get_type_hints(cls)
    return [f.name for f in fields(cls) if float in (hints[f.name], *typing.get_args(hints[f.name]))]


def build(cls, **options):
    return cls(**({"data": "x"} if cls is CycleGANConfig else {}), **options)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("cls, name", [(cls, name) for cls in (CycleGANConfig, CyCADAConfig)
                                       for name in float_fields(cls)])
def test_every_float_option_refuses_nan_and_inf(cls, name, value):
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number, got {value}$"):
        build(cls, **{name: value})


def test_the_float_fields_are_all_found():
    assert {"lr", "beta1", "beta2", "init_gain", "clip_grad_norm", "lambda_identity"} <= set(float_fields(CycleGANConfig))
    assert {"pixel_lr", "pixel_beta1", "invert_source", "feature_lr"} <= set(float_fields(CyCADAConfig))


@pytest.mark.parametrize("flag, value", [("--lambda-A", "nan"), ("--lr", "inf"), ("--clip-grad-norm", "nan"),
                                         ("--lambda-identity", "inf"), ("--init-gain", "nan"), ("--beta2", "-inf")])
def test_non_finite_cyclegan_options_are_named_on_the_command_line(tmp_path, flag, value):
    code, err = cli("train", "cyclegan", "--data", "mnist5k:mnistm5k", "--scale", "smoke", "--out", str(tmp_path / "o"),
                    f"{flag}={value}")  # "=": argparse takes a lone "-inf" for an option
    name = flag[2:].replace("-", "_")
    assert code == 2 and f"cyclelib: error: {name} must be a finite number" in err, err
    assert not (tmp_path / "o").exists()


def test_a_non_finite_cycada_option_is_named_on_the_command_line(tmp_path):
    code, err = cli("train", "cycada", "--source", "mnist5k", "--target", "usps", "--scale", "smoke", "--out",
                    str(tmp_path / "o"), "--pixel-lr", "nan")
    assert code == 2 and "pixel_lr must be a finite number, got nan" in err, err


@pytest.mark.parametrize("cls", [CycleGANConfig, CyCADAConfig])
@pytest.mark.parametrize("seed", [-1, SEED_LIMIT, 99999999999999999999999])
def test_seeds_out_of_range_are_refused_naming_seed(cls, seed):
    with pytest.raises(ValueError, match=rf"^seed must be an integer in \[0, {SEED_LIMIT}\), got {seed}$"):
        build(cls, seed=seed)


def test_the_largest_seed_is_one_a_run_can_use():
    build(CycleGANConfig, seed=SEED_LIMIT - 1)
    seed_everything(SEED_LIMIT - 1)
    assert sorted(EpochSampler(10, SEED_LIMIT - 1, epoch=10_000)) == list(range(10))  # seeds torch with seed * 100_003


def test_a_huge_seed_on_the_command_line_is_named(tmp_path):
    code, err = cli("train", "cyclegan", "--data", "mnist5k:mnistm5k", "--scale", "smoke", "--out", str(tmp_path / "o"),
                    "--seed", "99999999999999999999999")
    assert code == 2 and "seed must be an integer in [0, 4294967296), got 99999999999999999999999" in err, err


@pytest.mark.parametrize("preprocess", ["resize_and_crop", "none"])
def test_a_discriminator_too_deep_for_any_image_names_n_layers_D(tmp_path, preprocess):
    code, err = cli("train", "cyclegan", "--data", str(tmp_path), "--scale", "smoke", "--out", str(tmp_path / "o"),
                    "--netD", "n_layers", "--n-layers-D", "50", "--preprocess", preprocess)
    assert code == 2, err
    assert ("netD n_layers with n_layers_D 50 (norm instance) takes no image with sides up to 4096 pixels: each of "
            "its layers halves the image, use a smaller n_layers_D") in err, err


def test_a_discriminator_too_deep_for_the_crop_names_n_layers_D_and_the_side_it_needs(tmp_path):
    with pytest.raises(ValueError, match=r"crop_size 32 is too small for netD n_layers with n_layers_D 5 \(norm "
                                         r"instance\): the smallest image side it takes is \d+"):
        smoke(tmp_path, netD="n_layers", n_layers_D=5)


@pytest.mark.parametrize("flag", ["--width", "--input-nc", "--output-nc"])
def test_translate_refuses_counts_below_one_naming_the_option(tmp_path, flag):
    generator = tmp_path / "g.pth"
    save_official(build_generator("resnet_1blocks", width=4), generator)
    code, err = cli("translate", "--checkpoint", str(generator), "--arch", "resnet_1blocks", "--width", "4",
                    "--input", str(tmp_path), "--output", str(tmp_path / "o"), flag, "-4")
    assert code == 2 and f"argument {flag}: must be an integer >= 1, got '-4'" in err, err


@pytest.mark.parametrize("flag", ["--steps", "--threads"])
@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_bench_refuses_counts_below_one_naming_the_option(flag, value):
    threads = torch.get_num_threads()
    code, err = cli("bench", "--arch", "resnet_1blocks", "--ngf", "4", "--ndf", "4", "--size", "32", "--batch", "1",
                    "--warmup", "0", "--device", "cpu", flag, value)
    torch.set_num_threads(threads)  # in case a broken check let the bench set it
    assert code == 2 and f"argument {flag}: must be an integer >= 1, got '{value}'" in err, err


# --------------------------------------------------------------------------- image files


def test_float_images_in_0_1_are_scaled_to_8_bit(tmp_path):
    values = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    levels = np.rint(values * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(load_image(tmp_path / "float.tif", 1)), levels)
    assert np.array_equal(np.asarray(load_image(tmp_path / "float.tif", 3)), np.repeat(levels[..., None], 3, axis=2))


def test_float_images_in_0_255_are_levels(tmp_path):
    values = np.linspace(0, 255, 16, dtype=np.float32).reshape(4, 4)
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    assert np.array_equal(np.asarray(load_image(tmp_path / "float.tif", 1)), np.rint(values).astype(np.uint8))


@pytest.mark.parametrize("value", [-0.5, 300.0, math.nan])
def test_float_images_outside_0_255_are_refused_naming_the_file(tmp_path, value):
    Image.fromarray(np.full((4, 4), value, np.float32), mode="F").save(tmp_path / "float.tif")
    with pytest.raises(ValueError, match=r"float\.tif: its floating-point pixels range from .*values in \[0, 1\]"):
        load_image(tmp_path / "float.tif")


@pytest.mark.parametrize("orientation, transpose", [(3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_270),
                                                    (8, Image.Transpose.ROTATE_90)])
def test_the_exif_orientation_is_applied_as_viewers_do(tmp_path, orientation, transpose):
    stored = rgb(6, 4)
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    stored.save(tmp_path / "photo.png", exif=exif)
    upright = load_image(tmp_path / "photo.png")
    assert upright.size == stored.transpose(transpose).size
    assert np.array_equal(np.asarray(upright), np.asarray(stored.transpose(transpose)))


def test_lab_images_are_read_in_colour_and_grey(tmp_path):
    Image.new("LAB", (4, 4), (50, 10, 20)).save(tmp_path / "lab.tif")
    colour = load_image(tmp_path / "lab.tif", 3)
    assert colour.mode == "RGB" and np.asarray(colour).std(axis=2).max() > 0  # real colour, not a copied channel
    assert np.array_equal(np.asarray(load_image(tmp_path / "lab.tif", 1)), np.asarray(colour.convert("L")))


def test_a_conversion_error_names_the_file(tmp_path, monkeypatch):
    rgb(4, 4).save(tmp_path / "a.png")

    def unsupported(self, mode=None, *args, **kwargs):
        raise ValueError(f"conversion from {self.mode} to {mode} not supported")

    monkeypatch.setattr(Image.Image, "convert", unsupported)
    with pytest.raises(ValueError, match=r"cannot read image .*a\.png: conversion from RGB to RGB not supported"):
        load_image(tmp_path / "a.png")


def test_images_over_the_pixel_budget_are_refused_naming_the_file_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 40 * 40 - 1)
    for side in "AB":
        (tmp_path / "data" / f"train{side}").mkdir(parents=True)
        rgb(40, 40).save(tmp_path / "data" / f"train{side}" / "big.png")
    with pytest.raises(ValueError, match=r"trainA/big\.png: it is 40x40, more than the 1599 pixels cyclelib reads "
                                         r"from one image \(cyclelib\.images\.MAX_PIXELS\)"):
        load_image(tmp_path / "data" / "trainA" / "big.png")
    code, err = cli("train", "cyclegan", "--data", str(tmp_path / "data"), "--scale", "smoke", "--out",
                    str(tmp_path / "o"), "--device", "cpu")
    assert code == 2 and "big.png: it is 40x40, more than the 1599 pixels" in err, err
    assert not (tmp_path / "o").exists()


def test_a_decompression_bomb_is_named(tmp_path, monkeypatch):
    rgb(40, 40).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses over twice this
    with pytest.raises(ValueError, match=r"cannot read image .*bomb\.png: .*decompression bomb"):
        load_image(tmp_path / "bomb.png")


# --------------------------------------------------------------------------- image sizes against the networks


@pytest.mark.parametrize("options, too_small", [
    (["--preprocess", "none"], "trainB/B.png is 4x4 after preprocess 'none', too small for netG resnet_2blocks (norm "
                               "instance), whose smallest image side is 8"),
    (["--preprocess", "scale_width", "--load-size", "8", "--crop-size", "8"],  # every image becomes 8 wide
     "trainA/A.png is 8x8 after preprocess 'scale_width', too small for netD basic (norm instance), whose smallest "
     "image side is 24"),
])
def test_images_too_small_for_the_networks_are_named_before_training_in_every_preprocess_mode(tmp_path, options,
                                                                                           too_small):
    for side, size in (("A", 40), ("B", 1)):
        (tmp_path / "data" / f"train{side}").mkdir(parents=True)
        rgb(size, size).save(tmp_path / "data" / f"train{side}" / f"{side}.png")
    code, err = cli("train", "cyclegan", "--data", str(tmp_path / "data"), "--scale", "smoke", "--out",
                    str(tmp_path / "o"), "--device", "cpu", *options)
    assert code == 2 and too_small in err, err
    assert not (tmp_path / "o").exists()


def test_images_that_fit_train_with_preprocess_none(tmp_path):
    for side in "AB":
        (tmp_path / "data" / f"train{side}").mkdir(parents=True)
        rgb(24, 32).save(tmp_path / "data" / f"train{side}" / "0.png")
    train_cyclegan(smoke(tmp_path / "o", data=tmp_path / "data", preprocess="none", batch_size=1, max_steps=1),
                   progress=False)


# --------------------------------------------------------------------------- CyCADA's DTN


@pytest.mark.parametrize("options, name", [(dict(classifier="dtn", task_batch_size=1), "task_batch_size"),
                                           (dict(classifier="dtn", max_samples=1), "max_samples"),
                                           (dict(target="mnistm5k", max_samples=1), "max_samples")])
def test_dtn_batches_of_one_are_refused_before_training(options, name):
    with pytest.raises(ValueError, match=rf"^{name} 1 gives batches of one image, on which the dtn classifier"):
        CyCADAConfig(**{"source": "mnist5k", "target": "usps", **options})


def test_batches_of_one_stay_allowed_where_they_train():
    CyCADAConfig(source="mnist5k", target="usps", task_batch_size=1, max_samples=1)  # lenet has no BatchNorm
    CyCADAConfig(source="mnist5k", target="mnistm5k", feature_batch_size=1)  # f_T sees source and target at once


# --------------------------------------------------------------------------- downloads


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: "offline"."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def offline(monkeypatch):
    """The base URL of a closed port on 127.0.0.1, with no proxy in between."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return f"http://127.0.0.1:{_closed_port()}"


def test_an_archive_without_a_top_folder_gives_a_folder_with_the_umasks_permissions(tmp_path, server):
    served, base = server
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("trainA/0.png", b"not read")
    (served / "flat.zip").write_bytes(buffer.getvalue())
    umask = os.umask(0o027)
    try:
        folder = download_dataset("mini", tmp_path / "datasets", url=f"{base}/flat.zip")
    finally:
        os.umask(umask)
    assert (folder / "trainA" / "0.png").read_bytes() == b"not read"
    assert folder.stat().st_mode & 0o777 == 0o750


def _tar_with(member: tarfile.TarInfo) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.addfile(member)
    return buffer.getvalue()


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize("member, reason", [(_link("mini/passwd", "/etc/passwd"), "absolute path"),
                                            (_link("mini/up", "../../../outside"), "outside the destination"),
                                            (_device("mini/tty"), "special file")])
def test_tar_refusals_are_value_errors_naming_the_archive_and_member(tmp_path, server, member, reason):
    served, base = server
    (served / "mini.tar.gz").write_bytes(_tar_with(member))
    with pytest.raises(ValueError, match=rf"refusing to extract {base}/mini\.tar\.gz: member '{member.name}': .*{reason}"):
        download_dataset("mini", tmp_path / "datasets", url=f"{base}/mini.tar.gz")
    assert not (tmp_path / "datasets").exists()  # nothing left behind, not even the folder


def test_an_offline_download_is_one_line_naming_the_url_exit_1_and_leaves_no_folder(tmp_path, offline, monkeypatch):
    monkeypatch.setattr(download, "CYCLEGAN_URL", offline + "/{name}.zip")
    code, err = cli("download", "mini", "--root", str(tmp_path / "datasets"))
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"cyclelib: error: could not download {offline}/mini.zip: ") and "refused" in err, err
    assert not (tmp_path / "datasets").exists()


def test_an_offline_digit_download_is_one_line_naming_the_url_and_leaves_no_folder(tmp_path, offline, monkeypatch):
    from torchvision.datasets import USPS

    monkeypatch.setattr(download, "MNISTM_URL", f"{offline}/mnist_m.tar.gz")
    monkeypatch.setattr(USPS, "split_list", {split: [f"{offline}/{file}", file, md5]
                                             for split, (_, file, md5) in USPS.split_list.items()})
    for name, url in (("mnistm", f"{offline}/mnist_m.tar.gz"), ("usps", f"{offline}/usps.bz2")):
        code, err = cli("download", name, "--root", str(tmp_path / "data"))
        assert code == 1 and err.count("\n") == 1 and url in err and "refused" in err, err
        assert not (tmp_path / "data").exists()
