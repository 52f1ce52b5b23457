"""Head importance over a dataset: by ablation and by gradient (Michel, Levy & Neubig 2019, "Are Sixteen
Heads Really Better than One?", NeurIPS).

Ablation zeroes one head at a time (through the attnscope attention function, so it works under SDPA)
and measures the prediction change on every text: KL(p ‖ p_ablated), the shift of the reference class's
probability, its logit difference and the increase of the cross-entropy loss (against ``labels`` or,
without labels, the unablated prediction). Gradient importance is Michel et al.'s
I_h = E_x |∂L(x)/∂ξ_h| with ξ a per-head scale at 1.0 (:class:`HeadGate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..analysis.results import HeadScores
from ..capture.api import check_text
from ..devices import model_inputs
from ..errors import InputError, UnknownNameError
from ..models import LoadedModel
from ..progress import ProgressCallback
from .interventions import HeadGate, ZeroHeads, output_logits, run_with_interventions

IMPORTANCE_METHODS = ("ablation", "gradient")


def batch_inputs(lm: LoadedModel, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Right-padded batch (B, N) of the texts, on the model's device."""
    if not texts:
        raise InputError("give at least one text")
    texts = [check_text(t, f"text #{i}") for i, t in enumerate(texts)]
    tok = lm.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    old = tok.padding_side
    tok.padding_side = "right"
    try:
        enc = tok(list(texts), padding=True, truncation=True, max_length=lm.max_length, return_tensors="pt")
    finally:
        tok.padding_side = old
    return model_inputs(dict(enc), lm.model)  # on the model's device


def batch_logits(lm: LoadedModel, output, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, C): class logits, or for a language model the next-token logits at each text's last real token."""
    logits = output_logits(lm, output, position=0)  # validates that logits exist
    full = output.logits
    if full.dim() == 3:
        last = inputs["attention_mask"].sum(-1) - 1  # (B,)
        return full[torch.arange(full.shape[0], device=full.device), last.to(full.device)]  # (B, V)
    return logits


ABLATION_METRICS = ("kl", "prob_shift", "logit_diff", "loss_increase")


def _effects(base: torch.Tensor, new: torch.Tensor, ref: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-text effects (B,) of an ablation, from the clean and ablated logits (B, C) and the reference class
    (B,): KL(p ‖ p_ablated), the reference class's probability shift, its logit difference, and the increase
    of the cross-entropy loss."""
    lb, ln = torch.log_softmax(base, -1), torch.log_softmax(new, -1)  # (B, C)
    idx = torch.arange(base.shape[0], device=base.device)
    return {"kl": (lb.exp() * (lb - ln)).sum(-1),
            "prob_shift": ln[idx, ref].exp() - lb[idx, ref].exp(),
            "logit_diff": new[idx, ref] - base[idx, ref],
            "loss_increase": lb[idx, ref] - ln[idx, ref]}


def _geometry(lm: LoadedModel) -> tuple[int, int]:
    return lm.geometry()["self"]


def head_importance(lm: LoadedModel, texts: Sequence[str], *, method: str = "ablation",
                    labels: Sequence[int] | None = None, batch_size: int = 16,
                    progress: ProgressCallback | None = None) -> HeadScores:
    """Importance of every head over ``texts`` as a layer × head table.

    ``method="ablation"``: metrics ``kl``, ``prob_shift``, ``logit_diff``, ``loss_increase`` (means over
    texts) and, with ``labels``, ``accuracy_drop``. ``method="gradient"``: ``gradient`` (E|∂L/∂ξ_h|) and
    ``gradient_normalized`` (each layer divided by its L2 norm, as Michel et al. §4.1).
    ``progress(done, total)`` is called after each forward pass (one per text and gradient, one per batch and
    head for ablation).
    """
    if method not in IMPORTANCE_METHODS:
        raise UnknownNameError("importance method", method, IMPORTANCE_METHODS)
    if "self" not in lm.geometry():
        raise InputError("head importance works on encoder and decoder-only models (stream 'self')")
    if labels is not None and len(labels) != len(texts):
        raise InputError(f"{len(labels)} labels for {len(texts)} texts; give one label per text")
    n_layers, n_heads = _geometry(lm)
    chunks = [(list(texts[i:i + batch_size]), None if labels is None else list(labels[i:i + batch_size]))
              for i in range(0, len(texts), batch_size)]
    n_done, n_work = 0, len(texts) if method == "gradient" else len(chunks) * (1 + n_layers * n_heads)
    if method == "gradient":
        total = np.zeros((n_layers, n_heads))
        for chunk, labs in chunks:
            for j, text in enumerate(chunk):
                inputs = batch_inputs(lm, [text])
                gate = HeadGate(n_layers, n_heads)
                logits = batch_logits(lm, run_with_interventions(lm, inputs, [gate], grad=True), inputs)
                ref = torch.tensor([labs[j]], device=logits.device) if labs is not None else logits.argmax(-1).detach()
                loss = torch.nn.functional.cross_entropy(logits, ref)
                (g,) = torch.autograd.grad(loss, gate.gate)
                total += g.abs().double().cpu().numpy()
                n_done += 1
                if progress is not None:
                    progress(n_done, n_work)
        imp = total / len(texts)
        norm = np.linalg.norm(imp, axis=1, keepdims=True)
        scores = {"gradient": imp, "gradient_normalized": imp / np.where(norm > 0, norm, 1.0)}
    else:
        sums = {k: np.zeros((n_layers, n_heads)) for k in ("kl", "prob_shift", "logit_diff", "loss_increase")}
        if labels is not None:
            sums["accuracy_drop"] = np.zeros((n_layers, n_heads))
        for chunk, labs in chunks:
            inputs = batch_inputs(lm, chunk)
            base = batch_logits(lm, run_with_interventions(lm, inputs, ()), inputs).double()  # (B, C)
            ref = torch.tensor(labs, device=base.device) if labs is not None else base.argmax(-1)
            n_done += 1
            for layer in range(n_layers):
                for head in range(n_heads):
                    new = batch_logits(lm, run_with_interventions(lm, inputs, [ZeroHeads({layer: [head]})]),
                                       inputs).double()
                    for k, v in _effects(base, new, ref).items():
                        sums[k][layer, head] += float(v.sum())
                    if labels is not None:
                        sums["accuracy_drop"][layer, head] += float(
                            ((base.argmax(-1) == ref).double() - (new.argmax(-1) == ref).double()).sum())
                    n_done += 1
                    if progress is not None:
                        progress(n_done, n_work)
        scores = {k: v / len(texts) for k, v in sums.items()}
    return HeadScores(scores=scores, layers=list(range(n_layers)), heads=list(range(n_heads)),
                      name=f"head_importance_{method}", stream="self",
                      meta={"model": lm.name, "texts": len(texts), "method": method, "labels": labels is not None})


# ---------------------------------------------------------------------------- pairwise interactions
MAX_INTERACTION_HEADS = 16


@dataclass
class HeadInteractions:
    """Pairwise ablation of the top-k heads: ``interaction[i, j] = pair[i, j] − single[i] − single[j]``.

    Zero means the two heads' effects add up. Positive (super-additive): removing both costs more than the
    two removals apart — as for redundant heads, where either can stand in for the other. Negative
    (sub-additive): once one is gone, removing the other costs less — as for heads on one path, where one
    removal already does most of the damage. For ``kl`` the term is, to second order, the overlap of the two
    heads' effects on the logits (δ_iᵀ F δ_j, F the Fisher metric): positive when they push the prediction
    the same way.
    """

    model: str
    metric: str
    heads: list[tuple[int, int]]  # (layer, head), ranked by |single-head effect|, largest first
    single: np.ndarray  # (k,) mean effect of zeroing head i alone
    pair: np.ndarray  # (k, k) mean effect of zeroing heads i and j together (diagonal: single)
    interaction: np.ndarray  # (k, k) pair − single_i − single_j (diagonal: 0)
    texts: int
    meta: dict[str, Any] = field(default_factory=dict)

    def labels(self) -> list[str]:
        return [f"L{l}H{h}" for l, h in self.heads]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per pair (i < j), largest |interaction| first."""
        k = len(self.heads)
        out = [{"a": self.labels()[i], "b": self.labels()[j], "single_a": float(self.single[i]),
                "single_b": float(self.single[j]), "pair": float(self.pair[i, j]),
                "interaction": float(self.interaction[i, j])} for i in range(k) for j in range(i + 1, k)]
        return sorted(out, key=lambda r: -abs(r["interaction"]))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "metric": self.metric, "texts": self.texts,
                "heads": [list(h) for h in self.heads], "single": self.single.tolist(), "pair": self.pair.tolist(),
                "interaction": self.interaction.tolist(), "pairs": self.rows(), **self.meta}


def head_interactions(lm: LoadedModel, texts: Sequence[str], *, k: int = 5, metric: str = "kl",
                      labels: Sequence[int] | None = None, single: HeadScores | None = None,
                      heads: Sequence[tuple[int, int]] | None = None, batch_size: int = 16,
                      progress: ProgressCallback | None = None) -> HeadInteractions:
    """Interaction of head pairs under ablation: the pairwise extension of Michel et al. 2019's one-head
    ablation.

    The ``k`` heads with the largest |single-head ablation effect| on ``metric`` (from ``single``, a
    :func:`head_importance` ablation result on the same texts, computed here when not given) — or the given
    ``heads`` — are zeroed in every pair; each pair's mean effect over ``texts`` is compared with the sum of
    the two single effects. Effects are those of :func:`head_importance`: KL from the clean prediction,
    reference-class probability shift, logit difference, loss increase (against ``labels`` or, without,
    the clean prediction).
    """
    if metric not in ABLATION_METRICS:
        raise UnknownNameError("ablation metric", metric, ABLATION_METRICS)
    if "self" not in lm.geometry():
        raise InputError("head interactions work on encoder and decoder-only models (stream 'self')")
    if labels is not None and len(labels) != len(texts):
        raise InputError(f"{len(labels)} labels for {len(texts)} texts; give one label per text")
    n_layers, n_heads = _geometry(lm)
    if heads is None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= k <= min(MAX_INTERACTION_HEADS,
                                                                                            n_layers * n_heads):
            raise InputError(f"k must be an integer in 2..{min(MAX_INTERACTION_HEADS, n_layers * n_heads)} "
                             f"(heads to pair), got {k!r}")
        if single is None:
            single = head_importance(lm, texts, method="ablation", labels=labels, batch_size=batch_size)
        elif single.meta.get("method") != "ablation" or single.meta.get("texts") != len(texts):
            raise InputError("single must be head_importance(..., method='ablation') of the same texts")
        table = single[metric]  # (L, H)
        order = np.argsort(-np.abs(table), axis=None, kind="stable")[: int(k)]
        heads = [(int(single.layers[i // table.shape[1]]), int(single.heads[i % table.shape[1]])) for i in order]
    else:
        heads = [(int(l), int(h)) for l, h in heads]
        bad = [(l, h) for l, h in heads if not (0 <= l < n_layers and 0 <= h < n_heads)]
        if bad or len(set(heads)) != len(heads) or not 2 <= len(heads) <= MAX_INTERACTION_HEADS:
            raise InputError(f"heads must be 2..{MAX_INTERACTION_HEADS} distinct (layer, head) pairs within "
                             f"{n_layers} x {n_heads}; got {list(heads)!r}"[:300])
        single = None
    kk = len(heads)
    chunks = [(list(texts[i:i + batch_size]), None if labels is None else list(labels[i:i + batch_size]))
              for i in range(0, len(texts), batch_size)]
    if not chunks:
        raise InputError("give at least one text")
    pairs = [(i, j) for i in range(kk) for j in range(i + 1, kk)]
    jobs = [(i, i) for i in range(kk) if single is None] + pairs
    sums = np.zeros((kk, kk))
    n_done, n_work = 0, len(chunks) * (1 + len(jobs))
    for chunk, labs in chunks:
        inputs = batch_inputs(lm, chunk)
        base = batch_logits(lm, run_with_interventions(lm, inputs, ()), inputs).double()  # (B, C)
        ref = torch.tensor(labs, device=base.device) if labs is not None else base.argmax(-1)
        n_done += 1
        for i, j in jobs:
            zero = ZeroHeads([heads[i], heads[j]])
            new = batch_logits(lm, run_with_interventions(lm, inputs, [zero]), inputs).double()
            sums[i, j] += float(_effects(base, new, ref)[metric].sum())
            n_done += 1
            if progress is not None:
                progress(n_done, n_work)
    pair = sums / len(texts)
    pair = pair + np.triu(pair, 1).T  # symmetric
    if single is not None:
        li = {l: a for a, l in enumerate(single.layers)}
        hi = {h: a for a, h in enumerate(single.heads)}
        one = np.array([single[metric][li[l], hi[h]] for l, h in heads])
        np.fill_diagonal(pair, one)
    else:
        one = np.diag(pair).copy()
    inter = pair - one[:, None] - one[None, :]
    np.fill_diagonal(inter, 0.0)
    return HeadInteractions(lm.name, metric, heads, one, pair, inter, len(texts),
                            meta={"labels": labels is not None, "selected_by": "given" if single is None else
                                  f"|single-head {metric}|, top {kk}"})
