"""Runs that stop before their end: killed (SIGKILL), signalled (Ctrl-C's SIGINT, a scheduler's
SIGTERM) or diverged (a NaN/Inf loss), in a CycleGAN run and in CyCADA's classifier stages. A
signal ends the run at a step boundary with a checkpoint of that step, a divergence keeps the
last finite checkpoint, the CLI says so in one line, and the resumed run equals one never stopped.

Smoke runs on the CPU; the tests that start ``python -m cyclelib`` in a subprocess are ``slow``.
"""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from cyclelib import CycleGAN, TrainingDiverged, TrainingInterrupted, run_cycada, train_cyclegan
from cyclelib.cli import main
from cyclelib.cycada import stage_path
from cyclelib.checkpoints import load_checkpoint
from cyclelib.runs import BEST, LATEST, load_run_checkpoint, step_checkpoints
from helpers import DIGITS, cli_command, cli_env, cycada_smoke, equal_states, smoke


def train_command(out: Path, *options: str) -> list[str]:
    """``python -m cyclelib train cyclegan`` on the digits at the smoke scale, as :func:`smoke` configures it."""
    return cli_command("train", "cyclegan", "--data", DIGITS, "--scale", "smoke", "--device", "cpu", "--amp", "none",
                       "--out", str(out), *options)


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


def short_cycada(out, **options):
    """A smoke CyCADA run uci-digits -> mnist5k with short classifier stages (3 source epochs,
    2 feature epochs) and a checkpoint every 2 steps."""
    return cycada_smoke(out, **{"source": "uci-digits", "target": "mnist5k", "task_epochs": 3, "feature_epochs": 2,
                                "checkpoint_every": 2, **options})


# --------------------------------------------------------------------------- CycleGAN runs


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
    proc = start(train_command(killed, *flags, "--sample-every", "1000"), log)
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
    proc = start(train_command(out, "--max-steps", "400", "--n-epochs", "200", "--max-dataset-size", "400",
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


@pytest.mark.slow
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


# --------------------------------------------------------------------------- CyCADA's classifier stages


@pytest.mark.slow
def test_a_killed_feature_stage_resumes_bit_for_bit(tmp_path):
    """SIGKILL while the feature stage trains (after its step-4 checkpoint), then the same command
    again: the stage resumes and ends as an uninterrupted run does."""
    straight = short_cycada(tmp_path / "straight")
    run_cycada(straight, stages=("source", "feature_only"), progress=False)
    killed = tmp_path / "killed"
    argv = cli_command("train", "cycada", "--source", "uci-digits", "--target", "mnist5k",
                       "--scale", "smoke", "--amp", "none", "--task-epochs", "3", "--feature-epochs", "2",
                       "--checkpoint-every", "2", "--stages", "source,feature_only", "--out", str(killed))
    proc = subprocess.Popen(argv, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = killed / "feature_only" / "checkpoints" / "step_0000004.pt"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert load_checkpoint(killed / "feature_only" / LATEST)["training"]["step"] < 6  # unfinished
    assert subprocess.run(argv, env=cli_env(), capture_output=True, timeout=300).returncode == 0
    a, b = (load_checkpoint(stage_path(short_cycada(out), "feature_only")) for out in (tmp_path / "straight", killed))
    assert a["training"]["step"] == b["training"]["step"] == 6
    assert all(torch.equal(v, b["nets"][k]) for k, v in a["nets"].items())
    assert a["history"] == b["history"]


@pytest.mark.parametrize("stage", ["source", "feature_only"])
def test_a_signal_stops_a_classifier_stage_with_a_checkpoint_and_the_rerun_resumes(tmp_path, monkeypatch, stage):
    from cyclelib import classifiers

    config = short_cycada(tmp_path / "run")
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

    config = short_cycada(tmp_path / "run")
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
