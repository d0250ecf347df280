"""Metrics on hand-made predictions, and the eval-mode / no-grad contract of predict."""
import math

import pytest
import torch
from torch import nn

from cyclelib.metrics import (accuracy, as_tensors, colour_shift, confusion_matrix, label_preservation,
                              mean_pairwise_l1, per_class_accuracy, predict)
from cyclelib.plots import plot_confusion_matrix

PREDICTIONS = torch.tensor([0, 1, 1, 2, 2, 0])
LABELS = torch.tensor([0, 1, 2, 2, 2, 1])


def test_accuracy_counts_exact_matches():
    assert accuracy(PREDICTIONS, LABELS) == pytest.approx(4 / 6)
    assert accuracy(LABELS, LABELS) == 1.0


def test_confusion_matrix_rows_are_true_classes():
    expected = torch.tensor([[1, 0, 0, 0],
                             [1, 1, 0, 0],
                             [0, 1, 2, 0],
                             [0, 0, 0, 0]])
    assert torch.equal(confusion_matrix(PREDICTIONS, LABELS, num_classes=4), expected)


def test_per_class_accuracy_and_absent_class_is_nan():
    per_class = per_class_accuracy(PREDICTIONS, LABELS, num_classes=4)
    assert per_class[:3] == pytest.approx([1.0, 0.5, 2 / 3])
    assert math.isnan(per_class[3])


def test_mismatched_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="same length"):
        accuracy(torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="empty"):
        accuracy(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))


class ReadsPixel(nn.Module):
    """A 'classifier' that predicts the class written as the value of the first pixel.

    It records the mode and grad state it ran under; its dropout would change the
    answer in train mode.
    """

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.num_classes = num_classes
        self.scale = nn.Parameter(torch.ones(()))
        self.dropout = nn.Dropout(0.99)
        self.calls = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled(), len(x)))
        value = self.dropout(x[:, 0, 0, 0] * self.scale).round().long().clamp(0, self.num_classes - 1)
        return nn.functional.one_hot(value, self.num_classes).float()


def images_of(labels):
    """Images whose every pixel is the label: dataset of (image [1, 2, 2], label) pairs."""
    return [(torch.full((1, 2, 2), float(y)), y) for y in labels]


def test_predict_runs_in_eval_mode_without_grad_in_batches_and_restores_the_mode():
    net = ReadsPixel().train()
    predictions, labels = predict(net, images_of([0, 1, 2, 3, 1]), batch_size=2)
    assert predictions.tolist() == [0, 1, 2, 3, 1] and labels.tolist() == [0, 1, 2, 3, 1]
    assert net.calls == [(False, False, 2), (False, False, 2), (False, False, 1)]
    assert net.training


class AddOne(nn.Module):
    def forward(self, x):
        return x + 1


def test_label_preservation_is_fs_accuracy_on_translated_images():
    data = images_of([0, 1, 2, 3])
    assert label_preservation(ReadsPixel(), nn.Identity(), data) == 1.0
    # x + 1 turns every class k into k + 1; only class 3 (clamped) is still read right
    assert label_preservation(ReadsPixel(), AddOne(), data) == pytest.approx(1 / 4)


def test_confusion_matrix_plot_is_written(tmp_path):
    path = plot_confusion_matrix(confusion_matrix(PREDICTIONS, LABELS, 4), tmp_path / "cm.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_as_tensors_holds_every_item_of_a_labelled_dataset_in_order():
    data = images_of([3, 1, 2, 0, 1])
    held = as_tensors(data, batch_size=2)  # batches of 2: the last one is a single item
    images, labels = held.tensors
    assert images.shape == (5, 1, 2, 2) and labels.dtype == torch.long
    assert labels.tolist() == [3, 1, 2, 0, 1]
    assert torch.equal(images[:, 0, 0, 0], torch.tensor([3.0, 1, 2, 0, 1]))
    with pytest.raises(ValueError, match="empty"):
        as_tensors([])


def test_mean_pairwise_l1_is_the_mean_distance_between_two_different_images():
    same = torch.zeros(4, 3, 2, 2)
    assert mean_pairwise_l1(same) == 0.0
    # values 0, 1, 3: pairwise distances per value 1, 3, 2, each pair counted twice -> mean 2
    three = torch.tensor([0.0, 1.0, 3.0]).view(3, 1, 1, 1).expand(3, 3, 4, 4)
    assert mean_pairwise_l1(three) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="at least two images"):
        mean_pairwise_l1(torch.zeros(1, 3, 2, 2))


def test_colour_shift_is_the_signed_change_of_each_channels_mean():
    inputs = torch.rand(5, 3, 8, 8) * 2 - 1
    tint = torch.tensor([0.2, 0.0, -0.1]).view(1, 3, 1, 1)
    shift = colour_shift(inputs, inputs + tint)
    assert shift.shape == (5, 3)
    assert torch.allclose(shift, tint.view(1, 3).expand(5, 3), atol=1e-6)
    # moving pixels around (a texture change) keeps each channel's mean
    assert colour_shift(inputs, inputs.flip(-1).roll(3, dims=-2)).abs().max() < 1e-6
    with pytest.raises(ValueError, match="same N and C"):
        colour_shift(inputs, inputs[:4])
