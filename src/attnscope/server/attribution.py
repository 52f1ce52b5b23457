"""REST endpoints of :mod:`attnscope.attribution`: /v1/explain, /v1/ablate, /v1/probe, /v1/counterfactual,
/v1/dropout, /v1/attribute-generation.

Same contract as the other /v1 endpoints (:mod:`.api`): counts, lengths and run/sample limits are checked
on the event loop, so a refused request costs nothing; the model work runs on the inference thread under
the server's timeout, and the checks that need the model (its kind, token counts, layer/head ranges) run
there before any expensive call. The numbers come from the attribution functions themselves; this module
only validates, calls them and converts their results to JSON (NaN, e.g. a correlation with a constant
method, becomes null).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from fastapi import APIRouter

from ..errors import InputError
from .api import ERRORS, ApiError, ServerState, _jsonable
from .schemas import (AblateItem, AblateOut, AblateRequest, CounterfactualOut, CounterfactualRequest, CounterfactualRow,
                      DropoutOut, DropoutRequest, ExplainOut, ExplainRequest, GenerationAttributionOut,
                      GenerationAttributionRequest, GenerationMethodOut, HeadScoresOut, PredictionOut, ProbeOut,
                      ProbeRequest, _Target)


# ---------------------------------------------------------------------------- checks that need the model
def prediction_kind(lm) -> str | None:
    """``"classifier"`` (a …ForSequenceClassification model), ``"lm"`` (a causal LM with its LM head) or None
    (no prediction head an explanation can be about: a bare encoder, a masked LM, an encoder-decoder)."""
    name = type(lm.model).__name__
    if "ForSequenceClassification" in name:
        return "classifier"
    if lm.kind == "causal" and (name.endswith("ForCausalLM") or "LMHead" in name):
        return "lm"
    return None


def require_self(lm, endpoint: str) -> None:
    """The attribution functions read the ``self`` stream (encoder-only and decoder-only models)."""
    if "self" not in lm.geometry():
        raise ApiError(422, "UnsupportedModel",
                       f"{endpoint} works on encoder-only and decoder-only models (attention stream 'self'); "
                       f"{lm.name} is an encoder-decoder ({lm.kind}). Use /v1/analyze for its encoder_self, "
                       "decoder_self and cross attention")


def require_head(lm, endpoint: str) -> str:
    require_self(lm, endpoint)
    kind = prediction_kind(lm)
    if kind is None:
        raise ApiError(422, "NoPredictionHead",
                       f"{endpoint} explains a prediction, but {lm.name} ({type(lm.model).__name__}) has no "
                       "sequence-classification or causal language-model head. Use a causal LM (e.g. smollm2) or a "
                       "fine-tuned classifier (the operator can serve one: `attnscope serve --allow-model DIR`); "
                       "/v1/probe and /v1/dropout work on any encoder")
    return kind


def _n_outputs(lm, kind: str) -> int:
    if kind == "classifier":
        return int(lm.config.num_labels)
    return int(lm.model.get_output_embeddings().weight.shape[0])


def resolve_target(lm, kind: str, req: _Target) -> int | None:
    """The target index from ``target_class`` (classifiers) or ``target_token`` (LMs); None = the prediction."""
    if req.target_class is not None and req.target_token is not None:
        raise InputError("give target_class (classifiers) or target_token (language models), not both")
    if req.target_class is not None:
        if kind != "classifier":
            raise InputError(f"target_class needs a classifier; {lm.name} is a language model: give target_token "
                             "(a token id or a string that is one token)")
        t = req.target_class
        if isinstance(t, str):
            labels = dict(getattr(lm.config, "label2id", None) or {})
            if t not in labels:
                raise InputError(f"unknown class label {t!r}; {lm.name}'s labels: {', '.join(map(str, labels))} "
                                 "(or give the class index)")
            t = int(labels[t])
    elif req.target_token is not None:
        if kind != "lm":
            labels = ", ".join(map(str, (getattr(lm.config, "id2label", None) or {}).values()))
            raise InputError(f"target_token needs a language model; {lm.name} is a classifier: give target_class "
                             f"(a class index or label: {labels})")
        t = req.target_token
        if isinstance(t, str):
            enc = lm.tokenizer(t, add_special_tokens=False, return_offsets_mapping=True)
            ids = enc["input_ids"]
            if len(ids) != 1:
                pieces = [t[a:b] for a, b in enc["offset_mapping"]]  # spans of the text, not Ġ/##/▁ pieces
                raise InputError(f"target_token {t!r} is {len(ids)} tokens {pieces}; give exactly one token or a "
                                 "token id")
            t = int(ids[0])
    else:
        return None
    n = _n_outputs(lm, kind)
    if not 0 <= int(t) < n:
        raise InputError(f"target {t} is out of range: {lm.name} has {n} outputs (0..{n - 1})")
    return int(t)


def check_position(kind: str, position: int | None) -> None:
    if position is not None and kind != "lm":
        raise InputError("position applies to language models only (a classifier has one prediction)")


def check_tokens(state: ServerState, lm, text: str, what: str = "text") -> int:
    """Token count (special tokens included) of ``text``; 413 above ``max_attribution_tokens``."""
    n = len(lm.tokenizer(text, verbose=False)["input_ids"])  # counted only: no "sequence length is longer" log
    limit = state.config.max_attribution_tokens
    if n > limit:
        raise ApiError(413, "TooManyTokens", f"{what} has {n} tokens; the attribution endpoints accept at most {limit} "
                                             "per text (each method runs the model many times); shorten the text")
    return n


def _layer(lm, layer: int, what: str) -> int:
    n_layers = lm.geometry()["self"][0]
    if not -n_layers <= layer < n_layers:
        raise InputError(f"{what}: layer {layer} is out of range: {lm.name} has layers 0..{n_layers - 1} "
                         "(negative counts from the end)")
    return layer % n_layers


def _head(lm, head: int, what: str) -> int:
    n_heads = lm.geometry()["self"][1]
    if not 0 <= head < n_heads:
        raise InputError(f"{what}: head {head} is out of range: {lm.name} has heads 0..{n_heads - 1}")
    return head


def _pairs(lm, pairs: Sequence[tuple[int, int]], what: str) -> list[tuple[int, int]]:
    return [(_layer(lm, la, what), _head(lm, h, what)) for la, h in pairs]


def build_intervention(lm, spec, i: int):
    """The attnscope.attribution intervention object for one request spec (ranges checked)."""
    from ..attribution import KeepHeads, Knockout, MeanHeads, RemoveTopKey, ScaleHeads, ZeroHeads

    what = f"interventions[{i}] ({spec.type})"
    if spec.type == "zero":
        return ZeroHeads(_pairs(lm, spec.heads, what))
    if spec.type == "scale":
        return ScaleHeads(heads=_pairs(lm, spec.heads, what), factor=spec.factor)
    if spec.type == "mean":
        return MeanHeads(heads=_pairs(lm, spec.heads, what))
    if spec.type == "keep":
        return KeepHeads(heads=_pairs(lm, spec.heads, what))
    if spec.type == "remove_top_key":
        return RemoveTopKey(heads=None if spec.heads is None else _pairs(lm, spec.heads, what), k=spec.k)
    if not spec.keys and not spec.edges:
        raise InputError(f"{what}: give keys and/or edges to block")
    return Knockout(keys=tuple(spec.keys), edges=tuple(tuple(e) for e in spec.edges), queries=spec.queries,
                    layers=None if spec.layers is None else [_layer(lm, la, what) for la in spec.layers],
                    heads=None if spec.heads is None else [_head(lm, h, what) for h in spec.heads])


def check_positions(spec, n: int, i: int, text_index: int) -> None:
    """Knockout token positions must exist in the text (the intervention would wrap or ignore them)."""
    if spec.type != "knockout":
        return
    where = f"interventions[{i}] (knockout): text #{text_index} has {n} tokens (positions 0..{n - 1})"
    for k in spec.keys:
        if not -n <= k < n:
            raise InputError(f"{where}; key {k} is out of range (negative keys count from the end)")
    for q in spec.queries or []:
        if not 0 <= q < n:
            raise InputError(f"{where}; query {q} is out of range")
    for q, k in spec.edges:
        if not (0 <= q < n and 0 <= k < n):
            raise InputError(f"{where}; edge ({q}, {k}) is out of range")


def clean(x: Any) -> Any:
    """JSON-ready: numpy/torch to Python, NaN and ±inf to None (JSON has no NaN)."""
    x = _jsonable(x)
    if isinstance(x, np.ndarray):
        return clean(x.tolist())
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _count(state: ServerState, n: int, limit_name: str, what: str, type_: str) -> None:
    limit = getattr(state.config, limit_name)
    if n > limit:
        raise ApiError(413, type_, f"{n} {what}; this server accepts at most {limit} per request ({limit_name})")


# ---------------------------------------------------------------------------- endpoints
def build_attribution_router(state: ServerState) -> APIRouter:
    r = APIRouter()
    cfg = state.config

    @r.post("/v1/explain", response_model=ExplainOut, tags=["attribution"], responses=ERRORS,
            summary="Token importance of one prediction by attention, rollout, attention×gradient, Chefer "
                    "relevancy and Captum methods, with their agreement")
    async def explain_endpoint(req: ExplainRequest) -> ExplainOut:
        name = state.check_model(req.model)
        state.check_text(req.text)
        methods = list(dict.fromkeys(req.methods))
        for field, value in (("ig_steps", req.ig_steps if "integrated_gradients" in methods else 0),
                             ("n_samples", req.n_samples if {"lime", "shapley"} & set(methods) else 0)):
            if value > cfg.max_samples:
                raise ApiError(413, "TooManySamples", f"{field}={value}; this server allows at most {cfg.max_samples} "
                                                      "(max_samples)")

        def work() -> ExplainOut:
            from ..attribution import explain, faithfulness

            lm = state.model(name)
            kind = require_head(lm, "/v1/explain")
            target = resolve_target(lm, kind, req)
            check_position(kind, req.position)
            if req.position is not None and req.faithfulness:
                raise InputError("faithfulness curves are computed at the last position; leave position unset")
            check_tokens(state, lm, req.text)
            chosen = methods if "methods" in req.model_fields_set else None  # default: those defined for the model
            e = explain(lm, req.text, chosen, target=target, position=req.position, ig_steps=req.ig_steps,
                        n_samples=req.n_samples, k=req.top_k, absolute=req.absolute, seed=req.seed,
                        allow_random_head=req.allow_random_head, include_unconverged=req.include_unconverged)
            d = e.to_dict()
            if req.faithfulness:
                d["faithfulness"] = faithfulness(lm, req.text, e.scores, target=e.target).to_dict()
            return ExplainOut(model=name, **clean(d))

        return await state.run(work)

    @r.post("/v1/ablate", response_model=AblateOut, tags=["attribution"], responses=ERRORS,
            summary="Interventions on heads and attention edges (prediction change as KL, probability shift, "
                    "logit difference) and head importance by ablation or gradient")
    async def ablate_endpoint(req: AblateRequest) -> AblateOut:
        name = state.check_model(req.model)
        _count(state, len(req.texts), "max_attribution_texts", "texts", "BatchTooLarge")
        for i, t in enumerate(req.texts):
            state.check_text(t, f"text #{i}")
        if not req.interventions and req.importance is None:
            raise InputError("give interventions (a list of head/edge interventions) and/or importance "
                             "('ablation' or 'gradient')")
        if req.labels is not None and req.importance is None:
            raise InputError("labels apply to head importance; add importance='ablation' or 'gradient'")
        if (req.target_class is not None or req.target_token is not None or req.position is not None) \
                and not req.interventions:
            raise InputError("target_class/target_token/position apply to interventions; head importance uses "
                             "labels (or the unablated prediction)")

        def work() -> AblateOut:
            from ..attribution import head_importance, intervene
            from ..attribution.gradients import target_label

            lm = state.model(name)
            kind = require_head(lm, "/v1/ablate")
            target = resolve_target(lm, kind, req)
            check_position(kind, req.position)
            n_tokens = [check_tokens(state, lm, t, f"text #{i}") for i, t in enumerate(req.texts)]
            if req.labels is not None:
                n_out = _n_outputs(lm, kind)
                bad = [x for x in req.labels if not 0 <= x < n_out]
                if bad:
                    raise InputError(f"label {bad[0]} is out of range: {lm.name} has {n_out} outputs (0..{n_out - 1})")
            out = AblateOut(model=name)
            if req.interventions:
                ivs = [build_intervention(lm, spec, i) for i, spec in enumerate(req.interventions)]
                for ti, n in enumerate(n_tokens):
                    for i, spec in enumerate(req.interventions):
                        check_positions(spec, n, i, ti)
                out.results = []
                for ti, text in enumerate(req.texts):
                    c = intervene(lm, text, ivs, target=target, position=req.position)
                    out.results.append(AblateItem(index=ti, target_label=target_label(lm, c["target"]), **clean(c)))
            if req.importance is not None:
                hs = head_importance(lm, req.texts, method=req.importance, labels=req.labels)
                out.importance = HeadScoresOut(method=req.importance, layers=hs.layers, heads=hs.heads,
                                               scores=clean(hs.scores))
            return out

        return await state.run(work)

    @r.post("/v1/probe", response_model=ProbeOut, tags=["attribution"], responses=ERRORS,
            summary="Bias probe: attention to/from word groups across templated sentences, Welch's t-test and "
                    "effect size (attention weights alone are not evidence of bias)")
    async def probe_endpoint(req: ProbeRequest) -> ProbeOut:
        from ..attribution.bias import DEFAULT_GROUPS, DEFAULT_TEMPLATES, check_template, fill_template

        name = state.check_model(req.model)
        groups = req.groups if req.groups is not None else DEFAULT_GROUPS
        templates = req.templates if req.templates is not None else DEFAULT_TEMPLATES
        if req.groups is not None and len(req.groups) < 2:
            raise InputError("give at least two groups to compare, e.g. {\"he\": [\"he\", \"him\"], "
                             "\"she\": [\"she\", \"her\"]}")
        if req.templates is not None and not req.templates:
            raise InputError("give at least one template (a sentence with {} where the group word goes), or "
                             "leave templates out for the built-in ones")
        n_words = sum(len(ws) for ws in groups.values())
        _count(state, len(templates) * n_words, "max_probe_sentences", "sentences (templates x group words)",
               "TooManySentences")
        for g, ws in groups.items():
            if not ws:
                raise InputError(f"group {g!r} has no words")
            for w in ws:
                state.check_text(w, f"a word of group {g!r}")
        longest = max((w for ws in groups.values() for w in ws), key=len)
        for i, t in enumerate(templates):  # refused before any model work; the length counts the filled sentence
            check_template(t, f"template #{i}")
            state.check_text(fill_template(t, longest), f"template #{i} with the longest group word")

        def work() -> ProbeOut:
            from ..attribution import bias_probe

            lm = state.model(name)
            require_self(lm, "/v1/probe")
            layers = None if req.layers is None else [_layer(lm, la, "layers") for la in req.layers]
            for i, t in enumerate(templates):  # the longest word of each group in each template
                for ws in groups.values():
                    check_tokens(state, lm, fill_template(t, max(ws, key=len)), f"template #{i}")
            res = bias_probe(lm, groups, templates, direction=req.direction, attribute_words=req.attribute_words,
                             layers=layers)
            return ProbeOut(model=name, **clean(res.to_dict()))

        return await state.run(work)

    @r.post("/v1/counterfactual", response_model=CounterfactualOut, tags=["attribution"], responses=ERRORS,
            summary="Mask/replace/delete each word (all its sub-tokens), or compare counterfactual texts: "
                    "prediction change and attention change")
    async def counterfactual_endpoint(req: CounterfactualRequest) -> CounterfactualOut:
        name = state.check_model(req.model)
        state.check_text(req.text)
        state.check_text(req.replacement, "replacement")
        if req.alternatives is not None:
            if not req.alternatives:
                raise InputError("alternatives is empty: give counterfactual texts, or leave it out to edit each word")
            _count(state, len(req.alternatives), "max_attribution_texts", "alternatives", "BatchTooLarge")
            for i, t in enumerate(req.alternatives):
                state.check_text(t, f"alternative #{i}")
        elif req.mode == "replace" and not req.replacement:
            raise InputError("mode='replace' needs replacement (the word put in place of each word)")

        def work() -> CounterfactualOut:
            from ..attribution import compare_counterfactuals, encode, token_interventions
            from ..attribution.gradients import target_label

            lm = state.model(name)
            kind = require_head(lm, "/v1/counterfactual")
            target = resolve_target(lm, kind, req)
            check_tokens(state, lm, req.text)
            if req.alternatives is not None:
                for i, t in enumerate(req.alternatives):
                    check_tokens(state, lm, t, f"alternative #{i}")
                rows = compare_counterfactuals(lm, req.text, req.alternatives, target=target)
            else:
                rows = token_interventions(lm, req.text, mode=req.mode, replacement=req.replacement, target=target)
            _, tokens = encode(lm, req.text)
            return CounterfactualOut(model=name, text=req.text, tokens=tokens.labels(),
                                     kind="alternatives" if req.alternatives is not None else "words",
                                     rows=[CounterfactualRow(target_label=target_label(lm, row["target"]), **clean(row))
                                           for row in rows])

        return await state.run(work)

    @r.post("/v1/dropout", response_model=DropoutOut, tags=["attribution"], responses=ERRORS,
            summary="MC-dropout consistency of attention over N runs (model restored to eval mode)")
    async def dropout_endpoint(req: DropoutRequest) -> DropoutOut:
        name = state.check_model(req.model)
        state.check_text(req.text)
        if req.n_runs > cfg.max_runs:
            raise ApiError(413, "TooManyRuns", f"n_runs={req.n_runs}; this server allows at most {cfg.max_runs} "
                                               "dropout runs per request (max_runs)")

        def work() -> DropoutOut:
            from ..attribution import dropout_consistency
            from ..attribution.gradients import target_label

            lm = state.model(name)
            require_self(lm, "/v1/dropout")
            check_tokens(state, lm, req.text)
            res = dropout_consistency(lm, req.text, n_runs=req.n_runs, seed=req.seed, p=req.p, which=req.which)
            corr = res.pairwise_correlations
            fin = corr[np.isfinite(corr)]
            summary = {"mean": float(fin.mean()), "min": float(fin.min()), "max": float(fin.max())} if fin.size \
                else {"mean": None, "min": None, "max": None}
            preds = None
            if res.prediction_mean is not None:
                top = np.argsort(-res.prediction_mean, kind="stable")[:10]
                preds = [PredictionOut(index=int(i), label=target_label(lm, int(i)), mean=float(res.prediction_mean[i]),
                                       std=float(res.prediction_std[i])) for i in top]
            maps = None
            if req.include_maps:
                n = 3 * res.mean.size
                if n > cfg.max_json_elements:
                    raise ApiError(413, "AnswerTooLarge", f"the mean/std/cv maps hold {n:,} numbers; JSON answers are "
                                                          f"limited to {cfg.max_json_elements:,}. Leave include_maps "
                                                          "off (head_cv summarises them) or shorten the text")
                maps = {k: clean(np.round(getattr(res, k), 6)) for k in ("mean", "std", "cv")}
            return DropoutOut(model=name, tokens=res.tokens, layers=res.layers, n_runs=res.n_runs, which=res.which,
                              rates=res.rates, pairwise_correlations=clean(corr), correlation=summary,
                              head_cv=clean(res.head_cv()), predictions=preds, maps=maps)

        return await state.run(work)

    @r.post("/v1/attribute-generation", response_model=GenerationAttributionOut, tags=["attribution"],
            responses=ERRORS, summary="Generate greedily and attribute every generated token's logit to the prompt "
                                      "and the tokens generated before it (and the source, for encoder-decoders)")
    async def attribute_generation_endpoint(req: GenerationAttributionRequest) -> GenerationAttributionOut:
        name = state.check_model(req.model)
        state.check_text(req.prompt, "prompt")
        methods = list(dict.fromkeys(req.methods))
        ig_max = None
        if "integrated_gradients" in methods:
            for field, value in (("ig_steps", req.ig_steps), ("ig_max_steps", req.ig_max_steps or 0)):
                if value > cfg.max_samples:
                    raise ApiError(413, "TooManySamples", f"{field}={value}; this server allows at most "
                                                          f"{cfg.max_samples} (max_samples)")
            if req.ig_max_steps is not None and req.ig_max_steps < req.ig_steps:
                raise InputError(f"ig_max_steps={req.ig_max_steps} is below ig_steps={req.ig_steps}; give "
                                 "ig_max_steps >= ig_steps")
            ig_max = req.ig_max_steps or max(req.ig_steps, min(8 * req.ig_steps, cfg.max_samples))
        if req.max_new_tokens >= cfg.max_attribution_tokens:
            raise ApiError(413, "TooManyTokens", f"max_new_tokens={req.max_new_tokens}; prompt tokens + max_new_tokens "
                                                 f"may be at most {cfg.max_attribution_tokens} on this server "
                                                 "(max_attribution_tokens)")

        def work() -> GenerationAttributionOut:
            from ..attribution.generation import generation_attribution, seq2seq_attribution

            lm = state.model(name)
            seq2seq = bool(getattr(lm.config, "is_encoder_decoder", False))
            if not seq2seq and prediction_kind(lm) != "lm":
                raise ApiError(422, "NoPredictionHead",
                               f"/v1/attribute-generation attributes generated tokens, but {lm.name} "
                               f"({type(lm.model).__name__}) is neither a causal language model nor an encoder-decoder "
                               "with an LM head. Use a causal LM (e.g. smollm2) or an encoder-decoder")
            if seq2seq and lm.model.get_output_embeddings() is None:
                raise ApiError(422, "NoPredictionHead", f"{lm.name} ({type(lm.model).__name__}) has no LM head to "
                                                        "generate with")
            n = check_tokens(state, lm, req.prompt, "prompt")
            if n + req.max_new_tokens > cfg.max_attribution_tokens:
                raise ApiError(413, "TooManyTokens", f"the prompt has {n} tokens and max_new_tokens is "
                                                     f"{req.max_new_tokens}; together at most "
                                                     f"{cfg.max_attribution_tokens} on this server "
                                                     "(max_attribution_tokens): shorten the prompt or generate fewer")
            results, warnings = {}, []
            for m in methods:
                run = seq2seq_attribution if seq2seq else generation_attribution
                g = run(lm, req.prompt, req.max_new_tokens, m, ig_steps=req.ig_steps, ig_max_steps=ig_max,
                        stop_at_eos=req.stop_at_eos, allow_random_head=req.allow_random_head)
                d = clean(g.to_dict())
                results[m] = GenerationMethodOut(**{k: d[k] for k in GenerationMethodOut.model_fields})
                warnings += [w if w.startswith("RANDOM HEAD") else f"{m}: {w}" for w in g.warnings]
            first = next(iter(results.values()))
            for m, res in results.items():
                if res.generated_ids != first.generated_ids:
                    warnings.append(f"{m} generated {res.generated_tokens} but {methods[0]} generated "
                                    f"{first.generated_tokens} (greedy choices that differ by rounding between the "
                                    "cached and the full-prefix forward): compare their rows with care")
            return GenerationAttributionOut(model=name, prompt=req.prompt,
                                            kind="encoder-decoder" if seq2seq else "causal", results=results,
                                            failed_checks=[m for m, res in results.items() if res.failed_steps],
                                            warnings=list(dict.fromkeys(warnings)))

        return await state.run(work)

    return r
