"""Translate folders of images with a trained generator (cyclelib or official checkpoints)."""
from __future__ import annotations

import os
from collections import defaultdict
from io import BytesIO
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.utils import save_image

from . import files
from .images import IMAGE_EXTENSIONS, list_images, read_image, round_side
from .io import cyclegan_from_checkpoint, is_checkpoint, load_checkpoint, load_official
from .networks import fits, smallest_side
from .runtime import Precision, pick_device


def load_generator(checkpoint: str | os.PathLike, direction: str = "AtoB", arch: str = "resnet_9blocks",
                   norm: str = "instance", input_nc: int = 3, output_nc: int = 3, width: int = 64,
                   sha256: str | None = None) -> nn.Module:
    """The generator of ``direction`` from a cyclelib ``checkpoint.pt``, or an official generator file.

    An official file (``latest_net_G_A.pth``, the published ``horse2zebra.pth``, ...) holds one
    generator: ``direction`` is then ignored and ``arch``/``norm``/channels/``width`` describe it
    (the defaults are those of the published models). ``sha256``: verify the file first (see
    :func:`~cyclelib.io.load_checkpoint`). Returned in eval mode. A CyCADA classifier's checkpoint
    is a ``ValueError`` saying what it holds and which files translate takes.
    """
    state = load_checkpoint(checkpoint, sha256)
    if is_checkpoint(state, "cyclegan"):
        if direction not in ("AtoB", "BtoA"):
            raise ValueError(f"direction must be AtoB or BtoA, got {direction!r}")
        model = cyclegan_from_checkpoint(state, str(checkpoint))
        return model.G_A if direction == "AtoB" else model.G_B
    if is_checkpoint(state):  # a CyCADA classifier stage's
        raise ValueError(f"{checkpoint} holds a CyCADA {state['kind']} network, "
                         "not a generator: translate needs a CycleGAN checkpoint (a CycleGAN run's checkpoint.pt, "
                         "a CyCADA run's pixel/checkpoint.pt) or an official generator file")
    return load_official(state, kind="G", arch=arch, input_nc=input_nc, output_nc=output_nc, width=width,
                         norm=norm).eval()


@torch.no_grad()
def translate_folder(generator: nn.Module, input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                     batch_size: int = 8, size: int | None = None, device: str | None = None,
                     overwrite: bool = False, amp: str = "none") -> list[Path]:
    """Translate every image below ``input_dir`` into ``output_dir`` under the same relative name.

    Images are resized to ``size`` x ``size`` when given, else kept at their size rounded to
    a multiple of 4 (what the generators' two downsamplings need). Images of equal size are
    batched together. Everything is checked before the first image is written: the input
    folder must hold images, each large enough for the generator, and ``output_dir`` may not
    be, contain or lie inside ``input_dir`` (the results would overwrite or mix with the
    originals) unless ``overwrite``. ``amp`` as in training (``none``: fp32, ``bf16``, or ``auto``
    for bf16 where the device computes it natively); fp32 is the default because bf16 changes
    the saved 8-bit pixels by more than one level (measured in the README). Each image is
    written atomically (:func:`cyclelib.files.atomic_write`), replacing a link at its path
    rather than writing through it. Returns the written paths.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if size is not None and size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {input_dir} does not exist or is not a folder")
    paths = list_images(input_dir)
    if not paths:
        raise FileNotFoundError(f"no image files ({' '.join(IMAGE_EXTENSIONS)}) in the input folder {input_dir}")
    _check_output_folder(input_dir, output_dir, overwrite)
    dev = pick_device(device)
    precision = Precision(amp, dev)
    generator = generator.to(dev).eval()
    channels = generator.input_nc
    by_shape: dict[tuple, list[tuple[Path, torch.Tensor]]] = defaultdict(list)
    for path in paths:
        image = read_image(path, channels)  # [C, H, W] in [-1, 1]
        h, w = (size, size) if size else (round_side(image.shape[1]), round_side(image.shape[2]))
        if (h, w) != tuple(image.shape[1:]):
            image = F.interpolate(image[None], size=(h, w), mode="bicubic", align_corners=False)[0].clamp(-1, 1)
        by_shape[(h, w)].append((path, image))
    for (h, w), items in by_shape.items():
        if not fits(generator, (1, channels, h, w)):
            smallest = smallest_side(generator, channels)
            raise ValueError(f"{items[0][0]} is {w}x{h} pixels (after rounding to multiples of 4), too small for "
                             f"this generator, whose smallest side is {smallest}: resize with --size {smallest} "
                             f"(size={smallest}) or leave the image out")
    written = []
    for items in by_shape.values():
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            with precision.autocast():
                out = generator(torch.stack([im for _, im in chunk]).to(dev)).float()  # [B, C_out, H, W]
            for (path, _), result in zip(chunk, out):
                target = output_dir / path.relative_to(input_dir)
                # Encoded in memory in the input's format (a temporary file's name would not say which).
                encoded, image_format = BytesIO(), Image.registered_extensions()[target.suffix.lower()]
                save_image((result.float().cpu() + 1) / 2, encoded, format=image_format)
                written.append(files.write_bytes(target, encoded.getbuffer()))
    return written


def _check_output_folder(input_dir: Path, output_dir: Path, overwrite: bool) -> None:
    source, target = input_dir.resolve(), output_dir.resolve()
    relation = ("is" if target == source else "lies inside" if source in target.parents
                else "contains" if target in source.parents else None)
    if relation and not overwrite:
        raise ValueError(f"the output folder {output_dir} {relation} the input folder {input_dir}: the translated "
                         f"images would overwrite or mix with the originals; choose another output folder, or "
                         f"pass --overwrite (overwrite=True)")
