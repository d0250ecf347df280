"""Downloads of the driving scenes of CyCADA's segmentation experiment: GTA5, and the release's GTA5
translated to look like Cityscapes ("cyclegta5"). Cityscapes needs a login: see
:data:`cyclelib.download.CITYSCAPES_STEPS`.

Where they come from:

- GTA5 (Richter et al., "Playing for Data"), https://download.visinf.tu-darmstadt.de/data/from_games/:
  ten parts, ``data/01_images.zip`` ... ``data/10_images.zip`` and ``data/01_labels.zip`` ...
  ``data/10_labels.zip`` (the URLs of :data:`GTA5_URL`, as other projects' download scripts spell
  them), each holding ``images/NNNNN.png`` or ``labels/NNNNN.png``: unzipped into one folder they
  give the layout :func:`cyclelib.driving.gta5` reads. The split file the release reads
  (``split.mat``, cycada/data/gta5.py line 44) is in the site's ``code/read_mapping.zip``; it is
  not fetched here (training reads every pair).
- "GTA as CityScapes": jhoffman/cycada_release README.md, section "Train Feature Adaptation for
  Semantic Segmentation", links http://efrosgans.eecs.berkeley.edu/cyclegta/cyclegta.zip (images
  only: the release's answer in its issue 42 sends users to the original GTA5 for the labels; its
  issue 29 says the images are GTA5's train split). The release reads them as
  ``root/images/NNNNN.png`` with labels ``root/labels/NNNNN.png`` (cycada/data/cyclegta5.py lines
  26-27), so :func:`download_cyclegta5` adds GTA5's label parts, keeping the label map of each
  translated image.

Every archive goes through :func:`cyclelib.download.fetch` (resumable ``.part`` file, no checksum:
neither site publishes one) and the archive checks of :mod:`cyclelib.download` (every member's
CRC, no member outside the folder), is unpacked beside the data, and its PNG files are moved into
``images/`` or ``labels/``; a marker in ``root/.downloaded/`` then records the archive as done, so
a later call skips it and an interrupted one goes on with the archives not yet done. An archive
that proved corrupt is deleted (download again); one whose unpacking was interrupted is kept and
unpacked again.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from .download import DownloadError, _removed_if_left_empty, _unpack, fetch

GTA5_URL = "https://download.visinf.tu-darmstadt.de/data/from_games/data/{part:02d}_{kind}.zip"
GTA5_PARTS = tuple(range(1, 11))
CYCLEGTA5_URL = "http://efrosgans.eecs.berkeley.edu/cyclegta/cyclegta.zip"
_FRAME = re.compile(r"\d{5}\.png")  # GTA5's file names, which gta5() pairs images and labels by
_DONE = ".downloaded"


def download_gta5(root: str | os.PathLike, parts=GTA5_PARTS) -> Path:
    """Download GTA5's ``parts`` (numbers 1 to 10, all by default: images and labels of each) into
    ``root/gta5/images`` and ``root/gta5/labels``; returns ``root/gta5``, the folder
    ``gta5:PATH`` and :func:`cyclelib.driving.gta5` read. Parts done before are skipped. A part
    number out of range raises ValueError; a failed or corrupt download :class:`DownloadError`
    naming the URL."""
    parts = tuple(parts)
    for part in parts:
        if part not in GTA5_PARTS:
            raise ValueError(f"unknown GTA5 part {part!r}; valid values: {', '.join(map(str, GTA5_PARTS))}")
    dest = Path(root).expanduser() / "gta5"
    with _removed_if_left_empty([dest]):
        for part in parts:
            for kind in ("images", "labels"):
                _archive_into(GTA5_URL.format(part=part, kind=kind), dest, kind)
    return dest


def download_cyclegta5(root: str | os.PathLike) -> Path:
    """Download the release's GTA5 translated to look like Cityscapes into ``root/cyclegta5/images``,
    and the label map of each translated image from GTA5's label parts into ``root/cyclegta5/labels``;
    returns ``root/cyclegta5`` (read as ``gta5:PATH``). Archives done before are skipped; failures
    raise :class:`DownloadError` naming the URL."""
    dest = Path(root).expanduser() / "cyclegta5"
    with _removed_if_left_empty([dest]):
        _archive_into(CYCLEGTA5_URL, dest, "images")
        translated = {p.name for p in (dest / "images").glob("*.png")}
        for part in GTA5_PARTS:
            _archive_into(GTA5_URL.format(part=part, kind="labels"), dest, "labels", keep=translated)
    return dest


def _archive_into(url: str, dest: Path, kind: str, keep: set[str] | None = None) -> None:
    """Fetch the archive at `url` (unless done before) and move its PNG frames into ``dest/kind``,
    only those named in `keep` where given; then mark it done."""
    name = url.rsplit("/", 1)[-1]
    marker = dest / _DONE / name
    if marker.is_file():
        return
    archive, staging = dest / name, dest / f".{name}.unpacked"
    if not archive.is_file():  # one left by an interrupted unpacking is whole (fetch renames it once complete)
        fetch(url, archive)
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted call
    try:
        try:
            _unpack(archive, staging, url)
            frames = _frames(staging, kind, url)
        except (DownloadError, ValueError):
            archive.unlink()  # corrupt, or not what it should be: the next call downloads it again
            raise
        (dest / kind).mkdir(exist_ok=True)
        for frame in frames:
            if keep is None or frame.name in keep:
                os.replace(frame, dest / kind / frame.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    marker.parent.mkdir(exist_ok=True)
    marker.touch()
    archive.unlink()


def _frames(unpacked: Path, kind: str, url: str) -> list[Path]:
    """The PNG files of an unpacked archive: in its ``kind`` folder (at the top or under one top
    folder), else at the top or in its one top folder; each named like a GTA5 frame."""
    tops = [p for p in unpacked.iterdir() if p.is_dir()]
    only = tops if len(tops) == 1 else []
    candidates = [unpacked / kind, *(top / kind for top in only), unpacked, *only]
    folder = next((c for c in candidates if c.is_dir() and any(c.glob("*.png"))), None)
    if folder is None:
        found = ", ".join(sorted(p.name for p in unpacked.iterdir())[:5]) or "nothing"
        raise DownloadError(f"{url} holds no PNG files in {kind}/ (found: {found}); not the expected archive")
    frames = sorted(folder.glob("*.png"))
    odd = [p.name for p in frames if not _FRAME.fullmatch(p.name)]
    if odd:
        raise DownloadError(f"{url}: {folder.relative_to(unpacked) / odd[0]} is not named like a GTA5 frame "
                            f"(NNNNN.png), which images and labels are paired by ({len(odd)} such file(s))")
    return frames
