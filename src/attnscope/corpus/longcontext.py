"""Long inputs: a block-pooled overview map computed without materialising the attention map.

``pooled_overview`` tiles a head's (query × key) map into a grid (64 × 64 by default) and keeps, per tile,
the **max** and the **mean** of the attention weights in it. From a model and a text it runs the fast
path with :class:`PooledRecorder`: the probabilities of each query block (O(block × N) memory) are pooled
as they are computed, so an 8,192-token SmolLM2 input needs (layers × heads × 64 × 64) numbers, not
8,192² per head. Passing ``region=(q0, q1, k0, k1)`` pools only that window (at the same grid), which is
how a viewer zooms in: each zoom is one more forward pass, still without the full map. From an
``AttentionTrace`` holding full maps, the same pooling is applied one head at a time (a lazily loaded
trace reads one head at a time).

Definitions (tile ``T`` = the rows ``q`` and columns ``k`` of the window that fall in it):
``max[T] = max p[q, k]``; ``mean[T] = sum p[q, k] / (|rows| * |cols|)`` — masked (causal) cells count as 0,
so ``mean`` is exactly average pooling of the full map. Edge tiles may be smaller than ``tile``.
Block pooling of attention maps for overviews follows the "zoomable" views of AttentionViz (Yeh et al.,
IEEE VIS 2023) and the max/mean tiling of image pyramids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..capture.api import _encode, _forward, attention_implementation, resolve_selection
from ..capture.interface import DEFAULT_BLOCK_ELEMENTS, CaptureSession, annotate_model, register, session_scope
from ..capture.recorders import Recorder
from ..devices import capture_memory_errors
from ..errors import CaptureError, InputError
from ..models import LoadedModel, load_model
from ..trace import AttentionTrace, Tokens

__all__ = ["PooledOverview", "PooledRecorder", "pooled_overview", "tile_sizes"]

Region = tuple[int, int, int, int]


def tile_sizes(region: Region, grid: int | tuple[int, int]) -> tuple[int, int]:
    """(query rows, key columns) per tile so that the window is covered by at most ``grid`` tiles a side."""
    gq, gk = (grid, grid) if isinstance(grid, int) else grid
    q0, q1, k0, k1 = region
    return max(1, math.ceil((q1 - q0) / gq)), max(1, math.ceil((k1 - k0) / gk))


class _TilePool:
    """max / sum accumulators (B, h, Gq, Gk) for one site."""

    def __init__(self, region: Region, tile: tuple[int, int]):
        self.region, self.tile = region, tile
        q0, q1, k0, k1 = region
        self.gq, self.gk = math.ceil((q1 - q0) / tile[0]), math.ceil((k1 - k0) / tile[1])
        self.max: torch.Tensor | None = None
        self.sum: torch.Tensor | None = None

    def add(self, probs: torch.Tensor, query_positions: torch.Tensor, key_offset: int = 0) -> None:
        """probs (B, h, bq, Nk) for absolute query positions (bq,); key column j is position key_offset + j."""
        q0, q1, k0, k1 = self.region
        tq, tk = self.tile
        keep = (query_positions >= q0) & (query_positions < q1)
        if not bool(keep.any()):
            return
        B, h = probs.shape[:2]
        if self.max is None:
            self.max = torch.zeros(B, h, self.gq, self.gk, dtype=torch.float32)
            self.sum = torch.zeros(B, h, self.gq, self.gk, dtype=torch.float64)
        p = probs if bool(keep.all()) else probs[:, :, keep.to(probs.device)]  # (B, h, bq', Nk)
        p = p.float()
        if key_offset:  # keys dropped by a sliding-window cache: their weight is 0
            p = torch.nn.functional.pad(p, (key_offset, 0))  # (B, h, bq', key_offset + Nk)
        p = p[..., k0:min(k1, p.shape[-1])]  # (B, h, bq', w <= k1-k0), a view: keys beyond Nk (growing caches) are 0
        w, bq = p.shape[-1], p.shape[2]
        full = w // tk  # whole tiles; splitting the unit-stride key axis is a view, so nothing is copied
        row_max = torch.zeros(B, h, bq, self.gk, dtype=torch.float32, device=p.device)  # (B, h, bq', Gk)
        row_sum = torch.zeros(B, h, bq, self.gk, dtype=torch.float32, device=p.device)  # (B, h, bq', Gk)
        if full:
            tiles = p[..., :full * tk].unflatten(-1, (full, tk))  # (B, h, bq', full, tk)
            torch.amax(tiles, -1, out=row_max[..., :full])
            torch.sum(tiles, -1, out=row_sum[..., :full])  # <= tk float32 terms; rows add up in float64 below
        if full * tk < w:  # the last, partial tile
            rest = p[..., full * tk:]  # (B, h, bq', w - full*tk)
            row_max[..., full] = rest.amax(-1)
            row_sum[..., full] = rest.sum(-1)
        row_max, row_sum = row_max.cpu(), row_sum.cpu().double()
        idx = ((query_positions[keep.cpu()] - q0) // tq).long()  # (bq',) tile row of each query
        self.max.scatter_reduce_(2, idx[None, None, :, None].expand_as(row_max), row_max, "amax")
        self.sum.index_add_(2, idx, row_sum)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.max is None:
            raise CaptureError("no query rows of the requested region were recorded")
        q0, q1, k0, k1 = self.region
        tq, tk = self.tile
        rows = torch.tensor([min(tq, q1 - (q0 + i * tq)) for i in range(self.gq)], dtype=torch.float64)
        cols = torch.tensor([min(tk, k1 - (k0 + j * tk)) for j in range(self.gk)], dtype=torch.float64)
        mean = self.sum / (rows[:, None] * cols[None, :])  # (B, h, Gq, Gk)
        return self.max, mean.float()


class PooledRecorder(Recorder):
    """Recorder that pools each probability block into max/mean tiles (see the module docstring).

    ``region``: (q0, q1, k0, k1) absolute positions of the window; ``tile``: (rows, columns) per tile
    (see :func:`tile_sizes`). Use it in a :class:`~attnscope.capture.interface.CaptureSession`.
    """

    payload = "pooled"

    def __init__(self, region: Region, tile: tuple[int, int]):
        super().__init__()
        self.region, self.tile = region, tile
        self.pools: dict[Any, _TilePool] = {}

    def add(self, site, probs, allowed, query_positions, key_offset: int = 0) -> None:
        pool = self.pools.setdefault(site, _TilePool(self.region, self.tile))
        pool.add(probs, query_positions, key_offset)
        self.blocks.setdefault(site, [])  # sites seen (the base class API)

    def assemble(self, site) -> tuple[torch.Tensor, torch.Tensor]:
        """(max, mean), each (B, h, Gq, Gk)."""
        return self.pools[site].result()


@dataclass
class PooledOverview:
    """Tiles of max and mean attention, each (layer, head, grid_query, grid_key), float32."""

    max: torch.Tensor
    mean: torch.Tensor
    layers: list[int]
    heads: list[int]
    region: Region  # (q0, q1, k0, k1) absolute token positions covered
    tile: tuple[int, int]  # (query rows, key columns) per tile
    n_query: int
    n_key: int
    stream: str = "self"
    tokens: Tokens | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def tile_bounds(self, axis: str) -> list[tuple[int, int]]:
        """[(start, stop)) positions of each tile along ``"query"`` or ``"key"``."""
        q0, q1, k0, k1 = self.region
        start, stop, step = (q0, q1, self.tile[0]) if axis == "query" else (k0, k1, self.tile[1])
        return [(s, min(s + step, stop)) for s in range(start, stop, step)]

    def to_json(self, decimals: int = 6) -> dict[str, Any]:
        """Plain JSON (what the server returns): nested lists [layer][head][row][col]."""
        return {"stream": self.stream, "layers": self.layers, "heads": self.heads, "region": list(self.region),
                "tile": list(self.tile), "n_query": self.n_query, "n_key": self.n_key,
                "query_tiles": self.tile_bounds("query"), "key_tiles": self.tile_bounds("key"),
                "max": torch.round(self.max, decimals=decimals).tolist(),
                "mean": torch.round(self.mean, decimals=decimals).tolist()}


def _check_region(region: Sequence[int] | None, nq: int, nk: int) -> Region:
    if region is None:
        return (0, nq, 0, nk)
    if len(region) != 4:
        raise InputError("region must be (query_start, query_stop, key_start, key_stop)")
    q0, q1, k0, k1 = (int(x) for x in region)
    if not (0 <= q0 < q1 <= nq and 0 <= k0 < k1 <= nk):
        raise InputError(f"region {tuple(region)} is outside the map of {nq} queries x {nk} keys "
                         "(it needs 0 <= start < stop <= size on both axes)")
    return (q0, q1, k0, k1)


def pooled_overview(
    source: AttentionTrace | LoadedModel | str,
    text: str | None = None,
    *,
    layers: int | Sequence[int] | None = None,
    heads: int | Sequence[int] | None = None,
    stream: str | None = None,
    grid: int | tuple[int, int] = 64,
    region: Sequence[int] | None = None,
    truncate: bool = False,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> PooledOverview:
    """Block-pooled (max, mean) overview of attention maps, never holding a full map.

    ``source``: an :class:`AttentionTrace` with full maps (``text`` must be None), or a model (catalogue
    name, path or LoadedModel; encoder or decoder-only) with ``text``. ``layers``/``heads``: model indices
    (default all); ``grid``: tiles per side (or (rows, cols)); ``region``: (q0, q1, k0, k1) window to zoom
    into (default the whole map). The module docstring gives the definitions.
    """
    as_list = (lambda x: None if x is None else ([x] if isinstance(x, int) else list(x)))
    if isinstance(source, AttentionTrace):
        if text is not None:
            raise InputError("pass either a trace or a model and a text, not a trace and a text")
        return _from_trace(source, as_list(layers), as_list(heads), stream, grid, region)
    if text is None:
        raise InputError("pooled_overview(model, text): give the text to run")
    lm = load_model(source) if isinstance(source, str) else source
    if lm.kind not in ("encoder", "causal"):
        raise InputError(f"pooled_overview from a model takes encoder or decoder-only models; {lm.name} is {lm.kind}")
    if stream not in (None, "self"):
        raise InputError(f"{lm.name} has only the stream 'self'")
    layer_sel, head_sel = resolve_selection(lm, as_list(layers), as_list(heads), ["self"])
    inputs, seqs, _ = _encode(lm, text, None, truncate)
    n = int(inputs["input_ids"].shape[1])
    reg = _check_region(region, n, n)
    rec = PooledRecorder(reg, tile_sizes(reg, grid))
    register()
    if not getattr(lm.model, "_attnscope_annotated", False):
        annotate_model(lm.model)
        lm.model._attnscope_annotated = True
    session = CaptureSession(recorders=[rec], layers={"self": set(layer_sel["self"])}, heads=dict(head_sel),
                             block_elements=block_elements)
    with attention_implementation(lm.model, "attnscope"), session_scope(session), \
            capture_memory_errors(session, block_elements):
        _forward(lm, inputs)
    parts = [rec.assemble(("self", l)) for l in layer_sel["self"]]
    mx = torch.stack([p[0][0] for p in parts])  # (L, h, Gq, Gk)
    mean = torch.stack([p[1][0] for p in parts])  # (L, h, Gq, Gk)
    return PooledOverview(mx, mean, layer_sel["self"], head_sel["self"], reg, rec.tile, n, n, "self",
                          seqs["input"], {"model_id": lm.name, "causal": lm.kind == "causal"})


def _from_trace(trace: AttentionTrace, layers, heads, stream, grid, region) -> PooledOverview:
    s = trace.resolve_stream(stream)
    if not trace.has("weights", s):
        trace.weights(s)  # raises the explanatory error
    layers = layers if layers is not None else trace.layers[s]
    heads = heads if heads is not None else trace.heads[s]
    nq, nk = len(trace.query_tokens(s)), len(trace.key_tokens(s))
    reg = _check_region(region, nq, nk)
    tile = tile_sizes(reg, grid)
    maxes, means = [], []
    for l in layers:
        row_m, row_a = [], []
        for h in heads:
            pool = _TilePool(reg, tile)
            m = trace.head(l, h, s)  # (Nq, Nk): one head at a time
            for q in range(reg[0], reg[1], 1024):
                qs = slice(q, min(q + 1024, reg[1]))
                pool.add(m[None, None, qs], torch.arange(qs.start, qs.stop))
            mx, mean = pool.result()
            row_m.append(mx[0, 0])
            row_a.append(mean[0, 0])
        maxes.append(torch.stack(row_m))
        means.append(torch.stack(row_a))
    return PooledOverview(torch.stack(maxes), torch.stack(means), list(layers), list(heads), reg, tile, nq, nk, s,
                          trace.query_tokens(s), {"model_id": trace.model_id})
