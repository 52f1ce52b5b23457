"""Request and response models of the REST API (they generate the OpenAPI document at /openapi.json)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

Mode = Literal["full", "stats", "topk"]
Format = Literal["json", "binary", "safetensors"]

# Every number a request carries is bounded here (422 outside), so nothing downstream sees a 10**30 seed, an
# infinite factor or a layer index that overflows a tensor index.
MAX_INDEX = 4095  # layers / heads of any served model
MAX_POSITION = 1_000_000  # token positions (texts are limited to max_text_chars anyway)
LayerIndex = Annotated[int, Field(ge=-MAX_INDEX - 1, le=MAX_INDEX)]  # negative counts from the end
HeadIndex = Annotated[int, Field(ge=-MAX_INDEX - 1, le=MAX_INDEX)]
Position = Annotated[int, Field(ge=-MAX_POSITION, le=MAX_POSITION)]
TokenIndex = Annotated[int, Field(ge=0, le=2**31 - 1)]  # class index, token id, label
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, description="Random seed, 0..2**32-1.")]
Count = Annotated[int, Field(ge=1, le=100_000)]  # steps / samples / runs (the server's own limits are lower)
ModelName = Annotated[str, Field(min_length=1, max_length=1000)]  # a catalogue name, or an allowed path


def _has_surrogate(x: Any) -> bool:
    if isinstance(x, str):
        return any("\ud800" <= ch <= "\udfff" for ch in x)
    if isinstance(x, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return any(_has_surrogate(v) for v in x)
    return False


class _Strict(BaseModel):
    """Base of every request body: unknown fields, NaN/±Infinity and lone UTF-16 surrogates are refused (422)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="after")
    def _no_surrogates(self):
        # JSON allows "\ud800" escapes that are no Unicode text: tokenizers and UTF-8 encoding fail on them
        for name, value in self.__dict__.items():
            if _has_surrogate(value):
                raise ValueError(f"{name} holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape); "
                                 "send valid Unicode text")
        return self


class AnalyzeRequest(_Strict):
    text: str = Field(..., min_length=1, description="The text (source text for encoder-decoders).",
                      examples=["The cat sat on the mat."])
    text_pair: str | None = Field(None, min_length=1, description="Second sentence of a pair (encoders).")
    target: str | None = Field(None, min_length=1, description="Target text (teacher forcing) for encoder-decoders.")
    model: ModelName | None = Field(None, description="Model name; the server's default when omitted. See GET /v1/models.")
    layers: list[LayerIndex] | None = Field(None, description="Model layer indices to record (negative counts from "
                                                            "the end).", max_length=256)
    heads: list[HeadIndex] | None = Field(None, description="Model head indices to record.", max_length=256)
    mode: Mode = Field("full", description="full: probability maps; stats: per-row statistics; topk: top-k keys.")
    top_k: int = Field(8, ge=1, le=64, description="Keys kept per query in mode topk.")
    format: Format = Field("json", description="json, binary (application/vnd.attnscope.arrays) or safetensors "
                                               "(an AttentionTrace file). `Accept` can ask for binary too.")


class TokensOut(BaseModel):
    text: list[str]
    offsets: list[list[int]]
    special: list[bool]
    ids: list[int]


class StreamOut(BaseModel):
    layers: list[int]
    heads: list[int]
    query_tokens: TokensOut
    key_tokens: TokensOut
    causal: bool
    weights: list[Any] | None = Field(None, description="(layer, head, query, key) probabilities, mode full.")
    stats: dict[str, list[Any]] | None = Field(None, description="name -> (layer, head, query), mode stats.")
    head_stats: dict[str, list[list[float]]] | None = Field(None, description="name -> (layer, head).")
    topk: dict[str, list[Any]] | None = Field(None, description="values / indices, each (layer, head, query, k).")


class TraceOut(BaseModel):
    model: str
    kind: str
    dims: list[str] = ["layer", "head", "query", "key"]
    texts: dict[str, str]
    streams: dict[str, StreamOut]
    meta: dict[str, Any]


class BatchRequest(_Strict):
    texts: list[str] = Field(..., min_length=1, description="Texts to profile (per-head statistics each).")
    model: ModelName | None = None
    layers: list[LayerIndex] | None = Field(None, max_length=256)
    heads: list[HeadIndex] | None = Field(None, max_length=256)


class BatchItem(BaseModel):
    index: int
    n_tokens: int
    head_stats: dict[str, list[list[float]]] = Field(..., description="name -> (layer, head): mean over query rows.")


class BatchOut(BaseModel):
    model: str
    layers: list[int]
    heads: list[int]
    results: list[BatchItem]


class ModelOut(BaseModel):
    name: str
    kind: str
    architecture: str = ""
    layers_x_heads: str = ""
    description: str = ""
    status: str = ""
    allowed: bool
    loaded: bool
    default: bool


class AnalysisOut(BaseModel):
    name: str
    summary: str
    result: str
    needs: list[str]
    square: bool
    tags: list[str]
    params: dict[str, Any]


class AnalysisRunBase(_Strict):
    """What to analyse; each analysis's route adds its own typed ``params`` (analysis_params.py)."""

    text: str | None = Field(None, min_length=1, description="Text to capture (or give trace_id).")
    text_pair: str | None = Field(None, min_length=1)
    target: str | None = Field(None, min_length=1)
    trace_id: str | None = Field(None, max_length=64, description="A trace the explorer already captured "
                                                                  "(POST /v1/traces).")
    model: ModelName | None = None
    layers: list[LayerIndex] | None = Field(None, max_length=256)
    heads: list[HeadIndex] | None = Field(None, max_length=256)


class RunAnalysisRequest(AnalysisRunBase):
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword parameters of the analysis.")


class TraceRequest(_Strict):
    text: str = Field(..., min_length=1)
    text_pair: str | None = Field(None, min_length=1)
    target: str | None = Field(None, min_length=1)
    model: ModelName | None = None
    truncate: bool = Field(False, description="Keep the model's first max-length tokens of a longer text.")
    overview: bool = Field(False, description="With Accept: application/vnd.attnscope.arrays, answer the binary "
                                              "container: this summary as its header and each stream's model-view "
                                              "thumbnails (arrays overview/<stream>, as GET .../overview).")


class NeuronRequest(_Strict):
    text: str = Field(..., min_length=1)
    text_pair: str | None = Field(None, min_length=1)
    model: ModelName | None = None
    layer: LayerIndex = 0
    head: HeadIndex = 0
    query: Position = Field(0, description="Query token position (negative counts from the end).")
    truncate: bool = False


class PooledRequest(_Strict):
    text: str = Field(..., min_length=1)
    model: ModelName | None = None
    layers: list[LayerIndex] | None = Field(None, max_length=256)
    heads: list[HeadIndex] | None = Field(None, max_length=256)
    grid: int = Field(64, ge=4, le=128, description="Tiles per side.")
    region: tuple[Position, Position, Position, Position] | None = Field(
        None, description="(query_start, query_stop, key_start, key_stop) window to zoom into; default the whole map.")
    truncate: bool = False


class CompareRequest(_Strict):
    a: str = Field(..., min_length=1, max_length=64, description="Trace A: an id from POST /v1/traces or "
                                                                   "/v1/traces/upload.")
    b: str = Field(..., min_length=1, max_length=64, description="Trace B, compared with A head by head.")
    stream: str | None = Field(None, max_length=32, description="Stream both traces hold (default: self / the first).")
    align: Literal["position", "tokens"] = Field("position", description="position: equal lengths; tokens: the "
                                                                         "tokens both inputs share.")


class GenerateRequest(_Strict):
    prompt: str = Field(..., min_length=1)
    model: ModelName | None = None
    max_new_tokens: int = Field(16, ge=1, le=256)
    do_sample: bool = False


class ErrorBody(BaseModel):
    type: str
    message: str
    details: list[Any] | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: str
    default_model: str
    loaded_models: list[str]
    queue_waiting: int
    busy: bool


# ---------------------------------------------------------------------------- attribution (/v1/explain …)
ExplainMethod = Literal["attention", "rollout", "attn_x_grad", "chefer", "integrated_gradients", "occlusion", "lime",
                        "shapley", "value_norm", "attn_res_ln", "globenc", "alti", "alti_logit",
                        "value_zeroing", "attnlrp"]  # == attnscope.attribution.ALL_METHODS (tested)


class _Target(_Strict):
    target_class: TokenIndex | str | None = Field(None, description="Classifiers: class index or label "
                                                                    "(config.id2label); default the predicted class.")
    target_token: TokenIndex | str | None = Field(None, description="Language models: token id, or a string that is "
                                                                    "exactly one token (e.g. \" Paris\"); default the "
                                                                    "predicted token.")


class ExplainRequest(_Target):
    text: str = Field(..., min_length=1, examples=["The acting was wooden but the soundtrack was wonderful."])
    model: ModelName | None = Field(None, description="A classifier or a causal language model (GET /v1/models).")
    methods: list[ExplainMethod] = Field(list(get_args(ExplainMethod)), min_length=1,
                                         description="Token-importance methods to compute and compare.")
    position: Position | None = Field(None, description="Language models: the position whose next-token logit is "
                                                   "explained (default the last).")
    ig_steps: Count = Field(32, description="Integrated-gradients steps (server limit: max_samples).")
    n_samples: Count = Field(32, description="LIME samples; Shapley uses n_samples/8 permutations "
                                                 "(server limit: max_samples).")
    top_k: int = Field(3, ge=1, le=64, description="k of the top-k overlap in the agreement rows.")
    absolute: bool = Field(True, description="Compare scores by magnitude (signed methods vs attention).")
    seed: Seed = Field(0, description="Seed of the sampling methods (LIME, Shapley), 0..2**32-1.")
    faithfulness: bool = Field(False, description="Also compute deletion/insertion curves and AOPC per method.")
    allow_random_head: bool = Field(False, description="Explain even when the model's prediction head was "
                                                       "initialised at random on load (the answer's warnings say so).")
    include_unconverged: bool = Field(False, description="Keep integrated gradients in the agreement rows even when "
                                                         "they fail their completeness check.")


class AgreementRow(BaseModel):
    a: str
    b: str
    spearman: float | None = Field(None, description="null where a method is constant on this input")
    spearman_p: float | None = None
    kendall: float | None = None
    kendall_p: float | None = None
    topk_overlap: float
    k: int
    n: int = Field(..., description="non-special tokens compared")


class ExplainOut(BaseModel):
    model: str
    text: str
    tokens: list[str]
    special: list[bool]
    target: int
    target_label: str
    probability: float
    scores: dict[str, list[float]] = Field(..., description="method -> one score per token (special tokens: 0 for "
                                                            "the Captum methods)")
    agreement: list[AgreementRow] = Field(..., description="every method against attention and rollout")
    meta: dict[str, Any]
    faithfulness: dict[str, Any] | None = Field(None, description="fractions, curves, aopc (when asked for)")
    warnings: list[str] = Field([], description="loud lines to show with the result: a random prediction head, "
                                                "integrated gradients that failed their completeness check")
    completeness_ok: bool | None = Field(None, description="integrated gradients passed the completeness check "
                                                           "(null when not computed); meta.ig_completeness has the numbers")
    notes: dict[str, str] = Field({}, description="method -> what it is and is not, one sentence")
    checks: dict[str, dict[str, Any]] = Field({}, description="method -> {check, ok} for methods with their own check "
                                                              "(integrated_gradients: completeness, attnlrp: "
                                                              "conservation); meta has the numbers")
    failed_checks: list[str] = Field([], description="methods that failed their own check: flagged, left out of the "
                                                     "agreement rows unless include_unconverged")


HeadPair = tuple[LayerIndex, HeadIndex]
Edge = tuple[Position, Position]


class ZeroSpec(_Strict):
    type: Literal["zero"]
    heads: list[HeadPair] = Field(..., min_length=1, description="(layer, head) pairs whose output becomes zero.")


class ScaleSpec(_Strict):
    type: Literal["scale"]
    heads: list[HeadPair] = Field(..., min_length=1)
    factor: float = Field(..., ge=-1000.0, le=1000.0, description="Multiplies the heads' probabilities (and so "
                                                                    "their output); finite, -1000..1000.")


class MeanSpec(_Strict):
    type: Literal["mean"]
    heads: list[HeadPair] = Field(..., min_length=1, description="Each becomes uniform over its allowed keys.")


class KeepSpec(_Strict):
    type: Literal["keep"]
    heads: list[HeadPair] = Field(..., description="Keep only these heads; every other head is zeroed.")


class KnockoutSpec(_Strict):
    type: Literal["knockout"]
    keys: list[Position] = Field(default_factory=list, description="Key positions blocked for every (selected) query.")
    edges: list[Edge] = Field(default_factory=list, description="Explicit (query, key) edges to block.")
    queries: list[Position] | None = Field(None, description="Restrict `keys` to these query rows.")
    layers: list[LayerIndex] | None = Field(None, description="Layers where it applies (default all).")
    heads: list[HeadIndex] | None = Field(None, description="Heads where it applies (default all).")


class RemoveTopKeySpec(_Strict):
    type: Literal["remove_top_key"]
    heads: list[HeadPair] | None = Field(None, description="(layer, head) pairs; default every head.")
    k: int = Field(1, ge=1, le=64, description="Most-attended keys removed per row (then renormalised).")


Intervention = Annotated[ZeroSpec | ScaleSpec | MeanSpec | KeepSpec | KnockoutSpec | RemoveTopKeySpec,
                         Field(discriminator="type")]


class AblateRequest(_Target):
    texts: list[str] = Field(..., min_length=1, description="Texts (server limit: max_attribution_texts).")
    model: ModelName | None = None
    interventions: list[Intervention] | None = Field(None, description="Applied together to every text; the answer "
                                                                       "is the prediction change per text.")
    importance: Literal["ablation", "gradient"] | None = Field(
        None, description="Head importance over the texts (Michel et al. 2019): zero one head at a time, or "
                          "E|dL/d(head scale)|.")
    labels: list[TokenIndex] | None = Field(None, description="importance: one gold label (class / token id) per text; "
                                                        "default the unablated prediction.")
    position: Position | None = Field(None, description="interventions, language models: which position's next-token "
                                                   "logits (default the last).")


class ChangeOut(BaseModel):
    kl: float = Field(..., description="KL(p_base || p_new), nats")
    prob_shift: float = Field(..., description="p_new(target) - p_base(target)")
    logit_diff: float = Field(..., description="logit_new(target) - logit_base(target)")
    target: int
    target_label: str
    base_prob: float
    new_prob: float
    flipped: bool


class AblateItem(ChangeOut):
    index: int
    tokens: list[str]


class HeadScoresOut(BaseModel):
    method: str
    layers: list[int]
    heads: list[int]
    scores: dict[str, list[list[float]]] = Field(..., description="metric -> (layer, head)")


class AblateOut(BaseModel):
    model: str
    results: list[AblateItem] | None = None
    importance: HeadScoresOut | None = None


class ProbeRequest(_Strict):
    model: ModelName | None = Field(None, description="Any encoder or decoder-only model (no prediction head needed).")
    groups: dict[str, list[str]] | None = Field(None, description="group -> words; default he/she/they.",
                                                examples=[{"he": ["he", "him"], "she": ["she", "her"]}])
    templates: list[str] | None = Field(None, description="Sentences with one {} for the group word; default: "
                                                          "built-in occupation templates.")
    direction: Literal["to", "from"] = Field("to", description="to: attention the other tokens pay to the group "
                                                               "word; from: attention from it to attribute_words.")
    attribute_words: list[str] | None = None
    layers: list[LayerIndex] | None = Field(None, description="Layers averaged (default all).", min_length=1,
                                            max_length=256)


class ProbeSample(BaseModel):
    group: str
    word: str
    template: str
    sentence: str
    value: float | None


class ProbeTest(BaseModel):
    a: str
    b: str
    mean_a: float
    mean_b: float
    t: float | None = Field(None, description="Welch's t (unequal variances)")
    p: float | None = None
    cohens_d: float
    hedges_g: float
    n_a: int
    n_b: int


class ProbeOut(BaseModel):
    model: str
    direction: str
    values: dict[str, list[float]] = Field(..., description="group -> one value per (template, word)")
    samples: list[ProbeSample]
    tests: list[ProbeTest]
    note: str = Field(..., description="Attention weights alone are not evidence of model bias.")
    meta: dict[str, Any]


class CounterfactualRequest(_Target):
    text: str = Field(..., min_length=1)
    model: ModelName | None = None
    alternatives: list[str] | None = Field(None, description="Counterfactual texts to compare with `text`; without "
                                                             "them every word is edited in turn (`mode`).")
    mode: Literal["mask", "replace", "delete"] = "mask"
    replacement: str | None = Field(None, min_length=1, description="The word put in for mode=replace.")


class CounterfactualRow(ChangeOut):
    attention_mse: float | None
    attention_kl: float | None
    aligned_tokens: int
    word: str | None = Field(None, description="per-word edits: the word edited")
    start: int | None = None
    end: int | None = None
    tokens: list[int] | None = Field(None, description="per-word edits: positions of all its sub-tokens")
    edited_text: str | None = None
    text: str | None = Field(None, description="alternatives: the counterfactual text")
    changed_tokens: list[str] | None = None
    new_tokens: list[str] | None = None


class CounterfactualOut(BaseModel):
    model: str
    text: str
    tokens: list[str]
    kind: Literal["words", "alternatives"]
    rows: list[CounterfactualRow] = Field(..., description="words: ranked by KL, largest first; alternatives: in "
                                                           "the given order")


class DropoutRequest(_Strict):
    text: str = Field(..., min_length=1)
    model: ModelName | None = None
    n_runs: int = Field(20, ge=2, le=100_000, description="Dropout runs (server limit: max_runs).")
    p: float | None = Field(None, ge=0.0, lt=1.0, description="Attention dropout rate (default: the model's own).")
    which: Literal["used", "softmax"] = Field("used", description="Maps after (used) or before attention dropout.")
    seed: Seed = 0
    include_maps: bool = Field(False, description="Also return mean/std/cv maps (layer, head, query, key); "
                                                  "limited by max_json_elements.")


class PredictionOut(BaseModel):
    index: int
    label: str
    mean: float
    std: float


class DropoutOut(BaseModel):
    model: str
    tokens: list[str]
    layers: list[int]
    n_runs: int
    which: str
    rates: dict[str, float] = Field(..., description="layer -> attention dropout rate used")
    pairwise_correlations: list[float | None] = Field(..., description="Pearson r of every pair of runs")
    correlation: dict[str, float | None] = Field(..., description="mean, min, max of the pairwise correlations")
    head_cv: list[list[float]] = Field(..., description="(layer, head): mean coefficient of variation")
    predictions: list[PredictionOut] | None = Field(None, description="top classes/tokens by mean probability over "
                                                                      "the runs (null for a model without a head)")
    maps: dict[str, list[Any]] | None = Field(None, description="mean, std, cv: (layer, head, query, key)")


# ---------------------------------------------------------------------------- /v1/attribute-generation
GenerationMethod = Literal["grad_x_input", "integrated_gradients", "attnlrp"]  # == attribution.GENERATION_METHODS


class GenerationAttributionRequest(_Strict):
    prompt: str = Field(..., min_length=1, description="The prompt (decoder-only LM) or the source text "
                                                       "(encoder-decoder).", examples=["The capital of France is"])
    model: ModelName | None = Field(None, description="A causal language model or an encoder-decoder with its LM "
                                                      "head (GET /v1/models).")
    methods: list[GenerationMethod] = Field(["grad_x_input"], min_length=1, max_length=3,
                                            description="Attribution methods; each runs its own greedy generation.")
    max_new_tokens: int = Field(8, ge=1, le=256, description="Tokens generated greedily (server limit: prompt "
                                                             "tokens + max_new_tokens <= max_attribution_tokens).")
    ig_steps: Count = Field(16, description="Integrated-gradients steps per generated token (server limit: "
                                            "max_samples).")
    ig_max_steps: Count | None = Field(None, description="Gradient evaluations per generated token, refinement of a "
                                                         "rough path included (>= ig_steps; default 8 x ig_steps, "
                                                         "at most max_samples).")
    stop_at_eos: bool = Field(True, description="Stop after an end-of-sequence token.")
    allow_random_head: bool = Field(False, description="Run even when the model's LM head was initialised at "
                                                       "random on load (the answer's warnings say so).")


class GenerationMethodOut(BaseModel):
    method: str
    note: str = Field(..., description="What the method is and is not, one sentence.")
    generated_tokens: list[str]
    generated_ids: list[int]
    context_tokens: list[str] = Field(..., description="The columns of scores: the prompt (or the decoder start "
                                                       "token) then the generated tokens but the last.")
    scores: list[list[float | None]] = Field(..., description="(generated, context): the attribution of each "
                                                              "generated token's logit; null where a column was "
                                                              "not yet there.")
    source_tokens: list[str] = Field([], description="Encoder-decoders: the source tokens.")
    source_scores: list[list[float]] | None = Field(None, description="Encoder-decoders: (generated, source).")
    target_logits: list[float]
    probabilities: list[float]
    checks: list[dict[str, Any]] = Field(..., description="Per generated token, the method's own check "
                                                          "(integrated_gradients: completeness, attnlrp: "
                                                          "conservation) or {}.")
    failed_steps: list[int] = Field(..., description="Generated tokens whose check failed: not explanations.")
    warnings: list[str]
    meta: dict[str, Any]


class GenerationAttributionOut(BaseModel):
    model: str
    prompt: str
    kind: Literal["causal", "encoder-decoder"]
    results: dict[str, GenerationMethodOut] = Field(..., description="method -> its generation and scores")
    failed_checks: list[str] = Field([], description="Methods with at least one generated token that failed its "
                                                     "own check (flagged in their checks and warnings).")
    warnings: list[str] = Field([], description="Loud lines: a random LM head, failed checks, generations that "
                                                "differ between methods.")
