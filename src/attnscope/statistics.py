"""Per-query-row attention statistics: one definition shared by every capture path.

Three entry points compute the same numbers:

- :func:`row_statistics` from probabilities (stored maps, the eager reference, intervened rows);
- :func:`row_statistics_from_scores` from the masked pre-softmax scores of a query block — what the
  fast path's statistics mode uses. With ``m`` the row maximum and ``Z = Σ exp(s - m)``, the largest
  weight is ``1 / Z`` and ``log p = (s - m) - log Z``, so entropy is ``-log(max p) - Σ p (s - m)``: no
  logarithm per element (the online-softmax identities of flash attention; Milakov & Gimelshein
  2018);
- :func:`row_statistics_from_lse` from scores and each row's log-sum-exp (which flash-attention kernels
  return; ``capture/lse_stats.py``): no exponential for the largest weight and the threshold counts.

The tests check that they agree with each other and with the eager reference.

Gini needs the row in sorted order (O(N log N) per row, several times the cost of everything else
on a CPU at 512 tokens), so statistics mode leaves it out unless asked for (``STREAMING_STATS``);
statistics computed from stored maps include it.
"""

from __future__ import annotations

import math
from typing import Iterable, Literal, get_args

import numpy as np
import torch

from .errors import UnknownNameError

RowStatName = Literal[
    "entropy",  # Shannon entropy of the row, in nats, over the keys the query may attend to
    "max",  # largest weight
    "argmax",  # key position of the largest weight
    "sparsity",  # fraction of allowed keys with weight < 0.01
    "gini",  # Gini coefficient of the row over allowed keys (0 = uniform, -> 1 = one key)
    "effective_positions",  # number of keys with weight > 0.1
    "first_token_mass",  # weight on key position 0
    "mean_distance",  # sum_j p_j * |i - j|, i the query's absolute position
    "allowed_keys",  # how many keys the mask let this query attend to
]
ROW_STATS: tuple[str, ...] = get_args(RowStatName)
# What statistics mode records by default: all but Gini, whose per-row sort dominates the cost.
STREAMING_STATS: tuple[str, ...] = tuple(s for s in ROW_STATS if s != "gini")

SPARSITY_THRESHOLD = 0.01
EFFECTIVE_THRESHOLD = 0.1


def check_stat_names(names: Iterable[str] | str | None, default: tuple[str, ...] = STREAMING_STATS) -> tuple[str, ...]:
    """Validated statistic names in canonical order; None = ``default``, ``"all"`` = every statistic."""
    if names is None:
        return default
    if isinstance(names, str):
        names = ROW_STATS if names == "all" else [n.strip() for n in names.split(",") if n.strip()]
    names = list(names)
    for n in names:
        if n not in ROW_STATS:
            raise UnknownNameError("statistic", n, list(ROW_STATS))
    if not names:
        raise UnknownNameError("statistic", "", list(ROW_STATS))
    return tuple(s for s in ROW_STATS if s in names)


def _n_allowed(allowed: torch.Tensor | None, shape: torch.Size, device) -> torch.Tensor:
    """(..., Nq) float count of allowed keys per row; shape is the full (..., Nq, Nk) shape."""
    if allowed is None:
        return torch.full(shape[:-1], shape[-1], dtype=torch.float32, device=device)
    return allowed.sum(-1, dtype=torch.float32).expand(shape[:-1])  # sum on the broadcast shape, then expand


def _gini(probs: torch.Tensor, n_allowed: torch.Tensor) -> torch.Tensor:
    """Gini coefficient of rows (..., Nk) over their n_allowed non-masked keys (masked keys hold 0).

    With the row in ascending order and ranks r = 1..n over the allowed keys, G = Σ (2r - n - 1) p_(r) /
    (n Σ p) (Gini 1912; the mean-difference form of Damgaard & Weiner 2000). The masked zeros sort first,
    so the sorted column j = 1..Nk has rank r = j - (Nk - n) and 2r - n - 1 = (2 (j - Nk) - 1) + n:
    n Σ p G = Σ_j c_j p_(j) + n Σ p with the same weights c_j = 2 (j - Nk) - 1 for every row, one
    matrix-vector product. The nonzero weights sit in the last n columns, where |c_j| < 2n, so both
    terms are of the row's own size n and float32 keeps ~1e-7 relative precision even for a row with
    2 allowed keys out of 8,192 (the form Σ j p_(j) - (Nk - n) Σ p cancels two terms of size Nk).
    Dividing by Σ p keeps float16-rounded rows in range; the result is clipped to [0, 1].
    The sort is numpy's on CPU (its SIMD sort is an order of magnitude faster than torch.sort there).
    """
    nk = probs.shape[-1]
    if probs.device.type == "cpu":
        ascending = torch.from_numpy(np.sort(probs.detach().float().numpy(), axis=-1))  # (..., Nq, Nk)
    else:
        ascending = probs.float().sort(-1).values
    c = torch.arange(1 - 2 * nk, 0, 2, dtype=torch.float32, device=probs.device)  # (Nk,): 2 (j - Nk) - 1
    weighted = ascending @ c  # (..., Nq)
    total = ascending.sum(-1)  # (..., Nq): 1, or 0 for a row with no allowed key
    n = n_allowed.to(weighted.dtype)
    g = (weighted + n * total) / (n * total).clamp(min=torch.finfo(torch.float32).tiny)
    return g.clamp(0.0, 1.0)


def _distances(query_positions: torch.Tensor, nk: int, key_offset: int, device) -> torch.Tensor:
    """(Nq, Nk) |i - j| between each query's absolute position and each key's."""
    key_pos = torch.arange(nk, device=device, dtype=torch.float32) + key_offset
    return (query_positions.to(device, torch.float32)[:, None] - key_pos[None, :]).abs()


def _probability_stats(probs: torch.Tensor, n_allowed: torch.Tensor, query_positions: torch.Tensor, key_offset: int,
                       names: tuple[str, ...], buffer) -> dict[str, torch.Tensor]:
    """Every statistic except entropy from probabilities (..., Nq, Nk); ``buffer(name, dtype)`` gives a
    reusable block-sized output tensor or None."""
    nk = probs.shape[-1]
    max_w, argmax = probs.max(-1)  # (..., Nq)
    out: dict[str, torch.Tensor] = {"max": max_w, "argmax": argmax + key_offset}
    if "sparsity" in names:
        below = torch.lt(probs, SPARSITY_THRESHOLD, out=buffer("compare", torch.bool))  # masked keys (p = 0) too...
        below = below.sum(-1, dtype=torch.int32).float()
        out["sparsity"] = (below - (nk - n_allowed)) / n_allowed.clamp(min=1)  # ...removed again
    if "gini" in names:
        out["gini"] = _gini(probs, n_allowed)
    if "effective_positions" in names:
        above = torch.gt(probs, EFFECTIVE_THRESHOLD, out=buffer("compare", torch.bool))
        out["effective_positions"] = above.sum(-1, dtype=torch.int32).float()
    if "first_token_mass" in names:  # a copy: a view would keep the whole block alive
        out["first_token_mass"] = probs[..., 0].clone() if key_offset == 0 else max_w.new_zeros(max_w.shape)
    if "mean_distance" in names:
        distances = _distances(query_positions, nk, key_offset, probs.device)  # (Nq, Nk)
        out["mean_distance"] = torch.mul(probs, distances, out=buffer("product")).sum(-1)
    out["allowed_keys"] = n_allowed.long()
    return out


def _no_buffer(name: str, dtype: torch.dtype = torch.float32) -> None:
    return None


def row_statistics(
    probs: torch.Tensor,
    allowed: torch.Tensor | None,
    query_positions: torch.Tensor,
    key_offset: int = 0,
    names: Iterable[str] | str | None = ROW_STATS,
) -> dict[str, torch.Tensor]:
    """Statistics of attention rows given as probabilities.

    probs: (..., Nq, Nk) rows summing to 1 over allowed keys (masked keys hold exactly 0).
    allowed: bool broadcastable to probs, True where the query may attend to the key; None = all.
    query_positions: (Nq,) absolute position of each query row (for distances and causal offsets).
    key_offset: absolute position of key column 0. names: which statistics (default all).
    Returns a dict name -> tensor of shape probs.shape[:-1], float32 (argmax/allowed_keys: int64).
    """
    names = check_stat_names(names, ROW_STATS)
    probs = probs.float()
    n_allowed = _n_allowed(allowed, probs.shape, probs.device)  # (..., Nq)
    out = _probability_stats(probs, n_allowed, query_positions, key_offset, names, _no_buffer)
    if "entropy" in names:
        out["entropy"] = -torch.special.xlogy(probs, probs).sum(-1)
    return {k: out[k] for k in names}


@torch.no_grad()
def row_statistics_from_scores(
    scores: torch.Tensor,
    allowed: torch.Tensor | None,
    query_positions: torch.Tensor,
    key_offset: int = 0,
    names: Iterable[str] | str | None = STREAMING_STATS,
    probs: torch.Tensor | None = None,
    scratch=None,
) -> dict[str, torch.Tensor]:
    """The statistics of :func:`row_statistics` for ``p = softmax(scores)``, in fewer passes over the block.

    scores: (..., Nq, Nk) float32 pre-softmax scores with the mask applied as a large negative *finite*
    value (``torch.finfo(torch.float32).min``, not -inf); **overwritten** (it becomes ``s - max``).
    probs: ``softmax(scores)`` if the caller has it already (computed here otherwise). scratch: an
    ``attnscope.capture.recorders.Scratch`` whose buffers hold the block-sized temporaries (optional).
    Uses ``max p = 1 / Z`` and ``log p = (s - m) - log Z``, so entropy is ``-log(max p) - Σ p (s - m)``
    (no logarithm per element). Rows with no allowed key give zeros, as ``row_statistics`` gives for an
    all-zero row.
    """
    names = check_stat_names(names)
    n_allowed = _n_allowed(allowed, scores.shape, scores.device)  # (..., Nq)
    if probs is None:
        probs = torch.softmax(scores, dim=-1)  # (..., Nq, Nk); masked keys underflow to exactly 0

    def buffer(name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
        return None if scratch is None else scratch.get(name, tuple(probs.shape), dtype, probs.device)

    out = _probability_stats(probs, n_allowed, query_positions, key_offset, names, buffer)
    if "entropy" in names:
        argmax = (out["argmax"] - key_offset)[..., None]  # (..., Nq, 1)
        t = scores.sub_(scores.gather(-1, argmax))  # (..., Nq, Nk): s - m <= 0 (masked: ~finfo.min)
        p_t = torch.mul(probs, t, out=buffer("product"))  # (..., Nq, Nk)
        out["entropy"] = -out["max"].log() - p_t.sum(-1)  # -Σ p log p, log p = t - log Z, max p = 1 / Z
    empty = n_allowed == 0
    if bool(empty.any()):  # no allowed key: the softmax above is uniform over masked keys; report zeros
        for k in out:
            if k not in ("argmax", "allowed_keys"):  # argmax of an all-masked row is already column 0
                out[k] = out[k].masked_fill(empty, 0)
    return {k: out[k] for k in names}


@torch.no_grad()
def row_statistics_from_lse(
    scores: torch.Tensor,
    lse: torch.Tensor,
    n_allowed: torch.Tensor,
    query_positions: torch.Tensor,
    key_offset: int = 0,
    names: Iterable[str] | str | None = STREAMING_STATS,
) -> dict[str, torch.Tensor]:
    """The statistics of :func:`row_statistics` for ``p = exp(scores - lse)``, given each row's ``lse``.

    scores: (..., Nq, Nk) float32 scaled scores, masked keys ``-inf``; lse: (..., Nq) ``log Σ exp(s)`` over
    the allowed keys (as flash-attention kernels return it); n_allowed: (..., Nq) allowed keys per row.
    The largest weight is ``exp(max s - lse)`` and ``p < t`` is ``s < lse + log t``, so max, argmax,
    sparsity and effective positions take no exponential; entropy, Gini, first-token mass and mean
    distance are computed from ``p`` (``capture/lse_stats.py`` takes the first and the mean distance of
    causal rows from the attention call itself). Rows with no allowed key are the caller's to zero.
    """
    names = check_stat_names(names, ROW_STATS)
    lse_col = lse[..., None]  # (..., Nq, 1)
    out: dict[str, torch.Tensor] = {}
    if "max" in names or "argmax" in names:
        m, argmax = scores.max(-1)  # (..., Nq): the first index of the maximum
        out["max"], out["argmax"] = torch.exp(m - lse), argmax + key_offset
    nk = scores.shape[-1]
    if "sparsity" in names:  # masked keys (-inf) count as below too, and are removed again
        below = (scores < lse_col + math.log(SPARSITY_THRESHOLD)).sum(-1, dtype=torch.int32).float()
        out["sparsity"] = (below - (nk - n_allowed)) / n_allowed.clamp(min=1)
    if "effective_positions" in names:
        out["effective_positions"] = (scores > lse_col + math.log(EFFECTIVE_THRESHOLD)).sum(-1, dtype=torch.int32).float()
    if any(n in names for n in ("entropy", "gini", "first_token_mass", "mean_distance")):
        probs = torch.exp(scores - lse_col)  # (..., Nq, Nk); masked keys exactly 0
        rest = tuple(n for n in names if n in ("gini", "first_token_mass", "mean_distance"))
        if rest:
            got = _probability_stats(probs, n_allowed, query_positions, key_offset, rest, _no_buffer)
            out.update({n: got[n] for n in rest})
        if "entropy" in names:
            out["entropy"] = -torch.special.xlogy(probs, probs).sum(-1)
    if "allowed_keys" in names:
        out["allowed_keys"] = n_allowed.long()
    return {k: out[k] for k in names}
