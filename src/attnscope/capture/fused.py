"""Statistics mode's attention: one computation gives the layer's output and its statistics.

When a capture records only statistics (the corpus job, ``mode="stats"``) of every head at a site,
recomputing ``q kᵀ`` next to SDPA would do the attention twice. Instead the fast path computes the
attention itself, block by block: ``scores = q kᵀ`` (one ``bmm``), the row kernel turns them into
probabilities and statistics in cache (``attnscope.capture.native``), and ``out = probs @ v`` (one
``bmm``). On a CPU these two ``bmm`` plus the kernel cost 1.2-1.7x what SDPA's fused kernel costs
alone at 512 tokens (``benchmarks/bench_fused.py``), so the statistics add 3-15 % to a whole forward
(``bench_capture.py``, ``bench_corpus.py``). The output equals
SDPA's within float32 rounding (tested), and it is computed from exactly the probabilities the
statistics describe.

Threads: with n torch threads, n pool threads (``native.run_on_pool``) each take whole blocks from a
shared counter and run both ``bmm`` and the kernel on their own, single-threaded in torch, so a call
synchronises once, at its end. Alternating torch's thread team (each ``bmm``) with the kernel's row pool
synchronised three times a block, and torch's OpenMP threads spinning after each ``bmm`` competed with
the row pool for the cores: at two threads that cost more than a second thread gained
(docs/benchmarks.md, "Statistics mode vs the plain forward").

Used only where it is exact and cheaper (:func:`applies`): no gradient, no dropout, a boolean or no mask,
no position bias / soft-capping / sinks (those take the general path), and a route for the device:

- a CPU with the kernel built: the kernel route above, for every statistic;
- any other device (CUDA): ``attnscope.capture.lse_stats``, one attention call that returns each row's
  log-sum-exp and, through its value ``[V | K | j | e_0]``, the entropy, first-token mass and (causal
  rows) mean distance with the output; an exp-free pass over score blocks for max, argmax and the
  threshold counts. On a CPU it measured slower than the kernel route for every statistic, the ones it
  covers included (docs/benchmarks.md, "Statistics without the map"), so a CPU without the kernel takes
  the general path, which measured faster than the lse route there too.
"""

from __future__ import annotations

import itertools
import threading

import torch

from ..statistics import _gini
from . import lse_stats
from .native import KERNEL_STATS, kernel, native_softmax_row_stats, run_on_pool
from .recorders import Scratch

_local = threading.local()


def _thread_scratch() -> Scratch:
    """The calling pool thread's own block buffers, kept between calls (see Scratch on why)."""
    if not hasattr(_local, "scratch"):
        _local.scratch = Scratch()
    return _local.scratch

# Elements of one score block (pairs * rows * keys): 1M float32 = 4 MB, which stays in cache between
# the bmm, the kernel and the bmm (on 512-token batches blocks of 256K-1M scores ran fastest here, 2M
# and more slower).
FUSED_BLOCK_ELEMENTS = 1 << 20


# The route of statistics-only sites per device type; any other device: "lse" (module docstring).
ROUTES = {"cpu": "kernel"}


def route(device: torch.device) -> str | None:
    """``"kernel"``, ``"lse"``, or None (a CPU whose kernel did not build: the general path)."""
    r = ROUTES.get(device.type, "lse")
    return None if r == "kernel" and kernel() is None else r


def applies(query: torch.Tensor, attention_mask: torch.Tensor | None, dropout: float, training: bool,
            extra: dict) -> bool:
    """Whether :func:`stats_attention` can stand in for SDPA at this call (module docstring)."""
    if not lse_stats.applies(query, attention_mask, dropout, training, extra):  # the conditions both routes share
        return False
    return route(query.device) is not None


def _blocks(pairs: int, nq: int, nk: int, budget: int) -> list[tuple[slice, slice]]:
    """(pair range, query range) blocks of about ``budget`` scores: whole maps of several pairs when a
    map fits, else query rows of one pair."""
    if nq * nk <= budget:
        step = max(1, budget // (nq * nk))
        return [(slice(p, min(p + step, pairs)), slice(0, nq)) for p in range(0, pairs, step)]
    rows = max(1, budget // nk)
    return [(slice(p, p + 1), slice(r, min(r + rows, nq))) for p in range(pairs) for r in range(0, nq, rows)]


class _BlockMask:
    """The attention mask (B|1, 1|H, Nq|1, Nk) bool as the kernel reads it: a uint8 view, each pair's
    element offset, the stride between query rows (0 for a mask shared by all rows)."""

    def __init__(self, mask: torch.Tensor, B: int, H: int):
        if mask.stride(-1) != 1:
            mask = mask.contiguous()
        self.u8 = mask.view(torch.uint8)
        sb, sh, sq, _ = (s if n > 1 else 0 for s, n in zip(mask.stride(), mask.shape))
        pairs = torch.arange(B * H)
        self.pair_offsets = (pairs // H) * sb + (pairs % H) * sh  # (B*H,) int64
        self.row_stride = sq


@torch.no_grad()
def stats_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, scaling: float, causal: bool, qpos0: int,
                    key_offset: int, names: tuple[str, ...], scratch: Scratch,
                    budget: int = FUSED_BLOCK_ELEMENTS,
                    row_kernel=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Attention output and per-row statistics of every head.

    query: (B, H, Nq, D); key: (B, Hkv, Nk, D); value: (B, Hkv, Nk, Dv) (grouped-query: head h reads
    kv head h // (H / Hkv)); attention_mask: bool (B|1, 1|H, Nq, Nk), True = attend, or None;
    causal: implicit top-left causal masking (no mask given). qpos0: absolute position of query row 0;
    key_offset: absolute position of key column 0. names: statistics wanted (``statistics.ROW_STATS``).
    row_kernel: a loaded row kernel (``native.load``) instead of the cached build (benchmarks compare builds).
    Returns the output (B, Nq, H, Dv) in the query's dtype (as transformers' SDPA forward returns it)
    and name -> (B, H, Nq) statistics. Where :func:`route` says ``"lse"`` (and no row_kernel is given):
    ``lse_stats.lse_attention`` (module docstring).
    """
    if row_kernel is None and route(query.device) == "lse":
        return lse_stats.lse_attention(query, key, value, attention_mask, scaling, causal, qpos0, key_offset, names)
    B, H, nq, d = query.shape
    nk, dv = key.shape[2], value.shape[-1]
    pairs = B * H
    groups = H // key.shape[1]
    if groups > 1:  # grouped-query attention: each kv head serves `groups` query heads
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)  # (B, H, Nk, ·)
    q = query.float().reshape(pairs, nq, d)  # (P, Nq, D)
    k_t = key.float().transpose(2, 3).reshape(pairs, d, nk)  # (P, D, Nk), one copy
    v = value.float().reshape(pairs, nk, dv)  # (P, Nk, Dv)
    out = torch.empty(pairs, nq, dv, dtype=torch.float32)
    stats = torch.empty(pairs, nq, len(KERNEL_STATS), dtype=torch.float32)
    gini = torch.empty(pairs, nq, dtype=torch.float32) if "gini" in names else None
    mask = _BlockMask(attention_mask[..., :nk], B, H) if attention_mask is not None else None
    fn = kernel() if row_kernel is None else row_kernel
    if fn is None:
        raise RuntimeError("attnscope: the statistics kernel is not available (see attnscope.capture.native)")
    def attend(ps: slice, qs: slice, scratch: Scratch, kernel_threads: int | None) -> None:
        """One block: scores, the kernel, the output rows (the block's own slices of out, stats, gini)."""
        g, bq = ps.stop - ps.start, qs.stop - qs.start
        rows = torch.arange(qs.start, qs.stop)
        # keys a block can see: with implicit causal masking, none after its last query
        kl = min(nk, qs.stop) if causal else nk
        key_end = rows + 1 if causal else None  # (bq,) int64: query row r sees keys < r + 1
        rel_pos = (rows + qpos0 - key_offset).float()  # (bq,)
        scores = torch.bmm(q[ps, qs], k_t[ps, :, :kl], out=scratch.get("fused_scores", (g, bq, kl)))  # (G, bq, kl)
        block_stats = scratch.get("fused_stats", (g * bq, len(KERNEL_STATS)))
        offsets = None if mask is None else (mask.pair_offsets[ps] + qs.start * mask.row_stride).contiguous()
        native_softmax_row_stats(fn, scores, scaling, None if mask is None else mask.u8, offsets,
                                 0 if mask is None else mask.row_stride, key_end, rel_pos, block_stats,
                                 threads=kernel_threads)
        stats[ps, qs] = block_stats.view(g, bq, -1)
        if gini is not None:  # needs the row sorted: from the block's probabilities
            gini[ps, qs] = _gini(scores, block_stats[:, -1].view(g, bq))
        if bq == nq:  # whole maps: straight into the output
            torch.bmm(scores, v[ps, :kl], out=out[ps])
        else:
            out[ps, qs] = torch.bmm(scores, v[ps, :kl], out=scratch.get("fused_out", (g, bq, dv)))

    blocks = _blocks(pairs, nq, nk, budget)
    # a call of one block (short inputs) keeps torch's team and the row pool: measured faster there
    workers = min(torch.get_num_threads(), len(blocks))
    next_block = itertools.count()  # shared by the pool threads; next() is atomic under the GIL

    def work() -> None:  # a pool thread: whole blocks, one after another, until none is left
        scratch_here = _thread_scratch()
        while (i := next(next_block)) < len(blocks):
            attend(*blocks[i], scratch_here, 1)

    if workers <= 1 or not run_on_pool(work, workers):
        for ps, qs in blocks:  # one thread, or no single-threaded pool: torch's team, then the kernel's
            attend(ps, qs, scratch, None)
    by_stat = stats.permute(2, 0, 1).contiguous().view(len(KERNEL_STATS), B, H, nq)  # one copy: (8, B, H, Nq)
    result = {name: by_stat[i] for i, name in enumerate(KERNEL_STATS) if name in names}
    if "argmax" in result:
        result["argmax"] = result["argmax"].long() + key_offset
    if "allowed_keys" in result:
        result["allowed_keys"] = result["allowed_keys"].long()
    if "first_token_mass" in result and key_offset > 0:  # key column 0 is not position 0
        result["first_token_mass"] = torch.zeros_like(result["first_token_mass"])
    if gini is not None:
        result["gini"] = gini.reshape(B, H, nq)
    result = {k: result[k] for k in names}
    output = out.view(B, H, nq, dv).transpose(1, 2).to(query.dtype).contiguous()  # (B, Nq, H, Dv)
    return output, result
