"""Sentiment: fine-tune MiniLM on the packaged tweets (once, cached) and analyse its attention. Offline.

    python examples/task_sentiment.py [--quick | --small]

--quick trains on 300 tweets for 20 steps (a smoke run, accuracy near chance); --small trains on 64 tweets
for 4 steps and analyses 16 (seconds, to check that it runs); the default budget
(2,000 tweets, 1 epoch, 64 tokens) takes about 2.5 minutes on one free core and reaches ~0.57 held out by
tweet id (docs/tasks.md). A cached model is reused only if it was trained with the same settings.
"""

import sys
from pathlib import Path

from attnscope.tasks.sentiment import (TrainConfig, analyze_sentiment, default_model_dir, ensure_sentiment_model,
                                       load_sentiment_model, sample_tweets)

small = "--small" in sys.argv
quick = "--quick" in sys.argv or small
out = Path("attnscope-out/task_sentiment")
model_dir = out / ("model-small" if small else "model-quick") if quick else default_model_dir()
cfg = (TrainConfig(n_train=64, n_test=16, max_steps=4, max_length=32) if small
       else TrainConfig(n_train=300, n_test=100, max_steps=20) if quick else TrainConfig())
# trains only when the cached model was not made with exactly these settings by the current recipe
report = ensure_sentiment_model(cfg, model_dir,
                                progress=lambda s, n, loss: print(f"\rstep {s}/{n} loss {loss:.3f}", end=""))
if report is not None:
    print(f"\nheld-out accuracy {report.accuracy:.3f} ({report.n_test} tweets, split by tweet id)")
lm = load_sentiment_model(model_dir)
items = sample_tweets("test", 16 if small else 60 if quick else 150, seed=1)
res = analyze_sentiment(lm, items, out_dir=out, ig_steps=8 if small else 32,
                        explain=["I love this game, best update ever!"] if small else
                        ["I love this game, best update ever!", "This is the worst service, never again."])
print(f"accuracy on {res.n} held-out tweets: {res.accuracy:.3f}")
for label, words in res.tokens.by_group.items():
    print(label, [w for w, _, _ in words[:6]])
for e in res.explanations:
    print(f"{e.text!r} -> {e.predicted} (p={e.probability:.2f}); rollout vs IG Spearman {e.spearman:+.2f}")
print("figures:", *res.figures.values(), sep="\n  ")
