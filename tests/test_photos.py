"""The offline photo pair (photos.write_photo_pair): layout, sizes, determinism, disjoint splits, the style."""
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from cyclelib import open_unpaired, poster_paint, write_photo_pair
from cyclelib.photos import PHOTO_SIZE, photo_test_tiles
from cyclelib.images import list_images, read_image

SIZE = 16  # small crops keep the tests fast; the geometry does not depend on the size


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return write_photo_pair(tmp_path_factory.mktemp("photos"), size=SIZE, train=12, test=6)


@pytest.fixture(scope="module")
def photos():
    """The two sample photos as the pair shrinks them, uint8 [214, 320, 3] each."""
    return [np.asarray(Image.fromarray(p).resize(PHOTO_SIZE, Image.Resampling.LANCZOS))
            for p in load_sample_images().images]


def test_writes_the_official_layout_with_the_asked_counts_and_sizes(pair):
    counts = {split: len(list_images(pair / split)) for split in ("trainA", "trainB", "testA", "testB")}
    assert counts == {"trainA": 12, "trainB": 12, "testA": 6, "testB": 6}
    for path in list_images(pair):
        with Image.open(path) as img:
            assert img.size == (SIZE, SIZE) and img.mode == "RGB", path


def test_the_pair_is_a_pure_function_of_its_arguments(pair, tmp_path):
    again = write_photo_pair(tmp_path / "again", size=SIZE, train=12, test=6)
    other_seed = write_photo_pair(tmp_path / "other", size=SIZE, train=12, test=6, seed=1)
    files = [p.relative_to(pair) for p in list_images(pair)]
    assert files == [p.relative_to(again) for p in list_images(again)]
    assert all((pair / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert any((pair / f).read_bytes() != (other_seed / f).read_bytes() for f in files)
    write_photo_pair(pair, size=SIZE, train=12, test=6)  # rewriting its own files is allowed
    assert all((pair / f).read_bytes() == (again / f).read_bytes() for f in files)


def where(crop, photos):
    """(photo index, top, left) of every place where ``crop`` [s, s, 3] occurs in ``photos``."""
    s = crop.shape[0]
    found = []
    for k, photo in enumerate(photos):
        for top, left in zip(*np.nonzero((photo[:-s + 1, :-s + 1] == crop[0, 0]).all(axis=-1))):
            if np.array_equal(photo[top:top + s, left:left + s], crop):
                found.append((k, int(top), int(left)))
    return found


def test_test_crops_share_no_pixel_with_train_crops(pair, photos):
    tiles = photo_test_tiles()
    assert len(tiles) == 3
    for split in ("trainA", "testA"):
        places = [where(np.asarray(Image.open(p)), photos) for p in list_images(pair / split)]
        assert all(places), f"{split}: every A image is a crop of one of the shrunk photos"
        crops = [(top, left, top + SIZE, left + SIZE) for found in places for _, top, left in found]
        for top, left, bottom, right in crops:
            inside = [t <= top and bottom <= b and l <= left and right <= r for t, l, b, r in tiles]
            touches = [top < b and bottom > t and left < r and right > l for t, l, b, r in tiles]
            if split == "testA":
                assert any(inside), f"test crop at ({top}, {left}) is inside a test tile"
            else:
                assert not any(touches), f"train crop at ({top}, {left}) overlaps no test tile"
        assert {k for found in places for k, _, _ in found} == {0, 1}, f"{split}: crops of both photos"


def test_b_images_are_painted_with_the_style_levels(pair):
    levels = set(range(0, 255, 32)) | {255}
    for path in list_images(pair / "trainB") + list_images(pair / "testB"):
        assert set(np.unique(np.asarray(Image.open(path)))) <= levels, path
    # A images are photographs, with far more levels than the style's nine
    assert len(np.unique(np.asarray(Image.open(list_images(pair / "trainA")[0])))) > len(levels)


def test_the_style_changes_texture_but_keeps_the_mean_colour(photos):
    rng = np.random.default_rng(0)
    shifts, changes = [], []
    for _ in range(40):
        photo = photos[int(rng.integers(2))]
        top, left = int(rng.integers(214 - 64)), int(rng.integers(320 - 64))
        crop = Image.fromarray(photo[top:top + 64, left:left + 64])
        x = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 127.5 - 1)  # [64, 64, 3] in [-1, 1]
        y = torch.from_numpy(np.asarray(poster_paint(crop), dtype=np.float32) / 127.5 - 1)
        shifts.append((y.mean(dim=(0, 1)) - x.mean(dim=(0, 1))).abs())  # [3] per channel
        changes.append((y - x).abs().mean())
    shift, change = torch.stack(shifts).mean().item(), torch.stack(changes).mean().item()
    assert shift < 0.03, "on average the style moves a channel's mean by less than 0.03 (of the range 2)"
    assert change > 3 * shift, "while it changes the pixels themselves several times as much"


def test_the_pair_opens_as_an_unpaired_image_folder(pair):
    data = open_unpaired(str(pair), phase="test", preprocess="none", load_size=SIZE, crop_size=SIZE)
    sample = data[0]
    assert len(data) == 6 and sample["A"].shape == sample["B"].shape == (3, SIZE, SIZE)
    assert torch.equal(sample["A"], read_image(pair / "testA" / "0000.png"))


def test_bad_arguments_and_foreign_files_are_refused(pair, tmp_path):
    with pytest.raises(ValueError, match="size must be between 1 and 71"):
        write_photo_pair(tmp_path / "big", size=80)
    with pytest.raises(ValueError, match="at least 1 image"):
        write_photo_pair(tmp_path / "none", train=0)
    with pytest.raises(FileExistsError, match="0006.png"):  # 12 train images, then only 6: 0006.png is not its own
        write_photo_pair(pair, size=SIZE, train=6, test=6)
