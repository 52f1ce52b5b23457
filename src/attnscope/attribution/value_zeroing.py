"""Value zeroing (Mohebbi, Zuidema, Chrupała & Alishahi, 2023, "Quantifying Context Mixing in Transformers",
EACL, §2).

To measure how much token i's representation after layer l depends on token j, set token j's value vector to
zero in layer l's attention — for every query, in every head (per layer) or in one head (per head) — and run
the layer again on the same input. The score is the cosine distance between the changed and the original
output of the layer at token i: C_ij = 1 − cos(x̃_i^{¬j}, x̃_i). The whole layer is re-run (attention, residual,
norms and feed-forward), so nothing is linearised. Rows are normalised to sum to 1 and the layers are
aggregated by rollout, R_l = Ĉ_l · R_{l−1}.

Zeroing v_j is done in attnscope's registered attention function: the layer's output is computed from the
probabilities with key column j set to 0 and not renormalised, which is exactly Σ_{k≠j} α_ik v_k. One unchanged
forward records each layer's input; then each layer alone is re-run on it, the variants of one layer as one batch
(one layer pass per variant, not the whole stack below it). For grouped-query attention a "head" is a query head
(its read of the shared value is zeroed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from ..capture.api import attention_implementation
from ..capture.interface import CaptureSession, Site, session_scope
from ..errors import CaptureError, InputError
from ..models import LoadedModel
from .interventions import encode, run_with_interventions
from .value_mixing import MixingResult, _containers, rollout_of

# Variants (batch rows) of one layer run at once.
MAX_BATCH = 64

WHAT_IT_IS = ("value zeroing: how much token i's representation after a layer changes (cosine distance) when "
              "token j's value vector is zeroed in that layer's attention, aggregated by rollout")
WHAT_IT_IS_NOT = ("not a change of the prediction (the layer's output is compared, later layers are not run), and "
                  "not additive across tokens")


@dataclass
class ZeroValues:
    """Intervention: in ``layer`` of ``stream``, batch row b has the value of token ``token[b]`` zeroed in the
    heads ``heads[b]`` (-1 = every head; token -1 = nothing zeroed: the reference row)."""

    layer: int
    token: torch.Tensor  # (B,) int
    head: torch.Tensor  # (B,) int
    stream: str = "self"

    def applies(self, site: Site) -> bool:
        return site.stream == self.stream and site.layer == self.layer

    def apply(self, site: Site, probs: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        B, H, _, nk = probs.shape
        keep = torch.ones(B, H, 1, nk, dtype=probs.dtype, device=probs.device)  # (B, H, 1, Nk)
        for b in range(B):
            j, h = int(self.token[b]), int(self.head[b])
            if j >= 0:
                keep[b, slice(None) if h < 0 else h, 0, j] = 0.0
        return probs * keep  # column j not renormalised: Σ_{k≠j} α_ik v_k


def _layer_inputs(lm: LoadedModel, inputs: dict, containers: dict) -> dict[int, tuple[tuple, dict]]:
    """The positional and keyword arguments each layer was called with in one unchanged forward (batch 1)."""
    calls: dict[int, tuple[tuple, dict]] = {}
    handles = [c.register_forward_pre_hook(lambda _m, args, kwargs, i=i: calls.setdefault(i, (args, kwargs)),
                                           with_kwargs=True) for i, (_, c) in containers.items()]
    try:
        run_with_interventions(lm, inputs)
    finally:
        for h in handles:
            h.remove()
    return calls


def _batched(x, B: int):
    """A layer argument for a batch of B variants: tensors of batch 1 (two or more dimensions) expanded."""
    if torch.is_tensor(x):
        return x.expand(B, *x.shape[1:]) if x.dim() >= 2 and x.shape[0] == 1 else x
    if isinstance(x, (tuple, list)):
        return type(x)(_batched(v, B) for v in x)
    return x


def _layer_outputs(lm: LoadedModel, layer: int, container, call: tuple[tuple, dict], token, head) -> torch.Tensor:
    """Output (B, N, d) of ``layer`` for each variant: the layer alone, re-run on its recorded input."""
    B = len(token)
    args, kwargs = _batched(call[0], B), {k: _batched(v, B) for k, v in call[1].items()}
    session = CaptureSession(interventions=[ZeroValues(layer, token, head)])
    with attention_implementation(lm.model, "attnscope"), session_scope(session), torch.no_grad():
        out = container(*args, **kwargs)
    if session.calls == 0:
        raise CaptureError(f"{lm.name}: layer {layer}'s attention was never called; values cannot be zeroed")
    return (out[0] if isinstance(out, (tuple, list)) else out).double()


def value_zeroing_attribution(lm: LoadedModel, text: str, layers: Iterable[int] | None = None, per_head: bool = False,
                  max_batch: int = MAX_BATCH) -> MixingResult:
    """Value-zeroing scores: ``per_layer`` (layer, query, key) C_ij (zeroed in every head), ``per_head``
    (layer, head, query, key) when ``per_head=True``, ``aggregated`` (query, key) the rollout of the
    row-normalised per-layer matrices when every layer is computed."""
    if lm.kind not in ("encoder", "causal"):
        raise InputError(f"value_zeroing supports encoder-only and decoder-only models; {lm.name} is {lm.kind}")
    inputs, tokens = encode(lm, text)
    containers = _containers(lm.model)
    n_layers = lm.geometry()["self"][0]
    n_heads = lm.geometry()["self"][1]
    if sorted(containers) != list(range(n_layers)):
        raise InputError(f"value_zeroing: cannot find the {n_layers} transformer layers of {lm.name}")
    all_layers = layers is None
    layers = list(range(n_layers)) if layers is None else list(layers)
    bad = [la for la in layers if not -n_layers <= int(la) < n_layers]
    if bad:
        raise InputError(f"layer {bad[0]} is out of range: {lm.name} has layers 0..{n_layers - 1}")
    layers = sorted({int(la) % n_layers for la in layers})
    n = inputs["input_ids"].shape[1]
    variants = [(j, -1) for j in range(n)] + ([(j, h) for h in range(n_heads) for j in range(n)] if per_head else [])
    per_layer = np.zeros((len(layers), n, n))
    heads = np.zeros((len(layers), n_heads, n, n)) if per_head else None
    calls = _layer_inputs(lm, inputs, containers)
    for li, layer in enumerate(layers):
        container = containers[layer][1]
        step = max(1, max_batch - 1)
        for s in range(0, len(variants), step):
            chunk = [(-1, -1)] + variants[s:s + step]  # row 0: the unchanged layer, in the same batch
            token = torch.tensor([c[0] for c in chunk])
            head = torch.tensor([c[1] for c in chunk])
            out = _layer_outputs(lm, layer, container, calls[layer], token, head)  # (B, N, d)
            dist = 1.0 - torch.nn.functional.cosine_similarity(out[1:], out[:1], dim=-1)  # (B-1, N): over i
            for (j, h), row in zip(chunk[1:], dist.cpu().numpy()):
                if h < 0:
                    per_layer[li, :, j] = row
                else:
                    heads[li, h, :, j] = row
    per_layer = np.clip(per_layer, 0.0, None)
    aggregated = None
    if all_layers:
        s = per_layer.sum(-1, keepdims=True)
        aggregated = rollout_of(per_layer / np.where(s > 0, s, 1.0))[-1]
    return MixingResult("value_zeroing", tokens.labels(text), list(tokens.special), layers, per_layer, WHAT_IT_IS,
                        WHAT_IT_IS_NOT, causal=lm.kind == "causal", per_head=heads, aggregated=aggregated,
                        meta={"paper": "Mohebbi et al. 2023 (EACL)"})
