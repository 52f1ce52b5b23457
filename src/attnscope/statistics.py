"""Per-query-row attention statistics: one definition shared by every capture path.

The fast path computes these block by block while the model runs (no map is kept); the eager
reference and stored traces compute them from full maps with the same function, so the two agree
by construction and the tests check it.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

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

SPARSITY_THRESHOLD = 0.01
EFFECTIVE_THRESHOLD = 0.1


def row_statistics(
    probs: torch.Tensor,
    allowed: torch.Tensor | None,
    query_positions: torch.Tensor,
    key_offset: int = 0,
) -> dict[str, torch.Tensor]:
    """Statistics of attention rows.

    probs: (..., Nq, Nk) rows summing to 1 over allowed keys (masked keys hold exactly 0).
    allowed: bool broadcastable to probs, True where the query may attend to the key; None = all.
    query_positions: (Nq,) absolute position of each query row (for distances and causal offsets).
    key_offset: absolute position of key column 0.
    Returns a dict name -> tensor of shape probs.shape[:-1], float32 (argmax/allowed_keys: int64).
    """
    probs = probs.float()
    nk = probs.shape[-1]
    if allowed is None:
        n_allowed = torch.full(probs.shape[:-1], nk, dtype=torch.float32, device=probs.device)
    else:
        n_allowed = allowed.expand(probs.shape).sum(-1).float()  # (..., Nq)
    max_w, argmax = probs.max(-1)  # (..., Nq)
    entropy = -torch.special.xlogy(probs, probs).sum(-1)
    below = (probs < SPARSITY_THRESHOLD).sum(-1).float()  # masked keys (p = 0) are counted here...
    below = below - (nk - n_allowed)  # ...and removed again: sparsity is over allowed keys only
    sparsity = below / n_allowed.clamp(min=1)
    effective = (probs > EFFECTIVE_THRESHOLD).sum(-1).float()
    # Gini over the allowed keys: masked keys are exact zeros and sort first, so the allowed ones
    # are the last n of the ascending order; rank r = 1..n among them.
    ascending, _ = probs.sort(-1)  # (..., Nq, Nk)
    rank = torch.arange(1, nk + 1, device=probs.device, dtype=torch.float32) - (nk - n_allowed)[..., None]
    rank = rank.clamp(min=0)  # zero weight for the masked (zero) entries
    n = n_allowed.clamp(min=1)
    gini = ((2 * rank - n[..., None] - 1) * ascending * (rank > 0)).sum(-1) / n  # rows sum to 1
    key_pos = torch.arange(nk, device=probs.device, dtype=torch.float32) + key_offset  # (Nk,)
    distance = (query_positions.to(probs.device, torch.float32)[:, None] - key_pos[None, :]).abs()  # (Nq, Nk)
    mean_distance = (probs * distance).sum(-1)
    first = probs[..., 0] if key_offset == 0 else torch.zeros_like(max_w)
    return {
        "entropy": entropy,
        "max": max_w,
        "argmax": argmax + key_offset,
        "sparsity": sparsity,
        "gini": gini,
        "effective_positions": effective,
        "first_token_mass": first,
        "mean_distance": mean_distance,
        "allowed_keys": n_allowed.long(),
    }
