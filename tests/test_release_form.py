"""The release's form of CyCADA's stages (jhoffman/cycada_release), as options beside the paper's (issue 25)."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from cyclelib import CyCADAConfig, classifiers, cycada, losses, run_cycada, semantic
from cyclelib.classifiers import FeatureAlignment, build_task_network, discriminator_accuracy
from cyclelib.commands import cycada_command
from cyclelib.runtime import Precision

from helpers import cli, cycada_smoke


def _step(gate: float | None, accuracy: float, monkeypatch) -> tuple[FeatureAlignment, dict, dict]:
    """One feature step with D_feat's accuracy pinned to ``accuracy``: the model, and f_T's and
    D_feat's weights before it."""
    monkeypatch.setattr(classifiers, "discriminator_accuracy", lambda judged_s, judged_t: accuracy)
    torch.manual_seed(0)
    model = FeatureAlignment(build_task_network("lenet"), 1e-3, Precision("none", torch.device("cpu")),
                             lambda_task=0.0, gate=gate)
    before = copy.deepcopy(model.f_t.state_dict()), copy.deepcopy(model.d_feat.state_dict())
    x_s, y_s, x_t = torch.rand(8, 3, 32, 32) * 2 - 1, torch.randint(0, 10, (8,)), torch.rand(8, 3, 32, 32) * 2 - 1
    model.train_step(x_s, y_s, x_t)
    return model, *before


def _changed(net: torch.nn.Module, before: dict) -> bool:
    """Whether a weight of ``net`` differs from ``before`` (its state dict): a step, not BatchNorm's statistics."""
    return any(not torch.equal(p, before[name]) for name, p in net.named_parameters())


def test_feature_gate_updates_f_t_only_where_d_feat_is_accurate_enough(monkeypatch):
    model, f_t, d_feat = _step(0.6, 0.5, monkeypatch)  # D_feat no better than 0.6: f_T is left as it was
    assert not _changed(model.f_t, f_t) and _changed(model.d_feat, d_feat)
    model, f_t, d_feat = _step(0.6, 0.7, monkeypatch)
    assert _changed(model.f_t, f_t) and _changed(model.d_feat, d_feat)
    model, f_t, _ = _step(None, 0.0, monkeypatch)  # no gate (the paper): f_T learns on every batch
    assert _changed(model.f_t, f_t)


def test_discriminator_accuracy_counts_source_as_class_1_and_target_as_class_0():
    source_right, target_wrong = torch.tensor([[0.0, 1.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert discriminator_accuracy(source_right, target_wrong) == 0.75


def test_release_options_are_checked_and_recorded_by_the_stages_they_change(tmp_path):
    config = cycada_smoke(tmp_path)
    assert (config.feature_start, config.feature_gate) == ("source", None)  # the paper's form
    with pytest.raises(ValueError, match="unknown feature_start 'oracle'; valid values: source, pixel_only"):
        replace(config, feature_start="oracle")
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="feature_gate must be in"):
            replace(config, feature_gate=bad)
    # f_T's start changes the feature stage alone; the gate both feature stages
    assert "feature_start" in cycada.stage_options(config, "feature")
    assert all("feature_start" not in cycada.stage_options(config, s) for s in cycada.STAGES if s != "feature")
    assert {s for s in cycada.STAGES if "feature_gate" in cycada.stage_options(config, s)} == {"feature",
                                                                                              "feature_only"}
    release = replace(config, feature_start="pixel_only", feature_gate=0.6, lambda_task=0.0)
    assert cycada.with_needs(("feature",), release) == ("source", "pixel", "pixel_only", "feature")
    assert cycada.with_needs(("feature",), config) == ("source", "pixel", "feature")
    assert "--feature-start pixel_only --feature-gate 0.6" in cycada_command(vars(release), ("feature",))


def test_cli_takes_and_explains_the_release_options(capsys):
    code, err = cli("train", "cycada", "--source", "mnist5k", "--target", "mnistm5k", "--feature-start", "x")
    assert code == 2 and "unknown feature_start 'x'; valid values: source, pixel_only" in err
    assert cli("train", "cycada", "--help")[0] == 0
    help = " ".join(capsys.readouterr().out.split())
    assert "--feature-gate" in help and "the release: 0.6" in help and "pixel_only (trained on translated" in help


def test_feature_stage_starts_from_pixel_only_and_reuse_checks_it(tmp_path, monkeypatch):
    started = {}

    class Spy(FeatureAlignment):  # records the classifier f_T starts from
        def __init__(self, f_s, *args, **kwargs):
            started["f_s"] = copy.deepcopy(f_s.state_dict())
            super().__init__(f_s, *args, **kwargs)

    monkeypatch.setattr(cycada, "FeatureAlignment", Spy)
    config = cycada_smoke(tmp_path, feature_start="pixel_only", feature_gate=0.6)
    run_cycada(config, stages="source,pixel,pixel_only,feature", progress=False)
    pixel_only = cycada.load_stage(config, "pixel_only").state_dict()
    assert all(torch.equal(started["f_s"][k], v) for k, v in pixel_only.items())
    assert cycada.stage_finished(config, "feature") and cycada.stage_finished(config, "pixel_only")
    for change in (dict(feature_start="source"), dict(feature_gate=None)):
        with pytest.raises(ValueError, match=rf"{next(iter(change))}=.* there"):
            cycada.stage_checkpoint(replace(config, **change), "feature")


# --------------------------------------------------------------------------- stage 2: the semantic terms


def _semantic_terms(config: CyCADAConfig) -> tuple[dict, dict, torch.nn.Module]:
    """The semantic terms of one batch whose true source labels are none of f_S's readings."""
    torch.manual_seed(0)
    f_s = build_task_network("lenet")
    real_A, real_B = torch.rand(6, 3, 32, 32) * 2 - 1, torch.rand(6, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        wrong = (f_s(real_A).argmax(1) + 1) % 10
    images = {"fake_B": torch.rand(6, 3, 32, 32) * 2 - 1, "fake_A": torch.rand(6, 3, 32, 32) * 2 - 1, "A_label": wrong}
    plug_in = cycada.semantic_consistency(config, f_s)
    return plug_in.terms(real_A, real_B, images), {"real_A": real_A, "real_B": real_B, **images}, plug_in


def test_semantic_target_labels_asks_for_the_true_source_labels(tmp_path):
    paper, seen, plug_in = _semantic_terms(cycada_smoke(tmp_path))
    assert not plug_in.labels  # the paper's terms need no labels: the pixel step reads none
    release, seen, plug_in = _semantic_terms(cycada_smoke(tmp_path, semantic_target="labels"))
    assert plug_in.labels
    f_s = cycada.freeze(build_task_network("lenet"))
    torch.manual_seed(0)
    f_s.load_state_dict(build_task_network("lenet").state_dict())
    assert torch.allclose(release["sem_A"], losses.task_loss(f_s(seen["fake_B"]), seen["A_label"]))
    assert not torch.allclose(release["sem_A"], paper["sem_A"])
    assert torch.equal(release["sem_B"], paper["sem_B"])  # T -> S keeps the argmax on real target


def test_semantic_gate_zeroes_both_terms_while_the_judges_loss_is_above_it(tmp_path):
    open_terms, seen, _ = _semantic_terms(cycada_smoke(tmp_path))  # no gate: nothing is zeroed
    assert all(t > 0 for t in open_terms.values())
    f_s = cycada.freeze(build_task_network("lenet"))
    torch.manual_seed(0)
    f_s.load_state_dict(build_task_network("lenet").state_dict())
    judged = losses.task_loss(f_s(seen["real_A"]), seen["A_label"]).item()
    below, _, plug_in = _semantic_terms(cycada_smoke(tmp_path, semantic_gate=judged * 0.9))
    assert plug_in.labels and set(below) == {"sem_A", "sem_B"} and all(t == 0 for t in below.values())
    above, _, _ = _semantic_terms(cycada_smoke(tmp_path, semantic_gate=judged * 1.1))
    assert all(torch.equal(above[name], open_terms[name]) for name in open_terms)


def test_pixel_stage_hands_the_source_labels_to_the_semantic_terms(tmp_path, monkeypatch):
    seen = []
    real = cycada.semantic_consistency

    def spy(config, f_s):
        plug_in = real(config, f_s)
        return replace(plug_in, terms=lambda a, b, images: seen.append(images.get("A_label")) or
                       plug_in.terms(a, b, images))

    monkeypatch.setattr(cycada, "semantic_consistency", spy)
    config = cycada_smoke(tmp_path, semantic_target="labels", semantic_gate=1.0)
    run_cycada(config, stages="source,pixel", progress=False)
    assert seen and all(labels is not None and labels.dtype == torch.int64 for labels in seen)
    with pytest.raises(ValueError, match="semantic_gate=1.0 there"):
        cycada.stage_checkpoint(replace(config, semantic_gate=None), "pixel")


def test_online_judge_learns_during_the_pixel_stage_and_f_s_does_not(tmp_path, monkeypatch):
    judges = []
    real = semantic.online_judge

    def spy(config, judge):
        judges.append((judge, copy.deepcopy(judge.state_dict())))
        return real(config, judge)

    monkeypatch.setattr(semantic, "online_judge", spy)
    config = cycada_smoke(tmp_path, semantic_judge="online", semantic_target="labels", semantic_gate=1.0)
    assert cycada.needs(config, "pixel") == ("source",)  # no stage judges: the judge is trained in the stage
    run_cycada(config, stages="source", progress=False)
    f_s = copy.deepcopy(cycada.load_stage(config, "source").state_dict())
    run_cycada(config, stages="pixel", progress=False)
    (judge, before), = judges
    assert _changed(judge, before)  # trained online, on real source with its labels
    assert not _changed(cycada.load_stage(config, "source"), f_s)
    with pytest.raises(ValueError, match="semantic_judge='online' there, 'source' now"):
        cycada.stage_checkpoint(replace(config, semantic_judge="source"), "pixel")


def test_the_frozen_judge_stays_as_it_was(tmp_path, monkeypatch):
    judges = []
    real = cycada.semantic_consistency
    monkeypatch.setattr(cycada, "semantic_consistency",
                        lambda config, f_s: judges.append((f_s, copy.deepcopy(f_s.state_dict()))) or real(config, f_s))
    run_cycada(cycada_smoke(tmp_path), stages="source,pixel", progress=False)
    (judge, before), = judges
    assert not _changed(judge, before)


# --------------------------------------------------------------------------- the release as a whole


def test_form_release_selects_every_release_choice_and_given_options_win(tmp_path):
    paper, release = cycada_smoke(tmp_path), CyCADAConfig.for_scale("smoke", form="release", source="mnist5k",
                                                                     target="mnistm5k", out=str(tmp_path))
    assert paper == CyCADAConfig.for_scale("smoke", form="paper", source="mnist5k", target="mnistm5k",
                                           out=str(tmp_path), device="cpu", amp="none")  # the default form
    assert (release.semantic_judge, release.semantic_target, release.semantic_gate) == ("online", "labels", 1.0)
    assert (release.feature_start, release.lambda_task, release.feature_gate) == ("pixel_only", 0.0, 0.6)
    assert release.feature_lr == paper.feature_lr  # the scale's
    assert CyCADAConfig.for_scale("smoke", form="release", lambda_task=0.5).lambda_task == 0.5
    with pytest.raises(ValueError, match="unknown form 'x'; valid values: paper, release"):
        CyCADAConfig.for_scale("smoke", form="x")


def test_the_release_form_of_segmentation_is_train_fcn_adda():
    """The release's segmentation stage 3 (scripts/train_fcn_adda.sh) starts f_T from the network trained on
    translated GTA5, gates it at 60% and, its weights shared, steps on the source labels: lambda_task stays 1;
    none of the digit CycleGAN's stage-2 choices apply."""
    paper = CyCADAConfig.for_scale("smoke", task="segmentation", source="mnist-scenes", target="mnistm-scenes")
    release = CyCADAConfig.for_scale("smoke", form="release", task="segmentation", source="mnist-scenes",
                                     target="mnistm-scenes")
    assert (release.feature_start, release.feature_gate, release.lambda_task) == ("pixel_only", 0.6, 1.0)
    assert (release.semantic_judge, release.semantic_target, release.semantic_gate) == (
        paper.semantic_judge, paper.semantic_target, paper.semantic_gate)
    with pytest.raises(ValueError, match="task"):
        CyCADAConfig.for_scale("smoke", form="release", task="x")


def test_cli_form_release_is_recorded_by_the_stages(tmp_path):
    code, err = cli("train", "cycada", "--source", "mnist5k", "--target", "mnistm5k", "--form", "x")
    assert code == 2 and "unknown form 'x'; valid values: paper, release" in err
    code, _ = cli("train", "cycada", "--source", "mnist5k", "--target", "mnistm5k", "--scale", "smoke", "--device",
                  "cpu", "--form", "release", "--out", str(tmp_path), "--stages", "source")
    config = CyCADAConfig.for_scale("smoke", form="release", source="mnist5k", target="mnistm5k", out=str(tmp_path),
                                    device="cpu")
    assert code == 0 and cycada.stage_finished(config, "source")
    recorded = cycada.stage_checkpoint(config, "source")["meta"]["cycada"]
    assert (recorded["semantic_judge"], recorded["feature_start"], recorded["feature_gate"]) == ("online",
                                                                                                "pixel_only", 0.6)
