"""Files: checkpoints, safetensors, official weights and run folders.

Every file cyclelib writes is written atomically (a temporary file, fsync, rename) and
read without ever executing code. A checkpoint is a plain dict of tensors, numbers,
strings, lists and dicts, so ``torch.load(..., weights_only=True)`` can read it; anything
that would need the full pickle machinery (and could run code) is refused. Weights can
also be shared as ``.safetensors`` files, a format that holds tensors and strings only.
What is checked in every file read (format, checksums, finite values) is in :mod:`cyclelib.integrity`.

**One schema for every checkpoint** (format 2), whatever trained it::

    version   2
    kind      "cyclegan" | "classifier" | "feature": what ``nets`` holds
    config    the options that build the model (a CycleGANConfig, or {"classifier": name})
    nets      the model's state_dict
    meta      where it comes from, e.g. {"stage": "source", "cycada": {...}} for a CyCADA stage
    history   the loss rows of the run
    training  (optional) what an exact resume needs: step, epoch, optimisers, RNG states, ...

Format-1 files (cyclelib 0.1) are upgraded when read (:func:`load_checkpoint`).

A training run keeps its checkpoints in its folder: ``checkpoints/step_XXXXXXX.pt``
(the last few), ``checkpoint.pt`` (the latest) and ``checkpoint_best.pt`` (see
:func:`save_run_checkpoint`); :func:`load_run_checkpoint` resumes from the newest
readable one. This module depends on the models (it builds them from files); no model
depends on it.

Over 450 lines: the checkpoint schema, official and safetensors weights and the run folders
(lock, step files, fallback) are three concerns; the atomic writes (:mod:`cyclelib.files`) and
the checks of a weight file (:mod:`cyclelib.integrity`) have moved out, and the house-in-order
issue moves the run folders out next.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import warnings
from io import BytesIO
from collections.abc import Iterator, Mapping
from dataclasses import asdict, fields
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from . import integrity
from .config import CycleGANConfig, cycada_command
from .cyclegan import CycleGAN
from .files import atomic_write as _atomic_write, new_temporary as _new_temporary
from .networks import build_discriminator, build_generator

FORMAT_VERSION = 2
KINDS = ("cyclegan", "classifier", "feature")
LATEST, BEST, HISTORY = "checkpoint.pt", "checkpoint_best.pt", "checkpoints"
_STEP_FILE = re.compile(r"step_(\d+)\.pt")


def save_checkpoint(obj: dict, path: str | os.PathLike) -> Path:
    """Write ``obj`` with ``torch.save`` to ``path`` atomically (temporary file, fsync, rename).

    The bytes are made in memory first, so that a full disk fails as an ``OSError`` of the
    write (torch's own file writer would report it as an internal assertion)."""
    buffer = BytesIO()
    torch.save(obj, buffer)
    return _atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def load_checkpoint(path: str | os.PathLike, sha256: str | None = None) -> dict:
    """Read a checkpoint without running code; errors name the file and the cause.

    A cyclelib checkpoint comes back in the current schema (format-1 files are upgraded);
    other files (an official state_dict) as they are. The format is read from the file's
    first bytes, whatever its name: torch's zip format (torch >= 1.6, every cyclelib ``.pt``),
    torch's legacy format (older official ``.pth`` files) or safetensors; anything else is
    "not a checkpoint". What is verified:

    - ``sha256``, when given (e.g. published next to a download), must be the file's;
    - zip-format torch files: the CRC32 of every record (torch does not check them, and would
      load flipped bits as wrong weights); every torch file is read with ``weights_only=True``;
    - safetensors files: the CRC32s and the metadata checksum that :func:`export_safetensors`
      writes (see :func:`load_safetensors`);
    - every format: each floating-point tensor is finite (a NaN or Inf weight would load and
      translate to black images);
    - files without any checksum (the legacy format, and safetensors files written by other
      tools) can still load as wrong weights if damaged: a warning says so unless ``sha256``
      verified the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if sha256 is not None:
        integrity.check_sha256(path, sha256)
    form = integrity.file_format(path)
    if form == "safetensors":
        return load_safetensors(path, verified=sha256 is not None)
    if form is None:
        raise ValueError(f"{path} is not a checkpoint (unknown format): cyclelib reads torch files (zip or legacy "
                         "format) and safetensors files")
    if form == "zip":
        integrity.check_records(path)
    try:  # from a file object: given a name, torch.load itself picks a format by the suffix
        with open(path, "rb") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - damaged bytes raise all sorts (EOFError, IndexError, RuntimeError, ...)
        raise integrity.load_error(path, e) from None
    integrity.check_finite(path, state)
    if form == "legacy":
        integrity.warn_unverified(path, sha256 is not None, "torch's legacy format has no checksums")
    return _as_current(state, path)


# --------------------------------------------------------------------------- the schema


def make_checkpoint(kind: str, config: dict, nets: Mapping[str, torch.Tensor], meta: dict | None = None,
                    history: list | None = None, training: dict | None = None) -> dict:
    """A checkpoint dict in the one schema of this module (see its docstring)."""
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; valid values: {', '.join(KINDS)}")
    state = {"version": FORMAT_VERSION, "kind": kind, "config": dict(config), "nets": dict(nets),
             "meta": meta or {}, "history": history or []}
    if training is not None:
        state["training"] = training
    return state


def is_checkpoint(state: object, kind: str | None = None) -> bool:
    """Whether ``state`` is a cyclelib checkpoint (of ``kind``), not e.g. an official state_dict."""
    return (isinstance(state, Mapping) and state.get("kind") in KINDS and "nets" in state
            and (kind is None or state["kind"] == kind))


def _upgrade(state: dict, path: Path) -> dict:
    """A format-1 checkpoint (cyclelib 0.1) in the current schema.

    Format 1 had two layouts: CycleGAN runs (``nets`` and the training state at the top
    level) and CyCADA classifier stages (``kind: "cycada"``, the weights under ``state``).
    """
    if state.get("kind") == "cyclegan":
        training_keys = ("optimizers", "schedulers", "pools", "scaler", "rng", "epoch", "start", "step", "best",
                         "world_size", "total_steps")
        training = {k: state[k] for k in training_keys if k in state}
        if "step" in training:
            # Format 1 kept neither the loss sums since the last history row nor the loader seed:
            # a resume starts those afresh, as cyclelib 0.1 did.
            training.update(history_sums={}, loader_seed=None, best_since=training["step"])
            training.setdefault("total_steps", None)
        return make_checkpoint("cyclegan", state["config"], state["nets"], history=state.get("history"),
                               training=training or None)
    if state.get("kind") == "cycada" and "state" in state:
        stage, config = state["stage"], state["config"]
        if stage in ("feature", "feature_only"):
            nets = {**{f"f_t.{k}": v for k, v in state["state"].items()},
                    **{f"d_feat.{k}": v for k, v in state.get("discriminator", {}).items()}}
            kind = "feature"
        else:
            nets, kind = {f"net.{k}": v for k, v in state["state"].items()}, "classifier"
        return make_checkpoint(kind, {"classifier": state["classifier"]}, nets,
                               meta={"stage": stage, "cycada": config}, history=state.get("history"))
    raise ValueError(f"{path} is a cyclelib checkpoint of format {state.get('version')} with an unknown layout "
                     f"(kind {state.get('kind')!r}); this cyclelib reads format {FORMAT_VERSION} and upgrades format 1")


class NewerFormatError(ValueError):
    """A checkpoint written by a newer cyclelib: readable by updating, not a damaged file."""


def _as_current(state, path: Path):
    """``state`` in the current schema when it is a cyclelib checkpoint; anything else unchanged."""
    if not (isinstance(state, Mapping) and "version" in state and "kind" in state):
        return state  # an official state_dict, or another tool's file
    version = state["version"]
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise NewerFormatError(f"cannot read {path}: checkpoint format {version} is newer than this cyclelib "
                               f"reads ({FORMAT_VERSION}); update cyclelib")
    return dict(state) if version == FORMAT_VERSION else _upgrade(state, path)


def _mismatches(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps ``state`` from loading into a module whose state_dict is ``expected``."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k}: file {tuple(state[k].shape)} vs network {tuple(expected[k].shape)}"
                   for k in expected if k in state and state[k].shape != expected[k].shape]
    return [f"{label} ({len(items)}): {', '.join(items[:3])}{', ...' if len(items) > 3 else ''}"
            for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                 ("shape mismatches", wrong_shape)) if items]


def load_weights(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """``module.load_state_dict(state)``, strict, with an error naming ``source`` and each
    missing or unexpected key and each tensor whose shape differs (both shapes)."""
    problems = _mismatches(module.state_dict(), state)
    if problems:
        raise ValueError(f"{source} does not fit the network: {'; '.join(problems)}")
    module.load_state_dict(state, strict=True)
    return module


def check_resumable(ckpt: dict, path: Path, record: dict, keys: tuple[str, ...] | None = None) -> None:
    """Refuse to resume ``ckpt`` into a run described by ``record`` (``kind``, ``config``)
    unless both have the same kind, training state and ``keys`` of their configs (default: all),
    and belong to the same CyCADA stage (``meta["stage"]``) or to none."""
    stage, now = ckpt["meta"].get("stage"), record.get("meta", {}).get("stage")
    if stage != now:  # e.g. the pixel stage would go on without its semantic loss and lose its record
        runs = [f"the {s!r} stage of a CyCADA run" if s else "a plain CycleGAN run" for s in (stage, now)]
        redo = ""
        if stage and "cycada" in ckpt["meta"]:  # the stage's folder is out/<stage>/, a step file one deeper
            out = (path.parent.parent if path.parent.name == HISTORY else path.parent).parent
            redo = f"; resume it with `{cycada_command({**ckpt['meta']['cycada'], 'out': str(out)}, (stage,))}`"
        raise ValueError(f"cannot resume from {path}: it holds {runs[0]}, and this run trains {runs[1]}{redo}")
    if ckpt["kind"] != record["kind"] or "training" not in ckpt:
        name = {"cyclegan": "CycleGAN"}.get(record["kind"], record["kind"])
        raise ValueError(f"cannot resume from {path}: it holds {ckpt['kind']!r} weights"
                         f"{'' if 'training' in ckpt else ' without a training state'}, not a {name} run to go on with")
    keys = tuple(record["config"]) if keys is None else keys
    changed = [f"{name}={ckpt['config'].get(name)!r} there, {record['config'].get(name)!r} now"
               for name in keys if ckpt["config"].get(name) != record["config"].get(name)]
    if changed:
        raise ValueError(f"cannot resume from {path} with other network options ({'; '.join(changed)}); "
                         "resume with the run's options or start a new run in another folder")


# --------------------------------------------------------------------------- CycleGAN models


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
    known = {f.name for f in fields(CycleGANConfig)}
    try:
        # compile off: for translating a few images, compiling would only delay the first one
        c = CycleGANConfig(**{**{k: v for k, v in raw.items() if k in known}, "compile": False})
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
    problems = _mismatches(expected, stored)
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
    return _atomic_write(path, lambda tmp: tmp.write_bytes(data))


def load_safetensors(path: str | os.PathLike, verified: bool = False) -> dict:
    """Read a ``.safetensors`` file: a cyclelib checkpoint dict (without ``training``) if
    :func:`export_safetensors` wrote one, else the flat state_dict.

    A file of :func:`export_safetensors` is verified whole: its metadata (``kind``, ``config``,
    ``meta``, the tensors' CRC32s) against the metadata CRC32, each tensor against its CRC32, and
    the structure of each entry; files of older cyclelib versions, without the metadata CRC32,
    load with a warning that their metadata is unverified. Files of other tools (no cyclelib
    metadata) have no checksum at all: a warning says so. Every tensor must be finite.
    ``verified``: the caller checked the file's SHA-256 (no warnings).
    """
    path = Path(path)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for every defect
        raise ValueError(f"cannot read {path}: truncated or not a safetensors file "
                         f"({type(e).__name__}: {e})") from None
    # The metadata of other tools means nothing here (and cyclelib's always has crc32, or kind for the first exports).
    ours = {"kind", "crc32"} & metadata.keys()
    entries = integrity.safetensors_metadata(path, metadata, tensors, KINDS, verified) if ours else {}
    if "crc32" not in entries:
        integrity.warn_unverified(path, verified, "it was written without the CRC32s of export_safetensors")
    damaged = [name for name, crc in entries.get("crc32", {}).items() if integrity.crc32(tensors[name]) != crc]
    if damaged:
        raise ValueError(f"{path} is corrupted: tensor(s) {', '.join(damaged)} fail the CRC32 "
                         "check written by export_safetensors")
    integrity.check_finite(path, tensors)
    if "kind" not in entries:
        return tensors
    return make_checkpoint(entries["kind"], entries["config"], tensors, meta=entries.get("meta", {}))


# --------------------------------------------------------------------------- official weights


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
    if has_batch_stats and norm != "batch":
        return "the file has BatchNorm statistics (running_mean): try norm='batch'"
    if norm == "batch" and not has_batch_stats:
        return "the file has no BatchNorm statistics: try norm='instance' (CycleGAN's default) or 'none'"
    return ("check arch (e.g. resnet_9blocks vs resnet_6blocks vs unet_256), width (ngf/ndf), "
            "input_nc/output_nc, n_layers and dropout (it shifts resnet block indices)")


def load_official(state_dict_or_path: Mapping[str, torch.Tensor] | str | os.PathLike, kind: str, arch: str,
                  input_nc: int = 3, output_nc: int = 3,
                  width: int = 64, norm: str = "instance", n_layers: int = 3,
                  dropout: bool = False, sha256: str | None = None) -> nn.Module:
    """Build a network and load official weights into it (strict: every key must match).

    ``state_dict_or_path``: a state_dict or the path of a ``.pth`` file written by the
    official code (``latest_net_G_A.pth``, ``horse2zebra.pth``, ...) or by
    :func:`save_official`; files are read as :func:`load_checkpoint` reads them (verified
    against ``sha256`` when given). ``kind`` is ``"G"`` or ``"D"``; the other keywords are
    those of :func:`~cyclelib.networks.build_generator` /
    :func:`~cyclelib.networks.build_discriminator` (a D ignores ``output_nc`` and
    ``dropout``; a G ignores ``n_layers``). The published pretrained CycleGAN models are
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

    source, state = "state_dict", state_dict_or_path
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        source = str(state_dict_or_path)
        state = load_checkpoint(state_dict_or_path, sha256)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source} is not a state_dict (a flat mapping of names to tensors); "
                         "if it is a full checkpoint, pass the network's entry instead")
    hint = _mismatch_hint(state, norm)  # before cleaning, which drops running statistics
    state = _clean_official_state_dict(state, net)

    problems = _mismatches(net.state_dict(), state)
    if problems:
        settings = ", ".join(f"{k}={v!r}" for k, v in config.items())
        raise ValueError(f"{source} does not fit the network built with {settings}: "
                         f"{'; '.join(problems)}. Hint: {hint}")
    net.load_state_dict(state, strict=True)
    return net


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




# --------------------------------------------------------------------------- run folders


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as asked: not writable, in use, or holding another run."""


# What a run writes into its folder besides the checkpoints (deleted by an overwrite).
_RUN_OUTPUTS = ("history.json", "history.csv", "history.png", "samples/step_*.png",
                "tensorboard/events.out.tfevents.*")


@contextlib.contextmanager
def run_folder(folder: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> Iterator[Path]:
    """The run folder ``folder``, checked and locked for one training (before its first step).

    - ``resume`` and ``overwrite`` together are refused before anything is touched: one
      continues the run, the other deletes it.
    - It must be a folder this process can write in (created if missing).
    - A lock (``.lock``, an OS file lock that the OS releases when the process ends, however
      it ends) keeps a second training out: two writers would delete each other's files.
      It is taken before anything is deleted; a ``.lock`` that is not a regular file (a
      link, a FIFO, a folder) is refused, never followed.
    - A folder that holds another run's checkpoints is refused unless ``resume`` (continue
      it) or ``overwrite`` (delete its checkpoints, history and samples first): a new run
      would otherwise replace ``checkpoint.pt`` and ``checkpoint_best.pt`` without a word.
    """
    folder = Path(folder)
    if resume and overwrite:
        raise RunFolderError(f"--resume and --overwrite (resume=True, overwrite=True) contradict each other: "
                             f"resuming continues the run in {folder}, overwriting deletes it; give one of them")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe := _new_temporary(folder / ".write-test"), os.O_RDONLY))
        probe.unlink()
    except (FileExistsError, NotADirectoryError):
        raise RunFolderError(f"cannot use {folder} as a run folder: it (or a folder above it) is a file") from None
    except PermissionError as e:
        raise RunFolderError(f"cannot write in the run folder {folder}: {e.strerror}; choose another folder") from None
    with _open_lock(folder / ".lock") as lock:
        _lock(lock, folder)
        found = run_in(folder)
        if found and not (resume or overwrite):
            raise RunFolderError(f"{folder} holds another run ({found.name}): continue it with --resume "
                                 f"(resume=True), start over with --overwrite (overwrite=True), or choose "
                                 f"another folder")
        if overwrite:
            for old in (*step_checkpoints(folder), folder / LATEST, folder / BEST,
                        *(p for pattern in _RUN_OUTPUTS for p in folder.glob(pattern))):
                old.unlink(missing_ok=True)
        yield folder


def run_in(folder: str | os.PathLike) -> Path | None:
    """The file that shows ``folder`` holds a training run (its newest step file, else its
    ``checkpoint.pt``), None when it holds none."""
    steps, latest = step_checkpoints(folder), Path(folder, LATEST)
    return steps[-1] if steps else latest if latest.is_file() else None


def _open_lock(path: Path):
    """``path`` opened for reading and writing (created with mode 0o666 less the umask), never
    through a link; anything but a regular file there is a :class:`RunFolderError` naming it."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)  # a FIFO: no wait
    try:
        fd = os.open(path, flags, 0o666)
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            # A hard-linked copy of a run folder (cp -al) shares its lock with the original: locking it
            # would block (or be blocked by) the original's training. This folder gets a lock of its own.
            os.close(fd)
            os.replace(_new_temporary(path), path)
            fd = os.open(path, flags, 0o666)
            info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            return os.fdopen(fd, "r+")
        os.close(fd)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.EISDIR):  # ELOOP: a symbolic link, under O_NOFOLLOW
            raise
    raise RunFolderError(f"cannot lock the run folder {path.parent}: its lock {path} is not a regular file "
                         f"(a link, a FIFO or a folder); remove it")


def _lock(lock_file, folder: Path) -> None:
    """Take the OS lock of ``lock_file`` for this process and write its pid there, or raise
    :class:`RunFolderError` naming the process that holds it."""
    if fcntl is None:  # Windows: no flock; runs are not protected from each other there
        return
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "unknown"
        raise RunFolderError(f"{folder} is in use by another training (pid {holder}); wait for it to end, "
                             f"or choose another folder") from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(str(os.getpid()))
    lock_file.flush()


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` the finished file ``src``, atomically: a hard link (no second write of
    a large file) where the filesystem has them, else a copy."""
    def write(tmp: Path) -> None:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    _atomic_write(dst, write)


def step_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The ``checkpoints/step_XXXXXXX.pt`` files of a run folder, oldest step first."""
    files = [(int(m.group(1)), p) for p in Path(folder, HISTORY).glob("step_*.pt")
             if (m := _STEP_FILE.fullmatch(p.name))]
    return [p for _, p in sorted(files)]


def save_run_checkpoint(state: dict, folder: str | os.PathLike, step: int, keep: int = 3,
                        best: bool = False) -> Path:
    """Save a training checkpoint into a run folder; returns the step file.

    Writes ``checkpoints/step_XXXXXXX.pt``, makes ``checkpoint.pt`` (the latest) and, if
    ``best``, ``checkpoint_best.pt`` the same file, then deletes all but the ``keep``
    newest step files. Each file is replaced atomically, so a kill at any point leaves a
    readable latest checkpoint; the temporary file of a write that such a kill cut short
    is deleted here, by the next save.
    """
    if keep < 1:
        raise ValueError(f"keep_checkpoints must be >= 1, got {keep}")
    folder = Path(folder)
    step_file = save_checkpoint(state, folder / HISTORY / f"step_{step:07d}.pt")
    _link_or_copy(step_file, folder / LATEST)
    if best:
        _link_or_copy(step_file, folder / BEST)
    for old in step_checkpoints(folder)[:-keep]:
        old.unlink()
    # One writer per run folder, so every other temporary file of a checkpoint, the history
    # or a sample grid there is a dead write's.
    for stale in (*folder.glob(".*.pt.*.tmp"), *folder.glob(f"{HISTORY}/.step_*.pt.*.tmp"),
                  *folder.glob(".history.*.tmp"), *folder.glob("samples/.step_*.png.*.tmp")):
        stale.unlink(missing_ok=True)
    return step_file


def load_run_checkpoint(folder: str | os.PathLike) -> tuple[dict, Path]:
    """The newest readable checkpoint of a run folder and its path.

    ``checkpoint.pt`` first; if it is truncated or corrupt, the step files newest first,
    with a warning naming the unreadable file(s) and the one used instead.
    """
    folder = Path(folder)
    latest = folder / LATEST
    candidates = [p for p in (latest, *reversed(step_checkpoints(folder))) if p.is_file()]
    if not candidates:
        raise FileNotFoundError(f"no checkpoint to resume from in {folder}: expected {LATEST} "
                                f"or {HISTORY}/step_*.pt")
    unreadable: list[str] = []
    for path in candidates:
        if unreadable and latest.is_file() and path.samefile(latest):
            continue  # a hard link of the unreadable checkpoint.pt: the same bytes
        try:
            state = load_checkpoint(path)
        except NewerFormatError:
            raise  # an older step file would silently lose the newer run's progress
        except ValueError as e:
            unreadable.append(str(e))
            continue
        if unreadable:
            warnings.warn(f"the latest checkpoint is unreadable ({'; '.join(unreadable)}); "
                          f"resuming from the previous one, {path}", stacklevel=2)
        return state, path
    raise ValueError(f"no readable checkpoint in {folder}: {'; '.join(unreadable)}")
