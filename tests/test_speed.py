"""The fast training path: the reference's losses and gradients with fewer network calls;
mixed precision; the epoch split across DDP ranks; the benchmark."""
import json

import pytest
import torch

from cyclelib.cli import main
from cyclelib import CycleGAN, CycleGANConfig


def one_step(path: str, **options) -> tuple[CycleGAN, dict[str, torch.Tensor]]:
    """A tiny CycleGAN after one training step on fixed images, everything seeded."""
    torch.manual_seed(0)
    model = CycleGAN(CycleGANConfig(ngf=4, ndf=4, implementation=path, **{"amp": "none", **options}))
    g = torch.Generator().manual_seed(1)
    real_A, real_B = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    torch.manual_seed(2)  # the gradient penalty draws its mixing weights from the global RNG
    return model, model.train_step(real_A, real_B)


def count_calls(model: CycleGAN) -> dict[str, int]:
    """Forward calls of each network during one training step."""
    calls = dict.fromkeys(("G_A", "G_B", "D_A", "D_B"), 0)
    hooks = [getattr(model, name).register_forward_hook(lambda *_, name=name: calls.update({name: calls[name] + 1}))
             for name in calls]
    model.train_step(torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1)
    for hook in hooks:
        hook.remove()
    return calls


def test_fast_path_groups_the_network_calls_unless_batch_norm_forbids_it():
    tiny = dict(netG="resnet_1blocks", ngf=4, ndf=4)
    # reference: G_A on real A, fake A, real B (identity); D once in the G step, twice in the D step
    assert count_calls(CycleGAN(CycleGANConfig(implementation="reference", **tiny))) == dict(G_A=3, G_B=3, D_A=3, D_B=3)
    assert count_calls(CycleGAN(CycleGANConfig(implementation="fast", **tiny))) == dict(G_A=2, G_B=1, D_A=2, D_B=2)
    batch_norm = CycleGAN(CycleGANConfig(implementation="fast", norm="batch", **tiny))
    assert count_calls(batch_norm) == dict(G_A=3, G_B=3, D_A=3, D_B=3)


def test_fp16_scales_the_loss_and_keeps_the_fp32_losses():
    fp32, fp32_terms = one_step("fast", netG="resnet_1blocks", amp="none")
    fp16, fp16_terms = one_step("fast", netG="resnet_1blocks", amp="fp16")
    assert not fp32.precision.scaler.is_enabled() and fp16.precision.scaler.is_enabled()
    for name, value in fp32_terms.items():
        torch.testing.assert_close(fp16_terms[name], value, rtol=2e-2, atol=1e-2, msg=name)
    # The loss scale is part of the training state, so a resumed fp16 run continues with it.
    state = fp16.training_state()
    resumed = CycleGAN(CycleGANConfig(netG="resnet_1blocks", ngf=4, ndf=4, amp="fp16"))
    resumed.load_training_state(state, torch.device("cpu"))
    assert resumed.precision.scaler.get_scale() == fp16.precision.scaler.get_scale() <= 2.0 ** 16


@pytest.mark.parametrize("bad, match", [
    (dict(implementation="quick"), "valid values: fast, reference"),
    (dict(amp="fp8"), "valid values: none, bf16, fp16, auto"),
    (dict(implementation="reference", compile=True), "implementation 'reference' is the official fp32 eager step"),
    (dict(implementation="reference", amp="bf16"), "implementation 'reference' is the official fp32 eager step"),
])
def test_speed_options_are_checked(bad, match):
    with pytest.raises(ValueError, match=match):
        CycleGANConfig(**bad)


@pytest.mark.parametrize("native", [True, False])
def test_auto_amp_is_bf16_in_the_fast_path_where_bf16_is_native_and_fp32_elsewhere(monkeypatch, native):
    from cyclelib import runtime

    monkeypatch.setattr(runtime, "native_bf16", lambda device: native)
    fast = CycleGAN(CycleGANConfig(netG="resnet_1blocks", ngf=4, ndf=4))  # amp "auto"
    reference = CycleGAN(CycleGANConfig(netG="resnet_1blocks", ngf=4, ndf=4, implementation="reference"))
    assert fast.precision.dtype == (torch.bfloat16 if native else None)
    assert reference.precision.dtype is None  # the official step stays fp32
    assert CycleGAN(CycleGANConfig(netG="resnet_1blocks", ngf=4, ndf=4, amp="none")).precision.dtype is None


def test_native_bf16_is_what_onednn_reports_on_this_cpu():
    from cyclelib.runtime import native_bf16

    assert native_bf16(torch.device("cpu")) == torch.ops.mkldnn._is_mkldnn_bf16_supported()


@pytest.mark.slow  # spawns a process per path for the peak memory
def test_benchmark_prints_and_saves_both_paths(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(["bench", "--arch", "resnet_1blocks", "--ngf", "4", "--ndf", "4", "--size", "32", "--batch", "2",
          "--steps", "2", "--warmup", "0", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "fast/reference: training" in printed and "translate img/s" in printed
    results = json.loads(out.read_text())
    rows = {row["path"]: row for row in results["results"]}
    assert rows.keys() == {"fast", "reference"}
    for row in rows.values():
        assert len(row["step_s"]) == 2 and row["it_per_s"] > 0 and row["translate_img_per_s"] > 0
        assert row["img_per_s"] == pytest.approx(2 * row["it_per_s"])
        assert row["peak_mib"] >= row["rss_before_mib"] > 0  # CPU: a child process's peak RSS
    (ratio,) = results["ratios"]
    assert ratio["train"] == pytest.approx(rows["fast"]["it_per_s"] / rows["reference"]["it_per_s"])
    assert results["machine"]["threads"] >= 1 and len(results["machine"]["load_before"]) == 3
    # the table and the JSON say which amp each row used and whether this CPU has native bf16
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert results["machine"]["native_bf16"] == native and f"native bf16: {'yes' if native else 'no'}" in printed
    assert rows["reference"]["amp"] == "fp32" and rows["fast"]["amp"] == ("bfloat16" if native else "fp32")
