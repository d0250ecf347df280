"""The data CyCADA's stages train on: a domain's split as a stage reads it (:func:`load_domain`,
:func:`training_domain`) and the translated source of the pixel_only and feature stages
(:func:`translated_source`): the pixel stage's translation, or a domain that holds one already
(``CyCADAConfig.translated_source``, e.g. the CyCADA release's GTA5 translated to look like Cityscapes).
"""
from __future__ import annotations

from torch import nn
from torch.utils.data import Dataset

from .config import CyCADAConfig
from .data import RandomReads
from .distributed import RunContext
from .metrics import translate_dataset
from .names import is_driving_domain, is_segmentation_domain
from .segmentation import evaluation_domain, labelled_domain, translated_scenes


def load_domain(config: CyCADAConfig, name: str, split: str) -> Dataset:
    """Domain ``name`` as ``(image [3, image_size, image_size] in [-1, 1], label or label map)`` pairs; driving
    scenes of the train split ``crop_size`` x ``crop_size`` where it is given, of the test split whole, at full
    label resolution (:func:`~cyclelib.segmentation.evaluation_domain`)."""
    if split == "test" and is_segmentation_domain(name):
        return evaluation_domain(name, config.image_size)
    crop = config.crop_size if split == "train" else None
    return labelled_domain(name, split, size=config.image_size, channels=3, crop=crop)


def training_domain(config: CyCADAConfig, name: str) -> Dataset:
    """The train split of domain ``name`` as a classifier stage reads it: a domain that draws as it reads
    (driving scenes: random crops) with its draws seeded per item and epoch (:class:`~cyclelib.data.RandomReads`),
    as the pixel and feature stages draw them; other domains as they are."""
    return drawn(load_domain(config, name, "train"), config)


def drawn(domain: Dataset, config: CyCADAConfig) -> Dataset:
    """``domain`` for a reader that asks by index only: one that draws as it reads (driving scenes' crops) with
    its draws seeded per item and epoch (:class:`~cyclelib.data.RandomReads`), any other as it is."""
    return RandomReads(domain, config.seed) if hasattr(domain, "get") else domain


def translated_source(config: CyCADAConfig, translator: nn.Module | None, context: RunContext) -> Dataset:
    r"""The source train split translated to look like the target, with its labels.

    With ``config.translated_source`` it is that domain's train split, read as the source is (driving scenes in
    ``crop_size`` crops and flips), and ``translator`` is not used: the release's feature stage trains on its
    published translation of GTA5 (jhoffman/cycada_release, scripts/train_fcn_adda.sh line 26, ``src='cyclegta5'``,
    read as the script's first ``--dataset``, line 46). Else the source translated by :math:`G_{S\to T}`
    (``translator``) once: as tensors (:func:`~cyclelib.metrics.translate_dataset`), driving scenes as PNG files in
    the run folder (:func:`~cyclelib.segmentation.translated_scenes`)."""
    if config.translated_source is not None:
        return load_domain(config, config.translated_source, "train")
    if translator is None:
        raise ValueError("the translated source needs the pixel stage's G_{S->T} (translator) or translated_source")
    if is_driving_domain(config.source):
        return translated_scenes(config, translator, context)
    return translate_dataset(translator.to(context.device), load_domain(config, config.source, "train"))
