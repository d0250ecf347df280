"""How good a classifier is on a domain, and how well a translation keeps the labels.

All functions work on plain tensors of class indices, so they can be checked on
hand-made predictions; :func:`predict` produces those tensors from a network and
a dataset of ``(image, label)`` pairs.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from .modes import eval_mode


@torch.no_grad()
def predict(classifier: nn.Module, dataset: Dataset, batch_size: int = 256,
            transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
            device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true labels of ``classifier`` on ``dataset`` (items ``(image, label)``).

    The classifier runs in eval mode (dropout off, BatchNorm running statistics), under
    ``torch.no_grad``, in batches; its previous mode is restored afterwards. ``transform``
    (e.g. a generator G_{S->T}) is applied to each image batch first.
    Returns two LongTensors [N] on the CPU: predictions, labels.
    """
    device = device or _device_of(classifier)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    predictions, labels = [], []
    with eval_mode(classifier):
        for images, y in loader:
            images = images.to(device)          # [B, C, H, W]
            if transform is not None:
                images = transform(images)
            predictions.append(classifier(images).argmax(dim=1).cpu())  # [B]
            labels.append(torch.as_tensor(y).long())
    return torch.cat(predictions), torch.cat(labels)


def _device_of(module: nn.Module) -> torch.device:
    """Where ``module`` lives (the CPU for one without weights)."""
    weight = next(module.parameters(), None)
    return weight.device if weight is not None else torch.device("cpu")


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


def label_preservation(judge: nn.Module | Mapping[str, nn.Module], translator: nn.Module, dataset: Dataset,
                       batch_size: int = 256) -> float | dict[str, float]:
    r"""How often a classifier still recognises the true label after translation.

    .. math::
        \frac{1}{N}\sum_i \mathbb{1}\big[\arg\max f(G_{S\to T}(x_i)) = y_i\big]

    on a labelled source ``dataset``, with ``judge`` as f. With f = f_S this is what the
    semantic consistency loss aims at: a translation that turns a 3 into an 8 scores low even
    if it looks like the target. But the semantic loss optimises f_S's reading, so a judge
    that no training consulted (the target oracle) tells a translation that keeps the digit
    from one that only keeps f_S's reading of it. ``judge`` may be one classifier (returns
    a float) or a dict of them (returns their scores by name); the source images are
    translated once, in eval mode, whatever the number of judges.
    """
    judges = dict(judge) if isinstance(judge, Mapping) else {"": judge}
    translated = translate_dataset(translator, dataset, batch_size)
    scores = {name: accuracy(*predict(f, translated, batch_size)) for name, f in judges.items()}
    return scores if isinstance(judge, Mapping) else scores[""]


@torch.no_grad()
def translate_dataset(translator: nn.Module, dataset: Dataset, batch_size: int = 256) -> TensorDataset:
    """(G(x), y) for every (x, y) of ``dataset``, computed once in eval mode (the translator's
    mode is restored afterwards); the images [N, C, H, W] are kept on the CPU.

    CyCADA's feature and pixel-only stages train on such fixed translations, as in the
    release, instead of running the generator again every epoch.
    """
    device = _device_of(translator)
    images, labels = [], []
    with eval_mode(translator):
        for x, y in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
            images.append(translator(x.to(device)).cpu())  # [B, C, H, W]
            labels.append(torch.as_tensor(y).long())
    return torch.utils.data.TensorDataset(torch.cat(images), torch.cat(labels))


def dark_digits(images: torch.Tensor, strokes: torch.Tensor) -> torch.Tensor:
    """[N] bool: whether each image draws its digit darker than the rest of the image.

    ``images`` [N, C, H, W]; ``strokes`` [N, H, W] bool, where each image's digit has ink (for
    MNIST-M, the pixels where the MNIST digit it was made from is bright). The ink and the paper
    are the mean grey level (channel mean) over the stroke and over the other pixels. MNIST-M
    blends a digit into a photo as |photo - digit|, so about a third of its digits come out
    darker than their background; a translation of MNIST that draws none misses that mode.
    """
    grey = images.float().mean(dim=1)  # [N, H, W]
    strokes = strokes.to(grey.device)
    ink = (grey * strokes).sum((1, 2)) / strokes.sum((1, 2)).clamp(min=1)
    paper = (grey * ~strokes).sum((1, 2)) / (~strokes).sum((1, 2)).clamp(min=1)
    return ink < paper


def as_tensors(dataset: Dataset, batch_size: int = 256) -> TensorDataset:
    """A dataset of ``(image, label)`` pairs held in memory: ``TensorDataset(images [N, C, H, W], labels [N])``.

    Domains such as :class:`~cyclelib.digits.DigitDomain` resize and convert each image on access;
    measuring the same test split many times (every stage of a run, every judge) from one
    in-memory copy does that work once. ``tensors`` gives the two tensors, e.g. for slicing.
    """
    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    images, labels = [], []
    for x, y in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        images.append(x)
        labels.append(torch.as_tensor(y).long())
    return TensorDataset(torch.cat(images), torch.cat(labels))


def mean_pairwise_l1(images: torch.Tensor) -> float:
    r"""Mean per-value L1 distance between two different images of a batch ``[N, C, H, W]``.

    .. math::
        \frac{1}{N(N-1)\,D}\sum_{i \ne j} \lVert x_i - x_j \rVert_1, \quad D = C H W

    A measure of how much a set of images varies: 0 when they are all the same. Divided by
    the same number for real target images, it is the *output diversity* of a translation
    (near 0: every input gets one output, the collapse the adversarial loss allows).
    """
    if images.dim() != 4 or len(images) < 2:
        raise ValueError(f"need a batch of at least two images [N, C, H, W], got shape {tuple(images.shape)}")
    flat = images.detach().float().flatten(1)  # [N, D]
    n = len(flat)
    return (torch.cdist(flat, flat, p=1).sum() / (n * (n - 1) * flat.shape[1])).item()  # the diagonal is 0


def colour_shift(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """How each image's mean colour changed: ``outputs`` minus ``inputs``, averaged over the
    pixels of each channel, ``[N, C]`` (signed; images ``[N, C, H, W]`` in ``[-1, 1]``).

    A translation that keeps colours, such as a change of texture, leaves it near 0; a tint
    shows up as the same sign in most images of one channel. The mean over images and channels
    of its absolute value is the *mean colour shift* of a translation.
    """
    if inputs.shape[:2] != outputs.shape[:2] or inputs.dim() != 4 or outputs.dim() != 4:
        raise ValueError(f"inputs and outputs must be batches [N, C, H, W] with the same N and C, got shapes "
                         f"{tuple(inputs.shape)} and {tuple(outputs.shape)}")
    return (outputs.detach().float().mean(dim=(2, 3)) - inputs.detach().float().mean(dim=(2, 3))).cpu()


@torch.no_grad()
def noise_effect(generator: nn.Module, dataset: Dataset, batch_size: int = 256) -> float:
    r"""How much a generator that takes noise (:class:`~cyclelib.networks.NoiseInput`) moves
    its outputs with the noise: :math:`\mathbb{E}\,\lvert G(x, z_1) - G(x, z_2) \rvert` over the
    images of ``dataset`` (items ``(image, label)``) and two independent noise draws per image,
    in the units of the images ([-1, 1]). 0 means the noise is ignored (or erased).
    """
    device = _device_of(generator)
    total, count = 0.0, 0
    with eval_mode(generator):
        for x, _ in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
            x = x.to(device)
            total += (generator(x) - generator(x)).abs().mean(dim=(1, 2, 3)).sum().item()
            count += len(x)
    return total / count


# --------------------------------------------------------------------------- semantic segmentation

IGNORE_LABEL = 255  # pixels without a class (Cityscapes' and GTA5's unlabelled or unused ids)


def segmentation_confusion(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int,
                           ignore_index: int = IGNORE_LABEL) -> torch.Tensor:
    """Pixel counts int64 ``[num_classes, num_classes]``: entry (i, j) = pixels of true class i
    predicted as j, over every pixel whose label is not ``ignore_index``.

    ``predictions`` and ``labels``: class maps of one shape (e.g. ``[N, H, W]``). Matrices of
    batches add up to the matrix of the whole split, so a test split is measured batch by batch
    at full resolution. The release's ``fast_hist`` (scripts/eval_fcn.py lines 21-23), except that
    a label other than ``ignore_index`` outside ``0..num_classes-1``, or a prediction outside the
    classes, raises ``ValueError`` where ``fast_hist`` drops it silently.
    """
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions and labels must have the same shape, got {tuple(predictions.shape)} "
                         f"and {tuple(labels.shape)}")
    labels, predictions = labels.flatten().long(), predictions.flatten().long()
    kept = labels != ignore_index
    labels, predictions = labels[kept], predictions[kept]
    for name, values in (("label", labels), ("prediction", predictions)):
        bad = (values < 0) | (values >= num_classes)
        if bad.any():
            raise ValueError(f"{name} {int(values[bad][0])} is neither a class (0..{num_classes - 1}) nor "
                             f"the ignore label {ignore_index}")
    index = labels * num_classes + predictions
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def class_iou(matrix: torch.Tensor) -> list[float]:
    r"""Intersection over union of each class from a confusion matrix (rows: truth, columns: prediction).

    .. math::
        \mathrm{IoU}_k = \frac{C_{kk}}{\sum_j C_{kj} + \sum_i C_{ik} - C_{kk}}

    A class that is neither in the labels nor in the predictions gets ``nan``: there is nothing to
    overlap. (The release adds 1e-8 to the union, scripts/eval_fcn.py line 28, which gives such a
    class 0; torchvision's segmentation reference, references/segmentation/utils.py
    ``ConfusionMatrix.compute``, gives it ``nan`` as here.)
    """
    m = matrix.double()
    union = m.sum(dim=0) + m.sum(dim=1) - m.diag()
    return [(m[k, k] / union[k]).item() if union[k] > 0 else float("nan") for k in range(len(m))]


def mean_iou(matrix: torch.Tensor) -> float:
    """The mean of :func:`class_iou` over the classes present in the labels or the predictions.

    Absent classes (``nan``) are left out of the mean, as numpy's ``nanmean`` in the release
    (scripts/eval_fcn.py line 69) would, were their IoU ``nan`` rather than the 0 its 1e-8 gives;
    torchvision's reference takes the plain mean, ``nan`` then. Over a whole Cityscapes val split
    every class is present and all three agree. ``nan`` if no class is present.
    """
    present = [iou for iou in class_iou(matrix) if iou == iou]
    return sum(present) / len(present) if present else float("nan")


def pixel_accuracy(matrix: torch.Tensor) -> float:
    """The fraction of labelled pixels predicted right, trace over sum (the release's ``acc_overall``,
    scripts/eval_fcn.py line 26); ``nan`` without labelled pixels."""
    total = matrix.sum().item()
    return matrix.diag().sum().item() / total if total else float("nan")


@torch.no_grad()
def segmentation_metrics(segmenter: nn.Module, dataset: Dataset, num_classes: int, batch_size: int = 8,
                         transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                         ignore_index: int = IGNORE_LABEL, device: str | torch.device | None = None) -> dict:
    """How well ``segmenter`` labels the pixels of ``dataset`` (items ``(image [3, H, W], labels [H, W])``).

    Runs in eval mode (restored afterwards), in batches; ``transform`` (e.g. G_{S->T}) is applied
    to each image batch first. Scores smaller or larger than the labels are resized bilinearly to
    the labels' size before the argmax, so every labelled pixel is counted at full resolution.
    Returns ``{"miou", "pixel_accuracy", "class_iou" (list, nan for absent classes),
    "confusion" (list of lists)}``.
    """
    device = device or _device_of(segmenter)
    was_training = segmenter.training
    segmenter.eval()
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    try:
        for images, labels in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
            images = images.to(device)  # [B, 3, H, W]
            if transform is not None:
                images = transform(images)
            scores = segmenter(images)  # [B, K, h, w]
            if scores.shape[-2:] != labels.shape[-2:]:
                scores = torch.nn.functional.interpolate(scores, size=labels.shape[-2:], mode="bilinear",
                                                         align_corners=False)
            matrix += segmentation_confusion(scores.argmax(dim=1).cpu(), labels, num_classes, ignore_index)
    finally:
        segmenter.train(was_training)
    return {"miou": mean_iou(matrix), "pixel_accuracy": pixel_accuracy(matrix), "class_iou": class_iou(matrix),
            "confusion": matrix.tolist()}
