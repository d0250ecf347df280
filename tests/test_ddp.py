"""DDP through torchrun: two Gloo ranks on CPU train as one process on the union of their batches."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cyclelib import CyCADAConfig, CycleGANConfig, load_checkpoint, train_cyclegan
from cyclelib.cli import main
from cyclelib.cycada import stage_finished

ROOT = Path(__file__).resolve().parents[1]

# Two ranks with batch B equal one process with batch 2B when every loss is a mean over
# independent samples: no image pool (each rank keeps its own) and no batch norm. Norm
# "none" also leaves out the biases in front of instance norm, whose gradient is zero up
# to rounding and which Adam would turn into steps of random sign.
OPTIONS = dict(data="mnist5k:mnistm5k", norm="none", pool_size=0, max_dataset_size=8, n_epochs=1,
               n_epochs_decay=1, log_every=1, sample_every=100, checkpoint_every=100)


def torchrun_train(out: Path, *options: str, model: str = "cyclegan") -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "cyclelib", "train", model, *options]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, cwd=out.parent, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


@pytest.mark.slow  # two torchrun launches of two processes each
def test_two_ranks_train_like_one_process_on_the_union_batch_and_resume(tmp_path):
    one = tmp_path / "one"
    train_cyclegan(CycleGANConfig.for_scale("smoke", **OPTIONS, batch_size=4, out=str(one)), progress=False)

    ddp = tmp_path / "ddp"
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in OPTIONS.items()]
    torchrun_train(ddp, "--scale", "smoke", *flags, "--batch-size", "2", "--out", str(ddp), "--max-steps", "3")
    # Step 3 of 4 stopped mid-epoch: every rank reloads the checkpoint and takes up its own share.
    torchrun_train(ddp, "--resume", str(ddp), "--max-steps", "4")

    a, b = load_checkpoint(one / "checkpoint.pt"), load_checkpoint(ddp / "checkpoint.pt")
    assert a["training"]["step"] == b["training"]["step"] == 4
    assert a["training"]["epoch"] == b["training"]["epoch"]
    assert a["nets"].keys() == b["nets"].keys()
    for name, weight in a["nets"].items():
        torch.testing.assert_close(b["nets"][name], weight, rtol=1e-4, atol=1e-5, msg=name)
    # Logged losses are the means over both ranks: those of the union batch.
    for row_a, row_b in zip(a["history"], b["history"], strict=True):
        assert row_b == pytest.approx(row_a, rel=1e-4)


@pytest.mark.slow  # one torchrun launch of two processes
def test_cycada_pixel_stage_runs_on_two_ranks_and_rank_0_evaluates(tmp_path):
    out = tmp_path / "cycada"
    common = ["--source", "uci-digits", "--target", "mnist5k", "--scale", "smoke", "--out", str(out)]
    main(["train", "cycada", *common, "--stages", "source"])  # classifier stages: one process
    torchrun_train(out, *common, "--stages", "pixel", model="cycada")
    assert stage_finished(CyCADAConfig.for_scale("smoke", source="uci-digits", target="mnist5k", out=str(out)),
                          "pixel")
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["label_preservation"] <= 1 and "pixel" in metrics["wall_s"]
