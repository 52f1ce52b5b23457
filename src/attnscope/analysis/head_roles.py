"""Head roles: a score per layer × head for each known attention pattern, and the linguistic roles (syntactic and
coreference heads, Clark et al. 2019) measured over a corpus for the packaged models."""

from __future__ import annotations

import numpy as np

from ._common import allowed, is_delimiter, maps, query_offset, relative_distance, require_square
from .induction import induction_head_scores
from .registry import register_analysis
from .results import HeadScores

LINGUISTIC_MARGIN = 0.05  # a linguistic label needs the best head to beat its baseline by this much accuracy
ROLES = ("previous_token", "next_token", "first_token", "self", "delimiter", "local", "broad", "induction")


def _diag_mean(w: np.ndarray, rel: np.ndarray, d: int) -> np.ndarray:
    m = rel == d  # (Nq, Nk)
    rows = m.any(-1)
    if not rows.any():
        return np.zeros(w.shape[:2])
    return (w * m).sum(-1)[..., rows].mean(-1)  # (L, H)


@register_analysis("head_roles", result="HeadScores", square=True, tags=("roles",))
def head_roles(trace, stream: str | None = None, window: int = 2, threshold: float = 0.4) -> HeadScores:
    """Head roles: for each (layer, head), how strongly it follows each known pattern (scores in [0, 1]).

    - ``previous_token`` / ``next_token`` / ``self``: mean weight on key i−1 / i+1 / i
      (positional heads, Clark et al. 2019 §3; Voita et al. 2019, "Analyzing Multi-Head
      Self-Attention", ACL, §4 "positional heads");
    - ``first_token``: mean weight on position 0 ([CLS]/<s>), the "attention sink" (Xiao et al. 2024)
      or "no-op" attention of Clark et al. 2019;
    - ``delimiter``: mean weight on punctuation and separator tokens ([SEP], ".", ","; Clark et al. 2019 §3),
      position 0 excluded;
    - ``local``: mean weight within ``window`` tokens of the query (self included);
    - ``broad``: mean normalised entropy, entropy / log(allowed keys), 1 = uniform ("broad
      attention", Clark et al. 2019 §3; rows with a single allowed key are skipped);
    - ``induction``: see :func:`attnscope.analysis.induction.induction` (Olsson et al. 2022).

    Scores are computed in float64 from the stored maps and clipped to [0, 1]: the rows of a trace stored
    in float16 sum to 1 only within rounding.

    ``meta["labels"]`` names each head's dominant role: the highest of the specific roles if it
    reaches ``threshold``, else ``broad`` if its normalised entropy is ≥ 0.8, else ``mixed``.

    ``meta["linguistic"]`` (only for a model with a measured record, :data:`attnscope.analysis.linguistic_tables.
    TABLES`): the linguistic roles of the heads, which one text cannot show — measured over parsed BBC sentences
    and the coreference template set (:func:`linguistic_roles`).
    """
    s = require_square(trace, stream, "head_roles")
    _, w = maps(trace, s)  # (L, H, N, N)
    n = w.shape[-1]
    rel = relative_distance(n, n, query_offset(trace, s))  # key - query, (N, N)
    toks = trace.query_tokens(s)
    delim = np.array([is_delimiter(t, sp) for t, sp in zip(toks.text, toks.special)])
    delim[0] = False  # position 0 ([CLS], <s>) is the first-token role, not a delimiter
    ok = allowed(trace, s, n, n)
    n_allowed = ok.sum(-1)  # (N,)
    ent = -(w * np.log(np.where(w > 0, w, 1.0))).sum(-1)  # (L, H, N)
    multi = n_allowed > 1
    broad = (ent[..., multi] / np.log(n_allowed[multi])).mean(-1) if multi.any() else np.zeros(w.shape[:2])
    broad = np.clip(broad, 0.0, 1.0)  # the labels below read it too
    ids = toks.ids if all(i >= 0 for i in toks.ids) else toks.text
    scores = {
        "previous_token": _diag_mean(w, rel, -1),
        "next_token": _diag_mean(w, rel, 1),
        "first_token": w[..., 0].mean(-1),
        "self": _diag_mean(w, rel, 0),
        "delimiter": w[..., delim].sum(-1).mean(-1) if delim.any() else np.zeros(w.shape[:2]),
        "local": (w * (np.abs(rel) <= window)).sum(-1).mean(-1),
        "broad": broad,
        "induction": induction_head_scores(w, list(ids))[0],
    }
    # maps stored in float16 have rows that sum to 1 only within rounding (1.0002): keep the documented range
    scores = {r: np.clip(v, 0.0, 1.0) for r, v in scores.items()}
    specific = [r for r in ROLES if r not in ("broad", "local")]
    stack = np.stack([scores[r] for r in specific])  # (R, L, H)
    best = stack.argmax(0)
    labels = [[specific[best[li, hi]] if stack[best[li, hi], li, hi] >= threshold
               else ("broad" if broad[li, hi] >= 0.8 else "mixed") for hi in range(w.shape[1])]
              for li in range(w.shape[0])]
    meta = {"labels": labels, "window": window, "threshold": threshold}
    if s == "self":
        from .linguistic_tables import TABLES

        record = TABLES.get(trace.model_id)
        if record is not None:
            meta["linguistic"] = linguistic_roles(record, list(trace.layers[s]), list(trace.heads[s]))
    return HeadScores(scores, list(trace.layers[s]), list(trace.heads[s]), "head_roles", s, meta=meta)


def linguistic_roles(record: dict, layers: list[int], heads: list[int]) -> dict:
    """Per-head linguistic labels from a record of :func:`attnscope.attribution.linguistic_heads.summary`
    (syntactic heads after Clark et al. 2019 §4.2, coreference heads §4.3), for the given model layers/heads.

    ``labels[i][j]`` (layer ``layers[i]``, head ``heads[j]``) lists, joined by ", ", each relation for which
    that head is the best head *and* beats the fixed-offset baseline by at least ``LINGUISTIC_MARGIN`` (0.05) (``"nsubj dep→gov"``: from the dependent
    it attends most to the governor; ``"gov→dep"`` the reverse), and ``"coref (<family>)"`` where it is the
    best coreference head of a template family and beats the nearest-noun baseline by that margin; "" otherwise.
    ``syntactic`` / ``coreference`` carry the rows behind the labels, ``source`` what they were measured on.
    """
    pos = {(l, h): (i, j) for i, l in enumerate(layers) for j, h in enumerate(heads)}
    cells: list[list[list[str]]] = [[[] for _ in heads] for _ in layers]
    syn = record.get("syntactic") or {}
    for r in syn.get("rows", []):
        at = pos.get((r["layer"], r["head"]))
        if at is not None and r["accuracy"] >= r["baseline"] + LINGUISTIC_MARGIN:
            cells[at[0]][at[1]].append(f"{r['relation']} {'dep→gov' if r['direction'] == 'dep2gov' else 'gov→dep'}")
    cor = record.get("coreference") or {}
    base = (cor.get("baselines") or {}).get("nearest_noun", 0.5)
    for fam, b in (cor.get("best_by_family") or {}).items():
        at = pos.get((b["layer"], b["head"]))
        if at is not None and b["accuracy"] >= base + LINGUISTIC_MARGIN:
            cells[at[0]][at[1]].append(f"coref ({fam})")
    return {"labels": [[", ".join(c) for c in row] for row in cells],
            "syntactic": syn.get("rows", []), "coreference": {k: cor[k] for k in ("best_by_family", "baselines",
                                                                                  "n_items") if k in cor},
            "source": record.get("source", "")}
