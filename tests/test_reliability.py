"""Reliability and safety: exact resume after kills and signals, checkpoint files that survive
crashes and corruption, loading that never runs code, clear errors for bad data and options,
and runs that stop on NaN/Inf instead of saving broken weights.

Everything runs on the CPU at the smoke scale; the tests that start ``python -m cyclelib``
in a subprocess (kill and signal handling) are marked ``slow``.
"""
import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from cyclelib import (CycleGAN, CycleGANConfig, TrainingDiverged, TrainingInterrupted, build_generator,
                      load_cyclegan, load_generator, load_official, save_official, train_cyclegan)
from cyclelib.cli import main
from cyclelib.data import PREPROCESS_MODES, UnpairedImageFolder
from cyclelib.checkpoints import FORMAT_VERSION, load_checkpoint, save_checkpoint
from cyclelib.runs import load_run_checkpoint, save_run_checkpoint, step_checkpoints
from cyclelib.weights import export_safetensors

ROOT = Path(__file__).resolve().parents[1]
DIGITS = "mnist5k:mnistm5k"


def smoke(out, data=DIGITS, **options) -> CycleGANConfig:
    """A smoke-scale config on the CPU without sample grids in the loop (they only cost time here)."""
    base = dict(data=str(data), out=str(out), device="cpu", sample_every=1000)
    return CycleGANConfig.for_scale("smoke", **{**base, **options})


def equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def rgb(width, height, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def image_dataset(root: Path, count=3, size=(40, 40)) -> Path:
    """The official layout, train split only: ``count`` random RGB PNGs per domain."""
    for side, offset in (("A", 0), ("B", 100)):
        folder = root / f"train{side}"
        folder.mkdir(parents=True)
        for i in range(count):
            rgb(*size, seed=offset + i).save(folder / f"{i:03d}.png")
    return root


# --------------------------------------------------------------------------- kills and signals


def cli_command(out: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "cyclelib", "train", "cyclegan", "--data", DIGITS, "--scale", "smoke",
            "--device", "cpu", "--out", str(out), *options]


def cli_env() -> dict:
    # Same thread count as this process: CPU kernels may sum in another order with other
    # counts, and the comparison below is bit for bit.
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=str(torch.get_num_threads()))


def start(command: list[str], log: Path) -> subprocess.Popen:
    # Its own session: a signal sent to its process group reaches it and its loader workers
    # (as Ctrl-C in a terminal does), not pytest.
    return subprocess.Popen(command, env=cli_env(), stdout=subprocess.DEVNULL, stderr=log.open("w"),
                            start_new_session=True)


def wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path.name} appeared:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.01)


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_resume_is_bit_identical(tmp_path):
    """SIGKILL (no handler can run) right after the step-6 checkpoint appears, then
    ``--resume``: the result equals an uninterrupted run of the same 12 steps, bit for bit
    (weights, optimizer moments, loss history). 4 steps per epoch, so the resume starts
    mid-epoch and crosses epoch boundaries and the start of the learning-rate decay (step 8)."""
    options = dict(max_steps=12, n_epochs=2, n_epochs_decay=2, checkpoint_every=3)
    flags = [arg for name, value in options.items() for arg in (f"--{name.replace('_', '-')}", str(value))]
    killed, log = tmp_path / "killed", tmp_path / "killed.log"

    t0 = time.perf_counter()
    proc = start(cli_command(killed, *flags, "--sample-every", "1000"), log)
    wait_for(killed / "checkpoints" / "step_0000006.pt", proc, log)
    assert proc.poll() is None, "the run finished before the kill"
    proc.kill()
    proc.wait()
    t_killed = time.perf_counter() - t0
    assert proc.returncode == -signal.SIGKILL
    resumed_from = load_run_checkpoint(killed)[0]["training"]["step"]
    assert resumed_from in (3, 6)  # 3 when the kill beat the update of checkpoint.pt

    t0 = time.perf_counter()
    main(["train", "cyclegan", "--resume", str(killed)])
    t_resume = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_cyclegan(smoke(tmp_path / "straight", **options), progress=False)
    t_straight = time.perf_counter() - t0

    a, b = load_checkpoint(killed / "checkpoint.pt"), load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    assert a["training"]["step"] == b["training"]["step"] == 12
    assert a["training"]["epoch"] == b["training"]["epoch"]
    assert equal_states(a["nets"], b["nets"])
    for name in ("G", "D"):
        moments_a, moments_b = (ckpt["training"]["optimizers"][name]["state"] for ckpt in (a, b))
        assert all(equal_states(moments_a[i], moments_b[i]) for i in moments_b)
    assert a["history"] == b["history"]
    print(f"\nresume timings: killed run {t_killed:.1f} s (start to kill, resumed from step {resumed_from}), "
          f"resume {t_resume:.1f} s, uninterrupted 12 steps {t_straight:.1f} s")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigint_and_sigterm_stop_at_a_step_with_a_checkpoint(tmp_path, signum):
    """Ctrl-C (SIGINT to the whole process group, loader worker included) and SIGTERM (to
    the main process, as a scheduler preempting a job) end the run at the next step boundary:
    a checkpoint of that step is written, the exit code is 128 + signal, stderr says how to
    resume, and there is no traceback. No periodic checkpoint is due before step 1000."""
    out, log = tmp_path / "run", tmp_path / "run.log"
    proc = start(cli_command(out, "--max-steps", "400", "--n-epochs", "200", "--max-dataset-size", "400",
                             "--checkpoint-every", "1000", "--sample-every", "2", "--num-workers", "1"), log)
    wait_for(out / "samples" / "step_000002.png", proc, log)  # training is under way
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    assert proc.wait(timeout=300) == 128 + signum
    err = log.read_text()
    assert f"{signal.Signals(signum).name} received" in err and f"--resume {out}" in err
    assert "Traceback" not in err
    ckpt = load_checkpoint(out / "checkpoint.pt")
    step = ckpt["training"]["step"]
    assert 2 <= step < 400 and len(ckpt["history"]) == step  # log_every 1
    assert step_checkpoints(out) == [out / "checkpoints" / f"step_{step:07d}.pt"]


def test_interrupted_and_diverged_runs_exit_with_a_message(monkeypatch, capsys, tmp_path):
    """The CLI turns both into a one-line message and an exit code, not a traceback."""
    for error, code in ((TrainingInterrupted(signal.SIGTERM, 7, tmp_path / "checkpoint.pt"), 143),
                        (TrainingDiverged("loss term cycle_A was nan at step 7"), 1)):
        def fail(*args, **kwargs):
            raise error
        monkeypatch.setattr("cyclelib.cyclegan_run.train_cyclegan", fail)  # the command imports it when it runs
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "cyclegan", "--data", DIGITS, "--scale", "smoke", "--out", str(tmp_path)])
        assert exit_info.value.code == code
        err = capsys.readouterr().err
        assert "step 7" in err and "Traceback" not in err


# --------------------------------------------------------------------------- checkpoint files


@pytest.fixture(scope="module")
def run10(tmp_path_factory):
    """A 10-step digits run with a checkpoint every 2 steps (do not modify: copy it)."""
    out = tmp_path_factory.mktemp("run10") / "run"
    train_cyclegan(smoke(out, max_steps=10, checkpoint_every=2, n_epochs=5), progress=False)
    return out


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


def corrupt(path: Path, how: str) -> None:
    """Truncate ``path`` to half, or flip one byte in the middle of its largest tensor."""
    data = bytearray(path.read_bytes())
    if how == "truncated":
        del data[len(data) // 2:]
    else:
        with zipfile.ZipFile(path) as archive:
            record = max(archive.infolist(), key=lambda info: info.file_size)
        # The record's bytes follow its 30-byte local header, file name and extra field.
        name_length, extra_length = struct.unpack_from("<2H", data, record.header_offset + 26)
        data[record.header_offset + 30 + name_length + extra_length + record.file_size // 2] ^= 0xFF
    path.unlink()  # a new file: checkpoint.pt may be a hard link of a step file
    path.write_bytes(bytes(data))


def test_torch_alone_would_load_a_flipped_byte(run10, tmp_path):
    """Why load_checkpoint checks CRCs: the corrupted file below loads in torch without error."""
    path = tmp_path / "flipped.pt"
    shutil.copyfile(run10 / "checkpoint.pt", path)
    corrupt(path, "flipped")
    flipped = torch.load(path, weights_only=True)  # no error: silently different numbers
    assert not equal_states(flipped["nets"], load_checkpoint(run10 / "checkpoint.pt")["nets"])
    with pytest.raises(ValueError, match=r"flipped\.pt is corrupted: record .* fails its CRC32 check"):
        load_checkpoint(path)


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(run10, tmp_path, how):
    """checkpoint.pt and the step-10 file are damaged: --resume warns, naming them and the
    step-8 file it uses instead, and redoes steps 9 and 10 exactly."""
    run = tmp_path / "run"
    shutil.copytree(run10, run)
    for name in ("checkpoint.pt", "checkpoints/step_0000010.pt"):
        corrupt(run / name, how)
    with pytest.warns(UserWarning, match=r"(?s)checkpoint\.pt.*step_0000010\.pt.*previous one.*step_0000008\.pt"):
        main(["train", "cyclegan", "--resume", str(run)])
    resumed, straight = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(run10 / "checkpoint.pt")
    assert resumed["training"]["step"] == 10 and equal_states(resumed["nets"], straight["nets"])


def test_no_readable_checkpoint_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "cyclegan", "--resume", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"no readable checkpoint in .*run.*checkpoint\.pt"):
        load_run_checkpoint(tmp_path / "run")


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


def test_resume_refuses_other_network_options_and_newer_formats(run10, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run10, run)
    for flags, message in ((["--ngf", "16"], "ngf=8 there, 16 now"),
                           (["--input-nc", "1", "--output-nc", "1"], "input_nc=3 there, 1 now")):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "cyclegan", "--resume", str(run), *flags])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    state = load_checkpoint(run / "checkpoint.pt")
    save_checkpoint({**state, "version": FORMAT_VERSION + 1}, run / "checkpoint.pt")
    with pytest.raises(ValueError, match=f"format {FORMAT_VERSION + 1} is newer"):
        train_cyclegan(CycleGANConfig(**{**state["config"], "out": str(run)}), resume=True, progress=False)


# --------------------------------------------------------------------------- loading never runs code


class Payload:
    """Pickles as a call to exec: unpickling it with the full unpickler runs the code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    run = tmp_path / "run"
    run.mkdir()
    evil = run / "checkpoint.pt"
    torch.save({"kind": "cyclegan", "nets": {"G_A.model.1.weight": torch.zeros(1)}, "extra": Payload(marker)},
               evil)
    loaders = {
        "load_checkpoint": lambda: load_checkpoint(evil),
        "load_official": lambda: load_official(evil, kind="G", arch="resnet_9blocks"),
        "load_generator": lambda: load_generator(evil),
        "load_cyclegan": lambda: load_cyclegan(evil),
        "export_safetensors": lambda: export_safetensors(evil, tmp_path / "out.safetensors"),
        "resume": lambda: load_run_checkpoint(run),
    }
    for name, load in loaders.items():
        with pytest.raises(ValueError, match="refusing to load .*checkpoint.pt"):
            load()
        assert not marker.exists(), name
    for argv in (["translate", "--checkpoint", str(evil), "--input", str(tmp_path), "--output", str(tmp_path / "o")],
                 ["train", "cyclegan", "--resume", str(run)]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and "refusing to load" in capsys.readouterr().err
    assert not marker.exists()
    # The control: the file is armed, a plain torch.load would have run the code.
    torch.load(evil, weights_only=False)
    assert marker.exists()


# --------------------------------------------------------------------------- safetensors


def test_safetensors_round_trip_of_a_cyclegan_model_and_checkpoint(run10, tmp_path):
    ckpt = load_checkpoint(run10 / "checkpoint.pt")
    model = load_cyclegan(run10 / "checkpoint.pt")
    sources = {"model": model, "checkpoint dict": ckpt, "checkpoint path": run10 / "checkpoint.pt"}
    for name, source in sources.items():
        path = export_safetensors(source, tmp_path / f"{name.replace(' ', '_')}.safetensors")
        state = load_checkpoint(path)
        assert state["kind"] == "cyclegan" and state["version"] == FORMAT_VERSION, name
        assert state["config"] == ckpt["config"], name
        assert equal_states(state["nets"], ckpt["nets"]), name
        assert equal_states(load_cyclegan(path).state_dict(), model.state_dict()), name
        assert equal_states(load_generator(path, "BtoA").state_dict(), model.G_B.state_dict()), name
    assert "optimizers" not in load_checkpoint(tmp_path / "model.safetensors")  # weights only


def test_safetensors_round_trip_of_an_official_generator(tmp_path):
    net = build_generator("resnet_1blocks", width=4, norm="batch").eval()
    official = save_official(net, tmp_path / "latest_net_G_A.pth")
    for source in (net, net.state_dict(), official):
        path = export_safetensors(source, tmp_path / "G.safetensors")
        loaded = load_official(path, kind="G", arch="resnet_1blocks", width=4, norm="batch")
        assert equal_states(loaded.state_dict(), net.state_dict())
    translated = load_generator(tmp_path / "G.safetensors", arch="resnet_1blocks", norm="batch", width=4)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(translated(x), net(x))
    with pytest.raises(ValueError, match=r"G\.safetensors does not fit .*width=8"):
        load_official(tmp_path / "G.safetensors", kind="G", arch="resnet_1blocks", width=8, norm="batch")


def test_bad_safetensors_input_and_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="export_safetensors needs a module, a state_dict"):
        export_safetensors({"nested": {"w": torch.zeros(1)}}, tmp_path / "x.safetensors")
    path = export_safetensors({"w": torch.zeros(100)}, tmp_path / "cut.safetensors")
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"cannot read .*cut\.safetensors: truncated or not a safetensors file"):
        load_checkpoint(path)

    # One flipped bit in the data would load as a wrong weight: the CRC32s in the metadata catch it.
    path = export_safetensors({"a": torch.zeros(100), "b": torch.ones(100)}, tmp_path / "flip.safetensors")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"flip\.safetensors is corrupted: tensor\(s\) [ab] fail the CRC32"):
        load_checkpoint(path)
    # Files written by other tools have no CRC32s and load as they are.
    save_file({"w": torch.arange(4.0)}, tmp_path / "plain.safetensors")
    assert torch.equal(load_checkpoint(tmp_path / "plain.safetensors")["w"], torch.arange(4.0))


# --------------------------------------------------------------------------- bad data


def test_missing_or_empty_domain_folders_are_named(tmp_path, capsys):
    (tmp_path / "data" / "trainA").mkdir(parents=True)
    rgb(40, 40).save(tmp_path / "data" / "trainA" / "a.png")
    argv = ["train", "cyclegan", "--data", str(tmp_path / "data"), "--scale", "smoke", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "trainB does not exist" in capsys.readouterr().err
    (tmp_path / "data" / "trainB").mkdir()
    (tmp_path / "data" / "trainB" / "notes.txt").write_text("no images")
    with pytest.raises(FileNotFoundError, match=r"no image files .* in .*trainB"):
        train_cyclegan(smoke(tmp_path / "o", data=tmp_path / "data"), progress=False)
    assert not (tmp_path / "o").exists()


def test_unreadable_images_stop_the_run_before_training_or_are_skipped(tmp_path, capsys):
    data = image_dataset(tmp_path / "data")
    (data / "trainA" / "bad1.png").write_bytes(b"not an image at all")
    buffer = io.BytesIO()
    rgb(40, 40, seed=7).save(buffer, "PNG")
    (data / "trainB" / "cut.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"cannot read image .*trainA.bad1\.png.*1 unreadable image.*"
                                         r"skip_bad_images=True"):
        train_cyclegan(smoke(out, data=data), progress=False)
    assert not out.exists()  # nothing trained, nothing written
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "cyclegan", "--data", str(data), "--scale", "smoke", "--out", str(out)])
    assert exit_info.value.code == 2 and "bad1.png" in capsys.readouterr().err

    train_cyclegan(smoke(out, data=data, skip_bad_images=True, max_steps=1), progress=False)
    err = capsys.readouterr().err
    assert "skipped 2 unreadable train image(s)" in err
    assert load_checkpoint(out / "checkpoint.pt")["training"]["step"] == 1


def test_images_smaller_than_the_crop_are_resized_or_name_the_option(tmp_path):
    data = image_dataset(tmp_path / "data", size=(20, 24))  # smoke: load_size 36, crop_size 32
    with pytest.raises(ValueError, match=r"000\.png is 20x24, smaller than crop_size=32"):
        train_cyclegan(smoke(tmp_path / "crop", data=data, preprocess="crop", skip_bad_images=True),
                       progress=False)
    assert not (tmp_path / "crop").exists()
    train_cyclegan(smoke(tmp_path / "resize", data=data, max_steps=1), progress=False)  # resize_and_crop
    assert load_checkpoint(tmp_path / "resize" / "checkpoint.pt")["training"]["step"] == 1


def mixed_mode_dataset(root: Path) -> Path:
    """Non-square images in every mode a user's folder may hold; all sides >= 40 pixels."""
    a, b = root / "trainA", root / "trainB"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 52), dtype=np.uint8), "L").save(a / "gray.png")
    Image.fromarray(rng.integers(0, 256, (60, 44, 4), dtype=np.uint8), "RGBA").save(a / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, (48, 64), dtype=np.uint16)).save(a / "deep16.png")  # I;16
    rgb(56, 40, seed=1).quantize(16).save(a / "palette.png")  # mode P
    rgb(44, 60, seed=2).convert("CMYK").save(b / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 256, (44, 48, 2), dtype=np.uint8), "LA").save(b / "gray_alpha.png")
    rgb(64, 40, seed=3).save(b / "wide.png")
    return root


@pytest.mark.parametrize("preprocess", PREPROCESS_MODES)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_and_preprocess_flows_through_loader_and_step(tmp_path, preprocess, channels):
    """Gray, RGBA, 16-bit, palette, CMYK and gray+alpha files, non-square, become
    [channels, H, W] tensors in [-1, 1] of the preprocess's size, and a training step on
    them gives finite losses."""
    data = UnpairedImageFolder(mixed_mode_dataset(tmp_path), channels=channels, preprocess=preprocess,
                               load_size=36, crop_size=32)
    data.check()  # every file is readable
    config = CycleGANConfig(netG="resnet_1blocks", ngf=4, ndf=4, input_nc=channels, output_nc=channels,
                            pool_size=0)
    model = CycleGAN(config)
    for batch in torch.utils.data.DataLoader(data, batch_size=1):
        for side in "AB":
            image = batch[side][0]
            assert image.shape[0] == channels and image.dtype == torch.float32
            assert -1 <= image.min() and image.max() <= 1
            h, w = image.shape[1:]
            if preprocess.endswith("crop"):
                assert (h, w) == (32, 32)
            else:  # uncropped: sides rounded to multiples of 4, else the cycle loss would compare other sizes
                assert h % 4 == 0 and w % 4 == 0
                assert preprocess == "none" or (w == 36 and h >= 32)  # scale_width
        terms = model.train_step(batch["A"], batch["B"])
        assert all(torch.isfinite(v) for v in terms.values())


def test_a_mixed_mode_folder_trains(tmp_path):
    data = mixed_mode_dataset(tmp_path / "data")
    train_cyclegan(smoke(tmp_path / "run", data=data, max_steps=2), progress=False)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["training"]["step"] == 2


def test_sizes_the_generator_cannot_reproduce_are_a_clear_error():
    """A 30x30 image comes out of a resnet generator 32x32: an error, not a broadcast loss."""
    model = CycleGAN(CycleGANConfig(netG="resnet_1blocks", ngf=4, ndf=4))
    images = torch.zeros(1, 3, 30, 30)
    with pytest.raises(ValueError, match=r"resnet_1blocks turns \(30, 30\) images into \(32, 32\)"):
        model.train_step(images, images)


def test_channel_counts_that_do_not_fit_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "cyclegan", "--data", DIGITS, "--scale", "smoke", "--out", str(tmp_path),
              "--input-nc", "4", "--output-nc", "4"])
    assert exit_info.value.code == 2
    assert "input_nc must be 1 (images read as grayscale) or 3 (RGB), got 4" in capsys.readouterr().err
    model = CycleGAN(CycleGANConfig(netG="resnet_1blocks", ngf=4, ndf=4, input_nc=1, output_nc=1))
    rgb_batch = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"1 channels\), got a tensor of shape \(\d+, 3, 32, 32\)"):
        model.train_step(rgb_batch, rgb_batch)


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize("option, value, message", [
    ("netG", "resnet_xblocks", r"netG: unknown generator arch 'resnet_xblocks'; valid values: resnet_<n>blocks"),
    ("netG", "unet_100", r"netG: unknown generator arch 'unet_100'; valid values: .*unet_<size>"),
    ("netD", "patch", r"unknown netD 'patch'; valid values: basic, n_layers, pixel"),
    ("norm", "layer", r"unknown norm 'layer'; valid values: instance, batch, none"),
    ("init", "he", r"unknown init 'he'; valid values: normal, xavier, kaiming, orthogonal"),
    ("gan_mode", "wgan", r"unknown gan_mode 'wgan'; valid values: lsgan"),
    ("preprocess", "zoom", r"unknown preprocess 'zoom'; valid values: resize_and_crop, crop"),
    ("lambda_A", -1.0, r"lambda_A must be >= 0, got -1"),
    ("lambda_identity", -0.5, r"lambda_identity must be >= 0"),
    ("crop_size", 300, r"crop_size \(300\) must not exceed load_size \(286\) with preprocess 'resize_and_crop'"),
    ("keep_checkpoints", 0, r"keep_checkpoints must be > 0, got 0"),
    ("clip_grad_norm", -1.0, r"clip_grad_norm must be >= 0"),
    ("beta1", 1.0, r"beta1 must be in \[0, 1\)"),
])
def test_bad_options_are_clear_errors_from_python_and_the_cli(option, value, message, capsys):
    with pytest.raises(ValueError, match=message):
        CycleGANConfig(**{option: value})
    with pytest.raises(SystemExit) as exit_info:  # validated before any data is read: "photos" need not exist
        main(["train", "cyclegan", "--data", "photos", "--scale", "smoke", "--load-size", "286",
              f"--{option.replace('_', '-')}", str(value)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.startswith("cyclelib: error: ") and err.count("\n") == 1


def test_a_missing_data_option_is_exit_code_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "cyclegan", "--scale", "smoke"])
    assert exit_info.value.code == 2 and "--data is required" in capsys.readouterr().err


def test_valid_architecture_patterns_are_accepted():
    for name in ("resnet_1blocks", "resnet_12blocks", "unet_32"):
        assert CycleGANConfig(netG=name).netG == name
    # a U-Net of size s takes multiples of s
    assert CycleGANConfig(netG="unet_512", crop_size=512, load_size=572).netG == "unet_512"
    state = torch.get_rng_state()
    CycleGANConfig(netG="unet_64", init="orthogonal")
    assert torch.equal(state, torch.get_rng_state())  # checking a name draws no random numbers


# --------------------------------------------------------------------------- numerical faults


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nan_or_inf_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, bad):
    """An extra generator term turns bad at step 3 (and its gradient poisons the weights).
    The run stops at the next log or checkpoint naming step 3 and the term; checkpoint.pt
    stays the finite one of step 2."""
    calls = {"n": 0}

    def poison(real_A, real_B, fakes):
        calls["n"] += 1
        factor = bad if calls["n"] == 3 else 0.0
        return {"poison": fakes["fake_B"].mean().abs() * factor}

    out = tmp_path / "run"
    config = smoke(out, max_steps=8, n_epochs=5, checkpoint_every=2, log_every=4)
    with pytest.raises(TrainingDiverged, match=rf"loss term poison was {bad} at step 3; training stopped and "
                                               r"the checkpoints in .* \(latest: step 2\) are from before it"):
        train_cyclegan(config, extra_generator_losses=poison, progress=False)
    assert [p.name for p in step_checkpoints(out)] == ["step_0000002.pt"]
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["training"]["step"] == 2 and all(torch.isfinite(t).all() for t in ckpt["nets"].values() if t.is_floating_point())


def grad_norm(parameters) -> float:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None])).item()


def test_clip_grad_norm_bounds_each_optimizers_gradient():
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    norms = {}
    for clip in (None, 1e-3):
        torch.manual_seed(0)
        model = CycleGAN(CycleGANConfig(netG="resnet_1blocks", ngf=4, ndf=4, pool_size=0, clip_grad_norm=clip))
        model.train_step(a, b)  # the gradients stay in .grad after the optimizer steps
        norms[clip] = [grad_norm(p for group in opt.param_groups for p in group["params"])
                       for opt in (model.opt_G, model.opt_D)]
    assert all(n > 1e-2 for n in norms[None])  # without clipping the norms are far larger
    assert all(n == pytest.approx(1e-3, rel=1e-4) for n in norms[1e-3])
