"""An offline segmentation pair: scenes of digits, drawn MNIST-style (source) and MNIST-M-style (target).

A scene is a ``64`` x ``64`` canvas holding one to three digits of mnist5k
(:func:`~cyclelib.digits.digit_domain`) at random positions and sizes (16 to 32 pixels), not
overlapping. Its label map gives every pixel a class: 0 for background, ``1 + d`` where a digit
``d`` has ink (the glyph, resized, above half intensity), so 11 classes in all.

- ``mnist-scenes`` (source): white digits on black, as MNIST.
- ``mnistm-scenes`` (target): the canvas is a crop of one of scikit-learn's two sample photos,
  and the digits' ink is the crop inverted, ``255 - crop``, as MNIST-M (and ``mnistm5k``) is made.

Both have the same classes and per-pixel ground truth; their scenes are drawn independently
(unpaired). Train scenes use mnist5k's train digits, test scenes its test digits. A domain is a
pure function of its arguments (numpy's seeded generator); built once per process and kept in
memory, as the other offline domains.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .digits import digit_domain
from .images import scale_levels
from .names import SCENE_DOMAINS

SCENE_CLASSES = 11  # background + the ten digits
SCENE_NAMES = ("background",) + tuple(str(d) for d in range(10))
SCENE_SPLITS = ("train", "test")
SCENE_SIZE = 64
SCENES_SEED = 0
DEFAULT_COUNTS = {"train": 2000, "test": 500}
# Background is about 97% of the pixels: weighted 1, a segmenter trained on scenes learns to call every pixel
# background (mIoU 0.09); weighted 0.1 (the release's ``--cls_weights``), it learns the digits.
SCENE_CLASS_WEIGHTS = (0.1,) + (1.0,) * 10
DIGIT_SIDES = (16, 32)  # smallest and largest side of a digit in a scene, pixels
MAX_DIGITS = 3
PLACEMENT_TRIES = 20  # draws of a digit's place before a scene keeps fewer digits


class SceneDomain(Dataset):
    """Digit scenes: item ``i`` is ``(image [3, size, size] float in [-1, 1], labels [size, size] int64)``.

    ``images`` (uint8 ``[N, size, size, 3]``) and ``labels`` (uint8 ``[N, size, size]``, 0
    background, ``1 + digit``) hold the whole domain.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, name: str, split: str):
        self.images, self.labels, self.name, self.split = images, labels, name, split
        self.num_classes = SCENE_CLASSES

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = scale_levels(torch.from_numpy(self.images[index]).permute(2, 0, 1))  # [3, H, W]
        return image, torch.from_numpy(self.labels[index]).long()  # [H, W]

    def __repr__(self) -> str:
        return f"SceneDomain({self.name!r}, split={self.split!r}, {len(self)} scenes, size={self.labels.shape[-1]})"


def _glyphs(split: str) -> tuple[np.ndarray, np.ndarray]:
    """mnist5k's digits of ``split``: uint8 ``[N, 28, 28]``, labels ``[N]``."""
    domain = digit_domain("mnist5k", split, size=28, channels=1)
    return domain.images[:, 0].numpy(), domain.labels.numpy()


def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)  # two [427, 640, 3] uint8 photos


@lru_cache(maxsize=None)
def _build(name: str, split: str, count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    glyphs, digits = _glyphs(split)
    # one stream per (domain, split): source and target scenes are independent draws
    rng = np.random.default_rng([seed, SCENE_DOMAINS.index(name), SCENE_SPLITS.index(split)])
    photos = _photos() if name == "mnistm-scenes" else []
    images = np.zeros((count, size, size, 3), dtype=np.uint8)
    labels = np.zeros((count, size, size), dtype=np.uint8)
    for i in range(count):
        grey = np.zeros((size, size), dtype=np.uint8)
        taken = np.zeros((size, size), dtype=bool)  # boxes of the digits placed so far
        wanted, tries = rng.integers(1, MAX_DIGITS + 1), 0
        while wanted and tries < PLACEMENT_TRIES:  # a digit that would overlap another is drawn again
            tries += 1
            pick = rng.integers(len(glyphs))
            side = int(rng.integers(DIGIT_SIDES[0], min(DIGIT_SIDES[1], size) + 1))
            top, left = (int(v) for v in rng.integers(size - side + 1, size=2))
            box = (slice(top, top + side), slice(left, left + side))
            if taken[box].any():
                continue
            taken[box], wanted = True, wanted - 1
            glyph = np.asarray(Image.fromarray(glyphs[pick]).resize((side, side), Image.Resampling.BILINEAR))
            grey[box] = glyph
            labels[i][box][glyph > 127] = 1 + digits[pick]
        if photos:
            photo = photos[rng.integers(len(photos))]
            top = rng.integers(photo.shape[0] - size + 1)
            left = rng.integers(photo.shape[1] - size + 1)
            crop = photo[top:top + size, left:left + size]
            images[i] = np.where(grey[..., None] > 127, 255 - crop, crop)  # MNIST-M's blend of a binarised digit
        else:
            images[i] = grey[..., None]
    return images, labels


def scene_domain(name: str, split: str = "train", count: int | None = None, size: int = SCENE_SIZE,
                 seed: int = SCENES_SEED) -> SceneDomain:
    """The digit-scene domain ``name`` (:data:`SCENE_DOMAINS`) of ``split`` (``train``/``test``):
    ``count`` scenes (2,000 train and 500 test by default) of ``size`` x ``size`` pixels, the same
    for the same arguments. Offline: built from mnist5k and scikit-learn's sample photos."""
    if name not in SCENE_DOMAINS:
        raise ValueError(f"unknown scene domain {name!r}; valid values: {', '.join(SCENE_DOMAINS)}")
    if split not in SCENE_SPLITS:
        raise ValueError(f"unknown split {split!r}; valid values: {', '.join(SCENE_SPLITS)}")
    count = DEFAULT_COUNTS[split] if count is None else count
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if not DIGIT_SIDES[0] <= size <= 427:
        raise ValueError(f"size must be between {DIGIT_SIDES[0]} (the smallest digit) and 427 (the photos' "
                         f"height), got {size}")
    return SceneDomain(*_build(name, split, int(count), int(size), int(seed)), name, split)
