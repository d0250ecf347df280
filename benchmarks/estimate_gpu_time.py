"""How long CyCADA takes on one GPU at the ``gpu`` scale (the paper's setting): an estimate from FLOPs.

No GPU has measured it yet, so this script estimates it on the CPU, without training:

1. builds each stage's model at the ``gpu`` preset (``CyCADAConfig.for_scale("gpu", ...)``, the
   release's networks, batch sizes and epochs) and runs one training step of it on random
   tensors under ``torch.utils.flop_counter.FlopCounterMode``: the FLOPs of one step (the
   same at every precision: autocast changes the type of a multiplication, not their number),
   and the number of ATen operators the step calls (views left out);
2. multiplies by the steps of the stage, as the trainer counts them: ``epochs x (train size //
   batch)`` for the classifier stages (they drop an epoch's last partial batch) and
   ``epochs x ceil(train size / batch)`` for the pixel stage, where an epoch of two domains is
   as long as the larger one; train sizes: MNIST 60000, USPS 7291, SVHN 73257;
3. divides the FLOPs by an **assumed** achieved throughput, ``--fraction`` (default 0.3) of the
   GPU's dense peak at the precision it would run (T4: 8.1 TFLOP/s fp32, for it has no bf16
   tensor cores; A100: 312, H100: 989 TFLOP/s bf16), and adds an **assumed** cost per
   operator (``--op-us``, default 10 us: an eager step launches its kernels one by one, and
   for the small classifiers that cost, not arithmetic, sets the pace).

The two assumptions are printed with the table; a measurement on a GPU (``make gpu-check``
for the CycleGAN step, or timing a run) replaces them. Not counted: data loading, evaluation
and translating the source set once for ``pixel_only`` and ``feature`` (one generator pass
per image, under 1% of the pixel stage's FLOPs).

    python benchmarks/estimate_gpu_time.py                        # MNIST -> USPS and SVHN -> MNIST
    python benchmarks/estimate_gpu_time.py --pairs mnist:usps --fraction 0.2 --json estimate.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import cyclelib
from cyclelib.classifiers import FeatureAlignment, TaskClassifier, build_task_network
from cyclelib.cycada import STAGES, classifier_name, semantic_consistency
from cyclelib.cyclegan import CycleGAN
from cyclelib.runtime import Precision

# Training images per domain (the torchvision train splits the gpu scale downloads).
TRAIN_SIZES = {"mnist": 60000, "usps": 7291, "svhn": 73257}
# Dense peak TFLOP/s at the precision each GPU would train in: bf16 tensor cores where the GPU has
# them (amp "auto"), fp32 on a T4, whose bf16 is emulated (its fp16 tensor cores need --amp fp16).
GPUS = {"T4": (8.1, "fp32"), "A100": (312.0, "bf16"), "H100": (989.0, "bf16")}
PAIRS = ("mnist:usps", "svhn:mnist")
# Chapter 7 retrains the pixel stage for three semantic weights, each for a fifth of its epochs.
SWEEP_RUNS, SWEEP_SHARE = 3, 5


class OperatorCount(TorchDispatchMode):
    """Counts the ATen operators a piece of code calls, views left out (they launch no kernel)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.count += 1
        return func(*args, **(kwargs or {}))


def measure(step) -> tuple[int, int]:
    """(FLOPs, ATen operators) of one call of ``step``."""
    with FlopCounterMode(display=False) as flops, OperatorCount() as ops:
        step()
    return flops.get_total_flops(), ops.count


def step_costs(config: cyclelib.CyCADAConfig) -> dict[str, tuple[int, int]]:
    """(FLOPs, operators) of one training step of each kind of stage, at ``config``'s sizes, on the CPU."""
    cpu, precision = torch.device("cpu"), Precision("none", torch.device("cpu"))
    size, name = config.image_size, classifier_name(config)
    images = lambda n: torch.rand(n, 3, size, size) * 2 - 1  # [n, 3, size, size] in [-1, 1]
    labels = lambda n: torch.randint(0, 10, (n,))
    torch.manual_seed(0)
    f_s = build_task_network(name).to(cpu).eval()
    task = TaskClassifier(build_task_network(name).train(), config.task_lr, precision)
    feature = FeatureAlignment(f_s, config.feature_lr, precision, config.lambda_task, config.lambda_feature)
    with tempfile.TemporaryDirectory() as out:
        pixel = CycleGAN(config.pixel_config(out), extra_generator_losses=semantic_consistency(config, f_s))
    b_task, b_pix, b_feat = config.task_batch_size, config.pixel_batch_size, config.feature_batch_size
    return {
        "classifier": measure(lambda: task.train_step(images(b_task), labels(b_task))),
        "pixel": measure(lambda: pixel.train_step(images(b_pix), images(b_pix))),
        "feature": measure(lambda: feature.train_step(images(b_feat), labels(b_feat), images(b_feat))),
    }


def stage_steps(config: cyclelib.CyCADAConfig) -> dict[str, int]:
    """Training steps of every stage of ``run_cycada`` at ``config``, and of chapter 7's sweep."""
    src, tgt = TRAIN_SIZES[config.source], TRAIN_SIZES[config.target]
    both = max(src, tgt)  # an unpaired epoch is as long as the larger domain
    pixel_epochs = config.pixel_epochs + config.pixel_epochs_decay
    pixel_per_epoch = math.ceil(both / config.pixel_batch_size)
    steps = {
        "source": config.task_epochs * (src // config.task_batch_size),
        "pixel": pixel_epochs * pixel_per_epoch,
        "pixel_only": config.task_epochs * (src // config.task_batch_size),
        "feature_only": config.feature_epochs * (both // config.feature_batch_size),
        "feature": config.feature_epochs * (both // config.feature_batch_size),
        "oracle": config.task_epochs * (tgt // config.task_batch_size),
    }
    assert tuple(steps) == STAGES
    steps["chapter 7 sweep"] = SWEEP_RUNS * max(1, pixel_epochs // SWEEP_SHARE) * pixel_per_epoch
    return steps


KIND = {"source": "classifier", "pixel": "pixel", "pixel_only": "classifier", "feature_only": "feature",
        "feature": "feature", "oracle": "classifier", "chapter 7 sweep": "pixel"}


def estimate(pair: str, fraction: float, op_us: float) -> dict:
    """The estimate for one ``source:target`` pair: per stage, steps, FLOPs and hours per GPU."""
    source, target = pair.split(":")
    config = cyclelib.CyCADAConfig.for_scale("gpu", source=source, target=target, device="cpu")
    costs = step_costs(config)
    rows = []
    for stage, steps in stage_steps(config).items():
        flops, ops = costs[KIND[stage]]
        hours = {gpu: (steps * flops / (fraction * peak * 1e12) + steps * ops * op_us * 1e-6) / 3600
                 for gpu, (peak, _) in GPUS.items()}
        rows.append({"stage": stage, "steps": steps, "gflop_per_step": flops / 1e9, "ops_per_step": ops,
                     "pflop": steps * flops / 1e15, "hours": hours})
    pipeline = [r for r in rows if r["stage"] in STAGES]
    total = {"stage": "run_cycada (all six stages)", "steps": sum(r["steps"] for r in pipeline),
             "pflop": sum(r["pflop"] for r in pipeline),
             "hours": {gpu: sum(r["hours"][gpu] for r in pipeline) for gpu in GPUS}}
    preset = {k: getattr(config, k) for k in ("classifier", "image_size", "netG", "ngf", "netD", "ndf", "task_epochs",
                                              "task_batch_size", "pixel_epochs", "pixel_epochs_decay",
                                              "pixel_batch_size", "feature_epochs", "feature_batch_size")}
    preset["classifier"] = classifier_name(config)
    return {"pair": pair, "train_sizes": {source: TRAIN_SIZES[source], target: TRAIN_SIZES[target]},
            "preset": preset, "stages": rows, "total": total}


def format_table(results: dict) -> str:
    a = results["assumptions"]
    gpus = ", ".join(f"{gpu} {peak:g} TFLOP/s {dtype}" for gpu, (peak, dtype) in GPUS.items())
    lines = [f"Estimated hours on one GPU at the gpu scale, assuming {a['fraction']:.0%} of the dense peak "
             f"({gpus}) and {a['op_us']:g} us per ATen operator; an estimate, not a measurement"]
    for est in results["pairs"]:
        p = est["preset"]
        lines += ["", f"{est['pair'].replace(':', ' -> ')}: {p['classifier']}, G {p['netG']} (ngf {p['ngf']}), "
                      f"{p['image_size']}x{p['image_size']}, train sizes {est['train_sizes']}",
                  f"{'stage':<28} {'steps':>8} {'GFLOP/step':>11} {'ops/step':>9} {'PFLOP':>8}"
                  + "".join(f" {gpu + ' h':>8}" for gpu in GPUS)]
        for row in est["stages"] + [est["total"]]:
            per_step = (f"{row['gflop_per_step']:>11.2f} {row['ops_per_step']:>9}" if "gflop_per_step" in row
                        else f"{'':>11} {'':>9}")
            lines.append(f"{row['stage']:<28} {row['steps']:>8} {per_step} {row['pflop']:>8.2f}"
                         + "".join(f" {row['hours'][gpu]:>8.2f}" for gpu in GPUS))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), help="source:target pairs (default: %(default)s)")
    parser.add_argument("--fraction", type=float, default=0.3,
                        help="achieved share of each GPU's dense peak (default: %(default)s)")
    parser.add_argument("--op-us", type=float, default=10.0,
                        help="microseconds per ATen operator, launch and dispatch (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the counting steps")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if not 0 < args.fraction <= 1:
        parser.error(f"--fraction must be in (0, 1], got {args.fraction}")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {"command": "python benchmarks/estimate_gpu_time.py " + " ".join(argv if argv is not None
                                                                                 else sys.argv[1:]),
               "cyclelib": cyclelib.__version__, "torch": torch.__version__,
               "assumptions": {"fraction": args.fraction, "op_us": args.op_us,
                               "peak_tflops": {gpu: {"tflops": peak, "precision": dtype}
                                               for gpu, (peak, dtype) in GPUS.items()}},
               "pairs": [estimate(pair, args.fraction, args.op_us) for pair in args.pairs]}
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
        print(f"written to {args.json}")
    return results


if __name__ == "__main__":
    main()
