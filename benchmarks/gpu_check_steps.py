"""The steps of benchmarks/gpu_check.py: for each, the command it runs from the repository root, what
it reads back from its outputs (key numbers and problems) and its line of the summary table.
gpu_check.py runs them, each in a process of its own within its time box."""
from __future__ import annotations

import json
import math
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# CyCADA and the torchrun step train on the offline digit domains (no download).
CYCADA_DOMAINS = ("mnist5k", "mnistm5k")
# CyCADA for segmentation: its run folder and options, on the offline digit scenes
SEGMENTATION = ("segmentation", ["--task", "segmentation", "--source", "mnist-scenes", "--target", "mnistm-scenes"])
TORCHRUN_DATA = "mnist5k:mnistm5k"
TORCHRUN_STEPS = 4


@dataclass
class Context:
    device: str                 # "cuda" or "cpu"
    smoke: bool                 # smoke sizes (the CPU dry run, or --smoke)
    work: Path                  # outputs and logs of every step
    python: str = sys.executable


@dataclass
class Step:
    """One check: a command run from the repository root, and what its outputs say.

    ``read(ctx, log)`` returns ``(numbers, problems)``: the key numbers for the summary and
    a list of what is wrong (empty when the step passed); it runs even when the command
    failed, so that a failed step still reports what it measured.
    """
    name: str
    what: str
    box_s: float
    command: Callable[[Context], list[str]]
    read: Callable[[Context, str], tuple[dict, list[str]]] = lambda ctx, log: ({}, [])
    env: Callable[[Context], dict] = lambda ctx: {}
    summary: Callable[[dict], str] = lambda numbers: ""


# --------------------------------------------------------------------------- device tests

def _device_tests_command(ctx: Context) -> list[str]:
    return [ctx.python, "-m", "pytest", "tests/test_device.py", "-q", "-p", "no:cacheprovider",
            "-o", "junit_family=xunit1", f"--junitxml={ctx.work / 'device-tests.xml'}"]


def _read_device_tests(ctx: Context, log: str) -> tuple[dict, list[str]]:
    path = ctx.work / "device-tests.xml"
    if not path.is_file():
        return {}, ["pytest wrote no report (see the log)"]
    tests = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = next((kind for kind in ("failure", "error", "skipped") if case.find(kind) is not None), "passed")
        props = {p.get("name"): _number(p.get("value")) for p in case.iter("property")}
        tests[case.get("name")] = {"outcome": outcome, "seconds": round(float(case.get("time", 0)), 2), **props}
    counts = {kind: sum(t["outcome"] == kind for t in tests.values())
              for kind in ("passed", "failure", "error", "skipped")}
    problems = [f"{name}: {t['outcome']}" for name, t in tests.items() if t["outcome"] in ("failure", "error")]
    if not tests:
        problems.append("no test ran")
    if ctx.device == "cuda":  # on CUDA every case applies
        problems += [f"{name}: skipped on CUDA" for name, t in tests.items() if t["outcome"] == "skipped"]
    return {"counts": counts, "tests": tests}, problems


def _number(text: str | None):
    """A recorded property back from its text: numbers and lists as JSON, anything else as is."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _device_tests_summary(numbers: dict) -> str:
    c = numbers.get("counts", {})
    parts = [f"{c.get('passed', 0)} passed, {c.get('failure', 0) + c.get('error', 0)} failed, "
             f"{c.get('skipped', 0)} skipped"]
    tests = numbers.get("tests", {})
    fp32 = [t.get("grad_max_rel_l2") for name, t in tests.items() if name.endswith("-fp32]")]
    if fp32 and all(isinstance(x, float) for x in fp32):
        parts.append(f"fp32 grads rel {max(fp32):.1e}")
    bf16 = tests.get("test_bf16_autocast_is_finite_and_close_to_fp32", {}).get("grad_max_rel_l2")
    if isinstance(bf16, float):
        parts.append(f"bf16 grads rel {bf16:.2f}")
    resume = tests.get("test_resume_matches_the_straight_run[auto]", {})
    if isinstance(resume.get("weight_max_abs_diff"), float):
        parts.append(f"resume max diff {resume['weight_max_abs_diff']:.1e}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- benchmark

def _bench_batches(ctx: Context) -> tuple[int, ...]:
    return (2,) if ctx.smoke else (1, 8)  # smoke: one size (on the CPU each spawns two memory probes)


def _bench_options(ctx: Context) -> list[str]:
    batches = ["--batch", *map(str, _bench_batches(ctx))]
    if ctx.smoke:
        return ["--arch", "resnet_1blocks", "--ngf", "4", "--ndf", "4", "--size", "32", *batches,
                "--steps", "2", "--warmup", "1"]
    # 5 warm-up steps: cuDNN autotuning and the caching allocator settle before the timing
    return ["--arch", "resnet_9blocks", "--size", "256", *batches, "--steps", "20", "--warmup", "5"]


def _bench_command(ctx: Context) -> list[str]:
    return [ctx.python, "-m", "cyclelib", "bench", *_bench_options(ctx), "--device", ctx.device,
            "--json", str(ctx.work / "bench.json")]


def _read_bench(ctx: Context, log: str) -> tuple[dict, list[str]]:
    path = ctx.work / "bench.json"
    if not path.is_file():
        return {}, ["the benchmark wrote no results (see the log)"]
    results = json.loads(path.read_text())
    batches = _bench_batches(ctx)
    rows = {(r["batch"], r["path"]): r for r in results["results"]}
    problems = [f"no result for batch {b}, {p} path" for b in batches for p in ("fast", "reference")
                if (b, p) not in rows]
    for (batch, path), r in rows.items():
        if not (math.isfinite(r["median_step_s"]) and r["median_step_s"] > 0):
            problems.append(f"batch {batch} {path}: step time {r['median_step_s']}")
        if ctx.device == "cuda" and not r.get("tflops", 0) > 0:
            problems.append(f"batch {batch} {path}: no TFLOP/s")
    keep = ("amp", "median_step_s", "it_per_s", "img_per_s", "translate_img_per_s", "peak_mib", "tflops",
            "percent_of_peak")
    numbers = {"machine": results["machine"],
               "rows": [{"batch": b, "path": p, **{k: rows[b, p].get(k) for k in keep if k in rows[b, p]}}
                        for b, p in rows],
               "speedup_fast_over_reference": {str(r["batch"]): round(r["train"], 3) for r in results["ratios"]}}
    return numbers, problems


def _bench_summary(numbers: dict) -> str:
    parts = []
    for row in numbers.get("rows", []):
        if row["path"] != "fast":
            continue
        text = f"b{row['batch']} fast {1000 * row['median_step_s']:.0f} ms/step"
        if row.get("tflops") is not None:
            text += f" {row['tflops']:.0f} TFLOP/s"
        if row.get("percent_of_peak") is not None:
            text += f" ({row['percent_of_peak']:.0f}% peak)"
        parts.append(text)
    speedups = numbers.get("speedup_fast_over_reference", {})
    if speedups:
        parts.append("fast/ref " + ", ".join(f"{v:.2f}x" for v in speedups.values()))
    return "; ".join(parts)


# --------------------------------------------------------------------------- CyCADA

def _cycada_command(ctx: Context, run: tuple[str, list[str]] | None = None) -> list[str]:
    """The smoke CyCADA run on the digits, or ``run`` (its folder, its options: :data:`SEGMENTATION`)."""
    folder, options = run or ("cycada", ["--source", CYCADA_DOMAINS[0], "--target", CYCADA_DOMAINS[1]])
    return [ctx.python, "-m", "cyclelib", "train", "cycada", *options, "--scale", "smoke", "--device", ctx.device,
            "--out", str(ctx.work / folder)]


def _read_cycada(ctx: Context, log: str, folder: str = "cycada") -> tuple[dict, list[str]]:
    """Every result of the run in ``folder`` (an accuracy, or for segmentation an mIoU) and each stage's wall time."""
    from cyclelib.cycada import RESULTS, STAGES

    path = ctx.work / folder / "metrics.json"
    if not path.is_file():
        return {}, ["no metrics.json (see the log)"]
    metrics = json.loads(path.read_text())
    keys = [*RESULTS.values(), "label_preservation"]
    numbers = {key: metrics.get(key) for key in keys}
    numbers["wall_s"] = metrics.get("wall_s", {})
    problems = [f"{key}: {metrics.get(key)!r} is no accuracy (mIoU)" for key in keys
                if not (isinstance(metrics.get(key), (int, float)) and 0 <= metrics[key] <= 1)]
    problems += [f"stage {stage} has no wall time (did it run?)" for stage in STAGES if stage not in numbers["wall_s"]]
    return numbers, problems


def _cycada_summary(numbers: dict) -> str:
    acc = ", ".join(f"{k} {numbers[k]:.2f}" for k in ("source_only", "pixel_feature", "label_preservation")
                    if isinstance(numbers.get(k), (int, float)))
    wall = numbers.get("wall_s", {})
    return f"{acc}; stages {sum(wall.values()):.0f} s" if wall else acc


# --------------------------------------------------------------------------- FID and KID

# The real Inception-v3 path of cyclelib.evaluate: two folders of scikit-learn's photos and their
# poster-painted versions. The weights are downloaded once and cached; on a machine that cannot
# fetch them the step passes as skipped, saying why (the arithmetic is tested offline).
_FID_SCRIPT = """
import json, sys
from pathlib import Path
from cyclelib import evaluate_folders, write_photo_pair
work, device = Path(sys.argv[1]), sys.argv[2]
write_photo_pair(work / "photos", size=64, train=4, test=24)
try:
    evaluate_folders(work / "photos" / "testA", work / "photos" / "testB", device=device, out=work / "fid.json")
except OSError as e:
    print(f"SKIPPED: {e}")
"""


def _fid_command(ctx: Context) -> list[str]:
    return [ctx.python, "-c", _FID_SCRIPT, str(ctx.work / "fid"), ctx.device]


def _read_fid(ctx: Context, log: str) -> tuple[dict, list[str]]:
    skipped = next((line for line in log.splitlines() if line.startswith("SKIPPED: ")), None)
    if skipped is not None:
        return {"skipped": skipped.removeprefix("SKIPPED: ")}, []
    path = ctx.work / "fid" / "fid.json"
    if not path.is_file():
        return {}, ["no fid.json (see the log)"]
    result = json.loads(path.read_text())
    numbers = {key: result.get(key) for key in ("fid", "kid_mean", "kid_std", "fake_images", "real_images")}
    problems = [f"{key}: {numbers[key]!r} is not a finite number >= 0" for key in ("fid", "kid_std")
                if not (isinstance(numbers[key], (int, float)) and math.isfinite(numbers[key]) and numbers[key] >= 0)]
    return numbers, problems


def _fid_summary(numbers: dict) -> str:
    if "skipped" in numbers:
        return f"skipped: {numbers['skipped'][:120]}"
    return f"FID {numbers['fid']:.1f}, KID {numbers['kid_mean']:.4f} (photos vs poster paint, 24 each)"


# --------------------------------------------------------------------------- torchrun

def _torchrun_command(ctx: Context) -> list[str]:
    return [ctx.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
            "-m", "cyclelib", "train", "cyclegan", "--scale", "smoke", "--data", TORCHRUN_DATA,
            "--device", ctx.device, "--max-steps", str(TORCHRUN_STEPS), "--out", str(ctx.work / "torchrun")]


def _torchrun_env(ctx: Context) -> dict:
    # NCCL says what it initialised; its INIT subsystem only, so the log stays short.
    return {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT"}


def _read_torchrun(ctx: Context, log: str) -> tuple[dict, list[str]]:
    out = ctx.work / "torchrun"
    problems = [] if (out / "checkpoint.pt").is_file() else ["no checkpoint.pt"]
    history = json.loads((out / "history.json").read_text()) if (out / "history.json").is_file() else []
    # The backend distributed.setup picks; the log shows NCCL's (NCCL_DEBUG), gloo logs nothing
    # (tests/test_gpu_check.py checks that a one-process torchrun joins a gloo group).
    numbers = {"expected_backend": "nccl" if ctx.device == "cuda" else "gloo",
               "steps": history[-1]["step"] if history else 0}
    if numbers["steps"] != TORCHRUN_STEPS:
        problems.append(f"trained {numbers['steps']} steps, expected {TORCHRUN_STEPS}")
    if history:
        numbers["last_losses"] = {k: history[-1][k] for k in ("G", "D_A", "D_B") if k in history[-1]}
        bad = [k for row in history for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
        problems += [f"non-finite loss {k}" for k in dict.fromkeys(bad)]
    if ctx.device == "cuda":
        numbers["nccl_log_lines"] = log.count("NCCL INFO")
        numbers["nccl_init_complete"] = "Init COMPLETE" in log
        version = next((line.split("NCCL version", 1)[1].split()[0] for line in log.splitlines()
                        if "NCCL version" in line), None)
        numbers["nccl_version"] = version
        if not numbers["nccl_log_lines"]:
            problems.append("NCCL printed nothing with NCCL_DEBUG=INFO: the rank did not use NCCL")
    return numbers, problems


def _torchrun_summary(numbers: dict) -> str:
    text = f"{numbers.get('expected_backend')}, {numbers.get('steps')} steps"
    if numbers.get("nccl_version"):
        text += f", NCCL {numbers['nccl_version']}"
    if "nccl_init_complete" in numbers:
        text += ", init complete" if numbers["nccl_init_complete"] else ", no 'Init COMPLETE' line"
    return text


def default_steps() -> list[Step]:
    return [
        Step("device-tests", "tests/test_device.py on the device", 150, _device_tests_command, _read_device_tests,
             lambda ctx: {"CYCLELIB_TEST_DEVICE": ctx.device, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"},
             _device_tests_summary),
        Step("bench", "cyclelib bench, both paths", 150, _bench_command, _read_bench, summary=_bench_summary),
        Step("cycada", "CyCADA, every stage at smoke scale", 90, _cycada_command, _read_cycada,
             summary=_cycada_summary),
        Step("segmentation", "CyCADA for segmentation (digit scenes), every stage at smoke scale", 60,
             lambda ctx: _cycada_command(ctx, SEGMENTATION), lambda ctx, log: _read_cycada(ctx, log, SEGMENTATION[0]),
             summary=_cycada_summary),
        Step("torchrun", "one-process torchrun, CycleGAN smoke", 60, _torchrun_command, _read_torchrun,
             _torchrun_env, _torchrun_summary),
        Step("fid", "FID and KID with the real Inception-v3 (skipped where it cannot be downloaded)", 90,
             _fid_command, _read_fid, summary=_fid_summary),
    ]
