"""The explorer in headless Debian chromium, driven by Playwright (Python)."""

from __future__ import annotations

import os
import shutil
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


def shot(page, tmp_path, name):
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    if SHOTS:
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SHOTS / path.name)
    assert path.stat().st_size > 10_000
    return path


def painted(page, selector) -> float:
    """Share of non-white pixels of a canvas (0 = blank)."""
    return page.eval_on_selector(selector, """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 250 || d[i+1] < 250 || d[i+2] < 250) n++;
        return n / (d.length / 4); }""")


def analyze(page, url, text, model=None):
    page.goto(url + "/")
    page.wait_for_selector("#model option", state="attached")
    if model:
        page.select_option("#model", model)
    page.fill("#text", text)
    page.click("#analyze")
    page.wait_for_selector("#app[data-state=ready]", timeout=60_000)


def test_type_sentence_switch_layer_and_head(page, server, tmp_path):
    analyze(page, server, "The quick brown fox jumps over the lazy dog because it can.")
    page.wait_for_selector("#model-view")
    assert painted(page, "#model-view") > 0.3
    assert page.locator("#stats-table tbody tr").count() == 12
    shot(page, tmp_path, "model_view")
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
    shot(page, tmp_path, "heatmaps")
    page.click("[data-view=head]")
    page.wait_for_selector("#head-view")
    assert painted(page, "#head-view") > 0.01
    page.click("[data-view=rollout]")
    page.wait_for_selector("#app[data-state=ready][data-view=rollout]")
    assert "rollout" in page.inner_text("figcaption")
    shot(page, tmp_path, "rollout")


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
    shot(page, tmp_path, "escaped")


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
    shot(page, tmp_path, "generation")


def test_encoder_decoder_streams(page, server):
    page.goto(server + "/")
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#model", "tiny-marian")
    page.fill("#text", "the house is small")
    page.fill("#target", "das haus ist klein")
    page.click("#analyze")
    page.wait_for_selector("#model-view", timeout=60_000)
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
    shot(pg, tmp_path, "notebook")
    assert [u for u in requests if not u.startswith("file:")] == [], requests
    assert not errors, errors
    pg.close()
