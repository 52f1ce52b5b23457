"""Memory needed to hold attention maps, versus attnscope's fast path."""

from __future__ import annotations

import torch

from ..errors import InputError, UnknownNameError
from .registry import register_analysis
from .results import MemoryEstimate

DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
N_ROW_STATS = 9  # attnscope.statistics.ROW_STATS


def estimate_memory(layers: int, heads: int, length: int, batch: int = 1, dtype: str = "float32",
                    block: int = 128, key_length: int | None = None) -> MemoryEstimate:
    """Bytes for full maps vs the fast path's working set (see :func:`memory_estimate`)."""
    if dtype not in DTYPES:
        raise UnknownNameError("dtype", dtype, list(DTYPES))
    for name, v in (("layers", layers), ("heads", heads), ("length", length), ("batch", batch), ("block", block)):
        if int(v) < 1:
            raise InputError(f"{name} must be >= 1, got {v}")
    nk = int(key_length or length)
    size = DTYPES[dtype]
    full = layers * heads * length * nk * batch * size
    eager_layer = batch * heads * length * nk * 4  # softmax in float32, one layer live at a time
    working = batch * heads * min(block, length) * nk * 4  # (B, H, block, Nk) float32 probabilities
    stats = layers * heads * length * batch * N_ROW_STATS * 4
    return MemoryEstimate(layers, heads, length, batch, dtype, block, full, eager_layer, working, stats,
                          meta={"key_length": nk})


@register_analysis("memory_estimate", result="MemoryEstimate", needs=(), tags=("cost",))
def memory_estimate(trace=None, stream: str | None = None, layers: int | None = None, heads: int | None = None,
                    length: int | None = None, batch: int = 1, dtype: str = "float32", block: int = 128) -> MemoryEstimate:
    """Bytes to hold every attention map (layers × heads × length² × batch × dtype size) vs the fast path.

    The fast path (docs/capture.md) recomputes ``softmax(q kᵀ·scale + mask)`` in query blocks and keeps
    only per-row statistics, so its live memory is one (batch, head, block, key) float32 block plus
    the statistics (9 floats per row); eager attention materialises a whole layer (batch, head,
    length, length). Defaults (layers, heads, length) come from the trace when one is given.
    The quadratic cost is the one Vaswani et al. 2017 note for self-attention; block-wise softmax as
    in FlashAttention (Dao et al. 2022). ``dtype`` sets the bytes per weight of the full maps.
    """
    if trace is not None:
        s = trace.resolve_stream(stream)
        sh = trace.shape(s)
        layers = layers or int(trace.meta.get("num_layers", sh["layer"]))
        heads = heads or int(trace.meta.get("num_heads", sh["head"]))
        length = length or sh["query"]
        key_length = sh["key"]
    else:
        key_length = None
    if layers is None or heads is None or length is None:
        raise InputError("memory_estimate needs a trace or layers=, heads= and length=")
    return estimate_memory(int(layers), int(heads), int(length), int(batch), dtype, int(block),
                           key_length if length == (trace.shape(s)["query"] if trace is not None else None) else None)
