"""The domain gap of the offline segmentation pair: mIoU on the target test split of a small FCN trained
on the source (source only) and one trained on the target (oracle), at the cpu scale.

    OMP_NUM_THREADS=1 python benchmarks/segmentation_gap.py --seeds 0

The task loss weights the classes by :data:`~cyclelib.scenes.SCENE_CLASS_WEIGHTS` (background 0.1).

Prints one line per seed and run, then the mean gap; `--json FILE` also writes the numbers.
"""
import argparse
import json
import time

import torch

from cyclelib.losses import segmentation_loss
from cyclelib.metrics import segmentation_metrics
from cyclelib.runtime import seed_everything
from cyclelib.scenes import SCENE_CLASS_WEIGHTS, SCENE_CLASSES, scene_domain
from cyclelib.segnets import SmallFCN


def train(domain, seed: int, epochs: int, width: int, batch_size: int, lr: float) -> SmallFCN:
    seed_everything(seed)
    net = SmallFCN(SCENE_CLASSES, width=width)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    weights = torch.tensor(SCENE_CLASS_WEIGHTS)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for images, labels in torch.utils.data.DataLoader(domain, batch_size=batch_size, shuffle=True,
                                                          generator=order):
            optimiser.zero_grad()
            segmentation_loss(net(images), labels, class_weights=weights).backward()
            optimiser.step()
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train", type=int, default=2000, help="train scenes per domain")
    parser.add_argument("--test", type=int, default=500, help="target test scenes")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    test = scene_domain("mnistm-scenes", "test", count=args.test)
    results = []
    for seed in args.seeds:
        row = {"seed": seed}
        for run, name in (("source_only", "mnist-scenes"), ("oracle", "mnistm-scenes")):
            start = time.perf_counter()
            net = train(scene_domain(name, "train", count=args.train), seed, args.epochs, args.width,
                        args.batch_size, args.lr)
            row[run] = segmentation_metrics(net, test, SCENE_CLASSES)["miou"]
            print(f"seed {seed} {run}: target test mIoU {row[run]:.3f} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
        row["gap"] = row["oracle"] - row["source_only"]
        results.append(row)
    gaps = [r["gap"] for r in results]
    print(f"gap (oracle - source only) per seed: {', '.join(f'{g:.3f}' for g in gaps)}; "
          f"mean {sum(gaps) / len(gaps):.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"options": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
