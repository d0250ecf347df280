"""Downloads of the driving scenes (cyclelib.driving's download_gta5, download_cyclegta5), offline: a local HTTP server on
127.0.0.1 stands in for the GTA5 site and the release's server, serving tiny archives in their
official layouts (``images/NNNNN.png``, ``labels/NNNNN.png`` palette label maps of Cityscapes ids)
written here; what lands on disk is read back with cyclelib.driving.gta5."""
import io
import re
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from cyclelib import download, driving, gta5
from cyclelib.download import DownloadError
from cyclelib.driving import download_cyclegta5, download_gta5
from helpers import RangeServer, cli, rgb

ROAD, CAR = 7, 26  # Cityscapes label ids of train ids 0 and 13


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _label_map(frame: int) -> Image.Image:
    """A 6x4 palette label map of Cityscapes ids, GTA5's format: road, with car in the lower half of odd frames."""
    ids = np.full((4, 6), ROAD, dtype=np.uint8)
    ids[2:] = CAR if frame % 2 else ROAD
    labels = Image.fromarray(ids, mode="P")
    labels.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    return labels


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _frames(part: int) -> list[int]:
    """Two frames per part: part 1 holds 00001, 00002; part 2 holds 00003, 00004; ..."""
    return [2 * part - 1, 2 * part]


@pytest.fixture
def sites(monkeypatch):
    """The local server as the GTA5 site (every part, images and labels) and the release's server
    (cyclegta.zip: translated images of frames 1 and 3 only, inside a top folder)."""
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with RangeServer() as server:
        monkeypatch.setattr(driving, "GTA5_URL", server.base + "/{part:02d}_{kind}.zip")
        monkeypatch.setattr(driving, "CYCLEGTA5_URL", server.base + "/cyclegta.zip")
        monkeypatch.setattr(download, "tqdm", None)
        for part in range(1, 11):
            frames = _frames(part)
            server.files[f"/{part:02d}_images.zip"] = _zip({f"images/{f:05d}.png": _png(rgb(6, 4, seed=f))
                                                            for f in frames})
            server.files[f"/{part:02d}_labels.zip"] = _zip({f"labels/{f:05d}.png": _png(_label_map(f))
                                                            for f in frames})
        server.files["/cyclegta.zip"] = _zip({f"cyclegta/images/{f:05d}.png": _png(rgb(6, 4, seed=100 + f))
                                              for f in (1, 3)})
        yield server


def test_gta5_parts_land_in_the_layout_gta5_reads(tmp_path, sites, capsys):
    code, err = cli("download", "gta5", "--root", str(tmp_path), "--parts", "1", "2")
    root = tmp_path / "gta5"
    assert code == 0, err
    assert f"--source gta5:{root} " in capsys.readouterr().out
    scenes = gta5(root)
    assert [pair[0].name for pair in scenes.pairs] == ["00001.png", "00002.png", "00003.png", "00004.png"]
    image, labels = scenes[0]
    assert image.shape == (3, 4, 6)
    assert torch.equal(labels[:2], torch.zeros(2, 6, dtype=torch.int64))  # road -> train id 0
    assert torch.equal(labels[2:], torch.full((2, 6), 13))  # car -> train id 13
    assert sorted(p.name for p in root.iterdir()) == [".downloaded", "images", "labels"]  # no archive, no .part
    assert sites.paths == ["/01_images.zip", "/01_labels.zip", "/02_images.zip", "/02_labels.zip"]

    assert download_gta5(tmp_path, [1, 2, 3]) == root  # parts done before are skipped
    assert sites.paths[4:] == ["/03_images.zip", "/03_labels.zip"] and len(gta5(root)) == 6


def test_cyclegta5_holds_the_translated_images_with_their_gta5_labels(tmp_path, sites, capsys):
    code, err = cli("download", "cyclegta5", "--root", str(tmp_path))
    root = tmp_path / "cyclegta5"
    assert code == 0, err
    scenes = gta5(root)  # every label map has its image: gta5() reads the folder whole
    assert [pair[1].name for pair in scenes.pairs] == ["00001.png", "00003.png"]
    assert scenes.pairs[0][0].read_bytes() == _png(rgb(6, 4, seed=101))  # the translated image
    assert sites.paths == ["/cyclegta.zip", *(f"/{part:02d}_labels.zip" for part in range(1, 11))]


def test_an_interrupted_download_is_resumed(tmp_path, sites):
    sites.cut.add("/01_images.zip")
    body = sites.files["/01_images.zip"]
    part = tmp_path / "gta5" / "01_images.zip.part"
    with pytest.raises(DownloadError, match=rf"01_images\.zip.*run it again to resume from {re.escape(str(part))}$"):
        download_gta5(tmp_path, [1])
    assert part.read_bytes() == body[:len(body) // 2]

    download_gta5(tmp_path, [1])
    assert sites.ranges == [None, f"bytes={len(body) // 2}-", None]  # the rest of the images, then the labels
    assert len(gta5(tmp_path / "gta5")) == 2


def test_a_corrupt_archive_is_named_deleted_and_downloaded_again(tmp_path, sites):
    good = sites.files["/01_labels.zip"]
    damaged = bytearray(good)
    damaged[good.index(b"IDAT") + 8] ^= 0xFF  # inside a stored member: its CRC no longer matches
    sites.files["/01_labels.zip"] = bytes(damaged)
    with pytest.raises(DownloadError, match=r"corrupt zip from http://127\.0\.0\.1:\d+/01_labels\.zip: member "
                                            r"labels/00001\.png is damaged; download it again"):
        download_gta5(tmp_path, [1])
    assert not (tmp_path / "gta5" / "01_labels.zip").exists()
    assert not (tmp_path / "gta5" / ".downloaded" / "01_labels.zip").exists()

    sites.files["/01_labels.zip"] = b"<html>not found</html>"
    with pytest.raises(DownloadError, match=r"01_labels\.zip did not give a zip or tar archive"):
        download_gta5(tmp_path, [1])

    sites.files["/01_labels.zip"] = good
    download_gta5(tmp_path, [1])  # the images part, done before, is not fetched again
    assert sites.paths == ["/01_images.zip", *["/01_labels.zip"] * 3] and len(gta5(tmp_path / "gta5")) == 2


def test_an_archive_of_other_files_is_refused(tmp_path, sites):
    sites.files["/cyclegta.zip"] = _zip({"readme.txt": b"moved"})
    with pytest.raises(DownloadError, match=r"cyclegta\.zip holds no PNG files in images/ \(found: readme\.txt\)"):
        download_cyclegta5(tmp_path)
    sites.files["/cyclegta.zip"] = _zip({"images/00001_fake_B.png": _png(rgb(6, 4))})
    with pytest.raises(DownloadError, match=r"images/00001_fake_B\.png is not named like a GTA5 frame"):
        download_cyclegta5(tmp_path)
    assert not (tmp_path / "cyclegta5" / "images").exists()


def test_a_part_out_of_range_is_refused(tmp_path, offline):
    with pytest.raises(ValueError, match=r"unknown GTA5 part 0; valid values: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10$"):
        download_gta5(tmp_path, [0])
    code, err = cli("download", "gta5", "--root", str(tmp_path), "--parts", "11")
    assert code == 2 and "cyclelib: error: argument --parts: unknown GTA5 part '11'; valid values: 1, 2," in err
    code, err = cli("download", "cyclegta5", "--root", str(tmp_path), "--parts", "1")
    assert code == 2 and "cyclelib: error: --parts picks parts of gta5 only, and cyclegta5 has none" in err
    assert list(tmp_path.iterdir()) == []


def test_the_cityscapes_steps_say_what_segmentation_and_the_cyclegan_pair_need(tmp_path, offline):
    code, err = cli("download", "cityscapes", "--root", str(tmp_path))
    assert code == 1
    segmentation, pair = err.split("For segmentation")[1].split("For the CycleGAN pair")
    assert "--target cityscapes:DIR): unzip both into one folder DIR, which then holds leftImg8bit/ and gtFine/" \
        in segmentation
    assert "prepare_cityscapes_dataset.py" in pair and "leftImg8bit_trainvaltest.zip" in err
