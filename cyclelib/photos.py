"""An offline photo -> painting pair: crops of two photographs, and of the same photographs poster-painted.

:func:`write_photo_pair` writes crops of scikit-learn's two sample photographs (domain A) and
crops of the same photographs in a synthetic poster-paint style that keeps their colours
(domain B, :func:`poster_paint`) as an image folder in the official layout, train and test
crops from parts of the photos that do not overlap. A CycleGAN data set that needs no download.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .images import list_images


# The photo pair's fixed geometry. Both photos are shrunk from 640x427 to 320x214 and cut into a
# grid of 3 x 4 tiles (rows at 0, 71, 143, 214; columns every 80 pixels). Test crops lie inside the
# tiles of one diagonal, train crops anywhere that does not touch those tiles, so no train crop
# shares a pixel with a test crop. A diagonal gives the test set every row and three columns of
# each photo (sky, pagoda, lake, trees; petals, leaves): a single band of rows or columns would
# hold content, such as the dahlia's centre, that training never sees.
PHOTO_SIZE = (320, 214)  # (width, height), as PIL
PHOTO_ROWS = (0, 71, 143, 214)
PHOTO_COLUMNS = (0, 80, 160, 240, 320)
PHOTO_TEST_TILES = ((0, 1), (1, 2), (2, 3))  # (row, column) in the grid
PHOTOS_SEED = 0


def poster_paint(image: Image.Image) -> Image.Image:
    """The painted style of the photo pair's domain B: flat patches of few colours.

    A 5x5 median filter merges fine texture into flat brush-like patches, then each channel is
    rounded to the nearest multiple of 32 (nine levels, 255 for the top one). Rounding, not
    truncating, keeps the mean colour of an image close to the photo's: the style changes
    texture and leaves colour alone, so a colour shift in a translation is the generator's
    doing. A synthetic style, not a painter's.
    """
    smooth = np.asarray(image.convert("RGB").filter(ImageFilter.MedianFilter(5)), dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(smooth / 32) * 32, 0, 255).astype(np.uint8))


def photo_test_tiles() -> list[tuple[int, int, int, int]]:
    """The photo pair's test tiles as (top, left, bottom, right) in the shrunk photos."""
    return [(PHOTO_ROWS[r], PHOTO_COLUMNS[c], PHOTO_ROWS[r + 1], PHOTO_COLUMNS[c + 1]) for r, c in PHOTO_TEST_TILES]


def _crop_positions(split: str, size: int) -> np.ndarray:
    """Every (top, left) of a ``size`` crop of the split ``split``, ``[K, 2]``: inside a test tile
    for ``test``, overlapping none for ``train``."""
    width, height = PHOTO_SIZE
    tops, lefts = np.meshgrid(np.arange(height - size + 1), np.arange(width - size + 1), indexing="ij")
    inside = np.zeros(tops.shape, dtype=bool)
    touches = np.zeros(tops.shape, dtype=bool)
    for top, left, bottom, right in photo_test_tiles():
        inside |= (tops >= top) & (tops + size <= bottom) & (lefts >= left) & (lefts + size <= right)
        touches |= (tops < bottom) & (tops + size > top) & (lefts < right) & (lefts + size > left)
    return np.stack([tops, lefts], axis=-1)[inside if split == "test" else ~touches]


def write_photo_pair(root: str | os.PathLike, size: int = 64, train: int = 400, test: int = 100,
                     seed: int = PHOTOS_SEED) -> Path:
    """Write an unpaired photo -> painting data set in the official layout and return ``root``.

    Domain A holds ``size`` x ``size`` crops of scikit-learn's two sample photographs
    (``china.jpg``, ``flower.jpg``, shrunk to 320x214), domain B crops of the same photographs
    in the synthetic style :func:`poster_paint`. A and B crops are drawn independently, so no
    B image is the painting of an A image; the crops alternate between the photos. ``train``
    and ``test`` images per domain go into ``trainA``/``trainB`` and ``testA``/``testB`` as PNG
    files; test crops come from three tiles of each photo (:func:`photo_test_tiles`) that no
    train crop overlaps. The files are a pure function of the arguments: writing again
    rewrites the same bytes. Images of another data set in these folders (names this call
    would not write) raise ``FileExistsError`` instead of being mixed in.
    """
    from sklearn.datasets import load_sample_images

    largest = min(b - a for a, b in zip(PHOTO_ROWS, PHOTO_ROWS[1:]))  # a test crop fits in a tile
    if not 1 <= size <= largest:
        raise ValueError(f"size must be between 1 and {largest} (the height of a test tile), got {size}")
    if train < 1 or test < 1:
        raise ValueError(f"train and test must be at least 1 image each, got train={train}, test={test}")
    root = Path(root).expanduser()
    names = {"train": [f"{i:04d}.png" for i in range(train)], "test": [f"{i:04d}.png" for i in range(test)]}
    for split in names:
        for side in "AB":
            folder = root / f"{split}{side}"
            foreign = sorted(p.name for p in list_images(folder) if p.name not in names[split]) if folder.is_dir() else []
            if foreign:
                raise FileExistsError(f"{folder} holds {len(foreign)} image(s) this photo pair would not write "
                                      f"(first: {foreign[0]}); write the pair into an empty folder")
    photos = [Image.fromarray(image).resize(PHOTO_SIZE, Image.Resampling.LANCZOS) for image in load_sample_images().images]
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        positions = _crop_positions(split, size)
        for side in "AB":
            folder = root / f"{split}{side}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, name in enumerate(names[split]):
                top, left = (int(v) for v in positions[rng.integers(len(positions))])
                crop = photos[i % len(photos)].crop((left, top, left + size, top + size))
                (poster_paint(crop) if side == "B" else crop).save(folder / name)
    return root
