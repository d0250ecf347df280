r"""CyCADA (Hoffman et al., ICML 2018): cycle-consistent adversarial domain adaptation on digits.

The full objective of the notes,

.. math::
    \mathcal{L}_{CyCADA} = \mathcal{L}_{task}(f_T, G_{S\to T}(X_S), Y_S)
        + \mathcal{L}_{GAN}(G_{S\to T}, D_T, X_T, X_S) + \mathcal{L}_{GAN}(G_{T\to S}, D_S, X_S, X_T)
        + \mathcal{L}_{GAN}(f_T, D_{feat}, f_S(G_{S\to T}(X_S)), X_T)
        + \mathcal{L}_{cyc}(G_{S\to T}, G_{T\to S}, X_S, X_T)
        + \mathcal{L}_{sem}(G_{S\to T}, G_{T\to S}, X_S, X_T, f_S),

is minimised in stages, as in the paper. Each stage is one function that can run alone
and hands its network to the next:

1. ``source`` (:func:`train_source`): f_S on labelled source, :math:`\mathcal{L}_{task}(f_S, X_S, Y_S)`.
2. ``pixel`` (:func:`train_pixel`): a CycleGAN between source (A) and target (B) whose
   generator loss also holds :math:`\mathcal{L}_{sem}` computed with the frozen f_S: the two
   image GAN terms, the cycle term and the semantic term of the objective.
3. ``feature`` (:func:`train_feature`): f_T, started from f_S, learns on translated source
   with the source labels (:math:`\mathcal{L}_{task}`) while fooling the feature-level
   discriminator :math:`D_{feat}` (the feature GAN term).

Three baselines say what each part buys: ``oracle`` (a classifier trained on labelled
target: the upper bound), ``pixel_only`` (the task loss on translated source, nothing
else) and ``feature_only`` (stage 3 on untranslated source: ADDA-style feature alignment
alone). :func:`run_cycada` runs them with checkpoints under ``out/<stage>/`` and writes
``out/metrics.json``.

CycleGAN names in this module: A = source, B = target, G_A = G_{S->T}, G_B = G_{T->S},
D_A = D_T (judges target images), D_B = D_S.

Two defects of the release are avoided on purpose (see the reference facts): f_S is
pretrained and frozen in eval mode during stages 2 and 3 (the release trains a fresh
classifier alongside the GAN and leaves the source network in train mode, so dropout and
BatchNorm drift), and the stages pass networks to each other instead of PNG files.
"""
from __future__ import annotations

import copy
import json
import math
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import distributed, losses
from .checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from .cyclegan import AMP_MODES, CycleGAN, CycleGANConfig, EpochSampler, _amp_dtype, load_cyclegan, train_cyclegan
from .data import DIGIT_DOMAINS, Unpaired, digit_domain
from .metrics import accuracy, confusion_matrix, per_class_accuracy, predict
from .networks import CLASSIFIERS, FeatureDiscriminator, build_classifier
from .plots import plot_confusion_matrix, plot_histories, save_image_grid
from .runtime import pick_device, resolve_scale, seed_everything

# Digit domains whose colour carries information; every other one is grey digits.
COLOUR_DOMAINS = ("svhn", "mnistm", "mnistm5k")

# Stages in the order they run, what each needs first, and the result it stands for.
STAGES = ("source", "pixel", "pixel_only", "feature_only", "feature", "oracle")
NEEDS = {"source": (), "pixel": ("source",), "pixel_only": ("pixel",), "feature_only": ("source",),
         "feature": ("source", "pixel"), "oracle": ()}
RESULTS = {"source": "source_only", "pixel_only": "pixel_only", "feature_only": "feature_only",
           "feature": "pixel_feature", "oracle": "target_oracle"}


@dataclass
class CyCADAConfig:
    """Every option of a CyCADA run; the defaults are the paper's and release's digit setting."""

    source: str = "mnist"                # labelled source domain (one of data.DIGIT_DOMAINS)
    target: str = "usps"                 # target domain; its labels are used by the oracle only
    out: str = "runs/cycada"             # run folder: out/<stage>/checkpoint.pt, metrics.json, figures
    classifier: str = "auto"             # lenet | dtn | auto: dtn when a domain is in colour, else lenet
    image_size: int = 32                 # both domains are read as RGB image_size^2 in [-1, 1]
    max_samples: int | None = None       # at most this many training images per epoch, in every stage
    max_eval_samples: int | None = None  # at most this many test images per evaluation (None: all)
    # stages source, oracle, pixel_only: the classifier loop (release: Adam 1e-4, batch 128, 100 epochs)
    task_lr: float = 1e-4
    task_batch_size: int = 128
    task_epochs: int = 100
    # stage pixel: CycleGAN + semantic consistency (release: resnet_9blocks, PatchGAN, LSGAN, batch 100)
    netG: str = "resnet_9blocks"
    ngf: int = 64
    netD: str = "basic"
    ndf: int = 64
    n_layers_D: int = 3
    norm: str = "instance"
    gan_mode: str = "lsgan"
    lambda_gan_A: float = 2.0            # L_GAN(G_{S->T}, D_T, X_T, X_S)
    lambda_gan_B: float = 1.0            # L_GAN(G_{T->S}, D_S, X_S, X_T)
    lambda_cycle_A: float = 1.0          # S -> T -> S
    lambda_cycle_B: float = 1.0          # T -> S -> T
    lambda_identity: float = 0.0
    lambda_sem_A: float = 1.0            # L_task(f_S, G_{S->T}(X_S), p(f_S, X_S))
    lambda_sem_B: float = 1.0            # L_task(f_S, G_{T->S}(X_T), p(f_S, X_T))
    pixel_lr: float = 2e-4
    pixel_beta1: float = 0.5
    pixel_batch_size: int = 100
    pool_size: int = 50
    pixel_epochs: int = 100              # epochs at pixel_lr
    pixel_epochs_decay: int = 100        # epochs of linear decay to zero
    # stages feature, feature_only (release ADDA: Adam 1e-5 for f_T and D_feat, batch 128, 200 epochs)
    feature_lr: float = 1e-5
    feature_batch_size: int = 128
    feature_epochs: int = 200
    lambda_task: float = 1.0             # L_task(f_T, G_{S->T}(X_S), Y_S)
    lambda_feature: float = 1.0          # L_GAN(f_T, D_feat, f_S(G_{S->T}(X_S)), X_T)
    # run
    scale: str = "custom"                # the preset this config came from (for_scale sets it)
    seed: int = 0
    device: str | None = None
    amp: str = "auto"                    # none | bf16 | fp16 | auto (bf16 on CUDA, fp32 on CPU), every stage
    num_workers: int = 0
    log_every: int = 50                  # steps between loss-history rows
    sample_every: int = 500              # pixel stage: steps between sample grids
    checkpoint_every: int = 1000         # pixel stage: steps between checkpoints

    def __post_init__(self):
        for name in ("source", "target"):
            if getattr(self, name) not in DIGIT_DOMAINS:
                raise ValueError(f"unknown {name} dataset {getattr(self, name)!r}; valid names: "
                                 f"{', '.join(DIGIT_DOMAINS)}")
        if self.classifier not in ("auto", *CLASSIFIERS):
            raise ValueError(f"unknown classifier {self.classifier!r}; valid values: auto, {', '.join(CLASSIFIERS)}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"unknown amp {self.amp!r}; valid values: {', '.join(AMP_MODES)}")
        if self.gan_mode not in losses.GAN_MODES:
            raise ValueError(f"unknown gan_mode {self.gan_mode!r}; valid values: {', '.join(losses.GAN_MODES)}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("lambda_") and value < 0:
                raise ValueError(f"{f.name} must be >= 0, got {value}")
        for name in ("image_size", "task_lr", "task_batch_size", "task_epochs", "ngf", "ndf", "pixel_lr",
                     "pixel_batch_size", "pixel_epochs", "feature_lr", "feature_batch_size", "feature_epochs",
                     "log_every", "sample_every", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (the generator downsamples twice), "
                             f"got {self.image_size}")

    @classmethod
    def for_scale(cls, scale: str | None = None, **options) -> "CyCADAConfig":
        """The config of a scale (smoke / cpu / gpu, see :func:`resolve_scale`); ``options`` win."""
        scale = resolve_scale(scale)
        return cls(**{**SCALE_PRESETS[scale], "scale": scale, **options})


# Per scale, the options that differ from the paper's defaults.
SCALE_PRESETS = {
    # seconds: every stage runs a few steps on a few images (CI, nbval)
    "smoke": dict(image_size=16, max_samples=24, max_eval_samples=48, task_batch_size=8, task_epochs=1,
                  netG="resnet_1blocks", ngf=4, netD="n_layers", n_layers_D=2, ndf=4,  # basic D needs >= 32 px
                  pixel_batch_size=8, pixel_epochs=1, pixel_epochs_decay=0, pool_size=8, feature_batch_size=8,
                  feature_epochs=1, log_every=1, sample_every=1000, checkpoint_every=1000),
    # about 30 minutes on 2 CPU cores for the whole pipeline on the offline 5k digit sets
    # Feature stage, tuned on mnist5k -> mnistm5k with seed 0 (pixel_feature accuracy): 20 epochs at lr 3e-4
    # gave 0.650, against 0.568 for 5 epochs at 1e-4, 0.637 for 20 at 1e-4 and 0.530 for 20 at 1e-3.
    "cpu": dict(netG="resnet_3blocks", ngf=16, ndf=16, max_samples=2000, task_lr=1e-3, task_batch_size=64,
                task_epochs=5, pixel_batch_size=16, pixel_epochs=3, pixel_epochs_decay=2, feature_lr=3e-4,
                feature_batch_size=64, feature_epochs=20, log_every=10, sample_every=200, checkpoint_every=200),
    # the paper's setting
    "gpu": dict(num_workers=4),
}


# --------------------------------------------------------------------------------------
# Task networks and data
# --------------------------------------------------------------------------------------

def classifier_name(config: CyCADAConfig) -> str:
    """The task network of a run: DTN (3x32x32) when either domain is in colour, else LeNet.

    This follows the release: LeNet for MNIST <-> USPS, DTN for SVHN -> MNIST. LeNet reads
    grey images, so colour (e.g. MNIST-M's) would be thrown away before it could help.
    """
    if config.classifier != "auto":
        return config.classifier
    return "dtn" if {config.source, config.target} & set(COLOUR_DOMAINS) else "lenet"


class ClassifierInput(nn.Module):
    """Brings the GAN's images [N, 3, H, W] to a classifier's input [N, channels, size, size].

    Every stage reads images in the GAN's format (RGB, ``image_size``), so f_S sees real
    and translated images alike; this adapter (no weights) makes them e.g. LeNet's 1x28x28:
    grey = mean of the channels, then an antialiased bilinear resize. Both are
    differentiable, so the semantic loss reaches the generator through it.
    """

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.channels, self.size = channels, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.channels:
            x = x.mean(dim=1, keepdim=True) if self.channels == 1 else x.expand(-1, self.channels, -1, -1)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return x  # [N, channels, size, size]


def build_task_network(name: str) -> nn.Sequential:
    """A fresh classifier (``lenet`` or ``dtn``) behind a :class:`ClassifierInput` adapter."""
    net = build_classifier(name)
    return nn.Sequential(OrderedDict(input=ClassifierInput(net.channels, net.image_size), net=net))


def freeze(net: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False``, in place: no gradient step, no BatchNorm update, no dropout."""
    net.eval()
    net.requires_grad_(False)
    return net


def load_domain(config: CyCADAConfig, name: str, split: str):
    """Digit domain ``name`` as ``(image [3, image_size, image_size] in [-1, 1], label)`` pairs."""
    return digit_domain(name, split, size=config.image_size, channels=3)


def _eval_subset(dataset, config: CyCADAConfig):
    """At most ``max_eval_samples`` test images, a fixed random subset (test splits may be sorted)."""
    n = config.max_eval_samples
    if not n or n >= len(dataset):
        return dataset
    keep = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    return torch.utils.data.Subset(dataset, keep.tolist())


@torch.no_grad()
def translate_dataset(translator: nn.Module, dataset, batch_size: int = 256) -> torch.utils.data.TensorDataset:
    """(G_{S->T}(x), y) for every (x, y) of ``dataset``, computed once in eval mode.

    The classifiers of stage 3 and pixel_only then train on fixed translated images, as
    in the release, instead of running the generator again every epoch.
    """
    device = next(translator.parameters()).device
    was_training = translator.training
    translator.eval()
    images, labels = [], []
    for x, y in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        images.append(translator(x.to(device)).cpu())  # [B, 3, H, W]
        labels.append(torch.as_tensor(y).long())
    translator.train(was_training)
    return torch.utils.data.TensorDataset(torch.cat(images), torch.cat(labels))


# --------------------------------------------------------------------------------------
# Stage bookkeeping
# --------------------------------------------------------------------------------------

def stage_path(config: CyCADAConfig, stage: str) -> Path:
    """Where ``stage`` keeps its checkpoint: ``out/<stage>/checkpoint.pt``."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}")
    return Path(config.out) / stage / "checkpoint.pt"


def pixel_cyclegan_config(config: CyCADAConfig) -> CycleGANConfig:
    """The CycleGAN options of stage 2: source is domain A, target domain B, both RGB."""
    c = config
    return CycleGANConfig(
        data=f"{c.source}:{c.target}", out=str(stage_path(c, "pixel").parent),
        netG=c.netG, ngf=c.ngf, netD=c.netD, ndf=c.ndf, n_layers_D=c.n_layers_D, norm=c.norm,
        input_nc=3, output_nc=3, gan_mode=c.gan_mode, lambda_A=c.lambda_cycle_A, lambda_B=c.lambda_cycle_B,
        # CycleGAN's identity weight multiplies the cycle weights; CyCADA's is a plain weight
        lambda_identity=c.lambda_identity / max(c.lambda_cycle_A, c.lambda_cycle_B, 1e-12),
        lambda_gan_A=c.lambda_gan_A, lambda_gan_B=c.lambda_gan_B, lr=c.pixel_lr, beta1=c.pixel_beta1,
        batch_size=c.pixel_batch_size, n_epochs=c.pixel_epochs, n_epochs_decay=c.pixel_epochs_decay,
        pool_size=c.pool_size, preprocess="none", load_size=c.image_size, crop_size=c.image_size, flip=False,
        max_dataset_size=c.max_samples, num_workers=c.num_workers, seed=c.seed, device=c.device, amp=c.amp,
        log_every=c.log_every, sample_every=c.sample_every, checkpoint_every=c.checkpoint_every)


def _pixel_progress(config: CyCADAConfig, ckpt: dict) -> tuple[int, int]:
    """(steps done, steps of the whole run) of a pixel-stage CycleGAN checkpoint."""
    if "total_steps" in ckpt:  # the run's own count, right for any number of DDP ranks
        return ckpt["step"], ckpt["total_steps"]
    # checkpoints written before total_steps: count as a one-process train_cyclegan does
    cg = ckpt["config"]
    if cg.get("max_steps"):
        return ckpt["step"], cg["max_steps"]
    n = max(len(load_domain(config, name, "train")) for name in (config.source, config.target))
    per_epoch = math.ceil(min(n, cg["max_dataset_size"] or n) / cg["batch_size"])
    return ckpt["step"], (cg["n_epochs"] + cg["n_epochs_decay"]) * per_epoch


def stage_finished(config: CyCADAConfig, stage: str) -> bool:
    """Whether ``stage`` has a complete checkpoint (the pixel stage writes partial ones too)."""
    path = stage_path(config, stage)
    if not path.is_file():
        return False
    if stage != "pixel":
        return True  # classifier stages write their checkpoint once, at the end
    done, total = _pixel_progress(config, load_checkpoint(path))
    return done >= total


def load_stage(config: CyCADAConfig, stage: str, device: str | torch.device | None = None):
    """The network a finished stage saved: a classifier, or the CycleGAN for ``pixel`` (eval mode).

    A missing checkpoint is an error that names the file and the stage to run.
    """
    path = stage_path(config, stage)
    device = pick_device(device or config.device)
    run_it = (f"run that stage first: run_cycada(config, stages=({stage!r},)) or "
              f"`cyclelib train cycada --source {config.source} --target {config.target} --out {config.out} "
              f"--stages {stage}`")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the {stage!r} stage has not been run; {run_it}")
    if stage == "pixel":
        done, total = _pixel_progress(config, load_checkpoint(path))
        if done < total:
            raise FileNotFoundError(f"{path} holds an unfinished pixel stage ({done} of {total} steps); "
                                    f"run the 'pixel' stage again to resume it")
        return load_cyclegan(path, device)
    ckpt = load_checkpoint(path)
    net = build_task_network(ckpt["classifier"])
    net.load_state_dict(ckpt["state"])
    return net.to(device).eval()


def _save_stage(config: CyCADAConfig, stage: str, net: nn.Module, history: list[dict], **extra) -> None:
    save_checkpoint({"version": FORMAT_VERSION, "kind": "cycada", "stage": stage, "config": asdict(config),
                     "classifier": classifier_name(config), "state": net.state_dict(), "history": history,
                     **extra}, stage_path(config, stage))


class _History:
    """Loss terms averaged over every ``every`` steps, as rows ``{"step", "epoch", term: value}``."""

    def __init__(self, every: int):
        self.every, self.step, self.rows, self.sums = every, 0, [], {}

    def add(self, epoch: int, terms: dict[str, torch.Tensor]) -> None:
        self.step += 1
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0.0) + value.detach()  # no host sync until logging
        if self.step % self.every == 0:
            self.rows.append({"step": self.step, "epoch": epoch,
                              **{k: float(v) / self.every for k, v in self.sums.items()}})
            self.sums.clear()


class _Precision:
    """Mixed precision of a classifier stage, as CycleGAN's fast path: ``config.amp`` picks the
    autocast dtype (``auto``: bf16 on CUDA, fp32 on CPU); fp16 scales the loss."""

    def __init__(self, amp: str, device: torch.device):
        dtype = _amp_dtype(amp, "fast", device.type)
        self.autocast = torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """One optimizer step on ``loss`` (skipped by the fp16 scaler when a gradient overflowed)."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def _loader(dataset, batch_size: int, config: CyCADAConfig, epoch: int) -> torch.utils.data.DataLoader:
    """One epoch in a (seed, epoch)-determined order, at most ``max_samples`` items."""
    sampler = EpochSampler(len(dataset), config.seed, epoch, limit=config.max_samples)
    # A last batch of one image would break BatchNorm in train mode (DTN): drop the remainder.
    return torch.utils.data.DataLoader(dataset, batch_size, sampler=sampler, num_workers=config.num_workers,
                                       drop_last=len(sampler) > batch_size)


# --------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------

def train_classifier(config: CyCADAConfig, stage: str, dataset, progress: bool = True) -> nn.Module:
    r"""Minimise :math:`\mathcal{L}_{task}(f, X, Y)` with Adam from a fresh network; save ``out/<stage>/``.

    The one classifier loop of CyCADA: f_S on labelled source (``source``), the oracle on
    labelled target (``oracle``) and the pixel-only classifier on translated source
    (``pixel_only``) differ only in their data.
    """
    c = config
    device = pick_device(c.device)
    seed_everything(c.seed)
    net = build_task_network(classifier_name(c)).to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=c.task_lr)
    precision = _Precision(c.amp, device)
    history = _History(c.log_every)
    for epoch in tqdm(range(c.task_epochs), disable=not progress, desc=stage, unit="epoch"):
        for images, labels in _loader(dataset, c.task_batch_size, c, epoch):
            images, labels = images.to(device), labels.to(device)  # [N, 3, H, W], [N]
            with precision.autocast:
                terms = {"task": losses.task_loss(net(images), labels)}
            precision.step(sum(terms.values()), optimizer)
            history.add(epoch, terms)
    optimizer.zero_grad(set_to_none=True)  # hand over a network without stale gradients
    net.eval()
    _save_stage(c, stage, net, history.rows)
    return net


def train_source(config: CyCADAConfig, progress: bool = True) -> nn.Module:
    r"""Stage 1: f_S on labelled source, :math:`\min_{f_S} \mathcal{L}_{task}(f_S, X_S, Y_S)`."""
    return train_classifier(config, "source", load_domain(config, config.source, "train"), progress)


def train_oracle(config: CyCADAConfig, progress: bool = True) -> nn.Module:
    """The target oracle: the same loop on labelled target images (the only use of target labels)."""
    return train_classifier(config, "oracle", load_domain(config, config.target, "train"), progress)


def train_pixel_only(config: CyCADAConfig, translator: nn.Module, progress: bool = True) -> nn.Module:
    r"""Pixel-level adaptation alone: :math:`\min_f \mathcal{L}_{task}(f, G_{S\to T}(X_S), Y_S)`."""
    translated = translate_dataset(translator, load_domain(config, config.source, "train"))
    return train_classifier(config, "pixel_only", translated, progress)


def semantic_consistency(config: CyCADAConfig, f_s: nn.Module):
    r"""The generator terms CyCADA adds to CycleGAN, for ``CycleGAN(extra_generator_losses=...)``.

    .. math::
        \mathcal{L}_{sem} = \lambda_{sem,A}\, \mathcal{L}_{task}(f_S, G_{S\to T}(X_S), p(f_S, X_S))
            + \lambda_{sem,B}\, \mathcal{L}_{task}(f_S, G_{T\to S}(X_T), p(f_S, X_T))

    with :math:`p(f, X) = \arg\max f(X)`. ``f_s`` is frozen here (eval mode, no gradient
    to its weights): the loss may only change the generators, never move f_S towards them.
    """
    f_s = freeze(f_s)

    def terms(real_A: torch.Tensor, real_B: torch.Tensor, fakes: dict[str, torch.Tensor]) -> dict:
        out = {}
        if config.lambda_sem_A > 0:  # S -> T keeps f_S's reading of the source image
            out["sem_A"] = config.lambda_sem_A * losses.semantic_loss(f_s, real_A, fakes["fake_B"])
        if config.lambda_sem_B > 0:  # T -> S keeps f_S's reading of the target image
            out["sem_B"] = config.lambda_sem_B * losses.semantic_loss(f_s, real_B, fakes["fake_A"])
        return out

    return terms


def train_pixel(config: CyCADAConfig, f_s: nn.Module, progress: bool = True, resume: bool = False) -> CycleGAN:
    r"""Stage 2: CycleGAN between source and target with the semantic consistency loss.

    The generators minimise the named terms of :meth:`CycleGAN.generator_losses` plus
    :func:`semantic_consistency`:

    .. math::
        \lambda_{GAN,A} \mathcal{L}_{GAN}(G_{S\to T}, D_T, X_T, X_S)
        + \lambda_{GAN,B} \mathcal{L}_{GAN}(G_{T\to S}, D_S, X_S, X_T)
        + \mathcal{L}_{cyc}(G_{S\to T}, G_{T\to S}, X_S, X_T)
        + \mathcal{L}_{sem}(G_{S\to T}, G_{T\to S}, X_S, X_T, f_S)

    ``f_s`` (the stage 1 classifier) is frozen in place. Writes ``out/pixel/`` (checkpoint,
    samples, history) through :func:`train_cyclegan`; ``resume`` continues an unfinished run.
    Under torchrun each rank keeps its f_S on its own device, next to its generators.
    """
    f_s.to(distributed.setup(pick_device(config.device))[2])
    return train_cyclegan(pixel_cyclegan_config(config), resume=resume, progress=progress,
                          extra_generator_losses=semantic_consistency(config, f_s))


def train_feature(config: CyCADAConfig, f_s: nn.Module, translator: nn.Module | None = None,
                  progress: bool = True) -> nn.Module:
    r"""Stage 3: f_T on translated source with the source labels, aligned by a feature-level GAN.

    f_T starts as a copy of f_S; f_S itself stays frozen in eval mode. Per step, first
    :math:`D_{feat}` learns the true domains (class 1: f_S on translated source, class 0:
    f_T on target), then f_T minimises the sum of its named terms

    .. math::
        \lambda_{task}\, \mathcal{L}_{task}(f_T, G_{S\to T}(X_S), Y_S)
        + \lambda_{feat}\, \mathcal{L}_{GAN}(f_T, D_{feat}, f_S(G_{S\to T}(X_S)), X_T)

    where the GAN term asks D_feat to take f_T's target outputs for translated source
    (ADDA's inverted labels). ``translator=None`` trains on untranslated source: the
    ``feature_only`` baseline. Saves ``out/feature/`` (or ``out/feature_only/``).
    """
    c = config
    stage = "feature" if translator is not None else "feature_only"
    device = pick_device(c.device)
    seed_everything(c.seed)
    f_s = freeze(f_s.to(device))
    source = load_domain(c, c.source, "train")
    if translator is not None:
        source = translate_dataset(translator.to(device), source)
    # Target labels stay unused: only "A_label" (source) is read below.
    pairs = Unpaired(source, load_domain(c, c.target, "train"), seed=c.seed)
    f_t = copy.deepcopy(f_s).requires_grad_(True).train()
    d_feat = FeatureDiscriminator().to(device)
    opt_f = torch.optim.Adam(f_t.parameters(), lr=c.feature_lr)
    opt_d = torch.optim.Adam(d_feat.parameters(), lr=c.feature_lr)
    precision = _Precision(c.amp, device)
    history = _History(c.log_every)
    for epoch in tqdm(range(c.feature_epochs), disable=not progress, desc=stage, unit="epoch"):
        pairs.set_epoch(epoch)
        for batch in _loader(pairs, c.feature_batch_size, c, epoch):
            x_s, y_s, x_t = batch["A"].to(device), batch["A_label"].to(device), batch["B"].to(device)
            n = len(x_s)
            with precision.autocast:
                with torch.no_grad():
                    feat_s = f_s(x_s)                      # [N, 10] f_S on (translated) source
                # One pass over both domains, so f_T's BatchNorm statistics mix them as at test time.
                out_s, out_t = f_t(torch.cat([x_s, x_t])).split([n, len(x_t)])  # [N, 10] each

                # D_feat: the true domains (source = class 1).
                d_feat.requires_grad_(True)
                loss_d = 0.5 * (losses.feature_gan_loss(d_feat(feat_s), True)
                                + losses.feature_gan_loss(d_feat(out_t.detach()), False))
            precision.step(loss_d, opt_d)

            # f_T: classify translated source, and make target outputs pass for source ones.
            d_feat.requires_grad_(False)  # this step must not build gradients into D_feat
            with precision.autocast:
                terms = {
                    "task": c.lambda_task * losses.task_loss(out_s, y_s),
                    "feature_gan": c.lambda_feature * losses.feature_gan_loss(d_feat(out_t), True),
                }
            precision.step(sum(terms.values()), opt_f)
            history.add(epoch, {**terms, "D_feat": loss_d})
    opt_f.zero_grad(set_to_none=True)
    f_t.eval()
    _save_stage(c, stage, f_t, history.rows, discriminator=d_feat.state_dict())
    return f_t


# --------------------------------------------------------------------------------------
# Driver and evaluation
# --------------------------------------------------------------------------------------

def parse_stages(stages: str | Iterable[str]) -> tuple[str, ...]:
    """Stages from a comma list or an iterable, checked, in run order."""
    chosen = [s.strip() for s in stages.split(",")] if isinstance(stages, str) else list(stages)
    unknown = [s for s in chosen if s not in STAGES]
    if unknown or not chosen:
        raise ValueError(f"unknown stage(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"valid stages: {', '.join(STAGES)}")
    return tuple(s for s in STAGES if s in chosen)


def run_cycada(config: CyCADAConfig, stages: str | Iterable[str] = STAGES, force: bool = False,
               progress: bool = True) -> dict:
    """Run the chosen stages in order, then evaluate every finished one; returns the metrics.

    A stage whose checkpoint is complete is skipped (``force=True`` retrains it); an
    unfinished pixel stage resumes. A stage needing an earlier one that was not asked
    for loads that one's checkpoint, or fails with a message naming the file and stage.
    Writes ``out/metrics.json``, ``out/samples.png``, ``out/curves.png`` and
    ``out/confusion/<result>.png``; the wall time of each stage run goes to ``out/wall_times.json``.
    Under torchrun, where only the pixel stage may run, rank 0 writes the files and returns
    the metrics, the other ranks return ``{}``.
    """
    stages = parse_stages(stages)
    rank, world_size = distributed.launched()
    writer = rank == 0  # under torchrun, rank 0 writes and evaluates
    if world_size > 1 and stages != ("pixel",):
        # Only the CycleGAN has a DDP loop; every rank would train and write the same classifiers.
        raise RuntimeError(f"under torchrun (WORLD_SIZE={world_size}) only the 'pixel' stage runs "
                           f"distributed: pass stages=('pixel',) (--stages pixel) there and run the stages "
                           f"{', '.join(s for s in stages if s != 'pixel')} in a single process")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if writer:
        (out / "config.json").write_text(json.dumps(asdict(config), indent=1))
    nets: dict[str, nn.Module] = {}

    def need(stage: str):
        if stage not in nets:
            nets[stage] = load_stage(config, stage)
        return nets[stage]

    runners = {
        "source": lambda: train_source(config, progress),
        "pixel": lambda: train_pixel(config, need("source"), progress,
                                     resume=not force and stage_path(config, "pixel").is_file()),
        "pixel_only": lambda: train_pixel_only(config, need("pixel").G_A, progress),
        "feature_only": lambda: train_feature(config, need("source"), None, progress),
        "feature": lambda: train_feature(config, need("source"), need("pixel").G_A, progress),
        "oracle": lambda: train_oracle(config, progress),
    }
    times_path = out / "wall_times.json"
    wall_times = json.loads(times_path.read_text()) if times_path.is_file() else {}
    for stage in stages:
        if not force and stage_finished(config, stage):
            print(f"cycada: skipping {stage}: {stage_path(config, stage)} is complete (force=True retrains it)")
            continue
        start = time.perf_counter()
        nets[stage] = runners[stage]()
        wall_times[stage] = round(time.perf_counter() - start, 1)
        if writer:
            times_path.write_text(json.dumps(wall_times, indent=1))
        # e.g. a SIGTERM stopped the pixel stage early (rank 0 writes the checkpoint: only it can tell)
        if writer and not stage_finished(config, stage):
            raise RuntimeError(f"the {stage!r} stage stopped before its end; run it again to resume")
    return evaluate_run(config, wall_times) if writer else {}


def evaluate_run(config: CyCADAConfig, wall_times: dict | None = None) -> dict:
    """Evaluate every finished stage on the target test split; write metrics and figures.

    ``metrics.json`` holds the accuracy of each result (``source_only``, ``pixel_only``,
    ``feature_only``, ``pixel_feature``, ``target_oracle``), per-class accuracies and
    confusion matrices, and for the translation ``label_preservation`` (f_S's accuracy
    on translated source test images) next to ``source_test_accuracy`` (f_S on the
    untranslated ones). When the oracle is finished too, ``oracle_label_preservation``
    is the oracle's accuracy on the same translations: a judge trained on labelled target
    images that no training stage consults, so it tells a translation that keeps the
    digit from one that only keeps f_S's reading of it (the semantic loss can be gamed).
    """
    c = config
    out = Path(c.out)
    device = pick_device(c.device)
    target_test = _eval_subset(load_domain(c, c.target, "test"), c)
    source_test = _eval_subset(load_domain(c, c.source, "test"), c)
    metrics: dict = {"source": c.source, "target": c.target, "scale": c.scale, "seed": c.seed,
                     "classifier": classifier_name(c), "test_images": {"source": len(source_test),
                                                                        "target": len(target_test)}}
    per_class, confusion, histories, classifiers = {}, {}, {}, {}
    finished = [s for s in STAGES if stage_finished(c, s)]
    for stage in finished:
        histories[stage] = load_checkpoint(stage_path(c, stage)).get("history", [])
        if stage not in RESULTS:
            continue
        key = RESULTS[stage]
        classifiers[stage] = load_stage(c, stage, device)
        predictions, labels = predict(classifiers[stage], target_test)
        metrics[key] = accuracy(predictions, labels)
        per_class[key] = [None if math.isnan(a) else a for a in per_class_accuracy(predictions, labels)]
        confusion[key] = confusion_matrix(predictions, labels).tolist()
        plot_confusion_matrix(confusion[key], out / "confusion" / f"{key}.png",
                              title=f"{key} on {c.target} test: {metrics[key]:.3f}")
    if "source" in classifiers:
        metrics["source_test_accuracy"] = accuracy(*predict(classifiers["source"], source_test))
    if "pixel" in finished:
        translator = load_stage(c, "pixel", device).G_A
        translated = translate_dataset(translator, source_test)  # (G_{S->T}(x), y), translated once
        # Two judges of the translation (label preservation, see metrics.label_preservation): f_S, which
        # the semantic loss optimises, and the oracle, which it cannot.
        for judge, key in (("source", "label_preservation"), ("oracle", "oracle_label_preservation")):
            if judge in classifiers:
                metrics[key] = accuracy(*predict(classifiers[judge], translated))
        _save_translation_grid(translator, source_test, target_test, out / "samples.png", device)
    metrics.update(per_class=per_class, confusion=confusion, wall_s=wall_times or {})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    if any(histories.values()):
        plot_histories(histories, out / "curves.png")
    return metrics


def _first_of_each_class(dataset, n_classes: int = 10) -> dict[int, int]:
    """{class: index of its first item in ``dataset``}, for the classes the dataset holds."""
    first = {}
    for i in range(len(dataset)):
        first.setdefault(int(dataset[i][1]), i)
        if len(first) == n_classes:
            break
    return first


def _class_columns(source_test, target_test) -> tuple[list[int], list[int], list[int] | None]:
    """The sample grid's columns: classes, and per class the first source and target test image.

    The classes are those both splits hold; when they share none (a tiny ``max_eval_samples``)
    the columns are the source's classes, the target picks are None and the grid has no target row.
    """
    first_s, first_t = _first_of_each_class(source_test), _first_of_each_class(target_test)
    shared = sorted(first_s.keys() & first_t.keys())
    classes = shared or sorted(first_s)
    return classes, [first_s[k] for k in classes], [first_t[k] for k in shared] or None


@torch.no_grad()
def _save_translation_grid(translator: nn.Module, source_test, target_test, path: Path, device) -> None:
    """Per class, a source test image, its translation and a real target test image of that class."""
    classes, picks_s, picks_t = _class_columns(source_test, target_test)
    x_s = torch.stack([source_test[i][0] for i in picks_s]).to(device)  # [K, 3, H, W]
    rows, names = [x_s, translator(x_s)], ["source", "G_S->T(source)"]
    if picks_t is not None:
        rows.append(torch.stack([target_test[i][0] for i in picks_t]))  # [K, 3, H, W]
        names.append("real target")
    save_image_grid(rows, names, path, titles=[f"label {k}" for k in classes])
