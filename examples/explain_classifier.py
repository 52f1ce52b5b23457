"""Explain a classifier's prediction with attention, gradients, Captum and interventions.

Runs offline on the packaged MiniLM with a (seeded) random classification head — swap in your own
fine-tuned checkpoint path for meaningful labels. Writes PNGs to ./explain-out/.

    python examples/explain_classifier.py [--small]

--small: the gradient methods only (no LIME, SHAP, occlusion), fewer steps, one text for head importance
(a smoke run, seconds).
"""

import sys
from pathlib import Path

import torch
import transformers

from attnscope import load_model
from attnscope.attribution.explanation import ALL_METHODS
from attnscope.attribution import ZeroHeads, explain, faithfulness, head_importance, intervene, token_interventions
from attnscope.attribution.plots import plot_explanation, plot_faithfulness, plot_head_heatmap

small = "--small" in sys.argv
steps = 8 if small else 32
out = Path("explain-out")
torch.manual_seed(0)
lm = load_model("minilm", model_class=transformers.AutoModelForSequenceClassification)
text = "The acting was wooden but the soundtrack was wonderful."

# MiniLM has no classification head: explain refuses a random one unless allowed, and then says so loudly.
methods = ("attention", "rollout", "attn_x_grad", "chefer", "integrated_gradients") if small else ALL_METHODS
e = explain(lm, text, methods, ig_steps=steps, n_samples=steps, allow_random_head=True)
for w in e.warnings:
    print("WARNING:", w)
print(f"prediction {e.target_label} (p={e.probability:.3f}); IG delta {e.meta['ig_delta']:.2e} "
      f"(completeness {'ok' if e.completeness_ok else 'FAILED'})")
for r in e.agreement:
    print(f"  {r['a']:>9} vs {r['b']:<21} spearman {r['spearman']:+.2f}  kendall {r['kendall']:+.2f}  "
          f"top-3 {r['topk_overlap']:.2f}")
plot_explanation(e, out / "explain.png")

f = faithfulness(lm, text, e.scores, steps=4 if small else 10)
print("AOPC (deletion):", {k: round(v, 4) for k, v in f.aopc["deletion"].items()})
plot_faithfulness(f, out / "faithfulness.png")

print("removing all heads of the last layer:", {k: v for k, v in intervene(lm, text, [ZeroHeads({5: None})]).items()
                                              if k in ("kl", "prob_shift", "logit_diff")})
print("most influential words (masked):", [(r["word"], round(r["kl"], 5)) for r in token_interventions(lm, text)[:3]])

texts = [text] if small else [text, "I loved every minute of it.", "A dull, lifeless plot."]
hs = head_importance(lm, texts, method="gradient")
plot_head_heatmap(hs["gradient"], out / "heads_gradient.png", title="gradient head importance (Michel et al. 2019)")
print(f"wrote {out}/")
