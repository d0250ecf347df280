"""The command line's options of a config dataclass, read from its fields' metadata (see
:mod:`cyclelib.config`): one ``--flag`` per field with its one-line help, its choices, the default
that will be used (the paper's, and each scale preset's where it differs), "required" where it is,
and the official CycleGAN code's spelling of the option as an alias. Official options that mean
something else here, or have no equivalent, are refused with the option to use instead. No torch:
``cyclelib --help`` answers before any heavy import.
"""
from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import Field, fields

from .config import choices
from .names import AMP_MODES, DISCRIMINATOR_ARCHS, GENERATORS, SCALES, Registry

# Options of the official code (options/base_options.py and train_options.py of
# junyanz/pytorch-CycleGAN-and-pix2pix) that mean something else in cyclelib or have no equivalent,
# with what to use instead. Those that mean the same are the fields' metadata "official" (aliases).
_RUN_FOLDER = "did you mean --out? it is the run folder (official: checkpoints_dir/name)"
_RESUME = ("did you mean --resume DIR? it continues the run in DIR exactly where it stopped (--from-step N: from "
           "its checkpoint of step N), learning-rate schedule included")
_VISDOM = "did you mean --tensorboard or --wandb? there is no visdom display; sample grids go to out/samples"
OFFICIAL_ELSEWHERE = {
    "max_dataset_size": "did you mean --max-dataset-size? it is the samples per epoch, drawn anew each epoch "
                        "(official: the first N files)",
    "name": _RUN_FOLDER, "checkpoints_dir": _RUN_FOLDER, "suffix": _RUN_FOLDER,
    "gpu_ids": "did you mean --device? e.g. cpu, cuda, cuda:1 (several GPUs: torchrun)",
    "continue_train": _RESUME, "epoch_count": _RESUME, "epoch": _RESUME, "load_iter": _RESUME,
    "print_freq": "did you mean --log-every? it counts steps, not images",
    "display_freq": "did you mean --sample-every? it counts steps, not images",
    "update_html_freq": "did you mean --sample-every? it counts steps, not images",
    "save_latest_freq": "did you mean --checkpoint-every? it counts steps, not images",
    "save_epoch_freq": "did you mean --checkpoint-every? it counts steps (and --keep-checkpoints how many stay)",
    "save_by_iter": "did you mean --keep-checkpoints? step checkpoints are always named by step",
    "model": "did you mean `cyclelib train cyclegan` or `cyclelib train cycada`? the command names the model",
    "dataset_mode": "did you mean --data? it reads unaligned folders (trainA/, trainB/) or digit pairs",
    "phase": "no equivalent: training reads trainA/ and trainB/ (`cyclelib test --phase` picks a test split)",
    "display_id": _VISDOM, "display_server": _VISDOM, "display_env": _VISDOM, "display_port": _VISDOM,
    "display_ncols": _VISDOM, "display_winsize": _VISDOM, "no_html": _VISDOM,
    "verbose": "no equivalent: the run prints its options once when it starts",
    "dlib_path": "no equivalent",
}


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1 (the message names the option, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def one_of(names) -> str:
    """The metavar of an option that takes one of ``names``, as argparse writes choices: {a,b,c}. (The
    names are checked by the configs, with the one wording "valid values: ...".)"""
    return "{" + ",".join(names) + "}"


def choice(what: str, names) -> dict:
    """The ``add_argument`` keywords of an option that takes one of ``names``: shown as {a,b,c} and
    checked with the one wording of an invalid choice, "unknown <what> ...; valid values: ..."
    (argparse's own ``choices`` words it otherwise)."""
    names = tuple(names)

    def check(value: str) -> str:
        if value not in names:
            raise argparse.ArgumentTypeError(f"unknown {what} {value!r}; valid values: {', '.join(names)}")
        return value

    return dict(type=check, metavar=one_of(names))


def _text(value, none: str | None = None) -> str:
    if value is None:
        return none or "none"
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def _preset_notes(name: str, default, presets: Mapping[str, Mapping]) -> str:
    """Where scale presets set option ``name`` to another value than ``default``, e.g. "smoke preset 8,
    cpu preset 32", scales with the same value together; ``presets`` maps a scale to its options, or
    to such maps by kind of data (CycleGAN's digits and images)."""
    scales = {}
    for scale in SCALES:
        preset = presets.get(scale, {})
        kinds = preset if preset and all(isinstance(v, Mapping) for v in preset.values()) else {"": preset}
        values = {kind: options[name] for kind, options in kinds.items() if options.get(name, default) != default}
        if len(values) == len(kinds) and len({_text(v) for v in values.values()}) == 1:
            scales.setdefault(_text(next(iter(values.values()))), []).append(scale)
        elif values:
            by_value = {}  # the kinds that share a value named together
            for kind, value in values.items():
                by_value.setdefault(_text(value), []).append(kind)
            scales.setdefault(" / ".join(f"{v} ({', '.join(k)})" for v, k in by_value.items()), []).append(scale)
    return ", ".join(f"{'/'.join(names)} preset{'s' if len(names) > 1 else ''} {value}"
                     for value, names in scales.items())


def option_help(option: Field, presets: Mapping[str, Mapping]) -> str:
    """The help line of a config field: what it is, the names it takes (when they are a pattern),
    and "required" or the default that will be used, per scale preset where one sets it."""
    meta = option.metadata
    parts = [meta["help"]]
    valid = choices(option)
    if isinstance(valid, Registry):
        parts.append(f"valid values: {valid.help()}")
    if "required" in meta:
        parts.append(meta["required"])
    else:
        notes = _preset_notes(option.name, option.default, presets)
        parts.append(f"default: {_text(option.default, meta.get('none'))}" + (f"; {notes}" if notes else ""))
    if meta.get("on_resume") == "refuse":
        parts.append("fixed on --resume")
    official = [name for name in meta.get("official", ()) if f"--{name}" != flag(option.name)]
    if official:
        parts.append("official: " + ", ".join(f"--{name}" for name in official))
    return "; ".join(parts).replace("%", "%%")  # argparse formats help with %


def _kind(cls, option: Field) -> type:
    kind = typing.get_type_hints(cls)[option.name]
    if isinstance(kind, types.UnionType):  # "int | None" -> int
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    return kind


def add_config_options(parser: argparse.ArgumentParser, cls, presets: Mapping[str, Mapping] = {},
                       skip: tuple[str, ...] = ()) -> None:
    """Add one ``--option`` per field of dataclass ``cls`` (default None: "not given"), with the help
    of :func:`option_help`, and the official code's spelling of each (metadata ``official``) as an
    alias that sets the same field (``--no_flip`` sets flip off), and each former name of an option
    (metadata ``renamed_from``, e.g. ``--path`` for ``--implementation``) as a deprecated alias."""
    for option in fields(cls):
        if option.name in skip:
            continue
        kind, help = _kind(cls, option), option_help(option, presets)
        if kind is bool:
            parser.add_argument(flag(option.name), action=argparse.BooleanOptionalAction, default=None, help=help)
        elif typing.get_origin(kind) is tuple:  # several values after one flag, e.g. --stage-weights A=x B=y
            parser.add_argument(flag(option.name), nargs="+", default=None, metavar=option.metadata["metavar"],
                                help=help)
        else:
            valid = choices(option)
            metavar = one_of(valid) if isinstance(valid, tuple) else kind.__name__.upper()
            parser.add_argument(flag(option.name), type=kind, default=None, metavar=metavar, help=help)
        for official in option.metadata.get("official", ()):
            alias = dict(dest=option.name, default=None, help=argparse.SUPPRESS)
            if kind is bool:  # the official flags take no value: --no_flip sets flip off, --use_wandb wandb on
                action = "store_false" if official.startswith("no_") else "store_true"
                parser.add_argument(f"--{official}", action=action, **alias)
            elif f"--{official}" != flag(option.name):
                parser.add_argument(f"--{official}", type=kind, **alias)
        for old in option.metadata.get("renamed_from", ()):  # deprecated: takes a value, says the new name
            parser.add_argument(flag(old), dest=option.name, type=kind, default=None, action=_Renamed,
                                help=argparse.SUPPRESS)


class _Renamed(argparse.Action):
    """A former name of an option: sets the option, with a one-line note of its name now."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"cyclelib: note: {option_string} is deprecated; use {flag(self.dest)}", file=sys.stderr)
        setattr(namespace, self.dest, values)


class _Elsewhere(argparse.Action):
    """An official option that means something else here: a usage error saying what to use."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.exit(2, f"cyclelib: error: {option_string} is an option of the official code; "
                       f"{OFFICIAL_ELSEWHERE[option_string[2:]]}\n")


def refuse_official_options(parser: argparse.ArgumentParser) -> None:
    """Make each option of :data:`OFFICIAL_ELSEWHERE` a usage error (exit 2) that names the option to use."""
    for name in OFFICIAL_ELSEWHERE:
        parser.add_argument(f"--{name}", nargs="?", action=_Elsewhere, default=None, help=argparse.SUPPRESS)


def add_arch_argument(parser, what: str) -> None:
    """``--arch``: a generator architecture (the official one by default), ``what`` says whose."""
    parser.add_argument("--arch", default="resnet_9blocks", metavar="ARCH",
                        help=f"{what}; valid values: {GENERATORS.help()}; default: resnet_9blocks")


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``cyclelib bench`` (and ``benchmarks/bench_cyclegan.py``)."""
    add_arch_argument(parser, "the generator (netG)")
    parser.add_argument("--netD", default="basic", metavar=one_of(DISCRIMINATOR_ARCHS),
                        help="the discriminator; default: basic (70x70 PatchGAN)")
    parser.add_argument("--ngf", type=int, default=64, help="generator width; default: 64")
    parser.add_argument("--ndf", type=int, default=64, help="discriminator width; default: 64")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels; default: 128")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes; default: 1 4")
    parser.add_argument("--steps", type=positive_int, default=10, help="timed steps per path and batch size; "
                                                                        "default: 10")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocation, compilation); "
                                                              "default: 2")
    parser.add_argument("--device", default=None, help="default: CUDA when present, else the CPU")
    parser.add_argument("--amp", default="auto", **choice("amp", AMP_MODES), help="the fast path's precision (the reference "
                        "is fp32); default: auto (bf16 where the device computes it natively: CUDA, AVX512-BF16/AMX "
                        "CPUs)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast path's networks")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads (torch.set_num_threads); default: torch's")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")


def given_options(args: argparse.Namespace, cls) -> dict:
    """The config fields the user set on the command line."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}

