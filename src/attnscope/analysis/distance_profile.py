"""Attention versus distance (causal-LM curves)."""

from __future__ import annotations

import numpy as np

from ._common import check_int, maps, query_offset, relative_distance, require_square
from .registry import register_analysis
from .results import Curves


MIN_QUERIES = 3  # figures draw a distance only when at least this many queries were averaged there


@register_analysis("distance_profile", result="Curves", square=True, tags=("causal",))
def distance_profile(trace, stream: str | None = None, max_distance: int = 32) -> Curves:
    """Mean attention weight at each distance d = query − key (0..max_distance), one curve per layer (heads averaged).

    For a causal LM the curve is the decay of attention with distance; the mean over the queries
    that have a key at that distance. Distance profiles of heads follow Vig & Belinkov 2019,
    "Analyzing the Structure of Attention in a Transformer Language Model" (BlackboxNLP) and
    Clark et al. 2019; for encoders both directions are pooled (|query − key|).

    ``meta["counts"]``: the number of queries averaged at each distance (n − d for a causal map);
    figures leave out distances with fewer than ``meta["min_queries"]`` of them.
    """
    s = require_square(trace, stream, "distance_profile")
    max_distance = check_int("max_distance (the longest query-key distance, in tokens)", max_distance, 1)
    _, w = maps(trace, s)  # (L, H, N, N)
    n = w.shape[-1]
    causal = bool(trace.meta.get("causal", {}).get(s, False))
    dist = -relative_distance(n, n, query_offset(trace, s))  # query - key, (N, N)
    if not causal:
        dist = np.abs(dist)
    dmax = int(min(max_distance, n - 1))
    x = np.arange(dmax + 1)
    fused = w.mean(1)  # (L, N, N)
    # queries averaged at each distance: a causal map has n - d of them, so the longest distances rest on
    # one or two queries (figures leave out distances with fewer than MIN_QUERIES)
    counts = np.array([int((dist == d).any(-1).sum()) for d in x])  # (D,)
    series, spread = {}, {}
    for li, layer in enumerate(trace.layers[s]):
        vals = []
        for d in x:
            m = dist == d
            # mean per query over its keys at distance d (encoders: up to two), then over queries
            per_q = (fused[li] * m).sum(-1)[m.any(-1)] / m.sum(-1)[m.any(-1)]
            vals.append(per_q.mean() if per_q.size else 0.0)
        series[f"layer {layer}"] = np.array(vals)
    return Curves(x.astype(float), series, "distance_profile", "distance (query − key, tokens)" if causal else "distance |query − key| (tokens)",
                  "mean attention weight", spread, meta={"stream": s, "causal": causal, "counts": counts,
                        "min_queries": MIN_QUERIES})
