"""Attention captured step by step during generate (KV cache on) equals one forward over the result."""

import pytest
import torch

from attnscope.capture.api import _capture_encoded, resolve_selection
from attnscope.capture.generation import generate
from attnscope.testing import assert_trace_close

PROMPT = "the quick brown fox"


def _teacher_forced(lm, trace):
    ls, hs = resolve_selection(lm, None, None, None)
    if lm.kind == "causal":
        inputs = {"input_ids": torch.tensor([trace.tokens["input"].ids])}
        seqs = {"input": trace.tokens["input"]}
    else:
        enc = lm.tokenizer(PROMPT, return_tensors="pt")
        inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                  "decoder_input_ids": torch.tensor([trace.tokens["target"].ids])}
        seqs = {"source": trace.tokens["source"], "target": trace.tokens["target"]}
    return _capture_encoded(lm, inputs, seqs, trace.texts, {}, {"full"}, ls, hs, "fast", 8, torch.float32, 1 << 22, ())


@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral", "t5", "marian"])
def test_stepwise_equals_full_forward(tiny, family):
    lm = tiny(family)
    r = generate(lm, PROMPT, max_new_tokens=6, full_dtype=torch.float32)
    assert 1 <= len(r.token_ids) <= 6 and len(r.token_probs) == len(r.token_ids)  # may stop at EOS
    ref = _teacher_forced(lm, r.trace)
    for s in r.trace.streams:
        torch.testing.assert_close(r.trace.weights(s), ref.weights(s), atol=1e-5, rtol=0)
    assert r.trace.meta["prompt_length"] == r.prompt_length


def test_sampling_and_stats_mode(tiny):
    lm = tiny("llama")
    a = generate(lm, PROMPT, max_new_tokens=5, do_sample=True, seed=3, mode="stats")
    b = generate(lm, PROMPT, max_new_tokens=5, do_sample=True, seed=3, mode="stats")
    assert a.token_ids == b.token_ids  # seeded
    n = len(a.trace.tokens["input"])
    assert a.trace.row_stats()["entropy"].shape == (2, 4, n)
    assert (a.trace.row_stats()["allowed_keys"][0, 0] == torch.arange(1, n + 1)).all()


def test_encoder_cannot_generate(minilm):
    from attnscope.errors import InputError

    with pytest.raises(InputError, match="cannot generate"):
        generate(minilm, PROMPT)
