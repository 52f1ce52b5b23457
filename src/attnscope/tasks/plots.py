"""Figures for the task analyses (matplotlib, PNG/SVG/PDF by the file suffix). Plots never run a model."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.patches import Rectangle

from ..analysis._common import CROSS_ROW_TITLE
from ..render.style import styled, subplots


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _short(labels: Sequence[str], n: int = 14) -> list[str]:
    return [l if len(l) <= n else l[: n - 1] + "…" for l in labels]


def heatmap(ax, m: np.ndarray, xlabels=None, ylabels=None, cmap="Blues", vmin=None, vmax=None, max_ticks: int = 60):
    im = ax.imshow(m, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    for labels, setter, ticks, rot in ((xlabels, ax.set_xticklabels, ax.set_xticks, 90),
                                       (ylabels, ax.set_yticklabels, ax.set_yticks, 0)):
        if labels is not None and len(labels) <= max_ticks:
            ticks(range(len(labels)))
            setter(_short(labels), rotation=rot, fontsize=7)
    return im


# ---------------------------------------------------------------------------- sentiment
@styled
def plot_class_patterns(p, path) -> Path:
    groups = list(p.patterns)
    fig, axes = subplots(1, len(groups), figsize=(3.6 * len(groups) + 1, 3.8), squeeze=False)
    vmax = float(np.nanmax([np.nanmax(v) for v in p.patterns.values()]))
    for ax, g in zip(axes[0], groups):
        im = heatmap(ax, p.patterns[g], p.axis, p.axis, vmin=0, vmax=vmax)
        ax.set_title(f"{g} (n={p.counts[g]})", fontsize=10)
        ax.set_xlabel("key (relative position)")
    axes[0][0].set_ylabel("query (relative position)")
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="attention (row sums to 1)")
    fig.suptitle(f"Length-normalised attention by {p.by}, layers {p.layers}, head mean", fontsize=11)
    return _save(fig, path)


@styled
def plot_important_tokens(t, path) -> Path:
    groups = [g for g in t.by_group if t.by_group[g]]
    if not groups:
        groups = list(t.by_group)[:1]
    fig, axes = subplots(1, max(1, len(groups)), figsize=(3.4 * max(1, len(groups)) + 0.5, 4.2), squeeze=False)
    for ax, g in zip(axes[0], groups):
        rows = t.by_group.get(g, [])[::-1]
        ax.barh(range(len(rows)), [r[1] for r in rows], color="tab:blue")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"{r[0]} ({r[2]})" for r in rows], fontsize=8)
        ax.axvline(1.0, color="gray", lw=0.8, ls="--")
        ax.set_title(f"{g}  ([CLS]/[SEP] get {t.special_share.get(g, float('nan')):.0%})", fontsize=9)
        ax.set_xlabel("received attention / uniform share")
    fig.suptitle("Words that receive the most attention (all layers and heads; count in brackets)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


@styled
def plot_explanation(e, path) -> Path:
    n = len(e.tokens)
    x = np.arange(n)
    fig, ax = subplots(figsize=(max(6, 0.32 * n + 2), 3.6))
    ax.bar(x - 0.2, e.rollout, 0.4, label="attention rollout from [CLS]")
    ax.bar(x + 0.2, e.integrated_gradients, 0.4, label="|integrated gradients|")
    ax.set_xticks(x)
    ax.set_xticklabels(_short(e.tokens), rotation=90, fontsize=8)
    ax.set_ylabel("share over content tokens")
    ax.legend(fontsize=8)
    ax.set_title(textwrap.shorten(f"predicted {e.predicted} (p={e.probability:.2f}); Spearman ρ={e.spearman:.2f} — "
                                  f"{e.text}", 110), fontsize=9)
    return _save(fig, path)


MISTAKE_COLUMNS = (("label", 0.1), ("predicted", 0.1), ("conf.", 0.06), ("text", 0.5),
                   ("most attended", 0.24))  # (title, share of the table's width)
MISTAKE_WIDTH_IN, MISTAKE_FONT_PT = 11.0, 7.0


def _wrap_cell(text: str, width_pt: float, max_lines: int = 3) -> list[str]:
    """Greedy word wrap by the rendered width of the text (7 pt, the figure's fonts): long words are cut,
    more than ``max_lines`` lines end in "…"."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    measure, font = TextToPath(), FontProperties(size=MISTAKE_FONT_PT)

    def fits(s: str) -> bool:
        return measure.get_text_width_height_descent(s, font, ismath=False)[0] <= width_pt

    lines: list[str] = []
    for word in text.split():
        while not fits(word):  # a word wider than the cell: cut it
            k = max(1, max(i for i in range(1, len(word) + 1) if i == 1 or fits(word[:i])))
            lines.append(word[:k])
            word = word[k:]
        if lines and fits(lines[-1] + " " + word):
            lines[-1] += " " + word
        else:
            lines.append(word)
    lines = lines or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        while lines[-1] and not fits(lines[-1] + "…"):
            lines[-1] = lines[-1][:-1]
        lines[-1] += "…"
    return lines


@styled
def plot_misclassified(errors, path) -> Path:
    """The most confident mistakes as a table: long texts wrap inside their cell (up to 3 lines, then "…"),
    and each row is as tall as its longest cell."""
    fig, ax = subplots(figsize=(MISTAKE_WIDTH_IN, 1.0))
    fig.subplots_adjust(left=0.005, right=0.995)  # the table spans the figure's width (the room below)
    ax.axis("off")
    pads = [0.06 if share < 0.2 else 0.02 for _, share in MISTAKE_COLUMNS]  # of the cell's width, each side
    room = [0.99 * MISTAKE_WIDTH_IN * 72 * share * (1 - 2 * pad) * 0.92 for (_, share), pad in zip(MISTAKE_COLUMNS, pads)]
    rows = [[m.label, m.predicted, f"{m.confidence:.2f}", m.text, " ".join(m.top_tokens[:5])] for m in errors]
    wrapped = [[_wrap_cell(v, w) for v, w in zip(r, room)] for r in rows]
    heights = [1] + [max(len(c) for c in r) for r in wrapped]  # lines per row (the header has one)
    line_in = 0.16  # inches per line of 7 pt text, with the cell padding
    fig.set_size_inches(MISTAKE_WIDTH_IN, line_in * (sum(heights) + len(heights)) + 0.6)
    if not rows:
        ax.text(0.5, 0.5, "no misclassified examples", ha="center")
    else:
        table = ax.table(cellText=[["\n".join(c) for c in r] for r in wrapped],
                         colLabels=[c[0] for c in MISTAKE_COLUMNS], colWidths=[c[1] for c in MISTAKE_COLUMNS],
                         cellLoc="left", bbox=[0, 0, 1, 1])
        table.auto_set_font_size(False)
        table.set_fontsize(MISTAKE_FONT_PT)
        total = sum(h + 1 for h in heights)
        for (r, c), cell in table.get_celld().items():
            cell.set_height((heights[r] + 1) / total)  # rows share the box by their number of lines
            cell.PAD = pads[c]
            if r == 0:
                cell.set_text_props(weight="bold")
    ax.set_title("Most confident mistakes (held-out tweets)", fontsize=10)
    return _save(fig, path)


# ---------------------------------------------------------------------------- QA
@styled
def plot_qa(r, path) -> Path:
    fig, axes = subplots(1, 3, figsize=(17, 4.6), gridspec_kw={"width_ratios": [2.4, 1.1, 1.2]})
    qc = r.question_to_context()
    ctx_labels = [r.tokens[i] for i in r.context_idx]
    q_labels = [r.tokens[i] for i in r.question_idx]
    im = heatmap(axes[0], qc, ctx_labels, q_labels, cmap="Reds")
    s, e = r.span
    cs, ce = r.context_idx.index(s), r.context_idx.index(e)
    axes[0].axvspan(cs - 0.5, ce + 0.5, color="green", alpha=0.15, lw=0)
    axes[0].set_title(f"question → context (layers {r.qc_layers_label}, head mean); answer shaded", fontsize=9)
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    per = r.answer_attention_by_layer()
    for name, v in per.items():
        axes[1].plot(r.layers, v, marker="o", label=name)
    axes[1].plot(r.layers, np.full(len(r.layers), r.chance()), ls="--", color="gray", label="uniform over all keys")
    axes[1].set_xlabel("layer")
    axes[1].set_ylabel("attention mass on the answer span")
    axes[1].legend(fontsize=7)
    axes[1].set_title("attention to the predicted answer", fontsize=9)
    hs = r.answer_heads().scores["question_to_answer"]
    im2 = heatmap(axes[2], hs, [str(h) for h in r.heads], [str(l) for l in r.layers], cmap="Greens")
    axes[2].set_xlabel("head")
    axes[2].set_ylabel("layer")
    axes[2].set_title("question → answer mass per head", fontsize=9)
    fig.colorbar(im2, ax=axes[2], shrink=0.8)
    fig.suptitle(textwrap.shorten(f"Q: {r.question}  A: {r.answer!r} (score {r.score:.2f})", 150), fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------- alignment
@styled
def plot_alignment(a, path, title: str | None = None, words: Any = None) -> Path:
    m = a.matrix
    fig, ax = subplots(figsize=(min(16, max(5, 0.3 * m.shape[1] + 2)), min(12, max(3.5, 0.3 * m.shape[0] + 1.5))))
    im = heatmap(ax, m, a.source_labels, a.target_labels, cmap="viridis", max_ticks=80)
    if a.path is not None:
        ax.plot(a.path[1], a.path[0], color="red", lw=1.0, label="DTW path")
        ax.legend(fontsize=7, loc="lower right")
    if words is not None:
        for w in words:
            for t in (w.start, w.end):
                ax.axvline(t / a.frame_seconds - 0.5, color="white", lw=0.5, alpha=0.6)
    ax.set_xlabel("source" + (" (audio frames)" if a.frame_seconds else ""))
    ax.set_ylabel(CROSS_ROW_TITLE)  # rows: what each decoder step predicts (tasks.alignment.predicted_labels)
    ax.set_title(title or f"cross-attention alignment, {a.describe()}", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path)


@styled
def plot_head_scores(hs, path, metric: str, title: str = "", mark: Sequence[tuple[int, int]] = ()) -> Path:
    m = hs.scores[metric]
    fig, ax = subplots(figsize=(0.5 * m.shape[1] + 2.5, 0.45 * m.shape[0] + 1.8))
    im = heatmap(ax, m, [str(h) for h in hs.heads], [str(l) for l in hs.layers], cmap="magma")
    for l, h in mark:
        if l in hs.layers and h in hs.heads:
            ax.add_patch(Rectangle((hs.heads.index(h) - 0.5, hs.layers.index(l) - 0.5), 1, 1, fill=False,
                                       ec="cyan", lw=2))
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6, color="gray")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title or metric, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path)


@styled
def plot_word_timestamps(audio: np.ndarray, sr: int, words, reference=None, path="words.png") -> Path:
    t = np.arange(audio.size) / sr
    fig, ax = subplots(figsize=(12, 3.2))
    ax.plot(t, audio, color="0.6", lw=0.4)
    top = float(np.abs(audio).max() or 1)
    for w in words:
        ax.axvspan(w.start, w.end, ymin=0.5, ymax=1.0, color="tab:blue", alpha=0.25)
        ax.text((w.start + w.end) / 2, 0.85 * top, w.word.strip(), ha="center", fontsize=8, color="tab:blue")
    if reference is not None:
        for word, s, e in reference:
            ax.axvspan(s, e, ymin=0.0, ymax=0.5, color="tab:orange", alpha=0.25)
            ax.text((s + e) / 2, -0.85 * top, word, ha="center", fontsize=8, color="tab:orange")
    ax.set_xlabel("seconds")
    ax.set_yticks([])
    ax.set_title("word timestamps: cross-attention DTW (blue, top) vs known boundaries (orange, bottom)", fontsize=9)
    return _save(fig, path)


# ---------------------------------------------------------------------------- generation monitor
@styled
def plot_generation(m, path) -> Path:
    steps = np.arange(len(m.tokens))
    fig, axes = subplots(4, 1, figsize=(max(8, 0.28 * len(steps) + 3), 11), sharex=True,
                             gridspec_kw={"height_ratios": [2.2, 1, 1, 1]})
    im = axes[0].imshow(m.entropy.T, aspect="auto", cmap="viridis", interpolation="nearest", origin="lower")
    axes[0].set_ylabel("layer")
    axes[0].set_title("attention entropy per layer (head mean, nats) for each generated token", fontsize=9)
    fig.colorbar(im, ax=axes[0], shrink=0.8, pad=0.01)
    axes[1].plot(steps, m.confidence, marker=".", label="p(chosen token)")
    low = np.flatnonzero(m.low_confidence)
    axes[1].scatter(low, m.confidence[low], color="red", zorder=3, label=f"< {m.threshold:g}")
    axes[1].axhline(m.threshold, color="red", ls="--", lw=0.7)
    axes[1].set_ylim(0, 1.05)
    axes[1].legend(fontsize=7)
    axes[1].set_ylabel("confidence")
    axes[2].stackplot(steps, m.prompt_mass, m.generated_mass, labels=["prompt", "generated so far"], alpha=0.7)
    axes[2].plot(steps, m.sink_mass, color="k", lw=1, label="first token (sink)")
    axes[2].set_ylim(0, 1)
    axes[2].legend(fontsize=7, loc="upper right")
    axes[2].set_ylabel("attention mass")
    axes[3].plot(steps, m.max_weight, label="max weight (mean over layers, heads)")
    axes[3].plot(steps, m.entropy.mean(1) / max(1e-9, float(np.log(m.key_lengths.max()))), label="entropy / log(keys)")
    axes[3].legend(fontsize=7)
    axes[3].set_xticks(steps)
    axes[3].set_xticklabels(_short([repr(t)[1:-1] for t in m.tokens], 10), rotation=90, fontsize=7)
    axes[3].set_xlabel("generated token")
    fig.suptitle(textwrap.shorten(f"generation monitor ({'sampling' if m.do_sample else 'greedy'}): "
                                  f"{m.text!r}", 140), fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------- dialogue
@styled
def plot_dialogue(d, path, layers: Sequence[int] | None = None) -> Path:
    layers = list(layers) if layers is not None else _pick(d.layers, 4)
    labels = [f"{i}:{t.role}" for i, t in enumerate(d.turns)]
    fig, axes = subplots(1, len(layers) + 1, figsize=(3.6 * (len(layers) + 1) + 1, 3.9), squeeze=False)
    for ax, l in zip(axes[0], layers):
        m = d.matrix(l)
        heatmap(ax, m, labels, labels, cmap="Purples", vmin=0, vmax=1)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if j <= i:
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if m[i, j] > 0.5 else "black")
        ax.set_title(f"layer {l}", fontsize=9)
        ax.set_xlabel("read turn (key)")
    axes[0][0].set_ylabel("reading turn (query)")
    ax = axes[0][-1]
    prev = d.previous_turn_share()
    for i in range(1, len(d.turns)):
        ax.plot(d.layers, prev[:, i], marker=".", label=labels[i])
    ax.set_xlabel("layer")
    ax.set_ylabel("share on earlier turns (excl. sink)")
    ax.set_title("how much each turn reads earlier turns", fontsize=9)
    ax.legend(fontsize=6)
    fig.suptitle("Utterance × utterance attention (mean over heads and the reading turn's tokens)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


@styled
def plot_dialogue_flow(d, path) -> Path:
    """Per-turn attention flow (mean over layers): where each turn's attention goes — each earlier turn, its own
    turn — and the coherence lift (lookback share / uniform expectation) per turn and layer, with the
    conversation's score per layer."""
    coh = d.coherence()
    m = d.values.mean(0)  # (T, T) mean over layers
    n = len(d.turns)
    labels = [f"{i}:{t.role}" for i, t in enumerate(d.turns)]
    colors = __import__("matplotlib").colormaps["tab10"]
    fig, axes = subplots(1, 3, figsize=(16, max(3.6, 0.45 * n + 1.8)), gridspec_kw={"width_ratios": [1.4, 1, 1]})
    ax = axes[0]
    for i in range(n):
        left = 0.0
        for j in range(i + 1):
            w = float(m[i, j])
            ax.barh(i, w, left=left, color="#dddddd" if j == i else colors(j % 10), edgecolor="white", lw=0.5)
            if w > 0.06:
                ax.text(left + w / 2, i, f"{j}" if j < i else "own", ha="center", va="center", fontsize=7)
            left += w
    ax.set_yticks(range(n))
    ax.set_yticklabels(_short(labels, 22), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the turn's attention (sink excluded), mean over layers")
    ax.set_title("attention flow: which turns each turn reads (bar labels: source turn)", fontsize=9)
    ax = axes[1]
    for i in coh.scored:
        ax.plot(coh.layers, coh.lift[:, i], marker=".", color=colors(i % 10), label=labels[i])
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xlabel("layer")
    ax.set_ylabel("lift = lookback share / uniform expectation")
    ax.set_title("coherence lift per turn (1 = as a uniform reader)", fontsize=9)
    ax.legend(fontsize=6)
    ax = axes[2]
    ax.plot(coh.layers, coh.score, marker="o", color="#3b75af")
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xlabel("layer")
    ax.set_ylabel("coherence score (mean lift)")
    ax.set_title(f"conversation score per layer (mean {coh.overall:.2f})", fontsize=9)
    fig.suptitle("Dialogue: per-turn attention flow and coherence", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _pick(values: Sequence[int], n: int) -> list[int]:
    values = list(values)
    if len(values) <= n:
        return values
    idx = np.linspace(0, len(values) - 1, n).round().astype(int)
    return [values[i] for i in idx]
