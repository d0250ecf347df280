"""CycleGAN (Zhu et al. 2017): the model, one training step, and the training loop.

Names follow the official code: G_A = G (X -> Y), G_B = F (Y -> X),
D_A = D_Y judges domain B, D_B = D_X judges domain A.
"""
from __future__ import annotations

import csv
import json
import math
import signal
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from . import losses
from .checkpoint import FORMAT_VERSION, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data import DIGIT_DOMAINS, open_unpaired
from .networks import build_discriminator, build_generator
from .plots import plot_history, save_image_grid
from .pool import ImagePool
from .runtime import pick_device, resolve_scale, seed_everything


@dataclass
class CycleGANConfig:
    """Every option of a CycleGAN run; the defaults are the official ones (the paper's setting)."""

    data: str = ""                     # folder with trainA/trainB, or a digit pair "mnist5k:mnistm5k"
    out: str = "runs/cyclegan"         # run folder: checkpoints, samples, history
    # networks
    netG: str = "resnet_9blocks"
    netD: str = "basic"
    ngf: int = 64
    ndf: int = 64
    n_layers_D: int = 3
    norm: str = "instance"
    dropout: bool = False
    init: str = "normal"
    init_gain: float = 0.02
    input_nc: int = 3
    output_nc: int = 3
    # losses
    gan_mode: str = "lsgan"
    lambda_A: float = 10.0             # cycle A -> B -> A
    lambda_B: float = 10.0             # cycle B -> A -> B
    lambda_identity: float = 0.5       # multiplies lambda_A / lambda_B (effective weight 5)
    lambda_gan_A: float = 1.0          # weight of G_A's adversarial term (CyCADA uses 2)
    lambda_gan_B: float = 1.0          # weight of G_B's adversarial term
    lambda_gp: float = 10.0            # gradient penalty, gan_mode "wgangp" only
    # optimisation
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 1
    n_epochs: int = 100                # epochs at the initial learning rate
    n_epochs_decay: int = 100          # epochs of linear decay to zero
    pool_size: int = 50
    max_steps: int | None = None       # stop after this many steps in total (for tests and sweeps)
    # data
    preprocess: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    max_dataset_size: int | None = None  # at most this many samples per epoch
    num_workers: int = 2
    # run
    seed: int = 0
    device: str | None = None
    amp: str = "none"                  # "bf16": autocast on CUDA
    log_every: int = 50                # steps between loss-history rows
    sample_every: int = 500            # steps between sample grids
    checkpoint_every: int = 1000       # steps between checkpoints (one is always written at the end)

    def __post_init__(self):
        checks = {
            "lambda_A": self.lambda_A, "lambda_B": self.lambda_B, "lambda_identity": self.lambda_identity,
            "lambda_gan_A": self.lambda_gan_A, "lambda_gan_B": self.lambda_gan_B, "lambda_gp": self.lambda_gp,
            "pool_size": self.pool_size, "n_epochs_decay": self.n_epochs_decay,
        }
        for name, value in checks.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name in ("lr", "batch_size", "n_epochs", "load_size", "crop_size", "log_every",
                     "sample_every", "checkpoint_every", "ngf", "ndf"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.gan_mode not in losses.GAN_MODES:
            raise ValueError(f"unknown gan_mode {self.gan_mode!r}; valid values: {', '.join(losses.GAN_MODES)}")
        if self.amp not in ("none", "bf16"):
            raise ValueError(f"unknown amp {self.amp!r}; valid values: none, bf16")
        if self.crop_size > self.load_size and self.preprocess in ("resize_and_crop", "scale_width"):
            raise ValueError(f"crop_size ({self.crop_size}) must not exceed load_size ({self.load_size})")
        if self.lambda_identity > 0 and self.input_nc != self.output_nc:
            raise ValueError("the identity loss needs input_nc == output_nc; set lambda_identity=0")

    @classmethod
    def for_scale(cls, scale: str | None = None, **options) -> "CycleGANConfig":
        """The config of a scale (smoke / cpu / gpu, see :func:`resolve_scale`); ``options`` win."""
        scale = resolve_scale(scale)
        digits = _is_digit_pair(options.get("data", ""))
        preset = SCALE_PRESETS[scale]["digits" if digits else "images"]
        return cls(**{**preset, **options})


def _is_digit_pair(spec: str) -> bool:
    parts = str(spec).split(":")
    return len(parts) == 2 and all(p in DIGIT_DOMAINS for p in parts)


# Per scale and kind of data, the options that differ from the paper's defaults.
# Digits are 32x32 and need no augmentation (a flipped "2" is no digit).
_DIGITS = dict(load_size=32, crop_size=32, preprocess="none", flip=False)
SCALE_PRESETS = {
    "smoke": {
        "digits": dict(_DIGITS, netG="resnet_2blocks", ngf=8, ndf=8, batch_size=4, n_epochs=1,
                       n_epochs_decay=1, max_dataset_size=16, num_workers=0, log_every=1,
                       sample_every=4, checkpoint_every=4),
        "images": dict(netG="resnet_2blocks", ngf=8, ndf=8, batch_size=2, n_epochs=1, n_epochs_decay=1,
                       max_dataset_size=8, load_size=36, crop_size=32, num_workers=0, log_every=1,
                       sample_every=4, checkpoint_every=4),
    },
    "cpu": {
        "digits": dict(_DIGITS, netG="resnet_6blocks", ngf=32, ndf=32, batch_size=8, n_epochs=3,
                       n_epochs_decay=2, max_dataset_size=800, log_every=10, sample_every=100,
                       checkpoint_every=100),
        "images": dict(netG="resnet_6blocks", ngf=32, ndf=32, load_size=143, crop_size=128,
                       n_epochs=2, n_epochs_decay=1, max_dataset_size=200, log_every=10,
                       sample_every=100, checkpoint_every=200),
    },
    "gpu": {
        "digits": dict(_DIGITS, batch_size=100, n_epochs=20, n_epochs_decay=20, num_workers=4,
                       log_every=50, sample_every=500, checkpoint_every=2000),
        "images": dict(num_workers=4),
    },
}


class CycleGAN(nn.Module):
    """The four networks of CycleGAN and one official training step.

    ``extra_generator_losses`` (optional) maps ``(real_A, real_B, fakes)`` to more named
    generator terms, already weighted; CyCADA adds its semantic consistency loss this way.
    """

    def __init__(self, config: CycleGANConfig,
                 extra_generator_losses: Callable[..., dict[str, torch.Tensor]] | None = None):
        super().__init__()
        c = self.config = config
        gen = dict(width=c.ngf, norm=c.norm, dropout=c.dropout, init=c.init, init_gain=c.init_gain)
        dis = dict(width=c.ndf, n_layers=c.n_layers_D, norm=c.norm, init=c.init, init_gain=c.init_gain)
        self.G_A = build_generator(c.netG, c.input_nc, c.output_nc, **gen)   # A -> B
        self.G_B = build_generator(c.netG, c.output_nc, c.input_nc, **gen)   # B -> A
        self.D_A = build_discriminator(c.netD, c.output_nc, **dis)           # judges B
        self.D_B = build_discriminator(c.netD, c.input_nc, **dis)            # judges A
        self.extra_generator_losses = extra_generator_losses
        betas = (c.beta1, c.beta2)
        self.opt_G = torch.optim.Adam([*self.G_A.parameters(), *self.G_B.parameters()], lr=c.lr, betas=betas)
        self.opt_D = torch.optim.Adam([*self.D_A.parameters(), *self.D_B.parameters()], lr=c.lr, betas=betas)
        # Official rule: constant for n_epochs, then linear decay over n_epochs_decay (+1) epochs.
        rule = lambda epoch: 1.0 - max(0, epoch + 1 - c.n_epochs) / float(c.n_epochs_decay + 1)
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, rule)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, rule)
        self.pool_A = ImagePool(c.pool_size, seed=c.seed)      # fakes of domain A, for D_B
        self.pool_B = ImagePool(c.pool_size, seed=c.seed + 1)  # fakes of domain B, for D_A

    def generator_losses(self, real_A: torch.Tensor, real_B: torch.Tensor):
        """The named, weighted terms of the full objective for G_A and G_B, and the fakes.

        .. math::
            \\mathcal{L}(G, F, D_X, D_Y) = \\mathcal{L}_{GAN}(G, D_Y, X, Y) + \\mathcal{L}_{GAN}(F, D_X, Y, X)
                + \\lambda \\mathcal{L}_{cyc}(G, F) + \\lambda_{idt} \\mathcal{L}_{identity}(G, F)
        """
        c = self.config
        fake_B = self.G_A(real_A)   # G(x)        [N, C_B, H, W]
        rec_A = self.G_B(fake_B)    # F(G(x))     [N, C_A, H, W]
        fake_A = self.G_B(real_B)   # F(y)
        rec_B = self.G_A(fake_A)    # G(F(y))
        fakes = {"fake_A": fake_A, "fake_B": fake_B, "rec_A": rec_A, "rec_B": rec_B}
        mode = c.gan_mode
        terms = {
            "G_A": c.lambda_gan_A * losses.gan_loss(self.D_A(fake_B), True, mode, for_discriminator=False),
            "G_B": c.lambda_gan_B * losses.gan_loss(self.D_B(fake_A), True, mode, for_discriminator=False),
            "cycle_A": c.lambda_A * losses.cycle_loss(rec_A, real_A),
            "cycle_B": c.lambda_B * losses.cycle_loss(rec_B, real_B),
        }
        if c.lambda_identity > 0:
            # G_A fed a B image should leave it alone (and G_B an A image).
            terms["idt_A"] = c.lambda_B * c.lambda_identity * losses.identity_loss(self.G_A(real_B), real_B)
            terms["idt_B"] = c.lambda_A * c.lambda_identity * losses.identity_loss(self.G_B(real_A), real_A)
        if self.extra_generator_losses is not None:
            terms.update(self.extra_generator_losses(real_A, real_B, fakes))
        return terms, fakes

    def discriminator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Official D objective: 0.5 (GAN(D(real), real) + GAN(D(fake), fake)), fake detached."""
        mode = self.config.gan_mode
        loss = 0.5 * (losses.gan_loss(D(real), True, mode) + losses.gan_loss(D(fake.detach()), False, mode))
        if mode == "wgangp":
            loss = loss + losses.gradient_penalty(D, real, fake, weight=self.config.lambda_gp)
        return loss

    def train_step(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        """One official iteration: G step with both D frozen, then D step on pooled fakes.

        Returns the detached loss terms (no host sync: call ``.item()`` only when logging).
        """
        autocast = torch.autocast(real_A.device.type, dtype=torch.bfloat16, enabled=self.config.amp == "bf16")
        discriminators = (self.D_A, self.D_B)
        for p in (p for d in discriminators for p in d.parameters()):
            p.requires_grad_(False)   # G step must not build graphs into D's weights
        with autocast:
            terms, fakes = self.generator_losses(real_A, real_B)
            loss_G = sum(terms.values())
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.opt_G.step()

        for p in (p for d in discriminators for p in d.parameters()):
            p.requires_grad_(True)
        with autocast:
            loss_D_A = self.discriminator_loss(self.D_A, real_B, self.pool_B.query(fakes["fake_B"]))
            loss_D_B = self.discriminator_loss(self.D_B, real_A, self.pool_A.query(fakes["fake_A"]))
        self.opt_D.zero_grad(set_to_none=True)
        (loss_D_A + loss_D_B).backward()
        self.opt_D.step()
        out = {name: t.detach() for name, t in terms.items()}
        out.update(G=loss_G.detach(), D_A=loss_D_A.detach(), D_B=loss_D_B.detach())
        return out

    @torch.no_grad()
    def translate(self, images: torch.Tensor, direction: str = "AtoB") -> torch.Tensor:
        """Translate a batch [N, C, H, W] in [-1, 1] with G_A (``AtoB``) or G_B (``BtoA``)."""
        net = {"AtoB": self.G_A, "BtoA": self.G_B}.get(direction)
        if net is None:
            raise ValueError(f"direction must be AtoB or BtoA, got {direction!r}")
        return net(images)

    def training_state(self) -> dict:
        """Everything besides the weights that an exact resume needs."""
        return {
            "optimizers": {"G": self.opt_G.state_dict(), "D": self.opt_D.state_dict()},
            "schedulers": {"G": self.sched_G.state_dict(), "D": self.sched_D.state_dict()},
            "pools": {"A": self.pool_A.state_dict(), "B": self.pool_B.state_dict()},
        }

    def load_training_state(self, state: dict, device: torch.device) -> None:
        self.opt_G.load_state_dict(state["optimizers"]["G"])
        self.opt_D.load_state_dict(state["optimizers"]["D"])
        self.sched_G.load_state_dict(state["schedulers"]["G"])
        self.sched_D.load_state_dict(state["schedulers"]["D"])
        self.pool_A.load_state_dict(state["pools"]["A"], device)
        self.pool_B.load_state_dict(state["pools"]["B"], device)


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled indices of one epoch, a pure function of (seed, epoch), resumable mid-epoch.

    ``start`` skips the indices already consumed, so a resumed run sees exactly the
    samples an uninterrupted run would have seen.
    """

    def __init__(self, n: int, seed: int, epoch: int, start: int = 0, limit: int | None = None):
        self.n, self.seed, self.epoch, self.start = n, seed, epoch, start
        self.limit = min(n, limit) if limit else n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g)[: self.limit]
        return iter(order[self.start:].tolist())

    def __len__(self):
        return self.limit - self.start


def is_cyclegan_checkpoint(state: dict) -> bool:
    return isinstance(state, dict) and state.get("kind") == "cyclegan" and "nets" in state


def cyclegan_from_checkpoint(state: dict) -> CycleGAN:
    """A :class:`CycleGAN` (eval mode, CPU) holding the weights of a loaded cyclelib checkpoint."""
    known = {f.name for f in fields(CycleGANConfig)}
    model = CycleGAN(CycleGANConfig(**{k: v for k, v in state["config"].items() if k in known}))
    model.load_state_dict(state["nets"])
    return model.eval()


def load_cyclegan(path: str | Path, device: str | torch.device = "cpu") -> CycleGAN:
    """A :class:`CycleGAN` with the weights of the cyclelib checkpoint at ``path`` (eval mode)."""
    state = load_checkpoint(path)
    if not is_cyclegan_checkpoint(state):
        raise ValueError(f"{path} is not a cyclelib CycleGAN checkpoint; "
                         "for an official generator .pth use cyclelib.load_official")
    return cyclegan_from_checkpoint(state).to(device)


def train_cyclegan(config: CycleGANConfig, resume: bool = False, progress: bool = True,
                   extra_generator_losses=None) -> CycleGAN:
    """Train a CycleGAN as the official code does and return it.

    Writes to ``config.out``: ``checkpoint.pt`` (everything needed to resume exactly),
    ``history.csv``/``history.json`` (loss terms every ``log_every`` steps),
    ``samples/step_XXXXXX.png`` (rows: real A, G_A(A), G_B(G_A(A)), real B, G_B(B),
    G_A(G_B(B))) and ``history.png``. With ``resume=True`` it continues from
    ``out/checkpoint.pt`` where that run stopped.
    """
    c = config
    if not c.data:
        raise ValueError("no data given: set data to a folder with trainA/trainB or a digit pair like mnist5k:mnistm5k")
    if c.input_nc != c.output_nc:
        raise ValueError("cyclelib reads both domains with the same channel count: set input_nc == output_nc")
    out = Path(c.out)
    ckpt_path = out / "checkpoint.pt"
    device = pick_device(c.device)
    seed_everything(c.seed)
    data_options = dict(seed=c.seed, channels=c.input_nc)
    if _is_digit_pair(c.data):
        data_options.update(size=c.crop_size)
    else:
        data_options.update(preprocess=c.preprocess, load_size=c.load_size, crop_size=c.crop_size, flip=c.flip)
    dataset = open_unpaired(c.data, phase="train", **data_options)
    model = CycleGAN(c, extra_generator_losses).to(device)
    epoch, start, step, history = 0, 0, 0, []
    if resume:
        ckpt = load_checkpoint(ckpt_path)
        model.load_state_dict(ckpt["nets"])
        model.load_training_state(ckpt, device)
        set_rng_state(ckpt["rng"])
        epoch, start, step, history = ckpt["epoch"], ckpt["start"], ckpt["step"], ckpt["history"]
    samples = _fixed_samples(c, data_options, device)
    total_epochs = c.n_epochs + c.n_epochs_decay
    steps_per_epoch = math.ceil(min(len(dataset), c.max_dataset_size or len(dataset)) / c.batch_size)
    max_steps = c.max_steps or total_epochs * steps_per_epoch

    def save():
        save_checkpoint({
            "version": FORMAT_VERSION, "kind": "cyclegan", "config": asdict(c), "nets": model.state_dict(),
            **model.training_state(), "rng": rng_state(), "epoch": epoch, "start": start, "step": step,
            "history": history}, ckpt_path)
        _write_history(history, out)

    # A SIGTERM (e.g. a cluster preemption) ends the run at the next step boundary with a checkpoint.
    stop = {"now": False}
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True)) \
        if threading.current_thread() is threading.main_thread() else None
    bar = tqdm(total=max_steps, initial=step, disable=not progress, desc="cyclegan", unit="step")
    running: dict[str, torch.Tensor] = {}
    try:
        model.train()
        while epoch < total_epochs and step < max_steps and not stop["now"]:
            dataset.set_epoch(epoch)
            sampler = EpochSampler(len(dataset), c.seed, epoch, start * c.batch_size, c.max_dataset_size)
            loader = torch.utils.data.DataLoader(dataset, c.batch_size, sampler=sampler,
                                                 num_workers=c.num_workers, pin_memory=device.type == "cuda",
                                                 # its own generator: building a loader must not
                                                 # consume the global RNG, or a resume would differ
                                                 generator=torch.Generator().manual_seed(c.seed))
            for batch in loader:
                terms = model.train_step(batch["A"].to(device, non_blocking=True),
                                         batch["B"].to(device, non_blocking=True))
                for k, v in terms.items():
                    running[k] = running.get(k, 0) + v
                step, start = step + 1, start + 1
                bar.update()
                if step % c.log_every == 0:
                    row = {"step": step, "epoch": epoch, **{k: (v / c.log_every).item() for k, v in running.items()}}
                    history.append(row)
                    running.clear()
                    bar.set_postfix(G=f"{row['G']:.3f}", D_A=f"{row['D_A']:.3f}", D_B=f"{row['D_B']:.3f}")
                if step % c.sample_every == 0:
                    _save_samples(model, samples, out / "samples" / f"step_{step:06d}.png")
                if step % c.checkpoint_every == 0:
                    save()
                if step >= max_steps or stop["now"]:
                    break
            else:
                epoch, start = epoch + 1, 0
                model.sched_G.step()
                model.sched_D.step()
    finally:
        bar.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    save()
    _save_samples(model, samples, out / "samples" / f"step_{step:06d}.png")
    return model.eval()


def _fixed_samples(c: CycleGANConfig, data_options: dict, device, n: int = 4) -> dict[str, torch.Tensor]:
    """The same few test images (train images when there is no test split) for every sample grid."""
    try:
        ds = open_unpaired(c.data, phase="test", **data_options)
    except FileNotFoundError:
        ds = open_unpaired(c.data, phase="train", **data_options)
    ds.set_epoch(0)
    items = [ds[i] for i in range(min(n, len(ds)))]
    return {k: torch.stack([it[k] for it in items]).to(device) for k in ("A", "B")}


@torch.no_grad()
def _save_samples(model: CycleGAN, samples: dict[str, torch.Tensor], path: Path) -> None:
    was_training = model.training
    model.eval()
    a, b = samples["A"], samples["B"]
    fake_b, fake_a = model.G_A(a), model.G_B(b)
    rows = [a, fake_b, model.G_B(fake_b), b, fake_a, model.G_A(fake_a)]
    names = ["real A", "G_A(A)", "G_B(G_A(A))", "real B", "G_B(B)", "G_A(G_B(B))"]
    save_image_grid(rows, names, path)
    model.train(was_training)


def _write_history(history: list[dict], out: Path) -> None:
    if not history:
        return
    (out / "history.json").write_text(json.dumps(history, indent=1))
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(out / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    plot_history(history, out / "history.png", keys=[k for k in keys if k not in ("step", "epoch")])
