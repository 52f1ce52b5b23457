"""Attention modules, the GRU seq2seq model, decoding and trace export (tiny configs, seconds)."""

from __future__ import annotations

import pytest
import torch

from attnscope import AttentionTrace
from attnscope.errors import InputError, UnknownNameError
from attnscope.seq2seq.attention import (
    ATTENTION_KINDS,
    BahdanauAttention,
    LuongAttention,
    MultiHeadAttention,
    MultiHeadSelfAttention,
    masked_softmax,
)
from attnscope.seq2seq.classifier import ClassifierConfig, SelfAttentionClassifier, classify_with_attention
from attnscope.seq2seq.data import BOS_ID, EOS_ID, Vocab
from attnscope.seq2seq.decode import beam_search, greedy_decode
from attnscope.seq2seq.export import translation_trace
from attnscope.seq2seq.model import Seq2Seq, Seq2SeqConfig, pad_batch


@pytest.fixture(autouse=True)
def _one_thread():  # noqa: ANN202
    """Tiny models run fastest on one thread (and the test machine is shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _memory(b: int = 3, s: int = 7, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mem = torch.randn(b, s, d, generator=g)
    q = torch.randn(b, d, generator=g)
    lengths = torch.tensor([s, 3, 1][:b])
    mask = torch.arange(s)[None] < lengths[:, None]  # (B, S)
    return q, mem, mask


@pytest.mark.parametrize("module", [
    BahdanauAttention(8, 8), LuongAttention(8, 8, "dot"), LuongAttention(8, 8, "general"),
    LuongAttention(8, 8, "concat"), MultiHeadAttention(8, 8, 8, heads=2),
], ids=["bahdanau", "dot", "general", "concat", "multihead"])
def test_attention_shapes_rows_and_padding(module: torch.nn.Module) -> None:
    q, mem, mask = _memory()
    ctx, w = module(q, mem, mask)
    heads = getattr(module, "heads", 1)
    assert ctx.shape == (3, module.context_dim)
    assert w.shape == ((3, 7) if heads == 1 and w.dim() == 2 else (3, heads, 7))
    w = w if w.dim() == 3 else w[:, None]
    torch.testing.assert_close(w.sum(-1), torch.ones(3, heads))
    assert torch.all(w.masked_select(~mask[:, None, :].expand_as(w)) == 0.0)  # exactly zero, not tiny
    assert torch.all(w[2, :, 0] == 1.0)  # one real key gets everything


def test_padding_values_do_not_leak_into_context() -> None:
    att = BahdanauAttention(8, 8)
    q, mem, mask = _memory()
    ctx, _ = att(q, mem, mask)
    mem2 = mem.clone()
    mem2[~mask] = 1e3  # garbage in the padding
    ctx2, _ = att(q, mem2, mask)
    torch.testing.assert_close(ctx, ctx2)


def test_masked_softmax_all_masked_row_is_zero() -> None:
    p = masked_softmax(torch.randn(2, 4), torch.tensor([[True, False, True, False], [False] * 4]))
    assert torch.all(p[1] == 0) and torch.isclose(p[0].sum(), torch.tensor(1.0))


def test_luong_dot_rejects_size_mismatch_and_unknown_score() -> None:
    with pytest.raises(InputError, match="dot"):
        LuongAttention(8, 6, "dot")
    with pytest.raises(UnknownNameError, match="general"):
        LuongAttention(8, 8, "cosine")


def test_multihead_self_attention_masks_causal_and_dropout() -> None:
    torch.manual_seed(0)
    mhsa = MultiHeadSelfAttention(16, heads=4, attn_dropout=0.3)
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    out, w = mhsa(x, mask, causal=True)
    assert out.shape == (2, 5, 16) and w.shape == (2, 4, 5, 5)
    torch.testing.assert_close(w[0].sum(-1), torch.ones(4, 5))
    assert torch.all(w[1, :, :, 3:] == 0)
    assert torch.all(w.triu(1) == 0)  # causal
    mhsa.eval()
    out_a, _ = mhsa(x, mask)
    out_b, _ = mhsa(x, mask)
    torch.testing.assert_close(out_a, out_b)  # dropout off in eval
    with pytest.raises(InputError):
        MultiHeadSelfAttention(10, heads=3)


def test_batched_equals_one_by_one() -> None:
    """Padding never changes a sequence's encoding or attention (packed GRU + masks)."""
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig.tiny(12, 12)).eval()
    seqs = [[4, 5, 6, 7, EOS_ID], [8, 9, EOS_ID]]
    src, mask = pad_batch(seqs)
    tgt = torch.tensor([[BOS_ID, 4, 5], [BOS_ID, 6, 7]])
    with torch.no_grad():
        logits, attn = model(src, mask, tgt)
        l1, a1 = model(*pad_batch([seqs[1]]), tgt[1:])
    torch.testing.assert_close(logits[1], l1[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn[1, :, :, :3], a1[0], atol=1e-6, rtol=1e-5)
    assert torch.all(attn[1, :, :, 3:] == 0)


def _task(n: int = 32, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    """A reversal task: the target is the source backwards (non-monotonic alignment)."""
    g = torch.Generator().manual_seed(seed)
    src, tgt = [], []
    for _ in range(n):
        k = int(torch.randint(2, 6, (1,), generator=g))
        s = torch.randint(4, 10, (k,), generator=g).tolist()
        src.append(s + [EOS_ID])
        tgt.append([BOS_ID] + s[::-1] + [EOS_ID])
    return src, tgt


@pytest.mark.parametrize("attention", ATTENTION_KINDS)
def test_training_loss_decreases(attention: str) -> None:
    torch.manual_seed(0)
    cfg = Seq2SeqConfig.tiny(10, 10, attention=attention, heads=2 if attention == "multihead" else 1)
    model = Seq2Seq(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    src, tgt = _task()
    s, sm = pad_batch(src)
    t, _ = pad_batch(tgt)
    losses = []
    for _ in range(20):
        logits, attn = model(s, sm, t[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 10), t[:, 1:].reshape(-1), ignore_index=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert attn.shape == (32, cfg.heads, t.size(1) - 1, s.size(1))
    assert torch.all(attn.masked_select(~sm[:, None, None, :].expand_as(attn)) == 0)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_config_validation() -> None:
    with pytest.raises(UnknownNameError, match="bahdanau"):
        Seq2SeqConfig(5, 5, attention="luong-cosine")
    with pytest.raises(InputError, match="multihead"):
        Seq2SeqConfig(5, 5, attention="bahdanau", heads=2)


@pytest.mark.parametrize("attention", ["bahdanau", "luong-general"])
def test_beam_search_at_least_greedy_and_records_alignment(attention: str) -> None:
    for seed in range(3):
        torch.manual_seed(seed)
        model = Seq2Seq(Seq2SeqConfig.tiny(10, 10, attention=attention)).eval()
        src = [4, 5, 6, 7, EOS_ID]
        g = greedy_decode(model, [src], max_len=8)[0]
        best = beam_search(model, src, beam=4, max_len=8)
        assert (best.finished, best.logprob) >= (g.finished, g.logprob - 1e-5)
        assert best.attention.shape == (1, len(best.ids), len(src))
        torch.testing.assert_close(best.attention.sum(-1), torch.ones(1, len(best.ids)))


def test_beam_logprob_matches_teacher_forced_score() -> None:
    torch.manual_seed(1)
    model = Seq2Seq(Seq2SeqConfig.tiny(10, 10)).eval()
    src = [4, 5, 6, EOS_ID]
    hyp = beam_search(model, src, beam=3, max_len=6, include_greedy=False)
    s, sm = pad_batch([src])
    tgt = torch.tensor([[BOS_ID] + hyp.ids])
    with torch.no_grad():
        logits, attn = model(s, sm, tgt[:, :-1])
    lp = torch.log_softmax(logits, -1)[0].gather(1, tgt[0, 1:, None]).sum()
    assert abs(float(lp) - hyp.logprob) < 1e-4
    torch.testing.assert_close(attn[0], hyp.attention, atol=1e-5, rtol=1e-4)


def test_translation_trace_round_trips(tmp_path) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    src_vocab = Vocab(["<pad>", "<s>", "</s>", "<unk>", "a", "b", "c"])
    tgt_vocab = Vocab(["<pad>", "<s>", "</s>", "<unk>", "x", "y"])
    model = Seq2Seq(Seq2SeqConfig.tiny(len(src_vocab), len(tgt_vocab), attention="multihead", heads=2)).eval()
    text = "a b c"
    ids = src_vocab.encode(text.split())
    hyp = greedy_decode(model, [ids], max_len=5)[0]
    tr = translation_trace(text, hyp, "word", "word", tgt_vocab.itos, ids, model_id="tiny", attention="multihead")
    assert tr.streams == ["cross"] and tr.heads["cross"] == [0, 1]
    assert tr.key_tokens("cross").text == ["a", "b", "c", "</s>"]
    assert tr.key_tokens("cross").offsets[:3] == [(0, 1), (2, 3), (4, 5)]
    tgt = tr.query_tokens("cross")
    for tok, (a, b), sp in zip(tgt.text, tgt.offsets, tgt.special):
        assert sp or tr.texts["target"][a:b] == tok
    assert tr.meta["model_kind"] == "seq2seq-gru" and tr.meta["causal"] == {"cross": False}
    path = tr.save(tmp_path / "t.safetensors", dtype=torch.float32)
    back = AttentionTrace.load(path)
    torch.testing.assert_close(back.weights("cross"), tr.weights("cross"))
    assert back.tokens["source"] == tr.tokens["source"] and back.texts == tr.texts and back.meta == tr.meta
    torch.testing.assert_close(back.row_stats("cross")["entropy"], tr.row_stats("cross")["entropy"])


def test_classifier_shapes_padding_and_trace(tmp_path) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    vocab = Vocab(["<pad>", "<s>", "</s>", "<unk>", "good", "bad", "movie"])
    model = SelfAttentionClassifier(ClassifierConfig.tiny(len(vocab), 2, heads=2))
    ids, mask = pad_batch([[4, 6], [5, 6, 6]])
    logits, w = model(ids, mask)
    assert logits.shape == (2, 2) and w.shape == (2, 2, 3, 3)
    assert torch.all(w[0, :, :, 2] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 3))
    label, tr = classify_with_attention(model, vocab, ["neg", "pos"], "Good movie!")
    assert label in ("neg", "pos") and tr.streams == ["self"] and tr.weights().shape == (1, 2, 3, 3)
    back = AttentionTrace.load(tr.save(tmp_path / "c.safetensors"))
    assert back.tokens["input"].text == ["good", "movie", "!"]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 4), s=st.integers(1, 9), seed=st.integers(0, 10_000), scale=st.floats(0.01, 50.0))
def test_masked_softmax_property(b: int, s: int, seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, s, generator=g) * scale
    lengths = torch.randint(1, s + 1, (b,), generator=g)
    mask = torch.arange(s)[None] < lengths[:, None]  # (B, S)
    p = masked_softmax(scores, mask)
    assert torch.all(p[~mask] == 0.0) and torch.all(p >= 0)
    torch.testing.assert_close(p.sum(-1), torch.ones(b))
