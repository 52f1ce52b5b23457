"""Greedy and beam-search decoding that record the cross-attention of every generated token.

Beam search follows the standard formulation used by Bahdanau et al. (2015) and Luong et al. (2015):
keep the ``beam`` best partial hypotheses by summed log-probability, move a hypothesis to the finished
list when it emits ``</s>``, and stop when no live hypothesis can still beat the best finished one.
The optional length penalty is GNMT's ``((5 + |y|) / 6) ** alpha`` (Wu et al. 2016).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from .data import BOS_ID, EOS_ID
from .model import Seq2Seq, pad_batch


@dataclass
class Hypothesis:
    """One decoded sequence: ``ids`` (ending with ``</s>`` when ``finished``), its summed
    log-probability, and the attention of each generated token over the source, (H, T, S)."""

    ids: list[int]
    logprob: float
    attention: torch.Tensor
    finished: bool = True

    def score(self, alpha: float = 0.0) -> float:
        """Log-probability divided by the GNMT length penalty (alpha = 0: the raw log-probability)."""
        return self.logprob / (((5 + len(self.ids)) / 6) ** alpha if alpha else 1.0)


def _default_max_len(src_len: int) -> int:
    return 2 * src_len + 10


@torch.no_grad()
def greedy_decode(model: Seq2Seq, sources: list[list[int]], max_len: int | None = None) -> list[Hypothesis]:
    """Batched greedy decoding of source id lists (each ending with ``</s>``)."""
    model.eval()
    src, mask = pad_batch(sources)  # (B, S), (B, S)
    b = src.size(0)
    steps = max_len or _default_max_len(src.size(1))
    memory, state, cache = model.encode(src, mask)
    y = torch.full((b,), BOS_ID, dtype=torch.long)  # (B,)
    done = torch.zeros(b, dtype=torch.bool)  # (B,)
    out_ids, logps, weights = [], [], []
    for _ in range(steps):
        logits, state, w = model.decoder.step(y, state, memory, mask, cache)  # (B, V), _, (B, H, S)
        lp = torch.log_softmax(logits, -1)  # (B, V)
        y = lp.argmax(-1)  # (B,)
        out_ids.append(y)
        logps.append(lp.gather(1, y[:, None]).squeeze(1))  # (B,)
        weights.append(w)
        done = done | (y == EOS_ID)
        if bool(done.all()):
            break
    ids = torch.stack(out_ids, 1)  # (B, T)
    lps = torch.stack(logps, 1)  # (B, T)
    attn = torch.stack(weights, 2)  # (B, H, T, S)
    hyps = []
    for i in range(b):
        row = ids[i].tolist()
        n = row.index(EOS_ID) + 1 if EOS_ID in row else len(row)
        s = len(sources[i])
        hyps.append(Hypothesis(row[:n], float(lps[i, :n].sum()), attn[i, :, :n, :s].clone(), EOS_ID in row[:n]))
    return hyps


@torch.no_grad()
def beam_search(model: Seq2Seq, source: list[int], beam: int = 5, max_len: int | None = None,
                alpha: float = 0.0, include_greedy: bool = True) -> Hypothesis:
    """The best hypothesis of a beam search over one source.

    With ``include_greedy`` (the default) the greedy hypothesis competes too, so the result is never
    worse than greedy decoding under the same score: plain beam search can prune the greedy path
    early and end below it.
    """
    if beam < 1:
        raise InputError(f"beam must be at least 1, got {beam}")
    model.eval()
    src, mask = pad_batch([source])  # (1, S), (1, S)
    steps = max_len or _default_max_len(src.size(1))
    memory, state, cache = model.encode(src, mask)  # (1, S, D)
    n_heads = model.decoder.attn.heads
    s_len = src.size(1)
    tokens = torch.full((1, 1), BOS_ID, dtype=torch.long)  # (n, t+1) incl. <s>
    scores = torch.zeros(1)  # (n,)
    attn = torch.zeros(1, n_heads, 0, s_len)  # (n, H, t, S)
    finished: list[Hypothesis] = []

    def expand(x: object, n: int) -> object:
        if x is None:
            return None
        if isinstance(x, tuple):
            return tuple(expand(t, n) for t in x)
        return x.expand(n, *x.shape[1:])  # type: ignore[union-attr]

    for t in range(steps):
        n = tokens.size(0)
        mem_n, mask_n = memory.expand(n, -1, -1), mask.expand(n, -1)  # (n, S, D), (n, S)
        logits, new_state, w = model.decoder.step(tokens[:, -1], state, mem_n, mask_n, expand(cache, n))  # (n, V), _, (n, H, S)
        cand = scores[:, None] + torch.log_softmax(logits, -1)  # (n, V)
        vocab = cand.size(1)
        top_scores, top_idx = cand.flatten().topk(min(2 * beam, cand.numel()))  # (2k,)
        keep_rows, keep_tok, keep_scores = [], [], []
        for sc, idx in zip(top_scores.tolist(), top_idx.tolist()):
            row, tok = divmod(idx, vocab)
            if tok == EOS_ID:
                a = torch.cat([attn[row], w[row, :, None]], 1)  # (H, t+1, S)
                finished.append(Hypothesis(tokens[row, 1:].tolist() + [EOS_ID], sc, a, True))
            else:
                keep_rows.append(row)
                keep_tok.append(tok)
                keep_scores.append(sc)
            if len(keep_rows) == beam:
                break
        if not keep_rows:
            break
        rows = torch.tensor(keep_rows)
        tokens = torch.cat([tokens[rows], torch.tensor(keep_tok)[:, None]], 1)  # (n', t+2)
        scores = torch.tensor(keep_scores)  # (n',)
        attn = torch.cat([attn[rows], w[rows].unsqueeze(2)], 2)  # (n', H, t+1, S)
        state = new_state.index(rows)
        if finished and alpha == 0.0 and max(h.logprob for h in finished) >= float(scores.max()):
            break  # log-probabilities only fall: no live hypothesis can win any more
    else:
        for i in range(tokens.size(0)):
            finished.append(Hypothesis(tokens[i, 1:].tolist(), float(scores[i]), attn[i].clone(), False))
    best = max(finished, key=lambda h: (h.finished, h.score(alpha)))
    if include_greedy:
        g = greedy_decode(model, [source], max_len=steps)[0]
        if (g.finished, g.score(alpha)) > (best.finished, best.score(alpha)):
            best = g
    return best
