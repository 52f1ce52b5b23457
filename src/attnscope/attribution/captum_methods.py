"""Token attributions through Captum (Kokhlikyan et al. 2020): integrated gradients, occlusion, LIME,
Shapley value sampling. Nothing here re-implements a method; this module only adapts a Hugging Face
model to Captum's forward-function contract.

Baseline: every non-special token replaced by the tokenizer's padding token (else [UNK], else EOS);
special tokens ([CLS], [SEP], BOS…) are kept as they are (never perturbed) and their score is 0 in
every method. Perturbation methods (occlusion, LIME, Shapley) work on the input embeddings with one feature
per token; replacing a token's embedding by the baseline's is replacing the token.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from .._optional import require
from ..errors import InputError, UnknownNameError
from ..models import LoadedModel
from .interventions import encode, output_logits

CAPTUM_METHODS = ("integrated_gradients", "occlusion", "lime", "shapley")


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


def _baseline_ids(lm: LoadedModel, ids: torch.Tensor, special: list[bool]) -> torch.Tensor:
    base = ids.clone()  # (1, N)
    keep = torch.tensor(special, dtype=torch.bool)
    base[0, ~keep] = baseline_token_id(lm.tokenizer)
    return base


def captum_attributions(lm: LoadedModel, text: str, methods=CAPTUM_METHODS, *, target: int | None = None,
                        position: int | None = None, ig_steps: int = 32, n_samples: int = 32,
                        seed: int = 0) -> dict[str, Any]:
    """Token attributions (one score per token) of the target logit by Captum methods.

    ``integrated_gradients``: LayerIntegratedGradients on the input-embedding layer (Sundararajan et al.
    2017), ``ig_steps`` Gauss-Legendre steps, with Captum's convergence delta (completeness: the
    attributions sum to F(x) − F(baseline) up to the delta). ``occlusion``: one token at a time (Zeiler &
    Fergus 2014). ``lime``: Ribeiro et al. 2016 with a ridge surrogate, ``n_samples`` perturbations.
    ``shapley``: Shapley value sampling (Castro et al. 2009), ``n_samples`` permutations.
    Returns {"tokens", "special", "target", "scores": {method: (N,)}, "ig_delta", "ig_output_difference"}.
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
    base_ids = _baseline_ids(lm, ids, tokens.special)
    emb_layer = lm.model.get_input_embeddings()
    out: dict[str, Any] = {"tokens": tokens.labels(), "special": list(tokens.special), "target": t, "scores": {}}
    torch.manual_seed(seed)
    if "integrated_gradients" in methods:
        lig = ca.LayerIntegratedGradients(f_ids, emb_layer)
        attr, delta = lig.attribute(ids, baselines=base_ids, target=t, n_steps=ig_steps,
                                    return_convergence_delta=True, internal_batch_size=ig_steps)
        out["scores"]["integrated_gradients"] = attr.sum(-1)[0].detach().double().numpy()  # (N,)
        with torch.no_grad():
            out["ig_output_difference"] = float(f_ids(ids)[0, t] - f_ids(base_ids)[0, t])
        out["ig_delta"] = float(delta.abs().max())
    perturb = [m for m in methods if m != "integrated_gradients"]
    if perturb:
        f_emb = torch.no_grad()(_forward(lm, inputs, position, "inputs_embeds"))  # perturbations need no graph
        with torch.no_grad():
            x = emb_layer(ids)  # (1, N, D)
            xb = emb_layer(base_ids)  # (1, N, D)
        n, d = x.shape[1], x.shape[2]
        mask = torch.arange(n)[None, :, None].expand(1, n, d).contiguous()  # (1, N, D): feature = token
        if "occlusion" in perturb:
            occ = ca.Occlusion(f_emb).attribute(x, sliding_window_shapes=(1, d), strides=(1, d), baselines=xb,
                                                 target=t, perturbations_per_eval=8)
            out["scores"]["occlusion"] = occ.mean(-1)[0].double().numpy()  # (N,) each element holds the drop
        if "lime" in perturb:
            lime = ca.Lime(f_emb, interpretable_model=SkLearnRidge(alpha=1.0))
            a = lime.attribute(x, baselines=xb, target=t, feature_mask=mask, n_samples=n_samples,
                               perturbations_per_eval=8)
            out["scores"]["lime"] = a[0, :, 0].double().numpy()
        if "shapley" in perturb:
            a = ca.ShapleyValueSampling(f_emb).attribute(x, baselines=xb, target=t, feature_mask=mask,
                                                          n_samples=max(1, n_samples // 8), perturbations_per_eval=8)
            out["scores"]["shapley"] = a[0, :, 0].double().numpy()
    special = np.asarray(tokens.special, bool)
    for k, v in out["scores"].items():
        v[special] = 0.0  # never perturbed; LIME's surrogate would otherwise give them regression noise
        if not np.all(np.isfinite(v)):
            raise InputError(f"{k} produced non-finite attributions for this input")
    return out
