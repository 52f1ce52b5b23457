"""Statistics mode's lse route (capture/lse_stats.py, statistics.row_statistics_from_lse) and the choice of
route per device (capture/fused.py).

References are computed here: softmax of the masked scores, then row_statistics on those probabilities
(the one definition of each statistic), and logsumexp for the attention call itself. The route is the
CUDA route; on this CPU it runs through the CPU flash kernel, so every line but the op call is tested.
"""

import math

import pytest
import torch

from attnscope.capture import capture, fused, lse_stats
from attnscope.statistics import ROW_STATS, STREAMING_STATS, row_statistics, row_statistics_from_lse
from _helpers import assert_stats_close, assert_traces_close

TEXT = "The animal didn't cross the street because it was too tired."


def _reference(q, k, v, allowed, qpos0=0, key_offset=0):
    """Output (B, Nq, H, Dv), row_statistics of the softmax probabilities, the probabilities, n_allowed.
    allowed: bool (B, 1|H, Nq, Nk), the full mask (causal limits included)."""
    B, H, nq, d = q.shape
    groups = H // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    scores = (q @ k.transpose(-1, -2)) * d ** -0.5  # (B, H, Nq, Nk)
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1).nan_to_num(0.0)
    st = row_statistics(probs, allowed, torch.arange(nq) + qpos0, key_offset, ROW_STATS)
    return (probs @ v).transpose(1, 2), st, probs, allowed.expand(B, H, -1, -1).sum(-1)


def _qkv(B=2, H=4, hkv=2, nq=11, nk=11, d=8, dv=8, seed=0, spread=3.0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, nq, d, generator=gen) * spread  # wide scores: weights from ~1 to underflow
    k = torch.randn(B, hkv, nk, d, generator=gen) * spread
    v = torch.randn(B, hkv, nk, dv, generator=gen)
    return q, k, v


def _check(q, k, v, mask, causal, allowed, qpos0=0, key_offset=0, names=ROW_STATS):
    out, st = lse_stats.lse_attention(q, k, v, mask, q.shape[-1] ** -0.5, causal, qpos0, key_offset, names)
    out_ref, st_ref, probs, n_allowed = _reference(q, k, v, allowed, qpos0, key_offset)
    torch.testing.assert_close(out, out_ref, atol=2e-5, rtol=1e-5)
    assert list(st) == list(names)
    assert all(st[n].dtype == (torch.int64 if n in ("argmax", "allowed_keys") else torch.float32) for n in names)
    assert_stats_close(st, {n: st_ref[n] for n in names}, probs, n_allowed, atol=5e-5, rtol=1e-5,
                       key_offset=key_offset)
    return st


@pytest.fixture
def passes(monkeypatch):
    """The statistics each call left to the pass over scores (the rest came from the one lse call)."""
    seen: list[tuple[str, ...]] = []
    real = lse_stats.row_statistics_from_lse

    def spy(scores, lse, n_allowed, qpos, key_offset, names):
        seen.append(tuple(names))
        return real(scores, lse, n_allowed, qpos, key_offset, names)

    monkeypatch.setattr(lse_stats, "row_statistics_from_lse", spy)
    return seen


def test_bidirectional_padding_mask_gqa(passes):
    q, k, v = _qkv(dv=6)
    mask = torch.ones(2, 1, 11, 11, dtype=torch.bool)
    mask[1, :, :, 7:] = False  # padding of text 1
    mask[0, 0, 4] = False  # a row with no allowed key: every statistic 0 (argmax: key column 0)
    st = _check(q, k, v, mask, False, mask)
    assert st["entropy"][0, :, 4].abs().max() == 0 and st["allowed_keys"][0, :, 4].abs().max() == 0
    # keys after the query are allowed: the mean distance needs the scores, the one call gives the rest
    assert set(passes[0]) == {"max", "argmax", "sparsity", "gini", "effective_positions", "mean_distance"}


def test_causal_gqa_mean_distance_from_the_one_call(passes):
    q, k, v = _qkv(B=1, H=6, hkv=3, nq=13, nk=13)
    allowed = torch.ones(13, 13, dtype=torch.bool).tril()[None, None]
    _check(q, k, v, None, True, allowed)
    assert "mean_distance" not in passes[0] and "entropy" not in passes[0]
    passes.clear()
    _check(q, k, v, None, True, allowed, names=lse_stats.LSE_STATS)  # what the call covers: no score pass
    assert passes == []


def test_sliding_window_band_and_cache_offset(passes):
    """A banded mask (sliding window of 4) over keys that start at position 5 (a rolled cache): queries at
    positions 9..14 see keys up to their own position."""
    q, k, v = _qkv(B=1, H=2, hkv=1, nq=6, nk=10)
    qpos0, key_offset = 9, 5
    qpos = torch.arange(6) + qpos0
    kpos = torch.arange(10) + key_offset
    band = (kpos[None, :] <= qpos[:, None]) & (kpos[None, :] > qpos[:, None] - 4)  # (Nq, Nk)
    mask = band[None, None]
    st = _check(q, k, v, mask, False, mask, qpos0=qpos0, key_offset=key_offset)
    assert "mean_distance" not in passes[0]  # no allowed key after its query
    assert st["first_token_mass"].abs().max() == 0  # key column 0 is position 5
    assert int(st["argmax"].min()) >= key_offset


def test_bfloat16_inputs_give_float32_statistics():
    q, k, v = (t.bfloat16() for t in _qkv(seed=2))
    allowed = torch.ones(11, 11, dtype=torch.bool).tril()[None, None]
    out, st = lse_stats.lse_attention(q, k, v, None, 8 ** -0.5, True, 0, 0, STREAMING_STATS)
    assert out.dtype == torch.bfloat16 and st["entropy"].dtype == torch.float32
    out_ref, st_ref, probs, n_allowed = _reference(q.float(), k.float(), v.float(), allowed)  # from the bf16 values
    torch.testing.assert_close(out.float(), out_ref, atol=2e-2, rtol=1e-2)  # the output rounded to bf16 once
    assert_stats_close(st, {n: st_ref[n] for n in STREAMING_STATS}, probs, n_allowed, atol=5e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_with_lse_ops_against_logsumexp(causal):
    """The device op (CPU flash kernel here) and the block-by-block fallback against softmax / logsumexp."""
    q, k, _ = _qkv(B=2, H=3, hkv=3, nq=9, nk=9, seed=4)
    v = torch.randn(2, 3, 9, 24)  # wider than q and k, as the augmented value is
    mask = torch.rand(2, 1, 9, 9, generator=torch.Generator().manual_seed(5)) > 0.3
    allowed = torch.ones(9, 9, dtype=torch.bool).tril()[None, None] if causal else mask
    bias = None if causal else torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    s = ((q @ k.transpose(-1, -2)) * 0.3).masked_fill(~allowed, float("-inf"))  # (B, H, Nq, Nk)
    has_key = allowed.expand(2, 3, 9, 9).any(-1)
    for fn in (lse_stats.attention_with_lse, lse_stats.math_attention_with_lse):
        out, lse = fn(q, k, v, bias, 0.3, causal)
        torch.testing.assert_close(lse[has_key], torch.logsumexp(s, -1)[has_key], atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(out, torch.softmax(s, -1).nan_to_num(0.0) @ v, atol=1e-5, rtol=1e-5)


def test_row_statistics_from_lse_thresholds_in_log_space():
    """p < t is s < lse + log t: weights just either side of both thresholds are counted as the
    probabilities are."""
    p = torch.tensor([[0.5, 0.2, 0.0999, 0.1001, 0.0101, 0.0099, 0.0800]])
    p = p / p.sum()
    s = p.log()  # lse = 0
    st = row_statistics_from_lse(s, torch.zeros(1), torch.full((1,), 7.0), torch.tensor([3]), 0, STREAMING_STATS)
    ref = row_statistics(p, None, torch.tensor([3]), 0, STREAMING_STATS)
    for n in STREAMING_STATS:
        torch.testing.assert_close(st[n].float(), ref[n].float(), atol=1e-6, rtol=1e-6, msg=n)
    assert math.isclose(float(st["sparsity"][0]), 1 / 7, rel_tol=1e-6) and float(st["effective_positions"][0]) == 3


def test_routes_cpu_takes_the_kernel_other_devices_the_lse_route(monkeypatch):
    assert fused.route(torch.device("cpu")) == "kernel"  # measured faster on a CPU (docs/benchmarks.md)
    assert fused.route(torch.device("cuda")) == "lse"  # no kernel there: the lse route
    monkeypatch.setattr(fused, "kernel", lambda: None)
    assert fused.route(torch.device("cpu")) is None  # a CPU without the kernel: the general path


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_capture_through_the_lse_route_equals_eager(tiny, monkeypatch, family):
    """Whole captures with the CPU sent down the lse route (as a GPU is): a padded batch with causal GQA
    (Llama), a sliding window (Mistral); each layer's output comes from the route, so later layers'
    statistics check it too. (Bidirectional padding: test_bidirectional_padding_mask_gqa.)"""
    from attnscope.capture import capture_batch

    lm = tiny(family)
    texts = [TEXT, "Short one."]
    maps = [capture(lm, t, mode="full", method="eager", full_dtype=torch.float32) for t in texts]
    eager = [capture(lm, t, mode="stats", statistics="all", method="eager") for t in texts]
    calls = []
    real = lse_stats.lse_attention
    monkeypatch.setitem(fused.ROUTES, "cpu", "lse")
    monkeypatch.setattr(lse_stats, "lse_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    fast = capture_batch(lm, texts, mode="stats", statistics="all")
    assert calls, "the lse route was not taken"
    for got, want, p in zip(fast, eager, maps):  # the batch was padded; each text against its own eager run
        assert_traces_close(got, want, atol=5e-5, rtol=1e-5, probs=p)
