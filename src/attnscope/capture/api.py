"""capture(): model + text -> AttentionTrace, by the fast path or the eager reference."""

from __future__ import annotations

import contextlib
import numbers
import reprlib
import unicodedata
import warnings
from typing import Any, Iterable, Literal, Sequence

import torch

from ..devices import OUT_OF_MEMORY, capture_memory_errors, model_inputs, out_of_memory
from ..errors import CaptureError, InputError
from ..models import LoadedModel, load_model
from ..trace import STREAM_SEQUENCES, AttentionTrace, Tokens
from .interface import DEFAULT_BLOCK_ELEMENTS, CaptureSession, Intervention, annotate_model, register, session_scope
from .recorders import MODES, FullRecorder, StatsRecorder, TopKRecorder, make_recorders

Method = Literal["fast", "eager"]


# ---------------------------------------------------------------------------- model plumbing
def supports_interface(model) -> bool:
    """Whether the model's attention goes through transformers' AttentionInterface."""
    can = getattr(type(model), "_can_set_attn_implementation", None)
    return bool(can()) if callable(can) else False


@contextlib.contextmanager
def attention_implementation(model, name: str):
    """Temporarily switch the model's attention implementation; always restored (even on error)."""
    previous = model.config._attn_implementation
    if previous == name:
        yield
        return
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def _as_loaded(model: LoadedModel | str) -> LoadedModel:
    return load_model(model) if isinstance(model, str) else model


# ---------------------------------------------------------------------------- input validation
def check_text(text: Any, what: str = "text") -> str:
    """The text as ``str``; refuses non-strings, invalid UTF-8 and text with no visible character."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{what} is not valid UTF-8 (byte {e.start}: {e.reason}); re-encode it as UTF-8") from None
    if not isinstance(text, str):
        raise InputError(f"{what} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InputError(f"{what} is empty or only whitespace; give a sentence to analyse")
    if not any(_visible(c) for c in text):
        raise InputError(f"{what} has no visible character (only control, format or space characters such as NUL "
                         "or zero-width spaces); give a sentence to analyse")
    return text


def _visible(c: str) -> bool:
    # Unicode categories C* (control Cc, format Cf such as U+200B, surrogate, private use, unassigned) and
    # Z* (separators) draw nothing; a tokenizer drops most of them, leaving only its special tokens.
    return not unicodedata.category(c).startswith(("C", "Z"))


def check_top_k(top_k: Any) -> int:
    """``top_k`` (keys kept per query row by the top-k recorder) as a positive int."""
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
        raise InputError(f"top_k must be a positive integer (keys kept per query row), got {reprlib.repr(top_k)}")
    return int(top_k)


def _vocab_size(lm: LoadedModel) -> int:
    emb = lm.model.get_input_embeddings() if hasattr(lm.model, "get_input_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return int(emb.weight.shape[0])
    return int(getattr(lm.config, "vocab_size", None) or len(lm.tokenizer))


def check_input_ids(lm: LoadedModel, input_ids: Any, what: str = "input_ids") -> list[int]:
    """Token ids of one sequence (a list of ints, a 1-D or (1, N) tensor/array) as a validated list."""
    ids = input_ids
    if isinstance(ids, torch.Tensor) or type(ids).__module__ == "numpy":
        arr = torch.as_tensor(ids)
        if arr.dim() == 2 and arr.shape[0] == 1:
            arr = arr[0]  # (N,)
        if arr.dim() != 1:
            raise InputError(f"{what} must be one sequence: a list of ints or a 1-D or (1, N) tensor; got shape "
                             f"{tuple(arr.shape)} (use capture_batch for several sequences)")
        if arr.dtype.is_floating_point or arr.dtype.is_complex or arr.dtype == torch.bool:
            raise InputError(f"{what} must hold integer token ids, got a {arr.dtype} tensor")
        ids = arr.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (list, tuple)):
        raise InputError(f"{what} must be a list of int token ids or a 1-D tensor, got {type(input_ids).__name__}"
                         + ("; pass text as the text argument" if isinstance(ids, str) else ""))
    if len(ids) == 1 and isinstance(ids[0], (list, tuple)):
        ids = ids[0]  # [[...]]: one sequence in a batch of one
    if not ids:
        raise InputError(f"{what} is empty; give at least one token id")
    vocab = _vocab_size(lm)
    for i, t in enumerate(ids):
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise InputError(f"{what}[{i}] is {reprlib.repr(t)}; token ids must be ints")
        if not 0 <= t < vocab:
            raise InputError(f"{what}[{i}] = {t} is not a token id of {lm.name} (its vocabulary has ids 0..{vocab - 1})")
    return [int(t) for t in ids]


def resolve_selection(lm: LoadedModel, layers: Iterable[int] | int | None, heads: Iterable[int] | int | None,
                      streams: Sequence[str] | None) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Validated model layer/head indices per stream (negative indices count from the end)."""
    geometry = lm.geometry()
    streams = list(streams) if streams else list(geometry)
    for s in streams:
        if s not in geometry:
            raise InputError(f"stream {s!r} does not exist in {lm.name}; its streams: {', '.join(geometry)}")
    out_layers, out_heads = {}, {}
    for s in streams:
        n_layers, n_heads = geometry[s]
        out_layers[s] = _check_indices("layer", layers, n_layers, lm.name, s)
        out_heads[s] = _check_indices("head", heads, n_heads, lm.name, s)
    return out_layers, out_heads


def _check_indices(what: str, requested: Iterable[int] | int | None, n: int, model: str, stream: str) -> list[int]:
    if requested is None:
        return list(range(n))
    if isinstance(requested, numbers.Integral) and not isinstance(requested, bool):
        requested = [requested]  # one index: layers=3 is layers=[3]
    if isinstance(requested, (str, bytes)) or not isinstance(requested, Iterable):
        raise InputError(f"{what}s must be a list of {what} indices (or one int), got {reprlib.repr(requested)}")
    out = []
    for r in requested:
        if isinstance(r, bool) or not isinstance(r, numbers.Integral) or not -n <= r < n:
            raise InputError(f"{what} {reprlib.repr(r)} is out of range: {model} ({stream}) has {what}s 0..{n - 1} "
                             f"(negative indices count from the end)")
        out.append(int(r) % n)
    if not out:
        raise InputError(f"no {what}s selected; pass {what}s=None for all of them")
    return sorted(set(out))


def _modes(mode: str | Sequence[str]) -> set[str]:
    if isinstance(mode, str):
        modes = {mode}
    elif isinstance(mode, (list, tuple, set, frozenset)) and all(isinstance(m, str) for m in mode):
        modes = set(mode)
    else:
        raise InputError(f"mode must be one of {', '.join(MODES)} or a list of them, got {reprlib.repr(mode)}")
    bad = modes - set(MODES)
    if bad or not modes:
        raise InputError(f"unknown capture mode {sorted(bad) or mode!r}; valid modes: {', '.join(MODES)}")
    return modes


# ---------------------------------------------------------------------------- tokenisation
def _tokens(tokenizer, ids: list[int], offsets: list | None, special: list[int] | None) -> Tokens:
    text = tokenizer.convert_ids_to_tokens(ids)
    return Tokens(text=[str(t) for t in text], offsets=[tuple(o) for o in offsets] if offsets else [],
                  special=[bool(s) for s in special] if special else [i in set(tokenizer.all_special_ids) for i in ids],
                  ids=ids)


def _encode(lm: LoadedModel, text: str, text_pair: str | None, truncate: bool) -> tuple[dict, dict, dict]:
    """Tokenise one text: (model inputs (1, N), per-sequence Tokens, metadata)."""
    tok = lm.tokenizer
    # verbose=False: a text longer than the model reads is counted first and then refused or truncated here, so
    # transformers' "Token indices sequence length is longer than …" warning would only be noise
    kwargs: dict[str, Any] = {"return_special_tokens_mask": True, "return_tensors": "pt", "verbose": False}
    if getattr(tok, "is_fast", False):
        kwargs["return_offsets_mapping"] = True
    enc = tok(text, text_pair, **kwargs) if text_pair is not None else tok(text, **kwargs)
    n = enc["input_ids"].shape[1]
    meta: dict[str, Any] = {}
    if n > lm.max_length:
        if not truncate:
            raise InputError(
                f"the text has {n} tokens but {lm.name} accepts at most {lm.max_length}; shorten it or "
                f"pass truncate=True (--truncate) to keep the first {lm.max_length} tokens"
            )
        enc = tok(text, text_pair, truncation=True, max_length=lm.max_length, **kwargs) if text_pair is not None \
            else tok(text, truncation=True, max_length=lm.max_length, **kwargs)
        kept = enc["offset_mapping"][0][:, 1].max().item() if "offset_mapping" in enc else None
        meta["truncated"] = {"original_tokens": n, "kept_tokens": lm.max_length, "kept_characters": kept}
        warnings.warn(f"text truncated from {n} to {lm.max_length} tokens", stacklevel=3)
    ids = enc["input_ids"][0].tolist()
    offsets = enc["offset_mapping"][0].tolist() if "offset_mapping" in enc else None
    tokens = _tokens(tok, ids, offsets, enc["special_tokens_mask"][0].tolist())
    if text_pair is not None and hasattr(enc, "sequence_ids"):
        meta["sequence_ids"] = enc.sequence_ids(0)
    inputs = {k: v for k, v in enc.items() if k not in ("offset_mapping", "special_tokens_mask")}
    return inputs, {"input": tokens}, meta


def _encode_ids(lm: LoadedModel, ids: list[int], truncate: bool) -> tuple[dict, dict, dict]:
    """Model inputs (1, N) from validated token ids, used as they are (no special tokens added).

    The tokens are labelled from the ids (the tokenizer's piece for each id; no character offsets),
    and ``meta["from_ids"]`` marks the trace; ``texts["input"]`` is the decoded ids."""
    n = len(ids)
    meta: dict[str, Any] = {"from_ids": True}
    if n > lm.max_length:
        if not truncate:
            raise InputError(f"input_ids has {n} tokens but {lm.name} accepts at most {lm.max_length}; shorten it "
                             f"or pass truncate=True to keep the first {lm.max_length} tokens")
        ids = ids[:lm.max_length]
        meta["truncated"] = {"original_tokens": n, "kept_tokens": lm.max_length, "kept_characters": None}
        warnings.warn(f"input_ids truncated from {n} to {lm.max_length} tokens", stacklevel=3)
    input_ids = torch.tensor([ids], dtype=torch.long)  # (1, N)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}  # (1, N) each
    return inputs, {"input": _tokens(lm.tokenizer, ids, None, None)}, meta


def _decoded(lm: LoadedModel, ids: list[int]) -> str:
    return lm.tokenizer.decode(ids, skip_special_tokens=False)


def _encode_seq2seq(lm: LoadedModel, source: str | list[int], target: str, truncate: bool) -> tuple[dict, dict, dict]:
    """Teacher forcing: the source (text, or validated token ids) and the target text shifted right."""
    tok = lm.tokenizer
    inputs, seqs, meta = (_encode_ids(lm, source, truncate) if isinstance(source, list)
                          else _encode(lm, source, None, truncate))
    labels = tok(text_target=target, return_tensors="pt")["input_ids"]  # (1, T)
    start = lm.config.decoder_start_token_id
    if start is None:
        raise CaptureError(f"{lm.name} has no decoder_start_token_id; cannot teacher-force a target")
    dec = torch.cat([torch.tensor([[start]]), labels[:, :-1]], dim=1)  # (1, T): shifted right
    inputs["decoder_input_ids"] = dec
    ids = dec[0].tolist()
    lab = labels[0].tolist()
    meta["target_labels"] = Tokens(tok.convert_ids_to_tokens(lab), special=[i in set(tok.all_special_ids) for i in lab],
                                   ids=lab).labels()  # readable: no "▁" / "Ġ" / "##" markers
    return inputs, {"source": seqs["input"], "target": _tokens(tok, ids, None, None)}, meta


def _encode_speech(lm: LoadedModel, audio, sampling_rate: int, target: str | None) -> tuple[dict, dict, dict]:
    import numpy as np

    if lm.processor is None:
        raise InputError(f"{lm.name} takes text, not audio")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise InputError("audio must be a non-empty 1-D array of samples")
    feats = lm.processor.feature_extractor(audio, sampling_rate=sampling_rate, return_tensors="pt")
    tok = lm.tokenizer
    prefix = tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])
    body = tok(target, add_special_tokens=False)["input_ids"] if target else []
    dec = torch.tensor([prefix + body])  # (1, T)
    n_frames = lm.config.max_source_positions
    frame_s = 30.0 / n_frames
    source = Tokens(text=[f"{i * frame_s:.2f}s" for i in range(n_frames)])
    meta = {"audio_seconds": audio.size / sampling_rate, "frame_seconds": frame_s}
    return ({"input_features": feats["input_features"], "decoder_input_ids": dec},
            {"source": source, "target": _tokens(tok, dec[0].tolist(), None, None)}, meta)


# ---------------------------------------------------------------------------- running
def _forward(lm: LoadedModel, inputs: dict) -> Any:
    kwargs = model_inputs(inputs, lm.model)  # inputs follow the model's device
    if lm.kind == "causal":
        kwargs["use_cache"] = False
    with torch.no_grad():
        return lm.model(**kwargs)


def _run_fast(lm: LoadedModel, inputs: dict, layers, heads, modes, top_k, full_dtype, block_elements,
              interventions, statistics=None) -> tuple[CaptureSession, Any]:
    register()
    if not getattr(lm.model, "_attnscope_annotated", False):
        annotate_model(lm.model)
        lm.model._attnscope_annotated = True
    session = CaptureSession(recorders=make_recorders(modes, top_k, full_dtype, statistics),
                             layers={s: set(v) for s, v in layers.items()}, heads=dict(heads),
                             interventions=list(interventions), block_elements=block_elements)
    with attention_implementation(lm.model, "attnscope"), session_scope(session):
        with capture_memory_errors(session, block_elements):
            output = _forward(lm, inputs)
    if session.calls == 0:
        raise CaptureError(f"{lm.name}: the attention function was never called; this model does not route "
                           "attention through transformers' AttentionInterface (use method='eager')")
    return session, output


def _run_eager(lm: LoadedModel, inputs: dict) -> tuple[dict[str, tuple[torch.Tensor, ...]], Any]:
    with attention_implementation(lm.model, "eager"):
        with torch.no_grad():
            kwargs = dict(model_inputs(inputs, lm.model), output_attentions=True)
            if lm.kind == "causal":
                kwargs["use_cache"] = False
            try:
                out = lm.model(**kwargs)
            except OUT_OF_MEMORY as e:  # eager keeps every layer's maps: O(L·H·N²)
                raise out_of_memory(e, "every layer's maps (method='eager')") from None
    if lm.kind in ("seq2seq", "speech-seq2seq"):
        found = {"encoder_self": out.encoder_attentions, "decoder_self": out.decoder_attentions,
                 "cross": out.cross_attentions}
    else:
        found = {"self": out.attentions}
    for s, att in found.items():
        if not att or any(a is None for a in att):
            raise CaptureError(
                f"{lm.name} returned no attention probabilities for stream {s!r} with output_attentions=True "
                "(transformers returns an empty tuple unless attention is eager); this model cannot be captured"
            )
    return found, out


def _stats_from_maps(maps: torch.Tensor, causal: bool, statistics=None) -> dict[str, torch.Tensor]:
    """Row statistics of eager maps. The eager output carries no mask, so the keys a query could
    attend to are read off the map itself (weight > 0): exact for causal, sliding-window and padding masks."""
    from ..statistics import check_stat_names, row_statistics

    nq = maps.shape[-2]
    allowed = maps > 0 if causal else None
    return row_statistics(maps, allowed, torch.arange(nq), names=check_stat_names(statistics))


def sliding_window_meta(lm: LoadedModel) -> dict:
    """``{"sliding_window": {"self": {"layer": window}}}`` for models with sliding-window layers, else {}
    (``AttentionTrace.allowed_mask`` reads it)."""
    windows = lm.sliding_windows()
    return {"sliding_window": {"self": {str(k): v for k, v in windows.items()}}} if windows else {}


def _is_causal_stream(lm: LoadedModel, stream: str) -> bool:
    return stream == "decoder_self" or (stream == "self" and lm.kind == "causal")


def _one_input(text: Any, input_ids: Any, text_name: str = "text") -> None:
    if text is not None and input_ids is not None:
        raise InputError(f"pass either {text_name} or input_ids, not both")
    if text is None and input_ids is None:
        raise InputError(f"pass the input: {text_name}=\"…\" or input_ids=[…] (token ids)")


def capture(
    model: LoadedModel | str,
    text: str | bytes | None = None,
    *,
    input_ids: Sequence[int] | torch.Tensor | None = None,
    text_pair: str | None = None,
    target: str | None = None,
    audio=None,
    sampling_rate: int = 16000,
    mode: str | Sequence[str] = "full",
    layers: Iterable[int] | int | None = None,
    heads: Iterable[int] | int | None = None,
    streams: Sequence[str] | None = None,
    method: Method = "fast",
    top_k: int = 8,
    full_dtype: torch.dtype = torch.float16,
    truncate: bool = False,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    interventions: Sequence[Intervention] = (),
    statistics: Sequence[str] | str | None = None,
) -> AttentionTrace:
    """Capture the attention of one input as an AttentionTrace.

    The input is ``text`` or ``input_ids`` (exactly one): token ids as a list of ints or a 1-D or
    (1, N) tensor, used as they are (no special tokens added); the trace's tokens are labelled from
    the ids. ``layers`` / ``heads``: model indices (a list, or one int; negative counts from the end;
    ``None`` = all). ``mode``: ``"full"`` (maps, ``full_dtype``), ``"stats"`` (per-row statistics
    only), ``"topk"`` (``top_k`` keys per query) or several of them; ``statistics`` picks the row
    statistics of stats mode (default :data:`attnscope.statistics.STREAMING_STATS`, every one but
    Gini; ``"all"`` adds Gini). ``method="fast"`` runs the model on SDPA and recomputes
    probabilities only for the selected layers/heads; ``"eager"`` is the reference
    (``output_attentions=True`` on the eager kernel). Encoder-decoders need ``target`` (teacher
    forcing; see :func:`attnscope.generate` to decode); speech models take ``audio``;
    ``target`` and ``audio`` are refused for models that would ignore them.
    """
    lm = _as_loaded(model)
    modes = _modes(mode)
    top_k = check_top_k(top_k)
    if lm.kind == "speech-seq2seq":
        if text is not None or input_ids is not None:
            raise InputError(f"{lm.name} is a speech model: pass audio= (a 1-D array of samples), not text or "
                             "input_ids")
        inputs, seqs, meta = _encode_speech(lm, audio, sampling_rate, target)
        texts = {"target": target or ""}
    else:
        if audio is not None:
            raise InputError(f"{lm.name} takes text, not audio; pass text= or input_ids=")
        _one_input(text, input_ids)
        ids = check_input_ids(lm, input_ids) if input_ids is not None else None
        if ids is None:
            text = check_text(text)
        if text_pair is not None:
            if ids is not None:
                raise InputError("text_pair goes with text, not input_ids (put both sequences in the ids)")
            text_pair = check_text(text_pair, "text_pair")
        if lm.kind == "seq2seq":
            if target is None:
                raise InputError(f"{lm.name} is an encoder-decoder: pass target=… (teacher forcing) or use generate()")
            inputs, seqs, meta = _encode_seq2seq(lm, ids if ids is not None else text, check_text(target, "target"),
                                                 truncate)
            texts = {"source": text if ids is None else _decoded(lm, ids), "target": target}
        else:
            if target is not None:
                raise InputError(f"target= is for encoder-decoder models (teacher forcing); {lm.name} is "
                                 f"{'a decoder-only model: put the continuation in the text' if lm.kind == 'causal' else 'an encoder: it has no target sequence'}")
            if ids is not None:
                inputs, seqs, meta = _encode_ids(lm, ids, truncate)
                texts = {"input": _decoded(lm, ids)}
            else:
                inputs, seqs, meta = _encode(lm, text, text_pair, truncate)
                texts = {"input": text} | ({"input_pair": text_pair} if text_pair is not None else {})
    layer_sel, head_sel = resolve_selection(lm, layers, heads, streams)
    return _capture_encoded(lm, inputs, seqs, texts, meta, modes, layer_sel, head_sel, method, top_k, full_dtype,
                            block_elements, interventions, statistics)


def assemble_session(session: CaptureSession, layer_sel: dict[str, list[int]]) -> tuple[dict, dict, dict]:
    """The trace payloads (weights, stats, topk per stream) of a session's recorders: one forward, or rows
    received over several calls (generation steps, an incremental capture's reused and new rows)."""
    weights, stats, topk = {}, {}, {}
    for s, lyrs in layer_sel.items():
        for rec in session.recorders:
            parts = [rec.assemble((s, l)) for l in lyrs]
            if isinstance(rec, FullRecorder):
                weights[s] = torch.stack([p[0] for p in parts])  # (L, h, Nq, Nk)
            elif isinstance(rec, StatsRecorder):
                stats[s] = {k: torch.stack([p[k][0] for p in parts]) for k in parts[0]}  # (L, h, Nq)
            elif isinstance(rec, TopKRecorder):
                topk[s] = tuple(torch.stack([p[i][0] for p in parts]) for i in range(2))  # (L, h, Nq, k)
    return weights, stats, topk


def _capture_encoded(lm, inputs, seqs, texts, meta, modes, layer_sel, head_sel, method, top_k, full_dtype,
                     block_elements, interventions, statistics=None) -> AttentionTrace:
    if method == "fast" and not supports_interface(lm.model):
        warnings.warn(f"{type(lm.model).__name__} does not route attention through transformers' "
                      "AttentionInterface; falling back to the eager reference (slower, O(N^2) memory)", stacklevel=3)
        method = "eager"
        if interventions:
            raise CaptureError(f"{type(lm.model).__name__}: interventions need the AttentionInterface fast path")
    if method not in ("fast", "eager"):
        raise InputError(f"unknown capture method {method!r}; valid methods: fast, eager")
    if method == "fast":
        session, _ = _run_fast(lm, inputs, layer_sel, head_sel, modes, top_k, full_dtype, block_elements,
                               interventions, statistics)
        for s, layers in layer_sel.items():
            for rec in session.recorders:
                missing = [l for l in layers if (s, l) not in rec.blocks]
                if missing:
                    raise CaptureError(f"{lm.name}: no attention was recorded for stream {s!r} layers {missing}")
        weights, stats, topk = assemble_session(session, layer_sel)
    else:
        weights, stats, topk = {}, {}, {}
        found, _ = _run_eager(lm, inputs)
        for s, layers in layer_sel.items():
            maps = torch.stack([found[s][l][0][head_sel[s]] for l in layers]).float().cpu()  # (L, h, Nq, Nk)
            if "full" in modes:
                weights[s] = maps.to(full_dtype)
            if "stats" in modes:
                stats[s] = _stats_from_maps(maps, _is_causal_stream(lm, s), statistics)
            if "topk" in modes:
                v, i = maps.topk(min(top_k, maps.shape[-1]), dim=-1)
                topk[s] = (v.to(torch.float16), i.to(torch.int32))
    meta = dict(meta)
    meta.update({
        "model_kind": lm.kind,
        "method": method,
        "modes": sorted(modes),
        "causal": {s: _is_causal_stream(lm, s) for s in layer_sel},
        "geometry": {s: list(v) for s, v in lm.geometry().items()},
        **sliding_window_meta(lm),
    })
    needed = {seq for s in layer_sel for seq in STREAM_SEQUENCES[s]}
    return AttentionTrace(tokens={k: v for k, v in seqs.items() if k in needed}, layers=layer_sel, heads=head_sel,
                          weights=weights, stats=stats, topk=topk, texts=texts, model_id=lm.name, meta=meta)


def capture_batch(
    model: LoadedModel | str,
    texts: Sequence[str] | None = None,
    *,
    input_ids: Sequence[Sequence[int]] | torch.Tensor | None = None,
    batch_size: int = 16,
    mode: str | Sequence[str] = "stats",
    layers: Iterable[int] | None = None,
    heads: Iterable[int] | None = None,
    top_k: int = 8,
    full_dtype: torch.dtype = torch.float16,
    truncate: bool = False,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    statistics: Sequence[str] | str | None = None,
) -> list[AttentionTrace]:
    """Capture many texts (encoder or causal models) in padded batches; padding is stripped per example,
    so each trace equals the one-by-one capture. Texts are grouped by length to waste little padding.

    Instead of ``texts``, ``input_ids`` takes one sequence of token ids per example (lists of ints,
    1-D tensors, or the rows of a 2-D tensor), used as they are, as in :func:`capture`."""
    lm = _as_loaded(model)
    if lm.kind not in ("encoder", "causal"):
        raise InputError("capture_batch takes encoder or decoder-only models; call capture() per example otherwise")
    modes = _modes(mode)
    top_k = check_top_k(top_k)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {reprlib.repr(batch_size)}")
    layer_sel, head_sel = resolve_selection(lm, layers, heads, None)
    _one_input(texts, input_ids, "texts")
    if input_ids is not None:
        if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 1:
            raise InputError("capture_batch's input_ids is a list of sequences (or a 2-D tensor); for one sequence "
                             "use capture(lm, input_ids=…)")
        if isinstance(input_ids, (str, bytes)) or not isinstance(input_ids, (list, tuple, torch.Tensor)):
            raise InputError(f"input_ids must be a list of token-id sequences, got {type(input_ids).__name__}")
        if not isinstance(input_ids, torch.Tensor) and any(isinstance(x, numbers.Integral) for x in input_ids):
            raise InputError("capture_batch's input_ids is a list of sequences; for one sequence use "
                             "capture(lm, input_ids=…)")
        seqs_ids = [check_input_ids(lm, x, f"input_ids[{i}]") for i, x in enumerate(input_ids)]
        texts = [_decoded(lm, ids) for ids in seqs_ids]
        encoded = [_encode_ids(lm, ids, truncate) for ids in seqs_ids]
    else:
        if isinstance(texts, (str, bytes)):
            raise InputError("capture_batch takes a list of texts; for one text use capture(lm, text)")
        texts = [check_text(t, f"text #{i}") for i, t in enumerate(texts)]
        encoded = [_encode(lm, t, None, truncate) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: encoded[i][0]["input_ids"].shape[1])
    results: list[AttentionTrace | None] = [None] * len(texts)
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        lengths = [encoded[i][0]["input_ids"].shape[1] for i in idx]
        n = max(lengths)
        batch: dict[str, torch.Tensor] = {}
        for key in encoded[idx[0]][0]:
            fill = pad_id if key == "input_ids" else 0
            batch[key] = torch.stack([torch.nn.functional.pad(encoded[i][0][key][0], (0, n - L), value=fill)
                                      for i, L in zip(idx, lengths)])  # (B, n): right padding
        batch["attention_mask"] = torch.stack([(torch.arange(n) < L).long() for L in lengths])  # (B, n)
        session, _ = _run_fast(lm, batch, layer_sel, head_sel, modes, top_k, full_dtype, block_elements, (),
                               statistics)
        for b, (i, L) in enumerate(zip(idx, lengths)):
            weights, stats, topk = {}, {}, {}
            for rec in session.recorders:
                parts = [rec.assemble(("self", l)) for l in layer_sel["self"]]
                if isinstance(rec, FullRecorder):
                    weights["self"] = torch.stack([p[b, :, :L, :L] for p in parts])  # (Lyr, h, L, L)
                elif isinstance(rec, StatsRecorder):
                    stats["self"] = {k: torch.stack([p[k][b, :, :L] for p in parts]) for k in parts[0]}
                elif isinstance(rec, TopKRecorder):
                    k = min(top_k, L)
                    topk["self"] = tuple(torch.stack([p[j][b, :, :L, :k] for p in parts]) for j in range(2))
            _, seqs, meta = encoded[i]
            meta = dict(meta, model_kind=lm.kind, method="fast", modes=sorted(modes),
                        causal={"self": lm.kind == "causal"}, geometry={s: list(v) for s, v in lm.geometry().items()})
            results[i] = AttentionTrace(tokens=seqs, layers=layer_sel, heads=head_sel, weights=weights, stats=stats,
                                        topk=topk, texts={"input": texts[i]}, model_id=lm.name, meta=meta)
    return results  # type: ignore[return-value]
