"""Comparison of two traces: difference maps and per-head Jensen–Shannon divergence."""

from __future__ import annotations

import difflib

import numpy as np

from ..errors import InputError, UnknownNameError
from ._common import check_trace, maps, token_labels
from .registry import register_analysis
from .results import HeadScores, TraceComparison

ALIGNS = ("position", "tokens")


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence (nats) of distributions along the last axis; in [0, ln 2]."""
    m = 0.5 * (p + q)

    def kl(a, b):
        return np.where(a > 0, a * (np.log(np.where(a > 0, a, 1.0)) - np.log(np.where(b > 0, b, 1.0))), 0.0).sum(-1)

    return np.clip(0.5 * kl(p, m) + 0.5 * kl(q, m), 0.0, np.log(2))


def _token_alignment(a: list[str], b: list[str]) -> tuple[list[int], list[int]]:
    ia, ib = [], []
    for blk in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks():
        ia += range(blk.a, blk.a + blk.size)
        ib += range(blk.b, blk.b + blk.size)
    return ia, ib


@register_analysis("compare", result="TraceComparison", tags=("comparison",))
def compare(trace, other=None, stream: str | None = None, align: str = "position") -> TraceComparison:
    """Compare two traces head by head: difference maps (a − b) and the Jensen–Shannon divergence of rows.

    ``other`` is the second trace (two checkpoints/models on the same tokens, or two inputs).
    ``align="position"`` needs equal shapes; ``align="tokens"`` keeps the tokens both inputs share
    (difflib matching of token strings) and renormalises the rows over them. Per head:
    ``jsd`` (mean over query rows, nats, ≤ ln 2) and ``mean_abs_difference``. The JS divergence
    is Lin 1991, "Divergence measures based on the Shannon entropy"; Clark et al. 2019 §6 use it
    to compare attention heads. Called with no ``other``, compares the trace with itself (all 0).
    """
    if align not in ALIGNS:
        raise UnknownNameError("alignment", align, ALIGNS)
    other = trace if other is None else check_trace("other (the second trace)", other)
    s, wa = maps(trace, stream)
    s_b = s if s in other.streams else None
    _, wb = maps(other, s_b)
    if wa.shape[:2] != wb.shape[:2] or trace.layers[s] != other.layers[other.resolve_stream(s_b)]:
        raise InputError(f"the traces hold different layers/heads ({wa.shape[:2]} vs {wb.shape[:2]}); "
                         "sel() the same layers and heads in both")
    qa, ka = token_labels(trace, s, "query"), token_labels(trace, s, "key")
    qb, kb = token_labels(other, s_b, "query"), token_labels(other, s_b, "key")
    if align == "position":
        if wa.shape != wb.shape:
            raise InputError(f"attention shapes differ ({wa.shape} vs {wb.shape}); pass align='tokens' to "
                             "compare the tokens the two inputs share")
    else:
        iqa, iqb = _token_alignment(qa, qb)
        ika, ikb = _token_alignment(ka, kb)
        if not iqa or not ika:
            raise InputError("the two traces share no tokens; nothing to compare")
        wa = wa[:, :, iqa][..., ika]
        wb = wb[:, :, iqb][..., ikb]
        wa = wa / np.maximum(wa.sum(-1, keepdims=True), 1e-12)
        wb = wb / np.maximum(wb.sum(-1, keepdims=True), 1e-12)
        qa, ka = [qa[i] for i in iqa], [ka[i] for i in ika]
    diff = wa - wb  # (L, H, Nq, Nk)
    jsd = js_divergence(wa, wb).mean(-1)  # (L, H)
    hs = HeadScores({"jsd": jsd, "mean_abs_difference": np.abs(diff).mean((-1, -2))}, list(trace.layers[s]),
                    list(trace.heads[s]), "compare", s)
    return TraceComparison(diff, hs, list(trace.layers[s]), list(trace.heads[s]), qa, ka, stream=s,
                           meta={"align": align, "model_a": trace.model_id, "model_b": other.model_id})
