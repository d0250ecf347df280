"""Property-based tests (hypothesis): the image transforms and the option parsing keep their
contracts on random inputs, beyond the hand-picked cases of test_data and test_reliability.

Transforms: any size, PIL mode and preprocess gives a tensor of the predicted shape in
[-1, 1], the same one for the same generator seed, without touching the global RNG, or a
ValueError naming the option. Options: random valid values are taken as given by
CycleGANConfig and the CLI; a random invalid value is a ValueError naming the option in
Python and exit code 2 with a one-line message in the CLI.
"""
import contextlib
import io
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cyclelib.cli import build_parser, given_options, main
from cyclelib import CycleGANConfig
from cyclelib.data import ImageFolderDomain
from cyclelib.names import PREPROCESS_MODES
from cyclelib.losses import GAN_MODES
from cyclelib.names import DISCRIMINATOR_ARCHS, GENERATOR_ARCHS, INIT_TYPES, NORMS

SETTINGS = settings(max_examples=40, deadline=None)


# --------------------------------------------------------------------------- transforms


def make_image(mode: str, width: int, height: int, seed: int) -> tuple[Image.Image, str]:
    """A random image in ``mode`` and a file suffix that can store that mode."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16)), ".png"
    if mode == "P":
        return rgb.quantize(8), ".png"
    if mode == "CMYK":
        return rgb.convert("CMYK"), ".tiff"
    return rgb.convert(mode), ".png"


def round4(side: int) -> int:
    return max(4, round(side / 4) * 4)


def expected_size(preprocess: str, width: int, height: int, load: int, crop: int) -> tuple[int, int]:
    """(H, W) of the official transforms, sides of uncropped results rounded to multiples of 4."""
    if preprocess.endswith("crop"):
        return crop, crop
    if preprocess == "scale_width" and (width != load or height < crop):
        width, height = load, max(int(load * height / width), crop)
    return round4(height), round4(width)


@SETTINGS
@given(mode=st.sampled_from(["1", "L", "LA", "RGB", "RGBA", "P", "I;16", "CMYK"]),
       width=st.integers(8, 64), height=st.integers(8, 64), preprocess=st.sampled_from(PREPROCESS_MODES),
       load=st.integers(8, 48), crop=st.integers(4, 48), channels=st.sampled_from([1, 3]),
       flip=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_transforms_give_the_predicted_shape_in_range_deterministically(mode, width, height, preprocess, load,
                                                                        crop, channels, flip, seed):
    img, suffix = make_image(mode, width, height, seed)
    with tempfile.TemporaryDirectory() as folder:
        img.save(Path(folder) / f"image{suffix}")
        if preprocess in ("resize_and_crop", "scale_width_and_crop") and crop > load:
            with pytest.raises(ValueError, match=rf"crop_size \({crop}\) must not exceed load_size \({load}\)"):
                ImageFolderDomain(folder, channels, preprocess, load, crop, flip)
            return
        domain = ImageFolderDomain(folder, channels, preprocess, load, crop, flip)
        if preprocess == "crop" and (width < crop or height < crop):
            with pytest.raises(ValueError, match=f"is {width}x{height}, smaller than crop_size={crop}"):
                domain.get(0, torch.Generator().manual_seed(seed))
            return
        rng_before = torch.get_rng_state()
        first, again = (domain.get(0, torch.Generator().manual_seed(seed)) for _ in range(2))
        centred, centred_again = domain.get(0), domain.get(0)  # no generator: centre crop, no flip
        assert torch.equal(rng_before, torch.get_rng_state())  # all randomness from the generator
    assert first.dtype == torch.float32
    assert first.shape == centred.shape == (channels, *expected_size(preprocess, width, height, load, crop))
    assert -1 <= first.min() and first.max() <= 1
    assert torch.equal(first, again) and torch.equal(centred, centred_again)


# --------------------------------------------------------------------------- options


def argv_of(options: dict) -> list[str]:
    """CLI arguments for ``options`` (``--name=value`` keeps negative numbers values)."""
    argv = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv.append(f"{flag}={value}")
    return argv


names = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=12)


@st.composite
def valid_options(draw) -> dict:
    netG = draw(st.sampled_from(GENERATOR_ARCHS) | st.integers(1, 12).map("resnet_{}blocks".format)
                | st.integers(5, 9).map(lambda k: f"unet_{2 ** k}"))
    preprocess = draw(st.sampled_from(PREPROCESS_MODES))
    # Cropped training images must suit every layer: at least 32 for every D and resnet G (a 70x70
    # PatchGAN needs 24) and a multiple of 4 for a resnet G, of the size for a U-Net, to come back
    # at their size; uncropped ones have the images' sizes.
    step = int(netG[5:]) if netG.startswith("unet_") else 4
    crops = preprocess in ("resize_and_crop", "crop", "scale_width_and_crop")
    crop = draw(st.integers(max(1, 32 // step), 512 // step).map(lambda k: k * step) if crops else st.integers(1, 512))
    options = dict(
        netG=netG, netD=draw(st.sampled_from(DISCRIMINATOR_ARCHS)), norm=draw(st.sampled_from(NORMS)),
        init=draw(st.sampled_from(INIT_TYPES)), gan_mode=draw(st.sampled_from(GAN_MODES)),
        preprocess=preprocess, load_size=draw(st.integers(crop, 512)) if crops else draw(st.integers(1, 512)),
        crop_size=crop,
        lambda_A=draw(st.floats(0, 100)), lambda_identity=draw(st.floats(0, 10)), lr=draw(st.floats(1e-8, 1)),
        beta1=draw(st.floats(0, 0.999)), batch_size=draw(st.integers(1, 256)),
        keep_checkpoints=draw(st.integers(1, 20)), flip=draw(st.booleans()),
        skip_bad_images=draw(st.booleans()), ngf=draw(st.integers(1, 128)),
    )
    if draw(st.booleans()):
        options["clip_grad_norm"] = draw(st.floats(0, 1e3))
    return options


@pytest.mark.slow
@SETTINGS
@given(options=valid_options())
def test_valid_options_are_taken_as_given_by_python_and_the_cli(options):
    config = CycleGANConfig(**options)
    assert all(getattr(config, name) == value for name, value in options.items())
    parsed = build_parser().parse_args(["train", "cyclegan", "--data", "photos", *argv_of(options)])
    from_cli = CycleGANConfig.for_scale("smoke", **given_options(parsed, CycleGANConfig))
    assert all(getattr(from_cli, name) == value for name, value in options.items())


# option -> strategy of values that must be refused
INVALID = {
    "netG": names.filter(lambda s: not s.startswith(("resnet_", "unet_")) and s not in GENERATOR_ARCHS)
    | st.sampled_from(["resnet_0blocks", "resnet_blocks", "unet_16", "unet_100"]),
    "netD": names.filter(lambda s: s not in DISCRIMINATOR_ARCHS),
    "norm": names.filter(lambda s: s not in NORMS),
    "init": names.filter(lambda s: s not in INIT_TYPES),
    "gan_mode": names.filter(lambda s: s not in GAN_MODES),
    "preprocess": names.filter(lambda s: s not in PREPROCESS_MODES),
    "lambda_A": st.floats(-1e6, -1e-9),
    "lambda_identity": st.floats(-1e6, -1e-9),
    "lr": st.floats(-1, 0),
    "beta1": st.floats(1, 10) | st.floats(-10, -1e-9),
    "batch_size": st.integers(-100, 0),
    "keep_checkpoints": st.integers(-100, 0),
    "clip_grad_norm": st.floats(-1e6, -1e-9),
    # with the default load_size 286, resize_and_crop and resnet_9blocks (whose smallest side is 8)
    "crop_size": st.integers(287, 4096) | st.integers(-100, 7),
}


@SETTINGS
@given(data=st.data(), option=st.sampled_from(sorted(INVALID)))
def test_an_invalid_option_is_named_by_python_and_the_cli(data, option):
    value = data.draw(INVALID[option], label=option)
    with pytest.raises(ValueError) as error:
        CycleGANConfig(**{option: value})
    assert option in str(error.value)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        main(["train", "cyclegan", "--data", "photos", "--scale", "smoke", "--load-size", "286",
              *argv_of({option: value})])
    assert exit_info.value.code == 2
    message = err.getvalue()
    assert message.startswith("cyclelib: error: ") and message.count("\n") == 1 and option in message
