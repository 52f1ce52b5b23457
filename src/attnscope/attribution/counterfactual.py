"""Token interventions and counterfactual inputs: what happens to the prediction and to attention when
a word is masked, replaced or deleted, or when the user gives an edited text.

Words are found with a simple word/punctuation regex over the text; a word's tokens are every token
whose character span (``Tokens.offsets``) overlaps it, so all its sub-tokens are edited together.
Attention is compared on the tokens the two inputs share — the tokens outside the edit, aligned by
their common prefix and suffix of token ids — as the mean squared difference of the weights and the
mean KL divergence of the attention rows (each row renormalised over the shared keys), averaged over
layers and heads. The prediction change is :func:`attnscope.attribution.interventions.prediction_change`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..capture.api import check_text
from ..errors import InputError, UnknownNameError
from ..models import LoadedModel
from ..progress import ProgressCallback
from ..trace import Tokens
from .interventions import ProbsProbe, encode, output_logits, prediction_change, run_with_interventions

WORD_RE = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")
MODES = ("mask", "replace", "delete")


@dataclass(frozen=True)
class Word:
    text: str
    start: int
    end: int
    tokens: tuple[int, ...]  # token positions covering the word


def words(text: str, tokens: Tokens) -> list[Word]:
    """Words of ``text`` with the positions of all their (sub-)tokens (via the tokens' character offsets)."""
    out = []
    for m in WORD_RE.finditer(text):
        ws, we = m.span()
        idx = tuple(i for i, (s, e) in enumerate(tokens.offsets)
                    if not tokens.special[i] and e > s and s < we and e > ws)
        if idx:
            out.append(Word(m.group(), ws, we, idx))
    if not out and any(not s for s in tokens.special):
        raise InputError("the tokenizer gave no character offsets; token interventions need a fast tokenizer")
    return out


def _run(lm: LoadedModel, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    probe = ProbsProbe(stream="self")
    out = run_with_interventions(lm, inputs, [probe])
    return output_logits(lm, out)[0], probe.maps("self")[:, 0].double()  # (C,), (L, H, N, N)


def _aligned(a: list[int], b: list[int], skip_a: Sequence[int] = ()) -> tuple[list[int], list[int]]:
    """Positions shared by two id sequences: common prefix and suffix (outside ``skip_a``)."""
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    s = 0
    while s < min(len(a), len(b)) - p and a[-1 - s] == b[-1 - s]:
        s += 1
    ia = list(range(p)) + list(range(len(a) - s, len(a)))
    ib = list(range(p)) + list(range(len(b) - s, len(b)))
    if skip_a:
        keep = [k for k, i in enumerate(ia) if i not in set(skip_a)]
        ia, ib = [ia[k] for k in keep], [ib[k] for k in keep]
    return ia, ib


def attention_change(a: torch.Tensor, b: torch.Tensor, ia: Sequence[int], ib: Sequence[int]) -> dict[str, float]:
    """MSE and mean row-KL(a ‖ b) of two (L, H, N, N) attention stacks on aligned positions."""
    if len(ia) == 0:
        return {"attention_mse": float("nan"), "attention_kl": float("nan"), "aligned_tokens": 0}
    sa = a[:, :, ia][:, :, :, ia]  # (L, H, n, n)
    sb = b[:, :, ib][:, :, :, ib]
    mse = float(((sa - sb) ** 2).mean())
    eps = 1e-12
    ra = sa / sa.sum(-1, keepdim=True).clamp_min(eps)
    rb = sb / sb.sum(-1, keepdim=True).clamp_min(eps)
    kl = (ra * (torch.log(ra.clamp_min(eps)) - torch.log(rb.clamp_min(eps)))).sum(-1)  # (L, H, n)
    valid = (sa.sum(-1) > eps) & (sb.sum(-1) > eps)
    return {"attention_mse": mse, "attention_kl": float(kl[valid].mean()) if valid.any() else float("nan"),
            "aligned_tokens": len(ia)}


def _mask_id(tok) -> int:
    for name in ("mask_token_id", "unk_token_id", "pad_token_id", "eos_token_id"):
        v = getattr(tok, name, None)
        if isinstance(v, int):
            return v
    return 0


def token_interventions(lm: LoadedModel, text: str, *, mode: str = "mask", replacement: str | None = None,
                        target: int | None = None, progress: ProgressCallback | None = None
                        ) -> list[dict[str, Any]]:
    """Edit each word in turn and rank the words by the prediction change (KL, largest first).

    ``mask``: each of the word's sub-tokens becomes the tokenizer's mask token (else [UNK]/padding);
    ``replace``: the word is replaced in the text by ``replacement`` and re-tokenised; ``delete``: the
    word is removed from the text. Rows: word, tokens, kl, prob_shift, logit_diff, flipped,
    attention_mse, attention_kl, aligned_tokens. ``progress(done, total)`` is called after each word.
    """
    if mode not in MODES:
        raise UnknownNameError("token intervention mode", mode, MODES)
    if mode == "replace" and not replacement:
        raise InputError("mode='replace' needs replacement='<word>'")
    text = check_text(text)
    inputs, tokens = encode(lm, text)
    base_logits, base_maps = _run(lm, inputs)
    ids = inputs["input_ids"][0].tolist()
    rows = []
    all_words = words(text, tokens)
    for n_done, w in enumerate(all_words, 1):
        if progress is not None:
            progress(n_done - 1, len(all_words))
        if mode == "mask":
            new_inputs = {k: v.clone() for k, v in inputs.items()}
            new_inputs["input_ids"][0, list(w.tokens)] = _mask_id(lm.tokenizer)
            new_ids = new_inputs["input_ids"][0].tolist()
            edited = text
        else:
            new = replacement if mode == "replace" else ""
            edited = text[:w.start] + new + text[w.end:]
            if not edited.strip():
                continue
            new_inputs, _ = encode(lm, edited)
            new_ids = new_inputs["input_ids"][0].tolist()
        logits, maps = _run(lm, new_inputs)
        ia, ib = _aligned(ids, new_ids, skip_a=w.tokens)
        row = {"word": w.text, "start": w.start, "end": w.end, "tokens": list(w.tokens), "edited_text": edited}
        row.update(prediction_change(base_logits, logits, target))
        row.update(attention_change(base_maps, maps, ia, ib))
        rows.append(row)
    if progress is not None:
        progress(len(all_words), len(all_words))
    rows.sort(key=lambda r: -r["kl"])
    return rows


def compare_counterfactuals(lm: LoadedModel, text: str, alternatives: Sequence[str], *,
                            target: int | None = None, progress: ProgressCallback | None = None
                            ) -> list[dict[str, Any]]:
    """Compare user-given counterfactual texts with the original: prediction change and attention change
    on the shared tokens (common token prefix and suffix). One row per alternative, in the given order;
    ``progress(done, total)`` is called after each."""
    text = check_text(text)
    if not alternatives:
        raise InputError("give at least one counterfactual text")
    inputs, tokens = encode(lm, text)
    base_logits, base_maps = _run(lm, inputs)
    ids = inputs["input_ids"][0].tolist()
    rows = []
    for alt in alternatives:
        alt = check_text(alt, "counterfactual text")
        alt_inputs, alt_tokens = encode(lm, alt)
        logits, maps = _run(lm, alt_inputs)
        ia, ib = _aligned(ids, alt_inputs["input_ids"][0].tolist())
        changed = sorted(set(range(len(ids))) - set(ia))
        row = {"text": alt, "changed_tokens": [tokens.labels()[i] for i in changed],
               "new_tokens": [alt_tokens.labels()[i] for i in sorted(set(range(len(alt_tokens))) - set(ib))]}
        row.update(prediction_change(base_logits, logits, target))
        row.update(attention_change(base_maps, maps, ia, ib))
        rows.append(row)
        if progress is not None:
            progress(len(rows), len(alternatives))
    return rows
