"""The attention function attnscope registers with transformers (the fast path).

``attnscope_attention`` is registered through ``AttentionInterface`` under the name ``attnscope``
(with the SDPA mask builder under the same name in ``AttentionMaskInterface``). When no capture
session is active it *is* SDPA. Inside a session it still returns SDPA's output unchanged, and only
for the requested (stream, layer, head) sites recomputes ``softmax(q k^T * scaling + bias + mask)``
in query blocks — O(block × N) memory — and hands each block to the session's recorders.
Interventions (scale / zero / replace a head, knock out query→key edges) also live here: where one
applies, the layer's output is computed from the modified probabilities instead. A site that records
only statistics, of every head, computes its attention once instead (``attnscope.capture.fused``).
"""

from __future__ import annotations

import contextvars
import ctypes
import ctypes.util
import functools
import re
import sys
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from . import fused
from .recorders import AttentionBlock, Recorder, Scratch, StatsRecorder

ATTN_NAME = "attnscope"
# Elements of one recomputed probability block (B * h * bq * Nk); 4M float32 = 16 MB.
DEFAULT_BLOCK_ELEMENTS = 1 << 22
# A recorded layer call with at least this many scores (B * h * Nq * Nk) gives freed heap memory back.
TRIM_AFTER_ELEMENTS = 1 << 26

_CROSS_PATTERN = re.compile(r"encoder_attn|encdecattention|crossattention|cross_attn|cross_attention", re.I)


@dataclass(frozen=True)
class Site:
    """Where an attention call happens: the stream and the model's layer index."""

    stream: str
    layer: int


class Intervention(Protocol):
    """Changes attention probabilities at some sites (see ``attnscope.attribution.interventions``)."""

    def applies(self, site: Site) -> bool: ...

    def apply(self, site: Site, probs: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        """probs: (B, H, bq, Nk) for all heads; returns the modified probabilities (same shape)."""
        ...


@dataclass
class CaptureSession:
    """What one capture wants: which sites/heads to record, the recorders, the interventions."""

    recorders: list[Recorder] = field(default_factory=list)
    layers: dict[str, set[int] | None] = field(default_factory=dict)  # stream -> layers (None = all)
    heads: dict[str, list[int] | None] = field(default_factory=dict)  # stream -> heads (None = all)
    interventions: list[Intervention] = field(default_factory=list)
    block_elements: int = DEFAULT_BLOCK_ELEMENTS
    rows_seen: dict[tuple[str, int], int] = field(default_factory=dict)  # queries appended so far
    calls: int = 0
    scratch: Scratch = field(default_factory=Scratch)  # reused block buffers
    on_call: Callable[[Site, torch.nn.Module], None] | None = None
    # sees each call's (post-rotary) query (B, H, Nq, d) and key (B, Hkv, Nk, d) and the score scaling
    on_qk: Callable[[Site, torch.Tensor, torch.Tensor, float], None] | None = None
    site: Site | None = None  # the attention call running now (named when it runs out of memory)

    def wants(self, site: Site) -> bool:
        if not self.recorders or site.stream not in self.layers:
            return False
        wanted = self.layers[site.stream]
        return wanted is None or site.layer in wanted

    def stats_only(self, site: Site, n_heads: int) -> bool:
        """Whether this site records only statistics, of every head (``attnscope.capture.fused``)."""
        heads = self.heads.get(site.stream)
        return (all(isinstance(r, StatsRecorder) for r in self.recorders)
                and (heads is None or sorted(heads) == list(range(n_heads))))


_ACTIVE: contextvars.ContextVar[CaptureSession | None] = contextvars.ContextVar("attnscope_session", default=None)


def active_session() -> CaptureSession | None:
    return _ACTIVE.get()


class session_scope:
    """Context manager that activates a CaptureSession for the forwards run inside it."""

    def __init__(self, session: CaptureSession):
        self.session = session
        self._token: contextvars.Token | None = None

    def __enter__(self) -> CaptureSession:
        self._token = _ACTIVE.set(self.session)
        return self.session

    def __exit__(self, *exc) -> None:
        _ACTIVE.reset(self._token)


# ---------------------------------------------------------------------------- site resolution
def classify_module(name: str, is_encoder_decoder: bool) -> tuple[str, int | None]:
    """(stream, layer) of an attention module from its dotted name in ``model.named_modules()``.

    The layer is the first integer component of the path (``encoder.layer.3.attention.self``,
    ``model.layers.5.self_attn``, ``decoder.block.1.layer.1.EncDecAttention``, ``transformer.h.4.attn``).
    """
    parts = name.split(".")
    layer = next((int(p) for p in parts if p.isdigit()), None)
    if _CROSS_PATTERN.search(name):
        return "cross", layer
    if is_encoder_decoder:
        if "decoder" in parts:
            return "decoder_self", layer
        if "encoder" in parts:
            return "encoder_self", layer
    return "self", layer


def annotate_model(model: torch.nn.Module) -> None:
    """Attach ``_attnscope_site`` to every module of the model (read by the attention function)."""
    is_ed = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    for name, module in model.named_modules():
        stream, layer = classify_module(name, is_ed)
        if layer is not None:
            module._attnscope_site = Site(stream, layer)


def _site_of(module: torch.nn.Module) -> Site:
    site = getattr(module, "_attnscope_site", None)
    if site is None:
        raise RuntimeError(
            "attnscope: an attention module has no site annotation; capture through attnscope.capture(), "
            "which annotates the model first"
        )
    return site


# ---------------------------------------------------------------------------- probabilities
def _resolve_causal(module: torch.nn.Module, q_len: int, attention_mask, is_causal) -> bool:
    """Same rule as transformers' SDPA path: implicit causal masking only when no mask was built."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    return bool(q_len > 1 and attention_mask is None and causal)


class SiteScores:
    """Pre-softmax scores of one attention call, computed block by block over query rows for some heads,
    exactly as the model's attention (scaling, soft-cap, position bias, causal / padding / window masks).

    query: (B, H, Nq, D); key: (B, Hkv, Nk, D) (grouped-query: head h reads kv head h // (H/Hkv));
    attention_mask: bool (True = attend) or additive float, (B|1, 1|H, Nq, Nk); heads: (h,) int64.
    The heads are gathered (and cast to float32) once, not per block.
    """

    def __init__(self, query, key, attention_mask, scaling: float, causal: bool, heads: torch.Tensor,
                 position_bias: torch.Tensor | None = None, softcap: float | None = None):
        groups = query.shape[1] // key.shape[1]
        B, _, nq, d = query.shape
        nk = key.shape[2]
        self.shape = (B, len(heads), nq, nk)
        self.q = query[:, heads].float().reshape(B * len(heads), nq, d)  # (B*h, Nq, D)
        k = key[:, heads // groups].float().reshape(B * len(heads), nk, d)  # (B*h, Nk, D)
        self.k_t = k.transpose(1, 2).contiguous()  # (B*h, D, Nk): 3-D bmm on it is ~2x a 4-D matmul on CPU
        self.scaling, self.causal, self.softcap = scaling, causal, softcap
        self.bias = None
        if position_bias is not None:
            self.bias = position_bias[:, heads] if position_bias.shape[1] > 1 else position_bias  # (B|1, h|1, Nq, Nk)
        self.mask = None
        if attention_mask is not None:
            self.mask = attention_mask[:, heads] if attention_mask.shape[1] > 1 else attention_mask

    def block(self, q_slice: slice, masked_value: float = float("-inf"),
              out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scores (B, h, bq, Nk) float32 of the query rows ``q_slice``, masked keys set to ``masked_value``
        (an additive float mask is added, then clamped at ``masked_value``), and the allowed-key mask
        (B|1, 1|h, bq, Nk) bool or None. ``out``: a reused (B*h, bq, Nk) buffer for the scores."""
        B, h, nq, nk = self.shape
        q = self.q[:, q_slice]  # (B*h, bq, D)
        first, stop = q_slice.indices(nq)[:2]
        seen = min(stop, nk) if self.causal and self.mask is None else nk  # keys any row of the block sees
        k_t = self.k_t[:, :, :seen]  # (B*h, D, seen) causal: keys after the block's last row are masked below
        if out is not None:  # a reused buffer (recording, no autograd): into a strided view of it
            scores = out
            torch.bmm(q, k_t, out=out[..., :seen]).mul_(self.scaling)
        else:  # may need gradients, which out= arguments do not support
            scores = torch.bmm(q, k_t).mul_(self.scaling)  # (B*h, bq, seen)
            if seen < nk:
                scores = torch.nn.functional.pad(scores, (0, nk - seen))  # (B*h, bq, Nk)
        scores = scores.view(B, h, q.shape[1], nk)  # (B, h, bq, Nk); columns >= seen are filled below
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        if self.bias is not None:
            scores = scores + self.bias[:, :, q_slice].float()
        allowed = None
        if self.mask is not None:
            m = self.mask[:, :, q_slice]  # (B|1, 1|h, bq, Nk)
            if m.dtype == torch.bool:
                allowed = m
                scores = scores.masked_fill_(~m, masked_value)
            else:
                allowed = m > torch.finfo(m.dtype).min / 2
                scores = (scores + m.float()).clamp_(min=masked_value)
        elif self.causal:
            rows = torch.arange(nq, device=scores.device)[q_slice]  # top-left alignment, as SDPA's is_causal
            allowed = (rows[:, None] >= torch.arange(nk, device=scores.device)[None, :])[None, None]  # (1, 1, bq, Nk)
            band = slice(min(first + 1, nk), seen)  # keys some rows of the block see and others not
            scores[..., band.stop:].fill_(masked_value)  # keys after the block's last row: masked for every row
            scores[..., band].masked_fill_(~allowed[..., band], masked_value)  # keys before the band: every row sees them
        return scores, allowed


def probs_from_scores(scores: torch.Tensor, heads: torch.Tensor, sinks: torch.Tensor | None = None) -> torch.Tensor:
    """softmax over keys (B, h, bq, Nk), with the model's attention sinks (one extra logit per head,
    dropped after normalising) if it has them; fully masked (padding) rows become 0."""
    if sinks is not None:
        sink = sinks[heads].float().reshape(1, -1, 1, 1).expand(scores.shape[0], -1, scores.shape[2], 1)
        probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]  # (B, h, bq, Nk)
    else:
        probs = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(probs, nan=0.0)


def attention_probs_block(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    causal: bool,
    q_slice: slice,
    heads: torch.Tensor,
    position_bias: torch.Tensor | None = None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Probabilities of a block of query rows for some heads (shapes as :class:`SiteScores`).

    Returns probs (B, h, bq, Nk) float32 and the allowed-key mask (B|1, 1|h, bq, Nk) bool or None.
    """
    scores, allowed = SiteScores(query, key, attention_mask, scaling, causal, heads, position_bias, softcap).block(q_slice)
    return probs_from_scores(scores, heads, sinks), allowed


def _query_blocks(n_rows: int, row_elements: int, budget: int) -> list[slice]:
    step = max(1, budget // max(1, row_elements))
    return [slice(s, min(s + step, n_rows)) for s in range(0, n_rows, step)]


def _explicit_forward(module, query, key, value, attention_mask, scaling, causal, extra, session, site, qpos0):
    """Attention output computed from (possibly intervened) probabilities, block by block over queries."""
    B, H, Nq, _ = query.shape
    groups = H // key.shape[1]
    all_heads = torch.arange(H, device=query.device)
    v = value[:, all_heads // groups].float()  # (B, H, Nk, Dv)
    out = torch.empty(B, H, Nq, value.shape[-1], dtype=torch.float32, device=query.device)
    sinks = extra.get("sinks")
    site_scores = SiteScores(query, key, attention_mask, scaling, causal, all_heads, extra.get("position_bias"),
                             extra.get("softcap"))
    for qs in _query_blocks(Nq, B * H * key.shape[2], session.block_elements if session else DEFAULT_BLOCK_ELEMENTS):
        probs = probs_from_scores(site_scores.block(qs)[0], all_heads, sinks)  # (B, H, bq, Nk)
        qpos = torch.arange(qs.start, qs.stop, device=query.device) + qpos0
        if session is not None:
            for iv in session.interventions:
                if iv.applies(site):
                    probs = iv.apply(site, probs, qpos)
        out[:, :, qs] = torch.matmul(probs, v)  # (B, H, bq, Dv)
    return out.to(query.dtype).transpose(1, 2).contiguous()  # (B, Nq, H, Dv)


def attnscope_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
):
    """Drop-in for transformers' SDPA attention that can also record and intervene (module docstring)."""
    session = _ACTIVE.get()
    position_bias = kwargs.get("position_bias")
    softcap = kwargs.get("softcap")
    sinks = kwargs.get("s_aux", kwargs.get("sinks"))
    needs_explicit = softcap is not None or sinks is not None  # SDPA cannot do these
    if session is None and not needs_explicit:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    site = _site_of(module)
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    causal = _resolve_causal(module, query.shape[2], attention_mask, is_causal)
    extra = {"position_bias": position_bias, "softcap": softcap, "sinks": sinks}
    rows_key = (site.stream, site.layer)
    qpos0 = session.rows_seen.get(rows_key, 0) if session is not None else 0
    if session is not None:
        session.calls += 1
        session.site = site
        if session.on_call is not None:
            session.on_call(site, module)
        if session.on_qk is not None:
            session.on_qk(site, query.detach(), key.detach(), scaling)
    intervene = session is not None and any(iv.applies(site) for iv in session.interventions)
    if (not intervene and session is not None and session.wants(site) and session.stats_only(site, query.shape[1])
            and fused.applies(query, attention_mask, dropout, module.training, extra)):
        out = _fused_record(session, site, query, key, value, attention_mask, scaling, causal, qpos0)
        session.rows_seen[rows_key] = qpos0 + query.shape[2]
        return out, None
    if intervene or needs_explicit:
        if dropout and module.training:
            raise RuntimeError("attnscope: interventions need the model in eval mode (no attention dropout)")
        out = _explicit_forward(module, query, key, value, attention_mask, scaling, causal, extra, session, site,
                                qpos0)
    else:
        out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                        scaling=scaling, is_causal=is_causal, **kwargs)
    if session is not None and session.wants(site):
        for rec in session.recorders:  # value-side recorders (attnscope.attribution.value_mixing) see the values
            if hasattr(rec, "add_values"):
                rec.add_values((site.stream, site.layer), value.detach(), module)
        _record(session, site, query, key, attention_mask, scaling, causal, extra, qpos0)
    if session is not None:
        session.rows_seen[rows_key] = qpos0 + query.shape[2]
    return out, None


def _key_offset(site: Site, qpos0: int, n_queries: int, n_keys: int) -> int:
    """Absolute position of key column 0. Self-attention keys are absolute positions, but a
    sliding-window cache may have dropped the oldest ones, so column 0 is then position
    (last query + 1 - Nk). Cross-attention and encoder keys start at 0."""
    return 0 if site.stream in ("cross", "encoder_self") else max(0, qpos0 + n_queries - n_keys)


def _fused_record(session, site, query, key, value, attention_mask, scaling, causal, qpos0) -> torch.Tensor:
    """Statistics-only site: the output and the statistics from one attention computation."""
    nq, nk = query.shape[2], key.shape[2]
    key_offset = _key_offset(site, qpos0, nq, nk)
    names = tuple(dict.fromkeys(n for r in session.recorders for n in r.names))
    mask = attention_mask.detach() if attention_mask is not None else None
    out, stats = fused.stats_attention(query.detach(), key.detach(), value.detach(), mask, scaling, causal, qpos0,
                                       key_offset, names, session.scratch)
    for rec in session.recorders:
        rec.add_row_stats((site.stream, site.layer), stats, key_offset + nk)
    if query.shape[0] * query.shape[1] * nq * nk >= TRIM_AFTER_ELEMENTS:
        release_heap()
    return out


@torch.no_grad()
def _record(session, site, query, key, attention_mask, scaling, causal, extra, qpos0) -> None:
    B, H, Nq, _ = query.shape
    Nk = key.shape[2]
    wanted = session.heads.get(site.stream)
    heads = torch.arange(H, device=query.device) if wanted is None else torch.tensor(wanted, device=query.device)
    if int(heads.max()) >= H:
        raise RuntimeError(f"attnscope: head {int(heads.max())} requested but layer has {H} heads")
    q_det, k_det = query.detach(), key.detach()
    mask = attention_mask.detach() if attention_mask is not None else None
    extra = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in extra.items()}
    key_offset = _key_offset(site, qpos0, Nq, Nk)
    ivs = [iv for iv in session.interventions if iv.applies(site)]
    sinks = extra.get("sinks")
    # Statistics come straight from the scores (no softmax map) unless the probabilities were changed by
    # an intervention or the model has attention sinks; the other recorders take the probabilities.
    from_scores = not ivs and sinks is None
    computed = torch.arange(H, device=query.device) if ivs else heads  # interventions see every head
    site_scores = SiteScores(q_det, k_det, mask, scaling, causal, computed, extra.get("position_bias"),
                             extra.get("softcap"))
    recorders = sorted(session.recorders, key=lambda r: r.overwrites_scores)  # score consumers last
    for qs in _query_blocks(Nq, B * len(computed) * Nk, session.block_elements):
        qpos = torch.arange(qs.start, qs.stop) + qpos0  # absolute query positions (for distances)
        if from_scores:
            buf = session.scratch.get("scores", (B * len(computed), qs.stop - qs.start, Nk), device=query.device)
            scores, allowed = site_scores.block(qs, masked_value=torch.finfo(torch.float32).min, out=buf)
            block = AttentionBlock(allowed, scores=scores, scratch=session.scratch)
        else:
            scores, allowed = site_scores.block(qs)
            probs = probs_from_scores(scores, computed, sinks)  # (B, h|H, bq, Nk)
            if ivs:  # record what the model actually used
                for iv in ivs:
                    probs = iv.apply(site, probs, qpos.to(query.device))
                probs = probs[:, heads]  # (B, h, bq, Nk)
                if allowed is not None and allowed.shape[1] > 1:
                    allowed = allowed[:, heads]
            block = AttentionBlock(allowed, probs=probs)
        for i, rec in enumerate(recorders):
            block.last_use = i == len(recorders) - 1
            rec.add_block((site.stream, site.layer), block, qpos, key_offset)
    block = site_scores = None  # free the block and the gathered q/k before trimming
    if B * len(computed) * Nq * Nk >= TRIM_AFTER_ELEMENTS:  # long inputs only: a trim costs ~0.2x on tweets
        release_heap()


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim`` (Linux), or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_heap() -> None:
    """Return freed heap memory to the OS after a recorded layer. Block temporaries otherwise fragment
    glibc's heap (its mmap threshold adapts upwards): SmolLM2 at 4,096 tokens grew ~1 GB per recorded
    layer without this, and stays flat with it (measured; see docs/benchmarks.md)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


_registered: set[str] = set()


def register_attention_function(name: str, fn) -> str:
    """Register ``fn`` with transformers' AttentionInterface under ``name``, with SDPA's mask builder (idempotent).
    Models then use it through ``attn_implementation=name``."""
    if name not in _registered:
        AttentionInterface.register(name, fn)
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask)
        _registered.add(name)
    return name


def register() -> str:
    """Register the attnscope attention and mask functions with transformers (idempotent)."""
    return register_attention_function(ATTN_NAME, attnscope_attention)
