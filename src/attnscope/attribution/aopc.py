"""Faithfulness of a token-importance method: deletion and insertion curves and AOPC.

Deletion (Samek et al. 2017, "Evaluating the Visualization of What a Deep Neural Network Has Learned";
AOPC) removes the most important tokens first — replaced by the padding/[MASK] baseline token, so the
length and positions stay the same — and tracks the probability of the originally predicted class
(or ``target``); a faithful ranking makes it fall fast. Insertion (Petsiuk et al. 2018, RISE) starts
from the all-baseline input and restores the most important tokens first; a faithful ranking makes it
rise fast. AOPC: deletion = mean over steps of p(x) − p(x with the top-k removed); insertion = mean of
p(x with the top-k restored) − p(all removed). Higher is more faithful for both. A ``random`` order,
averaged over seeds, is the reference. Special tokens are never removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import InputError
from ..models import LoadedModel
from .captum_methods import baseline_token_id
from .counterfactual import _mask_id
from .interventions import encode, output_logits, run_with_interventions


@dataclass
class FaithfulnessResult:
    fractions: np.ndarray  # (steps+1,) fraction of the non-special tokens removed / inserted
    curves: dict[str, dict[str, np.ndarray]]  # "deletion"/"insertion" -> method -> (steps+1,)
    aopc: dict[str, dict[str, float]]
    target: int
    tokens: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"fractions": self.fractions.tolist(),
                "curves": {k: {m: v.tolist() for m, v in d.items()} for k, d in self.curves.items()},
                "aopc": self.aopc, "target": self.target, "tokens": self.tokens, "meta": self.meta}


def faithfulness(lm: LoadedModel, text: str, scores: Mapping[str, np.ndarray] | np.ndarray, *, steps: int = 10,
                 baseline: str = "pad", target: int | None = None, absolute: bool = False,
                 random_orders: int = 3, seed: int = 0) -> FaithfulnessResult:
    """Deletion/insertion curves and AOPC of token rankings (``scores``: one array (N,) per method).

    ``baseline``: ``pad`` (the padding token) or ``mask`` (the mask token). ``absolute``: rank by |score|
    (for signed methods where a strongly negative token also matters); by default the ranking is by the
    signed score — evidence *for* the target first.
    """
    if baseline not in ("pad", "mask"):
        raise InputError(f"baseline must be 'pad' or 'mask', got {baseline!r}")
    if steps < 1:
        raise InputError("steps must be at least 1")
    inputs, tokens = encode(lm, text)
    ids = inputs["input_ids"]  # (1, N)
    n = ids.shape[1]
    if not isinstance(scores, Mapping):
        scores = {"scores": np.asarray(scores)}
    cand = np.array([i for i in range(n) if not tokens.special[i]])
    if len(cand) == 0:
        raise InputError("the text has no non-special tokens")
    base_id = baseline_token_id(lm.tokenizer) if baseline == "pad" else _mask_id(lm.tokenizer)
    ks = np.unique(np.round(np.linspace(0, len(cand), steps + 1)).astype(int))  # tokens removed per step
    fractions = ks / len(cand)

    orders: dict[str, np.ndarray] = {}
    for m, s in scores.items():
        s = np.asarray(s, dtype=float)
        if s.shape != (n,):
            raise InputError(f"scores for {m!r} have shape {s.shape} but the text has {n} tokens")
        v = np.abs(s[cand]) if absolute else s[cand]
        orders[m] = cand[np.argsort(-v, kind="stable")]
    rng = np.random.default_rng(seed)
    rand = [cand[rng.permutation(len(cand))] for _ in range(max(0, random_orders))]

    def probs_for(batch_ids: torch.Tensor) -> torch.Tensor:
        b = batch_ids.shape[0]
        kw = {k: v.expand(b, -1) for k, v in inputs.items() if k != "input_ids"}
        out = run_with_interventions(lm, dict(kw, input_ids=batch_ids), ())
        return torch.softmax(output_logits(lm, out).double(), -1)  # (B, C)

    with torch.no_grad():
        p0 = probs_for(ids)[0]
    t = int(p0.argmax()) if target is None else int(target)

    def curves_for(order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dele = ids.repeat(len(ks), 1)  # (S, N)
        ins = ids.repeat(len(ks), 1)
        for j, k in enumerate(ks):
            dele[j, order[:k]] = base_id
            ins[j, order[k:]] = base_id
        p = probs_for(torch.cat([dele, ins]))[:, t].cpu().numpy()  # (2S,)
        return p[:len(ks)], p[len(ks):]

    curves: dict[str, dict[str, np.ndarray]] = {"deletion": {}, "insertion": {}}
    for m, order in orders.items():
        curves["deletion"][m], curves["insertion"][m] = curves_for(order)
    if rand:
        r = [curves_for(o) for o in rand]
        curves["deletion"]["random"] = np.mean([x[0] for x in r], 0)
        curves["insertion"]["random"] = np.mean([x[1] for x in r], 0)
    aopc = {"deletion": {m: float(np.mean(c[0] - c)) for m, c in curves["deletion"].items()},
            "insertion": {m: float(np.mean(c - c[0])) for m, c in curves["insertion"].items()}}
    return FaithfulnessResult(fractions=fractions, curves=curves, aopc=aopc, target=t, tokens=tokens.labels(),
                              meta={"model": lm.name, "text": text, "baseline": baseline, "absolute": absolute})
