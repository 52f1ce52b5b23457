"""What each attribution method is and is not: one short sentence per method, in one table.

Every result that carries scores of a method carries its note (``Explanation.notes``, the REST answer's
``notes``, the CLI's method table), and docs/attribution.md shows the same table (a test checks it). A method
with its own check (integrated gradients: completeness, Sundararajan et al. 2017; AttnLRP: conservation,
Achtibat et al. 2024) names it in ``CHECKS``; a result that fails it is flagged and kept out of every
comparison (:mod:`.explanation`).
"""

from __future__ import annotations

NOTES: dict[str, str] = {
    "attention": "Last-layer attention weights at the prediction row, heads averaged: where the heads read, not "
                 "why the model decided.",
    "rollout": "Attention multiplied through the layers with the residual (Abnar & Zuidema 2020): how positions "
               "could mix, not what the prediction depends on.",
    "attn_x_grad": "Attention times its gradient, averaged over layers and heads: a first-order local effect of "
                   "attention edges on the target, not a decomposition of it.",
    "chefer": "Gradient-weighted attention rollout (Chefer et al. 2021): positive-only relevance without any "
              "conservation, not signed evidence.",
    "integrated_gradients": "Gradients integrated from a pad-token baseline (Sundararajan et al. 2017): the logit "
                            "change from that baseline split over tokens, meaningful only relative to that baseline.",
    "occlusion": "Logit drop when one token is replaced by the baseline: single-token effects, blind to "
                 "redundancy and interactions.",
    "lime": "A ridge surrogate fitted to random token removals (Ribeiro et al. 2016): a sampled local linear "
            "approximation, not the model's mechanism.",
    "shapley": "Sampled Shapley values of token removal (Castro et al. 2009): fair shares of the logit change "
               "under removal, with sampling noise.",
    "attnlrp": "Layer-wise relevance of the target logit through every layer (Achtibat et al. 2024): the logit "
               "split into token shares plus what biases and softmax absorb, by chosen rules, not a causal effect.",
    "grad_x_input": "Gradient times input embedding: a first-order local sensitivity of the target logit, not "
                    "the effect of removing the token.",
    "value_norm": "Attention weight times the norm of the token's value vector through the output projection, "
                  "heads summed, last layer (Kobayashi et al. 2020): what one layer's attention adds from each "
                  "token, not the residual stream or other layers.",
    "attn_res_ln": "The last attention block with its residual and layer norm split over the input tokens "
                   "(Kobayashi et al. 2021): each token's share of one layer's output, not across layers or "
                   "through the feed-forward.",
    "globenc": "Attention blocks with both residuals and layer norms split over tokens and multiplied through the "
               "layers (Modarressi et al. 2022): token shares of the final representation, feed-forward mixing "
               "left out, not a causal effect.",
    "alti": "Attention blocks with residual and layer norm split over tokens, by L1 proximity, multiplied through "
            "the layers (Ferrando et al. 2022): token shares of the final representation, not specific to the "
            "predicted class or token.",
    "alti_logit": "Each layer's attention update of the predicted token's logit split over tokens and carried to "
                  "the inputs by ALTI (Ferrando et al. 2023): signed logit shares through attention only, final "
                  "norm linearised, not a causal effect.",
    "value_zeroing": "Cosine change of each layer's output when one token's value vector is zeroed, multiplied "
                     "through the layers (Mohebbi et al. 2023): a measured context-mixing effect, not a change of "
                     "the prediction.",
}

# method -> the name of its own check (a result that fails it is flagged and never ranked)
CHECKS: dict[str, str] = {"integrated_gradients": "completeness", "attnlrp": "conservation"}


def note(method: str) -> str:
    """The note of ``method`` (a method without one says so rather than pass silently)."""
    return NOTES.get(method, "No note for this method yet: read its documentation before trusting it.")


def notes(methods) -> dict[str, str]:
    """{method: note} for these methods, in their order."""
    return {m: note(m) for m in methods}


def markdown_table(methods=None) -> str:
    """The table as Markdown (method | its own check | what it is and is not), as docs/attribution.md shows it."""
    rows = ["| method | own check | what it is and is not |", "|---|---|---|"]
    for m in methods or NOTES:
        rows.append(f"| `{m}` | {CHECKS.get(m, '—')} | {note(m)} |")
    return "\n".join(rows)
