"""The pages of the book's ``_toc.yml``, shared by the packaging, notebook and browser tests."""
from pathlib import Path

import yaml

TOC = Path(__file__).resolve().parents[1] / "_toc.yml"


def load_toc() -> dict:
    return yaml.safe_load(TOC.read_text(encoding="utf-8"))


def toc_entries(node: dict | None = None) -> list[str]:
    """Every page of a jb-book table of contents (root, parts, chapters, sections), in reading order."""
    node = load_toc() if node is None else node
    pages = [node[key] for key in ("root", "file") if key in node]
    for key in ("parts", "chapters", "sections"):
        for child in node.get(key, []):
            pages += toc_entries(child)
    return pages
