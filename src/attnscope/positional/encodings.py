"""Positional encodings and what they do to attention scores.

Three kinds of position information, each with the model it comes from:

- **Sinusoidal** (Vaswani et al. 2017, "Attention Is All You Need", §3.5):
  ``PE[p, 2i] = sin(p·ω_i)``, ``PE[p, 2i+1] = cos(p·ω_i)``, ``ω_i = base^(-2i/d)``. The dot product of two
  positions is ``Σ_i cos((m−n)·ω_i)``: it depends only on the offset ``m−n``, is symmetric, and is largest
  at offset 0. :func:`sinusoidal` computes the matrix and that similarity.
- **Learned absolute** positions (BERT, Devlin et al. 2019; MiniLM, Wang et al. 2020): one trained vector per
  position, added to the token embedding. :func:`learned_positions` gives their cosine-similarity matrix;
  :func:`score_decomposition` splits a layer-0 head's score ``q·k/√d`` into content–content,
  content–position, position–content and position–position terms (after Ke et al. 2021, "Rethinking
  Positional Encoding in Language Pre-training" (TUPE), eq. 6), exactly (see its docstring for the
  definition of "content" and "position" under the embedding LayerNorm).
- **Rotary** embeddings (Su et al. 2021, "RoFormer", §3.4): q and k are rotated in 2-D planes by angles
  ``p·θ_i``; ``θ_i = base^(-2i/d_head)`` (read from the model, which may rescale them). Then
  ``(R_m q)·(R_n k) = q·R_{n−m} k`` depends on ``m−n`` only. :func:`rotary_profile` holds a real head's
  q and k fixed and varies their distance, so the effect of the rotation alone is seen.

Every function that reads a model checks its result against the model's own forward pass (the hooked
query/key projections, or the captured attention) and raises :class:`CaptureError` when they disagree, so
a model whose layout differs from the one assumed is refused instead of explained wrongly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import CaptureError, InputError
from ..models import LoadedModel

KINDS = ("sinusoidal", "learned", "rotary")
TERMS = ("content-content", "content-position", "position-content", "position-position")
MAX_POSITIONS = 4096  # sinusoidal matrix rows (the similarity is N×N)
MAX_D_MODEL = 8192
MAX_DISTANCE = 32768


def _int_in(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise InputError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    return int(value)


def _base(value: Any) -> float:
    try:
        b = float(value)
    except (TypeError, ValueError):
        raise InputError(f"base must be a number > 1, got {value!r}") from None
    if not math.isfinite(b) or not 1.0 < b <= 1e9:
        raise InputError(f"base must be a number in (1, 1e9], got {value!r}")
    return b


# ---------------------------------------------------------------------------- sinusoidal
def sinusoidal_frequencies(d_model: int, base: float = 10000.0) -> np.ndarray:
    """(d_model/2,) angular frequencies ω_i = base^(−2i/d_model), radians per position (Vaswani et al. 2017)."""
    d_model = _int_in("d_model", d_model, 2, MAX_D_MODEL)
    if d_model % 2:
        raise InputError(f"d_model must be even (sin/cos pairs), got {d_model}")
    i = np.arange(d_model // 2, dtype=np.float64)  # (D/2,)
    return _base(base) ** (-2.0 * i / d_model)


def sinusoidal_encoding(n_positions: int, d_model: int, base: float = 10000.0) -> np.ndarray:
    """(n_positions, d_model) float64: PE[p, 2i] = sin(p·ω_i), PE[p, 2i+1] = cos(p·ω_i) (Vaswani et al. 2017,
    §3.5). Even columns are sines, odd columns cosines, of the same frequency."""
    n_positions = _int_in("n_positions", n_positions, 1, MAX_POSITIONS)
    omega = sinusoidal_frequencies(d_model, base)  # (D/2,)
    angles = np.arange(n_positions, dtype=np.float64)[:, None] * omega[None]  # (N, D/2)
    pe = np.empty((n_positions, 2 * len(omega)))  # (N, D)
    pe[:, 0::2] = np.sin(angles)
    pe[:, 1::2] = np.cos(angles)
    return pe


@dataclass
class SinusoidalPositions:
    """The sinusoidal matrix and the dot-product similarity between positions that it induces."""

    encoding: np.ndarray  # (N, D)
    frequencies: np.ndarray  # (D/2,) ω_i
    similarity: np.ndarray  # (N, N): PE[m]·PE[n] = Σ_i cos((m−n)ω_i)
    base: float

    def offset_profile(self) -> tuple[np.ndarray, np.ndarray]:
        """(offsets 0..N−1, similarity at that offset): row 0 of the matrix, the same on every diagonal."""
        return np.arange(len(self.similarity)), self.similarity[0].copy()

    def to_dict(self) -> dict[str, Any]:
        off, prof = self.offset_profile()
        return {"kind": "sinusoidal", "n_positions": int(self.encoding.shape[0]), "d_model": int(self.encoding.shape[1]),
                "base": self.base, "frequencies": self.frequencies.tolist(),
                "similarity_by_offset": prof.tolist(),
                "wavelengths": (2 * np.pi / self.frequencies).tolist()}


def sinusoidal(n_positions: int = 128, d_model: int = 128, base: float = 10000.0) -> SinusoidalPositions:
    """Sinusoidal positions (Vaswani et al. 2017) and their dot-product similarity (N, N)."""
    pe = sinusoidal_encoding(n_positions, d_model, base)  # (N, D)
    return SinusoidalPositions(pe, sinusoidal_frequencies(d_model, base), pe @ pe.T, _base(base))


# ---------------------------------------------------------------------------- learned absolute
def _base_model(lm: LoadedModel):
    m = lm.model
    return getattr(m, "base_model", m) or m


def _position_table(lm: LoadedModel) -> torch.nn.Embedding:
    """The absolute position-embedding table: BERT-style ``embeddings.position_embeddings`` or GPT-2's ``wpe``."""
    base = _base_model(lm)
    emb = getattr(getattr(base, "embeddings", None), "position_embeddings", None)
    if emb is None:
        emb = getattr(base, "wpe", None)
    if not isinstance(emb, torch.nn.Embedding):
        raise InputError(f"{lm.name} has no learned absolute position embeddings (BERT-style "
                         "embeddings.position_embeddings or GPT-2 wpe); use kind 'rotary' for rotary models "
                         "(e.g. smollm2) or 'learned' with minilm")
    return emb


@dataclass
class LearnedPositions:
    """A model's learned position vectors and their cosine similarity."""

    model: str
    embeddings: np.ndarray  # (N, D) the table's first N rows
    similarity: np.ndarray  # (N, N) cosine similarity
    norms: np.ndarray  # (N,)

    def offset_profile(self, max_offset: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets k, mean and std over m of cos(P[m], P[m+k])): how similarity falls with distance."""
        n = len(self.similarity)
        k_max = n - 1 if max_offset is None else min(int(max_offset), n - 1)
        ks = np.arange(k_max + 1)
        diags = [np.diagonal(self.similarity, k) for k in ks]
        return ks, np.array([d.mean() for d in diags]), np.array([d.std() for d in diags])

    def to_dict(self) -> dict[str, Any]:
        ks, mean, std = self.offset_profile()
        return {"kind": "learned", "model": self.model, "n_positions": int(self.embeddings.shape[0]),
                "d_model": int(self.embeddings.shape[1]), "cosine_by_offset_mean": mean.tolist(),
                "cosine_by_offset_std": std.tolist(), "norms": self.norms.tolist()}


def learned_positions(lm: LoadedModel | str, n_positions: int | None = None) -> LearnedPositions:
    """Cosine similarity of a model's learned absolute position embeddings (all rows by default)."""
    lm = _loaded(lm)
    table = _position_table(lm).weight.detach().double().cpu()  # (P, D)
    n = table.shape[0] if n_positions is None else _int_in("n_positions", n_positions, 1, table.shape[0])
    p = table[:n].numpy()  # (N, D)
    norms = np.linalg.norm(p, axis=1)  # (N,)
    unit = p / np.where(norms > 0, norms, 1.0)[:, None]
    return LearnedPositions(lm.name, p, unit @ unit.T, norms)


def _loaded(lm: LoadedModel | str) -> LoadedModel:
    if isinstance(lm, str):
        from ..models import load_model

        return load_model(lm)
    return lm


# ---------------------------------------------------------------------------- score decomposition
@dataclass
class ScoreDecomposition:
    """Layer-0 scores q·k/√d of every head split into four terms that sum to the model's score exactly."""

    model: str
    tokens: list[str]
    terms: dict[str, np.ndarray]  # name -> (H, N, N), names in TERMS
    score: np.ndarray  # (H, N, N) the model's own q·k/√d (from its hooked query/key projections)
    max_residual: float  # max |score − Σ terms|
    meta: dict[str, Any] = field(default_factory=dict)

    def mean_abs(self, centered: bool = True) -> dict[str, np.ndarray]:
        """name -> (H,): mean |term| over all (query, key) pairs. ``centered``: each term minus its mean over
        the keys of each query row first — softmax ignores a per-row constant, so only what varies along a
        row can shape the attention (e.g. a query-only bias adds nothing there)."""
        out = {}
        for k, v in self.terms.items():
            if centered:
                v = v - v.mean(-1, keepdims=True)  # (H, N, N) row-centred
            out[k] = np.abs(v).mean(axis=(1, 2))
        return out

    def shares(self, centered: bool = True) -> dict[str, np.ndarray]:
        """name -> (H,): each term's share of Σ mean |term| (a size comparison: terms can cancel)."""
        ma = self.mean_abs(centered)
        tot = sum(ma.values())
        return {k: v / np.where(tot > 0, tot, 1.0) for k, v in ma.items()}

    def position_share(self, centered: bool = True) -> np.ndarray:
        """(H,): share of the three terms that involve position."""
        return 1.0 - self.shares(centered)["content-content"]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "decomposition", "model": self.model, "layer": 0, "tokens": self.tokens,
                "shares_row_centred": {k: v.round(4).tolist() for k, v in self.shares(True).items()},
                "shares_raw": {k: v.round(4).tolist() for k, v in self.shares(False).items()},
                "mean_abs_row_centred": {k: v.round(4).tolist() for k, v in self.mean_abs(True).items()},
                "max_residual": self.max_residual, **self.meta}


def _bert_parts(lm: LoadedModel):
    base = _base_model(lm)
    emb = getattr(base, "embeddings", None)
    layer0 = getattr(getattr(base, "encoder", None), "layer", None)
    att = getattr(getattr(layer0[0], "attention", None), "self", None) if layer0 is not None and len(layer0) else None
    ok = (emb is not None and isinstance(getattr(emb, "position_embeddings", None), torch.nn.Embedding)
          and isinstance(getattr(emb, "LayerNorm", None), torch.nn.LayerNorm)
          and att is not None and isinstance(getattr(att, "query", None), torch.nn.Linear)
          and isinstance(getattr(att, "key", None), torch.nn.Linear))
    if not ok:
        raise InputError(f"{lm.name} is not a BERT-style encoder (token + position + segment embeddings, then "
                         "LayerNorm, then query/key projections); the score decomposition needs one, e.g. minilm")
    return emb, att


def score_decomposition(lm: LoadedModel | str, text: str, *, check_atol: float = 1e-3) -> ScoreDecomposition:
    """Split every layer-0 head's pre-softmax score q·k/√d into content and position terms (BERT-style models).

    BERT's layer-0 input is ``LN(x)`` with ``x = w + s + p`` (token, segment and position embeddings) and
    ``LN(x) = γ ⊙ (x − mean(x)) / σ(x) + β``. Definitions used here:

    - **position** part ``h_p = γ ⊙ (p − mean(p)) / σ(x)``: the position embedding, centred and scaled with
      the *shared* normaliser σ(x) of the whole sum;
    - **content** part ``h_c = γ ⊙ (c − mean(c)) / σ(x) + β`` with ``c = x − p`` (token + segment embedding):
      everything that is not the position embedding, including the LayerNorm shift β; the projections'
      biases go with content too: ``q_c = W_q h_c + b_q``, ``q_p = W_q h_p`` (same for k).

    Centring is linear, so ``LN(x) = h_c + h_p`` holds exactly; the only coupling is that σ(x) depends on
    both parts (position changes the scale of content and vice versa), which this split keeps inside each
    part rather than approximating. Then ``q·k/√d = q_c·k_c + q_c·k_p + q_p·k_c + q_p·k_p`` (over √d) with
    no remainder (Ke et al. 2021 write the same four terms for a LayerNorm-free input). Only layer 0 has
    this clean split: deeper layers mix both through attention and MLPs.

    The sum of the terms is checked against the scores from the model's own query/key projections (hooked
    during a forward pass); a mismatch above ``check_atol`` raises :class:`CaptureError`.
    """
    from ..attribution.interventions import encode

    lm = _loaded(lm)
    emb, att = _bert_parts(lm)
    cfg = lm.config
    n_heads = int(cfg.num_attention_heads)
    inputs, tokens = encode(lm, text)
    grabbed: dict[str, torch.Tensor] = {}

    def keep(name: str, output: bool = True):
        def hook(mod, args, out):
            grabbed[name] = (out if output else args[0]).detach().cpu()
        return hook

    hooks = [emb.position_embeddings.register_forward_hook(keep("p")),
             emb.LayerNorm.register_forward_hook(keep("x", output=False)),
             emb.LayerNorm.register_forward_hook(keep("ln")),
             att.query.register_forward_hook(keep("q")), att.key.register_forward_hook(keep("k"))]
    try:
        with torch.no_grad():
            lm.model.eval()
            lm.model(**inputs)
    finally:
        for h in hooks:
            h.remove()
    if not all(k in grabbed for k in ("p", "x", "q", "k")):
        raise CaptureError(f"{lm.name}'s forward pass did not run its position embeddings, LayerNorm and layer-0 "
                           "query/key as a BERT-style encoder does; the decomposition cannot be made")
    f64 = torch.float64
    x = grabbed["x"][0].to(f64)  # (N, D)
    p = grabbed["p"].to(f64)
    p = (p[0] if p.dim() == 3 else p).expand_as(x)  # (N, D); a (1, N, D) or (N, D) lookup
    c = x - p  # (N, D): token + segment (+ anything else added before the LayerNorm)
    ln = emb.LayerNorm
    gamma = ln.weight.detach().cpu().to(f64) if ln.weight is not None else torch.ones(x.shape[-1], dtype=f64)
    beta = ln.bias.detach().cpu().to(f64) if ln.bias is not None else torch.zeros(x.shape[-1], dtype=f64)
    sigma = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + ln.eps)  # (N, 1) the shared normaliser
    h_p = gamma * (p - p.mean(-1, keepdim=True)) / sigma  # (N, D)
    h_c = gamma * (c - c.mean(-1, keepdim=True)) / sigma + beta  # (N, D)

    def proj(lin: torch.nn.Linear, h: torch.Tensor, with_bias: bool) -> torch.Tensor:
        out = h @ lin.weight.detach().cpu().to(f64).T  # (N, D)
        if with_bias and lin.bias is not None:
            out = out + lin.bias.detach().cpu().to(f64)
        n, d = out.shape
        return out.reshape(n, n_heads, d // n_heads).transpose(0, 1)  # (H, N, d)

    qc, qp = proj(att.query, h_c, True), proj(att.query, h_p, False)  # (H, N, d)
    kc, kp = proj(att.key, h_c, True), proj(att.key, h_p, False)
    scale = 1.0 / math.sqrt(qc.shape[-1])
    terms = {"content-content": qc @ kc.transpose(1, 2) * scale, "content-position": qc @ kp.transpose(1, 2) * scale,
             "position-content": qp @ kc.transpose(1, 2) * scale, "position-position": qp @ kp.transpose(1, 2) * scale}
    qm, km = grabbed["q"][0].to(f64), grabbed["k"][0].to(f64)  # (N, D) the model's own projections
    n = qm.shape[0]
    qm = qm.reshape(n, n_heads, -1).transpose(0, 1)  # (H, N, d)
    km = km.reshape(n, n_heads, -1).transpose(0, 1)
    score = qm @ km.transpose(1, 2) * scale  # (H, N, N)
    total = sum(terms.values())
    resid = float((score - total).abs().max())
    tol = check_atol * max(1.0, float(score.abs().max()))
    if not resid <= tol:
        raise CaptureError(f"the four terms do not add up to {lm.name}'s layer-0 scores (max difference {resid:.3g}); "
                           "its embeddings are not laid out as BERT's (token + position + segment, then LayerNorm)")
    return ScoreDecomposition(lm.name, tokens.labels(), {k: v.numpy() for k, v in terms.items()}, score.numpy(),
                              resid, meta={"text": text, "heads": n_heads})


# ---------------------------------------------------------------------------- rotary
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(…, d) → (−x[d/2:], x[:d/2]): the half-split pairing (dimension i with i + d/2) that Llama-family models
    in transformers use."""
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, scaling: float = 1.0) -> torch.Tensor:
    """Rotate ``x`` (…, P, d) at integer ``positions`` (P,) by angles ``position·θ_i`` (Su et al. 2021, eq. 34,
    half-split layout): ``x·cos + rotate_half(x)·sin``, both times ``scaling``."""
    ang = positions.to(inv_freq.dtype)[:, None] * inv_freq[None]  # (P, d/2)
    ang = torch.cat((ang, ang), dim=-1)  # (P, d)
    return (x * ang.cos() + rotate_half(x) * ang.sin()) * scaling


@dataclass
class RotaryFrequencies:
    model: str
    inv_freq: np.ndarray  # (d_head/2,) θ_i, radians per token
    attention_scaling: float
    head_dim: int
    max_position: int | None

    @property
    def wavelengths(self) -> np.ndarray:
        """(d_head/2,) tokens per full turn: 2π/θ_i."""
        return 2 * np.pi / self.inv_freq


def _rotary_module(lm: LoadedModel):
    base = _base_model(lm)
    rot = getattr(base, "rotary_emb", None)
    inv = getattr(rot, "inv_freq", None) if rot is not None else None
    layers = getattr(base, "layers", None)
    att = getattr(layers[0], "self_attn", None) if layers is not None and len(layers) else None
    if inv is None or att is None or not hasattr(att, "q_proj") or not hasattr(att, "k_proj"):
        raise InputError(f"{lm.name} has no rotary position embedding (a Llama-style model with rotary_emb and "
                         "q_proj/k_proj), e.g. smollm2")
    return rot, layers


def rotary_frequencies(lm: LoadedModel | str) -> RotaryFrequencies:
    """The model's own per-dimension rotary frequencies θ_i (its ``rotary_emb.inv_freq``, with any scaling)."""
    lm = _loaded(lm)
    rot, layers = _rotary_module(lm)
    inv = rot.inv_freq.detach().double().cpu().numpy()  # (d/2,)
    return RotaryFrequencies(lm.name, inv, float(getattr(rot, "attention_scaling", 1.0) or 1.0), 2 * len(inv),
                             getattr(lm.config, "max_position_embeddings", None))


@dataclass
class RotaryProfile:
    """How rotation alone changes one head's q·k/√d with the query–key distance (q and k held fixed)."""

    model: str
    layer: int
    head: int
    kv_head: int
    tokens: list[str]
    pairs: list[tuple[int, int]]  # (query token, key token) whose q, k are held fixed
    distances: np.ndarray  # (M,) Δ = query position − key position, 0..max_distance
    score: np.ndarray  # (P, M): (R_{n+Δ} q)·(R_n k)/√d for each pair
    mean_score: np.ndarray  # (M,) the same, averaged over every causal (query i, key j ≤ i) pair of the text
    amplitude: np.ndarray  # (P, d/2): per frequency, |q_i|·|k_i| (the 2-D planes' norms), the weight of θ_i
    frequencies: RotaryFrequencies
    unrotated: np.ndarray  # (P,) q·k/√d without any rotation (= score at Δ = 0 up to scaling²)
    max_check_error: float  # |captured attention − softmax of the rotated scores|, the self-check
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "rotary", "model": self.model, "layer": self.layer, "head": self.head, "kv_head": self.kv_head,
                "pairs": [{"query": q, "key": k, "query_token": self.tokens[q], "key_token": self.tokens[k],
                           "unrotated": float(u), "score_by_distance": s.round(5).tolist()}
                          for (q, k), s, u in zip(self.pairs, self.score, self.unrotated)],
                "distances": self.distances.tolist(), "mean_score_by_distance": self.mean_score.round(5).tolist(),
                "inv_freq": self.frequencies.inv_freq.tolist(),
                "attention_scaling": self.frequencies.attention_scaling,
                "max_check_error": self.max_check_error, **self.meta}


def _qk_projections(lm: LoadedModel, layer_mod, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    grabbed: dict[str, torch.Tensor] = {}
    att = layer_mod.self_attn
    hooks = [att.q_proj.register_forward_hook(lambda m, a, o: grabbed.__setitem__("q", o.detach().cpu())),
             att.k_proj.register_forward_hook(lambda m, a, o: grabbed.__setitem__("k", o.detach().cpu()))]
    try:
        with torch.no_grad():
            lm.model.eval()
            lm.model(**inputs)
    finally:
        for h in hooks:
            h.remove()
    return grabbed["q"][0], grabbed["k"][0]  # (N, H·d), (N, KV·d)


def rotary_profile(lm: LoadedModel | str, text: str, *, layer: int = 0, head: int = 0,
                   pairs: Sequence[tuple[int, int]] | None = None, max_distance: int = 512,
                   check_atol: float = 2e-3) -> RotaryProfile:
    """Hold a real head's q (of a query token) and k (of a key token) fixed and vary only their distance.

    q and k are the head's projections before rotation (hooked ``q_proj``/``k_proj`` outputs of ``layer``);
    the score at distance Δ is ``(R_{n+Δ} q)·(R_n k)/√d`` — independent of n (Su et al. 2021, §3.4.2), so the
    curve is what rotation alone does to that (q, k). ``pairs`` default: the last token as query with four
    keys spread over the text. ``mean_score`` averages the curve over every causal (query, key ≤ query) pair.

    Self-check: the rotated q, k at their true positions, causally masked and soft-maxed, must reproduce the
    attention :func:`attnscope.capture` records for that head (else :class:`CaptureError`).
    """
    from ..attribution.interventions import encode
    from ..capture import capture

    lm = _loaded(lm)
    rot, layers = _rotary_module(lm)
    n_layers = len(layers)
    layer = _int_in("layer", layer, -n_layers, n_layers - 1) % n_layers
    cfg = lm.config
    n_heads = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    head = _int_in("head", head, 0, n_heads - 1)
    max_distance = _int_in("max_distance", max_distance, 1, MAX_DISTANCE)
    kv_head = head // (n_heads // n_kv)
    inputs, tokens = encode(lm, text)
    q_all, k_all = _qk_projections(lm, layers[layer], inputs)
    n = q_all.shape[0]
    freqs = rotary_frequencies(lm)
    d = freqs.head_dim
    if q_all.shape[-1] != n_heads * d or k_all.shape[-1] != n_kv * d:
        raise CaptureError(f"{lm.name}'s q/k projections ({q_all.shape[-1]}, {k_all.shape[-1]}) do not match "
                           f"{n_heads} + {n_kv} heads of the rotary dimension {d}")
    q = q_all.double().reshape(n, n_heads, d)[:, head]  # (N, d)
    k = k_all.double().reshape(n, n_kv, d)[:, kv_head]  # (N, d)
    inv = torch.from_numpy(freqs.inv_freq)  # (d/2,)
    s = freqs.attention_scaling
    scale = 1.0 / math.sqrt(d)
    # self-check against the captured attention of this head
    pos = torch.arange(n)
    scores = apply_rotary(q, pos, inv, s) @ apply_rotary(k, pos, inv, s).T * scale  # (N, N)
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    probs = torch.softmax(scores, -1)  # (N, N)
    tr = capture(lm, text, mode="full", layers=[layer], heads=[head], full_dtype=torch.float32)
    got = tr.head(layer, head).double()  # (N, N)
    err = float((got - probs).abs().max())
    if not err <= check_atol:
        raise CaptureError(f"rotating {lm.name}'s q/k does not reproduce its layer {layer} head {head} attention "
                           f"(max difference {err:.3g}): its rotary layout differs from the half-split one assumed")
    if pairs is None:
        keys = sorted({0, *np.linspace(1, max(1, n - 2), 3).round().astype(int).tolist()} & set(range(n)))
        pairs = [(n - 1, j) for j in keys]
    pairs = [(_int_in("query index", a, 0, n - 1), _int_in("key index", b, 0, n - 1)) for a, b in pairs]
    if not pairs:
        raise InputError("give at least one (query, key) pair")
    # In plane i (dims i and i + d/2) rotation multiplies z = x_i + i·x_{i+d/2} by e^{i·pos·θ_i}, so
    # (R_m q)·(R_n k) = s² Σ_i Re(z_q,i · conj(z_k,i) · e^{i(m−n)θ_i}): a function of Δ = m − n alone.
    half = d // 2
    zq = torch.complex(q[:, :half], q[:, half:])  # (N, d/2)
    zk = torch.complex(k[:, :half], k[:, half:])  # (N, d/2)
    dist = torch.arange(max_distance + 1, dtype=torch.float64)  # (M,)
    phase = torch.exp(1j * dist[:, None] * inv[None])  # (M, d/2)
    qi = [a for a, _ in pairs]
    kj = [b for _, b in pairs]
    w = zq[qi] * zk[kj].conj()  # (P, d/2)
    score = (w[:, None, :] * phase[None]).real.sum(-1) * (s * s * scale)  # (P, M)
    # mean over every causal (query i, key j ≤ i) pair of the text: the mean of w is linear in the pairs
    w_mean = (zq * torch.cumsum(zk, 0).conj()).sum(0) / (n * (n + 1) / 2)  # (d/2,)
    mean_score = (w_mean[None] * phase).real.sum(-1) * (s * s * scale)  # (M,)
    amp = w.abs()  # (P, d/2): |z_q,i|·|z_k,i|, the weight of frequency θ_i in the curve
    unrot = (q[qi] * k[kj]).sum(-1) * scale  # (P,)
    return RotaryProfile(lm.name, layer, head, kv_head, tokens.labels(), pairs, dist.long().numpy(), score.numpy(),
                         mean_score.numpy(), amp.numpy(), freqs, unrot.numpy(), err,
                         meta={"text": text, "heads": n_heads, "kv_heads": n_kv})
