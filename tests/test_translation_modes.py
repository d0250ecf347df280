"""Translating a folder or a digit set with a generator leaves it in the mode it had: a caller that
translates in the middle of training (sample grids, a notebook) keeps training with dropout on."""
import torch
from torch.utils.data import TensorDataset

import cyclelib.evaluate as evaluate
from cyclelib import build_generator
from cyclelib.translate import translate_folder
from helpers import photos


def generator_in_training():
    generator = build_generator("resnet_1blocks", width=4, dropout=True).train()
    generator.model[1].eval()  # one module kept in eval mode on purpose: it must stay so
    return generator


def modes(net):
    return [m.training for m in net.modules()]


def test_translate_folder_gives_each_module_its_mode_back(tmp_path):
    photos(tmp_path / "in", [(16, 16), (16, 16)])
    generator = generator_in_training()
    before = modes(generator)
    translate_folder(generator, tmp_path / "in", tmp_path / "out", batch_size=2)
    assert modes(generator) == before


def test_evaluating_digits_gives_the_generator_its_mode_back(monkeypatch):
    generator = generator_in_training()
    before = modes(generator)
    digits = TensorDataset(torch.rand(4, 3, 16, 16) * 2 - 1, torch.arange(4))
    # no Inception here: the features are the pixels, the comparison is skipped
    monkeypatch.setattr(evaluate, "compute_features",
                        lambda batches, extractor: torch.cat([b.float().flatten(1) for b in batches]).numpy())
    monkeypatch.setattr(evaluate, "compare", lambda fake, real, **options: {})
    monkeypatch.setattr(evaluate, "describe", lambda extractor, dimension: {})
    evaluate._evaluate_digits(generator, digits, digits, extractor=None, oracle=None, batch_size=2, device="cpu",
                              out=None, protocol={}, kid_options={})
    assert modes(generator) == before
