"""Checkpoints: written atomically, read without ever executing code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
``torch.load(..., weights_only=True)`` can read it; anything that would need the
full pickle machinery (and could run code) is refused. Weights can also be shared as
``.safetensors`` files, a format that holds tensors and strings only.

A training run keeps its checkpoints in its folder: ``checkpoints/step_XXXXXXX.pt``
(the last few), ``checkpoint.pt`` (the latest) and ``checkpoint_best.pt`` (see
:func:`save_run_checkpoint`); :func:`load_run_checkpoint` resumes from the newest
readable one.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

FORMAT_VERSION = 1
LATEST, BEST, HISTORY = "checkpoint.pt", "checkpoint_best.pt", "checkpoints"
_STEP_FILE = re.compile(r"step_(\d+)\.pt")


def _atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temporary file next to ``path``, fsync it, then rename it to ``path``.

    A crash or kill at any moment leaves either the previous file or the new one at
    ``path``, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself is durable only once the directory entry is flushed.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def save_checkpoint(obj: dict, path: str | os.PathLike) -> Path:
    """Write ``obj`` with ``torch.save`` to ``path`` atomically (temporary file, fsync, rename)."""
    return _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint without running code; errors name the file and the cause.

    ``.pt``/``.pth`` files are read with ``weights_only=True``, after checking the CRC32
    of every record (torch does not, and would load flipped bits as wrong weights);
    ``.safetensors`` files with :func:`load_safetensors` (which checks the CRC32s that
    :func:`export_safetensors` writes).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    _check_records(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"refusing to load {path}: it holds objects that only a full unpickler could "
            f"build (and that could run code); cyclelib loads weights only. Details: {e}") from None
    except Exception as e:  # noqa: BLE001 - garbage bytes raise all sorts (IndexError, RuntimeError, ...)
        raise ValueError(f"cannot read checkpoint {path}: truncated or not a torch file "
                         f"({type(e).__name__}: {e})") from None


def _check_records(path: Path) -> None:
    """Verify the CRC32 of every record of a zip-format torch file (torch >= 1.6 writes
    them); legacy files and truncated ones (no zip directory left) are left to torch.load."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # reads every record, compares its CRC32
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise ValueError(f"cannot read checkpoint {path}: damaged zip structure ({e})") from None
    if damaged is not None:
        raise ValueError(f"checkpoint {path} is corrupted: record {damaged} fails its CRC32 check "
                         "(or the file was written with torch.serialization.set_crc32_options(False))")


# --------------------------------------------------------------------------- safetensors


def export_safetensors(model_or_checkpoint, path: str | os.PathLike) -> Path:
    """Write the weights of a model or checkpoint to a ``.safetensors`` file (atomically).

    Accepts a module (a :class:`~cyclelib.cyclegan.CycleGAN` keeps its config), a
    state_dict, a cyclelib checkpoint dict, or the path of a checkpoint file (cyclelib
    ``.pt`` or official ``.pth``). A cyclelib checkpoint keeps its ``kind``, ``version``
    and ``config`` (as metadata) and its network weights, not the optimizer state: the
    file is for sharing and inference; resuming needs the ``.pt``. :func:`load_checkpoint`,
    :func:`~cyclelib.networks.load_official` and :func:`~cyclelib.translate.load_generator`
    read the file back.
    """
    from .cyclegan import CycleGAN  # here: cyclegan imports this module

    obj = model_or_checkpoint
    if isinstance(obj, (str, os.PathLike)):
        obj = load_checkpoint(obj)
    if isinstance(obj, CycleGAN):
        obj = {"version": FORMAT_VERSION, "kind": "cyclegan", "config": asdict(obj.config),
               "nets": obj.state_dict()}
    elif isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    metadata = {}
    if isinstance(obj, Mapping) and "nets" in obj and "kind" in obj:
        metadata = {"kind": obj["kind"], "version": str(obj.get("version", FORMAT_VERSION)),
                    "config": json.dumps(obj.get("config"))}
        obj = obj["nets"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("export_safetensors needs a module, a state_dict (names -> tensors), a cyclelib "
                         f"checkpoint with 'nets', or a checkpoint path; got {type(model_or_checkpoint).__name__}")
    # safetensors stores dense, unshared CPU buffers.
    tensors = {name: t.detach().cpu().contiguous().clone() for name, t in obj.items()}
    # The format has no checksum of its own: a flipped bit would load as a wrong weight.
    metadata["crc32"] = json.dumps({name: _crc32(t) for name, t in tensors.items()})
    data = safetensors_bytes(tensors, metadata)
    return _atomic_write(path, lambda tmp: tmp.write_bytes(data))


def load_safetensors(path: str | os.PathLike) -> dict:
    """Read a ``.safetensors`` file: a cyclelib checkpoint dict (``kind``, ``version``,
    ``config``, ``nets``) if :func:`export_safetensors` wrote one, else the flat state_dict."""
    path = Path(path)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for every defect
        raise ValueError(f"cannot read {path}: truncated or not a safetensors file "
                         f"({type(e).__name__}: {e})") from None
    damaged = [name for name, crc in json.loads(metadata.get("crc32", "{}")).items()
               if name not in tensors or _crc32(tensors[name]) != crc]
    if damaged:
        raise ValueError(f"{path} is corrupted: tensor(s) {', '.join(damaged)} fail the CRC32 "
                         "check written by export_safetensors")
    if "kind" not in metadata:
        return tensors
    return {"version": int(metadata["version"]), "kind": metadata["kind"],
            "config": json.loads(metadata["config"]), "nets": tensors}


def _crc32(tensor: torch.Tensor) -> int:
    """CRC32 of a contiguous CPU tensor's bytes."""
    return zlib.crc32(tensor.reshape(-1).view(torch.uint8).numpy())


# --------------------------------------------------------------------------- run folders


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
    # One writer per run folder, so every other temporary file there is a dead write's.
    for stale in (*folder.glob(".*.pt.*.tmp"), *folder.glob(f"{HISTORY}/.step_*.pt.*.tmp")):
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
        except ValueError as e:
            unreadable.append(str(e))
            continue
        if unreadable:
            warnings.warn(f"the latest checkpoint is unreadable ({'; '.join(unreadable)}); "
                          f"resuming from the previous one, {path}", stacklevel=2)
        return state, path
    raise ValueError(f"no readable checkpoint in {folder}: {'; '.join(unreadable)}")


# --------------------------------------------------------------------------- RNG state


def rng_state() -> dict:
    """Every global RNG state a training step may touch, in a weights-only friendly form."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
