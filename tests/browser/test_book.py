"""The built book in a real browser: headless Debian Chromium driven by selenium.

For every page listed in ``_toc.yml`` it checks what a reader would notice first:

- the page is served and has its article;
- MathJax rendered every formula (each Sphinx ``.math`` element holds an
  ``mjx-container``, no MathJax error box, no raw ``$$``, ``\\(`` or ``\\[`` left
  in the visible text);
- every ``<img>`` loaded (``naturalWidth > 0``);
- no raw Markdown table (a ``|---|`` row) in the visible text, and the tables that
  chapters 9 and 10's code cells display as Markdown are real ``<table>`` elements
  (``nb_render_markdown_format: myst`` in ``_config.yml``);
- output areas that hold nothing but an ipywidgets control (which needs a kernel)
  are hidden, other outputs are shown;
- the browser console logged no error (level SEVERE: a script that failed, a
  resource that could not be fetched);
- the layout at 1280 px: no display equation and no table whose content is wider than its
  box, unless a box between it and the article scrolls (``overflow-x: auto``/``scroll``), so
  nothing is clipped or spills over the column; and no figure shown below 80% of its natural
  width while that width fits the column (issue 24: figures too small to read);
- the language switch (``book/_static/lang.js``): English hides every ``.lang-zh``
  and shows the ``.lang-en`` passages, 中文 the opposite, Both shows both;

and, across pages, that the choice is remembered (localStorage) after navigating.

The book is served from ``_build/html`` by ``http.server`` on 127.0.0.1 (a random
port), so the pages are fetched over HTTP exactly as a web server would deliver
them. One browser session serves every test. Build the book first
(``make book``); without ``_build/html`` the tests are skipped.
"""
from __future__ import annotations

import functools
import http.server
import re
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from book_toc import toc_entries
from helpers import ROOT

HTML = ROOT / "_build" / "html"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LANGS = ("en", "zh", "both")
STORAGE_KEY = "cyclelib-lang"  # as in book/_static/lang.js
# A Markdown table that was not rendered shows its delimiter row, |---|---| or | :--- |,
# which Sphinx's smart quotes may have turned into |—|—|.
RAW_TABLE_ROW = re.compile(r"\|\s*:?(-{3,}|[—–]{1,3}):?\s*\|")
# Pages whose code cells display Markdown tables (IPython.display.Markdown), and how
# many <table> elements each must have at least once they are rendered.
MARKDOWN_OUTPUT_TABLES = {"book/09_cycada_results": 3, "book/10_beyond_the_paper": 2}

pytestmark = pytest.mark.browser

if not HTML.is_dir():
    pytest.skip(f"{HTML} does not exist: build the book first (`make book`)", allow_module_level=True)

from selenium import webdriver  # noqa: E402  (after the skip: only needed when there is a book)
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


def toc_pages() -> list[str]:
    """The toc entries without suffix, e.g. ``book/index``; each is built to ``<entry>.html``."""
    return [re.sub(r"\.(md|ipynb)$", "", entry) for entry in toc_entries()]


def page_source(entry: str) -> str:
    """The text of a page's source file (.md or .ipynb), to know what the page should contain."""
    for suffix in (".md", ".ipynb"):
        path = ROOT / (entry + suffix)
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError(f"_toc.yml lists {entry!r}, but neither {entry}.md nor {entry}.ipynb exists")


PAGES = toc_pages()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002  (the base class's name)
        pass  # one line per request would bury pytest's report


@pytest.fixture(scope="module")
def server():
    """Base URL of ``_build/html`` served on 127.0.0.1 at a free port, in a thread."""
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for all tests, with a fresh profile (so nothing is remembered yet)."""
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not Path(tool).is_file():
            pytest.fail(f"{tool} is missing: install Debian's chromium and chromium-driver "
                        f"(`make browser-deps`, or apt-get install -y chromium chromium-driver fonts-noto-cjk)")
    options = Options()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console messages, read by get_log
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def open_page(browser, server, entry: str) -> None:
    """Load a page; fail with the HTTP status when the server does not have it."""
    url = f"{server}/{entry}.html"
    browser.get_log("browser")  # discard what earlier pages logged
    try:
        with urllib.request.urlopen(url) as response:
            assert response.status == 200
    except OSError as err:
        pytest.fail(f"{url} could not be fetched ({err}): {entry} was not built into {HTML}")
    browser.get(url)
    assert browser.execute_script("return document.readyState") == "complete"
    assert browser.find_elements(By.CSS_SELECTOR, "article"), f"{entry}: no <article> on the page"


# Resolves once MathJax has typeset the page, or with a reason when it never started.
WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
const start = Date.now();
(function poll() {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(() => done("ok"), (err) => done("MathJax failed: " + err));
  } else if (Date.now() - start > 20000) {
    const script = Array.from(document.scripts).find((s) => /mathjax/i.test(s.src));
    done("MathJax did not load within 20 s (script: " + (script ? script.src : "none") + ")");
  } else {
    setTimeout(poll, 100);
  }
})();
"""

# The visible text of the article, without code (which may legitimately show TeX).
ARTICLE_TEXT = """
const article = document.querySelector("article").cloneNode(true);
article.querySelectorAll("pre, code, .highlight, script, style, mjx-container, mjx-assistive-mml")
  .forEach((el) => el.remove());
return article.textContent;
"""

# Waits for every image (lazy ones made eager), then lists the ones that did not load.
BROKEN_IMAGES = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
images.forEach((img) => { if (img.loading === "lazy") img.loading = "eager"; });
Promise.all(images.map((img) => img.complete ? null : new Promise((resolve) => {
  img.addEventListener("load", resolve);
  img.addEventListener("error", resolve);
}))).then(() => done(images.filter((img) => !(img.complete && img.naturalWidth > 0))
                             .map((img) => img.currentSrc || img.src || img.outerHTML.slice(0, 120))));
"""

# How many passages of each language there are and how many are visible.
LANGUAGE_STATE = """
const count = (selector) => {
  const all = Array.from(document.querySelectorAll(selector));
  return [all.length, all.filter((el) => el.checkVisibility({visibilityProperty: true})).length];
};
return {lang: document.documentElement.getAttribute("data-lang"),
        stored: window.localStorage.getItem(arguments[0]),
        en: count(".lang-en"), zh: count(".lang-zh")};
"""


# Output areas of code cells: those that hold only an ipywidgets view, and the others.
OUTPUT_AREAS = """
const isWidget = (el) => el.matches('script[type="application/vnd.jupyter.widget-view+json"]');
const areas = Array.from(document.querySelectorAll("article .cell_output"));
const widgetOnly = areas.filter((a) => a.children.length > 0 && Array.from(a.children).every(isWidget));
const others = areas.filter((a) => !widgetOnly.includes(a) && a.children.length > 0);
return {widgetOnlyShown: widgetOnly.filter((a) => a.checkVisibility()).length, widgetOnly: widgetOnly.length,
        othersHidden: others.filter((a) => !a.checkVisibility()).map((a) => a.textContent.trim().slice(0, 80))};
"""


# Display equations and tables whose content is wider than a box around it that does not scroll
# (the content is clipped, or spills over the column), and figures shown below 80% of their
# natural width although that width fits the article's column. Only visible elements count:
# a folded dropdown shows nothing.
LAYOUT_PROBLEMS = """
const article = document.querySelector("article");
const visible = (el) => el.checkVisibility({visibilityProperty: true});
const label = (el) => (el.textContent || el.getAttribute("src") || "").trim().replace(/\\s+/g, " ").slice(0, 60);
function tooWide(content) {
  // Walk from the content to the article: the first box narrower than what it holds must scroll.
  const inside = content.getBoundingClientRect();
  for (let box = content.parentElement; box && box !== article.parentElement; box = box.parentElement) {
    const left = box.getBoundingClientRect().left + box.clientLeft;
    if (inside.right > left + box.clientWidth + 1 || inside.left < left - 1) {
      const scrolls = ["auto", "scroll"].includes(getComputedStyle(box).overflowX);
      return scrolls ? null : `${Math.round(inside.width)} px in a ${box.clientWidth} px box ` +
                              `(${box.tagName.toLowerCase()}.${String(box.className).split(" ")[0]})`;
    }
  }
  return null;
}
const problems = [];
for (const math of article.querySelectorAll('mjx-container[display="true"]')) {
  if (!visible(math)) continue;
  const content = math.querySelector("mjx-math") || math;
  const why = tooWide(content);
  if (why) problems.push(`equation ${why}: ${label(math.closest(".math") || math)}`);
}
for (const table of article.querySelectorAll("table")) {
  if (!visible(table)) continue;
  const why = tooWide(table);
  if (why) problems.push(`table ${why}: ${label(table)}`);
}
const column = article.clientWidth;
for (const img of article.querySelectorAll("img")) {
  if (!visible(img) || !img.naturalWidth) continue;
  const shown = img.getBoundingClientRect().width;
  if (img.naturalWidth <= column && shown < 0.8 * img.naturalWidth)
    problems.push(`figure shown at ${Math.round(100 * shown / img.naturalWidth)}% of its ${img.naturalWidth} px ` +
                  `(column ${column} px): ${label(img)}`);
}
return problems;
"""


def console_errors(browser) -> list[str]:
    """The SEVERE messages the browser console logged since the last call."""
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def choose_language(browser, lang: str) -> None:
    buttons = browser.find_elements(By.CSS_SELECTOR, f'.cyclelib-lang-switch button[data-lang="{lang}"]')
    assert len(buttons) == 1, f"the language switch has no single {lang!r} button"
    buttons[0].click()


def language_state(browser) -> dict:
    return browser.execute_script(LANGUAGE_STATE, STORAGE_KEY)


def assert_shows(state: dict, lang: str, where: str) -> None:
    """``lang`` is applied: the other language's passages are all hidden, its own all shown."""
    (en_total, en_shown), (zh_total, zh_shown) = state["en"], state["zh"]
    assert state["lang"] == lang, f"{where}: <html data-lang> is {state['lang']!r}, expected {lang!r}"
    expected_en = en_total if lang in ("en", "both") else 0
    expected_zh = zh_total if lang in ("zh", "both") else 0
    assert (en_shown, zh_shown) == (expected_en, expected_zh), (
        f"{where}, language {lang!r}: {en_shown} of {en_total} English and {zh_shown} of {zh_total} "
        f"Chinese passages visible; expected {expected_en} and {expected_zh}")


def test_toc_lists_pages():
    assert PAGES and PAGES[0] == "book/index", f"_toc.yml should start with book/index, has {PAGES[:1]}"


@pytest.mark.parametrize("entry", PAGES)
def test_page(browser, server, entry):
    open_page(browser, server, entry)
    source = page_source(entry)
    choose_language(browser, "both")  # everything visible for the text checks

    # MathJax: every formula typeset, none left as raw TeX, no TeX error.
    has_math = bool(browser.find_elements(By.CSS_SELECTOR, "article .math"))
    if has_math:
        status = browser.execute_async_script(WAIT_FOR_MATHJAX)
        assert status == "ok", f"{entry}: {status}"
        untypeset = browser.execute_script(
            "return Array.from(document.querySelectorAll('article .math'))"
            ".filter((el) => !el.querySelector('mjx-container')).map((el) => el.textContent.slice(0, 80));")
        assert untypeset == [], f"{entry}: formulas MathJax did not render: {untypeset[:5]}"
        assert browser.find_elements(By.CSS_SELECTOR, "article mjx-container")
        errors = browser.execute_script(
            "return Array.from(document.querySelectorAll('mjx-merror'))"
            ".map((el) => el.getAttribute('data-mjx-error') || el.textContent);")
        assert errors == [], f"{entry}: MathJax could not typeset: {errors[:5]}"
    text = browser.execute_script(ARTICLE_TEXT)
    for raw in ("$$", "\\(", "\\[", 'class="lang-'):
        assert raw not in text, f"{entry}: raw {raw!r} in the visible text near " \
                                f"{text[max(0, text.find(raw) - 60):text.find(raw) + 60]!r}"

    broken = browser.execute_async_script(BROKEN_IMAGES)
    assert broken == [], f"{entry}: images that did not load: {broken}"

    # Markdown tables, written in cells or displayed by code, are rendered as tables.
    raw_rows = [text[max(0, m.start() - 80):m.end() + 20] for m in RAW_TABLE_ROW.finditer(text)]
    assert raw_rows == [], f"{entry}: raw Markdown tables in the visible text: {raw_rows[:3]}"
    tables = len(browser.find_elements(By.CSS_SELECTOR, "article table"))
    assert tables >= MARKDOWN_OUTPUT_TABLES.get(entry, 0), (
        f"{entry}: {tables} <table> elements, expected at least {MARKDOWN_OUTPUT_TABLES[entry]}")

    # A widget without a kernel renders nothing: its output area is hidden, no other is.
    areas = browser.execute_script(OUTPUT_AREAS)
    assert areas["widgetOnlyShown"] == 0, (
        f"{entry}: {areas['widgetOnlyShown']} of {areas['widgetOnly']} widget-only output areas are shown (empty boxes)")
    assert areas["othersHidden"] == [], f"{entry}: output areas hidden although they hold output: {areas['othersHidden']}"

    # Nothing clipped or too wide for the column, no figure shrunk that would fit.
    layout = browser.execute_script(LAYOUT_PROBLEMS)
    assert layout == [], f"{entry}: layout problems at 1280 px:\n" + "\n".join(layout)

    # The language switch: each choice hides exactly the other language.
    state = language_state(browser)
    if 'class="lang-en"' in source:
        assert state["en"][0] > 0 and state["zh"][0] > 0, (
            f"{entry}: the source has language divs but the page has {state['en'][0]} .lang-en and "
            f"{state['zh'][0]} .lang-zh elements")
    for lang in LANGS:
        choose_language(browser, lang)
        assert_shows(language_state(browser), lang, entry)

    errors = console_errors(browser)
    assert errors == [], f"{entry}: the browser console logged errors:\n" + "\n".join(errors)


def test_choice_is_remembered_across_pages(browser, server):
    """A choice made on one page holds on every other page, and a later choice replaces it."""
    first, *others = PAGES
    open_page(browser, server, first)
    choose_language(browser, "en")
    for entry in others:
        open_page(browser, server, entry)
        state = language_state(browser)
        assert state["stored"] == "en", f"{entry}: localStorage holds {state['stored']!r} after choosing English"
        assert_shows(state, "en", f"{entry} (after choosing English on {first})")
    choose_language(browser, "zh")
    open_page(browser, server, first)
    assert_shows(language_state(browser), "zh", f"{first} (after choosing 中文 on {PAGES[-1]})")
    choose_language(browser, "both")


def test_layout_check_sees_what_is_clipped_too_wide_or_too_small(browser):
    """The layout check of test_page on a page made to fail it: an equation clipped by its box,
    a table wider than a box that does not scroll, a figure shrunk to half although it fits;
    and the same three made right: the equation's box scrolls, the table fits, the figure is full size."""
    figure = "data:image/svg+xml," + urllib.parse.quote(
        '<svg xmlns="http://www.w3.org/2000/svg" width="300" height="100"><rect width="300" height="100"/></svg>')
    page = f"""<html><body style="width: 700px"><article style="width: 600px">
      <mjx-container display="true" style="display: block; overflow-x: {{overflow}}">
        <mjx-math style="display: inline-block; width: {{math}}px">x = 1</mjx-math></mjx-container>
      <div><table style="width: {{table}}px"><tr><td>a</td></tr></table></div>
      <img src="{figure}" style="width: {{img}}px">
    </article></body></html>"""
    expected = {("hidden", 900, 800, 150): ["equation", "table", "figure shown at 50%"],
                ("auto", 900, 500, 300): []}
    for (overflow, math, table, img), problems in expected.items():
        html = page.format(overflow=overflow, math=math, table=table, img=img)
        browser.get("data:text/html;charset=utf-8," + urllib.parse.quote(html))
        browser.execute_async_script(BROKEN_IMAGES)  # wait for the figure
        found = browser.execute_script(LAYOUT_PROBLEMS)
        assert [p for p in problems if not any(f.startswith(p) for f in found)] == [] and len(found) == len(problems), found
