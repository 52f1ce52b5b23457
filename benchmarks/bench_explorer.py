"""Explorer benchmark: a 512-token MiniLM input in headless chromium — time to interactive and bytes.

Starts `attnscope serve` in a subprocess on 127.0.0.1, opens the explorer with Playwright (Debian's
/usr/bin/chromium), types a 512-token text, presses Analyze and waits until the model view (6 layers x
12 heads) is drawn and the page is idle. Then opens one head's full 512x512 heatmap, the head view and
the rollout. Bytes are the response bodies the page received (Resource Timing encodedBodySize).

    python benchmarks/bench_explorer.py [--runs 3] [--threads 1]
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


def text_of_tokens(n_tokens: int, seed: int) -> str:
    from attnscope.models import load_model

    tok = load_model("minilm").tokenizer
    rng = random.Random(seed)
    words = [rng.choice(WORDS) for _ in range(n_tokens)]
    while len(tok(" ".join(words))["input_ids"]) > n_tokens:
        words.pop()
    return " ".join(words)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads of the server (0: default)")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--json", default="", help="write the results here")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", "from attnscope.cli import main; main()", "serve", "--port",
                               str(port), "--threads", str(a.threads)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        texts = [text_of_tokens(a.tokens, seed) for seed in range(a.runs)]
        rows = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            for i, text in enumerate(texts + [texts[0]]):  # the last run repeats the first text: server cache
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(url + "/")
                page.wait_for_selector("#model option", state="attached")
                page.fill("#text", text)
                page.evaluate("performance.clearResourceTimings(); performance.setResourceTimingBufferSize(1000)")
                t0 = time.perf_counter()
                page.click("#analyze")
                page.wait_for_selector("#app[data-state=ready][data-view=model] #model-view", timeout=120_000)
                page.evaluate("() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))")
                tti = time.perf_counter() - t0
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
                rows.append({"run": i, "cached": i == len(texts), "tokens": n_tok, "tti_s": round(tti, 3),
                             "trace_request_s": round(trace_ms / 1000, 3), "model_view_bytes": model_view_bytes,
                             "heatmap_s": round(heatmap_s, 3), "head_view_s": round(head_s, 3),
                             "rollout_s": round(rollout_s, 3), "total_bytes": sum(res)})
                print(json.dumps(rows[-1]), flush=True)
                page.close()
            browser.close()
        cold = [r for r in rows if not r["cached"]]
        summary = {k: statistics.median(r[k] for r in cold) for k in ("tti_s", "trace_request_s", "model_view_bytes",
                                                                         "heatmap_s", "head_view_s", "rollout_s",
                                                                         "total_bytes")}
        summary["cached_tti_s"] = rows[-1]["tti_s"]
        print("median of cold runs:", json.dumps(summary))
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"rows": rows, "median": summary, "threads": a.threads}, f, indent=1)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
