"""Benchmark of the CycleGAN training step: the fast path against the official reference.

    python benchmarks/bench_cyclegan.py --size 128 --batch 1 4
    cyclelib bench --arch resnet_9blocks --size 256 --batch 1 --json bench.json

For each batch size it builds one CycleGAN per path from the same seed (same weights, same
images) and times their training steps alternately, in the order A B B A A B ..., so that a
change of machine load hits both paths alike; then the same for translation (G_A, no
gradient). It reports the median step as iterations/s and images/s (one image per domain
per batch element), the ratio fast/reference, and peak memory:

- CUDA: ``torch.cuda.max_memory_allocated`` over the timed steps, and the achieved
  TFLOP/s: the FLOPs of one step counted by ``FlopCounterMode`` (the same for both paths:
  grouping changes how the convolutions are called, not how many FLOPs they do) over the
  median step time, against the GPU's bf16 dense peak when the device is known.
- CPU: the peak resident memory (Linux VmHWM, else ``getrusage`` maxrss) of a fresh
  process that runs two steps of the path, since a process's peak cannot be reset
  between the two paths. It includes torch itself; the JSON also has the resident
  memory just before the steps.

Compile time (``--compile``) is spent in the warm-up steps and never counted.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time

import torch

from . import files
from .arguments import add_bench_arguments
from .config import IMPLEMENTATIONS as PATHS, CycleGANConfig
from .cyclegan import CycleGAN
from .runtime import cudnn_autotune, native_bf16, pick_device

# bf16 dense tensor-core peaks in TFLOP/s, by a substring of torch.cuda.get_device_name();
# the first match wins, so more specific names come first.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0),
                    ("L40S", 362.0), ("L4", 121.0))


def peak_tflops(device_name: str) -> float | None:
    """The bf16 dense peak of a GPU by name, None when it is not in :data:`PEAK_BF16_TFLOPS`."""
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in device_name), None)


def _settings(args: argparse.Namespace, path: str, batch: int) -> dict:
    """The CycleGANConfig options of one measured model."""
    fast = path == "fast"
    return dict(netG=args.arch, netD=args.netD, ngf=args.ngf, ndf=args.ndf, batch_size=batch,
                load_size=args.size, crop_size=args.size, device=args.device, implementation=path,
                amp=args.amp if fast else "none", compile=args.compile and fast)


def _build(settings: dict, device: torch.device) -> tuple[CycleGAN, torch.Tensor, torch.Tensor]:
    """A CycleGAN and a batch of images [B, 3, size, size] per domain, the same for every path."""
    torch.manual_seed(0)
    model = CycleGAN(CycleGANConfig(**settings)).to(device).train()
    shape = (settings["batch_size"], 3, settings["crop_size"], settings["crop_size"])
    real_A, real_B = (torch.rand(shape, device=device) * 2 - 1 for _ in range(2))
    return model, real_A, real_B


def _rss_probe(settings: dict, threads: int | None, queue) -> None:
    """Child process: run two training steps (the second with Adam's state allocated: the
    steady-state peak) and report (resident MiB before the steps, peak resident MiB)."""
    if threads:
        torch.set_num_threads(threads)
    model, real_A, real_B = _build(settings, torch.device("cpu"))
    before = _memory_mib("VmRSS")
    for _ in range(2):
        model.train_step(real_A, real_B)
    queue.put((before, _memory_mib("VmHWM")))


def _memory_mib(field: str) -> float | None:
    """VmRSS (resident now) or VmHWM (peak resident) of this process in MiB.

    Linux: from /proc/self/status, which describes this process's own address space;
    ``getrusage``'s maxrss would also count the parent's memory at the fork that spawned
    it, since maxrss survives exec. Elsewhere: maxrss for the peak, None for the current.
    """
    try:
        with open("/proc/self/status") as f:
            kib = next(line.split()[1] for line in f if line.startswith(field + ":"))
        return int(kib) / 1024
    except FileNotFoundError:
        if field != "VmHWM":
            return None
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2 ** 20 if sys.platform == "darwin" else 2 ** 10)


def _cpu_peak_rss(settings: dict[str, dict], threads: int | None) -> dict[str, tuple[float, float]]:
    """Per path: (resident MiB before the steps, peak resident MiB) of a fresh process of its own.

    The processes run side by side: each one's peak is its own, and no timing is taken there.
    """
    ctx = multiprocessing.get_context("spawn")  # fresh: no memory inherited from this process
    queues = {path: ctx.Queue() for path in settings}
    children = {path: ctx.Process(target=_rss_probe, args=(options, threads, queues[path]))
                for path, options in settings.items()}
    for child in children.values():
        child.start()
    for path, child in children.items():
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"the memory probe of the {path} path failed (exit code {child.exitcode})")
    return {path: queue.get() for path, queue in queues.items()}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (FileNotFoundError, StopIteration):
        return platform.processor() or platform.machine()


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the step is queued work: wait until it has run
    return time.perf_counter() - t0


def _interleaved(work: dict, steps: int, device: torch.device) -> tuple[dict, dict]:
    """Run each callable of ``work`` ``steps`` times, alternating A B B A ...; seconds per run
    and (CUDA) the peak allocated MiB of each."""
    times = {name: [] for name in work}
    peaks = {name: 0.0 for name in work}
    names = list(work)
    for i in range(steps):
        for name in names if i % 2 == 0 else names[::-1]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times[name].append(_timed(work[name], device))
            if device.type == "cuda":
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated(device) / 2 ** 20)
    return times, peaks


def _step_flops(model: CycleGAN, real_A: torch.Tensor, real_B: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model.train_step(real_A, real_B)
    return counter.get_total_flops()


def run(args: argparse.Namespace) -> dict:
    """Measure every batch size of ``args``; returns the results (see :func:`format_table`)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else _cpu_name()
    machine = {"device": str(device), "name": name, "threads": torch.get_num_threads(),
               "torch": torch.__version__, "load_before": os.getloadavg(), "native_bf16": native_bf16(device),
               "cpu_capability": None if cuda else torch.backends.cpu.get_cpu_capability(),
               "peak_bf16_tflops": peak_tflops(name) if cuda else None}
    with cudnn_autotune(cuda):  # as training does
        rows = [row for batch in args.batch for row in _measure(args, batch, device, machine)]
    machine["load_after"] = os.getloadavg()
    return {"settings": {k: v for k, v in vars(args).items() if k not in ("run", "command", "json")},
            "machine": machine, "results": rows, "ratios": _ratios(rows)}


def _measure(args: argparse.Namespace, batch: int, device: torch.device, machine: dict) -> list[dict]:
    """One row per path for one batch size: training steps, then translation, timed interleaved."""
    cuda = device.type == "cuda"
    built = {path: _build(_settings(args, path, batch), device) for path in PATHS}
    steps = {path: (lambda m=m, a=a, b=b: m.train_step(a, b)) for path, (m, a, b) in built.items()}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    step_times, step_peaks = _interleaved(steps, args.steps, device)
    flops = _step_flops(*built["reference"]) if cuda else None

    for model, _, _ in built.values():
        model.eval()
    # translation in each path's training precision (translate's default is fp32)
    translate = {path: (lambda m=m, a=a, amp=m.config.amp if path == "fast" else "none": m.translate(a, amp=amp))
                 for path, (m, a, _) in built.items()}
    for _ in range(args.warmup):
        for fn in translate.values():
            fn()
    translate_times, _ = _interleaved(translate, args.steps, device)

    rss = None if cuda else _cpu_peak_rss({path: _settings(args, path, batch) for path in PATHS}, args.threads)
    rows = []
    for path, (model, _, _) in built.items():
        median = statistics.median(step_times[path])
        row = {"batch": batch, "path": path, "amp": str(model.precision.dtype or "fp32").replace("torch.", ""),
               "step_s": step_times[path], "median_step_s": median, "it_per_s": 1 / median,
               "img_per_s": batch / median,
               "translate_img_per_s": batch / statistics.median(translate_times[path])}
        if cuda:
            row["peak_mib"] = step_peaks[path]
            row["tflops"] = flops / median / 1e12
            if machine["peak_bf16_tflops"]:
                row["percent_of_peak"] = 100 * row["tflops"] / machine["peak_bf16_tflops"]
        else:
            row["rss_before_mib"], row["peak_mib"] = rss[path]
        rows.append(row)
    return rows


def _ratios(rows: list[dict]) -> list[dict]:
    by = {(r["batch"], r["path"]): r for r in rows}
    return [{"batch": batch,
             "train": by[batch, "fast"]["it_per_s"] / by[batch, "reference"]["it_per_s"],
             "translate": by[batch, "fast"]["translate_img_per_s"] / by[batch, "reference"]["translate_img_per_s"]}
            for batch in dict.fromkeys(r["batch"] for r in rows)]


def format_table(results: dict) -> str:
    s, m = results["settings"], results["machine"]
    load = lambda key: " ".join(f"{x:.1f}" for x in m[key])
    lines = [f"CycleGAN training step: {s['arch']} (ngf {s['ngf']}) + {s['netD']} (ndf {s['ndf']}), "
             f"{s['size']}x{s['size']}, {s['steps']} timed steps after {s['warmup']} warm-up"
             f"{', fast path compiled' if s['compile'] else ''}",
             f"{m['device']} ({m['name']}{'' if m['cpu_capability'] is None else ', ' + m['cpu_capability']}), "
             f"native bf16: {'yes' if m['native_bf16'] else 'no'}, {m['threads']} threads, torch {m['torch']}, "
             f"load average {load('load_before')} before, {load('load_after')} after"]
    cuda = m["device"].startswith("cuda")
    head = f"{'batch':>5}  {'path':<9}  {'amp':<8} {'it/s':>8} {'img/s':>8} {'ms/step':>9} {'peak MiB':>9}"
    head += f" {'TFLOP/s':>8} {'% peak':>7}" if cuda else ""
    lines += [head + f" {'translate img/s':>16}"]
    for ratio in results["ratios"]:
        for row in (r for r in results["results"] if r["batch"] == ratio["batch"]):
            line = (f"{row['batch']:>5}  {row['path']:<9}  {row['amp']:<8} {row['it_per_s']:>8.3f} "
                    f"{row['img_per_s']:>8.3f} {1000 * row['median_step_s']:>9.1f} {row['peak_mib']:>9.0f}")
            if cuda:
                pct = row.get("percent_of_peak")
                line += f" {row['tflops']:>8.1f} {'-' if pct is None else f'{pct:.1f}':>7}"
            lines.append(line + f" {row['translate_img_per_s']:>16.2f}")
        lines.append(f"{ratio['batch']:>5}  fast/reference: training {ratio['train']:.2f}x, "
                     f"translation {ratio['translate']:.2f}x")
    if not cuda:
        lines.append("peak MiB: resident memory of a process running two steps (torch itself included)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench_cyclegan", description=__doc__.splitlines()[0])
    add_bench_arguments(parser)
    return run_and_report(parser.parse_args(argv))


def run_and_report(args: argparse.Namespace) -> dict:
    """Run, print the table, and write ``args.json`` when given."""
    results = run(args)
    print(format_table(results))
    if args.json:
        files.write_json(args.json, results)
        print(f"results written to {args.json}")
    sys.stdout.flush()
    return results
