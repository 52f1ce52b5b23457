"""GlobEnc (Modarressi, Fayyaz, Yaghoobzadeh & Pilehvar, 2022, "GlobEnc: Quantifying Global Token Attribution
by Incorporating the Whole Encoder Layer in Transformers", NAACL, §2).

Extends the attention-block decomposition of :mod:`.block_mixing` through the second residual connection and
layer norm of a post-layer-norm encoder layer: the LN1-decomposed vectors T_i(x_j) are decomposed by LN2 with
its per-row scale from the forward (the feed-forward network itself is left out, as in the paper),
N_ij = ‖γ₂ ⊙ (T_i(x_j) − mean) / σ₂,i‖. Each layer's matrix is normalised per row and the layers are
aggregated by rollout, R_l = N̂_l · R_{l−1}. Defined for post-LN encoders (BERT family) only.
"""

from __future__ import annotations

from ..errors import InputError
from ..models import LoadedModel
from .value_mixing import MixingResult, decompose, model_parts, rollout_of

WHAT_IT_IS = ("GlobEnc: each input token's share of the final representation of token i, through every encoder "
              "layer's attention, residuals and both layer norms, aggregated by rollout")
WHAT_IT_IS_NOT = ("not the feed-forward networks' mixing (left out), not signed, and not a causal effect on the "
                  "prediction")


def globenc_attribution(lm: LoadedModel, text: str) -> MixingResult:
    """GlobEnc over all layers: ``per_layer`` (layer, query, key) the row-normalised N_ij, ``aggregated``
    (query, key) their rollout."""
    if model_parts(lm, "globenc").style != "post_ln":
        raise InputError(f"globenc is defined for post-layer-norm encoders (BERT family); {lm.name} is a "
                         "pre-layer-norm model: use attn_res_ln or alti")
    d = decompose(lm, text, ("globenc",), method="globenc")
    n = d["outputs"]["globenc"]
    n = n / n.sum(-1, keepdims=True)  # (L, N, N) row-normalised
    return MixingResult("globenc", d["tokens"], d["special"], d["layers"], n, WHAT_IT_IS, WHAT_IT_IS_NOT,
                        causal=d["causal"], aggregated=rollout_of(n)[-1],
                        meta={"paper": "Modarressi et al. 2022 (NAACL)"})
