"""What the book reads from the installed package, so that a notebook runs from any folder (Colab):
the committed results of its runs and the estimate of each chapter's time per scale.

Both live in ``cyclelib/results/`` (package data, installed with cyclelib): ``cycada/`` holds the
``metrics.json`` of the runs the chapters compare (its ``README.txt`` names each command), and
``gpu_time_estimate.json`` is the output of ``benchmarks/estimate_gpu_time.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def book_results(name: str = "") -> Path:
    """The path of ``name`` in the book's committed results, e.g. ``"cycada/mnist5k-to-mnistm5k"``
    or ``"gpu_time_estimate.json"`` (``""``: the folder itself). A name that is not there is a
    ``FileNotFoundError`` listing what is."""
    path = (RESULTS / name).resolve()
    if not path.is_relative_to(RESULTS.resolve()) or not path.exists():
        found = sorted(p.relative_to(RESULTS).as_posix() for p in RESULTS.rglob("*") if p.is_file())
        raise FileNotFoundError(f"{name!r} is not among the book's results in {RESULTS}; valid values: "
                                f"{', '.join(found)} or a folder of them")
    return path


def _duration(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{max(1, round(hours * 60))} min"


def chapter_time(chapter: str) -> str:
    """How long the notebook ``chapter`` (e.g. ``"07_cycada_pixel_level"``) trains at each GPU scale,
    as ``benchmarks/estimate_gpu_time.py`` estimated it: one line to print."""
    estimate = json.loads(book_results("gpu_time_estimate.json").read_text())
    if chapter not in estimate["chapters"]:
        raise ValueError(f"no time estimate for chapter {chapter!r}; valid values: {', '.join(estimate['chapters'])}")
    totals = {scale: row["total"]["hours"] for scale, row in estimate["chapters"][chapter].items()}
    if not any(h for hours in totals.values() for h in hours.values()):
        return "this chapter trains nothing: it runs in seconds at every scale"
    gpu_scales = "; ".join(f"{scale} " + ", ".join(f"{_duration(h)} on {gpu}" for gpu, h in hours.items())
                           for scale, hours in totals.items())
    return (f"training time of this chapter by scale: {gpu_scales} (estimated by benchmarks/estimate_gpu_time.py, "
            f"not measured); smoke: seconds; cpu: sized for 2 CPU cores, not estimated")
