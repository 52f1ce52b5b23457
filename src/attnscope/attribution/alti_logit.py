"""ALTI-Logit (Ferrando, Gállego, Tsiamas & Costa-jussà, 2023, "Explaining How Transformers Use Context to
Build Predictions", ACL, §3–4), for the predicted (or a given) next token w of a causal language model.

The final norm before the LM head is linear once its per-row scale 1/s is fixed (taken from the forward), so
each layer's attention output at the predicted position i splits into direct logit contributions of the
layer's input tokens: Δlogit^l_{w←j} = (Σ_h α^h_ij f_h(x^{l−1}_j)) · (γ ⊙ U_w) / s_i (the norm's centring folded
into the direction for a LayerNorm). Each layer-input representation x^{l−1}_j is itself a mixture of the
input tokens, given by the ALTI rollout up to layer l−1 (identity before the first layer); ALTI-Logit is
Σ_l Σ_k Δlogit^l_{w←k} · R^{l−1}_{kj}. Scores are signed logit contributions.
"""

from __future__ import annotations

import numpy as np

from ..models import LoadedModel
from .value_mixing import MixingResult, decompose, rollout_of

WHAT_IT_IS = ("ALTI-Logit: each input token's signed contribution to the predicted token's logit through every "
              "layer's attention, propagated to the input tokens by ALTI")
WHAT_IT_IS_NOT = ("not the feed-forward networks' or the embedding's direct logit contributions (left out), and "
                  "a linearisation of the final norm, not a causal effect")


def alti_logit_attribution(lm: LoadedModel, text: str, *, target: int | None = None, position: int | None = None) -> MixingResult:
    """ALTI-Logit for the token ``target`` (default the prediction) at ``position`` (default the last).

    ``per_layer`` (layer, query, key): Δlogit^l (only the explained row is meaningful); ``aggregated``
    (query, key): row ``position`` holds the ALTI-Logit scores (other rows 0); ``meta["per_layer_scores"]``
    (layer, key): each layer's part of the scores."""
    d = decompose(lm, text, ("alti", "logit"), method="alti_logit", logit_target=target, position=position)
    c, dl = d["outputs"]["alti"], d["outputs"]["logit"]  # (L, N, N) each
    n = c.shape[-1]
    row = (n - 1) if position is None else position % n
    r = rollout_of(c)  # (L, N, N): R_l up to and including layer l
    prev = np.concatenate([np.eye(n)[None], r[:-1]])  # R_{l-1}
    per_layer_scores = np.einsum("lk,lkj->lj", dl[:, row, :], prev)  # (L, N)
    agg = np.zeros((n, n))
    agg[row] = per_layer_scores.sum(0)
    t = int(np.argmax(d["logits"])) if target is None else int(target)
    return MixingResult("alti_logit", d["tokens"], d["special"], d["layers"], dl, WHAT_IT_IS, WHAT_IT_IS_NOT,
                        causal=d["causal"], aggregated=agg,
                        meta={"paper": "Ferrando et al. 2023 (ACL)", "target": t, "row": row,
                              "per_layer_scores": per_layer_scores.tolist()})
