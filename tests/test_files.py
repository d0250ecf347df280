"""Every file a run writes is written atomically (cyclelib.files): a failed write names the file
and keeps the previous one, a link or FIFO at the path is replaced instead of written through,
a hard-linked copy of a run never writes into the original, temporary files of killed writes are
deleted, checkpoints and exports get the umask's permissions, and a damaged JSON file of a run is
named (or, for the wall times, started afresh with a warning)."""
import contextlib
import errno
import json
import os
import re
import resource
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from cyclelib import CycleGAN, export_safetensors, files, run_cycada, train_cyclegan
from cyclelib.cycada_run import load_seed_metrics
from cyclelib.checkpoints import load_checkpoint, save_checkpoint
from cyclelib.runs import LATEST, load_run_checkpoint, run_folder, save_run_checkpoint, step_checkpoints
from cyclelib.weights import save_official
from cyclelib.networks import build_generator
from cyclelib.cyclegan_run import _save_samples
from cyclelib.train import History
from helpers import DIGITS, cli, cli_command, cli_env, cycada_smoke, rgb, smoke


def fail_writes_of(monkeypatch, name: str, code: int = errno.ENOSPC) -> None:
    """Writes of the file ``name`` fail with ``code`` after part of their bytes reached the disk
    (a full disk; every writer of cyclelib.files ends in Path.write_bytes on its temporary file)."""
    write_bytes = Path.write_bytes

    def failing(self, data):
        if self.name == name or self.name.startswith(f".{name}."):
            write_bytes(self, bytes(data)[:10])
            raise OSError(code, os.strerror(code))
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing)


def snapshot(folder: Path) -> dict[str, bytes]:
    """The bytes of every file below ``folder`` by relative name."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_failed_write(error, path: Path, previous: bytes) -> None:
    """The error names the file and its folder (a full disk as such, with the free space); the
    previous file is intact and no temporary file is left."""
    message = str(error.value)
    assert f"cannot write {path}" in message and str(path.parent) in message, message
    if error.value.errno == errno.ENOSPC:
        assert "the disk is full" in message and "MiB free" in message, message
    assert path.read_bytes() == previous
    assert not list(path.parent.glob(f".{path.name}.*")), "a temporary file was left"


@contextlib.contextmanager
def within(seconds: int):
    """Fail with TimeoutError instead of hanging (opening a FIFO waits for the other end)."""
    def hung(signum, frame):
        raise TimeoutError(f"still waiting after {seconds} s: a FIFO was opened")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- failed writes


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("name", ["history.json", "history.csv", "history.png"])
def test_a_failed_history_write_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch, name, code):
    history = History(every=1)
    history.add(1, 0, {"G": torch.tensor(1.0), "D": torch.tensor(2.0)})
    history.write(tmp_path)
    before = snapshot(tmp_path)
    assert set(before) == {"history.json", "history.csv", "history.png"}
    history.add(2, 0, {"G": torch.tensor(0.5), "D": torch.tensor(1.5)})
    fail_writes_of(monkeypatch, name, code)
    with pytest.raises(OSError) as error:
        history.write(tmp_path)
    assert error.value.errno == code
    assert_failed_write(error, tmp_path / name, before[name])


def test_a_failed_sample_grid_write_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    model = CycleGAN(smoke(tmp_path))
    samples = {side: [torch.rand(3, 32, 32) * 2 - 1 for _ in range(2)] for side in "AB"}
    path = tmp_path / "samples" / "step_000001.png"
    _save_samples(model, samples, path)
    previous = path.read_bytes()
    fail_writes_of(monkeypatch, path.name)
    with pytest.raises(OSError) as error:
        _save_samples(model, {side: [-x for x in images] for side, images in samples.items()}, path)
    assert_failed_write(error, path, previous)


@pytest.fixture(scope="module")
def cycada_run(tmp_path_factory):
    """A CyCADA run of the source stage only (seconds at smoke scale)."""
    config = cycada_smoke(tmp_path_factory.mktemp("cycada"))
    run_cycada(config, stages="source", progress=False)
    return config


@pytest.mark.parametrize("name", ["config.json", "wall_times.json", "metrics.json", "curves.png", "source_only.png"])
def test_a_failed_cycada_write_names_the_file_and_keeps_the_previous_one(cycada_run, monkeypatch, name):
    out = Path(cycada_run.out)
    path = out / ("confusion/" + name if name == "source_only.png" else name)
    assert path.is_file()
    previous = path.read_bytes()
    fail_writes_of(monkeypatch, name)
    with pytest.raises(OSError) as error:
        run_cycada(cycada_run, stages="source", force=True, progress=False)  # force: wall_times is rewritten
    assert_failed_write(error, path, previous)


def test_a_failed_json_write_of_the_cli_exits_1_naming_the_file(cycada_run, monkeypatch):
    out = Path(cycada_run.out)
    fail_writes_of(monkeypatch, "config.json")
    code, err = cli("train", "cycada", "--source", "mnist5k", "--target", "mnistm5k", "--out", str(out),
                    "--scale", "smoke", "--stages", "source", "--device", "cpu", "--amp", "none")
    assert code == 1 and f"cannot write {out / 'config.json'}: the disk is full" in err, err


@pytest.mark.parametrize("write", ["torch", "safetensors"])
def test_an_interrupted_write_leaves_the_previous_file(tmp_path, monkeypatch, write):
    """A crash while writing (here: an error after half the bytes) keeps the old file whole
    and leaves no temporary file behind."""
    path = tmp_path / ("weights.pt" if write == "torch" else "weights.safetensors")
    old = {"w": torch.zeros(1000)}
    save = save_checkpoint if write == "torch" else export_safetensors
    save(old, path)

    def crash(tmp) -> None:
        with open(tmp, "wb") as f:
            f.write(b"\0" * 100)  # part of a file, then the disk fills up
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", lambda self, data: crash(self))  # both write their bytes last
    with pytest.raises(OSError, match="disk full"):
        save({"w": torch.ones(1000)}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["w"], old["w"])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_disk_full_is_named_as_such(tmp_path, monkeypatch):
    """ENOSPC (a real full disk needs a small filesystem; the write's error is what matters)."""
    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    save_checkpoint({"w": torch.zeros(3)}, tmp_path / "c.pt")
    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError, match=r"cannot write .*c\.pt: the disk is full .* MiB free in .*The previous file"):
        save_checkpoint({"w": torch.ones(3)}, tmp_path / "c.pt")
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["w"], torch.zeros(3))


@pytest.mark.slow
def test_a_failed_checkpoint_write_says_so_keeps_the_previous_one_and_exits_non_zero(tmp_path):
    """A write that fails for want of space (here the file size limit, which fails writes as a
    full disk does, without needing a small disk): a message naming the file and folder, exit 1,
    and the previous checkpoint in place."""
    probe = tmp_path / "probe"
    train_cyclegan(smoke(probe, max_steps=2, checkpoint_every=2), progress=False)
    limit = (probe / LATEST).stat().st_size + 20_000  # step 2 fits; later ones hold fuller image pools

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "run"
    done = subprocess.run(cli_command("train", "cyclegan", "--data", DIGITS, "--scale", "smoke", "--device", "cpu",
                                      "--amp", "none", "--out", str(out), "--max-steps", "16", "--n-epochs", "4",
                                      "--checkpoint-every", "2", "--sample-every", "1000"),
                          env=cli_env(), capture_output=True, text=True, timeout=600, preexec_fn=limited)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "cannot write" in done.stderr and str(out) in done.stderr and "Traceback" not in done.stderr
    kept = load_checkpoint(out / LATEST)
    assert 2 <= kept["training"]["step"] < 16
    assert not list(out.rglob("*.tmp"))


def test_checkpoints_and_exports_get_the_umasks_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        train_cyclegan(smoke(tmp_path / "run", max_steps=1), progress=False)
        exported = export_safetensors(tmp_path / "run" / LATEST, tmp_path / "w.safetensors")
        for path in (tmp_path / "run" / LATEST, *step_checkpoints(tmp_path / "run"), exported):
            assert path.stat().st_mode & 0o777 == 0o644, path
    finally:
        os.umask(previous)


# --------------------------------------------------------------------------- links, FIFOs, hard-linked copies


def test_writes_replace_a_symlink_or_fifo_at_the_path_instead_of_writing_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.symlink(victim, tmp_path / "link.json")
    os.mkfifo(tmp_path / "fifo.json")  # opening it for writing would wait for a reader forever
    for name in ("link.json", "fifo.json"):
        with within(30):
            files.write_json(tmp_path / name, {"name": name})
        assert (tmp_path / name).is_file() and not (tmp_path / name).is_symlink()
        assert files.read_json(tmp_path / name, "unused") == {"name": name}
    assert victim.read_text() == "keep me"


@pytest.mark.slow
def test_a_run_replaces_a_fifo_and_symlinks_at_its_history_files_and_ends(tmp_path):
    """A run in a subprocess, which would wait for a reader forever if it opened the FIFO."""
    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / "history.json")
    victims = {}
    for name in ("history.csv", "history.png", "samples/step_000001.png"):
        victims[name] = tmp_path / f"victim-{Path(name).name}"
        victims[name].write_text("keep me")
        (out / name).parent.mkdir(exist_ok=True)
        os.symlink(victims[name], out / name)
    command = cli_command("train", "cyclegan", "--data", DIGITS, "--out", str(out), "--scale", "smoke",
                          "--max-steps", "2", "--log-every", "1", "--sample-every", "1", "--device", "cpu",
                          "--amp", "none")
    try:
        done = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("the run hung on the FIFO at history.json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert [row["step"] for row in json.loads((out / "history.json").read_text())] == [1, 2]
    for name, victim in victims.items():
        assert (out / name).is_file() and not (out / name).is_symlink(), name
        assert victim.read_text() == "keep me", name


def test_resuming_a_hard_linked_copy_leaves_the_original_run_unchanged(tmp_path):
    """``cp -al run copy``: every file of the copy is the original's inode until replaced."""
    original, copy = tmp_path / "run", tmp_path / "copy"
    options = dict(log_every=1, sample_every=1)
    train_cyclegan(smoke(original, max_steps=2, **options), progress=False)
    for path in original.rglob("*"):
        target = copy / path.relative_to(original)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
    before = snapshot(original)
    assert {"history.json", "history.csv", "history.png", "checkpoint.pt", ".lock"} <= set(before)
    # The original's lock is held (its training runs on): the copy has a lock of its own, the .lock too.
    with run_folder(original, resume=True):
        train_cyclegan(smoke(copy, max_steps=4, **options), resume=True, progress=False)
    assert [row["step"] for row in json.loads((copy / "history.json").read_text())] == [1, 2, 3, 4]
    assert snapshot(original) == before


def test_the_next_checkpoint_deletes_temporary_files_that_a_kill_left(tmp_path):
    out = tmp_path / "run"
    dead = [out / ".history.json.0badc0de.tmp", out / "samples" / ".step_000001.png.0badc0de.tmp",
            out / "checkpoints" / ".step_0000001.pt.0badc0de.tmp"]
    for path in dead:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"cut short")
    train_cyclegan(smoke(out, max_steps=1), progress=False)
    assert [path for path in dead if path.exists()] == []
    assert not list(out.rglob("*.tmp"))


def test_the_next_save_deletes_the_temporary_files_of_killed_writes(tmp_path):
    """A SIGKILL during a write leaves its hidden temporary file; the next save deletes it
    (and only such files)."""
    save_run_checkpoint({"w": torch.zeros(3)}, tmp_path, step=1)
    stale = [tmp_path / ".checkpoint.pt.k1ll3d.tmp", tmp_path / ".checkpoint_best.pt.x9.tmp",
             tmp_path / "checkpoints" / ".step_0000002.pt.a1b2.tmp"]
    others = [tmp_path / ".notes.tmp", tmp_path / "samples.pt.tmp"]
    for path in stale + others:
        path.write_bytes(b"\0" * 10)
    save_run_checkpoint({"w": torch.ones(3)}, tmp_path, step=2)
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in others)
    assert torch.equal(load_run_checkpoint(tmp_path)[0]["w"], torch.ones(3))


def test_translate_replaces_a_symlink_at_an_output_image(tmp_path):
    generator = tmp_path / "g.pth"
    save_official(build_generator("resnet_1blocks", width=4), generator)
    (tmp_path / "in").mkdir()
    rgb(32, 32).save(tmp_path / "in" / "a.jpg")
    (tmp_path / "out").mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.symlink(victim, tmp_path / "out" / "a.jpg")
    code, err = cli("translate", "--checkpoint", str(generator), "--arch", "resnet_1blocks", "--width", "4",
                    "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--device", "cpu")
    assert code == 0, err
    written = tmp_path / "out" / "a.jpg"
    assert not written.is_symlink() and written.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG, as the name says
    assert victim.read_text() == "keep me"


# --------------------------------------------------------------------------- damaged JSON files of a run


@pytest.mark.parametrize("content, problem", [(b"", "it is empty"), (b"{\"source\": 1", "it is not valid JSON"),
                                              (b"\xff\xfe\xfa", "it is not UTF-8 text"),
                                              (b"[1, 2]", "it holds a JSON list, expected a dict")])
def test_read_json_names_a_damaged_file_and_what_to_do(tmp_path, content, problem):
    path = tmp_path / "some.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"cannot read {re.escape(str(path))}: {problem}.*; delete it"):
        files.read_json(path, "delete it", expect=dict)


def test_read_json_refuses_a_fifo_without_opening_it(tmp_path):
    os.mkfifo(tmp_path / "fifo.json")  # opening it would wait for a writer forever
    with within(30), pytest.raises(ValueError, match=r"fifo\.json: it is not a regular file"):
        files.read_json(tmp_path / "fifo.json", "delete it")


def test_an_empty_wall_times_file_is_started_afresh_with_a_warning_naming_it(cycada_run):
    """wall_times.json only records times (see cycada_run._read_wall_times): the run goes on."""
    times = Path(cycada_run.out) / "wall_times.json"
    times.write_bytes(b"")  # left by an in-place write on a full disk
    with pytest.warns(UserWarning, match=rf"cannot read {re.escape(str(times))}: it is empty; .*started afresh"):
        metrics = run_cycada(cycada_run, stages="source", force=True, progress=False)
    recorded = json.loads(times.read_text())
    assert set(recorded) == {"source"} and metrics["wall_s"] == recorded


def test_an_empty_metrics_file_of_a_seed_is_named(tmp_path):
    for seed in (0, 1):
        files.write_json(tmp_path / f"seed{seed}" / "metrics.json", {"seed": seed})
    (tmp_path / "seed1" / "metrics.json").write_bytes(b"")
    with pytest.raises(ValueError, match=r"seed1[/\\]metrics\.json: it is empty; restore it"):
        load_seed_metrics(tmp_path)
