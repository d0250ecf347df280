"""Peak memory of ``cyclelib translate`` against the number of images in the folder.

translate streams (reads, translates and writes a batch at a time), so its peak should not grow
with the folder; before it did, every image was decoded first: 2.09 GB for 1,500 images of
256x256 against 0.99 GB for 105. For each count N this makes N random 256x256 PNGs in a
temporary folder and a resnet_9blocks ngf 64 generator in the official format, runs
``python -m cyclelib translate`` over them in a child process and prints the child's peak resident
memory (its ``ru_maxrss``, from ``os.wait4``: Linux and macOS). It prints numbers and asserts nothing.

    python benchmarks/translate_memory.py                      # N = 105 and 1500, on the CPU
    python benchmarks/translate_memory.py --counts 105 --device cuda
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def peak_rss(argv: list[str], env: dict, output: Path, stop_after: int | None) -> tuple[float, float, int]:
    """(peak resident memory in GB, seconds, images written) of the command ``argv``, which must
    succeed, or which is stopped (SIGTERM) once ``stop_after`` images are in ``output``."""
    start, stopped = time.perf_counter(), False
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    while True:
        pid, status, usage = os.wait4(child.pid, 0 if stopped or stop_after is None else os.WNOHANG)
        if pid:
            break
        if len(list(output.glob("*.png"))) >= stop_after:
            child.terminate()
            stopped = True
        else:
            time.sleep(0.5)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    if child.returncode and not stopped:
        raise SystemExit(f"{' '.join(argv)} failed with exit code {child.returncode}")
    written = len(list(output.glob("*.png")))
    kib = usage.ru_maxrss / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB on Linux
    return kib * 1024 / 1e9, time.perf_counter() - start, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[105, 1500], help="numbers of images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop each run once it has written this many images (on a CPU, 1,500 images take an "
                             "hour or more; a peak reached while reading or in the first batches shows earlier)")
    parser.add_argument("--package", type=Path, default=ROOT,
                        help="the checkout whose cyclelib runs (default: this one), e.g. to compare with another")
    args = parser.parse_args()

    import cyclelib  # the generator is written by this checkout's package; only the one measured runs translate

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(args.package), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        generator = cyclelib.save_official(cyclelib.build_generator("resnet_9blocks", width=64),
                                           Path(tmp) / "latest_net_G_A.pth")
        noise = np.random.default_rng(0)
        for n in args.counts:
            images = Path(tmp) / f"images_{n}"
            images.mkdir()
            for i in range(n):
                Image.fromarray(noise.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(images / f"{i:05d}.png")
            output = Path(tmp) / f"out_{n}"
            gb, seconds, written = peak_rss([sys.executable, "-m", "cyclelib", "translate", "--checkpoint",
                                             str(generator), "--input", str(images), "--output", str(output),
                                             "--device", args.device, "--batch-size", str(args.batch_size)],
                                            env, output, args.stop_after)
            print(f"{n:>6} images of 256x256: peak RSS {gb:.2f} GB ({written} written in {seconds:.0f} s, "
                  f"{args.package})", flush=True)

if __name__ == "__main__":
    main()
