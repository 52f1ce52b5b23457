"""Helpers shared by the analyses (not registered)."""

from __future__ import annotations

import unicodedata

import numpy as np

from ..errors import InputError, UnknownNameError

HEAD_FUSIONS = ("mean", "max", "min")


def maps(trace, stream: str | None) -> tuple[str, np.ndarray]:
    """(resolved stream, full maps as float64 numpy (layer, head, query, key))."""
    s = trace.resolve_stream(stream)
    return s, trace.weights(s).double().numpy()


def token_labels(trace, stream: str | None, which: str = "query") -> list[str]:
    """Display labels of a stream's query or key tokens, exact from the text's character offsets where the
    trace has the text (see :meth:`attnscope.trace.Tokens.labels`)."""
    from ..trace import STREAM_SEQUENCES

    s = trace.resolve_stream(stream)
    seq = STREAM_SEQUENCES[s][0 if which == "query" else 1]
    return trace.tokens[seq].labels(trace.texts.get(seq))


def require_square(trace, stream: str | None, what: str) -> str:
    s = trace.resolve_stream(stream)
    if s == "cross":
        square = [x for x in trace.streams if x != "cross"]
        raise InputError(f"{what} needs a self-attention stream (queries and keys from one sequence), not 'cross'; "
                         f"pass stream= one of: {', '.join(square)}")
    return s


def fuse_heads(w: np.ndarray, fusion: str) -> np.ndarray:
    """Fuse heads: (layer, head, q, k) -> (layer, q, k) by mean, max or min (Abnar & Zuidema 2020, §3)."""
    if fusion not in HEAD_FUSIONS:
        raise UnknownNameError("head fusion", fusion, HEAD_FUSIONS)
    return {"mean": w.mean(1), "max": w.max(1), "min": w.min(1)}[fusion]  # (L, Nq, Nk)


def query_offset(trace, stream: str) -> int:
    return int(trace.meta.get("query_offsets", {}).get(stream, 0))


def allowed(trace, stream: str, nq: int, nk: int) -> np.ndarray:
    m = trace.allowed_mask(stream)
    return np.ones((nq, nk), bool) if m is None else m.numpy()


def relative_distance(nq: int, nk: int, q_offset: int = 0) -> np.ndarray:
    """(query, key) matrix of key_position - query_position (negative = earlier key)."""
    return np.arange(nk)[None, :] - (np.arange(nq)[:, None] + q_offset)


def is_delimiter(text: str, special: bool) -> bool:
    """Punctuation-only tokens and tokenizer separators ([SEP], </s>, <|endoftext|>…) count as delimiters."""
    t = text.strip().removeprefix("##").removeprefix("Ġ").removeprefix("▁").strip()
    if special:
        return True
    if not t:
        return False
    return all(unicodedata.category(c).startswith("P") for c in t)
