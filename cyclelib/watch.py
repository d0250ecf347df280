"""Watching a run: its resolved options (printed once and saved as ``config.json``), and its loss
terms, learning rates and sample grids in TensorBoard and Weights & Biases.

:class:`Watch` is what :class:`~cyclelib.train.Trainer` calls: :meth:`~Watch.start` at the
step the run starts or resumes at, :meth:`~Watch.row` with each history row,
:meth:`~Watch.images` with each sample grid, :meth:`~Watch.close` at the end. Only rank 0 of a
torchrun job has one. TensorBoard and W&B are optional packages (``pip install 'cyclelib[log]'``);
a run that asks for one that is missing fails when the :class:`Watch` is built, before any
network is.
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path

import torch

from . import files

INSTALL = "pip install 'cyclelib[log]'"


def describe_options(config, origin: Mapping[str, str] | None = None, previous: Mapping | None = None) -> str:
    """One line: the options of dataclass ``config`` that differ from its defaults (the paper's), grouped
    by where each came from (``origin[name]``, e.g. "scale cpu preset" or "command line"; "set" when
    unknown, "the resumed run" for a resume), and those whose value ``previous`` (a resumed run's
    recorded options) had otherwise, as "changed at this resume: name old -> new"."""
    origin, groups = origin or {}, {}
    default_origin = "set" if previous is None else "the resumed run"
    for f in fields(config):
        value = getattr(config, f.name)
        if previous is not None and previous.get(f.name, f.default) != value:
            groups.setdefault("changed at this resume", []).append(f"{f.name} {previous.get(f.name, f.default)!r} "
                                                                   f"-> {value!r}")
        elif value != f.default:
            groups.setdefault(origin.get(f.name, default_origin), []).append(f"{f.name} {value!r}")
    listed = "; ".join(f"{where}: {', '.join(items)}" for where, items in groups.items())
    return f"options besides the paper's defaults - {listed or 'none'}"


def _require(package: str, option: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ImportError(f"{option} needs the {package} package, which is not installed: {INSTALL}")


class Watch:
    """The watching of one CycleGAN run ``config`` (a :class:`~cyclelib.config.CycleGANConfig`):
    ``config.tensorboard`` writes TensorBoard events into ``<out>/tensorboard``; ``config.wandb``
    logs to the W&B project ``config.wandb_project`` (its files in ``$WANDB_DIR``, else in ``out``).
    ``origin`` and ``previous`` are for :func:`describe_options`.

    As the official code does (pytorch-CycleGAN-and-pix2pix at 003efc4, util/visualizer.py:
    ``wandb.init(project='CycleGAN-and-pix2pix', name=opt.name, config=opt)`` at line 89, the loss
    dict logged at line 238 (``plot_current_losses``), each visual as a ``wandb.Image`` at lines
    172-187 (``display_current_results``)),
    W&B gets the run's options, the loss terms and the sample grids; here also the learning rates.
    Resumed, TensorBoard drops the events a killed run wrote after the resumed step (``purge_step``),
    and W&B continues the same run (its id is in the checkpoint, :meth:`state_dict`).
    """

    def __init__(self, config, origin: Mapping[str, str] | None = None, previous: Mapping | None = None):
        if config.tensorboard:
            _require("tensorboard", "--tensorboard (tensorboard=True)")
        if config.wandb:
            _require("wandb", "--wandb (wandb=True)")
        self.config, self.origin, self.previous = config, origin, previous
        self.out = Path(config.out)
        self.wandb_id: str | None = None
        self.tensorboard = self.wandb = None

    def state_dict(self) -> dict:
        return {"wandb_id": self.wandb_id}

    def load_state_dict(self, state: dict) -> None:
        self.wandb_id = state.get("wandb_id")

    def start(self, step: int) -> None:
        """Print the options, write ``config.json`` and open the loggers, at ``step`` (0, or the resumed step)."""
        options = asdict(self.config)
        print(describe_options(self.config, self.origin, self.previous), flush=True)
        files.write_json(self.out / "config.json", options)
        if self.config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            # Events after the step it starts at are a killed run's, past its last checkpoint: dropped.
            self.tensorboard = SummaryWriter(str(self.out / "tensorboard"), purge_step=step + 1)
        if self.config.wandb:
            import wandb
            self.wandb = wandb.init(project=self.config.wandb_project, name=self.out.name, id=self.wandb_id,
                                    resume="allow", config=options, dir=os.environ.get("WANDB_DIR") or str(self.out))
            self.wandb_id = self.wandb.id  # a new run's, kept in the checkpoints for a resume
            # The run's step as the x axis: a resumed run logs steps the killed one may have logged past.
            self.wandb.define_metric("*", step_metric="step")

    def row(self, step: int, terms: Mapping[str, float], lrs: Mapping[str, float]) -> None:
        """A history row: ``terms`` as ``loss/<term>``, ``lrs`` as ``lr/<optimiser>``."""
        scalars = {**{f"loss/{k}": v for k, v in terms.items()}, **{f"lr/{k}": v for k, v in lrs.items()}}
        if self.tensorboard is not None:
            for tag, value in scalars.items():
                self.tensorboard.add_scalar(tag, value, step)
            self.tensorboard.flush()  # on disk before the next checkpoint: a killed run's rows up to it survive
        if self.wandb is not None:
            self.wandb.log({"step": step, **scalars})

    def images(self, step: int, grid: torch.Tensor) -> None:
        """A sample grid, [3, H, W] in [0, 1], as ``samples``."""
        if self.tensorboard is not None:
            self.tensorboard.add_image("samples", grid, step)
        if self.wandb is not None:
            import wandb
            image = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
            self.wandb.log({"step": step, "samples": wandb.Image(image)})

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
        self.tensorboard = self.wandb = None
