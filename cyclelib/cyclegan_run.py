"""A CycleGAN training run: data, model and sample grids around the one :class:`~cyclelib.train.Trainer`.

:func:`train_cyclegan` trains a CycleGAN as the official code does: it reads and checks the
data (every image decoded once), builds the model, and hands both to the trainer, which writes
the run's checkpoints, history and sample grids. A resume goes on with the run's own options
where they shape the run (:data:`FIXED_OPTIONS`), and :func:`read_resumable` reads the run's
checkpoint without building any network.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from . import distributed
from .checkpoints import is_checkpoint, load_checkpoint
from .checks import shape_networks
from .config import CycleGANConfig, recorded_options
from .cyclegan import CycleGAN, GeneratorTerms
from .data import Unpaired, open_unpaired
from .distributed import RunContext, run_context
from .names import check_channels, domain_pair, is_driving_domain, is_labelled_pair
from .plots import save_image_grid
from .runs import check_resumable, load_run_checkpoint, step_checkpoint
from .modes import eval_mode
from .runtime import seed_everything, translating, use_threads
from .train import Trainer
from .watch import Watch
from .weights import check_cyclegan_shapes

# The options a CycleGAN run keeps for its life, and why (field metadata of CycleGANConfig, see config.py);
# every other option given at a resume applies from the resumed step on.
FIXED_OPTIONS = {f.name: f.metadata["why"] for f in fields(CycleGANConfig) if f.metadata["on_resume"] == "refuse"}


def train_cyclegan(config: CycleGANConfig, resume: bool = False, progress: bool = True,
                   extra_generator_losses: GeneratorTerms | None = None, meta: dict | None = None,
                   overwrite: bool = False, resume_hint: str | None = None,
                   origin: dict[str, str] | None = None, from_step: int | None = None,
                   context: RunContext | None = None) -> CycleGAN:
    """Train a CycleGAN as the official code does and return it (eval mode; its ``stopped_by`` says
    which limit ended the training: ``"max_steps"`` or ``"epochs"``).

    Writes to ``config.out``: ``checkpoints/step_XXXXXXX.pt`` (the last
    ``keep_checkpoints``, everything needed to resume exactly), ``checkpoint.pt`` (the
    latest), ``checkpoint_best.pt`` (lowest cycle loss cycle_A + cycle_B: it measures how
    well G_B(G_A(a)) and G_A(G_B(b)) reconstruct their inputs, a proxy, since no CycleGAN
    loss measures how realistic a translation looks), ``history.csv``/``history.json``
    (loss terms every ``log_every`` steps), ``samples/step_XXXXXX.png`` (rows: real A,
    G_A(A), G_B(G_A(A)), real B, G_B(B), G_A(G_B(B))) and ``history.png``. With
    ``resume=True`` it continues from the latest readable checkpoint in ``out`` exactly
    where that run stopped, with the options of ``config``: those the run keeps for its life
    (:data:`FIXED_OPTIONS`: networks, data and their order, loss) must be the run's, or
    nothing runs; the others (learning rate, betas, epochs, steps, intervals, precision,
    device, ...) apply from the resumed step on and are recorded. ``from_step`` (with ``resume``)
    goes on from the run's checkpoint of that step instead of its latest: the steps after it are
    trained again, their step checkpoints deleted first and their history rows dropped (see
    :func:`~cyclelib.runs.rewind`). A folder that holds another run is refused unless ``resume``
    or ``overwrite`` (start over). CPU threads: ``config.threads`` (see
    :func:`~cyclelib.runtime.use_threads`). See :class:`Trainer` for signals, NaN stops and
    torchrun (``batch_size`` is per rank; only rank 0 writes files).

    Every image is decoded once before training (see ``skip_bad_images``).
    ``extra_generator_losses``, ``meta`` and ``resume_hint`` are for runs built on CycleGAN
    (CyCADA's pixel stage adds its semantic loss, records the stage in ``meta``, and a stop
    message names the command that resumes the stage, not ``train cyclegan --resume``).
    The run prints its options once (those that differ from the paper's defaults, each under its
    ``origin``, e.g. "command line", and those changed at a resume), saves them as ``config.json``,
    and logs to TensorBoard / W&B with ``config.tensorboard`` / ``config.wandb`` (:mod:`cyclelib.watch`).
    ``context``: where the run computes (default: :func:`~cyclelib.distributed.run_context` of ``config.device``).
    """
    c = config
    if not c.data:
        raise ValueError("no data given: set data to a folder with trainA/trainB or a digit pair like mnist5k:mnistm5k")
    for name in ("input_nc", "output_nc"):  # the channels images are read with (domain A, domain B)
        check_channels(getattr(c, name), name)
    if from_step is not None and not resume:
        raise ValueError(f"from_step {from_step} picks the checkpoint a resumed run goes on from: give resume too")
    checkpoint = read_resumable(c.out, meta, from_step) if resume else None  # checked before any network is built
    if checkpoint is not None:
        _check_fixed_options(c, *checkpoint)
    # Under torchrun: this process's rank, the number of ranks and this rank's GPU.
    context = context or run_context(c.device)
    distributed.check_norm(c.norm, context.world, context.device)
    previous = checkpoint and recorded_options(checkpoint[0]["config"])
    watch = Watch(c, origin, previous) if context.rank == 0 else None  # checks the packages
    use_threads(c.threads)
    seed_everything(c.seed)
    data_options = dict(seed=c.seed, channels=c.input_nc, channels_b=c.output_nc, direction=c.direction,
                        serial=c.serial_batches)
    if is_labelled_pair(c.data):
        data_options.update(size=c.crop_size)  # digits are drawn at crop_size
        if any(map(is_driving_domain, domain_pair(c.data))):  # scenes read at a shorter side of load_size, cropped
            data_options.update(size=c.load_size, crop=c.crop_size if c.crop_size < c.load_size else None)
    else:
        data_options.update(preprocess=c.preprocess, load_size=c.load_size, crop_size=c.crop_size, flip=c.flip)
    dataset = _open_checked(c, "train", data_options)
    model = CycleGAN(c, extra_generator_losses, context).to(context.device)
    samples = _fixed_samples(c, dataset, data_options, context.device)
    out = Path(c.out)
    trainer = Trainer(
        model, dataset, out,
        inputs=lambda batch: (batch["A"], batch["B"], *([batch["A_label"]] if model.reads_labels else [])),
        record=dict(kind="cyclegan", config=asdict(c), meta=meta or {}), batch_size=c.batch_size,
        epochs=c.n_epochs + c.n_epochs_decay, seed=c.seed, max_steps=c.max_steps, limit=c.max_dataset_size,
        shuffle=not c.serial_batches,
        num_workers=c.num_workers, log_every=c.log_every, checkpoint_every=c.checkpoint_every,
        keep_checkpoints=c.keep_checkpoints, score=("cycle_A", "cycle_B"),
        sample=lambda step: _save_samples(model, samples, out / "samples" / f"step_{step:06d}.png"),
        sample_every=c.sample_every, resume_checks=(),  # read_resumable and _check_fixed_options did
        resume_hint=resume_hint or f"resume=True or `cyclelib train cyclegan --resume {out}`",
        overwrite=overwrite, progress=progress, name=(meta or {}).get("stage", "cyclegan"), watch=watch,
        compiling=c.compile)
    model.stopped_by = trainer.fit(resume, checkpoint)
    return model.eval()


def read_resumable(folder: str | Path, meta: dict | None = None, step: int | None = None) -> tuple[dict, Path]:
    """The latest checkpoint of the CycleGAN run in ``folder`` (with ``step``: its checkpoint of that
    step, see :func:`~cyclelib.runs.step_checkpoint`) and its path, read without building
    any network. A ``ValueError`` says what the folder holds when it is no such run: an official
    state_dict, weights without a training state, a classifier, or a stage of a CyCADA run whose
    ``meta`` is not this run's (with the command that continues that stage); and names the
    tensors when the checkpoint's config declares other networks than they are (a config with
    ``ngf=100000`` would allocate hundreds of GB: see :func:`~cyclelib.weights.check_cyclegan_shapes`)."""
    if step is None:
        ckpt, path = load_run_checkpoint(folder)
    else:
        path = step_checkpoint(folder, step)
        ckpt = load_checkpoint(path)
    if not is_checkpoint(ckpt):
        raise ValueError(f"cannot resume from {path}: it is not a cyclelib checkpoint but weights alone (an "
                         "official state_dict?); translate with it, or start a new run in another folder")
    # a CyCADA stage, a classifier, weights without a training state (the config is compared later)
    check_resumable(ckpt, path, {"kind": "cyclegan", "config": {}, "meta": meta or {}}, keys=())
    check_cyclegan_shapes(ckpt, str(path))
    return ckpt, path


def _check_fixed_options(config: CycleGANConfig, ckpt: dict, path: Path) -> None:
    """Refuse to resume ``ckpt`` with ``config`` when an option of :data:`FIXED_OPTIONS` differs,
    naming each and why (options a checkpoint does not record count at their defaults)."""
    saved = {**{f.name: f.default for f in fields(CycleGANConfig)}, **recorded_options(ckpt["config"])}
    changed = [f"{name}={saved[name]!r} there, {getattr(config, name)!r} now: {why}"
               for name, why in FIXED_OPTIONS.items() if saved[name] != getattr(config, name)]
    if changed:
        raise ValueError(f"cannot resume {path} with other values of options a run keeps ({'; '.join(changed)}); "
                         "resume with the run's values, or start a new run in another folder")


def _open_checked(c: CycleGANConfig, phase: str, data_options: dict) -> Unpaired:
    """The dataset of ``phase``, every image decoded once (see :meth:`Unpaired.check`)."""
    dataset = open_unpaired(c.data, phase=phase, **data_options)

    def networks(channels: int) -> dict:  # those that read a domain's images (test images go through G only)
        return shape_networks(c, channels, discriminator=phase == "train")

    skipped = dataset.check(skip_bad=c.skip_bad_images, batch_size=c.batch_size if phase == "train" else 1,
                            networks=networks)
    if skipped:
        print(f"skipped {len(skipped)} unreadable {phase} image(s) (skip_bad_images=True); first: {skipped[0]}",
              file=sys.stderr)
    return dataset


def _fixed_samples(c: CycleGANConfig, train: Unpaired, data_options: dict, device,
                   n: int = 4) -> dict[str, list[torch.Tensor]]:
    """The same few test images (train images when there is no test split) for every sample
    grid, each [C, H, W] (their sizes may differ with preprocess none or scale_width)."""
    try:
        ds = _open_checked(c, "test", data_options)
    except FileNotFoundError:
        ds = train  # the loop sets its own epoch before every epoch
    ds.set_epoch(0)
    # Spread over the set: the digit splits are sorted by class, so the first n would all be 0s.
    items = [ds[i * len(ds) // n] for i in range(min(n, len(ds)))]
    return {k: [it[k].to(device) for it in items] for k in ("A", "B")}


@torch.no_grad()
def _save_samples(model: CycleGAN, samples: dict[str, list[torch.Tensor]], path: Path) -> torch.Tensor:
    """A grid with rows real A, G_A(A), G_B(G_A(A)), real B, G_B(B), G_A(G_B(B)), one image at a
    time (sizes may differ), shown at the first image's size; returned as one image [3, H, W] in [0, 1].
    Translated in eval mode, in the precision of every translation (:func:`~cyclelib.runtime.translating`)."""
    names = ["real A", "G_A(A)", "G_B(G_A(A))", "real B", "G_B(B)", "G_A(G_B(B))"]
    rows: list[list[torch.Tensor]] = [[] for _ in names]
    with eval_mode(model), translating(samples["A"][0].device):
        for a, b in zip(samples["A"], samples["B"]):
            a, b = a[None], b[None]  # [1, C, H, W]
            fake_b, fake_a = model.G_A(a), model.G_B(b)
            for row, image in zip(rows, (a, fake_b, model.G_B(fake_b), b, fake_a, model.G_A(fake_a))):
                row.append(image)
    side = samples["A"][0].shape[-2:]
    # grey images shown as RGB beside colour ones (input_nc 1, output_nc 3)
    shown = [torch.cat([(im if im.shape[-2:] == side else F.interpolate(im, size=side, mode="bilinear"))
                        .expand(-1, 3, -1, -1) for im in row]) for row in rows]
    save_image_grid(shown, names, path)
    return make_grid(torch.cat(shown), nrow=len(samples["A"]), normalize=True, value_range=(-1, 1))
