"""The speed features on a device: fast path against the reference, bf16, fp16 with loss
scaling, channels_last, exact resume.

The device comes from ``CYCLELIB_TEST_DEVICE`` (default ``cpu``), so the CPU suite runs
these tests at tiny sizes and ``make gpu-check`` runs the same file with ``cuda``.
Every number a test compares is also recorded (``record_property``), so the GPU check's
JSON shows how close the paths came, not only that they passed.

Tolerances, and why they differ by device:

- fast path = reference in fp32 (losses, and every gradient after one step): on the CPU
  losses rtol 1e-5, gradients rtol 1e-4 / atol 1e-5 (the atol for the biases in front of
  instance norm, whose gradient is zero up to rounding).
  On CUDA the fast path is channels_last with cuDNN autotuning and the reference NCHW, and
  grouped calls have other shapes, so cuDNN picks other algorithms and sums in other
  orders: with TF32 off (``fp32`` case) losses rtol 1e-4 / atol 1e-5, gradients rtol 1e-3 /
  atol 1e-4. With TF32 on (``tf32`` case, PyTorch's default for cuDNN convolutions; both
  paths use it) products keep 10 mantissa bits: losses rtol 1e-2 / atol 1e-3, and each
  network's gradient within 5e-2 of the reference in relative L2 norm.
- bf16 / fp16 autocast against fp32 (same path, same weights): losses rtol 5e-2 / atol
  5e-2 (bf16) and rtol 2e-2 / atol 1e-2 (fp16, as tests/test_speed.py). bf16's gradients
  within 0.6 of fp32's in relative L2 per network (the same direction: bf16 keeps 8
  mantissa bits and instance norm's backward cancels, which leaves ~0.3 on the CPU); fp16's
  first steps overflow at the initial loss scale and are skipped by design, so that test
  checks the skipping instead. The tolerances hold for CPUs without native bf16 too,
  which round every product to bf16 the same way.
- resume (N steps, stop, resume to 2N, against 2N straight): bit for bit on the CPU. On
  CUDA the test asks for deterministic algorithms (warn only: reflection padding's
  backward has no deterministic kernel and adds with atomics), so runs may part by
  rounding: logged losses rtol 1e-3, weights rtol 1e-3 / atol 2 * lr * 2N. That atol is
  the most two Adam runs can part in 2N steps (Adam moves a weight by about lr per step
  whatever its gradient), reached by weights whose gradient is pure rounding noise, the
  biases in front of instance norm, which change no output. A resume that restores the
  wrong data position, pool, optimizer or loss scale changes the logged losses by far
  more than 1e-3.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from cyclelib import CycleGAN, CycleGANConfig, train_cyclegan

DEVICE = torch.device(os.environ.get("CYCLELIB_TEST_DEVICE") or "cpu")
CUDA = DEVICE.type == "cuda"
if CUDA and not torch.cuda.is_available():
    raise RuntimeError(f"CYCLELIB_TEST_DEVICE={DEVICE} but torch sees no CUDA device")

CASES = {
    "resnet": dict(netG="resnet_2blocks"),
    "unet": dict(netG="unet_32"),
    "batchnorm": dict(netG="resnet_1blocks", norm="batch"),  # must fall back to separate calls
    "wgangp": dict(netG="resnet_1blocks", norm="none", gan_mode="wgangp", lambda_identity=0),
}
TINY = dict(netG="resnet_1blocks", ngf=4, ndf=4)


@pytest.fixture(autouse=True)
def numerics():
    """Give back the global numeric settings that a test (or a fast model, which turns cuDNN
    autotuning on) changes: TF32, deterministic algorithms, cuDNN autotuning."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (matmul.allow_tf32, cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    yield
    matmul.allow_tf32, cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark = saved[:4]
    torch.use_deterministic_algorithms(saved[4], warn_only=saved[5])


def set_tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def images(batch: int = 2, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The same two batches in [-1, 1] on DEVICE, whatever the device (drawn on the CPU)."""
    g = torch.Generator().manual_seed(1)
    return tuple((torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(DEVICE) for _ in range(2))


def build(path: str = "fast", amp: str = "none", **options) -> CycleGAN:
    options = {"ngf": 4, "ndf": 4, **options}
    torch.manual_seed(0)
    return CycleGAN(CycleGANConfig(implementation=path, amp=amp, device=str(DEVICE), **options)).to(DEVICE)


def one_step(path: str, amp: str = "none", **options) -> tuple[CycleGAN, dict[str, torch.Tensor]]:
    """A tiny CycleGAN on DEVICE after one training step on fixed images, everything seeded."""
    model = build(path, amp, **options)
    real_A, real_B = images()
    torch.manual_seed(2)  # the gradient penalty draws its mixing weights from the global RNG
    return model, model.train_step(real_A, real_B)


def networks(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The parameters of each network (top-level submodule) of ``model``."""
    return {name: list(child.parameters()) for name, child in model.named_children()
            if any(True for _ in child.parameters())}


def gradient_errors(model: nn.Module, reference: nn.Module) -> dict[str, float]:
    """Per network, ||grad - reference grad|| / ||reference grad|| over all its parameters."""
    errors = {}
    for (name, params), ref_params in zip(networks(model).items(), networks(reference).values(), strict=True):
        got = torch.cat([p.grad.float().flatten() for p in params])
        want = torch.cat([p.grad.float().flatten() for p in ref_params])
        assert torch.isfinite(got).all(), f"{name}: non-finite gradient"
        errors[name] = ((got - want).norm() / want.norm().clamp_min(1e-12)).item()
    return errors


def loss_errors(terms: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(largest absolute, largest relative) difference over the loss terms."""
    diffs = [(terms[k].float() - v.float()).abs().item() for k, v in reference.items()]
    rel = [d / max(abs(v.item()), 1e-12) for d, v in zip(diffs, reference.values())]
    return max(diffs), max(rel)


def conv_dtypes(model: nn.Module, real_A: torch.Tensor, real_B: torch.Tensor) -> set[torch.dtype]:
    """The dtypes the convolutions of one training step produce."""
    seen = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype)) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        model.train_step(real_A, real_B)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
@pytest.mark.parametrize("options", CASES.values(), ids=CASES.keys())
def test_fast_path_gives_the_reference_losses_and_gradients(options, precision, record_property):
    if precision == "tf32" and not CUDA:
        pytest.skip("TF32 is a CUDA setting")
    if CUDA:
        set_tf32(precision == "tf32")
    ref, ref_terms = one_step("reference", **options)
    fast, fast_terms = one_step("fast", **options)
    assert fast_terms.keys() == ref_terms.keys()
    abs_err, rel_err = loss_errors(fast_terms, ref_terms)
    grad_errors = gradient_errors(fast, ref)
    record_property("loss_max_rel_diff", rel_err)
    record_property("grad_max_rel_l2", max(grad_errors.values()))
    if precision == "tf32":
        for name, value in ref_terms.items():
            torch.testing.assert_close(fast_terms[name], value, rtol=1e-2, atol=1e-3, msg=name)
        assert max(grad_errors.values()) < 5e-2, grad_errors
        return
    loss_tol, grad_tol = (dict(rtol=1e-4, atol=1e-5), dict(rtol=1e-3, atol=1e-4)) if CUDA else \
        (dict(rtol=1e-5, atol=1e-6), dict(rtol=1e-4, atol=1e-5))
    for name, value in ref_terms.items():
        torch.testing.assert_close(fast_terms[name], value, **loss_tol, msg=name)
    # After the step, .grad holds each update's gradient (G step for G_*, D step for D_*),
    # both taken at the same starting weights.
    worst = 0.0
    for (name, p), q in zip(ref.named_parameters(), fast.parameters(), strict=True):
        worst = max(worst, (q.grad - p.grad).abs().max().item())
        torch.testing.assert_close(q.grad, p.grad, **grad_tol, msg=name)
    record_property("grad_max_abs_diff", worst)


def test_bf16_autocast_is_finite_and_close_to_fp32(record_property):
    """One step in bf16 autocast against fp32 from the same weights and images, then two more."""
    fp32, fp32_terms = one_step("fast", "none", **TINY)
    bf16, bf16_terms = one_step("fast", "bf16", **TINY)
    assert all(torch.isfinite(t).all() for t in bf16_terms.values()), bf16_terms
    abs_err, _ = loss_errors(bf16_terms, fp32_terms)
    grad_errors = gradient_errors(bf16, fp32)
    record_property("loss_max_abs_diff", abs_err)
    record_property("grad_max_rel_l2", max(grad_errors.values()))
    for name, value in fp32_terms.items():
        torch.testing.assert_close(bf16_terms[name].float(), value, rtol=5e-2, atol=5e-2, msg=name)
    # The gradient points the same way (cosine above ~0.8): bf16's 8 mantissa bits and the
    # cancellations of instance norm's backward leave ~0.3 (CPU) on these tiny networks.
    assert max(grad_errors.values()) < 0.6, grad_errors

    real_A, real_B = images()
    assert conv_dtypes(bf16, real_A, real_B) == {torch.bfloat16}  # every convolution ran in bf16
    terms = bf16.train_step(real_A, real_B)
    assert all(torch.isfinite(t).all() for t in terms.values()), terms
    assert all(torch.isfinite(p).all() for p in bf16.parameters())
    translated = bf16.eval().translate(real_A)
    assert translated.dtype == torch.float32 and translated.shape == real_A.shape
    assert translated.abs().max() <= 1  # tanh output, handed back in fp32


def test_fp16_scales_the_loss_and_skips_the_steps_that_overflow(record_property):
    """fp16 autocast with the grad scaler: the losses are fp32's; a step whose scaled gradients
    overflow is skipped (weights unchanged, never NaN) and the scale comes down until the
    steps go through. At these sizes the first steps overflow at the initial scale 2^16."""
    fp32_terms = one_step("fast", "none", **TINY)[1]
    fp16, fp16_terms = one_step("fast", "fp16", **TINY)
    for name, value in fp32_terms.items():
        torch.testing.assert_close(fp16_terms[name].float(), value, rtol=2e-2, atol=1e-2, msg=name)
    real_A, real_B = images()
    assert conv_dtypes(fp16, real_A, real_B) == {torch.float16}  # every convolution ran in fp16
    start = [p.detach().clone() for p in fp16.parameters()]
    updates = []  # per step: how many parameter tensors changed
    for _ in range(12):
        before = [p.detach().clone() for p in fp16.parameters()]
        terms = fp16.train_step(real_A, real_B)
        assert all(torch.isfinite(t).all() for t in terms.values()), terms
        assert all(torch.isfinite(p).all() for p in fp16.parameters()), "a NaN/Inf reached the weights"
        updates.append(sum(not torch.equal(b, p) for b, p in zip(before, fp16.parameters())))
    record_property("tensors_updated_per_step", updates)
    assert updates[-1] == len(start), f"the last steps should update every weight; per step: {updates}"
    assert all(not torch.equal(s, p) for s, p in zip(start, fp16.parameters()))


def test_channels_last(record_property):
    """On CUDA the fast path keeps its weights channels_last (the layout tensor cores read),
    so its convolutions run NHWC; the fp32 comparison above checks that this changes no
    result (the reference is NCHW). Everywhere: a channels_last model gives the losses of
    the same model in NCHW."""
    if CUDA:
        set_tf32(False)  # the layouts' results compared in fp32: different algorithms, same math
    real_A, real_B = images()
    fast = build(**TINY)
    four_d = [p for p in fast.parameters() if p.dim() == 4]
    cl = sum(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)
    record_property("weights_channels_last", f"{cl}/{len(four_d)}")
    if CUDA:
        assert cl == len(four_d), "the fast path on CUDA should hold every conv weight channels_last"
        # Informative: the share of convolution outputs that stay channels_last.
        layouts = []
        hooks = [m.register_forward_hook(
                     lambda _m, _i, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last)))
                 for m in fast.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        fast.train_step(real_A, real_B)
        for hook in hooks:
            hook.remove()
        record_property("conv_outputs_channels_last", f"{sum(layouts)}/{len(layouts)}")

    nchw = build(**TINY).to(memory_format=torch.contiguous_format)
    nhwc = build(**TINY).to(memory_format=torch.channels_last)
    torch.manual_seed(2)
    want = nchw.train_step(real_A.contiguous(), real_B.contiguous())
    torch.manual_seed(2)
    got = nhwc.train_step(*(x.contiguous(memory_format=torch.channels_last) for x in (real_A, real_B)))
    tol = dict(rtol=1e-4, atol=1e-5) if CUDA else dict(rtol=1e-5, atol=1e-6)  # as the fp32 losses above
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, **tol, msg=name)
    assert all(torch.isfinite(p).all() for p in nhwc.parameters())


RESUME = dict(data="mnist5k:mnistm5k", **TINY, n_epochs=2, n_epochs_decay=1, max_dataset_size=12, batch_size=4,
              pool_size=2, checkpoint_every=100)
STEPS = 3  # N: stop after N steps (mid-epoch: 3 steps per epoch, batches of 4 of 12), resume to 2N = 6


@pytest.mark.parametrize("amp", ["auto", "fp16"])  # auto: bf16 on CUDA, fp32 on the CPU
def test_resume_matches_the_straight_run(tmp_path, amp, record_property):
    if amp == "fp16" and not CUDA:
        pytest.skip("CPU: tests/test_speed.py checks that the loss scale is saved and restored")
    if CUDA:
        # Same algorithms in all three runs (one process: one autotuning cache), deterministic
        # ones where they exist, no TF32: what is left is reflection padding's atomics.
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
        set_tf32(False)

    def train(out, steps, resume=False):
        config = CycleGANConfig.for_scale("smoke", **RESUME, out=str(tmp_path / out), max_steps=steps,
                                          amp=amp, device=str(DEVICE))
        return train_cyclegan(config, resume=resume, progress=False)

    straight = train("a", 2 * STEPS)
    train("b", STEPS)
    resumed = train("b", 2 * STEPS, resume=True)
    # The loss history the runs wrote (smoke scale: one row per step), the resumed one included
    # the rows of before its stop.
    a, b = (json.loads((tmp_path / out / "history.json").read_text()) for out in ("a", "b"))
    assert [(row["step"], row["epoch"]) for row in a] == [(row["step"], row["epoch"]) for row in b]
    assert a[-1]["step"] == 2 * STEPS and len(a) == 2 * STEPS
    losses_a, losses_b = (torch.tensor([[v for k, v in row.items() if k not in ("step", "epoch")] for row in rows])
                          for rows in (a, b))
    assert losses_a.shape == losses_b.shape
    assert torch.isfinite(losses_a).all()
    weights = list(zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True))
    record_property("loss_max_rel_diff", ((losses_b - losses_a).abs() / losses_a.abs().clamp_min(1e-12)).max().item())
    record_property("weight_max_abs_diff", max((q.float() - p.float()).abs().max().item() if p.numel() else 0.0
                                               for (_, p), q in weights))
    if not CUDA:
        assert torch.equal(losses_a, losses_b)
        for (name, p), q in weights:
            assert torch.equal(p, q), name
        return
    torch.testing.assert_close(losses_b, losses_a, rtol=1e-3, atol=0)
    lr = CycleGANConfig.for_scale("smoke", **RESUME).lr
    for (name, p), q in weights:
        if p.is_floating_point():
            torch.testing.assert_close(q, p, rtol=1e-3, atol=2 * lr * 2 * STEPS, msg=name)
        else:
            assert torch.equal(p, q), name
