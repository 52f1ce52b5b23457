"""Test helpers: compare attention statistics the way their definitions allow.

Counts of weights past a threshold (sparsity: weights < 0.01; effective positions: weights > 0.1) jump
by one when a weight crosses the threshold, and argmax jumps between two near-equal weights. Two
correct computations of the same probabilities (another CPU's vector width, another thread count, the
fused kernel against eager) may round a weight that lies within float rounding of a threshold to
either side. These statistics are therefore checked against reference probabilities: a count must lie
between the counts with the threshold moved by -COUNT_EPS and +COUNT_EPS, an argmax must point at a
weight within COUNT_EPS of the row's maximum. Every other statistic is continuous and compared with a
tolerance, never exactly.
"""

from __future__ import annotations

import torch

from attnscope.statistics import ROW_STATS
from attnscope.testing import assert_trace_close

# The documented definitions, written here independently of attnscope.statistics.
SPARSITY_THRESHOLD = 0.01  # sparsity: fraction of the allowed keys with weight < 0.01
EFFECTIVE_THRESHOLD = 0.1  # effective_positions: number of keys with weight > 0.1
# A weight this close to a threshold may land on either side: the tolerance the tests give weights.
COUNT_EPS = 1e-5
COUNT_STATS = ("sparsity", "effective_positions")
DISCONTINUOUS = (*COUNT_STATS, "argmax")
CONTINUOUS = tuple(s for s in ROW_STATS if s not in DISCONTINUOUS)


def count_bounds(name: str, probs: torch.Tensor, n_allowed: torch.Tensor,
                 eps: float = COUNT_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) that statistic ``name`` may take for reference probabilities (..., Nk) (masked keys 0)
    with n_allowed (...) allowed keys per row, when any weight within eps of the threshold may round to
    either side."""
    p = probs.double()
    if name == "sparsity":  # masked keys (p = 0) are below both thresholds: removed from both counts
        masked = p.shape[-1] - n_allowed.double()
        n = n_allowed.double().clamp(min=1)
        below = [((p < SPARSITY_THRESHOLD + d).sum(-1) - masked) / n for d in (-eps, eps)]
        return below[0], below[1]
    if name == "effective_positions":
        return (p > EFFECTIVE_THRESHOLD + eps).sum(-1).double(), (p > EFFECTIVE_THRESHOLD - eps).sum(-1).double()
    raise ValueError(f"{name!r} is not a count statistic")


def _first_bad(bad: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.nonzero(bad)[0])


def assert_count_within_rounding(name: str, got: torch.Tensor, probs: torch.Tensor, n_allowed: torch.Tensor,
                                 eps: float = COUNT_EPS, msg: str = "") -> None:
    """``got`` (...) equals the count of ``probs`` (..., Nk) up to weights within eps of the threshold."""
    lo, hi = count_bounds(name, probs, n_allowed, eps)
    g = got.double()
    bad = (g < lo - 1e-6) | (g > hi + 1e-6)  # 1e-6: sparsity is a float32 fraction
    if bool(bad.any()):
        i = _first_bad(bad)
        raise AssertionError(f"{msg}{name} = {g[i].item():.6g} at {i}, outside [{lo[i].item():.6g}, "
                             f"{hi[i].item():.6g}] (the reference count with the threshold moved by ±{eps:g}); "
                             f"{int(bad.sum())} rows off")


def assert_argmax_within_rounding(got: torch.Tensor, probs: torch.Tensor, key_offset: int = 0,
                                  eps: float = COUNT_EPS, msg: str = "") -> None:
    """``got`` (...) points at a weight of ``probs`` (..., Nk) within eps of its row's maximum."""
    p = probs.double()
    col = got.long() - key_offset
    if bool(((col < 0) | (col >= p.shape[-1])).any()):
        raise AssertionError(f"{msg}argmax outside the key columns at {_first_bad((col < 0) | (col >= p.shape[-1]))}")
    picked = p.gather(-1, col[..., None])[..., 0]
    bad = picked < p.max(-1).values - eps
    if bool(bad.any()):
        i = _first_bad(bad)
        raise AssertionError(f"{msg}argmax {int(got[i])} at {i} has weight {picked[i].item():.6g}, the row's "
                             f"maximum is {p.max(-1).values[i].item():.6g}")


def assert_stats_close(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], probs: torch.Tensor,
                       n_allowed: torch.Tensor, atol: float, rtol: float, key_offset: int = 0,
                       msg: str = "") -> None:
    """Row statistics ``got`` against ``ref`` (name -> (..., Nq)): continuous ones within atol/rtol, the
    counts and argmax against the reference probabilities (..., Nq, Nk) with n_allowed (..., Nq) keys."""
    assert set(got) == set(ref), f"{msg}statistics differ: {sorted(got)} vs {sorted(ref)}"
    for name, v in got.items():
        if name in COUNT_STATS:
            assert_count_within_rounding(name, v, probs, n_allowed, msg=msg)
        elif name == "argmax":
            assert_argmax_within_rounding(v, probs, key_offset, msg=msg)
        else:
            torch.testing.assert_close(v.to(ref[name].dtype), ref[name], atol=atol, rtol=rtol, msg=f"{msg}{name}")


def assert_traces_close(got, ref, atol: float = 1e-5, rtol: float = 0.0, probs=None) -> None:
    """``attnscope.testing.assert_trace_close`` for structure, maps and continuous statistics; counts and
    argmax checked against the full float32 maps of ``probs`` (a trace; default ``ref``)."""
    assert_trace_close(got, ref, atol=atol, rtol=rtol, stats=CONTINUOUS)
    maps = ref if probs is None else probs
    for s in got.streams:
        if not got.has("stats", s):
            continue
        st_got, st_ref = got.row_stats(s), ref.row_stats(s)
        p = maps.weights(s, torch.float32)  # (L, H, Nq, Nk)
        assert p.shape[:-1] == next(iter(st_got.values())).shape, f"{s}: reference maps cover other rows"
        n_allowed = (st_ref if "allowed_keys" in st_ref else maps.row_stats(s))["allowed_keys"]
        for name in DISCONTINUOUS:
            if name in st_got:
                if name == "argmax":
                    assert_argmax_within_rounding(st_got[name], p, msg=f"{s}: ")
                else:
                    assert_count_within_rounding(name, st_got[name], p, n_allowed, msg=f"{s}: ")


def head_count_bounds(name: str, maps, stream: str | None = None):
    """(low, high) numpy (layer, head) bounds of a count statistic's head mean (``head_stats()``, the
    corpus columns) from a trace with full float32 maps: the mean of the per-row bounds."""
    p = maps.weights(stream, torch.float32)  # (L, H, Nq, Nk)
    lo, hi = count_bounds(name, p, maps.row_stats(stream)["allowed_keys"])  # (L, H, Nq)
    return lo.mean(-1).numpy(), hi.mean(-1).numpy()
