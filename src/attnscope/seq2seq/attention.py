"""Attention modules of the classic encoder-decoder literature and the Transformer.

- :class:`BahdanauAttention` — additive attention, ``e_ti = v_a^T tanh(W_a s_{t-1} + U_a h_i)``
  (Bahdanau, Cho & Bengio, "Neural Machine Translation by Jointly Learning to Align and Translate",
  ICLR 2015).
- :class:`LuongAttention` — the three scores of Luong, Pham & Manning, "Effective Approaches to
  Attention-based Neural Machine Translation", EMNLP 2015: ``dot`` (``s_t^T h_i``), ``general``
  (``s_t^T W_a h_i``) and ``concat`` (``v_a^T tanh(W_a [s_t; h_i])``).
- :class:`MultiHeadAttention` / :class:`MultiHeadSelfAttention` — scaled dot-product attention with
  several heads (Vaswani et al., "Attention Is All You Need", NeurIPS 2017).

Every module returns its attention *probabilities* next to its output. Masks are boolean with
``True`` = a real key the query may attend to; masked keys receive exactly ``0.0`` weight, never a
tiny positive number. Attention dropout (Vaswani et al. 2017, §5.4) is applied to the weights used
for the context vector only; the returned weights are the undropped probabilities (rows sum to 1).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import nn

from ..errors import InputError, UnknownNameError

LuongScore = Literal["dot", "general", "concat"]
LUONG_SCORES: tuple[str, ...] = get_args(LuongScore)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` where ``mask`` is False gets exactly zero weight.

    scores: (..., N); mask: bool broadcastable to scores, True = allowed. A row with no allowed key
    gets all zeros (instead of NaN).
    """
    if mask is None:
        return torch.softmax(scores, dim=dim)
    scores = scores.masked_fill(~mask, float("-inf"))  # (..., N)
    probs = torch.softmax(scores, dim=dim)  # (..., N); exp(-inf) = 0 exactly
    return torch.nan_to_num(probs, nan=0.0).masked_fill(~mask, 0.0)  # (..., N) all-masked rows -> 0


class BahdanauAttention(nn.Module):
    """Additive attention of Bahdanau et al. (2015): ``e_ti = v_a^T tanh(W_a s + U_a h_i)``.

    ``query_dim`` is the decoder state size, ``key_dim`` the encoder output size, ``attn_dim`` the size
    of the hidden layer of the alignment model. ``forward`` returns ``(context (B, key_dim), weights (B, S))``.
    """

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int | None = None, attn_dropout: float = 0.0):
        super().__init__()
        attn_dim = attn_dim or query_dim
        self.W_a = nn.Linear(query_dim, attn_dim, bias=False)
        self.U_a = nn.Linear(key_dim, attn_dim, bias=True)
        self.v_a = nn.Linear(attn_dim, 1, bias=False)
        self.dropout = nn.Dropout(attn_dropout)
        self.context_dim = key_dim
        self.heads = 1

    def prepare(self, memory: torch.Tensor) -> torch.Tensor:
        """``U_a h_i`` for all source positions, computed once per sequence: (B, S, A)."""
        return self.U_a(memory)  # (B, S, A)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None,
                cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        keys = self.prepare(memory) if cache is None else cache  # (B, S, A)
        energy = torch.tanh(self.W_a(query).unsqueeze(1) + keys)  # (B, S, A)
        scores = self.v_a(energy).squeeze(-1)  # (B, S)
        weights = masked_softmax(scores, mask)  # (B, S)
        context = torch.bmm(self.dropout(weights).unsqueeze(1), memory).squeeze(1)  # (B, K)
        return context, weights


class LuongAttention(nn.Module):
    """Global attention of Luong et al. (2015) with score ``dot``, ``general`` or ``concat``.

    ``dot`` needs ``query_dim == key_dim``. ``forward(query (B, Q), memory (B, S, K), mask (B, S))``
    returns ``(context (B, K), weights (B, S))``.
    """

    def __init__(self, query_dim: int, key_dim: int, score: str = "general", attn_dim: int | None = None,
                 attn_dropout: float = 0.0):
        super().__init__()
        if score not in LUONG_SCORES:
            raise UnknownNameError("Luong score", score, LUONG_SCORES)
        if score == "dot" and query_dim != key_dim:
            raise InputError(
                f"Luong 'dot' attention needs the decoder state size ({query_dim}) to equal the encoder output "
                f"size ({key_dim}); use score='general' or make the sizes equal"
            )
        self.score = score
        if score == "general":
            self.W_a = nn.Linear(key_dim, query_dim, bias=False)
        elif score == "concat":
            attn_dim = attn_dim or query_dim
            self.W_a = nn.Linear(query_dim + key_dim, attn_dim, bias=False)
            self.v_a = nn.Linear(attn_dim, 1, bias=False)
        self.dropout = nn.Dropout(attn_dropout)
        self.context_dim = key_dim
        self.heads = 1

    def prepare(self, memory: torch.Tensor) -> torch.Tensor | None:
        """The query-independent part of the score: ``W_a h_i`` for general, else None."""
        if self.score == "general":
            return self.W_a(memory)  # (B, S, Q)
        return None

    def forward(self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None,
                cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.score == "dot":
            scores = torch.bmm(memory, query.unsqueeze(-1)).squeeze(-1)  # (B, S)
        elif self.score == "general":
            keys = self.prepare(memory) if cache is None else cache  # (B, S, Q)
            scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)  # (B, S)
        else:
            q = query.unsqueeze(1).expand(-1, memory.size(1), -1)  # (B, S, Q)
            scores = self.v_a(torch.tanh(self.W_a(torch.cat([q, memory], -1)))).squeeze(-1)  # (B, S)
        weights = masked_softmax(scores, mask)  # (B, S)
        context = torch.bmm(self.dropout(weights).unsqueeze(1), memory).squeeze(1)  # (B, K)
        return context, weights


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (Vaswani et al., 2017, §3.2).

    ``head_i = softmax(Q W_i^Q (K W_i^K)^T / sqrt(d_k)) V W_i^V``; the heads are concatenated and
    projected by ``W^O``. ``forward(query (B, Nq, Dq), memory (B, Nk, Dk), key_mask (B, Nk),
    attn_mask (Nq, Nk) or (B, Nq, Nk), causal)`` returns ``(out (B, Nq, d_model), weights (B, H, Nq, Nk))``.
    """

    def __init__(self, query_dim: int, key_dim: int, d_model: int, heads: int = 1, attn_dropout: float = 0.0):
        super().__init__()
        if heads < 1 or d_model % heads:
            raise InputError(f"d_model ({d_model}) must be a positive multiple of the number of heads ({heads})")
        self.heads, self.d_model, self.d_head = heads, d_model, d_model // heads
        self.q_proj = nn.Linear(query_dim, d_model)
        self.k_proj = nn.Linear(key_dim, d_model)
        self.v_proj = nn.Linear(key_dim, d_model)
        self.o_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(attn_dropout)
        self.context_dim = d_model

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.d_head).transpose(1, 2)  # (B, H, N, Dh)

    def prepare(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of every head, computed once per sequence: each (B, H, Nk, Dh)."""
        return self._split(self.k_proj(memory)), self._split(self.v_proj(memory))

    def attend(self, query: torch.Tensor, memory: torch.Tensor, key_mask: torch.Tensor | None = None,
               attn_mask: torch.Tensor | None = None, causal: bool = False,
               cache: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The sequence form: ``(out (B, Nq, d_model), weights (B, H, Nq, Nk))``."""
        b, nq, _ = query.shape
        nk = memory.size(1)
        k, v = self.prepare(memory) if cache is None else cache  # (B, H, Nk, Dh) each
        q = self._split(self.q_proj(query))  # (B, H, Nq, Dh)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)  # (B, H, Nq, Nk)
        allowed = torch.ones(b, 1, nq, nk, dtype=torch.bool, device=query.device)  # (B, 1, Nq, Nk)
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, :].bool()  # (B, 1, Nq, Nk)
        if attn_mask is not None:
            am = attn_mask.bool()
            allowed = allowed & (am[None, None] if am.dim() == 2 else am[:, None])  # (B, 1, Nq, Nk)
        if causal:
            allowed = allowed & torch.ones(nq, nk, dtype=torch.bool, device=query.device).tril(nk - nq)  # (B, 1, Nq, Nk)
        weights = masked_softmax(scores, allowed)  # (B, H, Nq, Nk)
        ctx = self.dropout(weights) @ v  # (B, H, Nq, Dh)
        ctx = ctx.transpose(1, 2).reshape(b, nq, self.d_model)  # (B, Nq, D)
        return self.o_proj(ctx), weights

    def forward(self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None,
                cache: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder-step form, like the classic modules: query (B, Dq) -> (context (B, D), weights (B, H, S))."""
        out, weights = self.attend(query.unsqueeze(1), memory, key_mask=mask, cache=cache)  # (B, 1, D), (B, H, 1, S)
        return out.squeeze(1), weights.squeeze(2)  # (B, D), (B, H, S)


class MultiHeadSelfAttention(MultiHeadAttention):
    """Multi-head self-attention (Vaswani et al., 2017): queries, keys and values from one sequence.

    ``forward(x (B, N, D), mask (B, N) key padding, attn_mask (N, N) or (B, N, N), causal)`` returns
    ``(out (B, N, D), weights (B, H, N, N))``; padded keys get exactly zero weight.
    """

    def __init__(self, d_model: int, heads: int = 1, attn_dropout: float = 0.0):
        super().__init__(d_model, d_model, d_model, heads, attn_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,  # type: ignore[override]
                attn_mask: torch.Tensor | None = None, causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attend(x, x, key_mask=mask, attn_mask=attn_mask, causal=causal)


AttentionKind = Literal["bahdanau", "luong-dot", "luong-general", "luong-concat", "multihead"]
ATTENTION_KINDS: tuple[str, ...] = get_args(AttentionKind)


def build_attention(kind: str, query_dim: int, key_dim: int, heads: int = 1, attn_dropout: float = 0.0) -> nn.Module:
    """The decoder's attention module by name (see ``ATTENTION_KINDS``)."""
    if kind == "bahdanau":
        return BahdanauAttention(query_dim, key_dim, attn_dropout=attn_dropout)
    if kind.startswith("luong-") and kind.removeprefix("luong-") in LUONG_SCORES:
        return LuongAttention(query_dim, key_dim, kind.removeprefix("luong-"), attn_dropout=attn_dropout)
    if kind == "multihead":
        return MultiHeadAttention(query_dim, key_dim, query_dim, heads, attn_dropout)
    raise UnknownNameError("attention", kind, ATTENTION_KINDS)

