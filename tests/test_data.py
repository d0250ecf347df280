"""Tests for cyclelib.data: image folders, unpaired pairing, digit domains, downloads.

Everything runs offline: the digit benchmarks are faked in their original file formats
and downloads are served from a local HTTP server or file:// URLs.
"""

import bz2
import functools
import hashlib
import http.server
import io
import struct
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclelib import data
from cyclelib.data import (ImageFolderDomain, Unpaired, UnpairedImageFolder, digit_domain,
                           download_dataset, download_digits, load_image, open_unpaired, read_image,
                           transform_image)

SMALL = dict(load_size=36, crop_size=32)


def _rgb(width, height, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _write_domain(folder: Path, count: int, size=(40, 30), offset=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        _rgb(*size, seed=offset + i).save(folder / f"{i:03d}.png")


@pytest.fixture
def dataset_root(tmp_path):
    """Official layout with 3 A and 5 B images (train) and 2 + 2 (test)."""
    root = tmp_path / "toy"
    _write_domain(root / "trainA", 3)
    _write_domain(root / "trainB", 5, offset=10)
    _write_domain(root / "testA", 2, offset=20)
    _write_domain(root / "testB", 2, offset=30)
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
    _rgb(64, 64).save(buffer, "PNG")
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
    _rgb(60, 80).save(tmp_path / "tall.png")
    domain = ImageFolderDomain(tmp_path, preprocess=preprocess, **SMALL)
    image = domain.get(0, torch.Generator().manual_seed(0))
    assert image.shape == shape and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1


def test_none_rounds_sides_to_multiples_of_4(tmp_path):
    _rgb(61, 43).save(tmp_path / "odd.png")
    assert ImageFolderDomain(tmp_path, preprocess="none").get(0).shape == (3, 44, 60)


def test_randomness_comes_only_from_the_generator(tmp_path):
    _rgb(50, 40).save(tmp_path / "x.png")
    domain = ImageFolderDomain(tmp_path, **SMALL)
    torch.manual_seed(1)
    first = domain.get(0, torch.Generator().manual_seed(7))
    torch.manual_seed(2)  # the global RNG must not matter
    assert torch.equal(first, domain.get(0, torch.Generator().manual_seed(7)))
    others = [domain.get(0, torch.Generator().manual_seed(seed)) for seed in range(8)]
    assert any(not torch.equal(first, other) for other in others)


def test_flip_is_a_mirror_and_no_generator_means_centre_crop(tmp_path):
    img = _rgb(40, 40)
    centre = transform_image(img, "crop", 0, 32, flip=True, generator=None)
    assert np.array_equal(np.array(centre), np.array(img)[4:36, 4:36])
    flips = {np.array_equal(np.array(transform_image(img, "none", 0, 0, True, torch.Generator().manual_seed(s))),
                            np.array(img)[:, ::-1]) for s in range(10)}
    assert flips == {True, False}


def test_option_errors_name_the_options(tmp_path):
    _rgb(20, 20).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="crop_size=64.*load_size=32"):
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
    _rgb(8, 8).save(tmp_path / "b.PNG")
    (tmp_path / "sub").mkdir()
    _rgb(8, 8).save(tmp_path / "sub" / "a.JPEG", "JPEG")
    _rgb(8, 8).save(tmp_path / "a.webp")
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
    expected = np.array(_rgb(40, 30, seed=20).resize((32, 32), Image.Resampling.BICUBIC))  # resize only, no flip
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


# --------------------------------------------------------------------------- downloads


def _zip_bytes(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _png_bytes(seed) -> bytes:
    buffer = io.BytesIO()
    _rgb(40, 30, seed).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on a free port serving tmp_path/served; yields its base URL."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


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
    monkeypatch.setattr(data, "MNISTM_URL", archive.as_uri())
    with pytest.raises(RuntimeError, match="MD5"):
        download_digits("mnistm", tmp_path / "wrong")
    monkeypatch.setattr(data, "MNISTM_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    domain = digit_domain("mnistm", "test", root=tmp_path / "data", download=True)
    assert domain.labels.tolist() == [4, 2]
