"""The explorer in headless Debian chromium, driven by Playwright (Python)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("playwright")
pytest.importorskip("uvicorn")
CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium); CI installs it", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

from attnscope.server import ServerConfig, create_app  # noqa: E402
from _server_helpers import LiveServer  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.browser]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(os.environ.get("ATTNSCOPE_SCREENSHOTS", "")) if os.environ.get("ATTNSCOPE_SCREENSHOTS") else None
XSS = "The cat <img src=x onerror=\"window.__pwned=1\"> sat <script>window.__pwned=2</script> on the mat."


@pytest.fixture(scope="module")
def server(minilm, tiny):
    cfg = ServerConfig(torch_threads=1, models={"minilm": minilm, "tiny-llama": tiny("llama"),
                                                "tiny-marian": tiny("marian")})
    with LiveServer(create_app(cfg), log_level="warning") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("dialog", lambda d: (errors.append("dialog: " + d.message), d.dismiss()))
    yield pg
    pg.close()
    assert not errors, errors


def shot(page, tmp_path, name, full_page=False):
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if SHOTS:  # the docs' copies: 256 colours keep them small
        from PIL import Image

        SHOTS.mkdir(parents=True, exist_ok=True)
        for colours in (256, 64):  # docs figures stay under 200 kB
            Image.open(path).convert("RGB").quantize(colours).save(SHOTS / path.name, optimize=True)
            if (SHOTS / path.name).stat().st_size < 200_000:
                break
    assert path.stat().st_size > 10_000
    return path


def painted(page, selector) -> float:
    """Share of non-white pixels of a canvas (0 = blank)."""
    return page.eval_on_selector(selector, """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 250 || d[i+1] < 250 || d[i+2] < 250) n++;
        return n / (d.length / 4); }""")


def analyze(page, url, text, model=None, target=None):
    page.goto(url + "/")
    page.wait_for_selector("#model option", state="attached")
    if model:
        page.select_option("#model", model)
    page.fill("#text", text)
    if target is not None:  # encoder-decoders: the decoder's text
        page.fill("#target", target)
    page.click("#analyze")
    page.wait_for_selector("#app[data-state=ready]", timeout=60_000)


def assert_methods_from_the_api(page, url, group, schema):
    """The checkboxes of the method group are the REST request schema's method list, in its order."""
    page.wait_for_selector(f"[aria-label='{group}'] input", state="attached")
    methods = page.eval_on_selector_all(f"[aria-label='{group}'] input", "x => x.map(e => e.value)")
    spec = page.request.get(url + "/openapi.json").json()["components"]["schemas"][schema]
    assert methods == spec["properties"]["methods"]["items"]["enum"]


def test_type_sentence_switch_layer_and_head(page, server, tmp_path):
    analyze(page, server, "The quick brown fox jumps over the lazy dog because it can.")
    page.wait_for_selector("#model-view")
    assert painted(page, "#model-view") > 0.3
    assert page.locator("#stats-table tbody tr").count() == 12
    shot(page, tmp_path, "explorer-model")
    page.select_option("#layer", "4")
    page.click("[data-view=heatmap]")
    page.wait_for_selector("#app[data-state=ready][data-view=heatmap]")
    page.check("input[data-head='7']")
    page.wait_for_function("document.querySelectorAll('canvas.heatmap').length === 2")
    assert page.locator("canvas.heatmap[data-head='7']").count() == 1
    assert painted(page, "canvas.heatmap[data-head='7']") > 0.2
    page.hover("canvas.heatmap[data-head='7']", position={"x": 200, "y": 200})
    tip = page.inner_text(".tooltip")
    assert "weight" in tip and "query" in tip
    shot(page, tmp_path, "explorer-heatmaps")
    page.click("[data-view=head]")
    page.wait_for_selector("#head-view")
    assert painted(page, "#head-view") > 0.01
    page.click("[data-view=rollout]")
    page.wait_for_selector("#app[data-state=ready][data-view=rollout]")
    assert "rollout" in page.inner_text("figcaption")
    shot(page, tmp_path, "explorer-rollout")


def test_role_column_shows_linguistic_roles(page, server, tmp_path):
    """MiniLM has a measured linguistic record: the role column adds each head's syntactic/coreference role."""
    from attnscope.analysis.head_roles import linguistic_roles
    from attnscope.analysis.linguistic_tables import TABLES

    labels = linguistic_roles(TABLES["minilm"], list(range(6)), list(range(12)))["labels"]
    layer, head = next((l, h) for l in range(6) for h in range(12) if labels[l][h])
    analyze(page, server, "The quick brown fox jumps over the lazy dog because it can.")
    page.select_option("#layer", str(layer))
    row = page.locator(f"#stats-table tbody tr[data-head='{head}'] td.role")
    row.wait_for(timeout=60_000)
    page.wait_for_function(f"document.querySelector(\"#stats-table tbody tr[data-head='{head}'] td.role\")"
                           f".textContent.includes({labels[layer][head]!r})", timeout=30_000)
    text = row.inner_text()
    assert labels[layer][head] in text and text.index(labels[layer][head]) > 0  # after the pattern label
    shot(page, tmp_path, "explorer-roles")


def test_user_html_is_shown_as_text(page, server, tmp_path):
    analyze(page, server, XSS)
    page.wait_for_selector("#model-view")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#app img").count() == 0 and page.locator("#app script").count() == 0
    page.click("[data-view=heatmap]")
    page.wait_for_selector("#app[data-state=ready][data-view=heatmap]")
    assert page.input_value("#text") == XSS
    # an error message that echoes user input is text too
    page.select_option("#model", "tiny-marian")
    page.fill("#text", "<b id=boom>bold</b>")
    page.click("#analyze")
    page.wait_for_selector(".status.error")
    assert page.locator("#boom").count() == 0
    assert page.evaluate("window.__pwned") is None
    shot(page, tmp_path, "explorer-escaped")


def test_generate_and_step_through_tokens(page, server, tmp_path):
    page.goto(server + "/")
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#model", "tiny-llama")
    assert page.is_visible("#generate")
    page.fill("#text", "the cat sat")
    page.fill("#max-new", "4")
    page.click("#generate")
    page.wait_for_selector("#step:visible", timeout=60_000)
    page.wait_for_selector("#app[data-state=ready]")
    page.fill("#step", "2")
    page.dispatch_event("#step", "input")
    page.wait_for_selector("#app[data-state=ready][data-view=head]")
    assert page.inner_text("#step-token").startswith("3/4")
    shot(page, tmp_path, "explorer-generation")


def test_encoder_decoder_streams(page, server):
    analyze(page, server, "the house is small", model="tiny-marian", target="das haus ist klein")
    assert page.eval_on_selector_all("#stream option", "o => o.map(x => x.value)") == \
        ["encoder_self", "decoder_self", "cross"]
    page.select_option("#stream", "cross")
    page.wait_for_selector("#app[data-state=ready]")
    assert "cross" in page.inner_text("figcaption")


def test_standalone_notebook_page_works_offline(browser, minilm, tmp_path):
    from attnscope.capture import capture
    from attnscope.render.notebook import show

    trace = capture(minilm, "A page that needs no server </script><b id=boom>x</b> & no network.")
    path = show(trace, tmp_path / "trace.html")
    pg = browser.new_page(viewport={"width": 1300, "height": 850})
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(path.as_uri())
    pg.wait_for_selector(".atsc[data-state=ready] #model-view")
    assert painted(pg, "#model-view") > 0.3
    pg.select_option("#layer", "2")
    pg.click("[data-view=heatmap]")
    pg.wait_for_selector(".atsc[data-state=ready][data-view=heatmap] canvas.heatmap")
    assert pg.locator("#boom").count() == 0
    shot(pg, tmp_path, "explorer-notebook")
    assert [u for u in requests if not u.startswith("file:")] == [], requests
    assert not errors, errors
    pg.close()


# ---------------------------------------------------------------------------- reading a heatmap, bertviz's views and more
LONG = " ".join(["the model reads every sentence and each head attends to some other token"] * 8)  # > 64 tokens


def pixel(page, selector, i, j):
    """RGB of heatmap cell (query i, key j), read at the cell's centre on the canvas."""
    return page.eval_on_selector(selector, """(c, [i, j]) => { const d = +c.dataset.cell, dpr = c.width / parseFloat(c.style.width);
        const x = Math.round((+c.dataset.left + (j + 0.5) * d) * dpr), y = Math.round((+c.dataset.top + (i + 0.5) * d) * dpr);
        return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3)); }""", [i, j])


def test_heatmap_masked_cells_scale_axes_and_thinned_labels(page, server, tmp_path):
    analyze(page, server, "the cat sat on the mat", model="tiny-llama")
    page.click("[data-view=heatmap]")
    page.wait_for_selector("#app[data-state=ready][data-view=heatmap] canvas.heatmap")
    assert pixel(page, "canvas.heatmap", 0, 3) == [207, 207, 207]  # causal: key after the query, grey
    assert pixel(page, "canvas.heatmap", 3, 0) != [207, 207, 207]
    cap = page.inner_text("figcaption")
    assert "grey: masked" in cap and "linear" in cap  # <= 64 tokens: linear, as the static figures
    page.hover("canvas.heatmap", position={"x": 2, "y": 2})
    page.mouse.move(*_cell_xy(page, 0, 3))
    assert "masked" in page.inner_text(".tooltip")
    shot(page, tmp_path, "explorer-heatmap-masked")
    # > 64 keys: square-root scale by default (not ÷ row max), labels thinned, every label on hover
    page.select_option("#model", "minilm")
    page.fill("#text", LONG)
    page.click("#analyze")
    page.wait_for_selector("#app[data-state=ready][data-view=heatmap] canvas.heatmap[data-scale=sqrt]", timeout=60_000)
    c = page.locator("canvas.heatmap")
    assert int(c.get_attribute("data-stride-k")) > 1 and "square-root" in page.inner_text("figcaption")
    left, top, cell = (float(c.get_attribute(a)) for a in ("data-left", "data-top", "data-cell"))
    box = c.bounding_box()
    page.mouse.move(box["x"] + left - 5, box["y"] + top + 7.5 * cell)  # the label column, an unlabelled row
    tokens = page.evaluate("document.querySelector('#app').attnscope.s.streams.self.query_tokens")
    assert page.inner_text(".tooltip") == f"query 7: {tokens[7]}"
    shot(page, tmp_path, "explorer-heatmap-long")


def _cell_xy(page, i, j):
    c = page.locator("canvas.heatmap").first
    left, top, cell = (float(c.get_attribute(a)) for a in ("data-left", "data-top", "data-cell"))
    box = c.bounding_box()
    return box["x"] + left + (j + 0.5) * cell, box["y"] + top + (i + 0.5) * cell


def test_head_view_key_hover_isolate_and_sentence_pairs(page, server, tmp_path):
    page.goto(server + "/")
    page.wait_for_selector("#model option", state="attached")
    page.fill("#text", "The cat sat on the mat.")
    page.fill("#text-pair", "It was warm there.")
    page.click("#analyze")
    page.wait_for_selector("#app[data-state=ready]")
    page.check("input[data-head='3']")
    page.click("[data-view=head]")
    page.wait_for_selector("#app[data-state=ready][data-view=head] #head-view")
    box = page.locator("#head-view").bounding_box()
    page.mouse.move(box["x"] + 400, box["y"] + 22 + 2.5 * 18)  # key 2 ("cat")
    tip = page.inner_text(".tooltip")
    assert tip.startswith("key 2: cat — who attends to it") and "head 3: most from" in tip
    page.mouse.move(box["x"] - 30, box["y"] - 30)  # off the canvas: every line again
    all_ink = painted(page, "#head-view")
    page.select_option("#pair-filter", "AB")
    page.wait_for_selector("#app[data-state=ready][data-view=head]")
    assert "A → B" in page.inner_text("figcaption") and painted(page, "#head-view") < all_ink
    page.select_option("#pair-filter", "all")
    page.click(".legend .swatch[data-head='3']")  # isolate head 3 by its colour
    page.wait_for_selector(".legend .swatch[data-head='3'][aria-pressed=true]")
    assert page.eval_on_selector_all("#heads input:checked", "x => x.map(e => e.value)") == ["3"]
    assert page.locator(".legend .swatch").count() == 2  # the other head stays in the legend, to bring it back
    shot(page, tmp_path, "explorer-head-view")
    page.click(".legend .swatch[data-head='3']")
    page.wait_for_function("document.querySelectorAll('#heads input:checked').length === 2")


def test_keyboard_navigation_and_accessible_names(page, server):
    analyze(page, server, "The cat sat on the mat.")
    page.focus("#view")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("#app[data-state=ready]")
    assert page.input_value("#layer") == "2"
    assert page.eval_on_selector_all("#heads input:checked", "x => x.map(e => e.value)") == ["1"]
    page.keyboard.press("ArrowUp")
    assert page.input_value("#layer") == "1"
    # every control has an accessible name; tables have captions and header scopes
    unnamed = page.evaluate("""() => [...document.querySelectorAll('#app button, #app select, #app input, #app textarea, #app a')]
        .filter(e => !(e.getAttribute('aria-label') || e.textContent.trim() || (e.closest('label') && e.closest('label').textContent.trim())))
        .map(e => e.outerHTML.slice(0, 80))""")
    assert unnamed == []
    assert page.locator("#stats-table caption").count() == 1
    assert page.locator("#stats-table thead th[scope=col]").count() >= 6
    page.focus("#stats-table tbody tr[data-head='5']")
    page.keyboard.press("Enter")
    page.wait_for_selector("#app[data-state=ready][data-view=heatmap] canvas.heatmap[data-head='5']")


def test_export_png_svg_trace_and_a_link_that_restores_the_view(page, server, tmp_path):
    analyze(page, server, "A link brings this view back.")
    page.select_option("#layer", "3")
    page.check("input[data-head='4']")
    page.uncheck("input[data-head='0']")
    page.click("[data-view=heatmap]")
    page.wait_for_selector("#app[data-state=ready][data-view=heatmap] canvas.heatmap[data-head='4']")
    with page.expect_download() as d:
        page.click("#export-png")
    assert d.value.suggested_filename.endswith(".png") and open(d.value.path(), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with page.expect_download() as d:
        page.click("#export-svg")
    svg = open(d.value.path(), encoding="utf-8").read()
    assert svg.startswith("<svg") and "<image" in svg and "layer 3" in svg
    body = page.request.get(server + page.get_attribute("#export-trace", "href")).body()
    from attnscope import AttentionTrace

    (tmp_path / "t.safetensors").write_bytes(body)
    assert AttentionTrace.load(tmp_path / "t.safetensors").texts["input"] == "A link brings this view back."
    link = page.get_attribute("#permalink", "href")
    page.goto(server + "/")  # a fresh page, then the link
    page.wait_for_selector("#model option", state="attached")
    page.goto(server + link)
    page.wait_for_selector("#app[data-state=ready][data-view=heatmap] canvas.heatmap[data-head='4']", timeout=60_000)
    assert page.input_value("#text") == "A link brings this view back." and page.input_value("#layer") == "3"
    assert page.locator("canvas.heatmap").count() == 1


def test_truncate_toggle(page, server):
    page.goto(server + "/")
    page.wait_for_selector("#model option", state="attached")
    page.fill("#text", "word " * 600)
    page.click("#analyze")
    page.wait_for_selector(".status.error", timeout=60_000)
    msg = page.inner_text(".status.error")
    assert "truncate" in msg and "truncate=True" not in msg and "--truncate" not in msg
    page.check("#truncate")
    page.click("#analyze")
    page.wait_for_selector("#app[data-state=ready] #model-view", timeout=60_000)
    assert "truncated from 602 to 512 tokens" in page.inner_text("#status")


def test_neuron_view(page, server, tmp_path):
    analyze(page, server, "The cat sat on the mat because it was warm.")
    page.select_option("#layer", "2")
    page.click("[data-view=neuron]")
    page.wait_for_selector("#app[data-state=ready][data-view=neuron] #neuron-view", timeout=60_000)
    page.select_option("#neuron-query", "2")
    page.wait_for_selector("#app[data-state=ready][data-view=neuron] #neuron-view")
    assert painted(page, "#neuron-view") > 0.1
    assert "layer 2, head 0" in page.inner_text("figcaption")
    box = page.locator("#neuron-view").bounding_box()
    page.mouse.move(box["x"] + 300, box["y"] + 34 + 14 * 3 - 5)  # a product cell of key 2
    assert "dim" in page.inner_text(".tooltip") and "key 2" in page.inner_text(".tooltip")
    shot(page, tmp_path, "explorer-neuron")


def test_explain_ablate_and_analysis_panels(page, server, tmp_path):
    analyze(page, server, "the cat sat on the mat", model="tiny-llama")
    page.click("[data-view=explain]")
    assert_methods_from_the_api(page, server, "attribution methods", "ExplainRequest")
    page.click("#explain-random")
    with page.expect_response(lambda r: r.url.endswith("/v1/explain")) as resp:
        page.click("#run-explain")
    page.wait_for_selector("#app[data-panel=done] #explain-scores", timeout=60_000)
    assert page.locator("#explain-agreement tbody tr").count() >= 1
    res = resp.value.json()
    for m, note in res["notes"].items():  # each method's "is / is not" line, as the server words it
        assert note in page.inner_text(f"#explain-notes li[data-method='{m}']")
    shot(page, tmp_path, "explorer-explain", full_page=True)
    page.click("[data-view=ablate]")
    page.click("#run-ablate")
    page.wait_for_selector("#app[data-panel=done] #ablate-result", timeout=60_000)
    assert "KL" in page.inner_text("#ablate-result")
    page.click("[data-view=analyses]")
    names = page.eval_on_selector_all("#analysis-name option", "x => x.map(e => e.value)")
    assert names == [a["name"] for a in page.request.get(server + "/v1/analyses").json()]
    page.select_option("#analysis-name", "head_stats")
    page.click("#run-analysis")
    page.wait_for_selector("#app[data-panel=done] #analysis-grid table", timeout=60_000)
    page.fill("#compare-text", "the dog sat on the rug")
    page.click("#run-compare")
    page.wait_for_selector("#app[data-panel=done] #analysis-grid", timeout=60_000)
    assert "compare" in page.inner_text("#analysis-out")
    shot(page, tmp_path, "explorer-analyses")


def test_long_input_pooled_overview_and_zoom(page, server, tmp_path):
    page.goto(server + "/")
    page.wait_for_selector("#model option", state="attached")
    page.fill("#text", LONG)
    page.check("#long")
    page.click("#analyze")
    page.wait_for_selector("#app[data-state=ready][data-view=long] #pooled-view", timeout=60_000)
    assert painted(page, "#pooled-view") > 0.3
    shot(page, tmp_path, "explorer-long-input")
    box = page.locator("#pooled-view").bounding_box()
    page.mouse.click(box["x"] + 40 + 10, box["y"] + 16 + 10)  # layer 0, head 0
    page.wait_for_selector("#app[data-state=ready] #pooled-zoom", timeout=60_000)
    cap = page.inner_text("figcaption")
    assert "queries 0–" in cap
    z = page.locator("#pooled-zoom").bounding_box()
    page.mouse.move(z["x"] + 125, z["y"] + 115)
    page.mouse.down()
    page.mouse.move(z["x"] + 200, z["y"] + 190, steps=4)
    page.mouse.up()
    page.wait_for_function(f"document.querySelector('#app figcaption').textContent !== {cap!r}", timeout=60_000)
    page.wait_for_selector("#app[data-state=ready] #pooled-zoom")
    assert "(exact weights)" in page.inner_text("figcaption")
    shot(page, tmp_path, "explorer-long-zoom")


def test_live_tracking_timeline(page, server, tmp_path):
    analyze(page, server, "The cat")
    page.check("#live")
    page.click("[data-view=head]")
    page.focus("#text")
    page.keyboard.press("End")
    n_requests = []
    page.on("request", lambda r: n_requests.append(r.url) if r.url.endswith("/v1/traces") else None)
    for word in [" sat", " on", " the", " mat"]:
        page.keyboard.type(word, delay=5)
        page.wait_for_function("document.querySelector('#app').dataset.live === 'done'")
        page.wait_for_timeout(250)
    page.wait_for_function("document.querySelector('#app').attnscope.s.texts.input === 'The cat sat on the mat'")
    assert page.locator("#timeline-table tbody tr").count() >= 2
    assert len(n_requests) < len(" sat on the mat")  # debounced: not one request per key
    shot(page, tmp_path, "explorer-live", full_page=True)


def test_explain_panel_flags_a_method_that_failed_its_check(page, server, tmp_path):
    """A method whose result failed its own check (IG completeness) gets a loud badge and uncoloured, hatched
    scores, never a plain explanation; notes are text, never HTML."""
    analyze(page, server, "the cat sat on the mat", model="tiny-llama")
    toks = ["the", "cat", "sat"]
    fake = {"model": "tiny-llama", "text": "the cat sat", "tokens": toks, "special": [False] * 3, "target": 5,
            "target_label": "<b id=boom>x</b>", "probability": 0.5, "meta": {"left_out_of_agreement": ["integrated_gradients"]},
            "scores": {"attention": [0.2, 0.5, 0.3], "integrated_gradients": [1.0, -2.0, 0.5]},
            "agreement": [], "warnings": [], "completeness_ok": False, "failed_checks": ["integrated_gradients"],
            "checks": {"integrated_gradients": {"check": "completeness", "ok": False}},
            "notes": {"attention": "where heads read <img src=x onerror=\"window.__pwned=1\">",
                      "integrated_gradients": "relative to a baseline"}}
    page.route("**/v1/explain", lambda route: route.fulfill(status=200, content_type="application/json",
                                                             body=__import__("json").dumps(fake)))
    page.click("[data-view=explain]")
    page.wait_for_selector("[aria-label='attribution methods'] input", state="attached")
    page.click("#run-explain")
    page.wait_for_selector("#app[data-panel=done] #explain-notes", timeout=60_000)
    ig = page.locator("#explain-notes li[data-method='integrated_gradients']")
    assert "FAILED its completeness check" in ig.inner_text() and "not an explanation" in ig.inner_text()
    assert ig.locator(".badge.fail[role=alert]").count() == 1
    assert page.locator("#explain-notes li[data-method='attention'] .badge").count() == 0
    assert "<img src=x" in page.inner_text("#explain-notes li[data-method='attention']")  # shown as text
    assert page.locator("#app img").count() == 0 and page.locator("#boom").count() == 0
    assert page.evaluate("window.__pwned") is None
    # its scores are not coloured as evidence; the header says it failed
    assert "failed completeness" in page.inner_text("#explain-scores thead")
    bg = page.eval_on_selector_all("#explain-scores tbody tr:first-child td", "x => x.map(e => e.style.background)")
    assert bg[1] != "" and bg[2] == ""  # attention coloured, integrated_gradients not
    # the docs' picture: the same answer with the methods' own notes
    from attnscope.attribution.method_notes import NOTES

    fake.update(target_label=" mat", notes={m: NOTES[m] for m in fake["scores"]})
    page.unroute("**/v1/explain")
    page.route("**/v1/explain", lambda route: route.fulfill(status=200, content_type="application/json",
                                                             body=__import__("json").dumps(fake)))
    page.click("#run-explain")
    page.wait_for_selector("#app[data-panel=done] #explain-notes", timeout=60_000)
    shot(page, tmp_path, "explorer-explain-checks", full_page=True)


def _generation_cells(page, method):
    """(row header texts, cell texts, cell backgrounds, cell classes) of one method's generation table."""
    sel = f"section.generation[data-method='{method}'] table tbody tr"
    rows = page.eval_on_selector_all(sel, """rs => rs.map(r => [r.querySelector('th').textContent,
        [...r.querySelectorAll('td')].map(d => [d.textContent, d.style.background, d.className])])""")
    return rows


def test_generation_attribution_panel(page, server, tmp_path):
    """The explain view's generation panel shows, per method, the server's generated tokens x context scores
    cell for cell (nulls grey, not coloured), its note, and its check."""
    analyze(page, server, "the cat sat on the mat", model="tiny-llama")
    page.click("[data-view=explain]")
    assert_methods_from_the_api(page, server, "generation attribution methods", "GenerationAttributionRequest")
    page.check("[aria-label='generation attribution methods'] input[value=attnlrp]")
    page.fill("#generation-n", "4")
    page.click("#generation-random")
    with page.expect_response(lambda r: r.url.endswith("/v1/attribute-generation"), timeout=60_000) as resp:
        page.click("#run-generation")
    page.wait_for_selector("#app[data-panel=done] section.generation", timeout=60_000)
    res = resp.value.json()
    assert resp.value.request.post_data_json["max_new_tokens"] == 4
    assert list(res["results"]) == ["grad_x_input", "attnlrp"]
    for m, r in res["results"].items():
        rows = _generation_cells(page, m)
        assert len(rows) == len(r["generated_tokens"]) >= 1
        for i, (head, cells) in enumerate(rows):
            assert head.endswith(r["generated_tokens"][i])
            assert len(cells) == len(r["context_tokens"])
            for (text, bg, cls), v in zip(cells, r["scores"][i]):
                if v is None:
                    assert (text, bg, cls) == ("", "", "masked")
                else:
                    assert float(text) == pytest.approx(v, rel=0.06, abs=0.006) and (bg != "" or v == 0)
        assert r["note"] in page.inner_text(f"section.generation[data-method='{m}'] .note")
    assert "conservation check passed" in page.inner_text("section.generation[data-method='attnlrp'] h3")
    for w in res["warnings"]:
        assert w in page.inner_text("#generation-out")
    page.set_viewport_size({"width": 1400, "height": 1500})  # the whole panel in the picture
    shot(page, tmp_path, "explorer-generation-attribution-tiny", full_page=True)


def test_generation_panel_source_columns_and_failed_steps(page, server, tmp_path):
    """Encoder-decoders get the source's columns first; a generated token that failed its check is flagged
    and left uncoloured; generated text is shown as text, never HTML."""
    analyze(page, server, "the house is small", model="tiny-marian", target="das haus ist klein")
    page.click("[data-view=explain]")
    page.wait_for_selector("[aria-label='generation attribution methods'] input:checked", state="attached")
    page.fill("#generation-n", "3")
    page.click("#generation-random")
    with page.expect_response(lambda r: r.url.endswith("/v1/attribute-generation"), timeout=60_000) as resp:
        page.click("#run-generation")
    page.wait_for_selector("#app[data-panel=done] section.generation", timeout=60_000)
    r = resp.value.json()["results"]["grad_x_input"]
    heads = page.eval_on_selector_all("section.generation thead th", "x => x.map(e => [e.textContent, e.className])")[1:]
    assert [h for h, c in heads if c == "source"] == r["source_tokens"] and len(r["source_tokens"]) >= 4
    assert [h for h, c in heads if c == ""] == r["context_tokens"]
    first = _generation_cells(page, "grad_x_input")[0][1]
    assert [float(t) for t, _, _ in first[:len(r["source_tokens"])]] == \
        pytest.approx(r["source_scores"][0], rel=0.06, abs=0.006)
    staged = {"model": "tiny-marian", "prompt": "x", "kind": "encoder-decoder", "failed_checks": ["integrated_gradients"],
              "warnings": [], "results": {"integrated_gradients": {
                  "method": "integrated_gradients", "note": "relative to a baseline", "meta": {}, "warnings": [],
                  "generated_tokens": ["<img src=x onerror=\"window.__pwned=1\">", "b"], "generated_ids": [5, 6],
                  "context_tokens": ["<pad>", "<img>"], "scores": [[0.5, None], [0.25, -1.0]],
                  "source_tokens": ["s"], "source_scores": [[1.0], [2.0]], "target_logits": [1.0, 2.0],
                  "probabilities": [0.5, 0.6], "failed_steps": [1],
                  "checks": [{"check": "completeness", "ok": True}, {"check": "completeness", "ok": False}]}}}
    page.route("**/v1/attribute-generation", lambda route: route.fulfill(
        status=200, content_type="application/json", body=__import__("json").dumps(staged)))
    page.click("#run-generation")
    page.wait_for_selector("#app[data-panel=done] section.generation[data-method=integrated_gradients]", timeout=60_000)
    h3 = page.inner_text("section.generation h3")
    assert "1 of 2 generated tokens FAILED the completeness check" in h3 and "not explanations" in h3
    (h0, ok_row), (h1, bad_row) = _generation_cells(page, "integrated_gradients")
    assert "<img src=x" in h0 and h1.startswith("⚠")  # text, and the failed row is marked
    assert all(bg == "" and "failed" in c for _, bg, c in bad_row)  # failed row: no colour, hatched
    assert ok_row[0][1] != "" and ok_row[2][2] == "masked"
    assert page.locator("#app img").count() == 0 and page.evaluate("window.__pwned") is None
    page.unroute("**/v1/attribute-generation")


def test_compare_two_saved_traces(page, server, minilm, tiny, tmp_path):
    """Trace B uploaded as a .safetensors file against this view's trace, then two uploaded files; bad files
    and traces of another shape give one line saying what to do; texts from the files are shown as text."""
    from attnscope.capture import capture

    b = capture(minilm, "The dog slept on the rug.").save(tmp_path / "b.safetensors")
    a = capture(minilm, "The cat <b id=boom>sat</b> on the mat.").save(tmp_path / "a.safetensors")
    part = capture(tiny("llama"), "the cat sat", heads=[0]).save(tmp_path / "one-head.safetensors")
    (tmp_path / "notes.safetensors").write_text("not a trace")
    analyze(page, server, "The cat sat on the mat.")
    page.click("[data-view=analyses]")
    page.set_input_files("#compare-trace-b", str(b))
    page.click("#run-compare-traces")
    page.wait_for_selector("#app[data-panel=done] #compare-result #analysis-grid table", timeout=60_000)
    sides = page.inner_text("#compare-sides")
    assert "A: minilm — “The cat sat on the mat.”" in sides and "B: minilm — “The dog slept on the rug.” (uploaded)" in sides
    assert page.locator("#analysis-grid tbody tr").count() == 6  # layers x heads of the per-head divergence
    shot(page, tmp_path, "explorer-compare-traces", full_page=True)
    page.set_input_files("#compare-trace-a", str(a))  # two files, the view not involved
    page.select_option("#compare-align", "tokens")
    page.click("#run-compare-traces")
    page.wait_for_selector("#app[data-panel=done] #compare-result", timeout=60_000)
    sides = page.inner_text("#compare-sides")
    assert sides.count("(uploaded)") == 2 and "<b id=boom>sat</b>" in sides
    assert page.locator("#boom").count() == 0
    for f, words in ((part, "same layers and heads"), (tmp_path / "notes.safetensors", "not a .safetensors file")):
        page.set_input_files("#compare-trace-b", str(f))
        page.click("#run-compare-traces")
        page.wait_for_selector("#app[data-panel=error] #analysis-out .status.error")
        msg = page.inner_text("#analysis-out .status.error")
        assert words in msg and "\n" not in msg, msg
