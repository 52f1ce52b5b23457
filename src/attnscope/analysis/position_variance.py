"""Per-position variance of the attention a token receives."""

from __future__ import annotations

import numpy as np

from ._common import allowed, maps, require_square, token_labels
from .registry import register_analysis
from .results import Curves


@register_analysis("position_variance", result="Curves", square=True, tags=("causal",))
def position_variance(trace, stream: str | None = None) -> Curves:
    """Variance, over the queries allowed to see it, of the attention each key position receives; one curve per layer.

    In a causal LM key j is visible to queries i ≥ j only, so the variance is over A[j:, j] (not
    A[:j+1, j], which would count the masked zeros). High variance marks tokens some
    queries rely on and others ignore. Heads averaged. After Vig & Belinkov 2019 (attention by
    position in GPT-2).
    """
    s = require_square(trace, stream, "position_variance")
    _, w = maps(trace, s)  # (L, H, N, N)
    n = w.shape[-1]
    ok = allowed(trace, s, n, n)  # (N, N)
    fused = w.mean(1)  # (L, N, N)
    series = {}
    for li, layer in enumerate(trace.layers[s]):
        v = np.zeros(n)
        for j in range(n):
            col = fused[li, ok[:, j], j]
            v[j] = col.var() if col.size > 1 else 0.0
        series[f"layer {layer}"] = v
    return Curves(np.arange(n, dtype=float), series, "position_variance", "key position", "variance of attention received",
                  meta={"stream": s, "tokens": token_labels(trace, s, "key")})
