"""A whole CyCADA run: the stages in order, then their evaluation; the results of several seeds.

:func:`run_cycada` runs the chosen stages of :mod:`cyclelib.cycada` in order under ``out/``
(locked), reusing complete stages and resuming unfinished ones, and ends with
:func:`evaluate_stages`: every finished stage on the target test split, written as
``out/metrics.json`` with its figures (confusion matrices, training curves, a translation grid).
:func:`load_seed_metrics` reads the ``metrics.json`` of runs kept per seed, as the book does.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from . import distributed, files
from .checkpoints import load_weights
from .classifiers import build_task_network
from .config import CyCADAConfig, classifier_name
from .presets import CYCADA_PRESETS, cycada_preset
from .cycada import (RESULTS, STAGES, adopt_weights, load_domain, load_stage, needs, parse_stages, run_hint,
                     stage_checkpoint, stage_complete, stage_network, stage_path, stage_weight_files, stages_not_ready,
                     train_feature, train_oracle, train_pixel, train_pixel_only, train_source, with_needs)
from .distributed import RunContext, run_context
from .folders import check_folder_domains, has_labels, num_classes
from .metrics import (accuracy, confusion_matrix, dark_digits, label_preservation, noise_effect, per_class_accuracy,
                      predict, translate_dataset)
from .plots import plot_confusion_matrix, plot_histories, save_image_grid
from .runs import RunFolderError, run_folder, run_in
from .segmentation import domain_classes, evaluate_segmentation
from .watch import describe_options


def run_cycada(config: CyCADAConfig, stages: str | Iterable[str] = STAGES, force: bool = False,
               progress: bool = True) -> dict:
    """Run the chosen stages in order, then evaluate every finished one; returns the metrics.

    A stage whose checkpoint is complete is skipped (``force=True`` retrains it); an
    unfinished one resumes. A stage needing an earlier one that was not asked
    for loads that one's checkpoint; before any stage runs, every such stage that is missing or
    unfinished is named, with its file and the command that runs them, unless all of them are made of
    ``stage_weights`` files: those train nothing, and are made first.
    Before any stage runs, every checkpoint that would be reused is checked against the
    config (:func:`~cyclelib.cycada.stage_checkpoint`): one trained with other options is an error naming
    them, unless ``force`` retrains that stage. ``out`` is locked for the run.
    Writes ``out/metrics.json``, ``out/samples.png``, ``out/curves.png`` and
    ``out/confusion/<result>.png``; the wall time of each stage run goes to ``out/wall_times.json``.
    Under torchrun, where only the pixel stage may run, rank 0 writes the files and returns
    the metrics, the other ranks return ``{}``. Each stage's checkpoint is read once: the stages and
    the evaluation are handed the checkpoints read before the run and those the run wrote.
    """
    stages = parse_stages(stages)
    if not check_folder_domains(config.source, config.target, config.image_size) and "oracle" in stages:
        print(f"cycada: skipping oracle: the target {config.target} has no labels to train it on")
        stages = tuple(s for s in stages if s != "oracle")
    rank, world_size = distributed.launched()
    writer = rank == 0  # under torchrun, rank 0 writes and evaluates
    if world_size > 1 and stages != ("pixel",):
        # Only the CycleGAN has a DDP loop; every rank would train and write the same classifiers.
        raise RuntimeError(f"under torchrun (WORLD_SIZE={world_size}) only the 'pixel' stage runs "
                           f"distributed: pass stages=('pixel',) (--stages pixel) there and run the stages "
                           f"{', '.join(s for s in stages if s != 'pixel')} in a single process")
    out = Path(config.out)
    if (found := run_in(out)) is not None:  # run_folder would suggest train cyclegan's --resume, --overwrite
        raise RunFolderError(f"{out} holds a run of its own ({found.name}: a CycleGAN run, or a CyCADA stage), "
                             f"not a CyCADA run, whose stages are folders in it: choose another --out (out=...)")
    context = run_context(config.device)
    reused = {stage: None if force and stage in stages else stage_checkpoint(config, stage, context)
              for stage in with_needs(stages, config)}  # checked now: no stage trains before a mismatch is found
    done = {stage for stage, ckpt in reused.items() if ckpt is not None and stage_complete(ckpt)}
    # Every stage not asked for and not done that one to run builds on, directly or through another such
    # stage: with nothing done, `pixel_only` needs `pixel`, which needs `source`; all are named at once.
    missing, todo = set(), [stage for stage in stages if stage not in done]
    while todo:
        for need in needs(config, todo.pop()):
            if need not in done | missing | set(stages):
                missing.add(need)
                todo.append(need)
    if missing and missing <= set(stage_weight_files(config)):  # published networks: nothing to train, made now
        print(f"cycada: making {', '.join(s for s in STAGES if s in missing)} of the --stage-weights files first")
        stages, missing = tuple(s for s in STAGES if s in missing or s in stages), set()
    if missing:  # an earlier stage that was not asked for, and is not there to load
        raise stages_not_ready(config, {stage: reused[stage] for stage in STAGES if stage in missing})
    with run_folder(out) if writer else contextlib.nullcontext():
        if writer:
            preset = cycada_preset(config.scale, config.task, config.source) if config.scale in CYCADA_PRESETS else {}
            origin = {name: f"scale {config.scale} preset" for name, value in preset.items()
                      if getattr(config, name) == value}
            print(describe_options(config, origin), flush=True)  # what will train, once, as a CycleGAN run says it
            files.write_json(out / "config.json", asdict(config))
        wall_times = _run_stages(config, stages, reused, progress, out / "wall_times.json", context)
        return evaluate_stages(config, wall_times, context, reused) if writer else {}


def _run_stages(config: CyCADAConfig, stages: tuple[str, ...], reused: dict[str, dict | None], progress: bool,
                times_path: Path, context: RunContext) -> dict:
    """Train ``stages`` in order, skipping complete ones and resuming unfinished ones (their
    checkpoints are ``reused``), or make them of their published networks (``config.stage_weights``,
    :func:`~cyclelib.cycada.adopt_weights`); returns the wall times of every stage run so far in ``out``.
    The checkpoint each stage writes replaces its entry of ``reused`` (rank 0 only: it writes them)."""
    nets: dict[str, nn.Module] = {}
    writer = context.rank == 0

    def need(stage: str):
        if stage not in nets:
            nets[stage] = load_stage(config, stage, context.device, reused.get(stage))
        return nets[stage]

    def translator():  # G_{S->T}, unless the stages read a translation made elsewhere (config.translated_source)
        return need("pixel").G_A if config.translated_source is None else None

    run = dict(progress=progress, context=context)
    runners = {  # each takes resume: whether to continue the stage's unfinished checkpoint
        "source": lambda resume: train_source(config, resume=resume, **run),
        "pixel": lambda resume: train_pixel(config, need(config.semantic_judge) if config.semantic_judge in STAGES
                                            else None, resume=resume, **run),
        "pixel_only": lambda resume: train_pixel_only(config, translator(), resume=resume, **run),
        "feature_only": lambda resume: train_feature(config, need("source"), None, resume=resume, **run),
        "feature": lambda resume: train_feature(config, need(config.feature_start), translator(), resume=resume,
                                                stage="feature", **run),
        "oracle": lambda resume: train_oracle(config, resume=resume, **run),
    }
    wall_times = _read_wall_times(times_path)
    config_weights = stage_weight_files(config)
    for stage in stages:
        if reused[stage] is not None and stage_complete(reused[stage]):
            print(f"cycada: skipping {stage}: {stage_path(config, stage)} is complete (force=True retrains it)")
            continue
        start = time.perf_counter()
        if stage in config_weights:
            nets[stage] = adopt_weights(config, stage, context)
        else:
            nets[stage] = runners[stage](reused[stage] is not None)
        wall_times[stage] = round(time.perf_counter() - start, 1)
        if writer:  # rank 0 writes the checkpoints: only it can tell a stage that stopped early (a SIGTERM)
            files.write_json(times_path, wall_times)
            reused[stage] = stage_checkpoint(config, stage, context)
            if reused[stage] is None or not stage_complete(reused[stage]):
                raise RuntimeError(f"the {stage!r} stage stopped before its end; resume it: "
                                   f"{run_hint(config, (stage,))}")
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


def _eval_subset(dataset, config: CyCADAConfig):
    """At most ``max_eval_samples`` test images, a fixed random subset (test splits may be sorted)."""
    n = config.max_eval_samples
    if not n or n >= len(dataset):
        return dataset
    keep = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    return torch.utils.data.Subset(dataset, keep.tolist())


def evaluate_stages(config: CyCADAConfig, wall_times: dict | None = None, context: RunContext | None = None,
                 checkpoints: dict[str, dict | None] | None = None) -> dict:
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
    With the release's online semantic judge, ``online_judge_source_accuracy`` is that judge's accuracy
    on the source test images as the pixel stage left it: how well the classifier that the semantic
    terms read knew the digits.
    With ``task="segmentation"`` each result is its mIoU instead, with pixel accuracy, per-class IoU and
    label preservation in mIoU terms (:func:`~cyclelib.segmentation.evaluate_segmentation`).
    ``context``: where the networks run (default: that of ``config.device``); ``checkpoints``: stage ->
    checkpoint of the stages already read and checked (:func:`run_cycada`'s), so that none is read twice.

    A noise input draws its z from torch's RNG: it is seeded with ``config.seed`` here, and the caller's RNG is
    left as it was, so the metrics do not depend on what ran before (a resumed run's equal a straight one's).
    """
    cuda = range(torch.cuda.device_count()) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(config.seed)
        return _evaluate_stages(config, wall_times, context, checkpoints)


def _evaluate_stages(config: CyCADAConfig, wall_times: dict | None, context: RunContext | None,
                     checkpoints: dict[str, dict | None] | None) -> dict:
    c = config
    out = Path(c.out)
    context = context or run_context(c.device)
    device = context.device
    target_test = _eval_subset(load_domain(c, c.target, "test"), c)
    source_test = _eval_subset(load_domain(c, c.source, "test"), c)
    metrics: dict = {"source": c.source, "target": c.target, "scale": c.scale, "seed": c.seed,
                     "classifier": classifier_name(c), "test_images": {"source": len(source_test),
                                                                        "target": len(target_test)}}
    finished = _finished_stages(c, context, checkpoints or {})
    if c.task == "segmentation":
        return _evaluate_segmentation_run(c, metrics, finished, source_test, target_test, wall_times, device)
    per_class, confusion, classifiers, predictions = {}, {}, {}, {}
    labelled, classes = has_labels(c.target), num_classes(c.source)
    if not labelled:
        print(f"cycada: no accuracy on the target: {c.target} has no labels")
    metrics["target_labels"] = labelled
    for stage, ckpt in finished.items():
        if stage not in RESULTS:
            continue
        key = RESULTS[stage]
        classifiers[stage] = stage_network(ckpt, stage_path(c, stage), device)
        if not labelled:
            continue
        predictions[key], labels = predict(classifiers[stage], target_test)
        metrics[key] = accuracy(predictions[key], labels)
        per_class[key] = [None if math.isnan(a) else a for a in per_class_accuracy(predictions[key], labels, classes)]
        confusion[key] = confusion_matrix(predictions[key], labels, classes).tolist()
        plot_confusion_matrix(confusion[key], out / "confusion" / f"{key}.png",
                              title=f"{key} on {c.target} test: {metrics[key]:.3f}")
    if "source" in classifiers:
        metrics["source_test_accuracy"] = accuracy(*predict(classifiers["source"], source_test))
    if (judge := _online_judge(c, finished, device)) is not None:
        metrics["online_judge_source_accuracy"] = accuracy(*predict(judge, source_test))
    translator = stage_network(finished["pixel"], stage_path(c, "pixel"), device).G_A if "pixel" in finished else None
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
    return _write_metrics(out, metrics, finished)


def _write_metrics(out: Path, metrics: dict, finished: dict[str, dict]) -> dict:
    """Write ``out/metrics.json`` and the training curves of the ``finished`` stages; returns ``metrics``."""
    files.write_json(out / "metrics.json", metrics)
    histories = {stage: ckpt["history"] for stage, ckpt in finished.items()}
    if any(histories.values()):
        plot_histories(histories, out / "curves.png")
    return metrics


def _evaluate_segmentation_run(config: CyCADAConfig, metrics: dict, finished: dict[str, dict], source_test,
                               target_test, wall_times: dict | None, device) -> dict:
    """:func:`evaluate_stages` for ``task="segmentation"``: ``metrics`` and those of
    :func:`~cyclelib.segmentation.evaluate_segmentation`, written to ``out/metrics.json`` with the curves."""
    nets = {stage: stage_network(ckpt, stage_path(config, stage), device) for stage, ckpt in finished.items()}
    translator = nets.pop("pixel").G_A if "pixel" in nets else None
    results = {RESULTS[stage]: net for stage, net in nets.items()}
    judges = {stage: nets[stage] for stage in ("source", "oracle") if stage in nets}
    metrics.update(task="segmentation", **evaluate_segmentation(config, results, judges, translator, source_test,
                                                                 target_test, Path(config.out)), wall_s=wall_times or {})
    return _write_metrics(Path(config.out), metrics, finished)


def load_seed_metrics(folder: str | os.PathLike) -> dict[int, dict]:
    """``{seed: metrics}`` of the runs kept as ``folder/seed<K>/metrics.json`` (the files
    :func:`evaluate_stages` writes, e.g. the book's ``cyclelib.book_results("cycada/<pair>")``), in seed order.
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


def _finished_stages(config: CyCADAConfig, context: RunContext, read: dict[str, dict | None]) -> dict[str, dict]:
    """stage -> its complete checkpoint trained with this config's options, from ``read`` (the
    checkpoints read already) or else read now; another configuration's stage is left out with a
    note: it is not a result of this one."""
    finished = {}
    for stage in STAGES:
        try:
            ckpt = read[stage] if stage in read else stage_checkpoint(config, stage, context)
        except ValueError as e:
            print(f"cycada: not evaluated: {e}", file=sys.stderr)
            continue
        if ckpt is not None and stage_complete(ckpt):
            finished[stage] = ckpt
    return finished


def _online_judge(config: CyCADAConfig, finished: dict[str, dict], device: torch.device) -> nn.Module | None:
    """The online semantic judge as the finished pixel stage's checkpoint keeps it (the last plug-in of its
    generator terms, see :func:`~cyclelib.semantic.online_judge`); None without one: another semantic judge, no
    finished pixel stage, or a checkpoint written before cyclelib kept the judge."""
    saved = config.semantic_judge == "online" and "pixel" in finished and finished["pixel"]["training"].get(
        "generator_terms")
    if not saved:
        return None
    judge = build_task_network(classifier_name(config), domain_classes(config.source))
    return load_weights(judge, saved[-1]["weights"], f"{stage_path(config, 'pixel')} (its online judge)").to(device)


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
