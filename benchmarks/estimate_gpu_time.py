"""How long CyCADA and each chapter of the book take on one GPU: an estimate from FLOPs.

No GPU has measured it yet, so this script estimates it on the CPU, without training:

1. builds each model at a scale's preset and runs one training step of it on random tensors under
   ``torch.utils.flop_counter.FlopCounterMode``: the FLOPs of one step (the same at every
   precision: autocast changes the type of a multiplication, not their number), and the number
   of ATen operators the step calls (views left out);
2. multiplies by the steps of the stage, as the trainer counts them: ``epochs x (train size //
   batch)`` for the classifier stages (they drop an epoch's last partial batch) and
   ``epochs x ceil(train size / batch)`` for the pixel stage and CycleGAN runs, where an epoch of
   two domains is as long as the larger one; train sizes: MNIST 60000, USPS 7291, SVHN 73257,
   the offline mnist5k and mnistm5k 4000, chapter 4's photo crops 400, the digit scenes of chapter 11
   (``mnist-scenes``, ``mnistm-scenes``) 2000, GTA5 24966 (all its frames, as the release trains on them:
   Richter et al. 2016; ``cyclelib.segmentation.DRIVING_SPLITS``) and Cityscapes' train split 2975 (Cordts
   et al. 2016; the oracle's), at most ``max_samples``;
3. divides the FLOPs by an **assumed** achieved throughput, ``--fraction`` (default 0.3) of the
   GPU's dense peak at the precision it would run (T4: 8.1 TFLOP/s fp32, for it has no bf16
   tensor cores; A100: 312, H100: 989 TFLOP/s bf16), and adds an **assumed** cost per
   operator (``--op-us``, default 10 us: an eager step launches its kernels one by one, and
   for the small classifiers that cost, not arithmetic, sets the pace).

Steps on images of a side over ``DIRECT_SIDE`` (the driving scenes' 768 and 400 crops) are counted
at four small sides of the same remainder modulo 32 and extrapolated, exactly (:func:`cost_at`): every layer of
these networks has an output side ``a * side + b`` on such sides (each halving of the side divides 32), so a
convolution's FLOPs, and the step's, are a quadratic in the side; the quadratic through three counts must give
the fourth, or the script stops.

It reports the six stages of ``run_cycada`` at the ``gpu`` scale (the paper's setting) for the
paper's digit pairs and for GTA5 -> Cityscapes (the release's setting, the driving scenes' gpu preset:
``gta5:cityscapes``), and what each chapter's notebook trains when run alone at the ``colab`` and ``gpu``
scales; it fails when a chapter of the ``colab`` scale exceeds ``COLAB_MINUTES`` on a T4 (a free
Colab session). The two assumptions are printed with the table; a measurement on a GPU (``make
gpu-check`` for the CycleGAN step, or timing a run) replaces them. Not counted: data loading,
evaluation and translating the source set once for ``pixel_only`` and ``feature`` (one generator
pass per image, under 1% of the pixel stage's FLOPs).

The book prints the chapter times from the committed output (``cyclelib.chapter_time``):

    python benchmarks/estimate_gpu_time.py --json cyclelib/results/gpu_time_estimate.json
    python benchmarks/estimate_gpu_time.py --pairs mnist:usps --fraction 0.2 --json estimate.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import cyclelib
from cyclelib.classifiers import FeatureAlignment, TaskClassifier, build_task_network
from cyclelib.presets import CYCADA_PRESETS, CYCLEGAN_PRESETS
from cyclelib.cycada import STAGES, classifier_name, semantic_consistency
from cyclelib.cyclegan import CycleGAN
from cyclelib.runtime import Precision
from cyclelib.segmentation import domain_classes, feature_game, task_loss

# Training images per domain: the torchvision train splits the gpu scale downloads, the offline 5k
# digit sets (4000 of each 5000 are the train split) and chapter 4's photo crops (400 a domain).
TRAIN_SIZES = {"mnist": 60000, "usps": 7291, "svhn": 73257, "mnist5k": 4000, "mnistm5k": 4000, "photos": 400,
               "mnist-scenes": 2000, "mnistm-scenes": 2000, "gta5": 24966, "cityscapes": 2975}
# Dense peak TFLOP/s at the precision each GPU would train in: bf16 tensor cores where the GPU has
# them (amp "auto"), fp32 on a T4, whose bf16 is emulated (its fp16 tensor cores need --amp fp16).
GPUS = {"T4": (8.1, "fp32"), "A100": (312.0, "bf16"), "H100": (989.0, "bf16")}
PAIRS = ("mnist:usps", "svhn:mnist", "gta5:cityscapes")
# The driving scenes of a pair (their folders need not exist to be counted), estimated at their gpu preset.
DRIVING = {"gta5": "gta5:GTA5", "cityscapes": "cityscapes:CITYSCAPES"}
# Sides up to this are counted as they are; larger ones at four sides of the same remainder modulo STRIDE from
# 2 * STRIDE up, and extrapolated (cost_at).
DIRECT_SIDE, STRIDE = 256, 32
# The scales whose chapters run on a GPU (smoke and cpu are sized for a CPU); a chapter of the
# colab scale must fit a free Colab T4 session: at most COLAB_MINUTES on a T4 by this estimate.
GPU_SCALES = ("colab", "gpu")
COLAB_MINUTES = 30
# Chapter 7 retrains the pixel stage for three semantic weights, each for a fifth of its epochs.
SWEEP_RUNS, SWEEP_SHARE = 3, 5
# Chapter 10's run: the paper's pipeline with its remedy for dark digits.
REMEDY = dict(invert_source=0.5, noise_nc=4, noise_injection="modulate", lambda_mode_seeking=1.0)
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


def images(n: int, size: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size) * 2 - 1  # [n, 3, size, size] in [-1, 1]


def labels(n: int, config: cyclelib.CyCADAConfig | None = None, side: int | None = None) -> torch.Tensor:
    """``n`` random labels: digits [n], or for a segmentation ``config`` label maps [n, side, side], by default at
    the side the classifier and feature stages train on (:func:`train_side`)."""
    if config is None or config.task != "segmentation":
        return torch.randint(0, 10, (n,))
    side = side or train_side(config)
    return torch.randint(0, domain_classes(config.source), (n, side, side))


def train_side(config: cyclelib.CyCADAConfig) -> int:
    """The side of the images the classifier and feature stages train on: ``crop_size`` (driving scenes'
    random crops) where it is given, else ``image_size``."""
    return config.crop_size or config.image_size


def cyclegan_model(config: cyclelib.CycleGANConfig, extra_generator_losses=None) -> CycleGAN:
    """The CycleGAN of ``config`` on the CPU, in ``config``'s precision."""
    with tempfile.TemporaryDirectory() as out:
        return CycleGAN(dataclasses.replace(config, out=out, device="cpu"), extra_generator_losses)


def pixel_side(config: cyclelib.CyCADAConfig) -> int:
    """The side of the images the pixel stage trains on: ``pixel_crop_size`` (driving scenes' random crops) where
    it is given, else ``image_size``."""
    return config.pixel_crop_size or config.image_size


def cost_at(step, side: int, direct_side: int = DIRECT_SIDE) -> tuple[int, int]:
    """(FLOPs, operators) of ``step(side)``, one training step on images of ``side`` pixels: measured, or over
    ``direct_side`` extrapolated exactly from the counts at four small sides ``side % STRIDE + STRIDE * k``,
    k = 2..5. On those sides every layer's output side is affine in ``side`` (as long as the halvings of the side
    divide ``STRIDE``), and a convolution's FLOPs are the product of its output's two sides and constants, so the
    step's FLOPs are a quadratic in ``side``: the one through the first three counts, checked on the fourth.
    The operators of a step do not depend on the side; those of the first (which creates the optimisers' state)
    are counted, as for a step measured as it is."""
    if side <= direct_side:
        return measure(lambda: step(side))
    sides = [side % STRIDE + STRIDE * k for k in (2, 3, 4, 5)]
    counts = [measure(lambda: step(s)) for s in sides]
    flops = [f for f, _ in counts]
    if (quadratic(sides[:3], flops[:3], sides[3]) != flops[3]
            or not (fit := quadratic(sides[:3], flops[:3], side)).denominator == 1):
        raise RuntimeError(f"the FLOPs of a step are no quadratic in the side ({dict(zip(sides, flops))}): count "
                           f"them at {side} as it is (direct_side={side})")
    return int(fit), counts[0][1]


def quadratic(xs: list[int], ys: list[int], x: int) -> Fraction:
    """The quadratic through the three points ``(xs[i], ys[i])`` at ``x`` (Lagrange's form, in exact fractions)."""
    return sum(Fraction(y) * math.prod(Fraction(x - xj, xi - xj) for xj in xs if xj != xi) for xi, y in zip(xs, ys))


def cyclegan_step(model: CycleGAN, batch: int):
    """One training step of ``model`` on ``batch`` pairs of images of a given side."""
    return lambda side: model.train_step(images(batch, side), images(batch, side))


def cyclegan_cost(model: CycleGAN, batch: int, size: int) -> tuple[int, int]:
    """(FLOPs, operators) of one training step of ``model`` on ``batch`` pairs of ``size``-pixel images."""
    return cost_at(cyclegan_step(model, batch), size)


def step_costs(config: cyclelib.CyCADAConfig) -> dict[str, tuple[int, int]]:
    """(FLOPs, operators) of one training step of each kind of CyCADA stage, at ``config``'s sizes, on the CPU
    (measured once per config: chapters 6-9 share theirs)."""
    key = repr(config)  # configs are mutable dataclasses, not hashable
    if key not in _STEP_COSTS:
        _STEP_COSTS[key] = _measure_stages(config)
    return _STEP_COSTS[key]


_STEP_COSTS: dict[str, dict[str, tuple[int, int]]] = {}


def _measure_stages(config: cyclelib.CyCADAConfig) -> dict[str, tuple[int, int]]:
    return {kind: cost_at(step, side) for kind, (step, side) in stage_steps_at(config).items()}


def stage_steps_at(config: cyclelib.CyCADAConfig) -> dict:
    """Per kind of CyCADA stage (classifier, pixel, feature), its training step on images of a given side, built
    on the CPU in fp32 at ``config``'s networks and batches, and the side the stage trains at."""
    cpu = torch.device("cpu")
    precision = Precision("none", cpu)
    name, k = classifier_name(config), domain_classes(config.source)
    # segmentation: per-pixel task loss and the score discriminator with shared weights, as run_cycada's stages
    game = feature_game(config) if config.task == "segmentation" else {}
    torch.manual_seed(0)
    f_s = build_task_network(name, k).to(cpu).eval()
    task = TaskClassifier(build_task_network(name, k).train(), config.task_lr, precision, task_loss(config),
                          config.task_optimizer)
    feature = FeatureAlignment(f_s, config.feature_lr, precision, config.lambda_task, config.lambda_feature,
                               optimizer=config.feature_optimizer, **game)
    pixel = cyclegan_model(config.pixel_config(""), semantic_consistency(config, f_s))
    b_task, b_feat = config.task_batch_size, config.feature_batch_size
    return {
        "classifier": (lambda side: task.train_step(images(b_task, side), labels(b_task, config, side)),
                       train_side(config)),
        "pixel": (cyclegan_step(pixel, config.pixel_batch_size), pixel_side(config)),
        "feature": (lambda side: feature.train_step(images(b_feat, side), labels(b_feat, config, side),
                                                    images(b_feat, side)), train_side(config)),
    }


def train_size(config: cyclelib.CyCADAConfig, domain: str) -> int:
    """Training images of ``domain`` per epoch (``gta5:PATH`` counts as ``gta5``): its train split, at most
    ``max_samples``."""
    n = TRAIN_SIZES[domain.split(":")[0]]
    return min(n, config.max_samples or n)


def stage_steps(config: cyclelib.CyCADAConfig) -> dict[str, int]:
    """Training steps of every stage of ``run_cycada`` at ``config``, and of chapter 7's sweep."""
    src, tgt = train_size(config, config.source), train_size(config, config.target)
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
    assert set(steps) == set(STAGES)
    steps = {stage: steps[stage] for stage in STAGES}  # in the order run_cycada trains them
    steps["chapter 7 sweep"] = SWEEP_RUNS * max(1, pixel_epochs // SWEEP_SHARE) * pixel_per_epoch
    return steps


KIND = {"source": "classifier", "pixel": "pixel", "pixel_only": "classifier", "feature_only": "feature",
        "feature": "feature", "oracle": "classifier", "chapter 7 sweep": "pixel"}


def hours(steps: int, cost: tuple[int, int], fraction: float, op_us: float) -> dict[str, float]:
    """Hours per GPU of ``steps`` steps of ``cost`` (FLOPs, operators) each."""
    flops, ops = cost
    return {gpu: (steps * flops / (fraction * peak * 1e12) + steps * ops * op_us * 1e-6) / 3600
            for gpu, (peak, _) in GPUS.items()}


def row(name: str, steps: int, cost: tuple[int, int], fraction: float, op_us: float) -> dict:
    flops, ops = cost
    return {"stage": name, "steps": steps, "gflop_per_step": flops / 1e9, "ops_per_step": ops,
            "pflop": steps * flops / 1e15, "hours": hours(steps, cost, fraction, op_us)}


def total(name: str, rows: list[dict]) -> dict:
    return {"stage": name, "steps": sum(r["steps"] for r in rows), "pflop": sum(r["pflop"] for r in rows),
            "hours": {gpu: sum(r["hours"][gpu] for r in rows) for gpu in GPUS}}


def cycada_rows(config: cyclelib.CyCADAConfig, stages, fraction: float, op_us: float) -> list[dict]:
    costs, steps = step_costs(config), stage_steps(config)
    return [row(stage, steps[stage], costs[KIND[stage]], fraction, op_us) for stage in stages]


def pair_config(pair: str) -> cyclelib.CyCADAConfig:
    """The gpu scale's config of a ``source:target`` pair: digits, or GTA5 -> Cityscapes (``gta5:cityscapes``:
    segmentation of the driving scenes, their preset)."""
    source, target = pair.split(":")
    if source in DRIVING:
        return cyclelib.CyCADAConfig.for_scale("gpu", task="segmentation", source=DRIVING[source],
                                               target=DRIVING[target], device="cpu")
    return cyclelib.CyCADAConfig.for_scale("gpu", source=source, target=target, device="cpu")


PRESET_KEYS = ("classifier", "image_size", "netG", "ngf", "netD", "ndf", "task_epochs", "task_batch_size",
               "pixel_epochs", "pixel_epochs_decay", "pixel_batch_size", "feature_epochs", "feature_batch_size")
DRIVING_KEYS = ("crop_size", "pixel_crop_size", "task_optimizer", "feature_optimizer")  # the driving preset's own


def estimate(pair: str, fraction: float, op_us: float) -> dict:
    """The estimate for one ``source:target`` pair at the gpu scale: per stage, steps, FLOPs and hours per GPU
    (and chapter 7's sweep of the digit pairs)."""
    source, target = pair.split(":")
    config = pair_config(pair)
    driving = source in DRIVING
    rows = cycada_rows(config, STAGES if driving else (*STAGES, "chapter 7 sweep"), fraction, op_us)
    preset = {k: getattr(config, k) for k in PRESET_KEYS + (DRIVING_KEYS if driving else ())}
    preset["classifier"] = classifier_name(config)
    return {"pair": pair, "train_sizes": {source: TRAIN_SIZES[source], target: TRAIN_SIZES[target]},
            "preset": preset, "stages": rows, "total": total("run_cycada (all six stages)", rows[:len(STAGES)])}


def cyclegan_row(name: str, config: cyclelib.CycleGANConfig, domain: str, fraction: float, op_us: float) -> dict:
    """One CycleGAN run of a chapter: ``domain``'s train images (both domains as many), at most
    ``max_dataset_size``, in batches of ``batch_size``, the last one partial."""
    n = min(TRAIN_SIZES[domain], config.max_dataset_size or TRAIN_SIZES[domain])
    steps = (config.n_epochs + config.n_epochs_decay) * math.ceil(n / config.batch_size)
    torch.manual_seed(0)
    return row(name, steps, cyclegan_cost(cyclegan_model(config), config.batch_size, config.crop_size), fraction, op_us)


def chapter_rows(scale: str, fraction: float, op_us: float) -> dict[str, list[dict]]:
    """What each chapter of the book trains at ``scale`` (its notebook run alone, from an empty folder):
    one row per run or stage. The notebooks size their runs by the scale's presets at the GPU scales."""
    digits = dict(data="mnist5k:mnistm5k", lambda_identity=0.0)
    adversarial = cyclelib.CycleGANConfig.for_scale(scale, **digits, lambda_A=0.0, lambda_B=0.0)
    cycle = cyclelib.CycleGANConfig.for_scale(scale, **digits)
    full = cyclelib.CycleGANConfig.for_scale(scale, data="mnist5k:mnistm5k")
    photos = dict(data="photos", preprocess="none", load_size=64, crop_size=64, lambda_A=10.0, lambda_B=10.0)
    offline = cyclelib.CyCADAConfig.for_scale(scale, source="mnist5k", target="mnistm5k", device="cpu")
    oracle = dataclasses.replace(offline, classifier="lenet")  # chapters 2-3 read translations with it
    remedy = dataclasses.replace(offline, **REMEDY)  # chapter 10: the offline pair at every scale
    # chapter 11: the offline digit scenes at every scale (no preset sizes a GTA5 -> Cityscapes run yet)
    scenes = cyclelib.CyCADAConfig.for_scale(scale, task="segmentation", source="mnist-scenes",
                                             target="mnistm-scenes", device="cpu")
    # chapters 6-9: the paper's first pair at the gpu scale (their configuration cell), else the offline one
    cycada = dataclasses.replace(offline, source="mnist", target="usps") if scale == "gpu" else offline
    c = lambda *a: cyclegan_row(*a, fraction, op_us)  # noqa: E731
    return {
        "01_introduction": [],
        "02_adversarial_loss": [c("CycleGAN, adversarial terms only", adversarial, "mnist5k"),
                                *cycada_rows(oracle, ("oracle",), fraction, op_us)],
        "03_cycle_consistency": [c("CycleGAN, adversarial terms only", adversarial, "mnist5k"),
                                 c("CycleGAN, with cycle", cycle, "mnist5k"),
                                 *cycada_rows(oracle, ("oracle",), fraction, op_us)],
        "04_identity_loss": [c(f"CycleGAN on photos, identity {weight:g}",
                               cyclelib.CycleGANConfig.for_scale(scale, **photos, lambda_identity=weight), "photos")
                             for weight in (0.0, 0.5)],
        "05_training_cyclegan": [c("CycleGAN", full, "mnist5k")],
        "06_cycada_task_loss": cycada_rows(cycada, ("source",), fraction, op_us),
        "07_cycada_pixel_level": cycada_rows(cycada, ("source", "pixel", "chapter 7 sweep"), fraction, op_us),
        "08_cycada_feature_level": cycada_rows(cycada, ("source", "pixel", "pixel_only", "feature"), fraction, op_us),
        "09_cycada_results": cycada_rows(cycada, STAGES, fraction, op_us),
        "10_beyond_the_paper": cycada_rows(remedy, STAGES, fraction, op_us),
        "11_cycada_segmentation": cycada_rows(scenes, STAGES, fraction, op_us),
    }


def chapters(fraction: float, op_us: float) -> dict[str, dict[str, dict]]:
    """``{chapter: {scale: {"runs": rows, "total": row}}}`` at the GPU scales."""
    by_scale = {scale: chapter_rows(scale, fraction, op_us) for scale in GPU_SCALES}
    return {chapter: {scale: {"runs": by_scale[scale][chapter], "total": total("chapter", by_scale[scale][chapter])}
                      for scale in GPU_SCALES}
            for chapter in by_scale[GPU_SCALES[0]]}


def format_table(results: dict) -> str:
    a = results["assumptions"]
    gpus = ", ".join(f"{gpu} {peak:g} TFLOP/s {dtype}" for gpu, (peak, dtype) in GPUS.items())
    lines = [f"Estimated hours on one GPU, assuming {a['fraction']:.0%} of the dense peak "
             f"({gpus}) and {a['op_us']:g} us per ATen operator; an estimate, not a measurement"]
    header = f"{'stage':<36} {'steps':>8} {'GFLOP/step':>11} {'ops/step':>9} {'PFLOP':>8}" + "".join(
        f" {gpu + ' h':>8}" for gpu in GPUS)

    def line(row: dict) -> str:
        per_step = (f"{row['gflop_per_step']:>11.2f} {row['ops_per_step']:>9}" if "gflop_per_step" in row
                    else f"{'':>11} {'':>9}")
        return f"{row['stage']:<36} {row['steps']:>8} {per_step} {row['pflop']:>8.3f}" + "".join(
            f" {row['hours'][gpu]:>8.2f}" for gpu in GPUS)

    for est in results["pairs"]:
        p = est["preset"]
        crops = (f" (crops: classifier and feature stages {p['crop_size']}, pixel stage {p['pixel_crop_size']})"
                 if "crop_size" in p else "")
        lines += ["", f"gpu scale, {est['pair'].replace(':', ' -> ')}: {p['classifier']}, G {p['netG']} "
                      f"(ngf {p['ngf']}), {p['image_size']}x{p['image_size']}{crops}, train sizes "
                      f"{est['train_sizes']}", header]
        lines += [line(row) for row in est["stages"] + [est["total"]]]
    for scale in GPU_SCALES:
        lines += ["", f"Each chapter's notebook, run alone at the {scale} scale", header]
        for chapter, by_scale in results["chapters"].items():
            lines += [line({**r, "stage": f"{chapter[:2]} {r['stage']}"}) for r in by_scale[scale]["runs"]]
            lines.append(line({**by_scale[scale]["total"], "stage": f"{chapter}"}))
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
               "pairs": [estimate(pair, args.fraction, args.op_us) for pair in args.pairs],
               "chapters": chapters(args.fraction, args.op_us),
               # what the chapters were estimated at (tests/test_colab.py checks that they are today's)
               "presets": {scale: {"cyclegan": CYCLEGAN_PRESETS[scale], "cycada": CYCADA_PRESETS[scale]}
                           for scale in GPU_SCALES}}
    print(format_table(results))
    too_long = {chapter: round(by_scale["colab"]["total"]["hours"]["T4"] * 60)
                for chapter, by_scale in results["chapters"].items()
                if by_scale["colab"]["total"]["hours"]["T4"] * 60 > COLAB_MINUTES}
    if too_long:
        sys.exit(f"chapters over {COLAB_MINUTES} minutes on a T4 at the colab scale (minutes): {too_long}; "
                 f"shrink the colab presets in cyclelib/config.py")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
        print(f"written to {args.json}")
    return results


if __name__ == "__main__":
    main()
