"""3-D view of attention through the layers (plotly), written as one offline HTML file."""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np

from .._optional import require
from ..analysis.rollout import residual_attention
from ..analysis._common import allowed, fuse_heads, token_labels


def _plotly_text(s: str) -> str:
    """Text for plotly's SVG strings (title, hover), which read a few HTML tags and entities: ``<``, ``>`` and
    ``&`` escaped so a token shows as written. Only those three: plotly decodes no other entity in every
    place (``&#x27;`` for an apostrophe was shown as is). The 3-D axis tick labels: :func:`_tick_text`.
    (Inside the HTML file plotly's JSON escapes ``<``, ``>`` and ``/``: no token can end the script.)"""
    return html.escape(s, quote=False)


def _tick_text(s: str) -> str:
    """A 3-D axis tick label: drawn as plain text (no entities decoded), except that plotly reads a few
    tags (``<b>``, ``<i>``…) there; a zero-width space after each ``<`` keeps them literal."""
    return s.replace("<", "<\u200b")


def flow_3d_figure(trace, stream: str | None = None, top_k: int = 3, min_weight: float = 0.05,
                   residual: float = 0.0):
    """plotly Figure: node (token i, layer l) at x = i, z = l; a line from (l+1, i) down to (l, j) for
    each query's ``top_k`` strongest keys (head-averaged, weight ≥ ``min_weight``); colour and width by weight."""
    go = require("plotly.graph_objects", "plotly", "the 3-D flow view")

    s = trace.resolve_stream(stream)
    if s == "cross":
        from ..errors import InputError

        raise InputError("the 3-D flow view needs a self-attention stream, not 'cross'")
    w = trace.weights(s).double().numpy()  # (L, H, N, N)
    n = w.shape[-1]
    a = fuse_heads(w, "mean")
    if residual:
        a = residual_attention(a, residual, 0.0, allowed(trace, s, n, n))
    labels = token_labels(trace, s)
    nl = a.shape[0]
    xs, ys, zs, ws = [], [], [], []
    for layer in range(nl):
        for i in range(n):
            order = np.argsort(-a[layer, i])[:top_k]
            for j in order:
                if a[layer, i, j] >= min_weight:
                    xs += [i, j, None]
                    ys += [0, 0, None]
                    zs += [layer + 1, layer, None]
                    ws.append(a[layer, i, j])
    fig = go.Figure()
    bins = np.linspace(min_weight, 1.0, 6)
    seg = 0
    segments = [(xs[k:k + 3], zs[k:k + 3]) for k in range(0, len(xs), 3)]
    for b in range(len(bins) - 1):
        sx, sz = [], []
        for (x3, z3), wt in zip(segments, ws):
            if bins[b] <= wt < bins[b + 1] or (b == len(bins) - 2 and wt >= bins[b + 1]):
                sx += x3
                sz += z3
                seg += 1
        if sx:
            mid = 0.5 * (bins[b] + bins[b + 1])
            fig.add_trace(go.Scatter3d(x=sx, y=[0 if v is not None else None for v in sx], z=sz, mode="lines",
                                       line=dict(width=1 + 8 * mid, color=f"rgba(31,78,121,{0.25 + 0.7 * mid:.2f})"),
                                       name=f"weight {bins[b]:.2f}–{bins[b + 1]:.2f}", hoverinfo="skip"))
    nx_, nz_, text = [], [], []
    for layer in range(nl + 1):
        for i in range(n):
            nx_.append(i)
            nz_.append(layer)
            text.append(f"{_plotly_text(labels[i])} · {'input' if layer == 0 else 'after layer ' + str(trace.layers[s][layer - 1])}")
    fig.add_trace(go.Scatter3d(x=nx_, y=[0] * len(nx_), z=nz_, mode="markers", marker=dict(size=3, color="#9e2a2b"),
                               text=text, hoverinfo="text", name="tokens"))
    fig.update_layout(
        title=f"attention through the layers — {_plotly_text(trace.model_id or '')} {s} (top {top_k} keys per query)",
        scene=dict(xaxis=dict(title="token", tickvals=list(range(n)), ticktext=[_tick_text(t) for t in labels],
                              range=[-0.5, n - 0.5]),
                   yaxis=dict(visible=False, range=[-1, 1]),
                   zaxis=dict(title="layer (0 = input)", range=[-0.2, nl + 0.2], dtick=1),
                   # every node lies in the plane y = 0: a wide box seen from the front, slightly from above
                   # and the side, keeps every token (and its label) inside the view
                   aspectmode="manual", aspectratio=dict(x=2.0, y=0.35, z=1.1),
                   camera=dict(eye=dict(x=0.45, y=-2.5, z=0.75), center=dict(x=0, y=0, z=-0.1))),
        legend=dict(orientation="h", yanchor="bottom", y=0.0, xanchor="center", x=0.5),
        margin=dict(l=0, r=0, t=40, b=0), height=750)
    return fig


def write_flow_3d_html(trace, path: str | os.PathLike, **kwargs) -> Path:
    """Write the 3-D flow view as a self-contained HTML file (plotly.js inlined: no CDN, works offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = flow_3d_figure(trace, **kwargs)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
    return path
