"""Run folders, their lock, and CyCADA's stage folders: what a run keeps (the last checkpoints, the
latest and the best), one training per folder, no run deleted or damaged by accident, an unusable
--out refused before training, and every hint naming a command that continues the run it speaks of."""
import contextlib
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cyclelib import CycleGAN, CyCADAConfig, TrainingInterrupted, run_cycada, train_cyclegan
from cyclelib.classifiers import TaskClassifier
from cyclelib.commands import cycada_command
from cyclelib.cycada import load_stage, stage_checkpoint, stage_path
from cyclelib.checkpoints import FORMAT_VERSION, load_checkpoint, save_checkpoint
from cyclelib.runs import LATEST, RunFolderError, run_folder, step_checkpoints
from helpers import DIGITS, cli, cli_env, cycada_smoke, equal_states, parse_cycada_command, smoke


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (but the lock, whose pid changes hands) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture
def run(tmp_path) -> Path:
    """A finished CycleGAN run of 4 steps, with step files, history and samples."""
    out = tmp_path / "run"
    train_cyclegan(smoke(out, max_steps=4, checkpoint_every=2, sample_every=2), progress=False)
    return out


# --------------------------------------------------------------------------- run folders and their lock


def test_resume_with_overwrite_is_refused_before_anything_is_touched(run):
    """Nothing of the run (checkpoints, history, samples) is deleted."""
    before = files(run)
    assert {"checkpoint.pt", "checkpoint_best.pt", "history.json"} <= set(before)
    with pytest.raises(RunFolderError, match="--resume and --overwrite .*contradict"):
        train_cyclegan(smoke(run, max_steps=4), resume=True, overwrite=True, progress=False)
    assert files(run) == before
    code, err = cli("train", "cyclegan", "--resume", str(run), "--overwrite")
    assert code == 2 and "contradict each other" in err and str(run) in err
    assert files(run) == before


@pytest.mark.slow
def test_overwrite_of_a_folder_another_process_holds_deletes_nothing_and_names_it(run):
    """The lock is taken before anything is deleted."""
    holder = subprocess.Popen([sys.executable, "-c", "import time\nfrom cyclelib.runs import run_folder\n"
                               f"with run_folder({str(run)!r}, resume=True):\n    print('locked', flush=True)\n"
                               "    time.sleep(600)"], env=cli_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = files(run)
        code, err = cli("train", "cyclegan", "--data", DIGITS, "--scale", "smoke", "--out", str(run),
                        "--max-steps", "1", "--overwrite")
        assert code == 2 and f"in use by another training (pid {holder.pid})" in err
        with pytest.raises(RunFolderError, match=f"pid {holder.pid}"):
            with run_folder(run, overwrite=True):
                pass
        assert files(run) == before
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("kind", ["link", "dangling link", "fifo", "folder"])
def test_a_lock_that_is_not_a_regular_file_is_refused_never_followed(tmp_path, kind):
    """A ``.lock`` linked to another file is not followed: that file is not truncated to the training's pid."""
    folder, victim = tmp_path / "run", tmp_path / "victim.txt"
    folder.mkdir()
    victim.write_text("precious")
    lock = folder / ".lock"
    if kind == "link":
        lock.symlink_to(victim)
    elif kind == "dangling link":
        lock.symlink_to(tmp_path / "nowhere")
    elif kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    with pytest.raises(RunFolderError, match=rf"lock {re.escape(str(lock))} is not a regular file"):
        with run_folder(folder):
            pass
    assert victim.read_text() == "precious" and not (tmp_path / "nowhere").exists()
    if kind == "link":
        code, err = cli("train", "cyclegan", "--data", DIGITS, "--scale", "smoke", "--out", str(folder))
        assert code == 2 and "is not a regular file" in err and victim.read_text() == "precious"


def test_a_new_lock_gets_the_umasks_permissions(tmp_path):
    """Opened without following links, the lock is created 0o666 less the umask."""
    previous = os.umask(0o027)
    try:
        with run_folder(tmp_path / "run"):
            pass
    finally:
        os.umask(previous)
    assert (tmp_path / "run" / ".lock").stat().st_mode & 0o777 == 0o640


def test_run_keeps_the_last_k_the_latest_and_the_best(run10):
    assert [p.name for p in step_checkpoints(run10)] == ["step_0000006.pt", "step_0000008.pt", "step_0000010.pt"]
    latest = load_checkpoint(run10 / "checkpoint.pt")
    assert latest["training"]["step"] == 10 and latest["version"] == FORMAT_VERSION
    assert latest["config"]["checkpoint_every"] == 2 and latest["config"]["keep_checkpoints"] == 3
    assert equal_states(latest["nets"], load_checkpoint(run10 / "checkpoints" / "step_0000010.pt")["nets"])
    assert not list(run10.rglob(".*.tmp"))  # no temporary file left behind

    # best: lowest weighted cycle loss averaged over the rows logged since the checkpoint before
    windows = {end: [r["cycle_A"] + r["cycle_B"] for r in latest["history"] if end - 2 < r["step"] <= end]
               for end in range(2, 11, 2)}
    scores = {end: sum(values) / len(values) for end, values in windows.items()}
    best_step = min(scores, key=scores.get)
    best = load_checkpoint(run10 / "checkpoint_best.pt")
    assert best["training"]["step"] == best_step == latest["training"]["best"]["step"]
    assert best["training"]["best"]["score"] == pytest.approx(scores[best_step])


def test_a_new_run_into_another_runs_folder_is_refused_unless_resumed_or_overwritten(tmp_path):
    out = tmp_path / "run"
    train_cyclegan(smoke(out, max_steps=8, checkpoint_every=4), progress=False)
    before = load_checkpoint(out / LATEST)
    code, err = cli("train", "cyclegan", "--data", DIGITS, "--scale", "smoke", "--out", str(out), "--max-steps", "2")
    assert code == 2 and "holds another run" in err and "--resume" in err and "--overwrite" in err
    assert torch.equal(load_checkpoint(out / LATEST)["nets"]["G_A.model.1.weight"],
                       before["nets"]["G_A.model.1.weight"])
    assert cli("train", "cyclegan", "--data", DIGITS, "--scale", "smoke", "--out", str(out), "--max-steps", "2",
               "--checkpoint-every", "1", "--overwrite")[0] == 0
    assert [p.name for p in step_checkpoints(out)] == ["step_0000001.pt", "step_0000002.pt"]  # old 4, 8 gone
    assert [row["step"] for row in json.loads((out / "history.json").read_text())] == [1, 2]


@pytest.mark.slow
def test_a_second_training_on_one_folder_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom cyclelib.runs import run_folder\n"
                               f"with run_folder({str(out)!r}):\n    print('locked', flush=True)\n    time.sleep(600)"],
                              env=cli_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = cli("train", "cyclegan", "--data", DIGITS, "--scale", "smoke", "--out", str(out))
        assert code == 2 and f"in use by another training (pid {holder.pid})" in err
        code, err = cli("train", "cycada", "--source", "uci-digits", "--target", "mnist5k", "--scale", "smoke",
                        "--out", str(out))
        assert code == 2 and f"pid {holder.pid}" in err
    finally:
        holder.kill()  # a crash: the OS releases the lock
        holder.wait()
    assert cli("train", "cyclegan", "--data", DIGITS, "--scale", "smoke", "--out", str(out), "--max-steps", "1")[0] == 0


def test_the_lock_keeps_a_second_writer_out_within_one_process_too(tmp_path):
    with run_folder(tmp_path):
        with pytest.raises(RuntimeError, match=f"in use by another training \\(pid {os.getpid()}\\)"):
            with run_folder(tmp_path):
                pass
    with run_folder(tmp_path):  # released
        pass


@pytest.fixture
def readonly_folder(tmp_path):
    """A folder nobody may create files in, root included: mode 0555 for a user; for root, who
    ignores permissions, an immutable folder (chattr +i) or else sysfs, read-only for everyone."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    if os.getuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        yield folder
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        yield Path("/sys/kernel")


def test_an_unwritable_out_is_refused_before_training(tmp_path, monkeypatch, readonly_folder):
    def no_step(*args):
        raise AssertionError("a training step ran")

    monkeypatch.setattr(CycleGAN, "train_step", no_step)
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for model in (["cyclegan", "--data", DIGITS], ["cycada", "--source", "uci-digits", "--target", "mnist5k"]):
        code, err = cli("train", *model, "--scale", "smoke", "--out", str(a_file))
        assert code == 2 and f"cannot use {a_file} as a run folder: it (or a folder above it) is a file" in err
        for out in (readonly_folder, readonly_folder / "run"):  # existing, and to be created
            code, err = cli("train", *model, "--scale", "smoke", "--out", str(out))
            assert code == 2 and "cannot write in the run folder" in err and str(readonly_folder) in err, err


# --------------------------------------------------------------------------- CyCADA stages


def test_cycada_command_builds_the_same_config():
    """The command a hint names builds exactly the run's config, its scale aside where the command
    line cannot reach the config from it ("custom", or None where the scale has a number): those
    are rendered from the gpu scale, the paper's options."""
    smoke_run = CyCADAConfig.for_scale("smoke", source="mnist5k", target="mnistm5k", out="my runs/c", device="cpu",
                                       amp="none", lambda_sem_B=0.5, classifier="dtn")
    cpu_run = CyCADAConfig.for_scale("cpu", source="svhn", target="mnist", seed=3, feature_lr=1e-05)
    for config, scale in ((smoke_run, "smoke"), (dataclasses.replace(smoke_run, max_samples=None), "gpu"),
                          (CyCADAConfig(), "gpu"), (cpu_run, "cpu")):
        command = cycada_command(dataclasses.asdict(config), ("source", "pixel"))
        assert command.startswith("cyclelib train cycada --source ")
        built, stages = parse_cycada_command(command)
        assert stages == "source,pixel" and built.scale == scale, command
        assert built == dataclasses.replace(config, scale=scale), command


def test_missing_earlier_stages_are_all_named_with_the_runs_options(tmp_path):
    """The hint names every missing stage, and its command keeps --scale and every other option (else
    it would train another configuration)."""
    config = cycada_smoke(tmp_path / "c", seed=2, lambda_sem_A=0.5)
    with pytest.raises(FileNotFoundError) as error:
        run_cycada(config, stages="feature", progress=False)
    message = str(error.value)
    assert re.search(r"source[/\\]checkpoint\.pt is missing.*pixel[/\\]checkpoint\.pt is missing", message)
    built, stages = parse_cycada_command(re.search(r"`(cyclelib train cycada [^`]*)`", message).group(1))
    assert built == config and stages == "source,pixel"
    assert not (tmp_path / "c").exists()  # refused before any stage ran


@pytest.mark.slow
def test_a_stopped_pixel_stage_names_the_command_that_resumes_it(tmp_path, monkeypatch):
    """The stop message names `cyclelib train cycada ...`, not `cyclelib train cyclegan --resume c/pixel`
    (which would train on without the semantic loss and erase the stage's record); train cyclegan
    refuses a stage folder (a classifier stage too), naming the stage and the command."""
    config = cycada_smoke(tmp_path / "c", lambda_sem_B=0.5)
    run_cycada(config, stages=("source",), progress=False)
    calls, train_step = [], CycleGAN.train_step

    def stop_at_step_2(self, *tensors):
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGTERM)
        return train_step(self, *tensors)

    monkeypatch.setattr(CycleGAN, "train_step", stop_at_step_2)
    with pytest.raises(TrainingInterrupted, match="stopped at step 2") as stop:
        run_cycada(config, stages=("pixel",), progress=False)
    monkeypatch.undo()
    assert "train cyclegan" not in str(stop.value)
    command = re.search(r"`(cyclelib train cycada [^`]*)`", str(stop.value)).group(1)
    assert parse_cycada_command(command) == (config, "pixel")

    stopped = files(stage_path(config, "pixel").parent)
    for stage in ("pixel", "source"):
        folder = stage_path(config, stage).parent
        with pytest.raises(ValueError, match=f"holds the '{stage}' stage of a CyCADA run.*" + re.escape(
                command.replace("--stages pixel", f"--stages {stage}"))):
            train_cyclegan(config.pixel_config(str(folder)), resume=True, progress=False)
    assert files(stage_path(config, "pixel").parent) == stopped

    code, err = cli(*shlex.split(command)[1:])
    assert code == 0, err
    ckpt = load_checkpoint(stage_path(config, "pixel"))
    assert ckpt["training"]["step"] == ckpt["training"]["total_steps"] > 2
    assert ckpt["meta"]["stage"] == "pixel" and ckpt["meta"]["cycada"] == dataclasses.asdict(config)
    assert all("sem_B" in row for row in ckpt["history"])  # the semantic loss all along


@pytest.mark.parametrize("latest", ["missing", "corrupt"])
def test_a_stage_resumes_from_its_step_file_when_its_latest_checkpoint_is_gone(tmp_path, monkeypatch, latest):
    """A corrupt or missing checkpoint.pt next to an intact step file: the stage resumes from the step
    file (with a warning for the corrupt one), keeps the step files and is not trained again from scratch."""
    config = cycada_smoke(tmp_path / "c", source="uci-digits", target="mnist5k", task_epochs=2, checkpoint_every=2)
    run_cycada(config, stages=("source",), progress=False)
    folder = stage_path(config, "source").parent
    straight = load_checkpoint(folder / LATEST)
    assert [p.name for p in step_checkpoints(folder)] == ["step_0000002.pt", "step_0000004.pt", "step_0000006.pt"]
    kept = {p.name: p.read_bytes() for p in step_checkpoints(folder)[:2]}
    step_checkpoints(folder)[-1].unlink()  # back to step 4: as if stopped there
    data = (folder / LATEST).read_bytes()
    (folder / LATEST).unlink()
    if latest == "corrupt":
        (folder / LATEST).write_bytes(data[: len(data) // 2])
    steps, train_step = [], TaskClassifier.train_step
    monkeypatch.setattr(TaskClassifier, "train_step", lambda self, *t: steps.append(1) or train_step(self, *t))
    warned = pytest.warns(UserWarning, match=r"checkpoint\.pt.*step_0000004\.pt")
    with warned if latest == "corrupt" else contextlib.nullcontext():
        run_cycada(config, stages=("source",), progress=False)
    assert len(steps) == 2  # steps 5 and 6: resumed, not trained again
    assert {p.name: p.read_bytes() for p in step_checkpoints(folder)[:2]} == kept
    resumed = load_checkpoint(folder / LATEST)
    assert resumed["training"]["step"] == 6 and equal_states(resumed["nets"], straight["nets"])


def test_a_complete_stage_is_used_through_its_step_file_when_its_latest_checkpoint_is_corrupt(tmp_path):
    config = cycada_smoke(tmp_path / "c", source="uci-digits", target="mnist5k")
    run_cycada(config, stages=("source",), progress=False)
    path = stage_path(config, "source")
    final = load_checkpoint(path)
    data = path.read_bytes()
    path.unlink()  # a new file: the step file (a hard link of the old one) stays intact
    path.write_bytes(data[:100])
    with pytest.warns(UserWarning, match="unreadable"):
        net = load_stage(config, "source")
    assert equal_states({f"net.{k}": v for k, v in net.state_dict().items()}, final["nets"])


def test_train_cycada_into_a_cyclegan_run_names_options_it_has(run):
    """The message suggests another --out, not --resume or --overwrite (options of train cyclegan only)."""
    before = files(run)
    code, err = cli("train", "cycada", "--source", "uci-digits", "--target", "mnist5k", "--scale", "smoke",
                    "--out", str(run), "--stages", "source")
    assert code == 2 and "not a CyCADA run" in err and "another --out" in err
    assert "--resume" not in err and "--overwrite" not in err
    assert files(run) == before


def test_a_stage_recorded_with_classifier_auto_is_the_network_auto_picked(tmp_path):
    """``--classifier lenet`` on a stage recorded with ``auto`` (which picked lenet) reuses the stage."""
    config = cycada_smoke(tmp_path / "c", source="uci-digits", target="mnist5k")
    assert config.classifier == "auto"
    run_cycada(config, stages=("source",), progress=False)
    written = stage_path(config, "source").stat().st_mtime_ns
    lenet = dataclasses.replace(config, classifier="lenet")
    assert stage_checkpoint(lenet, "source") is not None
    run_cycada(lenet, stages=("source",), progress=False)  # skipped: it is finished
    assert stage_path(config, "source").stat().st_mtime_ns == written
    with pytest.raises(ValueError, match="classifier='lenet' there, 'dtn' now"):
        stage_checkpoint(dataclasses.replace(config, classifier="dtn"), "source")


def test_train_cycada_without_its_domains_is_a_usage_error():
    """It exited 1, without the "cyclelib: error:" of every other bad input."""
    code, err = cli("train", "cycada", "--scale", "smoke", "--target", "mnist5k")
    assert code == 2 and "cyclelib: error: train cycada: --source required" in err


def test_a_stage_recorded_before_an_option_existed_counts_it_at_its_default(tmp_path):
    """Options added to CyCADAConfig later default to what the code did before them: a stage whose
    checkpoint does not record one is reused when the option is at its default, and only then."""
    config = CyCADAConfig.for_scale("smoke", source="uci-digits", target="mnist5k", out=str(tmp_path), amp="none")
    run_cycada(config, stages=("source",), progress=False)
    path = stage_path(config, "source")
    ckpt = load_checkpoint(path)
    del ckpt["meta"]["cycada"]["seed"]  # as if "seed" had been added after this run (its default is 0)
    save_checkpoint(ckpt, path)
    assert stage_checkpoint(config, "source") is not None
    with pytest.raises(ValueError, match="seed=0 there, 1 now"):
        stage_checkpoint(CyCADAConfig(**{**config.__dict__, "seed": 1}), "source")
