"""CyCADA on the user's own labelled folders (issue 25, part 2): ``--source folder:A --target folder:B``."""
import json
import re

import numpy as np
import torch
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from cyclelib import CyCADAConfig
from cyclelib.cycada_run import run_cycada
from cyclelib.digits import digit_domain
from cyclelib.cycada import stage_checkpoint
from cyclelib.folders import check_folder_domains, folder_fingerprint
from helpers import cli

CLASSES = ("zero", "one", "two")


def write_domain(root, dark_on_light: bool, labelled: bool = True, per_class: int = 12, size: int = 16,
                 classes=CLASSES):
    """sklearn's 8x8 digits 0..len(classes)-1 as PNGs of ``size`` in ``root/{train,test}/<class>/`` (or
    flat in ``root/train/`` when not ``labelled``): light on dark, or dark on light (the known shift)."""
    digits = load_digits()
    for label, name in enumerate(classes):
        pictures = digits.images[digits.target == label][:per_class]
        for i, picture in enumerate(pictures):
            levels = np.rint(picture * 255 / 16).astype(np.uint8)
            if dark_on_light:
                levels = 255 - levels
            split = "test" if i % 4 == 0 else "train"
            folder = root / split / name if labelled else root / "train"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(levels).resize((size, size)).save(folder / f"{name}_{i}.png")
    return root


def config(tmp_path, source, target, **options):
    base = dict(source=f"folder:{source}", target=f"folder:{target}", out=str(tmp_path / "run"), device="cpu",
                amp="none")
    return CyCADAConfig.for_scale("smoke", **{**base, **options})


def test_folder_domain_reads_any_size_as_rgb_at_image_size(tmp_path):
    root = write_domain(tmp_path / "a", dark_on_light=False)
    Image.new("RGB", (40, 24), (200, 10, 10)).save(root / "train" / "two" / "wide.png")  # other size and mode
    domain = digit_domain(f"folder:{root}", "train", size=16)
    image, label = domain[len(domain) - 1]
    assert image.shape == (3, 16, 16) and label == 2
    assert sorted({y for _, y in domain}) == [0, 1, 2]


@pytest.mark.parametrize("damage, named", [
    ("empty class", "train/two"),
    ("one class", "single/train holds one class only"),
    ("class on one side", "only in"),
    ("corrupt image", "one_1.png"),
])
def test_bad_folders_are_refused_before_any_stage_naming_the_folder_or_file(tmp_path, damage, named):
    a = write_domain(tmp_path / "a", dark_on_light=False)
    b = write_domain(tmp_path / "b", dark_on_light=True)
    if damage == "empty class":
        for path in (a / "train" / "two").iterdir():
            path.unlink()
    elif damage == "one class":
        a = write_domain(tmp_path / "single", dark_on_light=False, classes=("zero",))
    elif damage == "class on one side":
        b = write_domain(tmp_path / "b3", dark_on_light=True, classes=("zero", "one", "three"))
    else:
        (b / "train" / "one" / "one_1.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    c = config(tmp_path, a, b)
    with pytest.raises(ValueError, match=named):
        run_cycada(c)
    assert not (tmp_path / "run").exists()  # nothing ran, nothing was written
    code, err = cli("train", "cycada", "--source", c.source, "--target", c.target, "--scale", "smoke",
                    "--out", str(tmp_path / "cli"), "--device", "cpu")
    assert code == 2 and "cyclelib: error:" in err and named in err


def test_class_names_are_matched_by_name_and_the_target_may_be_unlabelled(tmp_path):
    a = write_domain(tmp_path / "a", dark_on_light=False)
    assert check_folder_domains(f"folder:{a}", f"folder:{write_domain(tmp_path / 'b', True)}", 16)
    assert not check_folder_domains(f"folder:{a}", f"folder:{write_domain(tmp_path / 'u', True, False)}", 16)


@pytest.mark.parametrize("labelled", [True, False])
def test_cycada_runs_end_to_end_on_folders(tmp_path, labelled, capsys):
    a = write_domain(tmp_path / "a", dark_on_light=False)
    b = write_domain(tmp_path / "b", dark_on_light=True, labelled=labelled)
    out = tmp_path / "run"
    code, err = cli("train", "cycada", "--source", f"folder:{a}", "--target", f"folder:{b}", "--scale", "smoke",
                    "--out", str(out), "--device", "cpu", "--amp", "none")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["target_labels"] is labelled
    assert 0 <= metrics["source_test_accuracy"] <= 1 and "label_preservation" in metrics
    results = ("source_only", "pixel_only", "feature_only", "pixel_feature", "target_oracle")
    if labelled:
        assert all(0 <= metrics[key] <= 1 for key in results)
        assert len(metrics["confusion"]["source_only"]) == len(CLASSES)
    else:
        assert not any(key in metrics for key in results)
        assert not (out / "oracle").exists()
        printed = capsys.readouterr().out
        assert "skipping oracle" in printed and "no accuracy on the target" in printed


def test_resnet18_is_a_task_network_for_any_number_of_classes_and_image_size(tmp_path):
    from cyclelib.classifiers import build_task_network

    net = build_task_network("resnet18", num_classes=3)
    assert net(torch.rand(2, 3, 40, 40) * 2 - 1).shape == (2, 3)  # read at its size, not resized
    a = write_domain(tmp_path / "a", dark_on_light=False)
    b = write_domain(tmp_path / "b", dark_on_light=True)
    code, err = cli("train", "cycada", "--source", f"folder:{a}", "--target", f"folder:{b}", "--scale", "smoke",
                    "--out", str(tmp_path / "run"), "--device", "cpu", "--amp", "none", "--classifier", "resnet18",
                    "--stages", "source,feature_only")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["classifier"] == "resnet18" and 0 <= metrics["feature_only"] <= 1


def test_resnet18_imagenet_starts_from_the_imagenet_weights_or_says_why_it_cannot(monkeypatch):
    from torchvision.models import ResNet18_Weights, resnet18

    from cyclelib.classifiers import build_task_network, load_pretrained

    imagenet = resnet18(weights=None).state_dict()  # stands for the download: tests never download
    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", lambda self, **kw: imagenet)
    net = load_pretrained(build_task_network("resnet18_imagenet", num_classes=3)).net.resnet
    assert torch.equal(net.conv1.weight, imagenet["conv1.weight"]) and net.fc.out_features == 3
    assert not torch.equal(build_task_network("resnet18", 3).net.resnet.conv1.weight, imagenet["conv1.weight"])
    assert CyCADAConfig(source="mnist5k", target="mnistm5k", classifier="resnet18_imagenet")  # an option's value

    def offline(self, **kw):
        raise OSError("no network")

    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="could not be had.*no network.*--classifier resnet18"):
        load_pretrained(build_task_network("resnet18_imagenet", num_classes=3))


def test_a_stage_trained_on_other_images_of_a_folder_is_not_reused(tmp_path):
    """A stage records what its folder domains held: after a file of the target is edited, the
    finished stages are refused (naming the folder) instead of being reused as if they had seen it."""
    a = write_domain(tmp_path / "a", dark_on_light=False)
    b = write_domain(tmp_path / "b", dark_on_light=True)
    c = config(tmp_path, a, b)
    run_cycada(c, stages=("source",), progress=False)
    assert stage_checkpoint(c, "source") is not None  # the same images: reused
    edited = sorted((b / "train" / "one").iterdir())[0]
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(edited)
    folder_fingerprint.cache_clear()  # a new process would read the folder afresh
    with pytest.raises(ValueError, match=rf"images of folder:{re.escape(str(b))} \(files added, removed or edited"):
        stage_checkpoint(c, "source")
