r"""Task networks for semantic segmentation and CyCADA's output-space discriminator.

Every segmenter maps images ``[N, 3, H, W]`` in ``[-1, 1]`` to per-pixel class scores
``[N, K, H, W]`` at the input size, whatever H and W:

- :class:`SmallFCN`: a small fully convolutional network for the cpu scale (output stride 4,
  dilated convolutions for context, bilinear upsampling);
- :class:`FCN8s`: FCN8s on VGG16 (Long et al.), and :class:`DRN26`: the dilated residual network
  DRN-C-26 (Yu et al.), both in the layout of the CyCADA release (jhoffman/cycada_release,
  ``cycada/models/fcn8s.py`` and ``cycada/models/drn.py``): the same module names, so the
  release's published ``state_dict`` files load with ``load_state_dict``. The release feeds
  them ImageNet-normalised images; they convert cyclelib's ``[-1, 1]`` images themselves
  (:class:`ImageNetInput`, which holds no weights).

:class:`ScoreDiscriminator` is the release's discriminator on score maps (``--discrim_score``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .names import SEGMENTERS

# ImageNet weights of DRN-C-26 by its authors (the release's ``model_urls``, cycada/models/drn.py
# line 16); torchvision has no DRN.
DRN26_IMAGENET_URL = "https://tigress-web.princeton.edu/~fy/drn/models/drn26-ddedf421.pth"


class ImageNetInput(nn.Module):
    """``[-1, 1]`` images to the ImageNet normalisation the release's segmenters were trained with
    (``Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])`` after ``ToTensor``,
    cycada/models/fcn8s.py lines 44-49). Its constants are not part of a ``state_dict``."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2 - self.mean) / self.std


def _check_images(x: torch.Tensor, who: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{who} expects RGB images N x 3 x H x W, got a tensor of shape {tuple(x.shape)}")


# --------------------------------------------------------------------------- the cpu-scale network


class SmallFCN(nn.Module):
    """A small fully convolutional segmenter for the cpu scale.

    Two stride-2 stages (output stride 4), then dilated 3x3 convolutions (dilation 2 and 4) for a
    receptive field of about 60 pixels, a 1x1 classifier and bilinear upsampling to the input
    size. BatchNorm after every convolution but the classifier. ``width`` channels in the first
    stage, doubled in each of the next two.
    """

    channels, image_size = 3, None  # RGB of any size (classifiers.build_task_network reads them)

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()

        def block(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False),
                    nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        w = width
        self.features = nn.Sequential(*block(3, w), *block(w, 2 * w, stride=2), *block(2 * w, 2 * w),
                                      *block(2 * w, 4 * w, stride=2), *block(4 * w, 4 * w, dilation=2),
                                      *block(4 * w, 4 * w, dilation=4))
        self.classifier = nn.Conv2d(4 * w, num_classes, 1)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "SmallFCN")
        scores = self.classifier(self.features(x))  # [N, K, ~H/4, ~W/4]
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------- FCN8s (VGG16)


def bilinear_kernel(size: int) -> torch.Tensor:
    """The ``size`` x ``size`` bilinear upsampling kernel of FCN (the release's
    ``get_upsample_filter``, cycada/models/fcn8s.py lines 13-23)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    rows, cols = np.ogrid[:size, :size]
    return torch.from_numpy((1 - abs(rows - center) / factor) * (1 - abs(cols - center) / factor)).float()


class Bilinear(nn.Module):
    """Fixed bilinear upsampling by ``factor``, a transposed convolution per channel. The kernel is
    a buffer ``w`` because the release saves it in its ``state_dict`` (fcn8s.py lines 26-38)."""

    def __init__(self, factor: int, num_channels: int):
        super().__init__()
        self.factor = factor
        w = torch.zeros(num_channels, num_channels, 2 * factor, 2 * factor)
        w[range(num_channels), range(num_channels)] = bilinear_kernel(2 * factor)
        self.register_buffer("w", w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.w, stride=self.factor)


def _vgg16_features() -> nn.Sequential:
    """torchvision's VGG16 ``features`` (configuration D), with ``ceil_mode=True`` pooling as the
    release's ``make_layers`` (fcn8s.py lines 247-263); indices as torchvision's."""
    layers, channels = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers)


class FCN8s(nn.Module):
    """FCN8s on VGG16, the release's ``VGG16_FCN8s`` (cycada/models/fcn8s.py lines 41-136).

    ``state_dict`` keys: ``vgg.{0,2,5,...,28}.{weight,bias}`` (VGG16's 13 convolutions),
    ``vgg_head.{0,3,6}`` (fc6 as a 7x7 convolution, fc7, the score layer), ``score_pool4``,
    ``score_pool3``, and the fixed upsampling kernels ``upscore2.w``, ``upscore_pool4.w`` (one
    module under two names, as in the release) and ``upscore8.w``. The forward pass is the
    release's: 99 pixels of zero padding, skips from pool4 and pool3 scaled by 0.01 and 0.0001,
    crops at offsets 5, 9 and 31. ``score_pool4`` and ``score_pool3`` start at zero, so an
    untrained skip changes nothing. ``imagenet`` (``fcn8s_imagenet``): it is meant to start from
    torchvision's VGG16 ImageNet weights, as the release's FCN8s does (fcn8s.py lines 139-155), which
    :meth:`load_imagenet` loads (a fresh task stage calls it: a stage's checkpoint holds its own weights).
    """

    channels, image_size = 3, None  # RGB of any size (classifiers.build_task_network reads them)

    def __init__(self, num_classes: int = 19, imagenet: bool = False):
        super().__init__()
        self.input = ImageNetInput()
        self.vgg = _vgg16_features()
        self.vgg_head = nn.Sequential(
            nn.Conv2d(512, 4096, 7), nn.ReLU(inplace=True), nn.Dropout2d(0.5),
            nn.Conv2d(4096, 4096, 1), nn.ReLU(inplace=True), nn.Dropout2d(0.5),
            nn.Conv2d(4096, num_classes, 1))
        self.upscore2 = self.upscore_pool4 = Bilinear(2, num_classes)
        self.upscore8 = Bilinear(8, num_classes)
        self.score_pool4 = nn.Conv2d(512, num_classes, 1)
        self.score_pool3 = nn.Conv2d(256, num_classes, 1)
        for layer in (self.score_pool4, self.score_pool3):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.num_classes, self.imagenet = num_classes, imagenet

    def load_imagenet(self) -> None:
        """VGG16's ImageNet weights from torchvision (downloaded once into torch hub's cache) in the VGG16
        layers (:func:`vgg16_state_to_fcn`); the score layers keep their values."""
        from torchvision.models import VGG16_Weights

        weights = VGG16_Weights.IMAGENET1K_V1
        state = _imagenet_state(weights.url, "fcn8s_imagenet", "fcn8s", lambda: weights.get_state_dict(progress=False))
        self.load_state_dict(vgg16_state_to_fcn(state, self.state_dict()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "FCN8s")
        h, w = x.shape[-2:]
        y = F.pad(self.input(x), (99, 99, 99, 99))
        for i, module in enumerate(self.vgg):
            y = module(y)
            if i == 16:
                pool3 = y
            elif i == 23:
                pool4 = y
        y = self.vgg_head(y)
        upscore2 = self.upscore2(y)
        fuse_pool4 = upscore2 + _crop(self.score_pool4(0.01 * pool4), upscore2.shape[-2:], 5)
        upscore_pool4 = self.upscore_pool4(fuse_pool4)
        fuse_pool3 = upscore_pool4 + _crop(self.score_pool3(0.0001 * pool3), upscore_pool4.shape[-2:], 9)
        return _crop(self.upscore8(fuse_pool3), (h, w), 31)  # [N, K, H, W]


def _crop(x: torch.Tensor, size: tuple[int, int], offset: int) -> torch.Tensor:
    return x[:, :, offset:offset + size[0], offset:offset + size[1]].contiguous()


def vgg16_state_to_fcn(vgg16_state: dict[str, torch.Tensor], fcn_state: dict[str, torch.Tensor]
                       ) -> dict[str, torch.Tensor]:
    """``fcn_state`` with its VGG16 layers replaced by those of torchvision's VGG16 ``vgg16_state``.

    The release's surgery (``load_base_weights``, fcn8s.py lines 139-155): ``features.*`` become
    ``vgg.*``, the fully connected fc6 and fc7 (``classifier.0``, ``classifier.3``) are reshaped
    into the 7x7 and 1x1 convolutions ``vgg_head.0`` and ``vgg_head.3``; ImageNet's 1000-way
    classifier is dropped, the score layers keep their values.
    """
    state = dict(fcn_state)
    for key, value in vgg16_state.items():
        if key.startswith("features."):
            state["vgg." + key.removeprefix("features.")] = value
    for fc, conv in (("classifier.0", "vgg_head.0"), ("classifier.3", "vgg_head.3")):
        for part in ("weight", "bias"):
            state[f"{conv}.{part}"] = vgg16_state[f"{fc}.{part}"].reshape(fcn_state[f"{conv}.{part}"].shape)
    return state


# --------------------------------------------------------------------------- DRN-26


class BasicBlock(nn.Module):
    """DRN's residual block of two 3x3 convolutions (drn.py lines 27-60), ``residual=False`` in
    the last two levels, which remove the gridding of dilation."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: tuple[int, int] = (1, 1), residual: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=dilation[0], dilation=dilation[0], bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=dilation[1], dilation=dilation[1], bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class DRN26(nn.Module):
    """DRN-C-26 for segmentation, the release's ``drn26`` (cycada/models/drn.py lines 104-260, with
    ``out_map=True``): eight levels of basic blocks ``[1, 1, 2, 2, 2, 2, 1, 1]`` with channels
    ``16, 32, 64, 128, 256, 512, 512, 512``, output stride 8 (levels 5-8 dilated 2, 4, 2, 1
    instead of strided), a 1x1 classifier ``fc`` and bilinear upsampling (``align_corners=True``)
    to the input size.

    ``state_dict`` keys as the release's: ``conv1``, ``bn1``, ``layer1`` ... ``layer8`` (each
    ``.{block}.conv1/bn1/conv2/bn2`` and ``.0.downsample.{0,1}`` where the channels or stride
    change), ``fc``. Weights start as in the release (normal with std sqrt(2 / (k*k*out)), BatchNorm
    1 and 0). ``imagenet`` (``drn26_imagenet``): it is meant to start from DRN-C-26's ImageNet
    weights by its authors, as the release's ``get_model(..., finetune=True)`` (scripts/train_fcn.py
    line 76; drn.py lines 161-174), which :meth:`load_imagenet` loads.
    """

    channels, image_size = 3, None  # RGB of any size (classifiers.build_task_network reads them)

    LEVELS = (1, 1, 2, 2, 2, 2, 1, 1)
    CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)

    def __init__(self, num_classes: int = 19, imagenet: bool = False):
        super().__init__()
        self.input = ImageNetInput()
        c = self.CHANNELS
        self.conv1 = nn.Conv2d(3, c[0], 7, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c[0])
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = c[0]
        # (stride, dilation, new_level, residual) of each level, as drn.py lines 131-146
        plan = ((1, 1, True, True), (2, 1, True, True), (2, 1, True, True), (2, 1, True, True),
                (1, 2, False, True), (1, 4, False, True), (1, 2, False, False), (1, 1, False, False))
        for i, (blocks, channels, (stride, dilation, new_level, residual)) in enumerate(zip(self.LEVELS, c, plan)):
            setattr(self, f"layer{i + 1}", self._make_layer(channels, blocks, stride, dilation, new_level, residual))
        self.fc = nn.Conv2d(c[-1], num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
        self.num_classes, self.imagenet = num_classes, imagenet

    def load_imagenet(self) -> None:
        """DRN-C-26's ImageNet weights (:data:`DRN26_IMAGENET_URL`, downloaded once into torch hub's cache)
        in every layer but ``fc``, which keeps its fresh classes, as the release's ``finetune``
        (drn.py lines 168-171)."""
        state = _imagenet_state(DRN26_IMAGENET_URL, "drn26_imagenet", "drn26", lambda: torch.hub.load_state_dict_from_url(
            DRN26_IMAGENET_URL, map_location="cpu", progress=False, weights_only=True))
        missing, unexpected = self.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")},
                                                   strict=False)
        if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
            raise ValueError(f"{DRN26_IMAGENET_URL} is not DRN-C-26: missing {sorted(missing)[:3]}, "
                             f"unexpected {sorted(unexpected)[:3]}")

    def _make_layer(self, planes: int, blocks: int, stride: int, dilation: int, new_level: bool,
                    residual: bool) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        first = (1, 1) if dilation == 1 else (dilation // 2 if new_level else dilation, dilation)
        layers = [BasicBlock(self.inplanes, planes, stride, downsample, first, residual)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes, dilation=(dilation, dilation), residual=residual)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "DRN26")
        y = self.relu(self.bn1(self.conv1(self.input(x))))
        for i in range(1, 9):
            y = getattr(self, f"layer{i}")(y)
        return F.interpolate(self.fc(y), size=x.shape[-2:], mode="bilinear", align_corners=True)


def _imagenet_state(url: str, name: str, plain: str, load) -> dict[str, torch.Tensor]:
    """``load()``, the ImageNet weights at ``url`` of segmenter ``name``, or an error that says what to do if
    they cannot be had (offline, say): put the file in the cache, or train segmenter ``plain`` from scratch."""
    try:
        return load()
    except Exception as e:  # urllib's, ssl's, a hash mismatch: all mean "not available here"
        raise RuntimeError(f"the segmenter {name} starts from ImageNet weights, which could not be had ({url}: {e}); "
                           f"put the file in torch hub's cache (torch.hub.get_dir()/checkpoints) or use "
                           f"--classifier {plain} (random init)") from e


def build_segmenter(name: str, num_classes: int, pretrained: bool = False) -> nn.Module:
    """A segmenter by name (:data:`~cyclelib.names.SEGMENTERS`): ``small_fcn`` (:class:`SmallFCN` at the
    width benchmarks/segmentation_gap.py measured), ``fcn8s`` (:class:`FCN8s`), ``drn26`` (:class:`DRN26`),
    and ``fcn8s_imagenet``, ``drn26_imagenet``: the same networks meant to start from ImageNet weights,
    which ``pretrained`` loads (else a fresh task stage does, :func:`~cyclelib.classifiers.load_pretrained`)."""
    if name not in SEGMENTERS:
        raise ValueError(f"unknown segmenter {name!r}; valid values: {', '.join(SEGMENTERS)}")
    if name == "small_fcn":
        if pretrained:
            raise ValueError("the segmenter small_fcn has no pretrained weights; valid values for pretrained "
                             "segmenters: fcn8s_imagenet, drn26_imagenet")
        return SmallFCN(num_classes, width=16)
    net = (FCN8s if name.startswith("fcn8s") else DRN26)(num_classes, imagenet=name.endswith("_imagenet"))
    if pretrained:
        net.imagenet = True
        net.load_imagenet()
    return net


# --------------------------------------------------------------------------- output-space discriminator


class ScoreDiscriminator(nn.Module):
    """The release's discriminator on score maps (``Discriminator(input_dim=num_cls, output_dim=2)``,
    cycada/models/fcn8s.py lines 188-208, used with ``--discrim_score`` in
    scripts/train_fcn_adda.py lines 143-149): three 1x1 convolutions ``D.0``, ``D.3``, ``D.6``
    with dropout and ReLU between them, so it judges every pixel's score vector on its own and
    returns per-pixel 2-way logits ``[N, 2, H, W]`` (class 1: source, class 0: target; see
    :func:`~cyclelib.losses.feature_gan_loss`). Its input is the segmenter's raw scores (not
    their softmax), as in the release (train_fcn_adda.py lines 218-229). Widths 512 and 256
    (the release's choice for inputs other than 4096-channel features).
    """

    def __init__(self, num_classes: int, width: int = 512):
        super().__init__()
        self.D = nn.Sequential(
            nn.Conv2d(num_classes, width, 1), nn.Dropout2d(0.5), nn.ReLU(inplace=True),
            nn.Conv2d(width, width // 2, 1), nn.Dropout2d(0.5), nn.ReLU(inplace=True),
            nn.Conv2d(width // 2, 2, 1))
        self.num_classes = num_classes

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        if scores.dim() != 4 or scores.shape[1] != self.num_classes:
            raise ValueError(f"ScoreDiscriminator expects score maps N x {self.num_classes} x H x W, "
                             f"got a tensor of shape {tuple(scores.shape)}")
        return self.D(scores)
