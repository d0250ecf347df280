"""cyclelib.book.form_comparison: the forms of CyCADA side by side, with paired differences per seed."""
import json
import statistics

import pytest

from cyclelib import form_comparison
from cyclelib.book import FORM_RESULTS


def write(folder, form, seed, **values):
    path = folder / form / f"seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"seed": seed, **values}))


def test_paired_differences_remove_what_the_seeds_share(tmp_path):
    # seed effects are large (0.2 apart), the form's effect is a steady +0.05 on pixel_feature
    for seed, base in enumerate((0.4, 0.6, 0.8)):
        write(tmp_path, "paper", seed, pixel_feature=base, source_only=0.5)
        write(tmp_path, "release", seed, pixel_feature=base + 0.05 + 0.01 * seed, source_only=0.5)
    compared = form_comparison(tmp_path)
    release = compared["release"]["pixel_feature"]
    assert release["mean"] == pytest.approx(0.66)
    assert release["sd"] == pytest.approx(statistics.stdev([0.45, 0.66, 0.87]))
    assert release["vs"]["seeds"] == pytest.approx({0: 0.05, 1: 0.06, 2: 0.07})
    assert release["vs"]["mean"] == pytest.approx(0.06)
    assert release["vs"]["sd"] == pytest.approx(0.01)
    # beyond the spread of the paired differences, though far inside the spread of either form's seeds
    assert release["vs"]["beyond_spread"] is True and release["sd"] > release["vs"]["mean"]
    same = compared["release"]["source_only"]["vs"]
    assert same["mean"] == 0 and same["beyond_spread"] is False
    assert "vs" not in compared["paper"]["pixel_feature"]
    assert set(compared["paper"]) == {"pixel_feature", "source_only"} < set(FORM_RESULTS)


def test_a_difference_inside_the_spread_is_not_flagged(tmp_path):
    for seed, d in enumerate((0.1, -0.08, 0.02)):
        write(tmp_path, "paper", seed, pixel_feature=0.5)
        write(tmp_path, "stage2-online", seed, pixel_feature=0.5 + d)
    vs = form_comparison(tmp_path)["stage2-online"]["pixel_feature"]["vs"]
    assert vs["beyond_spread"] is False


def test_forms_must_have_the_baseline_seeds(tmp_path):
    for seed in (0, 1, 2):
        write(tmp_path, "paper", seed, pixel_feature=0.5)
    for seed in (0, 1):
        write(tmp_path, "release", seed, pixel_feature=0.5)
    with pytest.raises(ValueError, match=r"release holds seeds \[0, 1\], 'paper' seeds \[0, 1, 2\]"):
        form_comparison(tmp_path)
    with pytest.raises(FileNotFoundError, match="no 'baseline' form"):
        form_comparison(tmp_path, baseline="baseline")


@pytest.mark.slow
def test_the_forms_script_starts_each_form_from_the_paper_runs_unchanged_stages(tmp_path):
    """benchmarks/cycada_forms.py at the smoke scale: a stage-3 form reuses the paper run's source and pixel
    stages byte for byte, retrains its feature stages, and keeps its metrics.json with its command."""
    import subprocess
    import sys
    from helpers import ROOT, package_env
    runs, results = tmp_path / "runs", tmp_path / "results"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cycada_forms.py"), "--source", "uci-digits",
                    "--target", "mnist5k", "--seeds", "0", "--scale", "smoke", "--forms", "paper", "stage3-release",
                    "--runs", str(runs), "--results", str(results)], check=True, env=package_env(), cwd=tmp_path,
                   capture_output=True)
    seed = runs / "uci-digits-to-mnist5k" / "seed0"
    for stage in ("source", "pixel", "pixel_only", "oracle"):
        assert (seed / "stage3-release" / stage / "checkpoint.pt").read_bytes() == \
            (seed / "paper" / stage / "checkpoint.pt").read_bytes()
    assert (seed / "stage3-release" / "feature" / "checkpoint.pt").read_bytes() != \
        (seed / "paper" / "feature" / "checkpoint.pt").read_bytes()
    kept = results / "uci-digits-to-mnist5k" / "stage3-release" / "seed0"
    assert "--feature-start=pixel_only --lambda-task=0" in (kept / "command.txt").read_text()
    compared = form_comparison(results / "uci-digits-to-mnist5k")
    assert compared["stage3-release"]["pixel_only"]["vs"]["seeds"] == {0: 0.0}


def test_the_forms_script_refuses_a_form_without_the_paper_run_to_pair_it_with(tmp_path):
    import subprocess
    import sys
    from helpers import ROOT, package_env
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cycada_forms.py"), "--source", "uci-digits",
                           "--target", "mnist5k", "--seeds", "0", "--scale", "smoke", "--forms", "release",
                           "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")],
                          env=package_env(), cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2
    assert "holds no finished run of the paper's form: run it first (--forms paper)" in done.stderr
    assert not (tmp_path / "runs").exists()
