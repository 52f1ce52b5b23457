"""The interpretation caveat shown wherever a reader could take attention weights as causes.

Attention weights say where a head looked, not why a model predicted what it did (Jain & Wallace,
"Attention is not Explanation", NAACL 2019; Wiegreffe & Pinter, "Attention is not not Explanation",
EMNLP 2019). One wording, used by the CLI, the HTML report and the explorer.
"""

ATTENTION_CAVEAT_SHORT = (
    "Attention weights show where each head looked, not why the model predicted what it did."
)

ATTENTION_CAVEAT = (
    "Attention weights show where each head looked, not why the model predicted what it did: they are not "
    "by themselves an explanation of a prediction (Jain & Wallace 2019; Wiegreffe & Pinter 2019). Do not "
    "draw causal or fairness conclusions from attention alone, and do not use it for high-stakes decisions "
    "without other evidence (ablation, attribution with a completeness check, held-out behaviour)."
)
