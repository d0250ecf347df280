"""Where and how big a run is: scale, device, seeds."""
from __future__ import annotations

import os
import random

import torch

SCALES = ("smoke", "cpu", "gpu")


def resolve_scale(scale: str | None = None) -> str:
    """The run's scale: ``scale`` if given, else ``$CYCLELIB_SCALE``, else gpu/cpu by hardware.

    - ``smoke``: seconds, checks that everything runs (CI, nbval);
    - ``cpu``: minutes on 2 CPU cores, real results on the offline digits;
    - ``gpu``: the paper's setting, on CUDA.
    """
    chosen = scale or os.environ.get("CYCLELIB_SCALE") or ("gpu" if torch.cuda.is_available() else "cpu")
    if chosen not in SCALES:
        source = "--scale" if scale else "CYCLELIB_SCALE"
        raise ValueError(f"{source}={chosen!r} is not a scale; valid values: {', '.join(SCALES)}")
    return chosen


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given (e.g. ``"cuda:1"``), else CUDA when present, else CPU."""
    if device:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {device} was asked for but CUDA is not available")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python and torch (CPU and all GPUs)."""
    random.seed(seed)
    torch.manual_seed(seed)
