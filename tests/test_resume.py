"""Resume with options: each option given at a resume is applied from the resumed step on or
refused before anything runs, naming it (never recorded and ignored); a damaged latest checkpoint
falls back to the previous one, and a folder without a readable one or with a newer format is a
clear error; what is not a CycleGAN run is refused with a message; a resume is bit-exact even where
the training draws random numbers; and CyCADA's stages are reused only with the options they were
trained with.

Every run is a smoke run on the CPU. The runs resumed here were stopped by a signal at step 5
(of 8: 4 steps per epoch, two epochs, the second one decaying the learning rate to half).
"""
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from cyclelib import CyCADAConfig, CycleGAN, CycleGANConfig, TrainingInterrupted, train_cyclegan
from cyclelib import train as train_module
from cyclelib.cli import main
from cyclelib.cycada import (NEUTRAL_OPTIONS, STAGES, STAGE_OPTIONS, WEIGHT_OPTIONS, stage_checkpoint, stage_options,
                             stage_path)
from cyclelib.cycada_run import run_cycada
from cyclelib.checkpoints import FORMAT_VERSION, load_checkpoint, save_checkpoint
from cyclelib.runs import LATEST, load_run_checkpoint, step_checkpoints
from cyclelib.weights import save_official
from cyclelib.cyclegan_run import FIXED_OPTIONS

from helpers import cli, corrupt, cycada_smoke, driving_smoke, equal_states, smoke, stop_at, train_pair, write_driving

STOP = 5
BASE = dict(n_epochs=1, n_epochs_decay=1, log_every=2, checkpoint_every=4)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """A run stopped at step 5, in the second epoch, between two history rows."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        stop_at(monkeypatch, STOP)
        with pytest.raises(TrainingInterrupted):
            train_cyclegan(smoke(out, **BASE), progress=False)
    return out


def resumed(stopped: Path, folder: Path, **changes) -> dict:
    """``stopped`` copied to ``folder``, resumed with ``changes``; its latest checkpoint."""
    shutil.copytree(stopped, folder)
    train_cyclegan(smoke(folder, **{**BASE, **changes}), resume=True, progress=False)
    return load_checkpoint(folder / LATEST)


@pytest.fixture(scope="module")
def unchanged(stopped, tmp_path_factory) -> dict:
    return resumed(stopped, tmp_path_factory.mktemp("unchanged") / "run")


def group(ckpt: dict, name: str = "G") -> dict:
    return ckpt["training"]["optimizers"][name]["param_groups"][0]


def moments(ckpt: dict) -> dict:
    return {f"{name}.{i}.{k}": v for name in "GD" for i, s in ckpt["training"]["optimizers"][name]["state"].items()
            for k, v in s.items()}


def step_file(folder: Path, step: int) -> dict:
    return load_checkpoint(folder / "checkpoints" / f"step_{step:07d}.pt")


# Per option applied at a resume: (new value, check of the resumed run). The learning rate of the
# second epoch is lr * (1 - 1 / (n_epochs_decay + 1)) with n_epochs 1; the run's lr is 2e-4.
APPLIED = {
    "out": (None, lambda ckpt, folder, unchanged: ckpt["training"]["step"] == 8),  # the value: another folder
    "lr": (1e-3, lambda ckpt, folder, unchanged: (group(ckpt)["lr"], group(ckpt, "D")["initial_lr"])
           == (1e-3 * 0.5, 1e-3)),
    "beta1": (0.9, lambda ckpt, folder, unchanged: group(ckpt)["betas"] == group(ckpt, "D")["betas"] == (0.9, 0.999)),
    "beta2": (0.99, lambda ckpt, folder, unchanged: group(ckpt)["betas"] == (0.5, 0.99)),
    # three epochs (12 steps), the second at the full rate
    "n_epochs": (2, lambda ckpt, folder, unchanged: ckpt["training"]["step"] == 12
                 and group(step_file(folder, 8))["lr"] == 2e-4),
    # four epochs (16 steps), the second at 1 - 1/4 of the rate
    "n_epochs_decay": (3, lambda ckpt, folder, unchanged: ckpt["training"]["step"] == 16
                       and group(step_file(folder, 8))["lr"] == 2e-4 * 0.75),
    "max_steps": (6, lambda ckpt, folder, unchanged: ckpt["training"]["step"] == 6),
    # the second epoch at the rate cosine gives it from the start: zero after T_max = n_epochs = 1
    "lr_policy": ("cosine", lambda ckpt, folder, unchanged: group(ckpt)["lr"] == group(ckpt, "D")["lr"] == 0.0
                  and group(unchanged)["lr"] == 2e-4 * 0.5),
    "lr_decay_iters": (1, lambda ckpt, folder, unchanged: equal_states(ckpt["nets"], unchanged["nets"])),  # linear
    "threads": (1, lambda ckpt, folder, unchanged: equal_states(ckpt["nets"], unchanged["nets"])),  # see below
    "clip_grad_norm": (1e-6, lambda ckpt, folder, unchanged: not equal_states(moments(ckpt), moments(unchanged))),
    # options that must change nothing of the training
    "num_workers": (1, lambda ckpt, folder, unchanged: equal_states(ckpt["nets"], unchanged["nets"])),
    "skip_bad_images": (True, lambda ckpt, folder, unchanged: equal_states(ckpt["nets"], unchanged["nets"])),
    "device": ("cpu:0", lambda ckpt, folder, unchanged: equal_states(ckpt["nets"], unchanged["nets"])),
    "compile": (True, lambda ckpt, folder, unchanged: equal_states(ckpt["nets"], unchanged["nets"])),  # see below
    # the reference implementation steps PyTorch's default Adam, not the fused one
    "implementation": ("reference", lambda ckpt, folder, unchanged: not group(ckpt)["fused"] and group(unchanged)["fused"]),
    "amp": ("fp16", lambda ckpt, folder, unchanged: ckpt["training"]["scaler"]["scale"] > 0),  # loss scaling
    # rows at 2, 4, then 6: the mean of steps 5 and 6, as the run never changed would write it
    "log_every": (3, lambda ckpt, folder, unchanged: ckpt["history"] == unchanged["history"][:3]),
    "sample_every": (3, lambda ckpt, folder, unchanged: (folder / "samples" / "step_000006.png").is_file()),
    "checkpoint_every": (3, lambda ckpt, folder, unchanged: (folder / "checkpoints" / "step_0000006.pt").is_file()),
    "keep_checkpoints": (1, lambda ckpt, folder, unchanged: len(step_checkpoints(folder)) == 1),
    # the watching (cyclelib.watch): from the resumed step on, W&B offline (see the test)
    "tensorboard": (True, lambda ckpt, folder, unchanged: any((folder / "tensorboard").glob("events.out.tfevents.*"))),
    "wandb": (True, lambda ckpt, folder, unchanged: ckpt["training"]["watch"]["wandb_id"] is not None),
    "wandb_project": ("another", lambda ckpt, folder, unchanged:
                      json.loads((folder / "config.json").read_text())["wandb_project"] == "another"),
}
# Per option a run keeps for its life: another valid value (and what it needs with it).
REFUSED = {
    "data": dict(data="uci-digits:mnist5k"), "netG": dict(netG="resnet_1blocks"), "netD": dict(netD="pixel"),
    "ngf": dict(ngf=4), "ndf": dict(ndf=4), "n_layers_D": dict(n_layers_D=2), "norm": dict(norm="batch"),
    "dropout": dict(dropout=True), "init": dict(init="xavier"), "init_gain": dict(init_gain=0.05),
    "input_nc": dict(input_nc=1, output_nc=1), "output_nc": dict(input_nc=1, output_nc=1),
    "noise_nc": dict(noise_nc=1), "noise_injection": dict(noise_injection="modulate"),
    "gan_mode": dict(gan_mode="vanilla"), "lambda_A": dict(lambda_A=5.0), "lambda_B": dict(lambda_B=5.0),
    "lambda_identity": dict(lambda_identity=0.0), "lambda_gan_A": dict(lambda_gan_A=2.0),
    "lambda_gan_B": dict(lambda_gan_B=2.0), "lambda_gp": dict(lambda_gp=5.0),
    "lambda_mode_seeking": dict(lambda_mode_seeking=0.5, noise_nc=1), "batch_size": dict(batch_size=2),
    "pool_size": dict(pool_size=4), "preprocess": dict(preprocess="crop"), "load_size": dict(load_size=40),
    "crop_size": dict(crop_size=28), "flip": dict(flip=True), "max_dataset_size": dict(max_dataset_size=8),
    "direction": dict(direction="BtoA"), "serial_batches": dict(serial_batches=True), "seed": dict(seed=1),
}


def test_every_option_is_declared_applied_or_refused_and_tested_so():
    declared = {f.name: f.metadata["on_resume"] for f in dataclasses.fields(CycleGANConfig)}
    assert set(APPLIED) | set(REFUSED) == set(declared) and not set(APPLIED) & set(REFUSED)
    assert {name for name, rule in declared.items() if rule == "refuse"} == set(REFUSED) == set(FIXED_OPTIONS)


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in ("amp", "wandb") else name
                                  for name in APPLIED])  # fp16 steps on a CPU; importing wandb
def test_an_option_given_at_a_resume_is_applied_and_recorded(stopped, unchanged, tmp_path, monkeypatch, name):
    value, applied = APPLIED[name]
    folder = tmp_path / "run"
    if name == "out":  # the stopped run's folder copied to another: resumed there
        value = str(folder)
    if name == "wandb":
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    if name == "compile":  # torch.compile on a CPU takes minutes: the same call, uncompiled
        compiled = []
        monkeypatch.setattr(torch, "compile", lambda fn, *a, **k: compiled.append(fn) or fn)
    if name == "threads":  # asked for, not set: this process's other tests keep their thread count
        asked = []
        monkeypatch.setattr(torch, "set_num_threads", asked.append)
    ckpt = resumed(stopped, folder, **{} if name == "out" else {name: value})
    assert ckpt["config"][name] == value
    assert applied(ckpt, folder, unchanged), name
    if name == "compile":
        assert len(compiled) == 4  # the four networks
    if name == "threads":
        assert asked == [1]


@pytest.mark.parametrize("name", REFUSED)
def test_an_option_a_run_keeps_is_refused_at_a_resume_before_anything_runs(stopped, tmp_path, monkeypatch, name):
    folder = tmp_path / "run"
    shutil.copytree(stopped, folder)
    built = []
    monkeypatch.setattr(CycleGAN, "__init__", lambda *args, **kwargs: built.append(1))
    with pytest.raises(ValueError, match=f"{name}=.* there, .* now: it "):
        train_cyclegan(smoke(folder, **{**BASE, **REFUSED[name]}), resume=True, progress=False)
    assert not built and load_checkpoint(folder / LATEST)["training"]["step"] == STOP


def test_the_cli_applies_lr_and_betas_given_at_a_resume(stopped, tmp_path):
    """The checkpoint records lr 0.05 and beta1 0.9, and the optimizers and schedulers train on with them."""
    folder = tmp_path / "run"
    shutil.copytree(stopped, folder)
    assert cli("train", "cyclegan", "--resume", str(folder), "--lr", "0.05", "--beta1", "0.9")[0] == 0
    ckpt = load_checkpoint(folder / LATEST)
    assert ckpt["training"]["step"] == 8 and (ckpt["config"]["lr"], ckpt["config"]["beta1"]) == (0.05, 0.9)
    for name in "GD":
        assert group(ckpt, name)["lr"] == 0.05 * 0.5 and group(ckpt, name)["betas"] == (0.9, 0.999)
        assert group(ckpt, name)["initial_lr"] == 0.05


def test_the_cli_refuses_an_option_a_run_keeps_naming_it(stopped, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(stopped, folder)
    code, err = cli("train", "cyclegan", "--resume", str(folder), "--batch-size", "2", "--seed", "3")
    assert code == 2 and "batch_size=4 there, 2 now" in err and "seed=0 there, 3 now" in err
    assert load_checkpoint(folder / LATEST)["training"]["step"] == STOP


def test_resume_with_another_out_overwrite_or_scale_is_refused_before_anything_is_touched(stopped, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(stopped, folder)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    code, err = cli("train", "cyclegan", "--resume", str(folder), "--out", str(tmp_path / "elsewhere"))
    assert code == 2 and "--out" in err and not (tmp_path / "elsewhere").exists()
    code, err = cli("train", "cyclegan", "--resume", str(folder), "--overwrite")
    assert code == 2 and "--overwrite" in err and "--resume" in err
    code, err = cli("train", "cyclegan", "--resume", str(folder), "--scale", "cpu")  # a preset: not the run's
    assert code == 2 and "--scale" in err
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    # --out naming the folder itself is no other folder
    assert cli("train", "cyclegan", "--resume", str(folder), "--out", str(folder) + "/")[0] == 0


def assert_means_of_their_steps(rows: list[dict], per_step: list[dict]) -> None:
    """Each row of ``rows`` is the mean of the rows of ``per_step`` (one per step) since its previous row."""
    by_step, previous = {row["step"]: row for row in per_step}, 0
    for row in rows:
        steps = range(previous + 1, row["step"] + 1)
        for term in row.keys() - {"step", "epoch"}:
            mean = sum(by_step[s][term] for s in steps) / len(steps)
            assert row[term] == pytest.approx(mean, rel=1e-5), (row["step"], term)
        previous = row["step"]


def test_a_history_resumed_with_another_log_every_has_the_means_of_its_steps(stopped, tmp_path):
    """log_every 2 until step 5, then 3: rows at 2, 4 and 6 (steps 5 and 6); the run with log_every 1
    says what each step's terms were."""
    ckpt = resumed(stopped, tmp_path / "run", log_every=3)
    train_cyclegan(smoke(tmp_path / "each", **{**BASE, "log_every": 1}), progress=False)
    assert [row["step"] for row in ckpt["history"]] == [2, 4, 6]
    assert_means_of_their_steps(ckpt["history"], load_checkpoint(tmp_path / "each" / LATEST)["history"])


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


# --------------------------------------------------------------------------- folders that hold no CycleGAN run


@pytest.mark.slow
def test_a_cycada_stage_a_classifier_and_an_official_state_dict_are_not_resumed_as_cyclegan_runs(tmp_path):
    config = cycada_smoke(tmp_path / "cycada", noise_nc=2)
    run_cycada(config, stages=("source", "pixel"), progress=False)
    for stage in ("pixel", "source"):
        folder = stage_path(config, stage).parent
        before = load_checkpoint(folder / LATEST)
        code, err = cli("train", "cyclegan", "--resume", str(folder))
        assert code == 2 and f"holds the {stage!r} stage of a CyCADA run" in err, err
        assert (f"`cyclelib train cycada --source mnist5k --target mnistm5k --out {tmp_path / 'cycada'} --scale smoke"
                in err and f"--stages {stage}`" in err and "--noise-nc 2" in err and "--amp none" in err)
        assert "Traceback" not in err and equal_states(load_checkpoint(folder / LATEST)["nets"], before["nets"])
    # the classifier without its CyCADA record
    ckpt = load_checkpoint(stage_path(config, "source"))
    ckpt["meta"] = {}
    save_checkpoint(ckpt, tmp_path / "classifier" / LATEST)
    code, err = cli("train", "cyclegan", "--resume", str(tmp_path / "classifier"))
    assert code == 2 and "'classifier' weights" in err and "not a CycleGAN run" in err
    # an official generator state_dict
    torch.manual_seed(0)
    save_official(CycleGAN(smoke("unused")).G_A, tmp_path / "official" / LATEST)
    code, err = cli("train", "cyclegan", "--resume", str(tmp_path / "official"))
    assert code == 2 and "not a cyclelib checkpoint" in err and "KeyError" not in err


def test_a_checkpoint_declaring_a_huge_network_is_refused_before_any_network_is_built(stopped, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    shutil.copytree(stopped, folder)
    ckpt = load_checkpoint(folder / LATEST)
    ckpt["config"]["ngf"] = 100_000  # about 720 GB of weights at resnet_9blocks' size
    save_checkpoint(ckpt, folder / LATEST)
    built = []
    monkeypatch.setattr(CycleGAN, "__init__", lambda *args, **kwargs: built.append(1))
    code, err = cli("train", "cyclegan", "--resume", str(folder))
    assert code == 2 and "does not fit the networks its config declares" in err and not built
    with pytest.raises(ValueError, match="does not fit the networks its config declares"):
        train_cyclegan(smoke(folder, **{**BASE, "ngf": 100_000}), resume=True, progress=False)
    assert not built


# --------------------------------------------------------------------------- CyCADA's neutral options


@pytest.mark.slow
def test_the_neutral_cycada_options_change_no_weight_and_no_metric_across_a_resume(tmp_path, monkeypatch):
    """Stages stopped and resumed with every neutral option changed (but out: it is where the stage
    is) end with the weights and metrics of a run never stopped, and with history rows that are the
    means of their steps. The noise input draws random numbers in every sample grid of the pixel
    stage: those must not come from the training's."""
    options = dict(noise_nc=2, task_epochs=2, pixel_epochs=3, checkpoint_every=2, sample_every=4, log_every=1)
    changed = dict(options, log_every=2, checkpoint_every=3, sample_every=1, num_workers=1, device="cpu:0",
                   max_eval_samples=40, scale="cpu", tensorboard=True, wandb=True, wandb_project="neutral")
    assert {k for k in changed if changed[k] != options.get(k)} == set(NEUTRAL_OPTIONS) - {"out"}
    pytest.importorskip("wandb")  # and TensorBoard's writer: the loggers of the pixel stage, offline
    pytest.importorskip("torch.utils.tensorboard")
    for name, value in (("WANDB_MODE", "offline"), ("WANDB_DIR", str(tmp_path)), ("WANDB_SILENT", "true")):
        monkeypatch.setenv(name, value)
    stages = ("source", "pixel")
    straight = cycada_smoke(tmp_path / "straight", **options)
    run_cycada(straight, stages=stages, progress=False)
    stopped = cycada_smoke(tmp_path / "stopped", **options)
    for stage in stages:  # each stopped at its step 5 (of 6 and 9), then resumed with the neutral options changed
        with monkeypatch.context() as m:
            stop_at(m, STOP)
            with pytest.raises(TrainingInterrupted):
                run_cycada(stopped, stages=(stage,), progress=False)
        run_cycada(CyCADAConfig(**{**vars(stopped), **changed}), stages=(stage,), progress=False)

    for stage in stages:
        a, b = (load_checkpoint(stage_path(run, stage)) for run in (straight, stopped))
        assert a["training"]["step"] == b["training"]["step"] == (6 if stage == "source" else 9)
        assert equal_states(a["nets"], b["nets"]), stage
        assert b["history"][:STOP] == a["history"][:STOP]
        assert [row["step"] for row in b["history"][STOP:]] == ([6] if stage == "source" else [6, 8])
        assert_means_of_their_steps(b["history"], a["history"])
    metrics = [{k: v for k, v in run_cycada(run, stages=stages, progress=False).items() if k != "wall_s"}
               for run in (straight, stopped)]
    assert metrics[0] == metrics[1]  # the evaluation seeds the noise it translates with


# --------------------------------------------------------------------------- bit-exact where random numbers are drawn


@pytest.mark.slow
@pytest.mark.parametrize("rng_restored", [True, False], ids=["restored", "not-restored"])
def test_a_resume_is_bit_exact_where_the_training_draws_random_numbers(tmp_path, monkeypatch, rng_restored):
    """Dropout and a noise input draw from the global RNG at every step, the image folder's crops
    and flips from each sample's own generator: the resumed run equals the straight one bit for
    bit; without the restore of the saved RNG states it does not (the test can tell)."""
    data = train_pair(tmp_path / "images", count=6, size=(44, 40))  # not the crop's size: random crops and flips
    options = dict(data=data, dropout=True, noise_nc=2, preprocess="resize_and_crop", load_size=36, crop_size=32,
                   flip=True, max_dataset_size=6, n_epochs=2, n_epochs_decay=1, checkpoint_every=2, log_every=1)
    straight = train_cyclegan(smoke(tmp_path / "straight", **options), progress=False)

    with monkeypatch.context() as m:
        stop_at(m, STOP)
        with pytest.raises(TrainingInterrupted):
            train_cyclegan(smoke(tmp_path / "stopped", **options), progress=False)
    if not rng_restored:
        monkeypatch.setattr(train_module, "set_rng_state", lambda state: None)
    resumed_model = train_cyclegan(smoke(tmp_path / "stopped", **options), resume=True, progress=False)

    a, b = (load_checkpoint(tmp_path / name / LATEST) for name in ("straight", "stopped"))
    assert a["training"]["step"] == b["training"]["step"] == 9
    same = (equal_states(straight.state_dict(), resumed_model.state_dict()) and equal_states(moments(a), moments(b))
            and a["history"] == b["history"])
    assert same == rng_restored


# Another valid value of every CyCADA option that shapes a stage, from the smoke preset's
# (with the options it needs to be valid): the next test reruns the stages with each.
CYCADA_CHANGES = {
    "source": dict(source="uci-digits"), "target": dict(target="mnist5k"), "classifier": dict(classifier="lenet"),
    "task": dict(task="segmentation", source="mnist-scenes", target="mnistm-scenes"), "d_feat_width": dict(d_feat_width=8),
    "image_size": dict(image_size=32), "max_samples": dict(max_samples=25), "seed": dict(seed=1),
    "amp": dict(amp="bf16"), "task_lr": dict(task_lr=2e-4), "task_batch_size": dict(task_batch_size=9),
    "task_epochs": dict(task_epochs=2), "invert_source": dict(invert_source=0.5), "netG": dict(netG="resnet_2blocks"),
    "ngf": dict(ngf=5), "netD": dict(netD="pixel"), "ndf": dict(ndf=5), "n_layers_D": dict(n_layers_D=1),
    "norm": dict(norm="batch"), "noise_nc": dict(noise_nc=1), "noise_injection": dict(noise_injection="modulate"),
    "gan_mode": dict(gan_mode="vanilla"), "lambda_gan_A": dict(lambda_gan_A=1.0), "lambda_gan_B": dict(lambda_gan_B=2.0),
    "lambda_cycle_A": dict(lambda_cycle_A=2.0), "lambda_cycle_B": dict(lambda_cycle_B=2.0),
    "lambda_identity": dict(lambda_identity=0.5), "lambda_sem_A": dict(lambda_sem_A=0.5),
    "lambda_sem_B": dict(lambda_sem_B=0.5), "lambda_mode_seeking": dict(lambda_mode_seeking=1.0, noise_nc=1),
    "semantic_judge": dict(semantic_judge="feature_only"), "pixel_lr": dict(pixel_lr=1e-4),
    "pixel_beta1": dict(pixel_beta1=0.6), "pixel_batch_size": dict(pixel_batch_size=9), "pool_size": dict(pool_size=9),
    "pixel_epochs": dict(pixel_epochs=2), "pixel_epochs_decay": dict(pixel_epochs_decay=1),
    "feature_lr": dict(feature_lr=2e-5), "feature_batch_size": dict(feature_batch_size=9),
    "feature_epochs": dict(feature_epochs=2), "lambda_task": dict(lambda_task=0.5), "lambda_feature": dict(lambda_feature=0.5),
    "semantic_target": dict(semantic_target="labels"), "semantic_gate": dict(semantic_gate=1.0),
    "feature_start": dict(feature_start="pixel_only"), "feature_gate": dict(feature_gate=0.6),
    "task_optimizer": dict(task_optimizer="sgd"), "feature_optimizer": dict(feature_optimizer="sgd"),
}
# The options of driving scenes only (the digits above refuse them), changed on a run of tiny GTA5 and Cityscapes
# files; translated_source's value is a second GTA5 folder, written by the test.
DRIVING_CHANGES = {"crop_size": dict(crop_size=12), "pixel_crop_size": dict(pixel_crop_size=12),
                   "translated_source": dict(translated_source="OTHER")}


@pytest.mark.slow
def test_every_cycada_option_that_shapes_a_stage_is_refused_when_it_differs(tmp_path):
    """CyCADA has no --resume: running it again reuses (skips, resumes, loads) each stage found in
    --out. Every option of a stage's STAGE_OPTIONS, given another value, must be refused for every
    finished stage that option shapes, naming it: never reused as if it had been trained so. The
    neutral options are tested to change nothing above."""
    assert set(CYCADA_CHANGES) | set(DRIVING_CHANGES) == {name for options in STAGE_OPTIONS.values() for name in options}
    digits = cycada_smoke(tmp_path / "digits")
    driving = driving_smoke(tmp_path / "driving", write_driving(tmp_path / "data"))
    other = write_driving(tmp_path / "other")["source"]
    for config, changes in ((digits, CYCADA_CHANGES), (driving, DRIVING_CHANGES)):
        run_cycada(config, progress=False)
        for name, change in changes.items():
            change = {k: other if v == "OTHER" else v for k, v in change.items()}
            changed = CyCADAConfig(**{**vars(config), **change})
            shaped = [stage for stage in STAGES if name in stage_options(changed, stage)]
            assert shaped, name
            for stage in shaped:
                with pytest.raises(ValueError, match=rf"\b{name}="):
                    stage_checkpoint(changed, stage)
        for stage in STAGES:  # and the run's own options reuse every stage
            assert stage_checkpoint(config, stage) is not None


@pytest.mark.slow
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
    # or names the files stages are made of (stage_weights), compared as their SHA-256 (test_release_models.py)
    names = {name for name in CyCADAConfig.__dataclass_fields__}
    staged = {name for options in STAGE_OPTIONS.values() for name in options}
    kinds = (staged, set(NEUTRAL_OPTIONS), set(WEIGHT_OPTIONS))
    assert set().union(*kinds) == names and sum(map(len, kinds)) == len(names)
