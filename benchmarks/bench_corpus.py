"""Corpus statistics throughput vs the plain SDPA forward (MiniLM; tweets and BBC articles).

    python benchmarks/bench_corpus.py [--tweets 256] [--bbc 48] [--threads 2] [--repeats 3]
                                      [--methods sdpa,eager,loop,attnscope,attnscope-turns]

Methods, all over the same texts and (except the per-text loop) the same length-bucketed batches:
  sdpa      plain SDPA forward, no attention recorded (the limit)
  eager     output_attentions=True on the eager kernel + attnscope.statistics on the maps, batched
            (the same statistics as attnscope's: the default, all but Gini)
  loop      the straightforward way: eager, one text at a time, statistics in numpy
  attnscope corpus kernel (HeadStatsComputer: fast path, stats mode), what `attnscope corpus` runs
  attnscope-turns  the same with torch's thread team and the kernel's row pool taking turns on every
            block of scores (the thread model before each pool thread took whole blocks; as
            capture/fused.py runs where torch's backend is not OpenMP)
Every number is a ratio to `sdpa` measured in the same run: the median of `--repeats` rounds; within a
round the methods alternate batch by batch (each method's time is the sum over the batches).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from unittest import mock

import numpy as np
import torch

from attnscope.capture.api import attention_implementation
from attnscope.corpus.stats import HeadStatsComputer, plan_batches
from attnscope.datasets import load_bbc, load_tweets
from attnscope.models import load_model
from attnscope.statistics import row_statistics


def _batch(comp, items):
    n = max(e.n_tokens for e in items)
    out = {}
    for k in items[0].inputs:
        fill = comp.pad_id if k == "input_ids" else 0
        out[k] = torch.stack([torch.nn.functional.pad(e.inputs[k][0], (0, n - e.n_tokens), value=fill) for e in items])
    out["attention_mask"] = (torch.arange(n)[None] < torch.tensor([e.n_tokens for e in items])[:, None]).long()
    return out


def run_sdpa(lm, comp, enc, batches):
    with torch.no_grad():
        for b in batches:
            lm.model(**_batch(comp, [enc[i] for i in b]))


def run_eager(lm, comp, enc, batches):
    with attention_implementation(lm.model, "eager"), torch.no_grad():
        for b in batches:
            items = [enc[i] for i in b]
            x = _batch(comp, items)
            att = lm.model(**x, output_attentions=True).attentions
            allowed = x["attention_mask"].bool()[:, None, None, :]  # (B, 1, 1, n)
            valid = x["attention_mask"].float()[:, None, :]  # (B, 1, n)
            for a in att:  # (B, H, n, n)
                st = row_statistics(a, allowed, torch.arange(a.shape[-1]), names=comp.statistics)  # as attnscope
                {k: (v.float() * valid).sum(-1) / valid.sum(-1) for k, v in st.items()}


def _np_stats(a: np.ndarray) -> dict[str, np.ndarray]:
    """Seed-style numpy statistics of maps (H, n, n)."""
    ent = -(a * np.log(a + 1e-12)).sum(-1)
    mx = a.max(-1)
    srt = np.sort(a, -1)
    n = a.shape[-1]
    idx = np.arange(1, n + 1)
    gini = ((2 * idx - n - 1) * srt).sum(-1) / (n * srt.sum(-1))
    return {"entropy": ent.mean(-1), "max": mx.mean(-1), "gini": gini.mean(-1),
            "sparsity": (a < 0.01).mean((-1, -2))}


def run_loop(lm, comp, enc, batches):
    with attention_implementation(lm.model, "eager"), torch.no_grad():
        for i in (i for b in batches for i in b):  # one text at a time
            att = lm.model(**enc[i].inputs, output_attentions=True).attentions
            for a in att:
                _np_stats(a[0].numpy())


def run_attnscope(lm, comp, enc, batches):
    for b in batches:
        comp.compute([enc[i] for i in b])


def run_attnscope_turns(lm, comp, enc, batches):
    from attnscope.capture import fused

    with mock.patch.object(fused, "run_on_pool", lambda work, tasks: False):
        run_attnscope(lm, comp, enc, batches)


METHODS = {"sdpa": run_sdpa, "eager": run_eager, "loop": run_loop, "attnscope": run_attnscope,
           "attnscope-turns": run_attnscope_turns}


def bench(lm, texts, batch_size, max_batch_tokens, truncate, repeats, methods=METHODS):
    comp = HeadStatsComputer(lm, truncate=truncate)
    enc = [comp.encode(i, t) for i, t in enumerate(texts)]
    batches = plan_batches([e.n_tokens for e in enc], batch_size, max_batch_tokens)
    for name in ("sdpa", "attnscope"):  # warm up (and load the statistics kernel)
        METHODS[name](lm, comp, enc, batches[:1])
    rounds: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        spent = dict.fromkeys(methods, 0.0)
        for batch in batches:  # methods alternate batch by batch: drift of the machine hits all alike
            for name, fn in methods.items():
                t0 = time.perf_counter()
                fn(lm, comp, enc, [batch])
                spent[name] += time.perf_counter() - t0
        for name, t in spent.items():
            rounds[name].append(t)
    times = {name: statistics.median(ts) for name, ts in rounds.items()}
    tokens = sum(e.n_tokens for e in enc)
    return {"texts": len(texts), "tokens": tokens, "batches": len(batches),
            "seconds": {k: round(v, 3) for k, v in times.items()},
            "ratio": {k: round(v / times["sdpa"], 3) for k, v in times.items()},
            "round_ratios": {k: [round(t / s, 3) for t, s in zip(ts, rounds["sdpa"])] for k, ts in rounds.items()},
            "texts_per_s": {k: round(len(texts) / v, 1) for k, v in times.items()},
            "load_average": round(os.getloadavg()[0], 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tweets", type=int, default=256)
    ap.add_argument("--bbc", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS), help="which of sdpa,eager,loop,attnscope,attnscope-turns (sdpa always)")
    args = ap.parse_args()
    methods = {m: METHODS[m] for m in METHODS if m == "sdpa" or m in args.methods.split(",")}
    torch.set_num_threads(args.threads)
    lm = load_model("minilm")
    out = {}
    if args.tweets:
        tw = [x.text for x in load_tweets("test") if x.text.strip()][: args.tweets * 2]
        comp = HeadStatsComputer(lm)
        tw = [t for t in tw if len(lm.tokenizer(t)["input_ids"]) <= 128][: args.tweets]
        out["tweets"] = bench(lm, tw, 32, 32 * 128, False, args.repeats, methods)
        print(json.dumps({"tweets": out["tweets"]}), flush=True)
    if args.bbc:
        bbc = [x.text for x in load_bbc()][: args.bbc]
        out["bbc"] = bench(lm, bbc, 8, 8 * 512, True, args.repeats, methods)
        print(json.dumps({"bbc": out["bbc"]}), flush=True)


if __name__ == "__main__":
    main()
