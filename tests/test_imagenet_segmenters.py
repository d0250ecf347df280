"""The release's segmenters starting from ImageNet weights (fcn8s_imagenet, drn26_imagenet), as its
train_fcn.py starts them: loaded by a fresh source stage, never by a stage's checkpoint; tests never
download (the downloads are replaced by state_dicts of the right layout)."""
from __future__ import annotations

import pytest
import torch

from cyclelib import CyCADAConfig, run_cycada
from cyclelib.classifiers import build_task_network, load_pretrained
from cyclelib.cycada import load_stage
from cyclelib.segnets import DRN26, FCN8s, build_segmenter

IMAGENET_CLASSES = 1000


@pytest.fixture
def drn26_imagenet(monkeypatch):
    """DRN-C-26's ImageNet weights as its authors' file holds them (1000 classes in ``fc``), served by a
    stand-in for torch hub's download that counts its calls."""
    torch.manual_seed(1)
    state = DRN26(IMAGENET_CLASSES).state_dict()
    calls = []

    def download(url, **kw):
        calls.append(url)
        return state

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", download)
    return state, calls


def test_drn26_imagenet_starts_from_the_imagenet_layers_with_a_fresh_classifier(drn26_imagenet):
    state, calls = drn26_imagenet
    net = load_pretrained(build_task_network("drn26_imagenet", 11)).net
    assert len(calls) == 1
    for key in ("conv1.weight", "layer5.0.conv1.weight", "layer8.0.bn2.running_var"):
        assert torch.equal(net.state_dict()[key], state[key]), key
    assert net.fc.weight.shape == (11, 512, 1, 1)  # the release's finetune: ImageNet's fc is dropped
    plain = load_pretrained(build_task_network("drn26", 11)).net
    assert len(calls) == 1 and not torch.equal(plain.conv1.weight, state["conv1.weight"])
    built = build_segmenter("drn26", 11, pretrained=True)  # the same weights, asked for directly
    assert len(calls) == 2 and torch.equal(built.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])


def test_imagenet_weights_that_cannot_be_had_name_the_url_and_the_way_out(monkeypatch):
    def offline(*args, **kw):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"drn26_imagenet.*drn26-ddedf421.pth: no network.*--classifier drn26 "):
        load_pretrained(build_task_network("drn26_imagenet", 11))
    from torchvision.models import VGG16_Weights

    monkeypatch.setattr(type(VGG16_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(RuntimeError, match=r"fcn8s_imagenet.*vgg16.*no network.*--classifier fcn8s "):
        build_segmenter("fcn8s_imagenet", 19, pretrained=True)


def test_fcn8s_imagenet_takes_vgg16s_convolutions_and_its_fully_connected_layers_as_convolutions(monkeypatch):
    from torchvision.models import VGG16_Weights

    fcn = FCN8s(19)
    torch.manual_seed(2)
    vgg16 = {f"features.{key.removeprefix('vgg.')}": torch.randn_like(value)
             for key, value in fcn.state_dict().items() if key.startswith("vgg.")}
    vgg16.update({"classifier.0.weight": torch.randn(4096, 512 * 7 * 7), "classifier.0.bias": torch.randn(4096),
                  "classifier.3.weight": torch.randn(4096, 4096), "classifier.3.bias": torch.randn(4096),
                  "classifier.6.weight": torch.randn(IMAGENET_CLASSES, 4096),
                  "classifier.6.bias": torch.randn(IMAGENET_CLASSES)})
    monkeypatch.setattr(type(VGG16_Weights.IMAGENET1K_V1), "get_state_dict", lambda self, **kw: vgg16)
    net = load_pretrained(build_task_network("fcn8s_imagenet", 19)).net
    assert torch.equal(net.vgg[28].weight, vgg16["features.28.weight"])
    assert torch.equal(net.vgg_head[0].weight.flatten(1), vgg16["classifier.0.weight"])
    assert net.vgg_head[6].weight.shape == (19, 4096, 1, 1)  # ImageNet's 1000-way layer is not taken


def test_a_fresh_source_stage_loads_the_imagenet_weights_and_its_reuse_does_not(tmp_path, drn26_imagenet):
    state, calls = drn26_imagenet
    config = CyCADAConfig.for_scale("smoke", task="segmentation", source="mnist-scenes", target="mnistm-scenes",
                                    classifier="drn26_imagenet", out=str(tmp_path / "run"), device="cpu",
                                    amp="none", task_epochs=1, max_samples=4)
    run_cycada(config, stages=["source"], progress=False)
    assert len(calls) == 1
    f_s = load_stage(config, "source").net
    # trained a few steps from the ImageNet weights: near them, not at a fresh init's distance
    start, fresh = state["layer4.0.conv1.weight"], DRN26(11).layer4[0].conv1.weight
    moved = (f_s.layer4[0].conv1.weight - start).abs().mean()
    assert 0 < moved < 0.1 * (fresh - start).abs().mean()
    run_cycada(config, stages=["source"], progress=False)  # finished: loaded from its checkpoint
    assert len(calls) == 1
