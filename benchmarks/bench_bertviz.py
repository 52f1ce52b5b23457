"""One input, all heads, viewable offline: attnscope vs bertviz (MiniLM, 128 and 512 tokens).

bertviz is never a dependency of attnscope: run this in a throwaway environment that has it,

    python -m venv --system-site-packages /tmp/bvenv && /tmp/bvenv/bin/pip install bertviz
    /tmp/bvenv/bin/python benchmarks/bench_bertviz.py [--tokens 128 512] [--threads 1]

Measured in one run per length (the median of --rounds), each from the text to the HTML string:
  plain       SDPA forward, nothing recorded (the limit)
  bertviz     eager forward with output_attentions=True + ``model_view(..., html_action="return")``
              (its documented notebook path; head_view is the same data with one more view)
  attnscope   fast-path capture of full maps + ``attnscope.render.notebook.trace_html(full_page=True)``,
              the standalone page ``attnscope.show()`` writes (all heads embedded, no server)
It prints seconds, ratios to plain, and the HTML size of each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from attnscope.capture import capture
from attnscope.models import load_model
from attnscope.render.notebook import trace_html


def text_of(lm, n_tokens: int) -> str:
    """A real BBC article cut to exactly n_tokens MiniLM tokens ([CLS] and [SEP] included)."""
    from attnscope.datasets import load_bbc

    words = " ".join(a.text for a in load_bbc()[:20]).split()
    lo, hi = 1, len(words)
    while lo < hi:  # the longest word prefix that fits
        mid = (lo + hi + 1) // 2
        if len(lm.tokenizer(" ".join(words[:mid]))["input_ids"]) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from bertviz import model_view

    lm = load_model("minilm")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| tokens | plain SDPA (s) | bertviz model_view | attnscope standalone page | bertviz HTML | attnscope HTML |")
    print("|---|---|---|---|---|---|")
    for n in a.tokens:
        text = text_of(lm, n)
        enc = lm.tokenizer(text, return_tensors="pt")
        n_tok = enc["input_ids"].shape[1]
        tokens = lm.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])

        def plain():
            with torch.no_grad():
                lm.model(**enc)
            return ""

        def bertviz():
            lm.model.set_attn_implementation("eager")
            try:
                with torch.no_grad():
                    att = lm.model(**enc, output_attentions=True).attentions
            finally:
                lm.model.set_attn_implementation("sdpa")
            return model_view(att, tokens, html_action="return").data

        def attnscope():
            return trace_html(capture(lm, text, mode="full"), full_page=True)

        times: dict[str, list[float]] = {}
        sizes: dict[str, int] = {}
        for _ in range(a.rounds):
            for name, fn in (("plain", plain), ("bertviz", bertviz), ("attnscope", attnscope)):
                t0 = time.perf_counter()
                html = fn()
                times.setdefault(name, []).append(time.perf_counter() - t0)
                sizes[name] = len(html.encode())
                del html
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"| {n_tok} | {med['plain']:.3f} | {med['bertviz']:.2f} s ({med['bertviz'] / med['plain']:.0f}x) | "
              f"{med['attnscope']:.2f} s ({med['attnscope'] / med['plain']:.0f}x) | "
              f"{sizes['bertviz'] / 1e6:.1f} MB | {sizes['attnscope'] / 1e6:.1f} MB |", flush=True)


if __name__ == "__main__":
    main()
