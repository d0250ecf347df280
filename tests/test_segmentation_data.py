"""GTA5 and Cityscapes read from tiny files written in their official layouts."""
import numpy as np
import pytest
import torch
from PIL import Image

from cyclelib.driving import CITYSCAPES_CLASSES, cityscapes, gta5, train_ids
from helpers import palette_png

# Cityscapes label ids and their train ids (cityscapesScripts' labels.py): 7 road -> 0, 8 sidewalk -> 1,
# 26 car -> 13, 33 bicycle -> 18; 0 unlabeled, 4 static, 34 (no label) and 250 are ignored
IDS = np.array([[7, 8, 26, 33], [0, 4, 34, 250]], dtype=np.uint8)
TRAIN_IDS = np.array([[0, 1, 13, 18], [255, 255, 255, 255]])


def rgb_png(path, width, height, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, dtype=np.uint8)).save(path)


def write_gta5(root, names=("00001.png", "00002.png")):
    for name in names:
        rgb_png(root / "images" / name, 4, 2)
        palette_png(root / "labels" / name, IDS)
    return root


def test_the_id_map_is_cityscapes_with_255_for_the_rest():
    assert np.array_equal(train_ids(IDS), TRAIN_IDS)
    assert sorted(set(train_ids(np.arange(-1, 300)).tolist())) == list(range(19)) + [255]
    assert len(CITYSCAPES_CLASSES) == 19


def test_gta5_maps_the_palette_indices_to_train_ids(tmp_path):
    data = gta5(write_gta5(tmp_path))
    assert len(data) == 2
    image, labels = data[0]
    assert image.shape == (3, 2, 4) and labels.dtype == torch.long
    assert np.array_equal(labels.numpy(), TRAIN_IDS)  # the indices, not the palette's colours


def test_gta5_names_an_image_without_its_label_map(tmp_path):
    write_gta5(tmp_path)
    rgb_png(tmp_path / "images" / "00003.png", 4, 2)
    with pytest.raises(FileNotFoundError, match=r"00003.png has no label map"):
        gta5(tmp_path)
    (tmp_path / "images" / "00003.png").unlink()
    (tmp_path / "images" / "00002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"labels/00002.png has no image"):
        gta5(tmp_path)


def test_empty_folders_are_named(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(FileNotFoundError, match=f"GTA5: no image or label files under {tmp_path}"):
        gta5(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"GTA5: .*nothing/images does not exist"):
        gta5(tmp_path / "nothing")


def test_gta5_splits_come_from_split_mat(tmp_path):
    from scipy.io import savemat

    write_gta5(tmp_path, ("00001.png", "00002.png", "00003.png"))
    with pytest.raises(FileNotFoundError, match="split.mat"):
        gta5(tmp_path, split="train")
    savemat(tmp_path / "split.mat", {"trainIds": np.array([[1], [3]]), "valIds": np.array([[2]]),
                                     "testIds": np.array([[4]])})
    assert [p.name for p, _ in gta5(tmp_path, split="train").pairs] == ["00001.png", "00003.png"]
    with pytest.raises(FileNotFoundError, match="00004.png of split 'test' is missing"):
        gta5(tmp_path, split="test")
    with pytest.raises(ValueError, match="valid values: all, train, val, test"):
        gta5(tmp_path, split="extra")


def write_cityscapes(root, split="val", city="frankfurt", stem="frankfurt_000000_000294"):
    rgb_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", 4, 2)
    labels = root / "gtFine" / split / city
    labels.mkdir(parents=True, exist_ok=True)
    Image.fromarray(IDS, mode="L").save(labels / f"{stem}_gtFine_labelIds.png")
    Image.fromarray(TRAIN_IDS.astype(np.uint8), mode="L").save(labels / f"{stem}_gtFine_labelTrainIds.png")
    Image.fromarray(np.zeros((2, 4, 3), dtype=np.uint8)).save(labels / f"{stem}_gtFine_color.png")
    return root


def test_cityscapes_reads_label_ids_or_train_ids(tmp_path):
    write_cityscapes(tmp_path)
    write_cityscapes(tmp_path, city="lindau", stem="lindau_000001_000019")
    for kind in ("labelIds", "labelTrainIds"):
        data = cityscapes(tmp_path, "val", labels=kind)
        assert len(data) == 2 and data.pairs[0][0].name == "frankfurt_000000_000294_leftImg8bit.png"
        assert np.array_equal(data[1][1].numpy(), TRAIN_IDS)
    with pytest.raises(ValueError, match="valid values: labelIds, labelTrainIds"):
        cityscapes(tmp_path, "val", labels="color")
    with pytest.raises(FileNotFoundError, match="leftImg8bit/train"):
        cityscapes(tmp_path, "train")


def test_cityscapes_names_an_image_without_its_label_map(tmp_path):
    write_cityscapes(tmp_path)
    rgb_png(tmp_path / "leftImg8bit" / "val" / "ulm" / "ulm_000000_000001_leftImg8bit.png", 4, 2)
    with pytest.raises(FileNotFoundError, match="ulm_000000_000001_leftImg8bit.png has no label map"):
        cityscapes(tmp_path, "val")


def test_a_colour_label_map_is_named(tmp_path):
    write_gta5(tmp_path)
    rgb_png(tmp_path / "labels" / "00001.png", 4, 2)
    with pytest.raises(ValueError, match=r"00001.png is a RGB image"):
        gta5(tmp_path)[0]


def test_resize_crop_and_flip_keep_image_and_labels_aligned(tmp_path):
    # an image whose red channel is 10 x its label id column, so alignment can be read back
    ids = np.tile(np.array([7, 8, 11, 12, 13, 17, 19, 20], dtype=np.uint8), (6, 1))  # train ids 0..7
    palette_png(tmp_path / "labels" / "00001.png", ids)
    image = np.zeros((6, 8, 3), dtype=np.uint8)
    image[..., 0] = 10 * np.arange(8)
    (tmp_path / "images").mkdir()
    Image.fromarray(image).save(tmp_path / "images" / "00001.png")

    big = gta5(tmp_path, size=12)[0]  # shorter side 6 -> 12: 12 x 16, labels by nearest neighbour
    assert big[0].shape == (3, 12, 16) and big[1].shape == (12, 16)
    assert sorted(set(big[1].flatten().tolist())) == list(range(8))

    data = gta5(tmp_path, crop=4, flip=True)
    centre = data[0]  # no generator: the centre crop, unflipped
    assert torch.equal(centre[1][0], torch.tensor([2, 3, 4, 5]))
    flipped = set()
    for seed in range(8):
        x, y = data.get(0, torch.Generator().manual_seed(seed))
        assert x.shape == (3, 4, 4) and y.shape == (4, 4)
        red = torch.round((x[0] + 1) * 127.5 / 10).long()  # back to the column index = train id
        assert torch.equal(red, y)
        flipped.add(bool(y[0, 0] > y[0, -1]))
    assert flipped == {True, False}
    with pytest.raises(ValueError, match="crop 7 is larger than"):
        gta5(tmp_path, crop=7)[0]
