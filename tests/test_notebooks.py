"""Structural checks of the book's notebooks (book/*.ipynb), without running them.

`make test` re-executes the notebooks with nbval at the smoke scale; these checks
cover what nbval cannot see: that each notebook installs cyclelib from the one
repository URL of `_config.yml`, is written in both languages, sizes its runs by
`cyclelib.resolve_scale()`, has an interactive control, is in the table of
contents, and is committed with the outputs of a real (cpu or gpu scale) run.
Each failure names the notebook and what to change (README.md, "Writing a chapter").
"""
import base64
import json
import re
from pathlib import Path

import pytest
import yaml

from book_toc import toc_entries

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = sorted(p for p in BOOK.glob("*.ipynb"))

CJK_CHAR = re.compile(r"[\u4e00-\u9fff]")  # ideographs only: punctuation is not Chinese text
ENGLISH_WORD = re.compile(r"\b[A-Za-z][a-z]{2,}\b")  # words of 3+ letters, not symbols such as x or G_A
LANG_DIV = re.compile(r'<div class="lang-(en|zh)"[^>]*>\n(.*?)\n</div>', re.S)
MATH_OR_CODE = re.compile(r"```.*?```|\$\$.*?\$\$|\$[^$\n]*\$|`[^`\n]*`", re.S)  # fences first
SCALE_LINE = re.compile(r"\bscale\s*[:=]\s*['\"]?(smoke|cpu|gpu)\b")
# Enough prose to teach one loss; a chapter far below this is a stub in one of the languages.
MIN_ENGLISH_WORDS = 300
MIN_CHINESE_CHARS = 500
MAX_IMAGE_BYTES = 300_000  # one embedded figure; larger ones bloat the repository (lower the dpi or size)


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def cells(path, kind):
    return [cell for cell in load(path)["cells"] if cell["cell_type"] == kind]


def source(cell):
    return "".join(cell["source"])


def outputs_text(cell):
    """The text of a code cell's stream and text/plain outputs."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append("".join(output["text"]))
        elif "text/plain" in output.get("data", {}):
            parts.append("".join(output["data"]["text/plain"]))
    return "".join(parts)


def prose(text):
    """Markdown without maths and code, whose words are not in either language."""
    return MATH_OR_CODE.sub(" ", text)


def language_divs(path):
    """(language, prose) of every `<div class="lang-xx">` block of the notebook's Markdown cells."""
    return [(lang, prose(body)) for cell in cells(path, "markdown") for lang, body in LANG_DIV.findall(source(cell))]


def repository_url():
    with open(ROOT / "_config.yml", encoding="utf-8") as f:
        return yaml.safe_load(f)["repository"]["url"]


def test_the_book_has_notebooks():
    assert NOTEBOOKS, "no notebooks in book/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_format_and_kernel(path):
    nb = load(path)
    assert nb["nbformat"] == 4, f"{path.name}: write nbformat 4"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernel must be python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_installs_cyclelib_from_the_configured_repository(path):
    # One place names the repository (_config.yml); a notebook with another URL would
    # install some other code on Colab.
    first = source(cells(path, "code")[0])
    assert "import cyclelib" in first and "except ImportError" in first, (
        f"{path.name}: the first code cell must `import cyclelib` and install it on ImportError")
    urls = re.findall(r"%pip install[^\n]*?git\+([^\s\"'@]+)", first)
    assert urls == [repository_url()], (
        f"{path.name}: the first code cell installs {urls or 'nothing'}; expected "
        f"`%pip install \"git+{repository_url()}\"` (repository.url of _config.yml)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_sizes_its_runs_by_the_scale(path):
    code = "\n".join(source(c) for c in cells(path, "code"))
    assert re.search(r"\bSCALE\s*=\s*(cyclelib\.)?resolve_scale\(\)", code), (
        f"{path.name}: read the scale with `SCALE = cyclelib.resolve_scale()`")
    assert "pick_device(" in code, f"{path.name}: select the device with cyclelib.pick_device()"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_an_interactive_control(path):
    code = "\n".join(source(c) for c in cells(path, "code"))
    assert re.search(r"^\s*(import ipywidgets|from ipywidgets import)", code, re.M), (
        f"{path.name}: add at least one ipywidgets control (with a static figure beside it)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_in_the_toc(path):
    name = path.relative_to(ROOT).with_suffix("").as_posix()
    assert name in toc_entries(), f"{path.name}: add `- file: {name}` to _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_written_in_both_languages(path):
    divs = language_divs(path)
    english = [text for lang, text in divs if lang == "en"]
    chinese = [text for lang, text in divs if lang == "zh"]
    untranslated = [text.strip()[:60] for text in chinese if not CJK_CHAR.search(text)]
    assert untranslated == [], f"{path.name}: lang-zh blocks without Chinese text: {untranslated}"
    mixed = [text.strip()[:60] for text in english if len(CJK_CHAR.findall(text)) > 4]
    assert mixed == [], f"{path.name}: lang-en blocks with Chinese text: {mixed}"
    words = sum(len(ENGLISH_WORD.findall(text)) for text in english)
    chars = sum(len(CJK_CHAR.findall(text)) for text in chinese)
    assert words >= MIN_ENGLISH_WORDS, f"{path.name}: {words} English words in lang-en blocks (< {MIN_ENGLISH_WORDS})"
    assert chars >= MIN_CHINESE_CHARS, f"{path.name}: {chars} Chinese characters in lang-zh blocks (< {MIN_CHINESE_CHARS})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_with_the_outputs_of_a_real_run(path):
    code = cells(path, "code")
    unexecuted = [i for i, c in enumerate(code) if c.get("execution_count") is None and source(c).strip()]
    assert unexecuted == [], f"{path.name}: code cells {unexecuted} were not executed; run the whole notebook"
    errors = [i for i, c in enumerate(code) for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert errors == [], f"{path.name}: code cells {errors} end in an error"
    # The book states the scale of its outputs: the setup cell prints it, and the
    # smoke scale (what the tests run) only checks that code runs, so it is never committed.
    scales = [m.group(1) for c in code for m in SCALE_LINE.finditer(outputs_text(c))]
    assert scales, f"{path.name}: the setup cell must print the scale (e.g. `print(f\"scale: {{SCALE}}\")`)"
    assert set(scales) <= {"cpu", "gpu"}, (
        f"{path.name}: committed outputs come from scale {scales[0]}; re-run it at the cpu or gpu scale")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_checked_outputs_are_committed(path):
    # nbval compares a `# NBVAL_CHECK_OUTPUT` cell with its committed output; an empty
    # committed output would make that comparison vacuous.
    checked = [c for c in cells(path, "code") if source(c).startswith("# NBVAL_CHECK_OUTPUT")]
    empty = [source(c)[:80] for c in checked if not outputs_text(c).strip()]
    assert empty == [], f"{path.name}: NBVAL_CHECK_OUTPUT cells without a text output: {empty}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_embedded_figures_are_small(path):
    sizes = [len(base64.b64decode("".join(o["data"][mime])))
             for c in cells(path, "code") for o in c.get("outputs", [])
             for mime in ("image/png", "image/jpeg") if mime in o.get("data", {})]
    large = [s for s in sizes if s > MAX_IMAGE_BYTES]
    assert large == [], f"{path.name}: figures of {large} bytes (> {MAX_IMAGE_BYTES}); lower the dpi or the size"
