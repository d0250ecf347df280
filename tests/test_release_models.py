"""The CyCADA release's published DRN-26 segmenters (issue 26): downloaded (offline, from a local HTTP server on
127.0.0.1 standing in for Dropbox), loaded into cyclelib's DRN26, and made CyCADA stages with --stage-weights,
on GTA5 and Cityscapes files written in their official layouts. The release's files are written here as the
release wrote them: ``torch.save(net.state_dict(), ...)`` of the bare network (no ``module.`` prefix) by a
PyTorch of 2018 (the legacy file format, no BatchNorm ``num_batches_tracked``)."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from cyclelib import DRN26, CyCADAConfig, cycada, download, load_release_segmenter, run_cycada
from cyclelib.cli import build_parser
from cyclelib.checkpoints import load_checkpoint, make_checkpoint, save_checkpoint
from cyclelib.cycada import load_domain, stage_path
from cyclelib.download import RELEASE_MODELS, DownloadError, download_release_model
from cyclelib.metrics import segmentation_metrics
from helpers import RangeServer, cli, equal_states, palette_png, rgb_png

# The release's files are in torch's legacy format, which has no checksums: loading them says so (checked once below).
pytestmark = pytest.mark.filterwarnings("ignore:.*cannot be verified \\(torch's legacy format")

# Cityscapes label ids of road, building, sky and car (train ids 0, 2, 10, 13)
ROAD, BUILDING, SKY, CAR = 7, 11, 23, 26


def release_state(seed: int, num_classes: int = 19) -> dict[str, torch.Tensor]:
    """A DRN-26 state_dict as the release saved one: its own keys, without ``num_batches_tracked``."""
    torch.manual_seed(seed)
    net = DRN26(num_classes)
    return {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


def save_release(state: dict, path: Path) -> Path:
    torch.save(state, path, _use_new_zipfile_serialization=False)  # the format of PyTorch before 1.6
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Two release files (the source and the pixel_only networks) and their states."""
    root = tmp_path_factory.mktemp("release")
    states = {"source": release_state(1), "pixel_only": release_state(2)}
    return {stage: save_release(state, root / f"{stage}.pth") for stage, state in states.items()}


def scene_ids(frame: int) -> np.ndarray:
    """A 16x24 street of Cityscapes label ids: sky, buildings, a car on odd frames, road."""
    ids = np.full((16, 24), ROAD, dtype=np.uint8)
    ids[:5], ids[5:10] = SKY, BUILDING
    if frame % 2:
        ids[10:14, 4 + frame:12 + frame] = CAR
    return ids


@pytest.fixture(scope="module")
def driving(tmp_path_factory) -> tuple[str, str]:
    """``gta5:PATH`` (four frames) and ``cityscapes:PATH`` (train and val, two cities each, label ids)."""
    root = tmp_path_factory.mktemp("driving")
    for frame in range(1, 5):
        rgb_png(root / "gta5" / "images" / f"{frame:05d}.png", 24, 16, value=40 * frame)
        palette_png(root / "gta5" / "labels" / f"{frame:05d}.png", scene_ids(frame))
    for split, cities in (("train", ("aachen", "bochum")), ("val", ("frankfurt", "lindau"))):
        for i, city in enumerate(cities):
            stem = f"{city}_000000_00001{i}"
            rgb_png(root / "cityscapes" / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", 24, 16, 90 + 30 * i)
            labels = root / "cityscapes" / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
            palette_png(labels, scene_ids(i))
    return f"gta5:{root / 'gta5'}", f"cityscapes:{root / 'cityscapes'}"


def config(out: Path, driving, **options) -> CyCADAConfig:
    source, target = driving
    options = {"task": "segmentation", "classifier": "drn26", "source": source, "target": target, "image_size": 16,
               "out": str(out), "device": "cpu", "amp": "none", **options}
    return CyCADAConfig.for_scale("smoke", **options)


# --------------------------------------------------------------------------- downloads


@pytest.fixture
def dropbox(monkeypatch):
    """The local server as Dropbox: each release model at its path, with the same query string."""
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with RangeServer() as server:
        monkeypatch.setattr(download, "RELEASE_MODELS", {
            name: model._replace(url=model.url.replace("https://www.dropbox.com", server.base))
            for name, model in RELEASE_MODELS.items()})
        monkeypatch.setattr(download, "tqdm", None)
        yield server


def test_download_fetches_the_release_file_itself_and_says_how_to_use_it(tmp_path, files, dropbox, capsys):
    body = files["source"].read_bytes()
    dropbox.files["/s/6l073jpt6eo8t8n/drn26-gta5-iter115000.pth?dl=1"] = body  # ?dl=0 is Dropbox's web page
    code, err = cli("download", "drn26-gta5", "--root", str(tmp_path))
    path = tmp_path / "cycada_release" / "drn26-gta5-iter115000.pth"
    assert code == 0, err
    assert path.read_bytes() == body and dropbox.paths == ["/s/6l073jpt6eo8t8n/drn26-gta5-iter115000.pth?dl=1"]
    assert f"--stage-weights source={path}" in capsys.readouterr().out
    assert "unverified" in err and download.hashlib.sha256(body).hexdigest() in err  # the SHA-256 to record
    assert equal_states(load_release_segmenter(path).state_dict(), load_release_segmenter(files["source"]).state_dict())

    assert download_release_model("drn26-gta5", tmp_path) == path and len(dropbox.paths) == 1  # there already


def test_a_download_that_fails_its_recorded_sha256_is_deleted(tmp_path, dropbox, monkeypatch):
    dropbox.files["/s/5hwuq1gy55f6q2b/drn26-cyclegta5-iter115000.pth?dl=1"] = b"not the file"
    monkeypatch.setattr(download, "RELEASE_SHA256", {"drn26-cyclegta5": "0" * 64})
    with pytest.raises(DownloadError, match=r"drn26-cyclegta5-iter115000\.pth\?dl=1 gave a file with SHA256"):
        download_release_model("drn26-cyclegta5", tmp_path)
    assert not (tmp_path / "cycada_release").exists()  # neither the file nor a .part to resume from


def test_download_lists_the_release_models_and_refuses_others():
    code, err = cli("download", "drn26-gta4")
    assert code == 2 and "drn26-gta5, drn26-cyclegta5, drn26-cycada" in err


# --------------------------------------------------------------------------- loading


def test_a_release_file_loads_into_drn26_with_or_without_a_module_prefix(files, tmp_path):
    state = torch.load(files["source"], weights_only=True)
    with pytest.warns(UserWarning, match="legacy format has no checksums"):
        net = load_release_segmenter(files["source"])
    assert isinstance(net, DRN26) and not net.training
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    wrapped = save_release({f"module.{k}": v for k, v in state.items()}, tmp_path / "data_parallel.pth")
    assert equal_states(load_release_segmenter(wrapped).state_dict(), net.state_dict())
    x = torch.rand(1, 3, 16, 24) * 2 - 1
    with torch.no_grad():
        assert net(x).shape == (1, 19, 16, 24)


def test_a_file_that_does_not_fit_is_named_with_what_differs(tmp_path):
    eleven = save_release(release_state(0, num_classes=11), tmp_path / "eleven.pth")
    with pytest.raises(ValueError, match=r"eleven\.pth is not a drn26 of 19 classes .*fc\.weight: file \(11, 512, 1, "
                                         r"1\) vs network \(19, 512, 1, 1\).*looks like a drn26 of 11 classes"):
        load_release_segmenter(eleven)
    fcn = save_release({"vgg.0.weight": torch.zeros(64, 3, 3, 3), "vgg_head.6.weight": torch.zeros(19, 4096, 1, 1)},
                       tmp_path / "fcn8s.pth")
    with pytest.raises(ValueError, match=r"fcn8s\.pth is not a drn26 .*missing keys \(\d+\): conv1\.weight.*unexpected keys \(2\).*"
                                         r"looks like a fcn8s of 19 classes"):
        load_release_segmenter(fcn)
    ours = save_checkpoint(make_checkpoint("classifier", {"classifier": "drn26"}, {}), tmp_path / "ours.pt")
    with pytest.raises(ValueError, match=r"ours\.pt is not a state_dict of the CyCADA release.*cyclelib checkpoint"):
        load_release_segmenter(ours)


# --------------------------------------------------------------------------- stages


@pytest.mark.parametrize("entry, message", [
    ("source", r"STAGE=FILE entries, got 'source'; valid values of STAGE: source, pixel_only, feature"),
    ("pixel=x.pth", r"got 'pixel=x.pth'; valid values of STAGE: source, pixel_only, feature"),
    ("source=missing.pth", r"stage_weights: missing\.pth \(the weights of the source stage\) is not a file"),
])
def test_the_cli_refuses_a_bad_stage_weights_entry_naming_it(tmp_path, driving, entry, message):
    code, err = cli("train", "cycada", "--task", "segmentation", "--classifier", "drn26", "--source", driving[0],
                    "--target", driving[1], "--out", str(tmp_path), "--stage-weights", entry)
    assert code == 2 and err.startswith("cyclelib: error: ") and re.search(message, err), err


def test_stage_weights_need_a_segmenter_of_the_release_layout_and_each_stage_once(tmp_path, driving, files):
    with pytest.raises(ValueError, match="gives the source stage twice"):
        config(tmp_path, driving, stage_weights=[f"source={files['source']}", f"source={files['pixel_only']}"])
    with pytest.raises(ValueError, match="needs task segmentation and a classifier of drn26, fcn8s, drn26_imagenet, fcn8s_imagenet, got task "
                                         "'segmentation' and classifier 'small_fcn'"):
        config(tmp_path, driving, classifier="small_fcn", stage_weights=[f"source={files['source']}"])


def test_the_release_networks_are_the_stages_evaluated_and_reused_as_trained_ones(tmp_path, driving, files, capsys):
    out = tmp_path / "run"
    code, err = cli("train", "cycada", "--task", "segmentation", "--classifier", "drn26", "--source", driving[0],
                    "--target", driving[1], "--scale", "smoke", "--image-size", "16", "--amp", "none", "--out",
                    str(out), "--stages", "source,pixel_only", "--stage-weights", f"source={files['source']}",
                    f"pixel_only={files['pixel_only']}")
    assert code == 0, err
    assert not (out / "pixel").exists()  # pixel_only, the release's network, needs no CycleGAN here
    c = config(out, driving, stage_weights=(f"source={files['source']}", f"pixel_only={files['pixel_only']}"))
    metrics = json.loads((out / "metrics.json").read_text())
    target_test = load_domain(c, c.target, "test")
    for stage, key in (("source", "source_only"), ("pixel_only", "pixel_only")):
        release = segmentation_metrics(load_release_segmenter(files[stage]), target_test, 19)
        assert metrics[key] == pytest.approx(release["miou"])
        assert metrics["confusion"][key] == release["confusion"]
        ckpt = load_checkpoint(stage_path(c, stage))
        assert ckpt["kind"] == "classifier" and "training" not in ckpt  # a finished stage
        assert ckpt["meta"]["weights"] == {stage: download.hashlib.sha256(files[stage].read_bytes()).hexdigest()}
    assert f"{metrics['source_only']:.4f}" in capsys.readouterr().out

    run_cycada(c, stages="source,pixel_only", progress=False)  # a rerun reuses both
    assert capsys.readouterr().out.count("cycada: skipping") == 2

    trained = config(out, driving)  # without the release's files the stages are other results
    with pytest.raises(ValueError, match=r"'source' stage .* other options \(stage_weights: source from a file of "
                                         r"SHA-256 [0-9a-f]{12}\.\.\. there, none now\)"):
        run_cycada(trained, stages="source", progress=False)
    swapped = config(out, driving, stage_weights=(f"source={files['pixel_only']}",))
    with pytest.raises(ValueError, match=r"'source' stage .*stage_weights: source from a file of SHA-256"):
        run_cycada(swapped, stages="source", progress=False)
    run_cycada(swapped, stages="source", force=True, progress=False)  # --force makes it of the other file
    assert json.loads((out / "metrics.json").read_text())["source_only"] == pytest.approx(metrics["pixel_only"])


def test_a_stage_built_on_a_release_network_names_it_in_the_command_to_run_first(tmp_path, driving, files):
    weights = (f"source={files['source']}", f"pixel_only={files['pixel_only']}")
    c = config(tmp_path / "run", driving, feature_start="pixel_only", stage_weights=weights)
    with pytest.raises(FileNotFoundError, match=r"pixel_only/checkpoint\.pt is missing") as found:
        run_cycada(c, stages="feature", progress=False)
    command = shlex.split(re.search(r"`(.*)`", str(found.value))[1])
    args = build_parser().parse_args(command[1:])
    assert (args.stage_weights, args.stages) == (list(weights), "source,pixel,pixel_only")


def test_the_releases_feature_stage_runs_alone_on_its_published_networks_and_translation(tmp_path, driving, files,
                                                                                         capsys):
    """`--stages feature` with the release's source and pixel_only networks and its translated frames
    (--translated-source): the two networks are made of their files first, nothing else needs training."""
    weights = (f"source={files['source']}", f"pixel_only={files['pixel_only']}")
    c = config(tmp_path / "run", driving, feature_start="pixel_only", stage_weights=weights, max_samples=4,
               max_eval_samples=2, translated_source=driving[0])
    metrics = run_cycada(c, stages="feature", progress=False)
    assert "making source, pixel_only of the --stage-weights files first" in capsys.readouterr().out
    assert {"source_only", "pixel_only", "pixel_feature"} <= metrics.keys()
    assert not (tmp_path / "run" / "pixel").exists()
    for stage in ("source", "pixel_only"):  # each made of its file, recorded by its SHA-256
        made = load_checkpoint(stage_path(c, stage))["meta"]["weights"]
        assert made == {stage: download.hashlib.sha256(files[stage].read_bytes()).hexdigest()}


def test_the_feature_stage_starts_from_the_release_pixel_only_network(tmp_path, driving, files, monkeypatch):
    started = []

    class Recorded(cycada.FeatureAlignment):
        def __init__(self, f_s, *args, **kwargs):
            started.append({k: v.clone() for k, v in f_s.net.state_dict().items()})
            super().__init__(f_s, *args, **kwargs)

    monkeypatch.setattr(cycada, "FeatureAlignment", Recorded)
    c = config(tmp_path / "run", driving, feature_start="pixel_only", max_samples=4, max_eval_samples=2,
               stage_weights=(f"source={files['source']}", f"pixel_only={files['pixel_only']}"))
    metrics = run_cycada(c, stages="source,pixel,pixel_only,feature", progress=False)
    assert len(started) == 1
    assert all(torch.equal(started[0][k], v) for k, v in torch.load(files["pixel_only"], weights_only=True).items())
    assert {"source_only", "pixel_only", "pixel_feature", "label_preservation"} <= metrics.keys()
    recorded = load_checkpoint(stage_path(c, "feature"))["meta"]["weights"]
    assert set(recorded) == {"source", "pixel_only"}  # the files of the stages it built on
