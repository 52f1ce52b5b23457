"""Per-head statistics of attention rows."""

from __future__ import annotations

import numpy as np

from ._common import maps, query_offset, relative_distance
from .registry import register_analysis
from .results import HeadScores


@register_analysis("head_stats", result="HeadScores", needs=("weights", "stats"), tags=("statistics",))
def head_stats(trace, stream: str | None = None) -> HeadScores:
    """Per-head statistics: the mean over query rows of each row statistic, per (layer, head).

    From ``trace.head_stats()`` (one definition shared with every capture path, see
    :mod:`attnscope.statistics`): ``entropy`` (nats), ``max``, ``sparsity`` (share of allowed keys
    below 0.01), ``gini``, ``effective_positions`` (keys above 0.1), ``first_token_mass``,
    ``mean_distance`` (mean |query − key| in tokens), ``allowed_keys``. When the trace holds full
    maps, also ``special_token_mass`` (weight on tokenizer-added tokens such as [CLS]/[SEP]) and,
    for self-attention streams, ``future_attention_ratio``: the weight on keys after the query,
    which is 0 for a causal decoder that respects its mask (the "causal compliance" check).

    Entropy, Gini and sparsity as head descriptors follow Clark et al. 2019, "What Does BERT Look
    At?" (BlackboxNLP) and Vig & Belinkov 2019, "Analyzing the Structure of Attention in a
    Transformer Language Model"; the first-token mass is the "attention sink" of Xiao et al. 2024,
    "Efficient Streaming Language Models with Attention Sinks" (ICLR).
    """
    s = trace.resolve_stream(stream)
    scores = {k: v.double().numpy() for k, v in trace.head_stats(s).items()}  # name -> (L, H)
    if trace.has("weights", s):
        _, w = maps(trace, s)  # (L, H, Nq, Nk)
        keys = trace.key_tokens(s)
        special = np.array(keys.special, bool)
        scores["special_token_mass"] = w[..., special].sum(-1).mean(-1) if special.any() else np.zeros(w.shape[:2])
        if s != "cross":
            rel = relative_distance(w.shape[2], w.shape[3], query_offset(trace, s))  # (Nq, Nk)
            scores["future_attention_ratio"] = (w * (rel > 0)).sum(-1).mean(-1)
    return HeadScores(scores, list(trace.layers[s]), list(trace.heads[s]), "head_stats", s,
                      meta={"causal": bool(trace.meta.get("causal", {}).get(s, False))})
