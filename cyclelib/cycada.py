r"""CyCADA (Hoffman et al., ICML 2018): cycle-consistent adversarial domain adaptation (digits, segmentation).

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
alone). ``task="segmentation"`` runs the same stages per pixel (:mod:`cyclelib.segmentation`
holds what differs). With ``translated_source``, a translation of the source made elsewhere (the release's
feature stage reads its published one), ``pixel_only`` and ``feature`` train on it and need no pixel stage
(:func:`~cyclelib.cycada_data.translated_source`). Each stage keeps its checkpoints under ``out/<stage>/``;
:func:`~cyclelib.cycada_run.run_cycada` runs the stages in order and evaluates them.

CycleGAN names in this module: A = source, B = target, G_A = G_{S->T}, G_B = G_{T->S},
D_A = D_T (judges target images), D_B = D_S.

Two defects of the release are avoided on purpose: f_S is pretrained and frozen in eval mode
during stages 2 and 3 (the release's ``CycleGANSemanticModel``, jhoffman/cycada_release at commit
2fbf16b, ``cyclegan/models/cycle_gan_semantic_model.py``, builds a fresh ``netCLS`` in
``initialize`` and trains it alongside the GAN in ``backward_CLS``, in train mode, so dropout and
BatchNorm drift), and the stages pass networks to each other instead of PNG files.

The release's departures from the paper are options, the paper's form their default
(:class:`~cyclelib.config.CyCADAConfig`; ``form="release"`` selects them all): ``semantic_judge``
online (its netCLS, trained alongside), ``semantic_target`` and ``semantic_gate`` (stage 2),
``feature_start``, ``lambda_task`` 0 and ``feature_gate`` (stage 3).
"""
from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Iterable

import torch
from torch import nn
from torch.utils.data import Dataset

from .checkpoints import load_weights, make_checkpoint, save_checkpoint
from .classifiers import FeatureAlignment, TaskClassifier, build_task_network, freeze, load_pretrained
from .commands import cycada_command
from .config import CyCADAConfig, classifier_name, stage_option_names
from .cyclegan import CycleGAN
from .cyclegan_run import train_cyclegan
from .cycada_data import drawn, load_domain, training_domain, translated_source
from .data import RandomlyInverted, Unpaired
from .distributed import RunContext, run_context
from .folders import folder_fingerprint
from .integrity import sha256_of
from .names import CYCADA_STAGES, is_folder_domain, stage_weights
from .runs import LATEST, load_run_checkpoint, run_folder, run_in
from .runtime import seed_everything
from .segmentation import domain_classes, feature_game, task_loss
from .semantic import semantic_consistency
from .train import Trainer
from .weights import cyclegan_from_checkpoint, load_release_segmenter

# Stages in the order they run, what each needs first, and the result it stands for.
STAGES = CYCADA_STAGES
NEEDS = {"source": (), "feature_only": ("source",), "pixel": ("source",), "pixel_only": ("pixel",),
         "feature": ("source", "pixel"), "oracle": ()}
RESULTS = {"source": "source_only", "pixel_only": "pixel_only", "feature_only": "feature_only",
           "feature": "pixel_feature", "oracle": "target_oracle"}

# The options of CyCADAConfig that change each stage's result, its own and those of the stages it
# builds on (by their field metadata "shapes", see config.py): a stage's checkpoint is reused
# (skipped, resumed, loaded, evaluated) only if they match. The stages record them flat, by name.
# (amp is compared as the precision it picked, recorded with the stage: see _stage_meta)
_SHAPED_BY = {"source": ("every",), "oracle": ("every",), "pixel": ("every", "pixel"),
              "pixel_only": ("every", "pixel", "translated"), "feature_only": ("every", "feature"),
              "feature": ("every", "pixel", "feature", "pixel_feature", "translated")}
STAGE_OPTIONS = {stage: stage_option_names(*shapes) for stage, shapes in _SHAPED_BY.items()}
_DEFAULTS = {f.name: f.default for f in fields(CyCADAConfig)}
# The options that change no result: where a run writes, on what it runs, what it logs and evaluates.
NEUTRAL_OPTIONS = stage_option_names(None)
# The options that name files stages are made of: compared as the files' SHA-256 (see _stage_meta).
WEIGHT_OPTIONS = stage_option_names("weights")


# --------------------------------------------------------------------------------------
# Stage bookkeeping
# --------------------------------------------------------------------------------------

def stage_path(config: CyCADAConfig, stage: str) -> Path:
    """Where ``stage`` keeps its latest checkpoint: ``out/<stage>/checkpoint.pt`` (the stage
    folder is a run folder, see :mod:`cyclelib.runs`)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid values: {', '.join(STAGES)}")
    return Path(config.out) / stage / LATEST


def stage_complete(ckpt: dict) -> bool:
    """Whether a checkpoint holds a finished run (one without training state is a final one)."""
    t = ckpt.get("training")
    return t is None or (t.get("total_steps") is not None and t["step"] >= t["total_steps"])


def stage_checkpoint(config: CyCADAConfig, stage: str, context: RunContext | None = None) -> dict | None:
    """The checkpoint of ``stage`` in ``config.out``, None when there is none.

    It is the newest readable one, picked as for any run folder
    (:func:`~cyclelib.runs.load_run_checkpoint`: a corrupt ``checkpoint.pt`` falls back to the
    step files, with a warning). One trained with other options for the stage
    (:data:`STAGE_OPTIONS`: another pair of domains, network, seed, ...) is a ``ValueError``
    that names each option that differs: reusing it would give results that belong to another
    configuration. ``context``: where the run computes (default: that of ``config.device``), whose
    precision ``amp`` stands for.
    """
    folder = stage_path(config, stage).parent
    if run_in(folder) is None:
        return None
    ckpt, path = load_run_checkpoint(folder)
    recorded = ckpt["meta"].get("cycada")
    redo = (f"retrain it (--stages {stage} --force, or force=True) or use another --out")
    if recorded is None:
        raise ValueError(f"{path} does not record the options its {stage!r} stage was trained with (it was "
                         f"written by cyclelib 0.1); {redo}")
    now = _stage_meta(config, stage, context)
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
    differ += [f"the images of {name} (files added, removed or edited since the stage was trained)"
               for name, fingerprint in now.get("folders", {}).items()
               if ckpt["meta"].get("folders", {}).get(name) != fingerprint]
    if (made_of := ckpt["meta"].get("weights", {})) != now.get("weights", {}):
        differ.append(f"stage_weights: {_files_text(made_of)} there, {_files_text(now.get('weights', {}))} now")
    if differ:
        raise ValueError(f"the {stage!r} stage in {path} was trained with other options ({'; '.join(differ)}); "
                         f"{redo}")
    return ckpt


def _stage_meta(config: CyCADAConfig, stage: str, context: RunContext | None) -> dict:
    """What a stage checkpoint records of its run: the stage, every option, and the precision
    ``amp`` picked on the run's device (its "auto" is bf16 or fp32 by hardware)."""
    precision = (context or run_context(config.device)).precision(config.amp)
    meta = {"stage": stage, "cycada": asdict(config), "precision": precision.name}
    folders = {name: folder_fingerprint(name) for name in (config.source, config.target) if is_folder_domain(name)}
    if folders:
        meta["folders"] = folders  # the images a folder domain held
    weights = stage_weight_files(config)
    if made_of := {s: sha256_of(weights[s]) for s in with_needs((stage,), config) if s in weights}:
        meta["weights"] = made_of  # the published networks of the stage and of those it builds on
    return meta


def stage_weight_files(config: CyCADAConfig) -> dict[str, Path]:
    """The stages made of published networks (option ``stage_weights``) and their files."""
    return stage_weights(config.stage_weights, config.task, classifier_name(config))


def _files_text(made_of: dict[str, str]) -> str:
    return ", ".join(f"{stage} from a file of SHA-256 {sha[:12]}..." for stage, sha in made_of.items()) or "none"


def needs(config: CyCADAConfig, stage: str) -> tuple[str, ...]:
    """The stages ``stage`` builds on: :data:`NEEDS`, the semantic loss's judge for the pixel stage,
    and the classifier the feature stage starts from; not the pixel stage where the stage reads
    ``config.translated_source`` instead of its translation."""
    if stage in stage_weight_files(config):
        return ()  # a published network: made of nothing here
    chosen = {"pixel": config.semantic_judge, "feature": config.feature_start}.get(stage)
    found = NEEDS[stage] + ((chosen,) if chosen in STAGES and chosen not in NEEDS[stage] else ())
    return tuple(s for s in found if s != "pixel" or not _reads_translated_source(config, stage))


def _reads_translated_source(config: CyCADAConfig, stage: str) -> bool:
    return config.translated_source is not None and stage in ("pixel_only", "feature")


def with_needs(stages: tuple[str, ...], config: CyCADAConfig) -> tuple[str, ...]:
    """``stages`` and every stage they build on, in run order."""
    found, todo = set(), list(stages)
    while todo:
        stage = todo.pop()
        if stage not in found:
            found.add(stage)
            todo.extend(needs(config, stage))
    return tuple(s for s in STAGES if s in found)


def stage_options(config: CyCADAConfig, stage: str) -> tuple[str, ...]:
    """:data:`STAGE_OPTIONS` of ``stage``, and the feature stage's options when the pixel
    stage's semantic judge is the feature_only classifier (and ``stage`` builds on the pixel stage);
    without the pixel stage's options where ``stage`` reads ``config.translated_source`` in its place."""
    judged_by_f_t = config.semantic_judge == "feature_only" and "pixel" in (stage, *with_needs((stage,), config))
    feature = stage_option_names("feature") if judged_by_f_t and stage not in ("feature", "feature_only") else ()
    pixel = stage_option_names("pixel") if _reads_translated_source(config, stage) else ()
    return tuple(name for name in STAGE_OPTIONS[stage] if name not in pixel) + feature


def parse_stages(stages: str | Iterable[str]) -> tuple[str, ...]:
    """Stages from a comma list or an iterable, checked, in run order."""
    chosen = [s.strip() for s in stages.split(",")] if isinstance(stages, str) else list(stages)
    unknown = [s for s in chosen if s not in STAGES]
    if unknown or not chosen:
        raise ValueError(f"unknown stage(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"valid values: {', '.join(STAGES)}")
    return tuple(s for s in STAGES if s in chosen)


def stage_finished(config: CyCADAConfig, stage: str, context: RunContext | None = None) -> bool:
    """Whether ``stage`` has a complete checkpoint trained with this config's options (stages
    write partial ones along the way); see :func:`stage_checkpoint` for other options."""
    ckpt = stage_checkpoint(config, stage, context)
    return ckpt is not None and stage_complete(ckpt)


def load_stage(config: CyCADAConfig, stage: str, device: str | torch.device | None = None,
               ckpt: dict | None = None) -> nn.Module:
    """The network a finished stage saved: a classifier, or the CycleGAN for ``pixel`` (eval mode),
    on ``device`` (default: that of ``config.device``).

    ``ckpt``: the stage's checkpoint when the caller has read it already (:func:`stage_checkpoint`),
    so that a run reads each file once. A missing or unfinished checkpoint is an error that names
    the file and the command that runs the stage, one trained with other options an error that
    names them (see :func:`stage_checkpoint`).
    """
    context = run_context(device or config.device)
    ckpt = ckpt or stage_checkpoint(config, stage, context)
    if ckpt is None or not stage_complete(ckpt):
        raise stages_not_ready(config, {stage: ckpt})
    return stage_network(ckpt, stage_path(config, stage), context.device)


def stages_not_ready(config: CyCADAConfig, found: dict[str, dict | None]) -> FileNotFoundError:
    """The error for stages that must run before others can, each with its checkpoint (None:
    missing, else unfinished); it names each file and the command that runs them."""
    why = [f"{stage_path(config, s)} is missing (the {s!r} stage has not been run)" if ckpt is None else
           f"{stage_path(config, s)} holds an unfinished {s!r} stage ({ckpt['training']['step']} of "
           f"{ckpt['training']['total_steps']} steps)" for s, ckpt in found.items()]
    return FileNotFoundError(f"{'; '.join(why)}; run {'it' if len(found) == 1 else 'them'} first: "
                             f"{run_hint(config, tuple(found))}")


def run_hint(config: CyCADAConfig, stages: tuple[str, ...]) -> str:
    """How to run (or resume) ``stages`` with ``config``'s options, from Python and from the
    command line (:func:`~cyclelib.commands.cycada_command`)."""
    return f"run_cycada(config, stages={stages!r}) or `{cycada_command(asdict(config), stages)}`"


def stage_network(ckpt: dict, path: Path, device: torch.device) -> nn.Module:
    """The trained network of a stage checkpoint, in eval mode on ``device``."""
    if ckpt["kind"] == "cyclegan":
        return cyclegan_from_checkpoint(ckpt, str(path)).to(device)
    prefix = {"classifier": "net.", "feature": "f_t."}[ckpt["kind"]]  # f_T without D_feat
    net = build_task_network(ckpt["config"]["classifier"], ckpt["config"].get("num_classes", 10))  # digits: 10
    load_weights(net, {k[len(prefix):]: v for k, v in ckpt["nets"].items() if k.startswith(prefix)}, str(path))
    return net.to(device).eval()


def _fit_stage(config: CyCADAConfig, stage: str, model: nn.Module, dataset, inputs, batch_size: int,
               epochs: int, resume: bool, progress: bool, context: RunContext, score: tuple[str, ...] = ()) -> None:
    """Train a classifier stage's ``model`` with the :class:`~cyclelib.train.Trainer` into ``out/<stage>/``."""
    c = config
    kind = "feature" if isinstance(model, FeatureAlignment) else "classifier"
    Trainer(model, dataset, stage_path(c, stage).parent, inputs=inputs,
            record=dict(kind=kind, config={"classifier": classifier_name(c), "num_classes": domain_classes(c.source)},
                        meta=_stage_meta(c, stage, context)),
            batch_size=batch_size, epochs=epochs, seed=c.seed, limit=c.max_samples,
            drop_last=True,  # a last batch of one image would break BatchNorm in train mode (DTN)
            num_workers=c.num_workers, log_every=c.log_every, checkpoint_every=c.checkpoint_every,
            score=score, resume_hint=run_hint(c, (stage,)),
            overwrite=not resume,  # the caller (run_cycada) decided: continue the stage or train it afresh
            progress=progress, name=stage).fit(resume)


# --------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------

def train_classifier(config: CyCADAConfig, stage: str, dataset: Dataset, progress: bool = True,
                     resume: bool = False, context: RunContext | None = None) -> nn.Module:
    r"""Minimise :math:`\mathcal{L}_{task}(f, X, Y)` from a fresh network (``task_optimizer``); saves ``out/<stage>/``.

    The one classifier stage of CyCADA: f_S on labelled source (``source``), the oracle on
    labelled target (``oracle``) and the pixel-only classifier on translated source
    (``pixel_only``) differ only in their data. ``resume`` continues an unfinished run of the stage.
    ``context``: where the run computes (default: that of ``config.device``), as for every stage.
    """
    c = config
    context = context or run_context(c.device)
    seed_everything(c.seed)
    net = load_pretrained(build_task_network(classifier_name(c), domain_classes(c.source))).to(context.device).train()
    model = TaskClassifier(net, c.task_lr, context.precision(c.amp), task_loss(c), c.task_optimizer)
    _fit_stage(c, stage, model, dataset, inputs=lambda batch: batch, batch_size=c.task_batch_size,
               epochs=c.task_epochs, resume=resume, progress=progress, context=context, score=("task",))
    return model.finish()


def adopt_weights(config: CyCADAConfig, stage: str, context: RunContext | None = None) -> nn.Module:
    """``stage`` made of the published network ``config.stage_weights`` gives it instead of trained: the
    file (:func:`~cyclelib.weights.load_release_segmenter`) written as the stage's finished checkpoint
    (``out/<stage>/checkpoint.pt``, a classifier without training state or history), so that the stages
    built on it load it, the reuse checks compare it (its SHA-256 is recorded) and the evaluation reads it as
    any finished stage. The release's feature stage starts from the pixel_only network this way
    (scripts/train_fcn_adda.sh line 49: ``--weights_init base_models/drn26-cyclegta5-iter115000.pth``)."""
    context = context or run_context(config.device)
    name, k = classifier_name(config), domain_classes(config.source)
    net = build_task_network(name, k)
    net.net.load_state_dict(load_release_segmenter(stage_weight_files(config)[stage], name, k).state_dict())
    ckpt = make_checkpoint("classifier", {"classifier": name, "num_classes": k},
                           {f"net.{key}": value for key, value in net.state_dict().items()},
                           meta=_stage_meta(config, stage, context))
    with run_folder(stage_path(config, stage).parent, overwrite=True):  # the caller decided to (re)make it
        save_checkpoint(ckpt, stage_path(config, stage))
    return net.to(context.device).eval()


def train_source(config: CyCADAConfig, progress: bool = True, resume: bool = False,
                 context: RunContext | None = None) -> nn.Module:
    r"""Stage 1: f_S on labelled source, :math:`\min_{f_S} \mathcal{L}_{task}(f_S, X_S, Y_S)`.

    With ``invert_source`` > 0 (beyond the paper), that share of the source images is seen
    negated (:class:`~cyclelib.data.RandomlyInverted`), so that f_S, the semantic loss's judge and
    f_T's start, reads dark digits on a bright ground as well as light ones."""
    source = training_domain(config, config.source)
    if config.invert_source:
        source = RandomlyInverted(source, config.invert_source, config.seed)
    return train_classifier(config, "source", source, progress, resume, context)


def train_oracle(config: CyCADAConfig, progress: bool = True, resume: bool = False,
                 context: RunContext | None = None) -> nn.Module:
    """The target oracle: the same stage on labelled target images (the only use of target labels)."""
    return train_classifier(config, "oracle", training_domain(config, config.target), progress, resume, context)


def train_pixel_only(config: CyCADAConfig, translator: nn.Module | None, progress: bool = True,
                     resume: bool = False, context: RunContext | None = None) -> nn.Module:
    r"""Pixel-level adaptation alone: :math:`\min_f \mathcal{L}_{task}(f, G_{S\to T}(X_S), Y_S)`, on the source
    translated by ``translator`` or, where given, on ``config.translated_source`` (``translator`` None:
    :func:`~cyclelib.cycada_data.translated_source`)."""
    translated = translated_source(config, translator, context or run_context(config.device))
    return train_classifier(config, "pixel_only", drawn(translated, config), progress, resume, context)


def train_pixel(config: CyCADAConfig, f_s: nn.Module | None, progress: bool = True, resume: bool = False,
                context: RunContext | None = None) -> CycleGAN:
    r"""Stage 2: CycleGAN between source and target with the semantic consistency loss.

    The generators minimise the named terms of :meth:`CycleGAN.generator_losses` plus
    :func:`~cyclelib.semantic.semantic_consistency`:

    .. math::
        \lambda_{GAN,A} \mathcal{L}_{GAN}(G_{S\to T}, D_T, X_T, X_S)
        + \lambda_{GAN,B} \mathcal{L}_{GAN}(G_{T\to S}, D_S, X_S, X_T)
        + \mathcal{L}_{cyc}(G_{S\to T}, G_{T\to S}, X_S, X_T)
        + \mathcal{L}_{sem}(G_{S\to T}, G_{T\to S}, X_S, X_T, f_S)

    ``f_s`` (the stage 1 classifier; with ``semantic_judge="feature_only"``, beyond the paper,
    that stage's f_T) is frozen in place; with ``semantic_judge="online"`` (the release's) it is
    None and a fresh classifier is trained alongside (:func:`~cyclelib.semantic.online_judge`), its state in the stage's
    checkpoints. Writes ``out/pixel/`` (checkpoint, samples, history) through
    :func:`~cyclelib.cyclegan_run.train_cyclegan`; ``resume`` continues an unfinished run.
    Under torchrun each rank keeps its f_S on its own device, next to its generators.
    """
    context = context or run_context(config.device)
    if config.semantic_judge == "online":
        with torch.random.fork_rng(devices=[]):  # the generators' initial weights stay those of the seed
            torch.manual_seed(config.seed)
            f_s = build_task_network(classifier_name(config), domain_classes(config.source))
    f_s.to(context.device)
    return train_cyclegan(config.pixel_config(str(stage_path(config, "pixel").parent)), resume=resume,
                          progress=progress, extra_generator_losses=semantic_consistency(config, f_s),
                          meta=_stage_meta(config, "pixel", context), overwrite=not resume,
                          resume_hint=run_hint(config, ("pixel",)), context=context)


def train_feature(config: CyCADAConfig, f_s: nn.Module, translator: nn.Module | None = None,
                  progress: bool = True, resume: bool = False, context: RunContext | None = None,
                  stage: str | None = None) -> nn.Module:
    r"""Stage 3: f_T on translated source with the source labels, aligned by a feature-level GAN.

    The step is :meth:`~cyclelib.classifiers.FeatureAlignment.train_step`: f_T starts as a copy
    of f_S (which stays frozen) and minimises

    .. math::
        \lambda_{task}\, \mathcal{L}_{task}(f_T, G_{S\to T}(X_S), Y_S)
        + \lambda_{feat}\, \mathcal{L}_{GAN}(f_T, D_{feat}, f_S(G_{S\to T}(X_S)), X_T)

    ``translator=None`` trains on untranslated source: the ``feature_only`` baseline (ADDA).
    Saves ``out/feature/`` (or ``out/feature_only/``). ``stage``: ``"feature"`` or ``"feature_only"`` (default:
    by ``translator``); the feature stage with ``config.translated_source`` trains on that domain, without a
    translator (:func:`~cyclelib.cycada_data.translated_source`).

    ``f_s`` is the classifier of the stage ``config.feature_start`` names (for the feature stage):
    f_S, the paper's, or the ``pixel_only`` classifier, as the release ran it. The release's
    ``scripts/train_adda.py`` (jhoffman/cycada_release at 2fbf16b) starts both ADDA networks from
    the classifier trained on its ``src`` data (lines 45, 58 and 72; ``AddaNet.load_src_net``,
    ``cycada/models/adda_net.py`` lines 66-70), and its translated-source runs give ``src`` as e.g.
    ``svhn2mnist`` (line 28 reads the base domain from such a name; the script as committed has
    ``src = 'mnist'``, line 24). ``config.feature_gate``: see :class:`~cyclelib.classifiers.FeatureAlignment`.
    """
    c = config
    stage = stage or ("feature" if translator is not None else "feature_only")
    context = context or run_context(c.device)
    seed_everything(c.seed)
    f_s = freeze(f_s.to(context.device))
    source = load_domain(c, c.source, "train") if stage == "feature_only" else translated_source(c, translator, context)
    pairs = Unpaired(source, load_domain(c, c.target, "train"), seed=c.seed)
    model = FeatureAlignment(f_s, c.feature_lr, context.precision(c.amp), c.lambda_task, c.lambda_feature,
                             c.feature_gate, optimizer=c.feature_optimizer,
                             **feature_game(c))  # segmentation: the score discriminator
    # Target labels stay unused: the step reads source images and labels, and target images only.
    _fit_stage(c, stage, model, pairs, inputs=lambda batch: (batch["A"], batch["A_label"], batch["B"]),
               batch_size=c.feature_batch_size, epochs=c.feature_epochs, resume=resume, progress=progress,
               context=context)
    return model.finish()
