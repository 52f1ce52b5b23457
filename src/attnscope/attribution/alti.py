"""ALTI, Aggregation of Layer-wise Token-to-token Interactions (Ferrando, Gállego & Costa-jussà, 2022,
"Measuring the Mixing of Contextual Information in the Transformer", EMNLP, §3).

Each layer's attention block is decomposed as y_i = Σ_j T_i(x_j) + bias terms (:mod:`.value_mixing`:
attention, residual and — for post-layer-norm models — the layer norm with its scale from the forward).
The contribution of x_j to y_i is its proximity to the output in L1 distance,
c_ij = max(0, ‖y_i‖₁ − ‖y_i − T_i(x_j)‖₁), normalised per row (eqs. 7–8). The layers are aggregated by
rollout, R_l = C_l · R_{l−1}, giving the input tokens' contributions to each token's final representation.
For pre-layer-norm decoders the norm sits inside T (before the attention), as in Ferrando et al. 2023.
"""

from __future__ import annotations

from ..models import LoadedModel
from .value_mixing import MixingResult, decompose, rollout_of

WHAT_IT_IS = ("ALTI: each input token's contribution to the representation of token i after every layer's "
              "attention block (residual and layer norm included), by L1 proximity, aggregated by rollout")
WHAT_IT_IS_NOT = ("not the feed-forward networks' mixing, not signed, not specific to one output class or token, "
                  "and not a causal effect on the prediction")


def alti_attribution(lm: LoadedModel, text: str) -> MixingResult:
    """ALTI over all layers: ``per_layer`` (layer, query, key) the contributions C_l (rows sum to 1),
    ``aggregated`` (query, key) their rollout."""
    d = decompose(lm, text, ("alti",), method="alti")
    c = d["outputs"]["alti"]
    return MixingResult("alti", d["tokens"], d["special"], d["layers"], c, WHAT_IT_IS, WHAT_IT_IS_NOT,
                        causal=d["causal"], aggregated=rollout_of(c)[-1],
                        meta={"paper": "Ferrando et al. 2022 (EMNLP)"})
