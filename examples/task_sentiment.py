"""Sentiment: fine-tune MiniLM on the packaged tweets (once, cached) and analyse its attention. Offline.

    python examples/task_sentiment.py [--quick]

--quick trains on 300 tweets for 20 steps (a smoke run, accuracy near chance); the default budget
(2,000 tweets, 1 epoch, 64 tokens) takes a few minutes on 2 free cores and reaches ~0.55 held-out.
"""

import sys
from pathlib import Path

from attnscope.tasks.sentiment import (TrainConfig, analyze_sentiment, default_model_dir, load_sentiment_model,
                                       sample_tweets, train_sentiment)

quick = "--quick" in sys.argv
out = Path("attnscope-out/task_sentiment")
model_dir = out / "model-quick" if quick else default_model_dir()
if not (model_dir / "config.json").is_file():
    cfg = TrainConfig(n_train=300, n_test=100, max_steps=20) if quick else TrainConfig()
    report = train_sentiment(cfg, model_dir, progress=lambda s, n, loss: print(f"\rstep {s}/{n} loss {loss:.3f}", end=""))
    print(f"\nheld-out accuracy {report.accuracy:.3f} ({report.n_test} tweets, split by tweet id)")
lm = load_sentiment_model(model_dir)
items = sample_tweets("test", 60 if quick else 150, seed=1)
res = analyze_sentiment(lm, items, out_dir=out, explain=["I love this game, best update ever!",
                                                         "This is the worst service, never again."])
print(f"accuracy on {res.n} held-out tweets: {res.accuracy:.3f}")
for label, words in res.tokens.by_group.items():
    print(label, [w for w, _, _ in words[:6]])
for e in res.explanations:
    print(f"{e.text!r} -> {e.predicted} (p={e.probability:.2f}); rollout vs IG Spearman {e.spearman:+.2f}")
print("figures:", *res.figures.values(), sep="\n  ")
