"""Do attention and attribution methods agree? Per-input rank agreement (Jain & Wallace 2019,
"Attention is not Explanation", NAACL, §4: Kendall τ between attention and gradient / leave-one-out
importance) — here Spearman ρ and Kendall τ (scipy) and top-k overlap, for every pair of methods.

Special tokens ([CLS], [SEP], BOS…) are left out of every comparison, and so are the positions the
Captum baseline keeps (a decoder-only model's first token; see :mod:`.captum_methods`). Integrated
gradients that fail their completeness check are kept out of the agreement table unless
``include_unconverged=True``: a comparison with numbers that are not attributions means nothing. By default scores are compared
by magnitude (``absolute=True``): attention is non-negative, while gradient methods are signed, and a
strongly negative token is as "important" as a strongly positive one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..analysis.rollout import rollout_chain
from ..errors import InputError, UnknownNameError
from ..models import LoadedModel, require_trained_head
from .captum_methods import CAPTUM_METHODS, captum_attributions
from .gradients import attention_gradients
from .value_aware import VALUE_METHODS, applicable, value_aware_scores

ATTENTION_METHODS = ("attention", "rollout", "attn_x_grad", "chefer")
PROPAGATION_METHODS = ("attnlrp",)  # :mod:`.attnlrp`
ALL_METHODS = ATTENTION_METHODS + CAPTUM_METHODS + VALUE_METHODS + PROPAGATION_METHODS
DEFAULT_METHODS = None  # every method defined for the model: :func:`methods_for`


def methods_for(lm: LoadedModel) -> list[str]:
    """The methods of :data:`ALL_METHODS` defined for this model (``all``): a value-aware method is left out
    where its paper does not define it (:func:`.value_aware.applicable`, e.g. ALTI-Logit needs a causal LM)."""
    usable = set(applicable(lm))
    return [m for m in ALL_METHODS if m not in VALUE_METHODS or m in usable]


def topk_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """|top-k(a) ∩ top-k(b)| / k."""
    k = max(1, min(k, len(a)))
    return len(set(np.argsort(-a, kind="stable")[:k]) & set(np.argsort(-b, kind="stable")[:k])) / k


def agreement(scores: dict[str, np.ndarray], special: Sequence[bool] | None = None, *, k: int = 3,
              absolute: bool = True, references: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows {a, b, spearman, spearman_p, kendall, kendall_p, topk_overlap, n} for every pair (a, b) with
    ``a`` in ``references`` (default: every method) and b ≠ a. NaN correlation where a method is constant."""
    from scipy import stats

    names = list(scores)
    refs = list(references) if references is not None else names
    n = len(next(iter(scores.values())))
    keep = np.ones(n, bool) if special is None else ~np.asarray(special, bool)
    if keep.sum() < 2:
        raise InputError("agreement needs at least two non-special tokens")
    rows = []
    seen = set()
    for a in refs:
        if a not in scores:
            raise UnknownNameError("method", a, names)
        for b in names:
            if b == a or (b, a) in seen:
                continue
            seen.add((a, b))
            x, y = np.asarray(scores[a])[keep], np.asarray(scores[b])[keep]
            if absolute:
                x, y = np.abs(x), np.abs(y)
            const = np.ptp(x) == 0 or np.ptp(y) == 0
            sp = stats.spearmanr(x, y) if not const else None
            kt = stats.kendalltau(x, y) if not const else None
            rows.append({"a": a, "b": b, "spearman": float(sp.statistic) if sp else float("nan"),
                         "spearman_p": float(sp.pvalue) if sp else float("nan"),
                         "kendall": float(kt.statistic) if kt else float("nan"),
                         "kendall_p": float(kt.pvalue) if kt else float("nan"),
                         "topk_overlap": topk_overlap(x, y, k), "k": k, "n": int(keep.sum())})
    return rows


@dataclass
class Explanation:
    """Token scores of one input by several methods, and their pairwise agreement."""

    text: str
    tokens: list[str]
    special: list[bool]
    scores: dict[str, np.ndarray]
    target: int
    target_label: str
    probability: float
    agreement: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """Loud lines the reader must see with the result: a random prediction head, integrated gradients
    that failed their completeness check, AttnLRP that failed its conservation check."""
    notes: dict[str, str] = field(default_factory=dict)
    """What each method is and is not, one sentence each (:mod:`.method_notes`)."""

    @property
    def checks(self) -> dict[str, dict[str, Any]]:
        """{method: {"check": name, "ok": bool}} for the methods that have their own check
        (:data:`.method_notes.CHECKS`); the numbers are in ``meta`` (``ig_completeness``, ``attnlrp_conservation``)."""
        return self.meta.get("checks", {})

    @property
    def failed_checks(self) -> list[str]:
        """Methods whose result failed its own check: flagged, and never ranked unless asked."""
        return [m for m, c in self.checks.items() if not c["ok"]]

    @property
    def completeness_ok(self) -> bool | None:
        """Whether integrated gradients passed the completeness check (None when IG was not run)."""
        c = self.meta.get("ig_completeness")
        return None if c is None else bool(c["ok"])

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "tokens": self.tokens, "special": self.special,
                "scores": {k: v.tolist() for k, v in self.scores.items()}, "target": self.target,
                "target_label": self.target_label, "probability": self.probability,
                "agreement": self.agreement, "meta": self.meta, "warnings": self.warnings,
                "completeness_ok": self.completeness_ok, "notes": self.notes, "checks": self.checks,
                "failed_checks": self.failed_checks}


def explain(lm: LoadedModel, text: str, methods: Sequence[str] | None = DEFAULT_METHODS, *, target: int | str | None = None,
            position: int | None = None, ig_steps: int = 32, ig_max_steps: int | None = None, n_samples: int = 32,
            k: int = 3, absolute: bool = True, seed: int = 0, allow_random_head: bool = False,
            include_unconverged: bool = False, keep_first: bool | None = None) -> Explanation:
    """Token importance for one prediction by attention-based methods and Captum methods, compared.

    Methods: ``attention`` (last layer, heads averaged, the prediction's query row), ``rollout``
    (Abnar & Zuidema 2020), ``attn_x_grad`` (A ⊙ ∂y/∂A, averaged over layers and heads), ``chefer``
    (Chefer et al. 2021 relevancy), and Captum's ``integrated_gradients``, ``occlusion``, ``lime``,
    ``shapley``, and the value-aware ``value_norm``, ``attn_res_ln``, ``globenc``, ``alti``, ``alti_logit``
    (causal LMs) and ``value_zeroing`` (:mod:`.value_aware`); ``methods=None``: every method defined for the
    model (:func:`methods_for`). The prediction row is [CLS] (position 0) for bidirectional encoders and the last
    position for causal models. Agreement rows compare every method with ``attention`` and ``rollout``.

    A model whose prediction head was initialised at random on load (``lm.has_random_head``) is refused
    with an :class:`InputError` unless ``allow_random_head=True``; then ``warnings`` says so. Integrated
    gradients are checked for completeness (``meta["ig_completeness"]``, ``completeness_ok``), ``attnlrp``
    (Achtibat et al. 2024, :mod:`.attnlrp`) for conservation (``meta["attnlrp_conservation"]``); a failed
    check adds a warning and keeps the method out of the agreement rows unless ``include_unconverged=True``
    (``checks``, ``failed_checks``). ``notes`` says what each method is and is not (:mod:`.method_notes`).
    """
    methods = methods_for(lm) if methods is None else list(methods)
    for m in methods:
        if m not in ALL_METHODS:
            raise UnknownNameError("explain method", m, ALL_METHODS)
    warnings = require_trained_head(lm, "explain", allow_random_head)
    g = attention_gradients(lm, text, target=target, position=position)
    scores: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"model": lm.name, "row": g.row, "causal": g.causal, "absolute": absolute}
    if lm.has_random_head:
        meta["random_head"] = lm.random_head_weights
    if "attention" in methods:
        scores["attention"] = g.attention[-1, :, g.row, :].mean(0)
    if "rollout" in methods:
        scores["rollout"] = rollout_chain(g.attention)[-1, g.row]
    if "attn_x_grad" in methods:
        scores["attn_x_grad"] = g.token_scores()
    if "chefer" in methods:
        scores["chefer"] = g.relevancy_scores()
    vm = [m for m in methods if m in VALUE_METHODS]
    if vm:  # value-aware methods; meta["value_aware"][m] says what each is and is not
        v = value_aware_scores(lm, text, vm, row=g.row, target=g.target, position=position)
        scores.update(v["scores"])
        meta["value_aware"] = v["notes"]
    left_out = list(g.special)
    cm = [m for m in methods if m in CAPTUM_METHODS]
    if cm:
        c = captum_attributions(lm, text, cm, target=g.target, position=position, ig_steps=ig_steps,
                                ig_max_steps=ig_max_steps, n_samples=n_samples, seed=seed, keep_first=keep_first)
        scores.update(c["scores"])
        left_out = [a or b for a, b in zip(left_out, c["fixed"])]
        meta["baseline_fixed"] = [i for i, f in enumerate(c["fixed"]) if f]
        warnings += c["warnings"]
        if "ig_completeness" in c:
            meta["ig_delta"] = c["ig_delta"]
            meta["ig_output_difference"] = c["ig_output_difference"]
            meta["ig_completeness"] = c["ig_completeness"]
    if "attnlrp" in methods:
        from .attnlrp import attnlrp_attribution

        r = attnlrp_attribution(lm, text, target=g.target, position=position, allow_random_head=True)
        scores["attnlrp"] = r.scores
        meta["attnlrp_conservation"] = r.conservation.to_dict()
        warnings += [w for w in r.warnings if w not in warnings]
    from .method_notes import CHECKS, NOTES, notes

    check_meta = {"completeness": "ig_completeness", "conservation": "attnlrp_conservation"}
    meta["checks"] = {m: {"check": CHECKS[m], "ok": bool(meta[check_meta[CHECKS[m]]]["ok"])}
                      for m in methods if m in CHECKS and check_meta[CHECKS[m]] in meta}
    method_notes = notes(methods)
    for m, v in meta.get("value_aware", {}).items():  # methods whose results carry their own lines
        if m not in NOTES:
            method_notes[m] = f"{v['is']} Not: {v['is_not']}"
    scores = {m: scores[m] for m in methods}
    compared = dict(scores)
    failed = [m for m, c in meta["checks"].items() if not c["ok"]]
    if failed and not include_unconverged:
        for m in failed:
            compared.pop(m)
        meta["left_out_of_agreement"] = failed
    refs = [r for r in ("attention", "rollout") if r in compared] or None
    rows = agreement(compared, left_out, k=k, absolute=absolute, references=refs) if len(compared) > 1 else []
    p = np.exp(g.logits - g.logits.max())
    p /= p.sum()
    return Explanation(text=text, tokens=g.tokens, special=g.special, scores=scores, target=g.target,
                       target_label=g.target_label, probability=float(p[g.target]), agreement=rows, meta=meta,
                       warnings=warnings, notes=method_notes)
