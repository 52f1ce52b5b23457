"""Trained seq2seq models and classifiers -> :class:`attnscope.AttentionTrace`.

A translation becomes a trace with one ``cross`` stream, ``layers=[0]``, ``heads=[0..H-1]``, queries
= the generated target tokens (ending with ``</s>``), keys = the source tokens (ending with
``</s>``), each with character offsets into ``texts["target"]`` / ``texts["source"]``. Every figure,
analysis, report and the web explorer of attnscope then work on it.
"""

from __future__ import annotations

from typing import Any

import torch

from ..trace import AttentionTrace, Tokens
from .data import EOS, EOS_ID, detokenize, tokenize
from .decode import Hypothesis, beam_search, greedy_decode


def translation_trace(source: str, hyp: Hypothesis, src_tok: str, tgt_tok: str, tgt_itos: list[str],
                      src_ids: list[int] | None = None, model_id: str = "", attention: str = "",
                      extra_meta: dict[str, Any] | None = None) -> AttentionTrace:
    """The trace of one decoded hypothesis (its attention is (H, T, S))."""
    s_toks, s_offs = tokenize(source, src_tok)
    body = hyp.ids[:-1] if hyp.finished and hyp.ids and hyp.ids[-1] == EOS_ID else hyp.ids
    t_toks = [tgt_itos[i] for i in body]
    target_text, t_offs = detokenize(t_toks, tgt_tok)
    src = Tokens([*s_toks, EOS], [*s_offs, (0, 0)], [False] * len(s_toks) + [True],
                 (src_ids or [-1] * (len(s_toks) + 1)))
    n_special = 1 if len(body) < len(hyp.ids) else 0
    tgt = Tokens([*t_toks, *([EOS] * n_special)], [*t_offs, *([(0, 0)] * n_special)],
                 [False] * len(t_toks) + [True] * n_special, list(hyp.ids))
    weights = hyp.attention.float()[None]  # (1, H, T, S)
    meta = {"model_kind": "seq2seq-gru", "attention": attention, "causal": {"cross": False},
            "logprob": hyp.logprob, "finished": hyp.finished, **(extra_meta or {})}
    return AttentionTrace(tokens={"source": src, "target": tgt}, layers={"cross": [0]},
                          heads={"cross": list(range(weights.shape[1]))}, weights={"cross": weights},
                          texts={"source": source, "target": target_text}, model_id=model_id, meta=meta)


def translate(loaded: Any, text: str, beam: int = 1, max_len: int | None = None) -> tuple[str, AttentionTrace]:
    """Translate ``text`` with a :class:`~attnscope.seq2seq.train.LoadedSeq2Seq` (or anything with
    ``model``, ``encode_src``, vocabularies and tokenisers); returns the output text and its trace."""
    ids = loaded.encode_src(text)
    hyp = beam_search(loaded.model, ids, beam, max_len) if beam > 1 else greedy_decode(loaded.model, [ids], max_len)[0]
    tr = translation_trace(text, hyp, loaded.src_tok, loaded.tgt_tok, loaded.tgt_vocab.itos, ids,
                           model_id=str(loaded.info.get("model_id", "attnscope-seq2seq")),
                           attention=loaded.model.cfg.attention,
                           extra_meta={"decoder": "beam" if beam > 1 else "greedy", "beam": beam})
    return tr.texts["target"], tr


def classifier_trace(text: str, tokens: list[str], offsets: list[tuple[int, int]], weights: torch.Tensor,
                     model_id: str = "attnscope-selfattn-classifier", meta: dict[str, Any] | None = None,
                     ids: list[int] | None = None) -> AttentionTrace:
    """The ``self`` stream of a one-layer self-attention classifier: weights (H, N, N)."""
    w = weights.float()[None]  # (1, H, N, N)
    toks = Tokens(tokens, offsets, [False] * len(tokens), ids or [-1] * len(tokens))
    return AttentionTrace(tokens={"input": toks}, layers={"self": [0]}, heads={"self": list(range(w.shape[1]))},
                          weights={"self": w}, texts={"input": text}, model_id=model_id,
                          meta={"model_kind": "selfattn-classifier", "causal": {"self": False}, **(meta or {})})
