"""Figures a run writes: sample grids, loss curves, confusion matrices (each file written
atomically, see :mod:`cyclelib.files`).

Axis labels are bilingual ("step / 步数"), like the book. Chinese needs a CJK font: the first
one installed (Noto Sans CJK, from Debian's fonts-noto-cjk, or the system's own on macOS and
Windows) becomes the fallback of matplotlib's default font; without one, the Chinese half of
a label shows as boxes. Where none is installed (Colab), :func:`cjk_font` downloads one.

Every figure, in runs and in the book, is drawn :data:`FIGURE_WIDTH` inches wide (or
narrower) at :data:`DPI`: 640 pixels, which the book's text column (676 pixels for a figure at a 1280
pixel window) shows at full size, so that 8-point text stays 11 pixels high. Figures of
several panels wrap them onto rows (:func:`panels`) rather than growing wider.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
import math
from typing import Sequence

import matplotlib

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # training runs write files and never open windows; notebooks keep inline figures
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from . import download, files  # noqa: E402

FIGURE_WIDTH = 6.4  # inches: 640 px at DPI, inside the 676 px that the book shows of a figure
DPI = 100
PANEL_HEIGHT = 2.6  # inches per row of panels
FONT_SIZE = 8  # points, the smallest text of a figure: 11 px at DPI

CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "PingFang SC",
             "Microsoft YaHei", "SimHei")
# Noto Sans SC, the simplified-Chinese subset of Noto Sans CJK (about 8 MB, SIL Open Font License).
CJK_FONT_URL = "https://github.com/notofonts/noto-cjk/raw/main/Sans/SubsetOTF/SC/NotoSansSC-Regular.otf"


def _fall_back_to(name: str) -> str:
    """Make the font ``name`` the fallback of matplotlib's default font (once)."""
    if name not in plt.rcParams["font.family"]:
        plt.rcParams["font.family"] = [*plt.rcParams["font.family"], name]
    return name


def _use_a_cjk_fallback() -> str | None:
    """Make an installed CJK font the fallback of the default font; returns its name (None: none found)."""
    def installed() -> set[str]:
        return {font.name for font in font_manager.fontManager.ttflist}

    if not installed() & set(CJK_FONTS):  # fonts installed after matplotlib built its cache
        for path in font_manager.findSystemFonts():
            if any(key in Path(path).name for key in ("CJK", "SourceHanSans", "wqy", "PingFang", "msyh", "simhei")):
                font_manager.fontManager.addfont(path)
    found = next((name for name in CJK_FONTS if name in installed()), None)
    return _fall_back_to(found) if found else None


_use_a_cjk_fallback()


def cjk_font(url: str = CJK_FONT_URL, root: str | os.PathLike | None = None) -> str | None:
    """A CJK font for the figures' Chinese labels, made matplotlib's fallback; returns its name.

    An installed one (``CJK_FONTS``) if there is one; else the font file at ``url``, downloaded
    once into ``<root>/fonts`` (``root``: :func:`~cyclelib.download.data_root`, by default
    ``~/.cache/cyclelib``) and registered with matplotlib: what the book's setup cells call on
    Colab, which has no CJK font. Offline it prints one line and returns None; the Chinese half
    of each label then shows as boxes.
    """
    found = _use_a_cjk_fallback()
    if found:
        return found
    path = download.data_root(root) / "fonts" / Path(url).name
    if not path.is_file():
        try:
            download.fetch(url, path)
        except download.DownloadError as err:
            print(f"cyclelib: no CJK font, so Chinese labels in figures show as boxes ({err})")
            return None
    font_manager.fontManager.addfont(str(path))
    return _fall_back_to(font_manager.FontProperties(fname=str(path)).get_name())


def bilingual(en: str, zh: str) -> str:
    """A label in both languages of the book: ``"accuracy / 准确率"``."""
    return f"{en} / {zh}"


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` at ``path`` (folders created) atomically, as :func:`cyclelib.files.save_figure`
    does (a PNG for ``.png``), and close it."""
    try:
        return files.save_figure(fig, path, dpi=DPI)
    finally:
        plt.close(fig)


def panels(n: int = 1, columns: int = 2, height: float = PANEL_HEIGHT, **subplots) -> tuple[Figure, list[Axes]]:
    """A figure of the book's width with ``n`` panels, at most ``columns`` per row, each row
    ``height`` inches high; returns the figure and its ``n`` axes (the unused cells of the
    last row are removed). Its layout is constrained, so a legend placed with
    ``fig.legend(loc="outside lower center")`` takes room of its own instead of covering curves.
    ``subplots``: more arguments of :func:`matplotlib.pyplot.subplots` (``sharex``, ...).
    """
    columns = max(1, min(n, columns))
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(FIGURE_WIDTH, height * rows), dpi=DPI, squeeze=False,
                             layout="constrained", **subplots)
    axes = list(axes.flat)
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


def to_image(t: torch.Tensor) -> torch.Tensor:
    """[C, H, W] in [-1, 1] -> [H, W, 3] in [0, 1] for matplotlib (gray repeated to RGB)."""
    t = (t.detach().float().cpu().clamp(-1, 1) + 1) / 2
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return t.permute(1, 2, 0)


def image_grid_figure(rows: Sequence[torch.Tensor], row_names: Sequence[str],
                      titles: Sequence[str] | None = None, scale: float = 1.0) -> Figure:
    """A figure with one row per batch [N, C, H, W] (all with the same N), named on the left.

    ``titles`` (one per column, e.g. class labels) are written above the first row. The
    images are tiled into one picture (a single axes is far cheaper to draw than N x rows).
    ``scale``: inches per image, reduced where the figure would be wider than :data:`FIGURE_WIDTH`.
    """
    n = rows[0].shape[0]
    tiles = torch.cat([torch.stack([to_image(im) for im in batch]) for batch in rows])  # [R*N, H, W, 3]
    grid = make_grid(tiles.permute(0, 3, 1, 2), nrow=n, padding=2, pad_value=1.0).permute(1, 2, 0)
    h, w = rows[0].shape[-2] + 2, rows[0].shape[-1] + 2  # one tile with its padding
    names = 1.5  # inches left of the images for the row names
    scale = min(scale, (FIGURE_WIDTH - names) / n)
    fig, ax = plt.subplots(figsize=(scale * n + names, scale * len(rows) + (0.3 if titles else 0)), dpi=DPI)
    ax.imshow(grid.numpy(), interpolation="nearest")
    ax.set_yticks([h * (r + 0.5) for r in range(len(rows))], list(row_names), fontsize=FONT_SIZE)
    ax.set_xticks([w * (i + 0.5) for i in range(n)], [str(t) for t in titles] if titles else [""] * n,
                  fontsize=FONT_SIZE)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout()
    return fig


def save_image_grid(rows: Sequence[torch.Tensor], row_names: Sequence[str], path: str | Path,
                    titles: Sequence[str] | None = None) -> Path:
    """Save :func:`image_grid_figure` as a PNG at ``path``."""
    return save_figure(image_grid_figure(rows, row_names, titles), path)


def history_figure(history: Sequence[dict], keys: Sequence[str] | None = None, x: str = "step",
                   ax: Axes | None = None) -> Figure:
    """Loss curves of a run's history (a list of dicts, one per logged step), drawn into ``ax``
    when given (the figure is then the caller's), else into a new figure. The legend stands
    right of the axes, never on the curves."""
    keys = keys or [k for k in history[0] if k not in (x, "epoch")]
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(FIGURE_WIDTH, PANEL_HEIGHT), dpi=DPI, layout="constrained")
    steps = [row[x] for row in history]
    for k in keys:
        ax.plot(steps, [row.get(k, float("nan")) for row in history], label=k)
    ax.set_xlabel(bilingual(x, "步数" if x == "step" else x))
    ax.set_ylabel(bilingual("loss", "损失"))
    ax.legend(fontsize=FONT_SIZE, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(alpha=0.3)
    return fig if fig is not None else ax.figure


def plot_history(history: Sequence[dict], path: str | Path, keys: Sequence[str] | None = None) -> Path:
    """Save :func:`history_figure` as a PNG at ``path``."""
    return save_figure(history_figure(history, keys), path)


def confusion_matrix_figure(matrix: torch.Tensor | Sequence[Sequence[int]], class_names: Sequence[str] | None = None,
                            title: str | None = None) -> Figure:
    """A confusion matrix (rows: true class, columns: predicted) as a heat map with counts.

    Colours show each row normalised by its class size, so a rare class that is always
    wrong stands out as much as a frequent one; the numbers are the raw counts.
    """
    counts = torch.as_tensor(matrix).double()
    k = counts.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    side = min(FIGURE_WIDTH, 0.4 * k + 1.6)
    fig, ax = plt.subplots(figsize=(side, side - 0.3), dpi=DPI)
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if counts[i, j] > 0:
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=FONT_SIZE,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), names, fontsize=FONT_SIZE)
    ax.set_yticks(range(k), names, fontsize=FONT_SIZE)
    ax.set_xlabel(bilingual("predicted", "预测"))
    ax.set_ylabel(bilingual("true", "真实"))
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(matrix: torch.Tensor | Sequence[Sequence[int]], path: str | Path,
                          class_names: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Save :func:`confusion_matrix_figure` as a PNG at ``path``."""
    return save_figure(confusion_matrix_figure(matrix, class_names, title), path)


def polarity_figure(by_result: dict[str, dict[str, float]], names: dict[str, str],
                    title: str | None = None) -> Figure:
    """Each result's accuracy on light and on dark target digits, two bars per result.

    ``by_result``: ``{result: {"light": accuracy, "dark": accuracy}}``, as in the
    ``dark_digits`` entry of a CyCADA ``metrics.json``; ``names``: ``{result: label}``, the
    results to show, top to bottom.
    """
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH, 1.4 + 0.5 * len(names)), dpi=DPI)
    y = torch.arange(len(names)).float()
    for offset, side, label, color in ((-0.2, "light", bilingual("light digits", "浅色数字"), "#dd8452"),
                                       (0.2, "dark", bilingual("dark digits", "深色数字"), "#4c72b0")):
        bars = ax.barh(y + offset, [by_result[key][side] for key in names], height=0.4, label=label, color=color)
        ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=FONT_SIZE)
    ax.set_yticks(y, list(names.values()), fontsize=FONT_SIZE)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(bilingual("accuracy on target test", "目标域测试集上的准确率"))
    ax.invert_yaxis()
    if title:
        ax.set_title(title, fontsize=9, pad=22)
    ax.legend(fontsize=FONT_SIZE, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def plot_histories(histories: dict[str, Sequence[dict]], path: str | Path, x: str = "step") -> Path:
    """Loss curves of several runs (e.g. the stages of CyCADA), one panel each (one per row: each
    legend stands right of its curves), as a PNG."""
    histories = {name: h for name, h in histories.items() if h}
    fig, axes = panels(len(histories), columns=1)
    for ax, (name, history) in zip(axes, histories.items()):
        history_figure(history, x=x, ax=ax)
        ax.set_title(name, fontsize=9)
    return save_figure(fig, path)
