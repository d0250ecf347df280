r"""The task networks of CyCADA and the two classifier training steps.

Networks: the digit classifiers ``LeNet`` and ``DTN`` and the feature-level
discriminator of the CyCADA release (jhoffman/cycada_release), with the release's module
names (``conv_params``, ``fc_params``, ``classifier``), and :class:`ClassifierInput`, which
brings the GAN's RGB images to a classifier's input.

Steps, each one :meth:`train_step` of a module that holds its networks and optimisers
(run by :class:`~cyclelib.train.Trainer`):

- :class:`TaskClassifier`: :math:`\min_f \mathcal{L}_{task}(f, X, Y)`, for f_S, the target
  oracle and the pixel-only classifier;
- :class:`FeatureAlignment`: f_T learns the task on (translated) source while a feature-level
  discriminator :math:`D_{feat}` is taught to tell its target outputs from f_S's source ones.

Images are float tensors ``[N, C, H, W]`` in ``[-1, 1]``.
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from . import losses
from .images import luma
from .names import OPTIMIZERS, TASK_NETWORKS
from .runtime import Precision, load_optimizer_state
from .segnets import DRN26, FCN8s, SmallFCN, build_segmenter


class _DigitClassifier(nn.Module):
    """Shared forward of the CyCADA task networks: conv features -> flatten -> fc -> logits.

    Subclasses define ``conv_params``, ``fc_params`` and ``classifier`` (the CyCADA
    release's names, so its saved weights load) and the input they expect:
    ``channels`` x ``image_size`` x ``image_size``. Weights start as in the release:
    Xavier-normal for convs and linears, zero biases, default BatchNorm.
    """

    channels: int
    image_size: int

    def _init_release_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, s = self.channels, self.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(f"{type(self).__name__} expects images of shape N x {c} x {s} x {s}, "
                             f"got a tensor of shape {tuple(x.shape)}")
        features = self.conv_params(x).flatten(1)  # [N, C' * H' * W']
        return self.classifier(self.fc_params(features))  # [N, num_classes] logits


class LeNet(_DigitClassifier):
    """LeNet for MNIST <-> USPS (1 x 28 x 28): two conv5 + max-pool stages, 500 hidden units."""

    channels = 1
    image_size = 28

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv_params = nn.Sequential(
            nn.Conv2d(1, 20, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),  # [N, 20, 12, 12]
            nn.Conv2d(20, 50, kernel_size=5), nn.Dropout2d(0.5), nn.MaxPool2d(2), nn.ReLU())  # [N, 50, 4, 4]
        self.fc_params = nn.Linear(50 * 4 * 4, 500)
        self.classifier = nn.Sequential(nn.ReLU(), nn.Dropout(0.5), nn.Linear(500, num_classes))
        self._init_release_weights()


class DTN(_DigitClassifier):
    """The DTN classifier for SVHN -> MNIST (3 x 32 x 32): three stride-2 conv5 with BatchNorm."""

    channels = 3
    image_size = 32

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers = []
        for c_in, c_out, p in ((3, 64, 0.1), (64, 128, 0.3), (128, 256, 0.5)):  # 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(c_in, c_out, kernel_size=5, stride=2, padding=2), nn.BatchNorm2d(c_out),
                       nn.Dropout2d(p), nn.ReLU()]
        self.conv_params = nn.Sequential(*layers)  # [N, 256, 4, 4]
        self.fc_params = nn.Sequential(nn.Linear(256 * 4 * 4, 512), nn.BatchNorm1d(512))
        self.classifier = nn.Sequential(nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, num_classes))
        self._init_release_weights()


class ResNet18(nn.Module):
    """torchvision's ResNet-18 (He et al., 2016) with ``num_classes`` outputs, for real images: RGB
    at the run's ``image_size``, not resized (its adaptive pooling takes any side of 16 or more).

    Built randomly initialised (torchvision's init). ``imagenet`` (``resnet18_imagenet``): it is
    meant to start from torchvision's ImageNet weights (:meth:`load_imagenet`, called by a fresh
    classifier stage: a stage's checkpoint holds its own weights) and reads its inputs normalised
    as they were trained with.
    """

    channels = 3
    image_size = None
    IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's IMAGENET1K_V1

    def __init__(self, num_classes: int = 10, imagenet: bool = False):
        super().__init__()
        from torchvision.models import resnet18  # torchvision is imported only by who asks for it

        self.resnet, self.imagenet = resnet18(weights=None, num_classes=num_classes), imagenet

    def load_imagenet(self) -> None:
        """torchvision's ImageNet weights (downloaded once into torch hub's cache), all but the last
        layer, which keeps its fresh ``num_classes`` outputs; an error that says what to do if they
        cannot be had (offline, say)."""
        from torchvision.models import ResNet18_Weights

        weights = ResNet18_Weights.IMAGENET1K_V1
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as e:  # urllib's, ssl's, a hash mismatch: all mean "not available here"
            raise RuntimeError(f"the classifier resnet18_imagenet starts from torchvision's ImageNet weights, which "
                               f"could not be had ({weights.url}: {e}); put the file in torch hub's cache "
                               f"(torch.hub.get_dir()/checkpoints) or use --classifier resnet18 (random init)") from e
        self.resnet.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.imagenet:  # [-1, 1] -> [0, 1] -> ImageNet's normalisation
            mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (self.IMAGENET_MEAN,
                                                                                   self.IMAGENET_STD))
            x = ((x + 1) / 2 - mean) / std
        return self.resnet(x)  # [N, num_classes] logits


# The registry of task networks (cyclelib.names declares the names the command line shows).
CLASSIFIERS = TASK_NETWORKS
CLASSIFIERS.register("lenet", cls=LeNet, build=lambda match, num_classes: LeNet(num_classes))
CLASSIFIERS.register("dtn", cls=DTN, build=lambda match, num_classes: DTN(num_classes))
CLASSIFIERS.register("resnet18", cls=ResNet18, build=lambda match, num_classes: ResNet18(num_classes))
CLASSIFIERS.register("resnet18_imagenet", cls=ResNet18, build=lambda match, num_classes: ResNet18(num_classes, True))
# Segmenters (task segmentation), as segnets.build_segmenter builds them (names.SEGMENTERS).
for _segmenter, _cls in dict(small_fcn=SmallFCN, fcn8s=FCN8s, drn26=DRN26, fcn8s_imagenet=FCN8s,
                             drn26_imagenet=DRN26).items():
    CLASSIFIERS.register(_segmenter, cls=_cls,
                         build=lambda match, num_classes: build_segmenter(match.group(0), num_classes))


def build_classifier(name: str, num_classes: int = 10) -> nn.Module:
    """A fresh CyCADA classifier: ``lenet`` (1x28x28), ``dtn`` (3x32x32), ``resnet18`` (3 x any size),
    or any task network registered in :data:`CLASSIFIERS`."""
    return CLASSIFIERS.build(name, num_classes)


class ClassifierInput(nn.Module):
    """Brings the GAN's images [N, 3, H, W] to a classifier's input [N, channels, size, size].

    Every CyCADA stage reads images in the GAN's format (RGB, ``image_size``), so f_S sees real
    and translated images alike; this adapter (no weights) makes them e.g. LeNet's 1x28x28:
    grey = ITU-R 601 luma (:func:`~cyclelib.images.luma`, as every RGB image cyclelib reads as
    grey), then an antialiased bilinear resize. Both are differentiable, so the semantic loss reaches the generator
    through it.
    """

    def __init__(self, channels: int, size: int | None):
        super().__init__()
        self.channels, self.size = channels, size  # size None: kept as it comes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.channels:
            x = luma(x) if self.channels == 1 else x.expand(-1, self.channels, -1, -1)
        if self.size is not None and x.shape[-2:] != (self.size, self.size):
            # in fp32: CPUs have no antialiased resize in bf16 (a generator under bf16 autocast hands bf16 images)
            x = F.interpolate(x.float(), size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=True)
        return x  # [N, channels, size, size]


def build_task_network(name: str, num_classes: int = 10) -> nn.Sequential:
    """A fresh classifier (``lenet`` or ``dtn``) of ``num_classes`` behind a :class:`ClassifierInput` adapter."""
    net = build_classifier(name, num_classes)
    return nn.Sequential(OrderedDict(input=ClassifierInput(net.channels, net.image_size), net=net))


def load_pretrained(net: nn.Module) -> nn.Module:
    """``net`` with the pretrained weights its name asked for loaded (``resnet18_imagenet``,
    ``fcn8s_imagenet``, ``drn26_imagenet``: ImageNet's), in place; only a fresh classifier stage calls it, so
    a stage's checkpoint never downloads anything."""
    for module in net.modules():
        if getattr(module, "imagenet", False) and hasattr(module, "load_imagenet"):
            module.load_imagenet()
    return net


# The segmentation release's SGD (jhoffman/cycada_release at commit 2fbf16b): momentum 0.99 in both scripts
# (scripts/train_fcn.sh line 12, scripts/train_fcn_adda.sh line 8) and weight decay 5e-4 for every network
# (scripts/train_fcn.py lines 103-104; scripts/train_fcn_adda.py lines 163-166, the discriminator's and the net's).
SGD_MOMENTUM, SGD_WEIGHT_DECAY = 0.99, 5e-4


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """The optimiser ``name`` (:data:`~cyclelib.names.OPTIMIZERS`) of ``params`` at learning rate ``lr``:
    ``adam`` (torch's defaults otherwise, as the digit release's) or ``sgd`` (the segmentation
    release's momentum :data:`SGD_MOMENTUM` and weight decay :data:`SGD_WEIGHT_DECAY`)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=SGD_WEIGHT_DECAY)
    if name != "adam":
        raise ValueError(f"unknown optimizer {name!r}; valid values: {', '.join(OPTIMIZERS)}")
    return torch.optim.Adam(params, lr=lr)


def freeze(net: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False``, in place: no gradient step, no BatchNorm update, no dropout."""
    net.eval()
    net.requires_grad_(False)
    return net


class FeatureDiscriminator(nn.Sequential):
    """CyCADA's feature-level D: an MLP on the classifier's logits, 10 (the classes) -> 500 -> 500 -> 2.

    It outputs two logits (source / target), trained with cross-entropy as in the
    release (ADDA style). A plain Sequential, so its keys equal the release's
    ``discriminator.*`` entries without the prefix.
    """

    def __init__(self, input_dim: int = 10, hidden_dim: int = 500, output_dim: int = 2):
        super().__init__(nn.Linear(input_dim, hidden_dim), nn.ReLU(),
                         nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                         nn.Linear(hidden_dim, output_dim))
        self.input_dim = input_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"FeatureDiscriminator expects features of shape N x {self.input_dim}, "
                             f"got a tensor of shape {tuple(x.shape)}")
        return super().forward(x)  # [N, input_dim] -> [N, output_dim]


# --------------------------------------------------------------------------- training steps


class _Training(nn.Module):
    """What :class:`~cyclelib.train.Trainer` needs of a classifier step besides ``train_step``:
    the state of its optimisers (``optimizers``: name -> optimiser) and of its loss scale."""

    precision: Precision

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def training_state(self) -> dict:
        """Everything besides the weights that an exact resume needs."""
        return {"optimizers": {name: opt.state_dict() for name, opt in self.optimizers().items()},
                "scaler": self.precision.scaler.state_dict()}

    def load_training_state(self, state: dict) -> None:
        for name, opt in self.optimizers().items():
            load_optimizer_state(opt, state["optimizers"][name])
        self.precision.load_state_dict(state["scaler"])

    def end_epoch(self, score: float | None = None) -> None:
        """The learning rates are constant."""


class TaskClassifier(_Training):
    r"""A classifier ``net`` and its optimiser (:func:`make_optimizer` ``optimizer``), trained on labelled images.

    :meth:`train_step` takes one step on :math:`\mathcal{L}_{task}(f, X, Y)`. The same step
    trains f_S (source images), the target oracle (target images) and the pixel-only
    classifier (translated source images): they differ only in their data. ``task_loss``: a segmenter's
    is per pixel (:func:`cyclelib.segmentation.task_loss`).
    """

    def __init__(self, net: nn.Module, lr: float, precision: Precision, task_loss=losses.task_loss,
                 optimizer: str = "adam"):
        super().__init__()
        self.net = net
        self.optimizer = make_optimizer(optimizer, net.parameters(), lr)
        self.precision, self.task_loss = precision, task_loss

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step on a batch: ``images`` [N, 3, H, W], ``labels`` [N]; returns the detached loss."""
        with self.precision.autocast():
            terms = {"task": self.task_loss(self.net(images), labels)}
        self.precision.step(sum(terms.values()), self.optimizer)
        self.precision.update()
        return {name: t.detach() for name, t in terms.items()}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"net": self.optimizer}

    def finish(self) -> nn.Module:
        """The trained classifier in eval mode, without stale gradients."""
        self.optimizer.zero_grad(set_to_none=True)
        return self.net.eval()


def discriminator_accuracy(judged_s: torch.Tensor, judged_t: torch.Tensor) -> float:
    """The share of images :math:`D_{feat}` puts in their true domain (its logits: class 1 source,
    class 0 target, as the release's ``train_adda_net.py`` lines 58-61 and 71-72)."""
    right = torch.cat([judged_s.argmax(1) == 1, judged_t.argmax(1) == 0])
    return right.float().mean().item()


class FeatureAlignment(_Training):
    r"""CyCADA's feature-level adaptation: f_T, started as a copy of f_S, and :math:`D_{feat}`.

    Per :meth:`train_step`, first :math:`D_{feat}` learns the true domains (class 1: f_S on
    (translated) source, class 0: f_T on target), then f_T minimises the sum of its named terms

    .. math::
        \lambda_{task}\, \mathcal{L}_{task}(f_T, G_{S\to T}(X_S), Y_S)
        + \lambda_{feat}\, \mathcal{L}_{GAN}(f_T, D_{feat}, f_S(G_{S\to T}(X_S)), X_T)

    where the GAN term asks :math:`D_{feat}` to take f_T's target outputs for source ones
    (ADDA's inverted labels). f_S is frozen in eval mode and belongs to the source stage: it
    is not part of this module's weights.

    For segmentation (:mod:`cyclelib.segmentation`), ``discriminator`` is the release's
    :class:`~cyclelib.segnets.ScoreDiscriminator` on score maps, ``task_loss`` the per-pixel one, and with
    ``shared`` the source side of :math:`D_{feat}`'s game is f_T's own scores on (translated) source, as
    the release's ``--weights_shared`` (``scripts/train_fcn_adda.py`` lines 136-137: ``net_src = net``), not
    the frozen f_S's. The release steps f_T twice per batch, on its GAN term and then on its task term
    (lines 267-302 and 307-329); here f_T takes one step on their sum, as for digits.

    ``gate`` (None: off, the paper): f_T steps only on batches where :math:`D_{feat}`'s accuracy,
    on the logits of its own step before that step, is above ``gate``, as the release's ADDA loop
    does with 0.6 (jhoffman/cycada_release at 2fbf16b, ``cycada/tools/train_adda_net.py`` lines
    70-72 and 81-82). :math:`D_{feat}` steps on every batch. With ``gate_window`` above 1 the accuracy
    compared is the mean over the last ``gate_window`` batches, this one included, as the release's
    segmentation loop compares the mean of a deque of 100 (``scripts/train_fcn_adda.py`` lines 175, 252-253
    and 265-267); those accuracies are a buffer of this module, so a resumed stage gates as an unbroken one.

    ``optimizer`` (:func:`make_optimizer`) is that of both f_T and :math:`D_{feat}`, at the same ``lr``, as
    in both releases (digits: Adam, ``cycada/tools/train_adda_net.py`` lines 157-158; segmentation: SGD,
    ``scripts/train_fcn_adda.py`` lines 163-166).
    """

    def __init__(self, f_s: nn.Module, lr: float, precision: Precision, lambda_task: float = 1.0,
                 lambda_feature: float = 1.0, gate: float | None = None, discriminator: nn.Module | None = None,
                 task_loss=losses.task_loss, shared: bool = False, optimizer: str = "adam", gate_window: int = 1):
        super().__init__()
        object.__setattr__(self, "f_s", freeze(f_s))  # not registered: saved by its own stage
        self.f_t = copy.deepcopy(f_s).requires_grad_(True).train()
        if discriminator is None:
            classes = [m for m in f_s.modules() if isinstance(m, nn.Linear)][-1].out_features  # D_feat reads logits
            discriminator = FeatureDiscriminator(classes)
        self.d_feat = discriminator.to(next(f_s.parameters()).device)
        self.opt_f = make_optimizer(optimizer, self.f_t.parameters(), lr)
        self.opt_d = make_optimizer(optimizer, self.d_feat.parameters(), lr)
        self.precision, self.lambda_task, self.lambda_feature = precision, lambda_task, lambda_feature
        self.gate, self.task_loss, self.shared = gate, task_loss, shared
        if gate is not None and gate_window > 1:  # [gate_window] the latest accuracies, nan until seen
            self.register_buffer("gate_accuracies", torch.full((gate_window,), float("nan")))

    def train_step(self, x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step on source images ``x_s`` [N, 3, H, W] with labels ``y_s`` [N] and target
        images ``x_t`` [M, 3, H, W] (no target labels: this step cannot read them)."""
        autocast = self.precision.autocast
        with autocast():
            with torch.no_grad():
                feat_s = None if self.shared else self.f_s(x_s)  # [N, K] f_S's logits on (translated) source
            # One pass over both domains, so f_T's BatchNorm statistics mix them as at test time.
            # [N, K], [M, K] logits; [N, K, H, W], [M, K, H, W] for segmentation
            out_s, out_t = self.f_t(torch.cat([x_s, x_t])).split([len(x_s), len(x_t)])
            feat_s = out_s.detach() if self.shared else feat_s
            self.d_feat.requires_grad_(True)
            judged_s, judged_t = self.d_feat(feat_s), self.d_feat(out_t.detach())  # [N, 2], [M, 2] (+ [H, W])
            loss_d = losses.discriminator_loss(judged_s, judged_t, losses.feature_gan_loss)
        self.precision.step(loss_d, self.opt_d)
        learns = self.gate is None or self._gate_accuracy(discriminator_accuracy(judged_s, judged_t)) > self.gate

        self.d_feat.requires_grad_(False)  # f_T's step must not build gradients into D_feat
        with autocast():
            terms = {"task": self.lambda_task * self.task_loss(out_s, y_s),
                     "feature_gan": self.lambda_feature * losses.feature_gan_loss(self.d_feat(out_t), True)}
        if learns:
            self.precision.step(sum(terms.values()), self.opt_f)
        self.precision.update()
        return {**{name: t.detach() for name, t in terms.items()}, "D_feat": loss_d.detach()}

    def _gate_accuracy(self, accuracy: float) -> float:
        """The accuracy the gate compares: this batch's, or the mean over the window it completes."""
        if not hasattr(self, "gate_accuracies"):
            return accuracy
        window = self.gate_accuracies  # [gate_window], oldest first
        window.copy_(window.roll(-1))
        window[-1] = accuracy
        return window.nanmean().item()

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"f_t": self.opt_f, "d_feat": self.opt_d}

    def finish(self) -> nn.Module:
        """The adapted classifier f_T in eval mode, without stale gradients."""
        self.opt_f.zero_grad(set_to_none=True)
        return self.f_t.eval()
