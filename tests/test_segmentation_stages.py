"""CyCADA's stages for semantic segmentation (issue 26): the digit stages with task="segmentation", on the
offline digit scenes mnist-scenes -> mnistm-scenes at the smoke scale."""
from __future__ import annotations

import copy
import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cyclelib import CyCADAConfig, TrainingInterrupted, run_cycada
from cyclelib.checkpoints import load_checkpoint
from cyclelib.classifiers import FeatureAlignment, TaskClassifier
from cyclelib.cycada import RESULTS, load_domain, semantic_consistency, stage_checkpoint, stage_path
from cyclelib.runtime import Precision
from cyclelib.scenes import SCENE_CLASSES
from cyclelib.segmentation import feature_game
from cyclelib.segnets import ScoreDiscriminator, SmallFCN
from helpers import ROOT, cli, package_env, stop_at

SCENES = dict(task="segmentation", source="mnist-scenes", target="mnistm-scenes")


def scenes_smoke(out, **options) -> CyCADAConfig:
    """A smoke-scale segmentation config, mnist-scenes -> mnistm-scenes, on the CPU in fp32."""
    return CyCADAConfig.for_scale("smoke", **{**SCENES, "out": str(out), "device": "cpu", "amp": "none", **options})


@pytest.fixture(scope="module")
def scenes_run(tmp_path_factory):
    config = scenes_smoke(tmp_path_factory.mktemp("scenes") / "run")
    return config, run_cycada(config, progress=False)


def test_the_smoke_run_writes_miou_pixel_accuracy_and_class_iou_per_stage(scenes_run):
    config, metrics = scenes_run
    assert json.loads((Path(config.out) / "metrics.json").read_text()) == metrics
    assert (metrics["task"], metrics["metric"], metrics["classifier"]) == ("segmentation", "miou", "small_fcn")
    assert len(metrics["classes"]) == SCENE_CLASSES and metrics["classes"][0] == "background"
    for key in RESULTS.values():
        assert 0 <= metrics[key] <= 1
        assert 0 <= metrics["pixel_accuracy"][key] <= 1
        ious = metrics["class_iou"][key]
        assert len(ious) == SCENE_CLASSES and all(iou is None or 0 <= iou <= 1 for iou in ious)
        present = [iou for iou in ious if iou is not None]
        assert math.isclose(metrics[key], sum(present) / len(present))  # mIoU: the mean over present classes
        confusion = torch.tensor(metrics["confusion"][key])
        assert confusion.shape == (SCENE_CLASSES, SCENE_CLASSES)
        assert confusion.sum() == metrics["test_images"]["target"] * config.image_size ** 2  # every pixel counted
    for key in ("source_test_miou", "label_preservation", "oracle_label_preservation"):
        assert 0 <= metrics[key] <= 1
    assert set(metrics["wall_s"]) == set(RESULTS) | {"pixel"}
    for name in ("samples.png", "curves.png", *(f"confusion/{key}.png" for key in RESULTS.values())):
        assert (Path(config.out) / name).is_file(), name
    assert load_checkpoint(stage_path(config, "source"))["meta"]["cycada"]["task"] == "segmentation"


def test_the_cli_runs_the_segmentation_stages_and_says_the_miou(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = cli("train", "cycada", "--task", "segmentation", "--source", "mnist-scenes", "--target",
                    "mnistm-scenes", "--scale", "smoke", "--amp", "none", "--out", str(out), "--stages", "source,oracle")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"source_only", "target_oracle"} <= set(metrics) and "pixel_only" not in metrics
    printed = capsys.readouterr().out
    assert f"source_only: {metrics['source_only']:.4f}" in printed


def test_a_rerun_skips_the_finished_segmentation_stages(scenes_run, capsys):
    config, metrics = scenes_run
    assert run_cycada(config, progress=False)["pixel_feature"] == metrics["pixel_feature"]
    assert capsys.readouterr().out.count("cycada: skipping") == len(RESULTS) + 1


@pytest.mark.parametrize("stage, model_class", [("source", TaskClassifier), ("feature_only", FeatureAlignment)])
def test_an_interrupted_segmentation_stage_resumes_where_it_stopped(tmp_path, monkeypatch, stage, model_class):
    """SIGTERM in step 3: the stage keeps a checkpoint at step 3, and the rerun trains only the steps left,
    ending with the weights and history of an uninterrupted run."""
    options = dict(task_epochs=2, feature_epochs=2, checkpoint_every=2)
    straight, stopped = scenes_smoke(tmp_path / "straight", **options), scenes_smoke(tmp_path / "stopped", **options)
    run_cycada(straight, stages=("source", stage), progress=False)
    if stage != "source":
        run_cycada(stopped, stages=("source",), progress=False)
    real_init, steps = model_class.__init__, []
    with pytest.MonkeyPatch.context() as patch, pytest.raises(TrainingInterrupted, match="stopped at step 3"):
        stop_at(patch, 3, signal.SIGTERM)
        run_cycada(stopped, stages=(stage,), progress=False)
    assert load_checkpoint(stage_path(stopped, stage))["training"]["step"] == 3

    def init_and_count(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        inner = self.train_step
        self.train_step = lambda *tensors: steps.append(1) or inner(*tensors)

    monkeypatch.setattr(model_class, "__init__", init_and_count)
    run_cycada(stopped, stages=(stage,), progress=False)
    a, b = (load_checkpoint(stage_path(c, stage)) for c in (straight, stopped))
    assert b["training"]["step"] == b["training"]["total_steps"] == 8 and len(steps) == 8 - 3  # continued
    assert a["nets"].keys() == b["nets"].keys() and all(torch.equal(v, b["nets"][k]) for k, v in a["nets"].items())
    assert a["history"] == b["history"]


def test_a_stage_trained_with_other_options_is_refused_naming_them(scenes_run):
    config, _ = scenes_run
    for change, stages in ((dict(task_lr=0.5), ("source", "feature")), (dict(d_feat_width=8), ("feature_only",)),
                           (dict(lambda_sem_A=0.5), ("pixel", "feature"))):
        changed = CyCADAConfig(**{**vars(config), **change})
        for stage in stages:
            with pytest.raises(ValueError, match=rf"{next(iter(change))}="):
                stage_checkpoint(changed, stage)
    with pytest.raises(ValueError, match="task_lr=") as caught:  # and before anything runs, from the command line
        run_cycada(CyCADAConfig(**{**vars(config), "task_lr": 0.5}), stages=("oracle",), progress=False)
    assert "'oracle' stage" in str(caught.value)


def test_the_per_pixel_semantic_term_asks_for_the_frozen_f_s_argmax_of_every_pixel():
    """f_S reads a pixel's three channels as its three class scores; the source scene's two pixels are read as
    classes 0 and 2, so the S->T term is the mean cross-entropy of G(x)'s pixels for classes 0 and 2."""
    config = CyCADAConfig(**SCENES, lambda_sem_B=0.0, image_size=32)
    f_s = nn.Sequential(nn.Conv2d(3, 3, 1, bias=False))
    with torch.no_grad():
        f_s[0].weight.copy_(torch.eye(3).view(3, 3, 1, 1))
    real_a = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0]]).view(1, 3, 1, 2)  # pixels (2, 0, 0), (0, 0, 3)
    fake_b = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0]]).view(1, 3, 1, 2)  # pixels (0, 1, 0), (1, 0, 2)
    fake_b.requires_grad_(True)
    terms = semantic_consistency(config, f_s).terms(real_a, torch.zeros(1, 3, 1, 2),
                                                 {"fake_B": fake_b, "A_label": torch.zeros(1, 1, 2).long()})
    by_hand = (math.log(1 + math.e + 1) + (math.log(math.e + 1 + math.e ** 2) - 2)) / 2
    assert set(terms) == {"sem_A"} and math.isclose(terms["sem_A"].item(), by_hand, rel_tol=1e-6)
    terms["sem_A"].backward()
    assert fake_b.grad.abs().sum() > 0 and f_s[0].weight.grad is None  # G learns, f_S stays frozen


def test_the_score_discriminator_judges_the_score_maps_of_both_domains_with_shared_weights():
    """As the release's --discrim_score --weights_shared: D sees per-pixel scores of f_T on source (class 1)
    and on target (class 0), f_T's own source scores rather than the frozen f_S's, and returns per-pixel logits."""
    torch.manual_seed(0)
    config = CyCADAConfig.for_scale("smoke", **SCENES)
    game = feature_game(config)
    assert isinstance(game["discriminator"], ScoreDiscriminator) and game["shared"]
    f_s = SmallFCN(SCENE_CLASSES, width=4).eval()
    model = FeatureAlignment(f_s, 1e-3, Precision("none", torch.device("cpu")), **game)
    x_s, x_t = torch.randn(2, 3, 32, 32), torch.randn(3, 3, 32, 32)
    y_s = torch.randint(0, SCENE_CLASSES, (2, 32, 32))
    expected = copy.deepcopy(model.f_t).train()(torch.cat([x_s, x_t]))  # [5, K, 32, 32] f_T's scores, train mode
    seen, judged = [], []

    def record(module, args, output):
        seen.append(args[0].detach())
        judged.append(output.shape)

    model.d_feat.register_forward_hook(record)
    losses = model.train_step(x_s, y_s, x_t)
    assert torch.allclose(seen[0], expected[:2], atol=1e-6) and torch.allclose(seen[1], expected[2:], atol=1e-6)
    assert not torch.allclose(seen[0], f_s(x_s), atol=1e-3)  # not the frozen f_S's reading
    assert judged[:2] == [(2, 2, 32, 32), (3, 2, 32, 32)]
    weights = torch.tensor((0.1,) + (1.0,) * 10)
    assert math.isclose(losses["task"].item(), F.cross_entropy(expected[:2], y_s, weight=weights).item(), rel_tol=1e-5)


def test_segmentation_domains_give_label_maps_at_the_image_size():
    config = scenes_smoke("unused")
    image, labels = load_domain(config, config.target, "test")[0]
    assert image.shape == (3, 32, 32) and labels.shape == (32, 32) and labels.dtype == torch.long


@pytest.mark.parametrize("options, named", [
    (dict(task="segmentation", source="mnist5k", target="mnistm-scenes"), "source 'mnist5k' is not a segmentation"),
    (dict(task="segmentation", source="mnist-scenes", target="usps"), "target 'usps' is not a segmentation"),
    (dict(task="segmentation", source="mnist-scenes", target="mnistm-scenes", classifier="lenet"),
     "classifier 'lenet' is not a segmenter"),
    (dict(source="mnist-scenes", target="mnistm-scenes"), "source 'mnist-scenes' is a segmentation domain"),
    (dict(source="mnist5k", target="mnistm5k", classifier="small_fcn"), "classifier 'small_fcn' is a segmenter"),
    (dict(task="detection", source="mnist5k", target="mnistm5k"), "valid values: classification, segmentation"),
])
def test_a_task_that_does_not_fit_the_domains_or_network_is_refused_naming_the_option(options, named):
    with pytest.raises(ValueError, match=named):
        CyCADAConfig(**options)


def test_the_cli_refuses_segmentation_with_a_digit_domain_with_exit_2(tmp_path):
    code, err = cli("train", "cycada", "--task", "segmentation", "--source", "mnist5k", "--target", "mnistm-scenes",
                    "--scale", "smoke", "--out", str(tmp_path / "run"))
    assert code == 2 and "cyclelib: error:" in err and "source 'mnist5k' is not a segmentation domain" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a subprocess running every stage at smoke size
def test_the_gpu_check_runs_a_smoke_segmentation_step_which_its_cpu_dry_run_checks(tmp_path):
    out = tmp_path / "gpu-check.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--only",
                           "segmentation", "--json", str(out)], cwd=tmp_path, env=package_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    (step,) = json.loads(out.read_text())["steps"]
    assert step["name"] == "segmentation" and step["status"] == "passed" and step["problems"] == []
    assert all(0 <= step["numbers"][key] <= 1 for key in RESULTS.values())
    assert set(step["numbers"]["wall_s"]) == set(RESULTS) | {"pixel"}


def test_a_pair_of_segmentation_domains_opens_unpaired_with_label_maps_for_the_pixel_stage():
    from cyclelib.data import open_unpaired

    sample = open_unpaired("mnist-scenes:mnistm-scenes", size=32)[0]
    assert sample["A"].shape == sample["B"].shape == (3, 32, 32)
    assert sample["A_label"].shape == (32, 32) and sample["A_label"].dtype == torch.long
