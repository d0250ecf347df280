"""Translating one image of any size: padded to the generator's multiple (:func:`translate_image`), or, too
large to go through a generator at once, in overlapping tiles (:func:`translate_tiled`).

A ResNet generator at ngf 64 holds about 1 KB of activations per pixel while it translates
(measured: peak RSS of a CPU forward pass of resnet_9blocks, ngf 64, fp32: +235 MB at 512x512,
+2.5 GB at 2000x1500, 0.85-0.94 KB/pixel; the 64-channel full-resolution maps of the first and
last layers dominate), so a 1024x1024 image needs about 1 GB and a 4000x3000 photo about 11 GB.
Cut into overlapping tiles, only a few tiles are on the device at a time and the output is
assembled on the CPU: benchmarks/tile_memory.py measured a 4000x3000 image in tiles of 512
(overlap 64, 4 at a time) at 2.0 GB peak RSS, against 3.4 GB for a whole 2000x1500 one.

Instance normalisation makes a tile's translation differ from the whole image's: each tile is
normalised by the mean and variance of its own content, not the image's, and near its edges a
tile sees reflection padding instead of its neighbours. The overlap hides the edges: neighbouring
tiles are blended with raised-cosine weights that fall to nearly zero at each tile's edge, so no
tile's border reaches the output as a step (tests/test_tiles.py bounds the gradient across tile
borders). What the overlap cannot undo is the tiles' different statistics, a colour drift
from tile to tile; so by default every tile is normalised with the statistics of the whole
image, computed on a copy downscaled to one tile's pixels. Measured on scikit-learn's 427x640
photo with a resnet_2blocks (width 8) fitted briefly to a colour change, tile 128, overlap 32:
the tiled output differs from the whole image's by a mean of 0.19 (max 1.17) on the [-1, 1]
scale with each tile's own statistics, 0.027 (max 0.62) with the image's; with tile 512 (two
tiles) 0.017 and 0.004. (An untrained generator is no guide: its random filters make it so
sensitive that tiled and whole differ by 0.15-0.2 with either statistics.)
"""
from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .networks import NoiseInput, fits, side_multiple, smallest_side

# needs_tiling's default budget: 1024 x 1024 pixels, about 1 GB of activations through a
# resnet_9blocks at ngf 64 in fp32 (the module docstring's measurement).
DEFAULT_BUDGET = 1024 * 1024


def _mirror(side: int, total: int, before: int) -> torch.Tensor:
    """Indices into a side of ``side`` pixels that extend it to ``total``, ``before`` of them in
    front: mirrored without repeating the edge, as ``ReflectionPad2d`` pads (and mirrored again
    where the padding is wider than the side, which ReflectionPad2d refuses)."""
    index = torch.arange(total) - before
    if side == 1:
        return torch.zeros(total, dtype=torch.long)
    period = 2 * (side - 1)
    index = index % period
    return torch.where(index < side, index, period - index)


def too_small(name: str, size: tuple[int, int], padded: tuple[int, int], generator: nn.Module) -> str:
    (h, w), (ph, pw), smallest = size, padded, smallest_side(generator, generator.input_nc)
    return (f"{name} is {w}x{h} pixels ({pw}x{ph} padded to a multiple of {side_multiple(generator)}), too small "
            f"for this generator, whose smallest side is {smallest}: resize with --size {smallest} "
            f"(size={smallest}) or leave the image out")


def padded_size(size: tuple[int, int], generator: nn.Module) -> tuple[int, int]:
    m = side_multiple(generator)
    return tuple(-(-side // m) * m for side in size)


@torch.no_grad()
def translate_image(generator: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """``generator`` applied to ``image`` [N, C, H, W] in [-1, 1]: [N, C_out, H, W], at the input's size.

    The image is padded by reflection (as the ResNet generators pad inside) equally on all sides
    to the generator's multiple (:func:`side_multiple`), translated, and the padding cropped off:
    any size and aspect ratio comes back as it went in, not rounded. An image too small for
    the generator even padded is a ``ValueError`` naming its size and the smallest side it takes.
    """
    size = tuple(image.shape[-2:])
    (h, w), (ph, pw) = size, padded_size(size, generator)
    top, left = (ph - h) // 2, (pw - w) // 2
    padded = image
    if (ph, pw) != (h, w):
        rows, cols = _mirror(h, ph, top).to(image.device), _mirror(w, pw, left).to(image.device)
        padded = image.index_select(-2, rows).index_select(-1, cols)
    try:
        out = generator(padded)
    except (RuntimeError, ValueError):
        if fits(generator, tuple(padded.shape)):
            raise  # something else went wrong (out of memory, wrong channels): its own message says what
        raise ValueError(too_small("the image", size, (ph, pw), generator)) from None
    return out[..., top:top + h, left:left + w]


def needs_tiling(shape: tuple[int, ...], budget: int = DEFAULT_BUDGET) -> bool:
    """Whether an image of ``shape`` ``[..., H, W]`` has more than ``budget`` pixels, and so
    should be translated with :func:`translate_tiled`.

    The default, 1024 x 1024 pixels, keeps the activations of a resnet_9blocks generator at
    ngf 64 in fp32 near 1 GB (about 0.94 KB per pixel, measured on the CPU); the memory a
    generator needs grows with its pixels and its width (ngf), so scale the budget by
    64 / ngf for other widths.
    """
    if budget < 1:
        raise ValueError(f"the tiling budget must be >= 1 pixel, got {budget}")
    return shape[-2] * shape[-1] > budget


@torch.no_grad()
def translate_tiled(generator: nn.Module, image: torch.Tensor, tile: int = 512, overlap: int = 64,
                    batch_size: int = 4, device: str | torch.device | None = None,
                    image_statistics: bool = True) -> torch.Tensor:
    """``image`` ``[1, C, H, W]`` translated by ``generator`` in overlapping ``tile`` x ``tile``
    tiles, blended where they overlap; returns ``[1, C_out, H, W]`` float32 on the CPU.

    Along each side longer than ``tile`` the tiles are spread evenly so that neighbours share
    at least ``overlap`` pixels; a side no longer than ``tile`` is one tile, reflect-padded to
    the generator's multiple (:func:`side_multiple`) and cropped back, so an image that fits in
    one tile comes back as the generator's direct translation. In each overlap the two tiles are
    weighted by raised-cosine ramps summing to 1, and the sum of all weights is divided out
    everywhere, so the output is a convex blend of the tiles' outputs. Up to ``batch_size``
    tiles at a time go to ``device`` (default: where the generator's weights are); the output is
    accumulated on the CPU in float32. A noise generator (:class:`~cyclelib.networks.NoiseInput`) draws its noise
    once for the whole image. ``image_statistics`` (when there is more than one tile): every
    instance-norm layer normalises every tile with the mean and variance it computes on the
    whole image downscaled to one tile's pixels, instead of the tile's own (see the module
    docstring for what each choice costs). ``tile`` must be positive, a multiple of the
    generator's multiple and large enough for it, and ``0 <= overlap < tile``; otherwise
    ``ValueError`` naming the option.
    """
    multiple = side_multiple(generator)
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != generator.input_nc:
        raise ValueError(f"translate_tiled takes one image [1, {generator.input_nc}, H, W], "
                         f"got a tensor of shape {list(image.shape)}")
    if tile < 1 or tile % multiple:
        raise ValueError(f"tile must be a positive multiple of {multiple} (what this generator's "
                         f"down- and upsamplings give back at their size), got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be >= 0 and smaller than the tile ({tile}), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    height, width = image.shape[-2:]
    rows, cols = _spans(height, tile, overlap, multiple), _spans(width, tile, overlap, multiple)
    tile_h, tile_w = rows.size, cols.size
    if not fits(generator, (1, image.shape[1], tile_h, tile_w)):
        raise ValueError(f"a {tile_w}x{tile_h} tile of this {width}x{height} image is too small for this "
                         f"generator, whose smallest side is {smallest_side(generator, image.shape[1])}: "
                         f"raise tile, or resize the image")
    weight = next(generator.parameters(), None)
    dev = torch.device(device if device is not None else weight.device if weight is not None else "cpu")
    noise = generator.sample_noise(image).to(dev) if isinstance(generator, NoiseInput) else None

    def run(batch: torch.Tensor) -> torch.Tensor:  # a noise generator's noise is drawn once per image
        batch = batch.to(dev)
        return generator(batch) if noise is None else generator(batch, noise.expand(len(batch), -1, -1, -1))

    shared = image_statistics and len(rows.starts) * len(cols.starts) > 1
    with _image_statistics(generator, run, _shrunk(generator, image, tile_h * tile_w)) if shared else nullcontext():
        out = _blend(run, _pad(image, rows.padded - height, cols.padded - width), rows, cols, batch_size)
    return out[None, :, :height, :width]


def _blend(run: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, rows: _Spans, cols: _Spans,
           batch_size: int) -> torch.Tensor:
    """The tiles' translations by ``run``, weighted and summed on the CPU, divided by the sum of the weights."""
    tile_h, tile_w = rows.size, cols.size
    out = None  # [C_out, H', W'] float32 on the CPU, made when the first tile tells C_out
    grid = [(top, wy, left, wx) for top, wy in zip(rows.starts, rows.weights)
            for left, wx in zip(cols.starts, cols.weights)]
    for i in range(0, len(grid), batch_size):
        chunk = grid[i:i + batch_size]
        batch = torch.cat([image[:, :, top:top + tile_h, left:left + tile_w] for top, _, left, _ in chunk])
        results = run(batch).float().cpu()  # [B, C_out, tile_h, tile_w]
        if out is None:
            out = torch.zeros(results.shape[1], rows.padded, cols.padded)
        for (top, wy, left, wx), result in zip(chunk, results):
            out[:, top:top + tile_h, left:left + tile_w] += result * (wy[:, None] * wx[None, :])
    # The tiles form a grid and each weight is a product, so their sum is the product of the sums.
    return out / (rows.weight_sum[:, None] * cols.weight_sum[None, :])


def _shrunk(generator: nn.Module, image: torch.Tensor, pixels: int) -> torch.Tensor:
    """``image`` downscaled (area averages) to about ``pixels`` pixels, its sides multiples of the
    generator's and no smaller than it takes."""
    multiple, scale = side_multiple(generator), math.sqrt(pixels / (image.shape[-2] * image.shape[-1]))
    least = smallest_side(generator, image.shape[1]) or multiple
    height, width = (max(least, round(side * scale / multiple) * multiple) for side in image.shape[-2:])
    return F.interpolate(image, size=(height, width), mode="area")


@contextmanager
def _image_statistics(generator: nn.Module, run: Callable[[torch.Tensor], torch.Tensor],
                      small: torch.Tensor) -> Iterator[None]:
    """Within it, ``generator``'s instance-norm layers normalise with the statistics they computed
    on ``small`` (one pass of ``run``), whatever they are given."""
    norms = [m for m in generator.modules() if isinstance(m, nn.InstanceNorm2d) and not m.track_running_stats]
    stats = {}

    def record(norm, inputs):
        stats[norm] = (inputs[0].mean((2, 3), keepdim=True), inputs[0].var((2, 3), keepdim=True, unbiased=False))

    def normalise(norm, inputs, output):  # the layer's output recomputed with the recorded statistics
        mean, var = stats[norm]
        x = (inputs[0] - mean) * torch.rsqrt(var + norm.eps)
        return x * norm.weight[:, None, None] + norm.bias[:, None, None] if norm.affine else x

    hooks = [m.register_forward_pre_hook(record) for m in norms]
    try:
        run(small)
        for hook in hooks:
            hook.remove()
        hooks = [m.register_forward_hook(normalise) for m in norms]
        yield
    finally:
        for hook in hooks:
            hook.remove()


class _Spans:
    """The tiles along one side: the padded length, each tile's start, its length ``size``,
    its 1-D blending weights, and their sum over the padded length."""

    def __init__(self, padded: int, starts: list[int], size: int):
        self.padded, self.starts, self.size = padded, starts, size
        self.weights = [_window(size, _shared(starts, size, k - 1, k), _shared(starts, size, k, k + 1))
                        for k in range(len(starts))]
        self.weight_sum = torch.zeros(padded)
        for start, weight in zip(starts, self.weights):
            self.weight_sum[start:start + size] += weight


def _spans(length: int, tile: int, overlap: int, multiple: int) -> _Spans:
    if length <= tile:  # one tile, padded to the generator's multiple
        size = math.ceil(length / multiple) * multiple
        return _Spans(size, [0], size)
    count = math.ceil((length - overlap) / (tile - overlap))
    return _Spans(length, [round(k * (length - tile) / (count - 1)) for k in range(count)], tile)


def _shared(starts: list[int], size: int, a: int, b: int) -> int:
    """How many pixels tiles ``a`` and ``b`` share (0 when either does not exist)."""
    return max(0, starts[a] + size - starts[b]) if 0 <= a and b < len(starts) else 0


def _window(size: int, before: int, after: int) -> torch.Tensor:
    """A tile's weights along one side: 1, rising over the ``before`` pixels it shares with the
    previous tile and falling over the ``after`` it shares with the next, as sin^2 and cos^2 of
    the same angle, so the two tiles' weights in an overlap sum to 1 and reach nearly 0 at each
    tile's edge (no step where a tile begins)."""
    weight = torch.ones(size)
    for shared, flip in ((before, False), (after, True)):
        if shared:
            ramp = torch.sin((torch.arange(shared) + 0.5) / shared * math.pi / 2) ** 2
            ramp = ramp.flip(0) if flip else ramp
            part = weight[size - shared:] if flip else weight[:shared]
            torch.minimum(part, ramp, out=part)  # overlaps wider than half a tile meet in the middle
    return weight


def _pad(image: torch.Tensor, bottom: int, right: int) -> torch.Tensor:
    """``image`` padded by ``bottom`` rows and ``right`` columns, mirrored (as the generators pad)
    where the image is larger than the pad, repeated otherwise."""
    if not bottom and not right:
        return image
    mode = "reflect" if bottom < image.shape[-2] and right < image.shape[-1] else "replicate"
    return F.pad(image, (0, right, 0, bottom), mode=mode)
