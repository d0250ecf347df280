"""What the command line says: CyCADA's hint for missing stages, its progress bar, its cpu scale's
time, usage errors (exit 2, "cyclelib: error:") and errors naming what a checkpoint is."""
import re
import shlex
from contextlib import redirect_stdout
from io import StringIO
from dataclasses import asdict

import pytest
import torch

from cyclelib import CyCADAConfig, build_generator, run_cycada, save_official
from cyclelib.arguments import given_options
from cyclelib.cli import build_parser, main
from helpers import ROOT, cli, cycada_smoke


def _hint(config: CyCADAConfig, stages: str) -> tuple[str, list[str]]:
    """The message of running ``stages`` of ``config`` with nothing done, and its suggested command."""
    with pytest.raises(FileNotFoundError) as failed:
        run_cycada(config, stages=stages, progress=False)
    message = str(failed.value)
    return message, shlex.split(re.search(r"`(cyclelib train cycada .*)`", message)[1])


@pytest.mark.parametrize("stages, missing", [("feature", "source,pixel"), ("pixel_only", "source,pixel")])
def test_cycada_hint_names_every_missing_stage(tmp_path, stages, missing):
    """pixel_only needs pixel, which needs source: both are named, and the command runs both."""
    message, command = _hint(cycada_smoke(tmp_path), stages)
    for stage in missing.split(","):
        assert f"the {stage!r} stage has not been run" in message
    assert command[-2:] == ["--stages", missing]


def cli_out(*argv: str) -> tuple[int, str]:
    """``cyclelib ARGV`` in this process: (exit code, stdout)."""
    out = StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as done:
        main(list(argv))
    return done.value.code, out.getvalue()


def test_cycada_hint_repeats_every_option_of_the_command(tmp_path):
    """The suggested command builds the config of the command that failed, scale and all, so the next
    run does not refuse the stages it trained."""
    code, err = cli("train", "cycada", "--source", "mnist5k", "--target", "mnistm5k", "--scale", "smoke",
                    "--out", str(tmp_path), "--stages", "feature", "--seed", "3", "--amp", "none", "--device", "cpu",
                    "--feature-lr", "0.001", "--max-samples", "16")
    assert code == 2 and "cyclelib: error:" in err
    command = shlex.split(re.search(r"`(cyclelib train cycada .*)`", err)[1])
    args = build_parser().parse_args(command[1:])
    options = {k: v for k, v in given_options(args, CyCADAConfig).items() if k != "scale"}
    suggested = CyCADAConfig.for_scale(args.scale, **options)
    original = CyCADAConfig.for_scale("smoke", source="mnist5k", target="mnistm5k", out=str(tmp_path), seed=3,
                                      amp="none", device="cpu", feature_lr=0.001, max_samples=16)
    assert asdict(suggested) == asdict(original)
    assert args.stages == "source,pixel"


def test_pixel_stage_progress_bar_says_pixel(tmp_path, capsys):
    run_cycada(cycada_smoke(tmp_path), stages="source,pixel", progress=True)
    err = capsys.readouterr().err
    assert re.search(r"^pixel( \[CPU threads: \d+\])?: +100%", err.replace("\r", "\n"), re.MULTILINE)
    assert "cyclegan:" not in err


def test_cycada_help_states_the_cpu_scale_time_of_the_readme(monkeypatch):
    """README's table of the cpu-scale runs gives each pair's training time; --help says the same."""
    row = re.search(r"\| training time \| ([\d.]+) min \(mean\) \| ([\d.]+) min \(mean\) \|",
                    (ROOT / "README.md").read_text())
    mnistm, uci = (round(float(minutes)) for minutes in row.groups())
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no word broken at a hyphen
    code, help = cli_out("train", "cycada", "--help")
    assert f"{uci} minutes for uci-digits -> mnist5k, {mnistm} for mnist5k -> mnistm5k" in help


@pytest.mark.parametrize("argv", [
    ["train", "cyclegan", "--data", "mnist5k:mnistm5k", "--norm", "group"],
    ["train", "cyclegan", "--no-such-option"],
    ["train", "cycada", "--source", "mnist5k"],
    ["train", "cycada", "--source", "mnist5k", "--target", "mnistm5k", "--stages", "nothing"],
    ["download", "--no-such-option"],
    ["download", "no-such-dataset"],
    ["translate", "--input", "in"],
    ["translate", "--checkpoint", "c.pt", "--input", "in", "--output", "out", "--direction", "sideways"],
    ["test", "--checkpoint", "c.pt"],
    ["evaluate", "--direction", "sideways"],
    ["evaluate", "--fake", "a"],
    ["export", "--checkpoint", "c.pt"],
    ["export", "--checkpoint", "c.pt", "--output", "g.onnx", "--format", "pickle"],
    ["bench", "--steps", "0"],
])
def test_usage_errors_exit_2_with_one_prefix(argv):
    code, err = cli(*argv)
    assert code == 2, err
    assert "cyclelib: error:" in err, err


@pytest.fixture(scope="module")
def cycada_source(tmp_path_factory):
    out = tmp_path_factory.mktemp("cycada")
    run_cycada(cycada_smoke(out), stages="source", progress=False)
    return out / "source" / "checkpoint.pt"


@pytest.mark.parametrize("command", [["translate", "--input", "in", "--output", "out"],
                                     ["test", "--dataroot", "data", "--results", "results"],
                                     ["export", "--output", "g.onnx"]])
def test_a_classifier_checkpoint_says_what_it_is_and_what_is_expected(tmp_path, cycada_source, command):
    code, err = cli(*command, "--checkpoint", str(cycada_source))
    assert code == 2
    assert str(cycada_source) in err and "classifier" in err and "CycleGAN" in err


def test_an_official_file_of_other_shapes_is_named(tmp_path):
    path = save_official(build_generator("resnet_2blocks", 3, 3, width=8), tmp_path / "small_net_G.pth")
    (tmp_path / "in").mkdir()
    code, err = cli("translate", "--checkpoint", str(path), "--input", str(tmp_path / "in"),
                    "--output", str(tmp_path / "out"))
    assert code == 2 and f"{path} does not fit the network built with" in err
    with pytest.raises(ValueError, match=re.escape(str(path))):
        from cyclelib.export import export_generator
        export_generator(path, tmp_path / "g.pt", "torchscript")
    assert torch.load(path, weights_only=True)  # the file itself is intact
