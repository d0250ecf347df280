"""Runs that say what they do: which limit ended them, going on from a chosen step, threads, compiling,
and one voice under torchrun."""
import subprocess
import sys

import pytest
import torch

from cyclelib import load_checkpoint, runtime, train_cyclegan
from helpers import DIGITS, cli, equal_states, image_folder, package_env, smoke

SMOKE = ("train", "cyclegan", "--data", DIGITS, "--scale", "smoke", "--device", "cpu", "--amp", "none")


def last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_max_steps_beyond_the_epochs_is_refused_with_the_reason(tmp_path):
    code, err = cli(*SMOKE, "--out", str(tmp_path / "run"), "--max-steps", "400")
    assert code == 2, err
    assert "max_steps 400 is more than the 8 steps of the run's 2 epochs (4 steps each)" in err
    assert "give more epochs (n_epochs, n_epochs_decay)" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_the_final_line_names_the_limit_that_ended_the_run(tmp_path, capsys):
    assert cli(*SMOKE, "--out", str(tmp_path / "capped"), "--max-steps", "3")[0] == 0
    assert last_line(capsys).startswith("done: stopped by max_steps 3;")
    assert cli(*SMOKE, "--out", str(tmp_path / "whole"), "--max-steps", "8")[0] == 0
    assert last_line(capsys).startswith("done: stopped by the end of its 2 epochs;")


def test_from_step_goes_on_from_that_checkpoint_and_drops_the_later_ones(tmp_path):
    out = tmp_path / "run"
    options = dict(checkpoint_every=2, keep_checkpoints=10)
    train_cyclegan(smoke(out, **options), progress=False)
    straight = load_checkpoint(out / "checkpoint.pt")
    code, err = cli("train", "cyclegan", "--resume", str(out), "--from-step", "3")
    assert code == 2 and "no checkpoint of step 3" in err and "the steps it kept: 2, 4, 6, 8" in err, err

    assert cli("train", "cyclegan", "--resume", str(out), "--from-step", "4", "--max-steps", "6")[0] == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step_000000{s}.pt" for s in (2, 4, 6)]
    rewound = load_checkpoint(out / "checkpoint.pt")
    assert rewound["training"]["step"] == 6 and [row["step"] for row in rewound["history"]] == [1, 2, 3, 4, 5, 6]

    assert cli("train", "cyclegan", "--resume", str(out), "--from-step", "2", "--max-steps", "8")[0] == 0
    again = load_checkpoint(out / "checkpoint.pt")
    assert equal_states(again["nets"], straight["nets"])
    assert again["history"] == straight["history"]
    assert load_checkpoint(out / "checkpoint_best.pt")["training"]["step"] <= 8


def test_from_step_needs_resume(tmp_path):
    code, err = cli(*SMOKE, "--out", str(tmp_path / "run"), "--from-step", "2")
    assert code == 2 and "--from-step 2 picks the checkpoint of a run to go on from: give --resume DIR" in err


def test_translate_takes_any_kept_step_of_a_run_folder(two_steps, tmp_path):
    images = image_folder(tmp_path / "in", 1, size=(32, 32))
    for step in ("1", "2"):
        code, err = cli("translate", "--checkpoint", str(two_steps), "--step", step, "--input", str(images),
                        "--output", str(tmp_path / step), "--device", "cpu")
        assert code == 0, err
    assert (tmp_path / "1" / "000.png").read_bytes() != (tmp_path / "2" / "000.png").read_bytes()
    code, err = cli("translate", "--checkpoint", str(two_steps), "--step", "9", "--input", str(images),
                    "--output", str(tmp_path / "9"))
    assert code == 2 and "the steps it kept: 1, 2" in err, err


@pytest.fixture
def threads():
    """Restores torch's thread count after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_default_threads_are_torchs_at_most_the_physical_cores(threads, monkeypatch):
    assert 1 <= runtime.physical_cores() <= len(runtime.os.sched_getaffinity(0))
    monkeypatch.setattr(runtime, "physical_cores", lambda: 1)
    torch.set_num_threads(2)
    assert runtime.use_threads() == 1 == torch.get_num_threads()
    assert runtime.use_threads(3) == 3 == torch.get_num_threads()  # asked for: as many as asked


def test_threads_option_and_the_progress_line_says_how_many(threads, tmp_path):
    code, err = cli(*SMOKE, "--out", str(tmp_path / "run"), "--max-steps", "1", "--threads", "1")
    assert code == 0 and "cyclegan [CPU threads: 1]" in err, err
    assert torch.get_num_threads() == 1


def test_compile_says_it_compiles_and_how_long_it_took(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *args, **kwargs: None)  # the messages, not inductor
    train_cyclegan(smoke(tmp_path, compile=True, max_steps=2), progress=False)
    out = capsys.readouterr().out
    assert out.count("compiling the networks (torch.compile): the first step waits for it") == 1
    assert out.count("compiled, first step done in") == 1
    assert out.index("compiling") < out.index("compiled")


@pytest.mark.slow  # a torchrun launch of two processes
def test_under_torchrun_rank_0_alone_says_what_trains_and_when_it_is_done(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "cyclelib", *SMOKE, "--out", str(tmp_path / "run"), "--max-steps", "2", "--pool-size", "0"]
    done = subprocess.run(command, cwd=tmp_path, env=package_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("training CycleGAN on") == 1, done.stdout
    assert done.stdout.count("done: stopped by max_steps 2;") == 1, done.stdout
