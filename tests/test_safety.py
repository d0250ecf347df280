"""What a demanding user does to a run, and what they must get: no silent wrong result, no
lost data, a clear message for every bad input.

Each test here failed before the change it guards (issue "Reliability, second round"). The
runs are smoke-sized on the CPU; tests that start ``python -m cyclelib`` in a subprocess
(kills, locks, resource limits) are marked ``slow``.
"""
import errno
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cyclelib import (CyCADAConfig, CycleGAN, TrainingDiverged, TrainingInterrupted, build_generator,
                      export_safetensors, load_checkpoint, load_cyclegan, load_official, run_cycada, save_official,
                      train_cyclegan)
from cyclelib.cycada import NEUTRAL_OPTIONS, STAGE_OPTIONS, stage_checkpoint, stage_path
from cyclelib.checkpoints import save_checkpoint
from cyclelib.runs import BEST, LATEST, run_folder, step_checkpoints
from helpers import DIGITS, cli, rgb, smoke
from helpers import cli_env as env

# --------------------------------------------------------------------------- silent wrong results


def test_cycada_refuses_stages_of_another_configuration(tmp_path):
    """The stages in a folder belong to the options they were trained with: a run of another
    pair there is refused before any stage runs (naming what differs), --force retrains, and
    the evaluation reports no stage of another configuration."""
    out = str(tmp_path / "run")
    common = ["--scale", "smoke", "--out", out, "--amp", "none"]
    assert cli("train", "cycada", "--source", "mnist5k", "--target", "mnistm5k", "--stages", "source,oracle",
               *common)[0] == 0
    before = load_checkpoint(Path(out) / "source" / LATEST)
    code, err = cli("train", "cycada", "--source", "uci-digits", "--target", "mnist5k", "--stages", "source,oracle",
                    *common)
    assert code == 2 and "source='mnist5k' there, 'uci-digits' now" in err and "--force" in err
    assert torch.equal(load_checkpoint(Path(out) / "source" / LATEST)["nets"]["net.net.classifier.2.weight"],
                       before["nets"]["net.net.classifier.2.weight"])  # nothing was touched
    # A finished stage with other options for it, needed by a chosen stage, is refused too.
    code, err = cli("train", "cycada", "--source", "mnist5k", "--target", "mnistm5k", "--stages", "feature_only",
                    "--task-lr", "0.5", *common)
    assert code == 2 and "task_lr=" in err and "'source' stage" in err

    assert cli("train", "cycada", "--source", "uci-digits", "--target", "mnist5k", "--stages", "source", "--force",
               *common)[0] == 0
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    assert (metrics["source"], metrics["target"]) == ("uci-digits", "mnist5k")
    assert "source_only" in metrics and "target_oracle" not in metrics  # the oracle is mnistm5k's


def test_every_cycada_option_is_either_part_of_a_stage_or_changes_no_result():
    names = {name for name in CyCADAConfig.__dataclass_fields__}
    staged = {name for options in STAGE_OPTIONS.values() for name in options}
    assert staged | set(NEUTRAL_OPTIONS) == names and not staged & set(NEUTRAL_OPTIONS)


class StopAt:
    """Wraps a model's train_step to send this process ``signum`` during step ``step`` (1-based),
    as Ctrl-C or a scheduler's SIGTERM would: the trainer's handler runs, for real."""

    def __init__(self, model, step: int, signum=signal.SIGINT):
        self.calls, self.step, self.signum, self.inner = 0, step, signum, model.train_step
        model.train_step = self

    def __call__(self, *tensors):
        self.calls += 1
        if self.calls == self.step:
            signal.raise_signal(self.signum)
        return self.inner(*tensors)


@pytest.mark.parametrize("stop_at", [9, 10], ids=["at-a-log-step", "between-log-steps"])
def test_a_stopped_and_resumed_run_writes_the_history_and_best_of_one_never_stopped(tmp_path, monkeypatch, stop_at):
    options = dict(max_steps=18, n_epochs=3, n_epochs_decay=2, log_every=3, checkpoint_every=6, max_dataset_size=24)
    straight = train_cyclegan(smoke(tmp_path / "straight", **options), progress=False)

    built = []
    real_init = CycleGAN.__init__

    def init_and_stop(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        built.append(StopAt(self, stop_at))

    monkeypatch.setattr(CycleGAN, "__init__", init_and_stop)
    with pytest.raises(TrainingInterrupted, match=f"stopped at step {stop_at}"):
        train_cyclegan(smoke(tmp_path / "stopped", **options), progress=False)
    monkeypatch.undo()
    resumed = train_cyclegan(smoke(tmp_path / "stopped", **options), resume=True, progress=False)

    a, b = tmp_path / "straight", tmp_path / "stopped"
    for name in ("history.json", "history.csv"):
        assert (a / name).read_text() == (b / name).read_text(), name
    best_a, best_b = load_checkpoint(a / BEST), load_checkpoint(b / BEST)
    assert best_a["training"]["best"] == best_b["training"]["best"]
    assert best_a["training"]["step"] == best_b["training"]["step"]
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in straight.state_dict().items())


def test_a_legacy_pth_is_checked_for_nan_and_inf_and_verified_by_its_sha256(tmp_path):
    """Official files in torch's legacy (pre-1.6, not zip) format have no checksum at all."""
    torch.manual_seed(0)
    state = build_generator("resnet_1blocks", width=4).state_dict()
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    good = path.read_bytes()
    load = dict(kind="G", arch="resnet_1blocks", width=4)
    with pytest.warns(UserWarning, match="cannot be verified .*legacy format has no checksums.*sha256"):
        load_official(path, **load)
    # Damage the first float of the first conv's weights (found by its bytes): an all-ones exponent is NaN.
    offset = good.index(state["model.1.weight"].numpy().tobytes())
    broken = bytearray(good)
    broken[offset + 2:offset + 4] = b"\xc0\x7f"  # little-endian float32: exponent bits all set, a NaN
    path.write_bytes(bytes(broken))
    with pytest.raises(ValueError, match=r"damaged: tensor\(s\) model\.1\.weight hold NaN or Inf"):
        load_official(path, **load)
    # A flip that stays finite is only caught by a checksum: the user's (or the publisher's) SHA-256.
    flipped = bytearray(good)
    flipped[offset] ^= 0x01
    path.write_bytes(bytes(flipped))
    sha = hashlib.sha256(good).hexdigest()
    with pytest.raises(ValueError, match="not the expected file: its SHA-256 is"):
        load_official(path, **load, sha256=sha)
    path.write_bytes(good)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # verified: no warning
        load_official(path, **load, sha256=sha)
    code, err = cli("translate", "--checkpoint", str(path), "--arch", "resnet_1blocks", "--width", "4",
                    "--input", str(tmp_path), "--output", str(tmp_path / "out"), "--sha256", "0" * 64)
    assert code == 2 and "SHA-256" in err


# --------------------------------------------------------------------------- lost data


def images(folder: Path, sizes=((32, 32), (32, 32))) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        rgb(*size, seed=i).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_translate_refuses_to_write_into_its_input_folder(tmp_path, where):
    generator = tmp_path / "g.pth"
    save_official(build_generator("resnet_1blocks", width=4), generator)
    photos = images(tmp_path / "photos" / "set")
    output = {"same": photos, "inside": photos / "translated", "around": tmp_path / "photos"}[where]
    before = {p: p.read_bytes() for p in photos.rglob("*.png")}
    argv = ["translate", "--checkpoint", str(generator), "--arch", "resnet_1blocks", "--width", "4",
            "--input", str(photos), "--output", str(output)]
    code, err = cli(*argv)
    assert code == 2 and "the input folder" in err and "--overwrite" in err
    assert {p: p.read_bytes() for p in photos.rglob("*.png")} == before
    assert cli(*argv, "--overwrite")[0] == 0


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
                              env=env(), stdout=subprocess.PIPE, text=True)
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


# --------------------------------------------------------------------------- late or unclear errors


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
    done = subprocess.run([sys.executable, "-m", "cyclelib", "train", "cyclegan", "--data", DIGITS, "--scale", "smoke",
                           "--device", "cpu", "--amp", "none", "--out", str(out), "--max-steps", "16",
                           "--n-epochs", "4", "--checkpoint-every", "2", "--sample-every", "1000"],
                          env=env(), capture_output=True, text=True, timeout=600, preexec_fn=limited)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "cannot write" in done.stderr and str(out) in done.stderr and "Traceback" not in done.stderr
    kept = load_checkpoint(out / LATEST)
    assert 2 <= kept["training"]["step"] < 16
    assert not list(out.rglob("*.tmp"))


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


def test_uncropped_images_of_several_sizes_train_at_batch_1_and_are_named_at_batch_2(tmp_path):
    root = tmp_path / "data"
    images(root / "trainA", sizes=((40, 40), (36, 44)))
    images(root / "trainB", sizes=((40, 40), (40, 40)))
    options = dict(data=str(root), preprocess="none", max_steps=2, sample_every=1)
    train_cyclegan(smoke(tmp_path / "b1", **options, batch_size=1), progress=False)
    assert list((tmp_path / "b1" / "samples").glob("step_*.png"))
    with pytest.raises(ValueError, match=r"batch_size 2 .*trainA/0\.png is 40x40 and .*trainA/1\.png is 36x44; use batch_size 1"):
        train_cyclegan(smoke(tmp_path / "b2", **options, batch_size=2), progress=False)


def test_shape_mismatches_name_the_tensor_and_both_shapes(tmp_path):
    train_cyclegan(smoke(tmp_path / "run", max_steps=1), progress=False)
    ckpt = load_checkpoint(tmp_path / "run" / LATEST)
    ckpt["nets"]["G_A.model.1.weight"] = torch.zeros(3, 3, 7, 7)
    save_checkpoint(ckpt, tmp_path / "bad.pt")
    message = r"G_A\.model\.1\.weight: file \(3, 3, 7, 7\) vs network \(8, 3, 7, 7\)"
    with pytest.raises(ValueError, match=message):
        load_cyclegan(tmp_path / "bad.pt")
    export_safetensors(ckpt, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match=message):
        load_cyclegan(tmp_path / "bad.safetensors")
    code, err = cli("translate", "--checkpoint", str(tmp_path / "bad.pt"), "--input", str(tmp_path),
                    "--output", str(tmp_path / "o"))
    assert code == 2 and "G_A.model.1.weight" in err


@pytest.mark.parametrize("flags, message", [
    (["--crop-size", "2", "--load-size", "2"], "crop_size 2 is too small for netG resnet_2blocks (norm instance): "
                                               "the smallest image side it takes is 8"),
    (["--crop-size", "16"], "crop_size 16 is too small for netD basic (norm instance): the smallest image side it "
                            "takes is 24"),
    (["--crop-size", "30"], "crop_size 30 does not fit netG resnet_2blocks"),
    (["--device", "banana"], "--device 'banana' is not a device"),
])
def test_options_that_no_layer_can_use_are_named_before_training(tmp_path, flags, message):
    code, err = cli("train", "cyclegan", "--data", str(tmp_path), "--scale", "smoke", "--out", str(tmp_path / "o"),
                    "--preprocess", "resize_and_crop", *flags)
    assert code == 2 and message in err, err


def test_translate_errors_are_messages(tmp_path):
    generator = tmp_path / "g.pth"
    save_official(build_generator("resnet_1blocks", width=4), generator)
    base = ["translate", "--checkpoint", str(generator), "--arch", "resnet_1blocks", "--width", "4"]
    tiny = images(tmp_path / "tiny", sizes=((1, 1),))
    (tmp_path / "empty").mkdir()
    for argv, message in (
            (["--input", str(tiny), "--output", str(tmp_path / "o")], "0.png is 1x1 pixels (4x4 padded to a multiple of 4)"),
            (["--input", str(tiny), "--output", str(tmp_path / "o"), "--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
            (["--input", str(tmp_path / "nosuch"), "--output", str(tmp_path / "o")], "nosuch does not exist"),
            (["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o")], "no image files")):
        code, err = cli(*base, *argv)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
    assert "smallest side is 8" in cli(*base, "--input", str(tiny), "--output", str(tmp_path / "o"))[1]
    assert cli(*base, "--input", str(tiny), "--output", str(tmp_path / "o"), "--size", "8")[0] == 0


def test_checkpoints_and_exports_get_the_umasks_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        train_cyclegan(smoke(tmp_path / "run", max_steps=1), progress=False)
        exported = export_safetensors(tmp_path / "run" / LATEST, tmp_path / "w.safetensors")
        for path in (tmp_path / "run" / LATEST, *step_checkpoints(tmp_path / "run"), exported):
            assert path.stat().st_mode & 0o777 == 0o644, path
    finally:
        os.umask(previous)


# --------------------------------------------------------------------------- every CyCADA stage


def cycada_smoke(out, **options) -> CyCADAConfig:
    return CyCADAConfig.for_scale("smoke", **{"source": "uci-digits", "target": "mnist5k", "out": str(out),
                                              "amp": "none", "task_epochs": 3, "feature_epochs": 2,
                                              "checkpoint_every": 2, **options})


@pytest.mark.slow
def test_a_killed_feature_stage_resumes_bit_for_bit(tmp_path):
    """SIGKILL while the feature stage trains (after its step-4 checkpoint), then the same command
    again: the stage resumes and ends as an uninterrupted run does."""
    straight = cycada_smoke(tmp_path / "straight")
    run_cycada(straight, stages=("source", "feature_only"), progress=False)
    killed = tmp_path / "killed"
    argv = [sys.executable, "-m", "cyclelib", "train", "cycada", "--source", "uci-digits", "--target", "mnist5k",
            "--scale", "smoke", "--amp", "none", "--task-epochs", "3", "--feature-epochs", "2",
            "--checkpoint-every", "2", "--stages", "source,feature_only", "--out", str(killed)]
    proc = subprocess.Popen(argv, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = killed / "feature_only" / "checkpoints" / "step_0000004.pt"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert load_checkpoint(killed / "feature_only" / LATEST)["training"]["step"] < 6  # unfinished
    assert subprocess.run(argv, env=env(), capture_output=True, timeout=300).returncode == 0
    a, b = (load_checkpoint(stage_path(cycada_smoke(out), "feature_only")) for out in (tmp_path / "straight", killed))
    assert a["training"]["step"] == b["training"]["step"] == 6
    assert all(torch.equal(v, b["nets"][k]) for k, v in a["nets"].items())
    assert a["history"] == b["history"]


@pytest.mark.parametrize("stage", ["source", "feature_only"])
def test_a_signal_stops_a_classifier_stage_with_a_checkpoint_and_the_rerun_resumes(tmp_path, monkeypatch, stage):
    from cyclelib import classifiers

    config = cycada_smoke(tmp_path / "run")
    if stage != "source":
        run_cycada(config, stages=("source",), progress=False)
    model_class = classifiers.TaskClassifier if stage == "source" else classifiers.FeatureAlignment
    real_init = model_class.__init__

    def init_and_stop(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        StopAt(self, 3, signal.SIGTERM)

    monkeypatch.setattr(model_class, "__init__", init_and_stop)
    with pytest.raises(TrainingInterrupted, match="stopped at step 3"):
        run_cycada(config, stages=(stage,), progress=False)
    monkeypatch.undo()
    assert load_checkpoint(stage_path(config, stage))["training"]["step"] == 3
    run_cycada(config, stages=(stage,), progress=False)
    final = load_checkpoint(stage_path(config, stage))
    assert final["training"]["step"] == final["training"]["total_steps"] > 3
    assert [row["step"] for row in final["history"]] == list(range(1, final["training"]["step"] + 1))


def test_a_nan_in_a_classifier_stage_stops_it_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from cyclelib import losses

    config = cycada_smoke(tmp_path / "run")
    calls = []
    task_loss = losses.task_loss

    def nan_at_step_5(logits, labels):
        calls.append(1)
        loss = task_loss(logits, labels)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(losses, "task_loss", nan_at_step_5)
    with pytest.raises(TrainingDiverged, match="loss term task was nan at step 5"):
        run_cycada(config, stages=("source",), progress=False)
    kept = load_checkpoint(stage_path(config, "source"))
    assert kept["training"]["step"] == 4
    assert all(torch.isfinite(t).all() for t in kept["nets"].values() if t.is_floating_point())


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
