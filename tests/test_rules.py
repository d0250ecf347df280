"""One way per rule: one run context for the device-dependent choices, one precision for
translation, one eval-mode switch, each input rule checked in one place with one message, each
CyCADA stage checkpoint read once per run, and no private name imported across modules."""
import ast
import collections
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import cyclelib.cyclegan_run as cyclegan_run
import cyclelib.runs as runs
from cyclelib import CycleGAN, CycleGANConfig, load_cyclegan, train_cyclegan
from cyclelib.checkpoints import save_checkpoint
from cyclelib.cycada_run import run_cycada
from cyclelib.cycada import train_source
from cyclelib.data import ImageFolderDomain
from cyclelib.digits import digit_domain
from cyclelib.distributed import RunContext
from cyclelib.images import read_image
from cyclelib.metrics import predict
from cyclelib.modes import eval_mode
from cyclelib.images import write_image
from cyclelib.translate import translate_folder

from helpers import ROOT, cli, cycada_smoke, rgb, smoke

TINY = dict(netG="resnet_1blocks", ngf=4, ndf=4, load_size=32, crop_size=32, preprocess="none")
CPU = RunContext(torch.device("cpu"))


# --------------------------------------------------------------------------- the run context


def test_the_models_device_choices_follow_the_run_context_not_the_device_option():
    # the option names a GPU (absent here, or present): the context of a CPU run decides
    model = CycleGAN(CycleGANConfig(device="cuda:0", amp="bf16", **TINY), context=CPU)
    assert model.precision.device_type == "cpu"
    assert not model.channels_last
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    terms = model.train_step(x, x)  # the model trains where the context put it
    assert all(torch.isfinite(t) for t in terms.values())


def test_a_context_on_cuda_makes_the_cuda_choices_whatever_the_device_option_says():
    model = CycleGAN(CycleGANConfig(device="cpu", amp="bf16", **TINY), context=RunContext(torch.device("cuda")))
    assert model.precision.device_type == "cuda" and model.channels_last


def test_a_stage_runs_and_records_its_precision_in_the_run_context(tmp_path):
    config = cycada_smoke(tmp_path / "run", device="cuda:0", max_samples=8)  # no GPU needed: the context says cpu
    train_source(config, progress=False, context=CPU)
    meta = runs.load_run_checkpoint(tmp_path / "run" / "source")[0]["meta"]
    assert meta["precision"] == "float32"


# --------------------------------------------------------------------------- translation's precision


@pytest.fixture
def bf16_model():
    """A tiny CycleGAN trained in bf16 (the fast path's autocast), in eval mode on the CPU."""
    torch.manual_seed(0)
    return CycleGAN(CycleGANConfig(amp="bf16", device="cpu", **TINY)).eval()


def test_translate_the_folders_and_the_sample_grids_translate_in_one_precision(bf16_model, tmp_path, monkeypatch):
    images = tmp_path / "in"
    images.mkdir()
    rgb(32, 32, seed=1).save(images / "a.png")
    x = read_image(images / "a.png")[None]  # [1, 3, 32, 32] in [-1, 1]
    translated = bf16_model.translate(x)
    # the sample grid of a run: its G_A(A) row
    shown = {}
    monkeypatch.setattr(cyclegan_run, "save_image_grid", lambda rows, names, path: shown.update(zip(names, rows)))
    cyclegan_run._save_samples(bf16_model, {"A": [x[0]], "B": [x[0]]}, tmp_path / "grid.png")
    assert torch.equal(shown["G_A(A)"], translated)
    # translate_folder's file holds the same translation, as 8-bit pixels
    written = translate_folder(bf16_model.G_A, images, tmp_path / "out", progress=False)
    expected = write_image(translated[0], tmp_path / "expected.png")
    assert np.array_equal(np.asarray(Image.open(written[0])), np.asarray(Image.open(expected)))


def test_translation_in_another_precision_is_asked_for(bf16_model):
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    fp32, bf16 = bf16_model.translate(x), bf16_model.translate(x, amp="bf16")
    assert fp32.dtype == bf16.dtype == torch.float32 and not torch.equal(fp32, bf16)


# --------------------------------------------------------------------------- eval_mode


def _net() -> nn.Module:
    """A network in train mode holding a part kept in eval mode (a frozen classifier, say)."""
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))
    net.train()
    net[2].eval()
    return net


def _modes(net: nn.Module) -> list[bool]:
    return [m.training for m in net.modules()]


def test_eval_mode_switches_off_training_and_gives_each_module_its_mode_back():
    a, b = _net(), _net().eval()
    before = _modes(a), _modes(b)
    with eval_mode(a, b):
        assert not any(_modes(a) + _modes(b))
    assert (_modes(a), _modes(b)) == before


def test_eval_mode_restores_the_modes_when_the_block_raises():
    net = _net()
    before = _modes(net)
    with pytest.raises(RuntimeError, match="inside"):
        with eval_mode(net):
            raise RuntimeError("inside")
    assert _modes(net) == before


def test_predict_and_the_sample_grids_leave_a_frozen_part_frozen(tmp_path, monkeypatch):
    classifier = _net()
    before = _modes(classifier)
    predict(nn.Sequential(nn.Flatten(), classifier), [(torch.zeros(4), 1), (torch.ones(4), 2)])
    assert _modes(classifier) == before
    model = CycleGAN(CycleGANConfig(device="cpu", **TINY)).train()
    model.D_A.eval()  # e.g. a part held in eval mode on purpose
    before = _modes(model)
    monkeypatch.setattr(cyclegan_run, "save_image_grid", lambda *args: None)
    x = torch.zeros(3, 32, 32)
    cyclegan_run._save_samples(model, {"A": [x], "B": [x]}, tmp_path / "grid.png")
    assert _modes(model) == before


# --------------------------------------------------------------------------- one rule, one message


CROP = ("crop_size (40) must not exceed load_size (36) with preprocess 'resize_and_crop', which resizes to "
        "load_size and then crops crop_size; preprocess 'crop' or 'none' do not resize")


def test_the_crop_rule_has_one_message_from_the_config_the_dataset_and_the_command_line(tmp_path):
    folder = tmp_path / "trainA"
    folder.mkdir()
    rgb(40, 40).save(folder / "a.png")
    with pytest.raises(ValueError) as config_error:
        CycleGANConfig(load_size=36, crop_size=40)
    with pytest.raises(ValueError) as data_error:
        ImageFolderDomain(folder, load_size=36, crop_size=40)
    code, err = cli("train", "cyclegan", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                    "--scale", "smoke", "--preprocess", "resize_and_crop", "--load-size", "36", "--crop-size", "40")
    assert str(config_error.value) == str(data_error.value) == CROP
    assert code == 2 and f"cyclelib: error: {CROP}" in err


def test_the_channel_rule_has_one_message_from_the_readers_the_datasets_and_the_command_line(tmp_path):
    rgb(8, 8).save(tmp_path / "a.png")
    message = "channels must be 1 (images read as grayscale) or 3 (RGB), got 2"
    for read in (lambda: read_image(tmp_path / "a.png", channels=2),
                 lambda: ImageFolderDomain(tmp_path, channels=2),
                 lambda: digit_domain("mnist5k", "train", channels=2)):
        with pytest.raises(ValueError) as error:
            read()
        assert str(error.value) == message
    code, err = cli("train", "cyclegan", "--data", "mnist5k:mnistm5k", "--out", str(tmp_path / "run"),
                    "--scale", "smoke", "--input-nc", "2", "--output-nc", "2")
    assert code == 2 and "cyclelib: error: input_nc must be 1 (images read as grayscale) or 3 (RGB), got 2" in err


@pytest.mark.parametrize("argv, message", [
    (("translate", "--checkpoint", "x", "--input", "y", "--output", "z", "--amp", "bf17"),
     "unknown amp 'bf17'; valid values: none, bf16, fp16, auto"),
    (("export", "--checkpoint", "x", "--output", "y", "--format", "tflite"),
     "unknown export format 'tflite'; valid values: onnx, torchscript, safetensors"),
    (("train", "cyclegan", "--data", "mnist5k:mnistm5k", "--scale", "tiny"),
     "unknown scale 'tiny'; valid values: smoke, cpu, colab, gpu"),
    (("train", "cycada", "--source", "mnist5k", "--target", "mnistm5k", "--stages", "source,nope"),
     "unknown stage(s) 'nope'; valid values: source"),
])
def test_an_invalid_choice_on_the_command_line_says_valid_values(argv, message, tmp_path):
    code, err = cli(*argv, *(("--out", str(tmp_path / "run")) if argv[0] == "train" else ()))
    assert code == 2 and message in err and "choose from" not in err


def test_an_invalid_choice_in_the_api_says_valid_values():
    with pytest.raises(ValueError, match="unknown digit domain 'mnist6k'; valid values: mnist5k, "):
        digit_domain("mnist6k", "train")
    with pytest.raises(ValueError, match="unknown preprocess 'zoom'; valid values: resize_and_crop, "):
        ImageFolderDomain(ROOT, preprocess="zoom")


def test_no_message_of_the_package_words_an_invalid_choice_otherwise():
    other = ("choose from", "choose one of", "must be one of", "valid names", "valid stages")
    found = [f"{path.name}: {words!r}" for path in sorted((ROOT / "cyclelib").glob("*.py"))
             for words in other if words in path.read_text(encoding="utf-8").lower()]
    assert not found, found


# --------------------------------------------------------------------------- stage checkpoints read once


@pytest.mark.slow
def test_a_cycada_run_reads_each_stage_checkpoint_once(tmp_path, monkeypatch):
    reads = collections.Counter()
    load = runs.load_checkpoint

    def counted(path, *args, **kwargs):
        reads[Path(path).relative_to(tmp_path).as_posix()] += 1
        return load(path, *args, **kwargs)

    monkeypatch.setattr(runs, "load_checkpoint", counted)
    config = cycada_smoke(tmp_path / "run")
    run_cycada(config, progress=False)  # trains every stage, then evaluates them
    assert reads and max(reads.values()) == 1, reads
    first = set(reads)
    reads.clear()
    run_cycada(config, progress=False)  # every stage complete: reused and evaluated
    assert set(reads) == first and max(reads.values()) == 1, reads


# --------------------------------------------------------------------------- private names


def test_no_module_imports_a_private_name_of_another():
    found = []
    for path in sorted((ROOT / "cyclelib").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("cyclelib")):
                found += [f"{path.name} imports {node.module}.{alias.name}" for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not found, found


# --------------------------------------------------------------------------- implementation, once path


def test_the_step_implementation_keeps_its_former_name_as_a_deprecated_keyword():
    with pytest.warns(DeprecationWarning, match="implementation"):
        config = CycleGANConfig(path="reference", amp="none", **TINY)
    assert config.implementation == "reference" and "path" not in dataclasses.asdict(config)
    assert not CycleGAN(config).grouped  # the reference step: one network call at a time


def test_the_command_line_takes_path_as_a_deprecated_alias(tmp_path):
    out = tmp_path / "run"
    code, err = cli("train", "cyclegan", "--data", "mnist5k:mnistm5k", "--scale", "smoke", "--out", str(out),
                    "--device", "cpu", "--amp", "none", "--max-steps", "1", "--path", "reference")
    assert code == 0, err
    assert "cyclelib: note: --path is deprecated; use --implementation" in err
    assert runs.load_run_checkpoint(out)[0]["config"]["implementation"] == "reference"


def test_a_checkpoint_that_recorded_path_loads_and_resumes_with_its_implementation(tmp_path):
    out = tmp_path / "run"
    train_cyclegan(smoke(out, implementation="reference", max_steps=1), progress=False)
    ckpt = runs.load_run_checkpoint(out)[0]
    config = dict(ckpt["config"])
    config["path"] = config.pop("implementation")  # as cyclelib recorded it before the rename
    save_checkpoint({**ckpt, "config": config}, out / "checkpoint.pt")
    assert load_cyclegan(out / "checkpoint.pt").config.implementation == "reference"
    code, err = cli("train", "cyclegan", "--resume", str(out), "--max-steps", "2")
    assert code == 0, err
    assert "changed at this resume" not in err
    resumed = runs.load_run_checkpoint(out)[0]
    assert resumed["training"]["step"] == 2 and resumed["config"]["implementation"] == "reference"
