"""What the book reads from the installed package, so that a notebook runs from any folder (Colab):
the committed results of its runs, the estimate of each chapter's time per scale, and the comparison of
CyCADA's forms that chapter 9 shows.

Both live in ``cyclelib/results/`` (package data, installed with cyclelib): ``cycada/`` holds the
``metrics.json`` of the runs the chapters compare (its ``README.txt`` names each command), and
``gpu_time_estimate.json`` is the output of ``benchmarks/estimate_gpu_time.py``; ``cycada/forms/`` holds the
runs of ``benchmarks/cycada_forms.py`` (the paper's form, the release's, and single changes, per seed).
"""
from __future__ import annotations

import json
import statistics
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


# What the forms are compared on: the accuracy of each result on the target test split, and how well the
# translation keeps the source labels (metrics.json of cyclelib.cycada_run.evaluate_stages).
FORM_RESULTS = ("source_only", "pixel_only", "feature_only", "pixel_feature", "target_oracle", "label_preservation")


def form_comparison(folder: str | Path, baseline: str = "paper") -> dict[str, dict[str, dict]]:
    """The forms of ``folder/<form>/seed<K>/metrics.json`` (``benchmarks/cycada_forms.py``) side by side.

    Returns ``{form: {result: {"seeds": {K: value}, "mean", "sd", "vs": {...}}}}`` for every result of
    :data:`FORM_RESULTS` a form has. ``vs`` compares a form with ``baseline`` seed by seed: the runs of one
    seed share their earlier stages (a form reuses every stage its options leave as the baseline trained
    it), so the paired differences ``d_K = form_K - baseline_K`` are what a form changes, without the
    seed-to-seed spread of the stages they share. ``vs`` holds ``"seeds"`` (each ``d_K``), ``"mean"``, ``"sd"``
    and ``"beyond_spread"``: whether ``|mean| > sd`` (mean +- sd of the paired differences excludes 0),
    a rough screen over three seeds, not a significance test (None with one seed: there is no spread).
    ``sd`` is the sample standard deviation (n - 1). A form whose seeds are not the baseline's is an error
    naming both sets.
    """
    from .cycada_run import load_seed_metrics  # torch: only when a comparison is asked for
    folder = Path(folder)
    runs = {path.name: load_seed_metrics(path) for path in sorted(folder.iterdir()) if path.is_dir()}
    if baseline not in runs:
        raise FileNotFoundError(f"no {baseline!r} form in {folder}; valid values: {', '.join(runs) or '(none)'}")
    compared = {}
    for form, seeds in runs.items():
        if set(seeds) != set(runs[baseline]):
            raise ValueError(f"{folder / form} holds seeds {sorted(seeds)}, {baseline!r} seeds "
                             f"{sorted(runs[baseline])}: a paired comparison needs the same seeds")
        compared[form] = {}
        for result in FORM_RESULTS:
            if not all(result in m for m in seeds.values()):
                continue
            values = {k: m[result] for k, m in seeds.items()}
            row = {"seeds": values, **_mean_sd(list(values.values()))}
            if form != baseline and all(result in m for m in runs[baseline].values()):
                diffs = {k: v - runs[baseline][k][result] for k, v in values.items()}
                spread = _mean_sd(list(diffs.values()))
                beyond = abs(spread["mean"]) > spread["sd"] if len(diffs) > 1 else None  # one seed: no spread
                row["vs"] = {"seeds": diffs, **spread, "beyond_spread": beyond}
            compared[form][result] = row
    return compared


def _mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
