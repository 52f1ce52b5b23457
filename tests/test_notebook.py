"""The notebook / standalone HTML view: self-contained, escaped, size-bounded."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from attnscope import AttentionTrace, Tokens, show
from attnscope.render.notebook import trace_data, trace_html
from attnscope.server.payload import decode


def tiny_trace(text="a <b>c</b> d", n=5, layers=2, heads=3, mode="weights"):
    torch.manual_seed(0)
    w = torch.softmax(torch.randn(layers, heads, n, n), -1)  # (L, H, N, N)
    toks = Tokens(["[CLS]", "<script>", "</script>", "&amp;", "[SEP]"][:n] + ["x"] * max(0, n - 5))
    kw = {"weights": {"self": w}} if mode == "weights" else {"stats": {"self": {"entropy": torch.rand(layers, heads, n)}}}
    return AttentionTrace(tokens={"input": toks}, layers={"self": list(range(layers))},
                          heads={"self": list(range(heads))}, texts={"input": text}, model_id="tiny", **kw)


def test_fragment_is_self_contained_and_escaped():
    t = tiny_trace(text="</script><script>alert(1)</script>")
    h = t._repr_html_()
    assert "AttnscopeExplorer.mount" in h and "EmbeddedSource" in h
    assert "require(" not in h and "require.js" not in h and "define(" not in h
    assert not re.search(r"<(script|link)[^>]+src=", h)  # nothing loaded from anywhere
    assert "http://" not in h and "https://" not in h
    # the only literal </script> tags are the three that close our own scripts
    assert h.count("</script>") == 3
    data_json = h.split('type="application/json"')[1].split(">", 1)[1].split("</script>")[0]
    data = json.loads(data_json)
    assert data["summary"]["texts"]["input"] == "</script><script>alert(1)</script>"
    assert data["summary"]["streams"]["self"]["query_tokens"][1] == "<script>"


def test_embedded_arrays_round_trip():
    t = tiny_trace()
    data = trace_data(t)
    import base64

    _, maps = decode(base64.b64decode(data["blobs"]["maps/self"]))
    assert maps["maps"].dtype == np.float16 and np.allclose(maps["maps"], t.weights().numpy(), atol=1e-3)
    _, ov = decode(base64.b64decode(data["blobs"]["overview/self"]))
    assert ov["thumbs"].shape == (2, 3, 5, 5) and ov["thumbs"].dtype == np.uint8
    _, ro = decode(base64.b64decode(data["blobs"]["rollout/self"]))
    assert np.allclose(ro["map"].astype(np.float32).sum(-1), 1, atol=1e-2)
    # above the float16 limit maps go as uint8; above the uint8 limit only thumbnails
    assert decode(base64.b64decode(trace_data(t, fp16_limit=10)["blobs"]["maps/self"]))[1]["maps"].dtype == np.uint8
    small = trace_data(t, fp16_limit=10, u8_limit=20)
    assert "maps/self" not in small["blobs"] and "overview/self" in small["blobs"]
    assert any("too many" in n for n in small["summary"]["notes"])


def test_show_writes_a_standalone_page(tmp_path):
    p = show(tiny_trace(), tmp_path / "sub" / "t.html")
    text = p.read_text()
    assert text.startswith("<!doctype html>") and "<title>attnscope · tiny</title>" in text


def test_stats_only_trace_explains_itself():
    h = trace_html(tiny_trace(mode="stats"))
    assert "mode='full'" in h and "<script" not in h


def test_large_trace_stays_small_in_a_notebook():
    t = tiny_trace(n=400, layers=6, heads=12)  # 11.5M weights
    nb = trace_html(t)
    assert len(nb) < 2_000_000  # thumbnails + rollout only (above the notebook's uint8 limit)
