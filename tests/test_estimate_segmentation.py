"""benchmarks/estimate_gpu_time.py estimates chapter 11, CyCADA for segmentation on the digit scenes
(issue 26): its steps read label maps and train with the per-pixel task loss and the score discriminator."""
import json

import cyclelib
from cyclelib.cycada import STAGES
from helpers import benchmark_script


def estimate_script():
    return benchmark_script("estimate_gpu_time")


def test_a_segmentation_step_is_counted_with_label_maps():
    script = estimate_script()
    config = cyclelib.CyCADAConfig.for_scale("smoke", task="segmentation", source="mnist-scenes",
                                             target="mnistm-scenes", device="cpu")
    assert tuple(script.labels(2, config).shape) == (2, config.image_size, config.image_size)
    costs = script.step_costs(config)
    assert set(costs) == {"classifier", "pixel", "feature"}
    assert all(flops > 0 and ops > 0 for flops, ops in costs.values())
    # the feature step runs f_T on both domains and D_feat on every pixel: more than one classifier step
    assert costs["feature"][0] > costs["classifier"][0]


def test_chapter_11_is_estimated_for_every_stage_on_2000_train_scenes():
    script = estimate_script()
    config = cyclelib.CyCADAConfig.for_scale("cpu", task="segmentation", source="mnist-scenes", target="mnistm-scenes")
    assert script.stage_steps(config)["source"] == config.task_epochs * (2000 // config.task_batch_size)
    rows = json.loads(cyclelib.book_results("gpu_time_estimate.json").read_text())["chapters"]["11_cycada_segmentation"]
    assert {scale: [r["stage"] for r in by_scale["runs"]] for scale, by_scale in rows.items()} == {
        "colab": list(STAGES), "gpu": list(STAGES)}
