"""One attention call, statistics mode: SDPA alone vs the ways attnscope can add statistics to it.

    python benchmarks/bench_fused.py [--batch 8] [--heads 12] [--tokens 512] [--dim 32] [--rounds 5] [--threads 2]
                                     [--archs native,x86-64-v3,x86-64-v2,none]

MiniLM's shape by default (12 heads of 32 dims, 8 texts of 512 tokens, a padding mask). Methods, all on
the same random q, k, v, medians of interleaved rounds:
  sdpa           torch's scaled_dot_product_attention (what a plain forward runs), the limit
  recompute      SDPA for the output + attnscope's general path for the statistics (interface._record:
                 query blocks of scores, torch.softmax, row_statistics_from_scores): statistics mode before
                 the fused path, and still the path of sites it cannot fuse
  fused          capture/fused.stats_attention: bmm, the compiled row kernel, bmm (the default)
  fused[ARCH]    the same with the kernel built for -march=ARCH (none: no -march flag), with --archs;
                 compares a portable build with the -march=native default
Prints seconds, ratio to sdpa and ns per score (B * H * N^2).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from attnscope.capture import fused
from attnscope.capture.interface import CaptureSession, Site, _record
from attnscope.capture import native
from attnscope.capture.native import kernel
from attnscope.capture.recorders import Scratch, StatsRecorder
from attnscope.statistics import STREAMING_STATS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--archs", default="", help="comma-separated -march values to compare (none = no flag)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    B, H, N, D = args.batch, args.heads, args.tokens, args.dim
    gen = torch.Generator().manual_seed(0)
    # (B, N, H, D) transposed to (B, H, N, D): the layout a transformers attention module passes
    q, k, v = (torch.randn(B, N, H, D, generator=gen).transpose(1, 2) for _ in range(3))
    lengths = torch.linspace(N // 2, N, B).long()
    mask = (torch.arange(N)[None, :] < lengths[:, None])[:, None, None, :].expand(B, 1, N, N)  # padding
    scale = D ** -0.5
    if kernel() is None:
        raise SystemExit("the statistics kernel did not build (no C compiler?)")

    def sdpa():
        torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)

    def recompute():  # what the fast path does at a site it cannot fuse: SDPA, then _record's blocks
        sdpa()
        session = CaptureSession(recorders=[StatsRecorder()], layers={"self": None}, heads={"self": None})
        _record(session, Site("self", 0), q, k, mask, scale, False,
                {"position_bias": None, "softcap": None, "sinks": None}, 0)

    def fused_stats():
        fused.stats_attention(q, k, v, mask, scale, False, 0, 0, STREAMING_STATS, Scratch())

    methods = {"sdpa": sdpa, "recompute": recompute, "fused": fused_stats}
    build_dir = Path(tempfile.mkdtemp(prefix="attnscope-bench-"))
    for arch in filter(None, args.archs.split(",")):
        flags = [] if arch == "none" else [f"-march={arch}"]
        fn = native.load(native.build(native._compiler(), build_dir, arch_flags=(flags,)))

        def run(fn=fn):
            fused.stats_attention(q, k, v, mask, scale, False, 0, 0, STREAMING_STATS, Scratch(), row_kernel=fn)

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
    print(f"torch {torch.__version__}, threads {args.threads}, B={B} H={H} N={N} D={D}, rounds {args.rounds}")
    print("| method | seconds | ratio to sdpa | ns per score |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"| {name} | {t:.4f} | {t / base:.2f}x | {t / scores * 1e9:.2f} |")


if __name__ == "__main__":
    main()
