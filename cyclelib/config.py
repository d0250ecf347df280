"""Every option of a run, as dataclasses with the papers' defaults, and the scale presets.

:class:`CycleGANConfig` holds a CycleGAN run (Zhu et al. 2017, the official code's options),
:class:`CyCADAConfig` a CyCADA run on digits (Hoffman et al. 2018, the release's options).
Each checks every option when it is built, so a bad value fails before any training, with
a message naming the option. ``for_scale`` applies a scale's preset (smoke / cpu / colab / gpu,
see :func:`~cyclelib.runtime.resolve_scale`); options given explicitly win over it.

Over 450 lines because the two configs share their checks (finite numbers, choices, image
sides against the networks) and the resume rule declared on every field; the scale presets and
the CyCADA command line (``cycada_command``) could move out, which the house-in-order issue plans.
"""
from __future__ import annotations

import argparse
import math
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from .classifiers import CLASSIFIERS
from .data import DIGIT_DOMAINS, is_digit_pair
from .images import PREPROCESS_MODES
from .losses import GAN_MODES
from .networks import (DISCRIMINATOR_ARCHS, GENERATOR_ARCHS, INIT_TYPES, NOISE_INJECTIONS, NORMS, build_discriminator,
                       build_generator, fits, smallest_side)
from .runtime import AMP_MODES, SCALES, resolve_scale

PATHS = ("fast", "reference")
SEMANTIC_JUDGES = ("source", "feature_only")  # the CyCADA stages whose classifier may judge L_sem
# Digit domains whose colour carries information; every other one is grey digits.
COLOUR_DOMAINS = ("svhn", "mnistm", "mnistm5k")
# Seeds are 0 <= seed < SEED_LIMIT: data.EpochSampler seeds torch with seed * 100_003 + epoch, which
# must stay below 2**64 (torch's largest seed).
SEED_LIMIT = 2**32
# Networks must take some image with sides up to this many pixels (networks.smallest_side's search).
LARGEST_SIDE = 4096


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1 (the message names the option, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _check_choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid values: {', '.join(valid)}")


def _check_finite(config) -> None:
    """Every number of ``config`` must be finite: NaN passes any comparison, and inf is no weight or rate."""
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{f.name} must be a finite number, got {value}")


def _check_seed(seed: int) -> None:
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be an integer in [0, {SEED_LIMIT}), got {seed}")


def _check_signs(config, non_negative=(), positive=()) -> None:
    """``non_negative`` options must be >= 0 and ``positive`` ones > 0 (None means "not set")."""
    for name in non_negative:
        value = getattr(config, name)
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    for name in positive:
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def _check_generator(netG: str, channels: int) -> None:
    """``netG`` as the official names or their patterns (resnet_<n>blocks, unet_<size>)."""
    if netG in GENERATOR_ARCHS:
        return
    try:
        with torch.device("meta"):  # allocates no weights and draws no random numbers
            build_generator(netG, channels, channels, width=1)
    except ValueError as e:
        raise ValueError(f"netG: {e}") from None


def shape_networks(c: CycleGANConfig, channels: int, discriminator: bool = True) -> dict[str, nn.Module]:
    """Config ``c``'s G (and D with ``discriminator``) on the meta device, to ask which image
    sizes they take (:func:`~cyclelib.networks.fits`): no weights, no random numbers. Keys name
    the networks and their options, for messages."""
    with torch.device("meta"):
        nets = {f"netG {c.netG} (norm {c.norm})": build_generator(c.netG, channels, channels, width=1, norm=c.norm,
                                                                 init=None)}
        if discriminator:
            layers = f" with n_layers_D {c.n_layers_D}" if c.netD == "n_layers" else ""
            nets[f"netD {c.netD}{layers} (norm {c.norm})"] = build_discriminator(
                c.netD, channels, width=1, n_layers=c.n_layers_D, norm=c.norm, init=None)
    return nets


def _check_image_side(option: str, side: int | None, batch: int, channels: int, c) -> None:
    """Images ``[batch, channels, side, side]`` (``side`` is the option ``option``) must be large
    enough for every layer of config ``c``'s G and D (checked on shapes, without weights); and,
    even with ``side`` None (image sizes not known yet), each must take some image up to
    :data:`LARGEST_SIDE`."""
    nets = shape_networks(c, channels)
    for name, net in nets.items():
        # A larger image never fails a layer a smaller one passes, and LARGEST_SIDE is a multiple of
        # every generator's: if this fails, smallest_side would search up to the limit in vain.
        if not fits(net, (batch, channels, LARGEST_SIDE, LARGEST_SIDE)):
            hint = (": each of its layers halves the image, use a smaller n_layers_D"
                    if name.startswith("netD") and c.netD == "n_layers" else "")
            raise ValueError(f"{name} takes no image with sides up to {LARGEST_SIDE} pixels{hint}")
    for name, net in nets.items():
        if side is None or fits(net, (batch, channels, side, side)):
            continue
        smallest = smallest_side(net, channels, batch, limit=LARGEST_SIDE)
        if smallest > side:
            raise ValueError(f"{option} {side} is too small for {name}: the smallest image side it takes is {smallest}")
        below = max(s for s in range(smallest, side, 4) if fits(net, (batch, channels, s, s)))
        raise ValueError(f"{option} {side} does not fit {name}: its down- and upsamplings would give back images "
                         f"of another size; {below} is the nearest side below that fits (resnet generators take "
                         f"multiples of 4, unet_<size> multiples of <size>)")


def classifier_name(config: CyCADAConfig | Mapping[str, object]) -> str:
    """The task network of a run (a config, or its options as a dict: a stage's record): DTN
    (3x32x32) when either domain is in colour, else LeNet.

    This follows the release: LeNet for MNIST <-> USPS, DTN for SVHN -> MNIST. LeNet reads
    grey images, so colour (e.g. MNIST-M's) would be thrown away before it could help.
    """
    c = config if isinstance(config, Mapping) else vars(config)
    if c["classifier"] != "auto":
        return c["classifier"]
    return "dtn" if {c["source"], c["target"]} & set(COLOUR_DOMAINS) else "lenet"


# What a resumed run does with an option given another value than the run's: one declaration per
# option, as field metadata "on_resume" (read by train_cyclegan and the CLI). "apply": the run goes on
# with the new value from the step it resumes at, and its checkpoints record it. "refuse": the option
# is fixed for the run's life, and "why" says why; resuming with another value is an error naming it.
_NETWORK = "it shapes the networks, whose trained weights the run holds"
_INIT = "it chose the initial weights, which the run has trained past"
_DATA = "it decides the training images and their order (the run's position in its epoch)"
_OBJECTIVE = "it changes the loss, which the history and the best checkpoint compare over the whole run"
_POOL = "it sizes the image pools, which hold the run's last fakes"


def _applied(default):
    return field(default=default, metadata={"on_resume": "apply"})


def _fixed(default, why: str):
    return field(default=default, metadata={"on_resume": "refuse", "why": why})


@dataclass
class CycleGANConfig:
    """Every option of a CycleGAN run; the defaults are the official ones (the paper's setting)."""

    data: str = _fixed("", _DATA)         # folder with trainA/trainB, or a digit pair "mnist5k:mnistm5k"
    out: str = _applied("runs/cyclegan")  # run folder: checkpoints, samples, history
    # networks
    netG: str = _fixed("resnet_9blocks", _NETWORK)
    netD: str = _fixed("basic", _NETWORK)
    ngf: int = _fixed(64, _NETWORK)
    ndf: int = _fixed(64, _NETWORK)
    n_layers_D: int = _fixed(3, _NETWORK)
    norm: str = _fixed("instance", _NETWORK)
    dropout: bool = _fixed(False, _NETWORK)
    init: str = _fixed("normal", _INIT)
    init_gain: float = _fixed(0.02, _INIT)
    input_nc: int = _fixed(3, _NETWORK)
    output_nc: int = _fixed(3, _NETWORK)
    noise_nc: int = _fixed(0, _NETWORK)   # beyond the paper: noise for G_A (networks.NoiseInput); 0: off
    # how the noise enters G_A: constant channels or modulated image copies
    noise_injection: str = _fixed("constant", _NETWORK)
    # losses
    gan_mode: str = _fixed("lsgan", _OBJECTIVE)
    lambda_A: float = _fixed(10.0, _OBJECTIVE)         # cycle A -> B -> A
    lambda_B: float = _fixed(10.0, _OBJECTIVE)         # cycle B -> A -> B
    lambda_identity: float = _fixed(0.5, _OBJECTIVE)   # multiplies lambda_A / lambda_B (effective weight 5)
    lambda_gan_A: float = _fixed(1.0, _OBJECTIVE)      # weight of G_A's adversarial term (CyCADA uses 2)
    lambda_gan_B: float = _fixed(1.0, _OBJECTIVE)      # weight of G_B's adversarial term
    lambda_gp: float = _fixed(10.0, _OBJECTIVE)        # gradient penalty, gan_mode "wgangp" only
    # beyond the paper: losses.mode_seeking_loss on G_A's noise (noise_nc > 0)
    lambda_mode_seeking: float = _fixed(0.0, _OBJECTIVE)
    # optimisation
    lr: float = _applied(2e-4)
    beta1: float = _applied(0.5)
    beta2: float = _applied(0.999)
    batch_size: int = _fixed(1, _DATA)
    n_epochs: int = _applied(100)          # epochs at the initial learning rate
    n_epochs_decay: int = _applied(100)    # epochs of linear decay to zero
    pool_size: int = _fixed(50, _POOL)
    max_steps: int | None = _applied(None)  # stop after this many steps in total (for tests and sweeps)
    clip_grad_norm: float | None = _applied(None)  # clip each optimizer's gradient norm to this (None or 0: off)
    # data
    preprocess: str = _fixed("resize_and_crop", _DATA)
    load_size: int = _fixed(286, _DATA)
    crop_size: int = _fixed(256, _DATA)
    flip: bool = _fixed(True, _DATA)
    max_dataset_size: int | None = _fixed(None, _DATA)  # at most this many samples per epoch
    num_workers: int = _applied(2)
    skip_bad_images: bool = _applied(False)  # unreadable images: skip them (True) or stop naming the first (False)
    # run
    seed: int = _fixed(0, _DATA)
    device: str | None = _applied(None)
    path: str = _applied("fast")        # "fast": same losses, batched network calls, fused Adam, and on CUDA
                                        # bf16 + channels_last; "reference": the official fp32 eager step
    amp: str = _applied("auto")         # "auto": bf16 in the fast path where native (CUDA, AVX512-BF16/AMX
                                        # CPUs), else fp32; "none", "bf16", "fp16" (with loss scaling)
    compile: bool = _applied(False)     # torch.compile the four networks (fast path; the first steps compile)
    log_every: int = _applied(50)       # steps between loss-history rows
    sample_every: int = _applied(500)   # steps between sample grids
    checkpoint_every: int = _applied(1000)  # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = _applied(3)     # step checkpoints kept in out/checkpoints (besides latest and best)
    # watching (cyclelib.watch; the packages: pip install 'cyclelib[log]')
    tensorboard: bool = _applied(False)     # loss terms, learning rates and sample grids into out/tensorboard
    wandb: bool = _applied(False)           # the same, and the options, to Weights & Biases
    wandb_project: str = _applied("cyclelib")  # the W&B project (the official code's: "CycleGAN-and-pix2pix")

    def __post_init__(self):
        _check_finite(self)
        _check_seed(self.seed)
        _check_signs(self, non_negative=("lambda_A", "lambda_B", "lambda_identity", "lambda_gan_A",
                                         "lambda_gan_B", "lambda_gp", "pool_size", "n_epochs_decay",
                                         "init_gain", "num_workers", "clip_grad_norm", "noise_nc",
                                         "lambda_mode_seeking"),
                     positive=("lr", "batch_size", "n_epochs", "load_size", "crop_size", "log_every",
                               "sample_every", "checkpoint_every", "keep_checkpoints", "ngf", "ndf",
                               "n_layers_D", "input_nc", "output_nc", "max_steps", "max_dataset_size"))
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name, valid in (("norm", NORMS), ("init", INIT_TYPES), ("netD", DISCRIMINATOR_ARCHS),
                            ("preprocess", PREPROCESS_MODES), ("gan_mode", GAN_MODES), ("amp", AMP_MODES),
                            ("path", PATHS), ("noise_injection", NOISE_INJECTIONS)):
            _check_choice(name, getattr(self, name), valid)
        _check_generator(self.netG, self.input_nc)
        if self.path == "reference" and (self.compile or self.amp not in ("auto", "none")):
            raise ValueError(f"path 'reference' is the official fp32 eager step: it takes neither compile nor amp "
                             f"{self.amp!r}; use path 'fast' for them")
        if self.crop_size > self.load_size and self.preprocess in ("resize_and_crop", "scale_width_and_crop"):
            raise ValueError(f"crop_size ({self.crop_size}) must not exceed load_size ({self.load_size}) with "
                             f"preprocess {self.preprocess!r}, which resizes to load_size and then crops "
                             f"crop_size; preprocess 'crop' or 'none' do not resize")
        if self.lambda_identity > 0 and self.input_nc != self.output_nc:
            raise ValueError("the identity loss needs input_nc == output_nc; set lambda_identity=0")
        if self.lambda_mode_seeking > 0 and not self.noise_nc:
            raise ValueError("lambda_mode_seeking needs a generator that takes noise: set noise_nc > 0")
        # Cropped training images are crop_size x crop_size; other sizes are checked per file (data.Unpaired.check).
        cropped = self.preprocess in ("resize_and_crop", "crop", "scale_width_and_crop") or is_digit_pair(self.data)
        _check_image_side("crop_size", self.crop_size if cropped else None, self.batch_size, self.input_nc, self)

    @classmethod
    def for_scale(cls, scale: str | None = None, **options) -> "CycleGANConfig":
        """The config of a scale (smoke / cpu / colab / gpu, see :func:`resolve_scale`); ``options`` win."""
        return cls(**{**cyclegan_preset(scale, options.get("data", "")), **options})


def cyclegan_preset(scale: str | None, data: str) -> dict:
    """The options that scale ``scale`` (see :func:`resolve_scale`) sets for a CycleGAN on ``data``."""
    return CYCLEGAN_PRESETS[resolve_scale(scale)]["digits" if is_digit_pair(data) else "images"]


# Per scale and kind of data, the options that differ from the paper's defaults.
# Digits are 32x32 and need no augmentation (a flipped "2" is no digit).
_DIGITS = dict(load_size=32, crop_size=32, preprocess="none", flip=False)
CYCLEGAN_PRESETS = {
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
    # a book chapter within about 30 minutes on a free Colab T4 (benchmarks/estimate_gpu_time.py):
    # the paper's networks at half width on digits, a tenth of the paper's epochs on photos
    "colab": {
        "digits": dict(_DIGITS, ngf=32, ndf=32, batch_size=50, n_epochs=10, n_epochs_decay=10, num_workers=2,
                       log_every=20, sample_every=400, checkpoint_every=400),
        "images": dict(n_epochs=10, n_epochs_decay=10, max_dataset_size=400, num_workers=2, log_every=50,
                       sample_every=1000, checkpoint_every=1000),
    },
    "gpu": {
        "digits": dict(_DIGITS, batch_size=100, n_epochs=20, n_epochs_decay=20, num_workers=4,
                       log_every=50, sample_every=500, checkpoint_every=2000),
        "images": dict(num_workers=4),
    },
}


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
    invert_source: float = 0.0           # beyond the paper: share of source images f_S sees negated (chapter 10)
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
    noise_nc: int = 0                    # beyond the paper: noise for G_{S->T} (chapter 10); 0: off
    noise_injection: str = "constant"    # constant channels (erased by instance norm) or modulated image copies
    gan_mode: str = "lsgan"
    lambda_gan_A: float = 2.0            # L_GAN(G_{S->T}, D_T, X_T, X_S)
    lambda_gan_B: float = 1.0            # L_GAN(G_{T->S}, D_S, X_S, X_T)
    lambda_cycle_A: float = 1.0          # S -> T -> S
    lambda_cycle_B: float = 1.0          # T -> S -> T
    lambda_identity: float = 0.0
    lambda_sem_A: float = 1.0            # L_task(f_S, G_{S->T}(X_S), p(f_S, X_S))
    lambda_sem_B: float = 1.0            # L_task(f_S, G_{T->S}(X_T), p(f_S, X_T))
    lambda_mode_seeking: float = 0.0     # beyond the paper: mode seeking on G_{S->T}'s noise (noise_nc > 0)
    semantic_judge: str = "source"       # the classifier of L_sem: f_S (the paper), or beyond the paper
                                         # "feature_only": f_T of that stage, which has seen target images
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
    amp: str = "auto"                    # none | bf16 | fp16 | auto (bf16 where native, see runtime), every stage
    num_workers: int = 0
    log_every: int = 50                  # steps between loss-history rows
    sample_every: int = 500              # pixel stage: steps between sample grids
    checkpoint_every: int = 1000         # steps between checkpoints

    def __post_init__(self):
        _check_finite(self)
        _check_seed(self.seed)
        for name in ("source", "target"):
            if getattr(self, name) not in DIGIT_DOMAINS:
                raise ValueError(f"unknown {name} dataset {getattr(self, name)!r}; valid names: "
                                 f"{', '.join(DIGIT_DOMAINS)}")
        for name, valid in (("classifier", ("auto", *CLASSIFIERS)), ("amp", AMP_MODES), ("gan_mode", GAN_MODES),
                            ("norm", NORMS), ("netD", DISCRIMINATOR_ARCHS), ("semantic_judge", SEMANTIC_JUDGES),
                            ("noise_injection", NOISE_INJECTIONS)):
            _check_choice(name, getattr(self, name), valid)
        _check_generator(self.netG, 3)
        _check_signs(self, non_negative=[*(f.name for f in fields(self) if f.name.startswith("lambda_")),
                                         "pool_size", "pixel_epochs_decay", "num_workers", "noise_nc"],
                     positive=("image_size", "task_lr", "task_batch_size", "task_epochs", "ngf", "ndf", "n_layers_D",
                               "pixel_lr", "pixel_batch_size", "pixel_epochs", "feature_lr", "feature_batch_size",
                               "feature_epochs", "log_every", "sample_every", "checkpoint_every", "max_samples",
                               "max_eval_samples"))
        if not 0 <= self.pixel_beta1 < 1:
            raise ValueError(f"pixel_beta1 must be in [0, 1), got {self.pixel_beta1}")
        if not 0 <= self.invert_source <= 1:
            raise ValueError(f"invert_source must be in [0, 1] (a share of the images), got {self.invert_source}")
        if classifier_name(self) == "dtn":
            for name in ("task_batch_size", "max_samples"):
                if getattr(self, name) == 1:
                    resolved = " (auto: a domain is in colour)" if self.classifier == "auto" else ""
                    raise ValueError(f"{name} 1 gives batches of one image, on which the dtn classifier{resolved} "
                                     f"cannot train (BatchNorm needs two or more); use {name} 2 or more, or "
                                     f"classifier lenet")
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (the generator downsamples twice), "
                             f"got {self.image_size}")
        _check_image_side("image_size", self.image_size, self.pixel_batch_size, 3, self)
        self.pixel_config("")  # every option of the pixel stage, checked as CycleGAN checks it

    @classmethod
    def for_scale(cls, scale: str | None = None, **options) -> "CyCADAConfig":
        """The config of a scale (smoke / cpu / colab / gpu, see :func:`resolve_scale`); ``options`` win."""
        scale = resolve_scale(scale)
        return cls(**{**CYCADA_PRESETS[scale], "scale": scale, **options})

    def pixel_config(self, out: str) -> CycleGANConfig:
        """The CycleGAN options of the pixel stage, writing to ``out``: source is domain A,
        target domain B, both RGB. The identity weight multiplies the cycle weights, as in
        CycleGAN (and the CyCADA release, which is built on its code)."""
        return CycleGANConfig(
            data=f"{self.source}:{self.target}", out=out, netG=self.netG, ngf=self.ngf, netD=self.netD,
            ndf=self.ndf, n_layers_D=self.n_layers_D, norm=self.norm, input_nc=3, output_nc=3, noise_nc=self.noise_nc,
            noise_injection=self.noise_injection,
            gan_mode=self.gan_mode, lambda_A=self.lambda_cycle_A, lambda_B=self.lambda_cycle_B,
            lambda_identity=self.lambda_identity, lambda_gan_A=self.lambda_gan_A, lambda_gan_B=self.lambda_gan_B,
            lambda_mode_seeking=self.lambda_mode_seeking,
            lr=self.pixel_lr, beta1=self.pixel_beta1, batch_size=self.pixel_batch_size,
            n_epochs=self.pixel_epochs, n_epochs_decay=self.pixel_epochs_decay, pool_size=self.pool_size,
            preprocess="none", load_size=self.image_size, crop_size=self.image_size, flip=False,
            max_dataset_size=self.max_samples, num_workers=self.num_workers, seed=self.seed, device=self.device,
            amp=self.amp, log_every=self.log_every, sample_every=self.sample_every,
            checkpoint_every=self.checkpoint_every)


# Per scale, the CyCADA options that differ from the paper's defaults.
CYCADA_PRESETS = {
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
    # each book chapter within about 30 minutes on a free Colab T4 (benchmarks/estimate_gpu_time.py),
    # on the offline 5k digit sets: the paper's networks at half width, the cpu scale's learning rates
    "colab": dict(ngf=32, ndf=32, task_lr=1e-3, task_batch_size=64, task_epochs=10, pixel_batch_size=50,
                  pixel_epochs=10, pixel_epochs_decay=10, feature_lr=3e-4, feature_batch_size=64, feature_epochs=20,
                  num_workers=2, log_every=20, sample_every=400, checkpoint_every=400),
    # the paper's setting
    "gpu": dict(num_workers=4),
}


def cycada_command(options: Mapping[str, object], stages: Iterable[str]) -> str:
    """The ``cyclelib train cycada`` command that runs ``stages`` with the CyCADA options
    ``options`` (``asdict`` of a :class:`CyCADAConfig`, or a stage checkpoint's record of one):
    ``--source``, ``--target``, ``--out``, ``--scale`` and every option that differs from that
    scale's preset, so that the command builds the same config (``scale`` aside). A config whose
    scale the command line has not (``custom``), or with an option at None where its scale's
    preset has a value, is rendered from the gpu scale: the paper's options."""
    defaults = {f.name: f.default for f in fields(CyCADAConfig)}
    options = {**defaults, **{k: v for k, v in options.items() if k in defaults}}
    scale = options["scale"] if options["scale"] in SCALES else "gpu"
    preset = {**defaults, **CYCADA_PRESETS[scale]}
    if any(options[k] is None and preset[k] is not None for k in options):  # None has no option
        scale, preset = "gpu", {**defaults, **CYCADA_PRESETS["gpu"]}
    words = ["cyclelib", "train", "cycada", "--source", options["source"], "--target", options["target"],
             "--out", str(options["out"]), "--scale", scale]
    for name, value in options.items():
        if name not in ("source", "target", "out", "scale") and value != preset[name]:
            flag = name.replace("_", "-")
            words += [f"--{'' if value else 'no-'}{flag}"] if isinstance(value, bool) else [f"--{flag}", str(value)]
    return shlex.join([*words, "--stages", ",".join(stages)])
