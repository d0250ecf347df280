"""The CycleGAN step in the official shape, its generator-terms plug-ins, and the contract a model
meets for the Trainer. (That the refactored step trains bit for bit as before is checked by the
tests that compare it with the official fixture, test_cyclegan, test_properties, test_ddp and
test_resume.)"""
import inspect
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from cyclelib import CyCADAConfig, CycleGAN, CycleGANConfig, GeneratorTerms, Trainable, Trainer, losses
from cyclelib.classifiers import FeatureAlignment, TaskClassifier, build_task_network
from cyclelib.cycada import semantic_consistency
from cyclelib.cyclegan import mode_seeking, set_requires_grad
from cyclelib.runtime import Precision
from cyclelib.train import Distributable

TINY = CycleGANConfig(netG="resnet_1blocks", ngf=4, ndf=4, pool_size=0, amp="none")
MODE_SEEKING = dict(noise_nc=2, noise_injection="modulate", lambda_mode_seeking=0.5)


def images(n=2, channels=3, seed=1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(n, channels, 32, 32, generator=g) * 2 - 1 for _ in range(2))


# --------------------------------------------------------------------------- the step


def test_the_printed_step_is_the_official_one_without_plumbing():
    # Book chapter 5 prints it: the official order, and neither DDP units nor the mode-seeking term
    source = inspect.getsource(CycleGAN.train_step)
    freeze, step_G = source.index("set_requires_grad([self.D_A, self.D_B], False)"), source.index("self.opt_G")
    thaw, step_D = source.index("set_requires_grad([self.D_A, self.D_B], True)"), source.index("self.opt_D")
    assert freeze < step_G < thaw < step_D
    assert not any(word in source for word in ("units", "requires_grad_", "mode_seeking", "sample_noise"))


def test_set_requires_grad_switches_every_parameter_of_every_net():
    nets = [nn.Linear(2, 2), nn.Sequential(nn.Conv2d(1, 1, 3), nn.InstanceNorm2d(1, affine=True))]
    set_requires_grad(nets, False)
    assert not any(p.requires_grad for net in nets for p in net.parameters())
    set_requires_grad(nets, True)
    assert all(p.requires_grad for net in nets for p in net.parameters())


def test_the_discriminators_are_frozen_for_the_generator_step_only():
    model = CycleGAN(TINY)
    frozen_at_call = []  # per call of D_A: whether its weights were frozen
    model.D_A.register_forward_pre_hook(
        lambda net, _: frozen_at_call.append(not any(p.requires_grad for p in net.parameters())))
    model.train_step(*images())
    assert frozen_at_call == [True, False]  # judging fake_B for G_A's loss; then the D step (fast path: one call)
    assert all(p.requires_grad for p in model.parameters())


# --------------------------------------------------------------------------- generator-terms plug-ins


def test_a_plug_in_gets_the_images_it_asks_for_made_inside_the_generators_unit():
    """A term on G_B(G_A(G_B(real_B))): its image is made by the generators inside their update
    unit (which DDP wraps), reaches the term, and the term's gradient reaches both generators."""
    inside = []

    def more_images(model, real_A, real_B):
        inside.append(unit_running)
        return {"rec_rec_B": model.G_A(model.G_B(model.G_A(model.G_B(real_B))))}

    def terms(real_A, real_B, images):
        return {"rec_rec_B": losses.cycle_loss(images["rec_rec_B"], real_B)}

    torch.manual_seed(0)
    model = CycleGAN(TINY, GeneratorTerms(terms, more_images))
    unit = model._units["G"]
    unit_running = False

    def mark(running):
        def hook(*_):
            nonlocal unit_running
            unit_running = running
        return hook

    unit.register_forward_pre_hook(mark(True))
    unit.register_forward_hook(mark(False))
    a, b = images()
    terms_G, made = model.generator_losses(a, b)
    assert inside == [True] and "rec_rec_B" in made
    assert list(terms_G)[-1] == "rec_rec_B"
    for net in (model.G_A, model.G_B):
        grads = torch.autograd.grad(terms_G["rec_rec_B"], list(net.parameters()), retain_graph=True)
        assert any(g.abs().sum() > 0 for g in grads)


def test_a_plain_function_is_a_plug_in_without_images():
    model = CycleGAN(TINY, lambda real_A, real_B, images: {"zero": images["fake_B"].sum() * 0})
    (extra,) = model.extra_generator_losses
    assert isinstance(extra, GeneratorTerms) and extra.images is None
    assert "zero" in model.train_step(*images())


def test_mode_seeking_is_the_plug_in_of_lambda_mode_seeking():
    assert CycleGAN(TINY).extra_generator_losses == ()
    model = CycleGAN(replace(TINY, **MODE_SEEKING))
    (extra,) = model.extra_generator_losses
    assert extra.images is not None
    assert list(model.train_step(*images()))[6:] == ["mode_seeking", "G", "D_A", "D_B"]


def test_the_reference_step_with_mode_seeking_and_semantic_terms_is_the_official_order_then_the_plug_ins():
    """The reference path's generator terms, bit for bit, against the official backward_G written
    out by hand, then mode seeking (real_A under two noise draws, after the six cycle images), then
    CyCADA's semantic terms, summed in that order."""
    cycada = CyCADAConfig(netG="resnet_1blocks", ngf=4, ndf=4, lambda_identity=0.5, **MODE_SEEKING)
    config = replace(cycada.pixel_config("unused"), implementation="reference", pool_size=0, amp="none")
    torch.manual_seed(0)
    f_s = build_task_network("lenet")
    model = CycleGAN(config, semantic_consistency(cycada, f_s))
    a, b = images()
    torch.manual_seed(3)  # G_A draws its noise at every call
    terms, _ = model.generator_losses(a, b)

    G_A, G_B, D_A, D_B, c = model.G_A, model.G_B, model.D_A, model.D_B, config
    torch.manual_seed(3)
    fake_B = G_A(a)
    rec_A, fake_A = G_B(fake_B), G_B(b)
    rec_B, idt_A, idt_B = G_A(fake_A), G_A(b), G_B(a)
    z = G_A.sample_noise(torch.cat([a, a]))
    ms_1, ms_2 = G_A(torch.cat([a, a]), z).chunk(2)
    gan = lambda pred: losses.gan_loss(pred, True, c.gan_mode, for_discriminator=False)
    expected = {
        "G_A": c.lambda_gan_A * gan(D_A(fake_B)), "G_B": c.lambda_gan_B * gan(D_B(fake_A)),
        "cycle_A": c.lambda_A * losses.cycle_loss(rec_A, a), "cycle_B": c.lambda_B * losses.cycle_loss(rec_B, b),
        "idt_A": c.lambda_B * c.lambda_identity * losses.identity_loss(idt_A, b),
        "idt_B": c.lambda_A * c.lambda_identity * losses.identity_loss(idt_B, a),
        "mode_seeking": c.lambda_mode_seeking * losses.mode_seeking_loss(ms_1, ms_2, *z.chunk(2)),
        "sem_A": cycada.lambda_sem_A * losses.semantic_loss(f_s, a, fake_B),
        "sem_B": cycada.lambda_sem_B * losses.semantic_loss(f_s, b, fake_A),
    }
    assert list(terms) == list(expected)
    for name, value in expected.items():
        assert torch.equal(terms[name], value), name
    assert torch.equal(sum(terms.values()), sum(expected.values()))


def test_mode_seeking_draws_two_noises_per_image_and_weights_the_loss():
    torch.manual_seed(0)
    model = CycleGAN(replace(TINY, **MODE_SEEKING))
    a, b = images()
    made = mode_seeking(2.0).images(model, a, b)
    assert made["ms_1"].shape == made["ms_2"].shape == a.shape
    assert made["ms_z1"].shape == made["ms_z2"].shape == (2, 2, 1, 1) and not torch.equal(made["ms_z1"], made["ms_z2"])
    term = mode_seeking(2.0).terms(a, b, made)["mode_seeking"]
    assert torch.equal(term, 2.0 * losses.mode_seeking_loss(made["ms_1"], made["ms_2"], made["ms_z1"], made["ms_z2"]))


# --------------------------------------------------------------------------- the Trainer's contract


def test_every_model_of_cyclelib_meets_the_trainer_contract():
    precision = Precision("none", torch.device("cpu"))
    f_s = build_task_network("lenet")
    cyclegan = CycleGAN(TINY)
    assert isinstance(cyclegan, Trainable) and isinstance(cyclegan, Distributable)
    for model in (TaskClassifier(f_s, 1e-4, precision), FeatureAlignment(f_s, 1e-5, precision)):
        assert isinstance(model, Trainable) and not isinstance(model, Distributable)


class NoSchedule(nn.Module):
    """A model with every method of the contract but end_epoch."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(1, 1)

    def train_step(self, x):
        return {}

    def optimizers(self):
        return {}

    def training_state(self):
        return {}

    def load_training_state(self, state):
        pass


def trainer(model, tmp_path: Path) -> Trainer:
    return Trainer(model, torch.utils.data.TensorDataset(torch.zeros(4, 1)), tmp_path, inputs=lambda batch: batch,
                   record={}, batch_size=2, epochs=1)


def test_the_trainer_refuses_a_model_that_lacks_a_method_and_names_it(tmp_path):
    assert not isinstance(NoSchedule(), Trainable)
    with pytest.raises(TypeError, match=r"NoSchedule cannot be trained by Trainer: it has no method end_epoch "
                                        r"\(see cyclelib.train.Trainable\)"):
        trainer(NoSchedule(), tmp_path)
    with pytest.raises(TypeError, match="Trainer trains a torch.nn.Module, got dict"):
        trainer({}, tmp_path)
