"""Recorders: where the attention probabilities computed by the fast path go.

The attention function hands each recorder blocks of probabilities ``(B, h, bq, Nk)`` for one
(stream, layer) site.  Blocks arrive in query order; across the calls of one capture session
(e.g. the steps of ``generate``) queries keep being appended and keys may grow.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from ..devices import to_cpu
from ..statistics import check_stat_names, row_statistics, row_statistics_from_scores

Mode = Literal["full", "stats", "topk"]
MODES: tuple[str, ...] = get_args(Mode)

SiteKey = tuple[str, int]  # (stream, layer)


class Scratch:
    """Reusable buffers for the block loop of the fast path, one per name, grown when a block needs more.

    Allocating a fresh (B, h, bq, Nk) tensor for every block makes glibc's heap fragment (its mmap
    threshold adapts upwards after the first large frees): at 4,096 tokens and 30 layers the process
    kept ~1 GB more per layer. Reusing a few buffers keeps memory flat.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
            device: torch.device | str = "cpu") -> torch.Tensor:
        n = 1
        for d in shape:
            n *= d
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != torch.device(device):
            buf = torch.empty(n, dtype=dtype, device=device)
            self._buffers[name] = buf
        return buf[:n].view(shape)


class AttentionBlock:
    """One block of query rows at one site, as the fast path hands it to the recorders.

    Holds the masked pre-softmax ``scores`` (B, h, bq, Nk) float32 (masked keys = finfo.min), or the
    probabilities directly (after an intervention); ``probs`` is computed from the scores on first use.
    ``allowed``: bool broadcastable to (B, h, bq, Nk), or None when every key is allowed.
    """

    def __init__(self, allowed: torch.Tensor | None, *, scores: torch.Tensor | None = None,
                 probs: torch.Tensor | None = None, scratch: Scratch | None = None):
        if (scores is None) == (probs is None):
            raise ValueError("AttentionBlock takes scores or probs")
        self.allowed, self.scores, self._probs, self.scratch = allowed, scores, probs, scratch
        self.last_use = True  # set by the fast path: False while later recorders still need this block

    def scratch_scores(self) -> torch.Tensor:
        """The scores for a consumer that overwrites them: the tensor itself on its last use, else a copy."""
        return self.scores if self.last_use else self.scores.clone()

    @property
    def probs(self) -> torch.Tensor:
        if self._probs is None:  # (B, h, bq, Nk); masked keys underflow to exactly 0
            if self.scratch is None:
                probs = torch.softmax(self.scores, dim=-1)
            else:  # into a reused buffer: recorders that keep probabilities copy them
                probs = self.scratch.get("probs", tuple(self.scores.shape), device=self.scores.device)
                torch.ops.aten._softmax.out(self.scores, -1, False, out=probs)
            if self.allowed is not None:  # rows with no allowed key: 0, not uniform over masked keys
                empty = ~self.allowed.any(-1, keepdim=True)  # (B|1, 1|h, bq, 1)
                if bool(empty.any()):  # padding rows only: a pass over the whole block otherwise for nothing
                    probs = probs.masked_fill_(empty, 0.0)
            self._probs = probs
        return self._probs


class Recorder:
    """Base: collects blocks per site; subclasses say what to keep of each block."""

    payload: str = ""
    overwrites_scores = False  # the fast path calls such recorders last, so they can reuse the scores

    def __init__(self) -> None:
        self.blocks: dict[SiteKey, list[torch.Tensor | dict]] = {}
        self.key_lengths: dict[SiteKey, list[int]] = {}

    def add(self, site: SiteKey, probs: torch.Tensor, allowed: torch.Tensor | None,
            query_positions: torch.Tensor, key_offset: int = 0) -> None:
        """probs: (B, h, bq, Nk) float32; allowed: bool broadcastable to probs or None; query_positions: (bq,);
        key_offset: absolute position of key column 0 (> 0 when a sliding-window cache dropped old keys)."""
        self._keep(site, self.reduce(probs, allowed, query_positions, key_offset), key_offset + probs.shape[-1])

    def _keep(self, site: SiteKey, reduced, key_end: int) -> None:
        """Store one block's reduction (moved to the CPU: traces always live there) and the absolute
        position after its last key."""
        self.blocks.setdefault(site, []).append(to_cpu(reduced))
        self.key_lengths.setdefault(site, []).append(key_end)

    def add_block(self, site: SiteKey, block: AttentionBlock, query_positions: torch.Tensor,
                  key_offset: int = 0) -> None:
        """Called by the fast path; recorders that can work from scores override this."""
        self.add(site, block.probs, block.allowed, query_positions, key_offset)

    def reduce(self, probs, allowed, query_positions, key_offset):  # pragma: no cover - abstract
        raise NotImplementedError

    def sites(self) -> list[SiteKey]:
        return list(self.blocks)


class FullRecorder(Recorder):
    """Keeps the full maps (float16 by default, float32 for parity tests)."""

    payload = "weights"

    def __init__(self, dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        self.dtype = dtype

    def reduce(self, probs, allowed, query_positions, key_offset):
        return key_offset, probs.to(self.dtype, copy=True)  # probs may live in a reused buffer

    def assemble(self, site: SiteKey) -> torch.Tensor:
        """(B, h, Nq_total, Nk_max): blocks concatenated along queries, placed at their absolute key
        positions; keys a row never saw (later tokens, or ones a sliding-window cache dropped) are 0."""
        blocks = self.blocks[site]
        nk = max(self.key_lengths[site])
        if all(off == 0 and b.shape[-1] == nk for off, b in blocks):  # every block spans all keys: no padding
            return blocks[0][1] if len(blocks) == 1 else torch.cat([b for _, b in blocks], dim=2)
        padded = [torch.nn.functional.pad(b, (off, nk - off - b.shape[-1])) for off, b in blocks]
        return torch.cat(padded, dim=2)  # (B, h, Nq, Nk)


class StatsRecorder(Recorder):
    """Keeps only per-row statistics (entropy, max, …): O(B·h·Nq) memory, no map.

    ``names``: which statistics (default ``STREAMING_STATS``: all but Gini, see ``attnscope.statistics``).
    """

    payload = "stats"
    overwrites_scores = True

    def __init__(self, names=None) -> None:
        super().__init__()
        self.names = check_stat_names(names)

    def add_block(self, site, block, query_positions, key_offset=0):
        if block.scores is None:  # probabilities given (an intervention changed them)
            return self.add(site, block.probs, block.allowed, query_positions, key_offset)
        stats = row_statistics_from_scores(block.scratch_scores(), block.allowed, query_positions, key_offset,
                                           self.names, probs=block.probs, scratch=block.scratch)
        self._keep(site, stats, key_offset + block.scores.shape[-1])  # name -> (B, h, bq)

    def add_row_stats(self, site: SiteKey, stats: dict[str, torch.Tensor], key_end: int) -> None:
        """Statistics already computed (``attnscope.capture.fused``): name -> (B, h, Nq), at least ``names``."""
        self._keep(site, {k: stats[k] for k in self.names}, key_end)

    def reduce(self, probs, allowed, query_positions, key_offset):
        return row_statistics(probs, allowed, query_positions, key_offset, self.names)  # name -> (B, h, bq)

    def assemble(self, site: SiteKey) -> dict[str, torch.Tensor]:
        blocks = self.blocks[site]
        return {k: torch.cat([b[k] for b in blocks], dim=2) for k in blocks[0]}  # name -> (B, h, Nq)


class TopKRecorder(Recorder):
    """Keeps the k largest weights per query row and their key positions."""

    payload = "topk"

    def __init__(self, k: int = 8) -> None:
        super().__init__()
        self.k = k

    def reduce(self, probs, allowed, query_positions, key_offset):
        k = min(self.k, probs.shape[-1])
        v, i = probs.topk(k, dim=-1)  # (B, h, bq, k)
        return {"values": v.to(torch.float16), "indices": (i + key_offset).to(torch.int32)}

    def assemble(self, site: SiteKey) -> tuple[torch.Tensor, torch.Tensor]:
        blocks = self.blocks[site]
        k = max(b["values"].shape[-1] for b in blocks)
        vals = [torch.nn.functional.pad(b["values"], (0, k - b["values"].shape[-1])) for b in blocks]
        idx = [torch.nn.functional.pad(b["indices"], (0, k - b["indices"].shape[-1]), value=-1) for b in blocks]
        return torch.cat(vals, dim=2), torch.cat(idx, dim=2)  # (B, h, Nq, k) each


def make_recorders(modes: set[str], top_k: int, full_dtype: torch.dtype, statistics=None) -> list[Recorder]:
    out: list[Recorder] = []
    if "full" in modes:
        out.append(FullRecorder(full_dtype))
    if "stats" in modes:
        out.append(StatsRecorder(statistics))
    if "topk" in modes:
        out.append(TopKRecorder(top_k))
    return out
