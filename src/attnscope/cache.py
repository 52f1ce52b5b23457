"""A memory-bounded result cache shared by the CLI and the server.

Results (traces, statistics, analysis outputs, rendered bytes) are keyed by a content hash of the
model, the text(s) and the settings that produced them (:func:`cache_key`), and evicted least
recently used first once their estimated size passes ``max_bytes``. Thread-safe (the server calls it
from worker threads). Nothing is pickled or written to disk.

    from attnscope.cache import ResultCache, cache_key
    cache = ResultCache(max_bytes=256 << 20)
    key = cache_key("minilm", "The cat sat.", {"mode": "stats", "layers": [0, 1]})
    trace = cache.get(key)
    if trace is None:
        trace = capture("minilm", "The cat sat.", mode="stats", layers=[0, 1])
        cache.put(key, trace)
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

from .errors import InputError

__all__ = ["ResultCache", "CacheStats", "cache_key", "estimate_nbytes", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 256 << 20  # 256 MiB
T = TypeVar("T")
_MISSING = object()


def _model_identity(model: Any) -> str:
    """A stable name for a model: a string as given, a LoadedModel's ``name``, else the config's path."""
    if isinstance(model, str):
        return model
    name = getattr(model, "name", None)
    if isinstance(name, str) and name:
        return name
    config = getattr(model, "config", None)
    return str(getattr(config, "name_or_path", "") or type(model).__name__)


def _canonical(value: Any) -> Any:
    """JSON-able canonical form: mappings sorted, tuples/sets as lists, dtypes/tensors by repr."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=repr)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return {"__bytes_sha256__": hashlib.sha256(value).hexdigest()}
    return repr(value)


def cache_key(model: Any, text: str | bytes | tuple | list | None, settings: Mapping[str, Any] | None = None) -> str:
    """Hex SHA-256 of (model identity, text(s), settings).

    ``model``: a name/path or a ``LoadedModel``; ``text``: one text, or a tuple/list of texts (e.g. a
    text pair, or source + target); ``settings``: everything else that changes the result (mode, layers,
    heads, top_k, analysis name and parameters…). Settings are canonicalised (key order does not matter).
    """
    payload = {"model": _model_identity(model), "text": _canonical(text), "settings": _canonical(dict(settings or {}))}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return hashlib.sha256(blob).hexdigest()


def estimate_nbytes(value: Any, _seen: set[int] | None = None) -> int:
    """Approximate memory held by ``value``: tensors/arrays by their buffers, containers recursively.

    Objects with an ``nbytes()`` method or ``nbytes`` attribute (``AttentionTrace``, numpy arrays) report
    their own size.
    """
    seen = _seen if _seen is not None else set()
    if id(value) in seen:
        return 0
    seen.add(id(value))
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value) + 33
    if isinstance(value, str):
        return sys.getsizeof(value)
    from .trace import AttentionTrace

    if isinstance(value, AttentionTrace):  # nbytes() counts the maps only; add statistics and top-k
        return value.nbytes() + estimate_nbytes(value._stats, seen) + estimate_nbytes(value._topk, seen) + 4096
    nb = getattr(value, "nbytes", None)
    if callable(nb):
        try:
            return int(nb()) + 64
        except TypeError:
            pass
    elif isinstance(nb, int):
        return nb + 64
    if isinstance(value, Mapping):
        return sys.getsizeof(value) + sum(estimate_nbytes(k, seen) + estimate_nbytes(v, seen) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return sys.getsizeof(value) + sum(estimate_nbytes(v, seen) for v in value)
    if hasattr(value, "__dict__"):
        return sys.getsizeof(value) + estimate_nbytes(vars(value), seen)
    return sys.getsizeof(value)


@dataclass
class CacheStats:
    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    max_bytes: int


class ResultCache:
    """LRU cache bounded by the estimated bytes of its values (not by the number of entries).

    ``put`` returns False (and stores nothing) for a value larger than ``max_bytes``; otherwise it evicts
    least-recently-used entries until the new one fits. ``get`` counts hits and misses (``stats()``).
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES,
                 sizeof: Callable[[Any], int] = estimate_nbytes) -> None:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
            raise InputError(f"max_bytes must be a non-negative integer, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._sizeof = sizeof
        self._data: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.RLock()
        self._hits = self._misses = self._evictions = 0

    key = staticmethod(cache_key)

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key`` (and mark it recently used), or ``default``."""
        with self._lock:
            item = self._data.get(key, _MISSING)
            if item is _MISSING:
                self._misses += 1
                return default
            self._data.move_to_end(key)
            self._hits += 1
            return item[0]

    def put(self, key: str, value: Any, nbytes: int | None = None) -> bool:
        """Store ``value`` under ``key``; ``nbytes`` overrides the size estimate. False if it can never fit."""
        size = int(nbytes) if nbytes is not None else int(self._sizeof(value))
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                return False
            while self._data and self._bytes + size > self.max_bytes:
                _, (_, freed) = self._data.popitem(last=False)
                self._bytes -= freed
                self._evictions += 1
            self._data[key] = (value, size)
            self._bytes += size
            return True

    def get_or_compute(self, key: str, compute: Callable[[], T]) -> T:
        """``get(key)``, or compute, ``put`` and return the value (computed outside the lock)."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            value = compute()
            self.put(key, value)
        return value  # type: ignore[return-value]

    def pop(self, key: str, default: Any = None) -> Any:
        with self._lock:
            item = self._data.pop(key, None)
            if item is None:
                return default
            self._bytes -= item[1]
            return item[0]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    @property
    def nbytes(self) -> int:
        """Estimated bytes held now (always ≤ ``max_bytes``)."""
        return self._bytes

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, self._evictions, len(self._data), self._bytes, self.max_bytes)
