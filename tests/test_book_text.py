"""The book's text against its stored outputs (issue 24 §3).

Two kinds of defect that reading the book found and that a test can catch:

- a number in the text that no cell printed: typed by hand, it goes stale when a result changes
  (chapter 7 once quoted chapter 3's label preservation as 0.914 while chapter 3 printed 0.922);
- a stored output that the cell's code no longer prints (chapter 6's configuration line said
  ``amp auto`` after the code had changed to ``precision ...``; chapter 1 said ``cyclelib 0.1.0``).
"""
import ast
import json
import re
from functools import cache
from pathlib import Path

import nbformat
import pytest

import cyclelib
from helpers import ROOT

BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))

# A measured number as the book writes them: three or more decimals (0.922), or a percentage
# with one (35.7%). Settings (lambda = 0.5), chance levels (0.1, 0.25) and hours (0.03 h) have fewer.
MEASURED = re.compile(r"(?<![\w.])\d+\.\d{3,}(?!\d)|(?<![\w.])\d+\.\d%")
# What is not prose: inline code, maths, link targets and MyST glue roles.
NOT_PROSE = re.compile(r"```.*?```|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|\]\([^)]*\)|\{glue:[a-z]*\}`[^`]*`", re.S)
LINKED_CHAPTER = re.compile(r"\]\((\d\d_[\w]+\.ipynb)")


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def output_text(cell) -> str:
    """The text a code cell's stored outputs show: streams, and text/plain, text/markdown, text/html data."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        for mime, value in output.get("data", {}).items():
            if mime.startswith("text/"):
                parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts)


@cache
def printed_numbers(name: str) -> frozenset[str]:
    """Every measured number that a notebook's stored outputs show."""
    text = "\n".join(output_text(c) for c in read(BOOK / name).cells if c.cell_type == "code")
    # a table of percentages (the paper's, chapter 9) prints 82.2 where the text says 82.2%
    return frozenset(MEASURED.findall(text) + [f"{n}%" for n in re.findall(r"(?<![\w.])\d+\.\d(?![\d%])", text)])


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, float):
        yield value


@cache
def committed_numbers() -> frozenset[str]:
    """Every number of the committed result files (cyclelib/results/**.json, read through
    cyclelib.book_results), as the book formats them."""
    found = set()
    files = sorted(cyclelib.book_results().rglob("*.json"))
    assert files, "no committed result files found through cyclelib.book_results()"
    for path in files:
        for v in _leaves(json.loads(path.read_text(encoding="utf-8"))):
            found |= {f"{v:.3f}", f"{v:.1%}"}
    return frozenset(found)


def prose_numbers(source: str) -> list[str]:
    return MEASURED.findall(NOT_PROSE.sub(" ", source))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_numbers_in_the_text_are_printed_or_committed(path):
    """Every measured number of a chapter's text is shown by one of its cells' stored outputs, by
    the outputs of a chapter that the same paragraph links to, or is a value of a committed result file."""
    unread = []
    for cell in read(path).cells:
        if cell.cell_type != "markdown":
            continue
        sources = printed_numbers(path.name) | committed_numbers()
        for linked in set(LINKED_CHAPTER.findall(cell.source)):
            sources |= printed_numbers(linked)
        unread += [n for n in prose_numbers(cell.source)
                   if n not in sources]
    assert not unread, f"{path.name}: numbers in the text that no cell printed: {sorted(set(unread))}"


def test_the_number_check_sees_a_stale_quote():
    """The check of the test above: a quote of a number that neither chapter printed is caught."""
    stale = "chapter 3 kept the digit in 0.914 of the translations ([chapter 3](03_cycle_consistency.ipynb))"
    assert prose_numbers(stale) == ["0.914"]
    assert "0.914" not in printed_numbers("03_cycle_consistency.ipynb")
    assert prose_numbers("`lambda=0.125` and $p = 0.333$ and [x](a_0.500.ipynb)") == []


# --------------------------------------------------------------------------- stored outputs


def print_templates(source: str) -> list[re.Pattern]:
    """A pattern for each ``print(f"...")`` at the top level of a cell (run exactly once): its
    literal text, with any line of text where a value goes."""
    try:
        tree = ast.parse(source.replace("%matplotlib inline", "").replace("%pip", "#"))
    except SyntaxError:
        return []
    templates = []
    for node in tree.body:
        call = node.value if isinstance(node, ast.Expr) else None
        if (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "print" and len(call.args) == 1
                and isinstance(call.args[0], ast.JoinedStr)):
            parts = [re.escape(p.value) if isinstance(p, ast.Constant) else r"[^\n]*" for p in call.args[0].values]
            templates.append(re.compile("".join(parts)))
    return templates


STORED_CELLS = [(path, cell) for path in NOTEBOOKS for cell in read(path).cells
                if cell.cell_type == "code" and any(o.output_type == "stream" for o in cell.get("outputs", []))]


@pytest.mark.parametrize("path,cell", STORED_CELLS, ids=lambda v: v.stem if isinstance(v, Path) else v.get("id"))
def test_stored_lines_are_what_the_cell_prints(path, cell):
    """Each top-level f-string ``print`` of a cell shows up in its stored output with the same
    words (the values may differ by run); a printed ``cyclelib X`` is this package's version;
    a printed configuration dictionary has the fields the cell asks for."""
    text = output_text(cell)
    for template in print_templates(cell.source):
        assert template.search(text), f"{path.name} cell {cell.get('id')}: no stored line matches {template.pattern!r}"
    for version in re.findall(r"\bcyclelib (\d+\.\d+\.\d+)", text):
        assert version == cyclelib.__version__, f"{path.name} cell {cell.get('id')}: stored cyclelib {version}"
    shown = re.search(r"^fields_shown = (\(.*?\))$", cell.source, re.S | re.M)
    if shown:
        fields = ast.literal_eval(shown.group(1))
        printed = re.search(r"^\{'.*\}$", text, re.M)
        assert printed and tuple(ast.literal_eval(printed.group())) == fields, f"{path.name} cell {cell.get('id')}"


def test_the_print_check_sees_a_changed_line():
    """The check of the test above: chapter 6's old stored line does not match the cell's print."""
    source = 'print(f"{config.source} → {config.target}, seed {config.seed}, precision {precision}, run folder {config.out}")'
    [template] = print_templates(source)
    assert template.search("mnist5k → mnistm5k, seed 0, precision bfloat16, run folder runs/x\n")
    assert not template.search("mnist5k → mnistm5k, seed 0, amp auto, run folder runs/x\n")


SOURCE_LINE = re.compile(r"^print\(inspect\.getsource\(([\w.]+)\)\)$")


def listing_cells(path: Path) -> list[tuple[nbformat.NotebookNode, list[str], list[str]]]:
    """The cells of a notebook that only import and print package source (``print(inspect.getsource(X))``):
    each with its import lines and the expressions it prints."""
    found = []
    for cell in read(path).cells:
        lines = [line for line in cell.source.splitlines() if line.strip() and not line.startswith("#")]
        listed = [m.group(1) for line in lines if (m := SOURCE_LINE.match(line))]
        imports = [line for line in lines if line.startswith(("import ", "from "))]
        if cell.cell_type == "code" and listed and len(listed) + len(imports) == len(lines):
            found.append((cell, imports, listed))
    return found


LISTINGS = [(path, cell, imports, listed) for path in NOTEBOOKS for cell, imports, listed in listing_cells(path)]


@pytest.mark.parametrize("path,cell,imports,listed", LISTINGS,
                         ids=[f"{p.stem}-{c.get('id')}" for p, c, _, _ in LISTINGS])
def test_stored_source_listings_are_the_packages_source(path, cell, imports, listed):
    """A cell that prints package source stores what the package holds now: a listing stored before the code
    changed shows the reader code that no longer exists (chapter 6 once showed TaskClassifier.train_step
    calling losses.task_loss after it had become self.task_loss). The names come from the notebook's earlier
    imports, as when it runs."""
    import inspect

    namespace = {"cyclelib": cyclelib, "inspect": inspect}
    for earlier in read(path).cells:
        if earlier is cell or earlier.get("id") == cell.get("id"):
            break
        for line in earlier.source.splitlines():
            if line.startswith("from cyclelib") and "(" not in line:
                exec(line, namespace)
    for line in imports:
        exec(line, namespace)
    expected = "".join(inspect.getsource(eval(name, namespace)) + "\n" for name in listed)
    assert output_text(cell) == expected, f"{path.name} cell {cell.get('id')}: stored listing is not today's source"


def test_listing_cells_are_found():
    """The check of the test above sees the listings of the loss chapters."""
    found = {(p.stem, c.get("id")) for p, c, _, _ in LISTINGS}
    assert {("02_adversarial_loss", "cell-04"), ("06_cycada_task_loss", "5f613961"),
            ("07_cycada_pixel_level", "d8065a90")} <= found


# --------------------------------------------------------------------------- glossary, terms, exercises

LANG_DIV = re.compile(r'<div class="lang-(en|zh)">(.*?)</div>', re.S)
# One Chinese term per concept (book/glossary.md), and the Chinese reviewer's fixes: the words on
# the left are what they replaced.
REPLACED_TERMS = {"像素层面": "像素级", "特征层面": "特征级", "仅源域": "仅用源域", "模式寻找": "模式寻求",
                  "上限分类器": "全监督上限", "拷贝": "副本", "复本": "副本", "好几天": "一两天", "皮毛": "毛色与花纹"}


def chinese_text(path: Path) -> str:
    """The Chinese passages and the (bilingual) headings of a page."""
    cells = read(path).cells if path.suffix == ".ipynb" else [nbformat.v4.new_markdown_cell(path.read_text("utf-8"))]
    markdown = [c.source for c in cells if c.cell_type == "markdown"]
    headings = [line for source in markdown for line in source.splitlines() if line.startswith("#")]
    return "\n".join(headings + [text for source in markdown for lang, text in LANG_DIV.findall(source) if lang == "zh"])


@pytest.mark.parametrize("path", NOTEBOOKS + [BOOK / "glossary.md", BOOK / "index.md"], ids=lambda p: p.stem)
def test_chinese_text_uses_the_glossary_terms(path):
    text = chinese_text(path)
    used = {old: new for old, new in REPLACED_TERMS.items() if old in text}
    assert not used, f"{path.name}: write {used}"
    assert not re.search(r"\d+ 轮(?!廓)", text), f"{path.name}: write epoch, as the glossary does, not 轮"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_links_the_glossary(path):
    linked = [c for c in read(path).cells if c.cell_type == "markdown" and "](glossary.md)" in c.source]
    assert linked, f"{path.name}: no link to the glossary"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_has_a_folded_hint_and_answer(path):
    exercises = read(path).cells[-1].source
    assert exercises.startswith("## Exercises / 练习")
    for lang, text in LANG_DIV.findall(exercises):
        titles = ("Hint", "Answer") if lang == "en" else ("提示", "答案")
        for number, item in enumerate(re.split(r"^\d+\.\s", text, flags=re.M)[1:], start=1):
            for title in titles:
                assert re.search(rf":::{{admonition}} {title}\n\s*:class: dropdown\n", item), (
                    f"{path.name}, {lang} exercise {number}: no folded {title}")
