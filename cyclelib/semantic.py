"""CyCADA's semantic consistency terms (stage 2): the generator terms that keep a translation's class, and the
release's semantic judge trained online beside the generators.

:func:`semantic_consistency` is the plug-in (:class:`~cyclelib.cyclegan.GeneratorTerms`) that
:func:`cyclelib.cycada.train_pixel` adds to CycleGAN's objective; :func:`online_judge` is the release's
classifier that those terms read when ``semantic_judge="online"``, with the hooks that train, save and
restore it.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from . import distributed, losses
from .checkpoints import load_weights
from .classifiers import freeze
from .commands import cycada_command
from .config import CyCADAConfig
from .cyclegan import GeneratorTerms
from .runtime import load_optimizer_state
from .segmentation import task_loss


def semantic_consistency(config: CyCADAConfig, f_s: nn.Module) -> GeneratorTerms:
    r"""The generator terms CyCADA adds to CycleGAN, for ``CycleGAN(extra_generator_losses=...)``.

    .. math::
        \mathcal{L}_{sem} = \lambda_{sem,A}\, \mathcal{L}_{task}(f_S, G_{S\to T}(X_S), p(f_S, X_S))
            + \lambda_{sem,B}\, \mathcal{L}_{task}(f_S, G_{T\to S}(X_T), p(f_S, X_T))

    with :math:`p(f, X) = \arg\max f(X)`. ``semantic_target="labels"`` (the release's,
    ``cycle_gan_semantic_model.py`` line 164) puts :math:`Y_S` for :math:`p(f_S, X_S)`;
    ``semantic_gate`` (the release's 1.0, lines 171-173) multiplies both terms by 0 on batches where
    :math:`\mathcal{L}_{task}(f_S, X_S, Y_S)` is above it (the release's classifier is trained online, so
    its loss falls; a frozen f_S's is low from the start). The release reads the loss of its
    classifier's previous step (and zeroes the terms before the first); the gate here reads the
    judge's loss on this batch, before its own step. ``f_s`` is frozen here (eval mode, no gradient
    to its weights): the loss may only change the generators, never move f_S towards them.
    The two terms are returned by name; the generator step sums them with CycleGAN's terms.
    """
    c, loss = config, task_loss(config)  # the task's: per pixel for segmentation
    f_s, hooks = online_judge(c, f_s) if c.semantic_judge == "online" else (freeze(f_s), {})

    def terms(real_A: torch.Tensor, real_B: torch.Tensor, fakes: dict[str, torch.Tensor]) -> dict:
        out = {}
        if c.lambda_sem_A > 0:  # S -> T keeps f_S's reading of the source image (or, the release, its label)
            out["sem_A"] = c.lambda_sem_A * (loss(f_s(fakes["fake_B"]), fakes["A_label"])
                                             if c.semantic_target == "labels" else
                                             losses.semantic_loss(f_s, real_A, fakes["fake_B"]))
        if c.lambda_sem_B > 0:  # T -> S keeps f_S's reading of the target image
            out["sem_B"] = c.lambda_sem_B * losses.semantic_loss(f_s, real_B, fakes["fake_A"])
        if c.semantic_gate is not None:  # the release's gate: the terms count once the judge reads source well
            with torch.no_grad():
                judged = loss(f_s(real_A), fakes["A_label"]).item()  # a host sync, gate only
            out = {name: term * float(judged <= c.semantic_gate) for name, term in out.items()}
        return out

    labels = c.semantic_target == "labels" or c.semantic_gate is not None or bool(hooks)
    return GeneratorTerms(terms, labels=labels, **hooks)


def online_judge(config: CyCADAConfig, judge: nn.Module) -> tuple[nn.Module, dict]:
    """The release's semantic classifier: ``judge`` (a fresh network) in train mode, and the hooks of
    :class:`~cyclelib.cyclegan.GeneratorTerms` that train it, one step after each G/D step, on real
    source images with their true labels, Adam at lr 1e-3, betas (pixel_beta1, 0.999) (jhoffman/cycada_release
    at 2fbf16b, ``cyclegan/models/cycle_gan_semantic_model.py`` lines 71, 121-125 and 193-198), and keep
    its weights and Adam state in the stage's checkpoints for an exact resume (the release saves its
    weights, line 31, but no optimiser: ``models/base_model.py`` lines 84-95). The generators' terms read
    it without gradient to its weights (the release's ``optimizer_CLS.zero_grad()``, line 197, drops
    those). Under torchrun the ranks' copies start alike (the seed) and step on their averaged gradients
    (:func:`~cyclelib.distributed.sync_replica`): one step on the whole batch, as the release's one
    ``netCLS`` under DataParallel (``networks.py`` lines 63-69). Unlike that ``netCLS`` (its own conv net,
    ``define_C``, lines 112-118), the judge is the run's task network."""
    optimizer = torch.optim.Adam(judge.parameters(), lr=1e-3, betas=(config.pixel_beta1, 0.999))
    judge.train().requires_grad_(False)

    def after_step(real_A: torch.Tensor, label_A: torch.Tensor) -> None:
        judge.requires_grad_(True)
        optimizer.zero_grad(set_to_none=True)
        task_loss(config)(judge(real_A), label_A).backward()
        distributed.sync_replica(judge)
        optimizer.step()
        judge.requires_grad_(False)

    def load_state_dict(state: dict | None) -> None:
        if state is None:
            raise ValueError(f"cannot resume the pixel stage in {Path(config.out) / 'pixel'}: its checkpoint holds no "
                             "state of the online semantic judge (it was written before cyclelib kept one); retrain "
                             f"the stage: `{cycada_command(asdict(config), ('pixel',))} --force`")
        load_weights(judge, state["weights"], "the online semantic judge's weights")
        load_optimizer_state(optimizer, state["optimizer"])

    return judge, dict(after_step=after_step, load_state_dict=load_state_dict,
                       state_dict=lambda: {"weights": judge.state_dict(), "optimizer": optimizer.state_dict()})
