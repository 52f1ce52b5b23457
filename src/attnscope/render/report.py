"""One self-contained, offline HTML report for a trace: figures, head statistics and roles, rollout, metadata.

Figures are embedded as base64 PNG (no file beside the page, no CDN, no script); every piece of
user text (input text, tokens, model id, metadata) is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
from pathlib import Path
from typing import Any, Callable

import matplotlib.pyplot as plt

from .. import __version__
from ..analysis import run_analysis
from ..caveat import ATTENTION_CAVEAT
from ..errors import AttnscopeError
from . import figures as F
from .style import style

ROLE_COLUMNS = ("previous_token", "next_token", "first_token", "self", "delimiter", "local", "broad", "induction")
STAT_COLUMNS = ("entropy", "max", "gini", "sparsity", "first_token_mass", "special_token_mass", "mean_distance",
                "future_attention_ratio")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans","Noto Sans CJK JP",sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#1d1d1f;line-height:1.45}
h1{font-size:1.5rem}h2{font-size:1.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}
table{border-collapse:collapse;font-size:.8rem;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:.15rem .4rem;text-align:right}th{background:#f4f6f8}
td.l,th.l{text-align:left}.text{white-space:pre-wrap;background:#f7f7f9;padding:.6rem;border-radius:4px}
.tokens span{display:inline-block;border:1px solid #ccd;border-radius:3px;margin:1px;padding:0 3px;font-size:.8rem}
.note{color:#8a4b00}details{margin:.5rem 0}
.caveat{font-size:.85rem;color:#5c4a00;background:#fffaf0;border-left:3px solid #d4a72c;padding:.35rem .7rem;margin:.6rem 0}
"""


def _png(fig, dpi: int = 110) -> str:
    buf = io.BytesIO()
    with style():
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(title: str, make: Callable[[], Any], notes: list[str]) -> str:
    try:
        data = _png(make())
    except (AttnscopeError, ValueError) as e:  # one figure failing must not lose the report; say why
        notes.append(f"{title}: not drawn ({e})")
        return ""
    e = html.escape
    return (f'<figure><img alt="{e(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{e(title)}</figcaption></figure>")


def _table(rows: list[dict[str, Any]], columns: list[str], label_cols: tuple[str, ...] = ()) -> str:
    e = html.escape
    head = "".join(f'<th class="{"l" if c in label_cols else ""}">{e(c)}</th>' for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "")
            txt = f"{v:.3f}" if isinstance(v, float) else str(v)
            cells.append(f'<td class="{"l" if c in label_cols else ""}">{e(txt)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def build_report(trace, title: str | None = None, max_grid_layers: int = 32) -> str:
    """The report as one HTML string (see the module docstring)."""
    e = html.escape
    notes: list[str] = []
    parts: list[str] = []
    model = trace.model_id or "attention trace"
    parts.append(f"<h1>{e(title or 'attnscope report')} — {e(model)}</h1>")
    parts.append(f"<p class=\"caveat\" role=\"note\">{e(ATTENTION_CAVEAT)}</p>")  # before any weight is shown
    for seq, text in trace.texts.items():
        parts.append(f"<h2>Text ({e(seq)})</h2><div class=\"text\">{e(text)}</div>")
    for seq, toks in trace.tokens.items():
        spans = "".join(f"<span title=\"{i}\">{e(t)}</span>" for i, t in enumerate(toks.labels(trace.texts.get(seq))))
        parts.append(f"<details><summary>{len(toks)} {e(seq)} tokens</summary><div class=\"tokens\">{spans}</div></details>")

    square = [s for s in trace.streams if s != "cross"]
    with_maps = [s for s in trace.streams if trace.has("weights", s)]
    for s in trace.streams:
        sh = trace.shape(s)
        parts.append(f"<h2>Stream <code>{e(s)}</code>: {sh['layer']} layers × {sh['head']} heads × "
                     f"{sh['query']} queries × {sh['key']} keys</h2>")
        if s in with_maps:
            parts.append(_figure(f"{s}: mean over heads, by layer", lambda s=s: F.layer_means(trace, s), notes))
            parts.append(_figure(f"{s}: every head (layer × head)",
                                 lambda s=s: F.layer_head_grid(trace, s, max_layers=max_grid_layers), notes))
        if s == "cross" and s in with_maps:
            parts.append(_figure("cross-attention alignment (last layer, mean over heads)",
                                 lambda: F.cross_alignment(trace), notes))
        try:
            stats = run_analysis("head_stats", trace, stream=s)
        except AttnscopeError as ex:
            notes.append(f"{s}: head statistics unavailable ({ex})")
            stats = None
        if stats is not None:
            parts.append(_figure(f"{s}: entropy dashboard", lambda st=stats: F.stats_dashboard(st, "entropy"), notes))
            cols = ["layer", "head"] + [c for c in STAT_COLUMNS if c in stats.scores]
            parts.append(f"<details open><summary>Head statistics ({e(s)})</summary>"
                         f"{_table(stats.rows(), cols)}</details>")
        if s in square and s in with_maps:
            roles = run_analysis("head_roles", trace, stream=s)
            rows = roles.rows()
            for r, lab in zip(rows, [x for row in roles.meta["labels"] for x in row]):
                r["role"] = lab
            parts.append(_figure(f"{s}: previous-token score per head",
                                 lambda r=roles: F.head_scores_heatmap(r, "previous_token"), notes))
            parts.append(f"<details open><summary>Head roles ({e(s)}): scores in [0, 1], dominant role</summary>"
                         f"{_table(rows, ['layer', 'head', 'role', *ROLE_COLUMNS], ('role',))}</details>")
            try:
                ro = run_analysis("rollout", trace, stream=s)
                parts.append(_figure(f"{s}: attention rollout (Abnar & Zuidema 2020), head fusion mean",
                                     lambda ro=ro: F.rollout_figure(ro), notes))
            except AttnscopeError as ex:
                notes.append(f"{s}: rollout not computed ({ex})")
            if trace.meta.get("causal", {}).get(s, False):
                parts.append(_figure(f"{s}: attention vs distance",
                                     lambda s=s: F.curves_figure(run_analysis("distance_profile", trace, stream=s)), notes))

    meta = {"model_id": trace.model_id, "streams": trace.streams, "layers": trace.layers, "heads": trace.heads,
            "schema_version": trace.schema_version, "meta": trace.meta}
    parts.append("<h2>Metadata</h2><pre>" + e(json.dumps(meta, indent=1, ensure_ascii=False, default=str)) + "</pre>")
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f'<li class="note">{e(n)}</li>' for n in notes) + "</ul>")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f"<p class=\"note\" style=\"color:#777\">attnscope {e(__version__)} · {e(stamp)} · "
                 "self-contained: no scripts, no network.</p>")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
            f"<title>{e(title or 'attnscope report')} — {e(model)}</title><style>{CSS}</style></head><body>"
            + "\n".join(p for p in parts if p) + "</body></html>")


def write_report(trace, out_dir: str | os.PathLike, title: str | None = None, name: str = "report.html") -> Path:
    """Write ``out_dir/report.html`` (created if needed); returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(build_report(trace, title), encoding="utf-8")
    return path
