"""Tests for cyclelib.data: image folders, unpaired pairing, digit domains, downloads.

Everything runs offline: the digit benchmarks are faked in their original file formats
and downloads are served from a local HTTP server or file:// URLs.
"""

import bz2
import gzip
import hashlib
import http.server
import io
import re
import struct
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclelib import download
from cyclelib.data import EpochSampler, ImageFolderDomain, Unpaired, UnpairedImageFolder, open_unpaired
from cyclelib.digits import digit_domain
from cyclelib.download import download_dataset, download_digits
from cyclelib.images import load_image, read_image, transform_image
from helpers import image_folder, rgb

SMALL = dict(load_size=36, crop_size=32)


@pytest.fixture
def dataset_root(tmp_path):
    """Official layout with 3 A and 5 B images (train) and 2 + 2 (test)."""
    root = tmp_path / "toy"
    image_folder(root / "trainA", 3, (40, 30))
    image_folder(root / "trainB", 5, (40, 30), seed=10)
    image_folder(root / "testA", 2, (40, 30), seed=20)
    image_folder(root / "testB", 2, (40, 30), seed=30)
    return root


# --------------------------------------------------------------------------- image reading


def test_modes_are_converted_to_rgb_or_gray(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(gray).save(tmp_path / "gray.png")
    rgba = np.dstack([np.full((6, 8, 3), 200, np.uint8), np.zeros((6, 8), np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    palette = Image.new("P", (8, 6), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.save(tmp_path / "palette.png", transparency=0)

    rgb_from_gray = read_image(tmp_path / "gray.png")  # [3, 6, 8]
    assert rgb_from_gray.shape == (3, 6, 8)
    assert torch.equal(rgb_from_gray[0], rgb_from_gray[2])
    assert torch.allclose(rgb_from_gray[0], torch.from_numpy(gray).float() / 127.5 - 1)
    assert torch.allclose(read_image(tmp_path / "rgba.png"), torch.tensor(200 / 127.5 - 1))  # alpha dropped
    assert read_image(tmp_path / "palette.png")[:, 0, 0].mul(127.5).add(127.5).round().tolist() == [10, 20, 30]
    gray_from_rgb = read_image(tmp_path / "rgba.png", channels=1)
    assert gray_from_rgb.shape == (1, 6, 8)


def test_16bit_images_are_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16)  # 8-bit 0, 64, 128, 255
    Image.fromarray(levels).save(tmp_path / "deep.png")
    Image.fromarray(levels).save(tmp_path / "deep.tif")
    for name in ("deep.png", "deep.tif"):
        assert np.array(load_image(tmp_path / name, channels=1)).tolist() == [[0, 64, 128, 255]]
        assert np.array(load_image(tmp_path / name))[0, :, 1].tolist() == [0, 64, 128, 255]


def test_unreadable_images_name_the_file(tmp_path):
    (tmp_path / "noise.png").write_bytes(b"definitely not a png")
    buffer = io.BytesIO()
    rgb(64, 64).save(buffer, "PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[:400])
    for name in ("noise.png", "cut.png"):
        with pytest.raises(ValueError, match=name):
            load_image(tmp_path / name)


# --------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("preprocess, shape", [
    ("resize_and_crop", (3, 32, 32)),
    ("crop", (3, 32, 32)),
    ("scale_width", (3, 48, 36)),  # 60x80 -> width 36, height 36 * 80 / 60
    ("scale_width_and_crop", (3, 32, 32)),
    ("none", (3, 80, 60)),
])
def test_each_preprocess_on_a_non_square_image(tmp_path, preprocess, shape):
    rgb(60, 80).save(tmp_path / "tall.png")
    domain = ImageFolderDomain(tmp_path, preprocess=preprocess, **SMALL)
    image = domain.get(0, torch.Generator().manual_seed(0))
    assert image.shape == shape and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1


def test_none_rounds_sides_to_multiples_of_4(tmp_path):
    rgb(61, 43).save(tmp_path / "odd.png")
    assert ImageFolderDomain(tmp_path, preprocess="none").get(0).shape == (3, 44, 60)


def test_randomness_comes_only_from_the_generator(tmp_path):
    rgb(50, 40).save(tmp_path / "x.png")
    domain = ImageFolderDomain(tmp_path, **SMALL)
    torch.manual_seed(1)
    first = domain.get(0, torch.Generator().manual_seed(7))
    torch.manual_seed(2)  # the global RNG must not matter
    assert torch.equal(first, domain.get(0, torch.Generator().manual_seed(7)))
    others = [domain.get(0, torch.Generator().manual_seed(seed)) for seed in range(8)]
    assert any(not torch.equal(first, other) for other in others)


def test_flip_is_a_mirror_and_no_generator_means_centre_crop(tmp_path):
    img = rgb(40, 40)
    centre = transform_image(img, "crop", 0, 32, flip=True, generator=None)
    assert np.array_equal(np.array(centre), np.array(img)[4:36, 4:36])
    flips = {np.array_equal(np.array(transform_image(img, "none", 0, 0, True, torch.Generator().manual_seed(s))),
                            np.array(img)[:, ::-1]) for s in range(10)}
    assert flips == {True, False}


def test_option_errors_name_the_options(tmp_path):
    rgb(20, 20).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match=r"crop_size \(64\) must not exceed load_size \(32\)"):
        ImageFolderDomain(tmp_path, load_size=32, crop_size=64)
    with pytest.raises(ValueError, match="resize_and_crop, crop, scale_width"):
        ImageFolderDomain(tmp_path, preprocess="zoom")
    domain = ImageFolderDomain(tmp_path, preprocess="crop", crop_size=32)
    with pytest.raises(ValueError, match=r"small\.png is 20x20, smaller than crop_size=32"):
        domain.get(0, torch.Generator())


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*trainA.*trainB.*testA.*testB"):
        ImageFolderDomain(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="empty"):
        ImageFolderDomain(tmp_path / "empty")


def test_listing_is_recursive_sorted_and_case_insensitive(tmp_path):
    rgb(8, 8).save(tmp_path / "b.PNG")
    (tmp_path / "sub").mkdir()
    rgb(8, 8).save(tmp_path / "sub" / "a.JPEG", "JPEG")
    rgb(8, 8).save(tmp_path / "a.webp")
    (tmp_path / "._a.png").write_bytes(b"macOS metadata")
    (tmp_path / "readme.md").write_text("x")
    names = [p.relative_to(tmp_path).as_posix() for p in ImageFolderDomain(tmp_path).paths]
    assert names == ["a.webp", "b.PNG", "sub/a.JPEG"]


# --------------------------------------------------------------------------- unpaired


def test_unpaired_lengths_order_and_determinism():
    a = [torch.full((1, 2, 2), float(i)) for i in range(3)]
    b = [(torch.full((1, 2, 2), 10.0 + i), i % 2) for i in range(7)]  # labelled
    pairs = Unpaired(a, b, seed=5)
    assert len(pairs) == 7
    sample = pairs[4]
    assert sample["A_index"] == 1 and sample["A"][0, 0, 0] == 1  # A in order, modulo its length
    assert sample["B"][0, 0, 0] == 10 + sample["B_index"] and sample["B_label"] == sample["B_index"] % 2
    assert "A_label" not in sample and "A_path" not in sample
    assert pairs[4]["B_index"] == sample["B_index"]  # a pure function of (seed, epoch, index)
    epoch0 = [pairs[i]["B_index"] for i in range(7)]
    pairs.set_epoch(1)
    assert [pairs[i]["B_index"] for i in range(7)] != epoch0
    assert [Unpaired(a, b, seed=6)[i]["B_index"] for i in range(7)] != epoch0
    with pytest.raises(IndexError):
        pairs[7]
    with pytest.raises(ValueError, match="empty"):
        Unpaired([], b)


def test_unpaired_image_folder_train_and_test(dataset_root):
    train = UnpairedImageFolder(dataset_root, seed=3, **SMALL)
    assert len(train) == 5
    sample = train[4]
    assert sample["A"].shape == sample["B"].shape == (3, 32, 32)
    assert sample["A_path"].endswith("trainA/001.png") and "trainB" in sample["B_path"]
    assert torch.equal(UnpairedImageFolder(dataset_root, seed=3, **SMALL)[4]["B"], sample["B"])
    views = set()
    for epoch in range(4):  # crops and flips change with the epoch
        train.set_epoch(epoch)
        views.add(train[0]["A"].numpy().tobytes())
    assert len(views) > 1

    test = UnpairedImageFolder(dataset_root, phase="test", **SMALL)
    expected = np.array(rgb(40, 30, seed=20).resize((32, 32), Image.Resampling.BICUBIC))  # resize only, no flip
    for epoch in range(3):
        test.set_epoch(epoch)
        assert torch.equal(test[0]["A"], torch.from_numpy(expected).permute(2, 0, 1).float() / 127.5 - 1)


def test_missing_domain_is_named(dataset_root):
    for child in (dataset_root / "trainB").iterdir():
        child.unlink()
    (dataset_root / "trainB").rmdir()
    with pytest.raises(FileNotFoundError, match=r"toy[/\\]trainB"):
        UnpairedImageFolder(dataset_root)


def test_unpaired_works_with_a_data_loader(dataset_root):
    loader = torch.utils.data.DataLoader(UnpairedImageFolder(dataset_root, **SMALL), batch_size=2)
    batch = next(iter(loader))
    assert batch["A"].shape == (2, 3, 32, 32) and len(batch["A_path"]) == 2


# --------------------------------------------------------------------------- digit domains


def test_offline_digit_domains_sizes_labels_and_fixed_splits():
    expected = {"mnist5k": (4000, 1000), "uci-digits": (1438, 359), "mnistm5k": (4000, 1000)}
    for name, sizes in expected.items():
        train, test = digit_domain(name, "train"), digit_domain(name, "test")
        assert (len(train), len(test)) == sizes
        assert train.labels.bincount().tolist() == [sizes[0] // 10] * 10 or name == "uci-digits"
        assert set(test.labels.tolist()) == set(range(10))
        image, label = test[0]
        assert image.shape == (3, 32, 32) and image.min() >= -1 and image.max() <= 1
        assert isinstance(label, int)
        again = digit_domain(name, "test")
        assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
        seen = {row.tobytes() for row in train.images.numpy()}
        assert not any(row.tobytes() in seen for row in test.images.numpy())


def test_digit_size_and_channels_are_converted():
    image, _ = digit_domain("mnistm5k", "test", size=28, channels=1)[0]
    assert image.shape == (1, 28, 28)
    gray, _ = digit_domain("mnist5k", "test", size=16)[0]
    assert gray.shape == (3, 16, 16) and torch.equal(gray[0], gray[1])


def test_mnistm5k_is_colourful_with_mnist5k_labels():
    mnist, mnistm = digit_domain("mnist5k", "test"), digit_domain("mnistm5k", "test")
    assert torch.equal(mnist.labels, mnistm.labels)
    colour = mnistm.images.float()  # [N, 3, 28, 28]
    assert (colour[:, 0] - colour[:, 1]).abs().mean() > 10  # the channels differ: photo backgrounds
    assert colour.mean(dim=(2, 3)).std(dim=0).min() > 10  # and backgrounds differ between images


def test_digit_errors():
    with pytest.raises(ValueError, match="mnist5k, uci-digits, mnistm5k, mnist, usps, svhn, mnistm"):
        digit_domain("emnist")
    with pytest.raises(ValueError, match="train, test"):
        digit_domain("mnist5k", split="val")
    with pytest.raises(ValueError, match="mnist, usps, svhn, mnistm"):
        download_digits("mnist5k")


def _fake_mnist(root: Path, labels):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.stack([np.full((28, 28), 20 * label, np.uint8) for label in labels])
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, len(labels), 28, 28)
                                                          + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, len(labels))
                                                          + bytes(labels))


def _fake_usps(root: Path, labels):
    (root / "usps").mkdir(parents=True)
    # libsvm lines "label index:value ...": labels 1..10, pixels in [-1, 1]
    lines = [f"{label + 1} " + " ".join(f"{k + 1}:{20 * label / 127.5 - 1:.6f}" for k in range(256))
             for label in labels]
    for name in ("usps.bz2", "usps.t.bz2"):
        (root / "usps" / name).write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))


def _fake_svhn(root: Path, labels):
    from scipy.io import savemat

    (root / "svhn").mkdir(parents=True)
    pixels = np.stack([np.full((32, 32, 3), 20 * label, np.uint8) for label in labels], axis=-1)  # [32, 32, 3, N]
    stored = np.array([[label or 10] for label in labels], dtype=np.uint8)  # SVHN writes 0 as 10
    for split in ("train", "test"):
        savemat(root / "svhn" / f"{split}_32x32.mat", {"X": pixels, "y": stored})


def _fake_mnistm(root: Path, labels):
    for split in ("train", "test"):
        folder = root / "mnist_m" / f"mnist_m_{split}"
        folder.mkdir(parents=True)
        for i, label in enumerate(labels):
            Image.new("RGB", (28, 28), (20 * label,) * 3).save(folder / f"{i:08d}.png")
        (root / "mnist_m" / f"mnist_m_{split}_labels.txt").write_text(
            "".join(f"{i:08d}.png {label}\n" for i, label in enumerate(labels)))


@pytest.mark.parametrize("name, fake", [("mnist", _fake_mnist), ("usps", _fake_usps), ("svhn", _fake_svhn),
                                        ("mnistm", _fake_mnistm)])
def test_downloaded_digit_formats_are_read(tmp_path, monkeypatch, name, fake):
    labels = [3, 0, 9, 1]
    with pytest.raises(FileNotFoundError, match=rf"download=True.*cyclelib download {name}"):
        digit_domain(name, root=tmp_path)
    fake(tmp_path, labels)
    monkeypatch.setenv("CYCLELIB_DATA", str(tmp_path))  # the default root
    for split in ("train", "test"):
        domain = digit_domain(name, split, size=32)
        assert domain.labels.tolist() == labels
        for i, label in enumerate(labels):
            image, target = domain[i]
            assert target == label and image.shape == (3, 32, 32)
            assert torch.allclose(image, torch.tensor(20 * label / 127.5 - 1), atol=0.02)  # right image, right label


# --------------------------------------------------------------------------- open_unpaired


def test_open_unpaired_digits_and_folders(dataset_root):
    digits = open_unpaired("mnist5k:mnistm5k", phase="test", size=28)
    assert len(digits) == 1000
    sample = digits[0]
    assert sample["A"].shape == sample["B"].shape == (3, 28, 28) and "A_label" in sample and "B_label" in sample
    folder = open_unpaired(str(dataset_root), size=32)
    assert folder[0]["A"].shape == (3, 32, 32)
    with pytest.raises(ValueError, match=r"'mnist:nope'.*mnist5k, uci-digits"):
        open_unpaired("mnist:nope")
    with pytest.raises(ValueError, match=r"download_dataset\('horse2zebra'"):
        open_unpaired("horse2zebra")


# --------------------------------------------------------------------------- the epoch sampler


def test_epoch_sampler_is_a_resumable_permutation():
    full = list(EpochSampler(10, seed=3, epoch=1))
    assert sorted(full) == list(range(10))
    assert list(EpochSampler(10, seed=3, epoch=1, start=4)) == full[4:]
    assert list(EpochSampler(10, seed=3, epoch=2)) != full
    assert len(EpochSampler(10, seed=3, epoch=1, limit=6)) == 6


def test_epoch_sampler_splits_an_epoch_across_ranks():
    full = list(EpochSampler(10, seed=3, epoch=1))
    shares = [list(EpochSampler(10, seed=3, epoch=1, rank=r, world_size=3)) for r in range(3)]
    # 10 indices over 3 ranks: padded with the first two, so that every rank takes 4
    assert [len(s) for s in shares] == [4, 4, 4]
    assert len(EpochSampler(10, seed=3, epoch=1, rank=2, world_size=3)) == 4
    padded = full + full[:2]
    assert sorted(sum(shares, [])) == sorted(padded)
    # step k of 3 ranks with batch 2 covers step k of one process with batch 6
    for k in range(2):
        assert sorted(i for s in shares for i in s[2 * k:2 * k + 2]) == sorted(padded[6 * k:6 * k + 6])
    # a resumed rank skips what it already consumed of its own share
    assert list(EpochSampler(10, seed=3, epoch=1, start=2, rank=1, world_size=3)) == shares[1][2:]


# --------------------------------------------------------------------------- downloads


def _zip_bytes(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _png_bytes(seed) -> bytes:
    buffer = io.BytesIO()
    rgb(40, 30, seed).save(buffer, "PNG")
    return buffer.getvalue()


MINI = {f"mini/{side}/{i}.png": _png_bytes(i) for side in ("trainA", "trainB", "testA", "testB") for i in range(2)}


def test_download_dataset_over_http_and_file_urls(tmp_path, server):
    served, base = server
    (served / "mini.zip").write_bytes(_zip_bytes(MINI))
    folder = download_dataset("mini", tmp_path / "http", url=f"{base}/mini.zip")
    assert folder == tmp_path / "http" / "mini"
    assert sorted(p.name for p in (tmp_path / "http").iterdir()) == ["mini"]  # no temporary files left
    assert UnpairedImageFolder(folder, **SMALL)[1]["B"].shape == (3, 32, 32)
    assert download_dataset("mini", tmp_path / "http", url=f"{base}/gone.zip") == folder  # present: kept

    folder = download_dataset("mini", tmp_path / "file", url=(served / "mini.zip").as_uri())
    assert len(UnpairedImageFolder(folder, phase="test", **SMALL)) == 2


def test_download_errors(tmp_path, server):
    served, base = server
    (served / "bad.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(RuntimeError, match="bad.zip"):
        download_dataset("mini", tmp_path, url=f"{base}/bad.zip")
    (served / "slip.zip").write_bytes(_zip_bytes({"mini/trainA/0.png": _png_bytes(0), "../evil.txt": b"x"}))
    with pytest.raises(ValueError, match=r"\.\./evil\.txt"):
        download_dataset("mini", tmp_path / "root", url=f"{base}/slip.zip")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "root" / "mini").exists()
    with pytest.raises(RuntimeError, match="missing.zip"):
        download_dataset("mini", tmp_path, url=f"{base}/missing.zip")  # HTTP 404
    with pytest.raises(ValueError, match="horse2zebra, monet2photo"):
        download_dataset("zebra2horse", tmp_path)
    assert list(tmp_path.glob("**/*.part")) == [] and not (tmp_path / "mini").exists()


def test_download_mnistm_checks_the_md5(tmp_path, monkeypatch):
    labels_dir = tmp_path / "build"
    _fake_mnistm(labels_dir, [4, 2])
    archive = tmp_path / "mnist_m.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(labels_dir / "mnist_m", arcname="mnist_m")
    monkeypatch.setattr(download, "MNISTM_URL", archive.as_uri())
    with pytest.raises(RuntimeError, match="MD5"):
        download_digits("mnistm", tmp_path / "wrong")
    monkeypatch.setattr(download, "MNISTM_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    domain = digit_domain("mnistm", "test", root=tmp_path / "data", download=True)
    assert domain.labels.tolist() == [4, 2]


# --------------------------------------------------------------------------- benchmark downloads through torchvision
#
# download_digits('mnist' | 'usps' | 'svhn') runs torchvision's own download code (mirrors, MD5
# checks, gunzip). These tests run that code end to end against small files in the original
# formats, served by the local HTTP server: torchvision's class attributes that hold the URLs
# and MD5s are pointed at the server, and any request elsewhere fails the test.

TRAIN_LABELS, TEST_LABELS = [3, 0, 9, 1, 7, 4], [8, 2, 6, 5]  # different per split: the split must be right


def _md5(content: bytes) -> str:
    return hashlib.md5(content).hexdigest()


def _digit_pixels(labels, side, channels):
    """uint8 [N, side, side, channels]: background 20 * label (+ 3 per channel), one white
    pixel at the top right, so a wrong label, channel order or transposition shows."""
    levels = 20 * np.array(labels, np.uint8)[:, None, None, None] + 3 * np.arange(channels, dtype=np.uint8)
    pixels = np.broadcast_to(levels, (len(labels), side, side, channels)).copy()
    pixels[:, 0, -1] = 255
    return pixels


def _mnist_gz(kind: str, labels) -> bytes:
    """An MNIST file as served: big-endian IDX (magic 0x803 images / 0x801 labels), gzipped."""
    if kind == "images":
        content = struct.pack(">IIII", 0x803, len(labels), 28, 28) + _digit_pixels(labels, 28, 1).tobytes()
    else:
        content = struct.pack(">II", 0x801, len(labels)) + bytes(labels)
    return gzip.compress(content, mtime=0)


def _usps_bz2(labels) -> bytes:
    """A USPS file as served: LIBSVM lines 'label index:value ...', labels 1..10, 256 values in
    [-1, 1], bz2-compressed. torchvision reads level (v + 1) / 2 * 255 truncated to uint8, so
    interior levels are written half a level up."""
    def value(level):
        return -1.0 if level == 0 else 1.0 if level == 255 else (level + 0.5) / 127.5 - 1

    lines = [f"{label + 1} " + " ".join(f"{k + 1}:{value(level):.6f}" for k, level in enumerate(image.ravel()))
             for label, image in zip(labels, _digit_pixels(labels, 16, 1))]
    return bz2.compress(("\n".join(lines) + "\n").encode())


def _svhn_mat(labels) -> bytes:
    """An SVHN file as served: MATLAB X [32, 32, 3, N] uint8 and y [N, 1] in 1..10 (10 is 0)."""
    from scipy.io import savemat

    buffer = io.BytesIO()
    savemat(buffer, {"X": _digit_pixels(labels, 32, 3).transpose(1, 2, 3, 0),
                     "y": np.array([[label or 10] for label in labels], np.uint8)})
    return buffer.getvalue()


def _serve_mnist(served: Path, base: str, monkeypatch) -> dict:
    from torchvision.datasets import MNIST

    files = {f"{prefix}-{kind}-idx{dims}-ubyte.gz": _mnist_gz(kind, labels)
             for prefix, labels in (("train", TRAIN_LABELS), ("t10k", TEST_LABELS))
             for kind, dims in (("images", 3), ("labels", 1))}
    (served / "mnist").mkdir()
    for name, content in files.items():
        (served / "mnist" / name).write_bytes(content)
    monkeypatch.setattr(MNIST, "mirrors", [f"{base}/mnist/"])
    monkeypatch.setattr(MNIST, "resources", [(name, _md5(content)) for name, content in files.items()])
    return {name: served / "mnist" / name for name in files}


def _serve_usps(served: Path, base: str, monkeypatch) -> dict:
    from torchvision.datasets import USPS

    files = {"usps.bz2": _usps_bz2(TRAIN_LABELS), "usps.t.bz2": _usps_bz2(TEST_LABELS)}
    for name, content in files.items():
        (served / name).write_bytes(content)
    monkeypatch.setattr(USPS, "split_list", {split: [f"{base}/{name}", name, _md5(files[name])]
                                             for split, name in (("train", "usps.bz2"), ("test", "usps.t.bz2"))})
    return {name: served / name for name in files}


def _serve_svhn(served: Path, base: str, monkeypatch) -> dict:
    from torchvision.datasets import SVHN

    files = {"train_32x32.mat": _svhn_mat(TRAIN_LABELS), "test_32x32.mat": _svhn_mat(TEST_LABELS)}
    (served / "housenumbers").mkdir()
    for name, content in files.items():
        (served / "housenumbers" / name).write_bytes(content)
    monkeypatch.setattr(SVHN, "split_list", {split: [f"{base}/housenumbers/{split}_32x32.mat", f"{split}_32x32.mat",
                                                     _md5(files[f"{split}_32x32.mat"])] for split in ("train", "test")})
    return {name: served / "housenumbers" / name for name in files}


SERVE = {"mnist": _serve_mnist, "usps": _serve_usps, "svhn": _serve_svhn}
NATIVE = {"mnist": (28, 1), "usps": (16, 1), "svhn": (32, 3)}  # side, channels of the original files


@pytest.fixture
def mirror(server, monkeypatch):
    """The local server as the only reachable host; yields (served folder, base URL, requests),
    requests being the paths asked for so far (a list the test may clear)."""
    served, base = server
    requests = []
    send_head = http.server.SimpleHTTPRequestHandler.send_head  # behind do_GET and do_HEAD

    def logged(handler):
        requests.append(handler.path)
        return send_head(handler)

    monkeypatch.setattr(http.server.SimpleHTTPRequestHandler, "send_head", logged)
    urlopen = urllib.request.urlopen

    def local_only(url, *args, **kwargs):
        address = url.full_url if isinstance(url, urllib.request.Request) else url
        assert address.startswith(base + "/"), f"a download left the local mirror: {address}"
        return urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)
    yield served, base, requests


def _snapshot(root: Path) -> dict:
    return {path.relative_to(root).as_posix(): (path.stat().st_mtime_ns, path.stat().st_size)
            for path in sorted(root.rglob("*")) if path.is_file()}


def _assert_reads_back(name: str, root: Path, **options):
    """Both splits of `name` under `root` hold exactly the served images and labels."""
    side, channels = NATIVE[name]
    for split, labels in (("train", TRAIN_LABELS), ("test", TEST_LABELS)):
        domain = digit_domain(name, split, size=side, channels=channels, root=root, **options)
        assert domain.labels.tolist() == labels, (name, split)
        expected = torch.from_numpy(_digit_pixels(labels, side, channels)).permute(0, 3, 1, 2)
        assert torch.equal(domain.images, expected), (name, split)  # source pixels, bit for bit
        image, label = digit_domain(name, split, root=root)[0]  # the models' view: RGB 32x32 in [-1, 1]
        assert image.shape == (3, 32, 32) and label == labels[0]
        assert abs(float(image[:, 16, 16].mean()) - (20 * labels[0] / 127.5 - 1)) < 0.05


@pytest.mark.parametrize("name", ["mnist", "usps", "svhn"])
def test_benchmark_download_through_torchvision(tmp_path, mirror, monkeypatch, name):
    served, base, requests = mirror
    SERVE[name](served, base, monkeypatch)
    root = tmp_path / "data"
    assert download_digits(name, root) == root
    assert requests, "nothing was downloaded"
    for split in ("train", "test"):  # the files digit_domain looks for are all there
        assert all((root / file).is_file() for file in download.DIGIT_FILES[name][split])
    _assert_reads_back(name, root)

    before, requests[:] = _snapshot(root), []
    assert download_digits(name, root) == root  # already there: no request, no file rewritten
    assert requests == [] and _snapshot(root) == before
    _assert_reads_back(name, root, download=True)
    assert requests == [] and _snapshot(root) == before


def test_download_true_fetches_the_papers_pairs(tmp_path, mirror, monkeypatch):
    served, base, requests = mirror
    for name in SERVE:
        SERVE[name](served, base, monkeypatch)
    root = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match="download=True"):
        open_unpaired("mnist:usps", root=root)
    assert requests == []

    pairs = open_unpaired("mnist:usps", phase="test", download=True, root=root)  # the default CyCADA pair
    assert len(pairs) == len(TEST_LABELS)
    sample = pairs[1]
    assert sample["A_label"] == TEST_LABELS[1] and sample["B_label"] == TEST_LABELS[sample["B_index"]]
    assert sample["A"].shape == sample["B"].shape == (3, 32, 32)
    assert not (root / "svhn").exists()  # only what the pair needs

    train = digit_domain("svhn", "train", root=root, download=True)  # SVHN -> MNIST, the one-line change
    assert train.labels.tolist() == TRAIN_LABELS
    requests[:] = []
    svhn_mnist = open_unpaired("svhn:mnist", download=True, root=root)
    assert requests == [] and len(svhn_mnist) == len(TRAIN_LABELS)
    assert svhn_mnist[2]["A_label"] == TRAIN_LABELS[2]


@pytest.mark.parametrize("name, bad", [("mnist", "t10k-images-idx3-ubyte.gz"), ("usps", "usps.t.bz2"),
                                       ("svhn", "test_32x32.mat")])
def test_corrupt_benchmark_download_is_named_and_not_kept(tmp_path, mirror, monkeypatch, name, bad):
    served, base, requests = mirror
    files = SERVE[name](served, base, monkeypatch)
    good = files[bad].read_bytes()
    files[bad].write_bytes(good[: len(good) // 2])  # the server sends a truncated file: its MD5 is wrong
    root = tmp_path / "data"
    with pytest.raises(RuntimeError, match=rf"digit domain '{name}'.*{re.escape(bad)}") as caught:
        download_digits(name, root)
    assert "failed its MD5 check" in str(caught.value)
    assert not list(root.rglob(bad)), "the corrupt file was kept where the readers look"
    with pytest.raises(FileNotFoundError, match="download=True"):
        digit_domain(name, "test", root=root)  # not read as if it were complete

    files[bad].write_bytes(good)  # the mirror is repaired: asking again works
    _assert_reads_back(name, root, download=True)


@pytest.mark.parametrize("name, leftover", [("mnist", "MNIST/raw/train-images-idx3-ubyte.gz"),
                                            ("usps", "usps/usps.bz2"), ("svhn", "svhn/train_32x32.mat")])
def test_benchmark_download_replaces_a_truncated_leftover(tmp_path, mirror, monkeypatch, name, leftover):
    served, base, requests = mirror
    files = SERVE[name](served, base, monkeypatch)
    root = tmp_path / "data"
    content = files[Path(leftover).name].read_bytes()
    (root / leftover).parent.mkdir(parents=True)
    (root / leftover).write_bytes(content[:100])  # e.g. an interrupted earlier download
    download_digits(name, root)
    assert (root / leftover).read_bytes() == content
    _assert_reads_back(name, root)


def test_interrupted_benchmark_download_leaves_no_partial_file(tmp_path, mirror, monkeypatch):
    from torchvision.datasets import utils

    served, base, requests = mirror
    SERVE["svhn"](served, base, monkeypatch)

    def interrupted(url, filename, chunk_size=1024 * 32):  # Ctrl-C halfway through the file
        Path(filename).write_bytes(b"MATLAB 5.0 MAT-file, half of it")
        raise KeyboardInterrupt

    monkeypatch.setattr(utils, "_urlretrieve", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download_digits("svhn", tmp_path / "data")
    assert not (tmp_path / "data").exists()  # no partial file, nor the empty folders the download created


def test_unreachable_mirror_names_the_dataset(tmp_path, mirror, monkeypatch):
    served, base, requests = mirror
    files = SERVE["usps"](served, base, monkeypatch)
    files["usps.bz2"].unlink()  # HTTP 404
    with pytest.raises(RuntimeError, match=r"digit domain 'usps'.*404"):
        download_digits("usps", tmp_path / "data")
    assert not (tmp_path / "data" / "usps" / "usps.bz2").exists()


def test_cycada_gpu_scale_is_the_papers_digit_setting():
    """CyCADAConfig.for_scale('gpu') against the release's digit settings (shared/reference/facts.md)."""
    from cyclelib.cycada import CyCADAConfig, classifier_name

    config = CyCADAConfig.for_scale("gpu")
    assert config.scale == "gpu"
    assert (config.source, config.target) == ("mnist", "usps")  # MNIST -> USPS by default
    assert config.max_samples is None and config.max_eval_samples is None  # the full data sets
    # task networks: LeNet for MNIST <-> USPS, DTN for SVHN -> MNIST
    assert config.classifier == "auto" and classifier_name(config) == "lenet"
    assert classifier_name(CyCADAConfig.for_scale("gpu", source="usps", target="mnist")) == "lenet"
    assert classifier_name(CyCADAConfig.for_scale("gpu", source="svhn", target="mnist")) == "dtn"
    # f_S: Adam 1e-4, batch 128, 100 epochs
    assert (config.task_lr, config.task_batch_size, config.task_epochs) == (1e-4, 128, 100)
    # pixel stage: resnet_9blocks G, PatchGAN D (basic = 3 layers, 64 filters), LSGAN, instance norm,
    # Adam 2e-4 beta1 0.5, batch 100, pool 50, 32x32 RGB
    assert (config.netG, config.ngf, config.netD, config.n_layers_D, config.ndf) == ("resnet_9blocks", 64, "basic",
                                                                                     3, 64)
    assert (config.gan_mode, config.norm) == ("lsgan", "instance")
    assert (config.pixel_lr, config.pixel_beta1, config.pixel_batch_size, config.pool_size) == (2e-4, 0.5, 100, 50)
    assert config.image_size == 32
    # loss weights: cycle 1 per direction, identity 0, GAN 2 (S->T) and 1 (T->S), semantic 1 per direction
    assert (config.lambda_cycle_A, config.lambda_cycle_B, config.lambda_identity) == (1, 1, 0)
    assert (config.lambda_gan_A, config.lambda_gan_B) == (2, 1)
    assert (config.lambda_sem_A, config.lambda_sem_B) == (1, 1)
    # feature stage: Adam 1e-5 for f_T and D, batch 128
    assert (config.feature_lr, config.feature_batch_size) == (1e-5, 128)
