"""The driving scenes of CyCADA's segmentation experiment: GTA5 (source) and Cityscapes (target).

Both are read from their official layouts and give items ``(image [3, H, W] in [-1, 1],
labels [H, W] int64)`` with the 19 Cityscapes train ids (0 road ... 18 bicycle) and 255 for
every pixel without one:

- GTA5 (Richter et al.): ``root/images/NNNNN.png`` and ``root/labels/NNNNN.png``, labels holding
  Cityscapes label ids (palette PNGs), mapped to train ids; ``split.mat`` (``trainIds``,
  ``valIds``, ``testIds``) picks a split, as the release's ``cycada/data/gta5.py``.
- Cityscapes (Cordts et al.): ``root/leftImg8bit/{train,val,test}/<city>/<stem>_leftImg8bit.png``
  with ``root/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`` (mapped) or
  ``..._gtFine_labelTrainIds.png`` (cityscapesScripts' ``createTrainIdLabelImgs``, read as they are).

Sizes and crops are the release's parameters (cycada/data/data_loader.py lines 38-62,
cycada/transforms.py, scripts/train_fcn_adda.sh): ``size`` resizes the shorter side (the release
uses 1024, or ``1024 // downscale``; images bilinear, labels nearest), ``crop`` takes a random
square crop (768) and ``flip`` a random horizontal flip, both from the generator ``get`` is given
(centred and unflipped without one). Evaluation reads whole frames with their labels at full resolution
(``full_labels``), as the release's scripts/eval_fcn.py does (lines 46-49: the val split, images and labels
as they are, one frame a batch).

Downloads (:func:`download_gta5`, :func:`download_cyclegta5`; Cityscapes needs a login, see
:data:`cyclelib.download.CITYSCAPES_STEPS`) come from:

- GTA5: https://download.visinf.tu-darmstadt.de/data/from_games/, ten parts ``data/01_images.zip``
  ... ``data/10_images.zip`` and ``data/01_labels.zip`` ... ``data/10_labels.zip`` (:data:`GTA5_URL`,
  spelled as in other projects' download scripts, e.g. sarrrrry/PyTorchDL_GTA5 README.md), each
  holding ``images/NNNNN.png`` or ``labels/NNNNN.png``: unzipped into one folder, the layout
  :func:`gta5` reads. The release's ``split.mat`` (cycada/data/gta5.py line 45) is in the site's
  ``code/read_mapping.zip``, not fetched here: training reads every pair.
- "GTA as CityScapes": jhoffman/cycada_release README.md, section "Train Feature Adaptation for
  Semantic Segmentation", links http://efrosgans.eecs.berkeley.edu/cyclegta/cyclegta.zip, images
  only (the release's issue 42 sends users to GTA5 for the labels; its issue 29 says the images are
  GTA5's train split). The release reads ``root/images/NNNNN.png`` with ``root/labels/NNNNN.png``
  (cycada/data/cyclegta5.py lines 27-28), so :func:`download_cyclegta5` adds the label map of each
  translated image from GTA5's label parts.

Each archive is fetched by :func:`cyclelib.download.fetch` (resumable through a ``.part`` file; no
checksum, as neither site publishes one) and checked and unpacked by :func:`cyclelib.download.unpack`
(every member's CRC, no member outside the folder) beside the data; its PNG files are moved into
``images/`` or ``labels/`` and a marker in ``root/.downloaded/`` records it as done, so a later call
skips it. An archive that proved corrupt is deleted (the next call downloads it again); one whose
unpacking was interrupted is kept and unpacked again.
"""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .download import DownloadError, fetch, removed_if_left_empty, unpack
from .images import load_image, to_tensor
from .names import GTA5_PARTS

IGNORE_LABEL = 255
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle")
# Cityscapes label id -> train id, cityscapesScripts' helpers/labels.py (the release's ``id2label``,
# cycada/data/cityscapes.py lines 12-18); every other id is ignored.
ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                  26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_LABELS = ("labelIds", "labelTrainIds")
GTA5_SPLITS = ("all", "train", "val", "test")


def train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids (any integer array) -> train ids, uint8 with 255 for ignored ids."""
    table = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    table[list(ID_TO_TRAIN_ID)] = list(ID_TO_TRAIN_ID.values())
    ids = np.asarray(label_ids)
    return np.where((ids >= 0) & (ids < 256), table[np.clip(ids, 0, 255)], IGNORE_LABEL).astype(np.uint8)


def read_label_map(path: Path) -> np.ndarray:
    """The integer values of a single-channel label PNG (palette indices for GTA5's palette images,
    never their colours); ``ValueError`` naming the file for a colour or unreadable file."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L", "I", "I;16"):
                raise ValueError(f"label map {path} is a {img.mode} image; expected a single-channel label "
                                 f"PNG (mode P, L or I) of class ids")
            return np.asarray(img).astype(np.int64)
    except OSError as e:
        raise ValueError(f"cannot read label map {path}: {e}") from None


class DrivingScenes(Dataset):
    """Image and label-map files paired one to one, read as ``(image, labels)`` (see the module's
    docstring for ``size``, ``crop`` and ``flip``); ``map_ids`` maps Cityscapes label ids to train ids.

    ``pairs`` lists ``(image path, label path)``. An image is resized to its label map's size
    when they differ (a few GTA5 images, as the release's cycada/data/cyclegta5.py line 31).
    ``full_labels``: the labels stay at their own resolution while the image is read at ``size``
    (evaluation, whose scores are resized to the labels: :func:`~cyclelib.metrics.segmentation_metrics`);
    no crop then.
    """

    num_classes = len(CITYSCAPES_CLASSES)
    classes = CITYSCAPES_CLASSES

    def __init__(self, pairs: list[tuple[Path, Path]], map_ids: bool, size: int | None = None,
                 crop: int | None = None, flip: bool = False, full_labels: bool = False):
        for name, value in (("size", size), ("crop", crop)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if full_labels and crop is not None:
            raise ValueError("full_labels reads whole frames: it takes no crop")
        self.pairs, self.map_ids, self.size, self.crop, self.flip = pairs, map_ids, size, crop, flip
        self.full_labels = full_labels

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.get(index)

    def get(self, index: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, label_path = self.pairs[index]
        ids = read_label_map(label_path)
        labels = Image.fromarray(train_ids(ids) if self.map_ids else np.clip(ids, 0, 255).astype(np.uint8))
        image = load_image(image_path)
        new = labels.size  # (width, height) the image is read at: the labels', or a shorter side of size
        if self.size is not None:
            w, h = labels.size
            scale = self.size / min(w, h)
            new = (max(1, round(w * scale)), max(1, round(h * scale)))
            if not self.full_labels:  # evaluation keeps them as they are: scores are resized to them
                labels = labels.resize(new, Image.Resampling.NEAREST)
        if image.size != new:
            image = image.resize(new, Image.Resampling.BILINEAR)
        x, y = to_tensor(image), torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())
        if self.crop is not None:
            h, w = y.shape
            if self.crop > min(h, w):
                raise ValueError(f"crop {self.crop} is larger than {image_path} ({w}x{h} after resizing)")
            top, left = (_draw(side - self.crop + 1, generator) for side in (h, w))
            x, y = x[:, top:top + self.crop, left:left + self.crop], y[top:top + self.crop, left:left + self.crop]
        if self.flip and generator is not None and float(torch.rand(1, generator=generator)) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return x.contiguous(), y.contiguous()


def _draw(high: int, generator: torch.Generator | None) -> int:
    return high // 2 if generator is None else int(torch.randint(high, (1,), generator=generator))


def _pair(images: dict[str, Path], labels: dict[str, Path], what: str, where: Path) -> list[tuple[Path, Path]]:
    """Images and labels matched by key, every one of each side present on the other."""
    if not images and not labels:
        raise FileNotFoundError(f"{what}: no image or label files under {where}")
    for have, lack, side in ((images, labels, "label map"), (labels, images, "image")):
        missing = sorted(set(have) - set(lack))
        if missing:
            raise FileNotFoundError(f"{what}: {have[missing[0]]} has no {side} ({len(missing)} unpaired file(s))")
    return [(images[key], labels[key]) for key in sorted(images)]


def gta5(root: str | os.PathLike, split: str = "all", size: int | None = None, crop: int | None = None,
         flip: bool = False, full_labels: bool = False) -> DrivingScenes:
    """GTA5 from ``root/images`` and ``root/labels`` (PNG files of the same names); ``split`` ``all``
    takes every pair, ``train``/``val``/``test`` the ids of ``root/split.mat`` (the official split
    file, image ``{id:05d}.png``). ``size``, ``crop``, ``flip``, ``full_labels``: see :class:`DrivingScenes`."""
    root = Path(root).expanduser()
    if split not in GTA5_SPLITS:
        raise ValueError(f"unknown GTA5 split {split!r}; valid values: {', '.join(GTA5_SPLITS)}")
    for folder in (root / "images", root / "labels"):
        if not folder.is_dir():
            raise FileNotFoundError(f"GTA5: {folder} does not exist; expected root/images/ and root/labels/")
    images = {p.name: p for p in (root / "images").glob("*.png")}
    labels = {p.name: p for p in (root / "labels").glob("*.png")}
    if split != "all":
        if not (root / "split.mat").is_file():
            raise FileNotFoundError(f"GTA5 split {split!r} needs {root / 'split.mat'}; or use split='all'")
        from scipy.io import loadmat

        wanted = {f"{int(i):05d}.png" for i in loadmat(root / "split.mat")[f"{split}Ids"].ravel()}
        absent = sorted(wanted - set(images))
        if absent:
            raise FileNotFoundError(f"GTA5: {root / 'images' / absent[0]} of split {split!r} is missing "
                                    f"({len(absent)} missing)")
        images = {k: v for k, v in images.items() if k in wanted}
        labels = {k: v for k, v in labels.items() if k in wanted}
    return DrivingScenes(_pair(images, labels, "GTA5", root), map_ids=True, size=size, crop=crop, flip=flip,
                         full_labels=full_labels)


def cityscapes(root: str | os.PathLike, split: str = "val", labels: str = "labelIds", size: int | None = None,
               crop: int | None = None, flip: bool = False, full_labels: bool = False) -> DrivingScenes:
    """Cityscapes' fine annotations of ``split`` (``train``, ``val``; ``test`` has no public labels):
    ``root/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``root/gtFine/<split>/<city>/
    *_gtFine_<labels>.png``, ``labels`` ``labelIds`` (mapped to train ids) or ``labelTrainIds``."""
    if labels not in CITYSCAPES_LABELS:
        raise ValueError(f"unknown Cityscapes labels {labels!r}; valid values: {', '.join(CITYSCAPES_LABELS)}")
    root = Path(root).expanduser()
    image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"Cityscapes: {folder} does not exist; expected root/leftImg8bit/{split}/<city>/ "
                                    f"and root/gtFine/{split}/<city>/")
    suffix = f"_gtFine_{labels}.png"
    images = {str(p.relative_to(image_dir)).removesuffix("_leftImg8bit.png"): p
              for p in image_dir.glob("*/*_leftImg8bit.png")}
    label_maps = {str(p.relative_to(label_dir)).removesuffix(suffix): p for p in label_dir.glob(f"*/*{suffix}")}
    return DrivingScenes(_pair(images, label_maps, "Cityscapes", root), map_ids=labels == "labelIds", size=size,
                         crop=crop, flip=flip, full_labels=full_labels)


# --------------------------------------------------------------------------- downloads

GTA5_URL = "https://download.visinf.tu-darmstadt.de/data/from_games/data/{part:02d}_{kind}.zip"
CYCLEGTA5_URL = "http://efrosgans.eecs.berkeley.edu/cyclegta/cyclegta.zip"
_FRAME = re.compile(r"\d{5}\.png")  # GTA5's file names, which gta5() pairs images and labels by


def download_gta5(root: str | os.PathLike, parts: Iterable[int] = GTA5_PARTS) -> Path:
    """Download GTA5's ``parts`` (numbers 1 to 10, all by default: images and labels of each) into
    ``root/gta5/images`` and ``root/gta5/labels``; returns ``root/gta5``, the folder
    ``gta5:PATH`` and :func:`gta5` read. Parts done before are skipped. A part
    number out of range raises ValueError; a failed or corrupt download :class:`DownloadError`
    naming the URL."""
    parts = tuple(parts)
    for part in parts:
        if part not in GTA5_PARTS:
            raise ValueError(f"unknown GTA5 part {part!r}; valid values: {', '.join(map(str, GTA5_PARTS))}")
    dest = Path(root).expanduser() / "gta5"
    with removed_if_left_empty([dest]):
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
    with removed_if_left_empty([dest]):
        _archive_into(CYCLEGTA5_URL, dest, "images")
        translated = {p.name for p in (dest / "images").glob("*.png")}
        for part in GTA5_PARTS:
            _archive_into(GTA5_URL.format(part=part, kind="labels"), dest, "labels", keep=translated)
    return dest


def _archive_into(url: str, dest: Path, kind: str, keep: set[str] | None = None) -> None:
    """Fetch the archive at `url` (unless done before) and move its PNG frames into ``dest/kind``,
    only those named in `keep` where given; then mark it done."""
    name = url.rsplit("/", 1)[-1]
    marker = dest / ".downloaded" / name
    if marker.is_file():
        return
    archive, staging = dest / name, dest / f".{name}.unpacked"
    if not archive.is_file():  # one left by an interrupted unpacking is whole (fetch renames it once complete)
        fetch(url, archive)
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted call
    try:
        try:
            unpack(archive, staging, url)
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
