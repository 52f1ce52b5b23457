"""Per-text per-head statistics of many texts, in length-bucketed padded batches (the corpus kernel).

A thin layer over the capture fast path (``attnscope.capture.api``: the same tokenisation, the same
registered attention function and :class:`~attnscope.capture.recorders.StatsRecorder`): it skips
building one ``AttentionTrace`` per text and reduces each text's row statistics to their mean over
its query rows directly on the padded batch. The result for a text equals
``capture(model, text, mode="stats").head_stats()`` (tested).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from ..capture.api import _encode, _run_fast, resolve_selection
from ..capture.interface import DEFAULT_BLOCK_ELEMENTS
from ..capture.recorders import StatsRecorder
from ..errors import InputError
from ..models import LoadedModel, load_model
from ..statistics import STREAMING_STATS, check_stat_names


def head_stat_names(statistics=None) -> tuple[str, ...]:
    """Head statistics: the chosen row statistics (default: stats mode's, all but Gini; ``"all"`` adds
    Gini) except argmax (a position, whose mean means nothing), as head_stats()."""
    names = tuple(s for s in check_stat_names(statistics, STREAMING_STATS) if s != "argmax")
    if not names:
        raise InputError("choose at least one statistic other than argmax")
    return names


HEAD_STATS: tuple[str, ...] = head_stat_names()  # the default columns

__all__ = ["HEAD_STATS", "Encoded", "HeadStatsComputer", "head_stat_names", "plan_batches"]


@dataclass
class Encoded:
    """One tokenised text: model inputs (1, N) and its token counts."""

    row: int
    inputs: dict
    n_tokens: int
    original_tokens: int


def plan_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped into length-sorted batches of at most ``batch_size`` texts and, where more than one
    text, at most ``max_batch_tokens`` padded tokens (``len(batch) * longest``)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max([lengths[j] for j in current] + [lengths[i]])
        if current and (len(current) >= batch_size or (len(current) + 1) * longest > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class HeadStatsComputer:
    """Computes per-head statistics (mean over query rows of each row statistic) for batches of texts.

    ``model``: a catalogue name, path or :class:`LoadedModel` (encoder or decoder-only); ``layers`` /
    ``heads``: model indices (None = all); ``max_tokens``: reject texts longer than this (default: the
    model's limit); ``truncate``: cut texts to the model's limit instead of rejecting them;
    ``statistics``: which head statistics (see :func:`head_stat_names`), in ``self.statistics``.
    """

    def __init__(self, model: LoadedModel | str, *, layers: Iterable[int] | None = None,
                 heads: Iterable[int] | None = None, max_tokens: int | None = None, truncate: bool = False,
                 block_elements: int = DEFAULT_BLOCK_ELEMENTS, statistics=None):
        self.statistics = head_stat_names(statistics)
        self.lm = load_model(model) if isinstance(model, str) else model
        if self.lm.kind not in ("encoder", "causal"):
            raise InputError(f"corpus statistics take encoder or decoder-only models; {self.lm.name} is {self.lm.kind}")
        self.layer_sel, self.head_sel = resolve_selection(self.lm, layers, heads, ["self"])
        self.layers = self.layer_sel["self"]
        self.heads = self.head_sel["self"]
        self.max_tokens = min(max_tokens, self.lm.max_length) if max_tokens else self.lm.max_length
        self.truncate = truncate
        self.block_elements = block_elements
        tok = self.lm.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0

    # ------------------------------------------------------------------ tokenising
    def encode(self, row: int, text: str) -> Encoded:
        """Tokenise one text; raises InputError with the reason for an over-long text."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                inputs, _, meta = _encode(self.lm, text, None, self.truncate)
            except InputError as e:
                raise InputError(f"over-long: {e}") from None
        n = int(inputs["input_ids"].shape[1])
        original = int(meta.get("truncated", {}).get("original_tokens", n))
        if n > self.max_tokens:
            raise InputError(f"over-long: {n} tokens > the limit of {self.max_tokens} (--max-tokens)")
        return Encoded(row, inputs, n, original)

    # ------------------------------------------------------------------ computing
    def compute(self, items: Sequence[Encoded]) -> np.ndarray:
        """float32 array (len(items), layers, heads, len(self.statistics)) for one padded batch."""
        lengths = [e.n_tokens for e in items]
        n = max(lengths)
        batch: dict[str, torch.Tensor] = {}
        for key in items[0].inputs:
            fill = self.pad_id if key == "input_ids" else 0
            batch[key] = torch.stack([torch.nn.functional.pad(e.inputs[key][0], (0, n - e.n_tokens), value=fill)
                                      for e in items])  # (B, n): right padding
        valid = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]  # (B, n)
        batch["attention_mask"] = valid.long()
        session, _ = _run_fast(self.lm, batch, self.layer_sel, self.head_sel, {"stats"}, 1, torch.float16,
                               self.block_elements, (), self.statistics)
        rec = next(r for r in session.recorders if isinstance(r, StatsRecorder))
        parts = [rec.assemble(("self", layer)) for layer in self.layers]  # per layer: name -> (B, h, n)
        denom = torch.tensor(lengths, dtype=torch.float32)[:, None]  # (B, 1)
        out = np.empty((len(items), len(self.layers), len(self.heads), len(self.statistics)), dtype=np.float32)
        mask = valid[:, None, :]  # (B, 1, n)
        for li, p in enumerate(parts):
            for si, name in enumerate(self.statistics):
                x = p[name].float()  # (B, h, n)
                out[:, li, :, si] = (torch.where(mask, x, 0.0).sum(-1) / denom).numpy()  # (B, h)
        return out

    def compute_all(self, items: Sequence[Encoded], batch_size: int = 32, max_batch_tokens: int = 16384,
                    on_batch=None) -> np.ndarray:
        """Statistics of any number of encoded texts, batched by length; rows in the order of ``items``."""
        out = np.empty((len(items), len(self.layers), len(self.heads), len(self.statistics)), dtype=np.float32)
        for idx in plan_batches([e.n_tokens for e in items], batch_size, max_batch_tokens):
            out[idx] = self.compute([items[i] for i in idx])
            if on_batch is not None:
                on_batch(len(idx), sum(items[i].n_tokens for i in idx))
        return out
