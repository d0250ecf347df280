"""Bad input gets a clear message naming the option or file, before training: invalid choices and
values, non-finite numbers, out-of-range seeds and counts, networks no image fits, missing or
unreadable images and folders, images cyclelib cannot read as they are meant (float, EXIF-rotated,
LAB, too large), too small images in every preprocess mode, sizes or channel counts the networks
cannot take, DTN batches of one, and failed or unsafe downloads; and images of every mode train."""
import io
import math
import os
import tarfile
import typing
import zipfile
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclelib import CyCADAConfig, CycleGAN, CycleGANConfig, download, images
from cyclelib.cli import main
from cyclelib.config import SEED_LIMIT
from cyclelib.data import EpochSampler, UnpairedImageFolder
from cyclelib.names import PREPROCESS_MODES
from cyclelib.download import download_dataset
from cyclelib.images import load_image
from cyclelib.checkpoints import load_checkpoint
from cyclelib.weights import save_official
from cyclelib.networks import build_generator
from cyclelib.runtime import seed_everything
from cyclelib.cyclegan_run import train_cyclegan
from helpers import DIGITS, cli, photos, rgb, smoke, train_pair

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


@pytest.mark.parametrize("option, value, message", [
    ("netG", "resnet_xblocks", r"netG: unknown generator arch 'resnet_xblocks'; valid values: resnet_<n>blocks"),
    ("netG", "unet_100", r"netG: unknown generator arch 'unet_100'; valid values: .*unet_<size>"),
    ("netD", "patch", r"unknown netD 'patch'; valid values: basic, n_layers, pixel"),
    ("norm", "layer", r"unknown norm 'layer'; valid values: instance, batch, syncbatch, none"),
    ("init", "he", r"unknown init 'he'; valid values: normal, xavier, kaiming, orthogonal"),
    ("gan_mode", "wgan", r"unknown gan_mode 'wgan'; valid values: lsgan"),
    ("preprocess", "zoom", r"unknown preprocess 'zoom'; valid values: resize_and_crop, crop"),
    ("lambda_A", -1.0, r"lambda_A must be >= 0, got -1"),
    ("lambda_identity", -0.5, r"lambda_identity must be >= 0"),
    ("crop_size", 300, r"crop_size \(300\) must not exceed load_size \(286\) with preprocess 'resize_and_crop'"),
    ("keep_checkpoints", 0, r"keep_checkpoints must be > 0, got 0"),
    ("clip_grad_norm", -1.0, r"clip_grad_norm must be >= 0"),
    ("beta1", 1.0, r"beta1 must be in \[0, 1\)"),
])
def test_bad_options_are_clear_errors_from_python_and_the_cli(option, value, message, capsys):
    with pytest.raises(ValueError, match=message):
        CycleGANConfig(**{option: value})
    with pytest.raises(SystemExit) as exit_info:  # validated before any data is read: "photos" need not exist
        main(["train", "cyclegan", "--data", "photos", "--scale", "smoke", "--load-size", "286",
              f"--{option.replace('_', '-')}", str(value)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.startswith("cyclelib: error: ") and err.count("\n") == 1


def test_a_missing_data_option_is_exit_code_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "cyclegan", "--scale", "smoke"])
    assert exit_info.value.code == 2 and "--data is required" in capsys.readouterr().err


def test_valid_architecture_patterns_are_accepted():
    for name in ("resnet_1blocks", "resnet_12blocks", "unet_32"):
        assert CycleGANConfig(netG=name).netG == name
    # a U-Net of size s takes multiples of s
    assert CycleGANConfig(netG="unet_512", crop_size=512, load_size=572).netG == "unet_512"
    state = torch.get_rng_state()
    CycleGANConfig(netG="unet_64", init="orthogonal")
    assert torch.equal(state, torch.get_rng_state())  # checking a name draws no random numbers


@pytest.mark.parametrize("flags, message", [
    (["--crop-size", "2", "--load-size", "2"], "crop_size 2 is too small for netG resnet_2blocks (norm instance): "
                                               "the smallest image side it takes is 8"),
    (["--crop-size", "16"], "crop_size 16 is too small for netD basic (norm instance): the smallest image side it "
                            "takes is 24"),
    (["--crop-size", "30"], "crop_size 30 does not fit netG resnet_2blocks"),
    (["--device", "banana"], "--device 'banana' is not a device"),
])
def test_options_that_no_layer_can_use_are_named_before_training(tmp_path, flags, message):
    code, err = cli("train", "cyclegan", "--data", str(tmp_path), "--scale", "smoke", "--out", str(tmp_path / "o"),
                    "--preprocess", "resize_and_crop", *flags)
    assert code == 2 and message in err, err


def test_translate_errors_are_messages(tmp_path):
    generator = tmp_path / "g.pth"
    save_official(build_generator("resnet_1blocks", width=4), generator)
    base = ["translate", "--checkpoint", str(generator), "--arch", "resnet_1blocks", "--width", "4"]
    tiny = photos(tmp_path / "tiny", sizes=((1, 1),))
    (tmp_path / "empty").mkdir()
    for argv, message in (
            (["--input", str(tiny), "--output", str(tmp_path / "o")], "0.png is 1x1 pixels (4x4 padded to a multiple of 4)"),
            (["--input", str(tiny), "--output", str(tmp_path / "o"), "--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
            (["--input", str(tmp_path / "nosuch"), "--output", str(tmp_path / "o")], "nosuch does not exist"),
            (["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o")], "no image files")):
        code, err = cli(*base, *argv)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
    assert "smallest side is 8" in cli(*base, "--input", str(tiny), "--output", str(tmp_path / "o"))[1]
    assert cli(*base, "--input", str(tiny), "--output", str(tmp_path / "o"), "--size", "8")[0] == 0


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


def test_missing_or_empty_domain_folders_are_named(tmp_path, capsys):
    (tmp_path / "data" / "trainA").mkdir(parents=True)
    rgb(40, 40).save(tmp_path / "data" / "trainA" / "a.png")
    argv = ["train", "cyclegan", "--data", str(tmp_path / "data"), "--scale", "smoke", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "trainB does not exist" in capsys.readouterr().err
    (tmp_path / "data" / "trainB").mkdir()
    (tmp_path / "data" / "trainB" / "notes.txt").write_text("no images")
    with pytest.raises(FileNotFoundError, match=r"no image files .* in .*trainB"):
        train_cyclegan(smoke(tmp_path / "o", data=tmp_path / "data"), progress=False)
    assert not (tmp_path / "o").exists()


def test_unreadable_images_stop_the_run_before_training_or_are_skipped(tmp_path, capsys):
    data = train_pair(tmp_path / "data")
    (data / "trainA" / "bad1.png").write_bytes(b"not an image at all")
    buffer = io.BytesIO()
    rgb(40, 40, seed=7).save(buffer, "PNG")
    (data / "trainB" / "cut.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"cannot read image .*trainA.bad1\.png.*1 unreadable image.*"
                                         r"skip_bad_images=True"):
        train_cyclegan(smoke(out, data=data), progress=False)
    assert not out.exists()  # nothing trained, nothing written
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "cyclegan", "--data", str(data), "--scale", "smoke", "--out", str(out)])
    assert exit_info.value.code == 2 and "bad1.png" in capsys.readouterr().err

    train_cyclegan(smoke(out, data=data, skip_bad_images=True, max_steps=1), progress=False)
    err = capsys.readouterr().err
    assert "skipped 2 unreadable train image(s)" in err
    assert load_checkpoint(out / "checkpoint.pt")["training"]["step"] == 1


def test_images_smaller_than_the_crop_are_resized_or_name_the_option(tmp_path):
    data = train_pair(tmp_path / "data", size=(20, 24))  # smoke: load_size 36, crop_size 32
    with pytest.raises(ValueError, match=r"000\.png is 20x24, smaller than crop_size=32"):
        train_cyclegan(smoke(tmp_path / "crop", data=data, preprocess="crop", skip_bad_images=True),
                       progress=False)
    assert not (tmp_path / "crop").exists()
    train_cyclegan(smoke(tmp_path / "resize", data=data, max_steps=1), progress=False)  # resize_and_crop
    assert load_checkpoint(tmp_path / "resize" / "checkpoint.pt")["training"]["step"] == 1


def test_uncropped_images_of_several_sizes_train_at_batch_1_and_are_named_at_batch_2(tmp_path):
    root = tmp_path / "data"
    photos(root / "trainA", sizes=((40, 40), (36, 44)))
    photos(root / "trainB", sizes=((40, 40), (40, 40)))
    options = dict(data=str(root), preprocess="none", max_steps=2, sample_every=1)
    train_cyclegan(smoke(tmp_path / "b1", **options, batch_size=1), progress=False)
    assert list((tmp_path / "b1" / "samples").glob("step_*.png"))
    with pytest.raises(ValueError, match=r"batch_size 2 .*trainA/00\.png is 40x40 and .*trainA/01\.png is 36x44; use batch_size 1"):
        train_cyclegan(smoke(tmp_path / "b2", **options, batch_size=2), progress=False)


def test_sizes_the_generator_cannot_reproduce_are_a_clear_error():
    """A 30x30 image comes out of a resnet generator 32x32: an error, not a broadcast loss."""
    model = CycleGAN(CycleGANConfig(netG="resnet_1blocks", ngf=4, ndf=4))
    images = torch.zeros(1, 3, 30, 30)
    with pytest.raises(ValueError, match=r"resnet_1blocks turns \(30, 30\) images into \(32, 32\)"):
        model.train_step(images, images)


def test_channel_counts_that_do_not_fit_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "cyclegan", "--data", DIGITS, "--scale", "smoke", "--out", str(tmp_path),
              "--input-nc", "4", "--output-nc", "4"])
    assert exit_info.value.code == 2
    assert "input_nc must be 1 (images read as grayscale) or 3 (RGB), got 4" in capsys.readouterr().err
    model = CycleGAN(CycleGANConfig(netG="resnet_1blocks", ngf=4, ndf=4, input_nc=1, output_nc=1))
    rgb_batch = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"1 channels\), got a tensor of shape \(\d+, 3, 32, 32\)"):
        model.train_step(rgb_batch, rgb_batch)


# --------------------------------------------------------------------------- images of every mode


def mixed_mode_dataset(root: Path) -> Path:
    """Non-square images in every mode a user's folder may hold; all sides >= 40 pixels."""
    a, b = root / "trainA", root / "trainB"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 52), dtype=np.uint8), "L").save(a / "gray.png")
    Image.fromarray(rng.integers(0, 256, (60, 44, 4), dtype=np.uint8), "RGBA").save(a / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, (48, 64), dtype=np.uint16)).save(a / "deep16.png")  # I;16
    rgb(56, 40, seed=1).quantize(16).save(a / "palette.png")  # mode P
    rgb(44, 60, seed=2).convert("CMYK").save(b / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 256, (44, 48, 2), dtype=np.uint8), "LA").save(b / "gray_alpha.png")
    rgb(64, 40, seed=3).save(b / "wide.png")
    return root


@pytest.mark.parametrize("preprocess", PREPROCESS_MODES)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_and_preprocess_flows_through_loader_and_step(tmp_path, preprocess, channels):
    """Gray, RGBA, 16-bit, palette, CMYK and gray+alpha files, non-square, become
    [channels, H, W] tensors in [-1, 1] of the preprocess's size, and a training step on
    them gives finite losses."""
    data = UnpairedImageFolder(mixed_mode_dataset(tmp_path), channels=channels, preprocess=preprocess,
                               load_size=36, crop_size=32)
    data.check()  # every file is readable
    config = CycleGANConfig(netG="resnet_1blocks", ngf=4, ndf=4, input_nc=channels, output_nc=channels,
                            pool_size=0)
    model = CycleGAN(config)
    for batch in torch.utils.data.DataLoader(data, batch_size=1):
        for side in "AB":
            image = batch[side][0]
            assert image.shape[0] == channels and image.dtype == torch.float32
            assert -1 <= image.min() and image.max() <= 1
            h, w = image.shape[1:]
            if preprocess.endswith("crop"):
                assert (h, w) == (32, 32)
            else:  # uncropped: sides rounded to multiples of 4, else the cycle loss would compare other sizes
                assert h % 4 == 0 and w % 4 == 0
                assert preprocess == "none" or (w == 36 and h >= 32)  # scale_width
        terms = model.train_step(batch["A"], batch["B"])
        assert all(torch.isfinite(v) for v in terms.values())


def test_a_mixed_mode_folder_trains(tmp_path):
    data = mixed_mode_dataset(tmp_path / "data")
    train_cyclegan(smoke(tmp_path / "run", data=data, max_steps=2), progress=False)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["training"]["step"] == 2


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
