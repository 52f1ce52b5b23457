"""Request and response models of the REST API (they generate the OpenAPI document at /openapi.json)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["full", "stats", "topk"]
Format = Literal["json", "binary", "safetensors"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AnalyzeRequest(_Strict):
    text: str = Field(..., min_length=1, description="The text (source text for encoder-decoders).",
                      examples=["The cat sat on the mat."])
    text_pair: str | None = Field(None, min_length=1, description="Second sentence of a pair (encoders).")
    target: str | None = Field(None, min_length=1, description="Target text (teacher forcing) for encoder-decoders.")
    model: str | None = Field(None, description="Model name; the server's default when omitted. See GET /v1/models.")
    layers: list[int] | None = Field(None, description="Model layer indices to record (negative counts from the end).",
                                     max_length=256)
    heads: list[int] | None = Field(None, description="Model head indices to record.", max_length=256)
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
    model: str | None = None
    layers: list[int] | None = Field(None, max_length=256)
    heads: list[int] | None = Field(None, max_length=256)


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


class RunAnalysisRequest(_Strict):
    text: str | None = Field(None, min_length=1, description="Text to capture (or give trace_id).")
    text_pair: str | None = Field(None, min_length=1)
    target: str | None = Field(None, min_length=1)
    trace_id: str | None = Field(None, description="A trace the explorer already captured (POST /v1/traces).")
    model: str | None = None
    layers: list[int] | None = Field(None, max_length=256)
    heads: list[int] | None = Field(None, max_length=256)
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword parameters of the analysis.")


class TraceRequest(_Strict):
    text: str = Field(..., min_length=1)
    text_pair: str | None = Field(None, min_length=1)
    target: str | None = Field(None, min_length=1)
    model: str | None = None


class GenerateRequest(_Strict):
    prompt: str = Field(..., min_length=1)
    model: str | None = None
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
