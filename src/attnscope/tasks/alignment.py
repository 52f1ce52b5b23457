"""Source × target alignment from the cross-attention of encoder-decoder models.

Works on any :class:`~attnscope.trace.AttentionTrace` with a ``cross`` stream — Marian/T5/BART by hub
id, the packaged Whisper tiny.en, the project's own GRU/Transformer seq2seq traces — because it reads
only the trace. (Encoder self-attention, sometimes plotted as a "translation alignment", is
source × source and says nothing about alignment; this module never uses it.)

- :func:`cross_alignment`: the (target, source) matrix averaged over chosen layers/heads, rows labelled
  with the token each decoder step *predicts* (teacher forcing shifts the decoder input right by one).
- :func:`score_heads`: per (layer, head) how alignment-like the head is — against a reference alignment
  (alignment error rate, Och & Ney 2003; mass and arg-max on reference links) or, without one, by
  diagonality, monotonicity and row entropy (cf. Voita et al. 2019 on positional/specialised heads;
  Garg et al. 2019, "Jointly Learning to Align and Translate", pick alignment heads the same way).
- :func:`align`: capture (generating the target first when none is given) and align in one call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from ..analysis._common import audio_frames, cross_row_labels
from ..analysis.results import HeadScores
from ..errors import InputError, UnknownNameError

_SPECIAL = re.compile(r"^(<[^<>]*>|\[[A-Z]+\]|<\|[^|]*\|>)$")
FUSIONS = ("mean", "max")


@dataclass
class Alignment:
    """A (target, source) alignment matrix; rows are target tokens (what each decoder step predicts)."""

    matrix: np.ndarray  # (target, source), rows renormalised over the kept source tokens
    target_labels: list[str]
    source_labels: list[str]
    target_idx: list[int]  # rows of the trace's cross stream kept
    source_idx: list[int]  # columns kept
    layers: list[int]
    heads: list[int] | list[tuple[int, int]]
    frame_seconds: float | None = None  # for audio sources: seconds per source position
    path: tuple[np.ndarray, np.ndarray] | None = None  # (target rows, source cols) of a DTW path, if any
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        if self.heads and isinstance(self.heads[0], tuple):
            return f"{len(self.heads)} heads " + " ".join(f"L{l}H{h}" for l, h in self.heads)
        return f"layers {self.layers}, heads {self.heads if len(self.heads) < 8 else 'all'}"

    def hard(self) -> list[tuple[int, int]]:
        """Hard alignment: for each target row, its arg-max source column (row, column) in matrix indices."""
        return [(t, int(self.matrix[t].argmax())) for t in range(self.matrix.shape[0])]

    def to_dict(self) -> dict[str, Any]:
        return {"matrix": self.matrix.tolist(), "target": self.target_labels, "source": self.source_labels,
                "layers": self.layers, "heads": [list(h) if isinstance(h, tuple) else h for h in self.heads],
                "hard": self.hard()}


def _is_special(text: str) -> bool:
    return bool(_SPECIAL.match(text.strip()))


def predicted_labels(trace) -> list[str]:
    """What each decoder row predicts (one convention for every figure:
    :func:`attnscope.analysis._common.cross_row_labels`)."""
    return cross_row_labels(trace)


def kept_positions(trace, drop_special: bool = True) -> tuple[list[int], list[int]]:
    """(target rows, source columns) to keep: special tokens out, and for audio only the frames that hold audio."""
    src = trace.tokens["source"]
    tgt_labels = predicted_labels(trace)
    n_src = audio_frames(trace) or len(src)
    cols = [j for j in range(n_src) if not (drop_special and (src.special[j] or _is_special(src.text[j])))]
    rows = [i for i, t in enumerate(tgt_labels) if not (drop_special and _is_special(t))]
    if not rows or not cols:
        raise InputError("no target or source tokens left after dropping special tokens; pass drop_special=False")
    return rows, cols


def _cross(trace) -> np.ndarray:
    if "cross" not in trace.streams:
        raise InputError(f"this trace has no 'cross' stream (it has {', '.join(trace.streams)}); alignment needs "
                         "an encoder-decoder capture (capture(model, source, target=…) or generate())")
    return trace.weights("cross").double().numpy()  # (L, H, T, S)


def _select(trace, w: np.ndarray, layers, heads) -> tuple[np.ndarray, list[int], list]:
    held_l, held_h = trace.layers["cross"], trace.heads["cross"]
    if heads is not None and len(list(heads)) and isinstance(list(heads)[0], (tuple, list)):
        pairs = [tuple(map(int, p)) for p in heads]
        for l, h in pairs:
            if l not in held_l or h not in held_h:
                raise InputError(f"head L{l}H{h} is not in this trace (layers {held_l}, heads {held_h})")
        sel = np.stack([w[held_l.index(l), held_h.index(h)] for l, h in pairs])  # (K, T, S)
        return sel, sorted({l for l, _ in pairs}), pairs
    li = list(range(len(held_l))) if layers is None else [held_l.index(_resolve(l, held_l, "layer")) for l in layers]
    hi = list(range(len(held_h))) if heads is None else [held_h.index(_resolve(h, held_h, "head")) for h in heads]
    sel = w[li][:, hi].reshape(-1, *w.shape[-2:])  # (L*H, T, S)
    return sel, [held_l[i] for i in li], [held_h[i] for i in hi]


def _resolve(x: int, held: list[int], what: str) -> int:
    n = max(held) + 1
    v = x % n if isinstance(x, int) and -n <= x < 0 else x
    if v not in held:
        raise InputError(f"{what} {x} is not in this trace; it holds {what}s {held}")
    return v


def cross_alignment(trace, layers: Iterable[int] | None = None, heads: Iterable | None = None,
                    fusion: str = "mean", drop_special: bool = True) -> Alignment:
    """Source × target alignment from the ``cross`` stream, fused over the chosen layers/heads.

    ``heads`` is either head indices (combined with ``layers``) or explicit ``(layer, head)`` pairs such as
    Whisper's ``generation_config.alignment_heads``. Rows are renormalised over the kept source tokens.
    """
    if fusion not in FUSIONS:
        raise UnknownNameError("fusion", fusion, FUSIONS)
    w = _cross(trace)
    sel, lyrs, hds = _select(trace, w, None if layers is None else list(layers), None if heads is None else list(heads))
    fused = sel.mean(0) if fusion == "mean" else sel.max(0)  # (T, S)
    rows, cols = kept_positions(trace, drop_special)
    m = fused[np.ix_(rows, cols)]
    s = m.sum(-1, keepdims=True)
    m = m / np.where(s > 0, s, 1.0)
    labels = predicted_labels(trace)
    src = trace.tokens["source"].labels()
    return Alignment(m, [labels[i] for i in rows], [src[j] for j in cols], rows, cols, lyrs, hds,
                     frame_seconds=trace.meta.get("frame_seconds"), meta={"fusion": fusion})


def reference_matrix(links: Iterable[tuple[int, int]], n_target: int, n_source: int) -> np.ndarray:
    """Boolean (target, source) matrix from (target index, source index) links (indices into the kept rows/cols)."""
    r = np.zeros((n_target, n_source), dtype=bool)
    for t, s in links:
        if not (0 <= t < n_target and 0 <= s < n_source):
            raise InputError(f"reference link ({t}, {s}) is outside the {n_target} x {n_source} alignment")
        r[t, s] = True
    return r


def alignment_error_rate(hard: np.ndarray, reference: np.ndarray) -> float:
    """AER (Och & Ney 2003) with sure = possible links: 1 − 2|A∩S| / (|A| + |S|). Both boolean (T, S)."""
    a, s = hard.astype(bool), reference.astype(bool)
    denom = a.sum() + s.sum()
    return float(1.0 - 2.0 * (a & s).sum() / denom) if denom else 0.0


def _head_metrics(m: np.ndarray, reference: np.ndarray | None) -> dict[str, float]:
    """Metrics of one head's (T, S) alignment (rows sum to 1)."""
    t, s = m.shape
    tpos = np.arange(t) / max(1, t - 1)
    spos = np.arange(s) / max(1, s - 1)
    dev = (m * np.abs(spos[None, :] - tpos[:, None])).sum(-1)  # (T,): expected |relative offset|
    ent = -(m * np.log(np.where(m > 0, m, 1.0))).sum(-1) / max(np.log(s), 1e-12)  # (T,) in [0, 1]
    am = m.argmax(-1)
    out = {"diagonality": float(1.0 - dev.mean()),
           "monotonicity": float((np.diff(am) >= 0).mean()) if t > 1 else 1.0,
           "entropy": float(ent.mean())}
    if reference is not None:
        has = reference.any(-1)
        hard = np.zeros_like(reference)
        hard[np.arange(t), am] = True
        hard &= has[:, None]  # only rows the reference covers are judged
        out["reference_mass"] = float((m * reference).sum(-1)[has].mean()) if has.any() else float("nan")
        out["reference_argmax"] = float(reference[np.arange(t), am][has].mean()) if has.any() else float("nan")
        out["aer"] = alignment_error_rate(hard, reference)
    return out


HIGHER_IS_BETTER = {"diagonality": True, "monotonicity": True, "entropy": False, "reference_mass": True,
                    "reference_argmax": True, "aer": False}


def score_heads(trace, reference: np.ndarray | Sequence[tuple[int, int]] | None = None,
                drop_special: bool = True) -> HeadScores:
    """How well each cross-attention head aligns, as HeadScores over (layer, head).

    Without ``reference``: ``diagonality`` (1 − mean expected |relative source position − relative target
    position|; 1 = on the diagonal), ``monotonicity`` (share of steps whose arg-max source does not move
    back) and ``entropy`` (mean row entropy / log(source length); low = peaked). With a reference
    alignment (boolean (target, source) over the kept rows/cols, or a list of links) also
    ``reference_mass``, ``reference_argmax`` and ``aer`` (alignment error rate of the arg-max alignment).
    """
    w = _cross(trace)
    rows, cols = kept_positions(trace, drop_special)
    ref = None
    if reference is not None:
        ref = np.asarray(reference)
        if ref.dtype != bool:
            ref = reference_matrix(reference, len(rows), len(cols))
        if ref.shape != (len(rows), len(cols)):
            raise InputError(f"reference alignment has shape {ref.shape}; the alignment is {len(rows)} x {len(cols)} "
                             "(target, source) after dropping special tokens")
    layers, heads = trace.layers["cross"], trace.heads["cross"]
    scores: dict[str, np.ndarray] = {}
    for li in range(len(layers)):
        for hi in range(len(heads)):
            m = w[li, hi][np.ix_(rows, cols)]
            s = m.sum(-1, keepdims=True)
            met = _head_metrics(m / np.where(s > 0, s, 1.0), ref)
            for k, v in met.items():
                scores.setdefault(k, np.zeros((len(layers), len(heads))))[li, hi] = v
    return HeadScores(scores, list(layers), list(heads), "alignment_heads", "cross",
                      meta={"higher_is_better": {k: HIGHER_IS_BETTER[k] for k in scores}})


def best_heads(scores: HeadScores, metric: str | None = None, k: int = 5) -> list[tuple[int, int]]:
    """The ``k`` best (layer, head) pairs by ``metric`` (default: ``aer`` with a reference, else ``diagonality``)."""
    metric = metric or ("aer" if "aer" in scores.scores else "diagonality")
    m = scores[metric]
    order = np.argsort(m, axis=None, kind="stable")
    if HIGHER_IS_BETTER.get(metric, True):
        order = order[::-1]
    out = []
    for flat in order[:k]:
        li, hi = np.unravel_index(flat, m.shape)
        out.append((scores.layers[li], scores.heads[hi]))
    return out


def align(lm, source: str, target: str | None = None, *, max_new_tokens: int = 64, layers=None, heads=None,
          method: str = "fast"):
    """(trace, Alignment) for a text encoder-decoder (Marian, T5, BART…): teacher-forces ``target``, or the
    model's own greedy output when no target is given."""
    from ..capture import capture, check_text
    from ..models import load_model

    if isinstance(lm, str):
        lm = load_model(lm)
    if lm.kind != "seq2seq":
        raise InputError(f"{lm.name} is a {lm.kind} model; text alignment needs an encoder-decoder "
                         "(for Whisper use attnscope.tasks.whisper_timestamps)")
    source = check_text(source, "source")
    if target is None:
        import torch

        enc = {k: v for k, v in lm.tokenizer(source, return_tensors="pt").items()
               if k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            out = lm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        target = lm.tokenizer.decode(out[0], skip_special_tokens=True).strip()
        if not target:
            raise InputError(f"{lm.name} generated an empty translation for {source!r}; pass target=…")
    trace = capture(lm, source, target=target, mode="full", streams=["cross"], method=method)
    return trace, cross_alignment(trace, layers=layers, heads=heads)
