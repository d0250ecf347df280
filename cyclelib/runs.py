"""Run folders: where a training keeps its checkpoints, the lock that keeps a second training out, resuming.

A training run keeps its checkpoints in its folder: ``checkpoints/step_XXXXXXX.pt``
(the last few), ``checkpoint.pt`` (the latest) and ``checkpoint_best.pt`` (see
:func:`save_run_checkpoint`); :func:`load_run_checkpoint` resumes from the newest
readable one, and :func:`check_resumable` refuses a checkpoint that is not the run's to go on
with. :func:`run_folder` checks and locks a folder for one training. The files themselves are
:mod:`cyclelib.checkpoints`'.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from .checkpoints import NewerFormatError, load_checkpoint, save_checkpoint
from .commands import cycada_command
from .files import atomic_write, new_temporary

# The latest and the best checkpoint of a run, and the folder of its step checkpoints.
LATEST, BEST, CHECKPOINT_FOLDER = "checkpoint.pt", "checkpoint_best.pt", "checkpoints"
_STEP_FILE = re.compile(r"step_(\d+)\.pt")


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
        os.close(os.open(probe := new_temporary(folder / ".write-test"), os.O_RDONLY))
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
            os.replace(new_temporary(path), path)
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
    atomic_write(dst, write)


def step_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The ``checkpoints/step_XXXXXXX.pt`` files of a run folder, oldest step first."""
    files = [(int(m.group(1)), p) for p in Path(folder, CHECKPOINT_FOLDER).glob("step_*.pt")
             if (m := _STEP_FILE.fullmatch(p.name))]
    return [p for _, p in sorted(files)]


def step_checkpoint(folder: str | os.PathLike, step: int) -> Path:
    """The checkpoint of step ``step`` of the run in ``folder``; a ``FileNotFoundError`` lists the steps
    the run kept when it has none of that step."""
    file = Path(folder, CHECKPOINT_FOLDER, f"step_{step:07d}.pt")
    if not file.is_file():
        kept = [str(int(_STEP_FILE.fullmatch(p.name).group(1))) for p in step_checkpoints(folder)]
        raise FileNotFoundError(f"the run folder {folder} has no checkpoint of step {step} ({file}); the steps it "
                                f"kept: {', '.join(kept) or 'none'}")
    return file


def rewind(folder: str | os.PathLike, checkpoint: Path, step: int) -> bool:
    """Make ``checkpoint`` (of step ``step``) the latest of the run in ``folder`` when the run went on
    past it, before training goes on from it: the step files after it are deleted (they belong to
    the abandoned continuation, and the newest ``keep_checkpoints`` would otherwise be theirs),
    ``checkpoint.pt`` becomes it, and ``checkpoint_best.pt`` is deleted if a later step wrote it.
    The history and sample grids of later steps are replaced as training reaches them (the history
    is the checkpoint's, up to ``step``). Returns whether the best checkpoint was deleted."""
    folder = Path(folder)
    later = [p for p in step_checkpoints(folder) if int(_STEP_FILE.fullmatch(p.name).group(1)) > step]
    if not later:
        return False
    for old in later:
        old.unlink()
    _link_or_copy(checkpoint, folder / LATEST)
    best = folder / BEST
    if not best.is_file():
        return False
    try:
        later_best = load_checkpoint(best)["training"]["step"] > step
    except ValueError:  # unreadable: no best to keep
        later_best = True
    if later_best:
        best.unlink()
    return later_best


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
    step_file = save_checkpoint(state, folder / CHECKPOINT_FOLDER / f"step_{step:07d}.pt")
    _link_or_copy(step_file, folder / LATEST)
    if best:
        _link_or_copy(step_file, folder / BEST)
    for old in step_checkpoints(folder)[:-keep]:
        old.unlink()
    # One writer per run folder, so every other temporary file of a checkpoint, the history
    # or a sample grid there is a dead write's.
    for stale in (*folder.glob(".*.pt.*.tmp"), *folder.glob(f"{CHECKPOINT_FOLDER}/.step_*.pt.*.tmp"),
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
                                f"or {CHECKPOINT_FOLDER}/step_*.pt")
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


def check_resumable(ckpt: dict, path: Path, record: dict, keys: tuple[str, ...] | None = None) -> None:
    """Refuse to resume ``ckpt`` into a run described by ``record`` (``kind``, ``config``)
    unless both have the same kind, training state and ``keys`` of their configs (default: all),
    and belong to the same CyCADA stage (``meta["stage"]``) or to none."""
    stage, now = ckpt["meta"].get("stage"), record.get("meta", {}).get("stage")
    if stage != now:  # e.g. the pixel stage would go on without its semantic loss and lose its record
        runs = [f"the {s!r} stage of a CyCADA run" if s else "a plain CycleGAN run" for s in (stage, now)]
        redo = ""
        if stage and "cycada" in ckpt["meta"]:  # the stage's folder is out/<stage>/, a step file one deeper
            out = (path.parent.parent if path.parent.name == CHECKPOINT_FOLDER else path.parent).parent
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

