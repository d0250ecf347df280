"""Writing and reading the files of a run safely: whole files or nothing, errors that name the file.

Every file cyclelib writes goes through :func:`atomic_write`: a new temporary file next to
the target, fsync, rename over the target, fsync of the folder. So a crash, a kill or a full
disk leaves the previous file or the new one, never a mix; and the rename replaces whatever
was at the path itself (a symbolic link, a FIFO, a hard link shared with a copy of the run)
instead of writing through it. A write that fails raises ``OSError`` naming the file and its
folder. :func:`read_json` reads the JSON files of a run, turning a damaged one into a
``ValueError`` that names it.

A leaf module: it imports nothing of cyclelib, so every module may use it.
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temporary file next to ``path``, fsync it, then rename it to ``path``.

    A crash or kill at any moment leaves either the previous file or the new one at
    ``path``, never a half-written one; whatever was at ``path`` (a link, a FIFO) is replaced,
    never written through. The file gets the permissions the umask gives any new file. A
    write that fails raises ``OSError`` (of the same errno) naming the file and its folder,
    with the previous file in place; for want of space (or a size limit), also the free space.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_temporary(path)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _write_failed(path, e) from None
        raise
    # The rename itself is durable only once the directory entry is flushed.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def new_temporary(path: Path) -> Path:
    """A new empty file ``.<name>.<random>.tmp`` next to ``path``, created with mode 0666 less
    the umask (as ``open`` creates files; ``tempfile.mkstemp`` would make it 0600)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def _write_failed(path: Path, error: OSError) -> OSError:
    """``error`` told with the file and its folder, of the same errno (hence subclass:
    PermissionError, ...); for want of space, with the free space and what to do."""
    kept = "The previous file there, if any, is kept"
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2 ** 20:.0f} MiB"
        except OSError:  # the folder itself is gone
            free = "unknown space"
        cause = ("the disk is full" if error.errno in (errno.ENOSPC, errno.EDQUOT)
                 else "the file size limit of this process was reached")
        return OSError(error.errno, f"cannot write {path}: {cause} ({error.strerror}; {free} free in "
                                    f"{path.parent}). {kept}; free some space or choose another folder, "
                                    f"then resume")
    message = f"cannot write {path} (in the folder {path.parent}): {error.strerror or error}. {kept}"
    # An OSError without errno: e.g. an image encoder's own "cannot write mode ..."
    return OSError(error.errno, message) if error.errno is not None else OSError(message)


def write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically, its line ends as they are (no ``\\r\\n``
    translation on Windows: ``history.csv`` holds the csv module's own)."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: object) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=1))


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Draw ``fig`` into ``path`` atomically, in the format its suffix names (``.png``, ``.pdf``,
    ``.svg``, ...; PNG without one). The figure is drawn in memory first, so a full disk fails
    as the write's ``OSError`` (naming the file) and never leaves a cut image."""
    path = Path(path)
    buffer = BytesIO()
    # A buffer has no name to take the format from (nor has the temporary file: it ends in .tmp).
    fig.savefig(buffer, format=path.suffix[1:].lower() or "png", dpi=dpi)
    return write_bytes(path, buffer.getbuffer())


def read_json(path: str | os.PathLike, hint: str, expect: type = object) -> object:
    """The JSON value in the file ``path``, which must be of type ``expect`` (e.g. ``dict``).

    A file that is not a regular file (a FIFO is never opened: reading it would wait for a
    writer), that cannot be read, is empty, is not valid UTF-8 JSON or holds another type
    raises ``ValueError`` naming the file, saying what is wrong and then ``hint`` (what to
    do). A missing file raises ``FileNotFoundError``.
    """
    path = Path(path)
    problem, value = None, None
    if not stat.S_ISREG(os.stat(path).st_mode):  # a missing file: FileNotFoundError, naming it
        problem = "it is not a regular file"
    else:
        try:
            value = json.loads(path.read_bytes())
        except OSError as e:
            problem = e.strerror or str(e)
        except UnicodeDecodeError:
            problem = "it is not UTF-8 text"
        except json.JSONDecodeError as e:
            problem = "it is empty" if not e.doc.strip() else f"it is not valid JSON ({e})"
        else:
            if not isinstance(value, expect):
                problem = f"it holds a JSON {type(value).__name__}, expected a {expect.__name__}"
    if problem:
        raise ValueError(f"cannot read {path}: {problem}; {hint}")
    return value
