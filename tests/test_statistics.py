"""The two statistics entry points (from probabilities, from masked scores) agree, and name selection works."""

from __future__ import annotations

import pytest
import torch

from _helpers import assert_stats_close
from attnscope.errors import UnknownNameError
from attnscope.statistics import (ROW_STATS, STREAMING_STATS, check_stat_names, row_statistics,
                                  row_statistics_from_scores)

NEG = torch.finfo(torch.float32).min


def _case(seed: int, nq: int = 7, nk: int = 11):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(2, 3, nq, nk, generator=g) * 3  # (B, H, Nq, Nk)
    allowed = torch.rand(2, 1, nq, nk, generator=g) > 0.3  # (B, 1, Nq, Nk): a ragged mask
    allowed[1, 0, 2] = False  # one fully masked row
    allowed[0, 0, :, 0] = True
    return scores, allowed


@pytest.mark.parametrize("key_offset", [0, 5])
def test_scores_path_equals_probability_path(key_offset):
    scores, allowed = _case(0)
    qpos = torch.arange(scores.shape[2]) + 9
    probs = torch.nan_to_num(torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1), nan=0.0)
    ref = row_statistics(probs, allowed, qpos, key_offset)
    got = row_statistics_from_scores(scores.masked_fill(~allowed, NEG), allowed, qpos, key_offset, "all")
    assert list(got) == list(ROW_STATS)
    n_allowed = allowed.expand(probs.shape).sum(-1)
    assert_stats_close(got, ref, probs, n_allowed, atol=2e-6, rtol=1e-5, key_offset=key_offset)
    assert got["entropy"][1, :, 2].eq(0).all() and got["allowed_keys"][1, :, 2].eq(0).all()  # fully masked row


def test_scores_path_known_row():
    # weights 1/2, 1/4, 1/4 -> entropy 1.5 ln 2, max 1/2, Gini (2*3-3-1)/3*1/2 + ... computed by hand below
    scores = torch.log(torch.tensor([[[[0.5, 0.25, 0.25]]]]))  # (1, 1, 1, 3)
    st = row_statistics_from_scores(scores.clone(), None, torch.tensor([2]), names="all")
    assert st["entropy"].item() == pytest.approx(1.5 * torch.log(torch.tensor(2.0)).item(), abs=1e-6)
    assert st["max"].item() == pytest.approx(0.5, abs=1e-7) and st["argmax"].item() == 0
    # ascending 1/4, 1/4, 1/2 with ranks 1..3: G = ((2-4)/4 + (4-4)/4 + (6-4)/2) / 3 = 1/6
    assert st["gini"].item() == pytest.approx(1 / 6, abs=1e-6)
    assert st["mean_distance"].item() == pytest.approx(0.5 * 2 + 0.25 * 1 + 0, abs=1e-6)
    assert st["effective_positions"].item() == 3 and st["sparsity"].item() == 0


def test_scores_path_leaves_no_trace_of_masked_keys():
    scores, allowed = _case(1)
    base = scores.masked_fill(~allowed, NEG)
    shifted = torch.where(allowed, scores, torch.full_like(scores, -1e30))  # another masked value, same result
    a = row_statistics_from_scores(base.clone(), allowed, torch.arange(7))
    b = row_statistics_from_scores(shifted.clone(), allowed, torch.arange(7))
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)


def test_stat_name_selection():
    assert check_stat_names(None) == STREAMING_STATS and "gini" not in STREAMING_STATS
    assert check_stat_names("all") == ROW_STATS
    assert check_stat_names("max, entropy") == ("entropy", "max")
    with pytest.raises(UnknownNameError, match="valid statistics"):
        check_stat_names(["entropy", "ginny"])
    scores, allowed = _case(2)
    st = row_statistics(torch.softmax(scores, -1), None, torch.arange(7), names=["gini"])
    assert list(st) == ["gini"]


def test_statistics_own_their_memory():
    """No statistic may be a view into the (B, h, bq, Nk) block: a recorder keeps every block's statistics,
    and a view would keep every block's map alive (O(N^2) memory at long context)."""
    scores, allowed = _case(3)
    allowed = allowed | torch.eye(7, 11, dtype=torch.bool)  # no fully masked row (those are copied anyway)
    for st in (row_statistics(torch.softmax(scores, -1), allowed, torch.arange(7)),
               row_statistics_from_scores(scores.masked_fill(~allowed, NEG), allowed, torch.arange(7), names="all")):
        for k, v in st.items():
            assert v.untyped_storage().nbytes() == v.numel() * v.element_size(), k


def test_count_check_tolerates_only_rounding_at_a_threshold():
    """The tests' count check: a weight within rounding of 0.1 may count either way, a clear one may not."""
    from _helpers import assert_count_within_rounding

    probs = torch.tensor([[0.1 + 3e-8, 0.5, 0.4 - 3e-8, 0.0]])  # (1, 4): key 3 masked
    n_allowed = torch.tensor([3])
    for count in (2.0, 3.0):
        assert_count_within_rounding("effective_positions", torch.tensor([count]), probs, n_allowed)
    with pytest.raises(AssertionError, match="outside"):
        assert_count_within_rounding("effective_positions", torch.tensor([1.0]), probs, n_allowed)
    assert_count_within_rounding("sparsity", torch.tensor([0.0]), probs, n_allowed)  # the masked key is not counted
    with pytest.raises(AssertionError, match="outside"):
        assert_count_within_rounding("sparsity", torch.tensor([1 / 3]), probs, n_allowed)


def _gini_float64(row) -> float:
    """Independent reference: Gini of the allowed weights in float64, G = Σ (2r - n - 1) x_(r) / (n Σ x)."""
    import numpy as np

    x = np.sort(np.asarray(row, dtype=np.float64))
    n = len(x)
    r = np.arange(1, n + 1)
    return float(((2 * r - n - 1) * x).sum() / (n * x.sum()))


def _causal_rows(n: int, rows: list[int], seed: int = 0):
    """Rows of a causal attention map over n keys: (len(rows), n) float32 probabilities and the mask."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(len(rows), n, generator=g) * 3
    allowed = torch.arange(n)[None, :] <= torch.tensor(rows)[:, None]  # query i sees keys 0..i
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1)
    return probs, allowed


def test_gini_long_causal_rows_against_float64():
    """At N = 8,192 the first rows have 2-4 allowed keys among 8,192 columns: Gini within 1e-6 of float64."""
    n = 8192
    rows = [1, 2, 3, 4, 7, 100, 4095, 8191]
    probs, allowed = _causal_rows(n, rows)
    got = row_statistics(probs[None], allowed[None], torch.tensor(rows), names=["gini"])["gini"][0]
    want = torch.tensor([_gini_float64(probs[i, : r + 1].numpy()) for i, r in enumerate(rows)], dtype=torch.float64)
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=0)


def test_gini_of_rounded_rows_stays_in_range():
    """A float16-stored row does not sum to exactly 1: Gini is still that of the weights, within [0, 1]."""
    row = torch.tensor([[[0.0, 0.0, 0.0, 1.0]]], dtype=torch.float16) * 1.001  # one key, rounded above 1
    st = row_statistics(row, None, torch.tensor([3]), names=["gini"])
    assert 0.0 <= st["gini"].item() <= 1.0
    assert st["gini"].item() == pytest.approx(_gini_float64(row[0, 0].float().numpy()), abs=1e-6)


def test_head_roles_of_a_float16_trace_stay_in_zero_one():
    """Rows stored in float16 sum to 1.0002 here; every role score stays in its documented [0, 1]."""
    from attnscope import AttentionTrace, Tokens
    from attnscope.analysis import run_analysis

    w = torch.tensor([[0.1125, 0.7969, 0.0908], [0.1971, 0.1063, 0.6968], [0.2361, 0.5103, 0.2539]],
                     dtype=torch.float16)[None, None]  # (1, 1, 3, 3)
    assert float(w.float().sum(-1).min()) > 1.0  # the rounding this test is about
    words = ["[CLS]", "cat", "[SEP]"]
    t = AttentionTrace(tokens={"input": Tokens(words, [(0, 0), (0, 3), (0, 0)], [True, False, True], [101, 5, 102])},
                       layers={"self": [0]}, heads={"self": [0]}, weights={"self": w}, texts={"input": "cat"},
                       model_id="float16", meta={"causal": {"self": False}, "model_kind": "encoder"})
    roles = run_analysis("head_roles", t, window=2)
    for name in ("local", "previous_token", "first_token", "self", "broad", "delimiter", "induction"):
        assert 0.0 <= float(roles[name].min()) and float(roles[name].max()) <= 1.0, name
    assert float(roles["local"][0, 0]) == pytest.approx(1.0, abs=1e-3)  # every key is within the window
