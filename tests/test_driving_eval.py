"""Driving scenes are evaluated whole, at full label resolution (issue 26: "evaluated in batches over the whole
test split at full label resolution"), as the release's scripts/eval_fcn.py does: each test image is read at the
shorter side the networks trained at, its labels as they are, and the scores are resized to the labels. Tiny GTA5
and Cityscapes files in their official layouts; one GTA5 frame has another size, as a few real ones do."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cyclelib import run_cycada
from cyclelib.cycada import load_domain
from cyclelib.driving import cityscapes
from cyclelib.metrics import segmentation_metrics
from cyclelib.segmentation import eval_batch_size
from helpers import DRIVING_HEIGHT as HEIGHT, DRIVING_WIDTH as WIDTH, driving_smoke, rgb, palette_png, write_driving

ODD = (40, 36)  # (width, height) of the one GTA5 frame of another size


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("driving")
    domains = write_driving(root)
    rng = np.random.default_rng(7)
    ids = np.array([7, 8, 11, 26, 0], dtype=np.uint8)[rng.integers(0, 5, ODD[::-1])]  # road ... car, 0 unlabelled
    rgb(*ODD, seed=99).save(root / "gta5" / "images" / "00099.png")
    palette_png(root / "gta5" / "labels" / "00099.png", ids)
    return domains


def test_the_test_split_is_whole_frames_with_labels_at_full_resolution(domains, tmp_path):
    config = driving_smoke(tmp_path / "run", domains, image_size=16, crop_size=None)
    image, labels = load_domain(config, config.target, "test")[0]
    # the image at a shorter side of 16, the scale the networks trained at; the labels as the file holds them
    assert image.shape == (3, 16, WIDTH * 16 // HEIGHT) and labels.shape == (HEIGHT, WIDTH)
    expected = cityscapes(domains["target"].split(":", 1)[1], "val")[0][1]  # read at its own size, no resizing
    assert torch.equal(labels, expected)
    sizes = {tuple(y.shape) for _, y in load_domain(config, config.source, "test")}
    assert sizes == {(HEIGHT, WIDTH), ODD[::-1]}  # GTA5's frames keep their own sizes
    with pytest.raises(ValueError, match="full_labels reads whole frames"):
        cityscapes(domains["target"].split(":", 1)[1], "val", size=16, crop=8, full_labels=True)


class Upsampled(torch.nn.Module):
    """A 'segmenter' whose scores are a quarter of the input's size: class 0 left, class 1 right of the middle."""

    def forward(self, x):  # x: [N, 3, H, W]
        n, _, h, w = x.shape
        scores = torch.zeros(n, 19, h // 4, w // 4)
        scores[:, 0, :, : w // 8] = 1
        scores[:, 1, :, w // 8:] = 1
        return scores


def test_every_labelled_pixel_is_counted_at_full_resolution(domains, tmp_path):
    config = driving_smoke(tmp_path / "run", domains, image_size=16, crop_size=None)
    test = load_domain(config, config.source, "test")
    found = segmentation_metrics(Upsampled(), test, 19, batch_size=eval_batch_size(config.source))
    labels = [y for _, y in test]
    assert sum(map(sum, found["confusion"])) == sum(int((y != 255).sum()) for y in labels)
    # the prediction, resized to each frame's labels, says class 0 on its left half and 1 on its right
    expected = torch.zeros(19, 19, dtype=torch.long)
    for y in labels:
        columns = torch.arange(y.shape[1]).expand_as(y)
        predicted = (columns >= y.shape[1] // 2).long()
        keep = y != 255
        expected += torch.bincount(y[keep] * 19 + predicted[keep], minlength=19 * 19).reshape(19, 19)
    assert found["confusion"] == expected.tolist()
    assert eval_batch_size(config.source) == 1 and eval_batch_size("mnistm-scenes") == 8


def test_a_run_is_evaluated_on_whole_frames_of_several_sizes(domains, tmp_path):
    config = driving_smoke(tmp_path / "run", domains, image_size=16, crop_size=8)
    run_cycada(config, stages=("source", "pixel", "oracle"), progress=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    pixels = sum(int((y != 255).sum()) for _, y in load_domain(config, config.target, "test"))
    assert sum(map(sum, metrics["confusion"]["source_only"])) == pixels  # the target's labels, all of them
    assert 0 <= metrics["label_preservation"] <= 1  # translated whole frames of both sizes, judged at full resolution
    assert (tmp_path / "run" / "samples.png").is_file()
