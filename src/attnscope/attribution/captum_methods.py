"""Token attributions through Captum (Kokhlikyan et al. 2020): integrated gradients, occlusion, LIME,
Shapley value sampling. Nothing here re-implements a method; this module only adapts a Hugging Face
model to Captum's forward-function contract.

Baseline: every non-special token replaced by the tokenizer's padding token (else [UNK], else EOS);
special tokens ([CLS], [SEP], BOS…) are kept as they are (never perturbed) and their score is 0 in
every method. A decoder-only model whose tokenizer adds no BOS (SmolLM2, GPT-2) uses its first token as
the attention sink (Xiao et al. 2024, "Efficient Streaming Language Models with Attention Sinks"): replacing
it throws every layer into another regime, and the straight path from such a baseline is so rough that
integrated gradients do not converge (SmolLM2, "The capital of France is" → " Paris": Σ attributions 155.5
against F(x) − F(x') = 10.3 at 32 steps, −35.1 at 128). So by default that first token is kept in the
baseline like a BOS (``keep_first``): its score is 0 in every method, and the path is smooth (1.3 %
completeness error at 32 steps). Perturbation methods (occlusion, LIME, Shapley) work on the input
embeddings with one feature per token; replacing a token's embedding by the baseline's is replacing the token.

Integrated gradients are checked for completeness on every result (Sundararajan et al. 2017, Axiom
"Completeness": Σ attributions = F(x) − F(x')): the path integral is refined where it is rough (see
:func:`integrated_gradients`), and a result still off by more than ``IG_RTOL`` (5 %) of F(x) − F(x')
(plus ``IG_ATOL``) is flagged ``ok=False`` with its delta and relative error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch

from .._optional import require
from ..errors import InputError, UnknownNameError
from ..models import LoadedModel
from .interventions import encode, output_logits

CAPTUM_METHODS = ("integrated_gradients", "occlusion", "lime", "shapley")
IG_RTOL = 0.05  # completeness tolerance: |Σ attributions − (F(x) − F(x'))| <= IG_RTOL·|F(x) − F(x')| + IG_ATOL
IG_ATOL = 1e-3  # in logit units: a path with (almost) no effect passes with (almost) no attribution


@dataclass(frozen=True)
class Completeness:
    """The completeness check of one integrated-gradients result (Sundararajan et al. 2017, §3):
    ``delta`` = Σ attributions − (F(x) − F(x')), ``relative_error`` = |delta| / |F(x) − F(x')|;
    ``ok`` when |delta| <= ``rtol``·|F(x) − F(x')| + ``atol``. ``steps``: gradient evaluations used,
    ``segments``: pieces of the path they were spent on."""

    attribution_sum: float
    output_difference: float
    delta: float
    relative_error: float
    ok: bool
    steps: int
    segments: int
    rtol: float = IG_RTOL
    atol: float = IG_ATOL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def warning(self) -> str | None:
        """The loud one-line warning for a result that fails the check, else None."""
        if self.ok:
            return None
        return (f"INTEGRATED GRADIENTS DID NOT CONVERGE: the attributions sum to {self.attribution_sum:.4g} but "
                f"F(x) - F(baseline) = {self.output_difference:.4g} (delta {self.delta:.4g}, relative error "
                f"{self.relative_error:.0%} > {self.rtol:.0%}) after {self.steps} gradient steps; these scores are "
                "not attributions. Raise the steps (ig_steps / ig_max_steps, CLI --ig-steps) before using them.")


def completeness(attribution_sum: float, output_difference: float, steps: int, segments: int = 1,
                 rtol: float = IG_RTOL, atol: float = IG_ATOL) -> Completeness:
    """Check Σ attributions = F(x) − F(x') (Sundararajan et al. 2017) within
    ``rtol``·|F(x) − F(x')| + ``atol``."""
    delta = float(attribution_sum) - float(output_difference)
    rel = abs(delta) / abs(output_difference) if output_difference != 0 else (0.0 if delta == 0 else float("inf"))
    ok = bool(np.isfinite(delta) and abs(delta) <= rtol * abs(output_difference) + atol)
    return Completeness(float(attribution_sum), float(output_difference), delta, float(rel), ok, int(steps),
                        int(segments), rtol, atol)


def integrated_gradients(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, baseline: torch.Tensor,
                         target: int, *, n_steps: int = 32, max_steps: int = 256, rtol: float = IG_RTOL,
                         atol: float = IG_ATOL) -> tuple[torch.Tensor, Completeness]:
    """Integrated gradients (Sundararajan et al. 2017) of ``f(x)[:, target]`` along the straight path from
    ``baseline`` to ``x`` (both (1, N, D) input embeddings), with the completeness check, refined where
    the path is rough.

    The integral is first taken with ``n_steps`` Gauss-Legendre nodes (Captum's IntegratedGradients).
    While |Σ attributions − (F(x) − F(x'))| exceeds the tolerance and fewer than ``max_steps`` gradient
    evaluations are spent, the piece of the path with the largest completeness error is halved and each
    half integrated again (Captum on the sub-path, ``max(2, n_steps // 4)`` nodes): on a straight path the
    attributions of the pieces add up to those of the whole, and each piece's own delta (Captum's
    convergence delta, exact: F at its ends minus Σ its attributions) says where the quadrature is poor.
    Returns the attributions (1, N, D) and the :class:`Completeness` of the whole path.
    """
    ca = require("captum.attr", "captum", "integrated gradients")

    if n_steps < 1 or max_steps < n_steps:
        raise InputError(f"integrated gradients need 1 <= n_steps <= max_steps, got {n_steps} and {max_steps}")
    ig = ca.IntegratedGradients(f)
    direction = x - baseline  # (1, N, D)

    def piece(a: float, b: float, nodes: int) -> tuple[torch.Tensor, float]:
        attr, d = ig.attribute(baseline + b * direction, baselines=baseline + a * direction, target=target,
                               n_steps=nodes, method="gausslegendre", return_convergence_delta=True,
                               internal_batch_size=nodes)
        return attr.detach(), float(d.sum())

    pieces: dict[tuple[float, float], tuple[torch.Tensor, float]] = {(0.0, 1.0): piece(0.0, 1.0, n_steps)}
    with torch.no_grad():
        diff = float(f(x)[0, target] - f(baseline)[0, target])
    used, child = n_steps, max(2, n_steps // 4)
    while True:
        attr = sum(v[0] for v in pieces.values())  # (1, N, D)
        check = completeness(float(attr.sum()), diff, used, len(pieces), rtol, atol)
        if check.ok or used + 2 * child > max_steps:
            return attr, check
        (a, b), _ = max(pieces.items(), key=lambda kv: abs(kv[1][1]))
        del pieces[(a, b)]
        m = (a + b) / 2
        pieces[(a, m)] = piece(a, m, child)
        pieces[(m, b)] = piece(m, b, child)
        used += 2 * child


def baseline_token_id(tokenizer) -> int:
    for name in ("pad_token_id", "unk_token_id", "eos_token_id"):
        v = getattr(tokenizer, name, None)
        if isinstance(v, int):
            return v
    return 0


def _forward(lm: LoadedModel, inputs: dict, position: int | None,
             input_name: str = "input_ids") -> Callable[[torch.Tensor], torch.Tensor]:
    """The target logits (B, C) as a function of a batch of ``input_ids`` or ``inputs_embeds`` (the
    other model inputs of ``inputs`` are expanded to the batch)."""
    extra = {k: v for k, v in inputs.items() if k != "input_ids"}

    def f(x: torch.Tensor) -> torch.Tensor:
        kw = {k: v.expand(x.shape[0], -1) for k, v in extra.items()}
        if lm.kind == "causal":
            kw["use_cache"] = False
        return output_logits(lm, lm.model(**{input_name: x}, **kw), position)  # (B, C)

    return f


def baseline_fixed(lm: LoadedModel, special: list[bool], keep_first: bool | None = None) -> list[bool]:
    """Positions the baseline keeps as they are: special tokens, and (``keep_first``; default: for
    decoder-only models) the first token when it is not already a special BOS — the attention sink."""
    fixed = list(map(bool, special))
    if keep_first is None:
        keep_first = lm.kind == "causal"
    if keep_first and fixed and not fixed[0]:
        fixed[0] = True
    return fixed


def _baseline_ids(lm: LoadedModel, ids: torch.Tensor, fixed: list[bool]) -> torch.Tensor:
    base = ids.clone()  # (1, N)
    keep = torch.tensor(fixed, dtype=torch.bool, device=ids.device)
    base[0, ~keep] = baseline_token_id(lm.tokenizer)
    return base


def captum_attributions(lm: LoadedModel, text: str, methods=CAPTUM_METHODS, *, target: int | None = None,
                        position: int | None = None, ig_steps: int = 32, ig_max_steps: int | None = None,
                        n_samples: int = 32, seed: int = 0, keep_first: bool | None = None) -> dict[str, Any]:
    """Token attributions (one score per token) of the target logit by Captum methods.

    ``integrated_gradients``: Sundararajan et al. 2017 on the input embeddings, ``ig_steps``
    Gauss-Legendre steps, refined up to ``ig_max_steps`` (default 8 × ``ig_steps``) gradient evaluations
    where the path is rough, and checked for completeness (:func:`integrated_gradients`).
    ``occlusion``: one token at a time (Zeiler & Fergus 2014). ``lime``: Ribeiro et al. 2016 with a ridge
    surrogate, ``n_samples`` perturbations. ``shapley``: Shapley value sampling (Castro et al. 2009),
    ``n_samples`` permutations. ``keep_first``: keep the first token in the baseline (default: for
    decoder-only models; see the module docstring).
    Returns {"tokens", "special", "fixed" (positions the baseline keeps; score 0), "target",
    "scores": {method: (N,)}, "warnings"} and, for IG, "ig_delta" (|delta|), "ig_output_difference" and
    "ig_completeness" (:meth:`Completeness.to_dict`); "warnings" holds the loud line of a result that
    failed its check.
    """
    ca = require("captum.attr", "captum", "Captum attributions (integrated_gradients, occlusion, lime, shapley)",
                 "or choose methods attention, rollout, attn_x_grad, chefer")
    SkLearnRidge = require("captum._utils.models.linear_model", "captum", "LIME").SkLearnRidge

    for m in methods:
        if m not in CAPTUM_METHODS:
            raise UnknownNameError("captum method", m, CAPTUM_METHODS)
    inputs, tokens = encode(lm, text)
    ids = inputs["input_ids"]  # (1, N)
    f_ids = _forward(lm, inputs, position)
    with torch.no_grad():
        logits = f_ids(ids)[0]
    t = int(logits.argmax()) if target is None else int(target)
    fixed = baseline_fixed(lm, list(tokens.special), keep_first)
    base_ids = _baseline_ids(lm, ids, fixed)
    emb_layer = lm.model.get_input_embeddings()
    out: dict[str, Any] = {"tokens": tokens.labels(text), "special": list(tokens.special), "fixed": fixed,
                           "target": t, "scores": {}, "warnings": []}
    with torch.no_grad():
        x = emb_layer(ids).detach()  # (1, N, D)
        xb = emb_layer(base_ids).detach()  # (1, N, D)
    torch.manual_seed(seed)
    if "integrated_gradients" in methods:
        attr, check = integrated_gradients(_forward(lm, inputs, position, "inputs_embeds"), x, xb, t,
                                           n_steps=ig_steps,
                                           max_steps=8 * ig_steps if ig_max_steps is None else ig_max_steps)
        out["scores"]["integrated_gradients"] = attr.sum(-1)[0].double().cpu().numpy()  # (N,)
        out["ig_output_difference"] = check.output_difference
        out["ig_delta"] = abs(check.delta)
        out["ig_completeness"] = check.to_dict()
        if check.warning():
            out["warnings"].append(check.warning())
    perturb = [m for m in methods if m != "integrated_gradients"]
    if perturb:
        f_emb = torch.no_grad()(_forward(lm, inputs, position, "inputs_embeds"))  # perturbations need no graph
        n, d = x.shape[1], x.shape[2]
        mask = torch.arange(n, device=x.device)[None, :, None].expand(1, n, d).contiguous()  # (1, N, D): feature = token
        if "occlusion" in perturb:
            occ = ca.Occlusion(f_emb).attribute(x, sliding_window_shapes=(1, d), strides=(1, d), baselines=xb,
                                                 target=t, perturbations_per_eval=8)
            out["scores"]["occlusion"] = occ.mean(-1)[0].double().cpu().numpy()  # (N,) each element holds the drop
        if "lime" in perturb:
            lime = ca.Lime(f_emb, interpretable_model=SkLearnRidge(alpha=1.0))
            a = lime.attribute(x, baselines=xb, target=t, feature_mask=mask, n_samples=n_samples,
                               perturbations_per_eval=8)
            out["scores"]["lime"] = a[0, :, 0].double().cpu().numpy()
        if "shapley" in perturb:
            a = ca.ShapleyValueSampling(f_emb).attribute(x, baselines=xb, target=t, feature_mask=mask,
                                                          n_samples=max(1, n_samples // 8), perturbations_per_eval=8)
            out["scores"]["shapley"] = a[0, :, 0].double().cpu().numpy()
    still = np.asarray(fixed, bool)
    for k, v in out["scores"].items():
        v[still] = 0.0  # never perturbed; LIME's surrogate would otherwise give them regression noise
        if not np.all(np.isfinite(v)):
            raise InputError(f"{k} produced non-finite attributions for this input")
    return out
