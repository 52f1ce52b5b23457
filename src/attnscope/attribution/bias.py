"""Bias probe: how much attention goes to (or from) words of different groups across templated sentences.

Each template holds ``{}`` where a group word goes. For every template and every word of every group,
the sentence is run and one number is measured, averaged over the chosen layers and heads:
``direction="to"`` — the mean attention the other (non-special) tokens pay to the group word's tokens;
``direction="from"`` — the attention the group word's tokens pay to ``attribute_words`` (e.g.
occupations) in the sentence, or, without them, to all other non-special tokens. Groups are compared
pairwise with Welch's t-test (unequal variances; scipy) and the effect size Cohen's d (pooled SD) with
Hedges' small-sample correction g = d·(1 − 3/(4(n₁+n₂) − 9)).

NOTE: attention weights are not, on their own, evidence that a model is biased (Jain & Wallace 2019;
Serrano & Smith 2019): attention is one intermediate quantity among many. A difference here says where
the model *looks*, not what it *uses*; test bias on the model's outputs (and with interventions) before
drawing conclusions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..models import LoadedModel
from .counterfactual import words
from .interventions import ProbsProbe, encode, run_with_interventions

NOTE = ("Attention weights are not, on their own, evidence of model bias: they show where the model looks, "
        "not what it uses. Test bias on outputs (and with interventions) before drawing conclusions.")

DEFAULT_GROUPS: dict[str, list[str]] = {"he": ["he"], "she": ["she"], "they": ["they"]}
DEFAULT_TEMPLATES: list[str] = [
    "{} is a doctor.", "{} is a nurse.", "{} works as an engineer.", "{} works as a teacher.",
    "{} said the surgeon was late.", "{} said the secretary was late.", "{} is a brilliant programmer.",
    "{} is a caring babysitter.", "{} was promoted to manager.", "{} stayed home with the children.",
    "Yesterday {} fixed the car.", "Yesterday {} cooked dinner.",
]
DEFAULT_ATTRIBUTES = ["doctor", "nurse", "engineer", "teacher", "surgeon", "secretary", "programmer",
                      "babysitter", "manager", "children", "car", "dinner"]


@dataclass
class BiasProbeResult:
    values: dict[str, np.ndarray]  # group -> one measurement per (template, word)
    samples: list[dict[str, Any]]
    tests: list[dict[str, Any]]
    direction: str
    note: str = NOTE
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"values": {k: v.tolist() for k, v in self.values.items()}, "samples": self.samples,
                "tests": self.tests, "direction": self.direction, "note": self.note, "meta": self.meta}


PLACEHOLDER = "{}"
TEMPLATE_HELP = "a template is a sentence with exactly one {} where the group word goes and no other braces, " \
                "e.g. '{} is a doctor.'"


def check_template(template: str, what: str = "template") -> None:
    """Refuse a template that is not one literal ``{}`` in text without other braces.

    Templates are filled by plain substitution (:func:`fill_template`), never ``str.format``: format specs
    (``{:>10000000}``), fields (``{x}``, ``{0.__class__}``) and escapes (``{{}}``) have no meaning here, so a
    brace other than the placeholder is refused rather than guessed at.
    """
    if not isinstance(template, str):
        raise InputError(f"{what} must be a string; {TEMPLATE_HELP}")
    n = template.count(PLACEHOLDER)
    rest = template.replace(PLACEHOLDER, "")
    if n != 1 or "{" in rest or "}" in rest:
        shown = template if len(template) <= 80 else template[:77] + "..."
        raise InputError(f"{what} {shown!r} has {n} placeholder(s){' and other braces' if n == 1 else ''}; "
                         f"{TEMPLATE_HELP}")


def fill_template(template: str, word: str) -> str:
    """``template`` with its one ``{}`` replaced by ``word`` (literal substitution; see :func:`check_template`)."""
    check_template(template)
    before, after = template.split(PLACEHOLDER)
    return before + word + after


def effect_size(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Cohen's d with the pooled SD, Hedges' g)."""
    n1, n2 = len(a), len(b)
    pooled = np.sqrt(((n1 - 1) * np.var(a, ddof=1) + (n2 - 1) * np.var(b, ddof=1)) / (n1 + n2 - 2))
    d = float((np.mean(a) - np.mean(b)) / pooled) if pooled > 0 else 0.0
    return d, d * (1 - 3 / (4 * (n1 + n2) - 9))


def bias_probe(lm: LoadedModel, groups: Mapping[str, Sequence[str]] | None = None,
               templates: Sequence[str] | None = None, *, direction: str = "to",
               attribute_words: Sequence[str] | None = None, layers: Sequence[int] | None = None) -> BiasProbeResult:
    """Attention to/from group words over templated sentences, tested between groups (module docstring)."""
    from scipy import stats

    groups = dict(groups or DEFAULT_GROUPS)
    templates = list(templates or DEFAULT_TEMPLATES)
    if direction not in ("to", "from"):
        raise InputError(f"direction must be 'to' or 'from', got {direction!r}")
    if len(groups) < 2:
        raise InputError("give at least two groups to compare, e.g. he=he,him she=she,her")
    for i, t in enumerate(templates):
        check_template(t, f"template #{i}")
    if layers is not None and not list(layers):
        raise InputError("layers is empty: give the layers to average (e.g. [-1]), or leave it out for all layers")
    attrs = {w.lower() for w in (attribute_words if attribute_words is not None else
                                 (DEFAULT_ATTRIBUTES if templates == DEFAULT_TEMPLATES else []))}
    values: dict[str, list[float]] = {g: [] for g in groups}
    samples = []
    for g, ws in groups.items():
        if not ws:
            raise InputError(f"group {g!r} has no words")
        for t in templates:
            for w in ws:
                start = t.index(PLACEHOLDER)
                sentence = fill_template(t, w)
                if start == 0:
                    sentence = sentence[0].upper() + sentence[1:]
                inputs, tokens = encode(lm, sentence)
                probe = ProbsProbe(stream="self")
                run_with_interventions(lm, inputs, [probe])
                maps = probe.maps("self")[:, 0].double().cpu().numpy()  # (L, H, N, N)
                if layers is not None:
                    maps = maps[list(layers)]
                att = maps.mean((0, 1))  # (N, N)
                ws_ = words(sentence, tokens)
                target = next((x for x in ws_ if x.start <= start < x.end), None)
                if target is None:
                    raise InputError(f"could not find the tokens of {w!r} in {sentence!r}")
                gi = list(target.tokens)
                others = [i for i in range(len(tokens)) if not tokens.special[i] and i not in gi]
                if direction == "to":
                    v = float(att[np.ix_(others, gi)].sum(-1).mean()) if others else 0.0
                else:
                    keys = [i for x in ws_ if x.text.lower() in attrs for i in x.tokens] if attrs else others
                    v = float(att[np.ix_(gi, keys)].sum(-1).mean()) if keys else float("nan")
                if np.isfinite(v):
                    values[g].append(v)
                samples.append({"group": g, "word": w, "template": t, "sentence": sentence, "value": v})
    arr = {g: np.asarray(v) for g, v in values.items()}
    tests = []
    for a, b in itertools.combinations(groups, 2):
        x, y = arr[a], arr[b]
        if len(x) < 2 or len(y) < 2:
            continue
        res = stats.ttest_ind(x, y, equal_var=False)
        d, hg = effect_size(x, y)
        tests.append({"a": a, "b": b, "mean_a": float(x.mean()), "mean_b": float(y.mean()), "t": float(res.statistic),
                      "p": float(res.pvalue), "cohens_d": d, "hedges_g": hg, "n_a": len(x), "n_b": len(y)})
    return BiasProbeResult(values=arr, samples=samples, tests=tests, direction=direction,
                           meta={"model": lm.name, "templates": len(templates), "layers": list(layers) if layers else "all",
                                 "attribute_words": sorted(attrs)})
