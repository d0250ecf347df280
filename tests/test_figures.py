"""The book's one figure size (issue 24, section 2): the package's figures and the notebooks' stored
figures are drawn at ``plots.DPI`` and no wider than the HTML book's text column, so the page shows
them at full size; legends stand off the curves."""
from __future__ import annotations

import base64
import json
import struct

import matplotlib.pyplot as plt
import pytest
import torch
from helpers import ROOT

from cyclelib import plots

# The widest a code cell's figure is shown in the built book at a 1280 px window (measured in
# Chromium: the output area inside the article, whose clientWidth tests/browser/test_book.py reads).
COLUMN_PX = 676
HISTORY = [{"step": s, "G_A": 1 / (s + 1), "G_B": 0.5, "D_A": 0.25, "D_B": 0.2 + s / 100} for s in range(20)]

NOTEBOOKS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


def png_size_and_dpi(data: bytes) -> tuple[int, int | None]:
    """A PNG's width in pixels and its resolution in dots per inch (its pHYs chunk; None without one)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width = struct.unpack(">I", data[16:20])[0]
    at = 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind == b"pHYs":
            per_metre, _, unit = struct.unpack(">IIB", data[at + 8:at + 17])
            return width, round(per_metre * 0.0254) if unit == 1 else None
        if kind == b"IDAT":
            break
        at += 12 + length
    return width, None


def test_the_book_width_fits_the_column_and_its_smallest_text_is_readable():
    assert 0.9 * COLUMN_PX <= plots.FIGURE_WIDTH * plots.DPI <= COLUMN_PX
    assert plots.FONT_SIZE / 72 * plots.DPI >= 10  # pixels of the smallest text, shown at full size


@pytest.mark.parametrize("n, rows", [(1, 1), (2, 1), (3, 2), (5, 3)])
def test_panels_wrap_onto_rows_of_the_book_width(n, rows):
    fig, axes = plots.panels(n)
    assert len(axes) == len(fig.axes) == n  # the empty cell of an odd last row is removed
    assert tuple(fig.get_size_inches()) == pytest.approx((plots.FIGURE_WIDTH, rows * plots.PANEL_HEIGHT))
    assert fig.dpi == plots.DPI
    plt.close(fig)


def drawn(fig):
    fig.canvas.draw()
    return fig


@pytest.mark.parametrize("make", [
    lambda: plots.history_figure(HISTORY),
    lambda: plots.image_grid_figure([torch.zeros(10, 3, 32, 32)] * 3, ["a", "b", "c"], titles=range(10)),
    lambda: plots.image_grid_figure([torch.zeros(4, 3, 32, 32)], ["a"], scale=2.5),
    lambda: plots.confusion_matrix_figure(torch.eye(10, dtype=torch.long) * 5, title="t"),
    lambda: plots.polarity_figure({k: {"light": 0.8, "dark": 0.1} for k in "abc"}, {k: k for k in "abc"}),
], ids=["history", "grid of 10", "grid of 4 at scale 2.5", "confusion", "polarity"])
def test_the_package_figures_are_at_most_the_book_width_at_its_dpi(make):
    fig = make()
    assert fig.dpi == plots.DPI
    assert fig.get_size_inches()[0] <= plots.FIGURE_WIDTH + 1e-9
    plt.close(fig)


@pytest.mark.parametrize("write", [
    lambda path: plots.plot_history(HISTORY, path),
    lambda path: plots.plot_histories({"pixel": HISTORY, "feature": HISTORY, "empty": []}, path),
    lambda path: plots.plot_confusion_matrix([[3, 1], [0, 4]], path),
    lambda path: plots.save_image_grid([torch.zeros(10, 3, 32, 32)], ["x"], path, titles=range(10)),
], ids=["plot_history", "plot_histories", "plot_confusion_matrix", "save_image_grid"])
def test_the_package_png_files_fit_the_column_at_the_book_dpi(tmp_path, write):
    width, dpi = png_size_and_dpi(write(tmp_path / "figure.png").read_bytes())
    assert width <= COLUMN_PX and dpi == plots.DPI


def test_history_legend_stands_beside_the_curves():
    fig = drawn(plots.history_figure(HISTORY))
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert not legend.overlaps(ax.get_window_extent())
    assert fig.get_tightbbox().x1 * plots.DPI <= COLUMN_PX  # and the figure with it still fits
    plt.close(fig)


def stored_figures(path) -> dict[str, list[tuple[int, int | None]]]:
    """{cell id: [(width, dpi) of each stored PNG]} of a notebook's code cells that show figures."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    found = {}
    for cell in cells:
        images = [base64.b64decode("".join(o["data"]["image/png"])) for o in cell.get("outputs", [])
                  if "image/png" in o.get("data", {})]
        if cell["cell_type"] == "code" and images:
            found[cell["id"]] = [png_size_and_dpi(image) for image in images]
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_figures_fit_the_column_at_the_book_dpi(path):
    wrong = {cell: sizes for cell, sizes in stored_figures(path).items()
             if any(width > COLUMN_PX or dpi != plots.DPI for width, dpi in sizes)}
    assert not wrong, f"{path.name}: figures (width px, dpi) not drawn at {plots.DPI} dpi within {COLUMN_PX} px: {wrong}"
