"""A 2-D toy of the adversarial loss alone: two Gaussian mixtures, tiny MLPs, seconds on a CPU (the book's
"The adversarial loss").

Domain X and domain Y each hold ``K`` Gaussian modes; mode ``k`` of X "means the same" as mode
``k`` of Y (its content), as a digit's class does in the book's digit domains. A generator
``G: X -> Y`` trained with :func:`cyclelib.losses.gan_loss` alone only has to make the *cloud*
of its outputs look like Y; :func:`mode_mapping` measures what it did to the content: which
Y mode each X mode was sent to. A permutation of the modes, or several X modes sent to one Y
mode (collapse), is as good for the adversarial loss as the faithful mapping.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .losses import discriminator_loss, gan_loss


def ring(k: int, radius: float, phase: float = 0.0) -> torch.Tensor:
    """``k`` points evenly spaced on a circle, as a [k, 2] tensor: the centres of one domain's modes."""
    angles = phase + 2 * math.pi * torch.arange(k) / k
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)


@dataclass(frozen=True)
class Mixture:
    """An equal-weight mixture of isotropic Gaussians in the plane; mode ``k`` is centred at ``centres[k]``."""

    centres: torch.Tensor
    std: float = 0.1

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` points [n, 2] and the mode each was drawn from [n]."""
        modes = torch.randint(len(self.centres), (n,), generator=generator)
        noise = torch.randn(n, 2, generator=generator)
        return self.centres[modes] + self.std * noise, modes

    def nearest_mode(self, points: torch.Tensor) -> torch.Tensor:
        """The index of the centre nearest to each point [n]."""
        return torch.cdist(points, self.centres).argmin(dim=1)


def domains(k: int = 4) -> tuple[Mixture, Mixture]:
    """Domain X: ``k`` modes on a small circle; domain Y: ``k`` modes on a larger one, turned by
    half a step, so that no mode of Y lies where a mode of X does (an identity map is no answer)."""
    return Mixture(ring(k, 1.0)), Mixture(ring(k, 3.0, phase=math.pi / k))


def mlp(n_in: int, n_out: int, width: int = 64) -> nn.Sequential:
    """The toy's generator (2 -> 2) and discriminator (2 -> 1, a logit): two hidden ReLU layers."""
    return nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, n_out))


def train_adversarial(x_domain: Mixture, y_domain: Mixture, steps: int, seed: int = 0, mode: str = "lsgan",
                      batch_size: int = 256, lr: float = 1e-3) -> nn.Sequential:
    """Train a generator ``G: X -> Y`` with the adversarial loss alone and return it.

    Each step is CycleGAN's for one direction without cycle and identity terms: G minimises
    ``gan_loss(D(G(x)), True, mode)``, then D minimises :func:`discriminator_loss` on real ``y``
    and the detached ``G(x)`` (Adam with beta1 = 0.5, as the official code).
    """
    torch.manual_seed(seed)
    G, D = mlp(2, 2), mlp(2, 1)
    opt_G = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    data = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, _ = x_domain.sample(batch_size, data)
        y, _ = y_domain.sample(batch_size, data)
        fake = G(x)
        opt_G.zero_grad()
        gan_loss(D(fake), True, mode, for_discriminator=False).backward()
        opt_G.step()
        opt_D.zero_grad()
        discriminator_loss(D(y), D(fake.detach()), lambda p, real: gan_loss(p, real, mode)).backward()
        opt_D.step()
    return G


@torch.no_grad()
def mode_mapping(G: nn.Module, x_domain: Mixture, y_domain: Mixture, n: int = 2000,
                 seed: int = 1) -> torch.Tensor:
    """Where G sends each mode: a [K, K] matrix whose row ``i`` holds the share of X mode ``i``'s
    points that land nearest to each Y mode (each row sums to 1).

    The faithful mapping is the identity matrix; a permutation matrix keeps the modes apart but
    swaps their content; a column holding several rows' mass is a collapse.
    """
    x, modes = x_domain.sample(n, torch.Generator().manual_seed(seed))
    landed = y_domain.nearest_mode(G(x))
    k = len(x_domain.centres)
    counts = torch.zeros(k, k)
    counts.index_put_((modes, landed), torch.ones(n), accumulate=True)
    return counts / counts.sum(dim=1, keepdim=True)


def mapping_summary(mapping: torch.Tensor) -> dict[str, float | int]:
    """Three numbers of a :func:`mode_mapping` matrix: ``kept``, the share of points sent to the
    Y mode of their own index (1 for the faithful mapping, 1/K by chance); ``modes_hit``, how many
    Y modes receive at least half of some X mode (K when no modes collapse); ``one_to_one``, 1
    when each X mode goes mostly to its own, distinct Y mode (a permutation), else 0."""
    k = len(mapping)
    targets = mapping.argmax(dim=1)
    return {"kept": float(mapping.diagonal().mean()),
            "modes_hit": len({int(t) for i, t in enumerate(targets) if mapping[i, t] >= 0.5}),
            "one_to_one": int(len(set(targets.tolist())) == k and bool((mapping.max(dim=1).values >= 0.5).all()))}
