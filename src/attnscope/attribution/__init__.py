"""Methods that need the model: interventions under SDPA, attention gradients (Chefer et al. 2021),
Captum attributions, agreement, head importance, MC dropout, counterfactuals, bias probe, faithfulness.

Every public function takes a :class:`attnscope.models.LoadedModel` and plain Python values and returns
plain results (dataclasses / dicts / numpy), so the REST API can call them directly.
"""

from .._lazy import lazy_exports

# Public names and the submodule each comes from; a submodule (torch, transformers, Captum behind it) is
# imported on first use so that `attnscope explain --help` starts fast. No submodule shares a public name.
_EXPORTS = {
    "head_importance": ".ablation", "head_interactions": ".ablation", "HeadInteractions": ".ablation",
    "ALL_METHODS": ".explanation", "Explanation": ".explanation",
    "agreement": ".explanation", "explain": ".explanation", "BIAS_NOTE": ".bias:NOTE",
    "BiasProbeResult": ".bias", "bias_probe": ".bias", "CAPTUM_METHODS": ".captum_methods",
    "Completeness": ".captum_methods", "captum_attributions": ".captum_methods",
    "compare_counterfactuals": ".counterfactual",
    "token_interventions": ".counterfactual", "words": ".counterfactual", "DropoutConsistency": ".dropout",
    "dropout_consistency": ".dropout", "FaithfulnessResult": ".aopc", "faithfulness": ".aopc",
    "AttentionGradients": ".gradients", "attention_gradients": ".gradients", "chefer_relevancy": ".gradients",
    "HeadGate": ".interventions", "KeepHeads": ".interventions", "Knockout": ".interventions",
    "MeanHeads": ".interventions", "ProbsProbe": ".interventions", "RemoveTopKey": ".interventions",
    "ScaleHeads": ".interventions", "ZeroHeads": ".interventions", "encode": ".interventions",
    "intervene": ".interventions", "output_logits": ".interventions", "prediction_change": ".interventions",
    "run_with_interventions": ".interventions",
    "benchmark_faithfulness": ".faithfulness_benchmark", "BenchmarkResult": ".faithfulness_benchmark",
    "ERASER_FRACTIONS": ".aopc",
    "attnlrp_attribution": ".attnlrp", "AttnLRPResult": ".attnlrp", "Conservation": ".attnlrp",
    "generation_attribution": ".generation", "seq2seq_attribution": ".generation",
    "GenerationAttribution": ".generation", "METHOD_NOTES": ".method_notes:NOTES",
    "MixingResult": ".value_mixing", "VALUE_METHODS": ".value_aware", "methods_for": ".explanation",
    "norm_attention": ".value_norms", "attention_block_mixing": ".block_mixing", "globenc_attribution": ".globenc",
    "alti_attribution": ".alti", "alti_logit_attribution": ".alti_logit", "value_zeroing_attribution": ".value_zeroing",
    "perturbation_robustness": ".robustness", "RobustnessResult": ".robustness", "AttentionNoise": ".robustness",
    "syntactic_roles": ".linguistic_heads", "coreference_roles": ".linguistic_heads",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "perturbation_robustness", "RobustnessResult", "AttentionNoise", "syntactic_roles", "coreference_roles",
    "ScaleHeads", "ZeroHeads", "MeanHeads", "KeepHeads", "Knockout", "RemoveTopKey", "ProbsProbe", "HeadGate",
    "run_with_interventions", "intervene", "prediction_change", "encode", "output_logits",
    "AttentionGradients", "attention_gradients", "chefer_relevancy",
    "CAPTUM_METHODS", "Completeness", "captum_attributions", "ALL_METHODS", "Explanation", "explain", "agreement",
    "head_importance", "head_interactions", "HeadInteractions", "DropoutConsistency", "dropout_consistency",
    "token_interventions", "compare_counterfactuals", "words",
    "BiasProbeResult", "bias_probe", "BIAS_NOTE", "FaithfulnessResult", "faithfulness",
    "benchmark_faithfulness", "BenchmarkResult", "ERASER_FRACTIONS",
    "attnlrp_attribution", "AttnLRPResult", "Conservation", "generation_attribution", "seq2seq_attribution",
    "GenerationAttribution", "METHOD_NOTES",
    "MixingResult", "VALUE_METHODS", "methods_for", "norm_attention", "attention_block_mixing", "globenc_attribution",
    "alti_attribution", "alti_logit_attribution", "value_zeroing_attribution",
]
