"""Induction heads: scoring on repeated sequences, and the input that reveals them."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ._common import maps, require_square
from .registry import register_analysis
from .results import HeadScores


def repeated_random_tokens(vocab_size: int, length: int = 50, repeats: int = 2, seed: int = 0,
                           prefix: list[int] | None = None, exclude: list[int] | None = None) -> torch.Tensor:
    """Input ids ``prefix + r + r (+ r …)`` with ``r`` = ``length`` random token ids: (1, len(prefix) + repeats·length).

    On such an input an induction head at a token of the second copy attends to the token that
    followed the same token in the first copy (Olsson et al. 2022). ``prefix`` is e.g. ``[bos_id]``;
    ``exclude`` lists ids never drawn (special tokens). Deterministic for a given ``seed``.
    """
    if length < 2 or repeats < 2:
        raise InputError("repeated_random_tokens needs length >= 2 and repeats >= 2")
    banned = set(exclude or [])
    pool = np.array([i for i in range(vocab_size) if i not in banned])
    if pool.size < length:
        raise InputError(f"only {pool.size} token ids to draw from; need {length} distinct ones")
    r = np.random.default_rng(seed).choice(pool, size=length, replace=False)
    ids = list(prefix or []) + list(r) * repeats
    return torch.tensor([ids], dtype=torch.long)  # (1, T)


def induction_targets(ids: list) -> np.ndarray:
    """(query, key) bool: key j+1 where token j equals query i's token and j < i (j+1 ≤ i)."""
    n = len(ids)
    t = np.zeros((n, n), bool)
    for i in range(n):
        for j in range(i):
            if ids[j] == ids[i] and j + 1 <= i:
                t[i, j + 1] = True
    return t


def induction_head_scores(weights: np.ndarray, ids: list) -> tuple[np.ndarray, int]:
    """Induction score per head: mean over queries whose token occurred before of the weight on the
    token(s) that followed the earlier occurrence(s). weights: (layer, head, N, N) -> ((layer, head), n_queries)."""
    t = induction_targets(ids)  # (N, N)
    rows = t.any(-1)  # (N,)
    if not rows.any():
        return np.zeros(weights.shape[:2]), 0
    mass = (weights * t).sum(-1)  # (L, H, N)
    return mass[..., rows].mean(-1), int(rows.sum())


@register_analysis("induction", result="HeadScores", square=True, tags=("roles",))
def induction(trace, stream: str | None = None) -> HeadScores:
    """Induction score per head: weight from a repeated token to the token that followed its earlier occurrence.

    Olsson et al. 2022, "In-context Learning and Induction Heads" (Transformer Circuits): on a
    sequence of random tokens repeated twice, an induction head at position i of the second copy
    attends to position i − period + 1. The score here is the general form: for every query whose
    token (by id, else by text) occurred earlier at j, the weight on j + 1, averaged over such
    queries; on a repeated random sequence it equals the standard score. Build that input with
    :func:`repeated_random_tokens`; a trace with no repeated token scores 0 (``meta["queries"]`` = 0).
    """
    s = require_square(trace, stream, "induction")
    _, w = maps(trace, s)
    toks = trace.query_tokens(s)
    ids = toks.ids if all(i >= 0 for i in toks.ids) else toks.text
    score, nq = induction_head_scores(w, list(ids))
    return HeadScores({"induction": score}, list(trace.layers[s]), list(trace.heads[s]), "induction", s,
                      meta={"queries": nq})
