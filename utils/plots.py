"""Figures every notebook reuses: each is shown inline (in a notebook) and saved as a PNG atomically."""

from __future__ import annotations

import functools
import os
import warnings
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt  # headless machines fall back to Agg; tests set MPLBACKEND=Agg
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from utils.io import atomic_path

DPI = 120  # sharp enough in a notebook and a README, small enough to commit a few


def _in_notebook() -> bool:
    """True inside an IPython kernel, where display() renders the figure inline."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ != "TerminalInteractiveShell"


def save_figure(fig: Figure, path: str | os.PathLike, show: bool = True) -> Path:
    """Save ``fig`` as a PNG atomically, display it inline when asked, then close it."""
    path = Path(path)
    try:
        fig.tight_layout()
        with atomic_path(path) as tmp:
            # the temp name ends in .tmp, so the format must be named, not inferred
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
        if show and _in_notebook():
            from IPython.display import Image, display

            display(Image(filename=str(path)))  # the saved PNG itself: works under any backend, even Agg
    finally:
        plt.close(fig)  # a long notebook would otherwise keep every figure in memory
    return path


def _annotate_bars(ax: plt.Axes, total: float) -> None:
    """Write 'count (share%)' above each bar."""
    for patch in ax.patches:
        height = patch.get_height()
        if height <= 0:
            continue
        share = height / total if total else 0.0
        label = f"{int(height):,}" + (f"\n{share:.1%}" if share >= 0.001 else "\n<0.1%" if total else "")
        ax.annotate(label, (patch.get_x() + patch.get_width() / 2, height),
                    ha="center", va="bottom", fontsize=8)
    ax.margins(y=0.18)  # room for the labels above the tallest bar


def countplot(
    values: Mapping[Hashable, int] | Iterable[Hashable],
    path: str | os.PathLike,
    title: str,
    *,
    xlabel: str = "",
    ylabel: str = "count",
    order: Sequence[Hashable] | None = None,
    annotate: bool = True,
    rotate: int = 0,
    show: bool = True,
) -> Path:
    """Bar chart of counts: pass a {label: count} mapping or the raw labels."""
    counts = dict(values) if isinstance(values, Mapping) else dict(Counter(values))
    labels = list(order) if order is not None else sorted(counts, key=lambda k: -counts[k])
    heights = [counts.get(label, 0) for label in labels]
    fig, ax = plt.subplots(figsize=(min(14.0, max(5.0, 0.7 * len(labels) + 2)), 4))
    sns.barplot(x=[str(label) for label in labels], y=heights, ax=ax, color=sns.color_palette()[0])
    if annotate:
        _annotate_bars(ax, sum(heights))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if rotate:
        ax.tick_params(axis="x", labelrotation=rotate)
    return save_figure(fig, path, show)


def bar_values(
    values: Mapping[str, float],
    path: str | os.PathLike,
    title: str,
    *,
    xlabel: str = "",
    fmt: str = "{:.2f}",
    show: bool = True,
) -> Path:
    """Horizontal bars of one value per label, in the order given (a pandas Series works), each written with ``fmt``."""
    pairs = list(values.items())  # a dict or a pandas Series
    labels, heights = [str(k) for k, _ in pairs], [float(v) for _, v in pairs]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(labels) + 1)))
    ax.barh(labels, heights, color=sns.color_palette()[0])
    for y, h in enumerate(heights):
        ax.text(h, y, " " + fmt.format(h), va="center", fontsize=8)
    ax.set(title=title, xlabel=xlabel)
    ax.invert_yaxis()  # the first value on top
    return save_figure(fig, path, show)


def histogram(
    values: Sequence[float],
    path: str | os.PathLike,
    title: str,
    *,
    xlabel: str = "",
    ylabel: str = "count",
    bins: int | str = "auto",
    discrete: bool = False,
    log_y: bool = False,
    show: bool = True,
) -> Path:
    """Histogram of raw values with the mean and median marked."""
    fig, ax = plt.subplots(figsize=(7, 4))
    data = np.asarray(list(values), dtype=float)
    if data.size:
        sns.histplot(x=data, bins=bins, discrete=discrete, ax=ax)
        ax.axvline(data.mean(), color="C1", linestyle="--", label=f"mean {data.mean():.1f}")
        ax.axvline(np.median(data), color="C2", linestyle=":", label=f"median {np.median(data):g}")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    if log_y and data.size:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return save_figure(fig, path, show)


def heatmap(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | os.PathLike,
    title: str,
    *,
    xlabel: str = "",
    ylabel: str = "",
    fmt: str = ".2f",
    annot: Sequence[Sequence[str]] | np.ndarray | bool = True,
    cmap: str = "Blues",
    vmin: float | None = None,
    vmax: float | None = None,
    show: bool = True,
) -> Path:
    """Annotated heatmap; ``annot`` may be a matrix of strings to print instead of the values."""
    data = np.asarray(matrix, dtype=float)
    size = (max(5.0, 0.8 * len(col_labels) + 2.5), max(4.0, 0.6 * len(row_labels) + 1.5))
    fig, ax = plt.subplots(figsize=size)
    text = np.asarray(annot, dtype=object) if not isinstance(annot, bool) else annot
    sns.heatmap(data, annot=text, fmt=fmt if isinstance(annot, bool) else "", cmap=cmap,
                xticklabels=list(col_labels), yticklabels=list(row_labels),
                vmin=vmin, vmax=vmax, square=False, linewidths=0.5, ax=ax,
                annot_kws={"fontsize": 8})
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.tick_params(axis="x", labelrotation=45)
    ax.tick_params(axis="y", labelrotation=0)
    return save_figure(fig, path, show)


def row_normalise(matrix: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Divide each row by its sum; an empty row stays zero instead of becoming NaN."""
    data = np.asarray(matrix, dtype=float)
    sums = data.sum(axis=1, keepdims=True)
    return np.divide(data, sums, out=np.zeros_like(data), where=sums > 0)


def plot_confusion(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    labels: Sequence[str],
    path: str | os.PathLike,
    title: str = "Confusion matrix",
    *,
    show: bool = True,
) -> Path:
    """Confusion matrix (rows gold, columns predicted): colour = share of the gold row, text = count."""
    counts = np.asarray(matrix, dtype=float)
    shares = row_normalise(counts)
    text = np.array([[f"{int(c):,}\n{s:.0%}" if c else "" for c, s in zip(crow, srow)]
                     for crow, srow in zip(counts, shares)], dtype=object)
    return heatmap(shares, labels, labels, path, title, xlabel="predicted", ylabel="gold",
                   annot=text, vmin=0.0, vmax=1.0, show=show)


def default_font() -> str:
    """matplotlib's DejaVu Sans: wider script coverage than wordcloud's bundled mono font."""
    from matplotlib import font_manager

    return font_manager.findfont("DejaVu Sans")


@functools.lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset[int]:
    """Code points a font file can draw."""
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(path).get_charmap())


@functools.lru_cache(maxsize=None)
def _installed_fonts() -> tuple[str, ...]:
    """Font files matplotlib knows plus those on disk at the first call (a font installed after matplotlib
    built its cache, e.g. by apt in an earlier cell, is on disk but not in the cache)."""
    from matplotlib import font_manager

    known = {f.fname for f in font_manager.fontManager.ttflist}
    on_disk = set(font_manager.findSystemFonts(fontext="ttf")) | set(font_manager.findSystemFonts(fontext="otf"))
    # Last Resort maps every code point to a placeholder box: it "covers" all and draws none
    return tuple(sorted(p for p in known | on_disk if "LastResort" not in p))


def pick_font(text: str, warn: bool = True) -> str:
    """DejaVu Sans if it draws every character of ``text``, else the installed font missing fewest
    (so Bangla or CJK words render where a Noto font is installed, as on many hosted notebooks)."""
    chars = {ord(c) for c in text if not c.isspace()}
    best, best_missing = default_font(), None
    for path in (best, *_installed_fonts()):
        try:
            missing = len(chars - _charmap(path))
        except (OSError, RuntimeError):
            continue  # an unreadable font file is just not a candidate
        if missing == 0:
            return path
        if best_missing is None or missing < best_missing:
            best, best_missing = path, missing
    if warn:
        warnings.warn(f"no installed font draws {best_missing} of the characters to plot; they will show as "
                      "boxes: pass a font file that covers the script (FONT_PATH in notebook 01)", stacklevel=2)
    return best


def font_groups(words: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """``words`` split by the font that draws them (``pick_font`` of each word): one group where one font
    draws them all, else one per script family present (Latin, Bangla and Japanese words side by side).
    A word no installed font draws joins the group of the font missing fewest of its characters, once
    warned."""
    whole = pick_font("".join(words), warn=False)
    chars = {ord(c) for w in words for c in w if not c.isspace()}
    if not chars - _charmap(whole):
        return {whole: dict(words)}
    groups: dict[str, dict[str, int]] = {}
    for word, count in words.items():
        groups.setdefault(pick_font(word), {})[word] = count
    return groups


def _cloud_image(words: Mapping[str, int], font_path: str | None, width: int = 400, height: int = 240) -> np.ndarray:
    """One word cloud as an RGB array; with no font given, one cloud per font group side by side (each
    as wide as its share of the counts), so every script is drawn by a font that covers it."""
    from wordcloud import WordCloud

    groups = {font_path: dict(words)} if font_path else font_groups(words)
    total = sum(sum(g.values()) for g in groups.values())
    parts = []
    for font, group in groups.items():
        w = width if len(groups) == 1 else max(120, round(width * sum(group.values()) / total))
        cloud = WordCloud(width=w, height=height, background_color="white", random_state=0,
                          font_path=font, prefer_horizontal=1.0)
        parts.append(cloud.generate_from_frequencies(group).to_array())
    if len(parts) == 1:
        return parts[0]
    gap = np.full((height, 6, 3), 255, dtype=parts[0].dtype)  # a white strip between scripts
    return np.concatenate([x for part in parts for x in (part, gap)][:-1], axis=1)


def wordcloud_grid(
    frequencies: Mapping[str, Mapping[str, int]],
    path: str | os.PathLike,
    title: str,
    *,
    font_path: str | None = None,
    columns: int = 4,
    show: bool = True,
) -> Path:
    """One word cloud per label from {label: {word: count}}; an empty label gets a 'no words' panel. With
    no ``font_path``, each script is drawn in an installed font that covers it (``font_groups``)."""
    labels = list(frequencies)
    rows = max(1, -(-len(labels) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.7 * rows), squeeze=False)
    for ax, label in zip(axes.flat, labels):
        words = {w: c for w, c in frequencies[label].items() if c > 0}
        if words:
            # frequencies, not raw text: our tokeniser already kept Unicode words intact
            ax.imshow(_cloud_image(words, font_path), interpolation="bilinear")
        else:
            ax.text(0.5, 0.5, "no words", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(str(label))
        ax.axis("off")
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    fig.suptitle(title)
    return save_figure(fig, path, show)


def stacked_barh(
    shares: Mapping[str, Mapping[str, float]],
    categories: Sequence[str],
    path: str | os.PathLike,
    title: str,
    *,
    xlabel: str = "share",
    show: bool = True,
) -> Path:
    """Horizontal stacked bars: one bar per row label, split into ``categories`` (shares sum to 1)."""
    rows = list(shares)
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.45 * len(rows) + 1.2)))
    left = np.zeros(len(rows))
    palette = sns.color_palette("tab10", len(categories))
    for colour, cat in zip(palette, categories):
        widths = np.array([shares[r].get(cat, 0.0) for r in rows])
        ax.barh([str(r) for r in rows], widths, left=left, color=colour, label=cat)
        left += widths
    ax.invert_yaxis()  # first row on top, like a table
    ax.set(title=title, xlabel=xlabel, xlim=(0, 1))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=min(len(categories), 7),
              fontsize=8, frameon=False)
    return save_figure(fig, path, show)
