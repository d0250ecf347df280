"""Exact values of every loss on small tensors, computed by hand."""
import math

import pytest
import torch
from torch import nn

from cyclelib import losses

P = torch.tensor([[0.5, -1.0], [2.0, 0.0]])  # a tiny "PatchGAN map"


def test_lsgan_is_mean_squared_distance_to_one_or_zero():
    assert losses.gan_loss(P, True, "lsgan").item() == pytest.approx((0.25 + 4 + 1 + 1) / 4)
    assert losses.gan_loss(P, False, "lsgan").item() == pytest.approx((0.25 + 1 + 4 + 0) / 4)


def test_vanilla_is_the_log_loss_of_the_notes():
    d = torch.sigmoid(P)
    assert losses.gan_loss(P, True, "vanilla").item() == pytest.approx(-torch.log(d).mean().item(), rel=1e-6)
    assert losses.gan_loss(P, False, "vanilla").item() == pytest.approx(-torch.log(1 - d).mean().item(), rel=1e-6)
    # -log(sigmoid(0)) = log 2 for an undecided discriminator
    assert losses.gan_loss(torch.zeros(3), True, "vanilla").item() == pytest.approx(math.log(2))


def test_wgan_and_hinge():
    assert losses.gan_loss(P, True, "wgangp").item() == pytest.approx(-0.375)
    assert losses.gan_loss(P, False, "wgangp").item() == pytest.approx(0.375)
    # relu(1 - p): 0.5, 2, 0, 1 ; relu(1 + p): 1.5, 0, 3, 1
    assert losses.gan_loss(P, True, "hinge").item() == pytest.approx(3.5 / 4)
    assert losses.gan_loss(P, False, "hinge").item() == pytest.approx(5.5 / 4)
    assert losses.gan_loss(P, True, "hinge", for_discriminator=False).item() == pytest.approx(-0.375)


def test_unknown_gan_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match="lsgan, vanilla, wgangp, hinge"):
        losses.gan_loss(P, True, "nonsaturating")


def test_cycle_and_identity_are_mean_absolute_error():
    x = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    y = torch.tensor([[0.0, -1.0], [-0.5, 1.0]])
    assert losses.cycle_loss(y, x).item() == pytest.approx(3 / 4)
    assert losses.identity_loss(y, x).item() == pytest.approx(3 / 4)
    assert losses.cycle_loss(x, x).item() == 0


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = sum(w * x): its gradient is w everywhere, so the penalty is (|w| - 1)^2 * weight.
    critic = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 0.0, 4.0, 0.0]]))  # |w| = 5
    real, fake = torch.randn(6, 4), torch.randn(6, 4)
    gp = losses.gradient_penalty(critic, real, fake, weight=10.0)
    assert gp.item() == pytest.approx(10 * 16, rel=1e-5)
    gp.backward()  # differentiable with respect to the critic's weights
    assert critic.weight.grad is not None and critic.weight.grad.abs().sum() > 0


def test_task_loss_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1])
    expected = (-math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(2)) / 2
    assert losses.task_loss(logits, labels).item() == pytest.approx(expected)


def test_semantic_loss_uses_the_classifier_labels_of_the_real_images():
    classifier = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        classifier.weight.copy_(torch.eye(2))
    classifier.requires_grad_(False)
    real = torch.tensor([[3.0, 0.0], [0.0, 3.0]])  # labelled 0 and 1 by the classifier
    translated = torch.tensor([[1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    loss = losses.semantic_loss(classifier, real, translated)
    expected = (-math.log(math.e / (math.e + 1)) - math.log(1 / (math.e + 1))) / 2
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    # The gradient reaches the translated images (the generator), not the frozen classifier.
    assert translated.grad.abs().sum() > 0
    assert classifier.weight.grad is None


def test_feature_gan_loss_is_two_way_cross_entropy():
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    p1 = math.e / (math.e + 1)
    assert losses.feature_gan_loss(logits, True).item() == pytest.approx(-(math.log(p1) + math.log(1 - p1)) / 2)
    assert losses.feature_gan_loss(logits, False).item() == pytest.approx(-(math.log(1 - p1) + math.log(p1)) / 2)
    assert losses.feature_gan_loss(torch.tensor([[0.0, 5.0]]), True) < losses.feature_gan_loss(
        torch.tensor([[0.0, 5.0]]), False)


def test_mode_seeking_is_the_inverse_of_the_output_change_per_noise_change():
    z_1, z_2 = torch.zeros(2, 3, 1, 1), torch.full((2, 3, 1, 1), 0.5)  # mean |z_1 - z_2| = 0.5
    out_1, out_2 = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.25)  # mean |out_1 - out_2| = 0.25
    assert losses.mode_seeking_loss(out_1, out_2, z_1, z_2, eps=0).item() == pytest.approx(2.0)
    # outputs that ignore the noise cost 1 / eps: the term pushes them apart
    assert losses.mode_seeking_loss(out_1, out_1, z_1, z_2).item() == pytest.approx(1e5)
