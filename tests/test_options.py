"""Every option declared once: the pixel stage's CycleGAN options derived from CyCADA's, the stage
options and the command line's help computed from the fields' metadata, the architecture registries,
the official option names, and a command line that parses without torch."""
import argparse
import subprocess
import sys
from dataclasses import asdict, fields

import pytest
from torch import nn

import cyclelib
from cyclelib import CyCADAConfig, CycleGANConfig, build_classifier, build_generator
from cyclelib.arguments import OFFICIAL_ELSEWHERE, given_options
from cyclelib.cli import build_parser
from cyclelib.cycada import NEUTRAL_OPTIONS, STAGE_OPTIONS
from cyclelib.names import DISCRIMINATORS, GENERATORS, TASK_NETWORKS
from cyclelib.networks import fits, side_multiple

from helpers import ROOT, cli, cli_env

# --------------------------------------------------------------------------------------
# One declaration per option (issue 20, item 1)
# --------------------------------------------------------------------------------------

# A value for every CyCADA option that sets a pixel-stage CycleGAN option, each unlike the
# CycleGAN option's default, so that a value that does not arrive is seen.
PIXEL_VALUES = dict(
    netG="resnet_2blocks", ngf=6, netD="pixel", ndf=5, n_layers_D=4, norm="batch", noise_nc=2,
    noise_injection="modulate", gan_mode="hinge", lambda_gan_A=3.5, lambda_gan_B=1.5, lambda_cycle_A=2.5,
    lambda_cycle_B=4.5, lambda_identity=0.25, lambda_mode_seeking=0.75, pixel_lr=3e-4, pixel_beta1=0.25,
    pixel_batch_size=3, pool_size=7, pixel_epochs=2, pixel_epochs_decay=3, image_size=20, max_samples=11,
    seed=9, device="cpu", amp="bf16", num_workers=1, log_every=2, sample_every=3, checkpoint_every=5,
    tensorboard=True, wandb=True, wandb_project="cycada-pixel")
# The CycleGAN options the pixel stage fixes, and those it leaves at CycleGAN's defaults.
FIXED_BY_THE_STAGE = {"data", "out", "input_nc", "output_nc", "preprocess", "flip"}
CYCLEGAN_DEFAULTS = {"init", "init_gain", "dropout", "lambda_gp", "beta2", "max_steps", "clip_grad_norm",
                     "skip_bad_images", "implementation", "compile", "keep_checkpoints",
                     "direction", "serial_batches",  # the source is domain A, its images in a seeded order
                     "lr_policy", "lr_decay_iters", "threads"}  # the release's linear schedule; torch's threads


def test_every_pixel_option_reaches_the_pixel_stage():
    tagged = {f.name: f.metadata["cyclegan"] for f in fields(CyCADAConfig) if "cyclegan" in f.metadata}
    assert set(tagged) == set(PIXEL_VALUES)
    config = CyCADAConfig(source="mnist5k", target="mnistm5k", **PIXEL_VALUES)
    pixel = config.pixel_config("out")
    cyclegan_defaults = {f.name: f.default for f in fields(CycleGANConfig)}
    for option, names in tagged.items():
        for name in names:
            assert getattr(pixel, name) == PIXEL_VALUES[option] != cyclegan_defaults[name], (option, name)
    # Every CycleGAN option is set by a CyCADA option, fixed by the stage, or left at its default on purpose.
    reached = {name for names in tagged.values() for name in names}
    assert reached | FIXED_BY_THE_STAGE | CYCLEGAN_DEFAULTS == set(cyclegan_defaults)
    assert not reached & (FIXED_BY_THE_STAGE | CYCLEGAN_DEFAULTS)
    assert all(getattr(pixel, name) == cyclegan_defaults[name] for name in CYCLEGAN_DEFAULTS)
    assert (pixel.data, pixel.out, pixel.preprocess, pixel.flip) == ("mnist5k:mnistm5k", "out", "none", False)
    # the pixel stage's own terms (L_sem), which CycleGAN has not, and the crop of driving scenes, which sets
    # crop_size in image_size's place where given (tests/test_driving_gpu.py), are the only untagged pixel options
    untagged = {f.name for f in fields(CyCADAConfig)
                if f.metadata["shapes"] == "pixel" and "cyclegan" not in f.metadata}
    assert untagged == {"lambda_sem_A", "lambda_sem_B", "semantic_judge", "semantic_target", "semantic_gate",
                        "pixel_crop_size"}


# The stage options before the tags (cycada.py's hand-written _SHARED, _PIXEL, _FEATURE): the checkpoints
# of existing run folders record these options by these names.
_SHARED = {"source", "target", "classifier", "image_size", "max_samples", "seed", "amp", "task_lr", "task_batch_size",
           "task_epochs", "invert_source"}
_PIXEL = {"netG", "ngf", "netD", "ndf", "n_layers_D", "norm", "noise_nc", "noise_injection", "gan_mode", "lambda_gan_A",
          "lambda_gan_B", "lambda_cycle_A", "lambda_cycle_B", "lambda_identity", "lambda_sem_A", "lambda_sem_B",
          "semantic_judge", "lambda_mode_seeking", "pixel_lr", "pixel_beta1", "pixel_batch_size", "pool_size",
          "pixel_epochs", "pixel_epochs_decay"}
_FEATURE = {"feature_lr", "feature_batch_size", "feature_epochs", "lambda_task", "lambda_feature"}
# the release's form (issue 25), added since
_RELEASE_PIXEL = {"semantic_target", "semantic_gate"}
_RELEASE = {"feature_gate", "feature_start"}
# segmentation (issue 26), added since: a checkpoint without them was a classification stage with the release's D_feat,
# trained with Adam on image_size squares
_TASK, _SEG_FEATURE = {"task", "task_optimizer", "crop_size"}, {"d_feat_width", "feature_optimizer"}
_SEG_PIXEL = {"pixel_crop_size"}  # the pixel stage's crops of driving scenes: a checkpoint without it read whole squares
# the release's published segmenters (issue 26), added since: compared as their files' SHA-256, recorded per stage
_WEIGHTS = {"stage_weights"}
# a translation of the source made elsewhere (the release's cyclegta5), read by pixel_only and feature: added since;
# a checkpoint without it trained on the pixel stage's translation
_TRANSLATED = {"translated_source"}
_NEUTRAL = {"out", "scale", "device", "num_workers", "log_every", "sample_every", "checkpoint_every",
            "max_eval_samples", "tensorboard", "wandb", "wandb_project"}  # the loggers: added since, neutral


def test_stage_options_computed_from_the_tags_are_todays():
    assert {stage: set(options) for stage, options in STAGE_OPTIONS.items()} == {
        "source": _SHARED | _TASK, "oracle": _SHARED | _TASK, "pixel": _SHARED | _TASK | _PIXEL | _RELEASE_PIXEL
        | _SEG_PIXEL, "pixel_only": _SHARED | _TASK | _PIXEL | _RELEASE_PIXEL | _SEG_PIXEL | _TRANSLATED,
        "feature_only": _SHARED | _TASK | _FEATURE | _SEG_FEATURE | {"feature_gate"},
        "feature": _SHARED | _TASK | _PIXEL | _FEATURE | _SEG_FEATURE | _RELEASE | _RELEASE_PIXEL | _SEG_PIXEL
        | _TRANSLATED}
    assert set(NEUTRAL_OPTIONS) == _NEUTRAL
    # a stage records asdict(config): the same flat names as before, so existing stage checkpoints are reused
    # (one that lacks the release's options, added later, was trained as their defaults, the paper's, train)
    assert set(asdict(CyCADAConfig())) == (_SHARED | _TASK | _PIXEL | _FEATURE | _SEG_FEATURE | _RELEASE | _RELEASE_PIXEL
                                           | _SEG_PIXEL | _NEUTRAL | _WEIGHTS | _TRANSLATED)


def test_keyword_construction_and_resume_rules_read_the_fields():
    config = CyCADAConfig(source="mnist5k", target="mnistm5k", ngf=8, lambda_cycle_A=3.0, pixel_lr=1e-3)
    assert (config.ngf, config.lambda_cycle_A, config.pixel_lr) == (8, 3.0, 1e-3)
    rules = {f.metadata["on_resume"] for f in fields(CycleGANConfig)}
    assert rules == {"apply", "refuse"} and all(f.metadata["why"] for f in fields(CycleGANConfig)
                                                if f.metadata["on_resume"] == "refuse")


# --------------------------------------------------------------------------------------
# Registries (issue 20, item 3)
# --------------------------------------------------------------------------------------

class Halves(nn.Module):
    """A 'generator' that gives back images of half the size (a stride-2 conv)."""

    def __init__(self, input_nc, output_nc, width, norm, dropout, stride=2):
        super().__init__()
        self.input_nc, self.output_nc = input_nc, output_nc
        self.conv = nn.Conv2d(input_nc, output_nc, 3, stride=stride, padding=1)

    def forward(self, x):
        return self.conv(x)


@pytest.fixture
def registries(monkeypatch):
    """The registries as they are, restored after the test."""
    for registry in (GENERATORS, DISCRIMINATORS, TASK_NETWORKS):
        monkeypatch.setattr(registry, "families", dict(registry.families))


def test_a_registered_generator_is_built_checked_by_fits_and_the_config_and_listed_by_the_cli(registries):
    GENERATORS.register("conv", pattern=r"conv_(1|2)", help="conv_<stride> (1 or 2)", cls=Halves,
                        build=lambda m, *args: Halves(*args, stride=int(m.group(1))))
    same, half = build_generator("conv_1", init=None), build_generator("conv_2", init=None)
    assert isinstance(same, Halves) and side_multiple(same) == 1
    assert fits(same, (1, 3, 32, 32)) and not fits(half, (1, 3, 32, 32))  # half gives back 16 x 16
    assert CycleGANConfig(data="mnist5k:mnistm5k", netG="conv_1", load_size=32, crop_size=32).netG == "conv_1"
    with pytest.raises(ValueError, match="netG conv_2 .* takes no image"):
        CycleGANConfig(data="mnist5k:mnistm5k", netG="conv_2", load_size=32, crop_size=32)
    assert "conv_<stride> (1 or 2)" in _help("train", "cyclegan")


def test_a_registered_discriminator_is_taken_by_the_config(registries):
    DISCRIMINATORS.register("conv", pattern="conv", help="conv", cls=Halves,
                            build=lambda m, input_nc, width, n_layers, norm: Halves(input_nc, 1, width, norm, False))
    config = CycleGANConfig(data="mnist5k:mnistm5k", netD="conv", load_size=32, crop_size=32)
    assert config.netD == "conv" and "--netD {basic,n_layers,pixel,conv}" in _help("train", "cyclegan")


def test_an_unregistered_network_is_refused_by_fits_not_skipped():
    with pytest.raises(ValueError, match="Conv2d is no registered generator or discriminator"):
        fits(nn.Conv2d(3, 3, 3, stride=2), (1, 3, 32, 32))


def test_a_registered_task_network_is_built_and_taken_by_the_config(registries):
    TASK_NETWORKS.register("tiny", pattern="tiny", help="tiny", cls=nn.Linear,
                           build=lambda m, num_classes: nn.Linear(4, num_classes))
    assert isinstance(build_classifier("tiny"), nn.Linear)
    assert CyCADAConfig(classifier="tiny").classifier == "tiny"
    assert "{auto,lenet,dtn,resnet18,resnet18_imagenet,small_fcn,fcn8s,drn26,fcn8s_imagenet,drn26_imagenet,tiny}" in _help("train", "cycada")
    with pytest.raises(ValueError, match="unknown classifier 'huge'; valid values: auto, lenet, dtn, resnet18, "
                                         "resnet18_imagenet, small_fcn, fcn8s, drn26, fcn8s_imagenet, drn26_imagenet, tiny"):
        CyCADAConfig(classifier="huge")


# --------------------------------------------------------------------------------------
# Help that guides (issue 23, item 1)
# --------------------------------------------------------------------------------------

def _help(*command: str) -> str:
    parser = build_parser()
    for name in command:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser.format_help()


def _actions(parser: argparse.ArgumentParser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, (*path, name))
        elif action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_has_a_description_its_choices_and_required_marked():
    commands = {("train", "cyclegan"), ("train", "cycada"), ("translate",), ("download",), ("bench",)}
    seen = set()
    for path, action in _actions(build_parser()):
        seen.add(path)
        if path in commands:
            assert action.help and "\n" not in action.help, (path, action.option_strings)
            assert not action.required or "required" in action.help, (path, action.option_strings)
    assert commands <= seen
    cyclegan, cycada = _help("train", "cyclegan"), _help("train", "cycada")
    for text in ("--norm {instance,batch,syncbatch,none}", "--gan-mode {lsgan,vanilla,wgangp,hinge}",
                 "--amp {none,bf16,fp16,auto}", "--implementation {fast,reference}",
                 "--preprocess {resize_and_crop,crop,scale_width,scale_width_and_crop,none}",
                 "--init {normal,xavier,kaiming,orthogonal}", "--noise-injection {constant,modulate}",
                 "--netD {basic,n_layers,pixel}", "resnet_<n>blocks"):
        assert text in cyclegan, text
    for text in ("--classifier {auto,lenet,dtn,resnet18,resnet18_imagenet,small_fcn,fcn8s,drn26,fcn8s_imagenet,drn26_imagenet}",
                 "--task {classification,segmentation}", "--semantic-judge {source,feature_only,online}",
                 "resnet_<n>blocks", "folder:PATH"):
        assert text in cycada, text
    for command in commands:
        assert "``" not in _help(*command) and ":func:" not in _help(*command)


def _option_help(command: tuple[str, ...], flag: str) -> str:
    """The help line of option ``flag`` of ``command``."""
    return next(a.help for path, a in _actions(build_parser()) if path == command and flag in a.option_strings)


def test_the_default_shown_is_the_one_used_and_required_options_say_so():
    cyclegan, cycada = ("train", "cyclegan"), ("train", "cycada")
    assert "default: 64; smoke preset 8, cpu preset 32" in _option_help(cyclegan, "--ngf")
    # CyCADA's presets per task: the segmentation stages' own sizes are named too
    assert "default: 64; smoke preset 4, cpu preset 16 (digits) / 8 (digit scenes, driving scenes)" in _option_help(
        cycada, "--ngf")
    assert ("default: 32; smoke preset 16 (digits), cpu preset 64 (digit scenes, driving scenes), gpu preset 1024 "
            "(driving scenes)") in _option_help(cycada, "--image-size")
    assert "smoke preset 4 (digits) / 2 (images)" in _option_help(cyclegan, "--batch-size")
    assert "default: all; smoke preset 16 (digits) / 8 (images)" in _option_help(cyclegan, "--max-dataset-size")
    for command, flag in ((cyclegan, "--data"), (cycada, "--source"), (cycada, "--target")):
        assert "required" in _option_help(command, flag) and "default:" not in _option_help(command, flag)
    assert "fixed on --resume" in _option_help(cyclegan, "--ngf")
    assert "fixed on --resume" not in _option_help(cyclegan, "--lr")


# (official option, cyclelib option, value; None for a flag)
SPELLINGS = [("dataroot", "data", "d"), ("netG", "netG", "resnet_6blocks"), ("netD", "netD", "n_layers"),
             ("n_layers_D", "n-layers-D", "2"), ("ngf", "ngf", "16"), ("ndf", "ndf", "8"), ("norm", "norm", "batch"),
             ("init_type", "init", "xavier"), ("init_gain", "init-gain", "0.05"), ("no_dropout", "no-dropout", None),
             ("input_nc", "input-nc", "3"), ("output_nc", "output-nc", "3"), ("gan_mode", "gan-mode", "vanilla"),
             ("lambda_A", "lambda-A", "5"), ("lambda_B", "lambda-B", "6"),
             ("lambda_identity", "lambda-identity", "0.1"),
             ("lr", "lr", "0.001"), ("beta1", "beta1", "0.4"), ("batch_size", "batch-size", "2"),
             ("n_epochs", "n-epochs", "3"), ("n_epochs_decay", "n-epochs-decay", "4"), ("pool_size", "pool-size", "10"),
             ("preprocess", "preprocess", "crop"), ("load_size", "load-size", "40"), ("crop_size", "crop-size", "32"),
             ("no_flip", "no-flip", None), ("num_threads", "num-workers", "1"), ("use_wandb", "wandb", None),
             ("wandb_project_name", "wandb-project", "p")]


def test_official_option_names_parse_to_the_same_config():
    parser = build_parser()
    official, ours = (given_options(parser.parse_args(["train", "cyclegan", *argv]), CycleGANConfig) for argv in (
        [word for name, _, value in SPELLINGS for word in (f"--{name}", value) if word],
        [word for _, name, value in SPELLINGS for word in (f"--{name}", value) if word]))
    assert official == ours and len(ours) == len(SPELLINGS)
    assert CycleGANConfig(**official) == CycleGANConfig(**ours)
    assert given_options(parser.parse_args(["train", "cyclegan", "--niter", "7", "--niter_decay", "8"]),
                         CycleGANConfig) == {"n_epochs": 7, "n_epochs_decay": 8}


@pytest.mark.parametrize("name", sorted(OFFICIAL_ELSEWHERE))
def test_official_options_that_differ_are_a_one_line_did_you_mean(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "cyclegan", "--data", "d", f"--{name}", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"cyclelib: error: --{name} is an option of the official code; ")
    assert "did you mean" in err or "no equivalent" in err


def test_max_dataset_size_says_what_differs(capsys):
    code, err = cli("train", "cyclegan", "--data", "mnist5k:mnistm5k", "--max_dataset_size", "100")
    assert code == 2 and "did you mean --max-dataset-size? it is the samples per epoch, drawn anew each epoch " \
                          "(official: the first N files)" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"cyclelib {cyclelib.__version__}\n"


def test_the_command_line_parses_and_helps_without_torch():
    code = ("import sys, cyclelib, cyclelib.cli; parser = cyclelib.cli.build_parser(); "
            "[parser.parse_args(argv) for argv in (['train', 'cyclegan', '--data', 'd'], ['bench'], "
            "['train', 'cycada', '--source', 'mnist5k', '--target', 'usps'], ['download', '--list'])]; "
            "print(sorted(m for m in ('torch', 'torchvision', 'matplotlib', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=cli_env(), cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out == "[]\n"


def test_every_public_name_is_still_importable_from_cyclelib():
    assert all(getattr(cyclelib, name) is not None for name in cyclelib.__all__)
    assert set(cyclelib.__all__) <= set(dir(cyclelib))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        cyclelib.nothing
