"""Fingerprint of what training computes: run a few fixed trainings through the CLI and print
one SHA-256 per output (metrics, history without wall times, the weights of every checkpoint).

A refactor that must not change the numerics prints the same fingerprint before and after, on
the same machine (kernels differ between CPUs):

    OMP_NUM_THREADS=1 PYTHONPATH=OLD python benchmarks/numerics_fingerprint.py --out /tmp/a > a.json
    OMP_NUM_THREADS=1 PYTHONPATH=NEW python benchmarks/numerics_fingerprint.py --out /tmp/b > b.json
    diff a.json b.json

Runs: CycleGAN on the digits and on a photo folder pair at the smoke scale, CycleGAN at the cpu
scale for 20 steps, CyCADA's six stages at the smoke scale on both cpu digit pairs and its source
stage at the cpu scale.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

RUNS = {
    "cyclegan-digits-smoke": ["train", "cyclegan", "--data", "mnist5k:mnistm5k", "--scale", "smoke"],
    "cyclegan-digits-cpu-20": ["train", "cyclegan", "--data", "mnist5k:mnistm5k", "--scale", "cpu",
                               "--max-steps", "20"],
    "cycada-mnist-smoke": ["train", "cycada", "--source", "mnist5k", "--target", "mnistm5k", "--scale", "smoke"],
    "cycada-mnist-cpu-source": ["train", "cycada", "--source", "mnist5k", "--target", "mnistm5k", "--scale", "cpu",
                                "--stages", "source"],
    "cycada-uci-smoke": ["train", "cycada", "--source", "uci-digits", "--target", "mnist5k", "--scale", "smoke"],
}
# Keys that hold wall-clock time or where the run lies, not what it computed.
VOLATILE = ("wall", "time", "seconds", "out", "path", "started", "elapsed", "it_s", "steps_per_s")


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not any(w in k.lower() for w in VOLATILE)}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _tensors(value, prefix=""):
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            yield from _tensors(value[k], f"{prefix}/{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{prefix}/{i}")


def fingerprint(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        digest = hashlib.sha256()
        if path.suffix == ".json" and path.name not in ("config.json", "wall_times.json"):
            digest.update(json.dumps(_strip(json.loads(path.read_text())), sort_keys=True).encode())
        elif path.suffix in (".pt", ".pth"):
            state = torch.load(path, map_location="cpu", weights_only=True)
            # The weights (a cyclelib checkpoint's "nets"; an official file is all weights) fix
            # the numerics; the training state around them may gain fields between versions.
            for key, tensor in _tensors(state.get("nets", state)):
                digest.update(key.encode())
                digest.update(tensor.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
                              if tensor.numel() else b"")
        else:
            continue
        out[name] = digest.hexdigest()[:16]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="an empty folder for the runs")
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CYCLELIB_SCALE": ""}
    result = {}
    for name in args.runs:
        folder = Path(args.out) / name
        command = [sys.executable, "-m", "cyclelib", *RUNS[name], "--out", str(folder), "--device", "cpu"]
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        result[name] = fingerprint(folder)
        print(f"{name}: {len(result[name])} files", file=sys.stderr)
    print(json.dumps(result, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
