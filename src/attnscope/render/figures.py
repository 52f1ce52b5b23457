"""Static figures (matplotlib). Every function returns a Figure; save it with :func:`save_figure`.

A renderer never runs a model: figures take an AttentionTrace or an analysis result.
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.ticker import MaxNLocator

from ..analysis import results as R
from ..analysis._common import CROSS_ROW_TITLE, audio_frames, token_labels
from ..errors import InputError
from .style import (ANNOTATE_MAX, DIVERGING_CMAP, SCORE_CMAP, SEQUENTIAL_CMAP, constant_ylim, set_token_ticks, styled,
                    subplots)


def _square_size(nq: int, nk: int, base: float = 6.0) -> tuple[float, float]:
    scale = min(1.0 + max(nq, nk) / 64, 2.2)  # larger canvases for long inputs, up to ~13 in
    w = base * scale
    h = w * max(0.35, min(nq / max(nk, 1), 1.6))
    return (w + 1.6, h + 1.2)


LONG_INPUT = 64  # above this many tokens, sequential heatmaps use a square-root colour scale
MASKED_COLOUR = "#cfcfcf"  # cells a query cannot see (causal mask): grey, unlike a weight of 0 (white)


def _heat(ax, m: np.ndarray, qlabels: Sequence[str], klabels: Sequence[str], cmap: str = SEQUENTIAL_CMAP,
          vmin: float | None = 0.0, vmax: float | None = None, annotate: bool | None = None,
          xlabel: str = "key", ylabel: str = "query", allowed: np.ndarray | None = None):
    """Heatmap of ``m`` (query × key); cells outside ``allowed`` (the causal mask) are drawn grey, not annotated."""
    cm = matplotlib.colormaps.get_cmap(cmap).with_extremes(bad=MASKED_COLOUR)
    shown = np.ma.masked_array(m, mask=~allowed) if allowed is not None else m
    if cmap == SEQUENTIAL_CMAP and max(m.shape) > LONG_INPUT and (vmin or 0) >= 0:
        # long inputs spread weight thinly: a square-root scale keeps the small weights visible
        norm = PowerNorm(0.5, vmin=vmin or 0.0, vmax=vmax if vmax is not None else max(float(np.nanmax(m)), 1e-12))
        im = ax.imshow(shown, cmap=cm, norm=norm, aspect="auto", interpolation="nearest")
    else:
        im = ax.imshow(shown, cmap=cm, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    set_token_ticks(ax, "x", klabels)
    set_token_ticks(ax, "y", qlabels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if annotate is None:
        annotate = max(m.shape) <= ANNOTATE_MAX
    if annotate:
        hi = np.nanmax(np.abs(m)) if m.size else 1.0
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                v = m[i, j]
                if allowed is not None and not allowed[i, j]:
                    continue
                ax.text(j, i, f"{v:.2f}".replace("0.", ".", 1) if abs(v) < 0.995 else f"{v:.2f}", ha="center",
                        va="center", fontsize=6.5, color="white" if abs(v) > 0.6 * hi else "black")
    return im


def _labels(trace, stream: str, which: str) -> list[str]:
    """Tick labels; rows of the cross stream are the tokens the decoder steps predict (one convention).
    Speech traces: only the frames that hold audio (see :func:`_audio_view`)."""
    labels = token_labels(trace, stream, which)
    q, k = _audio_view(trace, stream)
    return labels[q if which == "query" else k]


def _audio_view(trace, stream: str) -> tuple[slice, slice]:
    """(query, key) slices a figure shows. Whisper pads audio to 30 s: its encoder frames after the audio's end
    are padding, so the source axis (cross-attention keys; encoder self-attention queries and keys) stops there."""
    n = audio_frames(trace)
    if n is None or stream not in ("cross", "encoder_self"):
        return slice(None), slice(None)
    return (slice(None) if stream == "cross" else slice(0, n)), slice(0, n)


def _audio_note(trace, stream: str) -> str:
    n = audio_frames(trace)
    if n is None or stream not in ("cross", "encoder_self"):
        return ""
    return f" (the {n} frames holding audio, of {len(trace.tokens['source'])})"


def axis_titles(stream: str) -> tuple[str, str]:
    """(x, y) axis titles of a stream's maps: key/query, or source/predicted target for cross-attention."""
    return ("source", CROSS_ROW_TITLE) if stream == "cross" else ("key", "query")


def _allowed(trace, stream: str) -> np.ndarray | None:
    m = trace.allowed_mask(stream)
    return None if m is None else m.numpy()


def _weight_label(allowed: np.ndarray | None, label: str, n: int = 0) -> str:
    return (label + (" (square-root scale)" if n > LONG_INPUT else "")
            + ("\n(grey: masked, not visible to the query)" if allowed is not None and not allowed.all() else ""))


# ---------------------------------------------------------------------------------- trace figures
@styled
def head_heatmap(trace, layer: int = 0, head: int = 0, stream: str | None = None, annotate: bool | None = None):
    """One head's map (query × key), values written in the cells when the input is short."""
    s = trace.resolve_stream(stream)
    m = trace.head(layer, head, s).numpy()[_audio_view(trace, s)]  # (Nq, Nk)
    ql, kl = _labels(trace, s, "query"), _labels(trace, s, "key")
    fig, ax = subplots(figsize=_square_size(len(ql), len(kl)), layout="constrained")
    ok = _allowed(trace, s)
    xt, yt = axis_titles(s)
    im = _heat(ax, m, ql, kl, annotate=annotate, vmax=1.0 if m.max() > 0.5 else None, allowed=ok, xlabel=xt,
               ylabel=yt)
    fig.colorbar(im, ax=ax, shrink=0.8, label=_weight_label(ok, "attention weight", max(m.shape)))
    ax.set_title(f"{trace.model_id or 'attention'} — {s}, layer {layer}, head {head}{_audio_note(trace, s)}")
    return fig


@styled
def layer_head_grid(trace, stream: str | None = None, max_layers: int = 32, max_heads: int = 16):
    """Every head of every layer as small multiples (rows: layers, columns: heads)."""
    s = trace.resolve_stream(stream)
    q, k = _audio_view(trace, s)
    w = trace.weights(s).numpy()[:, :, q, k]  # (L, H, Nq, Nk)
    layers, heads = trace.layers[s][:max_layers], trace.heads[s][:max_heads]
    nl, nh = len(layers), len(heads)
    cell = (1.15 if nh <= 12 else 0.9) * (0.8 if nl > 16 else 1.0)
    ok = _allowed(trace, s)
    cm = matplotlib.colormaps.get_cmap(SEQUENTIAL_CMAP).with_extremes(bad=MASKED_COLOUR)
    fig, axes = subplots(nl, nh, figsize=(cell * nh + 1.0, cell * nl + 0.8), squeeze=False,
                             layout="constrained")
    for li in range(nl):
        for hi in range(nh):
            ax = axes[li, hi]
            shown = w[li, hi] if ok is None else np.ma.masked_array(w[li, hi], mask=~ok)
            im = ax.imshow(shown, cmap=cm, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if li == 0:
                ax.set_title(f"H{heads[hi]}", fontsize=8)
            if hi == 0:
                ax.set_ylabel(f"L{layers[li]}", fontsize=8, rotation=0, ha="right", va="center")
    # each small panel is one head's map: query rows (top = first token) × key columns (left = first token)
    xt, yt = axis_titles(s)
    fig.supxlabel(f"{xt} → (columns of every panel)", fontsize=8)
    fig.supylabel(f"{yt} ↓ (rows of every panel)", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=min(0.8, 0.25 + 0.1 * nl), label=_weight_label(ok, "attention weight"))
    cut = "" if (len(trace.layers[s]), len(trace.heads[s])) == (nl, nh) else \
        f" (first {nl} of {len(trace.layers[s])} layers, {nh} of {len(trace.heads[s])} heads)"
    fig.suptitle(f"{trace.model_id or 'attention'} — {s}: layer × head{cut}{_audio_note(trace, s)}", fontsize=10)
    return fig


@styled
def layer_means(trace, stream: str | None = None, cols: int | None = None):
    """The head-averaged map of each layer."""
    s = trace.resolve_stream(stream)
    q, k = _audio_view(trace, s)
    w = trace.weights(s).numpy().mean(1)[:, q, k]  # (L, Nq, Nk)
    nl = w.shape[0]
    if cols is None:  # near-square, at most 6 panels a row, the fewest empty panels
        first = min(math.ceil(math.sqrt(nl)), 6)
        cols = min(range(first, min(first + 2, 6) + 1), key=lambda c: (math.ceil(nl / c) * c - nl, c))
    cols = min(cols, nl)
    rows = math.ceil(nl / cols)
    ql, kl = _labels(trace, s, "query"), _labels(trace, s, "key")
    side = 3.4 if len(kl) <= 64 else 4.2
    fig, axes = subplots(rows, cols, figsize=(side * cols + 1, side * rows + 0.6), squeeze=False,
                             layout="constrained")
    ok = _allowed(trace, s)
    titles = axis_titles(s)
    im = None
    for k, ax in enumerate(axes.flat):
        if k >= nl:
            ax.axis("off")
            continue
        bottom = k + cols >= nl  # the last panel of its column: the key axis is titled there
        im = _heat(ax, w[k], ql, kl, annotate=False, vmax=1.0, xlabel=titles[0] if bottom else "",
                   ylabel=titles[1] if k % cols == 0 else "", allowed=ok)
        ax.set_title(f"layer {trace.layers[s][k]}")
    fig.colorbar(im, ax=axes, shrink=0.6, label=_weight_label(ok, "mean weight over heads", max(w.shape[1:])))
    fig.suptitle(f"{trace.model_id or 'attention'} — {s}: mean over heads, by layer{_audio_note(trace, s)}",
                 fontsize=10)
    return fig


@styled
def cross_alignment(trace, layer: int = -1, head: int | None = None, annotate: bool | None = None):
    """Cross-attention alignment: target tokens (rows) × source tokens (columns), from the ``cross`` stream.

    Row i is labelled with the token decoder step i predicts (its input is the token before it): see
    :func:`attnscope.analysis._common.cross_row_labels`, shared with :mod:`attnscope.tasks.alignment`."""
    if "cross" not in trace.streams:
        raise InputError(f"this trace has no 'cross' stream (streams: {', '.join(trace.streams)}); alignment "
                         "needs an encoder-decoder trace with cross-attention")
    sub = trace.sel(layer=layer, head=head, stream="cross")
    m = sub.weights("cross").numpy().mean(1)[0][_audio_view(trace, "cross")]  # (Nt, Ns)
    ql, kl = _labels(trace, "cross", "query"), _labels(trace, "cross", "key")
    fig, ax = subplots(figsize=_square_size(len(ql), len(kl)), layout="constrained")
    im = _heat(ax, m, ql, kl, annotate=annotate, xlabel="source", ylabel=CROSS_ROW_TITLE)
    fig.colorbar(im, ax=ax, shrink=0.8, label=_weight_label(None, "cross-attention weight", max(m.shape)))
    which = f"head {head}" if head is not None else "mean over heads"
    ax.set_title(f"cross-attention alignment — layer {sub.layers['cross'][0]}, {which}{_audio_note(trace, 'cross')}")
    return fig


@styled
def query_bars(trace, query: int, layer: int = -1, head: int | None = None, stream: str | None = None):
    """Attention from one query token to every key, as bars (heads averaged unless ``head`` is given)."""
    s = trace.resolve_stream(stream)
    ql, kl = _labels(trace, s, "query"), _labels(trace, s, "key")
    if not -len(ql) <= query < len(ql):
        raise InputError(f"query {query} is outside the {len(ql)} query tokens")
    sub = trace.sel(layer=layer, head=head, stream=s)
    v = sub.weights(s).numpy().mean(1)[0, query][_audio_view(trace, s)[1]]  # (Nk,)
    fig, ax = subplots(figsize=(min(3 + 0.25 * len(kl), 14), 3.6), layout="constrained")
    ax.bar(np.arange(len(kl)), v, color="#2b6ca3", width=0.8)
    ax.set_xlim(-0.6, len(kl) - 0.4)
    set_token_ticks(ax, "x", kl)
    ax.set_ylabel("attention weight")
    which = f"head {head}" if head is not None else "mean over heads"
    ax.set_xlabel(axis_titles(s)[0])
    source = (f"decoder step {query % len(ql)}, predicting {ql[query]!r}" if s == "cross"
              else f"from {ql[query]!r} (query {query % len(ql)})")
    ax.set_title(f"{source} — layer {sub.layers[s][0]}, {which}")
    return fig


@styled
def stats_dashboard(scores: R.HeadScores, metric: str = "entropy"):
    """Statistics dashboard for one metric: by layer with spread, histogram, box by head, layer × head heatmap."""
    v = scores[metric]  # (L, H)
    fig, axes = subplots(2, 2, figsize=(11, 8), layout="constrained")
    x = np.array(scores.layers)
    ax = axes[0, 0]
    ax.plot(x, v.mean(1), marker="o", color="#1f4e79", label="mean over heads")
    ax.fill_between(x, v.min(1), v.max(1), alpha=0.2, color="#1f4e79", label="min–max")
    ax.fill_between(x, v.mean(1) - v.std(1), v.mean(1) + v.std(1), alpha=0.3, color="#2b6ca3", label="± 1 std")
    ax.set_xlabel("layer")
    ax.set_ylabel(metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{metric} by layer")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    ax.hist(v.ravel(), bins=min(30, max(5, v.size // 3)), color="#2b6ca3", edgecolor="white")
    ax.set_xlabel(metric)
    ax.set_ylabel("heads")
    ax.set_title(f"distribution over {v.size} heads")
    ax = axes[1, 0]
    ax.boxplot([v[:, h] for h in range(v.shape[1])], tick_labels=[str(h) for h in scores.heads])
    ax.set_xlabel("head")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by head (spread over layers)")
    ax = axes[1, 1]
    im = ax.imshow(v, cmap=SCORE_CMAP, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(scores.heads)), [str(h) for h in scores.heads])
    ax.set_yticks(range(len(scores.layers)), [str(l) for l in scores.layers])
    set_token_ticks(ax, "y", [str(l) for l in scores.layers])
    set_token_ticks(ax, "x", [str(h) for h in scores.heads], rotate=False)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"{metric}: layer × head")
    fig.colorbar(im, ax=ax, shrink=0.8, label=metric)
    fig.suptitle(f"head statistics — {scores.stream or ''} {metric}", fontsize=11)
    return fig


@styled
def head_scores_heatmap(scores: R.HeadScores, metric: str | None = None, annotate: bool | None = None):
    """One (layer × head) table as a heatmap, e.g. a head-role score."""
    metric = metric or scores.metrics[0]
    v = scores[metric]
    nl, nh = v.shape
    fig, ax = subplots(figsize=(max(4.0, 0.55 * nh + 2.2), max(3.0, 0.4 * nl + 1.5)), layout="constrained")
    im = ax.imshow(v, cmap=SCORE_CMAP, aspect="auto", interpolation="nearest")
    set_token_ticks(ax, "x", [str(h) for h in scores.heads], rotate=False)
    set_token_ticks(ax, "y", [str(l) for l in scores.layers])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    if annotate if annotate is not None else (nh <= 16 and nl <= 32):
        hi = np.nanmax(v) if v.size else 1
        lo = np.nanmin(v) if v.size else 0
        for i in range(nl):
            for j in range(nh):
                ax.text(j, i, f"{v[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if v[i, j] > lo + 0.6 * (hi - lo) else "white")
    fig.colorbar(im, ax=ax, shrink=0.8, label=metric)
    ax.set_title(f"{scores.name}: {metric}")
    return fig


@styled
def token_map(result: R.TokenMaps, layer_index: int = -1, annotate: bool | None = None):
    """A token × token relevance map (rollout, flow): rows are outputs, columns the input tokens."""
    m = result.values[layer_index]
    ok = _token_map_allowed(result, m.shape)
    extra = ", ".join(f"{k}={v}" for k, v in result.meta.items() if k in ("head_fusion", "discard_ratio", "residual"))
    if m.shape[0] == 1:  # one output (flow for one token): bars, not a stretched one-row heatmap
        kl = list(result.key_tokens)
        v = np.where(ok[0], m[0], 0.0) if ok is not None else m[0]  # (Nk,)
        fig, ax = subplots(figsize=(min(3 + 0.25 * len(kl), 14), 3.6), layout="constrained")
        ax.bar(np.arange(len(kl)), v, color="#2b6ca3", width=0.8)
        ax.set_xlim(-0.6, len(kl) - 0.4)
        set_token_ticks(ax, "x", kl)
        ax.set_xlabel("input token")
        ax.set_ylabel(result.name)
        ax.set_title(f"{result.name} to output {result.query_tokens[0]!r} through layer "
                     f"{result.layers[layer_index]} ({extra})")
        return fig
    fig, ax = subplots(figsize=_square_size(len(result.query_tokens), len(result.key_tokens)), layout="constrained")
    im = _heat(ax, m, result.query_tokens, result.key_tokens, annotate=annotate, xlabel="input token",
               ylabel="output position", allowed=ok)
    fig.colorbar(im, ax=ax, shrink=0.8, label=_weight_label(ok, result.name, max(m.shape)))
    ax.set_title(f"{result.name} through layer {result.layers[layer_index]} ({extra})")
    return fig


def _token_map_allowed(result: R.TokenMaps, shape: tuple[int, ...]) -> np.ndarray | None:
    """The causal mask of a rollout/flow map (rows = output positions, possibly only some of them)."""
    if not result.meta.get("causal"):
        return None
    rows = result.meta.get("outputs")
    nk = shape[-1]
    rows = list(range(shape[0])) if rows is None or len(rows) != shape[0] else [r % nk for r in rows]
    return np.arange(nk)[None, :] <= np.asarray(rows)[:, None]


@styled
def rollout_figure(result: R.TokenMaps, query: int | None = None, annotate: bool | None = None):
    """Rollout: the full map after the last layer and, beside it, the relevance of each input for one output
    (``query``; default the first token for encoders ([CLS]), the last for causal streams)."""
    m = result.final
    if query is None:
        query = len(result.query_tokens) - 1 if result.meta.get("causal") else 0
    n = len(result.key_tokens)
    w, h = _square_size(len(result.query_tokens), n)
    fig, (ax, bx) = subplots(1, 2, figsize=(w + 4, h), width_ratios=[3, 1.3], layout="constrained")
    ok = _token_map_allowed(result, m.shape)
    im = _heat(ax, m, result.query_tokens, result.key_tokens, annotate=annotate, xlabel="input token",
               ylabel="output position", allowed=ok)
    fig.colorbar(im, ax=ax, shrink=0.8, label=_weight_label(ok, "relevance", max(m.shape)))
    ax.set_title(f"{result.name} after layer {result.layers[-1]} (head fusion {result.meta.get('head_fusion', '')})")
    bx.barh(np.arange(n), m[query], color="#2b6ca3")
    bx.set_ylim(n - 0.5, -0.5)
    set_token_ticks(bx, "y", result.key_tokens)
    bx.set_xlabel("relevance")
    bx.set_title(f"for output {result.query_tokens[query]!r}")
    return fig


@styled
def curves_figure(c: R.Curves, max_series: int = 12):
    """Curves (distance profile, per-position variance, per-layer summaries)."""
    fig, ax = subplots(figsize=(8, 4.5), layout="constrained")
    names = list(c.series)
    if len(names) > max_series:  # keep the first, last and evenly spaced ones; say so
        keep = sorted(set(np.linspace(0, len(names) - 1, max_series).round().astype(int)))
        names = [names[k] for k in keep]
    cmap = matplotlib.colormaps["viridis"].resampled(max(len(names), 2))
    keep = np.ones(len(c.x), bool)
    xlabel = c.xlabel
    if "counts" in c.meta and "min_queries" in c.meta:  # points that average too few samples are left out
        counts, least = np.asarray(c.meta["counts"]), int(c.meta["min_queries"])
        keep = counts >= least
        if not keep.all():
            xlabel += f"\n{int((~keep).sum())} point(s) not drawn: averaged over fewer than {least} queries"
    for k, name in enumerate(names):
        y = c.series[name]
        ax.plot(c.x[keep], y[keep], marker="o" if len(c.x) <= 40 else None, ms=3, color=cmap(k), label=name)
        if name in c.spread:
            ax.fill_between(c.x[keep], (y - c.spread[name])[keep], (y + c.spread[name])[keep], alpha=0.2,
                            color=cmap(k))
    constant_ylim(ax, [v for n in names for v in np.asarray(c.series[n])[keep]])  # all 0: 0..1, not ±0.04
    ax.set_xlabel(xlabel)
    ax.set_ylabel(c.ylabel)
    title = c.name + (f" ({len(names)} of {len(c.series)} curves)" if len(names) < len(c.series) else "")
    ax.set_title(title)
    if "tokens" in c.meta and len(c.x) == len(c.meta["tokens"]):
        set_token_ticks(ax, "x", c.meta["tokens"])
    ax.legend(fontsize=7, ncol=2 if len(names) > 6 else 1)
    ax.grid(alpha=0.3)
    return fig


@styled
def similarity_figure(sim: R.HeadSimilarity, layer_index: int = -1):
    """Head diversity by layer and the head × head similarity of one layer."""
    fig, (ax, bx) = subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    ax.plot(sim.layers, sim.diversity, marker="o", color="#1f4e79")
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("diversity (1 − mean cosine similarity)")
    ax.set_title("head diversity by layer")
    ax.grid(alpha=0.3)
    im = bx.imshow(sim.values[layer_index], cmap=SEQUENTIAL_CMAP, vmin=0, vmax=1, interpolation="nearest")
    set_token_ticks(bx, "x", [f"H{h}" for h in sim.heads])
    set_token_ticks(bx, "y", [f"H{h}" for h in sim.heads])
    bx.set_title(f"cosine similarity of heads, layer {sim.layers[layer_index]}")
    fig.colorbar(im, ax=bx, shrink=0.8)
    return fig


@styled
def projection_figure(p: R.Projection, annotate: bool = True):
    """Scatter of heads (t-SNE / UMAP / PCA), coloured by layer, each point labelled L{layer}H{head}."""
    fig, ax = subplots(figsize=(9, 7), layout="constrained")
    markers = "osD^v<>ph*"
    for t in sorted(set(p.traces.tolist())):
        m = p.traces == t
        sc = ax.scatter(p.coords[m, 0], p.coords[m, 1], c=p.layers[m], cmap="viridis", s=36,
                        vmin=p.layers.min(), vmax=max(p.layers.max(), p.layers.min() + 1),
                        marker=markers[t % len(markers)], edgecolors="black", linewidths=0.3,
                        label=f"trace {t}" if len(set(p.traces.tolist())) > 1 else None)
    cb = fig.colorbar(sc, ax=ax, label="layer")
    cb.locator = MaxNLocator(integer=True)
    cb.update_ticks()
    if len(set(p.traces.tolist())) > 1:
        ax.legend(fontsize=7)
    ax.set_xlabel(f"{p.method} 1")
    ax.set_ylabel(f"{p.method} 2")
    ax.set_title(f"heads by attention pattern ({p.method}, {p.meta.get('features', '')} features)")
    if annotate:
        _place_point_labels(fig, ax, p.coords, p.labels, fontsize=7 if len(p.coords) <= 150 else 5)
    return fig


def _place_point_labels(fig, ax, xy: np.ndarray, labels: Sequence[str], fontsize: float) -> None:
    """Label every point: each label goes to the nearest of 8 directions × 4 distances around its point
    where it covers no label placed before it and no point; labels pushed out of a crowd get a thin
    leader line. When no position is free, the least crowded one is used."""
    fig.canvas.draw()  # final layout, so that display coordinates hold
    r = fig.canvas.get_renderer()
    pts = ax.transData.transform(xy)  # (N, 2) pixels
    rad = 4.0 * fig.dpi / 72  # marker radius (s=36 -> 6 pt wide) in pixels
    frame = ax.get_window_extent()
    spots = []
    for dist in (3.5, 10.0, 18.0, 28.0):  # points
        for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (0, 1), (0, -1), (1, 0), (-1, 0)):
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
            k = dist / (2 ** 0.5 if dx and dy else 1)
            spots.append(((dx * (k if dx and dy else dist + 2), dy * (k if dx and dy else dist + 2)), ha, va, dist))
    placed: list = []  # bounding boxes of labels already placed
    for (x, y), lab in zip(xy, labels):
        best = None
        for off, ha, va, dist in spots:
            t = ax.annotate(lab, (x, y), xytext=off, textcoords="offset points", fontsize=fontsize, alpha=0.85,
                            ha=ha, va=va)
            bb = t.get_window_extent(r).expanded(1.04, 1.08)
            hits = sum(bb.overlaps(o) for o in placed)
            gx = np.maximum(np.maximum(bb.x0 - pts[:, 0], pts[:, 0] - bb.x1), 0)
            gy = np.maximum(np.maximum(bb.y0 - pts[:, 1], pts[:, 1] - bb.y1), 0)
            hits += int(np.sum(np.hypot(gx, gy) < rad))  # markers under the label
            hits += 0 if frame.contains(bb.x0, bb.y0) and frame.contains(bb.x1, bb.y1) else 1  # stay inside the axes
            if best is None or hits < best[0]:
                if best is not None:
                    best[1].remove()
                best = (hits, t, bb, dist)
            else:
                t.remove()
            if hits == 0:
                break
        hits, t, bb, dist = best
        if dist > 3.5:  # moved away from its point: a leader line says which point it names
            t.remove()
            t = ax.annotate(lab, (x, y), xytext=t.get_position() if False else t.xyann, textcoords="offset points",
                            fontsize=fontsize, alpha=0.85, ha=t.get_ha(), va=t.get_va(),
                            arrowprops=dict(arrowstyle="-", color="#777777", lw=0.5, shrinkA=0, shrinkB=3))
        placed.append(bb)


@styled
def graph_figure(g: R.GraphResult, layout: str = "spring", seed: int = 0, score: str = "pagerank"):
    """The thresholded attention graph: node size by a centrality, edge width by weight."""
    import networkx as nx

    graph = g.graph
    n = graph.number_of_nodes()
    fig, ax = subplots(figsize=(10, 7.5), layout="constrained")
    if layout == "circular" or n > 60:
        pos = nx.circular_layout(graph)
    else:
        pos = nx.spring_layout(graph, seed=seed, k=2.5 / math.sqrt(max(n, 1)), iterations=100)
    sc = g.centrality.scores[score]
    size = 200 + 1800 * (sc / sc.max() if sc.max() > 0 else sc)
    widths = [0.5 + 4 * d["weight"] for _, _, d in graph.edges(data=True)]
    nx.draw_networkx_edges(graph, pos, ax=ax, width=widths, alpha=0.45, edge_color="#555555", arrows=True,
                           arrowsize=8, node_size=size, connectionstyle="arc3,rad=0.08")
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_size=size, node_color=sc, cmap=SEQUENTIAL_CMAP,
                           vmin=0, vmax=max(float(sc.max()), 1e-12) * 1.8,  # keep nodes light: labels stay legible
                           edgecolors="#1f4e79", linewidths=0.8)
    labels = {i: g.centrality.tokens[i] for i in graph.nodes}
    nx.draw_networkx_labels(graph, pos, labels, ax=ax, font_size=8 if n <= 40 else 6,
                            font_family=matplotlib.rcParams["font.family"],  # a light box keeps labels legible over edges
                            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7))
    ax.set_title(f"attention graph — layer {g.meta.get('layer')}, weight > {g.meta.get('threshold')}, "
                 f"{graph.number_of_edges()} edges (node size: {score})")
    ax.axis("off")
    return fig


@styled
def memory_figure(m: R.MemoryEstimate):
    """Memory to keep every attention map vs the fast path's working set (log scale)."""
    items = {"all maps kept\n(" + m.dtype + ")": m.full_maps, "eager, one layer\n(float32)": m.one_layer_eager,
             f"fast path block\n({m.block} rows)": m.fast_path_working, "row statistics\n(mode='stats')": m.stats_output}
    fig, ax = subplots(figsize=(8, 4), layout="constrained")
    vals = np.array(list(items.values()), float)
    ax.barh(list(items), vals, color=["#9e2a2b", "#d17a22", "#2b6ca3", "#3f7d20"])
    ax.set_xscale("log")
    for k, v in enumerate(vals):
        ax.text(v, k, " " + _human(v), va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("bytes (log scale)")
    ax.set_title(f"attention memory: {m.layers} layers × {m.heads} heads × {m.length} tokens × batch {m.batch}")
    lo = vals[vals > 0].min() if (vals > 0).any() else 1.0
    ax.set_xlim(10 ** math.floor(math.log10(lo) - 1), vals.max() * 30)  # every bar's length shows on the log axis
    return fig


@styled
def comparison_figure(c: R.TraceComparison):
    """Per-head Jensen–Shannon divergence and the difference map (a − b) of the most divergent head."""
    jsd = c.divergence["jsd"]
    li, hi = np.unravel_index(int(jsd.argmax()), jsd.shape)
    d = c.difference[li, hi]
    w, h = _square_size(*d.shape)
    fig, (ax, bx) = subplots(1, 2, figsize=(w + 5, max(h, 4.5)), width_ratios=[1, 2], layout="constrained")
    im = ax.imshow(jsd, cmap=SCORE_CMAP, aspect="auto", vmin=0)
    set_token_ticks(ax, "x", [str(x) for x in c.heads], rotate=False)
    set_token_ticks(ax, "y", [str(x) for x in c.layers])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title("Jensen–Shannon divergence (nats)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    lim = max(float(np.abs(d).max()), 1e-9)
    im2 = _heat(bx, d, c.query_tokens, c.key_tokens, cmap=DIVERGING_CMAP, vmin=-lim, vmax=lim)
    fig.colorbar(im2, ax=bx, shrink=0.8, label="a − b")
    bx.set_title(f"difference, layer {c.layers[li]} head {c.heads[hi]} (largest JSD)")
    return fig


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def plot(result, **kwargs):
    """The default figure for any analysis result (dispatch on its type)."""
    if isinstance(result, R.HeadScores):
        if result.name == "head_stats":
            return stats_dashboard(result, **kwargs)
        return head_scores_heatmap(result, **kwargs)
    if isinstance(result, R.TokenMaps):
        return rollout_figure(result, **kwargs) if result.name == "rollout" else token_map(result, **kwargs)
    table = {R.Curves: curves_figure, R.HeadSimilarity: similarity_figure, R.Projection: projection_figure,
             R.GraphResult: graph_figure, R.MemoryEstimate: memory_figure, R.TraceComparison: comparison_figure}
    for typ, fn in table.items():
        if isinstance(result, typ):
            return fn(result, **kwargs)
    if isinstance(result, R.TokenScores):
        return token_scores_figure(result, **kwargs)
    raise InputError(f"no renderer for {type(result).__name__}")


@styled
def token_scores_figure(t: R.TokenScores, score: str | None = None):
    """Bars of one score per token."""
    score = score or next(iter(t.scores))
    v = t.scores[score]
    fig, ax = subplots(figsize=(min(3 + 0.25 * len(v), 14), 3.6), layout="constrained")
    ax.bar(np.arange(len(v)), v, color="#2b6ca3")
    ax.set_xlim(-0.6, len(v) - 0.4)
    set_token_ticks(ax, "x", t.tokens)
    ax.set_ylabel(score)
    ax.set_title(f"{t.name}: {score}")
    return fig
