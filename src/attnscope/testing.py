"""Public test helpers (like xarray.testing): compare traces with clear failure messages."""

from __future__ import annotations

from typing import Iterable

import torch

from .trace import AttentionTrace


def assert_trace_close(a: AttentionTrace, b: AttentionTrace, atol: float = 1e-5, rtol: float = 0.0,
                       stats: Iterable[str] | None = None) -> None:
    """Raise AssertionError naming the first difference between two traces (structure, tokens, data).

    stats: the row statistics to compare (None = all). Counts of weights past a threshold (sparsity,
    effective positions) and argmax can differ between two correct computations when a weight lies
    within float rounding of the threshold or of a tie; compare those against the probabilities instead.
    """
    stats = None if stats is None else set(stats)
    if a.streams != b.streams:
        raise AssertionError(f"streams differ: {a.streams} vs {b.streams}")
    for s in a.streams:
        if a.layers[s] != b.layers[s] or a.heads[s] != b.heads[s]:
            raise AssertionError(f"{s}: layers/heads differ: {a.layers[s]}/{a.heads[s]} vs {b.layers[s]}/{b.heads[s]}")
        for side in ("query_tokens", "key_tokens"):
            ta, tb = getattr(a, side)(s), getattr(b, side)(s)
            if ta != tb:
                raise AssertionError(f"{s}: {side} differ: {ta.text[:8]}… vs {tb.text[:8]}…")
        for payload in ("weights", "stats", "topk"):
            if a.has(payload, s) != b.has(payload, s):
                raise AssertionError(f"{s}: one trace has {payload} and the other not")
        if a.has("weights", s):
            wa, wb = a.weights(s), b.weights(s)
            if not torch.allclose(wa, wb, atol=atol, rtol=rtol):
                d = (wa - wb).abs()
                idx = tuple(int(i) for i in torch.nonzero(d == d.max())[0])
                raise AssertionError(f"{s}: weights differ by {d.max().item():.3g} at (layer, head, query, key)={idx}")
        if a.has("stats", s):
            for k, v in a.row_stats(s).items():
                if stats is not None and k not in stats:
                    continue
                if not torch.allclose(v.float(), b.row_stats(s)[k].float(), atol=max(atol, 1e-5), rtol=max(rtol, 1e-4)):
                    raise AssertionError(f"{s}: statistic {k!r} differs")
