"""GRU encoder-decoder with attention (Bahdanau et al. 2015; Luong et al. 2015).

Encoder: embedding -> (bi-directional) GRU over the source (packed, so padding never enters the
recurrence); the decoder's first state is ``tanh(W [h_fwd_last; h_bwd_first])`` (Bahdanau et al. 2015,
appendix A.2.2).

Decoder, one step (``Seq2SeqConfig.decoder_style``):

- ``bahdanau`` (Bahdanau et al. 2015): the *previous* state ``s_{t-1}`` queries the encoder:
  ``c_t = attn(s_{t-1}, H)``, ``s_t = GRU([E y_{t-1}; c_t], s_{t-1})``,
  ``logits = W_o tanh(W_h [s_t; c_t; E y_{t-1}])``.
- ``luong`` (Luong et al. 2015, §3 with input feeding §3.3): ``s_t = GRU([E y_{t-1}; h~_{t-1}], s_{t-1})``,
  ``c_t = attn(s_t, H)``, ``h~_t = tanh(W_c [c_t; s_t])``, ``logits = W_s h~_t``.

The attention module (``attention``) is independent of the style: by default Bahdanau's additive
score runs in the Bahdanau style and the Luong scores and multi-head attention (Vaswani et al. 2017)
in the Luong style. Attention weights come back as ``(B, H, T, S)``, H = 1 for the classic scores.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..errors import InputError, UnknownNameError
from .attention import ATTENTION_KINDS, build_attention
from .data import BOS_ID, PAD_ID


@dataclass
class Seq2SeqConfig:
    """Sizes and choices of a :class:`Seq2Seq` model. ``hidden`` is the decoder state size and the
    encoder output size (each direction of a bi-directional encoder has ``hidden // 2``)."""

    src_vocab: int
    tgt_vocab: int
    emb: int = 64
    hidden: int = 128
    attention: str = "bahdanau"
    heads: int = 1
    bidirectional: bool = True
    dropout: float = 0.1
    attn_dropout: float = 0.0
    decoder_style: str = ""  # "" = the attention's own: bahdanau for "bahdanau", luong otherwise

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_KINDS:
            raise UnknownNameError("attention", self.attention, ATTENTION_KINDS)
        if not self.decoder_style:
            self.decoder_style = "bahdanau" if self.attention == "bahdanau" else "luong"
        if self.decoder_style not in ("bahdanau", "luong"):
            raise UnknownNameError("decoder style", self.decoder_style, ("bahdanau", "luong"))
        if self.bidirectional and self.hidden % 2:
            raise InputError(f"a bi-directional encoder needs an even hidden size, got {self.hidden}")
        if self.attention != "multihead" and self.heads != 1:
            raise InputError(f"attention {self.attention!r} has one head; use attention='multihead' for heads={self.heads}")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InputError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @classmethod
    def tiny(cls, src_vocab: int, tgt_vocab: int, **kw: Any) -> Seq2SeqConfig:
        """A preset small enough for unit tests (trains in seconds)."""
        return cls(src_vocab, tgt_vocab, **{"emb": 16, "hidden": 32, "dropout": 0.0, **kw})

    @classmethod
    def small(cls, src_vocab: int, tgt_vocab: int, **kw: Any) -> Seq2SeqConfig:
        """The default for the generated tasks (a few CPU minutes)."""
        return cls(src_vocab, tgt_vocab, **{"emb": 64, "hidden": 128, **kw})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Seq2SeqConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class Encoder(nn.Module):
    """Embedding + GRU over the source; padding is packed away."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.src_vocab, cfg.emb, padding_idx=PAD_ID)
        size = cfg.hidden // 2 if cfg.bidirectional else cfg.hidden
        self.rnn = nn.GRU(cfg.emb, size, batch_first=True, bidirectional=cfg.bidirectional)
        self.bridge = nn.Linear(cfg.hidden, cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S), src_mask (B, S) -> memory (B, S, D) (zeros at padding), initial state (B, D)."""
        lengths = src_mask.sum(1).cpu()  # (B,)
        if int(lengths.min()) < 1:
            raise InputError("every source sequence needs at least one token")
        x = self.dropout(self.embed(src))  # (B, S, E)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, h = self.rnn(packed)  # h: (dirs, B, D/dirs)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))  # (B, S, D)
        h = h.transpose(0, 1).reshape(src.size(0), -1)  # (B, D) [fwd last; bwd first]
        return memory, torch.tanh(self.bridge(h))  # (B, S, D), (B, D)


@dataclass
class DecoderState:
    """Recurrent state of the decoder: ``s`` (B, D) and, in the Luong style, the attentional vector ``feed`` (B, D)."""

    s: torch.Tensor
    feed: torch.Tensor | None = None

    def index(self, idx: torch.Tensor) -> DecoderState:
        return DecoderState(self.s.index_select(0, idx), None if self.feed is None else self.feed.index_select(0, idx))


class AttentionDecoder(nn.Module):
    """One GRU step with attention over the encoder memory (see the module docstring for the equations)."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.style = cfg.decoder_style
        d, e = cfg.hidden, cfg.emb
        self.embed = nn.Embedding(cfg.tgt_vocab, e, padding_idx=PAD_ID)
        self.attn = build_attention(cfg.attention, d, d, cfg.heads, cfg.attn_dropout)
        c = self.attn.context_dim
        self.dropout = nn.Dropout(cfg.dropout)
        if self.style == "bahdanau":
            self.rnn = nn.GRUCell(e + c, d)
            self.pre_out = nn.Linear(d + c + e, d)
        else:
            self.rnn = nn.GRUCell(e + d, d)
            self.combine = nn.Linear(c + d, d)
        self.out = nn.Linear(d, cfg.tgt_vocab)

    def init_state(self, h0: torch.Tensor) -> DecoderState:
        return DecoderState(h0, torch.zeros_like(h0) if self.style == "luong" else None)

    def step(self, y_prev: torch.Tensor, state: DecoderState, memory: torch.Tensor, mask: torch.Tensor,
             cache: Any) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """y_prev (B,) -> logits (B, V), new state, weights (B, H, S)."""
        emb = self.dropout(self.embed(y_prev))  # (B, E)
        if self.style == "bahdanau":
            context, w = self.attn(state.s, memory, mask, cache=cache)  # (B, C), (B, S) or (B, H, S)
            s = self.rnn(torch.cat([emb, context], -1), state.s)  # (B, D)
            h = torch.tanh(self.pre_out(torch.cat([s, context, emb], -1)))  # (B, D)
            new = DecoderState(s)
        else:
            s = self.rnn(torch.cat([emb, state.feed], -1), state.s)  # (B, D)
            context, w = self.attn(s, memory, mask, cache=cache)  # (B, C), (B, S) or (B, H, S)
            h = torch.tanh(self.combine(torch.cat([context, s], -1)))  # (B, D)
            new = DecoderState(s, h)
        logits = self.out(self.dropout(h))  # (B, V)
        w = w.unsqueeze(1) if w.dim() == 2 else w  # (B, H, S)
        return logits, new, w


class Seq2Seq(nn.Module):
    """Encoder-decoder with attention; ``forward`` trains with teacher forcing."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = AttentionDecoder(cfg)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> tuple[torch.Tensor, DecoderState, Any]:
        """memory (B, S, D), initial decoder state, and the attention's per-sequence cache."""
        memory, h0 = self.encoder(src, src_mask)  # (B, S, D), (B, D)
        return memory, self.decoder.init_state(h0), self.decoder.attn.prepare(memory)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor,
                teacher_forcing: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S), src_mask (B, S) bool, tgt_in (B, T) starting with ``<s>`` ->
        logits (B, T, V), attention (B, H, T, S). With ``teacher_forcing`` < 1 each step feeds the
        model's own previous prediction with probability ``1 - teacher_forcing`` (scheduled sampling)."""
        memory, state, cache = self.encode(src, src_mask)
        logits, weights = [], []
        y = tgt_in[:, 0]  # (B,)
        for t in range(tgt_in.size(1)):
            lg, state, w = self.decoder.step(y, state, memory, src_mask, cache)  # (B, V), _, (B, H, S)
            logits.append(lg)
            weights.append(w)
            if t + 1 < tgt_in.size(1):
                use_gold = teacher_forcing >= 1.0 or random.random() < teacher_forcing
                y = tgt_in[:, t + 1] if use_gold else lg.argmax(-1)  # (B,)
        return torch.stack(logits, 1), torch.stack(weights, 2)  # (B, T, V), (B, H, T, S)


def pad_batch(seqs: list[list[int]], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists: ids (B, N) and mask (B, N) bool (True = token)."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), PAD_ID, dtype=torch.long, device=device)  # (B, N)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids, ids != PAD_ID


__all__ = ["Seq2SeqConfig", "Encoder", "AttentionDecoder", "DecoderState", "Seq2Seq", "pad_batch", "BOS_ID"]
