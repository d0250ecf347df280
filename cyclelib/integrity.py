"""Whether a weight file can be trusted: its format, its checksums, its values.

:func:`cyclelib.checkpoints.load_checkpoint` reads every weight file through these checks:

- the format comes from the file's first bytes, never its name (:func:`file_format`);
- torch's zip format carries a CRC32 per record, which torch itself never checks
  (:func:`check_records`); cyclelib's safetensors exports carry a CRC32 per tensor and one
  over their metadata (:func:`crc32`, :func:`metadata_crc32`, :func:`safetensors_metadata`);
  files without checksums are named in a warning (:func:`warn_unverified`) unless their
  SHA-256 was given (:func:`check_sha256`);
- every floating-point tensor must be finite (:func:`check_finite`);
- torch's errors are reworded (:func:`load_error`): its advice to load with
  ``weights_only=False`` would run whatever code a file holds.

Every failure is a ``ValueError`` naming the file.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import re
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

# How each format starts: a zip archive's first record; torch's legacy format pickles its magic
# number first (a LONG1 after the protocol opcode, after a FRAME header from protocol 4 on);
# safetensors gives the length of its JSON header in 8 bytes, then the header.
_ZIP_START = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x8a\x0a" + torch.serialization.MAGIC_NUMBER.to_bytes(10, "little")

# safetensors refuses longer headers (MAX_HEADER_SIZE in safetensors/src/tensor.rs).
_SAFETENSORS_MAX_HEADER = 100_000_000

# The metadata entries that cyclelib's safetensors exports hold; the last one covers all the others.
METADATA = ("kind", "version", "config", "meta", "crc32", "metadata_crc32")


def file_format(path: Path) -> str | None:
    """``"zip"`` or ``"legacy"`` (torch's two formats), ``"safetensors"``, or None for any other
    file, from the first bytes of ``path``."""
    with open(path, "rb") as f:
        head = f.read(32)
    if head.startswith(_ZIP_START):
        return "zip"
    if head.startswith(b"\x80") and _LEGACY_MAGIC in head:
        return "legacy"
    # safetensors: an 8-byte little-endian header length, then the JSON header. The length must
    # also be within safetensors' own cap: one byte ("{") alone let 1 in 256 random files pass.
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= _SAFETENSORS_MAX_HEADER:
        return "safetensors"
    return None


def sha256_of(path: Path) -> str:
    """``path``'s SHA-256, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    """``path``'s SHA-256 must be ``expected`` (hex, any case)."""
    if (found := sha256_of(path)) != expected.strip().lower():
        raise ValueError(f"{path} is not the expected file: its SHA-256 is {found}, expected {expected} "
                         "(a damaged or different download)")


def check_records(path: Path) -> None:
    """Verify the CRC32 of every record of a zip-format torch file (torch >= 1.6 writes
    them); truncated ones (no zip directory left) are left to ``torch.load``."""
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


def load_error(path: Path, error: Exception) -> ValueError:
    """The error of ``torch.load(..., weights_only=True)`` as cyclelib's: objects the unpickler
    refused to build (they could run code), or damaged bytes.

    torch's own message advises ``weights_only=False`` or allowlisting the object, either of
    which would run whatever code the file holds: only the unpickler's finding is kept."""
    finding = str(error).split("WeightsUnpickler error:")[-1].split("\n\nCheck the documentation")[0].strip()
    if isinstance(error, pickle.UnpicklingError) and re.search(r"GLOBAL|allowlisted|unrecognized function", finding):
        return ValueError(f"refusing to load {path}: it holds objects that only a full unpickler could build, and "
                          f"that could run code ({finding.split('. ')[0]}); cyclelib loads weights only")
    detail = finding.splitlines()[0] if finding else type(error).__name__
    return ValueError(f"cannot read checkpoint {path}: truncated or damaged ({detail})")


def check_finite(path: Path, state: object) -> None:
    """Every floating-point tensor in ``state`` (nested in dicts and lists, as in a checkpoint)
    must be finite, else a ``ValueError`` naming ``path`` and the tensors: NaN or Inf weights
    load without error and give black images."""
    def tensors(obj, name: str) -> Iterator[tuple[str, torch.Tensor]]:
        if isinstance(obj, torch.Tensor):
            yield name, obj
        elif isinstance(obj, (Mapping, list, tuple)):
            for key, value in (obj.items() if isinstance(obj, Mapping) else enumerate(obj)):
                yield from tensors(value, f"{name}/{key}" if name else str(key))

    bad = [name for name, t in tensors(state, "") if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"{path} is damaged: tensor(s) {', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''} "
                         "hold NaN or Inf values")


def warn_unverified(path: Path, verified: bool, why: str) -> None:
    """Warn that nothing tells a damaged ``path`` from a good one (``why``), unless a SHA-256
    ``verified`` it."""
    if not verified:
        warnings.warn(f"{path} cannot be verified ({why}): a damaged file could load as wrong weights; pass its "
                      "SHA-256 (sha256=..., --sha256) to verify it", stacklevel=3)


def crc32(tensor: torch.Tensor) -> int:
    """CRC32 of a contiguous CPU tensor's bytes."""
    return zlib.crc32(tensor.reshape(-1).view(torch.uint8).numpy())


def metadata_crc32(metadata: Mapping[str, str]) -> str:
    """The CRC32 of the canonical JSON of every metadata entry but ``metadata_crc32`` itself."""
    entries = {key: value for key, value in metadata.items() if key != "metadata_crc32"}
    return str(zlib.crc32(json.dumps(entries, sort_keys=True).encode()))


def safetensors_metadata(path: Path, metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor],
                         kinds: tuple[str, ...], verified: bool) -> dict:
    """The metadata of a cyclelib safetensors export, verified against its ``metadata_crc32``
    (exports of older cyclelib versions have none: a warning says so) and parsed: ``config``,
    ``meta`` and ``crc32`` (an integer for each tensor, and only those) as dicts, ``kind`` one
    of ``kinds`` and given with a config. Anything else is a ``ValueError`` naming ``path``."""
    def damaged(why: str) -> ValueError:
        return ValueError(f"{path} is corrupted: its cyclelib metadata {why}")

    unknown = sorted(metadata.keys() - set(METADATA))
    if unknown:
        raise damaged(f"holds unknown entries ({', '.join(unknown)}); valid values: {', '.join(METADATA)}")
    if "metadata_crc32" in metadata:
        if metadata["metadata_crc32"] != metadata_crc32(metadata):
            raise damaged("(kind, config, meta, the tensors' CRC32s) fails its CRC32 check")
    else:
        warn_unverified(path, verified, "its metadata was written without a checksum, by an older cyclelib; "
                                        "its tensors are checked")
    entries = dict(metadata)
    for key in ("config", "meta", "crc32"):
        if key in metadata:
            try:
                entries[key] = json.loads(metadata[key])
            except json.JSONDecodeError:
                entries[key] = None
            if not isinstance(entries[key], dict):
                raise damaged(f"entry {key} is not a JSON object: {metadata[key][:80]!r}")
    crcs = entries.get("crc32", {})
    if "crc32" in entries and (crcs.keys() != tensors.keys() or not all(type(v) is int for v in crcs.values())):
        raise damaged("entry crc32 does not give an integer CRC32 for each of its tensors, and only those")
    if "kind" in entries and (entries["kind"] not in kinds or "config" not in entries):
        raise damaged(f"gives the kind {entries['kind']!r} (valid values: {', '.join(kinds)}) "
                      f"{'with' if 'config' in entries else 'without'} a config")
    return entries
