"""Every figure for one trace, saved as PNG/SVG/PDF (plus the GIF animation and the 3-D flow HTML)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

from .._optional import available
from ..analysis import run_analysis
from ..errors import AttnscopeError
from ..progress import ProgressCallback
from . import figures as F
from .animation import layer_animation, mp4_available
from .flow3d import write_flow_3d_html
from .style import FORMATS, save_figure


def save_gallery(trace, out_dir: str | os.PathLike, formats: Sequence[str] = FORMATS,
                 flow_outputs: Sequence[int] | None = None, progress: ProgressCallback | None = None) -> list[Path]:
    """Render every figure type that applies to ``trace`` into ``out_dir``; returns the files written.

    Attention flow is computed for ``flow_outputs`` only, to stay quick (default: the first token, e.g.
    [CLS], for encoders; the last token for causal streams, whose first token sees only itself). The
    1-D bars show the same query. ``progress(done, total)`` is called after each figure (total estimated).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    extra = int(mp4_available()) + int(available("plotly"))
    total = 1 + sum(6 if s == "cross" else 13 + extra for s in trace.streams if trace.has("weights", s))
    done = [0]

    def tick():
        done[0] += 1
        if progress is not None:
            progress(done[0], max(total, done[0]))

    def save(fig, name):
        written.extend(save_figure(fig, out / name, formats))
        tick()

    for s in trace.streams:
        if not trace.has("weights", s):
            continue
        sh = trace.shape(s)
        last = trace.layers[s][-1]
        causal = bool(trace.meta.get("causal", {}).get(s, False))
        focus = sh["query"] - 1 if causal else 0  # the query whose attention is most telling
        save(F.head_heatmap(trace, last, trace.heads[s][0], s), f"{s}_head_L{last}H{trace.heads[s][0]}")
        save(F.layer_head_grid(trace, s), f"{s}_grid")
        save(F.layer_means(trace, s), f"{s}_layer_means")
        save(F.query_bars(trace, focus, stream=s), f"{s}_query_bars")
        save(F.stats_dashboard(run_analysis("head_stats", trace, stream=s)), f"{s}_dashboard")
        if s == "cross":
            save(F.cross_alignment(trace), "cross_alignment")
            continue
        save(F.rollout_figure(run_analysis("rollout", trace, stream=s)), f"{s}_rollout")
        save(F.token_map(run_analysis("flow", trace, stream=s,
                                                outputs=[focus] if flow_outputs is None else flow_outputs)), f"{s}_flow")
        save(F.head_scores_heatmap(run_analysis("head_roles", trace, stream=s), "previous_token"), f"{s}_roles")
        save(F.graph_figure(run_analysis("attention_graph", trace, stream=s)), f"{s}_graph")
        try:
            save(F.projection_figure(run_analysis("head_projection", trace, stream=s)), f"{s}_projection")
        except AttnscopeError:
            pass  # fewer than 3 heads
        save(F.curves_figure(run_analysis("distance_profile", trace, stream=s)), f"{s}_distance")
        save(F.similarity_figure(run_analysis("head_diversity", trace, stream=s)), f"{s}_diversity")
        written.append(layer_animation(trace, out / f"{s}_layers.gif", stream=s))
        tick()
        if mp4_available():
            written.append(layer_animation(trace, out / f"{s}_layers.mp4", stream=s))
            tick()
        if available("plotly"):  # the one plotly figure; the static gallery needs no extra
            written.append(write_flow_3d_html(trace, out / f"{s}_flow3d.html", stream=s))
            tick()
        else:
            warnings.warn("the 3-D flow view is left out: it needs plotly: pip install 'attnscope[plotly]'", stacklevel=2)
    save(F.memory_figure(run_analysis("memory_estimate", trace, stream=trace.streams[0])), "memory")
    if progress is not None:
        progress(done[0], done[0])
    return written
