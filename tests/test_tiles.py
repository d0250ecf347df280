"""Tiled translation (cyclelib.tiles): tiles meet without seams, one tile is the direct translation,
any size and channel count comes back at its size, and bad options are refused by name."""
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_images
from torch import nn

from cyclelib import build_generator
from cyclelib import tiles
from cyclelib.names import GENERATORS, Architecture
from cyclelib.tiles import needs_tiling, translate_tiled

# Mean |step| across tile borders over mean |step| a few pixels either side (see seam_ratio), for
# the fitted generator on the photo with tile 128: measured 0.89-1.04 with blending (overlap 16-64,
# either statistics), 27 where tiles are cut hard (6.7 with the image's statistics).
SEAM_BOUND = 1.3


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """scikit-learn's china.jpg, [1, 3, 427, 640] in [-1, 1]."""
    return torch.from_numpy(load_sample_images().images[0].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    """A resnet_2blocks (width 8) fitted for 150 steps to swap red and blue on crops of the other
    sample photo: its output is photo-like and smooth, where an untrained generator's random
    filters give a noisy texture that would hide a seam (measured: a hard cut raises the border
    statistic by only 5-10% there)."""
    torch.manual_seed(0)
    flower = torch.from_numpy(load_sample_images().images[1].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    generator = build_generator("resnet_2blocks", width=8)
    optimizer = torch.optim.Adam(generator.parameters(), 2e-3)
    for _ in range(150):
        tops, lefts = torch.randint(0, 427 - 64, (8,)), torch.randint(0, 640 - 64, (8,))
        x = torch.cat([flower[:, :, t:t + 64, l:l + 64] for t, l in zip(tops, lefts)])
        loss = (generator(x) - x.flip(1)).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return generator.eval()


def seam_ratio(output: torch.Tensor, tile: int, overlap: int) -> float:
    """The larger, over rows and columns, of: the mean absolute step between neighbouring pixels
    across the tiles' edges, over the mean step 2-6 pixels either side of them. About 1 where the
    tiles meet smoothly, large where a tile's edge shows."""
    ratios = []
    for axis in (2, 3):
        steps = output.diff(dim=axis).abs().mean(dim=tuple(d for d in range(4) if d != axis))
        spans = tiles._spans(output.shape[axis], tile, overlap, 4)
        edges = {p - 1 for s in spans.starts for p in (s, s + spans.size) if 0 < p < output.shape[axis]}
        near = [q for p in edges for q in range(p - 6, p + 7) if 2 <= abs(q - p) and 0 <= q < len(steps)]
        ratios.append((steps[sorted(edges)].mean() / steps[near].mean()).item())
    return max(ratios)


@pytest.mark.parametrize("overlap, image_statistics", [(16, True), (32, True), (64, True), (32, False)])
def test_tiles_meet_without_seams(photo, trained, overlap, image_statistics):
    out = translate_tiled(trained, photo, tile=128, overlap=overlap, image_statistics=image_statistics)
    assert out.shape == (1, 3, 427, 640)
    assert seam_ratio(out, 128, overlap) < SEAM_BOUND


@pytest.mark.parametrize("image_statistics, factor", [(False, 5), (True, 2)])
def test_hard_cut_tiles_show_seams(photo, trained, image_statistics, factor):
    """The seam statistic sees a seam: tiles that only touch (overlap 0, sides multiples of the tile)."""
    out = translate_tiled(trained, photo[:, :, :384], tile=128, overlap=0, image_statistics=image_statistics)
    assert seam_ratio(out, 128, 0) > factor * SEAM_BOUND


def test_averaged_overlaps_show_seams(photo, trained, monkeypatch):
    """The ramp is what hides the edges: overlaps averaged with flat weights leave a step where each tile begins."""
    monkeypatch.setattr(tiles, "_window", lambda size, before, after: torch.ones(size))
    out = translate_tiled(trained, photo, tile=128, overlap=32, image_statistics=False)
    assert seam_ratio(out, 128, 32) > 2 * SEAM_BOUND


def test_image_statistics_bring_tiles_close_to_the_whole_image(photo, trained):
    """Each tile normalised by its own statistics drifts from the whole image's translation; the whole image's,
    taken from a downscaled copy, bring it closer. Measured on the [-1, 1] scale for fixture seeds 0-2 under
    native (1 and 2 threads), AVX2 and SSE4.1 kernels: own 0.17-0.27, shared 0.022-0.10, shared at least 2.4
    times smaller; the generator's 150 training steps differ from kernel to kernel, so the bound is relative."""
    corner = photo[:, :, :128, :128]
    with torch.no_grad():
        whole = trained(F.pad(photo, (0, 0, 0, 1), mode="reflect"))[:, :, :427]
        before = trained(corner)
    own = (translate_tiled(trained, photo, tile=128, overlap=32, image_statistics=False) - whole).abs().mean()
    shared = (translate_tiled(trained, photo, tile=128, overlap=32) - whole).abs().mean()
    assert shared < own / 2 and own > 0.1
    with torch.no_grad():
        assert torch.equal(trained(corner), before)  # the generator is left as it was


@pytest.mark.parametrize("height, width", [(96, 128), (101, 150), (427, 640), (1, 1), (130, 259)])
def test_tiles_blend_to_one(height, width, monkeypatch):
    """Weights sum to 1 everywhere: an identity 'generator' gives the image back exactly, at any size."""
    # registered for this test, so that fits knows it gives back images of its input's size
    monkeypatch.setitem(GENERATORS.families, "identity", Architecture("identity", "identity", cls=nn.Identity))
    identity = nn.Identity()
    identity.input_nc = 2
    image = torch.rand(1, 2, height, width)
    assert torch.allclose(translate_tiled(identity, image, tile=64, overlap=24, batch_size=3), image, atol=1e-6)


@pytest.mark.parametrize("height, width", [(96, 128), (101, 150)])
def test_image_within_one_tile_is_the_direct_translation(height, width):
    torch.manual_seed(0)
    generator = build_generator("resnet_2blocks", width=8).eval()
    image = torch.rand(1, 3, height, width) * 2 - 1
    padded = F.pad(image, (0, -width % 4, 0, -height % 4), mode="reflect")
    with torch.no_grad():
        direct = generator(padded)[:, :, :height, :width]
    assert torch.allclose(translate_tiled(generator, image, tile=512), direct, atol=1e-5)


def test_odd_sizes_channels_and_batches():
    torch.manual_seed(0)
    generator = build_generator("resnet_2blocks", input_nc=1, output_nc=3, width=8).eval()
    image = torch.rand(1, 1, 301, 197) * 2 - 1
    one_at_a_time = translate_tiled(generator, image, tile=96, overlap=20, batch_size=1)
    assert one_at_a_time.shape == (1, 3, 301, 197) and one_at_a_time.dtype == torch.float32
    assert one_at_a_time.abs().max() <= 1
    # tiles batched together are normalised each on its own (instance norm), as one at a time
    assert torch.allclose(translate_tiled(generator, image, tile=96, overlap=20, batch_size=7), one_at_a_time,
                          atol=1e-5)


def test_bad_options_are_refused_by_name():
    generator = build_generator("resnet_2blocks", width=8).eval()
    image = torch.zeros(1, 3, 64, 64)
    for options, name in [(dict(tile=0), "tile"), (dict(tile=-4), "tile"), (dict(tile=130), "tile must be a "
                          "positive multiple of 4"), (dict(tile=64, overlap=64), "overlap"),
                          (dict(overlap=-1), "overlap"), (dict(batch_size=0), "batch_size"),
                          (dict(tile=4, overlap=0), "too small for this generator")]:
        with pytest.raises(ValueError, match=name):
            translate_tiled(generator, image, **options)
    for wrong in (torch.zeros(3, 64, 64), torch.zeros(2, 3, 64, 64), torch.zeros(1, 1, 64, 64)):
        with pytest.raises(ValueError, match=r"one image \[1, 3, H, W\]"):
            translate_tiled(generator, wrong)


def test_needs_tiling():
    assert not needs_tiling((1, 3, 1024, 1024)) and needs_tiling((3, 1024, 1025))
    assert needs_tiling((1, 3, 40, 40), budget=1599) and not needs_tiling((1, 3, 40, 40), budget=1600)
    with pytest.raises(ValueError, match="budget"):
        needs_tiling((1, 3, 40, 40), budget=0)


def test_noise_generator_draws_once_per_image():
    torch.manual_seed(0)
    generator = build_generator("resnet_2blocks", width=8, noise_nc=2, noise_injection="modulate").eval()
    image = torch.rand(1, 3, 64, 96) * 2 - 1
    torch.manual_seed(1)
    tiled = translate_tiled(generator, image, tile=128)
    torch.manual_seed(1)
    with torch.no_grad():
        assert torch.allclose(tiled, generator(image), atol=1e-5)


def test_translate_tile_translates_each_image_in_tiles(tmp_path, photo, trained):
    """``cyclelib translate --tile``: each image goes through translate_tiled (a photo larger than a
    tile comes back at its size, as the tiles blend it), and a bad overlap is refused by name."""
    import numpy as np
    from PIL import Image

    from cyclelib import save_official
    from cyclelib.images import read_image
    from cyclelib.images import write_image
    from helpers import cli

    save_official(trained, tmp_path / "G.pth")
    (tmp_path / "in").mkdir()
    crop = photo[:, :, :150, :230]
    write_image(crop[0], tmp_path / "in" / "photo.png")
    arguments = ["translate", "--checkpoint", str(tmp_path / "G.pth"), "--arch", "resnet_2blocks", "--width", "8",
                 "--input", str(tmp_path / "in"), "--tile", "64"]
    assert cli(*arguments, "--overlap", "16", "--output", str(tmp_path / "out"))[0] == 0
    expected = translate_tiled(trained, read_image(tmp_path / "in" / "photo.png")[None], 64, 16)
    write_image(expected[0], tmp_path / "expected.png")
    result = np.asarray(Image.open(tmp_path / "out" / "photo.png"))
    assert result.shape == (150, 230, 3)
    assert np.array_equal(result, np.asarray(Image.open(tmp_path / "expected.png")))
    code, err = cli(*arguments, "--overlap", "64", "--output", str(tmp_path / "bad"))
    assert code == 2 and "overlap" in err
