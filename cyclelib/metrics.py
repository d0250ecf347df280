"""How good a classifier is on a domain, and how well a translation keeps the labels.

All functions work on plain tensors of class indices, so they can be checked on
hand-made predictions; :func:`predict` produces those tensors from a network and
a dataset of ``(image, label)`` pairs.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


@torch.no_grad()
def predict(classifier: nn.Module, dataset, batch_size: int = 256,
            transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
            device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true labels of ``classifier`` on ``dataset`` (items ``(image, label)``).

    The classifier runs in eval mode (dropout off, BatchNorm running statistics), under
    ``torch.no_grad``, in batches; its previous mode is restored afterwards. ``transform``
    (e.g. a generator G_{S->T}) is applied to each image batch first.
    Returns two LongTensors [N] on the CPU: predictions, labels.
    """
    if device is None:  # where the classifier lives (the CPU for one without weights)
        weight = next(classifier.parameters(), None)
        device = weight.device if weight is not None else "cpu"
    was_training = classifier.training
    classifier.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    predictions, labels = [], []
    try:
        for images, y in loader:
            images = images.to(device)          # [B, C, H, W]
            if transform is not None:
                images = transform(images)
            predictions.append(classifier(images).argmax(dim=1).cpu())  # [B]
            labels.append(torch.as_tensor(y).long())
    finally:
        classifier.train(was_training)
    return torch.cat(predictions), torch.cat(labels)


def _check(predictions: torch.Tensor, labels: torch.Tensor) -> None:
    if predictions.shape != labels.shape or predictions.dim() != 1:
        raise ValueError(f"predictions and labels must be 1-D tensors of the same length, got shapes "
                         f"{tuple(predictions.shape)} and {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("no predictions: the dataset is empty")


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    r"""Fraction of correct predictions, :math:`\frac{1}{N}\sum_i \mathbb{1}[\hat y_i = y_i]`."""
    _check(predictions, labels)
    return (predictions == labels).float().mean().item()


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Counts [num_classes, num_classes]: entry (i, j) = images of true class i predicted as j."""
    _check(predictions, labels)
    index = labels.long() * num_classes + predictions.long()  # one bin per (true, predicted) pair
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> list[float]:
    """Accuracy within each true class (the confusion matrix's diagonal over its row sums).

    A class with no images gets ``nan``: there is nothing to be right or wrong about.
    """
    matrix = confusion_matrix(predictions, labels, num_classes).double()
    totals = matrix.sum(dim=1)  # [K] images per true class
    return [(matrix[k, k] / totals[k]).item() if totals[k] > 0 else float("nan") for k in range(num_classes)]


def label_preservation(f_s: nn.Module, translator: nn.Module, dataset, batch_size: int = 256) -> float:
    r"""How often the source classifier still reads the true label after translation.

    .. math::
        \frac{1}{N}\sum_i \mathbb{1}\big[\arg\max f_S(G_{S\to T}(x_i)) = y_i\big]

    on a labelled source ``dataset``. This is what the semantic consistency loss aims at:
    a translation that turns a 3 into an 8 has a low score even if it looks like the target.
    ``translator`` is put in eval mode for the measurement and restored afterwards.
    """
    was_training = translator.training
    translator.eval()
    try:
        predictions, labels = predict(f_s, dataset, batch_size, transform=translator)
    finally:
        translator.train(was_training)
    return accuracy(predictions, labels)
