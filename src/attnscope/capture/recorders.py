"""Recorders: where the attention probabilities computed by the fast path go.

The attention function hands each recorder blocks of probabilities ``(B, h, bq, Nk)`` for one
(stream, layer) site.  Blocks arrive in query order; across the calls of one capture session
(e.g. the steps of ``generate``) queries keep being appended and keys may grow.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from ..statistics import row_statistics

Mode = Literal["full", "stats", "topk"]
MODES: tuple[str, ...] = get_args(Mode)

SiteKey = tuple[str, int]  # (stream, layer)


class Recorder:
    """Base: collects blocks per site; subclasses say what to keep of each block."""

    payload: str = ""

    def __init__(self) -> None:
        self.blocks: dict[SiteKey, list[torch.Tensor | dict]] = {}
        self.key_lengths: dict[SiteKey, list[int]] = {}

    def add(self, site: SiteKey, probs: torch.Tensor, allowed: torch.Tensor | None,
            query_positions: torch.Tensor, key_offset: int = 0) -> None:
        """probs: (B, h, bq, Nk) float32; allowed: bool broadcastable to probs or None; query_positions: (bq,);
        key_offset: absolute position of key column 0 (> 0 when a sliding-window cache dropped old keys)."""
        self.blocks.setdefault(site, []).append(self.reduce(probs, allowed, query_positions, key_offset))
        self.key_lengths.setdefault(site, []).append(key_offset + probs.shape[-1])

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
        return key_offset, probs.to(self.dtype)

    def assemble(self, site: SiteKey) -> torch.Tensor:
        """(B, h, Nq_total, Nk_max): blocks concatenated along queries, placed at their absolute key
        positions; keys a row never saw (later tokens, or ones a sliding-window cache dropped) are 0."""
        blocks = self.blocks[site]
        nk = max(self.key_lengths[site])
        padded = [torch.nn.functional.pad(b, (off, nk - off - b.shape[-1])) for off, b in blocks]
        return torch.cat(padded, dim=2)  # (B, h, Nq, Nk)


class StatsRecorder(Recorder):
    """Keeps only per-row statistics (entropy, max, …): O(B·h·Nq) memory, no map."""

    payload = "stats"

    def reduce(self, probs, allowed, query_positions, key_offset):
        return row_statistics(probs, allowed, query_positions, key_offset)  # name -> (B, h, bq)

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


def make_recorders(modes: set[str], top_k: int, full_dtype: torch.dtype) -> list[Recorder]:
    out: list[Recorder] = []
    if "full" in modes:
        out.append(FullRecorder(full_dtype))
    if "stats" in modes:
        out.append(StatsRecorder())
    if "topk" in modes:
        out.append(TopKRecorder(top_k))
    return out
