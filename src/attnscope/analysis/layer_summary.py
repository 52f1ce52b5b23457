"""Per-layer summaries of the per-head statistics."""

from __future__ import annotations

import numpy as np

from .head_stats import head_stats
from .registry import register_analysis
from .results import Curves


@register_analysis("layer_summary", result="Curves", needs=("weights", "stats"), tags=("statistics",))
def layer_summary(trace, stream: str | None = None, metric: str = "entropy") -> Curves:
    """Per-layer summary of one head statistic: mean over heads by layer, with the spread (std) across heads.

    ``metric`` is any name that :func:`head_stats` returns. Layer-wise profiles of attention entropy
    and distance follow Clark et al. 2019, "What Does BERT Look At? An Analysis of BERT's Attention";
    Vig & Belinkov 2019 plot the same per-layer curves for GPT-2.
    """
    hs = head_stats(trace, stream)
    v = hs[metric]  # (L, H)
    return Curves(np.asarray(hs.layers, float), {metric: v.mean(1)}, "layer_summary", "layer", metric,
                  spread={metric: v.std(1)}, meta={"stream": hs.stream, "min": v.min(1).tolist(), "max": v.max(1).tolist()})
