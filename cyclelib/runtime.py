"""Where and how a run computes: scale, device, precision, seeds."""
from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from .names import AMP_MODES, SCALES  # noqa: F401 (also read from here)


def resolve_scale(scale: str | None = None) -> str:
    """The run's scale: ``scale`` if given, else ``$CYCLELIB_SCALE``, else colab/cpu by hardware.

    - ``smoke``: seconds, checks that everything runs (CI, nbval);
    - ``cpu``: minutes on 2 CPU cores, real results on the offline digits;
    - ``colab``: each book chapter within about 30 minutes on a free Colab T4 (estimated by
      ``benchmarks/estimate_gpu_time.py``), the default with CUDA;
    - ``gpu``: the paper's setting, hours to days on one GPU: only when asked for.

    ``"auto"`` (the notebooks' form field) is the same as no ``scale``.
    """
    given = None if scale == "auto" else scale
    chosen = given or os.environ.get("CYCLELIB_SCALE") or ("colab" if torch.cuda.is_available() else "cpu")
    if chosen not in SCALES:
        source = "--scale" if given else "CYCLELIB_SCALE"
        raise ValueError(f"{source}={chosen!r} is not a scale; valid values: {', '.join(SCALES)}")
    return chosen


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given (e.g. ``"cuda:1"``), else CUDA when present, else CPU.

    The one place where cyclelib chooses a device; a name torch does not know, or CUDA
    asked for on a machine without it, is a ``ValueError`` naming the option.
    """
    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a device; use e.g. cpu, cuda or cuda:1") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device} was asked for but CUDA is not available")
    return dev


def physical_cores() -> int:
    """The physical cores this process may run on: the CPUs of its affinity mask, each core counted
    once (its hyperthreads share it), as /proc/cpuinfo pairs them; the CPUs themselves where it cannot tell."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = set()
    try:
        for block in Path("/proc/cpuinfo").read_text().split("\n\n"):
            lines = (line.partition(":") for line in block.splitlines())
            info = {key.strip(): value.strip() for key, _, value in lines}
            if info.get("processor", "").isdigit() and int(info["processor"]) in cpus:
                cores.add((info.get("physical id"), info.get("core id", info["processor"])))
    except OSError:  # no /proc (macOS, Windows)
        pass
    return len(cores) or len(cpus)


def use_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads to ``threads``, by default to torch's own count (OMP_NUM_THREADS, else
    the machine's cores) but at most :func:`physical_cores`: torch does not read the affinity mask of
    a container or ``taskset``, and threads beyond the cores fight over them (a busy 2-core machine
    took 15 to 25 times as long per step). Returns the count."""
    torch.set_num_threads(threads or min(torch.get_num_threads(), physical_cores()))
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    """Seed Python and torch (CPU and all GPUs)."""
    random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every global RNG state a training step may touch, in a weights-only friendly form."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- precision


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU that supports it, or a CPU whose
    oneDNN kernels use AVX512-BF16 or AMX (elsewhere bf16 on a CPU is emulated, and slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return False
    return False


def amp_dtype(amp: str, device: torch.device, fast: bool = True) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device``, None for fp32.

    ``auto`` is bf16 in the fast path where the device computes bf16 natively: tensor cores
    (many times the fp32 rate) and CPUs with AVX512-BF16 or AMX (about twice, measured in the
    README); fp32 elsewhere, where bf16 would be emulated and slower. The reference path
    (``fast=False``) stays fp32.
    """
    if amp not in AMP_MODES:
        raise ValueError(f"unknown amp {amp!r}; valid values: {', '.join(AMP_MODES)}")
    if amp == "auto":
        return torch.bfloat16 if fast and native_bf16(device) else None
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


class Precision:
    """A run's mixed precision: the autocast context and, for fp16, the loss scaler.

    fp16's narrow range underflows small gradients unless the loss is scaled up first;
    bf16 and fp32 need no scaling, and a disabled scaler passes everything through.
    """

    def __init__(self, amp: str, device: torch.device, fast: bool = True):
        self.dtype = amp_dtype(amp, device, fast)
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)

    def autocast(self) -> torch.autocast:
        """The autocast context of the run (disabled for fp32)."""
        return torch.autocast(self.device_type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, clip_grad_norm: float | None = None) -> None:
        """Backward of ``loss`` and one step of ``optimizer``: clip the gradient norm when
        ``clip_grad_norm`` is set (one bad batch then cannot throw the weights far), and skip
        the step when the fp16 scaler found an overflow. Call :meth:`update` once per iteration,
        after every optimizer has stepped (torch.amp's rule for several optimizers)."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if clip_grad_norm:
            self.scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
            nn.utils.clip_grad_norm_(_params(optimizer), clip_grad_norm)
        self.scaler.step(optimizer)

    def update(self) -> None:
        self.scaler.update()

    @property
    def name(self) -> str:
        """What the run computes in: ``float32``, ``bfloat16`` or ``float16``."""
        return str(self.dtype or torch.float32).removeprefix("torch.")

    def load_state_dict(self, state: dict) -> None:
        """Restore the fp16 loss scale of ``scaler.state_dict()``. A run resumed in another
        precision than it was saved in starts fp16's scale afresh, or has none to restore."""
        if state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state)


def translating(device: torch.device, amp: str = "none") -> torch.autocast:
    """The precision of every translation: fp32 unless ``amp`` asks for another, whatever
    precision the generator was trained in. The one rule of :meth:`CycleGAN.translate
    <cyclelib.cyclegan.CycleGAN.translate>`, ``translate_folder``, the test page and the sample
    grids of a run (the translated datasets of CyCADA's stages, ``metrics.translate_dataset``,
    run in fp32 as well). Why fp32: a translation is a result, saved as 8-bit pixels, and bf16
    changes them by more than one level (measured in the README); training's mixed precision buys
    speed where the step's rounding washes out over many steps. Callers hand results back as fp32."""
    return Precision(amp, device).autocast()


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Restore an optimiser's moments and step counts from ``state`` (its ``state_dict()``), keeping
    its own hyperparameters (lr, betas, fused, ...): those of a run's options now, which may have
    been changed for a resume. A schedule then sets the learning rate of its epoch."""
    groups = [{**mine, "params": saved["params"]}
              for mine, saved in zip(optimizer.state_dict()["param_groups"], state["param_groups"], strict=True)]
    optimizer.load_state_dict({**state, "param_groups": groups})


def _params(optimizer: torch.optim.Optimizer) -> Iterable[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


@contextlib.contextmanager
def cudnn_autotune(enabled: bool) -> Iterator[None]:
    """cuDNN benchmarks the convolution algorithms once per shape and keeps the fastest,
    inside this context only (training repeats its shapes every step; other code in the
    process may not)."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = previous or enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous
