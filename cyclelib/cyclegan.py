"""CycleGAN (Zhu et al. 2017): the four networks, the full objective and one training step.

Names follow the official code: G_A = G (X -> Y), G_B = F (Y -> X),
D_A = D_Y judges domain B, D_B = D_X judges domain A. The training loop around the step
is :class:`~cyclelib.train.Trainer` (:func:`~cyclelib.cyclegan_run.train_cyclegan`); files are
:mod:`cyclelib.checkpoints`' and :mod:`cyclelib.runs`'. Terms beyond the paper's objective are plug-ins (:class:`GeneratorTerms`):
:func:`mode_seeking` here, CyCADA's semantic consistency in :mod:`cyclelib.cycada`.

The official step cited below is junyanz/pytorch-CycleGAN-and-pix2pix at commit 48ced5e,
``models/cycle_gan_model.py``.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import distributed, losses
from .config import CycleGANConfig
from .distributed import RunContext
from .names import BATCH_NORMS, DIRECTIONS
from .networks import build_discriminator, build_generator
from .pool import ImagePool
from .runtime import load_optimizer_state, pick_device, translating

# Named generator terms: (real_A, real_B, every generated image by name) -> {name: weighted loss}
Terms = Callable[[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class GeneratorTerms:
    """Generator terms beyond the paper's objective, named and already weighted: a plug-in of
    :class:`CycleGAN` (its ``extra_generator_losses``), as :func:`mode_seeking` and CyCADA's
    :func:`~cyclelib.semantic.semantic_consistency` are.

    ``terms(real_A, real_B, images)`` computes them from the real images and every generated image.
    ``images(model, real_A, real_B)`` (optional) makes the images they need besides those of
    :meth:`CycleGAN.cycle_images`, with the model's generators. It runs right after
    ``cycle_images``, in the generators' update unit: under torchrun DistributedDataParallel then
    averages the gradients that reach the generators through these images too.
    """

    terms: Terms
    images: Callable[[CycleGAN, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]] | None = None
    # whether ``terms`` reads the labels of the A images (the batch's "A_label", passed as images["A_label"])
    labels: bool = False
    # called with (real_A, label_A) after the step of G and D, e.g. to train a network the terms read
    after_step: Callable[[torch.Tensor, torch.Tensor | None], None] | None = None
    # the plug-in's own training state (e.g. the weights and optimiser of the network after_step trains), for
    # an exact resume: state_dict() returns it as a checkpoint holds it (tensors, numbers, strings, lists,
    # dicts), and every checkpoint of the run keeps it (CycleGAN.training_state); load_state_dict(state) restores
    # it on resume, given None where the checkpoint has none (written before the plug-in kept one)
    state_dict: Callable[[], dict] | None = None
    load_state_dict: Callable[[dict | None], None] | None = None


def mode_seeking(weight: float) -> GeneratorTerms:
    """The mode-seeking term (Mao et al. 2019), beyond the paper, weighted by ``weight``: G_A
    translates ``real_A`` under two known noise draws, and :func:`~cyclelib.losses.mode_seeking_loss`
    grows as the two translations draw together. :class:`CycleGAN` adds it when
    ``lambda_mode_seeking`` > 0 (a generator that takes noise: ``noise_nc`` > 0)."""

    def images(model: CycleGAN, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        twice = torch.cat([real_A, real_A])
        z = model.G_A.sample_noise(twice)  # [2N, noise_nc, 1, 1]
        ms_1, ms_2 = model.G_A(twice, z).chunk(2)
        z_1, z_2 = z.chunk(2)
        return {"ms_1": ms_1, "ms_2": ms_2, "ms_z1": z_1, "ms_z2": z_2}

    def terms(real_A: torch.Tensor, real_B: torch.Tensor, images: dict[str, torch.Tensor]) -> dict:
        return {"mode_seeking": weight * losses.mode_seeking_loss(images["ms_1"], images["ms_2"],
                                                                  images["ms_z1"], images["ms_z2"])}

    return GeneratorTerms(terms, images)


def set_requires_grad(nets: Iterable[nn.Module], requires_grad: bool) -> None:
    """Switch gradients of every parameter of ``nets`` on or off: a step of the generators freezes
    the discriminators, so that it builds no graph into their weights (the official
    ``BaseModel.set_requires_grad``, ``models/base_model.py`` lines 153-159 at commit 6da58c7)."""
    for net in nets:
        net.requires_grad_(requires_grad)


class CycleGAN(nn.Module):
    """The four networks of CycleGAN and one training step.

    ``config.implementation`` chooses how the step runs: ``reference`` as the official code (fp32,
    eager, every network call separate), ``fast`` (default) with the same losses and
    gradients through fewer, batched network calls (:meth:`cycle_images`), fused Adam and,
    on CUDA, bf16 autocast and channels_last. ``context`` (the run's :class:`~cyclelib.distributed.RunContext`;
    default: that of ``config.device``) decides the per-device choices, at construction.

    ``extra_generator_losses`` (optional) adds more named generator terms (:class:`GeneratorTerms`;
    a function alone is ``GeneratorTerms(function)``); CyCADA adds its semantic consistency loss
    this way. With ``lambda_mode_seeking`` > 0, :func:`mode_seeking` comes first.
    """

    def __init__(self, config: CycleGANConfig, extra_generator_losses: GeneratorTerms | Terms | None = None,
                 context: RunContext | None = None):
        super().__init__()
        c = self.config = config
        gen = dict(width=c.ngf, norm=c.norm, dropout=c.dropout, init=c.init, init_gain=c.init_gain)
        dis = dict(width=c.ndf, n_layers=c.n_layers_D, norm=c.norm, init=c.init, init_gain=c.init_gain)
        self.G_A = build_generator(c.netG, c.input_nc, c.output_nc, noise_nc=c.noise_nc,  # A -> B
                                   noise_injection=c.noise_injection, **gen)
        self.G_B = build_generator(c.netG, c.output_nc, c.input_nc, **gen)   # B -> A
        self.D_A = build_discriminator(c.netD, c.output_nc, **dis)           # judges B
        self.D_B = build_discriminator(c.netD, c.input_nc, **dis)            # judges A
        extra = [mode_seeking(c.lambda_mode_seeking)] if c.lambda_mode_seeking > 0 else []
        if extra_generator_losses is not None:
            extra.append(extra_generator_losses if isinstance(extra_generator_losses, GeneratorTerms)
                         else GeneratorTerms(extra_generator_losses))
        self.extra_generator_losses = tuple(extra)
        self.reads_labels = any(e.labels for e in extra)  # train_step then takes the A images' labels
        fast = c.implementation == "fast"
        # One call on a concatenated batch equals separate calls only when every layer treats
        # the samples independently: instance norm does, batch norm mixes them.
        self.grouped = fast and c.norm not in BATCH_NORMS
        context = context or RunContext(pick_device(c.device))
        # fused: one kernel updates every tensor (the reference keeps PyTorch's default Adam).
        adam = dict(lr=c.lr, betas=(c.beta1, c.beta2), fused=True if fast else None)
        self.opt_G = torch.optim.Adam([*self.G_A.parameters(), *self.G_B.parameters()], **adam)
        self.opt_D = torch.optim.Adam([*self.D_A.parameters(), *self.D_B.parameters()], **adam)
        self._start_schedules()
        self.pool_A = ImagePool(c.pool_size, seed=c.seed)      # fakes of domain A, for D_B
        self.pool_B = ImagePool(c.pool_size, seed=c.seed + 1)  # fakes of domain B, for D_A
        self.precision = context.precision(c.amp, fast)
        self.channels_last = fast and context.device.type == "cuda"
        if self.channels_last:
            self.to(memory_format=torch.channels_last)  # NHWC, the layout tensor-core convolutions read
        if c.compile:
            for net in (self.G_A, self.G_B, self.D_A, self.D_B):
                net.compile()  # in place, so state_dict keys stay the official ones
        # Each update of the step (G, then D) as one module, one forward per backward: the unit
        # DistributedDataParallel wraps (see distribute), called by generator_images and
        # discriminator_losses. A dict, not submodules, so that the state_dict keeps its
        # "G_A.model..." keys.
        self._units = {"G": _Unit(self._generator_images, G_A=self.G_A, G_B=self.G_B),
                       "D": _Unit(self._discriminator_losses, D_A=self.D_A, D_B=self.D_B)}

    def cycle_images(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generated images of the paper's objective, each [N, C, H, W]: fake_B = G_A(real_A),
        rec_A = G_B(fake_B), fake_A = G_B(real_B), rec_B = G_A(fake_A) and, with the identity
        loss, idt_A = G_A(real_B), idt_B = G_B(real_A).

        The reference path makes the six calls one by one in the official order. The fast path
        (``grouped``) gives each network every input that is ready in one call on the
        concatenated batch: G_A on [real_A; real_B], G_B on [real_B; fake_B; real_A], G_A on
        fake_A, three calls instead of six, with the same images up to float rounding.
        """
        identity = self.config.lambda_identity > 0
        if not self.grouped:
            images = {"fake_B": self.G_A(real_A)}
            _check_output_size(self.config.netG, real_A, images["fake_B"])
            images["rec_A"] = self.G_B(images["fake_B"])
            images["fake_A"] = self.G_B(real_B)
            images["rec_B"] = self.G_A(images["fake_A"])
            if identity:
                images.update(idt_A=self.G_A(real_B), idt_B=self.G_B(real_A))
        else:
            images = _grouped_call(self.G_A, {"fake_B": real_A, **({"idt_A": real_B} if identity else {})})
            _check_output_size(self.config.netG, real_A, images["fake_B"])
            images.update(_grouped_call(self.G_B, {"fake_A": real_B, "rec_A": images["fake_B"],
                                                   **({"idt_B": real_A} if identity else {})}))
            images["rec_B"] = self.G_A(images["fake_A"])
        return images

    def generator_images(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        """The images of :meth:`cycle_images` and those the extra terms ask for
        (:attr:`GeneratorTerms.images`), in one call of the generators' unit (DDP under torchrun)."""
        return self._units["G"](real_A, real_B)

    def _generator_images(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        images = self.cycle_images(real_A, real_B)
        for extra in self.extra_generator_losses:
            if extra.images is not None:
                images.update(extra.images(self, real_A, real_B))
        return images

    def generator_losses(self, real_A: torch.Tensor, real_B: torch.Tensor, label_A: torch.Tensor | None = None,
                         ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The named, weighted terms of the full objective for G_A and G_B (``backward_G``, lines
        151-178 of the official step) and those of ``extra_generator_losses``, and the images of
        :meth:`generator_images`. ``label_A``: the A images' labels, for extra terms that read them.

        .. math::
            \\mathcal{L}(G, F, D_X, D_Y) = \\mathcal{L}_{GAN}(G, D_Y, X, Y) + \\mathcal{L}_{GAN}(F, D_X, Y, X)
                + \\lambda \\mathcal{L}_{cyc}(G, F) + \\lambda_{idt} \\mathcal{L}_{identity}(G, F)
        """
        c = self.config
        images = self.generator_images(real_A, real_B)
        mode = c.gan_mode
        terms = {
            "G_A": c.lambda_gan_A * losses.gan_loss(self.D_A(images["fake_B"]), True, mode, for_discriminator=False),
            "G_B": c.lambda_gan_B * losses.gan_loss(self.D_B(images["fake_A"]), True, mode, for_discriminator=False),
            "cycle_A": c.lambda_A * losses.cycle_loss(images["rec_A"], real_A),
            "cycle_B": c.lambda_B * losses.cycle_loss(images["rec_B"], real_B),
        }
        if c.lambda_identity > 0:
            # G_A fed a B image should leave it alone (and G_B an A image).
            terms["idt_A"] = c.lambda_B * c.lambda_identity * losses.identity_loss(images["idt_A"], real_B)
            terms["idt_B"] = c.lambda_A * c.lambda_identity * losses.identity_loss(images["idt_B"], real_A)
        known = images if label_A is None else {**images, "A_label": label_A}
        for extra in self.extra_generator_losses:  # beyond the paper: mode seeking, CyCADA's semantic terms
            terms.update(extra.terms(real_A, real_B, known))
        return terms, images

    def discriminator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The objective of ``D`` (:func:`~cyclelib.losses.discriminator_loss`), fake detached
        (``backward_D_basic``, lines 119-139 of the official step).

        The fast path scores real and fake in one call on [real; fake] (see ``grouped``).
        """
        mode = self.config.gan_mode
        fake = fake.detach()
        if self.grouped and real.shape[1:] == fake.shape[1:]:  # sizes differ with preprocess none, scale_width
            pred_real, pred_fake = D(torch.cat([real, fake])).split([len(real), len(fake)])
        else:
            pred_real, pred_fake = D(real), D(fake)
        loss = losses.discriminator_loss(pred_real, pred_fake, functools.partial(losses.gan_loss, mode=mode))
        if mode == "wgangp":
            loss = loss + losses.gradient_penalty(D, real, fake, weight=self.config.lambda_gp)
        return loss

    def discriminator_losses(self, real_A: torch.Tensor, real_B: torch.Tensor, fake_A: torch.Tensor,
                             fake_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(D_A's loss: real B against fake B, D_B's loss: real A against fake A), in one call of
        the discriminators' unit (DDP under torchrun)."""
        return self._units["D"](real_A, real_B, fake_A, fake_B)

    def _discriminator_losses(self, real_A: torch.Tensor, real_B: torch.Tensor, fake_A: torch.Tensor,
                              fake_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.discriminator_loss(self.D_A, real_B, fake_B), self.discriminator_loss(self.D_B, real_A, fake_A)

    def train_step(self, real_A: torch.Tensor, real_B: torch.Tensor,
                   label_A: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One official iteration (``optimize_parameters``, lines 180-194 of the official step):
        a step of both generators with both discriminators frozen, then a step of both
        discriminators on fakes drawn from the image pools.

        Returns the detached loss terms (no host sync: call ``.item()`` only when logging).
        """
        if self.channels_last:  # the weights' layout, so convolutions need no conversions
            real_A, real_B = (x.contiguous(memory_format=torch.channels_last) for x in (real_A, real_B))
        # G_A and G_B
        set_requires_grad([self.D_A, self.D_B], False)  # the G step builds no graph into D's weights
        with self.precision.autocast():
            terms, images = self.generator_losses(real_A, real_B, label_A)
            loss_G = sum(terms.values())
        self.precision.step(loss_G, self.opt_G, self.config.clip_grad_norm)
        # D_A and D_B
        set_requires_grad([self.D_A, self.D_B], True)
        with self.precision.autocast():
            loss_D_A, loss_D_B = self.discriminator_losses(real_A, real_B, self.pool_A.query(images["fake_A"]),
                                                           self.pool_B.query(images["fake_B"]))
        self.precision.step(loss_D_A + loss_D_B, self.opt_D, self.config.clip_grad_norm)
        self.precision.update()  # once per iteration, after both optimizers (torch.amp's multi-optimizer rule)
        for extra in self.extra_generator_losses:
            if extra.after_step is not None:
                extra.after_step(real_A, label_A)
        return {**{name: t.detach() for name, t in terms.items()},
                "G": loss_G.detach(), "D_A": loss_D_A.detach(), "D_B": loss_D_B.detach()}

    def distribute(self, device: torch.device) -> None:
        """Average every update's gradients over the ranks of the process group (torchrun).

        Wraps the units in DistributedDataParallel. Each rank keeps its own image pools, of
        its own fakes, drawing from generators seeded apart from the other ranks' (after a
        resume every rank starts from rank 0's saved pools, the only ones in a checkpoint).
        """
        rank = torch.distributed.get_rank()
        self.pool_A.generator.manual_seed(self.config.seed + 2 * rank)  # rank 0: the seeds of __init__
        self.pool_B.generator.manual_seed(self.config.seed + 2 * rank + 1)
        if self.config.norm == "syncbatch":  # before wrapping: DDP must see the layers that synchronise
            self._units = {name: distributed.sync_batch_norm(unit) for name, unit in self._units.items()}
        self._units = {name: distributed.wrap(unit, device) for name, unit in self._units.items()}

    def generator(self, direction: str) -> nn.Module:
        """The generator that translates the data's domain A into its B (``AtoB``) or B into A
        (``BtoA``): G_A and G_B, or G_B and G_A for a run trained with ``direction`` BtoA, whose A is
        the data's B. So ``AtoB`` turns images like ``trainA``'s into ones like ``trainB``'s,
        whichever way the run was trained."""
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}; valid values: {', '.join(DIRECTIONS)}")
        return self.G_A if direction == self.config.direction else self.G_B

    @torch.no_grad()
    def translate(self, images: torch.Tensor, direction: str = "AtoB", amp: str = "none") -> torch.Tensor:
        """Translate a batch [N, C, H, W] in [-1, 1] from the data's domain A into B (``AtoB``) or
        back (``BtoA``), with the generator of :meth:`generator`, in fp32 unless ``amp`` asks for
        another precision (the one rule of :func:`~cyclelib.runtime.translating`)."""
        net = self.generator(direction)
        with translating(images.device, amp):
            return net(images).float()

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.opt_G, "D": self.opt_D}

    def training_state(self) -> dict:
        """Everything besides the weights that an exact resume needs, the plug-ins' states included."""
        return {
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers().items()},
            "lr_scores": list(self.lr_scores),
            "pools": {"A": self.pool_A.state_dict(), "B": self.pool_B.state_dict()},
            "scaler": self.precision.scaler.state_dict(),  # fp16 loss scale ({} when off)
            # one entry per plug-in of extra_generator_losses (kept for the run's life), None for those without state
            "generator_terms": [extra.state_dict() if extra.state_dict else None
                                for extra in self.extra_generator_losses],
        }

    def load_training_state(self, state: dict, device: torch.device | None = None) -> None:
        """Restore :meth:`training_state`; the pools' images go to ``device`` (default: the model's), the
        state of each plug-in of ``extra_generator_losses`` to its ``load_state_dict`` (:class:`GeneratorTerms`).

        What the config sets stays this model's: the optimisers' hyperparameters (lr, betas), the
        learning-rate schedule (lr_policy and its options, replayed through the saved epochs'
        scores: the rate a run with these options has at the saved epoch) and the precision, so
        that options changed for a resume apply from here on."""
        device = device or next(self.parameters()).device
        for name, optimizer in self.optimizers().items():
            load_optimizer_state(optimizer, state["optimizers"][name])
        # Checkpoints before lr_policy (linear only) kept the schedules' epoch count instead of the scores.
        scores = state["lr_scores"] if "lr_scores" in state else [None] * state["schedulers"]["G"]["last_epoch"]
        if self.config.lr_policy == "plateau" and None in scores:
            raise ValueError("this checkpoint predates the plateau policy (it keeps no epoch scores): resume it with "
                             "another lr_policy")
        self._start_schedules(scores)
        self.pool_A.load_state_dict(state["pools"]["A"], device)
        self.pool_B.load_state_dict(state["pools"]["B"], device)
        self.precision.load_state_dict(state["scaler"])
        saved = state.get("generator_terms")  # checkpoints before plug-ins kept a state have none
        for i, extra in enumerate(self.extra_generator_losses):
            if extra.load_state_dict is not None:
                extra.load_state_dict(saved[i] if saved else None)

    def end_epoch(self, score: float | None = None) -> None:
        """One step of both learning-rate schedules; ``score`` is the epoch's mean cycle loss, which
        the plateau policy minimises (see :func:`lr_schedule`)."""
        self.lr_scores.append(score)
        # A replay, or a run resumed at an epoch's last step, steps before this process's first optimizer step.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`")
            for schedule in (self.sched_G, self.sched_D):
                schedule.step(score) if self.config.lr_policy == "plateau" else schedule.step()

    def _start_schedules(self, scores: Iterable[float | None] = ()) -> None:
        """Both schedules from the config's lr at epoch 0, stepped through the finished epochs'
        ``scores``: the same steps on the same numbers as the run took, so a resumed run's rates
        are bit for bit an uninterrupted one's."""
        for optimizer in self.optimizers().values():
            for group in optimizer.param_groups:
                group["lr"] = self.config.lr
                group.pop("initial_lr", None)  # a new schedule's base is the lr set now
        self.sched_G, self.sched_D = lr_schedule(self.opt_G, self.config), lr_schedule(self.opt_D, self.config)
        self.lr_scores: list[float | None] = []  # each finished epoch's score, as end_epoch got it
        for score in scores:
            self.end_epoch(score)


def lr_schedule(optimizer: torch.optim.Optimizer, config: CycleGANConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule of ``config.lr_policy`` for ``optimizer``, stepped after every
    epoch, as the official ``get_scheduler`` builds it (junyanz/pytorch-CycleGAN-and-pix2pix
    ``models/networks.py``: lines 24-38 at commit 000f298, with the old option names niter and
    niter_decay and the linear policy called lambda; today's code names them n_epochs,
    n_epochs_decay and linear):

    - linear: today's ``1 - max(0, epoch + epoch_count - n_epochs) / (n_epochs_decay + 1)`` with
      the default ``epoch_count`` 1 (the epoch a run continued by hand starts from; cyclelib's
      resume keeps the epoch itself, so the rule has no such option);
    - step: ``StepLR(step_size=lr_decay_iters, gamma=0.1)`` (lr_decay_iters counts epochs);
    - plateau: ``ReduceLROnPlateau(mode="min", factor=0.2, threshold=0.01, patience=5)``;
    - cosine: ``CosineAnnealingLR(T_max=n_epochs, eta_min=0)``: zero after n_epochs, then back up.

    Plateau departs from the official code in the score it is stepped with: the official models
    step it with ``self.metric``, which the CycleGAN model leaves at 0 (``models/base_model.py``,
    lines 44 and 127-128 at commit 07cff55), so its rate falls x0.2 every 6 epochs whatever the
    losses do. cyclelib steps it with the epoch's mean of cycle_A + cycle_B (the score of
    ``checkpoint_best.pt``, averaged over every rank under torchrun).
    """
    c, schedules = config, torch.optim.lr_scheduler
    if c.lr_policy == "linear":
        return schedules.LambdaLR(optimizer, lambda epoch: 1.0 - max(0, epoch + 1 - c.n_epochs)
                                  / float(c.n_epochs_decay + 1))
    if c.lr_policy == "step":
        return schedules.StepLR(optimizer, step_size=c.lr_decay_iters, gamma=0.1)
    if c.lr_policy == "plateau":
        return schedules.ReduceLROnPlateau(optimizer, mode="min", factor=0.2, threshold=0.01, patience=5)
    return schedules.CosineAnnealingLR(optimizer, T_max=c.n_epochs, eta_min=0)


class _Unit(nn.Module):
    """Networks and the method of :class:`CycleGAN` that calls them, as one module.

    DistributedDataParallel averages the gradients of the parameters of the module it wraps
    and needs one forward of that module per backward; each update of the step is one unit.
    """

    def __init__(self, run: Callable, **nets: nn.Module):
        super().__init__()
        self.nets = nn.ModuleDict(nets)  # registered, so that DDP finds their parameters
        self.run = run

    def forward(self, *inputs):
        return self.run(*inputs)


def _grouped_call(net: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``net`` once on the concatenated values of ``inputs`` [N_i, C, H, W], split back under their keys."""
    if len({x.shape[1:] for x in inputs.values()}) > 1:  # A and B sizes differ (preprocess none, scale_width)
        return {key: net(x) for key, x in inputs.items()}
    out = net(torch.cat(list(inputs.values())))  # [sum N_i, C', H, W]
    return dict(zip(inputs, out.split([len(x) for x in inputs.values()])))


def _check_output_size(netG: str, real: torch.Tensor, fake: torch.Tensor) -> None:
    if fake.shape[-2:] != real.shape[-2:]:  # the L1 losses would broadcast: silently wrong
        raise ValueError(f"{netG} turns {tuple(real.shape[-2:])} images into {tuple(fake.shape[-2:])}: "
                         "image sides must be multiples of 4 (resnet) or of <size> (unet_<size>); "
                         "change crop_size, load_size or preprocess")
