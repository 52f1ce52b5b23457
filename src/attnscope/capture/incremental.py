"""Incremental capture for decoder-only models: append text to a capture, computing only the new rows.

A causal model's attention row ``i`` depends only on tokens ``0..i``, so when text is appended the
rows of the unchanged prefix stay exact and only the rows of the new tokens need computing: they are
run over the prefix's keys and values (the KV cache), exactly as each step of :func:`attnscope.generate`
is. The recorders are generation's and the assembly is capture's (``api.assemble_session``); the reused
rows are handed to the recorders first, so the result is the square causal trace one forward over the
whole text gives (the tests check it against a fresh capture and against transformers' eager attention).

The whole text is re-tokenised: a tokenizer may merge across the boundary (``" wor" + "ld"``) or end
every text with a special token (BERT-style ``[SEP]``); rows from the first token that changed are
recomputed, and the cache is cropped back to the common prefix (or rebuilt, for a sliding-window cache
that cannot be cropped). Encoders attend in both directions: every row changes when a token is added,
so they need a full recompute (:func:`attnscope.capture`).
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch

from ..devices import capture_memory_errors, model_inputs
from ..errors import InputError
from ..models import LoadedModel
from ..statistics import ROW_STATS
from ..trace import AttentionTrace
from .api import _as_loaded, _encode, _modes, attention_implementation, check_text, check_top_k, resolve_selection, \
    sliding_window_meta
from .generation import assemble_session
from .interface import DEFAULT_BLOCK_ELEMENTS, CaptureSession, annotate_model, register, session_scope
from .recorders import FullRecorder, StatsRecorder, TopKRecorder, make_recorders

_ENCODER_HINT = ("attends in both directions, so appending a token changes every row and needs a full recompute: "
                 "capture the whole text again with attnscope.capture() (incremental capture is for decoder-only "
                 "models)")


@dataclass
class IncrementalCapture:
    """A decoder's capture that can be extended: the trace, the model and the keys/values of its tokens.

    ``computed_rows``: query rows the last call computed (the others were reused)."""

    trace: AttentionTrace
    model: LoadedModel = field(repr=False)
    cache: Any = field(default=None, repr=False)  # transformers Cache holding every token's keys/values, or None
    computed_rows: int = 0
    settings: dict = field(default_factory=dict, repr=False)  # recorder settings of the trace

    @property
    def text(self) -> str:
        return self.trace.texts["input"]


def incremental(
    model: LoadedModel | str,
    text: str,
    *,
    mode: str | Sequence[str] = "full",
    layers: Iterable[int] | int | None = None,
    heads: Iterable[int] | int | None = None,
    top_k: int = 8,
    full_dtype: torch.dtype = torch.float16,
    statistics: Sequence[str] | str | None = None,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> IncrementalCapture:
    """Capture ``text`` with a decoder-only model, keeping its KV cache so :func:`extend` can append text.

    The arguments are :func:`attnscope.capture`'s; the trace equals ``capture(model, text, ...)``."""
    lm = _as_loaded(model)
    _check_decoder(lm)
    text = check_text(text)
    modes = _modes(mode)
    settings = {"modes": modes, "top_k": check_top_k(top_k), "full_dtype": full_dtype, "statistics": statistics,
                "block_elements": block_elements}
    layer_sel, head_sel = resolve_selection(lm, layers, heads, ["self"])
    return _grow(lm, text, None, 0, layer_sel, head_sel, settings, None)


def extend(state: IncrementalCapture | AttentionTrace, more_text: str, *,
           model: LoadedModel | str | None = None) -> IncrementalCapture:
    """Append ``more_text`` to a decoder's capture; only the new tokens' rows are computed.

    ``state``: what :func:`incremental` or a previous ``extend`` returned (its KV cache is reused and
    handed on to the result), or an :class:`AttentionTrace` of a decoder-only model (``model`` is then
    loaded from ``trace.model_id`` unless given; the prefix's keys and values are recomputed once,
    its attention rows are not). The result's trace equals a capture of the whole text with the same
    mode, layers, heads and statistics.
    """
    if isinstance(state, IncrementalCapture):
        if model is not None and _as_loaded(model) is not state.model:
            raise InputError("extend: model= is for a trace; an incremental capture already holds its model")
        lm, trace, cache, settings = state.model, state.trace, state.cache, state.settings
        state.cache = None  # handed on: the result owns it (extending this state again recomputes the prefix)
    elif isinstance(state, AttentionTrace):
        trace = state
        lm = _as_loaded(model if model is not None else trace.model_id)
        if lm.name != trace.model_id:
            raise InputError(f"extend: the trace was captured with {reprlib.repr(trace.model_id)}, not "
                             f"{reprlib.repr(lm.name)}; pass the model it was captured with")
        _check_decoder(lm)
        settings, cache = _settings_of(trace), None
    else:
        raise InputError(f"extend takes an incremental capture or an AttentionTrace, got {type(state).__name__}")
    _check_decoder(lm)
    _check_extendable(trace)
    if not isinstance(more_text, str) or not more_text:
        raise InputError("more_text must be a non-empty string (the text to append, with its leading space)")
    return _grow(lm, trace.texts["input"] + more_text, trace, len(trace.tokens["input"]), dict(trace.layers),
                 dict(trace.heads), settings, cache)


# ---------------------------------------------------------------------------- checks
def _check_decoder(lm: LoadedModel) -> None:
    if lm.kind == "encoder":
        raise InputError(f"{lm.name} is an encoder: it {_ENCODER_HINT}")
    if lm.kind != "causal":
        raise InputError(f"{lm.name} is an encoder-decoder: its encoder {_ENCODER_HINT} (or attnscope.generate() "
                         "to extend the target)")


def _check_extendable(trace: AttentionTrace) -> None:
    meta = trace.meta
    why = None
    if trace.streams != ["self"] or not meta.get("causal", {}).get("self"):
        why = "it is not a decoder-only model's capture"
    elif meta.get("method") not in ("fast", "eager", "fast-incremental"):
        why = (f"it was made by {reprlib.repr(meta.get('method'))}, not capture(); capture the prompt and its "
               "continuation as one text first")
    elif meta.get("from_ids") or "input_pair" in trace.texts or "input" not in trace.texts:
        why = "it was captured from token ids or a text pair; extend needs a capture of one text"
    elif meta.get("truncated"):
        why = "its text was truncated"
    elif meta.get("query_offsets"):
        why = "it holds only some query rows"
    elif not trace.tokens["input"].ids:
        why = "it holds no token ids"
    if why:
        raise InputError(f"this trace cannot be extended: {why}")


def _settings_of(trace: AttentionTrace) -> dict:
    """The recorder settings a trace was captured with, read off its payloads."""
    modes = {m for m, payload in (("full", "weights"), ("stats", "stats"), ("topk", "topk")) if trace.has(payload)}
    stored = list(trace._stats.get("self", {}))  # the statistics recorded, not those derived from maps
    top_k = int(trace.topk()[0].shape[-1]) if "topk" in modes else 8
    full_dtype = trace._weights["self"].dtype if "full" in modes and isinstance(trace._weights["self"], torch.Tensor) \
        else torch.float16
    return {"modes": modes, "top_k": top_k, "full_dtype": full_dtype,
            "statistics": [s for s in ROW_STATS if s in stored] or None, "block_elements": DEFAULT_BLOCK_ELEMENTS}


# ---------------------------------------------------------------------------- the work
def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _seed(session: CaptureSession, trace: AttentionTrace, keep: int) -> None:
    """Hand the first ``keep`` rows of every recorded (layer, head) of ``trace`` to the session's recorders,
    as if an earlier call had recorded them (keys ``0..keep-1``)."""
    layers = trace.layers["self"]
    for rec in session.recorders:
        for i, l in enumerate(layers):
            site = ("self", l)
            if isinstance(rec, FullRecorder):
                w = trace.weights("self", dtype=rec.dtype)[i, :, :keep, :keep]  # (h, keep, keep)
                rec._keep(site, (0, w[None].clone()), keep)  # (1, h, keep, keep)
            elif isinstance(rec, StatsRecorder):
                rs = trace.row_stats("self")
                rec._keep(site, {k: rs[k][i, :, :keep][None].clone() for k in rec.names}, keep)  # (1, h, keep)
            elif isinstance(rec, TopKRecorder):
                v, ix = trace.topk("self")  # (L, h, Nq, k)
                k = min(rec.k, keep)
                rec._keep(site, {"values": v[i, :, :keep, :k][None].clone(),
                                 "indices": ix[i, :, :keep, :k][None].clone()}, keep)  # (1, h, keep, k)


def _forward(lm: LoadedModel, inputs: dict, start: int, stop: int, cache) -> Any:
    """Run tokens ``start:stop`` of the encoded text after the ``start`` tokens already in ``cache`` (a
    transformers Cache, or None to start one). Every input the tokenizer gave (e.g. token type ids) is
    passed as :func:`attnscope.capture` passes it; the attention mask covers the cached tokens too."""
    from transformers import DynamicCache

    cache = DynamicCache(config=lm.model.config) if cache is None else cache
    part = {k: (v[:, :stop] if k == "attention_mask" else v[:, start:stop]) for k, v in inputs.items()}  # (1, n)
    with torch.no_grad():
        out = lm.model(**model_inputs(part, lm.model), past_key_values=cache, use_cache=True)
    return out.past_key_values


def _rewind(lm: LoadedModel, cache, inputs: dict, keep: int):
    """The cache holding exactly the first ``keep`` tokens: cropped, or rebuilt when it cannot be."""
    if cache is not None and cache.get_seq_length() >= keep:
        drop = cache.get_seq_length() - keep
        try:
            if drop:
                cache.crop(-drop)
            if cache.get_seq_length() == keep:
                return cache
        except (RuntimeError, ValueError):  # a sliding-window layer past its window keeps no history
            pass
    if keep == 0:
        return None
    with attention_implementation(lm.model, "attnscope"):  # no session: plain SDPA, as the capture runs it
        return _forward(lm, inputs, 0, keep, None)


def _grow(lm: LoadedModel, text: str, previous: AttentionTrace | None, n_prev: int, layer_sel, head_sel,
          settings: dict, cache) -> IncrementalCapture:
    inputs, seqs, meta = _encode(lm, text, None, False)
    ids = inputs["input_ids"][0].tolist()
    keep = _common_prefix(previous.tokens["input"].ids, ids) if previous is not None else 0
    keep = min(keep, n_prev, len(ids) - 1)  # at least one row is computed (the text only grows)
    register()
    if not getattr(lm.model, "_attnscope_annotated", False):
        annotate_model(lm.model)
        lm.model._attnscope_annotated = True
    with capture_memory_errors(None, settings["block_elements"]):
        cache = _rewind(lm, cache, inputs, keep)
    session = CaptureSession(
        recorders=make_recorders(settings["modes"], settings["top_k"], settings["full_dtype"], settings["statistics"]),
        layers={s: set(v) for s, v in layer_sel.items()}, heads=dict(head_sel),
        block_elements=settings["block_elements"])
    if keep:
        _seed(session, previous, keep)
        n_layers = lm.geometry()["self"][0]
        session.rows_seen = {("self", l): keep for l in range(n_layers)}  # new rows' absolute positions
    with attention_implementation(lm.model, "attnscope"), session_scope(session), \
            capture_memory_errors(session, settings["block_elements"]):
        cache = _forward(lm, inputs, keep, len(ids), cache)
    weights, stats, topk = assemble_session(session, layer_sel)
    meta = dict(meta)
    meta.update({"model_kind": lm.kind, "method": "fast-incremental", "modes": sorted(settings["modes"]),
                 "causal": {"self": True}, "geometry": {s: list(v) for s, v in lm.geometry().items()},
                 "incremental": {"reused_rows": keep, "computed_rows": len(ids) - keep},
                 **sliding_window_meta(lm)})
    trace = AttentionTrace(tokens=seqs, layers=layer_sel, heads=head_sel, weights=weights, stats=stats, topk=topk,
                           texts={"input": text}, model_id=lm.name, meta=meta)
    return IncrementalCapture(trace=trace, model=lm, cache=cache, computed_rows=len(ids) - keep, settings=settings)
