"""Explorer benchmark in headless chromium: time to interactive, hover/selection latency, live typing, long inputs.

Starts `attnscope serve` in a subprocess on 127.0.0.1 and opens the explorer with Playwright (Debian's
/usr/bin/chromium).

* ``tti``: types a 512-token text, presses Analyze and waits until the model view (6 layers x 12 heads) is
  drawn and the page is idle. Then opens one head's full 512x512 heatmap, the head view and the rollout.
  Bytes are the response bodies the page received (Resource Timing encodedBodySize). Each row also has the
  server's own timings of the first answer (capture, summary) and the CPU seconds the server process spent
  until the view was interactive (utime + stime from /proc: less sensitive to other load than wall time).
* ``hover``: on that 512-token page, the time from a mousemove (model view, heatmap, head-view query and
  key) or a selection (a row of the statistics table, an arrow key) to the next painted frame, in the page.
* ``live``: "live" ticked, a MiniLM text typed word by word up to 64 tokens; for each word, the time from
  its last keystroke to the frame that shows the updated views (debounce, request, render).
* ``long``: an 8,192-token SmolLM2 text with "long input": the server's pooled forward, and the time from
  the end of its answer to the drawn overview (layers x heads) — "interactive after the capture".

    python benchmarks/bench_explorer.py [--parts tti,hover,live,long] [--runs 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
WORDS = ("the model reads every sentence and each head attends to some other token while layers build "
         "meaning from context across long documents about science history music travel food cities rivers "
         "mountains people ideas language learning").split()


def text_of_tokens(n_tokens: int, seed: int, model: str = "minilm") -> str:
    from attnscope.models import load_model

    tok = load_model(model).tokenizer
    rng = random.Random(seed)
    words = [rng.choice(WORDS) for _ in range(n_tokens)]
    while len(tok(" ".join(words), verbose=False)["input_ids"]) > n_tokens:
        words.pop()
    return " ".join(words)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


FRAME = "() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))"
# the time from an input event to the next painted frame, measured inside the page (ms)
LATENCY = """async ([sel, x, y, n]) => { const c = document.querySelector(sel), r = c.getBoundingClientRect(), out = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    c.dispatchEvent(new MouseEvent('mousemove', {clientX: r.left + x + (i % 5), clientY: r.top + y + 3 * (i % 7), bubbles: true}));
    await new Promise(res => requestAnimationFrame(() => res()));
    out.push(performance.now() - t0);
    c.dispatchEvent(new MouseEvent('mouseleave', {bubbles: true}));
  }
  return out; }"""


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def start_server(threads: int, extra: list[str]):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", "from attnscope.cli import main; main()", "serve", "--port",
                               str(port), "--threads", str(threads), *extra], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(1500):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    return server, url


SERVER_PID: list[int] = []


def server_cpu_s() -> float:
    """CPU seconds (user + system) the server process has used so far (Linux /proc), or nan elsewhere."""
    try:
        fields = open(f"/proc/{SERVER_PID[0]}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def bench_hover(page) -> dict:
    """Latencies on a page that shows a 512-token trace (model view first)."""
    out = {}
    out["model_view_hover_ms"] = page.evaluate(LATENCY, ["#model-view", 70, 40, 30])
    page.select_option("#layer", "2")
    page.click("[data-view=heatmap]")
    page.wait_for_selector("#app[data-state=ready][data-view=heatmap] canvas.heatmap")
    page.evaluate(FRAME)
    left, top = (float(page.get_attribute("canvas.heatmap", a)) for a in ("data-left", "data-top"))
    out["heatmap_hover_ms"] = page.evaluate(LATENCY, ["canvas.heatmap", left + 200, top + 200, 30])
    page.click("[data-view=head]")
    page.wait_for_selector("#app[data-state=ready][data-view=head] #head-view")
    out["head_view_query_hover_ms"] = page.evaluate(LATENCY, ["#head-view", 60, 22 + 18 * 20, 30])
    out["head_view_key_hover_ms"] = page.evaluate(LATENCY, ["#head-view", 420, 22 + 18 * 20, 30])
    sel = []
    for h in (3, 5, 7, 9, 11):  # a row of the statistics table: a new head's 512 x 512 map, fetched and drawn
        page.click("[data-view=heatmap]")
        page.wait_for_selector("#app[data-state=ready][data-view=heatmap]")
        t = page.evaluate("""async (h) => { const t0 = performance.now();
          document.querySelector(`#stats-table tr[data-head='${h}']`).click();
          while (!(document.querySelector(`canvas.heatmap[data-head='${h}']`) && document.querySelector('#app').dataset.state === 'ready'))
            { if (performance.now() - t0 > 60000) throw new Error('no update within 60 s'); await new Promise(r => setTimeout(r, 1)); }
          await new Promise(r => requestAnimationFrame(() => r())); return performance.now() - t0; }""", h)
        sel.append(t)
    out["select_head_heatmap_ms"] = sel
    keys = []
    page.focus("#view")
    for _ in range(5):
        t = page.evaluate("""async () => { const t0 = performance.now(), before = document.querySelector('canvas.heatmap').dataset.head;
          document.querySelector('#view').dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowLeft', bubbles: true}));
          while (!(document.querySelector('canvas.heatmap') && document.querySelector('canvas.heatmap').dataset.head !== before && document.querySelector('#app').dataset.state === 'ready'))
            { if (performance.now() - t0 > 60000) throw new Error('no update within 60 s'); await new Promise(r => setTimeout(r, 1)); }
          await new Promise(r => requestAnimationFrame(() => r())); return performance.now() - t0; }""")
        keys.append(t)
    out["arrow_key_head_ms"] = keys
    return {k: {"median": round(statistics.median(v), 1), "p95": round(pct(v, 0.95), 1), "n": len(v)} for k, v in out.items()}


def bench_live(browser, url: str, max_tokens: int = 64) -> dict:
    from attnscope.models import load_model

    tok = load_model("minilm").tokenizer
    words = ("Attention lets each token look at every other token and the explorer shows how those weights change "
             "while you type a longer and longer sentence about rivers mountains music cities and the history of "
             "science in many countries across the world today").split() * 2
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url + "/")
    page.wait_for_selector("#model option", state="attached")
    page.fill("#text", words[0])
    page.click("#analyze")
    page.wait_for_selector("#app[data-state=ready] #model-view", timeout=120_000)
    page.check("#live")
    page.click("[data-view=heatmap]")
    page.wait_for_selector("#app[data-state=ready][data-view=heatmap]")
    page.evaluate("document.querySelector('#text').addEventListener('keydown', () => { window.__lastKey = performance.now(); })")
    page.focus("#text")
    page.keyboard.press("End")
    text, rows = words[0], []
    for w in words[1:]:
        if len(tok(text + " " + w)["input_ids"]) > max_tokens:
            break
        text += " " + w
        page.keyboard.type(" " + w, delay=30)  # a typist: ~30 ms between keys, shorter than the debounce
        ms = page.evaluate("""async (n) => { const a = document.querySelector('#app'), t0 = performance.now();
          while (!(a.dataset.live === 'done' && a.dataset.liveText === String(n) && a.dataset.state === 'ready'))
            { if (performance.now() - t0 > 60000) throw new Error('no update within 60 s'); await new Promise(r => setTimeout(r, 1)); }
          await new Promise(r => requestAnimationFrame(() => r())); return performance.now() - window.__lastKey; }""", len(text))
        rows.append({"tokens": len(tok(text)["input_ids"]), "ms": round(ms, 1)})
        page.wait_for_timeout(150)
    page.close()
    ms = [r["ms"] for r in rows]
    return {"updates": len(rows), "median_ms": round(statistics.median(ms), 1), "p95_ms": round(pct(ms, 0.95), 1),
            "max_ms": round(max(ms), 1), "max_tokens": rows[-1]["tokens"], "rows": rows}


def bench_long(browser, url: str, n_tokens: int) -> dict:
    text = text_of_tokens(n_tokens, 0, "smollm2")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url + "/")
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#model", "smollm2")
    page.fill("#text", text)
    page.check("#long")
    page.evaluate("performance.clearResourceTimings()")
    t0 = time.perf_counter()
    page.click("#analyze")
    page.wait_for_selector("#app[data-state=ready][data-view=long] #pooled-view", timeout=900_000)
    after = page.evaluate("""async () => { await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
      const e = performance.getEntriesByType('resource').find(x => x.name.endsWith('/v1/pooled'));
      return {after_ms: performance.now() - e.responseEnd, bytes: e.encodedBodySize, request_ms: e.duration}; }""")
    total = time.perf_counter() - t0
    server_s = page.evaluate("document.querySelector('#app').attnscope.pooledState.full.timing.pooled_s")
    n = page.evaluate("document.querySelector('#app').attnscope.pooledState.full.n_query")
    # zoom into one head: one more pooled forward for that head, then draw
    box = page.locator("#pooled-view").bounding_box()
    page.evaluate("performance.clearResourceTimings()")
    page.mouse.click(box["x"] + 40 + 10, box["y"] + 16 + 10)
    page.wait_for_selector("#app[data-state=ready] #pooled-zoom", timeout=900_000)
    zoom = page.evaluate("""async () => { await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
      const e = performance.getEntriesByType('resource').find(x => x.name.endsWith('/v1/pooled'));
      return {after_ms: performance.now() - e.responseEnd, request_ms: e.duration}; }""")
    page.close()
    return {"tokens": n, "total_s": round(total, 2), "server_pooled_s": server_s,
            "request_s": round(after["request_ms"] / 1000, 2), "overview_after_capture_s": round(after["after_ms"] / 1000, 3),
            "payload_bytes": after["bytes"], "zoom_request_s": round(zoom["request_ms"] / 1000, 2),
            "zoom_after_capture_s": round(zoom["after_ms"] / 1000, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads of the server (0: default)")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--long-tokens", type=int, default=8192)
    ap.add_argument("--parts", default="tti,hover,live,long")
    ap.add_argument("--json", default="", help="write the results here")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    from playwright.sync_api import sync_playwright

    results: dict = {"threads": a.threads}
    server, url = start_server(a.threads, ["--max-text-chars", "200000", "--timeout", "1800"])
    SERVER_PID.append(server.pid)
    print("server up:", url, flush=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            if parts & {"tti", "hover"}:
                results.update(bench_tti(browser, url, a, hover="hover" in parts, tti="tti" in parts))
            if "live" in parts:
                results["live"] = bench_live(browser, url)
                print("live:", json.dumps({k: v for k, v in results["live"].items() if k != "rows"}), flush=True)
            if "long" in parts:
                results["long"] = bench_long(browser, url, a.long_tokens)
                print("long:", json.dumps(results["long"]), flush=True)
            browser.close()
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:  # still busy with a long forward
            server.kill()
            server.wait(10)


def bench_tti(browser, url: str, a, hover: bool, tti: bool) -> dict:
    texts = [text_of_tokens(a.tokens, seed) for seed in range(a.runs if tti else 1)]
    rows, out = [], {}
    for i, text in enumerate(texts + ([texts[0]] if tti else [])):  # the last run repeats the first text: server cache
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url + "/")
        page.wait_for_selector("#model option", state="attached")
        page.fill("#text", text)
        page.evaluate("performance.clearResourceTimings(); performance.setResourceTimingBufferSize(1000)")
        c0 = server_cpu_s()
        t0 = time.perf_counter()
        page.click("#analyze")
        page.wait_for_selector("#app[data-state=ready][data-view=model] #model-view", timeout=120_000)
        page.evaluate(FRAME)
        tti_s = time.perf_counter() - t0
        cpu_s = server_cpu_s() - c0
        timing = page.evaluate("document.querySelector('#app').attnscope.s.timing || {}")
        if hover and i == 0:
            out["hover"] = bench_hover(page)
            print("hover:", json.dumps(out["hover"]), flush=True)
            page.close()
            if not tti:
                return out
            continue
        res = page.evaluate("""() => performance.getEntriesByType('resource').map(e => ({
            name: e.name.replace(location.origin, ''), bytes: e.encodedBodySize, ms: e.duration}))""")
        model_view_bytes = sum(r["bytes"] for r in res)
        trace_ms = next(r["ms"] for r in res if r["name"].startswith("/v1/traces") and "/" not in r["name"][11:])
        t1 = time.perf_counter()
        page.select_option("#layer", "2")
        page.click("[data-view=heatmap]")
        page.wait_for_selector("#app[data-state=ready][data-view=heatmap] canvas.heatmap")
        heatmap_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        page.click("[data-view=head]")
        page.wait_for_selector("#app[data-state=ready][data-view=head] #head-view")
        head_s = time.perf_counter() - t2
        t3 = time.perf_counter()
        page.click("[data-view=rollout]")
        page.wait_for_selector("#app[data-state=ready][data-view=rollout] canvas.heatmap")
        rollout_s = time.perf_counter() - t3
        res = page.evaluate("() => performance.getEntriesByType('resource').map(e => e.encodedBodySize)")
        n_tok = page.evaluate("document.querySelector('#app').attnscope.nTokens()")
        rows.append({"run": i, "cached": i == len(texts), "tokens": n_tok, "tti_s": round(tti_s, 3),
                     "trace_request_s": round(trace_ms / 1000, 3), "server_capture_s": timing.get("capture_s"),
                     "server_summary_s": timing.get("summary_s"), "server_cpu_to_tti_s": round(cpu_s, 3),
                     "model_view_bytes": model_view_bytes,
                     "heatmap_s": round(heatmap_s, 3), "head_view_s": round(head_s, 3),
                     "rollout_s": round(rollout_s, 3), "total_bytes": sum(res)})
        print(json.dumps(rows[-1]), flush=True)
        page.close()
    cold = [r for r in rows if not r["cached"]]
    summary = {k: statistics.median(r[k] for r in cold) for k in ("tti_s", "trace_request_s", "server_cpu_to_tti_s",
                                                                     "model_view_bytes",
                                                                     "heatmap_s", "head_view_s", "rollout_s",
                                                                     "total_bytes")}
    summary["cached_tti_s"] = rows[-1]["tti_s"]
    print("median of cold runs:", json.dumps(summary))
    out.update({"rows": rows, "median": summary})
    return out


if __name__ == "__main__":
    main()
