"""Export one generator for use without cyclelib: ONNX, TorchScript or safetensors.

An exported generator takes and gives what the networks do (see :mod:`cyclelib.networks`):
float32 images ``[N, C, H, W]`` in ``[-1, 1]`` (``x = pixel / 127.5 - 1``; back:
``pixel = (y + 1) * 127.5``), any batch size N, and any height and width that are multiples
of the network's size multiple (4 for a ResNet generator, ``2 ** num_downs`` for a U-Net, 32
for ``unet_32``). The generator is exported in eval mode: dropout is off, BatchNorm uses its
running statistics, and the output is a pure function of the input.

A generator with noise input (:class:`~cyclelib.networks.NoiseInput`, ``noise_nc`` > 0) gets
its noise as a second input, ``noise`` ``[N, noise_nc, 1, 1]``, drawn by the caller from
U(-1, 1) as in training: a fixed zero noise would export one of its translations only, and
drawing inside the file would make the output differ on every call.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from io import BytesIO
from pathlib import Path

import torch
from torch import nn

from .checkpoints import is_checkpoint, load_checkpoint
from .cyclegan import CycleGAN
from .files import write_bytes
from .names import DIRECTIONS, EXPORT_FORMATS as FORMATS
from .networks import NoiseInput, ResnetBlock, ResnetGenerator, UnetGenerator, side_multiple
from .runs import LATEST
from .weights import cyclegan_from_checkpoint, export_safetensors, load_official

# Opset 18 (ONNX 1.13, 2022): every operator these networks use, and runtimes from
# onnxruntime 1.14 on, including onnxruntime-web and mobile builds, read it.
ONNX_OPSET = 18


def export_generator(checkpoint_or_module: nn.Module | str | os.PathLike, path: str | os.PathLike,
                     format: str = "onnx", direction: str = "AtoB", *, arch: str = "resnet_9blocks",
                     norm: str = "instance", input_nc: int = 3, output_nc: int = 3, width: int = 64,
                     dropout: bool = False, sha256: str | None = None) -> Path:
    """Write the generator of ``direction`` to ``path`` (atomically) as ``format``; returns ``path``.

    ``checkpoint_or_module``: a cyclelib ``checkpoint.pt`` or run folder (its ``checkpoint.pt``),
    an official generator file (read as :func:`~cyclelib.translate.load_generator` reads it, with
    ``arch``, ``norm``, ``input_nc``, ``output_nc``, ``width``, ``dropout`` and ``sha256`` as there), a
    :class:`~cyclelib.cyclegan.CycleGAN` or a generator module (left as it is: a copy is
    exported). ``direction`` picks the generator of a CycleGAN; an official file or a
    generator module holds one, and ``direction`` is then not recorded.

    Formats (the module docstring says what goes in and out):

    - ``onnx``: dynamic batch, height and width, opset :data:`ONNX_OPSET`, inputs ``image``
      (and ``noise``), output ``translated``, and metadata (``metadata_props``) saying the
      cyclelib version, direction, arch, channels, ranges, layout and size multiple. Made by
      ``torch.onnx.export(dynamo=True)``, PyTorch's default exporter since 2.9 (the
      TorchScript-based one, ``dynamo=False``, warns that it is legacy): it needs the ``onnx``
      and ``onnxscript`` packages (``pip install 'cyclelib[export]'``). Run it with
      onnxruntime: measured against PyTorch in fp32, the outputs differ by less than 1e-5.
    - ``torchscript``: ``torch.jit.trace``, which keeps batch, height and width dynamic for
      these convolutional networks (tested: ReflectionPad, the U-Net's skip connections,
      the noise input), with the same metadata as ``cyclelib.json`` in the file's extra files.
      Load it with ``torch.jit.load``; it gives PyTorch's outputs exactly. The input checks
      of the Python modules (channels, a U-Net's multiple) are not in the trace. PyTorch 2.14
      deprecates TorchScript: prefer ONNX for new uses.
    - ``safetensors``: the generator's weights under the official key names, by
      :func:`~cyclelib.weights.export_safetensors`; :func:`~cyclelib.translate.load_generator` and
      :func:`~cyclelib.weights.load_official` read it back (a noise generator's keys carry ``net.``).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; valid values: {', '.join(FORMATS)}")
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; valid values: {', '.join(DIRECTIONS)}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"the output {path} is a folder; give the file to write, e.g. "
                         f"{path / ('generator.' + format)}")
    generator, recorded_direction = _generator(checkpoint_or_module, direction, sha256, dict(
        arch=arch, norm=norm, input_nc=input_nc, output_nc=output_nc, width=width, dropout=dropout))
    if format == "safetensors":
        return export_safetensors(generator, path)
    generator = copy.deepcopy(generator).cpu().eval()
    metadata = _metadata(generator, recorded_direction)
    data = _onnx_bytes(generator, metadata) if format == "onnx" else _torchscript_bytes(generator, metadata)
    return write_bytes(path, data)


def _metadata(generator: nn.Module, direction: str | None = None) -> dict[str, str]:
    """The metadata an exported file carries: what a user of the file needs to feed it."""
    inner = generator.net if isinstance(generator, NoiseInput) else generator
    if isinstance(inner, UnetGenerator):
        arch = f"unet_{2 ** inner.num_downs}"
    else:
        arch = f"resnet_{sum(isinstance(m, ResnetBlock) for m in inner.modules())}blocks"
    from . import __version__  # the package imports this module: read the version at call time
    metadata = {"cyclelib_version": __version__, "arch": arch, "layout": "NCHW float32",
                "input_channels": str(generator.input_nc), "output_channels": str(generator.output_nc),
                "input_range": "[-1, 1]: x = pixel / 127.5 - 1",
                "output_range": "[-1, 1] (tanh): pixel = (y + 1) * 127.5",
                "size_multiple": str(side_multiple(generator))}
    if direction is not None:
        metadata["direction"] = direction
    if isinstance(generator, NoiseInput):
        metadata["noise"] = (f"input 'noise' [N, {generator.noise_nc}, 1, 1] drawn from U(-1, 1), "
                             f"injection {generator.injection}")
    return metadata


def _generator(source: nn.Module | str | os.PathLike, direction: str, sha256: str | None,
               official: dict) -> tuple[nn.Module, str | None]:
    """The generator to export, and its direction where the source has two."""
    if isinstance(source, CycleGAN):
        return source.generator(direction), direction
    if isinstance(source, (ResnetGenerator, UnetGenerator, NoiseInput)):
        return source, None
    if isinstance(source, nn.Module):
        raise ValueError(f"export_generator exports a CycleGAN or one of its generators (ResnetGenerator, "
                         f"UnetGenerator, NoiseInput); got a {type(source).__name__}")
    path = Path(source)
    if path.is_dir():  # a run folder: its latest checkpoint
        path = path / LATEST
    state = load_checkpoint(path, sha256)
    if is_checkpoint(state, "cyclegan"):
        return cyclegan_from_checkpoint(state, str(path)).generator(direction), direction
    if is_checkpoint(state):
        raise ValueError(f"{path} is a cyclelib {state['kind']} checkpoint, not a CycleGAN one: only CycleGAN "
                         f"generators can be exported")
    return load_official(state, "G", **official, source=str(path)).eval(), None


def _example(generator: nn.Module) -> tuple[torch.Tensor, ...]:
    """Example inputs for export: 2 images of twice the size multiple (torch.export would fix a
    size of 1 as a constant), and their noise."""
    side = 2 * side_multiple(generator)
    x = torch.zeros(2, generator.input_nc, side, side)
    return (x, torch.zeros(2, generator.noise_nc, 1, 1)) if isinstance(generator, NoiseInput) else (x,)


def _onnx_bytes(generator: nn.Module, metadata: dict[str, str]) -> bytes:
    try:
        import onnx
        import onnxscript  # noqa: F401 - torch.onnx.export(dynamo=True) imports it; fail here, clearly
    except ImportError as e:
        raise ImportError(f"ONNX export needs the onnx and onnxscript packages ({e}): pip install "
                          "'cyclelib[export]'") from None
    multiple = side_multiple(generator)
    batch = torch.export.Dim("batch")
    # Height and width as multiples, so that the graph holds for every size the network takes.
    height, width = (torch.export.Dim(f"{side}_div{multiple}") * multiple for side in ("height", "width"))
    shapes = {"x": {0: batch, 2: height, 3: width}}
    names = ["image"]
    if isinstance(generator, NoiseInput):
        shapes["z"], names = {0: batch}, ["image", "noise"]
    with warnings.catch_warnings():
        # The noise's batch axis is the image's: the exporter says it keeps one name for both.
        warnings.filterwarnings("ignore", "# The axis name: batch will not be used", UserWarning)
        program = torch.onnx.export(generator, _example(generator), dynamo=True, opset_version=ONNX_OPSET,
                                    input_names=names, output_names=["translated"], dynamic_shapes=shapes,
                                    verbose=False)
    model = program.model_proto
    onnx.helper.set_model_props(model, metadata)
    return model.SerializeToString()


def _torchscript_bytes(generator: nn.Module, metadata: dict[str, str]) -> bytes:
    with warnings.catch_warnings():
        # The modules' input checks compare sizes in Python: the trace keeps their outcome for
        # the example (TracerWarning), not the check; and torch 2.14 deprecates torch.jit.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(generator, _example(generator))
        buffer = BytesIO()
        torch.jit.save(traced, buffer, _extra_files={"cyclelib.json": json.dumps(metadata)})
    return buffer.getvalue()
