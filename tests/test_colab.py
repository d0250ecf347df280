"""The book on Colab (issue 24): a notebook runs without its checkout, the colab scale fits a free T4,
the setup cell offers the scale as a form field and makes a CJK font available, and each notebook
carries an "Open in Colab" badge built from _config.yml."""
import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch
import yaml

import cyclelib
from cyclelib import CyCADAConfig, CycleGANConfig, plots
from cyclelib.book import RESULTS
from cyclelib.commands import cycada_command
from cyclelib.presets import CYCADA_PRESETS, CYCLEGAN_PRESETS
from helpers import DIGITS, ROOT, cli_env
from test_notebooks import CYCADA_CHAPTERS, config_cell, run_config_cell

NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
FORM = 'SCALE = "auto"  # @param ["auto", "smoke", "cpu", "colab", "gpu"]'
COLAB_MINUTES = 30


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def code_cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in load(path)["cells"] if c["cell_type"] == "code"]


# --- a notebook alone in an empty folder ---------------------------------------------------


def untracked_files() -> set[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, text=True,
                         capture_output=True, check=True).stdout
    return {line[3:] for line in out.splitlines() if line.startswith("??")}


def run_notebook(path: Path, folder: Path) -> None:
    """Copy the notebook ``path`` into ``folder`` and run it there with nbval at the smoke scale, with
    cyclelib importable (from PYTHONPATH, as an installed package would be) and the checkout unchanged."""
    shutil.copy(path, folder / path.name)
    before = untracked_files()
    env = {**cli_env(), "CYCLELIB_SCALE": "smoke", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                             "--nbval-current-env", "--rootdir", str(folder), path.name],
                            cwd=folder, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"{path.name} failed in {folder}:\n{result.stdout[-6000:]}"
    assert untracked_files() == before, f"{path.name} wrote into the checkout"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_notebook_copied_alone_into_an_empty_folder_runs(path, tmp_path):
    # As on Colab: the notebook without the repository around it. Whatever it reads must come from
    # the package (cyclelib.book_results) or be written by it into its own folder; a CyCADA chapter
    # finds no run folder of an earlier chapter there and trains the stages it needs.
    run_notebook(path, tmp_path)


@pytest.mark.slow
def test_a_cycada_chapter_reuses_the_stages_an_earlier_one_trained_in_its_folder(tmp_path):
    # In a checkout (book/runs) or one Colab session that ran chapter 6 first: chapter 7 loads the
    # source stage from the shared run folder and trains only the pixel stage.
    run_notebook(ROOT / "book" / "06_cycada_task_loss.ipynb", tmp_path)
    run = tmp_path / "runs" / "cycada-mnist5k-mnistm5k-smoke"
    source = (run / "source" / "checkpoint.pt").stat().st_mtime_ns
    assert not (run / "pixel").exists()
    run_notebook(ROOT / "book" / "07_cycada_pixel_level.ipynb", tmp_path)
    assert (run / "source" / "checkpoint.pt").stat().st_mtime_ns == source
    assert (run / "pixel" / "checkpoint.pt").is_file()


def test_no_code_cell_reads_results_by_a_checkout_path():
    # results/... and book/... exist only in a checkout; the package ships what the book reads
    pattern = re.compile(r"""Path\(\s*["'](?:\.\./)?(?:book/)?results|["']\.\./(?!tests/data)""")
    found = [f"{path.name}: {m.group(0)}" for path in NOTEBOOKS for code in code_cells(path)
             for m in pattern.finditer(code)]
    assert found == []


# --- the book's results as package data --------------------------------------------------


def test_book_results_are_found_in_the_package_and_unknown_names_are_refused():
    seeds = cyclelib.cycada_run.load_seed_metrics(cyclelib.book_results("cycada/mnist5k-to-mnistm5k"))
    assert sorted(seeds) == [0, 1, 2] and all(m["scale"] == "cpu" for m in seeds.values())
    assert cyclelib.book_results("gpu_time_estimate.json").parent == RESULTS
    with pytest.raises(FileNotFoundError, match=r"'cycada/nope' is not among the book's results.*valid values: "
                                                r".*gpu_time_estimate\.json"):
        cyclelib.book_results("cycada/nope")
    with pytest.raises(FileNotFoundError, match="not among"):
        cyclelib.book_results("../config.py")  # a file of the package, but no result
    assert not (ROOT / "book" / "results").exists(), "book/results moved to cyclelib/results (one copy)"


def test_every_result_file_is_package_data():
    # what setuptools installs: pyproject's package-data globs, relative to the package
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["cyclelib"]
    package = ROOT / "cyclelib"
    shipped = {p for pattern in globs for p in package.glob(pattern) if p.is_file()}
    files = {p for p in RESULTS.rglob("*") if p.is_file()}
    assert files and files - shipped == set()


# --- the colab scale ---------------------------------------------------------------------


def test_cuda_picks_the_colab_scale_and_gpu_only_when_asked(monkeypatch):
    monkeypatch.delenv("CYCLELIB_SCALE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cyclelib.resolve_scale() == "colab"
    assert cyclelib.resolve_scale("auto") == "colab"  # the notebooks' form field
    assert cyclelib.resolve_scale("gpu") == "gpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cyclelib.resolve_scale("auto") == "cpu"
    monkeypatch.setenv("CYCLELIB_SCALE", "smoke")
    assert cyclelib.resolve_scale("auto") == "smoke"  # CI sets the scale for every notebook
    assert cyclelib.resolve_scale("colab") == "colab"  # a choice in the form wins
    monkeypatch.setenv("CYCLELIB_SCALE", "tpu")
    with pytest.raises(ValueError, match=r"CYCLELIB_SCALE='tpu' is not a scale; valid values: smoke, cpu, colab, gpu"):
        cyclelib.resolve_scale("auto")


def test_the_colab_scale_has_presets_and_a_command_line(tmp_path):
    for kind, data in (("digits", DIGITS), ("images", str(tmp_path))):
        config = CycleGANConfig.for_scale("colab", data=data)
        assert {k: getattr(config, k) for k in CYCLEGAN_PRESETS["colab"][kind]} == CYCLEGAN_PRESETS["colab"][kind]
    config = CyCADAConfig.for_scale("colab", source="mnist5k", target="mnistm5k")
    assert config.scale == "colab"
    assert "--scale colab" in cycada_command(vars(config), ("source",))
    gpu = CyCADAConfig.for_scale("gpu")
    assert (gpu.netG, gpu.ngf, gpu.pixel_epochs) == ("resnet_9blocks", 64, 100)  # gpu stays the paper's


def estimate() -> dict:
    return json.loads(cyclelib.book_results("gpu_time_estimate.json").read_text())


def test_every_chapter_fits_a_free_t4_at_the_colab_scale():
    chapters = estimate()["chapters"]
    assert sorted(chapters) == [p.stem for p in NOTEBOOKS]
    minutes = {name: by_scale["colab"]["total"]["hours"]["T4"] * 60 for name, by_scale in chapters.items()}
    assert max(minutes.values()) <= COLAB_MINUTES, minutes
    gpu_hours = {name: by_scale["gpu"]["total"]["hours"]["T4"] for name, by_scale in chapters.items()}
    assert gpu_hours["09_cycada_results"] > 10  # the paper's setting: not a Colab session


def test_the_committed_estimate_is_of_todays_presets():
    # benchmarks/estimate_gpu_time.py records the presets it estimated; a changed preset needs a new estimate
    recorded = estimate()["presets"]
    today = {scale: {"cyclegan": CYCLEGAN_PRESETS[scale], "cycada": CYCADA_PRESETS[scale]} for scale in recorded}
    assert recorded == json.loads(json.dumps(today)), ("the presets changed: run python "
                                                       "benchmarks/estimate_gpu_time.py --json "
                                                       "cyclelib/results/gpu_time_estimate.json")
    assert sorted(recorded) == ["colab", "gpu"]


def test_chapter_time_reads_the_estimate():
    line = cyclelib.chapter_time("09_cycada_results")
    hours = estimate()["chapters"]["09_cycada_results"]["gpu"]["total"]["hours"]["T4"]
    assert line.startswith("training time of this chapter by scale: colab ") and f"{hours:.1f} h on T4" in line
    assert "trains nothing" in cyclelib.chapter_time("01_introduction")
    with pytest.raises(ValueError, match=r"no time estimate for chapter '11_x'; valid values: 01_introduction"):
        cyclelib.chapter_time("11_x")


# --- the setup cell and the badge --------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_setup_cell_offers_the_scale_as_a_form_field(path):
    setup = code_cells(path)[0]
    assert FORM in setup.splitlines(), f"{path.name}: the setup cell needs the line {FORM}"
    assert setup.index(FORM) < setup.index("SCALE = cyclelib.resolve_scale(SCALE)")
    assert f'cyclelib.chapter_time("{path.stem}")' in setup, f"{path.name}: print the chapter's time per scale"
    assert "cyclelib.plots.cjk_font()" in setup, f"{path.name}: make a CJK font available"


def colab_badge(path: Path) -> str:
    """The badge that _config.yml's repository implies for ``path``."""
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    owner_name = repo["url"].removeprefix("https://github.com/")
    where = "/".join(p for p in (repo.get("path_to_book", "").strip("/"), path.relative_to(ROOT).as_posix()) if p)
    url = f"https://colab.research.google.com/github/{owner_name}/blob/{repo['branch']}/{where}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_first_cell_is_the_colab_badge_of_the_configured_repository(path):
    first = load(path)["cells"][0]
    assert first["cell_type"] == "markdown" and "".join(first["source"]) == colab_badge(path), (
        f"{path.name}: the first cell must be the badge {colab_badge(path)}")
    # the HTML book has the theme's launch button, and is read offline: the badge's image is remote
    assert "remove-cell" in first["metadata"].get("tags", [])


def test_widget_controls_have_a_static_view_beside_them():
    # Where no widget manager renders a control (a viewer, a Colab frontend of another ipywidgets),
    # the cell shows its text form and the reader still has the figure of a cell next to it.
    for path in NOTEBOOKS:
        code = [c for c in load(path)["cells"] if c["cell_type"] == "code"]
        for i, cell in enumerate(code):
            if re.search(r"\bwidgets\.(?:interact|interactive)\(", "".join(cell["source"])):
                near = code[max(0, i - 2):i] + code[i + 1:i + 3]
                assert any("image/png" in o.get("data", {}) for c in near for o in c.get("outputs", [])), (
                    f"{path.name}, code cell {i}: no static figure next to the control")
                assert all("text/plain" in o["data"] for o in cell["outputs"] if o["output_type"] == "display_data")


# --- a CJK font for the figures ------------------------------------------------------------


@pytest.fixture
def font_server(monkeypatch):
    """A local server whose only file is matplotlib's own DejaVu Sans, as /font.ttf; records requests."""
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    folder = font.parent
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.requests = requests
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/{font.name}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def no_cjk_font(monkeypatch):
    """A machine without any CJK font (Colab), and matplotlib's font family restored afterwards."""
    monkeypatch.setattr(plots, "_use_a_cjk_fallback", lambda: None)
    monkeypatch.setitem(plt.rcParams, "font.family", ["sans-serif"])


def test_without_a_cjk_font_one_is_downloaded_once_and_registered(tmp_path, font_server, no_cjk_font, capsys):
    name = plots.cjk_font(font_server.url, root=tmp_path)
    assert name == "DejaVu Sans"  # the served file's family
    assert (tmp_path / "fonts" / "DejaVuSans.ttf").is_file()
    assert plt.rcParams["font.family"] == ["sans-serif", "DejaVu Sans"]  # the fallback of the default font
    assert plots.cjk_font(font_server.url, root=tmp_path) == name  # the cached file: no second download
    assert font_server.requests == ["/DejaVuSans.ttf"]
    assert plt.rcParams["font.family"] == ["sans-serif", "DejaVu Sans"]
    assert capsys.readouterr().out == ""


def test_offline_without_a_cjk_font_is_one_line_and_no_error(tmp_path, font_server, no_cjk_font, capsys):
    url = font_server.url.replace("DejaVuSans.ttf", "missing.otf")  # the server answers 404
    assert plots.cjk_font(url, root=tmp_path) is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("cyclelib: no CJK font, so Chinese labels in figures show as "
                                                   "boxes (could not download")
    assert plt.rcParams["font.family"] == ["sans-serif"]
    assert not (tmp_path / "fonts" / "missing.otf").exists()


def test_an_installed_cjk_font_is_used_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "_use_a_cjk_fallback", lambda: "Noto Sans CJK SC")
    assert plots.cjk_font("http://127.0.0.1:9/never", root=tmp_path) == "Noto Sans CJK SC"
    assert not (tmp_path / "fonts").exists()


@pytest.mark.parametrize("path", CYCADA_CHAPTERS, ids=lambda p: p.name)
def test_cycada_chapters_run_the_offline_pair_at_the_colab_scale(path, monkeypatch):
    # no download on Colab's default scale, and the colab preset's sizes
    config, downloads = run_config_cell(config_cell(path), "colab", monkeypatch)
    assert (config.source, config.target, downloads) == ("mnist5k", "mnistm5k", [])
    assert config == CyCADAConfig.for_scale("colab", source="mnist5k", target="mnistm5k", seed=0, device="cpu",
                                            out=config.out)
