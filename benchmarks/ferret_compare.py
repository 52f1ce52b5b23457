"""ferret-xai's comprehensiveness / sufficiency beside attnscope's, on the examples of a finished
`attnscope faithfulness` run of the fine-tuned sentiment classifier.

ferret is never an attnscope dependency: run this with the Python of a throwaway environment that has it,
e.g. ``python -m venv --system-site-packages /tmp/ferret-venv && /tmp/ferret-venv/bin/pip install --no-deps
ferret-xai==0.4.2`` (+ the packages its modules import), then

    /tmp/ferret-venv/bin/python benchmarks/ferret_compare.py --run RUN_DIR --n 20 --out ferret.md

For ferret's two gradient explainers (gradient × input, integrated gradients × input, its defaults) it
prints, as means over the first ``--n`` examples of the run (each explained for the run's target):

- ferret's own AOPC comprehensiveness / sufficiency with its default settings (tokens *deleted* and the
  text decoded and re-tokenised, thresholds 10 %..100 % of the tokens, only positively scored tokens);
- ferret's metrics at the ERASER fractions 1..50 % with its replacement option (``remove_tokens=False``:
  [MASK]); ``only_pos=False`` (all tokens ranked) fails in ferret 0.4.2 under numpy 2 (it compares an array with ``[]``);
- attnscope's metrics (:mod:`attnscope.attribution.aopc`) on ferret's *scores* (replacement [PAD],
  ERASER fractions, signed ranking) — so the explainer and the metric definitions can be told apart;
- attnscope's own ``integrated_gradients`` row of the run on the same examples.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="output directory of `attnscope faithfulness`")
    ap.add_argument("--n", type=int, default=20, help="examples (the first n of the run)")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    a = ap.parse_args()
    if not 1 <= a.n <= 1000:
        raise SystemExit("--n must be between 1 and 1000")

    import pyarrow.parquet as pq
    import torch
    import transformers as tf
    from ferret import GradientExplainer, IntegratedGradientExplainer
    from ferret.evaluators.faithfulness_measures import AOPC_Comprehensiveness_Evaluation, AOPC_Sufficiency_Evaluation

    from attnscope.attribution.aopc import ERASER_FRACTIONS, Perturbation
    from attnscope.models import wrap_model
    from attnscope.tasks.sentiment import default_model_dir

    rows = pq.read_table(a.run / "scores.parquet").to_pylist()
    examples = sorted({r["example"]: (r["text"], r["target"]) for r in rows}.items())[: a.n]
    ours_ig = {r["example"]: r for r in rows if r["method"] == "integrated_gradients" and r["status"] == "ok"}
    d = str(default_model_dir())
    model = tf.AutoModelForSequenceClassification.from_pretrained(d).eval()
    tok = tf.AutoTokenizer.from_pretrained(d)
    lm = wrap_model(model, tok, name="sentiment-minilm", kind="encoder")
    explainers = {"gradient × input": GradientExplainer(model, tok, multiply_by_inputs=True),
                  "integrated gradients × input": IntegratedGradientExplainer(model, tok, multiply_by_inputs=True)}
    comp, suff = AOPC_Comprehensiveness_Evaluation(model, tok), AOPC_Sufficiency_Evaluation(model, tok)
    eraser_args = {"remove_first_last": True, "only_pos": True,  # only_pos=False fails under numpy 2 (ferret pins numpy<2)
                   "removal_args": {"remove_tokens": False, "based_on": "perc", "thresholds": list(ERASER_FRACTIONS)}}
    res: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, float] = {}

    def add(key, c, s):
        res.setdefault(key, {"comp": [], "suff": []})
        res[key]["comp"].append(float(c))
        res[key]["suff"].append(float(s))

    for xi, (text, target) in examples:
        pert, _ = Perturbation.of(lm, text, replacement="auto", target=target)
        for name, ex in explainers.items():
            t0 = time.perf_counter()
            e = ex(text, target)
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
            add(f"ferret {name}, ferret defaults", comp.compute_evaluation(e, target).score, suff.compute_evaluation(e, target).score)
            add(f"ferret {name}, ferret metrics at ERASER fractions, [MASK], positive tokens only",
                comp.compute_evaluation(e, target, **eraser_args).score, suff.compute_evaluation(e, target, **eraser_args).score)
            s = np.asarray(e.scores, float)
            if s.shape == pert.ids.shape:
                m = pert.measure(pert.requests(s, steps=10, fractions=ERASER_FRACTIONS))
                add(f"ferret {name} scores, attnscope metrics ([PAD], ERASER fractions)", m["comprehensiveness_aopc"],
                    m["sufficiency_aopc"])
        if xi in ours_ig:
            add("attnscope integrated_gradients, attnscope metrics", ours_ig[xi]["comprehensiveness_aopc"],
                ours_ig[xi]["sufficiency_aopc"])
    lines = [f"ferret-xai on {len(examples)} examples (the first of the run in {a.run.name}); means ± standard error",
             "", "| explainer and metric settings | comprehensiveness ↑ | sufficiency ↓ | n |", "|---|---|---|---|"]
    for k, v in res.items():
        c, s = np.asarray(v["comp"]), np.asarray(v["suff"])
        se = lambda x: x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")  # noqa: E731
        lines.append(f"| {k} | {c.mean():.3f} ± {se(c):.3f} | {s.mean():.3f} ± {se(s):.3f} | {len(c)} |")
    lines.append("")
    lines.append("ferret seconds per example: " + ", ".join(f"{k} {v / len(examples):.2f}" for k, v in seconds.items()))
    import ferret

    lines.append(f"versions: ferret-xai {getattr(ferret, '__version__', '0.4.2')}, transformers {tf.__version__}, "
                 f"torch {torch.__version__}")
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
        (a.out.with_suffix(".json")).write_text(json.dumps(res))


if __name__ == "__main__":
    main()
