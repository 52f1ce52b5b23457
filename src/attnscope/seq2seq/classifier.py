"""A self-attention text classifier: embedding -> multi-head self-attention -> pooling -> linear.

The attention layer is the scaled dot-product multi-head attention of Vaswani et al. (2017) with a
residual connection and layer normalisation; pooling is a masked mean over the real tokens, so the
self-attention is the only place where tokens interact. Used for the sentiment experiment on the tweets of
:func:`attnscope.datasets.load_tweets`.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import InputError
from .attention import MultiHeadSelfAttention
from .data import PAD_ID, Vocab
from .model import pad_batch

_TOKEN = re.compile(r"[a-z0-9']+|[^\sa-z0-9']", re.IGNORECASE)


def tokenize_text(text: str, max_len: int | None = None) -> tuple[list[str], list[tuple[int, int]], int]:
    """Lower-cased word/punctuation tokens with character spans; returns (tokens, offsets, n_cut)."""
    ms = list(_TOKEN.finditer(text))
    cut = max(0, len(ms) - max_len) if max_len else 0
    ms = ms[: max_len] if max_len else ms
    return [m.group().lower() for m in ms], [m.span() for m in ms], cut


@dataclass
class ClassifierConfig:
    vocab: int
    classes: int
    d_model: int = 64
    heads: int = 1
    attn_dropout: float = 0.1
    dropout: float = 0.1
    max_len: int = 64

    @classmethod
    def tiny(cls, vocab: int, classes: int, **kw: Any) -> ClassifierConfig:
        return cls(vocab, classes, **{"d_model": 16, "heads": 2, "attn_dropout": 0.0, "dropout": 0.0, **kw})


class SelfAttentionClassifier(nn.Module):
    """``forward(ids (B, N), mask (B, N))`` -> ``(logits (B, C), weights (B, H, N, N))``."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.d_model, padding_idx=PAD_ID)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.attn = MultiHeadSelfAttention(cfg.d_model, cfg.heads, cfg.attn_dropout)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.d_model, cfg.classes)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = ids.size(1)
        if n > self.cfg.max_len:
            raise InputError(f"input has {n} tokens but the classifier holds {self.cfg.max_len} positions; truncate it")
        x = self.embed(ids) + self.pos(torch.arange(n, device=ids.device))[None]  # (B, N, D)
        x = self.dropout(x)  # (B, N, D)
        a, w = self.attn(x, mask)  # (B, N, D), (B, H, N, N)
        x = self.norm(x + self.dropout(a))  # (B, N, D)
        m = mask.float().unsqueeze(-1)  # (B, N, 1)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, D)
        return self.out(self.dropout(pooled)), w  # (B, C), (B, H, N, N)


@dataclass
class ClassifierResult:
    model: SelfAttentionClassifier
    vocab: Vocab
    labels: list[str]
    metrics: dict[str, Any]


def encode_texts(texts: Sequence[str], vocab: Vocab, max_len: int) -> tuple[list[list[int]], int]:
    """Ids of each text (no <s>/</s>), and how many texts were cut to ``max_len`` tokens."""
    out, cut = [], 0
    for t in texts:
        toks, _, c = tokenize_text(t, max_len)
        cut += c > 0
        ids = vocab.encode(toks, add_eos=False) or [vocab.stoi.get("<unk>", 3)]
        out.append(ids)
    return out, cut


def train_classifier(train_texts: Sequence[str], train_labels: Sequence[str], test_texts: Sequence[str],
                     test_labels: Sequence[str], heads: int = 1, d_model: int = 64, attn_dropout: float = 0.1,
                     epochs: int = 3, batch_size: int = 64, lr: float = 2e-3, seed: int = 0, max_len: int = 64,
                     vocab_size: int = 20_000, max_seconds: float | None = None) -> ClassifierResult:
    """Train :class:`SelfAttentionClassifier`; returns held-out accuracy, macro-F1 and per-head statistics.

    ``max_seconds`` caps training by the process's CPU time (reproducible on a shared machine).
    """
    if len(train_texts) != len(train_labels) or len(test_texts) != len(test_labels):
        raise InputError("texts and labels must have the same length")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    labels = sorted(set(train_labels))
    lab = {l: i for i, l in enumerate(labels)}
    vocab = Vocab.build([tokenize_text(t)[0] for t in train_texts], min_freq=2, max_size=vocab_size)
    cfg = ClassifierConfig(len(vocab), len(labels), d_model=d_model, heads=heads, attn_dropout=attn_dropout,
                           max_len=max_len)
    model = SelfAttentionClassifier(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x_train, cut_train = encode_texts(train_texts, vocab, max_len)
    y_train = [lab[l] for l in train_labels]
    t0 = time.perf_counter()
    c0 = time.process_time()
    step = 0
    for _ in range(epochs):
        order = list(range(len(x_train)))
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            ids, mask = pad_batch([x_train[j] for j in idx])  # (B, N)
            logits, _ = model(ids, mask)  # (B, C)
            loss = nn.functional.cross_entropy(logits, torch.tensor([y_train[j] for j in idx]))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            if max_seconds and time.process_time() - c0 > max_seconds:
                break
        if max_seconds and time.process_time() - c0 > max_seconds:
            break
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    metrics = evaluate_classifier(model, vocab, labels, test_texts, test_labels)
    metrics.update({"train_seconds": seconds, "train_cpu_seconds": cpu_seconds, "steps": step, "train_texts": len(train_texts),
                    "truncated_train_texts": cut_train, "config": asdict(cfg)})
    return ClassifierResult(model, vocab, labels, metrics)


@torch.no_grad()
def evaluate_classifier(model: SelfAttentionClassifier, vocab: Vocab, labels: list[str], texts: Sequence[str],
                        gold: Sequence[str], batch_size: int = 256) -> dict[str, Any]:
    """Accuracy, macro-F1 and mean per-head attention entropy / max weight over held-out texts."""
    from ..statistics import row_statistics

    model.eval()
    lab = {l: i for i, l in enumerate(labels)}
    x, cut = encode_texts(texts, vocab, model.cfg.max_len)
    preds: list[int] = []
    ent = torch.zeros(model.cfg.heads)
    mx = torch.zeros(model.cfg.heads)
    for i in range(0, len(x), batch_size):
        ids, mask = pad_batch(x[i : i + batch_size])  # (B, N)
        logits, w = model(ids, mask)  # (B, C), (B, H, N, N)
        preds += logits.argmax(-1).tolist()
        allowed = mask[:, None, None, :]  # (B, 1, 1, N)
        st = row_statistics(w, allowed, torch.arange(ids.size(1)))  # name -> (B, H, N)
        real = mask[:, None, :].float()  # (B, 1, N): only rows of real tokens
        ent += ((st["entropy"] * real).sum(-1) / real.sum(-1)).sum(0)  # (H,)
        mx += ((st["max"] * real).sum(-1) / real.sum(-1)).sum(0)  # (H,)
    y = [lab.get(g, -1) for g in gold]
    acc = sum(p == t for p, t in zip(preds, y)) / max(1, len(y))
    f1s = []
    for c in range(len(labels)):
        tp = sum(p == c and t == c for p, t in zip(preds, y))
        fp = sum(p == c and t != c for p, t in zip(preds, y))
        fn = sum(p != c and t == c for p, t in zip(preds, y))
        f1s.append(2 * tp / max(1, 2 * tp + fp + fn))
    n = max(1, len(x))
    return {"accuracy": acc, "macro_f1": sum(f1s) / len(f1s), "n_test": len(x), "truncated_test_texts": cut,
            "head_entropy": (ent / n).tolist(), "head_max_weight": (mx / n).tolist()}


@torch.no_grad()
def classify_with_attention(model: SelfAttentionClassifier, vocab: Vocab, labels: list[str], text: str) -> tuple[str, Any]:
    """Predicted label and the ``self``-stream :class:`~attnscope.AttentionTrace` of one text."""
    from .export import classifier_trace

    model.eval()
    toks, offs, cut = tokenize_text(text, model.cfg.max_len)
    if not toks:
        raise InputError("the text has no tokens")
    ids = vocab.encode(toks, add_eos=False)
    logits, w = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.bool))  # (1, C), (1, H, N, N)
    probs = torch.softmax(logits[0], -1)
    label = labels[int(probs.argmax())]
    meta = {"label": label, "probs": dict(zip(labels, probs.tolist())), "truncated_tokens": cut}
    return label, classifier_trace(text, toks, offs, w[0], meta=meta, ids=ids)
