"""Structural checks of the book's notebooks (book/*.ipynb), without running them.

`make test` re-executes the notebooks with nbval at the smoke scale; these checks
cover what nbval cannot see: that each notebook installs cyclelib from the one
repository URL of `_config.yml`, is written in both languages, sizes its runs by
`cyclelib.resolve_scale(SCALE)`, has an interactive control, and is committed with the outputs
of a real (cpu or gpu scale) run (test_packaging.py checks that every page is in `_toc.yml`).
Each failure names the notebook and what to change (README.md, "Writing a chapter").
"""
import base64
import dataclasses
import json
import re

import pytest
import yaml

from helpers import ROOT

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
    assert re.search(r"\bSCALE\s*=\s*(cyclelib\.)?resolve_scale\((SCALE)?\)", code), (
        f"{path.name}: read the scale with `SCALE = cyclelib.resolve_scale(SCALE)` (SCALE: the form field)")
    assert "pick_device(" in code, f"{path.name}: select the device with cyclelib.pick_device()"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_an_interactive_control(path):
    code = "\n".join(source(c) for c in cells(path, "code"))
    assert re.search(r"^\s*(import ipywidgets|from ipywidgets import)", code, re.M), (
        f"{path.name}: add at least one ipywidgets control (with a static figure beside it)")


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


# --- Textbook structure: goals, summary, exercises, captions, cross-references -------------

GOALS, SUMMARY, EXERCISES = "What you will learn / 本章内容", "Summary / 小结", "Exercises / 练习"
LIST_ITEM = re.compile(r"^(?:[-*]|\d+\.)\s+\S", re.M)
INLINE_CODE = re.compile(r"`[^`\n]+`")
CHAPTER_NUMBER = re.compile(r"^(\d\d)_")
# A mention of another chapter in the prose: "chapter 3", "Chapter 3", "第 3 章" (not a range).
CHAPTER_MENTION = re.compile(r"\b[Cc]hapter\s+(\d)\b(?![–-]\d)|第\s*(\d)\s*章")
LINK_OR_CODE = re.compile(r"```.*?```|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|!?\[[^\]]*\]\([^)]*\)", re.S)
WIDGET_CALL = re.compile(r"\bwidgets\.(?:interact|interactive)\(")


def sections(path):
    """The level-2 sections of a notebook's Markdown: [(title, body, index of its cell)], in order."""
    found = []
    for index, cell in enumerate(load(path)["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        for part in re.split(r"^(?=## )", source(cell), flags=re.M):
            if part.startswith("## "):
                title, _, body = part.partition("\n")
                found.append((title[3:].strip(), body, index))
    return found


def language_items(body):
    """{language: number of list items} of the language divs of a section body."""
    counts = {"en": 0, "zh": 0}
    for lang, text in LANG_DIV.findall(body):
        counts[lang] += len(LIST_ITEM.findall(text))
    return counts


def structure_problems(path):
    """What is missing from a chapter's goals, summary and exercises (README.md, 'Writing a chapter')."""
    cells_ = load(path)["cells"]
    code_indices = [i for i, c in enumerate(cells_) if c["cell_type"] == "code"]
    found = {title: (body, index) for title, body, index in sections(path)}
    problems = []
    if GOALS not in found:
        problems.append(f"no '## {GOALS}' section")
    else:
        body, index = found[GOALS]
        if code_indices and index > code_indices[0]:
            problems.append(f"'{GOALS}' comes after the first code cell; open the chapter with it")
        for lang, n in language_items(body).items():
            if not 3 <= n <= 5:
                problems.append(f"'{GOALS}' has {n} {lang} goals (list items); write 3 to 5 in each language")
    if SUMMARY not in found:
        problems.append(f"no '## {SUMMARY}' section")
    else:
        body, index = found[SUMMARY]
        if code_indices and index < code_indices[-1]:
            problems.append(f"'{SUMMARY}' comes before the last code cell; end the chapter with it")
        langs = {lang for lang, text in LANG_DIV.findall(body) if text.strip()}
        if langs != {"en", "zh"}:
            problems.append(f"'{SUMMARY}' needs text in both languages, has {sorted(langs)}")
    if EXERCISES not in found:
        problems.append(f"no '## {EXERCISES}' section")
    else:
        body, _ = found[EXERCISES]
        if sections(path)[-1][0] != EXERCISES:
            problems.append(f"'{EXERCISES}' must be the last section")
        for lang, text in LANG_DIV.findall(body):
            items = re.split(r"^\d+\.\s+", text, flags=re.M)[1:]
            if not 2 <= len(items) <= 4:
                problems.append(f"'{EXERCISES}' has {len(items)} numbered {lang} exercises; write 2 to 4")
            vague = [item.strip()[:50] for item in items if not INLINE_CODE.search(item)]
            if vague:
                problems.append(f"{lang} exercises that name no cell, variable or option (`...`): {vague}")
        counts = language_items(body)
        if counts["en"] != counts["zh"]:
            problems.append(f"'{EXERCISES}': {counts['en']} English and {counts['zh']} Chinese exercises")
    return problems


def widget_caption_problems(path):
    """Widget cells whose caption (the Markdown cell before them) does not say where the control runs."""
    cells_ = load(path)["cells"]
    problems = []
    for i, cell in enumerate(cells_):
        if cell["cell_type"] != "code" or not WIDGET_CALL.search(source(cell)):
            continue
        caption = next((source(c) for c in reversed(cells_[:i]) if c["cell_type"] == "markdown"), "")
        for lang, text in LANG_DIV.findall(caption):
            if not re.search(r"Jupyter|Colab", text):
                problems.append(f"cell {i}: the {lang} caption before the control does not say that it runs "
                                f"in Jupyter or Colab")
        if {lang for lang, _ in LANG_DIV.findall(caption)} != {"en", "zh"}:
            problems.append(f"cell {i}: no caption in both languages before the control")
    return problems


# Goals, summary and exercises; and, since the static book shows no widget (they need a
# kernel), a caption before each control that says where it runs.
TEXTBOOK_CHECKS = {"goals-summary-exercises": structure_problems, "widget-captions": widget_caption_problems}


@pytest.mark.parametrize("check", TEXTBOOK_CHECKS)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_has_the_textbook_structure(path, check):
    problems = TEXTBOOK_CHECKS[check](path)
    assert problems == [], f"{path.name}:\n" + "\n".join(problems)


def unlinked_chapter_mentions(text, own):
    """Mentions of another chapter that are not links (code, maths and existing links are skipped)."""
    found = []
    prose = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for paragraph in LINK_OR_CODE.sub(" ", prose).split("\n\n"):
        for m in CHAPTER_MENTION.finditer(paragraph):
            number = int(m.group(1) or m.group(2))
            if number != own:
                found.append(" ".join(m.group(0).split()))
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_references_to_other_chapters_are_links(path):
    # A link such as [chapter 3](03_cycle_consistency.ipynb) works in the book (the strict
    # build checks it) and in Jupyter; plain "chapter 3" makes the reader search.
    own = int(CHAPTER_NUMBER.match(path.name).group(1))
    mentions = [m for cell in cells(path, "markdown") for m in unlinked_chapter_mentions(source(cell), own)]
    assert mentions == [], (f"{path.name}: write these as links, e.g. [chapter 3](03_cycle_consistency.ipynb) "
                            f"or [第 3 章](03_cycle_consistency.ipynb): {mentions}")


def test_structure_checks_catch_what_is_missing(tmp_path):
    def notebook(*markdown):
        nb = {"cells": [{"cell_type": "markdown", "source": text} for text in markdown]
              + [{"cell_type": "code", "source": "x = 1", "outputs": []}], "metadata": {}, "nbformat": 4}
        path = tmp_path / "99_test.ipynb"
        path.write_text(json.dumps(nb), encoding="utf-8")
        return path

    def div(lang, text):
        return f'<div class="lang-{lang}">\n\n{text}\n\n</div>\n\n'

    goals = f"## {GOALS}\n\n" + div("en", "- a\n- b\n- c") + div("zh", "- 甲\n- 乙\n- 丙")
    summary = f"## {SUMMARY}\n\n" + div("en", "Text.") + div("zh", "文字。")
    exercises = f"## {EXERCISES}\n\n" + div("en", "1. Change `x`.\n2. Set `y`.") + div("zh", "1. 改 `x`。\n2. 设 `y`。")
    good = notebook(goals, "")
    good_nb = json.loads(good.read_text())
    good_nb["cells"] += [{"cell_type": "markdown", "source": summary + exercises}]
    good.write_text(json.dumps(good_nb), encoding="utf-8")
    assert structure_problems(good) == []
    assert structure_problems(notebook("# Title")) != []  # nothing at all
    assert any("goals" in p for p in structure_problems(notebook(goals.replace("- c", ""), summary + exercises)))
    assert any("name no cell" in p for p in structure_problems(notebook(goals, summary + exercises.replace("`x`", "x"))))
    assert unlinked_chapter_mentions("As chapter 3 showed, and 第 2 章 too.", own=5) == ["chapter 3", "第 2 章"]
    assert unlinked_chapter_mentions("[chapter 3](03_x.ipynb), chapters 1–5, chapter 5", own=5) == []
    widget = {"cell_type": "code", "source": "widgets.interact(f, x=1)", "outputs": []}
    nb = {"cells": [{"cell_type": "markdown", "source": div("en", "A slider.") + div("zh", "滑块。")}, widget]}
    path = tmp_path / "98_widget.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    assert len(widget_caption_problems(path)) == 2


# --- Chapters 6-9: the paper's setting at the gpu scale -------------------------------------

CYCADA_CHAPTERS = [BOOK / name for name in ("06_cycada_task_loss.ipynb", "07_cycada_pixel_level.ipynb",
                                            "08_cycada_feature_level.ipynb", "09_cycada_results.ipynb")]
PAPER_PAIR = ("mnist", "usps")
OTHER_PAPER_PAIR = ("svhn", "mnist")
# The one line a reader edits to switch the gpu scale to SVHN -> MNIST: the alternative is written beside it.
PAIR_LINE = re.compile(r'^\s*SOURCE, TARGET = \("mnist", "usps"\)  # or \("svhn", "mnist"\)\s*$', re.M)


def config_cell(path):
    """The code cell of a CyCADA chapter that builds its `config` (CyCADAConfig.for_scale)."""
    found = [source(c) for c in cells(path, "code") if "CyCADAConfig.for_scale(" in source(c)]
    assert len(found) == 1, f"{path.name}: {len(found)} code cells call CyCADAConfig.for_scale; expected one"
    return found[0]


def run_config_cell(code, scale, monkeypatch):
    """Execute a configuration cell as the notebook does after its setup cell (SCALE, DEVICE, the
    imports), with downloads recorded instead of made; returns (config, downloaded names)."""
    import cyclelib
    import torch

    downloads = []
    monkeypatch.setattr(cyclelib, "download_digits", lambda name, root=None: downloads.append(name))
    namespace = {"SCALE": scale, "DEVICE": torch.device("cpu"), "cyclelib": cyclelib, "torch": torch}
    exec(compile(code, "<configuration cell>", "exec"), namespace)
    return namespace["config"], downloads


def gpu_setting_problems(code, monkeypatch):
    """What is wrong with a configuration cell of chapters 6-9: at the gpu scale it must run the paper's
    pair with the gpu preset (the release's setting) after downloading both domains, SVHN -> MNIST must
    be the documented one-line change, and the cpu and smoke scales keep the offline pair."""
    from cyclelib import CyCADAConfig
    from cyclelib.cycada import classifier_name

    problems = []
    config, downloads = run_config_cell(code, "gpu", monkeypatch)
    if (config.source, config.target) != PAPER_PAIR:
        problems.append(f"gpu scale runs {config.source} -> {config.target}, not MNIST -> USPS")
    preset = CyCADAConfig.for_scale("gpu", source=config.source, target=config.target, seed=0, device=config.device,
                                    out=config.out)
    if config != preset:
        problems.append("gpu scale: options other than the gpu preset's: "
                        + ", ".join(f.name for f in dataclasses.fields(config)
                                    if getattr(config, f.name) != getattr(preset, f.name)))
    release = dict(netG="resnet_9blocks", ngf=64, task_epochs=100, pixel_batch_size=100, pixel_epochs=100,
                   pixel_epochs_decay=100, feature_lr=1e-5, feature_batch_size=128, max_samples=None)
    changed = {k: getattr(config, k) for k, v in release.items() if getattr(config, k) != v}
    if changed:
        problems.append(f"gpu scale: not the release's setting: {changed}")
    if sorted(downloads) != sorted(PAPER_PAIR):
        problems.append(f"gpu scale downloads {downloads}, expected both of {PAPER_PAIR} first")
    lines = PAIR_LINE.findall(code)
    if len(lines) != 1:
        problems.append(f'{len(lines)} lines `SOURCE, TARGET = ("mnist", "usps")  # or ("svhn", "mnist")`; write one')
    else:
        flipped = code.replace('("mnist", "usps")  # or ("svhn", "mnist")', '("svhn", "mnist")')
        config, downloads = run_config_cell(flipped, "gpu", monkeypatch)
        if ((config.source, config.target) != OTHER_PAPER_PAIR or sorted(downloads) != sorted(OTHER_PAPER_PAIR)
                or classifier_name(config) != "dtn"):
            problems.append(f"the documented line gives {config.source} -> {config.target} "
                            f"({classifier_name(config)}, downloads {downloads}), not SVHN -> MNIST with DTN")
    for scale in ("cpu", "smoke"):
        config, downloads = run_config_cell(code, scale, monkeypatch)
        if (config.source, config.target, config.scale) != ("mnist5k", "mnistm5k", scale) or downloads:
            problems.append(f"{scale} scale: {config.source} -> {config.target} at {config.scale}, downloads "
                            f"{downloads}; expected the offline pair and no download")
    return problems


@pytest.mark.parametrize("path", CYCADA_CHAPTERS, ids=lambda p: p.name)
def test_cycada_chapter_runs_the_papers_setting_at_the_gpu_scale(path, monkeypatch):
    problems = gpu_setting_problems(config_cell(path), monkeypatch)
    assert problems == [], f"{path.name}, configuration cell:\n" + "\n".join(problems)


def test_cycada_chapters_share_their_configuration_cell():
    # One run folder for chapters 6-9: a stage one chapter trained is what the next one loads.
    different = {path.name for path in CYCADA_CHAPTERS if config_cell(path) != config_cell(CYCADA_CHAPTERS[0])}
    assert different == set(), f"{sorted(different)}: use the configuration cell of {CYCADA_CHAPTERS[0].name}"


def test_gpu_setting_check_catches_a_wrong_cell(monkeypatch):
    good = config_cell(CYCADA_CHAPTERS[0])
    assert gpu_setting_problems(good, monkeypatch) == []
    broken = {
        "the offline pair at the gpu scale": good.replace('("mnist", "usps")  # or', '("mnist5k", "mnistm5k")  # or'),
        "no alternative written": good.replace('  # or ("svhn", "mnist")', ""),
        "the cpu preset at the gpu scale": good.replace("for_scale(SCALE,", 'for_scale("cpu" if SCALE == "gpu" else SCALE,'),
        "no download": good.replace("download_digits(name)", "pass"),
    }
    for what, code in broken.items():
        assert code != good, what
        assert gpu_setting_problems(code, monkeypatch) != [], what
