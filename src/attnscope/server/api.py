"""The REST API (/v1, /healthz) and the explorer's data endpoints (/v1/traces/...).

Every model call runs on the inference thread (:mod:`.worker`); requests are validated on the
event loop first (model allow-list, text length, batch size), so a refused request costs nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..cache import ResultCache, cache_key
from ..errors import InputError, UnknownNameError
from ..models import CATALOGUE, describe_catalogue, load_model
from . import payload
from .config import ServerConfig
from .schemas import (MAX_INDEX, AnalysisOut, AnalysisRunBase, AnalyzeRequest, BatchItem, BatchOut, BatchRequest,
                      CompareRequest, ErrorOut, GenerateRequest, Health, ModelOut, NeuronRequest, PooledRequest,
                      RunAnalysisRequest, TraceOut, TraceRequest)
from .worker import InferenceWorker

BINARY_TYPES = (payload.MEDIA_TYPE, "application/octet-stream")
SAFETENSORS_TYPE = "application/vnd.attnscope.trace+safetensors"


class ApiError(Exception):
    """An HTTP error with a JSON body ``{"error": {"type", "message"}}``."""

    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type_, message, headers or {}


ERRORS = {400: {"model": ErrorOut}, 404: {"model": ErrorOut}, 413: {"model": ErrorOut}, 422: {"model": ErrorOut},
          429: {"model": ErrorOut}, 503: {"model": ErrorOut}, 504: {"model": ErrorOut}}


class ServerState:
    """Loaded models, the inference worker and the explorer's trace cache."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.worker = InferenceWorker(config.queue_size)
        self.models: OrderedDict[str, Any] = OrderedDict(config.models)
        self.models_lock = threading.Lock()
        self.traces = ResultCache(max_bytes=config.trace_cache_bytes)
        self.derived = ResultCache(max_bytes=64 << 20)  # thumbnails / rollouts of cached traces

    # ---------------------------------------------------------------- models
    def check_model(self, name: str | None) -> str:
        name = name or self.config.model
        allowed = self.config.allowed()
        if name not in allowed:
            raise ApiError(404, "UnknownModel", f"unknown model {name!r}; this server serves: {', '.join(allowed)} "
                                                "(GET /v1/models); it never downloads a model on request")
        entry = CATALOGUE.get(name)
        if name not in self.models and entry is not None:
            if entry.source_dir() is None:
                raise ApiError(503, "ModelUnavailable", f"model {name!r} is not installed on this server "
                                                        f"(the operator can run `{entry.install_hint()}`)")
            if not entry.ready() and not self.config.allow_conversion and name != self.config.model:
                raise ApiError(503, "ModelUnavailable",
                               f"model {name!r} needs a one-time conversion; the operator can start the server "
                               f"with `attnscope serve --model {name}` (converts it once at start-up)")
        return name

    def model(self, name: str):
        """The LoadedModel (loads it on the calling thread — the inference thread)."""
        with self.models_lock:
            if name in self.models:
                self.models.move_to_end(name)
                return self.models[name]
        lm = load_model(name)
        with self.models_lock:
            self.models[name] = lm
            while len(self.models) > max(1, self.config.max_loaded_models):
                old = next(iter(self.models))
                if old in self.config.models:  # pre-built models stay
                    self.models.move_to_end(old)
                    if all(n in self.config.models for n in self.models):
                        break
                    continue
                self.models.pop(old)
        return lm

    # ---------------------------------------------------------------- limits and running
    def check_text(self, text: str | None, what: str = "text") -> None:
        if text is not None and len(text) > self.config.max_text_chars:
            raise ApiError(413, "TextTooLong", f"{what} has {len(text)} characters; this server accepts at most "
                                               f"{self.config.max_text_chars} per text")

    async def run(self, fn: Callable[[], Any]) -> Any:
        return await self.worker.run(fn, timeout=self.config.timeout_s)


def check_length(lm, text: str, text_pair: str | None, truncate: bool) -> None:
    """Refuse a text longer than the model reads with a message that fits the web as well as Python."""
    if truncate or lm.kind not in ("encoder", "causal", "seq2seq"):
        return
    enc = lm.tokenizer(text, text_pair, verbose=False) if text_pair is not None else lm.tokenizer(text, verbose=False)
    n = len(enc["input_ids"])  # counted only (verbose=False: no "sequence length is longer" log line)
    if n > lm.max_length:
        raise ApiError(413, "TooManyTokens",
                       f"the text has {n} tokens but {lm.name} reads at most {lm.max_length}: shorten it, or keep "
                       f"its first {lm.max_length} tokens (the explorer's 'truncate' box; \"truncate\": true in a "
                       "request)")


def _wants_binary(request: Request, fmt: str) -> bool:
    accept = request.headers.get("accept", "")
    return fmt == "binary" or (fmt == "json" and any(t in accept for t in BINARY_TYPES))


def _tokens_json(tokens) -> dict[str, Any]:
    return tokens.to_json()


def trace_json(trace, max_elements: int) -> dict[str, Any]:
    """The JSON form of an AttentionTrace (see TraceOut)."""
    n = sum(int(np.prod(list(trace.shape(s).values()))) for s in trace.streams if trace.has("weights", s))
    if n > max_elements:
        raise ApiError(413, "AnswerTooLarge",
                       f"the full maps hold {n:,} weights; JSON answers are limited to {max_elements:,}. Ask for "
                       "format=binary (or Accept: application/vnd.attnscope.arrays), mode=stats/topk, or fewer "
                       "layers/heads")
    streams = {}
    for s in trace.streams:
        d: dict[str, Any] = {"layers": trace.layers[s], "heads": trace.heads[s],
                             "query_tokens": _tokens_json(trace.query_tokens(s)),
                             "key_tokens": _tokens_json(trace.key_tokens(s)),
                             "causal": bool(trace.meta.get("causal", {}).get(s, False))}
        if trace.has("weights", s):
            d["weights"] = np.round(trace.weights(s).numpy(), 5).tolist()
        if trace.has("stats", s) or trace.has("weights", s):
            rows = trace.row_stats(s) if trace.has("stats", s) else None
            if rows is not None:
                d["stats"] = {k: v.tolist() for k, v in rows.items()}
                d["head_stats"] = {k: v.float().mean(-1).tolist() for k, v in rows.items() if k != "argmax"}
            else:
                d["head_stats"] = payload.head_summary(trace, s)
        if trace.has("topk", s):
            v, i = trace.topk(s)
            d["topk"] = {"values": np.round(v.float().numpy(), 5).tolist(), "indices": i.tolist()}
        streams[s] = d
    return {"model": trace.model_id, "kind": trace.meta.get("model_kind", ""), "dims": ["layer", "head", "query", "key"],
            "texts": trace.texts, "streams": streams, "meta": _jsonable(trace.meta)}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return x


def _trace_binary(trace) -> bytes:
    header = trace_json_header(trace)
    return payload.encode(header, payload.trace_arrays(trace))


def trace_json_header(trace) -> dict[str, Any]:
    return {"model": trace.model_id, "kind": trace.meta.get("model_kind", ""), "texts": trace.texts,
            "layers": trace.layers, "heads": trace.heads, "meta": _jsonable(trace.meta),
            "tokens": {k: v.to_json() for k, v in trace.tokens.items()}}


def _trace_safetensors(trace) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "trace.safetensors"
        trace.save(path)
        return path.read_bytes()


def _add_analysis_route(r: APIRouter, name: str, info, run) -> None:
    from pydantic import Field, create_model

    from .analysis_params import params_model

    pm = params_model(name)
    camel = "".join(part.capitalize() for part in name.split("_"))
    model = create_model(f"{camel}Request", __base__=AnalysisRunBase,
                         params=(pm, Field(default_factory=pm, description=f"Parameters of {name}.")))

    async def endpoint(req):
        return await run(name, req, req.params)

    endpoint.__annotations__ = {"req": model}
    endpoint.__name__ = f"analysis_{name}"
    doc = (inspect.getdoc(info.func) or "").split("\n", 1)  # summary line, then the rest
    r.add_api_route(f"/v1/analyses/{name}", endpoint, methods=["POST"], tags=["analyses"], responses=ERRORS,
                    summary=info.summary or name, description=doc[1].strip() if len(doc) > 1 else "")


def build_router(state: ServerState) -> APIRouter:
    r = APIRouter()
    cfg = state.config

    @r.get("/healthz", response_model=Health, tags=["service"], summary="Liveness and queue state")
    async def healthz() -> Health:
        return Health(status="ok", default_model=cfg.model, loaded_models=list(state.models),
                      queue_waiting=state.worker.waiting, busy=state.worker.busy)

    @r.get("/v1/models", response_model=list[ModelOut], tags=["models"], summary="Models this server may run")
    async def models() -> list[ModelOut]:
        allowed = cfg.allowed()
        rows = {row["name"]: row for row in describe_catalogue()}
        out = []
        for name in allowed:
            row = rows.get(name)
            lm = state.models.get(name)
            kind = row["kind"] if row else (lm.kind if lm is not None else "")
            out.append(ModelOut(name=name, kind=kind, architecture=(row or {}).get("architecture", ""),
                                layers_x_heads=(row or {}).get("layers_x_heads", ""),
                                description=(row or {}).get("description", ""),
                                status=(row or {}).get("status", "ready" if lm is not None else ""),
                                allowed=True, loaded=name in state.models, default=name == cfg.model))
        return out

    @r.get("/v1/analyses", response_model=list[AnalysisOut], tags=["analyses"],
           summary="Analyses in the attnscope.analysis registry")
    async def analyses() -> list[AnalysisOut]:
        try:
            from ..analysis import analysis_info, list_analyses
        except ImportError:
            return []
        from .analysis_params import rest_params

        out = []
        for name in list_analyses():
            info = analysis_info(name)
            params = info.param_schema()
            rest = rest_params(name)
            for p, d in params.items():  # the JSON Schema a REST request must match (null: not accepted over REST)
                d["schema"] = rest.get(p)
            out.append(AnalysisOut(name=name, summary=info.summary, result=info.result, needs=list(info.needs),
                                   square=info.square, tags=list(info.tags), params=params))
        return out

    @r.post("/v1/analyze", response_model=TraceOut, tags=["capture"], responses={
        **ERRORS, 200: {"content": {"application/json": {}, payload.MEDIA_TYPE: {}, SAFETENSORS_TYPE: {}},
                        "description": "The trace: JSON (TraceOut), the binary container, or a .safetensors trace"}},
        summary="Capture the attention of one text")
    async def analyze(req: AnalyzeRequest, request: Request):
        name = state.check_model(req.model)
        for what in ("text", "text_pair", "target"):
            state.check_text(getattr(req, what), what)

        def work():
            from ..capture import capture

            lm = state.model(name)
            modes = req.mode
            trace = capture(lm, req.text, text_pair=req.text_pair, target=req.target, mode=modes,
                            layers=req.layers, heads=req.heads, top_k=req.top_k)
            if req.format == "safetensors":
                return Response(_trace_safetensors(trace), media_type=SAFETENSORS_TYPE)
            if _wants_binary(request, req.format):
                return Response(_trace_binary(trace), media_type=payload.MEDIA_TYPE)
            return JSONResponse(trace_json(trace, cfg.max_json_elements))

        return await state.run(work)

    @r.post("/v1/batch", response_model=BatchOut, tags=["capture"], responses=ERRORS,
            summary="Per-head statistics of many texts")
    async def batch(req: BatchRequest) -> BatchOut:
        if len(req.texts) > cfg.max_batch:
            raise ApiError(413, "BatchTooLarge", f"{len(req.texts)} texts; this server accepts at most "
                                                 f"{cfg.max_batch} per batch request")
        name = state.check_model(req.model)
        for i, t in enumerate(req.texts):
            state.check_text(t, f"text #{i}")

        def work() -> BatchOut:
            from ..capture import capture_batch

            lm = state.model(name)
            traces = capture_batch(lm, req.texts, mode="stats", layers=req.layers, heads=req.heads)
            items = [BatchItem(index=i, n_tokens=len(t.tokens["input"]),
                               head_stats={k: v.tolist() for k, v in t.head_stats().items()})
                     for i, t in enumerate(traces)]
            s = traces[0].resolve_stream()
            return BatchOut(model=name, layers=traces[0].layers[s], heads=traces[0].heads[s], results=items)

        return await state.run(work)

    async def run_named_analysis(name: str, req: AnalysisRunBase, params: Any):
        from ..analysis import run_analysis
        from .analysis_params import trace_params

        trace = None
        if req.trace_id:
            trace = state.traces.get(req.trace_id)
            if trace is None:
                raise ApiError(404, "UnknownTrace", f"trace {req.trace_id!r} is not (or no longer) held by the "
                                                    "server; POST /v1/traces again")
        elif not req.text:
            raise ApiError(422, "InputError", "give text (to capture) or trace_id (an explorer trace)")
        model_name = state.check_model(req.model) if trace is None else None
        for what in ("text", "text_pair", "target"):
            state.check_text(getattr(req, what), what)
        kwargs = params.model_dump(exclude_unset=True)
        for p in trace_params(type(params)):  # trace ids -> the explorer's traces
            if kwargs.get(p) is not None:
                ids = kwargs[p] if isinstance(kwargs[p], list) else [kwargs[p]]
                found = [state.traces.get(i) for i in ids]
                if any(t is None for t in found):
                    missing = ids[[t is None for t in found].index(True)]
                    raise ApiError(404, "UnknownTrace", f"params.{p}: trace {missing!r} is not (or no longer) held "
                                                        "by the server; POST /v1/traces again")
                kwargs[p] = found if isinstance(kwargs[p], list) else found[0]

        def work():
            from ..capture import capture

            t = trace
            if t is None:
                lm = state.model(model_name)
                t = capture(lm, req.text, text_pair=req.text_pair, target=req.target, mode=["full", "stats"],
                            layers=req.layers, heads=req.heads)
            result = run_analysis(name, t, **kwargs)
            d = result.to_dict() if hasattr(result, "to_dict") else result
            return JSONResponse(_jsonable(d))

        return await state.run(work)

    try:
        from ..analysis import analysis_info, list_analyses
        names = list_analyses()
    except ImportError:
        names = []
    for name in names:  # one documented route per analysis, its parameters typed and bounded
        _add_analysis_route(r, name, analysis_info(name), run_named_analysis)

    @r.post("/v1/analyses/{name}", tags=["analyses"], responses=ERRORS, include_in_schema=False)
    async def run_any_analysis(name: str, req: RunAnalysisRequest):
        """Analyses registered after the server started (and unknown names: 404)."""
        try:
            from ..analysis import analysis_info
        except ImportError:
            raise ApiError(404, "UnknownAnalysis", "this installation has no analysis registry") from None
        analysis_info(name)  # unknown name -> 404 listing the valid ones
        from pydantic import ValidationError

        from .analysis_params import params_model

        try:
            params = params_model(name).model_validate(req.params)
        except ValidationError as e:
            raise RequestValidationError([{**x, "loc": ("body", "params", *x["loc"])} for x in e.errors()]) from None
        return await run_named_analysis(name, req, params)

    # ------------------------------------------------------------ explorer data
    @r.post("/v1/traces", tags=["explorer"], responses=ERRORS,
            summary="Capture full maps for the explorer; returns tokens, per-head statistics and an id")
    async def new_trace(req: TraceRequest, request: Request):
        name = state.check_model(req.model)
        for what in ("text", "text_pair", "target"):
            state.check_text(getattr(req, what), what)
        key = cache_key(name, (req.text, req.text_pair, req.target), {"mode": "full", "view": "explorer",
                                                                       "truncate": req.truncate})[:32]

        def work():
            from ..capture import capture

            t0 = time.perf_counter()
            trace = state.traces.get(key)
            if trace is None:
                lm = state.model(name)
                check_length(lm, req.text, req.text_pair, req.truncate)
                with warnings.catch_warnings():  # truncation is reported in the summary, not as a warning
                    warnings.simplefilter("ignore")
                    trace = capture(lm, req.text, text_pair=req.text_pair, target=req.target, mode="full",
                                    truncate=req.truncate)
                state.traces.put(key, trace, nbytes=trace.nbytes())
            t1 = time.perf_counter()
            # the model view's thumbnails in the same answer (binary) and the same pass as the statistics
            thumbs = {} if req.overview and _wants_binary(request, "json") else None
            summary = payload.trace_summary(trace, key, {"timing": {"capture_s": round(t1 - t0, 4)}}, thumbs=thumbs)
            if thumbs is None:
                return summary
            for s, th in thumbs.items():  # GET /overview (another stream, a later page) answers from here
                state.derived.put(f"{key}/{s}/overview/{payload.THUMB_SIZE}", th, nbytes=th.nbytes)
            summary["timing"]["summary_s"] = round(time.perf_counter() - t1, 4)
            return Response(payload.encode(summary, {f"overview/{s}": th for s, th in thumbs.items()}),
                            media_type=payload.MEDIA_TYPE)

        return await state.run(work)

    @r.post("/v1/generate", tags=["explorer"], responses=ERRORS,
            summary="Generate from a causal LM (or encoder-decoder) and capture each step's attention")
    async def generate_trace(req: GenerateRequest):
        name = state.check_model(req.model)
        state.check_text(req.prompt, "prompt")
        try:
            from ..capture.generation import generate
        except ImportError:
            raise ApiError(501, "NotAvailable", "generation capture is not available in this installation") from None

        def work():
            lm = state.model(name)
            if lm.kind == "encoder":
                raise InputError(f"{name} is an encoder; it cannot generate — choose a causal LM such as smollm2")
            res = generate(lm, req.prompt, max_new_tokens=req.max_new_tokens, do_sample=req.do_sample)
            key = cache_key(name, req.prompt, {"generate": req.max_new_tokens, "sample": req.do_sample,
                                               "t": time.time() if req.do_sample else 0})[:32]
            state.traces.put(key, res.trace, nbytes=res.trace.nbytes())
            return payload.trace_summary(res.trace, key, {"generation": {
                "text": res.text, "prompt_length": res.prompt_length, "token_ids": res.token_ids,
                "token_probs": list(res.token_probs), "step_entropies": list(res.step_entropies)}})

        return await state.run(work)

    def _trace(tid: str):
        t = state.traces.get(tid)
        if t is None:
            raise ApiError(404, "UnknownTrace", f"trace {tid!r} is not (or no longer) held by the server; "
                                                "POST /v1/traces again")
        return t

    def _stream(t, stream: str | None) -> str:
        return t.resolve_stream(stream or None)

    def _bin(header: dict, arrays: dict) -> Response:
        return Response(payload.encode(header, arrays), media_type=payload.MEDIA_TYPE,
                        headers={"Cache-Control": "private, max-age=600"})

    @r.get("/v1/traces/{tid}/overview", tags=["explorer"], responses=ERRORS,
           summary="uint8 thumbnails (layer, head, sq, sk) of every head, max-pooled")
    async def trace_overview(tid: str, stream: str | None = None, size: int = Query(payload.THUMB_SIZE, ge=8, le=256)):
        t = _trace(tid)
        s = _stream(t, stream)

        def work():
            return state.derived.get_or_compute(f"{tid}/{s}/overview/{size}", lambda: payload.overview(t, s, size))

        thumbs = await run_in_threadpool(work)
        return _bin({"stream": s, "layers": t.layers[s], "heads": t.heads[s], "scale": 1 / 255}, {"thumbs": thumbs})

    @r.get("/v1/traces/{tid}/map", tags=["explorer"], responses=ERRORS,
           summary="One head's map (query, key) as float16; head=mean gives the layer's mean over heads")
    async def trace_map(tid: str, layer: int = Query(..., ge=-MAX_INDEX - 1, le=MAX_INDEX),
                        head: str = Query(..., max_length=16), stream: str | None = Query(None, max_length=32)):
        t = _trace(tid)
        s = _stream(t, stream)
        if head != "mean":
            try:
                head_i: int | str = int(head)
            except ValueError:
                raise InputError(f"head must be a head index or 'mean', got {head!r}") from None
        else:
            head_i = "mean"
        m = await run_in_threadpool(payload.head_map, t, s, layer, head_i)
        return _bin({"stream": s, "layer": layer, "head": head}, {"map": m})

    @r.get("/v1/traces/{tid}/safetensors", tags=["explorer"], responses=ERRORS,
           summary="The explorer's trace as a .safetensors file (attnscope.AttentionTrace.load reads it)")
    async def trace_file(tid: str):
        t = _trace(tid)
        data = await run_in_threadpool(_trace_safetensors, t)
        return Response(data, media_type=SAFETENSORS_TYPE,
                        headers={"Content-Disposition": 'attachment; filename="attnscope-trace.safetensors"'})

    @r.post("/v1/traces/upload", tags=["explorer"], responses=ERRORS,
            summary="Load a saved .safetensors trace (body: the file's bytes); returns its summary and an id",
            description="Read as an attnscope trace only (never unpickled), within the server's body limit; the id "
                        "works wherever a trace id does (POST /v1/compare, the analyses' trace_id).",
            openapi_extra={"requestBody": {"required": True, "content": {
                t: {"schema": {"type": "string", "format": "binary"}}
                for t in (SAFETENSORS_TYPE, "application/octet-stream")}}})
    async def upload_trace(request: Request):
        data = await request.body()

        def work():
            import hashlib

            from .upload import read_trace

            trace = read_trace(data)
            key = "upload-" + hashlib.sha256(data).hexdigest()[:24]
            state.traces.put(key, trace, nbytes=trace.nbytes())
            return payload.trace_summary(trace, key, {"uploaded": True})

        return await run_in_threadpool(work)

    @r.post("/v1/compare", tags=["explorer"], responses=ERRORS,
            summary="Compare two held traces head by head (Jensen–Shannon divergence, mean |a − b|)")
    async def compare_traces(req: CompareRequest):
        """The registered ``compare`` analysis of trace A against trace B, after a check that says in one line
        what cannot be compared (other layers/heads, other lengths by position); the per-head scores only
        (the difference maps: POST /v1/analyses/compare)."""
        from .upload import check_comparable

        a, b = _trace(req.a), _trace(req.b)
        s = check_comparable(a, b, req.stream, req.align)

        def work():
            from ..analysis import run_analysis

            d = run_analysis("compare", a, other=b, stream=s, align=req.align).to_dict()
            d.pop("difference", None)
            d["texts"] = {"a": a.texts, "b": b.texts}
            return JSONResponse(_jsonable(d))

        return await run_in_threadpool(work)

    @r.post("/v1/neuron", tags=["explorer"], responses=ERRORS,
            summary="Query·key decomposition of one head for one query token (the explorer's neuron view)")
    async def neuron(req: NeuronRequest):
        name = state.check_model(req.model)
        for what in ("text", "text_pair"):
            state.check_text(getattr(req, what), what)

        def work():
            from .neuron import qk_decomposition

            lm = state.model(name)
            check_length(lm, req.text, req.text_pair, req.truncate)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return JSONResponse(qk_decomposition(lm, req.text, req.layer, req.head, req.query,
                                                     text_pair=req.text_pair, truncate=req.truncate))

        return await state.run(work)

    @r.post("/v1/pooled", tags=["explorer"], responses=ERRORS,
            summary="Block-pooled (max, mean) overview of long inputs, never holding a full map; region zooms in")
    async def pooled(req: PooledRequest):
        name = state.check_model(req.model)
        state.check_text(req.text)

        def work():
            from ..corpus.longcontext import pooled_overview

            lm = state.model(name)
            check_length(lm, req.text, None, req.truncate)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ov = pooled_overview(lm, req.text, layers=req.layers, heads=req.heads, grid=req.grid,
                                     region=req.region, truncate=req.truncate)
            labels = ov.tokens.labels(req.text) if ov.tokens is not None else []
            header = {"layers": ov.layers, "heads": ov.heads, "region": list(ov.region), "tile": list(ov.tile),
                      "n_query": ov.n_query, "n_key": ov.n_key, "causal": bool(ov.meta.get("causal")),
                      "tokens": labels, "model": name, "timing": {"pooled_s": round(time.perf_counter() - t0, 4)}}
            return _bin(header, {"max": ov.max.numpy().astype(np.float16), "mean": ov.mean.numpy().astype(np.float16)})

        return await state.run(work)

    @r.get("/v1/traces/{tid}/rollout", tags=["explorer"], responses=ERRORS,
           summary="Attention rollout after the last layer (Abnar & Zuidema 2020), float16 (query, key)")
    async def trace_rollout(tid: str, stream: str | None = None):
        t = _trace(tid)
        s = _stream(t, stream)

        def work():
            return state.derived.get_or_compute(f"{tid}/{s}/rollout", lambda: payload.rollout_map(t, s))

        m, info = await run_in_threadpool(work)
        return _bin({"stream": s, **info}, {"map": m})

    return r
