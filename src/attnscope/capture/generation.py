"""Attention while generating: every decoding step's new row, with the KV cache on.

The prefill records the prompt's rows; each later step (query length 1 over the cache) appends one
row per layer/head. After ``generate`` returns, one more cached step feeds the last token so that
it has its row too. The result is the same square causal trace a single forward over the whole
sequence would give (the tests check exactly that), built without ever re-running the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

from ..devices import capture_memory_errors, model_inputs
from ..errors import InputError
from ..models import LoadedModel
from ..trace import STREAM_SEQUENCES, AttentionTrace, Tokens
from .api import (_as_loaded, _decoded, _encode, _encode_ids, _encode_speech, _modes, _one_input, _tokens,
                  assemble_session, attention_implementation, check_input_ids, check_text, check_top_k, resolve_selection,
                  sliding_window_meta)
from .interface import DEFAULT_BLOCK_ELEMENTS, CaptureSession, annotate_model, register, session_scope
from .recorders import make_recorders


@dataclass
class GenerationResult:
    """A generated continuation and its attention."""

    trace: AttentionTrace
    text: str  # the generated text only
    prompt_length: int  # tokens of the prompt (decoder prefix for encoder-decoders)
    token_ids: list[int]  # generated token ids
    token_probs: list[float] = field(default_factory=list)  # the model's probability of each chosen token
    step_entropies: list[float] = field(default_factory=list)  # entropy of the next-token distribution


def _chat_prompt(lm: LoadedModel, prompt: str | list[dict]) -> str:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def generate(
    model: LoadedModel | str,
    prompt: str | list[dict] | None = None,
    *,
    input_ids: Sequence[int] | torch.Tensor | None = None,
    audio=None,
    sampling_rate: int = 16000,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = 0,
    chat: bool = False,
    mode: str | Sequence[str] = "full",
    layers: Iterable[int] | int | None = None,
    heads: Iterable[int] | int | None = None,
    top_k: int = 8,
    full_dtype: torch.dtype = torch.float16,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    statistics: Sequence[str] | str | None = None,
) -> GenerationResult:
    """Generate greedily or by sampling and capture each step's attention (causal LMs, encoder-decoders, Whisper).

    The input is ``prompt`` (text, or a list of chat messages) or ``input_ids`` (token ids of the
    prompt — the source for encoder-decoders — used as they are, as in :func:`attnscope.capture`);
    speech models take ``audio``. ``chat=True`` (or a list of messages) formats the prompt with the
    tokenizer's chat template; ``statistics`` picks the row statistics of stats mode, as in
    :func:`attnscope.capture`.
    """
    lm = _as_loaded(model)
    modes = _modes(mode)
    top_k = check_top_k(top_k)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if lm.kind == "encoder":
        raise InputError(f"{lm.name} is an encoder; it cannot generate (use capture())")
    ids_in: list[int] | None = None
    if lm.kind == "speech-seq2seq":
        if prompt is not None or input_ids is not None:
            raise InputError(f"{lm.name} is a speech model: pass audio= (a 1-D array of samples), not a prompt")
    else:
        if audio is not None:
            raise InputError(f"{lm.name} takes text, not audio; pass a prompt or input_ids=")
        _one_input(prompt, input_ids, "prompt")
        if input_ids is not None:
            if chat:
                raise InputError("chat=True formats a text prompt; with input_ids, pass the ids of the formatted chat")
            ids_in = check_input_ids(lm, input_ids)
    register()
    if not getattr(lm.model, "_attnscope_annotated", False):
        annotate_model(lm.model)
        lm.model._attnscope_annotated = True
    layer_sel, head_sel = resolve_selection(lm, layers, heads, None)
    session = CaptureSession(recorders=make_recorders(modes, top_k, full_dtype, statistics),
                             layers={s: set(v) for s, v in layer_sel.items()}, heads=dict(head_sel),
                             block_elements=block_elements)
    gen_kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, return_dict_in_generate=True,
                      output_scores=True, use_cache=True)
    if do_sample:
        gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    if seed is not None:
        torch.manual_seed(seed)
    seqs: dict[str, Tokens] = {}
    texts: dict[str, str] = {}
    meta: dict = {}
    with attention_implementation(lm.model, "attnscope"), session_scope(session), torch.no_grad(), \
            capture_memory_errors(session, block_elements):
        if lm.kind == "causal":
            if ids_in is not None:
                inputs, _, meta = _encode_ids(lm, ids_in, False)
                text = _decoded(lm, ids_in)
            elif chat or isinstance(prompt, list):
                text = _chat_prompt(lm, prompt)
                inputs, _, meta = _encode(lm, text, None, False)
            else:
                text = check_text(prompt, "prompt")
                inputs, _, meta = _encode(lm, text, None, False)
            inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
            inputs = model_inputs(inputs, lm.model)  # inputs follow the model's device
            prompt_ids = inputs["input_ids"]  # (1, P)
            pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
            out = lm.model.generate(**inputs, pad_token_id=pad, **gen_kwargs)
            full = out.sequences  # (1, P + T)
            # one more cached step so the last generated token has its attention row too
            lm.model(input_ids=full[:, -1:], past_key_values=out.past_key_values, use_cache=True)
            texts["input"] = text
        else:
            if lm.kind == "speech-seq2seq":
                inputs, _, meta = _encode_speech(lm, audio, sampling_rate, None)
                inputs.pop("decoder_input_ids")
                enc_inputs = model_inputs({"input_features": inputs["input_features"]}, lm.model)
            else:
                if ids_in is not None:
                    inputs, src, meta = _encode_ids(lm, ids_in, False)
                    text = _decoded(lm, ids_in)
                else:
                    text = check_text(prompt, "source text")
                    inputs, src, meta = _encode(lm, text, None, False)
                inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
                inputs = model_inputs(inputs, lm.model)  # inputs follow the model's device
                enc_inputs = dict(inputs)
                texts["source"] = text
            encoder_outputs = lm.model.get_encoder()(**enc_inputs)
            out = lm.model.generate(**inputs, encoder_outputs=encoder_outputs, **gen_kwargs)
            full = out.sequences  # (1, T) decoder tokens, starting with the decoder start token(s)
            lm.model(encoder_outputs=encoder_outputs, attention_mask=inputs.get("attention_mask"),
                     decoder_input_ids=full[:, -1:], past_key_values=out.past_key_values, use_cache=True)
            prompt_ids = full[:, :1]
    ids = full[0].tolist()
    n_prompt = prompt_ids.shape[1]
    generated = ids[n_prompt:]
    probs, ents = [], []
    for step, scores in enumerate(out.scores):
        p = torch.softmax(scores[0].float(), -1)  # (V,)
        probs.append(float(p[generated[step]]))
        ents.append(float(-(torch.special.xlogy(p, p)).sum()))
    if lm.kind == "causal":
        seqs["input"] = _tokens(lm.tokenizer, ids, None, None)
    else:
        if lm.kind == "speech-seq2seq":
            n_frames = lm.config.max_source_positions
            seqs["source"] = Tokens(text=[f"{i * 30.0 / n_frames:.2f}s" for i in range(n_frames)])
        else:
            seqs["source"] = src["input"]
        seqs["target"] = _tokens(lm.tokenizer, ids, None, None)
        texts["target"] = lm.tokenizer.decode(generated, skip_special_tokens=True)
    weights, stats, topk = assemble_session(session, layer_sel)
    n_total = len(ids)
    for s in layer_sel:
        q_seq = STREAM_SEQUENCES[s][0]
        if q_seq in seqs and len(seqs[q_seq]) != n_total and s != "encoder_self":
            raise RuntimeError(f"generation capture: {s} has rows for {len(seqs[q_seq])} tokens, expected {n_total}")
    meta.update({"model_kind": lm.kind, "method": "fast-generate", "modes": sorted(modes),
                 "causal": {s: s in ("decoder_self",) or (s == "self" and lm.kind == "causal") for s in layer_sel},
                 "prompt_length": n_prompt, "do_sample": do_sample,
                 "geometry": {s: list(v) for s, v in lm.geometry().items()}, **sliding_window_meta(lm)})
    trace = AttentionTrace(tokens=seqs, layers=layer_sel, heads=head_sel, weights=weights, stats=stats, topk=topk,
                           texts=texts, model_id=lm.name, meta=meta)
    return GenerationResult(trace=trace, text=lm.tokenizer.decode(generated, skip_special_tokens=True),
                            prompt_length=n_prompt, token_ids=generated, token_probs=probs, step_entropies=ents)
