"""Weights: official ``.pth`` files, safetensors exports, and CycleGAN models built from checkpoints.

:func:`load_official` and :func:`save_official` read and write the files of the official code
(``latest_net_G_A.pth``, the published ``horse2zebra.pth``, ...); :func:`export_safetensors`
writes any model or checkpoint as a ``.safetensors`` file for sharing (read back by
:func:`~cyclelib.checkpoints.load_checkpoint`); :func:`load_cyclegan` builds a
:class:`~cyclelib.cyclegan.CycleGAN` from a cyclelib checkpoint, its config checked against its
tensors first (:func:`check_cyclegan_shapes`); :func:`load_release_segmenter` reads the CyCADA release's
segmenters. Files are read and written as
:mod:`cyclelib.checkpoints` reads and writes them.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from . import integrity
from .checkpoints import (FORMAT_VERSION, is_checkpoint, load_checkpoint, load_weights, make_checkpoint, mismatches,
                          save_checkpoint)
from .config import CycleGANConfig, recorded_options
from .cyclegan import CycleGAN
from .files import atomic_write
from .names import BATCH_NORMS, RELEASE_SEGMENTERS
from .networks import build_discriminator, build_generator
from .segnets import build_segmenter


def check_cyclegan_shapes(state: dict, source: str = "checkpoint") -> CycleGANConfig:
    """The :class:`CycleGANConfig` of a loaded CycleGAN checkpoint, once its four networks,
    built from that config on the meta device (shapes only, no memory), are known to take the
    stored tensors; else a ``ValueError`` naming ``source``. Call it before building the model:
    a damaged or hostile config (``ngf=100000``) would otherwise allocate hundreds of GB, and
    one declaring more blocks or layers than the file holds tensors (``resnet_100000blocks``)
    is refused before building even on the meta device would take minutes."""
    raw, stored = state["config"], state["nets"]
    if not (isinstance(raw, Mapping) and isinstance(stored, Mapping)
            and all(isinstance(t, torch.Tensor) for t in stored.values())):
        raise ValueError(f"{source} is not a CycleGAN checkpoint: its config or nets is not a mapping (of tensors)")
    depth = _declared_depth(raw)
    if depth > len(stored):
        raise ValueError(f"{source} does not fit the networks its config declares: {depth} blocks or layers in "
                         f"one network, {len(stored)} tensors in the file")
    try:
        # compile off: for translating a few images, compiling would only delay the first one
        c = CycleGANConfig(**{**recorded_options(raw), "compile": False})
        gen = dict(width=c.ngf, norm=c.norm, dropout=c.dropout, init=None)
        dis = dict(width=c.ndf, n_layers=c.n_layers_D, norm=c.norm, init=None)
        with torch.device("meta"):
            nets = {"G_A": build_generator(c.netG, c.input_nc, c.output_nc, noise_nc=c.noise_nc,
                                           noise_injection=c.noise_injection, **gen),
                    "G_B": build_generator(c.netG, c.output_nc, c.input_nc, **gen),
                    "D_A": build_discriminator(c.netD, c.output_nc, **dis),
                    "D_B": build_discriminator(c.netD, c.input_nc, **dis)}
    except (TypeError, ValueError, RuntimeError) as e:  # e.g. ngf=8.5, or ngf=10**12 (a size overflow)
        raise ValueError(f"{source} holds an invalid CycleGAN config: {e}") from None
    expected = {f"{name}.{k}": v for name, net in nets.items() for k, v in net.state_dict().items()}
    problems = mismatches(expected, stored)
    if problems:
        raise ValueError(f"{source} does not fit the networks its config declares: {'; '.join(problems)}")
    return c


def _declared_depth(config: Mapping) -> int:
    """The blocks of a ``resnet_<n>blocks`` netG, the levels of a ``unet_<2^n>`` one, or the
    ``n_layers_D`` of an ``n_layers`` netD that ``config`` declares, whichever is most; each of them
    holds at least one tensor, and the time to build them grows with their number."""
    netG = str(config.get("netG", ""))
    digits = re.sub(r"\D", "", netG)[:30]  # more digits would be no valid name either
    size = int(digits) if digits else 0
    layers = config.get("n_layers_D") if config.get("netD") == "n_layers" else 0
    return max(size if netG.startswith("resnet") else size.bit_length(), layers if isinstance(layers, int) else 0)


def cyclegan_from_checkpoint(state: dict, source: str = "checkpoint") -> CycleGAN:
    """A :class:`CycleGAN` (eval mode, CPU) holding the weights of a loaded cyclelib checkpoint
    (shapes checked first, see :func:`check_cyclegan_shapes`)."""
    config = check_cyclegan_shapes(state, source)
    model = CycleGAN(config)
    load_weights(model, state["nets"], source)
    return model.eval()


def load_cyclegan(path: str | os.PathLike, device: str | torch.device = "cpu") -> CycleGAN:
    """A :class:`CycleGAN` with the weights of the cyclelib checkpoint at ``path`` (eval mode)."""
    state = load_checkpoint(path)
    if not is_checkpoint(state, "cyclegan"):
        raise ValueError(f"{path} is not a cyclelib CycleGAN checkpoint; "
                         "for an official generator .pth use cyclelib.load_official")
    return cyclegan_from_checkpoint(state, str(path)).to(device)


# --------------------------------------------------------------------------- safetensors


def export_safetensors(model_or_checkpoint: nn.Module | Mapping | str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write the weights of a model or checkpoint to a ``.safetensors`` file (atomically).

    Accepts a module (a :class:`~cyclelib.cyclegan.CycleGAN` keeps its config), a
    state_dict, a cyclelib checkpoint dict of any kind, or the path of a checkpoint file
    (cyclelib ``.pt`` or official ``.pth``). A cyclelib checkpoint keeps its ``kind``,
    ``config`` and ``meta`` (as metadata) and its weights, not the training state: the file
    is for sharing and inference; resuming needs the ``.pt``. :func:`load_checkpoint`,
    :func:`load_official` and :func:`~cyclelib.translate.load_generator` read it back.
    """
    obj = model_or_checkpoint
    if isinstance(obj, (str, os.PathLike)):
        obj = load_checkpoint(obj)
    if isinstance(obj, CycleGAN):
        obj = make_checkpoint("cyclegan", asdict(obj.config), obj.state_dict())
    elif isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    metadata = {}
    if is_checkpoint(obj):
        metadata = {"kind": obj["kind"], "version": str(FORMAT_VERSION), "config": json.dumps(obj["config"]),
                    "meta": json.dumps(obj.get("meta", {}))}
        obj = obj["nets"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("export_safetensors needs a module, a state_dict (names -> tensors), a cyclelib "
                         f"checkpoint with 'nets', or a checkpoint path; got {type(model_or_checkpoint).__name__}")
    # safetensors stores dense, unshared CPU buffers.
    tensors = {name: t.detach().cpu().contiguous().clone() for name, t in obj.items()}
    # The format has no checksum of its own: a flipped bit would load as a wrong weight.
    metadata["crc32"] = json.dumps({name: integrity.crc32(t) for name, t in tensors.items()})
    # Nor has the metadata: a flipped bit in it could change the config.
    metadata["metadata_crc32"] = integrity.metadata_crc32(metadata)
    data = safetensors_bytes(tensors, metadata)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile


def _clean_official_state_dict(state: Mapping[str, torch.Tensor], net: nn.Module) -> dict:
    """Undo what wrappers and old PyTorch versions did to an official state_dict.

    - Strips ``module.`` (saved from DataParallel) and ``_orig_mod.`` (torch.compile).
    - Drops InstanceNorm ``running_mean``/``running_var``/``num_batches_tracked``: before
      PyTorch 0.4 InstanceNorm kept running statistics it never used, and the
      published pretrained models still carry them. The official ``test.py`` drops
      them the same way (``__patch_instance_norm_state_dict``).
    - Adds a zero BatchNorm ``num_batches_tracked`` where files from before PyTorch 0.4
      lack it (it only matters for momentum=None, which these networks do not use).
    """
    state = dict(state)
    for prefix in _WRAPPER_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    for name, module in net.named_modules():
        if isinstance(module, nn.InstanceNorm2d) and not module.track_running_stats:
            for leaf in ("running_mean", "running_var", "num_batches_tracked"):
                state.pop(f"{name}.{leaf}", None)
        elif isinstance(module, nn.BatchNorm2d) and f"{name}.running_mean" in state:
            state.setdefault(f"{name}.num_batches_tracked", torch.tensor(0))
    return state


def _mismatch_hint(state: Mapping[str, torch.Tensor], norm: str) -> str:
    """Guess which config option is wrong from what the checkpoint contains."""
    # BatchNorm layers have a weight next to their running_mean; the legacy InstanceNorm
    # statistics of old official files do not (InstanceNorm there has no affine weight).
    has_batch_stats = any(key.endswith(".running_mean") and key[:-len("running_mean")] + "weight" in state
                          for key in state)
    if has_batch_stats and norm not in BATCH_NORMS:
        return "the file has BatchNorm statistics (running_mean): try norm='batch'"
    if norm in BATCH_NORMS and not has_batch_stats:
        return "the file has no BatchNorm statistics: try norm='instance' (CycleGAN's default) or 'none'"
    return ("check arch (e.g. resnet_9blocks vs resnet_6blocks vs unet_256), width (ngf/ndf), "
            "input_nc/output_nc, n_layers and dropout (it shifts resnet block indices)")


def load_official(state_dict_or_path: Mapping[str, torch.Tensor] | str | os.PathLike, kind: str, arch: str,
                  input_nc: int = 3, output_nc: int = 3,
                  width: int = 64, norm: str = "instance", n_layers: int = 3,
                  dropout: bool = False, sha256: str | None = None, source: str | None = None) -> nn.Module:
    """Build a network and load official weights into it (strict: every key must match).

    ``state_dict_or_path``: a state_dict or the path of a ``.pth`` file written by the
    official code (``latest_net_G_A.pth``, ``horse2zebra.pth``, ...) or by
    :func:`save_official`; files are read as :func:`load_checkpoint` reads them (verified
    against ``sha256`` when given). ``kind`` is ``"G"`` or ``"D"``; the other keywords are
    those of :func:`~cyclelib.networks.build_generator` /
    :func:`~cyclelib.networks.build_discriminator` (a D ignores ``output_nc`` and
    ``dropout``; a G ignores ``n_layers``). ``source`` names the weights in errors (default: the
    path, or "state_dict"; give the file a state_dict was read from). The published pretrained CycleGAN models are
    ``kind="G", arch="resnet_9blocks", norm="instance"``.

    Returns the network in training mode; call ``.eval()`` before translating.
    """
    if kind == "G":
        net = build_generator(arch, input_nc, output_nc, width, norm, dropout, init=None)
        config = dict(kind=kind, arch=arch, input_nc=input_nc, output_nc=output_nc, width=width,
                      norm=norm, dropout=dropout)
    elif kind == "D":
        net = build_discriminator(arch, input_nc, width, n_layers, norm, init=None)
        config = dict(kind=kind, arch=arch, input_nc=input_nc, width=width, norm=norm, n_layers=n_layers)
    else:
        raise ValueError(f"unknown kind {kind!r}; valid values: G (generator), D (discriminator)")

    state = state_dict_or_path
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        source = source or str(state_dict_or_path)
        state = load_checkpoint(state_dict_or_path, sha256)
    source = source or "state_dict"
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source} is not a state_dict (a flat mapping of names to tensors); "
                         "if it is a full checkpoint, pass the network's entry instead")
    hint = _mismatch_hint(state, norm)  # before cleaning, which drops running statistics
    state = _clean_official_state_dict(state, net)

    problems = mismatches(net.state_dict(), state)
    if problems:
        settings = ", ".join(f"{k}={v!r}" for k, v in config.items())
        raise ValueError(f"{source} does not fit the network built with {settings}: "
                         f"{'; '.join(problems)}. Hint: {hint}")
    net.load_state_dict(state, strict=True)
    return net


# The last layer of each release segmenter, whose output channels are its classes.
_CLASS_LAYERS = {"drn26": "fc.weight", "fcn8s": "vgg_head.6.weight"}


def load_release_segmenter(path: str | os.PathLike, classifier: str = "drn26", num_classes: int = 19,
                           sha256: str | None = None) -> nn.Module:
    """A segmenter of the CyCADA release's layout (``classifier`` ``drn26``: :class:`~cyclelib.segnets.DRN26`,
    or ``fcn8s``) of ``num_classes`` classes with the weights of the release's file ``path`` (e.g.
    ``drn26-gta5-iter115000.pth``, :data:`~cyclelib.download.RELEASE_MODELS`), in eval mode.

    The release writes these files with ``torch.save(net.state_dict(), ...)`` of the bare network
    (jhoffman/cycada_release scripts/train_fcn.py lines 76 and 147, scripts/train_fcn_adda.py lines 134
    and 365-382: no DataParallel, so no ``module.`` prefix, and no upsampling layer: DRN's forward calls
    ``nn.functional.upsample``, cycada/models/drn.py line 237) and reads them with a strict
    ``load_state_dict`` (drn.py lines 161-174, through ``weights_init``: scripts/eval_fcn.py line 44,
    train_fcn_adda.sh line 49). The file is read as :func:`~cyclelib.checkpoints.load_checkpoint` reads it
    (``weights_only=True``, verified against ``sha256`` when given); a ``module.`` prefix (a copy saved from
    DataParallel) is stripped and BatchNorm's ``num_batches_tracked``, which files of PyTorch before 0.4.1
    lack, added. A file that does not fit (another number of classes, the other network, not a state_dict)
    is a ``ValueError`` naming it and each key or shape that differs.
    """
    if classifier not in RELEASE_SEGMENTERS:
        raise ValueError(f"unknown release segmenter {classifier!r}; valid values: {', '.join(RELEASE_SEGMENTERS)}")
    state = load_checkpoint(path, sha256)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state_dict of the CyCADA release (a flat mapping of names to tensors)"
                         + ("; it is a cyclelib checkpoint" if is_checkpoint(state) else ""))
    net = build_segmenter(classifier, num_classes)
    state = _clean_official_state_dict(state, net)
    problems = mismatches(net.state_dict(), state)
    if problems:
        looks = [f"; the file looks like a {name} of {state[key].shape[0]} classes"
                 for name, key in _CLASS_LAYERS.items() if key in state]
        raise ValueError(f"{path} is not a {classifier} of {num_classes} classes in the CyCADA release's layout: "
                         f"{'; '.join(problems)}{''.join(looks)}")
    net.load_state_dict(state, strict=True)
    return net.eval()


def _unwrap(net: nn.Module) -> nn.Module:
    """The network inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            net = net.module
        elif isinstance(getattr(net, "_orig_mod", None), nn.Module):
            net = net._orig_mod
        else:
            return net


def save_official(net: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``net``'s weights as the official code does: a state_dict of CPU tensors.

    Wrappers (DataParallel, DistributedDataParallel, torch.compile) are unwrapped so the
    keys are the official ones; the official ``torch.load`` + ``load_state_dict`` and
    :func:`load_official` both accept the file. The write is atomic (temporary file,
    fsync, rename): an interrupted save never leaves a half-written file at ``path``.
    """
    state = {key: value.detach().cpu() for key, value in _unwrap(net).state_dict().items()}
    return save_checkpoint(state, path)
