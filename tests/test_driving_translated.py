"""The translated source of driving scenes lives on disk, not in memory (issue 26, the gpu preset: GTA5's 24,966
frames at a shorter side of 1024 would take about 570 GB as float32 tensors): the pixel_only and feature stages
translate each whole frame once into OUT/translated/ and read the PNG files as they read the source, in random flipped
crops. Tiny GTA5 and Cityscapes files in their official layouts; one GTA5 frame has another size."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclelib import run_cycada, segmentation
from cyclelib.cycada import translated_source
from cyclelib.distributed import RunContext
from cyclelib.driving import gta5
from cyclelib.images import load_image, to_tensor
from cyclelib.networks import build_generator
from cyclelib.translate import translate_image
from helpers import driving_smoke, palette_png, rgb, write_driving

CPU = RunContext(torch.device("cpu"))


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("driving")
    domains = write_driving(root, scenes=4)
    rgb(40, 36, seed=99).save(root / "gta5" / "images" / "00099.png")  # a frame of another size, as some of GTA5's
    palette_png(root / "gta5" / "labels" / "00099.png", np.full((36, 40), 7, dtype=np.uint8))  # all road
    return domains


def generator(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_generator("resnet_1blocks", width=4)


def test_each_whole_frame_is_translated_once_into_a_png_and_read_in_crops(domains, tmp_path):
    config = driving_smoke(tmp_path / "run", domains, image_size=16, crop_size=8)
    G = generator(0)
    translated = translated_source(config, G, CPU)
    frames = gta5(config.source.split(":", 1)[1], size=16)  # whole frames at a shorter side of 16
    written = sorted((tmp_path / "run" / "translated").glob("*.png"))
    assert len(written) == len(frames) == len(translated) == 5
    for path, (frame, _) in zip(written, frames):
        with torch.no_grad():
            expected = translate_image(G.eval(), frame[None])[0]  # [3, H, W]: the frame's own size, not a square
        stored = to_tensor(load_image(path))
        assert stored.shape == frame.shape
        assert (stored - expected).abs().max() <= 1 / 255 + 1e-6  # 8-bit PNG rounding only
    # read as the source is: 8-pixel crops, flipped at random, with the labels of the source's frames
    generator_ = torch.Generator().manual_seed(0)
    crops = [translated.get(i, generator_) for i in range(len(translated))]
    assert all(x.shape == (3, 8, 8) and y.shape == (8, 8) for x, y in crops)
    assert torch.equal(crops[-1][1], torch.zeros(8, 8, dtype=torch.long))  # the odd frame is road (train id 0)
    made_by = json.loads((tmp_path / "run" / "translated" / "made_by.json").read_text())
    assert made_by == {"generator_sha256": segmentation.weights_sha256(G), "image_size": 16, "frames": 5}


def test_a_translated_folder_is_reused_only_for_the_same_generator_and_size(domains, tmp_path, monkeypatch):
    config = driving_smoke(tmp_path / "run", domains, image_size=16, crop_size=8)
    translated_source(config, generator(0), CPU)
    first = (tmp_path / "run" / "translated" / "000000.png").read_bytes()
    writes = []
    write = segmentation.write_image
    monkeypatch.setattr(segmentation, "write_image", lambda image, path: writes.append(path) or write(image, path))
    translated_source(config, generator(0), CPU)  # the same weights: nothing is translated again
    assert writes == []
    translated_source(config, generator(1), CPU)  # other weights: every frame again
    assert len(writes) == 5 and (tmp_path / "run" / "translated" / "000000.png").read_bytes() != first
    writes.clear()
    bigger = driving_smoke(tmp_path / "run", domains, image_size=20, crop_size=8)
    translated_source(bigger, generator(1), CPU)  # another image size: again
    assert len(writes) == 5 and Image.open(tmp_path / "run" / "translated" / "000000.png").size == (30, 20)
    writes.clear()
    (tmp_path / "run" / "translated" / "made_by.json").write_text("{not json")
    translated_source(bigger, generator(1), CPU)  # an unreadable record: again, never trusted
    assert len(writes) == 5


def test_a_translation_cut_short_is_done_again(domains, tmp_path, monkeypatch):
    config = driving_smoke(tmp_path / "run", domains, image_size=16, crop_size=8)
    translated_source(config, generator(0), CPU)
    write, writes = segmentation.write_image, []

    def failing(image, path):
        if len(writes) == 2:
            raise KeyboardInterrupt  # stopped while generator 1's frames replace generator 0's
        writes.append(path)
        return write(image, path)

    monkeypatch.setattr(segmentation, "write_image", failing)
    with pytest.raises(KeyboardInterrupt):
        translated_source(config, generator(1), CPU)
    monkeypatch.setattr(segmentation, "write_image", lambda image, path: writes.append(path) or write(image, path))
    writes.clear()
    translated_source(config, generator(0), CPU)  # two frames are generator 1's now: not reused as generator 0's
    assert len(writes) == 5


def test_digits_stay_in_memory(tmp_path):
    config = driving_smoke(tmp_path / "run", {"source": "mnist-scenes", "target": "mnistm-scenes"}, crop_size=None,
                           max_samples=4)
    translated = translated_source(config, generator(0), CPU)
    assert isinstance(translated, torch.utils.data.TensorDataset) and not (tmp_path / "run" / "translated").exists()


def test_pixel_only_and_feature_train_on_the_translated_frames(domains, tmp_path):
    config = driving_smoke(tmp_path / "run", domains, image_size=16, crop_size=8)
    metrics = run_cycada(config, stages=("source", "pixel", "pixel_only", "feature"), progress=False)
    assert all(0 <= metrics[key] <= 1 for key in ("source_only", "pixel_only", "pixel_feature"))
    assert len(list(Path(config.out, "translated").glob("*.png"))) == 5
