"""Faithfulness of a token-importance method: deletion and insertion curves with their AOPC, and ERASER
comprehensiveness and sufficiency. One implementation of each metric, used by :func:`faithfulness` (one
text, the ``explain`` command) and by :mod:`.faithfulness_benchmark` (many texts, every method).

Removal. A removed token is *replaced* by a baseline token, so the length and positions stay the same:
``replacement="auto"`` is the token the Captum methods use as their baseline (the padding token, else
[UNK], else EOS: [PAD] for BERT-family encoders such as MiniLM, ``<|im_end|>`` for SmolLM2), so that
perturbation methods are scored with the very token they were computed with; ``pad``, ``mask`` and
``unk`` name one. Special tokens ([CLS], [SEP], BOS…) are never removed, and neither is the first token
of a decoder-only model whose tokenizer adds no BOS (its attention sink; see :mod:`.captum_methods`).

Deletion (Samek et al. 2017, "Evaluating the Visualization of What a Deep Neural Network Has Learned",
IEEE TNNLS; AOPC) removes the most important tokens first and tracks the probability of the target
class (default: the prediction); a faithful ranking makes it fall fast. Insertion (Petsiuk et al. 2018,
RISE) starts from the all-removed input and restores the most important tokens first; a faithful
ranking makes it rise fast. The curves are taken at the fractions ``j / steps`` (j = 0..steps) of the
removable tokens, ``round(f · n)`` tokens at fraction f. AOPC: deletion = mean over the steps of
p(x) − p(x with the top-k removed); insertion = mean of p(x with the top-k restored) − p(all removed).
Higher is more faithful for both.

Comprehensiveness and sufficiency (DeYoung et al. 2020, "ERASER: A Benchmark to Evaluate Rationalized
NLP Models", ACL, §4) at the top-k fractions ``ERASER_FRACTIONS`` (1, 5, 10, 20, 50 %), with
``ceil(f · n)`` tokens (at least one) at fraction f: comprehensiveness = p(x) − p(x with the top-k
removed) (higher is better), sufficiency = p(x) − p(only the top-k kept) (lower is better); each is
also given as its mean over the fractions (ERASER's AOPC aggregate over the bins). ERASER deletes the
tokens; here they are replaced (see above), so the input keeps its length.

Ranking: by the signed score by default (evidence *for* the target first); ``absolute=True`` ranks by
|score|. Ties keep the token order (a stable sort).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..models import LoadedModel
from .captum_methods import baseline_fixed, baseline_token_id
from .interventions import encode, output_logits, run_with_interventions

ERASER_FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.50)
REPLACEMENTS = ("auto", "pad", "mask", "unk")


def replacement_id(tokenizer, replacement: str = "auto") -> int:
    """The token id a removed token is replaced by (see the module docstring); one-line error when the
    tokenizer has no such token."""
    if replacement not in REPLACEMENTS:
        raise InputError(f"replacement must be one of {', '.join(REPLACEMENTS)}, got {replacement!r}")
    if replacement == "auto":
        return baseline_token_id(tokenizer)
    v = getattr(tokenizer, f"{replacement}_token_id", None)
    if not isinstance(v, int):
        raise InputError(f"this tokenizer has no {replacement} token; choose another replacement "
                         f"({', '.join(REPLACEMENTS)})")
    return v


def ranking(scores: np.ndarray, candidates: np.ndarray, absolute: bool = False) -> np.ndarray:
    """The candidate positions, most important first (stable: ties keep the token order)."""
    v = np.asarray(scores, float)[candidates]
    if absolute:
        v = np.abs(v)
    return candidates[np.argsort(-v, kind="stable")]


def curve_counts(n: int, steps: int) -> np.ndarray:
    """Tokens removed / inserted at each curve point: ``round(j / steps · n)``, j = 0..steps."""
    return np.round(np.linspace(0, n, steps + 1)).astype(int)


def eraser_counts(n: int, fractions: Sequence[float] = ERASER_FRACTIONS) -> np.ndarray:
    """Top-k sizes at the ERASER fractions: ``ceil(f · n)``, at least 1 and at most n."""
    return np.array([min(n, max(1, math.ceil(f * n - 1e-9))) for f in fractions], int)


def removed(ids: np.ndarray, positions: np.ndarray, base_id: int) -> np.ndarray:
    """``ids`` (N,) with ``positions`` replaced by ``base_id``."""
    out = np.array(ids, copy=True)
    out[np.asarray(positions, int)] = base_id
    return out


def deletion_inputs(ids: np.ndarray, order: np.ndarray, counts: Sequence[int], base_id: int) -> list[np.ndarray]:
    """One input per count k: the first k positions of ``order`` removed."""
    return [removed(ids, order[:k], base_id) for k in counts]


def insertion_inputs(ids: np.ndarray, order: np.ndarray, counts: Sequence[int], base_id: int) -> list[np.ndarray]:
    """One input per count k: only the first k positions of ``order`` kept, the other candidates removed
    (positions outside ``order`` — special and fixed tokens — always kept)."""
    return [removed(ids, order[k:], base_id) for k in counts]


def aopc_deletion(curve: np.ndarray) -> float:
    """Samek et al. 2017: mean over the steps of p(x) − p(x with the top-k removed) (curve[0] = p(x))."""
    c = np.asarray(curve, float)
    return float(np.mean(c[0] - c))


def aopc_insertion(curve: np.ndarray) -> float:
    """Mean over the steps of p(top-k restored) − p(all removed) (curve[0] = p(all removed))."""
    c = np.asarray(curve, float)
    return float(np.mean(c - c[0]))


def comprehensiveness(p_full: float, p_without_topk: np.ndarray) -> np.ndarray:
    """DeYoung et al. 2020: p(x) − p(x \\ top-k), one value per fraction."""
    return float(p_full) - np.asarray(p_without_topk, float)


def sufficiency(p_full: float, p_only_topk: np.ndarray) -> np.ndarray:
    """DeYoung et al. 2020: p(x) − p(top-k only), one value per fraction."""
    return float(p_full) - np.asarray(p_only_topk, float)


class TargetProbability:
    """p(target | input ids) for inputs of one text, batched and memoised: an input met twice (the same
    top-k of two methods, a curve step that rounds to the same count) is run once.

    ``inputs``: the model inputs of the original text ((1, N) tensors); every queried id row has length N.
    """

    def __init__(self, lm: LoadedModel, inputs: Mapping[str, torch.Tensor], target: int, batch_size: int = 64):
        self.lm, self.inputs, self.target, self.batch_size = lm, inputs, int(target), int(batch_size)
        self.cache: dict[bytes, float] = {}
        self.forwards = 0  # rows actually run

    def probs(self, batch_ids: torch.Tensor) -> torch.Tensor:
        """Softmax (B, C) of a batch of id rows (B, N) of this text."""
        b = batch_ids.shape[0]
        kw = {k: v.expand(b, -1) for k, v in self.inputs.items() if k != "input_ids"}
        out = run_with_interventions(self.lm, dict(kw, input_ids=batch_ids), ())
        return torch.softmax(output_logits(self.lm, out).double(), -1)  # (B, C)

    def __call__(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        keys = [np.ascontiguousarray(r, dtype=np.int64).tobytes() for r in rows]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache))
        device = self.inputs["input_ids"].device
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            ids = torch.from_numpy(np.stack([np.frombuffer(k, dtype=np.int64) for k in chunk])).to(device)  # (B, N)
            with torch.no_grad():
                p = self.probs(ids)[:, self.target].cpu().numpy()  # (B,)
            self.cache.update(zip(chunk, map(float, p)))
            self.forwards += len(chunk)
        return np.array([self.cache[k] for k in keys])


@dataclass
class Perturbation:
    """What every method of one text is measured against: the ids, the removable positions, the
    replacement token, the target and p(target | x)."""

    ids: np.ndarray  # (N,)
    candidates: np.ndarray  # removable positions (not special, not fixed)
    base_id: int
    target: int
    p_full: float
    oracle: TargetProbability

    @classmethod
    def of(cls, lm: LoadedModel, text: str, *, replacement: str = "auto", target: int | None = None,
           keep_first: bool | None = None, batch_size: int = 64) -> tuple["Perturbation", Any]:
        """(Perturbation, Tokens) of ``text``; ``target`` defaults to the model's prediction."""
        base_id = replacement_id(lm.tokenizer, replacement)
        inputs, tokens = encode(lm, text)
        ids = inputs["input_ids"][0].cpu().numpy().astype(np.int64)  # (N,)
        fixed = baseline_fixed(lm, list(tokens.special), keep_first)
        cand = np.array([i for i in range(len(ids)) if not fixed[i]], int)
        if len(cand) == 0:
            raise InputError("the text has no token that can be removed (only special tokens)")
        with torch.no_grad():
            p = TargetProbability(lm, inputs, 0, batch_size).probs(inputs["input_ids"])[0]  # (C,)
        t = int(p.argmax()) if target is None else int(target)
        if not 0 <= t < p.shape[0]:
            raise InputError(f"target {t} is out of range: the model has {p.shape[0]} outputs (0..{p.shape[0] - 1})")
        oracle = TargetProbability(lm, inputs, t, batch_size)
        key = np.ascontiguousarray(ids).tobytes()
        oracle.cache[key] = float(p[t])
        return cls(ids, cand, base_id, t, float(p[t]), oracle), tokens

    def leave_one_out(self) -> np.ndarray:
        """(N,) p(x) − p(x with token i replaced) for each candidate i; 0 elsewhere (leave-one-out occlusion)."""
        p = self.oracle([removed(self.ids, [i], self.base_id) for i in self.candidates])
        out = np.zeros(len(self.ids))
        out[self.candidates] = self.p_full - p
        return out

    def requests(self, scores: np.ndarray, *, steps: int, fractions: Sequence[float], absolute: bool = False
                 ) -> dict[str, list[np.ndarray]]:
        """The inputs a method's scores need: deletion / insertion curves and the ERASER top-k sets."""
        scores = np.asarray(scores, float)
        if scores.shape != self.ids.shape:
            raise InputError(f"scores have shape {scores.shape} but the text has {len(self.ids)} tokens")
        if not np.all(np.isfinite(scores[self.candidates])):
            raise InputError("scores are not finite")
        order = ranking(scores, self.candidates, absolute)
        n = len(self.candidates)
        ck, ek = curve_counts(n, steps), eraser_counts(n, fractions)
        return {"deletion": deletion_inputs(self.ids, order, ck, self.base_id),
                "insertion": insertion_inputs(self.ids, order, ck, self.base_id),
                "comprehensiveness": deletion_inputs(self.ids, order, ek, self.base_id),
                "sufficiency": insertion_inputs(self.ids, order, ek, self.base_id)}

    def measure(self, requests: Mapping[str, list[np.ndarray]]) -> dict[str, Any]:
        """Curves and metrics of one method from its :meth:`requests` (forwards shared through the oracle)."""
        p = {k: self.oracle(v) for k, v in requests.items()}
        comp = comprehensiveness(self.p_full, p["comprehensiveness"])
        suff = sufficiency(self.p_full, p["sufficiency"])
        return {"deletion_curve": p["deletion"], "insertion_curve": p["insertion"],
                "aopc_deletion": aopc_deletion(p["deletion"]), "aopc_insertion": aopc_insertion(p["insertion"]),
                "comprehensiveness": comp, "sufficiency": suff,
                "comprehensiveness_aopc": float(np.mean(comp)), "sufficiency_aopc": float(np.mean(suff))}


@dataclass
class FaithfulnessResult:
    fractions: np.ndarray  # (steps+1,) fraction of the removable tokens removed / inserted
    curves: dict[str, dict[str, np.ndarray]]  # "deletion"/"insertion" -> method -> (steps+1,)
    aopc: dict[str, dict[str, float]]
    target: int
    tokens: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    eraser: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """"comprehensiveness"/"sufficiency" -> method -> one value per ``meta["eraser_fractions"]``."""

    def to_dict(self) -> dict[str, Any]:
        return {"fractions": self.fractions.tolist(),
                "curves": {k: {m: v.tolist() for m, v in d.items()} for k, d in self.curves.items()},
                "aopc": self.aopc, "eraser": self.eraser, "target": self.target, "tokens": self.tokens,
                "meta": self.meta}


def faithfulness(lm: LoadedModel, text: str, scores: Mapping[str, np.ndarray] | np.ndarray, *, steps: int = 10,
                 baseline: str = "auto", target: int | None = None, absolute: bool = False,
                 random_orders: int = 3, seed: int = 0, fractions: Sequence[float] = ERASER_FRACTIONS
                 ) -> FaithfulnessResult:
    """Deletion/insertion curves with AOPC, and ERASER comprehensiveness/sufficiency, of token rankings
    (``scores``: one array (N,) per method) for one text. ``baseline``: the replacement token (auto, pad,
    mask, unk; see the module docstring). A ``random`` ranking, averaged over ``random_orders`` seeded
    permutations, is the reference."""
    if not 1 <= steps <= 1000:
        raise InputError(f"steps must be between 1 and 1000, got {steps}")
    pert, tokens = Perturbation.of(lm, text, replacement=baseline, target=target)
    if not isinstance(scores, Mapping):
        scores = {"scores": np.asarray(scores)}
    measured = {m: pert.measure(pert.requests(s, steps=steps, fractions=fractions, absolute=absolute))
                for m, s in scores.items()}
    rng = np.random.default_rng(seed)
    rand = [pert.measure(pert.requests(rng.random(len(pert.ids)), steps=steps, fractions=fractions))
            for _ in range(max(0, random_orders))]
    if rand:
        measured["random"] = {k: np.mean([r[k] for r in rand], 0) for k in rand[0]}
    curves = {"deletion": {m: np.asarray(r["deletion_curve"]) for m, r in measured.items()},
              "insertion": {m: np.asarray(r["insertion_curve"]) for m, r in measured.items()}}
    aopc = {"deletion": {m: aopc_deletion(c) for m, c in curves["deletion"].items()},
            "insertion": {m: aopc_insertion(c) for m, c in curves["insertion"].items()}}
    eraser = {k: {m: np.asarray(r[k]).tolist() for m, r in measured.items()} for k in ("comprehensiveness", "sufficiency")}
    return FaithfulnessResult(fractions=np.linspace(0, 1, steps + 1), curves=curves, aopc=aopc, target=pert.target,
                              tokens=tokens.labels(), eraser=eraser,
                              meta={"model": lm.name, "text": text, "baseline": baseline,
                                    "replacement_token": str(lm.tokenizer.convert_ids_to_tokens([pert.base_id])[0]),
                                    "absolute": absolute, "eraser_fractions": list(fractions),
                                    "fixed": [int(i) for i in np.setdiff1d(np.arange(len(pert.ids)), pert.candidates)]})
