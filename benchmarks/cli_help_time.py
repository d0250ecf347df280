"""Wall time of ``python -m cyclelib --help`` and of each subcommand's ``--help`` (issue 23: well under
a second), each the best of a few runs in a fresh process.

    python benchmarks/cli_help_time.py [--repeat 3]
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ([], ["train", "cyclegan"], ["train", "cycada"], ["translate"], ["test"], ["evaluate"], ["export"],
            ["download"], ["bench"])


def help_time(command: list[str], repeat: int) -> float:
    """The fastest of ``repeat`` runs of ``python -m cyclelib COMMAND --help``, in seconds."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cyclelib", *command, "--help"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per command, the fastest counts (default: 3)")
    args = parser.parse_args()
    for command in COMMANDS:
        print(f"{' '.join(['cyclelib', *command, '--help']):<34} {help_time(command, args.repeat):6.3f} s")


if __name__ == "__main__":
    main()
