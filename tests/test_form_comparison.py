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
