"""One command that checks a GPU: does the whole CUDA path work, and how fast is it?

    make gpu-check                                   # = python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --json out.json --only bench,torchrun

In under 8 minutes on one GPU, it runs six steps, each in a process of its own
with its own time box (a step that overruns is killed and fails):

  device-tests  tests/test_device.py with CYCLELIB_TEST_DEVICE=cuda: fast path = reference in
                fp32 (TF32 off, and on), bf16 autocast, fp16 with the grad scaler,
                channels_last, resume against a straight run (tolerances: that file)
  bench         cyclelib bench: resnet_9blocks at 256x256, batch 1 and 8, fast and reference
                paths; steps/s, images/s, peak memory, TFLOP/s against the GPU's bf16 peak
  cycada        cyclelib train cycada --scale smoke --device cuda: every stage, then evaluation
  segmentation  the same with --task segmentation on the digit scenes (mnist-scenes -> mnistm-scenes):
                every stage per pixel, then mIoU per stage
  torchrun      torchrun --standalone --nproc_per_node 1 -m cyclelib train cyclegan --scale smoke:
                one rank joins a process group (NCCL on the GPU), all-reduces its losses every
                step and writes the checkpoint; NCCL_DEBUG=INFO shows that NCCL initialised
  fid           cyclelib.evaluate_folders with torch-fidelity's real Inception-v3 on 24 photos
                against their poster-painted versions: FID and KID (the weights are downloaded
                once and cached; where they cannot be, the step passes as skipped with the reason)

Each step's command, what it reads back and its summary line are in gpu_check_steps.py; this
file runs them. It prints a table and writes every step's result, seconds and key numbers to one JSON file
(default gpu-check.json); the exit code is 0 only when every step passed. Without CUDA it
says so and makes a CPU dry run of the same steps at smoke size (gloo instead of NCCL):
that checks the check, not a GPU.

Time on an H200 (estimate; nothing here has met a GPU yet): device tests ~30 s, bench
~45 s (1.9 TFLOP per reference step at batch 1, 15 at batch 8, plus cuDNN autotuning),
CyCADA ~40 s, CyCADA for segmentation ~30 s, torchrun ~25 s, FID ~20 s: about 3.5 minutes. The boxes
(150 + 150 + 90 + 60 + 60 + 90 s) and a budget of 450 s for the whole run bound it below 8 minutes whatever happens.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# this checkout's cyclelib, whatever else is installed; and the steps beside this file, also when it is
# loaded by path (the tests) rather than run as a script
for folder in (ROOT, ROOT / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
from gpu_check_steps import Context, Step, default_steps  # noqa: E402

BUDGET_S = 450  # the whole run; each step also has its own box


# --------------------------------------------------------------------------- running

def run_step(step: Step, ctx: Context, time_left: float) -> dict:
    """Run one step in its own session (so that a timeout kills its children too)."""
    box = min(step.box_s, time_left)
    result = {"name": step.name, "what": step.what, "box_s": round(box, 1)}
    if box < min(step.box_s, 5):  # less than 5 s left, and less than the step's own box
        return {**result, "status": "not run", "passed": False, "seconds": 0.0,
                "problems": ["the time budget was spent before this step"]}
    log_path = ctx.work / f"{step.name}.log"
    env = {**os.environ, **step.env(ctx),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if ctx.device == "cpu":
        # One thread per process unless told otherwise: on a small shared machine, torch's
        # threads otherwise spin waiting for each other (3-4x slower on 2 busy cores).
        env.setdefault("OMP_NUM_THREADS", "1")
    command = step.command(ctx)
    start = time.monotonic()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = process.wait(timeout=box)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the step's whole session: torchrun's workers too
            code = process.wait()
            timed_out = True
    seconds = time.monotonic() - start
    text = log_path.read_text(errors="replace")
    try:
        numbers, problems = step.read(ctx, text)
    except Exception as e:  # a report that cannot be read is a failure of the step, not of the check
        numbers, problems = {}, [f"reading the results failed: {type(e).__name__}: {e}"]
    if timed_out:
        problems.insert(0, f"timed out after {box:.0f} s")
    elif code != 0:
        problems.insert(0, f"exit code {code}")
    passed = not problems
    result.update(status="passed" if passed else "timed out" if timed_out else "failed", passed=passed,
                  seconds=round(seconds, 1), exit_code=code, numbers=numbers, problems=problems,
                  summary=_safe(step.summary, numbers), log=str(log_path))
    if not passed:
        result["log_tail"] = text[-3000:]
    return result


def _safe(fn, numbers) -> str:
    try:
        return fn(numbers)
    except Exception:
        return ""


def machine_info(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "host": platform.node(),
            "cpu_count": os.cpu_count(), "cuda_available": torch.cuda.is_available()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                    gpu_count=torch.cuda.device_count(), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), capability=f"{props.major}.{props.minor}")
    return info


def format_summary(summary: dict) -> str:
    m = summary["machine"]
    where = f"cuda ({m.get('gpu')}, CUDA {m.get('cuda')}, cuDNN {m.get('cudnn')})" if summary["device"] == "cuda" \
        else "cpu (dry run at smoke size)"
    lines = [f"gpu-check on {where}, torch {m['torch']}: "
             f"{'all steps passed' if summary['passed'] else 'FAILED'} in {summary['seconds']:.0f} s",
             f"{'step':<13} {'result':<10} {'seconds':>7} {'box':>5}  key numbers"]
    for s in summary["steps"]:
        lines.append(f"{s['name']:<13} {s['status']:<10} {s['seconds']:>7.1f} {s['box_s']:>5.0f}  "
                     f"{s.get('summary', '')}")
        lines += [f"{'':<13} ! {problem}" for problem in s.get("problems", [])[:5]]
    return "\n".join(lines)


def main(argv: list[str] | None = None, steps: list[Step] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="gpu-check.json", help="where to write the summary (default: gpu-check.json)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="auto (default): CUDA when present, else a CPU dry run")
    parser.add_argument("--smoke", action="store_true", help="smoke sizes on CUDA too (a quick run)")
    parser.add_argument("--only", help="comma-separated steps to run (default: all)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help=f"seconds for all steps (default {BUDGET_S})")
    parser.add_argument("--work", help="folder for the steps' outputs and logs (default: a temporary one, "
                                       "kept when a step fails)")
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        print("gpu_check: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and cuda) else "cpu"
    if device == "cpu":
        print("No CUDA device: " if not cuda else "", end="")
        print("CPU dry run of the same steps at smoke size (gloo instead of NCCL); it checks the check, not a GPU.")
    steps = steps if steps is not None else default_steps()
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {s.name for s in steps}
        if unknown:
            parser.error(f"unknown step(s) {', '.join(sorted(unknown))}; steps: {', '.join(s.name for s in steps)}")
        steps = [s for s in steps if s.name in wanted]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(device=device, smoke=args.smoke or device == "cpu", work=work)

    start = time.monotonic()
    summary = {"device": device, "dry_run": device == "cpu", "smoke": ctx.smoke, "machine": machine_info(device),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "budget_s": args.budget, "steps": []}
    for i, step in enumerate(steps, 1):
        print(f"[{i}/{len(steps)}] {step.name}: {step.what} (box {step.box_s:.0f} s) ...", flush=True)
        result = run_step(step, ctx, args.budget - (time.monotonic() - start))
        print(f"      {result['status']} in {result['seconds']:.1f} s  {result.get('summary', '')}", flush=True)
        for problem in result.get("problems", []):
            print(f"      ! {problem}")
        if not result["passed"] and result.get("log_tail"):
            print("      last lines of " + result.get("log", "the log") + ":")
            print("\n".join("        " + line for line in result["log_tail"].splitlines()[-15:]))
        summary["steps"].append(result)
    summary["seconds"] = round(time.monotonic() - start, 1)
    summary["passed"] = all(s["passed"] for s in summary["steps"])
    keep = bool(args.work) or not summary["passed"]
    summary["work"] = str(work) if keep else None  # logs and outputs (a passed run's temporary ones go)

    print()
    if any(s["name"] == "bench" for s in summary["steps"]) and (work / "bench.json").is_file():
        from cyclelib.bench import format_table

        print(format_table(json.loads((work / "bench.json").read_text())))
        print()
    if not keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        for s in summary["steps"]:
            s.pop("log", None)
    Path(args.json).write_text(json.dumps(summary, indent=1))
    print(format_summary(summary))
    print(f"summary written to {args.json}" + (f"; logs and outputs in {work}" if keep else ""))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
