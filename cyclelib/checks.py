"""The checks of a config that need its networks: the generator's name, and image sides against
every layer of G and D. Networks are built on the meta device (no weights, no random numbers),
so the checks are cheap; :mod:`cyclelib.config` calls :func:`check_networks` when a config is
built, and imports this module (and torch) only then, so that the command line parses and
prints its help without torch.
"""
from __future__ import annotations

import torch
from torch import nn

from .names import GENERATOR_ARCHS
from .networks import build_discriminator, build_generator, fits, smallest_side

# Networks must take some image with sides up to this many pixels (networks.smallest_side's search).
LARGEST_SIDE = 4096


def check_networks(c, option: str, side: int | None, batch: int, channels: int) -> None:
    """Config ``c``'s generator name, and images ``[batch, channels, side, side]`` (``side`` is the
    option ``option``; None: image sizes not known yet) against its G and D."""
    _check_generator(c.netG, channels)
    _check_image_side(option, side, batch, channels, c)


def _check_generator(netG: str, channels: int) -> None:
    """``netG`` as the official names or their patterns (resnet_<n>blocks, unet_<size>)."""
    if netG in GENERATOR_ARCHS:
        return
    try:
        with torch.device("meta"):  # allocates no weights and draws no random numbers
            build_generator(netG, channels, channels, width=1)
    except ValueError as e:
        raise ValueError(f"netG: {e}") from None


def shape_networks(c, channels: int, discriminator: bool = True) -> dict[str, nn.Module]:
    """Config ``c``'s G (and D with ``discriminator``) on the meta device, to ask which image
    sizes they take (:func:`~cyclelib.networks.fits`): no weights, no random numbers. Keys name
    the networks and their options, for messages."""
    with torch.device("meta"):
        nets = {f"netG {c.netG} (norm {c.norm})": build_generator(c.netG, channels, channels, width=1, norm=c.norm,
                                                                 init=None)}
        if discriminator:
            layers = f" with n_layers_D {c.n_layers_D}" if c.netD == "n_layers" else ""
            nets[f"netD {c.netD}{layers} (norm {c.norm})"] = build_discriminator(
                c.netD, channels, width=1, n_layers=c.n_layers_D, norm=c.norm, init=None)
    return nets


def _check_image_side(option: str, side: int | None, batch: int, channels: int, c) -> None:
    """Images ``[batch, channels, side, side]`` (``side`` is the option ``option``) must be large
    enough for every layer of config ``c``'s G and D (checked on shapes, without weights); and,
    even with ``side`` None (image sizes not known yet), each must take some image up to
    :data:`LARGEST_SIDE`."""
    nets = shape_networks(c, channels)
    for name, net in nets.items():
        # A larger image never fails a layer a smaller one passes, and LARGEST_SIDE is a multiple of
        # every generator's: if this fails, smallest_side would search up to the limit in vain.
        if not fits(net, (batch, channels, LARGEST_SIDE, LARGEST_SIDE)):
            hint = (": each of its layers halves the image, use a smaller n_layers_D"
                    if name.startswith("netD") and c.netD == "n_layers" else "")
            raise ValueError(f"{name} takes no image with sides up to {LARGEST_SIDE} pixels{hint}")
    for name, net in nets.items():
        if side is None or fits(net, (batch, channels, side, side)):
            continue
        smallest = smallest_side(net, channels, batch, limit=LARGEST_SIDE)
        if smallest > side:
            raise ValueError(f"{option} {side} is too small for {name}: the smallest image side it takes is {smallest}")
        below = max(s for s in range(smallest, side, 4) if fits(net, (batch, channels, s, s)))
        raise ValueError(f"{option} {side} does not fit {name}: its down- and upsamplings would give back images "
                         f"of another size; {below} is the nearest side below that fits (resnet generators take "
                         f"multiples of 4, unet_<size> multiples of <size>)")
