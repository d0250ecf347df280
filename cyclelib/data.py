"""Data for cyclelib: unpaired image folders, pairs of domains, the order of an epoch.

* **Image folders** in the official CycleGAN layout ``root/{trainA,trainB,testA,testB}``
  (:class:`ImageFolderDomain`, :class:`UnpairedImageFolder`), read with the official
  transforms (:mod:`cyclelib.images`).
* :func:`open_unpaired` opens a folder, or a pair of digit domains (``"a:b"``,
  :mod:`cyclelib.digits`).
* :class:`EpochSampler`: the shuffled order of an epoch, a pure function of ``(seed, epoch)``.

:class:`Unpaired` pairs two domains the way the official code does: an epoch has
``max(|A|, |B|)`` samples, A is read in order (the loader shuffles), B at random, or with
``serial`` item ``i mod |B|`` (the official ``--serial_batches``). Every
random draw of a sample (the B index, crops, flips) comes from one ``torch.Generator``
seeded from ``(seed, epoch, index)``, so a sample is a pure function of those three
numbers: runs are reproducible whatever the number of loader workers, and a resumed
run sees exactly the samples it would have seen.

Images are float tensors ``[C, H, W]`` in ``[-1, 1]``.
"""

from __future__ import annotations

import hashlib
import math
import operator
import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from .names import DIGIT_DOMAINS, DIRECTIONS, PREPROCESS_MODES, check_channels, check_crop, domain_pair, is_labelled_pair
from .download import CYCLEGAN_DATASETS
from .images import IMAGE_EXTENSIONS, list_images, load_image, to_tensor, transform_image
from .networks import fits, smallest_side
from .segmentation import labelled_domain


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
            raise ValueError(f"unknown preprocess {preprocess!r}; valid values: {', '.join(PREPROCESS_MODES)}")
        check_channels(channels)
        check_crop(preprocess, load_size, crop_size)
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
    if isinstance(item, tuple):  # a labelled domain: (image, label), or (image, label map) for segmentation
        item, sample[f"{key}_label"] = item[0], item[1] if isinstance(item[1], torch.Tensor) else int(item[1])
    sample[key] = item
    if hasattr(domain, "paths"):
        sample[f"{key}_path"] = str(domain.paths[index])
    return sample


class Unpaired(Dataset):
    """Pairs two domains without correspondence, as the official unaligned dataset.

    ``len`` is ``max(len(a), len(b))``. Sample ``i`` holds A item ``i % len(a)`` (in
    order: the data loader shuffles) and a B item drawn at random, or with ``serial`` B item
    ``i % len(b)``, as the official ``--serial_batches`` (``data/unaligned_dataset.py`` lines
    29-34 at commit 9fc9eef). All draws (B index, crops, flips) come from a generator seeded
    from ``(seed, epoch, i)``: call
    :meth:`set_epoch` each epoch for fresh B partners and crops (with persistent loader
    workers, recreate the loader instead: workers hold a copy of this object).

    A domain is any sized object with ``get(i, generator)`` or else ``__getitem__(i)``;
    items may be images or ``(image, label)`` tuples. A sample is a dict with ``"A"``,
    ``"B"``, ``"A_index"``, ``"B_index"``, plus ``"A_label"``/``"B_label"`` for labelled
    domains and ``"A_path"``/``"B_path"`` for domains with ``paths``.
    """

    def __init__(self, a, b, seed: int = 0, serial: bool = False):
        for key, domain in (("A", a), ("B", b)):
            if len(domain) == 0:
                raise ValueError(f"domain {key} ({domain!r}) is empty")
        self.a, self.b, self.seed, self.serial, self.epoch = a, b, seed, serial, 0

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def check(self, skip_bad: bool = False, batch_size: int = 1,
              networks: Callable[[int], dict[str, nn.Module]] | None = None) -> list[str]:
        """Check every image of the domains that hold files (see :meth:`ImageFolderDomain.check`,
        :meth:`~ImageFolderDomain.check_batchable` and, with ``networks`` (the networks that read
        images of a number of channels), :meth:`~ImageFolderDomain.check_networks`); returns the
        problems of the skipped files."""
        skipped = []
        for domain in (self.a, self.b):
            if hasattr(domain, "check"):
                skipped += domain.check(skip_bad)
                domain.check_batchable(batch_size)
                domain.check_networks(networks(domain.channels) if networks else {}, batch_size)
        return skipped

    def __getitem__(self, index: int) -> dict:
        index = operator.index(index)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch, index))
        b_index = int(torch.randint(len(self.b), (1,), generator=generator))  # drawn either way: crops and flips stay
        if self.serial:
            b_index = index % len(self.b)
        return {**_fetch_item("A", self.a, index % len(self.a), generator),
                **_fetch_item("B", self.b, b_index, generator)}


class _Drawn(Dataset):
    """The items of ``dataset`` with random draws of their own, each item's from a generator seeded from
    ``(seed, epoch, index)`` (:meth:`generator`), like :class:`Unpaired`'s; :meth:`set_epoch` reaches
    ``dataset`` too, so that draws of its own (a wrapped :class:`RandomReads`) change with the epoch."""

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(_mix(self.seed, self.epoch, index))


class RandomReads(_Drawn):
    """The items of a domain that draws as it reads (``get(i, generator)``: the random crops and flips of
    :class:`~cyclelib.driving.DrivingScenes`), for a reader that asks by index only (a classifier stage's
    :class:`~cyclelib.train.Trainer`): item ``i`` is ``get(i, generator(i))``, so the crops change with the
    epoch and stay those of the seed, as :class:`Unpaired` draws them for the pixel and feature stages."""

    def __getitem__(self, index: int):
        return self.dataset.get(index, self.generator(index))


class RandomlyInverted(_Drawn):
    """The ``(image, label)`` items of ``dataset``, each image negated (x -> -x in [-1, 1]: dark
    strokes on a bright ground for light ones) with probability ``p``.

    A polarity augmentation: a classifier trained on it reads a digit the same whether it is
    lighter or darker than its background, as MNIST-M's digits are (blended as |photo - digit|).
    """

    def __init__(self, dataset: Dataset, p: float, seed: int = 0):
        super().__init__(dataset, seed)
        self.p = p

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        return (-image if float(torch.rand(1, generator=self.generator(index))) < self.p else image), label


class UnpairedImageFolder(Unpaired):
    """The official unaligned dataset: ``root/{phase}A`` against ``root/{phase}B``, or with
    ``direction="BtoA"`` ``root/{phase}B`` as A against ``root/{phase}A`` as B. A is read with
    ``channels``, B with ``channels_b`` (default: ``channels``).

    Outside the train phase images are resized to ``crop_size`` and never flipped, as the
    official test options (``load_size = crop_size``, ``no_flip``).
    """

    def __init__(self, root, phase: str = "train", channels: int = 3, preprocess: str = "resize_and_crop",
                 load_size: int = 286, crop_size: int = 256, flip: bool = True, seed: int = 0,
                 direction: str = "AtoB", channels_b: int | None = None, serial: bool = False):
        self.root, self.phase = Path(root).expanduser(), phase
        if phase != "train":
            load_size, flip = crop_size, False
        a, b = (ImageFolderDomain(self.root / f"{phase}{side}", nc, preprocess, load_size, crop_size, flip)
                for side, nc in zip(_sides(direction), (channels, channels_b or channels)))
        super().__init__(a, b, seed, serial)


def _sides(direction: str) -> str:
    """The data's domains in the order A, B of a run trained in ``direction``: "AB", or "BA" for
    BtoA, as the official ``--direction`` swaps them (``models/cycle_gan_model.py``
    ``set_input``, lines 99-110 at commit 48ced5e; the channels follow, as in
    ``data/unaligned_dataset.py`` lines 41-46 at commit 9fc9eef)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; valid values: {', '.join(DIRECTIONS)}")
    return "AB" if direction == "AtoB" else "BA"


# --------------------------------------------------------------------------- entry point


def open_unpaired(spec: str, phase: str = "train", seed: int = 0, size: int | None = None, channels: int = 3,
                  root: str | os.PathLike | None = None, download: bool = False, direction: str = "AtoB",
                  channels_b: int | None = None, serial: bool = False, crop: int | None = None,
                  **folder_options) -> Unpaired:
    """Open an unpaired dataset from a spec: a digit pair ``"a:b"`` (e.g. ``"mnist5k:mnistm5k"``, or of
    segmentation domains, ``"mnist-scenes:mnistm-scenes"``: :func:`~cyclelib.segmentation.labelled_domain`),
    split ``train`` in the train phase, ``test`` otherwise, ``size`` default 32; ``root`` and
    ``download`` as :func:`~cyclelib.digits.digit_domain`) or a dataset folder (:class:`UnpairedImageFolder`;
    ``size`` sets ``crop_size`` and, unless given, ``load_size`` in the official 286/256 ratio).
    ``direction="BtoA"`` makes the second domain A (``b:a``, or ``trainB`` read as A); A is read
    with ``channels``, B with ``channels_b`` (default: ``channels``); ``serial``: see :class:`Unpaired`.
    ``crop``: driving scenes of the train phase as random, flipped squares of that side
    (:func:`~cyclelib.segmentation.segmentation_domain`; refused for other domains).
    """
    if is_labelled_pair(spec):
        names = dict(zip("AB", domain_pair(spec)))
        if folder_options:
            raise ValueError(f"options {', '.join(folder_options)} apply to image folders, not to digits ({spec!r})")
        split = "train" if phase == "train" else "test"
        crop = crop if split == "train" else None
        a, b = (labelled_domain(names[side], split, size or 32, nc, root, download, crop)
                for side, nc in zip(_sides(direction), (channels, channels_b or channels)))
        return Unpaired(a, b, seed, serial)
    if Path(spec).expanduser().is_dir():
        if size is not None:
            folder_options.setdefault("crop_size", size)
            folder_options.setdefault("load_size", round(size * 286 / 256))
        return UnpairedImageFolder(spec, phase, channels, seed=seed, direction=direction, channels_b=channels_b,
                                   serial=serial, **folder_options)
    hint = f"; download it with download_dataset({spec!r}, root)" if spec in CYCLEGAN_DATASETS else ""
    raise ValueError(
        f"{spec!r} is neither a dataset folder (with trainA/, trainB/, testA/, testB/) nor a pair "
        f"'a:b' of digit domains from {', '.join(DIGIT_DOMAINS)}{hint}")


# --------------------------------------------------------------------------- epochs


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled indices of one epoch, a pure function of (seed, epoch), resumable mid-epoch;
    with ``shuffle=False`` the indices in order, ``0 .. limit - 1`` every epoch (the official
    ``--serial_batches`` turns the loader's shuffle off: ``data/__init__.py`` line 38 at commit 1cf7171).

    ``start`` skips the indices already consumed, so a resumed run sees exactly the
    samples an uninterrupted run would have seen.

    With ``world_size`` > 1 (DDP) rank ``rank`` takes every ``world_size``-th index from
    position ``rank`` on, and ``start`` counts that share: the ranks' k-th batches of size B
    together hold the k-th batch of size ``world_size`` x B of a single process. The order is
    first padded with its own first indices to a multiple of ``world_size``, because every
    rank must take the same number of steps.
    """

    def __init__(self, n: int, seed: int, epoch: int, start: int = 0, limit: int | None = None,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.n, self.seed, self.epoch, self.start, self.shuffle = n, seed, epoch, start, shuffle
        self.limit = min(n, limit) if limit else n
        self.rank, self.world_size = rank, world_size
        self.share = math.ceil(self.limit / world_size)  # indices per rank

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = (torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n))[: self.limit]
        padded = order.repeat(math.ceil(self.share * self.world_size / self.limit))[: self.share * self.world_size]
        return iter(padded[self.rank::self.world_size][self.start:].tolist())

    def __len__(self):
        return self.share - self.start
