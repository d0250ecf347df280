"""Peak memory (RSS) of translating one large image on the CPU, tiled against whole.

    python benchmarks/tile_memory.py                       # 4000x3000, tiles of 512, overlap 64
    python benchmarks/tile_memory.py --whole 2000x1500     # also the whole-image pass at that size

Each measurement runs in a process of its own (``ru_maxrss`` is a process's peak), with a random
resnet_9blocks generator at ngf 64 in fp32 (memory does not depend on the weights' values) and a
random image. It prints the peak RSS, the part of it that is the model and the image (measured
before translating) and the seconds taken. The whole-image pass needs about 0.94 KB per pixel of
activations (see cyclelib.tiles), ~11 GB at 4000x3000: give it a smaller size on a small machine
and scale by the pixels.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch


def measure(mode: str, height: int, width: int, tile: int, overlap: int, arch: str, ngf: int) -> None:
    from cyclelib import build_generator
    from cyclelib.tiles import translate_tiled

    generator = build_generator(arch, width=ngf).eval()
    image = torch.rand(1, 3, height, width) * 2 - 1
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (Linux reports KB)
    start = time.perf_counter()
    with torch.no_grad():
        out = translate_tiled(generator, image, tile, overlap) if mode == "tiled" else generator(image)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert out.shape[-2:] == image.shape[-2:]
    print(f"{mode:5}  {width}x{height}  peak RSS {peak:7.0f} MB  (model, image and Python before: "
          f"{before:5.0f} MB)  {seconds:6.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the tiled run (default 4000x3000)")
    parser.add_argument("--whole", default=None, metavar="WIDTHxHEIGHT",
                        help="also translate an image of this size whole (default: not at all)")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--arch", default="resnet_9blocks")
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--measure", choices=("tiled", "whole"), help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        width, height = map(int, (args.whole if args.measure == "whole" else args.size).split("x"))
        return measure(args.measure, height, width, args.tile, args.overlap, args.arch, args.ngf)
    print(f"{args.arch}, ngf {args.ngf}, fp32 on the CPU ({torch.get_num_threads()} threads), "
          f"tile {args.tile}, overlap {args.overlap}")
    for mode in ("tiled", "whole") if args.whole else ("tiled",):
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--measure", mode], check=True)


if __name__ == "__main__":
    main()
