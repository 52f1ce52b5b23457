"""Capture overhead vs the plain SDPA forward, MiniLM, batched.

Measures in one run, interleaving the methods round by round (median of rounds):
  plain    — the model's SDPA forward, nothing recorded (the limit)
  eager    — eager attention + output_attentions=True, then the same row statistics from the maps
  full     — attnscope fast path, full maps (fp16)
  stats    — attnscope fast path, statistics only (the default statistics: all but Gini)
  stats+gini — the same plus Gini (a per-row sort)
on tweets (<= 128 tokens) and BBC articles truncated to 512 tokens. Eager computes the same default
statistics as the fast path's stats mode.

    python benchmarks/bench_capture.py [--tweets 256] [--articles 48] [--rounds 3] [--batch 16] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from attnscope.capture.api import _run_eager, _run_fast, _stats_from_maps, resolve_selection
from attnscope.capture.interface import DEFAULT_BLOCK_ELEMENTS
from attnscope.datasets import load_bbc, load_tweets
from attnscope.models import load_model


def batches(lm, texts, max_len, batch):
    tok = lm.tokenizer
    out = []
    texts = sorted(texts, key=len)
    for i in range(0, len(texts), batch):
        out.append(dict(tok(texts[i:i + batch], padding=True, truncation=True, max_length=max_len, return_tensors="pt")))
    return out


def run(lm, data, method):
    ls, hs = resolve_selection(lm, None, None, None)
    statistics = "all" if method == "stats+gini" else None
    with torch.no_grad():
        for inputs in data:
            if method == "plain":
                lm.model(**inputs)
            elif method == "eager":
                found, _ = _run_eager(lm, inputs)
                for a in found["self"]:
                    _stats_from_maps(a.float(), False)
            else:
                _run_fast(lm, inputs, ls, hs, {method.split("+")[0]}, 8, torch.float16, DEFAULT_BLOCK_ELEMENTS, (),
                          statistics)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tweets", type=int, default=256)
    ap.add_argument("--articles", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    lm = load_model("minilm")
    sets = {
        f"{a.tweets} tweets, <=128 tokens": batches(lm, [t.text for t in load_tweets("test")[: a.tweets]], 128, a.batch),
        f"{a.articles} BBC articles, 512 tokens": batches(lm, [t.text for t in load_bbc()[: a.articles]], 512, a.batch),
    }
    methods = ["plain", "eager", "full", "stats", "stats+gini"]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| data | plain SDPA (s) | eager + stats | fast path, full | fast path, stats | fast path, stats + Gini |")
    print("|---|---|---|---|---|---|")
    for name, data in sets.items():
        run(lm, data[:1], "plain")  # warm-up
        times = {m: [] for m in methods}
        for _ in range(a.rounds):
            for m in methods:
                t0 = time.perf_counter()
                run(lm, data, m)
                times[m].append(time.perf_counter() - t0)
        med = {m: statistics.median(v) for m, v in times.items()}
        print(f"| {name} | {med['plain']:.2f} | {med['eager'] / med['plain']:.2f}x | "
              f"{med['full'] / med['plain']:.2f}x | {med['stats'] / med['plain']:.2f}x | "
              f"{med['stats+gini'] / med['plain']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
