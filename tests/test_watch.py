"""Watching a run (cyclelib.watch): TensorBoard events of every loss term, the learning rates and
the sample grids, continued at the resumed step; Weights & Biases in its offline mode; a clear
error for a missing package; the resolved options printed once and saved as config.json.

Every run is a smoke run on the CPU: 4 steps, a history row every step, a sample grid every 2.
"""
import dataclasses
import importlib.util
import json
import re
import signal

import pytest

from cyclelib import CycleGANConfig, TrainingInterrupted, run_cycada, train_cyclegan
from cyclelib.presets import CYCLEGAN_PRESETS
from cyclelib.checkpoints import load_checkpoint
from cyclelib.runs import LATEST
from cyclelib.train import Trainer
from cyclelib.watch import Watch

from helpers import DIGITS, cli, cycada_smoke, smoke

RUN = dict(max_steps=4, log_every=1, sample_every=2, checkpoint_every=2)
TERMS = ("G_A", "G_B", "cycle_A", "cycle_B", "D_A", "D_B")


def stop_at(monkeypatch, step: int, how=None) -> None:
    """After ``step``, ``how`` is raised (a kill), or by default SIGINT (a stop with a checkpoint)."""
    after_step = Trainer._after_step

    def stop(self, *args):
        after_step(self, *args)
        if self.step == step and how:
            raise how()
        if self.step == step:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Trainer, "_after_step", stop)


def events(folder):
    """The TensorBoard events in ``folder``: {tag: [step, ...]} of scalars and images."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    return {**{t: [e.step for e in acc.Scalars(t)] for t in tags["scalars"]},
            **{t: [e.step for e in acc.Images(t)] for t in tags["images"]}}


@pytest.mark.slow
def test_tensorboard_holds_every_loss_term_the_learning_rates_and_the_sample_grids(tmp_path):
    out = tmp_path / "run"
    train_cyclegan(smoke(out, tensorboard=True, **RUN), progress=False)
    found = events(out / "tensorboard")
    history = load_checkpoint(out / LATEST)["history"]
    assert {f"loss/{k}" for k in history[0] if k not in ("step", "epoch")} | {"lr/G", "lr/D", "samples"} == set(found)
    assert all(found[f"loss/{term}"] == [1, 2, 3, 4] for term in TERMS)
    assert found["lr/G"] == found["lr/D"] == [1, 2, 3, 4]
    assert found["samples"] == [2, 4]  # every sample_every, and the end's (step 4) once


def test_a_resumed_run_continues_its_events_at_the_resumed_step(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        stop_at(m, 3, KeyboardInterrupt)  # as a kill: rows 1-3 logged, the latest checkpoint step 2's
        with pytest.raises(KeyboardInterrupt):
            train_cyclegan(smoke(out, tensorboard=True, **RUN), progress=False)
    assert events(out / "tensorboard")["loss/G"] == [1, 2, 3]
    train_cyclegan(smoke(out, tensorboard=True, **RUN), resume=True, progress=False)
    # step 3 of the killed run is dropped (purge_step 3), the resumed run's 3 and 4 follow once
    assert events(out / "tensorboard")["loss/G"] == [1, 2, 3, 4]


@pytest.mark.slow
def test_wandb_offline_logs_the_history_the_options_and_continues_the_run_on_resume(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    closed = []  # each run's config and summary as it ends (offline, wandb keeps them in its binary log)
    close = Watch.close
    monkeypatch.setattr(Watch, "close", lambda self: self.wandb and closed.append(
        (dict(self.wandb.config), dict(self.wandb.summary))) or close(self))
    out = tmp_path / "run"
    config = smoke(out, wandb=True, wandb_project="watch-test", **RUN)
    with monkeypatch.context() as m:
        stop_at(m, 2)
        with pytest.raises(TrainingInterrupted):
            train_cyclegan(config, progress=False)
    run_id = load_checkpoint(out / LATEST)["training"]["watch"]["wandb_id"]
    train_cyclegan(config, resume=True, progress=False)
    assert load_checkpoint(out / LATEST)["training"]["watch"]["wandb_id"] == run_id
    runs = sorted((tmp_path / "wandb_dir" / "wandb").glob("offline-run-*"))
    # the resume continues the same run (wandb adds "-1" to a folder name taken in the same second)
    same_run = rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?"
    assert len(runs) == 2 and all(re.fullmatch(same_run, run.name) for run in runs)
    for run in runs:
        log = b"".join(path.read_bytes() for path in run.glob("*.wandb"))
        assert all(f"loss/{term}".encode() in log for term in TERMS) and b"lr/G" in log and b"samples" in log
    (options, _), (_, summary) = closed
    assert options == dataclasses.asdict(config)
    last = load_checkpoint(out / LATEST)["history"][-1]
    assert summary["step"] == 4 and all(summary[f"loss/{term}"] == pytest.approx(last[term]) for term in TERMS)
    assert wandb.run is None  # finished


@pytest.mark.parametrize("option, package", [("tensorboard", "tensorboard"), ("wandb", "wandb")])
def test_a_missing_package_is_a_clear_error_before_anything_runs(tmp_path, monkeypatch, option, package):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(ImportError, match=rf"--{option} .*{package} package.*pip install 'cyclelib\[log\]'"):
        train_cyclegan(smoke(tmp_path / "run", **{option: True}, **RUN), progress=False)
    assert not (tmp_path / "run").exists()
    code, err = cli("train", "cyclegan", "--data", DIGITS, "--out", str(tmp_path / "cli"), "--scale", "smoke",
                    f"--{option}")
    assert code and code != 2 and "pip install 'cyclelib[log]'" in str(code) + err
    assert not (tmp_path / "cli").exists()


def test_a_run_prints_its_resolved_options_once_and_saves_them(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = cli("train", "cyclegan", "--data", DIGITS, "--out", str(out), "--scale", "smoke", "--max-steps", "2",
                    "--device", "cpu", "--log-every", "1")
    assert code == 0, err
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("options")]
    assert len(printed) == 1
    preset = CYCLEGAN_PRESETS["smoke"]["digits"]
    assert "scale smoke preset: " in printed[0] and f"netG {preset['netG']!r}" in printed[0]
    assert f"ngf {preset['ngf']}" in printed[0] and "command line: data" in printed[0]
    assert "max_steps 2" in printed[0].split("command line: ")[1]
    config = CycleGANConfig.for_scale("smoke", data=DIGITS, out=str(out), max_steps=2, device="cpu", log_every=1)
    assert json.loads((out / "config.json").read_text()) == dataclasses.asdict(config)
    # resumed with another lr and more steps: the change is named
    code, err = cli("train", "cyclegan", "--resume", str(out), "--lr", "0.001", "--max-steps", "3")
    assert code == 0, err
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("options")]
    assert len(printed) == 1 and "changed at this resume: lr 0.0002 -> 0.001, max_steps 2 -> 3" in printed[0]
    assert json.loads((out / "config.json").read_text())["lr"] == 0.001


def test_a_cycada_run_prints_its_options_once_with_the_presets_marked(tmp_path, capsys):
    config = cycada_smoke(tmp_path / "cycada", seed=3)
    run_cycada(config, stages=("source",), progress=False)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("options besides")]
    assert len(printed) == 1 and "set: source 'mnist5k', target 'mnistm5k', out " in printed[0]
    assert "scale smoke preset: image_size 16" in printed[0] and "seed 3" in printed[0]
    assert json.loads((tmp_path / "cycada" / "config.json").read_text()) == dataclasses.asdict(config)
