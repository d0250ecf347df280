"""GTA5 -> Cityscapes at the gpu scale (issue 26): the pixel stage's own crops of driving scenes (option
pixel_crop_size, 400-pixel crops in the gpu preset), and the time the release's setting takes
by benchmarks/estimate_gpu_time.py. Every run is a smoke run on the CPU on tiny GTA5 and Cityscapes files
written in their official layouts."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

import cyclelib
from cyclelib import CyCADAConfig, run_cycada
from cyclelib.cycada import STAGES, stage_checkpoint
from cyclelib.cyclegan import CycleGAN
from cyclelib.driving import gta5
from helpers import benchmark_script, cli, driving_smoke, write_driving

GPU_DRIVING = dict(task="segmentation", source="gta5:/data/gta5", target="cityscapes:/data/cs")


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    return write_driving(tmp_path_factory.mktemp("driving"))


# ----------------------------------------------------------------------------- the pixel stage's crops


def test_the_gpu_preset_crops_the_pixel_stage_in_cyclegans_way():
    config = CyCADAConfig.for_scale("gpu", **GPU_DRIVING)
    pixel = config.pixel_config("out")
    # scenes at a shorter side of 1024 (CycleGAN's load_size), random flipped crops of 400 (its crop_size)
    assert (config.pixel_crop_size, pixel.load_size, pixel.crop_size, pixel.flip) == (400, 1024, 400, True)
    digits = CyCADAConfig.for_scale("gpu", source="mnist", target="usps").pixel_config("out")
    assert (digits.load_size, digits.crop_size, digits.flip) == (32, 32, False)  # digits as they are


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory, domains):
    """source, pixel (crops of 16 of scenes 32 high) and pixel_only, recording what the CycleGAN steps read."""
    config = driving_smoke(tmp_path_factory.mktemp("pixel") / "run", domains, crop_size=None, pixel_crop_size=16)
    seen = {"steps": []}
    step = CycleGAN.train_step

    def recording_step(self, real_A, real_B, *labels):
        seen["steps"].append((real_A.clone(), real_B.clone()))
        return step(self, real_A, real_B, *labels)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CycleGAN, "train_step", recording_step)
        metrics = run_cycada(config, stages=("source", "pixel", "pixel_only"), progress=False)
    return config, seen, metrics


def test_the_pixel_stage_trains_on_crops_of_the_asked_size_and_the_rest_reads_whole_scenes(pixel_run):
    config, seen, metrics = pixel_run
    assert seen["steps"] and all(a.shape[1:] == b.shape[1:] == (3, 16, 16) for a, b in seen["steps"])
    # each source image a window of a scene read at image_size (32 of 48 x 32), flipped or not: a crop, not a
    # smaller scene
    scenes = [image for image, _ in gta5(config.source.split(":", 1)[1], size=config.image_size)]
    flips = []
    for image in (image for a, _ in seen["steps"] for image in a):
        found = {flip for scene in scenes for flip in (False, True) for top in range(32 - 15) for left in range(48 - 15)
                 if torch.equal(image.flip(-1) if flip else image, scene[:, top:top + 16, left:left + 16])}
        assert len(found) == 1
        flips += found
    assert set(flips) == {False, True}  # flipped at random, as CycleGAN's flip
    # the source set is translated for pixel_only whole, at a shorter side of image_size (tests/test_driving_translated.py)
    translated = sorted((Path(config.out) / "translated").glob("*.png"))
    assert len(translated) == len(scenes) and {Image.open(p).size for p in translated} == {(48, 32)}
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


# ----------------------------------------------------------------------------- how long the release's setting takes


@pytest.fixture(scope="module")
def script():
    return benchmark_script("estimate_gpu_time")


def test_a_large_side_is_counted_exactly_at_small_ones(script):
    """The gpu preset's steps (DRN-26 from ImageNet, CycleGAN's ResNet-9 and PatchGAN with the semantic loss, the
    score discriminator) counted at four small sides and extrapolated give the FLOPs counted at the side itself,
    for sides that are multiples of 32 (768) and of 16 only (400)."""
    steps = script.stage_steps_at(script.pair_config("gta5:cityscapes"))
    for kind, side in (("classifier", 192), ("feature", 192), ("pixel", 208)):
        step, _ = steps[kind]
        assert script.cost_at(step, side, direct_side=0)[0] == script.measure(lambda: step(side))[0], kind
    cubic = lambda side: torch.ones(side, side) @ torch.ones(side, side)  # noqa: E731  2 * side**3 FLOPs
    assert script.cost_at(cubic, 96) == (2 * 96**3, 3)  # counted as it is: two ones and a product
    with pytest.raises(RuntimeError, match="no quadratic in the side"):
        script.cost_at(cubic, 400)


def test_the_estimate_holds_gta5_to_cityscapes_at_the_gpu_preset_for_every_stage(script):
    config = CyCADAConfig.for_scale("gpu", task="segmentation", source="gta5:GTA5", target="cityscapes:CITYSCAPES")
    gta5, cityscapes = 24_966, 2_975  # GTA5's frames, Cityscapes' train split (the oracle's)
    c = config
    steps = script.stage_steps(config)
    assert {stage: steps[stage] for stage in STAGES} == {
        "source": c.task_epochs * (gta5 // c.task_batch_size), "pixel_only": c.task_epochs * (gta5 // c.task_batch_size),
        "oracle": c.task_epochs * (cityscapes // c.task_batch_size),
        "pixel": (c.pixel_epochs + c.pixel_epochs_decay) * math.ceil(gta5 / c.pixel_batch_size),
        "feature_only": c.feature_epochs * (gta5 // c.feature_batch_size),
        "feature": c.feature_epochs * (gta5 // c.feature_batch_size)}
    assert steps["source"] == 99_864  # the release's 100,000 iterations, as whole epochs
    estimate = next(e for e in json.loads(cyclelib.book_results("gpu_time_estimate.json").read_text())["pairs"]
                    if e["pair"] == "gta5:cityscapes")
    assert estimate["preset"] == {**{k: getattr(config, k) for k in estimate["preset"]}, "classifier": "drn26_imagenet"}
    assert estimate["preset"]["pixel_crop_size"] == 400 and estimate["preset"]["crop_size"] == 768  # today's preset
    assert estimate["train_sizes"] == {"gta5": gta5, "cityscapes": cityscapes}
    rows = {r["stage"]: r for r in estimate["stages"]}
    assert list(rows) == list(STAGES)
    assert {stage: r["steps"] for stage, r in rows.items()} == {stage: steps[stage] for stage in STAGES}
    # one DRN-26 step on two 768 crops, the classifier stages alike; the feature stages read one pair
    assert rows["source"]["gflop_per_step"] == rows["oracle"]["gflop_per_step"] == rows["pixel_only"]["gflop_per_step"]
    assert rows["feature"]["gflop_per_step"] == rows["feature_only"]["gflop_per_step"]
    for r in rows.values():  # hours = steps x (FLOPs at the assumed share of the peak + operators x their cost)
        assert r["pflop"] == pytest.approx(r["steps"] * r["gflop_per_step"] / 1e6)
        assert r["hours"]["H100"] == pytest.approx(r["steps"] * (r["gflop_per_step"] * 1e9 / (0.3 * 989e12)
                                                                 + r["ops_per_step"] * 10e-6) / 3600)
    assert estimate["total"]["hours"]["T4"] == pytest.approx(sum(r["hours"]["T4"] for r in rows.values()))
