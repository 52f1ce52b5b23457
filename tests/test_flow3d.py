"""The 3-D views: the query × key × layer points and their threshold slider, text escaped once, one offline
page of bounded size, the CLI; and (slow, browser) the page in headless chromium."""

from __future__ import annotations

import base64
import gzip
import html
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("plotly")

from attnscope import AttentionTrace  # noqa: E402
from attnscope.errors import InputError  # noqa: E402
from attnscope.render import flow3d  # noqa: E402
from conftest_traces import encoder_trace, seq2seq_trace, tokens  # noqa: E402

WORDS = ["[CLS]", "didn", "'", "t", "A&B", "<b>x</b>", "&amp;", "[SEP]"]
THRESHOLDS = (0.05, 0.1, 0.2, 0.4)


def _trace(words=WORDS, layers=2, heads=2, seed=0) -> tuple[AttentionTrace, np.ndarray]:
    """A trace whose weights lie at least 1e-3 from every threshold (no rounding can move a point across)."""
    rng = np.random.default_rng(seed)
    n = len(words)
    w = rng.dirichlet(np.full(n, 0.4), size=(layers, heads, n)).astype(np.float32)  # (L, H, N, N)
    for t in THRESHOLDS:
        w[np.abs(w - t) < 1e-3] = t + 2e-3  # rows need not sum to 1 exactly for this test
    mean = w.mean(1)  # (L, N, N)
    for t in THRESHOLDS:
        assert np.abs(mean - t).min() > 1e-4, "pick another seed"
    t = AttentionTrace(tokens={"input": tokens(words)}, layers={"self": list(range(layers))},
                       heads={"self": list(range(heads))}, weights={"self": torch.from_numpy(w)},
                       texts={"input": " ".join(words)}, model_id="synthetic", meta={"causal": {"self": False}})
    return t, w


def _points(fig, visible_from: int) -> set[tuple[int, int, int]]:
    """(layer, query, key) of the points shown at slider step ``visible_from``."""
    step = fig.layout.sliders[0].steps[visible_from]
    shown = step.args[0]["visible"]
    out = set()
    for tr, on in zip(fig.data, shown):
        if on:
            out |= {(int(z), int(y), int(x)) for x, y, z in zip(tr.x, tr.y, tr.z)}
    return out


def test_points_above_threshold_are_the_weights_above_it():
    t, w = _trace()
    fig = flow3d.attention_3d_figure(t, thresholds=THRESHOLDS, threshold=0.1)
    mean = w.mean(1)  # (L, N, N)
    assert list(fig.layout.meta["thresholds"]) == list(THRESHOLDS)
    for k, th in enumerate(THRESHOLDS):
        expected = {tuple(int(v) for v in p) for p in np.argwhere(mean >= th)}  # (layer, query, key)
        assert _points(fig, k) == expected, th
    # the starting view is threshold 0.1: traces of bins 0.1 and above are visible
    assert [bool(tr.visible) for tr in fig.data] == [False, True, True, True]
    assert fig.layout.sliders[0].active == 1
    for tr in fig.data:  # colour = weight (rounded to 3 decimals), bigger for larger weights
        ref = mean[np.asarray(tr.z), np.asarray(tr.y), np.asarray(tr.x)]
        np.testing.assert_allclose(np.asarray(tr.marker.color), ref, atol=6e-4)
        labels = [w_.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") for w_ in WORDS]
        assert list(tr.hovertext) == [f"{labels[q]} → {labels[k]}<br>layer {z} · {v:.3f}"
                                      for q, k, z, v in zip(tr.y, tr.x, tr.z, ref)]  # each point's own tokens
        order = np.argsort(ref)
        assert (np.diff(np.asarray(tr.marker.size)[order]) >= 0).all()
    one = flow3d.attention_3d_figure(t, head=1, thresholds=THRESHOLDS)
    assert _points(one, 0) == {tuple(int(v) for v in p) for p in np.argwhere(w[:, 1] >= 0.05)}


def test_max_points_drops_the_lowest_thresholds():
    t, w = _trace()
    mean = w.mean(1)
    cap = int((mean >= 0.1).sum())
    fig = flow3d.attention_3d_figure(t, thresholds=THRESHOLDS, max_points=cap)
    assert list(fig.layout.meta["thresholds"]) == [0.1, 0.2, 0.4]
    assert list(fig.layout.meta["dropped_thresholds"]) == [0.05]
    with pytest.raises(InputError, match="max_points"):
        flow3d.attention_3d_figure(t, thresholds=[0.05], max_points=1)


def test_text_is_unescaped_exactly_once_in_figure_and_page(tmp_path):
    t, _ = _trace()
    figs = [flow3d.attention_3d_figure(t, thresholds=THRESHOLDS), flow3d.flow_3d_figure(t)]
    for fig in figs:
        ticks = [s.replace("\u200b", "") for s in fig.layout.scene.xaxis.ticktext]
        assert ticks == WORDS  # 3-D ticks are plain text: the token as written
        hover = [h for tr in fig.data for h in (tr.hovertext or tr.text or ())]
        assert hover
        # plotly decodes &lt; &gt; &amp; in hover text once: what the reader sees is the label itself
        shown = {html.unescape(h) for h in hover}
        assert any("A&B" in h for h in shown) and any("<b>x</b>" in h for h in shown)
        assert any("&amp;" in h for h in shown) and any("'" in h for h in shown)
        assert not any("&#x27;" in h or "&#39;" in h for h in hover)
        for word in ("A&B", "<b>x</b>", "&amp;"):  # escaped exactly once, never twice
            once, twice = html.escape(word, quote=False), html.escape(html.escape(word, quote=False), quote=False)
            assert any(once in h for h in hover) and not any(twice in h for h in hover), word
        assert all("<b>x</b>" not in h for h in hover)  # never read as a tag
    page = flow3d.write_flow_3d_html(t, tmp_path / "p.html").read_text(encoding="utf-8")
    assert "<b>x</b>" not in page and "&#x27;" not in page
    data = json.loads(re.search(r'<script type="application/json" id="figures">(.*?)</script>', page, re.S).group(1))
    assert len(data) == 2
    assert [s.replace("\u200b", "") for s in data[0]["layout"]["scene"]["xaxis"]["ticktext"]] == WORDS


def test_page_is_offline_one_plotly_copy_and_small(tmp_path):
    words = [f"w{i}" for i in range(24)]
    t = encoder_trace(layers=6, heads=4, words=words)
    path = flow3d.write_flow_3d_html(t, tmp_path / "p.html")
    page = path.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\ssrc=", page) and "https://" not in page.split("plotlyjs-gz")[0]
    assert page.count('id="plotlyjs-gz"') == 1
    packed = re.search(r'id="plotlyjs-gz">(.*?)</script>', page, re.S).group(1)
    js = gzip.decompress(base64.b64decode(packed))
    from plotly.offline import get_plotlyjs

    assert js == get_plotlyjs().encode("utf-8")  # the whole library, unpacked in the browser
    assert path.stat().st_size < 2_500_000  # plotly.js raw alone is 4.8 MB
    # many tokens: ticks thinned to a readable count, every token still in the hover text
    long = encoder_trace(layers=1, heads=1, words=[f"t{i}" for i in range(100)])
    fig = flow3d.attention_3d_figure(long, thresholds=[0.005])
    assert len(fig.layout.scene.xaxis.ticktext) <= flow3d.MAX_TICKS


def test_bad_input_is_one_line():
    t, _ = _trace()
    cases = [(dict(threshold=0), "threshold"), (dict(thresholds=[1.5]), "threshold"), (dict(head=7), "head 7"),
             (dict(max_points=0), "max_points")]
    for kwargs, msg in cases:
        with pytest.raises(InputError, match=msg):
            flow3d.attention_3d_figure(t, **kwargs)
    with pytest.raises(InputError, match="valid views"):
        flow3d.write_flow_3d_html(t, "unused.html", views=["cube"])
    with pytest.raises(InputError, match="cross"):
        flow3d.attention_3d_figure(seq2seq_trace(), stream="cross")


def test_cli_view3d(tmp_path, capsys):
    from typer.testing import CliRunner

    from attnscope.cli import app, main

    t, _ = _trace()
    src = t.save(tmp_path / "t.safetensors")
    r = CliRunner().invoke(app, ["view3d", "--trace", str(src), "--out", str(tmp_path / "v.html"), "--view", "layers",
                                 "--threshold", "0.2"])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "v.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="figures">(.*?)</script>', page, re.S).group(1))
    assert len(data) == 1 and data[0]["layout"]["sliders"][0]["active"] == 3  # 0.2: the 4th default threshold
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # as the console script runs: one line, exit code 2
        main(["view3d", "--trace", str(src), "--out", str(tmp_path / "w.html"), "--threshold", "2"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.strip() == "error: threshold must be a number in (0, 1], got 2.0"


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.slow
@pytest.mark.browser
def test_page_in_chromium(tmp_path):
    pytest.importorskip("playwright")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    t, w = _trace()
    path = flow3d.write_flow_3d_html(t, tmp_path / "p.html", thresholds=THRESHOLDS)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = b.new_page(viewport={"width": 1000, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: errors.append("request: " + r.url) if not r.url.startswith("file:") else None)
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        n_plots = page.evaluate("document.querySelectorAll('.a3d .plot-container').length")
        visible = page.evaluate("document.getElementById('a3d-0').data.map(d => d.visible)")
        rail = page.locator("#a3d-0 .slider-rail-rect").bounding_box()
        page.mouse.click(rail["x"] + rail["width"] - 2, rail["y"] + rail["height"] / 2)  # the last step: 0.4
        page.wait_for_timeout(300)
        after = page.evaluate("document.getElementById('a3d-0').data.map(d => d.visible)")
        shots = os.environ.get("ATTNSCOPE_SCREENSHOTS")
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(shots) / "view3d_layers.png"))
        b.close()
    assert not errors, errors  # no error, and no request beyond the file itself
    assert n_plots == 2
    assert visible == [False, True, True, True] and after == [False, False, False, True]
