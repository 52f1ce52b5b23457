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
    urls = h.replace("http://www.w3.org/2000/svg", "")  # the SVG namespace name (export as SVG) loads nothing
    assert "http://" not in urls and "https://" not in urls
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


# ---------------------------------------------------------------------------- the linked widget (anywidget)
def _widget(trace, **kw):
    pytest.importorskip("anywidget")
    from attnscope.render.widget import AttentionWidget

    w = AttentionWidget(trace, **kw)
    sent: list[tuple[dict, list[bytes]]] = []
    w._send = lambda msg, buffers=None: sent.append((msg, [bytes(b) for b in buffers or []]))
    return w, sent


def _from_view(w, **state):
    """A state update as the browser sends it over the widget's comm."""
    w._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}}, "buffers": []})


def _sent_map(sent) -> np.ndarray:
    (msg, buffers), = [(m, b) for m, b in sent if m["method"] == "update" and ["head_map"] in m["buffer_paths"]]
    return np.frombuffer(buffers[msg["buffer_paths"].index(["head_map"])], "<f4")


def test_widget_selection_syncs_both_ways():
    t = tiny_trace()
    w, sent = _widget(t)
    assert w.selection == ("self", 0, 0)
    seen = []
    w.observe(lambda ch: seen.append((ch["name"], ch["new"])), ["layer", "head"])
    _from_view(w, layer=1, head=2)  # a click in the view
    assert w.selection == ("self", 1, 2) and ("layer", 1) in seen and ("head", 2) in seen
    np.testing.assert_allclose(_sent_map(sent), t.weights()[1, 2].numpy().ravel(), atol=1e-6)  # the new head's map
    sent.clear()
    w.select(layer=0, head=1)  # from Python: one update carrying the selection and the map
    updates = [m for m, _ in sent if m["method"] == "update"]
    assert len(updates) == 1 and updates[0]["state"]["layer"] == 0 and updates[0]["state"]["head"] == 1
    np.testing.assert_allclose(_sent_map(sent), t.weights()[0, 1].numpy().ravel(), atol=1e-6)
    import traitlets

    with pytest.raises(traitlets.TraitError, match="layer 7 is not in this trace"):
        w.layer = 7
    _from_view(w, head=9)  # a bad value from the browser is refused; the selection stays
    assert w.selection == ("self", 0, 1)


def test_widget_data_statistics_and_streams():
    from conftest_traces import seq2seq_trace

    t = tiny_trace()
    w, _ = _widget(t, layer=1)
    info = w.meta["streams"]["self"]
    assert info["layers"] == [0, 1] and info["heads"] == [0, 1, 2] and info["key_labels"][1] == "<script>"
    p = t.weights().double()  # (L, H, N, N): the statistics panel's entropy, from the definition
    ent = (-(p * p.log()).sum(-1)).mean(-1)  # (L, H)
    np.testing.assert_allclose(np.array(info["stats"]["entropy"]), ent.numpy(), atol=1e-3)
    np.testing.assert_allclose(np.array(info["stats"]["max"]), p.amax(-1).mean(-1).numpy(), atol=1e-3)
    assert len(w.thumbs) == 2 * 3 * 5 * 5 and w.map_shape == [5, 5] and w.map_bins == 1
    s2s = seq2seq_trace()
    w2, sent = _widget(s2s, stream="cross", layer=1, head=2)
    assert w2.map_shape == [6, 6] and w2.selection == ("cross", 1, 2)
    w2.stream = "encoder_self"
    np.testing.assert_allclose(_sent_map(sent), s2s.weights("encoder_self")[1, 2].numpy().ravel(), atol=1e-6)
    with pytest.raises(Exception, match="mode='full'"):
        _widget(tiny_trace(mode="stats"))


def test_widget_sends_bounded_data():
    from attnscope.render.widget import MAX_MAP_TOKENS

    n = 1100
    t = tiny_trace(n=n, layers=1, heads=2)
    w, _ = _widget(t, head=1)
    nq, nk = w.map_shape
    bins = w.map_bins
    assert max(nq, nk) <= MAX_MAP_TOKENS and bins == 3
    m = np.frombuffer(w.head_map, "<f4").reshape(nq, nk)
    full = t.weights()[0, 1].numpy()
    assert m[0, 0] == pytest.approx(full[:bins, :bins].max()) and m[-1, -1] == pytest.approx(full[(nq - 1) * bins:, (nk - 1) * bins:].max())
    state = w.get_state()
    size = sum(len(v) for v in (state["thumbs"], state["head_map"])) + len(json.dumps(state["meta"]))
    assert size < 1_500_000  # 1,100 tokens: thumbnails, one pooled map, labels and statistics


def test_widget_js_is_bundled():
    pytest.importorskip("anywidget")
    from attnscope.render.widget import AttentionWidget

    w = AttentionWidget(tiny_trace())
    esm, css = w.get_state()["_esm"], w.get_state()["_css"]
    assert "export default" in esm and "render" in esm and ".atw" in css
    assert not re.search(r"https?://|\bimport\s|innerHTML", esm)  # no CDN, no import, no HTML parsing of text


@pytest.mark.slow
@pytest.mark.browser
def test_widget_view_in_chromium(tmp_path):
    """The bundled ES module in headless chromium with a stand-in for the widget model (no kernel): a click on
    a head sets the selection, a change from Python redraws, the layout fits an 800 px notebook column."""
    import base64
    import os

    pytest.importorskip("anywidget")
    pytest.importorskip("playwright")
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("/usr/bin/chromium is absent (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from attnscope.render.widget import AttentionWidget

    w = AttentionWidget(tiny_trace(n=5, layers=2, heads=3), layer=1, head=0)
    state = w.get_state()
    plain = {k: state[k] for k in ("stream", "layer", "head", "meta", "map_shape", "map_bins")}
    binary = {k: base64.b64encode(bytes(state[k])).decode() for k in ("thumbs", "head_map")}
    esm = state["_esm"].replace("export default { render };", "window.__widget = { render };")
    plain_json = json.dumps(plain).replace("<", "\\u003c")  # token labels such as </script> stay inside the script
    page_html = f"""<!doctype html><html><head><meta charset="utf-8"><style>{state['_css']}</style></head>
<body style="margin:0;width:800px"><div id="root"></div><script>
const S = {plain_json}, B = {json.dumps(binary)};
for (const [k, v] of Object.entries(B)) {{ const b = atob(v), a = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i++) a[i] = b.charCodeAt(i); S[k] = new DataView(a.buffer); }}
const L = {{}}; window.__sets = [];
window.__model = {{ get: (k) => S[k], set: (k, v) => {{ S[k] = v; window.__sets.push([k, v]); (L["change:" + k] || []).forEach((f) => f()); }},
  save_changes: () => {{}}, on: (e, f) => {{ (L[e] = L[e] || []).push(f); }}, off: () => {{}} }};
</script><script>{esm}</script><script>window.__widget.render({{ model: window.__model, el: document.getElementById("root") }});</script>
</body></html>"""
    errors: list[str] = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = b.new_page(viewport={"width": 800, "height": 700})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.set_content(page_html)
        selected = page.locator(".atw-thumb.atw-on")
        first = (selected.get_attribute("data-layer"), selected.get_attribute("data-head"))
        page.locator(".atw-thumb[data-layer='0'][data-head='2']").click()
        sets = page.evaluate("window.__sets")
        page.evaluate("window.__model.set('head', 1)")  # as a change from Python arrives
        after = page.locator(".atw-thumb.atw-on").get_attribute("data-head")
        rows = page.locator(".atw-table tr.atw-on td").first.text_content()
        width = page.evaluate("document.getElementById('root').scrollWidth")
        labels = page.locator(".atw-table th").all_text_contents()
        shots = os.environ.get("ATTNSCOPE_SCREENSHOTS")
        if shots:
            os.makedirs(shots, exist_ok=True)
            page.screenshot(path=os.path.join(shots, "notebook_widget.png"), full_page=True)
        b.close()
    assert not errors, errors
    assert first == ("1", "0")
    assert ["layer", 0] in sets and ["head", 2] in sets  # the click set the selection for Python
    assert after == "1" and rows == "1"  # the grid and the statistics table follow the new head
    assert width <= 800 and labels[0] == "head" and "entropy (nats)" in labels
