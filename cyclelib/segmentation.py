r"""What CyCADA's stages do differently for semantic segmentation (``task="segmentation"``).

The stages are those of :mod:`cyclelib.cycada`, run by the same :class:`~cyclelib.train.Trainer`;
this module holds what depends on the task:

- the domains (:func:`segmentation_domain`): the offline digit scenes ``mnist-scenes`` ->
  ``mnistm-scenes`` (:mod:`cyclelib.scenes`) and ``gta5:PATH`` -> ``cityscapes:PATH``
  (:mod:`cyclelib.driving`), items ``(image [3, S, S], labels [S, S])``;
- the task loss (:func:`task_loss`): per pixel, with the ignore label 255 and, on the digit
  scenes, :data:`~cyclelib.scenes.SCENE_CLASS_WEIGHTS` (the release's ``supervised_loss``,
  jhoffman/cycada_release ``scripts/train_fcn.py`` lines 41-45 and ``scripts/train_fcn_adda.py``
  lines 55-59, whose ``--cls_weights`` file, lines 157-160, weights the classes);
- the feature-level game (:func:`feature_game`): the release's output-space discriminator
  (``--discrim_score``, train_fcn_adda.py lines 143-149) on the score maps, with the source and
  target networks sharing their weights (``--weights_shared``, lines 136-137, as
  ``scripts/train_fcn_adda.sh`` runs it);
- the evaluation (:func:`evaluate_segmentation`): mIoU, pixel accuracy and per-class IoU on the
  whole target test split (:func:`~cyclelib.metrics.segmentation_metrics`).

The pixel stage needs nothing here: :func:`~cyclelib.losses.semantic_loss` is per pixel when its
judge is a segmenter (the frozen f_S's per-pixel argmax is the target of G(x)'s scores).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

from . import files, losses
from .classifiers import FeatureDiscriminator
from .digits import DigitDomain, digit_domain
from .distributed import RunContext
from .driving import CITYSCAPES_CLASSES, DrivingScenes, cityscapes, gta5
from .images import write_image
from .folders import num_classes
from .metrics import segmentation_metrics
from .modes import eval_mode
from .names import SCENE_DOMAINS, check_crop_domain, is_segmentation_domain
from .plots import plot_confusion_matrix, save_image_grid
from .scenes import SCENE_CLASS_WEIGHTS, SCENE_NAMES, SceneDomain, scene_domain
from .segnets import ScoreDiscriminator
from .tiles import translate_image

# The split each CyCADA split reads: GTA5 is all training data in the release (its split.mat is optional
# here), so the source "test" images (f_S's source mIoU, label preservation) are training images; Cityscapes'
# test split has no public labels, so its val split is the test split, as in the release (scripts/eval_fcn.py).
DRIVING_SPLITS = {"gta5": {"train": "all", "test": "all"}, "cityscapes": {"train": "train", "test": "val"}}


def labelled_domain(name: str, split: str = "train", size: int = 32, channels: int = 3, root=None,
                    download: bool = False, crop: int | None = None) -> DigitDomain | SceneDomain | DrivingScenes:
    """A labelled domain by name, of either task: a digit domain or ``folder:PATH``
    (:func:`~cyclelib.digits.digit_domain`, with its ``root`` and ``download``), or a segmentation
    domain (:func:`segmentation_domain`, with its ``crop``), whose items are ``(image, label map)``."""
    if is_segmentation_domain(name):
        return segmentation_domain(name, split, size, channels, crop)
    check_crop_domain(name, crop)
    return digit_domain(name, split, size, channels, root, download)


def segmentation_domain(name: str, split: str, size: int, channels: int = 3,
                        crop: int | None = None) -> SceneDomain | DrivingScenes:
    """Segmentation domain ``name`` of ``split`` (``train``/``test``) at ``size``: digit scenes of
    ``size`` x ``size`` pixels, or driving scenes resized to a shorter side of ``size`` with a
    ``size`` x ``size`` crop, or a ``crop`` x ``crop`` crop and a horizontal flip; random where the reader passes
    a generator (as the pixel stage's), else centred and unflipped. Always RGB: ``channels`` must be 3.
    ``crop`` is refused for the digit scenes (:func:`~cyclelib.names.check_crop_domain`)."""
    if channels != 3:
        raise ValueError(f"segmentation domain {name!r} is read in RGB only (channels 3), got channels {channels}")
    check_crop_domain(name, crop)
    if name in SCENE_DOMAINS:
        return scene_domain(name, split, size=size)
    # A crop comes with a random horizontal flip, as the release's augmentation (cycada/transforms.py lines 79-89,
    # called with flip=True by cycada/data/adda_datasets.py lines 62-64 wherever a crop_size is given).
    return _driving(name, split, size=size, crop=crop or size, flip=crop is not None)


def _driving(name: str, split: str, **options) -> DrivingScenes:
    """Driving-scene domain ``name`` (``gta5:PATH``, ``cityscapes:PATH``) of CyCADA's ``split``, read with
    ``options`` (:class:`~cyclelib.driving.DrivingScenes`)."""
    kind, root = name.split(":", 1)
    if split not in DRIVING_SPLITS[kind]:
        raise ValueError(f"unknown split {split!r}; valid values: {', '.join(DRIVING_SPLITS[kind])}")
    return {"gta5": gta5, "cityscapes": cityscapes}[kind](root, DRIVING_SPLITS[kind][split], **options)


def evaluation_domain(name: str, size: int) -> SceneDomain | DrivingScenes:
    """The test split of segmentation domain ``name`` as the evaluation reads it: the digit scenes as
    :func:`segmentation_domain` gives them; driving scenes whole, each image at a shorter side of ``size``
    (the scale the networks trained at) with its labels at full resolution, to which the scores are resized
    (:func:`~cyclelib.metrics.segmentation_metrics`): the release's scripts/eval_fcn.py measures whole val
    frames against their labels as they are (lines 46-49)."""
    if name in SCENE_DOMAINS:
        return scene_domain(name, "test", size=size)
    return _driving(name, "test", size=size, full_labels=True)


def translated_scenes(config, translator: nn.Module, context: RunContext) -> DrivingScenes:
    r"""The train split of ``config.source``'s driving scenes translated by :math:`G_{S\to T}` (``translator``),
    with their labels, for the pixel_only and feature stages. Each whole frame, read at a shorter side of
    ``image_size``, is translated once (padded to the generator's multiple, :func:`~cyclelib.tiles.translate_image`)
    and written as a PNG file, ``OUT/translated/NNNNNN.png`` in the source's order; the stages read them as they
    read the source (``crop_size`` crops and flips). Kept as float32 tensors, GTA5's 24,966 frames at a shorter
    side of 1024 (1863 x 1024) would take about 570 GB; the release too trains on translated frames kept as PNG
    files (cyclegta.zip).
    ``OUT/translated/made_by.json`` records the SHA-256 of the generator's weights, the image size and the
    number of frames: a folder made otherwise is translated again. (These stages never run under torchrun.)"""
    out = Path(config.out) / "translated"
    whole = _driving(config.source, "train", size=config.image_size)
    paths = [out / f"{i:06d}.png" for i in range(len(whole))]
    made_by = {"generator_sha256": weights_sha256(translator), "image_size": config.image_size, "frames": len(paths)}
    if _made_by(out / "made_by.json") != made_by:
        (out / "made_by.json").unlink(missing_ok=True)  # until every frame is written again, no record holds
        translator = translator.to(context.device)
        with eval_mode(translator), torch.no_grad():
            for i, path in enumerate(paths):
                image = whole[i][0][None].to(context.device)  # [1, 3, H, W]
                write_image(translate_image(translator, image)[0], path)
        files.write_json(out / "made_by.json", made_by)  # last: a folder cut short has none
    pairs = [(path, labels) for path, (_, labels) in zip(paths, whole.pairs)]
    return DrivingScenes(pairs, whole.map_ids, size=config.image_size, crop=config.crop_size or config.image_size,
                         flip=config.crop_size is not None)


def weights_sha256(module: nn.Module) -> str:
    """The SHA-256 of ``module``'s state: each entry's name and bytes, in order."""
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _made_by(path: Path) -> dict | None:
    """What ``path`` says made a translated folder; None where it is missing or unreadable (translate again)."""
    try:
        return files.read_json(path, "", expect=dict)
    except (OSError, ValueError):
        return None


def eval_batch_size(name: str) -> int:
    """Test images a batch: whole driving frames one at a time, as eval_fcn.py's loader (line 49), for
    they differ in size (GTA5's) and are large; the digit scenes 8."""
    return 8 if name in SCENE_DOMAINS else 1


def domain_classes(name: str) -> int:
    """How many classes a source domain of either task has: a segmentation domain's (:func:`class_names`),
    else :func:`~cyclelib.folders.num_classes` (its class folders, or the 10 digits)."""
    return len(class_names(name)) if is_segmentation_domain(name) else num_classes(name)


def class_names(name: str) -> tuple[str, ...]:
    """The classes of segmentation domain ``name``: background and the ten digits, or Cityscapes' 19."""
    if not is_segmentation_domain(name):
        raise ValueError(f"{name!r} is not a segmentation domain")
    return SCENE_NAMES if name in SCENE_DOMAINS else CITYSCAPES_CLASSES


def task_loss(config) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    r"""The task loss of ``config``'s stages: :func:`~cyclelib.losses.task_loss` for classification;
    for segmentation :func:`~cyclelib.losses.segmentation_loss` (ignore label 255) weighted by
    :data:`~cyclelib.scenes.SCENE_CLASS_WEIGHTS` when the source is a digit-scene domain (their
    background covers about 97% of the pixels), unweighted on GTA5 (the release's script runs without
    ``--cls_weights``)."""
    if config.task != "segmentation":
        return losses.task_loss
    weights = torch.tensor(SCENE_CLASS_WEIGHTS) if config.source in SCENE_DOMAINS else None
    return partial(_weighted_loss, weights)


def _weighted_loss(weights: torch.Tensor | None, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return losses.segmentation_loss(scores, labels, None if weights is None else weights.to(scores.device))


def feature_game(config) -> dict:
    """The keyword arguments of :class:`~cyclelib.classifiers.FeatureAlignment` for ``config``'s task:
    the feature-level discriminator (digits: the release's MLP on logits, 500 hidden units;
    segmentation: :class:`~cyclelib.segnets.ScoreDiscriminator` on score maps, width 512), each of
    width ``d_feat_width`` when given; and for segmentation its task loss, shared weights and the release's
    window of 100 batches for the gate (:class:`~cyclelib.classifiers.FeatureAlignment`)."""
    k, width = domain_classes(config.source), config.d_feat_width
    if config.task != "segmentation":
        return {"discriminator": FeatureDiscriminator(k, hidden_dim=width or 500)}
    return {"discriminator": ScoreDiscriminator(k, width=width or 512), "task_loss": task_loss(config), "shared": True,
            "gate_window": 100}


def _finite(values: list[float]) -> list[float | None]:
    return [None if v != v else v for v in values]  # JSON has no nan: an absent class is null


def evaluate_segmentation(config, results: dict[str, nn.Module], judges: dict[str, nn.Module],
                          translator: nn.Module | None, source_test, target_test, out: Path) -> dict:
    """The segmentation part of ``metrics.json``: per result (``source_only``, ... ``target_oracle``,
    its network in ``results``), its mIoU on the target test split under the result's name (the headline,
    as a classifier's accuracy is), and its ``pixel_accuracy``, ``class_iou`` (null for a class neither
    in the labels nor predicted) and ``confusion`` under those keys; ``source_test_miou`` (f_S on the
    source test split); with a translator, ``label_preservation`` (f_S's mIoU on translated source test
    scenes against their labels) and ``oracle_label_preservation`` (the oracle's), from ``judges``
    (``{"source": f_S, "oracle": ...}``, those finished). Writes ``out/confusion/<result>.png`` and
    ``out/samples.png`` (scenes, translations, predictions and ground truth)."""
    k = domain_classes(config.source)
    metrics: dict = {"metric": "miou", "classes": list(class_names(config.source)), "pixel_accuracy": {},
                     "class_iou": {}, "confusion": {}}
    target_batch, source_batch = eval_batch_size(config.target), eval_batch_size(config.source)
    for key, net in results.items():
        found = segmentation_metrics(net, target_test, k, target_batch)
        metrics[key] = found["miou"]
        metrics["pixel_accuracy"][key], metrics["confusion"][key] = found["pixel_accuracy"], found["confusion"]
        metrics["class_iou"][key] = _finite(found["class_iou"])
        plot_confusion_matrix(found["confusion"], out / "confusion" / f"{key}.png",
                              title=f"{key} on {config.target} test: mIoU {found['miou']:.3f}")
    if "source" in judges:
        metrics["source_test_miou"] = segmentation_metrics(judges["source"], source_test, k, source_batch)["miou"]
    if translator is not None:
        for stage, key in (("source", "label_preservation"), ("oracle", "oracle_label_preservation")):
            if stage in judges:
                metrics[key] = segmentation_metrics(judges[stage], source_test, k, source_batch,
                                                    transform=partial(translate_image, translator))["miou"]
    _save_samples(results, translator, source_test, target_test, k, out / "samples.png")
    return metrics


def colour_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label maps ``[N, H, W]`` as images ``[N, 3, H, W]`` in ``[-1, 1]``: one colour per class of
    matplotlib's ``tab20`` (background, class 0, black on the digit scenes' black), 255 white."""
    from matplotlib import colormaps

    palette = torch.tensor([colormaps["tab20"](i % 20)[:3] for i in range(num_classes)] + [(1.0, 1.0, 1.0)])
    palette[0] = 0.0
    index = torch.where(labels == 255, num_classes, labels.clamp(0, num_classes - 1))
    return (palette[index] * 2 - 1).permute(0, 3, 1, 2)


@torch.no_grad()
def _save_samples(results: dict[str, nn.Module], translator: nn.Module | None, source_test, target_test,
                  k: int, path: Path, n: int = 4) -> None:
    """The first ``n`` source test scenes with their translation and labels, and the first ``n`` target
    test scenes with each result's prediction and their labels, one row each."""
    n = min(n, len(source_test), len(target_test))
    (x_s, y_s), (x_t, y_t) = (_first(split, n) for split in (source_test, target_test))
    rows, names = [x_s, colour_labels(y_s, k)], ["source", "source labels"]
    nets = [*results.values(), *([translator] if translator is not None else [])]
    with eval_mode(*nets):  # each module's own mode given back afterwards
        if translator is not None:
            rows.insert(1, translate_image(translator, x_s.to(next(translator.parameters()).device)).float().cpu())
            names.insert(1, "G_S->T(source)")
        rows.append(x_t)
        names.append("target")
        for key, net in results.items():
            scores = net(x_t.to(next(net.parameters()).device))  # [n, K, h, w], h and w as the network rounds
            scores = nn.functional.interpolate(scores.float(), size=x_t.shape[-2:], mode="bilinear")
            rows.append(colour_labels(scores.argmax(1).cpu(), k))
            names.append(key)
    rows.append(colour_labels(y_t, k))
    names.append("target labels")
    save_image_grid(rows, names, path)


def _first(split, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` items of a test split, images [n, 3, H, W] and labels [n, H, W], all at the first
    image's size: whole driving frames differ in size, and their labels are at full resolution."""
    items = [split[i] for i in range(n)]
    size = tuple(items[0][0].shape[-2:])
    images = [x if tuple(x.shape[-2:]) == size else
              nn.functional.interpolate(x[None], size=size, mode="bilinear")[0] for x, _ in items]
    labels = [y if tuple(y.shape) == size else
              nn.functional.interpolate(y[None, None].float(), size=size, mode="nearest")[0, 0].long() for _, y in items]
    return torch.stack(images), torch.stack(labels)
