"""One attention call, statistics mode: SDPA alone vs the ways attnscope can add statistics to it.

    python benchmarks/bench_fused.py [--batch 8] [--heads 12] [--kv-heads 12] [--tokens 512] [--dim 32]
                                     [--causal] [--rounds 5] [--threads 2]
                                     [--archs native,x86-64-v3,x86-64-v2,none] [--no-lse]

MiniLM's shape by default (12 heads of 32 dims, 8 texts of 512 tokens, a padding mask); SmolLM2's with
``--batch 1 --heads 9 --kv-heads 3 --dim 64 --tokens 2048 --causal`` (implicit causal mask, no padding).
Methods, all on the same random q, k, v, medians of interleaved rounds:
  sdpa           torch's scaled_dot_product_attention (what a plain forward runs), the limit
  recompute      SDPA for the output + attnscope's general path for the statistics (interface._record:
                 query blocks of scores, torch.softmax, row_statistics_from_scores): statistics mode before
                 the fused path, and still the path of sites it cannot fuse
  fused          capture/fused.stats_attention: bmm, the compiled row kernel, bmm (the default; with
                 several threads each pool thread runs whole blocks, single-threaded in torch)
  fused[turns]   the same with torch's thread team (each bmm) and the kernel's row pool taking turns
                 on every block: the thread model before the pool threads took whole blocks
  fused[ARCH]    the same with the kernel built for -march=ARCH (none: no -march flag), with --archs;
                 compares a portable build with the -march=native default
  lse            capture/lse_stats.lse_attention: one attention call that returns lse (value [V|K|j|e0]),
                 plus an exp-free pass over score blocks for max, argmax and the threshold counts (the
                 route of devices without the kernel)
  fused[lse-set] / lse[lse-set]  both routes asked only for what the one lse call gives
                 (entropy, first-token mass, allowed keys, and with --causal the mean distance): the
                 route comparison of docs/benchmarks.md
The lse methods are left out with --no-lse.
Prints seconds, ratio to sdpa (median of the per-round ratios too) and ns per score (B * H * N^2).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from attnscope.capture import fused, lse_stats
from attnscope.capture.interface import CaptureSession, Site, _record
from attnscope.capture import native
from attnscope.capture.native import kernel
from attnscope.capture.recorders import Scratch, StatsRecorder
from attnscope.statistics import STREAMING_STATS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=0, help="grouped-query kv heads (0 = --heads)")
    ap.add_argument("--causal", action="store_true", help="implicit causal mask, no padding (a decoder)")
    ap.add_argument("--no-lse", action="store_true", help="leave out the lse-route methods")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--archs", default="", help="comma-separated -march values to compare (none = no flag)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    B, H, N, D = args.batch, args.heads, args.tokens, args.dim
    HK, causal = args.kv_heads or H, args.causal
    gen = torch.Generator().manual_seed(0)
    # (B, N, H, D) transposed to (B, H, N, D): the layout a transformers attention module passes
    q = torch.randn(B, N, H, D, generator=gen).transpose(1, 2)
    k, v = (torch.randn(B, N, HK, D, generator=gen).transpose(1, 2) for _ in range(2))
    lengths = torch.linspace(N // 2, N, B).long()
    mask = None if causal else (torch.arange(N)[None, :] < lengths[:, None])[:, None, None, :].expand(B, 1, N, N)
    scale = D ** -0.5
    # what the one lse call gives here: the mean distance only when no key lies after its query (causal)
    lse_set = tuple(n for n in lse_stats.LSE_STATS if causal or n != "mean_distance")
    if kernel() is None:
        raise SystemExit("the statistics kernel did not build (no C compiler?)")

    def sdpa():
        torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, is_causal=causal,
                                                         enable_gqa=HK < H)

    def recompute():  # what the fast path does at a site it cannot fuse: SDPA, then _record's blocks
        sdpa()
        session = CaptureSession(recorders=[StatsRecorder()], layers={"self": None}, heads={"self": None})
        _record(session, Site("self", 0), q, k, mask, scale, causal,
                {"position_bias": None, "softcap": None, "sinks": None}, 0)

    def fused_stats(names=STREAMING_STATS):
        fused.stats_attention(q, k, v, mask, scale, causal, 0, 0, names, Scratch())

    def lse_route(names=STREAMING_STATS):
        lse_stats.lse_attention(q, k, v, mask, scale, causal, 0, 0, names)

    def fused_turns():
        with mock.patch.object(fused, "run_on_pool", lambda work, tasks: False):
            fused_stats()

    methods = {"sdpa": sdpa, "recompute": recompute, "fused": fused_stats}
    if args.threads > 1:
        methods["fused[turns]"] = fused_turns
    if not args.no_lse:
        methods.update({"lse": lse_route, "fused[lse-set]": lambda: fused_stats(lse_set),
                        "lse[lse-set]": lambda: lse_route(lse_set)})
    build_dir = Path(tempfile.mkdtemp(prefix="attnscope-bench-"))
    for arch in filter(None, args.archs.split(",")):
        flags = [] if arch == "none" else [f"-march={arch}"]
        fn = native.load(native.build(native._compiler(), build_dir, arch_flags=(flags,)))

        def run(fn=fn):
            fused.stats_attention(q, k, v, mask, scale, causal, 0, 0, STREAMING_STATS, Scratch(), row_kernel=fn)

        methods[f"fused[{arch}]"] = run
    for fn in methods.values():
        fn()  # warm up
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    scores = B * H * N * N
    base = statistics.median(times["sdpa"])
    print(f"torch {torch.__version__}, threads {args.threads}, B={B} H={H} kv={HK} N={N} D={D}, "
          f"{'causal' if causal else 'padding mask'}, rounds {args.rounds}, load average {os.getloadavg()[0]:.1f}")
    print("| method | seconds | ratio to sdpa | median of round ratios | ns per score |")
    print("|---|---|---|---|---|")
    for name, ts in times.items():
        t = statistics.median(ts)
        per_round = statistics.median(a / b for a, b in zip(ts, times["sdpa"]))
        print(f"| {name} | {t:.4f} | {t / base:.2f}x | {per_round:.2f}x | {t / scores * 1e9:.2f} |")


if __name__ == "__main__":
    main()
