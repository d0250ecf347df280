"""Image files and image tensors: reading, the official CycleGAN preprocessing, colour.

Images are float tensors ``[C, H, W]`` (or batches ``[N, C, H, W]``) in ``[-1, 1]``,
as the official ``ToTensor`` + ``Normalize(0.5, 0.5)`` make them.
"""
from __future__ import annotations

import os
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
from torchvision.utils import save_image

from . import files
from .names import check_channels

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")
# The most pixels cyclelib reads from one image file (8192 x 8192): a larger image is refused by
# name before it is decoded, where it would otherwise end in an allocator error deep inside a
# resize or a network. Raise it (cyclelib.images.MAX_PIXELS = ...) for larger images.
MAX_PIXELS = 8192 * 8192
# ITU-R 601 luma weights, as PIL's "L" mode: the one RGB -> grey conversion of cyclelib.
LUMA = (0.299, 0.587, 0.114)


def load_image(path: str | os.PathLike, channels: int = 3) -> Image.Image:
    """Read an image file as 8-bit RGB (``channels=3``) or 8-bit grayscale (``channels=1``),
    turned upright by its EXIF orientation (as image viewers show it).

    Palette, RGBA, grayscale, CMYK, LAB, 16-bit and floating-point images are accepted (float
    pixels in [0, 1] are scaled to 0..255, those in [0, 255] taken as levels). A file PIL
    cannot decode (corrupt, truncated, not an image), one with more than :data:`MAX_PIXELS`
    pixels, and float pixels outside [0, 255] raise ``ValueError`` naming the file.
    """
    check_channels(channels)
    try:
        with Image.open(path) as img:
            _check_pixels(img)
            img.load()  # PIL decodes lazily: force it so a truncated file fails here, by name
            ImageOps.exif_transpose(img, in_place=True)
            return _convert_mode(img, "L" if channels == 1 else "RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the image :func:`load_image` reads from ``path`` (upright by its EXIF
    orientation), from the file's header: nothing is decoded. A file PIL cannot open and one with
    more than :data:`MAX_PIXELS` pixels raise ``ValueError`` naming the file, as in :func:`load_image`;
    damage further into the file shows only when it is decoded."""
    try:
        with Image.open(path) as img:
            _check_pixels(img)
            # EXIF orientations 5 to 8 turn the image by 90 degrees (exif_transpose swaps the sides).
            # Image.getexif, not img.getexif: a PNG's own decodes the whole file to look for EXIF
            # after the pixels (which the PNG specification puts before them).
            turned = Image.Image.getexif(img).get(ExifTags.Base.Orientation) in (5, 6, 7, 8)
            return (img.height, img.width) if turned else img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def _check_pixels(img: Image.Image) -> None:
    if img.width * img.height > MAX_PIXELS:  # known from the header, before decoding
        raise ValueError(f"it is {img.width}x{img.height}, more than the {MAX_PIXELS} pixels cyclelib "
                         f"reads from one image (cyclelib.images.MAX_PIXELS); shrink it or raise the limit")


def _convert_mode(img: Image.Image, mode: str) -> Image.Image:
    if img.mode.startswith("I"):
        # 16-bit ("I;16", "I;16B") and 32-bit integer ("I") grayscale: PIL's convert clips
        # them to 0..255, which turns almost every pixel white. Scale the 16-bit range instead.
        levels = np.asarray(img, dtype=np.float64) * (255 / 65535)
        img = Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8))
    elif img.mode == "F":
        # 32-bit float grayscale: PIL's convert clips, so an image in [0, 1] would come out black.
        values = np.asarray(img, dtype=np.float64)
        low, high = values.min(), values.max()  # NaN if a pixel is
        if not 0 <= low <= high <= 255:
            raise ValueError(f"its floating-point pixels range from {low:g} to {high:g}; cyclelib reads float images "
                             f"with values in [0, 1] (scaled to 0..255) or [0, 255]")
        img = Image.fromarray(np.rint(values * (255 if high <= 1 else 1)).astype(np.uint8))
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA")  # resolve palette transparency before dropping alpha
    try:
        return img.convert(mode)
    except ValueError:  # PIL converts some modes only to RGB (LAB -> L is missing)
        return img.convert("RGB").convert(mode)


def read_image(path: str | os.PathLike, channels: int = 3) -> torch.Tensor:
    """Read an image file as a float tensor ``[channels, H, W]`` in ``[-1, 1]`` (see :func:`load_image`)."""
    return to_tensor(load_image(path, channels))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> float tensor [C, H, W] in [-1, 1]."""
    array = np.array(img, dtype=np.uint8)  # a copy: torch wants a writable buffer
    if array.ndim == 2:
        array = array[:, :, None]
    return scale_levels(torch.from_numpy(array).permute(2, 0, 1))


def scale_levels(levels: torch.Tensor) -> torch.Tensor:
    """uint8 levels 0..255 -> float in [-1, 1], as the official ToTensor + Normalize(0.5, 0.5)."""
    return levels.float() / 127.5 - 1


def _draw(high: int, generator: torch.Generator | None) -> int:
    """A random integer in [0, high) from `generator`; the middle one without a generator."""
    if generator is None:
        return high // 2
    return int(torch.randint(high, (1,), generator=generator))


def transform_image(img: Image.Image, preprocess: str, load_size: int, crop_size: int, flip: bool,
                    generator: torch.Generator | None, name: str | os.PathLike = "image") -> Image.Image:
    """Apply the official CycleGAN preprocessing to a PIL image.

    ``resize_and_crop``: bicubic resize to ``load_size`` x ``load_size``, random
    ``crop_size`` crop. ``crop``: random crop only. ``scale_width``: width to
    ``load_size`` keeping the aspect ratio (height at least ``crop_size``);
    ``scale_width_and_crop`` then crops. ``none``: no resize. Uncropped results
    (``scale_width``, ``none``) get their sides rounded to multiples of 4, the least the
    generators' two down/upsamplings need (the official code rounds only for ``none``, and
    its ``scale_width`` of e.g. a 286-wide image gives reconstructions of another size).
    Then a horizontal flip with probability 0.5 when ``flip``. All draws come from ``generator``; with ``None`` the
    crop is centred and nothing is flipped. ``name`` labels errors (the file).
    """
    if preprocess.startswith("resize"):
        img = img.resize((load_size, load_size), Image.Resampling.BICUBIC)
    elif preprocess.startswith("scale_width"):
        width, height = img.size
        if width != load_size or height < crop_size:
            size = (load_size, max(int(load_size * height / width), crop_size))
            img = img.resize(size, Image.Resampling.BICUBIC)
    if preprocess.endswith("crop"):
        width, height = img.size
        if width < crop_size or height < crop_size:
            raise ValueError(
                f"{name} is {width}x{height}, smaller than crop_size={crop_size}: choose a smaller "
                f"crop_size or preprocess='resize_and_crop'")
        top = _draw(height - crop_size + 1, generator)  # top before left, as torchvision's RandomCrop
        left = _draw(width - crop_size + 1, generator)
        img = img.crop((left, top, left + crop_size, top + crop_size))
    else:  # "none", "scale_width": uncropped sides must still survive G's two down/upsamplings
        width, height = img.size
        size = (round_side(width), round_side(height))
        if size != img.size:
            img = img.resize(size, Image.Resampling.BICUBIC)
    if flip and generator is not None and float(torch.rand(1, generator=generator)) < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def list_images(folder: str | os.PathLike) -> list[Path]:
    """All image files under `folder` (recursive, sorted). Hidden files are skipped: archives
    made on macOS carry "._name.jpg" metadata files that are not images."""
    return sorted(path for path in Path(folder).rglob("*")
                  if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
                  and path.is_file())


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """Grey from RGB with the ITU-R 601 weights (PIL's "L"): ``[N, 3, H, W]`` -> ``[N, 1, H, W]``.

    A weighted sum, not a matrix product, so that autocast leaves it in the input's dtype."""
    weights = torch.tensor(LUMA, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True)


def round_side(side: int, multiple: int = 4) -> int:
    """``side`` rounded to the nearest multiple of ``multiple`` (at least one multiple): the
    generators' two stride-2 down- and upsamplings give back the input size only for
    multiples of 4."""
    return max(multiple, round(side / multiple) * multiple)


def write_image(image: torch.Tensor, path: Path) -> Path:
    """``image`` [C, H, W] in [-1, 1] written atomically to ``path`` in the format its suffix names
    (encoded in memory: a temporary file's name would not say which)."""
    encoded, image_format = BytesIO(), Image.registered_extensions()[path.suffix.lower()]
    save_image((image.float().cpu() + 1) / 2, encoded, format=image_format)
    return files.write_bytes(path, encoded.getbuffer())
