"""Word-level attention from token-level attention, as in Clark et al. 2019 ("What Does BERT Look At? An
Analysis of BERT's Attention", BlackboxNLP, §4): attention *to* a word split into several tokens is the
sum of the attention to its tokens; attention *from* such a word is the mean of its tokens' rows.

Words are character spans of the text (a parser's tokens, or :func:`word_spans`); a model token belongs
to the word its characters overlap most (whitespace-only tokens such as a lone ``Ġ`` and special tokens
such as [CLS]/[SEP] belong to none and are left out). A word no token overlaps (merged into a token of
its neighbour) is marked unaligned.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

_WORD = re.compile(r"\w+(?:['’]\w+)?|[^\w\s]")


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of ``text``: runs of letters/digits (with an inner apostrophe) and
    single punctuation marks."""
    return [m.span() for m in _WORD.finditer(text)]


def token_to_word(offsets: Sequence[tuple[int, int]], special: Sequence[bool],
                  spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """(N,) int: the word index of each token (−1: special, whitespace-only or outside every word)."""
    out = np.full(len(offsets), -1, dtype=np.int64)
    starts = np.array([s for s, _ in spans], dtype=np.int64)
    ends = np.array([e for _, e in spans], dtype=np.int64)
    for i, ((a, b), sp) in enumerate(zip(offsets, special)):
        if sp or b <= a or not len(spans):
            continue
        overlap = np.minimum(ends, b) - np.maximum(starts, a)  # (W,)
        j = int(overlap.argmax())
        if overlap[j] > 0:
            out[i] = j
    return out


def word_attention(weights: np.ndarray, assign: np.ndarray, n_words: int) -> tuple[np.ndarray, np.ndarray]:
    """Word-to-word maps from token maps (Clark et al. 2019, §4).

    ``weights`` (..., N, N) (query, key); ``assign`` (N,) from :func:`token_to_word`. Returns the maps
    (..., W, W) — rows: the mean over the word's tokens, columns: the sum over the word's tokens — and the
    (W,) bool mask of words that have at least one token (rows and columns of the others are 0).
    """
    w = np.asarray(weights, np.float64)
    a = np.zeros((len(assign), n_words))  # (N, W) one-hot token -> word
    ok = assign >= 0
    a[np.nonzero(ok)[0], assign[ok]] = 1.0
    counts = a.sum(0)  # (W,)
    to_words = w @ a  # (..., N, W): attention to a word = sum over its tokens
    summed = np.swapaxes(np.swapaxes(to_words, -1, -2) @ a, -1, -2)  # (..., W, W): rows summed over tokens
    maps = summed / np.where(counts > 0, counts, 1.0)[:, None]  # from a word = mean over its tokens
    return maps, counts > 0
