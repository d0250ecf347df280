"""CycleGAN (Zhu et al. 2017): the model, one training step, and the training loop.

Names follow the official code: G_A = G (X -> Y), G_B = F (Y -> X),
D_A = D_Y judges domain B, D_B = D_X judges domain A.
"""
from __future__ import annotations

import csv
import json
import math
import signal
import sys
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed, losses
from .checkpoint import (FORMAT_VERSION, LATEST, load_checkpoint, load_run_checkpoint, rng_state,
                         save_run_checkpoint, set_rng_state)
from .data import DIGIT_DOMAINS, PREPROCESS_MODES, Unpaired, open_unpaired
from .networks import (DISCRIMINATOR_ARCHS, GENERATOR_ARCHS, INIT_TYPES, NORMS, build_discriminator,
                       build_generator)
from .plots import plot_history, save_image_grid
from .pool import ImagePool
from .runtime import pick_device, resolve_scale, seed_everything

PATHS = ("fast", "reference")
AMP_MODES = ("none", "bf16", "fp16", "auto")


def _amp_dtype(amp: str, path: str, device_type: str) -> torch.dtype | None:
    """The autocast dtype of a run, None for fp32. ``auto`` is bf16 in the fast path on CUDA,
    where tensor cores run it at many times the fp32 rate; on CPU it stays fp32 (CPUs without
    AMX convolve bf16 no faster)."""
    if amp == "auto":
        return torch.bfloat16 if path == "fast" and device_type == "cuda" else None
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


@dataclass
class CycleGANConfig:
    """Every option of a CycleGAN run; the defaults are the official ones (the paper's setting)."""

    data: str = ""                     # folder with trainA/trainB, or a digit pair "mnist5k:mnistm5k"
    out: str = "runs/cyclegan"         # run folder: checkpoints, samples, history
    # networks
    netG: str = "resnet_9blocks"
    netD: str = "basic"
    ngf: int = 64
    ndf: int = 64
    n_layers_D: int = 3
    norm: str = "instance"
    dropout: bool = False
    init: str = "normal"
    init_gain: float = 0.02
    input_nc: int = 3
    output_nc: int = 3
    # losses
    gan_mode: str = "lsgan"
    lambda_A: float = 10.0             # cycle A -> B -> A
    lambda_B: float = 10.0             # cycle B -> A -> B
    lambda_identity: float = 0.5       # multiplies lambda_A / lambda_B (effective weight 5)
    lambda_gan_A: float = 1.0          # weight of G_A's adversarial term (CyCADA uses 2)
    lambda_gan_B: float = 1.0          # weight of G_B's adversarial term
    lambda_gp: float = 10.0            # gradient penalty, gan_mode "wgangp" only
    # optimisation
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 1
    n_epochs: int = 100                # epochs at the initial learning rate
    n_epochs_decay: int = 100          # epochs of linear decay to zero
    pool_size: int = 50
    max_steps: int | None = None       # stop after this many steps in total (for tests and sweeps)
    clip_grad_norm: float | None = None  # clip each optimizer's gradient norm to this (None or 0: off)
    # data
    preprocess: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    max_dataset_size: int | None = None  # at most this many samples per epoch
    num_workers: int = 2
    skip_bad_images: bool = False      # unreadable images: skip them (True) or stop naming the first (False)
    # run
    seed: int = 0
    device: str | None = None
    path: str = "fast"                 # "fast": same losses, batched network calls, fused Adam, and on CUDA
                                       # bf16 + channels_last; "reference": the official fp32 eager step
    amp: str = "auto"                  # "auto": bf16 in the fast path on CUDA, else fp32; "none", "bf16",
                                       # "fp16" (with loss scaling)
    compile: bool = False              # torch.compile the four networks (fast path; the first steps compile)
    log_every: int = 50                # steps between loss-history rows
    sample_every: int = 500            # steps between sample grids
    checkpoint_every: int = 1000       # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 3          # step checkpoints kept in out/checkpoints (besides latest and best)

    def __post_init__(self):
        checks = {
            "lambda_A": self.lambda_A, "lambda_B": self.lambda_B, "lambda_identity": self.lambda_identity,
            "lambda_gan_A": self.lambda_gan_A, "lambda_gan_B": self.lambda_gan_B, "lambda_gp": self.lambda_gp,
            "pool_size": self.pool_size, "n_epochs_decay": self.n_epochs_decay, "init_gain": self.init_gain,
            "num_workers": self.num_workers, "clip_grad_norm": self.clip_grad_norm or 0,
        }
        for name, value in checks.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name in ("lr", "batch_size", "n_epochs", "load_size", "crop_size", "log_every",
                     "sample_every", "checkpoint_every", "keep_checkpoints", "ngf", "ndf", "n_layers_D",
                     "input_nc", "output_nc", "max_steps", "max_dataset_size"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name, value, valid in (("norm", self.norm, NORMS), ("init", self.init, INIT_TYPES),
                                   ("netD", self.netD, DISCRIMINATOR_ARCHS),
                                   ("preprocess", self.preprocess, PREPROCESS_MODES)):
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid values: {', '.join(valid)}")
        if self.netG not in GENERATOR_ARCHS:  # resnet_<n>blocks, unet_<size>: networks' own parsing decides
            try:
                with torch.device("meta"):  # allocates no weights and draws no random numbers
                    build_generator(self.netG, self.input_nc, self.output_nc, width=1)
            except ValueError as e:
                raise ValueError(f"netG: {e}") from None
        if self.gan_mode not in losses.GAN_MODES:
            raise ValueError(f"unknown gan_mode {self.gan_mode!r}; valid values: {', '.join(losses.GAN_MODES)}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"unknown amp {self.amp!r}; valid values: {', '.join(AMP_MODES)}")
        if self.path not in PATHS:
            raise ValueError(f"unknown path {self.path!r}; valid values: {', '.join(PATHS)}")
        if self.path == "reference" and (self.compile or self.amp not in ("auto", "none")):
            raise ValueError(f"path 'reference' is the official fp32 eager step: it takes neither compile nor amp "
                             f"{self.amp!r}; use path 'fast' for them")
        if self.crop_size > self.load_size and self.preprocess in ("resize_and_crop", "scale_width_and_crop"):
            raise ValueError(f"crop_size ({self.crop_size}) must not exceed load_size ({self.load_size}) with "
                             f"preprocess {self.preprocess!r}, which resizes to load_size and then crops "
                             f"crop_size; preprocess 'crop' or 'none' do not resize")
        if self.lambda_identity > 0 and self.input_nc != self.output_nc:
            raise ValueError("the identity loss needs input_nc == output_nc; set lambda_identity=0")

    @classmethod
    def for_scale(cls, scale: str | None = None, **options) -> "CycleGANConfig":
        """The config of a scale (smoke / cpu / gpu, see :func:`resolve_scale`); ``options`` win."""
        scale = resolve_scale(scale)
        digits = _is_digit_pair(options.get("data", ""))
        preset = SCALE_PRESETS[scale]["digits" if digits else "images"]
        return cls(**{**preset, **options})


def _is_digit_pair(spec: str) -> bool:
    parts = str(spec).split(":")
    return len(parts) == 2 and all(p in DIGIT_DOMAINS for p in parts)


# Per scale and kind of data, the options that differ from the paper's defaults.
# Digits are 32x32 and need no augmentation (a flipped "2" is no digit).
_DIGITS = dict(load_size=32, crop_size=32, preprocess="none", flip=False)
SCALE_PRESETS = {
    "smoke": {
        "digits": dict(_DIGITS, netG="resnet_2blocks", ngf=8, ndf=8, batch_size=4, n_epochs=1,
                       n_epochs_decay=1, max_dataset_size=16, num_workers=0, log_every=1,
                       sample_every=4, checkpoint_every=4),
        "images": dict(netG="resnet_2blocks", ngf=8, ndf=8, batch_size=2, n_epochs=1, n_epochs_decay=1,
                       max_dataset_size=8, load_size=36, crop_size=32, num_workers=0, log_every=1,
                       sample_every=4, checkpoint_every=4),
    },
    "cpu": {
        "digits": dict(_DIGITS, netG="resnet_6blocks", ngf=32, ndf=32, batch_size=8, n_epochs=3,
                       n_epochs_decay=2, max_dataset_size=800, log_every=10, sample_every=100,
                       checkpoint_every=100),
        "images": dict(netG="resnet_6blocks", ngf=32, ndf=32, load_size=143, crop_size=128,
                       n_epochs=2, n_epochs_decay=1, max_dataset_size=200, log_every=10,
                       sample_every=100, checkpoint_every=200),
    },
    "gpu": {
        "digits": dict(_DIGITS, batch_size=100, n_epochs=20, n_epochs_decay=20, num_workers=4,
                       log_every=50, sample_every=500, checkpoint_every=2000),
        "images": dict(num_workers=4),
    },
}


class CycleGAN(nn.Module):
    """The four networks of CycleGAN and one training step.

    ``config.path`` chooses how the step runs: ``reference`` as the official code (fp32,
    eager, every network call separate), ``fast`` (default) with the same losses and
    gradients through fewer, batched network calls (:meth:`cycle_images`), fused Adam and,
    on CUDA, bf16 autocast and channels_last. ``config.device`` (default: CUDA when
    present) decides the per-device choices, at construction.

    ``extra_generator_losses`` (optional) maps ``(real_A, real_B, fakes)`` to more named
    generator terms, already weighted; CyCADA adds its semantic consistency loss this way.
    """

    def __init__(self, config: CycleGANConfig,
                 extra_generator_losses: Callable[..., dict[str, torch.Tensor]] | None = None):
        super().__init__()
        c = self.config = config
        gen = dict(width=c.ngf, norm=c.norm, dropout=c.dropout, init=c.init, init_gain=c.init_gain)
        dis = dict(width=c.ndf, n_layers=c.n_layers_D, norm=c.norm, init=c.init, init_gain=c.init_gain)
        self.G_A = build_generator(c.netG, c.input_nc, c.output_nc, **gen)   # A -> B
        self.G_B = build_generator(c.netG, c.output_nc, c.input_nc, **gen)   # B -> A
        self.D_A = build_discriminator(c.netD, c.output_nc, **dis)           # judges B
        self.D_B = build_discriminator(c.netD, c.input_nc, **dis)            # judges A
        self.extra_generator_losses = extra_generator_losses
        fast = c.path == "fast"
        # One call on a concatenated batch equals separate calls only when every layer treats
        # the samples independently: instance norm does, batch norm mixes them.
        self.grouped = fast and c.norm != "batch"
        device_type = torch.device(c.device).type if c.device else "cuda" if torch.cuda.is_available() else "cpu"
        # fused: one kernel updates every tensor (the reference keeps PyTorch's default Adam).
        adam = dict(lr=c.lr, betas=(c.beta1, c.beta2), fused=True if fast else None)
        self.opt_G = torch.optim.Adam([*self.G_A.parameters(), *self.G_B.parameters()], **adam)
        self.opt_D = torch.optim.Adam([*self.D_A.parameters(), *self.D_B.parameters()], **adam)
        # Official rule: constant for n_epochs, then linear decay over n_epochs_decay (+1) epochs.
        rule = lambda epoch: 1.0 - max(0, epoch + 1 - c.n_epochs) / float(c.n_epochs_decay + 1)
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, rule)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, rule)
        self.pool_A = ImagePool(c.pool_size, seed=c.seed)      # fakes of domain A, for D_B
        self.pool_B = ImagePool(c.pool_size, seed=c.seed + 1)  # fakes of domain B, for D_A
        self.amp_dtype = _amp_dtype(c.amp, c.path, device_type)
        # fp16's narrow range underflows small gradients unless the loss is scaled up first;
        # bf16 and fp32 need no scaling, and a disabled scaler passes everything through.
        self.scaler = torch.amp.GradScaler(device_type, enabled=self.amp_dtype == torch.float16)
        self.channels_last = fast and device_type == "cuda"
        if self.channels_last:
            torch.backends.cudnn.benchmark = True       # shapes repeat every step: pick the fastest kernels once
            self.to(memory_format=torch.channels_last)  # NHWC, the layout tensor-core convolutions read
        if c.compile:
            for net in (self.G_A, self.G_B, self.D_A, self.D_B):
                net.compile()  # in place, so state_dict keys stay the official ones
        # Each update of the step (G, then D) as one module, one forward per backward: the unit
        # DistributedDataParallel wraps (see distribute). A dict, not submodules, so that the
        # state_dict keeps its "G_A.model..." keys.
        self.units = {"G": _Unit(self.cycle_images, G_A=self.G_A, G_B=self.G_B),
                      "D": _Unit(self.discriminator_losses, D_A=self.D_A, D_B=self.D_B)}

    def cycle_images(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every generated image of the objective, each [N, C, H, W]: fake_B = G_A(real_A),
        rec_A = G_B(fake_B), fake_A = G_B(real_B), rec_B = G_A(fake_A) and, with the identity
        loss, idt_A = G_A(real_B), idt_B = G_B(real_A).

        The reference path makes the six calls one by one in the official order. The fast path
        (``grouped``) gives each network every input that is ready in one call on the
        concatenated batch: G_A on [real_A; real_B], G_B on [real_B; fake_B; real_A], G_A on
        fake_A, three calls instead of six, with the same images up to float rounding.
        """
        identity = self.config.lambda_identity > 0
        if not self.grouped:
            images = {"fake_B": self.G_A(real_A)}
            _check_output_size(self.config.netG, real_A, images["fake_B"])
            images["rec_A"] = self.G_B(images["fake_B"])
            images["fake_A"] = self.G_B(real_B)
            images["rec_B"] = self.G_A(images["fake_A"])
            if identity:
                images.update(idt_A=self.G_A(real_B), idt_B=self.G_B(real_A))
            return images
        images = _grouped_call(self.G_A, {"fake_B": real_A, **({"idt_A": real_B} if identity else {})})
        _check_output_size(self.config.netG, real_A, images["fake_B"])
        images.update(_grouped_call(self.G_B, {"fake_A": real_B, "rec_A": images["fake_B"],
                                               **({"idt_B": real_A} if identity else {})}))
        images["rec_B"] = self.G_A(images["fake_A"])
        return images

    def generator_losses(self, real_A: torch.Tensor, real_B: torch.Tensor):
        """The named, weighted terms of the full objective for G_A and G_B, and the images
        of :meth:`cycle_images`.

        .. math::
            \\mathcal{L}(G, F, D_X, D_Y) = \\mathcal{L}_{GAN}(G, D_Y, X, Y) + \\mathcal{L}_{GAN}(F, D_X, Y, X)
                + \\lambda \\mathcal{L}_{cyc}(G, F) + \\lambda_{idt} \\mathcal{L}_{identity}(G, F)
        """
        c = self.config
        images = self.units["G"](real_A, real_B)  # cycle_images, through DDP under torchrun
        mode = c.gan_mode
        terms = {
            "G_A": c.lambda_gan_A * losses.gan_loss(self.D_A(images["fake_B"]), True, mode, for_discriminator=False),
            "G_B": c.lambda_gan_B * losses.gan_loss(self.D_B(images["fake_A"]), True, mode, for_discriminator=False),
            "cycle_A": c.lambda_A * losses.cycle_loss(images["rec_A"], real_A),
            "cycle_B": c.lambda_B * losses.cycle_loss(images["rec_B"], real_B),
        }
        if c.lambda_identity > 0:
            # G_A fed a B image should leave it alone (and G_B an A image).
            terms["idt_A"] = c.lambda_B * c.lambda_identity * losses.identity_loss(images["idt_A"], real_B)
            terms["idt_B"] = c.lambda_A * c.lambda_identity * losses.identity_loss(images["idt_B"], real_A)
        if self.extra_generator_losses is not None:
            terms.update(self.extra_generator_losses(real_A, real_B, images))
        return terms, images

    def discriminator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Official D objective: 0.5 (GAN(D(real), real) + GAN(D(fake), fake)), fake detached.

        The fast path scores real and fake in one call on [real; fake] (see ``grouped``).
        """
        mode = self.config.gan_mode
        fake = fake.detach()
        if self.grouped and real.shape[1:] == fake.shape[1:]:  # sizes differ with preprocess none, scale_width
            pred_real, pred_fake = D(torch.cat([real, fake])).split([len(real), len(fake)])
        else:
            pred_real, pred_fake = D(real), D(fake)
        loss = 0.5 * (losses.gan_loss(pred_real, True, mode) + losses.gan_loss(pred_fake, False, mode))
        if mode == "wgangp":
            loss = loss + losses.gradient_penalty(D, real, fake, weight=self.config.lambda_gp)
        return loss

    def discriminator_losses(self, real_A: torch.Tensor, real_B: torch.Tensor, fake_A: torch.Tensor,
                             fake_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(D_A's loss: real B against fake B, D_B's loss: real A against fake A)."""
        return self.discriminator_loss(self.D_A, real_B, fake_B), self.discriminator_loss(self.D_B, real_A, fake_A)

    def autocast(self, device_type: str) -> torch.autocast:
        """The run's mixed precision (``amp``) as a context; disabled for fp32."""
        return torch.autocast(device_type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None)

    def train_step(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        """One official iteration: G step with both D frozen, then D step on pooled fakes.

        Returns the detached loss terms (no host sync: call ``.item()`` only when logging).
        """
        if self.channels_last:  # the weights' layout, so convolutions need no conversions
            real_A, real_B = (x.contiguous(memory_format=torch.channels_last) for x in (real_A, real_B))
        autocast = self.autocast(real_A.device.type)
        discriminators = (self.D_A, self.D_B)
        for p in (p for d in discriminators for p in d.parameters()):
            p.requires_grad_(False)   # G step must not build graphs into D's weights
        with autocast:
            terms, images = self.generator_losses(real_A, real_B)
            loss_G = sum(terms.values())
        self.opt_G.zero_grad(set_to_none=True)
        self.scaler.scale(loss_G).backward()
        self._step(self.opt_G)

        for p in (p for d in discriminators for p in d.parameters()):
            p.requires_grad_(True)
        with autocast:
            loss_D_A, loss_D_B = self.units["D"](real_A, real_B, self.pool_A.query(images["fake_A"]),
                                                 self.pool_B.query(images["fake_B"]))
        self.opt_D.zero_grad(set_to_none=True)
        self.scaler.scale(loss_D_A + loss_D_B).backward()
        self._step(self.opt_D)
        self.scaler.update()  # once per iteration, after both optimizers (torch.amp's multi-optimizer rule)
        out = {name: t.detach() for name, t in terms.items()}
        out.update(G=loss_G.detach(), D_A=loss_D_A.detach(), D_B=loss_D_B.detach())
        return out

    def _step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip the gradient norm when ``clip_grad_norm`` is set (one bad batch then cannot
        throw the weights far), then step (skipped by the fp16 scaler when a gradient overflowed)."""
        if self.config.clip_grad_norm:
            self.scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
            params = [p for group in optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(params, self.config.clip_grad_norm)
        self.scaler.step(optimizer)

    def distribute(self, device: torch.device) -> None:
        """Average every update's gradients over the ranks of the process group (torchrun).

        Wraps the units in DistributedDataParallel. Each rank keeps its own image pools, of
        its own fakes, drawing from generators seeded apart from the other ranks' (after a
        resume every rank starts from rank 0's saved pools, the only ones in a checkpoint).
        """
        rank = torch.distributed.get_rank()
        self.pool_A.generator.manual_seed(self.config.seed + 2 * rank)  # rank 0: the seeds of __init__
        self.pool_B.generator.manual_seed(self.config.seed + 2 * rank + 1)
        self.units = {name: distributed.wrap(unit, device) for name, unit in self.units.items()}

    @torch.no_grad()
    def translate(self, images: torch.Tensor, direction: str = "AtoB") -> torch.Tensor:
        """Translate a batch [N, C, H, W] in [-1, 1] with G_A (``AtoB``) or G_B (``BtoA``)."""
        net = {"AtoB": self.G_A, "BtoA": self.G_B}.get(direction)
        if net is None:
            raise ValueError(f"direction must be AtoB or BtoA, got {direction!r}")
        with self.autocast(images.device.type):
            return net(images).float()

    def training_state(self) -> dict:
        """Everything besides the weights that an exact resume needs."""
        return {
            "optimizers": {"G": self.opt_G.state_dict(), "D": self.opt_D.state_dict()},
            "schedulers": {"G": self.sched_G.state_dict(), "D": self.sched_D.state_dict()},
            "pools": {"A": self.pool_A.state_dict(), "B": self.pool_B.state_dict()},
            "scaler": self.scaler.state_dict(),  # fp16 loss scale ({} when off)
        }

    def load_training_state(self, state: dict, device: torch.device) -> None:
        self.opt_G.load_state_dict(state["optimizers"]["G"])
        self.opt_D.load_state_dict(state["optimizers"]["D"])
        self.sched_G.load_state_dict(state["schedulers"]["G"])
        self.sched_D.load_state_dict(state["schedulers"]["D"])
        self.pool_A.load_state_dict(state["pools"]["A"], device)
        self.pool_B.load_state_dict(state["pools"]["B"], device)
        self.scaler.load_state_dict(state["scaler"])


class _Unit(nn.Module):
    """Networks and the method of :class:`CycleGAN` that calls them, as one module.

    DistributedDataParallel averages the gradients of the parameters of the module it wraps
    and needs one forward of that module per backward; each update of the step is one unit.
    """

    def __init__(self, run: Callable, **nets: nn.Module):
        super().__init__()
        self.nets = nn.ModuleDict(nets)  # registered, so that DDP finds their parameters
        self.run = run

    def forward(self, *inputs):
        return self.run(*inputs)


def _grouped_call(net: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``net`` once on the concatenated values of ``inputs`` [N_i, C, H, W], split back under their keys."""
    if len({x.shape[1:] for x in inputs.values()}) > 1:  # A and B sizes differ (preprocess none, scale_width)
        return {key: net(x) for key, x in inputs.items()}
    out = net(torch.cat(list(inputs.values())))  # [sum N_i, C', H, W]
    return dict(zip(inputs, out.split([len(x) for x in inputs.values()])))


def _check_output_size(netG: str, real: torch.Tensor, fake: torch.Tensor) -> None:
    if fake.shape[-2:] != real.shape[-2:]:  # the L1 losses would broadcast: silently wrong
        raise ValueError(f"{netG} turns {tuple(real.shape[-2:])} images into {tuple(fake.shape[-2:])}: "
                         "image sides must be multiples of 4 (resnet) or of <size> (unet_<size>); "
                         "change crop_size, load_size or preprocess")


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled indices of one epoch, a pure function of (seed, epoch), resumable mid-epoch.

    ``start`` skips the indices already consumed, so a resumed run sees exactly the
    samples an uninterrupted run would have seen.

    With ``world_size`` > 1 (DDP) rank ``rank`` takes every ``world_size``-th index from
    position ``rank`` on, and ``start`` counts that share: the ranks' k-th batches of size B
    together hold the k-th batch of size ``world_size`` x B of a single process. The order is
    first padded with its own first indices to a multiple of ``world_size``, because every
    rank must take the same number of steps.
    """

    def __init__(self, n: int, seed: int, epoch: int, start: int = 0, limit: int | None = None,
                 rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.epoch, self.start = n, seed, epoch, start
        self.limit = min(n, limit) if limit else n
        self.rank, self.world_size = rank, world_size
        self.share = math.ceil(self.limit / world_size)  # indices per rank

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g)[: self.limit]
        padded = order.repeat(math.ceil(self.share * self.world_size / self.limit))[: self.share * self.world_size]
        return iter(padded[self.rank::self.world_size][self.start:].tolist())

    def __len__(self):
        return self.share - self.start


def is_cyclegan_checkpoint(state: dict) -> bool:
    return isinstance(state, dict) and state.get("kind") == "cyclegan" and "nets" in state


def cyclegan_from_checkpoint(state: dict) -> CycleGAN:
    """A :class:`CycleGAN` (eval mode, CPU) holding the weights of a loaded cyclelib checkpoint."""
    known = {f.name for f in fields(CycleGANConfig)}
    options = {k: v for k, v in state["config"].items() if k in known}
    # compile off: for translating a few images, compiling would only delay the first one
    model = CycleGAN(CycleGANConfig(**{**options, "compile": False}))
    model.load_state_dict(state["nets"])
    return model.eval()


def load_cyclegan(path: str | Path, device: str | torch.device = "cpu") -> CycleGAN:
    """A :class:`CycleGAN` with the weights of the cyclelib checkpoint at ``path`` (eval mode)."""
    state = load_checkpoint(path)
    if not is_cyclegan_checkpoint(state):
        raise ValueError(f"{path} is not a cyclelib CycleGAN checkpoint; "
                         "for an official generator .pth use cyclelib.load_official")
    return cyclegan_from_checkpoint(state).to(device)


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training at a step boundary, after a checkpoint to resume from."""

    def __init__(self, signum: int, step: int, checkpoint: Path):
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: stopped at step {step} and saved {checkpoint}; continue with "
                         f"resume=True (cyclelib train cyclegan --resume {checkpoint.parent})")
        self.exit_code = 128 + signum  # what a shell reports for a process ended by this signal


class TrainingDiverged(FloatingPointError):
    """A loss term became NaN or Inf; the checkpoints on disk are the last good ones."""

    exit_code = 1


class _NonFiniteWatch:
    """The first step at which each loss term was NaN or Inf.

    Kept on the device, so watching costs no host sync per step; :meth:`check` syncs
    once, and runs before anything (log row, checkpoint) is written.
    """

    def __init__(self):
        self.names: list[str] = []
        self.first_step = self.first_value = None  # [terms] long / float, -1: still finite

    def update(self, step: int, terms: dict[str, torch.Tensor]) -> None:
        values = torch.stack([t.float() for t in terms.values()])  # [terms]
        if self.first_step is None:
            self.names = list(terms)
            self.first_step = torch.full(values.shape, -1, dtype=torch.long, device=values.device)
            self.first_value = torch.zeros_like(values)
        new = ~torch.isfinite(values) & (self.first_step < 0)
        self.first_step = torch.where(new, step, self.first_step)
        self.first_value = torch.where(new, values, self.first_value)

    def check(self, out: Path, saved_at: int) -> None:
        """Raise :class:`TrainingDiverged` naming the earliest bad step and term (the totals
        G, D_A, D_B come after the terms, so a term is named when one is at fault)."""
        if self.first_step is None:
            return
        found = [(step, i) for i, step in enumerate(self.first_step.tolist()) if step >= 0]
        if found:
            step, i = min(found)
            kept = (f"the checkpoints in {out} (latest: step {saved_at}) are from before it" if saved_at
                    else "no checkpoint was written")
            raise TrainingDiverged(f"loss term {self.names[i]} was {self.first_value[i].item()} at step {step}; "
                                   f"training stopped and {kept}. Lower lr or set clip_grad_norm, "
                                   "then resume or restart.")


def _cycle_score(history: list[dict], since: int) -> float | None:
    """What ``checkpoint_best.pt`` minimises: the weighted cycle loss (cycle_A + cycle_B),
    averaged over the log rows since the checkpoint before (steps > ``since``).

    Lower means G_B(G_A(a)) and G_A(G_B(b)) reconstruct their inputs better. It is a proxy:
    no CycleGAN loss measures how realistic a translation looks.
    """
    rows = [row for row in history if row["step"] > since]
    return sum(row["cycle_A"] + row["cycle_B"] for row in rows) / len(rows) if rows else None


# Options that shape the networks: a checkpoint only resumes into the same ones.
NETWORK_OPTIONS = ("netG", "netD", "ngf", "ndf", "n_layers_D", "norm", "dropout", "input_nc", "output_nc")


def _check_resumable(ckpt: dict, path: Path, config: CycleGANConfig) -> None:
    if not is_cyclegan_checkpoint(ckpt):
        raise ValueError(f"cannot resume from {path}: it is not a cyclelib CycleGAN checkpoint")
    if ckpt.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"cannot resume from {path}: checkpoint format {ckpt['version']} is newer than this "
                         f"cyclelib reads ({FORMAT_VERSION}); update cyclelib")
    changed = [f"{name}={ckpt['config'].get(name)!r} there, {getattr(config, name)!r} now"
               for name in NETWORK_OPTIONS if ckpt["config"].get(name) != getattr(config, name)]
    if changed:
        raise ValueError(f"cannot resume from {path} with other network options ({'; '.join(changed)}); "
                         "resume with the run's options or start a new run in another folder")


def train_cyclegan(config: CycleGANConfig, resume: bool = False, progress: bool = True,
                   extra_generator_losses=None) -> CycleGAN:
    """Train a CycleGAN as the official code does and return it.

    Writes to ``config.out``: ``checkpoints/step_XXXXXXX.pt`` (the last
    ``keep_checkpoints``, everything needed to resume exactly), ``checkpoint.pt`` (the
    latest), ``checkpoint_best.pt`` (lowest cycle loss, see :func:`_cycle_score`),
    ``history.csv``/``history.json`` (loss terms every ``log_every`` steps),
    ``samples/step_XXXXXX.png`` (rows: real A, G_A(A), G_B(G_A(A)), real B, G_B(B),
    G_A(G_B(B))) and ``history.png``. With ``resume=True`` it continues from the latest
    readable checkpoint in ``out`` exactly where that run stopped.

    Every image is decoded once before training (see ``skip_bad_images``). SIGINT and
    SIGTERM stop at the next step boundary with a checkpoint and raise
    :class:`TrainingInterrupted`; a NaN or Inf loss raises :class:`TrainingDiverged`
    without writing a checkpoint.

    Under ``torchrun --nproc_per_node N`` it trains with DistributedDataParallel (see
    :mod:`cyclelib.distributed`): ``batch_size`` is per rank, each rank takes its share of
    every epoch, the logged losses are means over the ranks, and only rank 0 writes files.
    """
    c = config
    if not c.data:
        raise ValueError("no data given: set data to a folder with trainA/trainB or a digit pair like mnist5k:mnistm5k")
    if c.input_nc != c.output_nc:
        raise ValueError("cyclelib reads both domains with the same channel count: set input_nc == output_nc")
    if c.input_nc not in (1, 3):
        raise ValueError(f"input_nc must be 1 (images read as grayscale) or 3 (RGB), got {c.input_nc}")
    out = Path(c.out)
    # Under torchrun: this process's rank, the number of ranks and this rank's GPU.
    rank, world, device = distributed.setup(pick_device(c.device))
    seed_everything(c.seed)
    data_options = dict(seed=c.seed, channels=c.input_nc)
    if _is_digit_pair(c.data):
        data_options.update(size=c.crop_size)
    else:
        data_options.update(preprocess=c.preprocess, load_size=c.load_size, crop_size=c.crop_size, flip=c.flip)
    dataset = _open_checked(c, "train", data_options)
    model = CycleGAN(c, extra_generator_losses).to(device)
    if world > 1:
        model.distribute(device)  # before a resume, which then loads the saved pools over the reseeded ones
    epoch, start, step, history, best = 0, 0, 0, [], None
    if resume:
        ckpt, ckpt_path = load_run_checkpoint(out)
        _check_resumable(ckpt, ckpt_path, c)
        saved_world = ckpt.get("world_size", 1)
        if saved_world != world:  # "start" counts steps of world_size x batch_size samples
            raise ValueError(f"cannot resume {ckpt_path} with {world} process(es): it was trained with "
                             f"{saved_world}; resume it with torchrun --nproc_per_node {saved_world}")
        model.load_state_dict(ckpt["nets"])
        model.load_training_state(ckpt, device)
        set_rng_state(ckpt["rng"])
        epoch, start, step, history = ckpt["epoch"], ckpt["start"], ckpt["step"], ckpt["history"]
        best = ckpt.get("best")
    saved_at = step
    samples = _fixed_samples(c, dataset, data_options, device)
    total_epochs = c.n_epochs + c.n_epochs_decay
    share = len(EpochSampler(len(dataset), c.seed, 0, limit=c.max_dataset_size, world_size=world))
    steps_per_epoch = math.ceil(share / c.batch_size)
    max_steps = c.max_steps or total_epochs * steps_per_epoch

    watch = _NonFiniteWatch()

    def save():
        nonlocal best, saved_at
        watch.check(out, saved_at)  # NaN weights must never replace a good checkpoint
        score = _cycle_score(history, since=saved_at)
        improved = score is not None and (best is None or score < best["score"])
        if improved:
            best = {"step": step, "score": score}
        if rank == 0:  # one writer: every rank holds the same weights
            save_run_checkpoint({
                "version": FORMAT_VERSION, "kind": "cyclegan", "config": asdict(c), "nets": model.state_dict(),
                **model.training_state(), "rng": rng_state(), "epoch": epoch, "start": start, "step": step,
                "history": history, "best": best, "world_size": world,
                "total_steps": max_steps}, out, step, c.keep_checkpoints,
                best=improved)
            _write_history(history, out)
        saved_at = step

    # SIGINT (Ctrl-C) and SIGTERM (e.g. a cluster preemption) end the run at the next step
    # boundary with a checkpoint. The handler then steps aside: a second signal acts at once.
    stop: dict[str, int] = {}
    previous: dict[int, object] = {}

    def request_stop(signum, frame):
        stop["signal"] = signum
        signal.signal(signum, previous[signum])

    if threading.current_thread() is threading.main_thread():  # Python only lets it set handlers
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request_stop) or signal.SIG_DFL
    bar = tqdm(total=max_steps, initial=step, disable=not progress or rank != 0, desc="cyclegan", unit="step")
    running: dict[str, torch.Tensor] = {}
    try:
        model.train()
        while epoch < total_epochs and step < max_steps and not stop:
            dataset.set_epoch(epoch)
            sampler = EpochSampler(len(dataset), c.seed, epoch, start * c.batch_size, c.max_dataset_size,
                                   rank, world)
            loader = torch.utils.data.DataLoader(dataset, c.batch_size, sampler=sampler,
                                                 num_workers=c.num_workers, pin_memory=device.type == "cuda",
                                                 # its own generator: building a loader must not
                                                 # consume the global RNG, or a resume would differ
                                                 generator=torch.Generator().manual_seed(c.seed),
                                                 worker_init_fn=_leave_sigint_to_main)
            for batch in loader:
                terms = model.train_step(batch["A"].to(device, non_blocking=True),
                                         batch["B"].to(device, non_blocking=True))
                terms = distributed.mean_over_ranks(terms)  # DDP: the global batch's, the same on every rank
                for k, v in terms.items():
                    running[k] = running.get(k, 0) + v
                step, start = step + 1, start + 1
                watch.update(step, terms)
                bar.update()
                if world > 1 and distributed.any_rank(bool(stop)):
                    stop.setdefault("signal", signal.SIGTERM)  # it reached another rank: stop together
                if step % c.log_every == 0:
                    watch.check(out, saved_at)
                    row = {"step": step, "epoch": epoch, **{k: (v / c.log_every).item() for k, v in running.items()}}
                    history.append(row)
                    running.clear()
                    bar.set_postfix(G=f"{row['G']:.3f}", D_A=f"{row['D_A']:.3f}", D_B=f"{row['D_B']:.3f}")
                if step % c.sample_every == 0 and rank == 0:
                    _save_samples(model, samples, out / "samples" / f"step_{step:06d}.png")
                if step % c.checkpoint_every == 0:
                    save()
                if step >= max_steps or stop:
                    break
            else:
                epoch, start = epoch + 1, 0
                model.sched_G.step()
                model.sched_D.step()
    finally:
        bar.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    save()
    if rank == 0:
        _save_samples(model, samples, out / "samples" / f"step_{step:06d}.png")
    if stop:
        raise TrainingInterrupted(stop["signal"], step, out / LATEST)
    return model.eval()


def _leave_sigint_to_main(worker_id: int) -> None:
    """A terminal's Ctrl-C reaches every process of the job; loader workers ignore it so that
    the main process can finish its step and save (a dead worker would fail that step)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _open_checked(c: CycleGANConfig, phase: str, data_options: dict) -> Unpaired:
    """The dataset of ``phase``, every image decoded once (see :meth:`Unpaired.check`)."""
    dataset = open_unpaired(c.data, phase=phase, **data_options)
    skipped = dataset.check(skip_bad=c.skip_bad_images)
    if skipped:
        print(f"skipped {len(skipped)} unreadable {phase} image(s) (skip_bad_images=True); first: {skipped[0]}",
              file=sys.stderr)
    return dataset


def _fixed_samples(c: CycleGANConfig, train: Unpaired, data_options: dict, device,
                   n: int = 4) -> dict[str, torch.Tensor]:
    """The same few test images (train images when there is no test split) for every sample grid."""
    try:
        ds = _open_checked(c, "test", data_options)
    except FileNotFoundError:
        ds = train  # the loop sets its own epoch before every epoch
    ds.set_epoch(0)
    # Spread over the set: the digit splits are sorted by class, so the first n would all be 0s.
    items = [ds[i * len(ds) // n] for i in range(min(n, len(ds)))]
    return {k: torch.stack([it[k] for it in items]).to(device) for k in ("A", "B")}


@torch.no_grad()
def _save_samples(model: CycleGAN, samples: dict[str, torch.Tensor], path: Path) -> None:
    was_training = model.training
    model.eval()
    a, b = samples["A"], samples["B"]
    fake_b, fake_a = model.G_A(a), model.G_B(b)
    rows = [a, fake_b, model.G_B(fake_b), b, fake_a, model.G_A(fake_a)]
    names = ["real A", "G_A(A)", "G_B(G_A(A))", "real B", "G_B(B)", "G_A(G_B(B))"]
    save_image_grid(rows, names, path)
    model.train(was_training)


def _write_history(history: list[dict], out: Path) -> None:
    if not history:
        return
    (out / "history.json").write_text(json.dumps(history, indent=1))
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(out / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    plot_history(history, out / "history.png", keys=[k for k in keys if k not in ("step", "epoch")])
