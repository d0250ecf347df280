"""The CyCADA release's segmentation settings (issue 26): its SGD for the classifier and feature stages, its
random crops of driving scenes, and the gpu preset of GTA5 -> Cityscapes that holds both, checked against
jhoffman/cycada_release's scripts/train_fcn.sh and scripts/train_fcn_adda.sh. Every run is a smoke run on the CPU
on tiny GTA5 and Cityscapes files written in their official layouts."""
from __future__ import annotations

import dataclasses
import signal

import pytest
import torch

from cyclelib import CyCADAConfig, TrainingInterrupted, run_cycada
from cyclelib.checkpoints import load_checkpoint
from cyclelib.commands import cycada_command
from cyclelib.classifiers import FeatureAlignment, TaskClassifier, make_optimizer
from cyclelib.cycada import load_domain, stage_checkpoint, stage_path, training_domain
from cyclelib.driving import gta5
from cyclelib.segnets import ScoreDiscriminator, SmallFCN
from cyclelib.runtime import Precision
from cyclelib.segmentation import feature_game
from helpers import (DRIVING_HEIGHT as HEIGHT, DRIVING_WIDTH as WIDTH, benchmark_script, cli, driving_smoke,
                     parse_cycada_command, stop_at, write_driving)

SGD = dict(task_optimizer="sgd", feature_optimizer="sgd")


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    return write_driving(tmp_path_factory.mktemp("driving"))


# ----------------------------------------------------------------------------- the gpu preset


def test_the_gpu_preset_of_driving_scenes_is_the_releases_segmentation_setting():
    config = CyCADAConfig.for_scale("gpu", task="segmentation", source="gta5:/data/gta5", target="cityscapes:/data/cs")
    release = dict(
        classifier="drn26_imagenet",  # train_fcn_adda.sh line 34, from ImageNet's weights (train_fcn.py line 76)
        image_size=1024, crop_size=768,  # data_loader.py line 38; train_fcn_adda.sh line 16
        task_optimizer="sgd", task_lr=1e-3, task_batch_size=2,  # train_fcn.sh lines 9-12
        feature_optimizer="sgd", feature_lr=1e-5, feature_batch_size=1,  # train_fcn_adda.sh lines 7-8, 18
        lambda_feature=0.1,  # lambda_g, train_fcn_adda.sh line 10
        feature_gate=0.6,  # train_fcn_adda.py lines 265-267
        lambda_task=1.0,  # with weights_shared the net also steps on the source labels (lines 307-329)
        d_feat_width=None)  # the release's 512-channel score discriminator
    assert {name: getattr(config, name) for name in release} == release
    # 100,000 iterations of the release: batches of 2 over GTA5's 24,966 scenes, pairs one at a time
    assert (config.task_epochs, config.feature_epochs) == (round(100_000 * 2 / 24_966), round(100_000 / 24_966))


def test_the_digit_scenes_keep_their_gpu_preset_and_sgd_is_the_releases_momentum_and_weight_decay():
    scenes = CyCADAConfig.for_scale("gpu", task="segmentation", source="mnist-scenes", target="mnistm-scenes")
    assert (scenes.image_size, scenes.crop_size, scenes.task_optimizer, scenes.feature_optimizer) == (32, None, "adam",
                                                                                                     "adam")
    net = SmallFCN(11, width=4)
    sgd = make_optimizer("sgd", net.parameters(), 1e-3)
    assert isinstance(sgd, torch.optim.SGD)
    assert {k: sgd.defaults[k] for k in ("lr", "momentum", "weight_decay")} == dict(lr=1e-3, momentum=0.99,
                                                                                   weight_decay=5e-4)
    precision = Precision("none", torch.device("cpu"))
    assert isinstance(TaskClassifier(net, 1e-3, precision).optimizer, torch.optim.Adam)  # the default, as before
    assert isinstance(TaskClassifier(net, 1e-3, precision, optimizer="sgd").optimizer, torch.optim.SGD)
    feature = FeatureAlignment(net, 1e-5, precision, discriminator=ScoreDiscriminator(11, width=4), optimizer="sgd")
    assert all(isinstance(opt, torch.optim.SGD) and opt.defaults["lr"] == 1e-5
               for opt in feature.optimizers().values())
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; valid values: adam, sgd"):
        make_optimizer("rmsprop", net.parameters(), 1e-3)


def test_the_segmentation_gate_reads_the_mean_accuracy_of_the_last_batches_and_resumes_with_it(monkeypatch):
    """train_fcn_adda.py gates f_T on the mean of a deque of the last 100 domain accuracies (lines 175, 252-253,
    265-267), the digits' train_adda_net.py on the batch's: a window of 3 here, accuracies fed by hand."""
    from cyclelib import classifiers

    torch.manual_seed(0)
    net, precision = SmallFCN(11, width=4), Precision("none", torch.device("cpu"))
    x_s, y_s, x_t = torch.rand(2, 3, 16, 16) * 2 - 1, torch.randint(0, 11, (2, 16, 16)), torch.rand(2, 3, 16, 16)

    def steps(model, accuracies):
        """Whether f_T moved at each step, with D's accuracy taken from ``accuracies``."""
        fed = iter(accuracies)
        monkeypatch.setattr(classifiers, "discriminator_accuracy", lambda s, t: next(fed))
        moved = []
        for _ in accuracies:
            before = [p.detach().clone() for p in model.f_t.parameters()]
            model.train_step(x_s, y_s, x_t)
            moved.append(any(not torch.equal(a, b) for a, b in zip(before, model.f_t.parameters())))
        return moved

    def alignment(window):
        return FeatureAlignment(net, 1e-3, precision, gate=0.6, gate_window=window, optimizer="sgd",
                                discriminator=ScoreDiscriminator(11, width=4), shared=True)

    accuracies = [0.9, 0.1, 0.1, 0.9, 0.9]  # windows of 3: means 0.9, 0.5, 0.37, 0.37, 0.63
    assert steps(alignment(3), accuracies) == [True, False, False, False, True]
    assert steps(alignment(1), accuracies) == [True, False, False, True, True]  # the digits' gate: the batch's
    # stopped after three steps and resumed from the state dict, the window goes on as in one run
    first = alignment(3)
    steps(first, accuracies[:3])
    resumed = alignment(3)
    resumed.load_state_dict(first.state_dict())
    assert "gate_accuracies" in first.state_dict() and steps(resumed, accuracies[3:]) == [False, True]
    config = CyCADAConfig.for_scale("gpu", task="segmentation", source="gta5:/data/gta5", target="cityscapes:/data/cs")
    assert feature_game(config)["gate_window"] == 100
    ungated = FeatureAlignment(net, 1e-3, precision, discriminator=ScoreDiscriminator(11, width=4))
    assert "gate_accuracies" not in ungated.state_dict()  # no gate: the state dict as before


def test_the_cli_shows_the_driving_scenes_gpu_preset_and_refuses_an_unknown_optimizer(capsys):
    code, _ = cli("train", "cycada", "--help")
    shown = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "--task-optimizer {adam,sgd}" in shown and "--feature-optimizer {adam,sgd}" in shown
    assert "gpu preset sgd (driving scenes)" in shown and "gpu preset 768 (driving scenes)" in shown
    code, err = cli("train", "cycada", "--task", "segmentation", "--source", "mnist-scenes", "--target",
                    "mnistm-scenes", "--task-optimizer", "lbfgs")
    assert code == 2 and "unknown task_optimizer 'lbfgs'; valid values: adam, sgd" in err


def test_the_command_of_a_driving_run_builds_its_config_even_where_it_leaves_a_release_setting_off():
    """None has no flag: a run without the gpu preset's gate or crop is rendered from a scale whose preset has
    neither, every other option given."""
    release = CyCADAConfig.for_scale("gpu", task="segmentation", source="gta5:/data/gta5", target="cityscapes:/data/cs")
    for config, scale in ((release, "gpu"), (dataclasses.replace(release, feature_gate=None, crop_size=None), "colab")):
        command = cycada_command(dataclasses.asdict(config), ("source",))
        built, stages = parse_cycada_command(command)
        assert stages == "source" and built == dataclasses.replace(config, scale=scale), command


# ----------------------------------------------------------------------------- crops


def test_driving_scenes_train_on_random_flipped_crops_of_the_seed_and_are_evaluated_as_before(tmp_path, domains):
    config = driving_smoke(tmp_path, domains)
    whole = gta5(domains["source"].split(":", 1)[1], size=config.image_size)  # 48 x 32 as they are
    train = training_domain(config, config.source)
    crops, flipped = [], []
    for epoch in (0, 1):
        train.set_epoch(epoch)
        crops.append([train[i][0] for i in range(len(train))])
    for i, (image, labels) in enumerate(train[i] for i in range(len(train))):
        assert image.shape == (3, 16, 16) and labels.shape == (16, 16)
        full_image, full_labels = whole[i]
        # a window of the scene, image and labels alike, flipped or not
        windows = [(full_image[:, top:top + 16, left:left + 16], full_labels[top:top + 16, left:left + 16])
                   for top in range(HEIGHT - 15) for left in range(WIDTH - 15)]
        flips = [flip for flip in (False, True) for window, window_labels in windows
                 if torch.equal(image.flip(-1) if flip else image, window)
                 and torch.equal(labels.flip(-1) if flip else labels, window_labels)]
        assert len(flips) == 1
        flipped.append(flips[0])
    assert any(not torch.equal(a, b) for a, b in zip(*crops))  # the crops change with the epoch
    assert set(flipped) == {False, True}  # and half of them are flipped, as the release's
    again = training_domain(config, config.source)
    again.set_epoch(1)
    assert all(torch.equal(again[i][0], crops[1][i]) for i in range(len(again)))  # and are the seed's
    test_image, test_labels = load_domain(config, config.target, "test")[0]
    assert test_image.shape == (3, HEIGHT, WIDTH) and test_labels.shape == (HEIGHT, WIDTH)  # the test split: whole
    assert tuple(benchmark_script("estimate_gpu_time").labels(2, config).shape) == (2, 16, 16)  # the estimate trains on the crops


@pytest.mark.parametrize("options, named", [
    (dict(source="mnist-scenes", target="mnistm-scenes"), "crop_size 16 applies to driving scenes"),
    (dict(crop_size=40), r"crop_size \(40\) must not exceed image_size \(32\)"),
    (dict(crop_size=0), "crop_size must be > 0"),
    (dict(task_optimizer="adagrad"), "unknown task_optimizer 'adagrad'; valid values: adam, sgd"),
    (dict(feature_optimizer="adagrad"), "unknown feature_optimizer 'adagrad'; valid values: adam, sgd"),
])
def test_a_crop_of_another_domain_or_larger_than_the_scene_and_an_unknown_optimizer_are_refused(options, named):
    with pytest.raises(ValueError, match=named):
        driving_smoke("out", {"source": "gta5:/data/gta5", "target": "cityscapes:/data/cs"}, **options)


def test_the_cli_refuses_a_crop_of_the_digit_scenes_with_exit_2(tmp_path):
    code, err = cli("train", "cycada", "--task", "segmentation", "--source", "mnist-scenes", "--target",
                    "mnistm-scenes", "--crop-size", "16", "--scale", "smoke", "--out", str(tmp_path / "run"))
    assert code == 2 and "cyclelib: error: crop_size 16 applies to driving scenes" in err
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- SGD runs


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory, domains):
    config = driving_smoke(tmp_path_factory.mktemp("sgd") / "run", domains, **SGD)
    return config, run_cycada(config, stages=("source", "feature_only"), progress=False)


def test_a_smoke_run_with_sgd_trains_its_stages_with_momentum_and_weight_decay(sgd_run):
    config, metrics = sgd_run
    assert {"source_only", "feature_only"} <= set(metrics) and 0 <= metrics["feature_only"] <= 1
    source, feature = (load_checkpoint(stage_path(config, stage)) for stage in ("source", "feature_only"))
    for ckpt, names in ((source, ("net",)), (feature, ("f_t", "d_feat"))):
        for name in names:
            state = ckpt["training"]["optimizers"][name]
            assert state["param_groups"][0]["momentum"] == 0.99 and state["param_groups"][0]["weight_decay"] == 5e-4
            assert all("momentum_buffer" in s for s in state["state"].values()) and state["state"]


def test_a_stage_trained_with_another_optimizer_is_refused_naming_it(sgd_run):
    config, _ = sgd_run
    for change, refused, kept in ((dict(task_optimizer="adam"), ("source", "feature_only"), ()),
                                  (dict(feature_optimizer="adam"), ("feature_only",), ("source",)),
                                  (dict(crop_size=8), ("source", "feature_only"), ())):
        changed = CyCADAConfig(**{**vars(config), **change})
        name, value = next(iter(change.items()))
        for stage in refused:
            with pytest.raises(ValueError, match=rf"{name}={getattr(config, name)!r} there, {value!r} now"):
                stage_checkpoint(changed, stage)
        for stage in kept:
            assert stage_checkpoint(changed, stage) is not None


@pytest.mark.parametrize("stage", ["source", "feature_only"])
def test_an_interrupted_sgd_stage_on_random_crops_resumes_bit_exact(tmp_path, domains, sgd_run, stage):
    """SIGTERM in step 3: the rerun ends with the weights, optimiser state and history of the uninterrupted run."""
    straight, _ = sgd_run
    stopped = driving_smoke(tmp_path / "stopped", domains, **SGD)
    if stage != "source":
        run_cycada(stopped, stages=("source",), progress=False)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(TrainingInterrupted, match="stopped at step 3"):
        stop_at(patch, 3, signal.SIGTERM)
        run_cycada(stopped, stages=(stage,), progress=False)
    assert load_checkpoint(stage_path(stopped, stage))["training"]["step"] == 3
    run_cycada(stopped, stages=(stage,), progress=False)
    a, b = (load_checkpoint(stage_path(c, stage)) for c in (straight, stopped))
    assert b["training"]["step"] == b["training"]["total_steps"] == a["training"]["total_steps"]
    assert a["nets"].keys() == b["nets"].keys() and all(torch.equal(v, b["nets"][k]) for k, v in a["nets"].items())
    for name in a["training"]["optimizers"]:
        buffers = [(s["momentum_buffer"] for s in ckpt["training"]["optimizers"][name]["state"].values())
                   for ckpt in (a, b)]
        assert all(torch.equal(x, y) for x, y in zip(*buffers, strict=True))
    assert a["history"] == b["history"]
