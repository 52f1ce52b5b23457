"""Perturbation robustness of attention: how far each head's attention moves when noise of a given scale is
added to the input embeddings, or to the attention probabilities themselves.

Two perturbation targets (``target``):

- ``"embeddings"``: noise on the input (word) embeddings ``e`` (B, N, D), fed to the model as
  ``inputs_embeds`` (position and token-type embeddings are added by the model as usual).
  ``"gaussian"``: ``e + σ · rms(e_i) · ε`` with ``rms(e_i) = ‖e_i‖ / √D`` per token, so σ is relative to
  the size of each token's embedding; ``"multiplicative"``: ``e · (1 + σ · ε)``; ``ε ~ N(0, 1)``.
- ``"attention"``: noise on the probabilities of every head of every layer through an intervention in the
  attnscope attention function (the layer's output is computed from the noisy probabilities, so later
  layers see the effect). ``"gaussian"``: ``p + σ · ε``; ``"multiplicative"``: ``p · (1 + σ · ε)``; both
  on the keys the clean head gives a non-zero weight, clipped at 0 and renormalised (a row that would
  lose all its weight keeps its clean values).

For each scale and each of ``n_seeds`` seeds, the maps the model actually used are compared with the
clean maps, row by row (query), in float64 nats:

- ``KL(perturbed ‖ clean) = Σ_k q_k log(q_k / p_k)``. This direction is finite for every perturbation
  here: noise on the probabilities never gives weight to a key the clean head gave none, and a softmax
  gives every allowed key a positive weight (a float32 underflow is the only exception).
- ``JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m)``, ``m = (p + q) / 2``: symmetric, bounded by ``ln 2``.

A row divergence is averaged over the query rows of the head, then the mean and standard deviation
over seeds are reported per (scale, layer, head). The prediction change is
:func:`attnscope.attribution.interventions.prediction_change`'s KL and argmax flip for a model with a
prediction head, else ``hidden_change``, the mean over tokens of ``‖h − h_clean‖ / ‖h_clean‖`` for the last hidden states
(a bare encoder).

Robustness score (defined here): per head ``R = 1 − mean_s( JS̄(s) / ln 2 )``, the mean over the given
non-zero scales of the seed-averaged JS divergence normalised by its maximum; ``R ∈ [0, 1]``, 1 = the
head's attention did not move at any scale, 0 = it moved to disjoint support at every scale. R depends on
the scale grid, so compare scores computed with the same scales, target and kind only.

Perturbing inputs to test an explanation's stability follows the "sensitivity" analyses of attention
explanations (Jain & Wallace 2019, "Attention is not Explanation", NAACL, §4: attention under
perturbation; Wiegreffe & Pinter 2019, "Attention is not not Explanation", EMNLP); the divergences are
those of Jain & Wallace's comparisons (JSD between attention distributions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..models import LoadedModel
from ..progress import ProgressCallback
from .interventions import ProbsProbe, Site, encode, output_logits, prediction_change, run_with_interventions

KINDS = ("gaussian", "multiplicative")
TARGETS = ("embeddings", "attention")
MAX_SCALE = 100.0
MAX_SEEDS = 1000
MAX_SCALES = 64


def row_kl(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """KL(q ‖ p) over the last axis, in nats (float64): Σ q log(q / p), with 0 log 0 = 0."""
    q = np.asarray(q, np.float64)
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * (np.log(np.where(q > 0, q, 1.0)) - np.log(np.where(p > 0, p, 1.0))), 0.0)
        terms = np.where((q > 0) & (p <= 0), np.inf, terms)
    return terms.sum(-1)


def row_js(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence over the last axis, in nats (float64), in [0, ln 2]."""
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    m = (p + q) / 2
    return 0.5 * row_kl(p, m) + 0.5 * row_kl(q, m)


@dataclass
class AttentionNoise:
    """Intervention: noise on the attention probabilities of every head at the selected sites
    (module docstring, target ``"attention"``). ``scale == 0`` is a no-op that never touches the layer."""

    kind: str = "gaussian"
    scale: float = 0.0
    generator: torch.Generator | None = None
    stream: str | None = "self"
    layers: Sequence[int] | None = None

    def applies(self, site: Site) -> bool:
        return (float(self.scale) != 0.0 and (self.stream is None or site.stream == self.stream)
                and (self.layers is None or site.layer in self.layers))

    def apply(self, site: Site, probs: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        # drawn on the CPU from the seeded generator: the same noise on every device
        eps = torch.randn(probs.shape, generator=self.generator, dtype=torch.float32).to(probs.device, probs.dtype)
        support = probs > 0  # (B, H, bq, Nk): the keys the clean head weighs
        if self.kind == "gaussian":
            noisy = probs + float(self.scale) * eps
        else:
            noisy = probs * (1.0 + float(self.scale) * eps)
        noisy = noisy.clamp_min(0.0) * support
        total = noisy.sum(-1, keepdim=True)  # (B, H, bq, 1)
        return torch.where(total > 0, noisy / total.clamp_min(torch.finfo(probs.dtype).tiny), probs)


@dataclass
class RobustnessResult:
    """Divergence of attention from the clean maps under noise; arrays (scale, layer, head) unless said."""

    scales: np.ndarray  # (S,)
    target: str
    kind: str
    n_seeds: int
    layers: list[int]
    heads: list[int]
    tokens: list[str]
    kl_mean: np.ndarray  # (S, L, H) mean over seeds of the row-mean KL(perturbed ‖ clean), nats
    kl_std: np.ndarray
    js_mean: np.ndarray  # (S, L, H) mean over seeds of the row-mean JS divergence, nats
    js_std: np.ndarray
    prediction: dict[str, np.ndarray]  # name -> (S, 2): mean, std over seeds
    prediction_metric: str  # "kl" (model with a prediction head) or "hidden_change"
    score: np.ndarray  # (L, H) robustness score R (module docstring)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def model_score(self) -> float:
        """The mean robustness score over heads."""
        return float(self.score.mean())

    def to_dict(self) -> dict[str, Any]:
        def js(x):
            a = np.asarray(x, np.float64)
            return np.where(np.isfinite(a), a, None).tolist()  # inf KL (float32 underflow) -> null in JSON

        return {"type": "RobustnessResult", "target": self.target, "kind": self.kind, "n_seeds": self.n_seeds,
                "scales": self.scales.tolist(), "layers": self.layers, "heads": self.heads, "tokens": self.tokens,
                "kl_mean": js(self.kl_mean), "kl_std": js(self.kl_std), "js_mean": js(self.js_mean),
                "js_std": js(self.js_std), "prediction_metric": self.prediction_metric,
                "prediction": {k: js(v) for k, v in self.prediction.items()}, "score": self.score.tolist(),
                "model_score": self.model_score, "meta": self.meta}


def _check(scales: Sequence[float], n_seeds: int, kind: str, target: str) -> np.ndarray:
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if target not in TARGETS:
        raise InputError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or not 1 <= n_seeds <= MAX_SEEDS:
        raise InputError(f"n_seeds must be an integer in 1..{MAX_SEEDS}, got {n_seeds!r}")
    try:
        s = np.asarray([float(x) for x in scales], np.float64)
    except (TypeError, ValueError):
        raise InputError("scales must be numbers, e.g. 0,0.05,0.1,0.2") from None
    if not 1 <= s.size <= MAX_SCALES:
        raise InputError(f"give 1 to {MAX_SCALES} noise scales, got {s.size}")
    if not np.all(np.isfinite(s)) or (s < 0).any() or (s > MAX_SCALE).any():
        raise InputError(f"noise scales must be in [0, {MAX_SCALE:g}], got {s.tolist()}")
    return s


def _embed_noise(e: torch.Tensor, kind: str, scale: float, gen: torch.Generator) -> torch.Tensor:
    eps = torch.randn(e.shape, generator=gen, dtype=torch.float32).to(e.device, e.dtype)  # (B, N, D)
    if kind == "gaussian":
        rms = e.pow(2).mean(-1, keepdim=True).sqrt()  # (B, N, 1)
        return e + scale * rms * eps
    return e * (1.0 + scale * eps)


def _has_logits(output: Any) -> bool:
    return getattr(output, "logits", None) is not None


def _last_hidden(output: Any) -> torch.Tensor:
    h = getattr(output, "last_hidden_state", None)
    if h is None:
        hs = getattr(output, "hidden_states", None)
        h = hs[-1] if hs else output[0]
    return h[0].double()  # (N, D)


def perturbation_robustness(lm: LoadedModel, text: str, *, scales: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0),
               n_seeds: int = 10, kind: str = "gaussian", target: str = "embeddings", seed: int = 0,
               progress: ProgressCallback | None = None) -> RobustnessResult:
    """Attention divergence from the clean attention of ``text`` under noise (module docstring).

    Noise of each scale in ``scales`` is drawn ``n_seeds`` times (seeds ``seed``, ``seed + 1``, …: the same
    seeds at every scale). Encoders and decoder-only models (the ``self`` stream). ``progress(done, total)``
    is called after each noisy run.
    """
    s_arr = _check(scales, n_seeds, kind, target)
    if lm.kind not in ("encoder", "causal"):
        raise InputError(f"robustness takes encoder or decoder-only models; {lm.name} is {lm.kind}")
    inputs, tokens = encode(lm, text)
    ids = inputs["input_ids"]
    rest = {k: v for k, v in inputs.items() if k != "input_ids"}
    emb_layer = lm.model.get_input_embeddings()
    with torch.no_grad():
        clean_e = emb_layer(ids)  # (1, N, D)

    layers: list[int] = []

    def run(e: torch.Tensor, ivs: list) -> tuple[np.ndarray, Any]:
        probe = ProbsProbe(stream="self")  # after the noise: records the maps the model used
        out = run_with_interventions(lm, {**rest, "inputs_embeds": e}, [*ivs, probe])
        layers[:] = [s.layer for s in probe.sites("self")]
        return probe.maps("self")[:, 0].double().cpu().numpy(), out  # (L, H, N, N)

    clean, clean_out = run(clean_e, [])
    has_logits = _has_logits(clean_out)
    clean_logits = output_logits(lm, clean_out)[0] if has_logits else None
    clean_hidden = None if has_logits else _last_hidden(clean_out)
    S, (L, H) = len(s_arr), clean.shape[:2]
    kl = np.zeros((S, n_seeds, L, H))
    jsd = np.zeros((S, n_seeds, L, H))
    pred = np.zeros((S, n_seeds))
    flips = np.zeros((S, n_seeds))
    done, total = 0, S * n_seeds
    for si, scale in enumerate(s_arr):
        for r in range(n_seeds):
            gen = torch.Generator().manual_seed(seed + r)
            if target == "embeddings":
                maps, out = run(_embed_noise(clean_e, kind, float(scale), gen), [])
            else:
                maps, out = run(clean_e, [AttentionNoise(kind, float(scale), gen)])
            kl[si, r] = row_kl(maps, clean).mean(-1)  # (L, H): mean over query rows
            jsd[si, r] = row_js(clean, maps).mean(-1)
            if has_logits:
                change = prediction_change(clean_logits, output_logits(lm, out)[0])
                pred[si, r], flips[si, r] = change["kl"], float(change["flipped"])
            else:
                h = _last_hidden(out)  # (N, D)
                rel = (h - clean_hidden).norm(dim=-1) / clean_hidden.norm(dim=-1).clamp_min(1e-300)  # (N,)
                pred[si, r] = float(rel.mean())
            done += 1
            if progress is not None:
                progress(done, total)
    ddof = 1 if n_seeds > 1 else 0
    nonzero = s_arr > 0
    js_mean = jsd.mean(1)
    score = 1.0 - (js_mean[nonzero].mean(0) / math.log(2) if nonzero.any() else np.zeros((L, H)))
    prediction = {("kl" if has_logits else "hidden_change"):
                  np.stack([pred.mean(1), pred.std(1, ddof=ddof)], -1)}
    if has_logits:
        prediction["flip_rate"] = np.stack([flips.mean(1), flips.std(1, ddof=ddof)], -1)
    with np.errstate(invalid="ignore"):
        kl_std = kl.std(1, ddof=ddof)
    return RobustnessResult(
        scales=s_arr, target=target, kind=kind, n_seeds=n_seeds, layers=list(layers),
        heads=list(range(H)), tokens=tokens.labels(), kl_mean=kl.mean(1), kl_std=kl_std, js_mean=js_mean,
        js_std=jsd.std(1, ddof=ddof), prediction=prediction,
        prediction_metric="kl" if has_logits else "hidden_change", score=np.clip(score, 0.0, 1.0),
        meta={"model": lm.name, "text": text, "seed": seed,
              "kl_direction": "KL(perturbed || clean)", "units": "nats"})
