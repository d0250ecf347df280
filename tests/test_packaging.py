"""Checks that the packaging and book configuration files agree with each other,
and that the book's bilingual markup is well formed.

These files are edited by hand in several places (pyproject.toml,
environment.yml, _toc.yml, _config.yml, book/); each test names the file to fix.
"""

import importlib
import json
import re
import tomllib
from collections import Counter

import yaml

from book_toc import toc_entries
from helpers import ROOT

BOOK = ROOT / "book"
BOOK_SUFFIXES = (".md", ".ipynb")


def load_pyproject():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def load_yaml(name):
    with open(ROOT / name, encoding="utf-8") as f:
        return yaml.safe_load(f)


def normalize(requirement):
    """`Scikit_Learn >= 1.3` -> `scikit-learn>=1.3` (PEP 503 name, no spaces)."""
    requirement = requirement.replace(" ", "")
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower() + requirement[len(name):]


def pyproject_requirements():
    project = load_pyproject()["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements.extend(extra)
    return {normalize(r) for r in requirements}


def environment_pip_requirements():
    environment = load_yaml("environment.yml")
    pip_sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict)]
    assert len(pip_sections) == 1, "environment.yml: expected exactly one `pip:` section"
    return pip_sections[0]


def test_environment_lists_every_pyproject_dependency():
    pip_entries = environment_pip_requirements()
    assert "-e .[book,test]" in pip_entries, "environment.yml: pip section must install `-e .[book,test]`"
    listed = {normalize(e) for e in pip_entries if not e.startswith("-e ")}
    expected = pyproject_requirements()
    assert expected - listed == set(), (
        f"environment.yml is missing (or has other bounds for) {sorted(expected - listed)} from pyproject.toml"
    )
    assert listed - expected == set(), (
        f"environment.yml lists {sorted(listed - expected)}, which pyproject.toml does not declare"
    )


def test_environment_python_matches_requires_python():
    environment = load_yaml("environment.yml")
    assert environment["name"] == "cyclelib"
    pythons = [d for d in environment["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert pythons == ["python=3.11"], f"environment.yml: expected python=3.11, found {pythons}"
    assert load_pyproject()["project"]["requires-python"] == ">=3.10"


def test_console_script_resolves_to_a_callable():
    scripts = load_pyproject()["project"]["scripts"]
    assert scripts.get("cyclelib") == "cyclelib.cli:main", "pyproject.toml: [project.scripts] cyclelib"
    module_name, attribute = scripts["cyclelib"].split(":")
    assert callable(getattr(importlib.import_module(module_name), attribute))


def resolve_toc_file(name):
    """A toc entry names a file without its suffix; return the existing path or None."""
    candidates = [ROOT / name] + [ROOT / (name + suffix) for suffix in BOOK_SUFFIXES]
    return next((p for p in candidates if p.is_file() and p.suffix in BOOK_SUFFIXES), None)


def book_pages():
    """Pages of book/ (not _static, _build or hidden folders)."""
    return sorted(
        p
        for p in BOOK.rglob("*")
        if p.suffix in BOOK_SUFFIXES and not any(part.startswith((".", "_")) for part in p.relative_to(BOOK).parts)
    )


def all_toc_files():
    toc = load_yaml("_toc.yml")
    assert toc["format"] == "jb-book", "_toc.yml: expected `format: jb-book`"
    return toc_entries(toc)


def test_toc_lists_only_existing_book_files():
    names = all_toc_files()
    missing = [n for n in names if resolve_toc_file(n) is None]
    assert missing == [], f"_toc.yml lists files that do not exist (as .md or .ipynb): {missing}"
    outside = [n for n in names if not resolve_toc_file(n).is_relative_to(BOOK)]
    assert outside == [], f"_toc.yml lists files outside book/: {outside}"
    assert len(names) == len(set(names)), "_toc.yml lists a file twice"


def test_every_book_page_is_in_the_toc():
    # only_build_toc_files is on, so a page missing from _toc.yml is silently
    # left out of the book.
    listed = {resolve_toc_file(n) for n in all_toc_files()}
    pages = set(book_pages())
    unlisted = sorted(str(p.relative_to(ROOT)) for p in pages - listed)
    assert unlisted == [], f"book pages not listed in _toc.yml: {unlisted}"


def test_book_config_points_at_existing_files():
    config = load_yaml("_config.yml")
    assert config["execute"]["execute_notebooks"] == "off", "_config.yml: the book must not execute notebooks"
    assert config["only_build_toc_files"] is True
    for bib in config["bibtex_bibfiles"]:
        assert (ROOT / bib).is_file(), f"_config.yml: bibtex file {bib} does not exist"
    sphinx = config["sphinx"]["config"]
    static_dirs = [ROOT / d for d in sphinx["html_static_path"]]
    for asset in sphinx["html_js_files"] + sphinx["html_css_files"]:
        assert any((d / asset).is_file() for d in static_dirs), f"_config.yml: {asset} not found in {static_dirs}"


def markdown_sources():
    """(where, markdown text) for every Markdown page and notebook Markdown cell."""
    for page in book_pages():
        if page.suffix == ".md":
            yield str(page.relative_to(ROOT)), page.read_text(encoding="utf-8")
        else:
            cells = json.loads(page.read_text(encoding="utf-8"))["cells"]
            for i, cell in enumerate(cells):
                if cell["cell_type"] == "markdown":
                    yield f"{page.relative_to(ROOT)} cell {i}", "".join(cell["source"])


LANG_OPEN = re.compile(r'<div class="lang-(en|zh)"[^>]*>')
CJK = "\u3000-\u303f\u4e00-\u9fff\uff00-\uffef"  # CJK punctuation, ideographs, full-width forms


def bilingual_problems(text):
    """What is wrong with the `<div class="lang-xx">` blocks of one Markdown text.

    The Markdown inside a raw HTML div is only rendered when the opening tag and
    the closing tag stand on their own lines between blank lines (CommonMark
    ends an HTML block at a blank line); otherwise the text shows as raw HTML.
    Chinese text is not hard-wrapped: a browser shows a line break between two
    Chinese characters as a space.
    """
    lines = text.splitlines() + [""]
    problems, counts, open_at, fenced = [], Counter(), None, False
    for n, line in enumerate(lines[:-1]):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            fenced = not fenced
        if fenced:
            continue
        where = f"line {n + 1}"
        if 'class="lang-' in stripped:
            match = LANG_OPEN.fullmatch(stripped)
            if not match:
                problems.append(f"{where}: the opening <div class=\"lang-..\"> must stand alone on its line")
            elif open_at is not None:
                problems.append(f"{where}: language div opened inside the one of line {open_at + 1}")
            else:
                open_at = n
                counts[match.group(1)] += 1
                if lines[n + 1].strip():
                    problems.append(f"{where}: a blank line must follow the opening <div>")
        elif open_at is not None and stripped.startswith("#"):
            problems.append(f"{where}: headings go outside the language divs (write them as 'English / 中文')")
        elif (open_at is not None and re.search(f"[{CJK}]$", stripped)
              and re.match(f"[{CJK}]", lines[n + 1].strip())):
            problems.append(f"{where}: Chinese text broken across lines (shows as a space); join the lines")
        elif open_at is not None and "</div>" in stripped:
            if stripped != "</div>" or lines[n - 1].strip() or lines[n + 1].strip():
                problems.append(f"{where}: </div> must stand alone between blank lines")
            open_at = None
    if open_at is not None:
        problems.append(f"line {open_at + 1}: language div is never closed")
    if counts["en"] != counts["zh"]:
        problems.append(f"{counts['en']} English and {counts['zh']} Chinese divs: each passage needs both")
    return problems


def test_bilingual_divs_are_well_formed():
    problems = [f"{where}, {problem}" for where, text in markdown_sources() for problem in bilingual_problems(text)]
    assert problems == [], "bilingual markup (see README.md, 'Writing a chapter'):\n" + "\n".join(problems)


def test_bilingual_check_catches_malformed_markup():
    good = '<div class="lang-en">\n\nText.\n\n</div>\n\n<div class="lang-zh">\n\n文字。\n\n</div>\n'
    assert bilingual_problems(good) == []
    assert bilingual_problems(good.replace("\n\nText.", "\nText.")) != []  # no blank line after <div>
    assert bilingual_problems(good.replace("</div>\n\n<div", "</div>\n<div")) != []  # no blank after </div>
    assert bilingual_problems(good.replace("Text.", "## Title")) != []  # heading inside a div
    assert bilingual_problems(good.split("<div class=\"lang-zh\">")[0]) != []  # English only
    assert bilingual_problems(good.replace("文字。", "文\n字。")) != []  # hard-wrapped Chinese
    assert bilingual_problems("```markdown\n<div class=\"lang-en\">\nexample\n```\n") == []  # code fence


# Relative links and images in Markdown: [text](03_cycle_consistency.ipynb), ![alt](figures/x.svg).
RELATIVE_TARGET = re.compile(r"!?\[[^\]]*\]\((?!https?:|mailto:|#)([^)\s#]+)(?:#[^)\s]*)?\)")


def broken_relative_links(where, text, folder):
    """Targets of relative links and images that do not exist next to the page (book/)."""
    return [f"{where}: {target}" for target in RELATIVE_TARGET.findall(text) if not (folder / target).is_file()]


def test_relative_links_and_images_point_to_existing_files():
    # The strict book build also reports a missing page, but not every missing image, and
    # Jupyter and Colab resolve these paths next to the notebook.
    broken = [problem for where, text in markdown_sources() for problem in broken_relative_links(where, text, BOOK)]
    assert broken == [], "links or images to files that do not exist in book/:\n" + "\n".join(broken)


def test_relative_link_check_catches_missing_files():
    text = "[ok](index.md), ![fig](figures/missing.svg), [web](https://example.org/x.md), [gone](99_gone.ipynb)"
    assert broken_relative_links("t", text, BOOK) == ["t: figures/missing.svg", "t: 99_gone.ipynb"]
