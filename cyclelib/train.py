"""Training: one loop for every model of cyclelib.

:class:`Trainer` runs a model's ``train_step`` over the epochs of a dataset. A model is a
module that meets :class:`Trainable` (and :class:`Distributable` to train under torchrun):
:class:`~cyclelib.cyclegan.CycleGAN` (a CycleGAN step),
:class:`~cyclelib.classifiers.TaskClassifier` (a classifier step) and
:class:`~cyclelib.classifiers.FeatureAlignment` (a feature-GAN step). Around the step, in
this one place, the trainer does everything a long run needs:

- the order of the samples: each epoch a pure function of ``(seed, epoch)``, or in order
  (:class:`~cyclelib.data.EpochSampler`), split across ranks under torchrun;
- the loss history: a row every ``log_every`` steps, the means since the last row, written as
  ``history.json/csv/png``;
- checkpoints every ``checkpoint_every`` steps and at the end (the last few, the latest and
  the best, see :func:`~cyclelib.runs.save_run_checkpoint`), holding everything an exact
  resume needs: weights, optimisers, RNG states, position in the epoch, the loss sums since
  the last history row;
- a NaN/Inf stop that never overwrites a good checkpoint (:class:`TrainingDiverged`);
- SIGINT/SIGTERM: a checkpoint at the next step boundary, then :class:`TrainingInterrupted`;
- DistributedDataParallel under torchrun (:mod:`cyclelib.distributed`), and a progress bar.

The CycleGAN run built on it (data, model, sample grids) is :func:`~cyclelib.cyclegan_run.train_cyclegan`.
"""
from __future__ import annotations

import contextlib
import csv
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed, files
from .checkpoints import load_weights, make_checkpoint
from .data import EpochSampler
from .plots import plot_history
from .runs import LATEST, check_resumable, load_run_checkpoint, rewind, run_folder, save_run_checkpoint
from .runtime import cudnn_autotune, rng_state, set_rng_state
from .watch import Watch


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training at a step boundary, after a checkpoint to resume from."""

    def __init__(self, signum: int, step: int, checkpoint: Path, hint: str = "resume=True"):
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: stopped at step {step} and saved {checkpoint}; continue with {hint}")
        self.exit_code = 128 + signum  # what a shell reports for a process ended by this signal


class TrainingDiverged(FloatingPointError):
    """A loss term became NaN or Inf; the checkpoints on disk are the last good ones."""

    exit_code = 1


class History:
    """Loss terms as rows ``{"step", "epoch", term: mean}``, one at every multiple of ``every``,
    each the mean over the steps since the previous row.

    The sums since the last row are part of :meth:`state_dict`, so a run resumed between two
    rows writes the same next row as a run that was never stopped; one resumed with another
    ``every`` writes its next row at the first multiple of the new one, over every step since the last row.
    """

    def __init__(self, every: int):
        self.every, self.rows = every, []
        self.sums: dict[str, torch.Tensor] = {}  # on the device: no host sync until a row is due
        self.count = 0  # the steps in the sums

    def add(self, step: int, epoch: int, terms: dict[str, torch.Tensor]) -> dict | None:
        """Add one step's terms; returns the new row when ``step`` completes one."""
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0) + value
        self.count += 1
        if step % self.every:
            return None
        self.rows.append({"step": step, "epoch": epoch, **{k: (v / self.count).item() for k, v in self.sums.items()}})
        self.sums.clear()
        self.count = 0
        return self.rows[-1]

    def score(self, terms: tuple[str, ...], since: int) -> float | None:
        """The mean over the rows after step ``since`` of the sum of ``terms`` (None without rows)."""
        rows = [row for row in self.rows if row["step"] > since]
        return sum(sum(row[t] for t in terms) for row in rows) / len(rows) if rows and terms else None

    def state_dict(self) -> dict:
        return {"rows": self.rows, "sums": {k: v.cpu() for k, v in self.sums.items()}}

    def load_state_dict(self, state: dict, device: torch.device, step: int) -> None:
        """Restore :meth:`state_dict`, saved at ``step``."""
        self.rows = list(state["rows"])
        self.sums = {k: v.to(device) for k, v in state["sums"].items()}
        self.count = step - (self.rows[-1]["step"] if self.rows else 0) if self.sums else 0

    def write(self, out: Path) -> None:
        """``history.json``, ``history.csv`` and ``history.png`` in ``out``, each replaced atomically
        (see :mod:`cyclelib.files`)."""
        if not self.rows:
            return
        files.write_json(out / "history.json", self.rows)
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        table = StringIO()
        writer = csv.DictWriter(table, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.rows)
        files.write_text(out / "history.csv", table.getvalue())
        plot_history(self.rows, out / "history.png", keys=[k for k in keys if k not in ("step", "epoch")])


class _NonFiniteWatch:
    """The first step at which each loss term was NaN or Inf.

    Kept on the device, so watching costs no host sync per step; :meth:`check` syncs
    once, and runs before anything (log row, checkpoint) is written.
    """

    def __init__(self):
        self.names: list[str] = []
        self.first_step = self.first_value = None  # [terms] long / float, -1: still finite

    def update(self, step: int, terms: dict[str, torch.Tensor]) -> None:
        values = torch.stack([t.float() for t in terms.values()])  # [terms]
        if self.first_step is None:
            self.names = list(terms)
            self.first_step = torch.full(values.shape, -1, dtype=torch.long, device=values.device)
            self.first_value = torch.zeros_like(values)
        new = ~torch.isfinite(values) & (self.first_step < 0)
        self.first_step = torch.where(new, step, self.first_step)
        self.first_value = torch.where(new, values, self.first_value)

    def check(self, out: Path, saved_at: int) -> None:
        """Raise :class:`TrainingDiverged` naming the earliest bad step and term (totals such as
        G, D_A, D_B come after the terms, so a term is named when one is at fault)."""
        if self.first_step is None:
            return
        found = [(step, i) for i, step in enumerate(self.first_step.tolist()) if step >= 0]
        if found:
            step, i = min(found)
            kept = (f"the checkpoints in {out} (latest: step {saved_at}) are from before it" if saved_at
                    else "no checkpoint was written")
            raise TrainingDiverged(f"loss term {self.names[i]} was {self.first_value[i].item()} at step {step}; "
                                   f"training stopped and {kept}. Lower the learning rate (or set "
                                   "clip_grad_norm for a CycleGAN), then resume or restart.")


@contextlib.contextmanager
def _stop_requests() -> Iterator[dict[str, int]]:
    """SIGINT (Ctrl-C) and SIGTERM (e.g. a cluster preemption) set ``"signal"`` in the yielded
    dict instead of killing the process; the loop then stops at the next step boundary with a
    checkpoint. The handler steps aside after one signal: a second one acts at once."""
    stop: dict[str, int] = {}
    previous: dict[int, object] = {}

    def request_stop(signum, frame):
        stop["signal"] = signum
        signal.signal(signum, previous[signum])

    if threading.current_thread() is threading.main_thread():  # Python only lets it set handlers
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request_stop) or signal.SIG_DFL
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _leave_sigint_to_main(worker_id: int) -> None:
    """A terminal's Ctrl-C reaches every process of the job; loader workers ignore it so that
    the main process can finish its step and save (a dead worker would fail that step)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@runtime_checkable
class Trainable(Protocol):
    """What :class:`Trainer` needs of a model besides being an ``nn.Module`` (its weights are its
    ``state_dict``)."""

    def train_step(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step of every optimiser on a batch (the tensors ``Trainer.inputs`` picks from it);
        the loss terms by name, detached, still on the device."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimisers by name (their learning rates are logged)."""

    def training_state(self) -> dict:
        """Everything besides the weights that an exact resume needs (optimisers, schedulers,
        pools, loss scale)."""

    def load_training_state(self, state: dict) -> None:
        """Restore :meth:`training_state`."""

    def end_epoch(self, score: float | None) -> None:
        """Called after every epoch (learning-rate schedules), with the epoch's mean of the
        trainer's ``score`` terms (None without them)."""


@runtime_checkable
class Distributable(Trainable, Protocol):
    """A :class:`Trainable` that can train under torchrun, one process per rank."""

    def distribute(self, device: torch.device) -> None:
        """Average every update's gradients over the ranks of the process group."""


def _check_trainable(model: object) -> None:
    """Raise a ``TypeError`` naming what ``model`` lacks of :class:`Trainable`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"Trainer trains a torch.nn.Module, got {type(model).__name__}")
    required = [name for name, member in vars(Trainable).items() if callable(member) and not name.startswith("_")]
    missing = [name for name in required if not callable(getattr(model, name, None))]
    if missing:
        raise TypeError(f"{type(model).__name__} cannot be trained by Trainer: it has no method "
                        f"{', '.join(missing)} (see cyclelib.train.Trainable)")


@dataclass
class Trainer:
    """Trains ``model`` on ``dataset`` for ``epochs`` epochs, writing to the run folder ``out``.

    ``inputs`` picks the tensors of a batch that ``model.train_step`` takes, in order (for
    CycleGAN ``batch["A"], batch["B"]``). ``record`` (``kind``, ``config``, ``meta``) goes
    into every checkpoint and says what the weights are (see :mod:`cyclelib.checkpoints`);
    ``resume_checks`` are the keys of ``record["config"]`` that a checkpoint must share to
    be resumed (default: all). ``score`` names the terms whose sum ``checkpoint_best.pt``
    minimises (averaged over the history rows since the previous scheduled checkpoint), and
    their mean over each epoch goes to ``model.end_epoch``; ``sample(step)``, when given, runs
    every ``sample_every`` steps and at the end (rank 0). ``max_steps`` may end the run before
    its epochs, never after (``ValueError``): a schedule counts epochs. With ``compiling`` the
    first step says it compiles, and how long it took.
    """

    model: Trainable
    dataset: torch.utils.data.Dataset
    out: Path
    inputs: Callable[[object], tuple[torch.Tensor, ...]]
    record: dict
    batch_size: int
    epochs: int
    seed: int = 0
    max_steps: int | None = None        # stop after this many steps in total
    limit: int | None = None            # samples per epoch (None: the whole dataset)
    shuffle: bool = True                # each epoch in a seeded order, else in order (EpochSampler)
    drop_last: bool = False             # drop an epoch's last, partial batch (BatchNorm needs > 1 sample)
    num_workers: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    score: tuple[str, ...] = ()
    sample: Callable[[int], None] | None = None
    sample_every: int = 500
    resume_checks: tuple[str, ...] | None = None
    resume_hint: str = "resume=True"    # how to continue, for the message of a stop
    overwrite: bool = False             # start over in a folder that holds another run (see runs.run_folder)
    progress: bool = True
    name: str = "train"
    watch: Watch | None = None          # TensorBoard / W&B, options printed (see cyclelib.watch; rank 0's)
    compiling: bool = False             # the model's networks are torch.compiled (at their first call)
    # the run's position; fit() sets them, from a checkpoint when resuming
    epoch: int = field(default=0, init=False)
    start: int = field(default=0, init=False)  # steps done in the current epoch
    step: int = field(default=0, init=False)

    def __post_init__(self):
        _check_trainable(self.model)
        self.out = Path(self.out)
        self.device = next(self.model.parameters()).device
        self.rank, self.world, _ = distributed.setup(self.device)
        self.history = History(self.log_every)
        self.best: dict | None = None   # {"step", "score"} of checkpoint_best.pt
        self.best_since = 0             # step of the last scheduled checkpoint: the score's window
        self.saved_at = 0               # step of the latest checkpoint
        self.loader_seed: int | None = None
        share = len(EpochSampler(len(self.dataset), self.seed, 0, limit=self.limit, world_size=self.world))
        self.drop_last = self.drop_last and share > self.batch_size
        self.steps_per_epoch = share // self.batch_size if self.drop_last else math.ceil(share / self.batch_size)
        schedule = self.epochs * self.steps_per_epoch
        if self.max_steps is not None and self.max_steps > schedule:
            raise ValueError(f"max_steps {self.max_steps} is more than the {schedule} steps of the run's {self.epochs} "
                             f"epochs ({self.steps_per_epoch} steps each), and the learning-rate schedule counts "
                             "epochs: give more epochs (n_epochs, n_epochs_decay) instead, or fewer max_steps")
        self.total_steps = self.max_steps or schedule
        self.epoch_score: list = [0, 0]  # the sum of the score terms over this epoch's steps (on the device), steps

    def fit(self, resume: bool = False, checkpoint: tuple[dict, Path] | None = None) -> str:
        """Train to the end (``total_steps``), from the latest checkpoint in ``out`` with ``resume``
        (``checkpoint``: that checkpoint and its path, when the caller has read and checked it; an
        earlier one than the run's newest rewinds the run to it, see :func:`~cyclelib.runs.rewind`).
        Returns which limit ended the run: ``"max_steps"`` or ``"epochs"``.

        ``out`` is checked and locked first (:func:`~cyclelib.runs.run_folder`, by rank 0). The
        trainer's own options may differ from the resumed run's and apply from the resumed step on:
        ``max_steps`` and ``epochs`` (``total_steps``), ``sample_every``, ``checkpoint_every``,
        ``keep_checkpoints`` and ``log_every`` (the next row comes at the first multiple of the
        new one and averages every step since the last row)."""
        with (run_folder(self.out, resume, self.overwrite) if self.rank == 0 else contextlib.nullcontext(),
              contextlib.closing(self.watch) if self.watch else contextlib.nullcontext()):
            self._fit(resume, checkpoint)
        return "max_steps" if self.step < self.epochs * self.steps_per_epoch else "epochs"

    def _fit(self, resume: bool, checkpoint: tuple[dict, Path] | None) -> None:
        if self.world > 1:
            if not isinstance(self.model, Distributable):
                raise RuntimeError(f"{self.name} cannot train distributed: run it in a single process")
            self.model.distribute(self.device)  # before a resume, which then loads the saved pools
        if resume:
            self._resume(checkpoint or load_run_checkpoint(self.out))
        if self.watch:
            self.watch.start(self.step)
        watch = _NonFiniteWatch()
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.progress or self.rank != 0,
                   desc=f"{self.name} [CPU threads: {torch.get_num_threads()}]", unit="step")
        compiling = self.compiling and self.rank == 0
        with _stop_requests() as stop, cudnn_autotune(self.device.type == "cuda"):
            try:
                self.model.train()
                while self.epoch < self.epochs and self.step < self.total_steps and not stop:
                    for batch in self._loader():
                        if compiling:
                            bar.write("compiling the networks (torch.compile): the first step waits for it")
                            started = time.perf_counter()
                        terms = self.model.train_step(*(t.to(self.device, non_blocking=True)
                                                        for t in self.inputs(batch)))
                        if compiling:
                            bar.write(f"compiled, first step done in {time.perf_counter() - started:.1f} s")
                            compiling = False
                        terms = distributed.mean_over_ranks(terms)  # DDP: the global batch's, the same on every rank
                        if self.score:
                            self.epoch_score = [self.epoch_score[0] + sum(terms[t] for t in self.score),
                                                self.epoch_score[1] + 1]
                        self.step, self.start = self.step + 1, self.start + 1
                        watch.update(self.step, terms)
                        bar.update()
                        if self.world > 1 and distributed.any_rank(bool(stop)):
                            stop.setdefault("signal", signal.SIGTERM)  # it reached another rank: stop together
                        self._after_step(terms, watch, bar)
                        if self.step >= self.total_steps or stop:
                            break
                    else:
                        total, steps = self.epoch_score
                        self.epoch, self.start, self.loader_seed = self.epoch + 1, 0, None
                        self.epoch_score = [0, 0]
                        self.model.end_epoch(float(total / steps) if self.score and steps else None)
            finally:
                bar.close()
        self._save(watch, scheduled=not stop)
        if self.sample is not None and self.rank == 0 and self.step % self.sample_every:  # not twice
            self._sample()
        if stop:
            raise TrainingInterrupted(stop["signal"], self.step, self.out / LATEST, self.resume_hint)

    def _after_step(self, terms: dict[str, torch.Tensor], watch: _NonFiniteWatch, bar) -> None:
        if self.step % self.log_every == 0:
            watch.check(self.out, self.saved_at)  # never log a NaN row
        row = self.history.add(self.step, self.epoch, terms)
        if row is not None:
            shown = [(k, v) for k, v in row.items() if k not in ("step", "epoch")][-3:]  # CycleGAN: G, D_A, D_B
            bar.set_postfix({k: f"{v:.3f}" for k, v in shown})
            if self.watch:
                lrs = {name: opt.param_groups[0]["lr"] for name, opt in self.model.optimizers().items()}
                self.watch.row(self.step, {k: v for k, v in row.items() if k not in ("step", "epoch")}, lrs)
        if self.sample is not None and self.step % self.sample_every == 0 and self.rank == 0:
            self._sample()
        if self.step % self.checkpoint_every == 0:
            self._save(watch, scheduled=True)

    def _sample(self) -> None:
        # Not from the run's random numbers (a noise input draws its z for each grid), or
        # sample_every would change the training that follows.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            grid = self.sample(self.step)
        if self.watch and grid is not None:
            self.watch.images(self.step, grid)

    def _loader(self) -> torch.utils.data.DataLoader:
        """The rest of the current epoch (from ``start``), in the epoch's fixed order."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        if self.loader_seed is None:
            # The seed of this epoch's loader workers, drawn from the run's RNG as a DataLoader
            # would draw it, and kept in the checkpoint: a resumed epoch gets the same one.
            self.loader_seed = int(torch.empty((), dtype=torch.int64).random_().item())
        sampler = EpochSampler(len(self.dataset), self.seed, self.epoch, self.start * self.batch_size,
                               self.limit, self.rank, self.world, self.shuffle)
        return torch.utils.data.DataLoader(self.dataset, self.batch_size, sampler=sampler,
                                           num_workers=self.num_workers, drop_last=self.drop_last,
                                           pin_memory=self.device.type == "cuda",
                                           generator=torch.Generator().manual_seed(self.loader_seed),
                                           worker_init_fn=_leave_sigint_to_main)

    def _save(self, watch: _NonFiniteWatch, scheduled: bool) -> None:
        """A checkpoint of this step. Only ``scheduled`` ones (every ``checkpoint_every`` steps
        and the end) compete for ``checkpoint_best.pt``: one written because of a signal must
        not, or a stopped and resumed run would pick another best than one never stopped."""
        watch.check(self.out, self.saved_at)  # NaN weights must never replace a good checkpoint
        improved = False
        if scheduled:
            score = self.history.score(self.score, since=self.best_since)
            improved = score is not None and (self.best is None or score < self.best["score"])
            if improved:
                self.best = {"step": self.step, "score": score}
            self.best_since = self.step
        if self.rank == 0:  # one writer: every rank holds the same weights
            save_run_checkpoint(self._checkpoint(), self.out, self.step, self.keep_checkpoints, best=improved)
            self.history.write(self.out)
        self.saved_at = self.step

    def _checkpoint(self) -> dict:
        training = {**self.model.training_state(), "rng": rng_state(), "epoch": self.epoch, "start": self.start,
                    "step": self.step, "total_steps": self.total_steps, "world_size": self.world,
                    "loader_seed": self.loader_seed, "history_sums": self.history.state_dict()["sums"],
                    "epoch_score": [torch.as_tensor(self.epoch_score[0]).cpu(), self.epoch_score[1]],
                    "best": self.best, "best_since": self.best_since,
                    "watch": self.watch.state_dict() if self.watch else {}}
        return make_checkpoint(**self.record, nets=self.model.state_dict(), history=self.history.rows,
                               training=training)

    def _resume(self, checkpoint: tuple[dict, Path]) -> None:
        ckpt, path = checkpoint
        check_resumable(ckpt, path, self.record, self.resume_checks)
        t = ckpt["training"]
        if t["world_size"] != self.world:  # "start" counts steps of world_size x batch_size samples
            raise ValueError(f"cannot resume {path} with {self.world} process(es): it was trained with "
                             f"{t['world_size']}; resume it with torchrun --nproc_per_node {t['world_size']}")
        load_weights(self.model, ckpt["nets"], str(path))
        self.model.load_training_state(t)
        set_rng_state(t["rng"])
        self.epoch, self.start, self.step, self.loader_seed = t["epoch"], t["start"], t["step"], t["loader_seed"]
        self.history.load_state_dict({"rows": ckpt["history"], "sums": t["history_sums"]}, self.device, self.step)
        self.best, self.best_since, self.saved_at = t["best"], t["best_since"], self.step
        total, steps = t.get("epoch_score", [0, 0])  # checkpoints before lr_policy have none: 0 steps
        self.epoch_score = [torch.as_tensor(total).to(self.device), steps]
        if self.rank == 0 and rewind(self.out, path, self.step):
            self.best = None  # the best checkpoint was a later step's: the next scheduled one becomes it
        if self.watch:
            self.watch.load_state_dict(t.get("watch", {}))
