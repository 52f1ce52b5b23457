"""Dialogue coherence (lookback share / uniform expectation) on constructed token attention with known
answers, and end to end on a tiny Llama with SmolLM2's chat template."""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest
import torch

from attnscope.tasks.dialogue import DialogueAttention, Turn, expected_lookback, pool_turns

# 10 tokens in 4 turns; token 0 is the sink
TOKEN_TURN = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
TURNS = [Turn(r, "", 0, 0) for r in ("system", "user", "assistant", "user")]
# uniform-attention lookback share by hand (sink excluded): a token at position p sees keys 1..p;
# turn 1 (positions 3, 4) has 2 earlier-turn keys, turn 2 (5-7) has 4, turn 3 (8, 9) has 7
EXPECTED = [0.0,
            float((F(2, 3) + F(2, 4)) / 2),
            float((F(4, 5) + F(4, 6) + F(4, 7)) / 3),
            float((F(7, 8) + F(7, 9)) / 2)]


def _dialogue(w: np.ndarray, exclude_sink: bool = True) -> DialogueAttention:
    values, sink = pool_turns(w, TOKEN_TURN, TURNS, exclude_sink)
    return DialogueAttention(TURNS, list(range(w.shape[0])), values, sink, TOKEN_TURN, "",
                             meta={"exclude_sink": exclude_sink})


def _rows(fill) -> np.ndarray:
    """(1, N, N): row p gets 0.4 on the sink and 0.6 spread by ``fill(p) -> key weights``."""
    n = len(TOKEN_TURN)
    w = np.zeros((1, n, n))
    w[0, 0, 0] = 1.0
    for p in range(1, n):
        keys = np.asarray(fill(p), float)
        w[0, p, 0] = 0.4
        w[0, p, : len(keys)] += 0.6 * keys / keys.sum()
    return w


def test_expected_lookback_by_hand():
    np.testing.assert_allclose(expected_lookback(TOKEN_TURN, 4), EXPECTED, atol=1e-12)
    # with the sink kept, position p sees keys 0..p and key 0 (turn 0) counts as an earlier turn for turns ≥ 1
    np.testing.assert_allclose(expected_lookback(TOKEN_TURN, 4, exclude_sink=False)[1], (3 / 4 + 3 / 5) / 2)


def test_uniform_reader_has_lift_one():
    def uniform(p):  # every visible non-sink key alike
        return [0.0] + [1.0] * p

    coh = _dialogue(_rows(uniform)).coherence()
    assert coh.scored == [1, 2, 3]
    np.testing.assert_allclose(coh.expected, EXPECTED, atol=1e-12)
    np.testing.assert_allclose(coh.lift[0, 1:], 1.0, atol=1e-12)
    assert coh.overall == pytest.approx(1.0) and np.isnan(coh.lift[0, 0])


def test_known_lifts():
    def own_turn(p):  # only the turn's own tokens (never the sink)
        return [0.0] + [1.0 if TOKEN_TURN[q] == TOKEN_TURN[p] else 0.0 for q in range(1, p + 1)]

    def earlier_only(p):  # only the first non-sink token of the previous turn
        prev = TOKEN_TURN[p] - 1
        first = next(q for q in range(1, len(TOKEN_TURN)) if TOKEN_TURN[q] == prev) if prev >= 0 else p
        return [1.0 if q == first else 0.0 for q in range(p + 1)]

    def half_and_half(p):
        a, b = np.asarray(own_turn(p)), np.asarray(earlier_only(p))
        return a / a.sum() + b / b.sum() if TOKEN_TURN[p] > 0 else a

    c_own = _dialogue(_rows(own_turn)).coherence()
    np.testing.assert_allclose(c_own.lift[0, 1:], 0.0, atol=1e-12)
    c_back = _dialogue(_rows(earlier_only)).coherence()
    np.testing.assert_allclose(c_back.lift[0, 1:], [1 / e for e in EXPECTED[1:]], atol=1e-12)
    assert c_back.overall == pytest.approx(np.mean([1 / e for e in EXPECTED[1:]]))
    c_half = _dialogue(_rows(half_and_half)).coherence()
    np.testing.assert_allclose(c_half.lift[0, 1:], [0.5 / e for e in EXPECTED[1:]], atol=1e-12)
    d = _dialogue(_rows(half_and_half))
    assert d.reads(3) == [(2, pytest.approx(1.0)), (0, 0.0), (1, 0.0)]


@pytest.fixture(scope="module")
def tiny_chat():
    import transformers as tf

    from attnscope.models import CATALOGUE, wrap_model

    path = CATALOGUE["smollm2"].model_dir()
    if path is None:
        pytest.skip("smollm2 not installed or not converted (its tokenizer and chat template are needed)")
    tok = tf.AutoTokenizer.from_pretrained(str(path))
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return wrap_model(tf.LlamaForCausalLM(cfg), tok, name="tiny-llama-chat")


def test_coherence_end_to_end(tiny_chat, tmp_path):
    from attnscope.tasks import plots
    from attnscope.tasks.dialogue import dialogue_attention

    msgs = [{"role": "user", "content": "Hi, I'm Ana and I live in Lisbon."},
            {"role": "assistant", "content": "Hello Ana! Lisbon is lovely."},
            {"role": "user", "content": "Which city do I live in?"}]
    d = dialogue_attention(tiny_chat, msgs)
    coh = d.coherence()
    w = d.trace.weights("self").double().numpy().mean(1)  # (L, N, N)
    tt = np.asarray(d.token_turn)
    for layer in range(2):
        for i in coh.scored:
            rows = np.flatnonzero(tt == i)
            # observed: per token, mass on earlier-turn keys among its non-sink mass
            obs = np.mean([w[layer, p, 1:][(tt[1:] < i)].sum() / w[layer, p, 1:].sum() for p in rows])
            exp = np.mean([((tt[1:p + 1] < i)).sum() / p for p in rows])
            assert coh.lift[layer, i] == pytest.approx(obs / exp, rel=1e-3)
    assert d.summary()["coherence"]["overall"] == pytest.approx(coh.overall, abs=1e-4)
    assert plots.plot_dialogue_flow(d, tmp_path / "flow.png").stat().st_size > 0
