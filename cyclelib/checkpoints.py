"""Checkpoints: the one schema, and files written atomically and read verified, never running code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
``torch.load(..., weights_only=True)`` can read it; anything that would need the full pickle
machinery (and could run code) is refused. Every checkpoint is written atomically (a temporary
file, fsync, rename: :mod:`cyclelib.files`). Weights can also be shared as ``.safetensors``
files, a format that holds tensors and strings only; :func:`load_checkpoint` reads both. What
is checked in every file read (format, checksums, finite values) is in :mod:`cyclelib.integrity`.

**One schema for every checkpoint** (format 2), whatever trained it::

    version   2
    kind      "cyclegan" | "classifier" | "feature": what ``nets`` holds
    config    the options that build the model (a CycleGANConfig, or {"classifier": name})
    nets      the model's state_dict
    meta      where it comes from, e.g. {"stage": "source", "cycada": {...}} for a CyCADA stage
    history   the loss rows of the run
    training  (optional) what an exact resume needs: step, epoch, optimisers, RNG states, ...; a
              CycleGAN's plug-ins' own states under "generator_terms" (e.g. CyCADA's online judge)

Format-1 files (cyclelib 0.1) are upgraded when read (:func:`load_checkpoint`).

This module builds no model: the run folders that hold a training's checkpoints are
:mod:`cyclelib.runs`', the models built from files :mod:`cyclelib.weights`'.
"""
from __future__ import annotations

import os
from io import BytesIO
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from . import integrity
from .files import atomic_write

FORMAT_VERSION = 2
KINDS = ("cyclegan", "classifier", "feature")


def save_checkpoint(obj: dict, path: str | os.PathLike) -> Path:
    """Write ``obj`` with ``torch.save`` to ``path`` atomically (temporary file, fsync, rename).

    The bytes are made in memory first, so that a full disk fails as an ``OSError`` of the
    write (torch's own file writer would report it as an internal assertion)."""
    buffer = BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


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


def mismatches(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> list[str]:
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
    problems = mismatches(module.state_dict(), state)
    if problems:
        raise ValueError(f"{source} does not fit the network: {'; '.join(problems)}")
    module.load_state_dict(state, strict=True)
    return module




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

