"""Norm-based attention: ‖α_ij f(x_j)‖ (Kobayashi, Kuribayashi, Yokoi & Inui, 2020, "Attention is Not Only a
Weight: Analyzing Transformers with Vector Norms", EMNLP, §3).

An attention head's output for query i is Σ_j α_ij f(x_j), with f(x) = (x W_V + b_V) W_O the value vector
carried through the head's slice of the output projection. A large weight on a token whose transformed
vector is short contributes little; the norm ‖α_ij f(x_j)‖ measures what the head actually adds from
token j. Per head it is α^h_ij ‖f_h(x_j)‖; summed over heads it is ‖Σ_h α^h_ij f_h(x_j)‖ (the vectors added
before the norm, as the paper's "‖Σαf‖"). The output-projection bias b_O is shared by every token and left
out, as in the paper. Recorded through the registered attention function (:mod:`.value_mixing`).
"""

from __future__ import annotations

from typing import Iterable

from ..models import LoadedModel
from .value_mixing import MixingResult, decompose

WHAT_IT_IS = ("norm-based attention ‖Σ_h α_ij f_h(x_j)‖: the size of what one layer's attention adds to token i "
              "from token j, value vectors and output projection included")
WHAT_IT_IS_NOT = ("not the residual stream or layer norm's share, not the feed-forward, not other layers, and not "
                  "a causal effect on the prediction")


def norm_attention(lm: LoadedModel, text: str, layers: Iterable[int] | None = None) -> MixingResult:
    """Per head α^h_ij‖f_h(x_j)‖ (``per_head``, (layer, head, query, key)) and summed over heads
    ‖Σ_h α^h_ij f_h(x_j)‖ (``per_layer``, (layer, query, key)) for the ``layers`` asked (default all)."""
    d = decompose(lm, text, ("head_norms", "sum_norms"), method="value_norm", layers=layers)
    return MixingResult("value_norm", d["tokens"], d["special"], d["layers"], d["outputs"]["sum_norms"],
                        WHAT_IT_IS, WHAT_IT_IS_NOT, causal=d["causal"], per_head=d["outputs"]["head_norms"],
                        meta={"paper": "Kobayashi et al. 2020 (EMNLP)"})
