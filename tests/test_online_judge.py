"""The release's online semantic judge (``semantic_judge="online"``, issue 25) in the pixel stage's
checkpoints and under torchrun: a stopped stage resumes bit for bit, a checkpoint without the judge's
state is refused for it (and still resumes the paper's form, whose judge is frozen), and the ranks'
copies of the judge stay identical."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import torch

from cyclelib import TrainingInterrupted, cycada, load_checkpoint, run_cycada, semantic
from cyclelib.checkpoints import save_checkpoint
from cyclelib.cycada import stage_path
from cyclelib.cycada_run import _eval_subset
from cyclelib.metrics import accuracy, predict
from cyclelib.runs import step_checkpoints

from helpers import cycada_smoke, equal_states, package_env, stop_at

# The generators' semantic terms read the online judge on every step (no gate): the stage's GAN depends
# on the judge's weights. Two epochs of 3 steps, a step checkpoint every 2.
ONLINE = dict(semantic_judge="online", pixel_epochs=2, checkpoint_every=2)


def stopped_pixel_stage(out, step: int, **options):
    """A smoke CyCADA run in ``out`` (its config returned): the source stage, then the pixel stage
    stopped by SIGTERM after ``step``, as a cluster's preemption stops it."""
    config = cycada_smoke(out, **options)
    run_cycada(config, stages="source", progress=False)
    with pytest.MonkeyPatch.context() as monkeypatch:
        stop_at(monkeypatch, step, signal.SIGTERM)
        with pytest.raises(TrainingInterrupted, match=f"stopped at step {step}"):
            run_cycada(config, stages="pixel", progress=False)
    return config


def test_a_stopped_online_pixel_stage_resumes_bit_identical(tmp_path):
    straight = cycada_smoke(tmp_path / "straight", **ONLINE)
    run_cycada(straight, stages="source,pixel", progress=False)
    config = stopped_pixel_stage(tmp_path / "stopped", 4, **ONLINE)  # in the second epoch, after a step file
    folder = stage_path(config, "pixel").parent
    for path in (folder / "checkpoint.pt", *step_checkpoints(folder)):  # every checkpoint holds the judge
        (judge,) = load_checkpoint(path)["training"]["generator_terms"]
        assert judge["weights"] and judge["optimizer"]["state"], path
    run_cycada(config, stages="pixel", progress=False)  # resumes the unfinished stage

    a, b = (load_checkpoint(stage_path(c, "pixel")) for c in (straight, config))
    assert a["training"]["step"] == b["training"]["step"] == 6
    assert equal_states(a["nets"], b["nets"])  # G_A, G_B, D_A, D_B
    (judge_a,), (judge_b,) = a["training"]["generator_terms"], b["training"]["generator_terms"]
    assert equal_states(judge_a["weights"], judge_b["weights"])
    moments_a, moments_b = judge_a["optimizer"]["state"], judge_b["optimizer"]["state"]
    assert moments_a.keys() == moments_b.keys() and all(equal_states(moments_a[i], moments_b[i]) for i in moments_a)
    assert a["history"] == b["history"]
    first = load_checkpoint(step_checkpoints(stage_path(straight, "pixel").parent)[0])["training"]
    assert not equal_states(first["generator_terms"][0]["weights"], judge_a["weights"])  # it learnt on


@pytest.mark.parametrize("judge", ["online", "source"])
def test_a_checkpoint_without_the_judges_state_resumes_only_the_frozen_judge(tmp_path, judge):
    """Checkpoints written before the judge was kept: the paper's form (a frozen f_S, nothing to
    restore) resumes to the end; the online judge's is refused, naming the stage and the command
    that retrains it, and the stopped stage is left as it was."""
    config = stopped_pixel_stage(tmp_path, 2, semantic_judge=judge, pixel_epochs=2)
    folder = stage_path(config, "pixel").parent
    for path in (folder / "checkpoint.pt", *step_checkpoints(folder)):
        ckpt = load_checkpoint(path)
        del ckpt["training"]["generator_terms"]
        path.unlink()  # checkpoint.pt may be a hard link of the step file
        save_checkpoint(ckpt, path)
    before = {path: path.read_bytes() for path in folder.rglob("*.pt")}
    if judge == "source":
        run_cycada(config, stages="pixel", progress=False)
        assert load_checkpoint(stage_path(config, "pixel"))["training"]["step"] == 6
        return
    with pytest.raises(ValueError, match=r"cannot resume the pixel stage in .*pixel: its checkpoint holds no state "
                                         r"of the online semantic judge.*retrain the stage: .*--stages pixel.*--force"):
        run_cycada(config, stages="pixel", progress=False)
    assert {path: path.read_bytes() for path in folder.rglob("*.pt")} == before


def test_the_evaluation_reports_the_trained_judges_source_accuracy(tmp_path, monkeypatch):
    judges = []
    real = semantic.online_judge
    monkeypatch.setattr(semantic, "online_judge", lambda config, judge: judges.append(judge) or real(config, judge))
    config = cycada_smoke(tmp_path, semantic_judge="online")
    metrics = run_cycada(config, stages="source,pixel", progress=False)
    (judge,) = judges  # as the stage left it, read from its checkpoint by the evaluation
    source_test = _eval_subset(cycada.load_domain(config, config.source, "test"), config)
    assert metrics["online_judge_source_accuracy"] == accuracy(*predict(judge, source_test))
    assert "online_judge_source_accuracy" not in run_cycada(cycada_smoke(tmp_path / "paper"), stages="source,pixel",
                                                            progress=False)  # a frozen judge: f_S's is reported


# Each rank trains its judge on its own batches (and dropout masks) for a few steps, then saves it.
RANKS = """
import sys, torch
from cyclelib import CyCADAConfig, distributed
from cyclelib.classifiers import build_task_network
from cyclelib.semantic import online_judge

rank, world, _ = distributed.setup(torch.device("cpu"))
config = CyCADAConfig.for_scale("smoke", source="mnist5k", target="mnistm5k", device="cpu")
for name in ("lenet", "dtn"):  # dtn: BatchNorm, whose running statistics are buffers
    torch.manual_seed(config.seed)  # as train_pixel builds the judge on every rank
    judge, hooks = online_judge(config, build_task_network(name))
    start = {k: v.clone() for k, v in judge.state_dict().items()}
    torch.manual_seed(1 + rank)
    for _ in range(3):
        hooks["after_step"](torch.rand(4, 3, 32, 32) * 2 - 1, torch.randint(0, 10, (4,)))
    torch.save({"start": start, "end": judge.state_dict()}, f"{sys.argv[1]}/{name}_{rank}.pt")
"""


def test_two_ranks_keep_identical_online_judges(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(RANKS)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               str(tmp_path)]
    done = subprocess.run(command, env=package_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    for name in ("lenet", "dtn"):
        rank_0, rank_1 = (torch.load(tmp_path / f"{name}_{rank}.pt", weights_only=True) for rank in (0, 1))
        assert equal_states(rank_0["start"], rank_1["start"])  # the same seed
        assert equal_states(rank_0["end"], rank_1["end"]), name  # other batches, the same steps
        assert not equal_states(rank_0["start"], rank_0["end"])
