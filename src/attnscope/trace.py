"""AttentionTrace: the attention of one example (no padding), by stream, with named dimensions.

A trace holds, per stream (``self``, ``encoder_self``, ``decoder_self``, ``cross``), any of:
full probability maps ``(layer, head, query, key)``, per-query-row statistics
``(layer, head, query)`` and the top-k keys per query ``(layer, head, query, k)``.  It records
which model layers and heads it holds (partial traces are normal), the tokens of each sequence
with character offsets into the text, the model id and free metadata.

Saved as one ``.safetensors`` file (float16 by default, JSON metadata in the header), never
pickle.  Loading is lazy: ``trace.head(layer, head)`` reads one head without reading the rest.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence, get_args

import torch

from .errors import InputError, TraceFormatError, UnknownNameError

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
FORMAT_KEY = "attnscope"

Dim = Literal["layer", "head", "query", "key"]
DIMS: tuple[str, ...] = get_args(Dim)
StreamName = Literal["self", "encoder_self", "decoder_self", "cross"]
STREAM_NAMES: tuple[str, ...] = get_args(StreamName)
# Which token sequence the queries and the keys of each stream come from.
STREAM_SEQUENCES: dict[str, tuple[str, str]] = {
    "self": ("input", "input"),
    "encoder_self": ("source", "source"),
    "decoder_self": ("target", "target"),
    "cross": ("target", "source"),
}
Payload = Literal["weights", "stats", "topk"]
PAYLOADS: tuple[str, ...] = get_args(Payload)


@dataclass(frozen=True)
class Tokens:
    """The tokens of one sequence.

    ``offsets[i]`` is the character span of token i in the sequence's text (``(0, 0)`` for special
    tokens and tokens without a span, e.g. audio frames); ``special[i]`` marks [CLS]/<s>/padding-like
    tokens that the tokenizer added.
    """

    text: list[str]
    offsets: list[tuple[int, int]] = field(default_factory=list)
    special: list[bool] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.text)
        object.__setattr__(self, "offsets", [tuple(map(int, o)) for o in (self.offsets or [(0, 0)] * n)])
        object.__setattr__(self, "special", [bool(s) for s in (self.special or [False] * n)])
        object.__setattr__(self, "ids", [int(i) for i in (self.ids or [-1] * n)])
        for name in ("offsets", "special", "ids"):
            if len(getattr(self, name)) != n:
                raise InputError(f"Tokens: {name} has {len(getattr(self, name))} entries but there are {n} tokens")

    def __len__(self) -> int:
        return len(self.text)

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "offsets": [list(o) for o in self.offsets], "special": self.special, "ids": self.ids}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Tokens:
        return cls(d["text"], [tuple(o) for o in d["offsets"]], d["special"], d["ids"])

    def labels(self, text: str | None = None) -> list[str]:
        """Readable display labels, one per token (for axes, tables and graph nodes).

        With ``text`` (the sequence's original text, ``trace.texts[sequence]``) and character offsets,
        a token's label is its exact span of the text, for any tokenizer: original case and accents,
        no word-piece markers. Without them the markers are converted: byte-level BPE (GPT-2, Llama 3,
        SmolLM2, Whisper) is decoded back to UTF-8 (``Ġcat`` → ``cat``, ``Ċ`` → a newline, shown ``⏎``),
        SentencePiece's ``▁`` and byte-fallback pieces (``<0x0A>``) likewise, and WordPiece's ``##``
        continuation prefix is dropped. Special tokens ([CLS], <s>, <|endoftext|>) and unknown-token
        markers ([UNK], <unk>) are kept as they are: they are what the model saw.

        Spaces at a token's edges are dropped; a token that is only whitespace shows it (``␣`` for a
        space, ``⏎`` for a newline, ``⇥`` for a tab, ``␍`` for a carriage return; ``␣×8`` for a long
        run); newlines and tabs inside a token show the same symbols. Tokens that each hold part of one
        character (byte-level BPE splits a CJK character into up to 3 tokens) show the character and their part,
        so neighbouring labels stay distinct: ``猫(1/3)``, ``猫(2/3)``, ``猫(3/3)``.
        """
        import codecs
        import re
        import unicodedata

        n = len(self.text)
        out: list[str] = list(self.text)
        keep = [self.special[i] or self.text[i] in ("[UNK]", "<unk>", "<UNK>", "<|unk|>") for i in range(n)]

        def visible(s: str) -> str:
            if not s.strip():  # whitespace only (or empty): make it visible
                parts = []
                for m in re.finditer(r"(\s)\1*", s):
                    sym = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"}.get(m.group(0)[0], "␣")
                    parts.append(sym * len(m.group(0)) if len(m.group(0)) <= 3 else f"{sym}×{len(m.group(0))}")
                return "".join(parts)
            s = s.strip(" \u3000\u00a0")
            return s.replace("\r", "␍").replace("\n", "⏎").replace("\t", "⇥")

        def assign(idx: list[int], whole: str) -> None:
            for p, i in enumerate(idx):
                out[i] = visible(whole) if len(idx) == 1 else f"{visible(whole)}({p + 1}/{len(idx)})"

        # 1. markers: tokens -> bytes (byte-level BPE, SentencePiece byte fallback, WordPiece), decoded in order
        printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
        byte_of: dict[str, int] = {chr(b): b for b in printable}  # GPT-2 bytes_to_unicode, inverted
        extra = 0
        for b in range(256):
            if b not in printable:
                byte_of[chr(256 + extra)] = b
                extra += 1
        body = [t for t, k in zip(self.text, keep) if not k]
        byte_level = bool(body) and all(c in byte_of for t in body for c in t)
        if byte_level:
            joined = bytes(byte_of[c] for t in body for c in t)
            try:
                byte_level = joined.decode("utf-8") != "".join(body)
            except UnicodeDecodeError:  # only Latin-1 letters that are not UTF-8 bytes: plain text after all
                byte_level = any(ord(c) >= 256 for t in body for c in t)

        def to_bytes(t: str) -> bytes:
            if byte_level:
                return bytes(byte_of[c] for c in t)
            pieces = re.findall(r"<0x[0-9A-Fa-f]{2}>|[^<]+|<", t)
            if len(t) > 2 and t.startswith("##"):
                t = t[2:]
                pieces = [t]
            return b"".join(bytes([int(p[3:5], 16)]) if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", p)
                            else p.replace("▁", " ").encode("utf-8") for p in pieces)

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending: list[int] = []
        for i in range(n):
            if keep[i]:
                if pending:  # an incomplete character cut by a special token
                    assign(pending, decoder.decode(b"", final=True))
                    decoder.reset()
                    pending = []
                continue
            got = decoder.decode(to_bytes(self.text[i]))
            pending.append(i)
            if got or not self.text[i]:
                assign(pending, got)
                pending = []
        if pending:
            assign(pending, decoder.decode(b"", final=True))
        if text is None or not any(0 <= a < b <= len(text) for a, b in self.offsets):
            return out
        # 2. exact: each token's character span of the text (tokens sharing a span share it), used when the
        # spans agree with the tokens (offsets from another text, e.g. a hand-built trace, are not trusted)
        marked, out = out, list(self.text)
        i = 0
        while i < n:
            a, b = self.offsets[i]
            if keep[i] or not 0 <= a < b <= len(text):
                out[i] = marked[i]
                i += 1
                continue
            j = i
            while j + 1 < n and not keep[j + 1] and self.offsets[j + 1] == (a, b):
                j += 1
            assign(list(range(i, j + 1)), text[a:b])
            i = j + 1

        def norm(s: str) -> str:
            return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c)).casefold()

        body_idx = [i for i in range(n) if not keep[i]]
        agree = sum(norm(out[i]) == norm(marked[i]) for i in body_idx)
        return out if agree >= 0.9 * len(body_idx) else marked


class _LazyTensor:
    """A tensor inside a safetensors file, read on demand (whole or by leading-index slices)."""

    def __init__(self, path: Path, name: str, shape: tuple[int, ...]):
        self.path, self.name, self.shape = path, name, tuple(shape)

    def load(self) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as f:
            return f.get_tensor(self.name)

    def read(self, i: int, j: int) -> torch.Tensor:
        """Element [i, j] of the two leading dims, reading only that part of the file."""
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as f:
            return f.get_slice(self.name)[i : i + 1, j : j + 1][0, 0]


def _materialise(x: torch.Tensor | _LazyTensor) -> torch.Tensor:
    return x.load() if isinstance(x, _LazyTensor) else x


def _index_list(name: str, requested: int | Sequence[int] | None, held: list[int]) -> list[int]:
    """Positions in ``held`` of the requested model indices (negative indices count from the end)."""
    if requested is None:
        return list(range(len(held)))
    req = [requested] if isinstance(requested, int) else list(requested)
    out = []
    for r in req:
        idx = held[r] if isinstance(r, int) and r < 0 and -len(held) <= r else r
        if idx not in held:
            raise InputError(f"{name} {r} is not in this trace; it holds {name}s {_ranges(held)}")
        out.append(held.index(idx))
    return out


def _ranges(values: list[int]) -> str:
    if values and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ", ".join(map(str, values))



_HEADER_TYPES = {"tokens": dict, "layers": dict, "heads": dict, "texts": dict, "meta": dict, "stats": dict,
                 "topk": list, "model_id": str}


def _check_header(path: Path, info: Any) -> None:
    """Refuse trace metadata of the wrong shape (a JSON list, a list where a mapping belongs) with a
    TraceFormatError, before anything reads it."""
    if not isinstance(info, dict):
        raise TraceFormatError(f"{path}: trace metadata is a JSON {type(info).__name__}, not an object; "
                               "the file is corrupt or not written by attnscope")
    for key, kind in _HEADER_TYPES.items():
        if key in info and not isinstance(info[key], kind):
            raise TraceFormatError(f"{path}: trace metadata field {key!r} is a {type(info[key]).__name__}, "
                                   f"expected a {kind.__name__}; the file is corrupt")


class AttentionTrace:
    """Attention of one example. See the module docstring for what it holds.

    Parameters are per stream: ``weights[stream]`` (layer, head, query, key);
    ``stats[stream][name]`` (layer, head, query); ``topk[stream]`` = (values, indices), each
    (layer, head, query, k); ``layers[stream]`` / ``heads[stream]`` the model indices held;
    ``tokens[sequence]`` for the sequences ``input`` or ``source``/``target``; ``texts[sequence]``.
    """

    def __init__(
        self,
        *,
        tokens: dict[str, Tokens],
        layers: dict[str, list[int]],
        heads: dict[str, list[int]],
        weights: dict[str, torch.Tensor | _LazyTensor] | None = None,
        stats: dict[str, dict[str, torch.Tensor]] | None = None,
        topk: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        texts: dict[str, str] | None = None,
        model_id: str = "",
        meta: dict[str, Any] | None = None,
        schema_version: int = SCHEMA_VERSION,
    ):
        self.tokens = dict(tokens)
        self.layers = {s: [int(x) for x in v] for s, v in layers.items()}
        self.heads = {s: [int(x) for x in v] for s, v in heads.items()}
        self._weights: dict[str, torch.Tensor | _LazyTensor] = dict(weights or {})
        self._stats = {s: dict(v) for s, v in (stats or {}).items()}
        self._topk = dict(topk or {})
        self.texts = dict(texts or {})
        self.model_id = model_id
        self.meta = dict(meta or {})
        self.schema_version = schema_version
        self._validate()

    # ------------------------------------------------------------------ structure
    def _validate(self) -> None:
        for s in self.streams:
            if s not in STREAM_NAMES:
                raise UnknownNameError("stream", s, STREAM_NAMES)
            if s not in self.layers or s not in self.heads:
                raise InputError(f"stream {s!r} has data but no layers/heads list")
            q_seq, k_seq = STREAM_SEQUENCES[s]
            for seq in (q_seq, k_seq):
                if seq not in self.tokens:
                    raise InputError(f"stream {s!r} needs the tokens of sequence {seq!r}")
            nq, nk = len(self.tokens[q_seq]), len(self.tokens[k_seq])
            nl, nh = len(self.layers[s]), len(self.heads[s])
            if s in self._weights:
                shape = tuple(self._weights[s].shape)
                expected = (nl, nh, nq, nk)
                if shape != expected:
                    raise InputError(
                        f"stream {s!r}: attention has shape {shape} (layer, head, query, key) but the trace has "
                        f"{nl} layers, {nh} heads, {nq} query tokens and {nk} key tokens"
                    )
            for name, t in self._stats.get(s, {}).items():
                if tuple(t.shape) != (nl, nh, nq):
                    raise InputError(f"stream {s!r}: statistic {name!r} has shape {tuple(t.shape)}, expected {(nl, nh, nq)}")
            if s in self._topk:
                v, i = self._topk[s]
                if tuple(v.shape[:3]) != (nl, nh, nq) or v.shape != i.shape:
                    raise InputError(f"stream {s!r}: top-k has shape {tuple(v.shape)}, expected {(nl, nh, nq)} + (k,)")

    @property
    def streams(self) -> list[str]:
        """Names of the streams that hold any data, in canonical order."""
        present = set(self._weights) | set(self._stats) | set(self._topk)
        return [s for s in STREAM_NAMES if s in present]

    def resolve_stream(self, stream: str | None = None) -> str:
        """The stream to use: the given one (checked), ``self`` if present, or the only one."""
        streams = self.streams
        if stream is not None:
            if stream not in streams:
                raise UnknownNameError("stream", stream, streams)
            return stream
        if "self" in streams:
            return "self"
        if len(streams) == 1:
            return streams[0]
        raise InputError(f"this trace has several streams ({', '.join(streams)}); pass stream=… to choose one")

    def has(self, payload: Payload, stream: str | None = None) -> bool:
        s = self.resolve_stream(stream)
        return s in {"weights": self._weights, "stats": self._stats, "topk": self._topk}[payload]

    def query_tokens(self, stream: str | None = None) -> Tokens:
        return self.tokens[STREAM_SEQUENCES[self.resolve_stream(stream)][0]]

    def key_tokens(self, stream: str | None = None) -> Tokens:
        return self.tokens[STREAM_SEQUENCES[self.resolve_stream(stream)][1]]

    def shape(self, stream: str | None = None) -> dict[str, int]:
        s = self.resolve_stream(stream)
        return {"layer": len(self.layers[s]), "head": len(self.heads[s]),
                "query": len(self.query_tokens(s)), "key": len(self.key_tokens(s))}

    # ------------------------------------------------------------------ data access
    def weights(self, stream: str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Full attention maps of a stream: (layer, head, query, key)."""
        s = self.resolve_stream(stream)
        if s not in self._weights:
            raise InputError(
                f"this trace holds no full attention maps for stream {s!r} (it was captured with "
                f"mode 'stats' or 'topk'); capture again with mode='full' for analyses that need maps"
            )
        w = _materialise(self._weights[s])
        self._weights[s] = w
        return w.to(dtype)

    def head(self, layer: int, head: int, stream: str | None = None) -> torch.Tensor:
        """One head's map (query, key) by model layer/head index; reads only that head from a lazy file."""
        s = self.resolve_stream(stream)
        li = _index_list("layer", layer, self.layers[s])[0]
        hi = _index_list("head", head, self.heads[s])[0]
        if s not in self._weights:
            self.weights(s)  # raises the explanatory error
        w = self._weights[s]
        return (w.read(li, hi) if isinstance(w, _LazyTensor) else w[li, hi]).float()

    def row_stats(self, stream: str | None = None) -> dict[str, torch.Tensor]:
        """Per-query-row statistics, name -> (layer, head, query): the stored ones, and when the trace
        holds full maps, every statistic computed from them (stats mode leaves Gini out by default)."""
        from .statistics import ROW_STATS, row_statistics

        s = self.resolve_stream(stream)
        stored = dict(self._stats.get(s, {}))
        missing = [k for k in ROW_STATS if k not in stored]
        if not missing or (stored and s not in self._weights):
            return stored
        w = self.weights(s)  # (L, H, Nq, Nk)
        nq, nk = w.shape[-2:]
        qpos = torch.arange(nq) + int(self.meta.get("query_offsets", {}).get(s, 0))
        allowed = self.allowed_mask(s)
        if self._windows(s):  # sliding-window layers: a mask per layer, (L, 1, Nq, Nk)
            allowed = torch.stack([self.allowed_mask(s, layer) for layer in self.layers[s]])[:, None]
        computed = row_statistics(w, allowed, qpos, names=missing)
        return {k: stored[k] if k in stored else computed[k] for k in ROW_STATS}

    def head_stats(self, stream: str | None = None) -> dict[str, torch.Tensor]:
        """Per-head statistics, name -> (layer, head): the mean of each row statistic over query rows."""
        return {k: v.float().mean(-1) for k, v in self.row_stats(stream).items() if k not in ("argmax",)}

    def topk(self, stream: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k keys per query: (values, indices), each (layer, head, query, k)."""
        s = self.resolve_stream(stream)
        if s in self._topk:
            return self._topk[s]
        raise InputError(f"this trace holds no top-k data for stream {s!r}; capture with mode='topk'")

    def _windows(self, stream: str) -> dict[str, int]:
        return self.meta.get("sliding_window", {}).get(stream, {})

    def allowed_mask(self, stream: str | None = None, layer: int | None = None) -> torch.Tensor | None:
        """(query, key) bool mask of the keys each query could attend to (causal models), or None for all.
        With ``layer`` (the model's layer index), a sliding-window layer's band: the last ``window`` keys."""
        s = self.resolve_stream(stream)
        if self.meta.get("causal", {}).get(s, False):
            nq, nk = len(self.query_tokens(s)), len(self.key_tokens(s))
            mask = torch.ones(nq, nk, dtype=torch.bool).tril(nk - nq)
            window = self._windows(s).get(str(layer)) if layer is not None else None
            return mask.triu(nk - nq - window + 1) if window else mask
        return None

    # ------------------------------------------------------------------ selection and reduction
    def sel(
        self,
        layer: int | Sequence[int] | None = None,
        head: int | Sequence[int] | None = None,
        stream: str | Sequence[str] | None = None,
    ) -> AttentionTrace:
        """A partial trace with the given model layers / heads / streams (indices as the model numbers them)."""
        streams = self.streams if stream is None else ([stream] if isinstance(stream, str) else list(stream))
        for s in streams:
            self.resolve_stream(s)
        weights, stats, topk, layers, heads = {}, {}, {}, {}, {}
        for s in streams:
            li = _index_list("layer", layer, self.layers[s])
            hi = _index_list("head", head, self.heads[s])
            lt, ht = torch.tensor(li), torch.tensor(hi)
            layers[s] = [self.layers[s][i] for i in li]
            heads[s] = [self.heads[s][i] for i in hi]
            if s in self._weights:
                weights[s] = self.weights(s, dtype=_materialise(self._weights[s]).dtype)[lt][:, ht]
            if s in self._stats:
                stats[s] = {k: v[lt][:, ht] for k, v in self._stats[s].items()}
            if s in self._topk:
                topk[s] = tuple(t[lt][:, ht] for t in self._topk[s])
        return AttentionTrace(tokens=self.tokens, layers=layers, heads=heads, weights=weights, stats=stats,
                              topk=topk, texts=self.texts, model_id=self.model_id, meta=self.meta,
                              schema_version=self.schema_version)

    def reduce(self, dim: Dim, op: str = "mean", stream: str | None = None) -> torch.Tensor:
        """Reduce the full maps over one named dim ('layer', 'head', 'query' or 'key'); that dim is removed."""
        if dim not in DIMS:
            raise UnknownNameError("dimension", dim, DIMS)
        ops = {"mean": lambda t, d: t.mean(d), "max": lambda t, d: t.amax(d), "min": lambda t, d: t.amin(d),
               "sum": lambda t, d: t.sum(d)}
        if op not in ops:
            raise UnknownNameError("reduction", op, list(ops))
        return ops[op](self.weights(stream), DIMS.index(dim))

    def mean(self, dim: Dim, stream: str | None = None) -> torch.Tensor:
        """Mean of the full maps over a named dim, e.g. ``trace.mean("head")`` -> (layer, query, key)."""
        return self.reduce(dim, "mean", stream)

    # ------------------------------------------------------------------ persistence
    def _header(self, dtype: torch.dtype) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "dims": list(DIMS),
            "model_id": self.model_id,
            "layers": self.layers,
            "heads": self.heads,
            "tokens": {k: v.to_json() for k, v in self.tokens.items()},
            "texts": self.texts,
            "meta": self.meta,
            "weights_dtype": str(dtype).removeprefix("torch."),
            "stats": {s: sorted(v) for s, v in self._stats.items()},
            "topk": sorted(self._topk),
        }

    def save(self, path: str | os.PathLike, dtype: torch.dtype = torch.float16) -> Path:
        """Write the trace to one ``.safetensors`` file (maps in ``dtype``, float16 by default), atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors: dict[str, torch.Tensor] = {}
        for s in self.streams:
            if s in self._weights:
                tensors[f"weights/{s}"] = self.weights(s).to(dtype).contiguous()
            for name, t in self._stats.get(s, {}).items():
                tensors[f"stats/{s}/{name}"] = t.contiguous()
            if s in self._topk:
                v, i = self._topk[s]
                tensors[f"topk/{s}/values"] = v.to(dtype).contiguous()
                tensors[f"topk/{s}/indices"] = i.to(torch.int32).contiguous()
        header = {FORMAT_KEY: json.dumps(self._header(dtype), ensure_ascii=False)}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=header)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, lazy: bool = True) -> AttentionTrace:
        """Read a trace written by :meth:`save`. With ``lazy`` the maps are read only when used."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise TraceFormatError(f"{path}: no such trace file")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                names = list(f.keys())
                shapes = {n: tuple(f.get_slice(n).get_shape()) for n in names}
                if FORMAT_KEY not in header:
                    raise TraceFormatError(
                        f"{path} is a safetensors file but not an attnscope trace (no {FORMAT_KEY!r} metadata); "
                        "traces are written by `attnscope analyze --save-trace` or AttentionTrace.save()"
                    )
                info = json.loads(header[FORMAT_KEY])
                _check_header(path, info)
                version = info.get("schema_version")
                if version not in SUPPORTED_SCHEMA_VERSIONS:
                    raise TraceFormatError(
                        f"{path} has trace schema version {version!r}; this attnscope reads versions "
                        f"{list(SUPPORTED_SCHEMA_VERSIONS)} — upgrade attnscope to read it"
                    )
                eager = {n: f.get_tensor(n) for n in names if not n.startswith("weights/") or not lazy}
        except TraceFormatError:
            raise
        except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise TraceFormatError(f"{path} is not a readable attnscope trace ({type(e).__name__}: {e})") from None
        try:
            weights: dict[str, Any] = {}
            stats: dict[str, dict[str, torch.Tensor]] = {}
            topk: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
            for n in names:
                kind, _, rest = n.partition("/")
                if kind == "weights":
                    weights[rest] = eager[n] if n in eager else _LazyTensor(path, n, shapes[n])
                elif kind == "stats":
                    s, _, stat = rest.partition("/")
                    stats.setdefault(s, {})[stat] = eager[n]
            for s in info.get("topk", []):
                topk[s] = (eager[f"topk/{s}/values"], eager[f"topk/{s}/indices"].long())
            return cls(
                tokens={k: Tokens.from_json(v) for k, v in info["tokens"].items()},
                layers=info["layers"], heads=info["heads"], weights=weights, stats=stats, topk=topk,
                texts=info.get("texts", {}), model_id=info.get("model_id", ""), meta=info.get("meta", {}),
                schema_version=version,
            )
        except (KeyError, TypeError, AttributeError, ValueError, InputError) as e:
            raise TraceFormatError(f"{path}: trace metadata is inconsistent ({e}); the file is corrupt") from None

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        parts = []
        for s in self.streams:
            sh = self.shape(s)
            kinds = "+".join(p for p in PAYLOADS if self.has(p, s))  # type: ignore[arg-type]
            parts.append(f"{s}: {sh['layer']}L x {sh['head']}H x {sh['query']}q x {sh['key']}k [{kinds}]")
        return f"AttentionTrace(model={self.model_id!r}, " + "; ".join(parts) + ")"

    def nbytes(self) -> int:
        """Bytes the full maps take in memory at their current dtype (lazy maps counted as float16)."""
        total = 0
        for w in self._weights.values():
            esize = w.element_size() if isinstance(w, torch.Tensor) else 2
            total += math.prod(w.shape) * esize
        return total

    def _repr_html_(self) -> str:
        from .render.notebook import trace_html
        return trace_html(self)
