"""Head importance over a dataset: by ablation and by gradient (Michel, Levy & Neubig 2019, "Are Sixteen
Heads Really Better than One?", NeurIPS).

Ablation zeroes one head at a time (through the attnscope attention function, so it works under SDPA)
and measures the prediction change on every text: KL(p ‖ p_ablated), the shift of the reference class's
probability, its logit difference and the increase of the cross-entropy loss (against ``labels`` or,
without labels, the unablated prediction). Gradient importance is Michel et al.'s
I_h = E_x |∂L(x)/∂ξ_h| with ξ a per-head scale at 1.0 (:class:`HeadGate`).
"""

from __future__ import annotations

from typing import Sequence

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
            lb = torch.log_softmax(base, -1)
            base_loss = torch.nn.functional.nll_loss(lb, ref, reduction="none")
            n_done += 1
            idx = torch.arange(len(chunk), device=base.device)
            for layer in range(n_layers):
                for head in range(n_heads):
                    new = batch_logits(lm, run_with_interventions(lm, inputs, [ZeroHeads({layer: [head]})]),
                                       inputs).double()
                    ln = torch.log_softmax(new, -1)
                    sums["kl"][layer, head] += float((lb.exp() * (lb - ln)).sum(-1).sum())
                    sums["prob_shift"][layer, head] += float((ln[idx, ref].exp() - lb[idx, ref].exp()).sum())
                    sums["logit_diff"][layer, head] += float((new[idx, ref] - base[idx, ref]).sum())
                    sums["loss_increase"][layer, head] += float(
                        (torch.nn.functional.nll_loss(ln, ref, reduction="none") - base_loss).sum())
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
