"""A translation of the source made elsewhere (``translated_source``): the CyCADA release's feature stage trains on its
published GTA5 translated to look like Cityscapes (scripts/train_fcn_adda.sh line 26, src='cyclegta5'), read as
``gta5:DIR/cyclegta5``, not on a pixel stage of its own run. With the option the pixel_only and feature stages read
that domain and need no pixel stage. Tiny GTA5 and Cityscapes files in their official layouts; the translated
folder, in GTA5's layout, holds fewer frames than the source, and its label maps are all road, unlike the source's."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cyclelib import CyCADAConfig, cycada, run_cycada
from cyclelib.cycada import needs, stage_checkpoint, stage_path, with_needs
from helpers import DRIVING_HEIGHT, DRIVING_WIDTH, cli, driving_smoke, palette_png, rgb, write_driving

ROAD = 7  # Cityscapes' label id of road, train id 0
TRANSLATED_FRAMES = 3


def write_translated(folder, frames: int = TRANSLATED_FRAMES) -> str:
    """A translated source in GTA5's layout (images/ + labels/, as cyclelib download cyclegta5 writes it), every
    label map all road; the domain name that reads it."""
    for i in range(frames):
        (folder / "images").mkdir(parents=True, exist_ok=True)
        rgb(DRIVING_WIDTH, DRIVING_HEIGHT, seed=200 + i).save(folder / "images" / f"{i:05d}.png")
        palette_png(folder / "labels" / f"{i:05d}.png", np.full((DRIVING_HEIGHT, DRIVING_WIDTH), ROAD, np.uint8))
    return f"gta5:{folder}"


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("driving")
    return {**write_driving(root, scenes=4), "translated": write_translated(root / "cyclegta5"),
            "other": write_translated(root / "other", frames=2)}


def config(out, domains, **options) -> CyCADAConfig:
    pair = {"source": domains["source"], "target": domains["target"]}
    return driving_smoke(out, pair, **{"translated_source": domains["translated"], **options})


def test_pixel_only_and_feature_need_no_pixel_stage_with_a_translated_source(domains, tmp_path):
    c = config(tmp_path, domains)
    assert (needs(c, "pixel_only"), needs(c, "feature")) == ((), ("source",))
    assert with_needs(("pixel_only", "feature"), c) == ("source", "pixel_only", "feature")
    # the release's feature stage, started from the pixel_only network: the feature_start need stays
    release = config(tmp_path, domains, feature_start="pixel_only")
    assert with_needs(("feature",), release) == ("source", "pixel_only", "feature")
    assert needs(c, "pixel") == ("source",) and needs(c, "feature_only") == ("source",)  # the other stages as before
    without = config(tmp_path, domains, translated_source=None)
    assert (needs(without, "pixel_only"), needs(without, "feature")) == (("pixel",), ("source", "pixel"))


@pytest.fixture(scope="module")
def run(domains, tmp_path_factory):
    """The release's stages source, pixel_only and feature (started from pixel_only) on the translated folder,
    recording the data pixel_only trains on and the (translated) source images the feature stage pairs."""
    c = config(tmp_path_factory.mktemp("run") / "out", domains, feature_start="pixel_only")
    seen = {}

    def train_classifier(config, stage, dataset, *args, **kwargs):
        seen[stage] = dataset
        return classifier(config, stage, dataset, *args, **kwargs)

    def unpaired(source, target, **kwargs):
        seen["feature"] = source
        return pairs(source, target, **kwargs)

    classifier, pairs = cycada.train_classifier, cycada.Unpaired
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cycada, "train_classifier", train_classifier)
        patch.setattr(cycada, "Unpaired", unpaired)
        metrics = run_cycada(c, stages=("source", "pixel_only", "feature"), progress=False)
    return c, seen, metrics


def labels_of(dataset) -> np.ndarray:
    return np.concatenate([np.asarray(dataset[i][1]).ravel() for i in range(len(dataset))])


def test_the_stages_train_on_the_translated_folder_without_a_pixel_stage(run):
    c, seen, metrics = run
    out = stage_path(c, "source").parent.parent
    assert not (out / "pixel").exists() and not (out / "translated").exists()  # no CycleGAN, no translation here
    assert all(stage_path(c, stage).is_file() for stage in ("source", "pixel_only", "feature"))
    # pixel_only and feature read the translated frames (all road), in crops; source reads GTA5 (not all road)
    for stage in ("pixel_only", "feature"):
        assert len(seen[stage]) == TRANSLATED_FRAMES and (labels_of(seen[stage]) == 0).all(), stage
        assert seen[stage][0][0].shape == (3, c.crop_size, c.crop_size)
    assert (labels_of(seen["source"]) != 0).any()
    # evaluated without a translator: no label preservation, every trained result
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert {"source_only", "pixel_only", "pixel_feature"} <= metrics.keys()
    assert "label_preservation" not in metrics


def test_another_translated_source_refuses_reuse_of_pixel_only_and_feature(run, domains, capsys):
    c, _, _ = run
    other = config(c.out, domains, feature_start="pixel_only", translated_source=domains["other"])
    for stage in ("pixel_only", "feature"):  # as run_cycada checks each stage it would reuse before any runs
        with pytest.raises(ValueError, match=rf"the '{stage}' stage in .* was trained with other options "
                                             rf"\(translated_source='gta5:.*cyclegta5' there, 'gta5:.*other' now\); "
                                             rf"retrain it \(--stages {stage} --force"):
            stage_checkpoint(other, stage)
    with pytest.raises(ValueError, match=r"the 'pixel_only' stage .* other options \(translated_source="):
        run_cycada(other, stages=("feature",), progress=False)
    # the pixel stage's translation in its place: another training set as well (it would need a pixel stage first)
    with pytest.raises(ValueError, match=r"'pixel_only' stage .*translated_source='gta5:.*cyclegta5' there, None now"):
        run_cycada(config(c.out, domains, feature_start="pixel_only", translated_source=None), stages=("pixel_only",),
                   progress=False)
    # the source stage reads no translation: reused; nor does the pixel stage's network shape those that read one
    capsys.readouterr()
    run_cycada(config(c.out, domains, feature_start="pixel_only", ngf=c.ngf * 2, pixel_crop_size=12),
               stages=("source", "pixel_only", "feature"), progress=False)
    assert capsys.readouterr().out.count("cycada: skipping") == 3


@pytest.mark.parametrize("options, message", [
    (dict(translated_source="gta5-translated"), r"unknown translated_source 'gta5-translated'; valid values: driving "
                                                r"scenes \(gta5:PATH, cityscapes:PATH\), as the source"),
    (dict(translated_source="mnist"), r"translated_source 'mnist' is not of the source's kind: the source 'gta5:.*' is "
                                      r"driving scenes"),
    (dict(translated_source="mnistm-scenes"), r"translated_source 'mnistm-scenes' is not of the source's kind"),
    (dict(source="mnist-scenes", target="mnistm-scenes", crop_size=None, translated_source="SOURCE"),
     r"translated_source 'gta5:.*' is not of the source's kind: the source 'mnist-scenes' is digit scenes"),
])
def test_a_translated_source_that_does_not_fit_is_refused_naming_the_option(domains, tmp_path, options, message):
    if options.get("translated_source") == "SOURCE":
        options = {**options, "translated_source": domains["translated"]}
    with pytest.raises(ValueError, match=message):
        driving_smoke(tmp_path, {"source": domains["source"], "target": domains["target"]}, **options)


def test_classification_takes_no_translated_source_and_the_cli_says_so(domains, tmp_path):
    with pytest.raises(ValueError, match=r"translated_source applies to task segmentation only .* got task "
                                         r"'classification'"):
        CyCADAConfig(source="mnist5k", target="mnistm5k", translated_source="mnistm5k")
    code, err = cli("train", "cycada", "--task", "segmentation", "--source", domains["source"], "--target",
                    domains["target"], "--out", str(tmp_path), "--translated-source", "mnist")
    assert code == 2 and "translated_source 'mnist' is not of the source's kind" in err, err
