"""SmolLM2 at long context: time and memory of attnscope's capture vs the plain SDPA forward.

    python benchmarks/bench_longcontext.py [--tokens 8192] [--layers 0,15,29] [--threads 2]

Each case runs in a fresh subprocess; after the model is loaded its peak-RSS mark is reset (Linux:
``echo 5 > /proc/self/clear_refs``), so "extra" is the peak RSS during the case (VmHWM) minus the RSS
before it. Cases:
  plain      SDPA forward (use_cache=False), the limit
  stats_topk capture(mode=["stats","topk"], layers=LAYERS) (all 9 heads of those layers)
  stats_all  capture(mode="stats") of every layer and head
  stats_all_turns  the same with torch's thread team and the kernel's row pool taking turns on every
             block (the thread model before each pool thread took whole blocks)
  full_head  capture(mode="full", layers=[L], heads=[H]): one full (N x N) head
  pooled     pooled_overview(layers=LAYERS, grid=64): 64 x 64 max/mean tiles per head
  pooled_all pooled_overview(grid=64) of every layer and head (the explorer's long-input overview)

To compare with another version of attnscope, run the same command with PYTHONPATH=<its src>: each case's
subprocess imports attnscope from there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from unittest import mock


def _text(n_tokens: int, lm) -> str:
    from attnscope.datasets import load_bbc

    parts, total = [], 0
    for x in load_bbc():
        parts.append(x.text)
        total += len(lm.tokenizer(x.text)["input_ids"])
        if total > n_tokens + 200:
            break
    ids = lm.tokenizer(" ".join(parts))["input_ids"][: n_tokens]
    return lm.tokenizer.decode(ids)


def _vm_hwm() -> int:
    """Peak resident set size since the last reset, in bytes (Linux /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _case(name: str, n_tokens: int, layers: list[int], threads: int) -> dict:
    import psutil
    import torch

    from attnscope.capture import capture
    from attnscope.capture.api import _forward
    from attnscope.corpus.longcontext import pooled_overview
    from attnscope.models import load_model

    torch.set_num_threads(threads)
    lm = load_model("smollm2")
    text = _text(n_tokens, lm)
    n = len(lm.tokenizer(text)["input_ids"])
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak-RSS mark (VmHWM) to the current RSS
        f.write("5")
    base = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    if name == "plain":
        _forward(lm, lm.tokenizer(text, return_tensors="pt"))
    elif name == "stats_topk":
        capture(lm, text, mode=["stats", "topk"], layers=layers)
    elif name == "stats_all":
        capture(lm, text, mode="stats")
    elif name == "stats_all_turns":
        from attnscope.capture import fused

        with mock.patch.object(fused, "run_on_pool", lambda work, tasks: False):
            capture(lm, text, mode="stats")
    elif name == "full_head":
        capture(lm, text, mode="full", layers=[layers[-1]], heads=[0])
    elif name == "pooled":
        pooled_overview(lm, text, layers=layers, grid=64)
    elif name == "pooled_all":
        pooled_overview(lm, text, grid=64)
    dt = time.perf_counter() - t0
    peak = _vm_hwm()
    return {"case": name, "tokens": n, "seconds": round(dt, 2), "extra_gib": round((peak - base) / 2**30, 3),
            "model_rss_gib": round(base / 2**30, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--layers", default="0,15,29")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default="plain,stats_topk,full_head,pooled,stats_all")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    if args.case:
        print(json.dumps(_case(args.case, args.tokens, layers, args.threads)), flush=True)
        return
    results = {}
    for case in args.cases.split(","):
        r = subprocess.run([sys.executable, __file__, "--case", case, "--tokens", str(args.tokens), "--layers",
                            args.layers, "--threads", str(args.threads)], capture_output=True, text=True)
        line = [x for x in r.stdout.splitlines() if x.startswith("{")]
        results[case] = json.loads(line[-1]) if line else {"case": case, "error": r.stderr[-500:]}
        if "plain" in results and "seconds" in results[case]:
            results[case]["ratio"] = round(results[case]["seconds"] / results["plain"]["seconds"], 2)
        print(json.dumps(results[case]), flush=True)


if __name__ == "__main__":
    main()
