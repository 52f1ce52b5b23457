"""Head diversity: pairwise similarity of the heads of each layer."""

from __future__ import annotations

import numpy as np

from ._common import maps
from .registry import register_analysis
from .results import HeadSimilarity


@register_analysis("head_diversity", result="HeadSimilarity", tags=("statistics",))
def head_diversity(trace, stream: str | None = None) -> HeadSimilarity:
    """Pairwise cosine similarity of the heads' attention maps within each layer, and diversity = 1 − mean similarity.

    ``values[l, a, b]`` is the cosine similarity of the flattened (query × key) maps of heads a and b
    of layer l; ``diversity[l]`` is one minus the mean over distinct pairs (0 when a layer has a
    single head). Redundant heads (similarity near 1) are the ones Michel et al. 2019, "Are Sixteen
    Heads Really Better than One?" (NeurIPS) and Voita et al. 2019 (ACL) find can be pruned; the
    pairwise comparison of head maps follows Clark et al. 2019, §6.
    """
    s, w = maps(trace, stream)  # (L, H, Nq, Nk)
    nl, nh = w.shape[:2]
    flat = w.reshape(nl, nh, -1)  # (L, H, Nq*Nk)
    norm = np.linalg.norm(flat, axis=-1, keepdims=True)  # (L, H, 1)
    unit = flat / np.where(norm > 0, norm, 1.0)
    sim = unit @ unit.transpose(0, 2, 1)  # (L, H, H)
    if nh > 1:
        off = ~np.eye(nh, dtype=bool)
        diversity = 1.0 - sim[:, off].mean(-1)  # (L,)
    else:
        diversity = np.zeros(nl)
    return HeadSimilarity(sim, diversity, list(trace.layers[s]), list(trace.heads[s]), "head_diversity", s)
