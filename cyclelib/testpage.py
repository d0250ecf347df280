"""The test page, as the official ``test.py`` makes it: both directions of a CycleGAN over a
dataset's test split, the real, fake and reconstructed image of each, and an ``index.html`` of them."""
from __future__ import annotations

import os
from html import escape
from pathlib import Path
from urllib.parse import quote

import torch
from torch import nn
from tqdm.auto import tqdm

from . import files
from .checkpoints import is_checkpoint
from .runtime import pick_device, translating
from .images import write_image
from .tiles import translate_image
from .translate import (cyclegan_in, folder_relation, input_images, load_generator, load_state, plan_batches,
                        read_batch)

KINDS = ("real", "fake", "rec")  # the image folders of a direction, in the page's column order


def load_pair(checkpoint: str | os.PathLike | None = None, checkpoint_A: str | os.PathLike | None = None,
              checkpoint_B: str | os.PathLike | None = None, step: int | None = None,
              **official) -> tuple[nn.Module, nn.Module, str]:
    """The two generators of a CycleGAN, (G_A: A -> B, G_B: B -> A, what they came from), in eval mode.

    Either ``checkpoint``, a cyclelib checkpoint or run folder holding both (``step``: as
    :func:`~cyclelib.translate.load_state` takes it), or ``checkpoint_A`` and ``checkpoint_B``, one
    generator file each (official ``latest_net_G_A.pth`` and ``latest_net_G_B.pth``, described by
    ``official``: the keywords of :func:`~cyclelib.translate.load_generator`; G_B's channels are
    G_A's swapped, as the official code builds it).
    """
    given = [c is not None for c in (checkpoint, checkpoint_A, checkpoint_B)]
    if given not in ([True, False, False], [False, True, True]):
        raise ValueError("give --checkpoint (a run folder or a cyclelib checkpoint, checkpoint=...) or both "
                         "--checkpoint-A and --checkpoint-B (a pair of generator files, checkpoint_A=..., "
                         "checkpoint_B=...)")
    if checkpoint is not None:
        state, path = load_state(checkpoint, step)
        if not is_checkpoint(state):
            raise ValueError(f"{path} holds one generator (an official file): give the pair as --checkpoint-A "
                             "and --checkpoint-B")
        model = cyclegan_in(state, path)  # G_A and G_B of the data's A and B, whichever way the run trained
        return model.generator("AtoB"), model.generator("BtoA"), str(path)
    swapped = {**official, "input_nc": official.get("output_nc", 3), "output_nc": official.get("input_nc", 3)}
    return (load_generator(checkpoint_A, "AtoB", step=step, **official),
            load_generator(checkpoint_B, "BtoA", step=step, **swapped), f"{checkpoint_A} and {checkpoint_B}")


@torch.no_grad()
def write_test_page(G_A: nn.Module, G_B: nn.Module, dataroot: str | os.PathLike, results: str | os.PathLike,
                    phase: str = "test", num_test: int | None = None, batch_size: int = 4, size: int | None = None,
                    device: str | None = None, amp: str = "none", progress: bool = True, title: str = "") -> Path:
    """Translate ``<dataroot>/<phase>A`` with G_A and back with G_B, and ``<phase>B`` the other way;
    write the real, fake and reconstructed image of each, and ``results/index.html``; returns its path.

    Images are written as ``results/<AtoB|BtoA>/<real|fake|rec>/<name>.png`` (``<name>``: the
    input's path below its folder), at the input's own size (:func:`~cyclelib.tiles.translate_image`)
    or ``size`` x ``size`` when given (resized first). The page links them by relative paths, so
    the folder reads offline and can be moved; a table per direction: name, real, fake,
    reconstruction. ``num_test``: the first that many images of each split (default: all).
    Checked before anything is written: both folders hold images, each large enough for both
    generators, no two inputs of a folder share a result name, and ``results`` does not contain
    or lie inside either folder. Images stream in batches as in
    :func:`~cyclelib.translate.translate_folder` (``batch_size``, ``device``, ``amp``, ``progress``).
    ``title`` heads the page (e.g. the checkpoint).
    """
    dataroot, results = Path(dataroot), Path(results)
    if num_test is not None and num_test < 1:
        raise ValueError(f"num_test must be >= 1, got {num_test}")
    plans = {}
    for direction, (there, back), side in (("AtoB", (G_A, G_B), "A"), ("BtoA", (G_B, G_A), "B")):
        folder = dataroot / f"{phase}{side}"
        paths = input_images(folder)[:num_test]
        if relation := folder_relation(results, folder):
            raise ValueError(f"the results folder {results} {relation} the input folder {folder}: the results would "
                             "mix with the test images; choose another results folder")
        names = [path.relative_to(folder).with_suffix(".png").as_posix() for path in paths]
        seen = {}
        for name, path in zip(names, paths):
            if name in seen:
                raise ValueError(f"{seen[name]} and {path} would both be shown as {name}: rename one of them")
            seen[name] = path
        plans[direction] = (there, back, folder, dict(zip(paths, names)),
                            plan_batches(paths, (there, back), size, batch_size))
    dev = pick_device(device)
    tables = {}
    total = sum(len(plan[3]) for plan in plans.values())
    with tqdm(total=total, unit="image", desc="test", disable=not progress) as bar:
        for direction, (there, back, folder, names, batches) in plans.items():
            there, back = there.to(dev).eval(), back.to(dev).eval()
            for batch in batches:
                real = read_batch(batch, there.input_nc, size).to(dev)
                with translating(dev, amp):
                    fake = translate_image(there, real).float()
                    rec = translate_image(back, fake).float()
                for path, *images in zip(batch, real, fake, rec):
                    for kind, image in zip(KINDS, images):
                        write_image(image, results / direction / kind / names[path])
                bar.update(len(batch))
            tables[direction] = (folder, list(names.values()))
    return files.write_text(results / "index.html", _page(title, tables))


def _page(title: str, tables: dict[str, tuple[Path, list[str]]]) -> str:
    """The HTML of the page: a table per direction, one row per image, links relative to the page."""
    heading = escape(f"cyclelib test: {title}" if title else "cyclelib test")
    lines = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">', f"<title>{heading}</title>",
             "<style>td{vertical-align:top} img{width:256px;image-rendering:pixelated}</style>",
             f"</head><body><h1>{heading}</h1>"]
    for direction, (folder, names) in tables.items():
        source, target = direction.split("to")
        lines += [f"<h2>{source} &rarr; {target} ({len(names)} images of {escape(str(folder))})</h2>",
                  "<table><tr><th>name</th><th>real</th><th>fake</th><th>reconstruction</th></tr>"]
        for name in names:
            cells = "".join(f'<td><a href="{link}"><img src="{link}" alt="{kind}"></a></td>'
                            for kind in KINDS for link in [escape(quote(f"{direction}/{kind}/{name}"))])
            lines.append(f"<tr><td>{escape(name)}</td>{cells}</tr>")
        lines.append("</table>")
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"
