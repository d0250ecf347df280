"""The names every option of cyclelib takes, and the registries of network architectures,
without importing torch: the command line's help and checks read them before any command runs,
and the modules that hold the networks read them too (and add to the registries how each
architecture is built), so a name is declared once. The two rules on image sizes and channel
counts that the configs, the datasets and the image readers share are here too, stated once.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCALES = ("smoke", "cpu", "colab", "gpu")
AMP_MODES = ("none", "bf16", "fp16", "auto")
NORMS = ("instance", "batch", "syncbatch", "none")
BATCH_NORMS = ("batch", "syncbatch")  # batch norm, its statistics shared over processes or not
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")
NOISE_INJECTIONS = ("constant", "modulate")
GAN_MODES = ("lsgan", "vanilla", "wgangp", "hinge")
PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
IMPLEMENTATIONS = ("fast", "reference")  # of CycleGAN's training step
LR_POLICIES = ("linear", "step", "plateau", "cosine")  # the official get_scheduler's, stepped once per epoch
DIRECTIONS = ("AtoB", "BtoA")
EXPORT_FORMATS = ("onnx", "torchscript", "safetensors")
DIGIT_DOMAINS = ("mnist5k", "uci-digits", "mnistm5k", "mnist", "usps", "svhn", "mnistm")
# A labelled image folder given as a domain: "folder:PATH" (cyclelib.folders).
FOLDER_PREFIX = "folder:"
# CyCADA's tasks, and the domains of the segmentation one: the offline digit scenes (cyclelib.scenes) and the
# driving scenes read from their official layouts, "gta5:PATH" and "cityscapes:PATH" (cyclelib.driving).
TASKS = ("classification", "segmentation")
SCENE_DOMAINS = ("mnist-scenes", "mnistm-scenes")
DRIVING_PREFIXES = ("gta5:", "cityscapes:")
GTA5_PARTS = tuple(range(1, 11))  # the GTA5 site's parts 01_images.zip ... 10_images.zip (cyclelib.driving)
# The task networks of segmentation (cyclelib.segnets); *_imagenet: the same network starting from ImageNet weights.
SEGMENTERS = ("small_fcn", "fcn8s", "drn26", "fcn8s_imagenet", "drn26_imagenet")
# Digit domains whose colour carries information; every other one is grey digits.
COLOUR_DOMAINS = ("svhn", "mnistm", "mnistm5k")
# CyCADA's stages in the order they run (cyclelib.cycada says what each needs and stands for).
CYCADA_STAGES = ("source", "feature_only", "pixel", "pixel_only", "feature", "oracle")
# The judges of CyCADA's L_sem: a stage's classifier (source, feature_only), or one trained online (the release's)
SEMANTIC_JUDGES = ("source", "feature_only", "online")
SEMANTIC_TARGETS = ("argmax", "labels")  # what the S->T semantic term asks of G_{S->T}(x_s): f_S's reading, y_s
FEATURE_STARTS = ("source", "pixel_only")  # the CyCADA stages whose classifier the feature stage may start from
# The CyCADA stages the release publishes a segmenter of (cyclelib.download.RELEASE_MODELS), and the segmenters
# built in the release's layout (cyclelib.segnets), which its files load into (CyCADAConfig.stage_weights).
RELEASE_STAGES = ("source", "pixel_only", "feature")
RELEASE_SEGMENTERS = ("drn26", "fcn8s", "drn26_imagenet", "fcn8s_imagenet")
# The optimisers of CyCADA's classifier and feature stages: Adam (the digit release's) or the segmentation
# release's SGD with momentum and weight decay (cyclelib.classifiers.make_optimizer)
OPTIMIZERS = ("adam", "sgd")
KID_SUBSETS = 100  # torch-fidelity's default and Binkowski et al.'s (the evaluate command shows it)


# Images are read as grayscale (1 channel) or RGB (3).
CHANNELS = (1, 3)
# The preprocess modes that resize to load_size and then crop crop_size.
RESIZE_THEN_CROP = ("resize_and_crop", "scale_width_and_crop")


def check_channels(channels: int, name: str = "channels") -> None:
    """A ``ValueError`` naming option ``name`` unless ``channels`` is one of :data:`CHANNELS`."""
    if channels not in CHANNELS:
        raise ValueError(f"{name} must be 1 (images read as grayscale) or 3 (RGB), got {channels}")


def check_crop(preprocess: str, load_size: int, crop_size: int) -> None:
    """A ``ValueError`` when ``preprocess`` resizes to ``load_size`` and then crops a larger ``crop_size``."""
    if preprocess in RESIZE_THEN_CROP and crop_size > load_size:
        raise ValueError(f"crop_size ({crop_size}) must not exceed load_size ({load_size}) with preprocess "
                         f"{preprocess!r}, which resizes to load_size and then crops crop_size; preprocess "
                         f"'crop' or 'none' do not resize")


def is_folder_domain(name: str) -> bool:
    """Whether ``name`` is a labelled image folder, ``folder:PATH`` (:mod:`cyclelib.folders`)."""
    return str(name).startswith(FOLDER_PREFIX) and len(str(name)) > len(FOLDER_PREFIX)


def check_crop_domain(name: str, crop: int | None, option: str = "crop") -> None:
    """A ``ValueError`` naming ``option`` when a ``crop`` is asked of domain ``name`` that is not one of driving
    scenes: digits and digit scenes are drawn at the size they are read at, and a crop would cut the digits
    that are their labels."""
    if crop is not None and not is_driving_domain(name):
        raise ValueError(f"{option} {crop} applies to driving scenes (gta5:PATH, cityscapes:PATH), not to {name!r}, "
                         f"which is drawn at the size it is read at (image_size)")


def is_segmentation_domain(name: str) -> bool:
    """Whether ``name`` is a domain of (image, label map) items: a digit-scene domain, ``gta5:PATH`` or
    ``cityscapes:PATH``."""
    return name in SCENE_DOMAINS or is_driving_domain(name)


def is_driving_domain(name: str) -> bool:
    """Whether ``name`` is a domain of driving scenes read from files: ``gta5:PATH`` or ``cityscapes:PATH``."""
    return any(str(name).startswith(p) and len(str(name)) > len(p) for p in DRIVING_PREFIXES)


def task_mismatch(task: str, source: str, target: str, network: str) -> str | None:
    """What of a CyCADA run's domains and task network does not fit its ``task`` (naming the option), None
    if all fit: segmentation takes segmentation domains and :data:`SEGMENTERS`, classification neither."""
    segmenting = task == "segmentation"
    for option, name in (("source", source), ("target", target), ("classifier", network)):
        if (is_segmentation_domain(name) or name in SEGMENTERS) != segmenting:
            kind = "segmentation domain" if option != "classifier" else "segmenter"
            return (f"{option} {name!r} is {'not ' if segmenting else ''}a {kind}, and task {task!r} needs "
                    f"{'one' if segmenting else 'none'}: use --task {'classification' if segmenting else 'segmentation'}"
                    f" or another --{option} (segmentation domains: {', '.join(SCENE_DOMAINS)}, gta5:PATH, "
                    f"cityscapes:PATH; segmenters: {', '.join(SEGMENTERS)})")
    return None


def classifier_name(config) -> str:
    """The task network of a CyCADA run (a :class:`~cyclelib.config.CyCADAConfig`, or its options as a dict: a
    stage's record): DTN (3x32x32) when either domain is in colour or a folder of the user's images, else LeNet.

    This follows the release: LeNet for MNIST <-> USPS, DTN for SVHN -> MNIST. LeNet reads
    grey images, so colour (e.g. MNIST-M's) would be thrown away before it could help.
    """
    c = config if isinstance(config, Mapping) else vars(config)
    if c["classifier"] != "auto" or c.get("task") == "segmentation":  # segmentation's auto: small_fcn
        return c["classifier"] if c["classifier"] != "auto" else "small_fcn"
    domains = (c["source"], c["target"])
    return "dtn" if set(domains) & set(COLOUR_DOMAINS) or any(map(is_folder_domain, domains)) else "lenet"


def translated_mismatch(task: str, source: str, translated: str | None) -> str | None:
    """What of a CyCADA run's ``translated_source`` does not fit (naming the option), None if it fits or is not
    given: it must be a segmentation domain of the ``source``'s kind (driving scenes for driving scenes, digit
    scenes for digit scenes), which has the source's classes and labels. Classification takes none: its pixel
    stage translates small digit images in minutes, and a folder of translated digits would have to match its
    class folders to the source's labels."""
    if translated is None:
        return None
    if task != "segmentation":
        return (f"translated_source applies to task segmentation only (driving or digit-scene domains), got task "
                f"{task!r}: classification trains on the pixel stage's translation of the source")
    driving = is_driving_domain(source)
    kind = "driving scenes (gta5:PATH, cityscapes:PATH)" if driving else f"digit scenes ({', '.join(SCENE_DOMAINS)})"
    if translated not in DOMAINS:
        return f"unknown translated_source {translated!r}; valid values: {kind}, as the source {source!r}"
    if not is_segmentation_domain(translated) or is_driving_domain(translated) != driving:
        return (f"translated_source {translated!r} is not of the source's kind: the source {source!r} is {kind}, and "
                f"translated_source must be too, with the source's classes and labels (the CyCADA release's "
                f"translated GTA5: gta5:DIR/cyclegta5, cyclelib download cyclegta5 --root DIR)")
    return None


def stage_weights(entries: Iterable[str] | None, task: str, network: str) -> dict[str, Path]:
    """The stages a CyCADA run makes of published networks instead of training them (its option
    ``stage_weights``: ``STAGE=FILE`` entries) as ``{stage: file}``. A ``ValueError`` naming the option for
    an entry whose stage is not one of :data:`RELEASE_STAGES` or is given twice, or where the run's ``task``
    is not segmentation or its ``network`` not one of :data:`RELEASE_SEGMENTERS`; a ``FileNotFoundError``
    for a file that is not there."""
    found: dict[str, Path] = {}
    for entry in entries or ():
        stage, _, file = entry.partition("=")
        if stage not in RELEASE_STAGES or not file:
            raise ValueError(f"stage_weights takes STAGE=FILE entries, got {entry!r}; valid values of STAGE: "
                             f"{', '.join(RELEASE_STAGES)}")
        if stage in found:
            raise ValueError(f"stage_weights gives the {stage} stage twice: {found[stage]} and {file}")
        found[stage] = Path(file).expanduser()
        if not found[stage].is_file():
            raise FileNotFoundError(f"stage_weights: {file} (the weights of the {stage} stage) is not a file")
    if found and (task != "segmentation" or network not in RELEASE_SEGMENTERS):
        raise ValueError(f"stage_weights loads segmenters in the CyCADA release's layout: it needs task segmentation "
                         f"and a classifier of {', '.join(RELEASE_SEGMENTERS)}, got task {task!r} and classifier "
                         f"{network!r}")
    return found


def domain_pair(spec: str) -> tuple[str, str] | None:
    """The two domains of ``spec`` = ``"a:b"``, each a digit domain, ``folder:PATH``, a digit-scene domain,
    ``gta5:PATH`` or ``cityscapes:PATH`` (e.g. ``"mnist5k:mnistm5k"``, ``"folder:shop:folder:/data/field"``),
    None if it is not such a pair. A folder's path must hold no colon."""
    prefixes = {p.rstrip(":") for p in (FOLDER_PREFIX, *DRIVING_PREFIXES)}
    parts, names = str(spec).split(":"), []
    while parts:
        word = parts.pop(0)
        names.append(f"{word}:{parts.pop(0)}" if word in prefixes and parts else word)
    ok = len(names) == 2 and all(n in DIGIT_DOMAINS or is_folder_domain(n) or is_segmentation_domain(n) for n in names)
    return (names[0], names[1]) if ok else None


def is_labelled_pair(spec: str) -> bool:
    """Whether ``spec`` names two labelled domains, ``"a:b"`` (:func:`domain_pair`): digit domains
    or image folders, read alike as ``(image, label)`` items."""
    return domain_pair(spec) is not None


@dataclass
class Architecture:
    """One family of networks of a :class:`Registry`: the names it answers to and how to build one.

    ``pattern`` is a regular expression a name must match in full; its groups go to ``build``
    (``build(match, *args)``). ``build`` and ``cls`` (the class ``build`` returns, by which
    :func:`~cyclelib.networks.fits` recognises the network) are filled in by the module that
    holds the networks, which imports torch; ``side_multiple(net)`` says what a generator's
    input sides must be multiples of to come back at their size.
    """

    pattern: str
    help: str
    build: Callable[..., Any] | None = None
    cls: type | None = None
    side_multiple: Callable[[Any], int] = lambda net: 1


class Registry:
    """Architectures by family name: the one list :func:`~cyclelib.networks.build_generator`,
    :func:`~cyclelib.networks.fits`, the config checks and the command line's help read.

    ``name in registry`` asks whether a name matches a family; iterating gives the help of each
    family (e.g. ``resnet_<n>blocks``), as the command line lists them.
    """

    def __init__(self, kind: str, **families: Architecture):
        self.kind, self.families = kind, dict(families)

    def register(self, family: str, *, build: Callable[..., Any], cls: type, pattern: str | None = None,
                 help: str | None = None, side_multiple: Callable[[Any], int] | None = None) -> None:
        """Add family ``family`` (``pattern`` and ``help`` required), or complete the declared one."""
        declared = self.families.get(family)
        if declared is None and (pattern is None or help is None):
            raise ValueError(f"a new {self.kind} family {family!r} needs a pattern and a help line")
        arch = declared or Architecture(pattern, help)
        arch.build, arch.cls = build, cls
        arch.pattern, arch.help = pattern or arch.pattern, help or arch.help
        arch.side_multiple = side_multiple or arch.side_multiple
        self.families[family] = arch

    def find(self, name: str) -> tuple[Architecture, re.Match]:
        """The family of ``name`` and its match; ``ValueError`` naming the valid values if none."""
        for arch in self.families.values():
            if m := re.fullmatch(arch.pattern, name):
                return arch, m
        raise self.unknown(name)

    def unknown(self, name: str) -> ValueError:
        """The error for a name no family takes (also raised by a ``build`` whose pattern matched a
        name it cannot build, e.g. ``unet_100``)."""
        return ValueError(f"unknown {self.kind} {name!r}; valid values: {self.help()}")

    def build(self, name: str, *args, **kwargs) -> Any:
        """A new network of architecture ``name`` (``build(match, *args, **kwargs)`` of its family)."""
        arch, match = self.find(name)
        return arch.build(match, *args, **kwargs)

    def of(self, net: Any) -> Architecture | None:
        """The family whose class ``net`` is an instance of, None if no family's."""
        return next((a for a in self.families.values() if a.cls is not None and isinstance(net, a.cls)), None)

    def help(self) -> str:
        return ", ".join(self)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(re.fullmatch(a.pattern, name) for a in self.families.values())

    def __iter__(self) -> Iterator[str]:
        return (arch.help for arch in self.families.values())


GENERATORS = Registry(
    "generator arch",
    resnet=Architecture(r"resnet_(\d+)blocks", "resnet_<n>blocks (n >= 1; official: resnet_9blocks, "
                                                    "resnet_6blocks)"),
    unet=Architecture(r"unet_(\d+)", "unet_<size> (size a power of two >= 32; official: unet_128, unet_256)"))
DISCRIMINATORS = Registry(
    "discriminator arch", basic=Architecture("basic", "basic"), n_layers=Architecture("n_layers", "n_layers"),
    pixel=Architecture("pixel", "pixel"))
# What --source and --target of CyCADA take (a registry: a folder's name is a pattern).
DOMAINS = Registry("domain", digits=Architecture("|".join(map(re.escape, DIGIT_DOMAINS)), ", ".join(DIGIT_DOMAINS)),
                   folder=Architecture(r"folder:.+", "folder:PATH (PATH/train/<class>/*, PATH/test/<class>/*)"),
                   scenes=Architecture("|".join(SCENE_DOMAINS), ", ".join(SCENE_DOMAINS)),
                   driving=Architecture(r"(gta5|cityscapes):.+", "gta5:PATH, cityscapes:PATH (their official layouts)"))
TASK_NETWORKS = Registry("classifier", lenet=Architecture("lenet", "lenet"), dtn=Architecture("dtn", "dtn"),
                         resnet18=Architecture("resnet18", "resnet18"),
                         resnet18_imagenet=Architecture("resnet18_imagenet", "resnet18_imagenet"),
                         **{name: Architecture(name, name) for name in SEGMENTERS})
# The official names, which a config takes without building a network to check them.
GENERATOR_ARCHS = ("resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256")
DISCRIMINATOR_ARCHS = tuple(DISCRIMINATORS.families)
