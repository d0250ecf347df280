"""Every option of a run, declared once, as dataclasses with the papers' defaults, and the scale presets.

:class:`CycleGANConfig` holds a CycleGAN run (Zhu et al. 2017, the official code's options),
:class:`CyCADAConfig` a CyCADA run, of digits or per pixel (Hoffman et al. 2018: the paper's form, with the
release's settings where the paper gives none; the options that select the release's form say so).
Each field carries what else is known of its option as ``dataclasses.field`` metadata: ``help``
(one line), ``choices`` (the names it takes, from :mod:`cyclelib.names`), for CycleGAN
``on_resume`` ("apply", or "refuse" and ``why``) and ``official`` (the official code's name of
the same option), for CyCADA ``shapes`` (which stages' results it changes) and ``cyclegan``
(the pixel stage's CycleGAN options it sets), and ``renamed_from`` (the option's former names, still
accepted: as keywords, on the command line, in checkpoints). The command line's flags and help, the resume
rules and the CyCADA stage options are computed from them. Each config checks every option
when it is built, so a bad value fails before any training, with a message naming the option.
``for_scale`` applies a scale's preset (:mod:`cyclelib.presets`); options given explicitly win over it. This module
imports no torch: the checks that build networks are in :mod:`cyclelib.checks`. It is a little over 450 lines
because every option is declared here once, with its help and checks, and the two configs share the field
helpers and checks; a module per config would split those.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import MISSING, Field, InitVar, dataclass, field, fields

from .names import (AMP_MODES, DIRECTIONS, DOMAINS, DISCRIMINATORS, FEATURE_STARTS, GAN_MODES, SEMANTIC_TARGETS, GENERATORS,
                    IMPLEMENTATIONS, INIT_TYPES, LR_POLICIES, NOISE_INJECTIONS, NORMS, OPTIMIZERS, PREPROCESS_MODES,
                    SEMANTIC_JUDGES, TASK_NETWORKS, TASKS, Registry, check_crop, check_crop_domain, classifier_name,
                    is_labelled_pair, stage_weights, task_mismatch, translated_mismatch)
from .presets import CYCADA_FORMS, cycada_preset, cyclegan_preset

# Seeds are 0 <= seed < SEED_LIMIT: data.EpochSampler seeds torch with seed * 100_003 + epoch, which
# must stay below 2**64 (torch's largest seed).
SEED_LIMIT = 2**32


def choices(option: Field) -> tuple[str, ...] | Registry | None:
    """The names ``option`` takes (metadata ``choices``: a tuple, a registry of architectures, or a
    function giving the names of the moment, for a registry with more names), None if any value."""
    valid = option.metadata.get("choices")
    return valid() if callable(valid) else valid


def _check_common(config) -> None:
    """Every number finite (NaN passes any comparison, and inf is no weight or rate), the seed in
    range, and each option that takes names one of them (field metadata ``choices``)."""
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{f.name} must be a finite number, got {value}")
        valid = choices(f)
        if isinstance(valid, tuple) and value not in valid:  # a registry's names are checked by building one
            raise ValueError(f"unknown {f.name} {value!r}; valid values: {', '.join(valid)}")
    if not 0 <= config.seed < SEED_LIMIT:
        raise ValueError(f"seed must be an integer in [0, {SEED_LIMIT}), got {config.seed}")


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


# What a resumed run does with an option given another value than the run's (metadata "on_resume",
# read by train_cyclegan and the CLI). "apply": the run goes on with the new value from the step it
# resumes at, and its checkpoints record it. "refuse": the option is fixed for the run's life, and
# "why" says why; resuming with another value is an error naming it.
_NETWORK = "it shapes the networks, whose trained weights the run holds"
_INIT = "it chose the initial weights, which the run has trained past"
_DATA = "it decides the training images and their order (the run's position in its epoch)"
_OBJECTIVE = "it changes the loss, which the history and the best checkpoint compare over the whole run"
_POOL = "it sizes the image pools, which hold the run's last fakes"


def _option(default, help: str, fixed: str | None = None, **metadata) -> Field:
    """A CycleGAN option: applied on resume, or ``fixed`` (refused) with that reason."""
    rule = {"on_resume": "refuse", "why": fixed} if fixed else {"on_resume": "apply"}
    return field(default=default, metadata={"help": help, **rule, **metadata})


@dataclass
class CycleGANConfig:
    """Every option of a CycleGAN run; the defaults are the official ones (the paper's setting)."""

    data: str = _option("", "a folder with trainA/ and trainB/, or a digit pair such as mnist5k:mnistm5k", _DATA,
                        required="required, except with --resume", official=("dataroot",))
    out: str = _option("runs/cyclegan", "the run folder: checkpoints, samples, history")
    # networks
    netG: str = _option("resnet_9blocks", "the generator", _NETWORK, choices=GENERATORS, official=("netG",))
    netD: str = _option("basic", "the discriminator: basic (70x70 PatchGAN), n_layers (PatchGAN of n_layers_D), "
                        "pixel (1x1)", _NETWORK, choices=lambda: tuple(DISCRIMINATORS.families), official=("netD",))
    ngf: int = _option(64, "generator width (filters of its first conv)", _NETWORK, official=("ngf",))
    ndf: int = _option(64, "discriminator width (filters of its first conv)", _NETWORK, official=("ndf",))
    n_layers_D: int = _option(3, "stride-2 layers of the n_layers discriminator", _NETWORK, official=("n_layers_D",))
    norm: str = _option("instance", "normalisation layers of G and D; syncbatch: batch norm with statistics shared "
                        "by the GPUs of a torchrun job, where batch is refused (one process: plain batch)", _NETWORK,
                        choices=NORMS, official=("norm",))
    dropout: bool = _option(False, "dropout in the generator's blocks", _NETWORK, official=("no_dropout",))
    init: str = _option("normal", "initial weights", _INIT, choices=INIT_TYPES, official=("init_type",))
    init_gain: float = _option(0.02, "scale of the normal, xavier and orthogonal init", _INIT,
                               official=("init_gain",))
    input_nc: int = _option(3, "image channels of domain A: 3 (RGB) or 1 (grey)", _NETWORK, official=("input_nc",))
    output_nc: int = _option(3, "image channels of domain B: 3 (RGB) or 1 (grey); another than input_nc needs "
                             "lambda_identity 0", _NETWORK, official=("output_nc",))
    noise_nc: int = _option(0, "beyond the paper: noise inputs of G_A (0: off)", _NETWORK)
    noise_injection: str = _option("constant", "how the noise enters G_A: constant channels or modulated image "
                                   "copies", _NETWORK, choices=NOISE_INJECTIONS)
    # losses
    gan_mode: str = _option("lsgan", "the adversarial loss", _OBJECTIVE, choices=GAN_MODES, official=("gan_mode",))
    lambda_A: float = _option(10.0, "weight of the cycle loss A -> B -> A", _OBJECTIVE, official=("lambda_A",))
    lambda_B: float = _option(10.0, "weight of the cycle loss B -> A -> B", _OBJECTIVE, official=("lambda_B",))
    lambda_identity: float = _option(0.5, "identity loss, times lambda_A / lambda_B (0: off)", _OBJECTIVE,
                                     official=("lambda_identity",))
    lambda_gan_A: float = _option(1.0, "weight of G_A's adversarial loss (the CyCADA release's "
                                  "pixel stage uses 2)", _OBJECTIVE)
    lambda_gan_B: float = _option(1.0, "weight of G_B's adversarial loss", _OBJECTIVE)
    lambda_gp: float = _option(10.0, "gradient penalty weight, gan_mode wgangp only", _OBJECTIVE)
    lambda_mode_seeking: float = _option(0.0, "beyond the paper: mode seeking on G_A's noise (needs noise_nc > 0)",
                                         _OBJECTIVE)
    # optimisation
    lr: float = _option(2e-4, "initial learning rate of Adam", official=("lr",))
    beta1: float = _option(0.5, "Adam's beta1", official=("beta1",))
    beta2: float = _option(0.999, "Adam's beta2")
    batch_size: int = _option(1, "images per step (per process under torchrun)", _DATA, official=("batch_size",))
    n_epochs: int = _option(100, "epochs at the initial learning rate", official=("n_epochs", "niter"))
    n_epochs_decay: int = _option(100, "epochs of linear decay to zero", official=("n_epochs_decay", "niter_decay"))
    # The learning-rate schedule is a function of the epoch (and, for plateau, of the epochs' cycle losses,
    # which checkpoints keep): changed at a resume, it applies as if the run had had it from the start.
    lr_policy: str = _option("linear", "the learning-rate schedule, stepped after every epoch as the official "
                             "code's: linear (constant for n_epochs, then to zero over n_epochs_decay), step (x0.1 "
                             "every lr_decay_iters epochs), plateau (x0.2 after 6 epochs without a 1% lower mean cycle "
                             "loss cycle_A + cycle_B), cosine (to zero over n_epochs, then back up)",
                             choices=LR_POLICIES, official=("lr_policy",))
    lr_decay_iters: int = _option(50, "epochs between the step policy's decays", official=("lr_decay_iters",))
    threads: int | None = _option(None, "CPU threads of torch (torch.set_num_threads)",
                                  none="torch's, at most the physical cores this process may use")
    pool_size: int = _option(50, "fakes kept to train D on (0: none)", _POOL, official=("pool_size",))
    max_steps: int | None = _option(None, "stop after this many steps in total; at most the steps of the epochs "
                                    "(n_epochs + n_epochs_decay), since the learning-rate schedule counts "
                                    "epochs: a larger value is refused", none="all the epochs' steps")
    clip_grad_norm: float | None = _option(None, "clip each optimizer's gradient norm to this", none="off")
    # data
    preprocess: str = _option("resize_and_crop", "how images are scaled and cropped at load time", _DATA,
                              choices=PREPROCESS_MODES, official=("preprocess",))
    load_size: int = _option(286, "resize images to this size", _DATA, official=("load_size",))
    crop_size: int = _option(256, "then crop to this size", _DATA, official=("crop_size",))
    flip: bool = _option(True, "random horizontal flips", _DATA, official=("no_flip",))
    max_dataset_size: int | None = _option(None, "samples per epoch, drawn anew each epoch", _DATA, none="all")
    # direction and serial_batches: the official options/base_options.py lines 42-43 at commit 48ced5e (their
    # effect: cyclelib.data.open_unpaired and EpochSampler)
    direction: str = _option("AtoB", "which folder or digit domain is A: BtoA trains G_A on B -> A (trainB is read "
                             "as A, trainA as B)", _DATA, choices=DIRECTIONS, official=("direction",))
    serial_batches: bool = _option(False, "each epoch in order (files by name, digits by class), A item i with B "
                                   "item i mod |B|, instead of a seeded shuffle and random B partners", _DATA,
                                   official=("serial_batches",))
    num_workers: int = _option(2, "data loading processes", official=("num_threads",))
    skip_bad_images: bool = _option(False, "skip unreadable images instead of stopping at the first")
    # run
    seed: int = _option(0, "seed of the weights, the data order and every draw", _DATA)
    device: str | None = _option(None, "e.g. cpu, cuda, cuda:1", none="CUDA when present, else the CPU")
    implementation: str = _option("fast", "how the training step runs: fast (same losses, batched calls, fused "
                                  "Adam, bf16 on CUDA) or reference (the official fp32 eager step)", choices=IMPLEMENTATIONS,
                                  renamed_from=("path",))
    amp: str = _option("auto", "precision of the fast path: auto is bf16 where native (CUDA, AVX512-BF16/AMX "
                       "CPUs), else fp32", choices=AMP_MODES)
    compile: bool = _option(False, "torch.compile the four networks (fast path; the first steps compile)")
    log_every: int = _option(50, "steps between loss-history rows")
    sample_every: int = _option(500, "steps between sample grids")
    checkpoint_every: int = _option(1000, "steps between checkpoints (one is always written at the end)")
    keep_checkpoints: int = _option(3, "step checkpoints kept (besides latest and best)")
    # watching (cyclelib.watch; the packages: pip install 'cyclelib[log]')
    tensorboard: bool = _option(False, "log losses, learning rates and samples into out/tensorboard")
    wandb: bool = _option(False, "log them, and the options, to Weights & Biases", official=("use_wandb",))
    wandb_project: str = _option("cyclelib", "the W&B project", official=("wandb_project_name",))
    # implementation's former name, still accepted as a keyword (deprecated): not a field, so not recorded
    path: InitVar[str | None] = None

    def __post_init__(self, path: str | None = None):
        if path is not None:
            warnings.warn("CycleGANConfig(path=...) is now implementation=...", DeprecationWarning, stacklevel=3)
            self.implementation = path
        _check_common(self)
        _check_signs(self, non_negative=("lambda_A", "lambda_B", "lambda_identity", "lambda_gan_A",
                                         "lambda_gan_B", "lambda_gp", "pool_size", "n_epochs_decay",
                                         "init_gain", "num_workers", "clip_grad_norm", "noise_nc",
                                         "lambda_mode_seeking"),
                     positive=("lr", "batch_size", "n_epochs", "load_size", "crop_size", "log_every",
                               "sample_every", "checkpoint_every", "keep_checkpoints", "ngf", "ndf",
                               "n_layers_D", "input_nc", "output_nc", "max_steps", "max_dataset_size", "lr_decay_iters",
                               "threads"))
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.implementation == "reference" and (self.compile or self.amp not in ("auto", "none")):
            raise ValueError(f"implementation 'reference' is the official fp32 eager step: it takes neither compile "
                             f"nor amp {self.amp!r}; use implementation 'fast' for them")
        check_crop(self.preprocess, self.load_size, self.crop_size)
        if self.lambda_identity > 0 and self.input_nc != self.output_nc:
            # The official code asserts the same (models/cycle_gan_model.py lines 85-86 at 48ced5e).
            raise ValueError(f"the identity loss compares G_A(b) with b and G_B(a) with a, so it needs input_nc == "
                             f"output_nc (got {self.input_nc} and {self.output_nc}); set lambda_identity 0 "
                             f"(--lambda-identity 0) to train between {self.input_nc} and {self.output_nc} channels")
        if self.lambda_mode_seeking > 0 and not self.noise_nc:
            raise ValueError("lambda_mode_seeking needs a generator that takes noise: set noise_nc > 0")
        # Cropped training images are crop_size x crop_size; other sizes are checked per file (data.Unpaired.check).
        cropped = self.preprocess in ("resize_and_crop", "crop", "scale_width_and_crop") or is_labelled_pair(self.data)
        from .checks import check_networks  # builds networks: torch is imported when a config is, not before
        check_networks(self, "crop_size", self.crop_size if cropped else None, self.batch_size, self.input_nc)

    @classmethod
    def for_scale(cls, scale: str | None = None, **options) -> "CycleGANConfig":
        """The config of a scale (smoke / cpu / colab / gpu, see :func:`resolve_scale`); ``options`` win."""
        return cls(**{**cyclegan_preset(scale, options.get("data", "")), **options})


# Renamed CycleGAN options: former name -> name (field metadata "renamed_from").
RENAMED = {old: f.name for f in fields(CycleGANConfig) for old in f.metadata.get("renamed_from", ())}


def recorded_options(record: Mapping[str, object]) -> dict:
    """The CycleGAN options of ``record`` (a checkpoint's ``config``, a ``config.json``), under today's
    names: an option recorded under a former name (:data:`RENAMED`) comes back under its name, one
    this cyclelib does not know (e.g. of a newer version) is left out."""
    known = {f.name for f in fields(CycleGANConfig)}
    options = {RENAMED.get(name, name): value for name, value in record.items() if name not in known}
    return {name: value for name, value in {**options, **record}.items() if name in known}


# CyCADA options, tagged by the results they change (metadata "shapes"): "every" stage's (every stage starts from
# f_S or is a classifier stage), the "pixel" stage's and those built on it, the "feature" stages', the
# "pixel_feature" stage's alone (the feature stage, on translated source), the "translated" stages' (pixel_only and
# feature), or none (where a run writes, on what it runs, logs, evaluates); "weights": the files stages are made of.
def _stage(default, help: str, shapes: str | None, **metadata) -> Field:
    return field(default=default, metadata={"help": help, "shapes": shapes, **metadata})


def _pixel(name: str, default=MISSING, shapes: str | None = "pixel", of_pixel_stage: bool | None = None) -> Field:
    """An option of the pixel stage: CycleGANConfig's option ``name`` under a CyCADA name, with its help and
    choices, and its default unless CyCADA's (the release's) differs; its help says "pixel stage" when it is
    ``of_pixel_stage`` (default: where it shapes the pixel stage only)."""
    option = CycleGANConfig.__dataclass_fields__[name]
    default = option.default if default is MISSING else default
    of_pixel_stage = shapes == "pixel" if of_pixel_stage is None else of_pixel_stage
    help = f"pixel stage: {option.metadata['help']}" if of_pixel_stage else option.metadata["help"]
    return _stage(default, help, shapes, cyclegan=(name,), choices=option.metadata.get("choices"),
                  none=option.metadata.get("none"))


@dataclass
class CyCADAConfig:
    """Every option of a CyCADA run; the defaults are the paper's form (its equations) with the
    release's digit settings (networks, learning rates, batch sizes, epochs, ``lambda_gan_A`` 2).

    Where the release's form departs from the paper's, the default is the paper's and an option
    selects the release's (jhoffman/cycada_release at commit 2fbf16b): ``feature_start``,
    ``lambda_task`` 0 and ``feature_gate`` for stage 3 (``cycada/tools/train_adda_net.py``)."""

    source: str = _stage("mnist", "the labelled source domain", "every", choices=DOMAINS, required="required")
    target: str = _stage("usps", "the target domain (its labels are used by the oracle and the evaluation only; "
                         "a folder may have none)", "every", choices=DOMAINS, required="required")
    out: str = _stage("runs/cycada", "the run folder: out/<stage>/checkpoint.pt, metrics.json, figures", None)
    task: str = _stage("classification", "classification (digits, folders) or segmentation (per pixel: digit scenes, "
                       "gta5:PATH, cityscapes:PATH; scale presets: presets.SEGMENTATION_PRESETS)", "every", choices=TASKS)
    classifier: str = _stage("auto", "the task network; auto: dtn when a domain is in colour, else lenet; small_fcn "
                             "for segmentation", "every",
                             choices=lambda: ("auto", *TASK_NETWORKS.families))
    image_size: int = _stage(32, "both domains are read as RGB images of this side (driving scenes: their shorter "
                             "side, cropped to a square)", "every", cyclegan=("load_size", "crop_size"))
    crop_size: int | None = _stage(None, "driving scenes: the side of the random square crop, randomly flipped, "
                                   "the classifier and feature stages train on (the release: 768 of 1024); refused "
                                   "for other domains", "every", none="image_size, unflipped")
    pixel_crop_size: int | None = _stage(None, "driving scenes: the side of the random square crop, randomly flipped, "
                                         "the pixel stage's CycleGAN trains on (CycleGAN's crop_size, of scenes read "
                                         "at image_size; the gpu preset: 400); refused for other domains", "pixel",
                                         none="image_size squares, unflipped")
    max_samples: int | None = _stage(None, "training images per epoch, in every stage", "every",
                                     cyclegan=("max_dataset_size",), none="all")
    max_eval_samples: int | None = _stage(None, "test images per evaluation", None, none="all")
    invert_source: float = _stage(0.0, "beyond the paper: share of source images f_S sees negated", "every")
    # stages source, oracle, pixel_only: the classifier loop (release: Adam 1e-4, batch 128, 100 epochs)
    task_optimizer: str = _stage("adam", "classifier stages: adam, or sgd (momentum 0.99, weight decay 5e-4: "
                                 "the segmentation release's)", "every", choices=OPTIMIZERS)
    task_lr: float = _stage(1e-4, "classifier stages: learning rate", "every")
    task_batch_size: int = _stage(128, "classifier stages: images per step", "every")
    task_epochs: int = _stage(100, "classifier stages: epochs", "every")
    # stage pixel: CycleGAN + semantic consistency (release: resnet_9blocks, PatchGAN, LSGAN, batch 100)
    netG: str = _pixel("netG")
    ngf: int = _pixel("ngf")
    netD: str = _pixel("netD")
    ndf: int = _pixel("ndf")
    n_layers_D: int = _pixel("n_layers_D")
    norm: str = _pixel("norm")
    noise_nc: int = _pixel("noise_nc")
    noise_injection: str = _pixel("noise_injection")
    gan_mode: str = _pixel("gan_mode")
    lambda_gan_A: float = _pixel("lambda_gan_A", 2.0)
    lambda_gan_B: float = _pixel("lambda_gan_B")
    lambda_cycle_A: float = _pixel("lambda_A", 1.0)
    lambda_cycle_B: float = _pixel("lambda_B", 1.0)
    lambda_identity: float = _pixel("lambda_identity", 0.0)
    lambda_sem_A: float = _stage(1.0, "pixel stage: semantic loss of G_{S->T}, judged by f_S", "pixel")
    lambda_sem_B: float = _stage(1.0, "pixel stage: semantic loss of G_{T->S}, judged by f_S", "pixel")
    lambda_mode_seeking: float = _pixel("lambda_mode_seeking")
    semantic_judge: str = _stage("source", "pixel stage: the classifier of the semantic loss: f_S, frozen (the "
                                 "paper), online (a fresh one trained alongside on real source with its labels, "
                                 "Adam 1e-3: the release) or, beyond both, feature_only's f_T", "pixel", choices=SEMANTIC_JUDGES)
    # The release's semantic terms (jhoffman/cycada_release at 2fbf16b, cyclegan/models/cycle_gan_semantic_model.py):
    # S->T asks for the true source labels (line 164; the argmax, line 165, is commented out), and both terms are
    # multiplied by 0 while the classifier's loss is above 1.0 (lines 171-173).
    semantic_target: str = _stage("argmax", "pixel stage: what the S->T semantic loss asks the judge to read in "
                                  "G_{S->T}(x_s): its argmax on x_s (the paper) or x_s's true label (the release)",
                                  "pixel", choices=SEMANTIC_TARGETS)
    semantic_gate: float | None = _stage(None, "pixel stage: both semantic terms count 0 on batches where the judge's "
                                         "loss on the real source images (true labels) is above this (the release: "
                                         "1.0)", "pixel", none="off (the paper)")
    pixel_lr: float = _pixel("lr")
    pixel_beta1: float = _pixel("beta1")
    pixel_batch_size: int = _pixel("batch_size", 100)
    pool_size: int = _pixel("pool_size")
    pixel_epochs: int = _pixel("n_epochs")
    pixel_epochs_decay: int = _pixel("n_epochs_decay")
    # stages feature, feature_only (release ADDA: Adam 1e-5 for f_T and D_feat, batch 128, 200 epochs:
    # jhoffman/cycada_release at 2fbf16b, scripts/train_adda.py lines 40 and 46-47)
    feature_optimizer: str = _stage("adam", "feature stages: the optimiser of f_T and D_feat, as task_optimizer",
                                    "feature", choices=OPTIMIZERS)
    feature_lr: float = _stage(1e-5, "feature stages: learning rate (f_T and D_feat)", "feature")
    feature_batch_size: int = _stage(128, "feature stages: images per step", "feature")
    feature_epochs: int = _stage(200, "feature stages: epochs", "feature")
    # The paper's objective has the task term; the release's ADDA step has none (train_adda_net.py lines 81-104):
    # lambda_task 0 is the release's.
    lambda_task: float = _stage(1.0, "feature stages: weight of f_T's task loss on translated source (the paper; "
                                "0: off, the release)", "feature")
    lambda_feature: float = _stage(1.0, "feature stages: weight of f_T's feature GAN loss", "feature")
    d_feat_width: int | None = _stage(None, "feature stages: width of D_feat's hidden layers", "feature",
                                      none="the release's: 500 (digits), 512 (segmentation's score discriminator)")
    feature_start: str = _stage("source", "feature stage: the classifier that f_T starts from and D_feat reads "
                                "(translated) source through: source (f_S, the paper) or pixel_only (trained on "
                                "translated source, the release)", "pixel_feature", choices=FEATURE_STARTS)
    feature_gate: float | None = _stage(None, "feature stages: update f_T only on batches where D_feat's accuracy "
                                        "is above this (the release: 0.6)", "feature", none="off, every batch (the "
                                        "paper)")
    # Tagged "weights": not compared as a value, but as the SHA-256 of the files of the stage and of those it
    # builds on, which each stage records (cycada._stage_meta).
    stage_weights: tuple[str, ...] | None = _stage(
        None, "segmentation: the stages made of a published network instead of trained, STAGE=FILE each: the "
        "CyCADA release's DRN-26 files (cyclelib download drn26-gta5 / drn26-cyclegta5 / drn26-cycada) as "
        "source, pixel_only and feature; a stage built on one of them starts from it (the release's feature "
        "stage: --feature-start pixel_only with pixel_only=drn26-cyclegta5-iter115000.pth)", "weights",
        metavar="STAGE=FILE", none="none, every stage is trained")
    translated_source: str | None = _stage(
        None, "segmentation: the source's train split already translated to look like the target, a labelled domain "
        "of the source's kind (the CyCADA release's: gta5:DIR/cyclegta5, cyclelib download cyclegta5), which the "
        "pixel_only and feature stages read instead of the pixel stage's translation: they then need no pixel stage",
        "translated", none="the pixel stage's translation of the source")
    # run
    scale: str = _stage("custom", "the preset this config came from (for_scale sets it)", None)
    seed: int = _pixel("seed", shapes="every")
    device: str | None = _pixel("device", shapes=None)
    amp: str = _pixel("amp", shapes="every")
    num_workers: int = _pixel("num_workers", 0, shapes=None)
    log_every: int = _pixel("log_every", shapes=None)
    sample_every: int = _pixel("sample_every", shapes=None)
    checkpoint_every: int = _pixel("checkpoint_every", shapes=None)
    # the pixel stage's loggers (in out/pixel/); the classifier stages keep their history in their checkpoints
    tensorboard: bool = _pixel("tensorboard", shapes=None, of_pixel_stage=True)
    wandb: bool = _pixel("wandb", shapes=None, of_pixel_stage=True)
    wandb_project: str = _pixel("wandb_project", shapes=None, of_pixel_stage=True)

    def __post_init__(self):
        _check_common(self)
        _check_signs(self, non_negative=[*(f.name for f in fields(self) if f.name.startswith("lambda_")),
                                         "pool_size", "pixel_epochs_decay", "num_workers", "noise_nc",
                                         "semantic_gate"],
                     positive=("image_size", "task_lr", "task_batch_size", "task_epochs", "ngf", "ndf", "n_layers_D",
                               "pixel_lr", "pixel_batch_size", "pixel_epochs", "feature_lr", "feature_batch_size",
                               "feature_epochs", "log_every", "sample_every", "checkpoint_every", "max_samples", "d_feat_width",
                               "max_eval_samples", "crop_size", "pixel_crop_size"))
        for name in ("source", "target"):
            if getattr(self, name) not in DOMAINS:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; valid values: {DOMAINS.help()}")
        if problem := task_mismatch(self.task, self.source, self.target, classifier_name(self)):
            raise ValueError(problem)
        if problem := translated_mismatch(self.task, self.source, self.translated_source):
            raise ValueError(problem)
        if self.stage_weights is not None:
            self.stage_weights = tuple(self.stage_weights)  # a list from the command line or a JSON record
            stage_weights(self.stage_weights, self.task, classifier_name(self))
        for option in ("crop_size", "pixel_crop_size"):
            crop = getattr(self, option)
            for name in (self.source, self.target):
                check_crop_domain(name, crop, option)
            if (crop or 0) > self.image_size:
                raise ValueError(f"{option} ({crop}) must not exceed image_size ({self.image_size}), the shorter side "
                                 f"of the scenes it is cropped from")
        if not 0 <= self.pixel_beta1 < 1:
            raise ValueError(f"pixel_beta1 must be in [0, 1), got {self.pixel_beta1}")
        if self.feature_gate is not None and not 0 <= self.feature_gate < 1:
            raise ValueError(f"feature_gate must be in [0, 1) (an accuracy; at 1 f_T would never learn), "
                             f"got {self.feature_gate}")
        if not 0 <= self.invert_source <= 1:
            raise ValueError(f"invert_source must be in [0, 1] (a share of the images), got {self.invert_source}")
        if classifier_name(self) == "dtn":
            for name in ("task_batch_size", "max_samples"):
                if getattr(self, name) == 1:
                    resolved = " (auto: a domain is in colour)" if self.classifier == "auto" else ""
                    raise ValueError(f"{name} 1 gives batches of one image, on which the dtn classifier{resolved} "
                                     f"cannot train (BatchNorm needs two or more); use {name} 2 or more, or "
                                     f"classifier lenet")
        for option in ("image_size", "pixel_crop_size"):  # the sides the generators read
            if (getattr(self, option) or 0) % 4:
                raise ValueError(f"{option} must be a multiple of 4 (the generator downsamples twice), "
                                 f"got {getattr(self, option)}")
        from .checks import check_networks  # builds networks: torch is imported when a config is, not before
        for option in ("image_size", "pixel_crop_size"):
            check_networks(self, option, getattr(self, option), self.pixel_batch_size, 3)
        self.pixel_config("")  # every option of the pixel stage, checked as CycleGAN checks it

    @classmethod
    def for_scale(cls, scale: str | None = None, form: str = "paper", **options) -> "CyCADAConfig":
        """The config of a scale (smoke / cpu / colab / gpu, see :func:`resolve_scale`) in a ``form``
        (:data:`~cyclelib.presets.CYCADA_FORMS`: ``paper``, the defaults, or ``release``, the
        release's choices where it departs from the paper, per task); ``options`` win over both."""
        from .runtime import resolve_scale  # asks torch for CUDA when no scale is given
        if form not in CYCADA_FORMS:
            raise ValueError(f"unknown form {form!r}; valid values: {', '.join(CYCADA_FORMS)}")
        scale = resolve_scale(scale)
        preset = cycada_preset(scale, options.get("task"), options.get("source"))
        form_options = CYCADA_FORMS[form].get(options.get("task", "classification"), {})  # a bad task: refused below
        return cls(**{**preset, **form_options, "scale": scale, **options})

    def pixel_config(self, out: str) -> CycleGANConfig:
        """The CycleGAN options of the pixel stage, writing to ``out``: each option tagged
        ``cyclegan`` under its CycleGAN name, source as domain A and target as domain B, both RGB
        digits as they are (no resize, crop or flip). Driving scenes are read at a shorter side of ``image_size``
        (CycleGAN's ``load_size``) and, with ``pixel_crop_size``, cropped to random, flipped squares of that side
        (its ``crop_size`` and ``flip``: :func:`~cyclelib.cyclegan_run.train_cyclegan`). The identity weight
        multiplies the cycle weights, as in CycleGAN (and the CyCADA release, which is built on its code)."""
        options = {name: getattr(self, f.name) for f in fields(self) for name in f.metadata.get("cyclegan", ())}
        if self.pixel_crop_size is not None:
            options.update(crop_size=self.pixel_crop_size)
        return CycleGANConfig(**options, data=f"{self.source}:{self.target}", out=out, input_nc=3, output_nc=3,
                              preprocess="none", flip=self.pixel_crop_size is not None)


def stage_option_names(*shapes: str | None) -> tuple[str, ...]:
    """The CyCADA options tagged with any of ``shapes`` ("every", "pixel", "feature", "pixel_feature",
    "translated", "weights", or None: none)."""
    return tuple(f.name for f in fields(CyCADAConfig) if f.metadata["shapes"] in shapes)
