"""The user's own labelled images as CyCADA domains: ``folder:PATH`` beside the digit domains
(:func:`~cyclelib.digits.digit_domain` opens both).

``PATH`` is in torchvision's ``ImageFolder`` layout, one folder per class in each split::

    PATH/train/<class>/*.png   PATH/test/<class>/*.png

Images of any size and mode (grey, RGB, palette, ...) are read as RGB (grey repeated, as
:func:`~cyclelib.images.load_image` reads them) and resized (bilinear, antialiased) to the run's
``image_size``, so folders of mixed sizes are accepted. Classes are numbered by their folder names
in sorted order, so two domains agree on the labels when they hold the same class names.

A target may hold no labels: its images lie directly in ``PATH/train/`` (and, if it has a test
split, ``PATH/test/``; without one its train images stand for it). Its items carry the label
:data:`UNLABELLED`; CyCADA then skips the oracle and every accuracy on the target
(:func:`~cyclelib.cycada_run.run_cycada`).

:func:`check_folder_domains` checks a pair before any stage runs: every split present, no empty
class folder, two classes or more, the same class names on both sides, every image readable; each
error names the folder or file.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from .images import IMAGE_EXTENSIONS, list_images, load_image
from .names import FOLDER_PREFIX, is_folder_domain

UNLABELLED = -1  # the label of an image of an unlabelled target folder
SPLITS = ("train", "test")


def folder_path(name: str) -> Path:
    """The folder of domain ``folder:PATH``."""
    return Path(name[len(FOLDER_PREFIX):]).expanduser()


def _images_in(folder: Path) -> list[Path]:
    return [p for p in list_images(folder) if p.parent == folder]


def folder_split(root: Path, split: str) -> tuple[list[Path], list[int], tuple[str, ...] | None]:
    """Image files, labels and class names (None: unlabelled) of ``root/split``, checked: the
    folder exists, holds class folders (each with images) or images, not both, nor neither.
    An unlabelled folder without ``test/`` gives its train images as the test split."""
    folder = root / split
    if split == "test" and not folder.is_dir() and (root / "train").is_dir() and _images_in(root / "train"):
        folder = root / "train"  # an unlabelled folder needs no test split
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is missing: a folder domain holds train/<class>/ and test/<class>/ "
                                f"folders of images (or, unlabelled, images in train/)")
    classes = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")))
    loose = _images_in(folder)
    if classes and loose:
        raise ValueError(f"{folder} holds both class folders ({', '.join(classes)}) and images ({loose[0].name}, ...): "
                         f"put every image in its class folder, or (an unlabelled target) none in a class folder")
    if loose:
        return loose, [UNLABELLED] * len(loose), None
    if not classes:
        raise ValueError(f"{folder} holds no class folders and no images ({' '.join(IMAGE_EXTENSIONS)})")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = list_images(folder / name)
        if not found:
            raise ValueError(f"the class folder {folder / name} holds no images ({' '.join(IMAGE_EXTENSIONS)})")
        files += found
        labels += [label] * len(found)
    return files, labels, classes


@lru_cache(maxsize=16)
def _read(root: Path, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    files, labels, _ = folder_split(root, split)
    images = [np.asarray(load_image(path, 3).resize((size, size), Image.BILINEAR)) for path in files]
    return np.stack(images), np.asarray(labels, dtype=np.int64)  # [N, size, size, 3] uint8, [N]


def read_folder(name: str, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``[N, size, size, 3]`` and labels int64 ``[N]`` (:data:`UNLABELLED` in an
    unlabelled folder) of split ``split`` of domain ``folder:PATH``, for
    :func:`~cyclelib.digits.digit_domain`; every image is read now (a corrupt one is a
    ``ValueError`` naming it), once per process."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid values: {', '.join(SPLITS)}")
    return _read(folder_path(name), split, size)


@lru_cache(maxsize=16)
def folder_fingerprint(name: str) -> str:
    """SHA-256 over the relative path and the bytes of every image of domain ``folder:PATH`` (both
    splits), once per process: a CyCADA stage records it, so a stage trained on other files (added,
    removed or edited since) is not reused as if it had seen these."""
    root = folder_path(name)
    digest = hashlib.sha256()
    for path in list_images(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def folder_classes(name: str) -> tuple[str, ...] | None:
    """The class names of domain ``folder:PATH`` (its train split's), None when it is unlabelled."""
    return folder_split(folder_path(name), "train")[2]


def check_folder_domains(source: str, target: str, size: int) -> bool:
    """Check a CyCADA pair whose source or target is a folder, before any stage runs; whether the
    target has labels.

    The source must be labelled with two classes or more; a labelled side's splits and a labelled
    target must hold the source's class names (matched by name); every image is read (so a corrupt
    one is found now) at ``size``. Each error names the folder or file.
    """
    found = {}
    for role, name in (("source", source), ("target", target)):
        if not is_folder_domain(name):
            continue
        root = folder_path(name)
        for split in SPLITS:
            classes = folder_split(root, split)[2]
            if role == "source" and classes is None:
                raise ValueError(f"the source {root / split} holds no class folders: the source must be labelled "
                                 f"(PATH/{split}/<class>/*)")
            if role == "source" and len(classes) < 2:
                raise ValueError(f"the source {root / split} holds one class only ({classes[0]}): a classifier "
                                 f"needs two or more")
            found[root / split] = classes
            _read(root, split, size)
    labelled = {folder: classes for folder, classes in found.items() if classes is not None}
    if len(set(labelled.values())) > 1:
        (first, reference), *others = labelled.items()
        for folder, classes in others:
            if classes != reference:
                only = lambda a, b: ", ".join(sorted(set(a) - set(b))) or "none"
                raise ValueError(f"the class folders of {first} and {folder} differ: only in {first}: "
                                 f"{only(reference, classes)}; only in {folder}: {only(classes, reference)}")
    return has_labels(target)


def has_labels(name: str) -> bool:
    """Whether domain ``name`` is labelled: every digit domain, a folder with class folders."""
    return not is_folder_domain(name) or folder_classes(name) is not None


def num_classes(source: str) -> int:
    """The classes of a source domain: its class folders, or the 10 digits."""
    return len(folder_classes(source)) if is_folder_domain(source) else 10
