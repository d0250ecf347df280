"""GTA5 -> Cityscapes at the gpu scale (issue 26): the pixel stage's own crops of driving scenes (option
pixel_crop_size, the release's CycleGAN trains on 400-pixel crops), and the time the release's setting takes
by benchmarks/estimate_gpu_time.py. Every run is a smoke run on the CPU on tiny GTA5 and Cityscapes files
written in their official layouts."""
from __future__ import annotations

import pytest
import torch

from cyclelib import CyCADAConfig, run_cycada
from cyclelib import cycada
from cyclelib.cycada import stage_checkpoint
from cyclelib.cyclegan import CycleGAN
from helpers import cli, driving_smoke, write_driving

GPU_DRIVING = dict(task="segmentation", source="gta5:/data/gta5", target="cityscapes:/data/cs")


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    return write_driving(tmp_path_factory.mktemp("driving"))


# ----------------------------------------------------------------------------- the pixel stage's crops


def test_the_gpu_preset_crops_the_pixel_stage_as_the_releases_cyclegan():
    config = CyCADAConfig.for_scale("gpu", **GPU_DRIVING)
    pixel = config.pixel_config("out")
    # scenes at a shorter side of 1024 (CycleGAN's load_size), random flipped crops of 400 (its crop_size)
    assert (config.pixel_crop_size, pixel.load_size, pixel.crop_size, pixel.flip) == (400, 1024, 400, True)
    digits = CyCADAConfig.for_scale("gpu", source="mnist", target="usps").pixel_config("out")
    assert (digits.load_size, digits.crop_size, digits.flip) == (32, 32, False)  # digits as they are


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory, domains):
    """source, pixel (crops of 16 of scenes 32 high) and pixel_only, recording what the CycleGAN steps read and
    what the source set is translated from."""
    config = driving_smoke(tmp_path_factory.mktemp("pixel") / "run", domains, crop_size=None, pixel_crop_size=16)
    seen = {"steps": [], "translated": []}
    step, translate = CycleGAN.train_step, cycada.translate_dataset

    def recording_step(self, real_A, real_B, *labels):
        seen["steps"].append((tuple(real_A.shape), tuple(real_B.shape), *(tuple(y.shape) for y in labels)))
        return step(self, real_A, real_B, *labels)

    def recording_translate(translator, dataset, *args):
        seen["translated"].append(tuple(dataset[0][0].shape))
        return translate(translator, dataset, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CycleGAN, "train_step", recording_step)
        patch.setattr(cycada, "translate_dataset", recording_translate)
        metrics = run_cycada(config, stages=("source", "pixel", "pixel_only"), progress=False)
    return config, seen, metrics


def test_the_pixel_stage_trains_on_crops_of_the_asked_size_and_the_rest_reads_whole_scenes(pixel_run):
    config, seen, metrics = pixel_run
    assert seen["steps"] and all(a[1:] == b[1:] == (3, 16, 16) for a, b, *_ in seen["steps"])
    # the source set is translated for pixel_only as image_size squares, and evaluated so (32 of the 48 x 32 scenes)
    assert seen["translated"] == [(3, 32, 32)]
    assert 0 <= metrics["pixel_only"] <= 1


def test_a_pixel_crop_is_refused_for_the_digit_scenes_and_beyond_the_scenes():
    scenes = dict(task="segmentation", source="mnist-scenes", target="mnistm-scenes")
    for options, named in ((dict(scenes, pixel_crop_size=16), "pixel_crop_size 16 applies to driving scenes"),
                           (dict(GPU_DRIVING, pixel_crop_size=40), r"pixel_crop_size \(40\) must not exceed image_size "
                                                                   r"\(32\)"),
                           (dict(GPU_DRIVING, pixel_crop_size=18), "pixel_crop_size must be a multiple of 4"),
                           (dict(GPU_DRIVING, pixel_crop_size=8), "pixel_crop_size 8 is too small for netD"),
                           (dict(GPU_DRIVING, pixel_crop_size=0), "pixel_crop_size must be > 0")):
        with pytest.raises(ValueError, match=named):
            CyCADAConfig.for_scale("smoke", **options)
    code, err = cli("train", "cycada", "--task", "segmentation", "--source", "mnist-scenes", "--target",
                    "mnistm-scenes", "--pixel-crop-size", "16", "--scale", "smoke", "--out", "never")
    assert code == 2 and "cyclelib: error: pixel_crop_size 16 applies to driving scenes" in err


def test_a_pixel_stage_trained_on_other_crops_is_not_reused(pixel_run):
    config, _, _ = pixel_run
    for crop in (12, None):
        changed = CyCADAConfig(**{**vars(config), "pixel_crop_size": crop})
        for stage in ("pixel", "pixel_only"):
            with pytest.raises(ValueError, match=rf"pixel_crop_size=16 there, {crop!r} now"):
                stage_checkpoint(changed, stage)
        assert stage_checkpoint(changed, "source") is not None  # f_S reads no pixel crop
