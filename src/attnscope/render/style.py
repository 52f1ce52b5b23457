"""Shared figure style: print-friendly colour maps, CJK font fallback, token ticks that never overlap, saving."""

from __future__ import annotations

import contextlib
import math
import functools
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import matplotlib
import numpy as np

if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, Locator, NullLocator  # noqa: E402

from ..errors import InputError, UnknownNameError  # noqa: E402

# White at zero, one hue rising: prints well in colour and in greyscale, near-zero weights use no ink.
SEQUENTIAL_CMAP = "Blues"
DIVERGING_CMAP = "RdBu_r"  # differences, centred on 0
SCORE_CMAP = "viridis"  # head-score tables (perceptually uniform, colour-blind safe)
FORMATS = ("png", "svg", "pdf")
ANNOTATE_MAX = 16  # annotate heatmap cells with their values up to this many tokens

# Glyph fallback order: Latin from DejaVu, then Noto CJK (Debian's fonts-noto-cjk) for Japanese/Chinese/Korean.
_CJK_CANDIDATES = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Serif CJK JP", "IPAexGothic", "IPAGothic",
                   "TakaoGothic", "WenQuanYi Zen Hei", "Droid Sans Fallback")


@functools.lru_cache(maxsize=1)
def font_families() -> list[str]:
    """DejaVu Sans plus the first installed CJK font (matplotlib falls back per glyph along this list)."""
    names = {f.name for f in font_manager.fontManager.ttflist}
    fams = ["DejaVu Sans"]
    cjk = next((c for c in _CJK_CANDIDATES if c in names), None)
    if cjk is None:  # a font installed after matplotlib built its cache
        font_manager.fontManager = font_manager.FontManager()  # type: ignore[attr-defined]
        names = {f.name for f in font_manager.fontManager.ttflist}
        cjk = next((c for c in _CJK_CANDIDATES if c in names), None)
    if cjk:
        fams.append(cjk)
    return fams


def has_cjk_font() -> bool:
    return len(font_families()) > 1


def rc() -> dict:
    return {
        "font.family": font_families(),
        "font.size": 9,
        "axes.titlesize": 10,
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "svg.fonttype": "none",  # text stays text in SVG (searchable, selectable, editable); the font is named
        "pdf.fonttype": 42,
        "axes.unicode_minus": False,
        "image.cmap": SEQUENTIAL_CMAP,
    }


@contextlib.contextmanager
def style() -> Iterator[None]:
    with matplotlib.rc_context(rc()):
        yield


def styled(fn: Callable) -> Callable:
    """Decorator: build the figure under :func:`style` (fonts are resolved when text is created)."""

    @functools.wraps(fn)
    def wrapper(*a, **k):
        with style():
            return fn(*a, **k)

    return wrapper


def new_figure(**kwargs) -> Figure:
    """A Figure that pyplot does not know about (Agg canvas attached).

    Figures returned by attnscope are not registered with pyplot's figure manager, so a notebook shows
    a returned figure once (as the cell's value) instead of twice (once more when pyplot shows every
    open figure at the end of the cell), and nothing accumulates in pyplot's state. Show one in a
    notebook by returning or ``display``-ing it; in a script, save it (:func:`save_figure`).
    """
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


_SUBPLOT_KEYS = {"sharex", "sharey", "squeeze", "width_ratios", "height_ratios", "subplot_kw", "gridspec_kw"}


def subplots(nrows: int = 1, ncols: int = 1, **kwargs):
    """Like ``plt.subplots`` (``squeeze``, ``sharex``, ``width_ratios``, ``gridspec_kw``…; other keywords go
    to the Figure: ``figsize``, ``layout``, ``dpi``…) but the figure is not registered with pyplot (see
    :func:`new_figure`); returns ``(fig, axes)``."""
    fig = new_figure(**{k: v for k, v in kwargs.items() if k not in _SUBPLOT_KEYS})
    return fig, fig.subplots(nrows, ncols, **{k: v for k, v in kwargs.items() if k in _SUBPLOT_KEYS})


def constant_ylim(ax, values, rate: bool = False) -> None:
    """Give a panel of constant data a readable y-range instead of matplotlib's ±4 % around the value
    (an all-zero rate got -0.04..0.04): rates (``rate=True``) get 0..1; other constants value ± 1
    (0..1 for a constant 0). Does nothing when the values vary."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0 or v.max() != v.min():
        return
    c = float(v[0])
    if rate and 0.0 <= c <= 1.0:
        ax.set_ylim(0.0, 1.0)
    elif c == 0.0:
        ax.set_ylim(0.0, 1.0)
    else:
        ax.set_ylim(min(0.0, c - abs(c)), max(0.0, c + abs(c)))


class TokenLocator(Locator):
    """Ticks at every k-th token, k chosen at draw time from the axis length so labels never overlap.

    k is the smallest of 1, 2, 3, 4, 5, 10, 20, 25, 50, 100… for which the labels fit along the axis as
    drawn: each label needs one line of the tick font (DejaVu Sans: 1.0 × the font size; CJK glyphs from
    Noto Sans CJK: 1.14 ×) plus a 12 % gap. Short inputs get every token.
    """

    STRIDES = (1, 2, 3, 4, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000)
    GAP = 1.12

    def __init__(self, n: int, labels: Sequence[str] = ()):
        self.n = n
        # CJK (and other wide-script) glyphs come from the fallback font, whose lines are taller
        self.line = 1.14 if any(ord(c) >= 0x2E80 for lab in labels for c in lab) else 1.0

    def label_pitch(self) -> float:
        """Pixels one tick label needs along the axis (its line height plus the gap)."""
        ticks = self.axis.get_major_ticks(1)
        size_pt = ticks[0].label1.get_fontsize() if ticks else 8
        return size_pt * self.axis.axes.figure.dpi / 72 * self.line * self.GAP

    def stride(self) -> int:
        axis = self.axis
        box = axis.axes.get_window_extent()
        length = box.width if axis.axis_name == "x" else box.height
        fit = max(1, int(length // self.label_pitch()))
        return next((k for k in self.STRIDES if math.ceil(self.n / k) <= fit), self.STRIDES[-1])

    def __call__(self):
        if self.n == 0:
            return []
        return list(range(0, self.n, self.stride()))

    def tick_values(self, vmin, vmax):
        return self()


def set_token_ticks(ax, axis: str, labels: Sequence[str], rotate: bool | None = None) -> None:
    """Label an axis with tokens, thinned at draw time (:class:`TokenLocator`) so labels never overlap.

    At 512 tokens every k-th token is labelled; short inputs get every token. x labels are vertical.
    """
    labels = [str(s) for s in labels]
    n = len(labels)
    fmt = FuncFormatter(lambda x, pos: labels[int(round(x))] if abs(x - round(x)) < 1e-6 and 0 <= round(x) < n else "")
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(TokenLocator(n, labels))
    target.set_major_formatter(fmt)
    target.set_minor_locator(NullLocator())
    size = 8 if n <= 40 else 7
    ax.tick_params(axis=axis, labelsize=size)
    if axis == "x" and (rotate if rotate is not None else True):
        ax.tick_params(axis="x", labelrotation=90)


def save_figure(fig, path_stem: str | os.PathLike, formats: Sequence[str] = FORMATS, dpi: int = 150,
                close: bool = True) -> list[Path]:
    """Write ``fig`` as ``path_stem.png/.svg/.pdf`` (the formats given); returns the paths written."""
    stem = Path(path_stem)
    if stem.suffix.lower().lstrip(".") in FORMATS:
        stem = stem.with_suffix("")
    for f in formats:
        if f not in FORMATS:
            raise UnknownNameError("figure format", f, FORMATS)
    if not formats:
        raise InputError("save_figure needs at least one format")
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    with style():
        for f in formats:
            p = stem.with_name(stem.name + "." + f)
            fig.savefig(p, format=f, dpi=dpi, bbox_inches="tight", metadata=_metadata(f))
            out.append(p)
    if close:
        plt.close(fig)
    return out


def _metadata(fmt: str) -> dict:
    # reproducible files: no creation date in SVG/PDF
    if fmt == "svg":
        return {"Date": None}
    if fmt == "pdf":
        return {"CreationDate": None}
    return {}
