"""The explorer inside a notebook or a standalone HTML file: the server's front-end with the data inlined.

``trace_html(trace)`` returns an HTML fragment (a full page with ``full_page=True``) that carries the
explorer's CSS and JavaScript and the trace's arrays (base64 binary containers, see
:mod:`attnscope.server.payload`): no require.js, no CDN, no server, no network. ``AttentionTrace``
uses it as ``_repr_html_``; ``show(trace, path)`` writes a standalone file.

Size policy (bertviz embeds every weight as JSON text: 869 MB at 512 tokens): thumbnails are always
embedded (uint8, max-pooled to 64 x 64); full per-head maps are embedded as float16 up to
``fp16_limit`` weights per stream, as uint8 up to ``u8_limit``, and left out above that (the model
view, statistics and rollout still work; the page says how to see the rest).
"""

from __future__ import annotations

import base64
import html
import json
import os
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

FP16_LIMIT = 2_000_000  # weights per stream embedded as float16 (4 MB)
U8_LIMIT = 24_000_000  # weights per stream embedded as uint8 by show() — a 512-token MiniLM trace is 18.9M
NOTEBOOK_U8_LIMIT = 8_000_000  # the same inside a notebook cell (outputs are saved in the .ipynb)


def _asset(name: str) -> str:
    return (resources.files("attnscope.server") / "static" / name).read_text(encoding="utf-8")


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _script_json(obj: Any) -> str:
    """JSON that is safe inside a <script> element (no '<', '>' or '&' characters survive)."""
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def trace_data(trace, fp16_limit: int = FP16_LIMIT, u8_limit: int = U8_LIMIT) -> dict[str, Any]:
    """The explorer's embedded data: ``{"summary": ..., "blobs": {name: base64 container}}``."""
    from ..server import payload

    summary = payload.trace_summary(trace, "embedded")
    blobs: dict[str, str] = {}
    roles: dict[str, Any] = {}
    notes = []
    for s in trace.streams:
        if not trace.has("weights", s):
            notes.append(f"stream {s!r} holds no full maps (captured with mode='stats'/'topk')")
            continue
        blobs[f"overview/{s}"] = _b64(payload.encode({"layers": trace.layers[s], "heads": trace.heads[s]},
                                                     {"thumbs": payload.overview(trace, s)}))
        w = trace.weights(s, dtype=torch.float16)  # (L, H, Nq, Nk)
        n = w.numel()
        if n <= fp16_limit:
            blobs[f"maps/{s}"] = _b64(payload.encode({}, {"maps": w.numpy()}))
        elif n <= u8_limit:
            blobs[f"maps/{s}"] = _b64(payload.encode({}, {"maps": payload.quantize_u8(w.float().numpy())}))
            notes.append(f"stream {s!r}: maps embedded as uint8 (steps of 1/255)")
        else:
            notes.append(f"stream {s!r}: {n:,} weights are too many to embed; only thumbnails are included — "
                         "use `attnscope serve` or trace.sel(layer=…) for single heads")
        if s != "cross" and len(trace.query_tokens(s)) == len(trace.key_tokens(s)):
            try:
                m, info = payload.rollout_map(trace, s)
                blobs[f"rollout/{s}"] = _b64(payload.encode(info, {"map": m}))
            except Exception:  # rollout is optional (e.g. non-consecutive layers)
                pass
            try:
                from ..analysis import run_analysis

                res = run_analysis("head_roles", trace, stream=s)
                roles[s] = {"meta": {"labels": res.meta["labels"]}}
            except Exception:  # the analysis may be absent or not apply
                pass
    summary["head_roles"] = roles
    summary["notes"] = notes
    return {"summary": summary, "blobs": blobs}


def trace_html(trace, *, full_page: bool = False, title: str | None = None, **limits: int) -> str:
    """Self-contained HTML of the explorer for ``trace`` (fragment for notebooks, or a full page).

    ``limits``: ``fp16_limit`` / ``u8_limit`` (weights per stream embedded as float16 / uint8; see
    the module docstring). A fragment defaults to ``u8_limit=NOTEBOOK_U8_LIMIT``.
    """
    if not full_page:
        limits.setdefault("u8_limit", NOTEBOOK_U8_LIMIT)
    if not trace.streams or not any(trace.has("weights", s) for s in trace.streams):
        body = ("<div class=\"atsc\"><p>This trace holds no full attention maps (it was captured with mode "
                "'stats' or 'topk'); capture with mode='full' to explore it.</p><pre>"
                + html.escape(repr(trace)) + "</pre></div>")
    else:
        uid = "atsc-" + uuid.uuid4().hex[:12]
        data = trace_data(trace, **limits)
        notes = "".join(f"<p class=\"hint\">{html.escape(n)}</p>" for n in data["summary"]["notes"])
        js = _asset("explorer.js")
        if "</script" in js.lower():  # would end the inline script early
            raise RuntimeError("explorer.js contains '</script'")
        body = (f"<div class=\"atsc-wrap\"><style>{_asset('explorer.css')}</style>"
                f"<div id=\"{uid}\" class=\"atsc\"></div><div class=\"atsc\">{notes}</div>"
                f"<script>{js}</script>"
                f"<script type=\"application/json\" id=\"{uid}-data\">{_script_json(data)}</script>"
                f"<script>(function(){{var d=JSON.parse(document.getElementById({json.dumps(uid + '-data')}).textContent);"
                f"AttnscopeExplorer.mount(document.getElementById({json.dumps(uid)}),"
                "new AttnscopeExplorer.EmbeddedSource(d),{form:false});})();</script></div>")
    if not full_page:
        return body
    t = html.escape(title or f"attnscope · {trace.model_id or 'trace'}")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head>"
            f"<body style=\"margin:0\">{body}</body></html>")


def show(trace, path: str | os.PathLike = "attnscope_trace.html", **limits: int) -> Path:
    """Write ``trace`` as a standalone explorer page (opens offline in any browser); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(trace_html(trace, full_page=True, **limits), encoding="utf-8")
    return path
