"""Compact binary payloads for the explorer and the API (shared by the server and the notebook view).

Container layout (little-endian)::

    b"ATSC" | uint32 header length | header JSON (UTF-8, space-padded to a multiple of 8) | arrays

The header holds free JSON plus ``"arrays": {name: {"dtype", "shape", "offset", "nbytes"}}`` with
offsets relative to the start of the array section (each 8-byte aligned). dtypes: uint8, float16,
float32, int32. The explorer reads it with a DataView; :func:`decode` reads it in Python.

Thumbnails are max-pooled (a sharp one-key pattern stays visible when 512 keys shrink to 64 pixels)
and quantised to uint8; single heads travel as float16 (exact to ~3 significant digits), so a
512-token model view costs 72 x 64 x 64 bytes = 295 kB instead of bertviz's 869 MB of HTML.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import torch

from ..analysis._common import token_labels
from ..trace import STREAM_SEQUENCES

MAGIC = b"ATSC"
DTYPES = {"uint8": np.uint8, "float16": np.float16, "float32": np.float32, "int32": np.int32}
MEDIA_TYPE = "application/vnd.attnscope.arrays"
THUMB_SIZE = 64


def encode(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """One binary container: JSON header + raw arrays (see module docstring)."""
    meta, blobs, offset = {}, [], 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        dt = str(a.dtype)
        if dt not in DTYPES:
            raise ValueError(f"array {name!r}: dtype {dt} is not one of {sorted(DTYPES)}")
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        pad = (-len(raw)) % 8
        meta[name] = {"dtype": dt, "shape": list(a.shape), "offset": offset, "nbytes": len(raw)}
        blobs.append(raw + b"\0" * pad)
        offset += len(raw) + pad
    head = json.dumps({**header, "arrays": meta}, ensure_ascii=False, separators=(",", ":")).encode()
    head += b" " * ((-(len(head) + 8)) % 8)
    return MAGIC + struct.pack("<I", len(head)) + head + b"".join(blobs)


def decode(buf: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`encode`."""
    if buf[:4] != MAGIC:
        raise ValueError("not an attnscope binary payload (bad magic)")
    (n,) = struct.unpack("<I", buf[4:8])
    header = json.loads(buf[8:8 + n].decode())
    base = 8 + n
    arrays = {}
    for name, m in header.pop("arrays").items():
        start = base + m["offset"]
        arrays[name] = np.frombuffer(buf, dtype=np.dtype(DTYPES[m["dtype"]]).newbyteorder("<"),
                                     count=int(np.prod(m["shape"], dtype=np.int64)), offset=start).reshape(m["shape"])
    return header, arrays


def quantize_u8(x: np.ndarray) -> np.ndarray:
    """Weights in [0, 1] -> uint8 (value * 255, rounded)."""
    return np.clip(np.rint(np.asarray(x, np.float32) * 255.0), 0, 255).astype(np.uint8)


def _pool_edges(n: int, size: int) -> np.ndarray:
    return np.unique(np.floor(np.arange(size) * n / size).astype(np.int64))


def downsample_max(maps: np.ndarray, size: int = THUMB_SIZE) -> np.ndarray:
    """Max-pool the last two dims (query, key) to at most ``size`` x ``size``: (..., Nq, Nk) -> (..., sq, sk)."""
    nq, nk = maps.shape[-2:]
    out = maps
    if nq > size:
        out = np.maximum.reduceat(out, _pool_edges(nq, size), axis=-2)  # (..., sq, Nk)
    if nk > size:
        out = np.maximum.reduceat(out, _pool_edges(nk, size), axis=-1)  # (..., sq, sk)
    return out


def head_summary(trace, stream: str) -> dict[str, list[list[float]]]:
    """Per-head statistics (layer, head) from the full maps, computed layer by layer (cheap at 512 tokens).

    Same definitions as :mod:`attnscope.statistics`: ``entropy`` (nats, mean over query rows),
    ``max`` (mean largest weight: concentration), ``first_token_mass``, ``mean_distance`` (tokens),
    ``normalized_entropy`` (entropy / log(allowed keys)).
    """
    return model_view(trace, stream, thumbs=False)[0]


def model_view(trace, stream: str, size: int = THUMB_SIZE, stats: bool = True,
               thumbs: bool = True) -> tuple[dict[str, list[list[float]]], np.ndarray | None]:
    """The model view's data in one pass over the maps, layer by layer: per-head statistics (see
    :func:`head_summary`) and uint8 thumbnails (layer, head, sq, sk), max-pooled (see :func:`overview`).

    Each layer's maps are read once as float32 (the trace holds float16 by default), so statistics and
    thumbnails share that read; the thumbnails are the same as :func:`downsample_max` of those maps.
    """
    held = getattr(trace._weights.get(stream), "dtype", torch.float16)  # float16 unless captured otherwise
    w = trace.weights(stream, dtype=held)  # (L, H, Nq, Nk): the trace's own values, no copy
    nq, nk = w.shape[-2:]
    out: dict[str, list] = {k: [] for k in ("entropy", "normalized_entropy", "max", "first_token_mass",
                                            "mean_distance")} if stats else {}
    if stats:
        allowed = trace.allowed_mask(stream)
        n_allowed = (allowed.sum(-1).float() if allowed is not None else torch.full((nq,), float(nk))).clamp(min=1)
        qoff = int(trace.meta.get("query_offsets", {}).get(stream, 0))
        dist = (torch.arange(nq)[:, None] + qoff - torch.arange(nk)[None, :]).abs().float()  # (Nq, Nk)
        log_allowed = torch.log(n_allowed).clamp(min=1e-9)  # (Nq,)
    pooled = []
    for li in range(w.shape[0]):
        p = w[li].float()  # (H, Nq, Nk)
        if stats:
            ent = -_plogp_sum(w[li], p)  # (H, Nq)
            out["entropy"].append(ent.mean(-1).tolist())
            out["normalized_entropy"].append((ent / log_allowed).mean(-1).tolist())
            out["max"].append(p.amax(-1).mean(-1).tolist())
            out["first_token_mass"].append(p[..., 0].mean(-1).tolist())
            out["mean_distance"].append((p * dist).sum(-1).mean(-1).tolist())
        if thumbs:
            pooled.append(quantize_u8(_pool_max(w[li], p, size)))
    return out, (np.stack(pooled) if thumbs else None)  # (L, H, sq, sk)


_PLOGP: list[np.ndarray] = []


def _plogp_sum(held: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Σ_k p log p over the last axis (0 log 0 = 0), float32. A float16 map has at most 65,536 distinct values:
    p log p is looked up by the value's bit pattern (the same float32 numbers as ``xlogy(p, p)``, ~5x faster
    than taking 18.9M logarithms at 512 tokens); other dtypes take ``xlogy``."""
    if held.dtype != torch.float16:
        return torch.special.xlogy(p, p).sum(-1)
    if not _PLOGP:
        v = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.float16).float()  # every float16
        _PLOGP.append(torch.special.xlogy(v, v).nan_to_num(0.0).numpy())  # (65536,): negatives/NaN never occur
    bits = held.contiguous().view(torch.int16).numpy().view(np.uint16)  # (..., Nk)
    return torch.from_numpy(np.take(_PLOGP[0], bits).sum(-1))


def _pool_max(held: torch.Tensor, p: torch.Tensor, size: int) -> np.ndarray:
    """:func:`downsample_max` of one layer's maps (H, Nq, Nk) (``held``: as the trace holds them, ``p``: float32).

    When every bin has the same width, a max over reshaped axes; a float16 map is pooled on its bit patterns
    (non-negative float16 numbers order as their 16-bit integers), the same maxima 10x faster."""
    h, nq, nk = p.shape
    if not ((nq <= size or nq % size == 0) and (nk <= size or nk % size == 0)):
        return downsample_max(p.numpy(), size)
    half = held.dtype == torch.float16
    x = held.contiguous().view(torch.int16) if half else p  # (H, Nq, Nk)
    if nq > size:
        x = x.reshape(h, size, nq // size, nk).amax(2)  # (H, sq, Nk)
    if nk > size:
        x = x.reshape(h, x.shape[1], size, nk // size).amax(3)  # (H, sq, sk)
    return (x.contiguous().view(torch.float16).float() if half else x).numpy()


def trace_summary(trace, trace_id: str = "", extra: dict[str, Any] | None = None,
                  thumbs: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """JSON the explorer starts from: tokens, streams, layers, heads, per-head statistics. With ``thumbs``
    (a dict), also fills it with each stream's model-view thumbnails, from the same pass over the maps."""
    streams = {}
    for s in trace.streams:
        stats, th = model_view(trace, s, thumbs=thumbs is not None) if trace.has("weights", s) else ({}, None)
        if th is not None:
            thumbs[s] = th
        q, k = trace.query_tokens(s), trace.key_tokens(s)
        streams[s] = {
            "layers": trace.layers[s], "heads": trace.heads[s],
            # cross rows are labelled with the token each decoder step predicts, as in every figure
            "query_tokens": (ql := token_labels(trace, s, "query")),
            "key_tokens": ql if s != "cross" and STREAM_SEQUENCES[s][0] == STREAM_SEQUENCES[s][1]
            else token_labels(trace, s, "key"),  # a self stream's keys are its queries: labelled once
            "query_offsets": [list(o) for o in q.offsets], "key_offsets": [list(o) for o in k.offsets],
            "query_special": q.special, "key_special": k.special,
            "causal": bool(trace.meta.get("causal", {}).get(s, False)),
            # the masked (never attendable) cells, as trace.allowed_mask: key j > query i + diagonal, and on a
            # sliding-window layer also key j <= query i + diagonal - window
            "mask": {"diagonal": len(k) - len(q),
                     "windows": {str(layer): w for layer in trace.layers[s]
                                 if (w := trace._windows(s).get(str(layer)))}}
            if trace.meta.get("causal", {}).get(s, False) else None,
            # sentence A / B of each token for text pairs (None: special tokens), as the tokenizer numbers them
            "segments": trace.meta.get("sequence_ids") if s == "self" else None,
            "stats": stats,
        }
    return {"id": trace_id, "model": trace.model_id, "kind": trace.meta.get("model_kind", ""),
            "texts": trace.texts, "streams": streams, "thumb_size": THUMB_SIZE,
            "truncated": _jsonable(trace.meta.get("truncated")), **(extra or {})}


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def overview(trace, stream: str, size: int = THUMB_SIZE) -> np.ndarray:
    """uint8 thumbnails (layer, head, sq, sk), max-pooled, for the model view."""
    return model_view(trace, stream, size, stats=False)[1]


def head_map(trace, stream: str, layer: int, head: int | str) -> np.ndarray:
    """One head's map (query, key) as float16, or the mean over heads when ``head == "mean"``."""
    if head == "mean":
        li = trace.layers[stream].index(layer) if layer in trace.layers[stream] else None
        if li is None:
            from ..errors import InputError

            raise InputError(f"layer {layer} is not in this trace; it holds layers {trace.layers[stream]}")
        w = trace.weights(stream, dtype=torch.float16)[li].float().mean(0)  # (Nq, Nk)
        return w.numpy().astype(np.float16)
    return trace.head(layer, int(head), stream).numpy().astype(np.float16)


def rollout_map(trace, stream: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Attention rollout (Abnar & Zuidema 2020) after the last layer: (query, key) float16, by the
    registered ``rollout`` analysis (the one implementation)."""
    from ..analysis import run_analysis

    res = run_analysis("rollout", trace, stream=stream)
    return np.asarray(res.final, np.float32).astype(np.float16), {"source": "attnscope.analysis.rollout",
                                                                  "layers": list(res.layers)}


def trace_arrays(trace) -> dict[str, np.ndarray]:
    """Every tensor of a trace, for the binary /v1/analyze answer (maps float16)."""
    arrays: dict[str, np.ndarray] = {}
    for s in trace.streams:
        if trace.has("weights", s):
            arrays[f"weights/{s}"] = trace.weights(s, dtype=torch.float16).numpy()
        if trace.has("stats", s):
            for name, t in trace.row_stats(s).items():
                arrays[f"stats/{s}/{name}"] = t.numpy().astype(np.int32 if not t.is_floating_point() else np.float32)
        if trace.has("topk", s):
            v, i = trace.topk(s)
            arrays[f"topk/{s}/values"] = v.to(torch.float16).numpy()
            arrays[f"topk/{s}/indices"] = i.to(torch.int32).numpy()
    return arrays
