"""The few labelled result types analyses return; each has a renderer in :mod:`attnscope.render`.

Arrays are numpy (float64 unless said otherwise) with named dimensions documented per field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


@dataclass
class TokenScores:
    """Scores per token: ``scores[name]`` has shape (token,)."""

    tokens: list[str]
    scores: dict[str, np.ndarray]
    name: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "TokenScores", "name": self.name, "tokens": self.tokens, "scores": _jsonable(self.scores),
                "meta": _jsonable({k: v for k, v in self.meta.items() if k != "graph"})}


@dataclass
class HeadScores:
    """Named tables over (layer, head): ``scores[name]`` has shape (layer, head).

    ``layers`` / ``heads`` are the model indices of the rows / columns.
    """

    scores: dict[str, np.ndarray]
    layers: list[int]
    heads: list[int]
    name: str
    stream: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, metric: str) -> np.ndarray:
        from ..errors import UnknownNameError

        if metric not in self.scores:
            raise UnknownNameError("metric", metric, list(self.scores))
        return self.scores[metric]

    @property
    def metrics(self) -> list[str]:
        return list(self.scores)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per head: {"layer", "head", metric: value, ...} (for tables)."""
        out = []
        for li, layer in enumerate(self.layers):
            for hi, head in enumerate(self.heads):
                row: dict[str, Any] = {"layer": layer, "head": head}
                row.update({m: float(v[li, hi]) for m, v in self.scores.items()})
                out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"type": "HeadScores", "name": self.name, "stream": self.stream, "layers": self.layers,
                "heads": self.heads, "scores": _jsonable(self.scores), "meta": _jsonable(self.meta)}


@dataclass
class TokenMaps:
    """Token-to-token maps per layer: ``values`` (layer, query, key), e.g. cumulative rollout after each layer."""

    values: np.ndarray
    layers: list[int]
    query_tokens: list[str]
    key_tokens: list[str]
    name: str
    stream: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> np.ndarray:
        """The map after the last layer: (query, key)."""
        return self.values[-1]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "TokenMaps", "name": self.name, "stream": self.stream, "layers": self.layers,
                "query_tokens": self.query_tokens, "key_tokens": self.key_tokens,
                "values": _jsonable(self.values), "meta": _jsonable(self.meta)}


@dataclass
class Curves:
    """Curves over a shared x axis: ``series[name]`` has shape (len(x),); ``spread[name]`` the same (or absent)."""

    x: np.ndarray
    series: dict[str, np.ndarray]
    name: str
    xlabel: str
    ylabel: str
    spread: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Curves", "name": self.name, "x": _jsonable(self.x), "series": _jsonable(self.series),
                "spread": _jsonable(self.spread), "xlabel": self.xlabel, "ylabel": self.ylabel,
                "meta": _jsonable(self.meta)}


@dataclass
class HeadSimilarity:
    """Pairwise similarity of the heads of each layer: ``values`` (layer, head, head); ``diversity`` (layer,)."""

    values: np.ndarray
    diversity: np.ndarray
    layers: list[int]
    heads: list[int]
    name: str
    stream: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "HeadSimilarity", "name": self.name, "stream": self.stream, "layers": self.layers,
                "heads": self.heads, "values": _jsonable(self.values), "diversity": _jsonable(self.diversity),
                "meta": _jsonable(self.meta)}


@dataclass
class Projection:
    """2-D embedding of heads: ``coords`` (point, 2); point k is head ``heads[k]`` of layer ``layers[k]`` of trace ``traces[k]``."""

    coords: np.ndarray
    layers: np.ndarray
    heads: np.ndarray
    traces: np.ndarray
    method: str
    name: str = "head_projection"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        many = len(set(self.traces.tolist())) > 1
        return [f"L{l}H{h}" + (f"/t{t}" if many else "") for l, h, t in zip(self.layers, self.heads, self.traces)]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Projection", "name": self.name, "method": self.method, "coords": _jsonable(self.coords),
                "layers": _jsonable(self.layers), "heads": _jsonable(self.heads), "traces": _jsonable(self.traces),
                "labels": self.labels, "meta": _jsonable(self.meta)}


@dataclass
class MemoryEstimate:
    """Bytes needed to hold attention (all figures in bytes)."""

    layers: int
    heads: int
    length: int
    batch: int
    dtype: str
    block: int
    full_maps: int  # every map kept: layers*heads*length^2*batch*itemsize
    one_layer_eager: int  # what eager attention materialises per layer (float32 softmax)
    fast_path_working: int  # the fast path's live block: batch*heads*block*length*4 (float32)
    stats_output: int  # per-row statistics kept by mode="stats"
    name: str = "memory_estimate"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """How many times more memory full maps take than the fast path's working set + statistics."""
        return self.full_maps / max(1, self.fast_path_working + self.stats_output)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("layers", "heads", "length", "batch", "dtype", "block", "full_maps",
                                           "one_layer_eager", "fast_path_working", "stats_output", "name")}
        return {"type": "MemoryEstimate", **d, "ratio": self.ratio, "meta": _jsonable(self.meta)}


@dataclass
class TraceComparison:
    """Two traces compared: ``difference`` (layer, head, query, key) = a - b; per-head divergences."""

    difference: np.ndarray
    divergence: HeadScores  # "jsd" (mean Jensen-Shannon divergence of rows, nats), "mean_abs_difference"
    layers: list[int]
    heads: list[int]
    query_tokens: list[str]
    key_tokens: list[str]
    name: str = "compare"
    stream: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "TraceComparison", "name": self.name, "stream": self.stream,
                "divergence": self.divergence.to_dict(), "layers": self.layers, "heads": self.heads,
                "query_tokens": self.query_tokens, "key_tokens": self.key_tokens,
                "difference": _jsonable(self.difference), "meta": _jsonable(self.meta)}


@dataclass
class GraphResult:
    """A thresholded attention graph (networkx DiGraph, nodes = token positions) and centralities per token."""

    graph: Any
    centrality: TokenScores
    name: str = "attention_graph"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        edges = [[int(u), int(v), float(d["weight"])] for u, v, d in self.graph.edges(data=True)]
        return {"type": "GraphResult", "name": self.name, "edges": edges, "centrality": self.centrality.to_dict(),
                "meta": _jsonable(self.meta)}


RESULT_TYPES = (TokenScores, HeadScores, TokenMaps, Curves, HeadSimilarity, Projection, MemoryEstimate,
                TraceComparison, GraphResult)
