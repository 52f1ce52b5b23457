"""3-D views of attention (plotly), written as one offline HTML page.

Two views: the query × key × layer cloud (:func:`attention_3d_figure`: every weight above a threshold
as a point at (key, query, layer), coloured and sized by weight, with a threshold slider) and the flow
through the layers (:func:`flow_3d_figure`: tokens × layers, each query joined to its strongest keys in
the layer below). :func:`write_flow_3d_html` writes either or both into one self-contained page with
one copy of plotly.js, embedded gzip-compressed (about 1.5 MB instead of 4.8 MB) and unpacked by the
browser (``DecompressionStream``): no CDN, no network.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
import math
import numbers
import os
import reprlib
from pathlib import Path
from typing import Sequence

import numpy as np

from .._optional import require
from ..analysis._common import allowed, fuse_heads, token_labels
from ..analysis.rollout import residual_attention
from ..errors import InputError

DEFAULT_THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.4)
MAX_POINTS = 20_000  # points of the query × key × layer view at its lowest threshold (page size, browser speed)
MAX_TICKS = 40  # axis tick labels drawn per axis; every token's label is in the hover text
VIEWS = ("layers", "flow")


def _plotly_text(s: str) -> str:
    """Text for plotly's SVG strings (title, hover), which read a few HTML tags and entities: ``<``, ``>`` and
    ``&`` escaped so a token shows as written. Only those three: plotly decodes no other entity in every
    place (``&#x27;`` for an apostrophe was shown as is). The 3-D axis tick labels: :func:`_tick_text`.
    (Inside the HTML page the figure's JSON escapes ``<``, ``>`` and ``&``: no token can end the script.)"""
    return html.escape(s, quote=False)


def _tick_text(s: str) -> str:
    """A 3-D axis tick label: drawn as plain text (no entities decoded), except that plotly reads a few
    tags (``<b>``, ``<i>``…) there; a zero-width space after each ``<`` keeps them literal."""
    return s.replace("<", "<\u200b")


def _ticks(labels: list[str]) -> dict:
    """Axis ticks for token labels: all of them up to MAX_TICKS, else every k-th (hover shows each token)."""
    step = max(1, math.ceil(len(labels) / MAX_TICKS))
    idx = list(range(0, len(labels), step))
    return dict(tickvals=idx, ticktext=[_tick_text(labels[i]) for i in idx])


def _self_stream(trace, stream: str | None, view: str) -> str:
    s = trace.resolve_stream(stream)
    if s == "cross":
        raise InputError(f"the {view} needs a self-attention stream, not 'cross'")
    return s


def _check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        raise InputError(f"{name} must be a number in (0, 1], got {reprlib.repr(value)}")
    return float(value)


# ---------------------------------------------------------------------------- query × key × layer
def attention_3d_figure(trace, stream: str | None = None, head: int | None = None,
                        thresholds: Sequence[float] = DEFAULT_THRESHOLDS, threshold: float = 0.1,
                        max_points: int = MAX_POINTS):
    """plotly Figure: each attention weight ≥ a threshold as a point at (key, query, layer), coloured and
    sized by weight; a slider picks the threshold among ``thresholds`` (starting at ``threshold``).

    ``head``: a model head index, or None for the mean over the trace's heads (as the flow view and
    rollout fuse heads, Abnar & Zuidema 2020). Causal-masked cells have weight 0 and never show. When
    more than ``max_points`` weights pass the lowest threshold, the lowest thresholds are dropped (the
    figure's ``meta["dropped_thresholds"]`` says which). The points of slider step *k* are the union
    of the traces of bins *k*, *k*+1, … (weights in ``[t_k, t_{k+1})``); ``meta["thresholds"]`` lists them.
    """
    go = require("plotly.graph_objects", "plotly", "the 3-D attention view")
    s = _self_stream(trace, stream, "3-D attention view")
    ts = sorted({_check_fraction("each threshold", t) for t in (thresholds if isinstance(thresholds, (list, tuple))
                                                               else [thresholds])})
    if not ts:
        raise InputError("thresholds is empty; give at least one weight threshold in (0, 1]")
    threshold = _check_fraction("threshold", threshold)
    if isinstance(max_points, bool) or not isinstance(max_points, numbers.Integral) or not 1 <= max_points <= 10**6:
        raise InputError(f"max_points must be an integer in 1..1000000, got {reprlib.repr(max_points)}")
    w = trace.weights(s).numpy()  # (L, H, Nq, Nk) float32
    if head is None:
        a, which = fuse_heads(w, "mean"), "mean of heads"  # (L, Nq, Nk)
    else:
        held = trace.heads[s]
        if isinstance(head, bool) or not isinstance(head, numbers.Integral) or head not in held:
            raise InputError(f"head {reprlib.repr(head)} is not in this trace; its heads: {held}")
        a, which = w[:, held.index(head)], f"head {head}"  # (L, Nq, Nk)
    dropped = []
    while len(ts) > 1 and int((a >= ts[0]).sum()) > max_points:
        dropped.append(ts.pop(0))
    if int((a >= ts[0]).sum()) > max_points:
        raise InputError(f"{int((a >= ts[0]).sum())} weights are ≥ {ts[0]:g}, more than max_points={max_points}; "
                         "raise the thresholds, select fewer layers, or raise max_points")
    start = max([k for k, t in enumerate(ts) if t <= threshold] or [0])
    q_labels, k_labels = token_labels(trace, s, "query"), token_labels(trace, s, "key")
    layer_ids = trace.layers[s]
    fig = go.Figure()
    for k, t in enumerate(ts):
        upper = ts[k + 1] if k + 1 < len(ts) else math.inf
        ll, qq, kk = np.nonzero((a >= t) & (a < upper))  # (P,) each
        v = a[ll, qq, kk]
        hover = [f"{_plotly_text(q_labels[i])} → {_plotly_text(k_labels[j])}<br>layer {layer_ids[l]} · {x:.3f}"
                 for l, i, j, x in zip(ll.tolist(), qq.tolist(), kk.tolist(), v.tolist())]
        fig.add_trace(go.Scatter3d(
            x=kk.astype(np.int32), y=qq.astype(np.int32), z=np.asarray(layer_ids)[ll].astype(np.int32),
            mode="markers", visible=k >= start, showlegend=False, name=f"{t:g}–{upper:g}",
            marker=dict(size=np.round(2.5 + 10 * np.sqrt(v), 1).astype(np.float32),
                        color=np.round(v, 3).astype(np.float32), coloraxis="coloraxis", opacity=0.85,
                        line=dict(width=0)),
            hovertext=hover, hoverinfo="text"))
    steps = [dict(method="restyle", label=f"{t:g}", args=[{"visible": [b >= k for b in range(len(ts))]}])
             for k, t in enumerate(ts)]
    title = (f"attention weights ≥ threshold — {_plotly_text(trace.model_id or '')} {s}, {which}"
             " (x: key, y: query, z: layer)")
    fig.update_layout(
        title=title, height=720, margin=dict(l=0, r=0, t=40, b=0),
        coloraxis=dict(colorscale="Viridis", cmin=0.0, cmax=1.0, colorbar=dict(title="weight", len=0.6)),
        sliders=[dict(active=start, currentvalue=dict(prefix="weight ≥ "), pad=dict(t=10), steps=steps,
                      x=0.1, len=0.8)],
        scene=dict(xaxis=dict(title="key", range=[-0.5, len(k_labels) - 0.5], **_ticks(k_labels)),
                   yaxis=dict(title="query", range=[-0.5, len(q_labels) - 0.5], **_ticks(q_labels)),
                   zaxis=dict(title="layer", tickvals=list(layer_ids), range=[min(layer_ids) - 0.3,
                                                                             max(layer_ids) + 0.3]),
                   aspectmode="manual", aspectratio=dict(x=1.0, y=1.0, z=0.9),
                   # keys left to right in front, later queries further back, seen from above and the right
                   camera=dict(eye=dict(x=1.0, y=-1.75, z=1.0), center=dict(x=0, y=0, z=-0.15))),
        meta={"thresholds": ts, "dropped_thresholds": dropped, "head": head, "stream": s})
    return fig


# ---------------------------------------------------------------------------- flow through the layers
def flow_3d_figure(trace, stream: str | None = None, top_k: int = 3, min_weight: float = 0.05,
                   residual: float = 0.0):
    """plotly Figure: node (token i, layer l) at x = i, z = l; a line from (l+1, i) down to (l, j) for
    each query's ``top_k`` strongest keys (head-averaged, weight ≥ ``min_weight``); colour and width by weight."""
    go = require("plotly.graph_objects", "plotly", "the 3-D flow view")
    s = _self_stream(trace, stream, "3-D flow view")
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or not 1 <= top_k <= 64:
        raise InputError(f"top_k must be an integer in 1..64, got {reprlib.repr(top_k)}")
    min_weight = _check_fraction("min_weight", min_weight)
    w = trace.weights(s).double().numpy()  # (L, H, N, N)
    n = w.shape[-1]
    a = fuse_heads(w, "mean")  # (L, N, N)
    if residual:
        a = residual_attention(a, residual, 0.0, allowed(trace, s, n, n))
    labels = token_labels(trace, s)
    nl = a.shape[0]
    order = np.argsort(-a, axis=-1, kind="stable")[..., :top_k]  # (L, N, top_k)
    strongest = np.take_along_axis(a, order, -1)  # (L, N, top_k)
    ll, ii, rr = np.nonzero(strongest >= min_weight)  # one segment each
    jj, ws = order[ll, ii, rr], strongest[ll, ii, rr]
    fig = go.Figure()
    bins = np.linspace(min_weight, 1.0, 6)
    for b in range(len(bins) - 1):
        sel = (ws >= bins[b]) & ((ws < bins[b + 1]) | (b == len(bins) - 2))
        if not sel.any():
            continue
        m = int(sel.sum())
        sx = np.stack([ii[sel], jj[sel], np.full(m, np.nan)], 1).ravel()  # (3m,): query, key, gap
        sz = np.stack([ll[sel] + 1, ll[sel], np.full(m, np.nan)], 1).ravel()  # (3m,)
        mid = 0.5 * (bins[b] + bins[b + 1])
        fig.add_trace(go.Scatter3d(x=sx.astype(np.float32), y=np.where(np.isnan(sx), np.nan, 0).astype(np.float32),
                                   z=sz.astype(np.float32), mode="lines",
                                   line=dict(width=1 + 8 * mid, color=f"rgba(31,78,121,{0.25 + 0.7 * mid:.2f})"),
                                   name=f"weight {bins[b]:.2f}–{bins[b + 1]:.2f}", hoverinfo="skip"))
    nx_ = np.tile(np.arange(n), nl + 1)  # ((L+1) * N,)
    nz_ = np.repeat(np.arange(nl + 1), n)
    text = [f"{_plotly_text(labels[i])} · {'input' if z == 0 else 'after layer ' + str(trace.layers[s][z - 1])}"
            for i, z in zip(nx_.tolist(), nz_.tolist())]
    fig.add_trace(go.Scatter3d(x=nx_.astype(np.int32), y=np.zeros(len(nx_), np.int32), z=nz_.astype(np.int32),
                               mode="markers", marker=dict(size=3, color="#9e2a2b"), text=text, hoverinfo="text",
                               name="tokens"))
    fig.update_layout(
        title=f"attention through the layers — {_plotly_text(trace.model_id or '')} {s} (top {top_k} keys per query)",
        scene=dict(xaxis=dict(title="token", range=[-0.5, n - 0.5], **_ticks(labels)),
                   yaxis=dict(visible=False, range=[-1, 1]),
                   zaxis=dict(title="layer (0 = input)", range=[-0.2, nl + 0.2], dtick=1),
                   # every node lies in the plane y = 0: a wide box seen from the front, slightly from above
                   # and the side, keeps every token (and its label) inside the view
                   aspectmode="manual", aspectratio=dict(x=2.0, y=0.35, z=1.1),
                   camera=dict(eye=dict(x=0.45, y=-2.5, z=0.75), center=dict(x=0, y=0, z=-0.1))),
        legend=dict(orientation="h", yanchor="bottom", y=0.0, xanchor="center", x=0.5),
        margin=dict(l=0, r=0, t=40, b=0), height=750)
    return fig


# ---------------------------------------------------------------------------- the page
@functools.cache
def _plotly_js_packed() -> tuple[str, str]:
    """(version, plotly.min.js gzip-compressed and base64-encoded), made once per process."""
    plotly = require("plotly", "plotly", "the 3-D views")
    from plotly.offline import get_plotlyjs

    return plotly.__version__, base64.b64encode(gzip.compress(get_plotlyjs().encode("utf-8"), 9, mtime=0)).decode()


def _script_json(obj) -> str:
    """JSON safe inside a <script> element: no ``<``, ``>`` or ``&`` can end it or open a comment."""
    return obj.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_LOADER = """\
(async () => {
  const note = (msg) => { for (const d of document.querySelectorAll(".a3d")) d.textContent = msg; };
  if (typeof DecompressionStream === "undefined") {
    note("This browser cannot unpack the embedded plotly.js (it needs DecompressionStream: Chrome 80, " +
         "Firefox 113, Safari 16.4 or later).");
    return;
  }
  const bin = atob(document.getElementById("plotlyjs-gz").textContent.trim());
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const js = await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"))).text();
  const s = document.createElement("script");
  s.textContent = js;
  document.head.appendChild(s);
  const figures = JSON.parse(document.getElementById("figures").textContent);
  for (const [i, f] of figures.entries()) {
    await Plotly.newPlot(document.getElementById("a3d-" + i), f.data, f.layout,
                         {responsive: true, displaylogo: false});
  }
  document.body.dataset.ready = "1";
})();
"""


def figures_page(figures: list, title: str) -> str:
    """One offline HTML page holding plotly ``figures`` and one embedded, compressed copy of plotly.js."""
    version, packed = _plotly_js_packed()
    data = _script_json(json.dumps([json.loads(f.to_json()) for f in figures], separators=(",", ":")))
    divs = "\n".join(f'<div class="a3d" id="a3d-{i}"></div>' for i in range(len(figures)))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:0 8px}.a3d{width:100%;min-height:720px}</style></head><body>\n"
            f"{divs}\n"
            f"<script type=\"application/json\" id=\"figures\">{data}</script>\n"
            f"<!-- plotly.js {html.escape(version)}, gzip + base64 (unpacked in the browser; no network) -->\n"
            f"<script type=\"text/plain\" id=\"plotlyjs-gz\">{packed}</script>\n"
            f"<script>\n{_LOADER}</script>\n</body></html>\n")


def write_flow_3d_html(trace, path: str | os.PathLike, stream: str | None = None,
                       views: Sequence[str] = VIEWS, *, head: int | None = None,
                       thresholds: Sequence[float] = DEFAULT_THRESHOLDS, threshold: float = 0.1,
                       max_points: int = MAX_POINTS, top_k: int = 3, min_weight: float = 0.05,
                       residual: float = 0.0) -> Path:
    """Write the 3-D views (``views``: ``"layers"`` = :func:`attention_3d_figure`, ``"flow"`` =
    :func:`flow_3d_figure`) as one self-contained offline HTML page (:func:`figures_page`)."""
    views = [views] if isinstance(views, str) else list(views)
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise InputError(f"unknown 3-D view {reprlib.repr(bad or views)}; valid views: {', '.join(VIEWS)}")
    figures = []
    for v in dict.fromkeys(views):
        if v == "layers":
            figures.append(attention_3d_figure(trace, stream, head, thresholds, threshold, max_points))
        else:
            figures.append(flow_3d_figure(trace, stream, top_k, min_weight, residual))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(figures_page(figures, f"attnscope 3-D — {trace.model_id or ''}"), encoding="utf-8")
    return path
