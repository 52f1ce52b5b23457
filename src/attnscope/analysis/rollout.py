"""Attention rollout (Abnar & Zuidema 2020)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ._common import allowed, fuse_heads, maps, require_square, token_labels
from .registry import register_analysis
from .results import TokenMaps


def residual_attention(fused: np.ndarray, residual: float = 0.5, discard_ratio: float = 0.0,
                       allowed_mask: np.ndarray | None = None) -> np.ndarray:
    """Per layer: drop the smallest weights, then ``(1 − residual)·A + residual·I``, rows renormalised.

    fused: (layer, N, N) head-fused maps. Returns (layer, N, N) row-stochastic matrices.
    """
    if not 0.0 <= discard_ratio < 1.0:
        raise InputError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    if not 0.0 <= residual <= 1.0:
        raise InputError(f"residual must be in [0, 1], got {residual}")
    a = fused.copy()
    nl, n, _ = a.shape
    ok = np.ones((n, n), bool) if allowed_mask is None else allowed_mask
    if discard_ratio > 0:
        idx = np.flatnonzero(ok.ravel())  # only keys the query could attend to compete
        k = int(discard_ratio * idx.size)
        for layer in range(nl):
            flat = a[layer].reshape(-1)  # view
            order = np.argsort(flat[idx], kind="stable")  # ascending: the SMALLEST weights first
            flat[idx[order[:k]]] = 0.0
    a = (1.0 - residual) * a + residual * np.eye(n)[None]  # (L, N, N)
    s = a.sum(-1, keepdims=True)
    return a / np.where(s > 0, s, 1.0)


def rollout_chain(attention: np.ndarray, head_fusion: str = "mean", residual: float = 0.5,
                  discard_ratio: float = 0.0, allowed_mask: np.ndarray | None = None) -> np.ndarray:
    """Attention rollout of a stack of maps (Abnar & Zuidema 2020, §3): heads fused, residual added
    (:func:`residual_attention`), layers multiplied, ``R_l = Â_l · R_{l−1}``.

    attention: (layer, head, N, N) of consecutive layers. Returns (layer, N, N): the rollout up to and
    including each layer (``[-1]`` is the whole stack's). The one implementation, used by the ``rollout``
    analysis and by :func:`attnscope.attribution.explain`.
    """
    if attention.ndim != 4 or attention.shape[-1] != attention.shape[-2]:
        raise InputError(f"rollout needs square maps (layer, head, N, N), got shape {tuple(attention.shape)}")
    n = attention.shape[-1]
    a = residual_attention(fuse_heads(np.asarray(attention, dtype=np.float64), head_fusion), residual,
                           discard_ratio, allowed_mask)  # (L, N, N)
    out = np.empty_like(a)  # (L, N, N)
    r = np.eye(n)
    for li in range(a.shape[0]):
        r = a[li] @ r
        out[li] = r
    return out


@register_analysis("rollout", result="TokenMaps", square=True, tags=("relevance",))
def rollout(trace, stream: str | None = None, head_fusion: str = "mean", residual: float = 0.5,
            discard_ratio: float = 0.0) -> TokenMaps:
    """Attention rollout: how much each input token contributes to each position after every layer.

    Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers" (ACL), §3: each layer's
    attention is fused over heads (``head_fusion`` mean, max or min), the residual connection is
    modelled as ``Â = (1 − residual)·A + residual·I`` (0.5/0.5 in the paper) with rows renormalised,
    and the layers are multiplied: ``R_l = Â_l · R_{l−1}``. ``discard_ratio`` (as in Gildenblat's
    vision-transformer variant) zeroes that fraction of the *smallest* fused weights of each layer
    before the residual is added — the noise, never the strongest links. Returns ``values[l]`` =
    the rollout up to and including layer ``layers[l]``; ``.final`` is the whole stack's.
    The trace must hold consecutive layers (a partial trace starting above layer 0 gives the rollout
    from its first layer).
    """
    s = require_square(trace, stream, "rollout")
    layers = list(trace.layers[s])
    if layers != list(range(layers[0], layers[0] + len(layers))):
        raise InputError(f"rollout multiplies consecutive layers; this trace holds layers {layers} — "
                         "capture (or sel) a consecutive range")
    _, w = maps(trace, s)  # (L, H, N, N)
    n = w.shape[-1]
    out = rollout_chain(w, head_fusion, residual, discard_ratio, allowed(trace, s, n, n))  # (L, N, N)
    labels = token_labels(trace, s)
    return TokenMaps(out, layers, labels, labels, "rollout", s,
                     meta={"head_fusion": head_fusion, "residual": residual, "discard_ratio": discard_ratio,
                           "causal": bool(trace.meta.get("causal", {}).get(s, False))})
