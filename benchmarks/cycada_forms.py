"""CyCADA in the paper's form, the release's form and the two single changes that matter most,
seed by seed, on one of the book's offline pairs at the cpu scale (issue 25).

For each seed the paper's form runs first (every stage, one ``cyclelib train cycada`` command);
each other form then starts from a copy of the paper run's stage folders that its options leave
unchanged (the reuse checks of :func:`cyclelib.cycada.stage_checkpoint` decide), so the runs of one
seed share their earlier stages and their differences can be read per seed. Every run's
``metrics.json`` is copied to ``RESULTS/<pair>/<form>/seed<K>/metrics.json``, with the command
that made it in ``command.txt``. ``cyclelib.book.form_comparison`` reads them.

    OMP_NUM_THREADS=1 python benchmarks/cycada_forms.py --source uci-digits --target mnist5k \\
        --seeds 0 1 2 --runs runs/forms --results cyclelib/results/cycada/forms
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from cyclelib import files
from cyclelib.config import CyCADAConfig
from cyclelib.cycada import STAGES, stage_checkpoint
from cyclelib.presets import FORM_VARIANTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--forms", nargs="+", default=list(FORM_VARIANTS), choices=list(FORM_VARIANTS))
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--runs", type=Path, required=True, help="where the run folders go (not committed)")
    parser.add_argument("--results", type=Path, required=True, help="where each run's metrics.json is copied")
    args = parser.parse_args()
    pair = f"{args.source}-to-{args.target}"
    for seed in args.seeds:
        paper = args.runs / pair / f"seed{seed}" / "paper"
        for form in args.forms:
            out = args.runs / pair / f"seed{seed}" / form
            base, options = FORM_VARIANTS[form]
            command = ["cyclelib", "train", "cycada", "--source", args.source, "--target", args.target,
                       "--scale", args.scale, "--seed", str(seed), "--out", str(out), "--form", base,
                       *(f"--{name.replace('_', '-')}={value:g}" if isinstance(value, float)
                         else f"--{name.replace('_', '-')}={value}" for name, value in options.items())]
            if form != "paper" and not (paper / "metrics.json").exists():  # nothing to pair it with
                parser.error(f"{paper} holds no finished run of the paper's form: run it first (--forms paper), "
                             "the other forms start from its stages")
            if form != "paper" and not out.exists():
                _copy_shared_stages(paper, out, CyCADAConfig.for_scale(
                    args.scale, base, source=args.source, target=args.target, seed=seed, out=str(paper), **options))
            print("$", shlex.join(command), flush=True)
            subprocess.run([sys.executable, "-m", "cyclelib", *command[1:]], check=True)
            kept = args.results / pair / form / f"seed{seed}"
            kept.mkdir(parents=True, exist_ok=True)
            files.write_bytes(kept / "metrics.json", (out / "metrics.json").read_bytes())
            files.write_text(kept / "command.txt", "OMP_NUM_THREADS=1 " + shlex.join(command) + "\n")


def _copy_shared_stages(paper: Path, out: Path, config: CyCADAConfig) -> None:
    """Copy into ``out`` each finished stage of the ``paper`` run that ``config`` (pointed at
    ``paper``) would reuse as it is: the stages its options do not change."""
    for stage in STAGES:
        try:
            ckpt = stage_checkpoint(config, stage)
        except ValueError:  # trained with options this form changes: it retrains the stage
            continue
        if ckpt is not None:
            shutil.copytree(paper / stage, out / stage, ignore=shutil.ignore_patterns(".lock"))
            print(f"cycada_forms: {out.name} reuses {paper / stage}", flush=True)


if __name__ == "__main__":
    main()
