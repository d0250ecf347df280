"""The command line that builds a CyCADA config again: :func:`cycada_command`, for the messages that tell
how to run, resume or retrain a stage (:mod:`cyclelib.cycada`, :mod:`cyclelib.runs`, :mod:`cyclelib.semantic`)."""
from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import fields

from .config import CyCADAConfig
from .names import SCALES
from .presets import cycada_preset


def cycada_command(options: Mapping[str, object], stages: Iterable[str]) -> str:
    """The ``cyclelib train cycada`` command that runs ``stages`` with the CyCADA options
    ``options`` (``asdict`` of a :class:`CyCADAConfig`, or a stage checkpoint's record of one):
    ``--source``, ``--target``, ``--out``, ``--scale`` and every option that differs from that
    scale's preset, so that the command builds the same config (``scale`` aside). A config whose
    scale the command line has not (``custom``), or with an option at None where its scale's
    preset has a value (None has no flag), is rendered from the gpu scale, the paper's options, or
    where that preset has a value there too (the driving scenes' gpu preset: the release's
    ``crop_size``, ``pixel_crop_size`` and ``feature_gate``), from the first scale whose preset has none."""
    defaults = {f.name: f.default for f in fields(CyCADAConfig)}
    options = {**defaults, **{k: v for k, v in options.items() if k in defaults}}
    for scale in (options["scale"], "gpu", *SCALES):
        preset = {**defaults, **cycada_preset(scale, options["task"], options["source"])} if scale in SCALES else {}
        if preset and not any(options[k] is None and preset[k] is not None for k in options):
            break
    words = ["cyclelib", "train", "cycada", "--source", options["source"], "--target", options["target"],
             "--out", str(options["out"]), "--scale", scale]
    for name, value in options.items():
        if name not in ("source", "target", "out", "scale") and value != preset[name]:
            flag = name.replace("_", "-")
            words += ([f"--{'' if value else 'no-'}{flag}"] if isinstance(value, bool) else
                      [f"--{flag}", *value] if isinstance(value, (tuple, list)) else [f"--{flag}", str(value)])
    return shlex.join([*words, "--stages", ",".join(stages)])
