"""Fixture traces for the analysis/render/report tests (plain helpers: import them, no pytest magic).

Synthetic but structured maps: head 0 of every layer attends to the previous token, head 1 to the
first token, the rest are random softmaxes; causal traces respect their mask exactly.
"""

from __future__ import annotations

import torch

from attnscope import AttentionTrace, Tokens

ENCODER_WORDS = ["[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]"]
CAUSAL_WORDS = ["<s>", "The", " cat", " sat", ",", " and", " the", " dog", " ran", "."]


def _maps(layers: int, heads: int, nq: int, nk: int, causal: bool, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(layers, heads, nq, nk, generator=g) * 2.0  # (L, H, Nq, Nk)
    if nq == nk:
        idx = torch.arange(nq)
        prev = (idx - 1).clamp(min=0)
        logits[:, 0, idx, prev] += 8.0  # previous-token head
        if heads > 1:
            logits[:, 1, :, 0] += 8.0  # first-token (sink) head
    if causal:
        mask = torch.ones(nq, nk, dtype=torch.bool).tril(nk - nq)
        logits = logits.masked_fill(~mask, float("-inf"))
    return logits.softmax(-1)


def tokens(words: list[str], special_ends: bool = True) -> Tokens:
    special = [special_ends and (w.startswith("[") or w.startswith("<")) for w in words]
    offsets, pos = [], 0
    for w, s in zip(words, special):
        offsets.append((0, 0) if s else (pos, pos + len(w)))
        pos += 0 if s else len(w)
    return Tokens(list(words), offsets, special, list(range(100, 100 + len(words))))


def encoder_trace(layers: int = 3, heads: int = 4, words: list[str] | None = None, seed: int = 0) -> AttentionTrace:
    words = words or ENCODER_WORDS
    n = len(words)
    w = _maps(layers, heads, n, n, False, seed)
    return AttentionTrace(tokens={"input": tokens(words)}, layers={"self": list(range(layers))},
                          heads={"self": list(range(heads))}, weights={"self": w}, texts={"input": " ".join(words)},
                          model_id="synthetic-encoder", meta={"causal": {"self": False}, "model_kind": "encoder"})


def causal_trace(layers: int = 3, heads: int = 4, words: list[str] | None = None, seed: int = 1,
                 ids: list[int] | None = None) -> AttentionTrace:
    words = words or CAUSAL_WORDS
    n = len(words)
    w = _maps(layers, heads, n, n, True, seed)
    tok = tokens(words)
    if ids is not None:
        tok = Tokens(tok.text, tok.offsets, tok.special, ids)
    return AttentionTrace(tokens={"input": tok}, layers={"self": list(range(layers))},
                          heads={"self": list(range(heads))}, weights={"self": w}, texts={"input": "".join(words)},
                          model_id="synthetic-causal", meta={"causal": {"self": True}, "model_kind": "decoder"})


def seq2seq_trace(layers: int = 2, heads: int = 3, seed: int = 2) -> AttentionTrace:
    src = ["▁Das", "▁ist", "▁ein", "▁Test", ".", "</s>"]
    tgt = ["<pad>", "▁This", "▁is", "▁a", "▁test", "."]
    ns, nt = len(src), len(tgt)
    return AttentionTrace(
        tokens={"source": tokens(src), "target": tokens(tgt)},
        layers={s: list(range(layers)) for s in ("encoder_self", "decoder_self", "cross")},
        heads={s: list(range(heads)) for s in ("encoder_self", "decoder_self", "cross")},
        weights={"encoder_self": _maps(layers, heads, ns, ns, False, seed),
                 "decoder_self": _maps(layers, heads, nt, nt, True, seed + 1),
                 "cross": _maps(layers, heads, nt, ns, False, seed + 2)},
        texts={"source": "Das ist ein Test.", "target": "This is a test."},
        model_id="synthetic-seq2seq",
        meta={"causal": {"encoder_self": False, "decoder_self": True, "cross": False}, "model_kind": "encoder-decoder"},
    )


def repeated_trace(period: int = 5, layers: int = 2, heads: int = 3) -> AttentionTrace:
    """A causal trace over <s> + r + r whose head 2 of every layer is a perfect induction head."""
    ids = [1] + list(range(10, 10 + period)) * 2
    n = len(ids)
    t = causal_trace(layers, heads, words=[f"t{i}" for i in ids], ids=ids)
    w = t.weights().clone()  # (L, H, N, N)
    for i in range(n):
        w[:, 2, i] = 0.0
        j = i - period + 1 if i > period else 0
        w[:, 2, i, j] = 1.0
    return AttentionTrace(tokens=t.tokens, layers=t.layers, heads=t.heads, weights={"self": w},
                          model_id="synthetic-induction", meta=t.meta)


def all_fixture_traces() -> dict[str, AttentionTrace]:
    return {"encoder": encoder_trace(), "causal": causal_trace(), "seq2seq": seq2seq_trace()}
