"""Fast path == eager reference (fp32, atol 1e-5), model outputs unchanged, masks respected."""

import warnings

import pytest
import torch

from attnscope.capture import capture, capture_batch
from attnscope.capture.api import _capture_encoded, attention_implementation, resolve_selection
from attnscope.testing import assert_trace_close

from _helpers import assert_traces_close

TEXT = "The quick brown fox jumps over the lazy dog, again and again."
TARGET = "A small target sentence."
ATOL = 1e-5


def _both(lm, **kw):
    kw = {"full_dtype": torch.float32, "mode": ["full", "stats", "topk"], "statistics": "all", **kw}
    return capture(lm, TEXT, **kw), capture(lm, TEXT, method="eager", **kw)


def test_stats_mode_default_statistics_leave_out_gini(minilm):
    fast = capture(minilm, TEXT, mode="stats")
    eager = capture(minilm, TEXT, mode="stats", method="eager")
    maps = capture(minilm, TEXT, mode="full", method="eager", full_dtype=torch.float32)
    assert "gini" not in fast.row_stats() and "entropy" in fast.row_stats()
    assert_traces_close(fast, eager, atol=ATOL, probs=maps)
    only = capture(minilm, TEXT, mode="stats", statistics=["gini", "max"])
    assert list(only.row_stats()) == ["max", "gini"]
    full = capture(minilm, TEXT, mode="full", full_dtype=torch.float32)
    torch.testing.assert_close(only.row_stats()["gini"], full.row_stats()["gini"], atol=1e-5, rtol=1e-4)


def test_minilm_fast_equals_eager(minilm):
    fast, eager = _both(minilm)
    assert fast.meta["method"] == "fast" and eager.meta["method"] == "eager"
    assert fast.weights().shape == (6, 12, len(fast.tokens["input"]), len(fast.tokens["input"]))
    assert_traces_close(fast, eager, atol=ATOL)
    torch.testing.assert_close(fast.weights().sum(-1), torch.ones(6, 12, fast.weights().shape[2]))
    v, i = fast.topk()
    ve, ie = eager.topk()
    torch.testing.assert_close(v.float(), ve.float(), atol=1e-3, rtol=0)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "mistral", "t5", "marian"])
def test_tiny_families_fast_equals_eager(tiny, family):
    lm = tiny(family)
    kw = {"target": TARGET} if lm.kind == "seq2seq" else {}
    fast, eager = _both(lm, **kw)
    assert_traces_close(fast, eager, atol=ATOL)
    for s in fast.streams:
        w = fast.weights(s)
        nonempty = w.sum(-1) > 0
        torch.testing.assert_close(w.sum(-1)[nonempty], torch.ones_like(w.sum(-1)[nonempty]))
        if fast.meta["causal"][s]:
            assert w.triu(1).abs().max() == 0  # nothing attends to the future
    if family == "mistral":  # sliding window of 4: nothing further back than 3 tokens
        w = fast.weights()
        assert w.tril(-4).abs().max() == 0 and w.tril(-3).abs().max() > 0


@pytest.mark.parametrize("family", ["bert", "llama", "t5"])
def test_model_outputs_unchanged_bitwise(tiny, family):
    lm = tiny(family)
    enc = lm.tokenizer(TEXT, return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if lm.kind == "seq2seq":
        inputs["decoder_input_ids"] = lm.tokenizer(TARGET, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        plain = lm.model(**inputs)
    from attnscope.capture.interface import CaptureSession, annotate_model, register, session_scope
    from attnscope.capture.recorders import make_recorders

    register()
    annotate_model(lm.model)
    ls, hs = resolve_selection(lm, None, None, None)
    session = CaptureSession(recorders=make_recorders({"full", "stats"}, 4, torch.float32),
                             layers={s: set(v) for s, v in ls.items()}, heads=hs)
    with attention_implementation(lm.model, "attnscope"), session_scope(session), torch.no_grad():
        recorded = lm.model(**inputs)
    key = "logits" if hasattr(plain, "logits") and plain.logits is not None else "last_hidden_state"
    assert torch.equal(getattr(plain, key), getattr(recorded, key))
    assert session.calls > 0 and lm.model.config._attn_implementation == "sdpa"  # restored


def test_partial_selection_and_block_size(minilm):
    full = capture(minilm, TEXT, full_dtype=torch.float32)
    part = capture(minilm, TEXT, layers=[1, 4], heads=[0, 11], full_dtype=torch.float32, block_elements=64)
    assert part.layers["self"] == [1, 4] and part.heads["self"] == [0, 11]
    assert_traces_close(part, full.sel(layer=[1, 4], head=[0, 11]), atol=1e-6)


def test_batched_equals_one_by_one(tiny, minilm):
    texts = ["short one", TEXT, "a medium length sentence about attention heads", "x"]
    for lm in (minilm, tiny("llama")):
        batched = capture_batch(lm, texts, batch_size=3, mode=["full", "stats"], full_dtype=torch.float32)
        for t, b in zip(texts, batched):
            single = capture(lm, t, mode=["full", "stats"], full_dtype=torch.float32)
            assert_traces_close(single, b, atol=ATOL)


def test_speech_encoder_decoder_tiny_whisper():
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.WhisperConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                           decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=8,
                           max_source_positions=16, max_target_positions=32, decoder_start_token_id=1,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2)
    from attnscope.models import wrap_model
    from attnscope.trace import Tokens

    lm = wrap_model(tf.WhisperForConditionalGeneration(cfg), tokenizer=None, name="tiny-whisper")
    inputs = {"input_features": torch.randn(1, 8, 32), "decoder_input_ids": torch.tensor([[1, 5, 7, 9]])}
    seqs = {"source": Tokens([f"f{i}" for i in range(16)]), "target": Tokens(["a", "b", "c", "d"])}
    ls, hs = resolve_selection(lm, None, None, None)
    args = ({"full"}, ls, hs)
    fast = _capture_encoded(lm, inputs, seqs, {}, {}, *args, "fast", 4, torch.float32, 1 << 22, ())
    eager = _capture_encoded(lm, inputs, seqs, {}, {}, *args, "eager", 4, torch.float32, 1 << 22, ())
    assert fast.streams == ["encoder_self", "decoder_self", "cross"]
    assert_trace_close(fast, eager, atol=ATOL)


def test_model_without_interface_falls_back_to_eager_with_warning(tiny, monkeypatch):
    import attnscope.capture.api as api

    lm = tiny("bert")
    monkeypatch.setattr(api, "supports_interface", lambda model: False)
    with pytest.warns(UserWarning, match="falling back to the eager reference"):
        t = capture(lm, TEXT, full_dtype=torch.float32)
    assert t.meta["method"] == "eager"


def test_no_interface_and_no_eager_is_a_clear_error(tiny):
    from attnscope.errors import CaptureError

    lm = tiny("bert")
    type(lm.model)._can_set_attn_implementation_cached_value = False  # cannot switch to eager either
    try:
        with pytest.warns(UserWarning), pytest.raises(CaptureError, match="returned no attention probabilities"):
            capture(lm, TEXT)
    finally:
        type(lm.model)._can_set_attn_implementation_cached_value = True


@pytest.mark.parametrize("rows", [slice(0, 7), slice(2, 5), slice(6, 7)])
def test_causal_block_without_mask_equals_hand_softmax_and_its_gradients(rows):
    """Implicit causal masking, no mask tensor (how SDPA models run unpadded): a block of query rows skips the
    keys after its last row; probabilities and their gradients equal softmax of q kᵀ masked by hand."""
    from attnscope.capture.interface import attention_probs_block

    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 7, 4, generator=g, requires_grad=True)  # (B, H, N, D)
    k = torch.randn(1, 2, 7, 4, generator=g, requires_grad=True)
    w = torch.randn(1, 2, rows.stop - rows.start, 7, generator=g)  # weights of a scalar to differentiate
    probs, allowed = attention_probs_block(q, k, None, 0.5, True, rows, torch.arange(2))
    (probs * w).sum().backward()
    got = (probs.detach(), q.grad.clone(), k.grad.clone())
    q.grad = k.grad = None
    scores = (q @ k.transpose(-1, -2)) * 0.5  # (B, H, N, N)
    keep = torch.ones(7, 7, dtype=torch.bool).tril()
    ref = torch.softmax(scores.masked_fill(~keep, float("-inf")), -1)[:, :, rows]
    (ref * w).sum().backward()
    torch.testing.assert_close(got[0], ref.detach())
    torch.testing.assert_close(got[1], q.grad)
    torch.testing.assert_close(got[2], k.grad)
    assert torch.equal(allowed[0, 0], keep[rows])
