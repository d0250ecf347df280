"""DDP through torchrun: two Gloo ranks on CPU train as one process on the union of their batches."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cyclelib import CyCADAConfig, CycleGANConfig, load_checkpoint, train_cyclegan
from cyclelib.cli import main
from cyclelib import cycada, cycada_run
from cyclelib.cycada import load_stage, stage_finished
from helpers import package_env

# Two ranks with batch B equal one process with batch 2B when every loss is a mean over
# independent samples: no image pool (each rank keeps its own) and no batch norm. Norm
# "none" also leaves out the biases in front of instance norm, whose gradient is zero up
# to rounding. fp32 (amp none) on every CPU; a checkpoint after every step, all kept.
OPTIONS = dict(data="mnist5k:mnistm5k", norm="none", pool_size=0, max_dataset_size=8, n_epochs=1,
               n_epochs_decay=1, log_every=1, sample_every=100, checkpoint_every=1, keep_checkpoints=4, amp="none")


def torchrun_train(out: Path, *options: str, model: str = "cyclegan") -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "cyclelib", "train", model, *options]
    done = subprocess.run(command, cwd=out.parent, env=package_env(), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


@pytest.mark.slow  # three torchrun launches of two processes each
def test_two_ranks_take_the_step_of_the_union_batch_and_resume_exactly(tmp_path):
    """Compared where no rounding can tip the comparison on any CPU: the first step's losses and
    gradients (after one step Adam's first moment is (1 - beta1) * gradient) against one process
    on the union batch; and a stopped and resumed two-rank run against an uninterrupted one, bit
    for bit. (Weights after several Adam steps are not compared across the two set-ups: Adam moves
    a weight by about lr whatever its gradient's size, so a rounding flip of a tiny gradient's
    sign changes that weight by 2 lr.)"""
    one = tmp_path / "one"
    train_cyclegan(CycleGANConfig.for_scale("smoke", **OPTIONS, batch_size=4, out=str(one), max_steps=1),
                   progress=False)
    flags = ["--scale", "smoke", *(f"--{name.replace('_', '-')}={value}" for name, value in OPTIONS.items()),
             "--batch-size", "2"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    torchrun_train(straight, *flags, "--out", str(straight), "--max-steps", "4")
    torchrun_train(stopped, *flags, "--out", str(stopped), "--max-steps", "3")
    # Step 3 of 4 stopped mid-epoch: every rank reloads the checkpoint and takes up its own share.
    torchrun_train(stopped, "--resume", str(stopped), "--max-steps", "4")

    a, b = load_checkpoint(one / "checkpoint.pt"), load_checkpoint(straight / "checkpoints" / "step_0000001.pt")
    # Logged losses are the means over both ranks: those of the union batch.
    assert b["history"][0] == pytest.approx(a["history"][0], rel=1e-5)
    for name in ("G", "D"):
        moments_a, moments_b = (ckpt["training"]["optimizers"][name]["state"] for ckpt in (a, b))
        assert moments_a.keys() == moments_b.keys()
        for i, state in moments_a.items():
            grad_a, grad_b = state["exp_avg"], moments_b[i]["exp_avg"]
            torch.testing.assert_close(grad_b, grad_a, rtol=1e-3, atol=1e-5 * float(grad_a.abs().max()),
                                       msg=f"{name} parameter {i}")

    c, d = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(stopped / "checkpoint.pt")
    assert c["training"]["step"] == d["training"]["step"] == 4 and c["training"]["epoch"] == d["training"]["epoch"]
    assert all(torch.equal(v, d["nets"][k]) for k, v in c["nets"].items())
    assert c["history"] == d["history"]


@pytest.mark.slow  # one torchrun launch of two processes
def test_cycada_pixel_stage_runs_on_two_ranks_and_rank_0_evaluates(tmp_path):
    out = tmp_path / "cycada"
    common = ["--source", "uci-digits", "--target", "mnist5k", "--scale", "smoke", "--out", str(out)]
    main(["train", "cycada", *common, "--stages", "source"])  # classifier stages: one process
    torchrun_train(out, *common, "--stages", "pixel", model="cycada")
    assert stage_finished(CyCADAConfig.for_scale("smoke", source="uci-digits", target="mnist5k", out=str(out)),
                          "pixel")
    metrics = json.loads((out / "metrics.json").read_text())
    assert "pixel" in metrics["wall_s"]
    # rank 0 evaluated the stage the two ranks trained: f_S's reading of G_A's translations
    config = CyCADAConfig.for_scale("smoke", source="uci-digits", target="mnist5k", out=str(out))
    source_test = cycada_run._eval_subset(cycada.load_domain(config, config.source, "test"), config)
    x, y = torch.stack([x for x, _ in source_test]), torch.tensor([y for _, y in source_test])
    with torch.no_grad():
        expected = (load_stage(config, "source")(load_stage(config, "pixel").G_A(x)).argmax(dim=1) == y)
    # (one image of slack: the ranks ran with another thread count, which may tip a near tie)
    assert metrics["label_preservation"] == pytest.approx(expected.double().mean().item(), abs=1.01 / len(y))
