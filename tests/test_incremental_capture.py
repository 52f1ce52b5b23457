"""Incremental capture (decoders): appending text computes only the new rows and equals a capture of the
whole text, and transformers' own eager attention over the whole text."""

from __future__ import annotations

import pytest
import torch

import attnscope
from attnscope.capture import interface
from attnscope.errors import InputError
from attnscope.testing import assert_trace_close

PARTS = ["the quick brown", " fox jumps", " over the lazy dog"]
MODES = ["full", "stats", "topk"]
STATS = ["entropy", "max", "first_token_mass", "mean_distance", "allowed_keys"]  # float statistics (counts jump at thresholds; see assert_trace_close)


def _eager(lm, trace) -> torch.Tensor:
    """transformers' eager attention (output_attentions) over the trace's tokens: (L, H, N, N)."""
    ids = torch.tensor([trace.tokens["input"].ids])  # (1, N)
    previous = lm.model.config._attn_implementation
    lm.model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = lm.model(input_ids=ids, output_attentions=True, use_cache=False)
    finally:
        lm.model.set_attn_implementation(previous)
    return torch.stack([a[0] for a in out.attentions]).float()  # (L, H, N, N)


@pytest.fixture
def rows_spy(monkeypatch):
    """Query rows the fast path records per attention call."""
    seen: list[int] = []
    original = interface._record

    def spy(session, site, query, *args):
        seen.append(query.shape[2])
        return original(session, site, query, *args)

    monkeypatch.setattr(interface, "_record", spy)
    return seen


@pytest.mark.parametrize("family", ["llama", "mistral"])  # mistral: a sliding-window cache that cannot be cropped
def test_extend_equals_whole_capture_and_eager(tiny, family, rows_spy):
    lm = tiny(family)
    state = attnscope.capture.incremental(lm, PARTS[0], mode=MODES, full_dtype=torch.float32)
    text = PARTS[0]
    for more in PARTS[1:]:
        n_before = len(state.trace.tokens["input"])
        rows_spy.clear()
        state = attnscope.capture.extend(state, more)
        text += more
        n = len(state.trace.tokens["input"])
        # the tiny models use a BERT tokenizer: the old trailing [SEP] row is recomputed, the rest reused
        assert state.computed_rows == n - (n_before - 1) and state.trace.meta["incremental"]["reused_rows"] == n_before - 1
        assert rows_spy and set(rows_spy) == {state.computed_rows}  # only the new rows, in every recorded layer
        fresh = attnscope.capture(lm, text, mode=MODES, full_dtype=torch.float32)
        assert_trace_close(state.trace, fresh, stats=STATS)
        assert state.trace.texts["input"] == text
        torch.testing.assert_close(state.trace.weights(), _eager(lm, fresh), atol=1e-5, rtol=0)
        v, i = state.trace.topk()  # (L, H, N, k); the largest weights of each row, where they are > 0
        w = _eager(lm, fresh)
        torch.testing.assert_close(v.float(), w.topk(v.shape[-1], dim=-1).values.half().float(), atol=1e-3, rtol=0)


def test_extend_a_saved_trace_and_a_spent_state(tiny, tmp_path):
    lm = tiny("llama")
    whole = PARTS[0] + PARTS[1]
    base = attnscope.capture(lm, PARTS[0], layers=[1], heads=[0, 3], mode=["full", "stats"])
    path = base.save(tmp_path / "t.safetensors")
    loaded = attnscope.AttentionTrace.load(path)
    grown = attnscope.capture.extend(loaded, PARTS[1], model=lm)  # cache rebuilt; layer/head selection kept
    fresh = attnscope.capture(lm, whole, layers=[1], heads=[0, 3], mode=["full", "stats"])
    assert_trace_close(grown.trace, fresh, atol=2e-3, stats=STATS)  # float16 maps, as saved
    again = attnscope.capture.extend(grown, PARTS[2])
    assert grown.cache is None  # handed on; extending the spent state recomputes its prefix instead
    other = attnscope.capture.extend(grown, PARTS[2])
    assert_trace_close(again.trace, other.trace, atol=1e-6, stats=STATS)


def test_refusals(tiny, minilm):
    with pytest.raises(InputError, match="encoder.*full recompute"):
        attnscope.capture.incremental(minilm, "The cat")
    with pytest.raises(InputError, match="full recompute"):
        attnscope.capture.extend(attnscope.capture(minilm, "The cat", layers=[0]), " sat.")
    lm = tiny("llama")
    gen = attnscope.generate(lm, "the cat", max_new_tokens=2, layers=[0])
    with pytest.raises(InputError, match="cannot be extended"):
        attnscope.capture.extend(gen.trace, " more", model=lm)
    state = attnscope.capture.incremental(lm, "the cat", layers=[0])
    with pytest.raises(InputError, match="non-empty string"):
        attnscope.capture.extend(state, "")
    with pytest.raises(InputError, match="captured with"):
        attnscope.capture.extend(state.trace, " more", model=tiny("gpt2"))


@pytest.mark.slow
def test_smollm2_extend_equals_eager():
    from attnscope.models import CATALOGUE, load_model

    if not CATALOGUE["smollm2"].ready():
        pytest.skip("SmolLM2 is not prepared (attnscope prepare smollm2)")
    lm = load_model("smollm2")
    state = attnscope.capture.incremental(lm, "The capital of France", layers=[0, 29], full_dtype=torch.float32)
    state = attnscope.capture.extend(state, " is Paris, and")
    fresh = attnscope.capture(lm, "The capital of France is Paris, and", layers=[0, 29], full_dtype=torch.float32)
    assert state.computed_rows < len(fresh.tokens["input"])
    assert_trace_close(state.trace, fresh, atol=1e-5)
    torch.testing.assert_close(state.trace.weights(), _eager(lm, fresh)[[0, 29]], atol=1e-5, rtol=0)
