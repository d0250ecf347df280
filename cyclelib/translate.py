"""Translate images with a trained generator (cyclelib or official checkpoints): one batch at a
time, at the input's own size."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .checkpoints import is_checkpoint, load_checkpoint
from .cyclegan import CycleGAN
from .images import IMAGE_EXTENSIONS, image_size, list_images, read_image, write_image
from .modes import eval_mode
from .networks import fits
from .runs import CHECKPOINT_FOLDER, LATEST, load_run_checkpoint, run_in, step_checkpoint
from .runtime import pick_device, translating
from .tiles import padded_size, too_small, translate_image, translate_tiled
from .weights import cyclegan_from_checkpoint, load_official


def load_state(checkpoint: str | os.PathLike, step: int | None = None,
               sha256: str | None = None) -> tuple[dict, Path]:
    """The checkpoint a user names, loaded, and the file it came from.

    ``checkpoint`` is a file (cyclelib or official), or a run folder: then its newest readable
    checkpoint, as a resume takes it (:func:`~cyclelib.runs.load_run_checkpoint`), or with ``step``
    its ``checkpoints/step_XXXXXXX.pt`` (a missing step is a ``FileNotFoundError`` listing the
    steps the run kept). ``sha256`` verifies a file (not a run folder's newest, which may be any).
    """
    path = Path(checkpoint)
    if not path.is_dir():
        if step is not None:
            raise ValueError(f"--step (step={step}) picks a checkpoint of a run folder, and {path} is not a folder")
        return load_checkpoint(path, sha256), path
    if step is not None:
        file = step_checkpoint(path, step)
        return load_checkpoint(file, sha256), file
    if run_in(path) is None:
        cycada = f"; a CyCADA run keeps its generators in {path / 'pixel'}" if (path / "pixel").is_dir() else ""
        raise FileNotFoundError(f"{path} is a folder without a checkpoint: a run folder holds {LATEST} or "
                                f"{CHECKPOINT_FOLDER}/step_*.pt{cycada}")
    if sha256 is not None:
        raise ValueError(f"--sha256 verifies one file, and {path} is a run folder: give the checkpoint file")
    return load_run_checkpoint(path)


def cyclegan_in(state: dict, path: Path) -> CycleGAN:
    """The CycleGAN (eval mode, CPU) of a loaded cyclelib checkpoint; a CyCADA classifier's checkpoint
    is a ``ValueError`` saying what it holds and which files hold generators."""
    if not is_checkpoint(state, "cyclegan"):
        raise ValueError(f"{path} holds a CyCADA {state['kind']} network, not a generator: translating needs a "
                         "CycleGAN checkpoint (a CycleGAN run's checkpoint.pt, a CyCADA run's pixel/checkpoint.pt) "
                         "or an official generator file")
    return cyclegan_from_checkpoint(state, str(path))


def load_generator(checkpoint: str | os.PathLike, direction: str = "AtoB", arch: str = "resnet_9blocks",
                   norm: str = "instance", input_nc: int = 3, output_nc: int = 3, width: int = 64,
                   dropout: bool = False, sha256: str | None = None, step: int | None = None) -> nn.Module:
    """The generator of ``direction`` from a cyclelib checkpoint or run folder, or an official generator file.

    ``direction`` names the data's domains (see :meth:`~cyclelib.cyclegan.CycleGAN.generator`): AtoB is
    the run's G_A, or its G_B for a run trained with direction BtoA.
    ``checkpoint`` and ``step``: as :func:`load_state` takes them. An official file
    (``latest_net_G_A.pth``, the published ``horse2zebra.pth``, ...) holds one generator:
    ``direction`` is then ignored and ``arch``/``norm``/channels/``width``/``dropout`` describe it
    (the defaults are those of the published models). ``sha256``: verify the file first (see
    :func:`~cyclelib.checkpoints.load_checkpoint`). Returned in eval mode (dropout off).
    """
    if direction not in ("AtoB", "BtoA"):
        raise ValueError(f"unknown direction {direction!r}; valid values: AtoB, BtoA")
    state, path = load_state(checkpoint, step, sha256)
    if is_checkpoint(state):
        return cyclegan_in(state, path).generator(direction)
    return load_official(state, kind="G", arch=arch, input_nc=input_nc, output_nc=output_nc, width=width,
                         norm=norm, dropout=dropout, source=str(path)).eval()


# --------------------------------------------------------------------------- one batch


# --------------------------------------------------------------------------- folders


def input_images(folder: Path) -> list[Path]:
    """The images below ``folder``; a missing folder or one without images is a ``FileNotFoundError``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist or is not a folder")
    paths = list_images(folder)
    if not paths:
        raise FileNotFoundError(f"no image files ({' '.join(IMAGE_EXTENSIONS)}) in the input folder {folder}")
    return paths


def plan_batches(paths: list[Path], generators: Iterable[nn.Module], size: int | None,
                 batch_size: int) -> list[list[Path]]:
    """``paths`` cut into batches of consecutive images of one size, at most ``batch_size`` each,
    once every image has been checked from its header (nothing is decoded): a readable image file,
    large enough for each generator (at ``size`` x ``size`` when given)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if size is not None and size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    generators, fitting, batches, last = list(generators), set(), [], None
    for path in paths:
        w, h = image_size(path)
        shape = (size, size) if size else (h, w)
        for i, generator in enumerate(generators):
            padded = padded_size(shape, generator)
            if (i, padded) not in fitting:  # asked once per padded size: photos of a folder differ by a few pixels
                if not fits(generator, (1, generator.input_nc, *padded)):
                    raise ValueError(too_small(str(path), shape, padded, generator))
                fitting.add((i, padded))
        if shape == last and len(batches[-1]) < batch_size:
            batches[-1].append(path)
        else:
            batches.append([path])
        last = shape
    return batches


def read_batch(paths: list[Path], channels: int, size: int | None) -> torch.Tensor:
    """The images at ``paths`` (of one size) as a batch [N, channels, H, W] in [-1, 1], resized
    (bicubic) to ``size`` x ``size`` when given."""
    images = [read_image(path, channels) for path in paths]
    for path, image in zip(paths, images):
        if image.shape != images[0].shape:  # an EXIF orientation after a PNG's pixels, which its header missed
            raise ValueError(f"{path} decodes to {image.shape[2]}x{image.shape[1]} pixels, not the size its header "
                             f"gives ({images[0].shape[2]}x{images[0].shape[1]} as {paths[0].name})")
    batch = torch.stack(images)
    if size and tuple(batch.shape[-2:]) != (size, size):
        batch = F.interpolate(batch, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
    return batch


@torch.no_grad()
def translate_folder(generator: nn.Module, input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                     batch_size: int = 4, size: int | None = None, device: str | None = None,
                     overwrite: bool = False, amp: str = "none", progress: bool = True,
                     tile: int | None = None, overlap: int = 64) -> list[Path]:
    """Translate every image below ``input_dir`` into ``output_dir`` under the same relative name.

    Each result has its input's size (:func:`translate_image`), or ``size`` x ``size`` when given
    (resized first). Images stream: read, translated in batches of up to ``batch_size`` consecutive
    images of one size, and written batch by batch, so memory does not grow with the folder.
    Checked before the first image is written: the input folder holds images, each (from its
    header) large enough for the generator, and ``output_dir`` is not, does not contain and does
    not lie inside ``input_dir`` (the results would overwrite or mix with the originals) unless
    ``overwrite``. A file whose pixels cannot be decoded stops the translation there, with an error
    naming it and how many images were written before it. ``amp`` as in training (``none``: fp32,
    ``bf16``, or ``auto`` for bf16 where the device computes it natively); fp32 is the default because
    bf16 changes the saved 8-bit pixels by more than one level (measured in the README). Each image is
    written atomically (:func:`cyclelib.files.atomic_write`), replacing a link at its path rather than
    writing through it. ``progress``: a progress bar on stderr. ``tile``: translate each image in
    overlapping ``tile`` x ``tile`` tiles blended across ``overlap`` pixels
    (:func:`~cyclelib.tiles.translate_tiled`), so that large photos fit in memory. Returns the
    written paths.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    paths = input_images(input_dir)
    check_output_folder(input_dir, output_dir, overwrite)
    batches = plan_batches(paths, [generator], size, batch_size)
    dev = pick_device(device)
    generator = generator.to(dev)
    written = []
    # eval mode for the translation, each module's own mode given back afterwards (a caller may be training it)
    with eval_mode(generator), tqdm(total=len(paths), unit="image", desc="translate", disable=not progress) as bar:
        for batch in batches:
            try:
                images = read_batch(batch, generator.input_nc, size).to(dev)
            except ValueError as e:
                raise ValueError(f"{e} ({len(written)} of {len(paths)} images were translated before it)") from None
            with translating(dev, amp):
                if tile:  # one image at a time, a few tiles at a time on the device
                    out = torch.cat([translate_tiled(generator, image[None], tile, overlap) for image in images])
                else:
                    out = translate_image(generator, images).float()  # [B, C_out, H, W]
            for path, result in zip(batch, out):
                written.append(write_image(result, output_dir / path.relative_to(input_dir)))
            bar.update(len(batch))
    return written


def check_output_folder(input_dir: Path, output_dir: Path, overwrite: bool) -> None:
    """Refuse an ``output_dir`` that is, contains or lies inside ``input_dir`` unless ``overwrite``."""
    relation = folder_relation(output_dir, input_dir)
    if relation and not overwrite:
        raise ValueError(f"the output folder {output_dir} {relation} the input folder {input_dir}: the translated "
                         f"images would overwrite or mix with the originals; choose another output folder, or "
                         f"pass --overwrite (overwrite=True)")


def folder_relation(folder: Path, other: Path) -> str | None:
    """How ``folder`` relates to ``other``: "is", "lies inside", "contains", or None (apart)."""
    source, target = other.resolve(), folder.resolve()
    return ("is" if target == source else "lies inside" if source in target.parents
            else "contains" if target in source.parents else None)
