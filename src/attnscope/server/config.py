"""Server configuration: limits, allow-list, queue and timeout. Safe defaults (loopback, catalogue only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..models import CATALOGUE, DEFAULT_MODEL


@dataclass
class ServerConfig:
    """How ``attnscope serve`` behaves.

    ``allowed_models``: names a request may ask for. ``None`` means the catalogue (``minilm``,
    ``smollm2``, ``whisper-tiny-en``) plus ``model``; a request for anything else is refused with 404,
    so a request never makes the server download or run a model nobody configured. ``models``
    holds already-built :class:`~attnscope.models.LoadedModel` objects by name (embedding, tests).
    """

    model: str = DEFAULT_MODEL  # default model, preloaded at start-up
    host: str = "127.0.0.1"
    port: int = 8765
    # Host-header names answered besides 127.0.0.1, localhost, ::1 and `host` (400 otherwise; "*" turns the check
    # off). Refusing other names stops DNS rebinding: a web page re-pointing its own domain at this address.
    allowed_hosts: list[str] = field(default_factory=list)
    max_body_bytes: int = 16 << 20  # request body (413 above)
    allowed_models: list[str] | None = None
    models: dict[str, Any] = field(default_factory=dict)
    preload: bool = True
    max_text_chars: int = 20_000  # per text (413 above)
    max_batch: int = 64  # texts per /v1/batch request (413 above)
    max_json_elements: int = 2_000_000  # attention weights in one JSON answer; use format=binary above
    queue_size: int = 8  # requests waiting for the inference thread (429 when full)
    timeout_s: float = 120.0  # per request, waiting + running (504 after)
    trace_cache_bytes: int = 256 << 20  # explorer traces kept in memory (attnscope.cache.ResultCache, LRU)
    max_loaded_models: int = 2
    torch_threads: int | None = None  # torch intra-op threads while serving (None: leave torch's default)
    allow_conversion: bool = False  # catalogue models that need a one-time conversion: convert on request?
    # attribution endpoints (/v1/explain, /ablate, /probe, /counterfactual, /dropout): each costs many forward
    # passes per text, so they have their own limits (413 above each)
    max_attribution_tokens: int = 256  # tokens per text (special tokens included)
    max_runs: int = 64  # MC-dropout runs per /v1/dropout request
    max_samples: int = 256  # integrated-gradients steps / LIME and Shapley samples per /v1/explain request
    max_attribution_texts: int = 16  # texts per /v1/ablate, counterfactual texts per /v1/counterfactual
    max_probe_sentences: int = 256  # templates x group words per /v1/probe request

    def allowed(self) -> list[str]:
        names = list(self.allowed_models) if self.allowed_models is not None else list(CATALOGUE)
        for n in [self.model, *self.models]:
            if n not in names:
                names.append(n)
        return names
