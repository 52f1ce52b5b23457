"""Which explanation can I trust for *my* model? Every registered explanation method, scored on the same
examples by the same faithfulness metrics, with confidence intervals and paired tests.

Per example and method (metrics: :mod:`.aopc`, one implementation each):

- deletion and insertion curves and their AOPC (Samek et al. 2017; Petsiuk et al. 2018), removed tokens
  replaced by a documented token (:func:`.aopc.replacement_id`);
- comprehensiveness and sufficiency at the ERASER top-k fractions 1, 5, 10, 20, 50 % and their mean
  (DeYoung et al. 2020, "ERASER", ACL);
- rank agreement (Spearman ρ over the removable tokens) with leave-one-out occlusion — the drop of the
  target probability when that one token is replaced (Jain & Wallace 2019 use the same reference);
- runtime: the seconds the method's own :func:`.explanation.explain` call took (its forward/backward
  passes included; the metric forwards are shared and timed apart).

Methods come by name from :data:`.explanation.ALL_METHODS` (``"all"``: every registered method), plus the
baselines ``random`` (uniform random scores, seeded per example: the floor) and ``attention`` (raw
last-layer attention, heads averaged), always included. A method that raises on the first example it is
tried on is recorded as *not applicable* to the model, with the reason, and skipped afterwards; a later
failure is recorded for that example. A result that fails its own check (integrated gradients'
completeness, a conservation check: any ``meta`` entry with ``ok: False``, or a warning line) is
*flagged*: it is kept out of the method's means and tests, and the table says how many.

The forward passes of the metrics are shared: per example, the original prediction, the leave-one-out
reference and every method's perturbed inputs go through one memoised oracle
(:class:`.aopc.TargetProbability`) in batches, and an input that two methods (or two curve steps) share
is run once.

Summary: mean per method and metric with a 95 % percentile bootstrap interval (seeded; Efron &
Tibshirani 1993), and for each metric every pair of methods compared with the Wilcoxon signed-rank test
on the examples both scored, Holm-corrected over the pairs of that metric (Holm 1979).
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import AttnscopeError, InputError, UnknownNameError
from ..models import LoadedModel, require_trained_head
from .aopc import ERASER_FRACTIONS, REPLACEMENTS, Perturbation

BASELINES = ("random", "attention")
PACKAGED_DATA = ("tweets-heldout", "bbc-sentences")
# Summary metrics: name -> (label, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "aopc_deletion": ("AOPC deletion", True),
    "aopc_insertion": ("AOPC insertion", True),
    "comprehensiveness_aopc": ("comprehensiveness", True),
    "sufficiency_aopc": ("sufficiency", False),
    "spearman_loo": ("Spearman vs leave-one-out", True),
    "runtime_s": ("runtime (s)", False),
}
TESTED = ("aopc_deletion", "aopc_insertion", "comprehensiveness_aopc", "sufficiency_aopc", "spearman_loo")
LIMITS = {"n": (1, 10_000), "steps": (1, 100), "n_boot": (100, 100_000), "max_tokens": (4, 512),
          "ig_steps": (1, 1024), "n_samples": (1, 4096), "batch_size": (1, 4096), "checkpoint_every": (1, 10_000)}


def _bounded(name: str, value: int) -> int:
    lo, hi = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise InputError(f"{name} must be an integer between {lo} and {hi}, got {value!r}")
    return int(value)


def _frac_name(f: float) -> str:
    return f"{round(f * 100):02d}"


# ---------------------------------------------------------------------------- data
@dataclass
class Example:
    id: str
    text: str
    label: str | None = None


def bbc_sentences(n: int | None = None, seed: int = 0, min_words: int = 8, max_words: int = 30) -> list[Example]:
    """Next-token prompts from BBC News (:func:`attnscope.datasets.load_bbc`): the articles in a seeded
    order, from each the first body sentence of ``min_words``..``max_words`` words that ends with a full
    stop and has no quotation mark, cut before its last word (the model predicts that word's first token)."""
    from ..datasets import load_bbc

    arts = list(load_bbc())
    random.Random(seed).shuffle(arts)
    out = []
    for a in arts:
        body = a.text.split("\n", 1)[1] if "\n" in a.text else a.text
        for s in re.split(r"(?<=[.!?])\s+", " ".join(body.split())):
            words = s.split()
            if (min_words <= len(words) <= max_words and s.endswith(".") and s[0].isupper()
                    and not re.search("[\"“”'‘’]", s)):
                out.append(Example(a.id, " ".join(words[:-1]), a.label))
                break
        if n is not None and len(out) >= n:
            break
    return out


def load_examples(data: str | Path, n: int | None = None, seed: int = 0) -> list[Example]:
    """Examples from ``data``: ``tweets-heldout`` (the held-out split of the packaged tweets, split by
    tweet id, the original row of each id, seeded order: :func:`attnscope.tasks.sentiment.sample_tweets`),
    ``bbc-sentences`` (:func:`bbc_sentences`), a ``.jsonl`` file (one object per line with ``text`` and
    optionally ``id`` and ``label``) or a text file (one example per non-empty line)."""
    if str(data) == "tweets-heldout":
        from ..tasks.sentiment import sample_tweets

        return [Example(t.id, t.text, t.label) for t in sample_tweets("test", None, seed)]
    if str(data) == "bbc-sentences":
        return bbc_sentences(None if n is None else 4 * n + 20, seed)
    p = Path(data)
    if not p.is_file():
        raise InputError(f"--data {str(data)[:200]!r}: no such file; give a .jsonl/.txt file or one of "
                         f"{', '.join(PACKAGED_DATA)}")
    if p.stat().st_size > 100_000_000:
        raise InputError(f"--data {p}: larger than 100 MB; give a smaller file")
    lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if p.suffix == ".jsonl":
            try:
                rec = json.loads(line)
            except ValueError:
                raise InputError(f"{p}:{i}: not a JSON object; write one {{\"text\": ...}} per line") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise InputError(f"{p}:{i}: needs a string field 'text'")
            out.append(Example(str(rec.get("id", i)), rec["text"], None if rec.get("label") is None else str(rec["label"])))
        else:
            out.append(Example(str(i), line.strip()))
    if not out:
        raise InputError(f"--data {p}: no examples (empty file)")
    return out


def select_examples(lm: LoadedModel, examples: Sequence[Example], n: int, max_tokens: int = 64,
                    min_removable: int = 2) -> tuple[list[Example], int]:
    """The first ``n`` examples with at most ``max_tokens`` tokens and at least ``min_removable``
    tokens that can be removed; returns them and how many were skipped on the way."""
    from .captum_methods import baseline_fixed

    chosen, skipped = [], 0
    for ex in examples:
        if len(chosen) >= n:
            break
        if not ex.text.strip():
            skipped += 1
            continue
        enc = lm.tokenizer(ex.text)
        ids = enc["input_ids"]
        special = lm.tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
        removable = len(ids) - sum(baseline_fixed(lm, [bool(s) for s in special]))
        if len(ids) > max_tokens or removable < min_removable:
            skipped += 1
            continue
        chosen.append(ex)
    return chosen, skipped


# ---------------------------------------------------------------------------- statistics
def bootstrap_ci(x: np.ndarray, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (Efron & Tibshirani 1993, §13.3), seeded; NaN for < 2 values."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for i in range(0, n_boot, 500):  # (b, n) index blocks keep memory bounded
        b = min(500, n_boot - i)
        means[i:i + b] = x[rng.integers(0, len(x), (b, len(x)))].mean(1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm 1979 step-down adjusted p-values (family-wise error), NaNs left as they are."""
    p = np.asarray(pvalues, float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def paired_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences a − b (pairs with a NaN dropped);
    1.0 when every difference is zero, NaN with fewer than 5 pairs."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    if len(d) < 5:
        return float("nan")
    if np.all(d == 0):
        return 1.0
    return float(stats.wilcoxon(d).pvalue)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman ρ (scipy); NaN when either side is constant or has < 3 values."""
    from scipy import stats

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


# ---------------------------------------------------------------------------- methods
def resolve_methods(methods: str | Sequence[str]) -> list[str]:
    """``"all"`` or names from :data:`.explanation.ALL_METHODS`; the baselines are always added."""
    from . import explanation

    registry = list(explanation.ALL_METHODS)
    if isinstance(methods, str):
        methods = registry if methods.strip() == "all" else [m.strip() for m in methods.split(",") if m.strip()]
    chosen = [m for m in BASELINES]
    for m in methods:
        if m not in registry and m not in BASELINES:
            raise UnknownNameError("method", m, list(BASELINES) + registry)
        if m not in chosen:
            chosen.append(m)
    return chosen


def _flags(e, ignore: Sequence[str]) -> list[str]:
    """Names of the checks this explanation failed (``Explanation.checks``: integrated gradients'
    completeness, AttnLRP's conservation; any other ``meta`` entry with ``ok: False``), else the warning
    lines (up to their first colon) that are not the model-wide ``ignore`` ones."""
    checks = getattr(e, "checks", None) or {}
    out = [f"{c.get('check', 'own')} check failed" for c in checks.values() if not c.get("ok", True)]
    out += [f"{k} failed" for k, v in e.meta.items() if k != "checks" and isinstance(v, dict) and v.get("ok") is False
            and not out]
    if not out:
        out = [w.split(":")[0][:80] for w in e.warnings if w not in ignore]
    return out


def _defined(lm: LoadedModel, methods: Sequence[str]) -> dict[str, str]:
    """{method: reason} for the registered methods the registry says are not defined for this model."""
    from . import explanation

    if not hasattr(explanation, "methods_for"):
        return {}
    usable = set(explanation.methods_for(lm))
    arch = type(lm.model).__name__
    return {m: f"not applicable: not defined for {arch} (explanation.methods_for)" for m in methods
            if m not in BASELINES and m != "random" and m not in usable}


@dataclass
class BenchmarkResult:
    """Per-example rows, the per-method summary, the paired tests and the verdict of one benchmark run."""

    rows: list[dict[str, Any]]
    methods: list[str]
    status: dict[str, str]  # method -> "ok" or "not applicable: <reason>"
    summary: list[dict[str, Any]]
    tests: list[dict[str, Any]]
    verdict: str
    fractions: np.ndarray  # curve x positions
    curves: dict[str, dict[str, np.ndarray]]  # "deletion"/"insertion" -> method -> mean curve
    meta: dict[str, Any] = field(default_factory=dict)

    def table_markdown(self) -> str:
        """Methods × metrics: mean [95 % CI], the number scored and flags."""
        head = ["method"] + [METRICS[m][0] + (" ↑" if METRICS[m][1] else " ↓") for m in METRICS] + ["n", "flags"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for s in self.summary:
            if s["status"] != "ok":
                lines.append(f"| {s['method']} | " + " | ".join(["–"] * len(METRICS)) + f" | 0 | {s['status']} |")
                continue
            cells = []
            for m in METRICS:
                v = s[m]
                cells.append("–" if not np.isfinite(v["mean"]) else
                             f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]" if m != "runtime_s" else
                             f"{v['mean']:.3f}")
            flag = []
            if s["flagged"]:
                flag.append(f"⚠ failed its check on {s['flagged']}/{s['tried']} ({s['flag']}); not scored there")
            if s["failed"]:
                flag.append(f"errored on {s['failed']}")
            lines.append(f"| {s['method']} | " + " | ".join(cells) + f" | {s['n']} | {'; '.join(flag)} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"methods": self.methods, "status": self.status, "summary": self.summary, "tests": self.tests,
                "verdict": self.verdict, "fractions": self.fractions.tolist(),
                "curves": {k: {m: v.tolist() for m, v in d.items()} for k, d in self.curves.items()},
                "meta": self.meta}

    def save(self, out: str | Path) -> dict[str, Path]:
        """Write ``scores.parquet`` (per example × method), ``summary.json``, ``table.md`` (table +
        verdict) and ``curves.png`` into ``out``; returns the paths."""
        from .._optional import require
        from .plots import plot_benchmark_curves

        pa = require("pyarrow", "corpus", "writing the benchmark's Parquet")
        pq = require("pyarrow.parquet", "corpus", "writing the benchmark's Parquet")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"parquet": out / "scores.parquet", "summary": out / "summary.json", "table": out / "table.md",
                 "figure": out / "curves.png"}
        rows = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()} for r in self.rows]
        pq.write_table(pa.Table.from_pylist(rows), paths["parquet"])
        paths["summary"].write_text(json.dumps(self.to_dict(), indent=1, default=float))
        paths["table"].write_text(self.table_markdown() + "\n\n" + self.verdict + "\n")
        plot_benchmark_curves(self, paths["figure"])
        return paths


def benchmark_faithfulness(lm: LoadedModel, examples: Sequence[Example | str], methods: str | Sequence[str] = "all", *,
                           steps: int = 10, fractions: Sequence[float] = ERASER_FRACTIONS,
                           replacement: str = "auto", absolute: bool = False, seed: int = 0, ig_steps: int = 32,
                           n_samples: int = 32, n_boot: int = 2000, batch_size: int = 64,
                           allow_random_head: bool = False,
                           progress: Callable[[int, int], None] | None = None,
                           checkpoint: Callable[[BenchmarkResult], None] | None = None,
                           checkpoint_every: int = 10, resume: BenchmarkResult | None = None) -> BenchmarkResult:
    """Score every method in ``methods`` on every example (see the module docstring); returns a
    :class:`BenchmarkResult`. The target of each example is the model's prediction (the predicted class,
    or a causal LM's predicted next token). ``checkpoint`` is called with the result of the examples
    done so far every ``checkpoint_every`` examples (the CLI writes its files there, so a long run leaves
    usable partial results). ``resume``: the result of a stopped run (:func:`load_result`) with the same
    model, methods, settings and first examples; its examples are kept, not scored again, and the run
    goes on from the next one, so the result equals an uninterrupted run's (times excepted)."""
    from scipy import stats  # noqa: F401  (fail early when scipy is missing)

    from .explanation import explain
    from .gradients import target_label

    steps, n_boot = _bounded("steps", steps), _bounded("n_boot", n_boot)
    ig_steps, n_samples = _bounded("ig_steps", ig_steps), _bounded("n_samples", n_samples)
    batch_size = _bounded("batch_size", batch_size)
    if replacement not in REPLACEMENTS:
        raise InputError(f"replacement must be one of {', '.join(REPLACEMENTS)}, got {replacement!r}")
    fractions = tuple(float(f) for f in fractions)
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise InputError("fractions must be in (0, 1]")
    examples = [e if isinstance(e, Example) else Example(str(i), e) for i, e in enumerate(examples)]
    if not examples:
        raise InputError("no examples to score")
    _bounded("n", len(examples))
    chosen = resolve_methods(methods)
    head_warnings = require_trained_head(lm, "the faithfulness benchmark", allow_random_head)
    status = {m: "ok" for m in chosen}
    status.update(_defined(lm, chosen))
    tried = {m: 0 for m in chosen}
    rows: list[dict[str, Any]] = []
    t_start, t_shared = time.perf_counter(), 0.0
    method_seconds = {m: 0.0 for m in chosen}
    replacement_token = None
    settings = {"model": lm.name, "replacement": replacement, "absolute": absolute, "steps": steps,
                "eraser_fractions": list(fractions), "ig_steps": ig_steps, "n_samples": n_samples, "seed": seed}
    start = 0
    if resume is not None:
        start = _check_resume(resume, chosen, settings, examples)
        rows = list(resume.rows)
        status.update({m: st for m, st in resume.status.items() if st != "ok"})
        tried.update({s["method"]: s["tried"] for s in resume.summary})
        method_seconds.update(resume.meta.get("method_s", {}))
        t_shared = resume.meta.get("shared_metric_s", 0.0)
        t_start -= resume.meta.get("wall_s", 0.0)
        replacement_token = resume.meta.get("replacement_token")

    def meta(done: int) -> dict[str, Any]:
        return {**settings, "n_examples": done, "n_requested": len(examples), "replacement_token": replacement_token,
                "n_boot": n_boot, "wall_s": time.perf_counter() - t_start, "shared_metric_s": t_shared,
                "method_s": dict(method_seconds), "warnings": head_warnings}

    for xi in range(start, len(examples)):
        ex = examples[xi]
        t0 = time.perf_counter()
        pert, tokens = Perturbation.of(lm, ex.text, replacement=replacement, batch_size=batch_size)
        loo = pert.leave_one_out()
        t_shared += time.perf_counter() - t0
        replacement_token = replacement_token or str(lm.tokenizer.convert_ids_to_tokens([pert.base_id])[0])
        common = {"example": xi, "id": ex.id, "text": ex.text, "label": ex.label, "target": pert.target,
                  "target_label": target_label(lm, pert.target), "p_target": pert.p_full, "n_tokens": len(pert.ids),
                  "n_removable": len(pert.candidates)}
        got: dict[str, tuple[np.ndarray, float, list[str]]] = {}
        for m in chosen:
            if status[m] != "ok":
                continue
            tried[m] += 1
            t0 = time.perf_counter()
            try:
                if m == "random":
                    s, flags = np.random.default_rng([seed, xi]).random(len(pert.ids)), []
                else:
                    e = explain(lm, ex.text, [m], target=pert.target, ig_steps=ig_steps, n_samples=n_samples,
                                seed=seed, allow_random_head=allow_random_head)
                    s, flags = np.asarray(e.scores[m], float), _flags(e, head_warnings)
                    if s.shape != pert.ids.shape or not np.all(np.isfinite(s[pert.candidates])):
                        raise InputError(f"{m} gave scores of shape {s.shape} (finite: "
                                         f"{bool(np.all(np.isfinite(s)))}) for {len(pert.ids)} tokens")
            except Exception as exc:  # noqa: BLE001 — a method unavailable for this model must not stop the run
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                if tried[m] == 1:
                    status[m] = f"not applicable: {reason}"
                else:
                    rows.append({**common, "method": m, "status": "failed", "reason": reason})
                continue
            dt = time.perf_counter() - t0
            method_seconds[m] += dt
            got[m] = (s, dt, flags)
        t0 = time.perf_counter()
        reqs = {m: pert.requests(s, steps=steps, fractions=fractions, absolute=absolute) for m, (s, _, _) in got.items()}
        pert.oracle([r for q in reqs.values() for rs in q.values() for r in rs])  # every method's inputs, batched
        cand = pert.candidates
        for m, (s, dt, flags) in got.items():
            r = pert.measure(reqs[m])
            a = np.abs(s[cand]) if absolute else s[cand]
            row = {**common, "method": m, "status": "flagged" if flags else "ok", "reason": "; ".join(flags) or None,
                   "aopc_deletion": r["aopc_deletion"], "aopc_insertion": r["aopc_insertion"],
                   "comprehensiveness_aopc": r["comprehensiveness_aopc"], "sufficiency_aopc": r["sufficiency_aopc"],
                   **{f"comprehensiveness_{_frac_name(f)}": float(v) for f, v in zip(fractions, r["comprehensiveness"])},
                   **{f"sufficiency_{_frac_name(f)}": float(v) for f, v in zip(fractions, r["sufficiency"])},
                   "spearman_loo": spearman(a, loo[cand]), "runtime_s": dt,
                   "deletion_curve": np.asarray(r["deletion_curve"]), "insertion_curve": np.asarray(r["insertion_curve"])}
            rows.append(row)
        t_shared += time.perf_counter() - t0
        if progress is not None:
            progress(xi + 1, len(examples))
        done = xi + 1
        if checkpoint is not None and done < len(examples) and done % max(1, checkpoint_every) == 0:
            checkpoint(summarise(rows, chosen, status, tried, steps=steps, fractions=fractions, n_boot=n_boot,
                                 seed=seed, meta=meta(done)))

    return summarise(rows, chosen, status, tried, steps=steps, fractions=fractions, n_boot=n_boot, seed=seed,
                     meta=meta(len(examples)))


def _check_resume(previous: BenchmarkResult, methods: Sequence[str], settings: dict[str, Any],
                  examples: Sequence[Example]) -> int:
    """How many examples a stopped run finished, after checking that it is this run's beginning (same
    methods, settings and first examples); InputError saying what differs otherwise."""
    start_over = "; use another --out, or --overwrite to start over"
    if list(previous.methods) != list(methods):
        raise InputError(f"the run to resume scored other methods ({', '.join(previous.methods)})" + start_over)
    for k, v in settings.items():
        if k in previous.meta and previous.meta[k] != v:
            raise InputError(f"the run to resume used {k}={previous.meta[k]!r}, this one {v!r}" + start_over)
    done = int(previous.meta.get("n_examples", 0))
    if done > len(examples):
        raise InputError(f"the run to resume has {done} examples, more than the {len(examples)} asked" + start_over)
    ids = {r["example"]: (r["id"], r["text"]) for r in previous.rows}
    for i in range(done):
        if ids.get(i, (examples[i].id, examples[i].text)) != (examples[i].id, examples[i].text):
            raise InputError(f"example {i} of the run to resume is not example {i} of this data (id "
                             f"{str(ids[i][0])[:40]!r}): the data, --seed or --max-tokens changed" + start_over)
    return done


def load_result(out: str | Path) -> BenchmarkResult:
    """The result a run wrote into ``out`` (``scores.parquet`` + ``summary.json``), summarised again — e.g.
    the examples a stopped run had finished at its last checkpoint."""
    from .._optional import require

    pq = require("pyarrow.parquet", "corpus", "reading the benchmark's Parquet")
    out = Path(out)
    if not (out / "scores.parquet").is_file() or not (out / "summary.json").is_file():
        raise InputError(f"{out}: no scores.parquet and summary.json (the files `attnscope faithfulness` writes)")
    d = json.loads((out / "summary.json").read_text())
    rows = pq.read_table(out / "scores.parquet").to_pylist()
    for r in rows:
        for k in ("deletion_curve", "insertion_curve"):
            if r.get(k) is not None:
                r[k] = np.asarray(r[k], float)
        for k in METRICS:
            if r.get(k) is None:
                r[k] = float("nan")
    tried = {s["method"]: s["tried"] for s in d["summary"]}
    meta = d["meta"]
    meta["n_examples"] = 1 + max((r["example"] for r in rows), default=-1)
    return summarise(rows, d["methods"], d["status"], tried, steps=meta["steps"], fractions=meta["eraser_fractions"],
                     n_boot=meta["n_boot"], meta=meta)


def summarise(rows: list[dict[str, Any]], methods: Sequence[str], status: dict[str, str], tried: dict[str, int], *,
              steps: int, fractions: Sequence[float], n_boot: int = 2000, seed: int = 0, alpha: float = 0.05,
              meta: dict[str, Any] | None = None) -> BenchmarkResult:
    """Means with bootstrap CIs, Holm-corrected Wilcoxon tests and the verdict from per-example ``rows``."""
    n_ex = 1 + max((r["example"] for r in rows), default=-1)
    scored = {m: [r for r in rows if r["method"] == m and r["status"] == "ok"] for m in methods}
    # (method, metric) -> per-example values (NaN where not scored), aligned by example index
    per: dict[tuple[str, str], np.ndarray] = {}
    for m in methods:
        for k in METRICS:
            v = np.full(n_ex, np.nan)
            for r in scored[m]:
                v[r["example"]] = r[k]
            per[m, k] = v
    summary = []
    for m in methods:
        flagged = [r for r in rows if r["method"] == m and r["status"] == "flagged"]
        s: dict[str, Any] = {"method": m, "status": status[m], "n": len(scored[m]), "tried": tried.get(m, 0),
                             "flagged": len(flagged), "failed": sum(r["method"] == m and r["status"] == "failed" for r in rows),
                             "flag": ", ".join(sorted({r["reason"] for r in flagged}))[:200]}
        for k in METRICS:
            v = per[m, k]
            lo, hi = bootstrap_ci(v, n_boot=n_boot, seed=seed)
            fin = v[np.isfinite(v)]
            s[k] = {"mean": float(fin.mean()) if len(fin) else float("nan"), "low": lo, "high": hi, "n": int(len(fin))}
        summary.append(s)
    live = [s["method"] for s in summary if s["status"] == "ok" and s["n"] >= 5]
    tests = []
    for k in TESTED:
        fam = []
        for i, a in enumerate(live):
            for b in live[i + 1:]:
                x, y = per[a, k], per[b, k]
                both = np.isfinite(x) & np.isfinite(y)
                fam.append({"metric": k, "a": a, "b": b, "n": int(both.sum()),
                            "mean_diff": float(np.mean(x[both] - y[both])) if both.any() else float("nan"),
                            "p": paired_test(x, y)})
        for t, q in zip(fam, holm([t["p"] for t in fam])):
            t["p_holm"] = float(q)
            t["significant"] = bool(np.isfinite(q) and q < alpha)
        tests += fam
    curves: dict[str, dict[str, np.ndarray]] = {"deletion": {}, "insertion": {}}
    for m in methods:
        for kind in curves:
            cs = [r[f"{kind}_curve"] for r in scored[m]]
            if cs:
                curves[kind][m] = np.mean(cs, 0)
    means = {(s["method"], k): s[k]["mean"] for s in summary for k in METRICS if s["status"] == "ok"}
    eraser = {(m, kind, f): float(np.nanmean([r[f"{kind}_{_frac_name(f)}"] for r in scored[m]])) if scored[m] else float("nan")
              for m in methods for kind in ("comprehensiveness", "sufficiency") for f in fractions}
    result = BenchmarkResult(rows=rows, methods=list(methods), status=status, summary=summary, tests=tests, verdict="",
                             fractions=np.linspace(0, 1, steps + 1), curves=curves, meta=dict(meta or {}))
    result.meta["eraser_means"] = {f"{m}|{kind}|{_frac_name(f)}": v for (m, kind, f), v in eraser.items()}
    result.verdict = verdict(summary, tests, means, alpha=alpha)
    return result


def verdict(summary: list[dict[str, Any]], tests: list[dict[str, Any]], means: dict[tuple[str, str], float],
            alpha: float = 0.05) -> str:
    """Plain-language reading of the table: per metric the best method, which methods beat the random
    floor and which differences are significant (Wilcoxon signed-rank, Holm-corrected, α = ``alpha``)."""
    sig = {(t["metric"], t["a"], t["b"]): t for t in tests} | {(t["metric"], t["b"], t["a"]): t for t in tests}
    live = [s["method"] for s in summary if s["status"] == "ok" and s["n"] >= 5]
    lines = [f"Verdict (paired Wilcoxon signed-rank tests on the examples both methods scored, Holm-corrected over "
             f"the method pairs of each metric, α = {alpha}; 95 % percentile bootstrap intervals):"]
    if len(live) < 2:
        lines.append("- fewer than two methods were scored on at least 5 examples: nothing to compare.")
    n_pairs = len(live) * (len(live) - 1) // 2
    n_min = min((t["n"] for t in tests), default=0)
    if n_pairs and n_min and 2.0 ** (1 - n_min) * n_pairs >= alpha:  # exact Wilcoxon: smallest two-sided p = 2 / 2^n
        lines.append(f"- NOTE: with {n_min} examples and {n_pairs} method pairs no difference can reach significance "
                     f"(the smallest Wilcoxon p, 2/2^{n_min}, times {n_pairs} pairs is ≥ {alpha}); 'not significantly "
                     "different' below means 'too few examples to tell', not 'equal'.")
    for k in TESTED if len(live) >= 2 else ():
        label, higher = METRICS[k]
        order = sorted(live, key=lambda m: -means[m, k] if higher else means[m, k])
        order = [m for m in order if np.isfinite(means[m, k])]
        if not order:
            continue
        best = order[0]
        tied = [m for m in order[1:] if not sig.get((k, best, m), {}).get("significant", False)]
        better = "higher" if higher else "lower"
        s = f"- {label} ({better} is more faithful): best {best} ({means[best, k]:.3f})"
        s += (f"; not significantly different from it: {', '.join(tied)}" if tied else
              "; significantly better than every other method")
        if "random" in live and k != "spearman_loo":
            beat = [m for m in order if m != "random" and sig.get((k, m, "random"), {}).get("significant")
                    and ((means[m, k] > means["random", k]) == higher)]
            worse = [m for m in order if m != "random" and sig.get((k, m, "random"), {}).get("significant")
                     and ((means[m, k] > means["random", k]) != higher)]
            floor = [m for m in order if m != "random" and m not in beat and m not in worse]
            s += f". Better than random: {', '.join(beat) or 'none'}"
            if floor:
                s += f"; indistinguishable from random: {', '.join(floor)}"
            if worse:
                s += f"; significantly WORSE than random: {', '.join(worse)}"
        lines.append(s + ".")
    for s in summary:
        if s["status"] != "ok":
            lines.append(f"- {s['method']}: {s['status']}.")
        elif s["flagged"]:
            lines.append(f"- {s['method']} failed its own check ({s['flag']}) on {s['flagged']} of {s['tried']} "
                         "examples; those results are not attributions and are left out of its numbers.")
    return "\n".join(lines)
