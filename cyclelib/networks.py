"""The networks of CycleGAN: generators and discriminators.

They are those of the official PyTorch code (junyanz/pytorch-CycleGAN-and-pix2pix,
``models/networks.py``), rebuilt module for module so that ``state_dict()`` keys and shapes
are *identical* to the official ones (``model.1.weight``, ``model.10.conv_block.1.weight``,
``model.model.1.model.3...``, ``net.0.weight``). That is what lets
:func:`~cyclelib.weights.load_official` read the files its users have (``latest_net_G_A.pth``,
the published ``horse2zebra.pth``, ...) and :func:`~cyclelib.weights.save_official` write files
the official ``test.py`` accepts. Modules are also created in the official order, so the
same seed gives the same initial weights. This module reads and writes no files. It is a little
over 450 lines because each network family's registration and the size rule that reads it
(:func:`fits`, :func:`smallest_side`) stand beside the networks they describe.

Images are float tensors ``[N, C, H, W]`` in ``[-1, 1]``.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from .names import BATCH_NORMS, DISCRIMINATORS, GENERATORS, INIT_TYPES, NOISE_INJECTIONS, NORMS


# --------------------------------------------------------------------------------------
# Helpers shared by all CycleGAN networks
# --------------------------------------------------------------------------------------

def _norm_layer(norm: str) -> tuple[Callable[[int], nn.Module], bool]:
    """Return ``(make_norm, use_bias)`` for a norm name, as the official ``get_norm_layer``.

    - ``instance``: InstanceNorm2d without affine parameters and without running
      statistics: it normalises every image by its own mean/std, in training and in
      eval alike, so it has no state at all.
    - ``batch``: BatchNorm2d with affine parameters and running statistics.
    - ``syncbatch``: built as ``batch`` (same weights and keys); a torchrun job on GPUs converts
      its layers to SyncBatchNorm (:func:`~cyclelib.distributed.sync_batch_norm`).
    - ``none``: an identity placeholder. It keeps the module indices (and so the
      state_dict keys) the same as with a real norm.

    ``use_bias`` says whether the convolutions before a norm carry a bias. The official
    code tests ``norm_layer == InstanceNorm2d``: a bias is useless before BatchNorm
    (its mean subtraction cancels it, and its affine shift replaces it) and useful
    before the shift-free InstanceNorm. A side effect we keep on purpose, for checkpoint
    compatibility: with ``none`` those convolutions have no bias either.
    """
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False), True
    if norm in BATCH_NORMS:
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True), False
    if norm == "none":
        return (lambda channels: nn.Identity()), False
    raise ValueError(f"unknown norm {norm!r}; valid values: {', '.join(NORMS)}")


def _check_channels(x: torch.Tensor, channels: int, who: str) -> None:
    """Turn a channel mismatch into a readable error instead of a deep conv traceback."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{who} expects images of shape N x {channels} x H x W "
                         f"({channels} channels), got a tensor of shape {tuple(x.shape)}")


# --------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------

class ResnetBlock(nn.Module):
    """Residual block: ``x + conv_block(x)``, no activation after the sum.

    ``conv_block`` = ReflectionPad 1, Conv 3x3, norm, ReLU, [Dropout 0.5], ReflectionPad 1,
    Conv 3x3, norm. Reflection padding (not zeros) avoids dark borders in the output.
    Dropout, when enabled, shifts the index of the second conv from 5 to 6, exactly as
    in the official code (and in its checkpoints).
    """

    def __init__(self, dim: int, norm: str = "instance", dropout: bool = False):
        super().__init__()
        make_norm, use_bias = _norm_layer(norm)
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, bias=use_bias),
                  make_norm(dim), nn.ReLU(True)]
        if dropout:
            layers += [nn.Dropout(0.5)]
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, bias=use_bias),
                   make_norm(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)  # [N, dim, H, W]


class ResnetGenerator(nn.Module):
    """Johnson et al.'s image transformation network, CycleGAN's default generator.

    c7s1-w, d2w, d4w, ``n_blocks`` x R4w, u2w, uw, c7s1-out (w = ``width``, ngf):
    two stride-2 downsamplings, residual blocks at 1/4 resolution, two transposed-conv
    upsamplings, Tanh so that outputs are images in [-1, 1]. Height and width should
    be multiples of 4 to come back at the input size.
    """

    def __init__(self, input_nc: int = 3, output_nc: int = 3, width: int = 64, n_blocks: int = 9,
                 norm: str = "instance", dropout: bool = False):
        super().__init__()
        self.input_nc, self.output_nc = input_nc, output_nc
        make_norm, use_bias = _norm_layer(norm)
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, width, kernel_size=7, bias=use_bias),
                  make_norm(width), nn.ReLU(True)]
        for mult in (1, 2):  # downsample: width -> 2 width -> 4 width, H -> H/2 -> H/4
            layers += [nn.Conv2d(width * mult, width * mult * 2, kernel_size=3, stride=2, padding=1,
                                 bias=use_bias),
                       make_norm(width * mult * 2), nn.ReLU(True)]
        layers += [ResnetBlock(width * 4, norm, dropout) for _ in range(n_blocks)]
        for mult in (4, 2):  # upsample: 4 width -> 2 width -> width, H/4 -> H/2 -> H
            layers += [nn.ConvTranspose2d(width * mult, width * mult // 2, kernel_size=3, stride=2,
                                          padding=1, output_padding=1, bias=use_bias),
                       make_norm(width * mult // 2), nn.ReLU(True)]
        # The last conv always has a bias: no norm follows it.
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, output_nc, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_channels(x, self.input_nc, type(self).__name__)
        return self.model(x)  # [N, input_nc, H, W] -> [N, output_nc, H, W]


class UnetSkipConnectionBlock(nn.Module):
    """One level of the U-Net: ``x -> [x, up(submodule(down(x)))]`` (concatenated).

    down = LeakyReLU 0.2, Conv 4x4 stride 2, norm; up = ReLU, ConvTranspose 4x4 stride 2,
    norm. The outermost block has no activation/norm on the way down, returns
    ``up(...)`` without the skip and ends in Tanh; the innermost block (the 1x1
    bottleneck) has no norm after its down conv, because a norm over a single pixel
    would be meaningless (and fails for InstanceNorm). Dropout (pix2pix's noise
    source) goes after the up path of the middle blocks only.
    """

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False, innermost: bool = False,
                 norm: str = "instance", dropout: bool = False):
        super().__init__()
        self.outermost = outermost
        make_norm, use_bias = _norm_layer(norm)
        input_nc = outer_nc if input_nc is None else input_nc
        # Created in the official order (down conv before up conv) so that seeded
        # default initialisations consume the random stream identically.
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        downnorm = make_norm(inner_nc)
        uprelu = nn.ReLU(True)
        upnorm = make_norm(outer_nc)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1,
                                        bias=use_bias)
            layers = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            # inner_nc * 2 input channels: the submodule returns its input and its output
            # concatenated.
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1,
                                        bias=use_bias)
            layers = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if dropout:
                layers += [nn.Dropout(0.5)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)  # [N, output_nc, H, W]
        return torch.cat([x, self.model(x)], 1)  # [N, 2 * outer_nc, H, W]


class UnetGenerator(nn.Module):
    """pix2pix's U-Net: ``num_downs`` stride-2 levels with skip connections.

    Built from the inside out as in the official code, so the state_dict nests as
    ``model.model.1.model.3.model...``. Widths: w, 2w, 4w, then 8w for every deeper
    level; ``num_downs`` = 8 for unet_256 (a 256x256 image reaches 1x1 at the
    bottleneck), 7 for unet_128. Height and width must be multiples of
    ``2 ** num_downs``.
    """

    def __init__(self, input_nc: int = 3, output_nc: int = 3, num_downs: int = 8, width: int = 64,
                 norm: str = "instance", dropout: bool = False):
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"a U-Net needs num_downs >= 5 (5 fixed levels), got {num_downs}")
        self.input_nc, self.output_nc, self.num_downs = input_nc, output_nc, num_downs
        block = UnetSkipConnectionBlock(width * 8, width * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(width * 8, width * 8, submodule=block, norm=norm,
                                            dropout=dropout)
        for outer in (4, 2, 1):  # 8w -> 4w -> 2w -> w, the levels near the image
            block = UnetSkipConnectionBlock(width * outer, width * outer * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(output_nc, width, input_nc=input_nc, submodule=block,
                                             outermost=True, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_channels(x, self.input_nc, type(self).__name__)
        step = 2 ** self.num_downs
        if x.shape[2] % step or x.shape[3] % step:
            raise ValueError(f"{type(self).__name__} with {self.num_downs} downsamplings needs height "
                             f"and width divisible by {step}, got {x.shape[2]} x {x.shape[3]}")
        return self.model(x)  # [N, input_nc, H, W] -> [N, output_nc, H, W]


class NoiseInput(nn.Module):
    """A generator that also takes noise z ~ U(-1, 1)^noise_nc, one draw per image from the
    global RNG at every call. Not part of CycleGAN or CyCADA: an option beyond the papers.

    A deterministic generator maps each source image to one translation; with z, one source
    digit could become several target looks (e.g. MNIST-M's light and dark digits). How z
    enters decides whether the network can see it at all:

    - ``constant``: each z_k broadcast over the image as an extra input channel (as PixelDA
      gives its generator a noise vector). Behind an instance-norm layer this is erased
      exactly: a constant channel adds a constant to every feature map of the first conv, and
      instance norm subtracts each map's mean (the book's "Beyond the paper: the missing dark digits" measures it).
    - ``modulate``: z_k times the image, C channels per z_k ([z_1 x, ..., z_K x]): a scaled
      (for z_k < 0 inverted) copy of the image, which no normalisation removes.
    """

    def __init__(self, net: nn.Module, input_nc: int, noise_nc: int, injection: str = "constant"):
        super().__init__()
        if injection not in NOISE_INJECTIONS:
            raise ValueError(f"unknown noise injection {injection!r}; valid values: {', '.join(NOISE_INJECTIONS)}")
        self.net, self.noise_nc, self.injection = net, noise_nc, injection
        self.input_nc, self.output_nc = input_nc, net.output_nc  # the image's channels, without the noise's

    def sample_noise(self, x: torch.Tensor) -> torch.Tensor:
        """One draw of z ~ U(-1, 1) per image of ``x``: [N, noise_nc, 1, 1]."""
        return torch.rand(x.shape[0], self.noise_nc, 1, 1, device=x.device, dtype=x.dtype) * 2 - 1

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [N, input_nc, H, W] translated under noise ``z`` [N, noise_nc, 1, 1] (drawn when None)."""
        z = self.sample_noise(x) if z is None else z
        if self.injection == "constant":
            noise = z.expand(-1, -1, *x.shape[-2:])  # [N, noise_nc, H, W]
        else:
            noise = (z[:, :, None] * x[:, None]).flatten(1, 2)  # [N, noise_nc * C, H, W]
        return self.net(torch.cat([x, noise], dim=1))  # [N, output_nc, H, W]


# --------------------------------------------------------------------------------------
# Discriminators
# --------------------------------------------------------------------------------------

class NLayerDiscriminator(nn.Module):
    """PatchGAN: a fully convolutional D that scores overlapping patches, not the image.

    Conv 4x4 stride 2 (no norm) + LeakyReLU 0.2; ``n_layers - 1`` more stride-2 convs
    doubling the width (capped at 8w) with norm; one stride-1 conv with norm; a
    stride-1 conv to 1 channel (raw scores, no sigmoid: the loss decides). With
    n_layers 3 ("basic") each output sees a 70x70 patch and a 256x256 image gives a
    30x30 score map.
    """

    def __init__(self, input_nc: int = 3, width: int = 64, n_layers: int = 3, norm: str = "instance"):
        super().__init__()
        self.input_nc = input_nc
        make_norm, use_bias = _norm_layer(norm)
        layers = [nn.Conv2d(input_nc, width, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1  # the last of these keeps the resolution
            layers += [nn.Conv2d(width * prev, width * mult, kernel_size=4, stride=stride, padding=1,
                                 bias=use_bias),
                       make_norm(width * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(width * mult, 1, kernel_size=4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_channels(x, self.input_nc, type(self).__name__)
        return self.model(x)  # [N, input_nc, H, W] -> [N, 1, H', W'] patch scores


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN ("pixelGAN"): scores every pixel on its own colour, no spatial context.

    1x1 convs input_nc -> w -> LeakyReLU -> 2w -> norm -> LeakyReLU -> 1. As in the
    official code the last conv carries a bias only with instance norm.
    """

    def __init__(self, input_nc: int = 3, width: int = 64, norm: str = "instance"):
        super().__init__()
        self.input_nc = input_nc
        make_norm, use_bias = _norm_layer(norm)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, width, kernel_size=1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, width * 2, kernel_size=1, bias=use_bias), make_norm(width * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(width * 2, 1, kernel_size=1, bias=use_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_channels(x, self.input_nc, type(self).__name__)
        return self.net(x)  # [N, input_nc, H, W] -> [N, 1, H, W]


# --------------------------------------------------------------------------------------
# Building and initialising
# --------------------------------------------------------------------------------------

# How the registries' architectures (cyclelib.names) are built; ``match`` holds the name's pattern's groups.
def _resnet(match, input_nc: int, output_nc: int, width: int, norm: str, dropout: bool) -> nn.Module:
    n_blocks = int(match.group(1))
    if n_blocks < 1:
        raise GENERATORS.unknown(match.string)
    return ResnetGenerator(input_nc, output_nc, width, n_blocks, norm, dropout)


def _unet(match, input_nc: int, output_nc: int, width: int, norm: str, dropout: bool) -> nn.Module:
    size = int(match.group(1))
    num_downs = size.bit_length() - 1
    if size < 32 or size != 2 ** num_downs:
        raise GENERATORS.unknown(match.string)
    return UnetGenerator(input_nc, output_nc, num_downs, width, norm, dropout)


GENERATORS.register("resnet", build=_resnet, cls=ResnetGenerator, side_multiple=lambda net: 4)
GENERATORS.register("unet", build=_unet, cls=UnetGenerator, side_multiple=lambda net: 2 ** net.num_downs)
DISCRIMINATORS.register("basic", cls=NLayerDiscriminator,
                        build=lambda m, input_nc, width, n_layers, norm: NLayerDiscriminator(input_nc, width, 3, norm))
DISCRIMINATORS.register("n_layers", cls=NLayerDiscriminator, build=lambda m, *args: NLayerDiscriminator(*args))
DISCRIMINATORS.register("pixel", cls=PixelDiscriminator,
                        build=lambda m, input_nc, width, n_layers, norm: PixelDiscriminator(input_nc, width, norm))


def _check_init(init: str) -> None:
    if init not in INIT_TYPES:
        raise ValueError(f"unknown init {init!r}; valid values: {', '.join(INIT_TYPES)}")


def init_weights(net: nn.Module, init: str = "normal", gain: float = 0.02) -> nn.Module:
    """Re-initialise ``net`` in place exactly as the official ``init_weights``; returns ``net``.

    Conv/ConvTranspose/Linear weights: ``normal`` N(0, gain) (the CycleGAN paper's
    choice), ``xavier`` (normal, scaled by gain), ``kaiming`` (normal, fan_in; ignores
    gain, as officially) or ``orthogonal`` (scaled by gain); their biases 0.
    BatchNorm2d: weight N(1, gain), bias 0. Uses the global torch RNG, like the
    official code, so ``torch.manual_seed`` makes it reproducible.
    """
    _check_init(init)

    def init_module(m: nn.Module) -> None:
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            if init == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif init == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            elif init == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            # A BatchNorm weight is a per-channel scale: centre it on 1, not 0.
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    with torch.no_grad():
        net.apply(init_module)  # same (post-order) traversal as the official code
    return net


def build_generator(arch: str = "resnet_9blocks", input_nc: int = 3, output_nc: int = 3,
                    width: int = 64, norm: str = "instance", dropout: bool = False,
                    init: str | None = "normal", init_gain: float = 0.02, noise_nc: int = 0,
                    noise_injection: str = "constant") -> nn.Module:
    """A CycleGAN/pix2pix generator, as the official ``define_G`` (``width`` = ngf).

    ``arch``: ``resnet_<n>blocks`` (any n >= 1; official resnet_9blocks, resnet_6blocks)
    or ``unet_<size>`` (size a power of two >= 32; official unet_128, unet_256).
    CycleGAN uses resnet_9blocks, instance norm, no dropout. ``init=None`` keeps PyTorch's
    default initialisation (for a network whose weights are loaded next). ``noise_nc`` > 0
    wraps it in :class:`NoiseInput` with ``noise_injection`` (beyond the papers; 0 is the
    official generator).
    """
    if noise_nc:
        extra = noise_nc if noise_injection == "constant" else noise_nc * input_nc
        net = build_generator(arch, input_nc + extra, output_nc, width, norm, dropout, init, init_gain)
        return NoiseInput(net, input_nc, noise_nc, noise_injection)
    return _initialised(lambda: GENERATORS.build(arch, input_nc, output_nc, width, norm, dropout), init, init_gain)


def build_discriminator(arch: str = "basic", input_nc: int = 3, width: int = 64, n_layers: int = 3,
                        norm: str = "instance", init: str | None = "normal",
                        init_gain: float = 0.02) -> nn.Module:
    """A CycleGAN/pix2pix discriminator, as the official ``define_D`` (``width`` = ndf).

    ``arch``: ``basic`` (70x70 PatchGAN, n_layers 3), ``n_layers`` (PatchGAN with
    ``n_layers``) or ``pixel`` (1x1 PatchGAN). ``init=None``: as :func:`build_generator`.
    """
    return _initialised(lambda: DISCRIMINATORS.build(arch, input_nc, width, n_layers, norm), init, init_gain)


def _initialised(make: Callable[[], nn.Module], init: str | None, gain: float) -> nn.Module:
    if init is None:
        return make()
    _check_init(init)  # fail before building a large network
    return init_weights(make(), init, gain)


# --------------------------------------------------------------------------------------
# Which image sizes a network takes
# --------------------------------------------------------------------------------------

def _registered(net: nn.Module) -> tuple[nn.Module, bool]:
    """``net`` without a :class:`NoiseInput` around it, and whether it is a generator; ``ValueError``
    for a network of no family of :data:`GENERATORS` or :data:`DISCRIMINATORS` (its size rules are unknown)."""
    inner = net.net if isinstance(net, NoiseInput) else net
    if GENERATORS.of(inner):
        return inner, True
    if DISCRIMINATORS.of(inner):
        return inner, False
    raise ValueError(f"{type(inner).__name__} is no registered generator or discriminator, so which image sizes it "
                     f"takes is unknown; register it with cyclelib.names.GENERATORS.register (or DISCRIMINATORS)")


def side_multiple(generator: nn.Module) -> int:
    """What ``generator``'s input height and width must be multiples of to come back at their size
    (its family's ``side_multiple``): 4 for a ResNet (two stride-2 steps), 2 ** num_downs for a U-Net
    (256 for unet_256)."""
    net, _ = _registered(generator)
    return GENERATORS.of(net).side_multiple(net)


def fits(net: nn.Module, shape: tuple[int, ...]) -> bool:
    """Whether ``net`` takes a batch of ``shape`` [N, C, H, W] and, if it is a generator, gives
    back images of size H x W. ``net`` must be of a registered family (:data:`GENERATORS`,
    :data:`DISCRIMINATORS`, possibly inside a :class:`NoiseInput`): a ``ValueError`` otherwise,
    rather than a check skipped.

    Only shapes are computed (the meta device, the weights stay where they are), so asking is
    cheap for any size. Too small an image fails in a norm layer over a single pixel, a
    reflection pad wider than the image, or a U-Net's divisibility.
    """
    _, is_generator = _registered(net)
    meta = {name: torch.empty_like(t, device="meta") for name, t in (*net.named_parameters(), *net.named_buffers())}
    try:
        with torch.no_grad():
            out = torch.func.functional_call(net, meta, (torch.empty(shape, device="meta"),))
    except (ValueError, RuntimeError):
        return False
    return not is_generator or tuple(out.shape[-2:]) == tuple(shape[-2:])


def smallest_side(net: nn.Module, channels: int, batch: int = 1, limit: int = 4096) -> int | None:
    """The smallest multiple of 4, s, such that ``net`` takes ``[batch, channels, s, s]``
    (see :func:`fits`); None if there is none up to ``limit``."""
    return next((s for s in range(4, limit + 1, 4) if fits(net, (batch, channels, s, s))), None)
