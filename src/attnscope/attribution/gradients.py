"""Gradients of attention: attention × gradient per head, and Chefer et al.'s gradient-weighted relevancy.

The gradients are taken w.r.t. the probabilities each layer actually used: a :class:`ProbsProbe` with
``keep_graph=True`` sits in the attnscope attention function, which then computes the layer's output
from those very tensors (the explicit path), so ``∂y/∂A`` is exact — including every path through later
layers' queries and keys. The target ``y`` is a class logit (classifiers) or a token logit (language
models, at the last position by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..models import LoadedModel
from .interventions import ProbsProbe, encode, output_logits, run_with_interventions


@dataclass
class AttentionGradients:
    """Attention probabilities and the gradient of the target logit w.r.t. them, for one input.

    ``attention`` and ``gradients``: (layer, head, query, key) float64; ``row``: the query row the
    prediction is read from ([CLS] = 0 for bidirectional encoders, the last/position row for causal
    models); ``causal``: whether the attention is causal (upper triangle zero).
    """

    tokens: list[str]
    special: list[bool]
    attention: np.ndarray
    gradients: np.ndarray
    target: int
    target_label: str
    row: int
    causal: bool
    logits: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def attn_x_grad(self) -> np.ndarray:
        """A ⊙ ∂y/∂A: (layer, head, query, key)."""
        return self.attention * self.gradients

    def head_scores(self) -> np.ndarray:
        """(layer, head): Σ_{q,k} A ⊙ ∂y/∂A — the first-order (Taylor) effect on y of removing the head,
        which equals the gradient w.r.t. a per-head scale at 1.0 (Michel et al. 2019)."""
        return self.attn_x_grad.sum(axis=(2, 3))

    def token_scores(self) -> np.ndarray:
        """(key,): A ⊙ ∂y/∂A on the prediction row, averaged over layers and heads."""
        return self.attn_x_grad[:, :, self.row, :].mean(axis=(0, 1))

    def relevancy(self) -> np.ndarray:
        """Chefer et al. 2021 relevancy map R (query, key); see :func:`chefer_relevancy`."""
        return chefer_relevancy(self.attention, self.gradients)

    def relevancy_scores(self) -> np.ndarray:
        """(key,): the prediction row of the relevancy map, its identity (self) term removed."""
        r = self.relevancy()[self.row].copy()
        r[self.row] -= 1.0
        return r


def chefer_relevancy(attention: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Gradient-weighted attention rollout: Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability
    for Interpreting Bi-Modal and Encoder-Decoder Transformers" (ICCV), eqs. 5–6 (self-attention rules).

    R starts as the identity; for each layer, Ā = E_h[(∇A ⊙ A)⁺] (heads averaged after keeping the
    positive part) and R ← R + Ā·R. attention, gradients: (layer, head, N, N). Returns R (N, N).
    """
    if attention.shape != gradients.shape or attention.ndim != 4:
        raise InputError(f"attention {attention.shape} and gradients {gradients.shape} must both be (layer, head, N, N)")
    n = attention.shape[-1]
    r = np.eye(n)
    for layer in range(attention.shape[0]):
        a_bar = np.clip(gradients[layer] * attention[layer], 0, None).mean(0)  # (N, N)
        r = r + a_bar @ r
    return r


def resolve_target(lm: LoadedModel, logits: torch.Tensor, target: int | str | None) -> tuple[int, str]:
    """(index, label) of the target class / token; default: the model's prediction."""
    n = logits.shape[-1]
    if target is None:
        t = int(logits.argmax())
    elif isinstance(target, str):
        labels = getattr(lm.config, "label2id", None) or {}
        if lm.kind != "causal" and target in labels and n == len(labels):
            t = int(labels[target])
        else:
            ids = lm.tokenizer(target, add_special_tokens=False)["input_ids"]
            if not ids:
                raise InputError(f"target {target!r} tokenises to nothing")
            t = int(ids[0])
    else:
        t = int(target)
    if not 0 <= t < n:
        raise InputError(f"target {t} is out of range: the model has {n} outputs (0..{n - 1})")
    return t, target_label(lm, t)


def target_label(lm: LoadedModel, t: int) -> str:
    """The class label of output ``t``, or for language models the readable token (``Paris``, not ``ĠParis``:
    :meth:`attnscope.trace.Tokens.labels`)."""
    if lm.kind == "causal" or getattr(lm.model.config, "num_labels", 0) < t + 1 or "LM" in type(lm.model).__name__:
        from ..trace import Tokens

        return Tokens([str(lm.tokenizer.convert_ids_to_tokens([t])[0])], ids=[t]).labels()[0]
    return str((getattr(lm.config, "id2label", None) or {}).get(t, t))


def is_causal_maps(attention: np.ndarray) -> bool:
    """True when every map's strict upper triangle is zero (a causal model)."""
    n = attention.shape[-1]
    return n > 1 and bool(np.all(attention[..., np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] == 0))


def attention_gradients(lm: LoadedModel, text: str, *, target: int | str | None = None,
                        position: int | None = None, stream: str = "self") -> AttentionGradients:
    """Attention maps and ∂(target logit)/∂(attention) for every layer and head of one input.

    ``target``: class index/label (classifier) or token id/string (LM; default the predicted next token);
    ``position``: for LMs, which position's next-token logit (default the last).
    """
    inputs, tokens = encode(lm, text)
    probe = ProbsProbe(stream=stream, keep_graph=True)
    emb = lm.model.get_input_embeddings()
    # If the parameters are frozen nothing would require grad: make the embedding output require it.
    handle = emb.register_forward_hook(lambda m, i, o: o if o.requires_grad else o.detach().requires_grad_(True))
    try:
        out = run_with_interventions(lm, inputs, [probe], grad=True)
    finally:
        handle.remove()
    logits = output_logits(lm, out, position)[0]  # (C,)
    t, label = resolve_target(lm, logits, target)
    blocks = probe.tensors(stream)
    if not blocks:
        raise InputError(f"stream {stream!r} was never called in {lm.name}")
    grads = torch.autograd.grad(logits[t], blocks, allow_unused=True)
    grads = [torch.zeros_like(b) if g is None else g for b, g in zip(blocks, grads)]
    per_site: dict[int, list[torch.Tensor]] = {}
    sites = [s for s in probe.sites(stream) for _ in probe.blocks[s]]
    for s, g in zip(sites, grads):
        per_site.setdefault(s.layer, []).append(g)
    g_maps = torch.stack([torch.cat(per_site[l], dim=2)[0] for l in sorted(per_site)]).double().cpu().numpy()  # (L, H, N, N)
    a_maps = probe.maps(stream)[:, 0].double().cpu().numpy()  # (L, H, N, N)
    causal = is_causal_maps(a_maps)
    n = a_maps.shape[-1]
    if position is not None and lm.kind == "causal":
        row = position % n
    else:
        row = n - 1 if causal else 0
    return AttentionGradients(tokens=tokens.labels(text), special=list(tokens.special), attention=a_maps,
                              gradients=g_maps, target=t, target_label=label, row=row, causal=causal,
                              logits=logits.detach().double().cpu().numpy(),
                              meta={"model": lm.name, "text": text, "stream": stream})
