"""Learning-rate policies: each as torch's scheduler configured as the official get_scheduler does,
resumed bit for bit, and changed at a resume as if the run had had it from the start."""
import pytest
import torch

from cyclelib import train_cyclegan
from cyclelib.cli import build_parser
from cyclelib.arguments import given_options
from cyclelib.config import CycleGANConfig
from cyclelib.cyclegan import CycleGAN
from helpers import DIGITS, cli, equal_states, smoke

# The reference schedules here are stepped without optimizer steps, which torch warns about.
pytestmark = pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler\.step\(\)`")
POLICIES = ("linear", "step", "plateau", "cosine")
# 3 falling scores, then flat ones (the plateau policy lowers the rate after 6 epochs without a 1% gain),
# then a fall, then flat again: 20 epochs.
SCORES = [5.0, 4.0, 3.0, *[3.0] * 8, 2.0, *[2.0] * 8]


def official_schedule(policy: str, optimizer, n_epochs: int, n_epochs_decay: int, lr_decay_iters: int):
    """networks.get_scheduler of junyanz/pytorch-CycleGAN-and-pix2pix, with the default epoch_count 1."""
    if policy == "linear":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1))
    if policy == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_decay_iters, gamma=0.1)
    if policy == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.2, threshold=0.01,
                                                          patience=5)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=n_epochs, eta_min=0)


def model(tmp_path, **options) -> CycleGAN:
    return CycleGAN(smoke(tmp_path, n_epochs=6, n_epochs_decay=10, lr_decay_iters=4, **options))


def rates(m: CycleGAN) -> list[float]:
    return [group["lr"] for opt in m.optimizers().values() for group in opt.param_groups]


@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_is_torchs_scheduler_as_the_official_code_configures_it(policy, tmp_path):
    m = model(tmp_path, lr_policy=policy)
    reference = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=m.config.lr)
    schedule = official_schedule(policy, reference, 6, 10, 4)
    seen = [reference.param_groups[0]["lr"]]
    assert rates(m) == seen * 2
    for score in SCORES:
        m.end_epoch(score)
        schedule.step(score) if policy == "plateau" else schedule.step()
        seen.append(reference.param_groups[0]["lr"])
        assert rates(m) == [seen[-1]] * 2, f"epoch {len(seen) - 1}"
    assert len(set(seen)) > 2, f"{policy}: the rate should change over these epochs: {seen}"


@pytest.mark.parametrize("policy", POLICIES)
def test_a_reloaded_schedule_goes_on_as_the_one_never_stopped(policy, tmp_path):
    straight, stopped = model(tmp_path, lr_policy=policy), model(tmp_path, lr_policy=policy)
    for score in SCORES[:9]:
        straight.end_epoch(score)
        stopped.end_epoch(score)
    resumed = model(tmp_path, lr_policy=policy)
    resumed.load_training_state(stopped.training_state())
    assert rates(resumed) == rates(straight)
    for score in SCORES[9:]:
        straight.end_epoch(score)
        resumed.end_epoch(score)
        assert rates(resumed) == rates(straight)


def test_another_policy_at_a_resume_gives_the_rate_it_has_at_that_epoch(tmp_path):
    linear, step = model(tmp_path), model(tmp_path, lr_policy="step")
    for score in SCORES[:9]:
        linear.end_epoch(score)
        step.end_epoch(score)
    resumed = model(tmp_path, lr_policy="step")
    resumed.load_training_state(linear.training_state())
    assert rates(resumed) == rates(step) != rates(linear)


@pytest.mark.parametrize("policy", POLICIES)
def test_a_resumed_run_has_the_rates_and_weights_of_a_straight_run(policy, tmp_path):
    # 2 steps per epoch, 4 epochs; stopped mid-epoch at step 3
    options = dict(lr_policy=policy, max_dataset_size=8, n_epochs=2, n_epochs_decay=2, lr_decay_iters=1)
    straight = train_cyclegan(smoke(tmp_path / "straight", **options), progress=False)
    train_cyclegan(smoke(tmp_path / "stopped", max_steps=3, **options), progress=False)
    resumed = train_cyclegan(smoke(tmp_path / "stopped", **options), resume=True, progress=False)
    assert resumed.lr_scores == straight.lr_scores and len(straight.lr_scores) == 3  # the last epoch ends the run
    assert rates(resumed) == rates(straight)
    assert equal_states(resumed.state_dict(), straight.state_dict())


def test_the_official_option_names_and_the_valid_values(tmp_path):
    args = build_parser().parse_args(["train", "cyclegan", "--data", DIGITS, "--lr_policy", "step",
                                      "--lr_decay_iters", "7"])
    assert given_options(args, CycleGANConfig) == {"data": DIGITS, "lr_policy": "step", "lr_decay_iters": 7}
    code, err = cli("train", "cyclegan", "--data", DIGITS, "--scale", "smoke", "--out", str(tmp_path),
                    "--lr-policy", "exponential")
    assert code == 2 and "valid values: linear, step, plateau, cosine" in err, err


def test_a_checkpoint_from_before_the_policies_resumes_its_linear_schedule(tmp_path):
    """Such checkpoints kept the linear schedules' state (their epoch count), not the epochs' scores."""
    straight = model(tmp_path)
    for score in SCORES[:9]:
        straight.end_epoch(score)
    old = {k: v for k, v in straight.training_state().items() if k != "lr_scores"}
    old["schedulers"] = {name: {"last_epoch": 9} for name in "GD"}
    resumed = model(tmp_path)
    resumed.load_training_state(old)
    assert rates(resumed) == rates(straight)
    with pytest.raises(ValueError, match="predates the plateau policy"):
        model(tmp_path, lr_policy="plateau").load_training_state(old)
