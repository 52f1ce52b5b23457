"""Attention-block mixing with the residual connection and layer norm (Kobayashi, Kuribayashi, Yokoi & Inui,
2021, "Incorporating Residual and Normalization Layers into Analysis of Masked Language Models", EMNLP, §3).

The whole attention block — attention, the residual connection and the layer norm — written as a sum over
input tokens: y_i = Σ_j T_i(x_j) + bias terms, with T_i(x_j) = LN-decomposed(Σ_h α^h_ij f_h(x_j) + δ_ij x_i).
The layer norm is linear once its per-row scale 1/σ_i (taken from the forward) is fixed:
γ ⊙ (z − mean(z)) / σ_i. The score is ‖T_i(x_j)‖; the diagonal carries the residual ("preserving"), the rest
is "mixing". For pre-layer-norm decoders (Llama, GPT-2) the norm sits before the attention, inside f, and
T_i(x_j) = Σ_h α^h_ij f_h(LN(x_j)) + δ_ij x_i. Biases are left out, as in the paper.
"""

from __future__ import annotations

from typing import Iterable

from ..models import LoadedModel
from .value_mixing import MixingResult, decompose

WHAT_IT_IS = ("attention-block mixing ‖T_i(x_j)‖: how much of token i's representation after one layer's "
              "attention, residual and layer norm comes from token j (the diagonal is the residual)")
WHAT_IT_IS_NOT = "not the feed-forward, not an aggregate over layers, and not a causal effect on the prediction"


def attention_block_mixing(lm: LoadedModel, text: str, layers: Iterable[int] | None = None) -> MixingResult:
    """‖T_i(x_j)‖ per layer: ``per_layer`` (layer, query, key) for the ``layers`` asked (default all), and the
    mixing ratio per layer in ``meta["mixing_ratio"]`` (‖Σ_{j≠i} T_i(x_j)‖ share is not computed; the ratio
    given is Σ_{j≠i}‖T_i(x_j)‖ / Σ_j‖T_i(x_j)‖ averaged over tokens)."""
    d = decompose(lm, text, ("resln_norms",), method="attn_res_ln", layers=layers)
    m = d["outputs"]["resln_norms"]  # (L, N, N)
    diag = m.diagonal(axis1=1, axis2=2)  # (L, N)
    ratio = ((m.sum(-1) - diag) / m.sum(-1)).mean(-1)
    return MixingResult("attn_res_ln", d["tokens"], d["special"], d["layers"], m, WHAT_IT_IS, WHAT_IT_IS_NOT,
                        causal=d["causal"], meta={"paper": "Kobayashi et al. 2021 (EMNLP)",
                                                  "mixing_ratio": ratio.tolist()})
