"""MC-dropout consistency of attention (Gal & Ghahramani 2016, "Dropout as a Bayesian Approximation"):
run one input N times with dropout active and measure how stable the attention maps are.

Which maps: with dropout on, SDPA applies attention dropout *inside* its kernel, so probabilities
recomputed afterwards would not be the ones the model used. Here the attention modules themselves are
kept in eval mode (their SDPA call gets ``dropout=0``) while every other module — hidden/residual
dropout — is in train mode, and the attention dropout is applied by an intervention in the attnscope
attention function with each module's own probability. The layer's output is computed from exactly the
maps recorded: ``which="used"`` (after dropout: zeros and the 1/(1−p) rescaling, as eager
``output_attentions`` reports them) or ``which="softmax"`` (before attention dropout; varies only
through dropout in earlier layers). The model's train/eval state is restored afterwards, even on error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..models import LoadedModel
from ..progress import ProgressCallback
from .interventions import Site, encode, output_logits, run_with_interventions

WHICH = ("used", "softmax")


def _module_dropout(module: torch.nn.Module) -> float:
    for name in ("dropout", "attn_dropout", "attention_dropout", "dropout_p"):
        v = getattr(module, name, None)
        if isinstance(v, torch.nn.Dropout):
            return float(v.p)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return 0.0


class AttentionDropout:
    """Applies attention dropout (rate per site) to the probabilities and records them before and after."""

    def __init__(self, rates: dict[Site, float], generator: torch.Generator):
        self.rates = rates
        self.generator = generator
        self.used: dict[Site, list[torch.Tensor]] = {}
        self.softmax: dict[Site, list[torch.Tensor]] = {}

    def applies(self, site: Site) -> bool:
        return site in self.rates

    def apply(self, site: Site, probs: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        p = self.rates[site]
        out = probs
        if p > 0:
            # drawn on the CPU (the seeded generator lives there): the same masks on every device
            keep = torch.rand(probs.shape, generator=self.generator).to(probs.device) >= p
            out = probs * keep / (1.0 - p)  # (B, H, bq, Nk): inverted dropout, as torch's
        self.softmax.setdefault(site, []).append(probs.detach())
        self.used.setdefault(site, []).append(out.detach())
        return out


@dataclass
class DropoutConsistency:
    """Attention over ``n_runs`` dropout runs: maps (run, layer, head, query, key) summarised."""

    tokens: list[str]
    layers: list[int]
    n_runs: int
    which: str
    mean: np.ndarray  # (layer, head, query, key)
    std: np.ndarray
    cv: np.ndarray  # std / mean (0 where mean == 0)
    pairwise_correlations: np.ndarray  # (n_runs·(n_runs−1)/2,) Pearson r of the whole flattened attention
    prediction_mean: np.ndarray | None  # (C,) mean probability over runs; None for a model without a head
    prediction_std: np.ndarray | None
    rates: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)

    def head_cv(self) -> np.ndarray:
        """(layer, head): mean CV over the allowed (mean > 0) entries."""
        m = self.mean > 0
        return np.where(m, self.cv, 0).sum((2, 3)) / np.maximum(m.sum((2, 3)), 1)


def _has_logits(output) -> bool:
    return getattr(output, "logits", None) is not None or (
        isinstance(output, (tuple, list)) and bool(output) and torch.is_tensor(output[0]))


def dropout_consistency(lm: LoadedModel, text: str, *, n_runs: int = 20, seed: int = 0, p: float | None = None,
                        which: str = "used", progress: ProgressCallback | None = None) -> DropoutConsistency:
    """Attention of ``text`` under MC dropout over ``n_runs`` runs (see the module docstring).

    ``p`` overrides every attention module's dropout rate (default: the model's own, e.g. BERT's
    ``attention_probs_dropout_prob``); hidden dropout keeps the model's own rates. A model without a
    prediction head (a bare encoder such as ``minilm``) gives attention only (``prediction_mean`` is None).
    ``progress(done, n_runs)`` is called after each run.
    """
    if n_runs < 2:
        raise InputError(f"n_runs must be at least 2 to measure consistency, got {n_runs}")
    if which not in WHICH:
        raise InputError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
    if p is not None and not 0.0 <= p < 1.0:
        raise InputError(f"p must be in [0, 1), got {p}")
    inputs, tokens = encode(lm, text)
    modules: dict[Site, torch.nn.Module] = {}
    run_with_interventions(lm, inputs, (), on_call=lambda site, m: modules.setdefault(site, m))
    sites = sorted((s for s in modules if s.stream == "self"), key=lambda s: s.layer)
    rates = {s: (p if p is not None else _module_dropout(modules[s])) for s in sites}
    state = {m: m.training for m in lm.model.modules()}
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    runs, probs = [], []
    try:
        lm.model.train()
        for s in sites:
            modules[s].training = False  # SDPA gets dropout=0; the intervention applies it instead
        for r in range(n_runs):
            iv = AttentionDropout(rates, gen)
            out = run_with_interventions(lm, inputs, [iv])
            rec = iv.used if which == "used" else iv.softmax
            runs.append(torch.stack([torch.cat(rec[s], dim=2)[0] for s in sites]))  # (L, H, N, N)
            if _has_logits(out):  # a bare encoder (no prediction head) gives attention only
                probs.append(torch.softmax(output_logits(lm, out)[0].double(), -1))
            if progress is not None:
                progress(r + 1, n_runs)
    finally:
        for m, t in state.items():
            m.training = t
    maps = torch.stack(runs).double().cpu().numpy()  # (R, L, H, N, N)
    mean, std = maps.mean(0), maps.std(0, ddof=1)
    cv = np.where(mean > 0, std / np.where(mean > 0, mean, 1.0), 0.0)
    flat = maps.reshape(n_runs, -1)
    corr = np.corrcoef(flat)
    iu = np.triu_indices(n_runs, 1)
    pr = torch.stack(probs).cpu().numpy() if probs else None  # (R, C)
    return DropoutConsistency(tokens=tokens.labels(), layers=[s.layer for s in sites], n_runs=n_runs, which=which,
                              mean=mean, std=std, cv=cv, pairwise_correlations=corr[iu],
                              prediction_mean=None if pr is None else pr.mean(0),
                              prediction_std=None if pr is None else pr.std(0, ddof=1), rates={str(s.layer): r for s, r in rates.items()},
                              meta={"model": lm.name, "text": text, "seed": seed})
