"""Extractive question answering: where does the attention of an ``AutoModelForQuestionAnswering`` go?

Works with any extractive QA model (hub id or local directory, loaded with
``AutoModelForQuestionAnswering``). :func:`answer_question` predicts the answer span the usual way
(best start + end logit over context tokens, ``start <= end < start + max_answer_tokens``; Devlin et al.
2019 §4.2) and captures the attention of the same input; :class:`QAResult` then gives
question→context attention, the attention mass that reaches the predicted answer span per layer, and
the heads that point at the answer (mass from question tokens on the span and the share of question
tokens whose arg-max key lies in it — the "heads that attend to the answer" view of Clark et al. 2019,
"What does BERT look at?", §6 / van Aken et al. 2019, "How does BERT answer questions?").

The question/context split comes from the tokenizer's ``sequence_ids`` (not from guessing the position of
[SEP], which differs by model: RoBERTa uses ``</s></s>``, XLNet puts the question second).

No SQuAD model is packaged for offline use; the tests use a tiny random-init BertForQuestionAnswering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..analysis.results import HeadScores
from ..devices import model_inputs
from ..errors import InputError
from ..models import LoadedModel


@dataclass
class QAResult:
    question: str
    context: str
    answer: str
    span: tuple[int, int]  # token positions (inclusive) of the predicted answer
    char_span: tuple[int, int]  # character span of the answer in the context
    score: float  # p(start) * p(end) of the chosen span
    tokens: list[str]
    question_idx: list[int]
    context_idx: list[int]
    start_logits: np.ndarray
    end_logits: np.ndarray
    trace: Any  # AttentionTrace of the (question, context) input
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # loud lines the reader must see (a random QA head)

    @property
    def layers(self) -> list[int]:
        return self.trace.layers["self"]

    @property
    def heads(self) -> list[int]:
        return self.trace.heads["self"]

    @property
    def answer_idx(self) -> list[int]:
        return list(range(self.span[0], self.span[1] + 1))

    qc_layers_label: str = "last"

    def _w(self) -> np.ndarray:
        return self.trace.weights("self").double().cpu().numpy()  # (L, H, N, N)

    def question_to_context(self, layers: Sequence[int] | None = None) -> np.ndarray:
        """(question token, context token) attention, mean over heads and ``layers`` (default: last layer)."""
        w = self._w()
        held = self.layers
        want = [held[-1]] if layers is None else [l % (max(held) + 1) for l in layers]
        missing = [l for l in want if l not in held]
        if missing:
            raise InputError(f"layers {missing} are not in this capture; it holds {held}")
        li = [held.index(l) for l in want]
        self.qc_layers_label = ",".join(map(str, want)) if layers is not None else f"{want[0]} (last)"
        m = w[li].mean(axis=(0, 1))  # (N, N)
        return m[np.ix_(self.question_idx, self.context_idx)]

    def answer_attention_by_layer(self) -> dict[str, np.ndarray]:
        """Per layer (head mean): the mean attention mass that query tokens of each part put on the answer span."""
        w = self._w().mean(1)  # (L, N, N)
        on_span = w[:, :, self.answer_idx].sum(-1)  # (L, N): each query row's mass on the span
        ctx_not_answer = [i for i in self.context_idx if i not in set(self.answer_idx)]
        out = {"from question": on_span[:, self.question_idx].mean(-1),
               "from answer itself": on_span[:, self.answer_idx].mean(-1)}
        if ctx_not_answer:
            out["from rest of context"] = on_span[:, ctx_not_answer].mean(-1)
        return out

    def chance(self) -> float:
        """Mass on the span if attention were uniform over all keys."""
        return len(self.answer_idx) / len(self.tokens)

    def answer_heads(self) -> HeadScores:
        """Per (layer, head): ``question_to_answer`` (mean mass of question tokens on the span),
        ``lift`` (that over the uniform share) and ``argmax_in_answer`` (share of question tokens whose
        most-attended key is in the span)."""
        w = self._w()  # (L, H, N, N)
        q = w[:, :, self.question_idx]  # (L, H, Nq, N)
        mass = q[..., self.answer_idx].sum(-1).mean(-1)  # (L, H)
        am = q.argmax(-1)  # (L, H, Nq)
        in_span = ((am >= self.span[0]) & (am <= self.span[1])).mean(-1)  # (L, H)
        return HeadScores({"question_to_answer": mass, "lift": mass / self.chance(), "argmax_in_answer": in_span},
                          self.layers, self.heads, "qa_answer_heads", "self",
                          meta={"answer": self.answer, "span": list(self.span)})

    def top_answer_heads(self, k: int = 5, metric: str = "question_to_answer") -> list[dict[str, Any]]:
        rows = self.answer_heads().rows()
        rows.sort(key=lambda r: -r[metric])
        return rows[:k]

    def summary(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.answer, "score": self.score, "warnings": self.warnings,
                "span_tokens": list(self.span),
                "char_span": list(self.char_span), "answer_attention_by_layer":
                    {k: [round(float(x), 4) for x in v] for k, v in self.answer_attention_by_layer().items()},
                "uniform_share": self.chance(), "top_answer_heads": self.top_answer_heads()}


def load_qa_model(name: str) -> LoadedModel:
    """Load any extractive QA model (hub id or local directory) with AutoModelForQuestionAnswering.
    A checkpoint without a QA head (e.g. ``minilm``) loads with a random one: ``lm.has_random_head``."""
    import warnings

    import transformers as tf

    from ..models import load_model

    with warnings.catch_warnings():  # answer_question says it in its own words (refusal or result warning)
        warnings.simplefilter("ignore")
        return load_model(name, model_class=tf.AutoModelForQuestionAnswering)


def best_span(start: np.ndarray, end: np.ndarray, allowed: Sequence[int], max_answer_tokens: int = 30
              ) -> tuple[int, int, float]:
    """(start, end, p_start·p_end) maximising start[s] + end[e] over allowed s <= e < s + max_answer_tokens.

    Probabilities are the softmax over the allowed (context) positions.
    """
    allowed = sorted(allowed)
    if not allowed:
        raise InputError("the input has no context tokens to take an answer from")
    a = np.array(allowed)
    ps = np.exp(start[a] - start[a].max())
    ps /= ps.sum()
    pe = np.exp(end[a] - end[a].max())
    pe /= pe.sum()
    pos = {p: i for i, p in enumerate(allowed)}
    best = (allowed[0], allowed[0], -np.inf)
    for i, s in enumerate(allowed):
        for e in allowed[i:]:
            if e - s >= max_answer_tokens:
                break
            if any(p not in pos for p in (s, e)):
                continue
            sc = start[s] + end[e]
            if sc > best[2]:
                best = (s, e, sc)
    s, e, _ = best
    return s, e, float(ps[pos[s]] * pe[pos[e]])


def answer_question(lm: LoadedModel | str, question: str, context: str, *, max_answer_tokens: int = 30,
                    method: str = "fast", layers=None, heads=None, allow_random_head: bool = False) -> QAResult:
    """Predict the answer span of ``question`` in ``context`` and capture the attention of that input.

    A model whose QA head was initialised at random on load (a checkpoint without one, e.g. ``minilm``)
    is refused with an InputError unless ``allow_random_head=True``; the result then carries the warning.
    """
    from ..capture import capture, check_text
    from ..models import require_trained_head

    if isinstance(lm, str):
        lm = load_qa_model(lm)
    question = check_text(question, "question")
    context = check_text(context, "context")
    if not hasattr(lm.model, "qa_outputs") and "QuestionAnswering" not in type(lm.model).__name__:
        raise InputError(f"{type(lm.model).__name__} is not an extractive QA model; load one with "
                         "AutoModelForQuestionAnswering (attnscope tasks qa --model <id or path>)")
    warnings = require_trained_head(lm, "question answering", allow_random_head)
    tok = lm.tokenizer
    question_first = getattr(tok, "padding_side", "right") == "right"
    first, second = (question, context) if question_first else (context, question)
    trace = capture(lm, first, text_pair=second, mode="full", method=method, layers=layers, heads=heads)
    seq_ids = trace.meta.get("sequence_ids")
    if seq_ids is None:
        raise InputError(f"{type(tok).__name__} does not report which sequence each token belongs to; "
                         "QA analysis needs a fast tokenizer")
    q_id, c_id = (0, 1) if question_first else (1, 0)
    toks = trace.tokens["input"]
    q_idx = [i for i, s in enumerate(seq_ids) if s == q_id and not toks.special[i]]
    c_idx = [i for i, s in enumerate(seq_ids) if s == c_id and not toks.special[i]]
    enc = tok(first, second, return_tensors="pt")
    if enc["input_ids"][0].tolist() != toks.ids:
        raise RuntimeError("tokenisation of the QA input differs between capture and prediction")  # pragma: no cover
    with torch.no_grad():
        out = lm.model(**model_inputs(dict(enc), lm.model))  # inputs follow the model's device
    start = out.start_logits[0].double().cpu().numpy()
    end = out.end_logits[0].double().cpu().numpy()
    s, e, score = best_span(start, end, c_idx, max_answer_tokens)
    cs, ce = toks.offsets[s][0], toks.offsets[e][1]
    return QAResult(question=question, context=context, answer=context[cs:ce], span=(s, e), char_span=(cs, ce),
                    score=score, tokens=toks.labels(), question_idx=q_idx, context_idx=c_idx, start_logits=start,
                    end_logits=end, trace=trace, meta={"model": lm.name, "question_first": question_first},
                    warnings=warnings)
