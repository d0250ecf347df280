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

Over 450 lines: the stages and their bookkeeping (reuse checks, hints) sit with the evaluation
and the book's result helpers; the house-in-order issue splits evaluation (``evaluate_run`` and
its figures) into a module of its own, not done yet.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import Iterable

import torch
from torch import nn
from torch.utils.data import Dataset

from . import distributed, files, io, losses
from .classifiers import FeatureAlignment, TaskClassifier, build_task_network, freeze
from .config import CYCADA_PRESETS, CyCADAConfig, classifier_name, cycada_command
from .cyclegan import CycleGAN
from .cyclegan import GeneratorTerms
from .data import DigitDomain, RandomlyInverted, Unpaired, digit_domain
from .metrics import (accuracy, confusion_matrix, dark_digits, label_preservation, noise_effect, per_class_accuracy,
                      predict, translate_dataset)
from .plots import plot_confusion_matrix, plot_histories, save_image_grid
from .runtime import Precision, amp_dtype, pick_device, seed_everything
from .train import Trainer, train_cyclegan
from .watch import describe_options

# Stages in the order they run, what each needs first, and the result it stands for.
STAGES = ("source", "feature_only", "pixel", "pixel_only", "feature", "oracle")
NEEDS = {"source": (), "feature_only": ("source",), "pixel": ("source",), "pixel_only": ("pixel",),
         "feature": ("source", "pixel"), "oracle": ()}
RESULTS = {"source": "source_only", "pixel_only": "pixel_only", "feature_only": "feature_only",
           "feature": "pixel_feature", "oracle": "target_oracle"}

# The options of CyCADAConfig that change each stage's result, its own and those of the stages it
# builds on: a stage's checkpoint is reused (skipped, resumed, loaded, evaluated) only if they match.
# every stage starts from f_S or is a classifier stage:
_SHARED = ("source", "target", "classifier", "image_size", "max_samples", "seed", "amp", "task_lr",
           "task_batch_size", "task_epochs", "invert_source")
# (amp is compared as the precision it picked, recorded with the stage: see _stage_meta)
_PIXEL = ("netG", "ngf", "netD", "ndf", "n_layers_D", "norm", "noise_nc", "noise_injection", "gan_mode",
          "lambda_gan_A", "lambda_gan_B", "lambda_cycle_A", "lambda_cycle_B", "lambda_identity", "lambda_sem_A",
          "lambda_sem_B", "semantic_judge", "lambda_mode_seeking",
          "pixel_lr", "pixel_beta1", "pixel_batch_size", "pool_size", "pixel_epochs", "pixel_epochs_decay")
_FEATURE = ("feature_lr", "feature_batch_size", "feature_epochs", "lambda_task", "lambda_feature")
STAGE_OPTIONS = {"source": _SHARED, "oracle": _SHARED, "pixel": _SHARED + _PIXEL, "pixel_only": _SHARED + _PIXEL,
                 "feature_only": _SHARED + _FEATURE, "feature": _SHARED + _PIXEL + _FEATURE}
_DEFAULTS = {f.name: f.default for f in fields(CyCADAConfig)}
# The options that change no result: where a run writes, on what it runs, what it logs and evaluates.
NEUTRAL_OPTIONS = ("out", "scale", "device", "num_workers", "log_every", "sample_every", "checkpoint_every",
                   "max_eval_samples")


# --------------------------------------------------------------------------------------
# Task networks and data
# --------------------------------------------------------------------------------------

def load_domain(config: CyCADAConfig, name: str, split: str) -> DigitDomain:
    """Digit domain ``name`` as ``(image [3, image_size, image_size] in [-1, 1], label)`` pairs."""
    return digit_domain(name, split, size=config.image_size, channels=3)


def _eval_subset(dataset, config: CyCADAConfig):
    """At most ``max_eval_samples`` test images, a fixed random subset (test splits may be sorted)."""
    n = config.max_eval_samples
    if not n or n >= len(dataset):
        return dataset
    keep = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    return torch.utils.data.Subset(dataset, keep.tolist())


# --------------------------------------------------------------------------------------
# Stage bookkeeping
# --------------------------------------------------------------------------------------

def stage_path(config: CyCADAConfig, stage: str) -> Path:
    """Where ``stage`` keeps its latest checkpoint: ``out/<stage>/checkpoint.pt`` (the stage
    folder is a run folder, see :mod:`cyclelib.io`)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}")
    return Path(config.out) / stage / io.LATEST


def _complete(ckpt: dict) -> bool:
    """Whether a checkpoint holds a finished run (one without training state is a final one)."""
    t = ckpt.get("training")
    return t is None or (t.get("total_steps") is not None and t["step"] >= t["total_steps"])


def stage_checkpoint(config: CyCADAConfig, stage: str) -> dict | None:
    """The checkpoint of ``stage`` in ``config.out``, None when there is none.

    It is the newest readable one, picked as for any run folder
    (:func:`~cyclelib.io.load_run_checkpoint`: a corrupt ``checkpoint.pt`` falls back to the
    step files, with a warning). One trained with other options for the stage
    (:data:`STAGE_OPTIONS`: another pair of domains, network, seed, ...) is a ``ValueError``
    that names each option that differs: reusing it would give results that belong to another
    configuration.
    """
    folder = stage_path(config, stage).parent
    if io.run_in(folder) is None:
        return None
    ckpt, path = io.load_run_checkpoint(folder)
    recorded = ckpt["meta"].get("cycada")
    redo = (f"retrain it (--stages {stage} --force, or force=True) or use another --out")
    if recorded is None:
        raise ValueError(f"{path} does not record the options its {stage!r} stage was trained with (it was "
                         f"written by cyclelib 0.1); {redo}")
    now = _stage_meta(config, stage)
    # An option the checkpoint does not record did not exist when it was written: that code did what
    # the option's default does (every option added later defaults to the paper's behaviour).
    # The classifier is compared as the network it picked ("auto" is lenet or dtn by the domains).
    there, here = ({**options, "classifier": classifier_name(options)}
                   for options in ({**_DEFAULTS, **recorded}, now["cycada"]))
    differ = [f"{name}={there[name]!r} there, {here[name]!r} now"
              for name in stage_options(config, stage) if name != "amp" and there[name] != here[name]]
    if ckpt["meta"].get("precision", now["precision"]) != now["precision"]:  # "auto" is bf16 or fp32 by hardware
        differ.append(f"amp={recorded.get('amp')!r} ({ckpt['meta']['precision']}) there, {config.amp!r} "
                      f"({now['precision']}) now")
    if differ:
        raise ValueError(f"the {stage!r} stage in {path} was trained with other options ({'; '.join(differ)}); "
                         f"{redo}")
    return ckpt


def _stage_meta(config: CyCADAConfig, stage: str) -> dict:
    """What a stage checkpoint records of its run: the stage, every option, and the precision
    ``amp`` picked on this machine (its "auto" is bf16 or fp32 by hardware)."""
    dtype = amp_dtype(config.amp, pick_device(config.device))
    return {"stage": stage, "cycada": asdict(config), "precision": str(dtype or torch.float32).removeprefix("torch.")}


def needs(config: CyCADAConfig, stage: str) -> tuple[str, ...]:
    """The stages ``stage`` builds on: :data:`NEEDS`, and the semantic loss's judge for the pixel stage."""
    judge = (config.semantic_judge,) if stage == "pixel" and config.semantic_judge not in NEEDS[stage] else ()
    return NEEDS[stage] + judge


def stage_options(config: CyCADAConfig, stage: str) -> tuple[str, ...]:
    """:data:`STAGE_OPTIONS` of ``stage``, and the feature stage's options when the pixel
    stage's semantic judge is the feature_only classifier (and ``stage`` builds on the pixel stage)."""
    judged_by_f_t = config.semantic_judge == "feature_only" and "pixel" in (stage, *_with_needs((stage,), config))
    return STAGE_OPTIONS[stage] + (_FEATURE if judged_by_f_t and stage not in ("feature", "feature_only") else ())


def stage_finished(config: CyCADAConfig, stage: str) -> bool:
    """Whether ``stage`` has a complete checkpoint trained with this config's options (stages
    write partial ones along the way); see :func:`stage_checkpoint` for other options."""
    ckpt = stage_checkpoint(config, stage)
    return ckpt is not None and _complete(ckpt)


def load_stage(config: CyCADAConfig, stage: str, device: str | torch.device | None = None) -> nn.Module:
    """The network a finished stage saved: a classifier, or the CycleGAN for ``pixel`` (eval mode).

    A missing or unfinished checkpoint is an error that names the file and the command that
    runs the stage, one trained with other options an error that names them (see :func:`stage_checkpoint`).
    """
    ckpt = stage_checkpoint(config, stage)
    if ckpt is None or not _complete(ckpt):
        raise _not_ready(config, {stage: ckpt})
    return _network(ckpt, stage_path(config, stage), pick_device(device or config.device))


def _not_ready(config: CyCADAConfig, found: dict[str, dict | None]) -> FileNotFoundError:
    """The error for stages that must run before others can, each with its checkpoint (None:
    missing, else unfinished); it names each file and the command that runs them."""
    why = [f"{stage_path(config, s)} is missing (the {s!r} stage has not been run)" if ckpt is None else
           f"{stage_path(config, s)} holds an unfinished {s!r} stage ({ckpt['training']['step']} of "
           f"{ckpt['training']['total_steps']} steps)" for s, ckpt in found.items()]
    return FileNotFoundError(f"{'; '.join(why)}; run {'it' if len(found) == 1 else 'them'} first: "
                             f"{_run_hint(config, tuple(found))}")


def _run_hint(config: CyCADAConfig, stages: tuple[str, ...]) -> str:
    """How to run (or resume) ``stages`` with ``config``'s options, from Python and from the
    command line (:func:`~cyclelib.config.cycada_command`)."""
    return f"run_cycada(config, stages={stages!r}) or `{cycada_command(asdict(config), stages)}`"


def _network(ckpt: dict, path: Path, device: torch.device) -> nn.Module:
    """The trained network of a stage checkpoint, in eval mode on ``device``."""
    if ckpt["kind"] == "cyclegan":
        return io.cyclegan_from_checkpoint(ckpt, str(path)).to(device)
    prefix = {"classifier": "net.", "feature": "f_t."}[ckpt["kind"]]  # f_T without D_feat
    net = build_task_network(ckpt["config"]["classifier"])
    io.load_weights(net, {k[len(prefix):]: v for k, v in ckpt["nets"].items() if k.startswith(prefix)}, str(path))
    return net.to(device).eval()


def _fit_stage(config: CyCADAConfig, stage: str, model: nn.Module, dataset, inputs, batch_size: int,
               epochs: int, resume: bool, progress: bool, score: tuple[str, ...] = ()) -> None:
    """Train a classifier stage's ``model`` with the :class:`~cyclelib.train.Trainer` into ``out/<stage>/``."""
    c = config
    kind = "feature" if isinstance(model, FeatureAlignment) else "classifier"
    Trainer(model, dataset, stage_path(c, stage).parent, inputs=inputs,
            record=dict(kind=kind, config={"classifier": classifier_name(c)}, meta=_stage_meta(c, stage)),
            batch_size=batch_size, epochs=epochs, seed=c.seed, limit=c.max_samples,
            drop_last=True,  # a last batch of one image would break BatchNorm in train mode (DTN)
            num_workers=c.num_workers, log_every=c.log_every, checkpoint_every=c.checkpoint_every,
            score=score, resume_hint=_run_hint(c, (stage,)),
            overwrite=not resume,  # the caller (run_cycada) decided: continue the stage or train it afresh
            progress=progress, name=stage).fit(resume)


# --------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------

def train_classifier(config: CyCADAConfig, stage: str, dataset: Dataset, progress: bool = True,
                     resume: bool = False) -> nn.Module:
    r"""Minimise :math:`\mathcal{L}_{task}(f, X, Y)` with Adam from a fresh network; saves ``out/<stage>/``.

    The one classifier stage of CyCADA: f_S on labelled source (``source``), the oracle on
    labelled target (``oracle``) and the pixel-only classifier on translated source
    (``pixel_only``) differ only in their data. ``resume`` continues an unfinished run of the stage.
    """
    c = config
    device = pick_device(c.device)
    seed_everything(c.seed)
    net = build_task_network(classifier_name(c)).to(device).train()
    model = TaskClassifier(net, c.task_lr, Precision(c.amp, device))
    _fit_stage(c, stage, model, dataset, inputs=lambda batch: batch, batch_size=c.task_batch_size,
               epochs=c.task_epochs, resume=resume, progress=progress, score=("task",))
    return model.finish()


def train_source(config: CyCADAConfig, progress: bool = True, resume: bool = False) -> nn.Module:
    r"""Stage 1: f_S on labelled source, :math:`\min_{f_S} \mathcal{L}_{task}(f_S, X_S, Y_S)`.

    With ``invert_source`` > 0 (beyond the paper), that share of the source images is seen
    negated (:class:`~cyclelib.data.RandomlyInverted`), so that f_S, the semantic loss's judge and
    f_T's start, reads dark digits on a bright ground as well as light ones."""
    source = load_domain(config, config.source, "train")
    if config.invert_source:
        source = RandomlyInverted(source, config.invert_source, config.seed)
    return train_classifier(config, "source", source, progress, resume)


def train_oracle(config: CyCADAConfig, progress: bool = True, resume: bool = False) -> nn.Module:
    """The target oracle: the same stage on labelled target images (the only use of target labels)."""
    return train_classifier(config, "oracle", load_domain(config, config.target, "train"), progress, resume)


def train_pixel_only(config: CyCADAConfig, translator: nn.Module, progress: bool = True,
                     resume: bool = False) -> nn.Module:
    r"""Pixel-level adaptation alone: :math:`\min_f \mathcal{L}_{task}(f, G_{S\to T}(X_S), Y_S)`."""
    translated = translate_dataset(translator, load_domain(config, config.source, "train"))
    return train_classifier(config, "pixel_only", translated, progress, resume)


def semantic_consistency(config: CyCADAConfig, f_s: nn.Module) -> GeneratorTerms:
    r"""The generator terms CyCADA adds to CycleGAN, for ``CycleGAN(extra_generator_losses=...)``.

    .. math::
        \mathcal{L}_{sem} = \lambda_{sem,A}\, \mathcal{L}_{task}(f_S, G_{S\to T}(X_S), p(f_S, X_S))
            + \lambda_{sem,B}\, \mathcal{L}_{task}(f_S, G_{T\to S}(X_T), p(f_S, X_T))

    with :math:`p(f, X) = \arg\max f(X)`. ``f_s`` is frozen here (eval mode, no gradient
    to its weights): the loss may only change the generators, never move f_S towards them.
    The two terms are returned by name; the generator step sums them with CycleGAN's terms.
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

    ``f_s`` (the stage 1 classifier; with ``semantic_judge="feature_only"``, beyond the paper,
    that stage's f_T) is frozen in place. Writes ``out/pixel/`` (checkpoint, samples, history)
    through :func:`~cyclelib.train.train_cyclegan`; ``resume`` continues an unfinished run.
    Under torchrun each rank keeps its f_S on its own device, next to its generators.
    """
    f_s.to(distributed.setup(pick_device(config.device))[2])
    return train_cyclegan(config.pixel_config(str(stage_path(config, "pixel").parent)), resume=resume,
                          progress=progress, extra_generator_losses=semantic_consistency(config, f_s),
                          meta=_stage_meta(config, "pixel"), overwrite=not resume,
                          resume_hint=_run_hint(config, ("pixel",)))


def train_feature(config: CyCADAConfig, f_s: nn.Module, translator: nn.Module | None = None,
                  progress: bool = True, resume: bool = False) -> nn.Module:
    r"""Stage 3: f_T on translated source with the source labels, aligned by a feature-level GAN.

    The step is :meth:`~cyclelib.classifiers.FeatureAlignment.train_step`: f_T starts as a copy
    of f_S (which stays frozen) and minimises

    .. math::
        \lambda_{task}\, \mathcal{L}_{task}(f_T, G_{S\to T}(X_S), Y_S)
        + \lambda_{feat}\, \mathcal{L}_{GAN}(f_T, D_{feat}, f_S(G_{S\to T}(X_S)), X_T)

    ``translator=None`` trains on untranslated source: the ``feature_only`` baseline (ADDA).
    Saves ``out/feature/`` (or ``out/feature_only/``).
    """
    c = config
    stage = "feature" if translator is not None else "feature_only"
    device = pick_device(c.device)
    seed_everything(c.seed)
    f_s = freeze(f_s.to(device))
    source = load_domain(c, c.source, "train")
    if translator is not None:
        source = translate_dataset(translator.to(device), source)
    pairs = Unpaired(source, load_domain(c, c.target, "train"), seed=c.seed)
    model = FeatureAlignment(f_s, c.feature_lr, Precision(c.amp, device), c.lambda_task, c.lambda_feature)
    # Target labels stay unused: the step reads source images and labels, and target images only.
    _fit_stage(c, stage, model, pairs, inputs=lambda batch: (batch["A"], batch["A_label"], batch["B"]),
               batch_size=c.feature_batch_size, epochs=c.feature_epochs, resume=resume, progress=progress)
    return model.finish()


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
    unfinished one resumes. A stage needing an earlier one that was not asked
    for loads that one's checkpoint; before any stage runs, every such stage that is missing or
    unfinished is named, with its file and the command that runs them.
    Before any stage runs, every checkpoint that would be reused is checked against the
    config (:func:`stage_checkpoint`): one trained with other options is an error naming
    them, unless ``force`` retrains that stage. ``out`` is locked for the run.
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
    if (found := io.run_in(out)) is not None:  # run_folder would suggest train cyclegan's --resume, --overwrite
        raise io.RunFolderError(f"{out} holds a run of its own ({found.name}: a CycleGAN run, or a CyCADA stage), "
                                f"not a CyCADA run, whose stages are folders in it: choose another --out (out=...)")
    reused = {stage: None if force and stage in stages else stage_checkpoint(config, stage)
              for stage in _with_needs(stages, config)}  # checked now: no stage trains before a mismatch is found
    done = {stage for stage, ckpt in reused.items() if ckpt is not None and _complete(ckpt)}
    missing = {need for stage in set(stages) - done for need in needs(config, stage)} - done - set(stages)
    if missing:  # an earlier stage that was not asked for, and is not there to load
        raise _not_ready(config, {stage: reused[stage] for stage in STAGES if stage in missing})
    with io.run_folder(out) if writer else contextlib.nullcontext():
        if writer:
            preset = CYCADA_PRESETS.get(config.scale, {})
            origin = {name: f"scale {config.scale} preset" for name, value in preset.items()
                      if getattr(config, name) == value}
            print(describe_options(config, origin), flush=True)  # what will train, once, as a CycleGAN run says it
            files.write_json(out / "config.json", asdict(config))
        wall_times = _run_stages(config, stages, reused, progress, out / "wall_times.json", writer)
        return evaluate_run(config, wall_times) if writer else {}


def _with_needs(stages: tuple[str, ...], config: CyCADAConfig) -> tuple[str, ...]:
    """``stages`` and every stage they build on, in run order."""
    found, todo = set(), list(stages)
    while todo:
        stage = todo.pop()
        if stage not in found:
            found.add(stage)
            todo.extend(needs(config, stage))
    return tuple(s for s in STAGES if s in found)


def _run_stages(config: CyCADAConfig, stages: tuple[str, ...], reused: dict[str, dict | None], progress: bool,
                times_path: Path, writer: bool) -> dict:
    """Train ``stages`` in order, skipping complete ones and resuming unfinished ones (their
    checkpoints are ``reused``); returns the wall times of every stage run so far in ``out``."""
    nets: dict[str, nn.Module] = {}

    def need(stage: str):
        if stage not in nets:
            nets[stage] = load_stage(config, stage)
        return nets[stage]

    runners = {  # each takes resume: whether to continue the stage's unfinished checkpoint
        "source": lambda resume: train_source(config, progress, resume),
        "pixel": lambda resume: train_pixel(config, need(config.semantic_judge), progress, resume),
        "pixel_only": lambda resume: train_pixel_only(config, need("pixel").G_A, progress, resume),
        "feature_only": lambda resume: train_feature(config, need("source"), None, progress, resume),
        "feature": lambda resume: train_feature(config, need("source"), need("pixel").G_A, progress, resume),
        "oracle": lambda resume: train_oracle(config, progress, resume),
    }
    wall_times = _read_wall_times(times_path)
    for stage in stages:
        if reused[stage] is not None and _complete(reused[stage]):
            print(f"cycada: skipping {stage}: {stage_path(config, stage)} is complete (force=True retrains it)")
            continue
        start = time.perf_counter()
        nets[stage] = runners[stage](reused[stage] is not None)
        wall_times[stage] = round(time.perf_counter() - start, 1)
        if writer:
            files.write_json(times_path, wall_times)
        # e.g. a SIGTERM stopped the pixel stage early (rank 0 writes the checkpoint: only it can tell)
        if writer and not stage_finished(config, stage):
            raise RuntimeError(f"the {stage!r} stage stopped before its end; resume it: {_run_hint(config, (stage,))}")
    return wall_times


def _read_wall_times(path: Path) -> dict:
    """The wall times recorded in ``path`` by earlier stage runs ({} without the file).

    An unreadable file (empty, cut, not JSON: written in place by earlier versions of
    cyclelib on a full disk, or edited by hand) is started afresh with a warning naming it,
    not refused: it only records how long earlier stage runs took, no stage and no result
    depends on it, and no rerun could recover those times, so refusing would only make the
    user delete it by hand.
    """
    if not path.exists():  # a dangling link too: the first write replaces it
        return {}
    try:
        return files.read_json(path, "it only records how long each stage ran: started afresh, the times "
                                     "of earlier stage runs are lost", expect=dict)
    except ValueError as e:
        warnings.warn(str(e))
        return {}


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
    For mnist5k -> mnistm5k, ``dark_digits`` says how many target and translated test digits
    are darker than their background, and each result's accuracy on light and dark ones. With a
    noise input (beyond the paper), ``noise_effect`` says how much the translation moves with it.
    """
    c = config
    out = Path(c.out)
    device = pick_device(c.device)
    target_test = _eval_subset(load_domain(c, c.target, "test"), c)
    source_test = _eval_subset(load_domain(c, c.source, "test"), c)
    metrics: dict = {"source": c.source, "target": c.target, "scale": c.scale, "seed": c.seed,
                     "classifier": classifier_name(c), "test_images": {"source": len(source_test),
                                                                        "target": len(target_test)}}
    per_class, confusion, classifiers, predictions = {}, {}, {}, {}
    finished = _finished_stages(c)
    for stage, ckpt in finished.items():
        if stage not in RESULTS:
            continue
        key = RESULTS[stage]
        classifiers[stage] = _network(ckpt, stage_path(c, stage), device)
        predictions[key], labels = predict(classifiers[stage], target_test)
        metrics[key] = accuracy(predictions[key], labels)
        per_class[key] = [None if math.isnan(a) else a for a in per_class_accuracy(predictions[key], labels)]
        confusion[key] = confusion_matrix(predictions[key], labels).tolist()
        plot_confusion_matrix(confusion[key], out / "confusion" / f"{key}.png",
                              title=f"{key} on {c.target} test: {metrics[key]:.3f}")
    if "source" in classifiers:
        metrics["source_test_accuracy"] = accuracy(*predict(classifiers["source"], source_test))
    translator = _network(finished["pixel"], stage_path(c, "pixel"), device).G_A if "pixel" in finished else None
    if translator is not None:
        # Two judges of the translation: f_S, which the semantic loss optimises, and the oracle, which it cannot.
        judges = {key: classifiers[stage] for stage, key in (("source", "label_preservation"),
                                                             ("oracle", "oracle_label_preservation"))
                  if stage in classifiers}
        metrics.update(label_preservation(judges, translator, source_test))
        _save_translation_grid(translator, source_test, target_test, out / "samples.png", device)
        if c.noise_nc:  # beyond the paper: does the translation depend on its noise at all?
            metrics["noise_effect"] = noise_effect(translator, source_test)
    if (c.source, c.target) == ("mnist5k", "mnistm5k"):  # the same digits: mnistm5k is drawn from mnist5k
        metrics["dark_digits"] = _polarity(source_test, target_test, translator, predictions)
    metrics.update(per_class=per_class, confusion=confusion, wall_s=wall_times or {})
    files.write_json(out / "metrics.json", metrics)
    histories = {stage: ckpt["history"] for stage, ckpt in finished.items()}
    if any(histories.values()):
        plot_histories(histories, out / "curves.png")
    return metrics


def load_seed_metrics(folder: str | os.PathLike) -> dict[int, dict]:
    """``{seed: metrics}`` of the runs kept as ``folder/seed<K>/metrics.json`` (the files
    :func:`evaluate_run` writes, e.g. the book's ``cyclelib.book_results("cycada/<pair>")``), in seed order.
    A folder without any, an unreadable file, or a file whose ``seed`` is not its folder's
    is an error naming the file."""
    runs = {}
    for path in Path(folder).glob("seed*/metrics.json"):
        seed = int(path.parent.name.removeprefix("seed"))
        metrics = files.read_json(path, "restore it, or run that seed again", expect=dict)
        if metrics.get("seed") != seed:
            raise ValueError(f"{path} holds the metrics of seed {metrics.get('seed')}, not of seed {seed}")
        runs[seed] = metrics
    if not runs:
        raise FileNotFoundError(f"no seed*/metrics.json in {folder}")
    return dict(sorted(runs.items()))


def _finished_stages(config: CyCADAConfig) -> dict[str, dict]:
    """stage -> its complete checkpoint trained with this config's options (each file read once);
    another configuration's stage is left out with a note: it is not a result of this one."""
    finished = {}
    for stage in STAGES:
        try:
            ckpt = stage_checkpoint(config, stage)
        except ValueError as e:
            print(f"cycada: not evaluated: {e}", file=sys.stderr)
            continue
        if ckpt is not None and _complete(ckpt):
            finished[stage] = ckpt
    return finished


def _polarity(source_test, target_test, translator: nn.Module | None, predictions: dict) -> dict:
    """The dark-digit shares of the target test digits and their translations, and each result's
    accuracy on the light and on the dark target digits (see :func:`~cyclelib.metrics.dark_digits`)."""
    x_s = torch.stack([x for x, _ in source_test])  # [N, 3, H, W]
    x_t, y_t = (torch.stack([x for x, _ in target_test]), torch.tensor([y for _, y in target_test]))
    strokes = x_s.mean(dim=1) > 0  # [N, H, W]: where each source digit has ink
    dark = dark_digits(x_t, strokes)
    found = {"target": dark.float().mean().item(), "by_result": {}}
    if translator is not None:
        translated = translate_dataset(translator, source_test).tensors[0]  # [N, 3, H, W]
        found["translated"] = dark_digits(translated, strokes).float().mean().item()
    for key, predicted in predictions.items():
        right = (predicted == y_t).float()
        found["by_result"][key] = {"light": right[~dark].mean().item(), "dark": right[dark].mean().item()}
    return found


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
