"""Syntactic heads (Clark et al. 2019, "What Does BERT Look At? An Analysis of BERT's Attention",
BlackboxNLP, §4.2): treat each attention head as a one-arc parser. For every dependency arc of a relation,
the head's prediction from the dependent is the word it attends to most (word-level attention,
:mod:`attnscope.analysis.word_attention`; the word itself excluded); it is right when that word is the
governor. The reverse direction asks the governor's row for the dependent. For a decoder (causal attention)
only the arcs whose target word comes before the source word can be predicted: the others are left out of
the accuracy and of the baseline (counted as ``unreachable``), so its baseline offsets are negative. A head's accuracy on a
relation is the share of that relation's arcs it gets right; the best head of each relation is set next to
the best *fixed-offset* baseline (always predict the word k positions away, the k that scores best).

The arcs come from any parser: :func:`read_conllu` reads CoNLL-U (Universal Dependencies format), or
build :class:`Sentence` objects directly; word-level maps come from
:func:`attnscope.analysis.word_attention.word_attention`. A parser's output is a reference, not gold trees: the accuracy
of a head is measured against the parser, errors included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import InputError
from .results import _jsonable

DIRECTIONS = ("dep2gov", "gov2dep")
MAX_OFFSET = 10


@dataclass
class Sentence:
    """One parsed sentence: ``words[i]`` spans ``spans[i]`` of ``text``; ``heads[i]`` is the 0-based index
    of word i's governor (−1 for the root); ``deprels[i]`` its relation label."""

    text: str
    words: list[str]
    spans: list[tuple[int, int]]
    heads: list[int]
    deprels: list[str]

    def __post_init__(self) -> None:
        n = len(self.words)
        if not (len(self.spans) == len(self.heads) == len(self.deprels) == n):
            raise InputError("Sentence: words, spans, heads and deprels must have one entry per word")
        for i, h in enumerate(self.heads):
            if not -1 <= h < n or h == i:
                raise InputError(f"Sentence: word {i} has governor {h}; give a word index in 0..{n - 1} or -1 "
                                 "for the root")
        for (s, e), w in zip(self.spans, self.words):
            if self.text[s:e] != w:
                raise InputError(f"Sentence: the span {s}..{e} of the text is {self.text[s:e]!r}, not the word {w!r}")


def _spans(text: str, words: Sequence[str]) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for w in words:
        s = text.find(w, pos)
        if s < 0:
            raise InputError(f"CoNLL-U: the word {w!r} is not in the sentence text after position {pos}; "
                             "fix the '# text =' line or the FORM column")
        spans.append((s, s + len(w)))
        pos = s + len(w)
    return spans


def read_conllu(source: str | Iterable[str]) -> list[Sentence]:
    """Sentences of a CoNLL-U text (a string, or lines). Multi-word token lines (``1-2``) and empty
    nodes (``1.1``) are skipped; the text is the ``# text =`` comment when present, else the words joined
    by spaces (none after a word whose MISC has ``SpaceAfter=No``)."""
    lines = source.splitlines() if isinstance(source, str) else [l.rstrip("\n") for l in source]
    out: list[Sentence] = []
    rows: list[list[str]] = []
    text: str | None = None

    def flush(line_no: int) -> None:
        nonlocal rows, text
        if rows:
            words = [r[1] for r in rows]
            if text is None:
                text = "".join(w + ("" if "SpaceAfter=No" in r[9] else " ") for w, r in zip(words, rows)).rstrip()
            try:
                heads = [int(r[6]) - 1 for r in rows]
            except ValueError:
                raise InputError(f"CoNLL-U: a HEAD column before line {line_no} is not an integer") from None
            out.append(Sentence(text, words, _spans(text, words), heads, [r[7].split(":")[0] for r in rows]))
        rows, text = [], None

    for n, line in enumerate(lines, 1):
        line = line.strip("\r")
        if not line.strip():
            flush(n)
        elif line.startswith("#"):
            if line[1:].strip().startswith("text ="):
                text = line.split("=", 1)[1].strip()
        else:
            cols = line.split("\t")
            if len(cols) != 10:
                raise InputError(f"CoNLL-U line {n}: expected 10 tab-separated columns, found {len(cols)}")
            if "-" in cols[0] or "." in cols[0]:
                continue
            rows.append(cols)
    flush(len(lines) + 1)
    return out


def to_conllu(sentences: Sequence[Sentence]) -> str:
    """CoNLL-U text of ``sentences`` (ID, FORM, HEAD, DEPREL and SpaceAfter=No filled; the rest ``_``);
    :func:`read_conllu` reads it back to equal sentences."""
    blocks = []
    for s in sentences:
        lines = [f"# text = {s.text}"]
        for i, (w, (a, b), h, rel) in enumerate(zip(s.words, s.spans, s.heads, s.deprels)):
            nxt = s.spans[i + 1][0] if i + 1 < len(s.spans) else None
            misc = "SpaceAfter=No" if nxt == b else "_"
            lines.append("\t".join([str(i + 1), w, "_", "_", "_", "_", str(h + 1), rel or "dep", "_", misc]))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


@dataclass
class SyntacticHeads:
    """Per relation and direction: the accuracy of every head (layer, head), the best head and the best
    fixed-offset baseline. ``rows`` lists one dict per (relation, direction), most frequent first."""

    accuracy: dict[str, np.ndarray]  # "<relation>:<direction>" -> (layer, head)
    rows: list[dict[str, Any]]
    layers: list[int]
    heads: list[int]
    name: str = "syntactic_heads"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "SyntacticHeads", "name": self.name, "layers": self.layers, "heads": self.heads,
                "rows": _jsonable(self.rows), "accuracy": _jsonable(self.accuracy), "meta": _jsonable(self.meta)}


class SyntacticCounter:
    """Accumulates correct predictions of every head over sentences (stream them: only counts are kept)."""

    def __init__(self, max_offset: int = MAX_OFFSET, causal: bool = False):
        self.max_offset = max_offset
        self.causal = causal
        self.unreachable: dict[str, int] = {}  # causal: arcs whose target comes after the source
        self.correct: dict[str, np.ndarray] = {}  # key -> (L, H)
        self.offset_hits: dict[str, np.ndarray] = {}  # key -> (2 * max_offset + 1,)
        self.count: dict[str, int] = {}
        self.sentences = 0
        self.skipped_arcs = 0
        self.shape: tuple[int, int] | None = None

    def add(self, sentence: Sentence, maps: np.ndarray, aligned: np.ndarray) -> None:
        """``maps`` (L, H, W, W) word-level attention of this sentence, ``aligned`` (W,) bool."""
        L, H, W, _ = maps.shape
        if W != len(sentence.words):
            raise InputError(f"word maps have {W} words but the sentence has {len(sentence.words)}")
        self.shape = self.shape or (L, H)
        m = maps.copy()
        idx = np.arange(W)
        m[..., idx, idx] = -np.inf  # a head's prediction is another word
        m[..., ~aligned] = -np.inf
        pred = m.argmax(-1)  # (L, H, W): the most-attended other word from each word
        self.sentences += 1
        for d, (g, rel) in enumerate(zip(sentence.heads, sentence.deprels)):
            if g < 0:
                continue
            if not (aligned[d] and aligned[g]):
                self.skipped_arcs += 1
                continue
            for direction, src, dst in (("dep2gov", d, g), ("gov2dep", g, d)):
                key = f"{rel}:{direction}"
                if self.causal and dst > src:  # a decoder's row cannot see a later word
                    self.unreachable[key] = self.unreachable.get(key, 0) + 1
                    continue
                if key not in self.correct:
                    self.correct[key] = np.zeros((L, H))
                    self.offset_hits[key] = np.zeros(2 * self.max_offset + 1)
                    self.count[key] = 0
                self.correct[key] += pred[..., src] == dst
                self.count[key] += 1
                off = dst - src
                if abs(off) <= self.max_offset:
                    self.offset_hits[key][off + self.max_offset] += 1

    def result(self, layers: Sequence[int], heads: Sequence[int], min_count: int = 20,
               meta: dict[str, Any] | None = None) -> SyntacticHeads:
        """The accuracies of relations with at least ``min_count`` arcs, and each one's best head and baseline."""
        acc, rows = {}, []
        for key in sorted(self.count, key=lambda k: (-self.count[k], k)):
            n = self.count[key]
            if n < min_count:
                continue
            a = self.correct[key] / n  # (L, H)
            acc[key] = a
            li, hi = np.unravel_index(int(a.argmax()), a.shape)
            hits = self.offset_hits[key].copy()
            hits[self.max_offset] = -1  # offset 0 (the word itself) is never a prediction
            k = int(hits.argmax())
            rel, direction = key.rsplit(":", 1)
            rows.append({"relation": rel, "direction": direction, "count": n, "layer": int(layers[li]),
                         "head": int(heads[hi]), "accuracy": float(a[li, hi]),
                         "baseline": float(hits[k] / n), "baseline_offset": k - self.max_offset,
                         "unreachable": self.unreachable.get(key, 0)})
        info = {"sentences": self.sentences, "skipped_arcs": self.skipped_arcs, "min_count": min_count,
                "max_offset": self.max_offset, "causal": self.causal, **(meta or {})}
        return SyntacticHeads(acc, rows, list(layers), list(heads), meta=info)


def syntactic_heads(sentences: Sequence[Sentence], word_maps: Sequence[tuple[np.ndarray, np.ndarray]],
                    layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                    min_count: int = 20, max_offset: int = MAX_OFFSET, causal: bool = False) -> SyntacticHeads:
    """Syntactic heads from word-level maps: ``word_maps[i]`` = ((L, H, W, W) maps, (W,) aligned) of
    ``sentences[i]`` (see :func:`attnscope.analysis.word_attention.word_attention`). ``causal``: the maps are a
    decoder's, so only arcs whose target precedes the source are scored (the others are counted as
    ``unreachable``) and the baseline's offsets are negative."""
    if len(sentences) != len(word_maps):
        raise InputError(f"{len(sentences)} sentences but {len(word_maps)} word maps")
    counter = SyntacticCounter(max_offset, causal)
    for s, (m, ok) in zip(sentences, word_maps):
        counter.add(s, m, ok)
    if counter.shape is None:
        raise InputError("no sentences: give at least one parsed sentence")
    L, H = counter.shape
    return counter.result(layers if layers is not None else range(L), heads if heads is not None else range(H),
                          min_count)

