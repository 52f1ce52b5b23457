"""Small matplotlib figures for the seq2seq docs and training runs (alignment maps, statistics, curves).

The general renderers live in :mod:`attnscope.render`; these are the training run's own PNGs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..analysis._common import CROSS_ROW_TITLE
from ..render.style import constant_ylim, styled, subplots

RATE_KEYS = ("em", "exact_match", "accuracy")  # metrics that are rates in [0, 1]


def _plt():  # noqa: ANN202
    """pyplot, for experiments.plot_heads (which closes what it makes); the figures here use :func:`subplots`."""
    import matplotlib.pyplot as plt

    return plt


def _is_rate(key: str, label: str) -> bool:
    return key in RATE_KEYS or any(w in label.lower() for w in ("exact match", "accuracy"))


def _save(fig, path: str | Path, title: str = "") -> Path:
    """Title, tight layout, PNG at 110 dpi (folders created), figure closed; returns the path."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


@styled
def plot_alignment(weights: torch.Tensor, source: Sequence[str], target: Sequence[str], path: str | Path,
                   title: str = "") -> Path:
    """Heatmap of one head's cross attention (T, S): rows = generated target tokens, columns = source tokens."""
    w = weights.detach().float().cpu().numpy()
    t, s = w.shape
    fig, ax = subplots(figsize=(max(4.0, 0.32 * s + 1.8), max(3.0, 0.32 * t + 1.4)))
    im = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(s))
    ax.set_xticklabels(list(source), rotation=90 if max(map(len, source), default=1) > 2 else 0, fontsize=9)
    ax.set_yticks(range(t))
    ax.set_yticklabels(list(target), fontsize=9)
    ax.set_xlabel("source")
    ax.set_ylabel(CROSS_ROW_TITLE)  # row i: the token step i produces
    if title:
        import textwrap

        ax.set_title("\n".join(textwrap.wrap(title, max(40, int(9 * fig.get_size_inches()[0])))), fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


@styled
def plot_step_stats(stats: dict[str, torch.Tensor], target: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Entropy, max weight and effective positions per generated target token (one head: (T,) each)."""
    fig, axes = subplots(1, 3, figsize=(12, 3.2))
    for ax, (key, label) in zip(axes, [("entropy", "entropy (nats)"), ("max", "max weight"),
                                       ("effective_positions", "positions with weight > 0.1")]):
        v = stats[key].float().cpu().numpy()
        ax.bar(range(len(v)), v, color="#4c72b0")
        ax.set_xticks(range(len(v)))
        ax.set_xticklabels(list(target), fontsize=8)
        ax.set_title(label, fontsize=10)
    return _save(fig, path, title)


@styled
def plot_bars(groups: dict[str, dict[str, float]], metrics: list[tuple[str, str]], path: str | Path,
              title: str = "") -> Path:
    """One bar panel per metric ((key, label)), one bar per group (e.g. per attention score)."""
    fig, axes = subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.2))
    axes = axes if len(metrics) > 1 else [axes]
    names = list(groups)
    for ax, (key, label) in zip(axes, metrics):
        bars = ax.bar(range(len(names)), [groups[n][key] for n in names], color="#55a868")
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=1)  # the values (an all-zero panel has no bars to see)
        constant_ylim(ax, [groups[n][key] for n in names], rate=_is_rate(key, label))  # all 0: 0..1, not ±0.04
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
    return _save(fig, path, title)


@styled
def plot_lines(x: Sequence[float] | Sequence[str], series: dict[str, dict[str, Sequence[float]]],
               metrics: list[tuple[str, str]], path: str | Path, xlabel: str = "", title: str = "") -> Path:
    """One panel per metric; one line per series (series name -> metric -> values over x)."""
    fig, axes = subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2))
    axes = axes if len(metrics) > 1 else [axes]
    xs = list(range(len(x)))
    for ax, (key, label) in zip(axes, metrics):
        for name, vals in series.items():
            ax.plot(xs, vals[key], marker="o", label=name, clip_on=False)  # points on the frame stay visible
        constant_ylim(ax, [v for vals in series.values() for v in vals[key]], rate=_is_rate(key, label))
        ax.set_xticks(xs)
        ax.set_xticklabels([str(v) for v in x], fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=8)
    return _save(fig, path, title)
