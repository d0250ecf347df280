"""CyCADA's pixel stage logs as a CycleGAN run does: TensorBoard events (and W&B) in its folder."""
from __future__ import annotations

from cyclelib import run_cycada
from cyclelib.cycada import stage_path
from helpers import cycada_smoke


def test_the_pixel_stage_writes_tensorboard_events_when_asked(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = cycada_smoke(tmp_path / "run", tensorboard=True)
    run_cycada(config, stages=["source", "pixel"], progress=False)
    events = EventAccumulator(str(stage_path(config, "pixel").parent / "tensorboard")).Reload()
    assert {"loss/G_A", "loss/sem_A"} <= set(events.Tags()["scalars"])
    quiet = cycada_smoke(tmp_path / "quiet")
    run_cycada(quiet, stages=["source", "pixel"], progress=False)
    assert not (stage_path(quiet, "pixel").parent / "tensorboard").exists()



def test_the_command_line_gives_the_loggers_to_the_pixel_stage():
    from cyclelib.cli import build_parser

    args = build_parser().parse_args(["train", "cycada", "--source", "mnist5k", "--target", "mnistm5k",
                                      "--tensorboard", "--wandb-project", "cycada-pixel"])
    assert (args.tensorboard, args.wandb_project) == (True, "cycada-pixel")
