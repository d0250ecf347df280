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
(centred and unflipped without one). Evaluation reads full-size labels (``size=None``, no crop),
as the release's scripts/eval_fcn.py.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .images import load_image, to_tensor

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
    """

    num_classes = len(CITYSCAPES_CLASSES)
    classes = CITYSCAPES_CLASSES

    def __init__(self, pairs: list[tuple[Path, Path]], map_ids: bool, size: int | None = None,
                 crop: int | None = None, flip: bool = False):
        for name, value in (("size", size), ("crop", crop)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.pairs, self.map_ids, self.size, self.crop, self.flip = pairs, map_ids, size, crop, flip

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.get(index)

    def get(self, index: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, label_path = self.pairs[index]
        ids = read_label_map(label_path)
        labels = Image.fromarray(train_ids(ids) if self.map_ids else np.clip(ids, 0, 255).astype(np.uint8))
        image = load_image(image_path)
        if image.size != labels.size:
            image = image.resize(labels.size, Image.Resampling.BILINEAR)
        if self.size is not None:
            w, h = labels.size
            scale = self.size / min(w, h)
            new = (max(1, round(w * scale)), max(1, round(h * scale)))
            image, labels = image.resize(new, Image.Resampling.BILINEAR), labels.resize(new, Image.Resampling.NEAREST)
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
         flip: bool = False) -> DrivingScenes:
    """GTA5 from ``root/images`` and ``root/labels`` (PNG files of the same names); ``split`` ``all``
    takes every pair, ``train``/``val``/``test`` the ids of ``root/split.mat`` (the official split
    file, image ``{id:05d}.png``)."""
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
    return DrivingScenes(_pair(images, labels, "GTA5", root), map_ids=True, size=size, crop=crop, flip=flip)


def cityscapes(root: str | os.PathLike, split: str = "val", labels: str = "labelIds", size: int | None = None,
               crop: int | None = None, flip: bool = False) -> DrivingScenes:
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
                         crop=crop, flip=flip)
