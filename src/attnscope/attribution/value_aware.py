"""The value-aware methods by name, as :func:`attnscope.attribution.explain` calls them: one token score per
input token for the prediction's row, and each method's own statement of what it is and is not.

``value_norm`` (Kobayashi et al. 2020) and ``attn_res_ln`` (Kobayashi et al. 2021) are layer-local: their
scores are the last layer's row. ``globenc``, ``alti`` and ``value_zeroing`` aggregate all layers (rollout);
``alti_logit`` is the signed logit contribution for the explained token of a causal LM.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..models import LoadedModel

VALUE_METHODS = ("value_norm", "attn_res_ln", "globenc", "alti", "alti_logit", "value_zeroing")


def applicable(lm: LoadedModel) -> tuple[str, ...]:
    """The value-aware methods defined for this model (``all`` on the command line and the REST default):
    ``globenc`` needs a post-layer-norm encoder, ``alti_logit`` a causal LM; none for other architectures."""
    from .value_mixing import model_parts

    try:
        style = model_parts(lm, "value-aware methods").style
    except Exception:  # an architecture they do not support: asking for one by name gives the reason
        return ()
    return tuple(m for m in VALUE_METHODS if not (m == "globenc" and style != "post_ln")
                 and not (m == "alti_logit" and lm.kind != "causal"))


def value_aware_scores(lm: LoadedModel, text: str, methods: Sequence[str], *, row: int, target: int,
                       position: int | None = None) -> dict[str, Any]:
    """{"scores": {method: (N,) float64}, "notes": {method: {"is", "is_not", "paper"}}} for the ``row`` explained."""
    from .alti import alti_attribution
    from .alti_logit import alti_logit_attribution
    from .block_mixing import attention_block_mixing
    from .globenc import globenc_attribution
    from .value_norms import norm_attention
    from .value_zeroing import value_zeroing_attribution

    scores: dict[str, np.ndarray] = {}
    notes: dict[str, dict[str, str]] = {}
    for m in methods:
        if m == "value_norm":
            r = norm_attention(lm, text, layers=[-1])
        elif m == "attn_res_ln":
            r = attention_block_mixing(lm, text, layers=[-1])
        elif m == "globenc":
            r = globenc_attribution(lm, text)
        elif m == "alti":
            r = alti_attribution(lm, text)
        elif m == "alti_logit":
            r = alti_logit_attribution(lm, text, target=target, position=position)
        elif m == "value_zeroing":
            r = value_zeroing_attribution(lm, text)
        else:
            raise ValueError(f"not a value-aware method: {m}")
        scores[m] = r.token_scores(row)
        notes[m] = {"is": r.what_it_is, "is_not": r.what_it_is_not, "paper": r.meta["paper"]}
    return {"scores": scores, "notes": notes}
