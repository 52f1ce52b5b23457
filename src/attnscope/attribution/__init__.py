"""Methods that need the model: interventions under SDPA, attention gradients (Chefer et al. 2021),
Captum attributions, agreement, head importance, MC dropout, counterfactuals, bias probe, faithfulness.

Every public function takes a :class:`attnscope.models.LoadedModel` and plain Python values and returns
plain results (dataclasses / dicts / numpy), so the REST API can call them directly.
"""

from .ablation import head_importance
from .agreement import ALL_METHODS, Explanation, agreement, explain
from .bias import NOTE as BIAS_NOTE
from .bias import BiasProbeResult, bias_probe
from .captum_methods import CAPTUM_METHODS, Completeness, captum_attributions
from .counterfactual import compare_counterfactuals, token_interventions, words
from .dropout import DropoutConsistency, dropout_consistency
from .faithfulness import FaithfulnessResult, faithfulness
from .gradients import AttentionGradients, attention_gradients, chefer_relevancy
from .interventions import (
    HeadGate, KeepHeads, Knockout, MeanHeads, ProbsProbe, RemoveTopKey, ScaleHeads, ZeroHeads, encode, intervene,
    output_logits, prediction_change, run_with_interventions,
)

__all__ = [
    "ScaleHeads", "ZeroHeads", "MeanHeads", "KeepHeads", "Knockout", "RemoveTopKey", "ProbsProbe", "HeadGate",
    "run_with_interventions", "intervene", "prediction_change", "encode", "output_logits",
    "AttentionGradients", "attention_gradients", "chefer_relevancy",
    "CAPTUM_METHODS", "Completeness", "captum_attributions", "ALL_METHODS", "Explanation", "explain", "agreement",
    "head_importance", "DropoutConsistency", "dropout_consistency",
    "token_interventions", "compare_counterfactuals", "words",
    "BiasProbeResult", "bias_probe", "BIAS_NOTE", "FaithfulnessResult", "faithfulness",
]
