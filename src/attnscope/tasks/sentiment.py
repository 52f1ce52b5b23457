"""Sentiment: fine-tune MiniLM on the packaged tweets and look at what its attention does.

- :func:`train_sentiment` fine-tunes all-MiniLM-L6-v2 (the packaged ``minilm``) with a classification
  head on the Twitter entity-sentiment set, split *by tweet id* (:func:`attnscope.datasets.load_tweets`),
  and caches it with ``save_pretrained`` (safetensors) under
  ``attnscope_cache_dir()/models/sentiment-minilm``; it reports the held-out accuracy. The report records
  a key of the training settings (:meth:`TrainConfig.key`), so :func:`ensure_sentiment_model` retrains a
  cached model made with other settings or an older recipe instead of silently reusing it.
- :func:`class_attention_patterns`: the attention map of each example, length-normalised onto a fixed
  grid ([CLS] | content bins | [SEP]), averaged per class (raw maps of different lengths cannot be averaged
  position by position; here every example lands on the same grid).
- :func:`important_tokens`: words ranked by the attention they *receive* (Clark et al. 2019, "What
  does BERT look at?", use the same received-attention view), as a multiple of the uniform share.
- :func:`explain_text`: attention rollout from [CLS] (Abnar & Zuidema 2020) beside integrated gradients
  (Sundararajan et al. 2017, via Captum) for one prediction, with their rank correlation.
- :func:`misclassified`: held-out tweets the model gets wrong, most confident first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..devices import model_device, model_inputs
from ..errors import InputError, ModelLoadError
from ..models import CATALOGUE, LoadedModel, attnscope_cache_dir, wrap_model

MODEL_NAME = "sentiment-minilm"
REPORT_FILE = "attnscope_sentiment.json"
# Bump when the training code changes what a given TrainConfig produces: cached models made by an older
# recipe are then retrained by ensure_sentiment_model (and load_sentiment_model warns about them).
# 1: one random row per tweet id; 2: the original (first) row per id.
RECIPE_VERSION = 2
ROWS = ("first", "random")

log = logging.getLogger(__name__)


def default_model_dir() -> Path:
    """Where the fine-tuned classifier is cached: ``attnscope_cache_dir()/models/sentiment-minilm``."""
    return attnscope_cache_dir() / "models" / MODEL_NAME


# ---------------------------------------------------------------------------- data
def sample_tweets(split: str, n: int | None, seed: int = 0, labels: Sequence[str] | None = None,
                  row: str = "first") -> list:
    """``n`` distinct tweets of a split (one row per tweet id, so paraphrases don't repeat), shuffled.

    The split itself is by tweet id (:func:`attnscope.datasets.load_tweets`), so no id is in both.
    Each id has six rows: the first (in file order) is the original tweet, the other five are machine
    paraphrases of it, some cut down to a word or two ("was", "the", "<unk>"): 16% of the sixth rows have
    at most two words against 5% of the first. ``row="first"`` takes the original; ``row="random"`` one
    row at random (the recipe before version 2, noisier for training and for measuring).
    """
    if row not in ROWS:
        raise InputError(f"row must be one of {', '.join(ROWS)}, got {row!r}")
    from ..datasets import load_tweets

    rows = load_tweets(split=split)
    if labels is not None:
        unknown = set(labels) - set(rows.labels())
        if unknown:
            raise InputError(f"unknown label(s) {sorted(unknown)}; the tweets have labels {', '.join(rows.labels())}")
        rows = [r for r in rows if r.label in set(labels)]
    by_id: dict[str, list] = defaultdict(list)
    for r in rows:
        by_id[r.id].append(r)
    rng = random.Random(seed)
    ids = sorted(by_id, key=lambda s: (len(s), s))
    rng.shuffle(ids)
    chosen = ids[: (len(ids) if n is None else n)]
    picked = [by_id[i][0] for i in chosen] if row == "first" else [rng.choice(by_id[i]) for i in chosen]
    return picked


# ---------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    """Fine-tuning budget. The defaults train in about 2.5 minutes on one CPU core (docs/tasks.md has the
    measurements behind them: the first row of each id, encoder lr 1e-4, head lr 1e-3)."""

    n_train: int = 2000
    n_test: int = 500
    epochs: float = 1.0
    max_length: int = 64
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 0
    max_steps: int | None = None  # stop after this many optimiser steps (tests)
    row: str = "first"  # which row of each tweet id: "first" (the original tweet) or "random" (a paraphrase)
    head_lr: float | None = 1e-3  # learning rate of the new classification head (None: ``lr``)

    def validate(self) -> None:
        for name in ("n_train", "n_test", "max_length", "batch_size"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.epochs <= 0 or self.lr <= 0 or (self.head_lr is not None and self.head_lr <= 0):
            raise InputError("epochs, lr and head_lr must be positive")
        if self.row not in ROWS:
            raise InputError(f"row must be one of {', '.join(ROWS)}, got {self.row!r}")

    def key(self) -> str:
        """A short hash of every setting plus :data:`RECIPE_VERSION`: equal keys, same training run."""
        blob = json.dumps({"recipe": RECIPE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class TrainReport:
    accuracy: float
    per_class_accuracy: dict[str, float]
    confusion: list[list[int]]
    labels: list[str]
    n_train: int
    n_test: int
    steps: int
    seconds: float  # wall-clock seconds of training + evaluation
    path: str
    config: dict[str, Any] = field(default_factory=dict)
    truncated_train: int = 0
    cpu_seconds: float = 0.0  # CPU seconds of this process over the same span (= wall time on one free core)
    key: str = ""  # TrainConfig.key() of the settings this model was trained with
    recipe: int = RECIPE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def base_classifier(num_labels: int, labels: Sequence[str], base: str | None = None):
    """(model, tokenizer): MiniLM (or ``base``, a local dir) with a fresh classification head."""
    import transformers as tf

    path = base or CATALOGUE["minilm"].model_dir()
    if path is None:
        raise ModelLoadError(f"fine-tuning needs MiniLM: run `{CATALOGUE['minilm'].install_hint()}`")
    model = tf.AutoModelForSequenceClassification.from_pretrained(
        str(path), num_labels=num_labels, id2label=dict(enumerate(labels)),
        label2id={l: i for i, l in enumerate(labels)}, attn_implementation="sdpa", dtype=torch.float32,
        trust_remote_code=False)
    tok = tf.AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    return model, tok


def _batches(n: int, size: int, rng: random.Random | None) -> list[list[int]]:
    idx = list(range(n))
    if rng is not None:
        rng.shuffle(idx)
    return [idx[i:i + size] for i in range(0, n, size)]


def fine_tune(model, tokenizer, texts: Sequence[str], labels: Sequence[int], cfg: TrainConfig,
              progress: Callable[[int, int, float], None] | None = None) -> int:
    """Plain AdamW fine-tuning with linear warm-up/decay; returns the number of optimiser steps."""
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    steps_per_epoch = math.ceil(len(texts) / cfg.batch_size)
    total = max(1, int(round(cfg.epochs * steps_per_epoch)))
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    head = "classifier."  # the freshly initialised head (BertForSequenceClassification and kin)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    body = [(n, p) for n, p in params if not (cfg.head_lr is not None and n.startswith(head))]
    groups = [
        {"params": [p for n, p in body if not any(k in n for k in no_decay)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in body if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    if cfg.head_lr is not None:
        groups.append({"params": [p for n, p in params if n.startswith(head)], "weight_decay": 0.0,
                       "lr": cfg.head_lr})
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
    model.train()
    step = 0
    y_all = torch.tensor(list(labels), device=model_device(model))  # labels follow the model's device
    while step < total:
        for batch in _batches(len(texts), cfg.batch_size, rng):
            enc = tokenizer([texts[i] for i in batch], truncation=True, max_length=cfg.max_length, padding=True,
                            return_tensors="pt")
            out = model(**model_inputs(dict(enc), model), labels=y_all[batch])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if progress is not None:
                progress(step, total, float(out.loss.detach()))
            if step >= total:
                break
    model.eval()
    return step


@torch.no_grad()
def predict_proba(model, tokenizer, texts: Sequence[str], max_length: int = 128, batch_size: int = 32) -> np.ndarray:
    """Class probabilities (text, class) of a sequence classifier, in batches (right padding)."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[i:i + batch_size]), truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        out.append(torch.softmax(model(**model_inputs(dict(enc), model)).logits.float(), -1).cpu().numpy())  # (B, C)
    return np.concatenate(out) if out else np.zeros((0, model.config.num_labels))


def evaluate(model, tokenizer, items: Sequence, labels: Sequence[str], max_length: int) -> dict[str, Any]:
    probs = predict_proba(model, tokenizer, [x.text for x in items], max_length)
    y = np.array([labels.index(x.label) for x in items])
    pred = probs.argmax(-1)
    conf = np.zeros((len(labels), len(labels)), dtype=int)
    for a, b in zip(y, pred):
        conf[a, b] += 1
    per = {l: float((pred[y == i] == i).mean()) if (y == i).any() else float("nan") for i, l in enumerate(labels)}
    return {"accuracy": float((pred == y).mean()) if len(y) else float("nan"), "per_class_accuracy": per,
            "confusion": conf.tolist(), "probs": probs, "y": y}


def train_sentiment(cfg: TrainConfig | None = None, out_dir: str | Path | None = None, *, base: str | None = None,
                    progress: Callable[[int, int, float], None] | None = None) -> TrainReport:
    """Fine-tune MiniLM on ``cfg.n_train`` training tweets, evaluate on ``cfg.n_test`` held-out tweets
    (disjoint tweet ids), save the model (safetensors) and a JSON report into ``out_dir``."""
    from ..datasets import TWEET_LABELS

    cfg = cfg or TrainConfig()
    cfg.validate()
    labels = list(TWEET_LABELS)
    train = sample_tweets("train", cfg.n_train, cfg.seed, row=cfg.row)
    test = sample_tweets("test", cfg.n_test, cfg.seed + 1, row=cfg.row)
    if {x.id for x in train} & {x.id for x in test}:  # guaranteed by load_tweets; checked because it matters
        raise RuntimeError("train and test share tweet ids")
    model, tok = base_classifier(len(labels), labels, base)
    truncated = sum(len(tok(x.text)["input_ids"]) > cfg.max_length for x in train)
    t0, c0 = time.perf_counter(), time.process_time()
    steps = fine_tune(model, tok, [x.text for x in train], [labels.index(x.label) for x in train], cfg, progress)
    ev = evaluate(model, tok, test, labels, max(cfg.max_length, 128))
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    out = Path(out_dir) if out_dir is not None else default_model_dir()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    report = TrainReport(accuracy=ev["accuracy"], per_class_accuracy=ev["per_class_accuracy"],
                         confusion=ev["confusion"], labels=labels, n_train=len(train), n_test=len(test), steps=steps,
                         seconds=seconds, path=str(out), config=asdict(cfg), truncated_train=truncated,
                         cpu_seconds=cpu_seconds, key=cfg.key())
    (out / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2))
    return report


def cached_report(path: str | Path | None = None) -> dict[str, Any] | None:
    """The JSON report saved beside a trained classifier (None when there is none or it is unreadable)."""
    p = (Path(path) if path is not None else default_model_dir()) / REPORT_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def stale_reason(path: str | Path | None, cfg: TrainConfig) -> str | None:
    """Why the model at ``path`` (default: the cache) is not the one ``cfg`` would train; None if it is."""
    p = Path(path) if path is not None else default_model_dir()
    if not (p / "config.json").is_file():
        return f"no model at {p}"
    rep = cached_report(p)
    if rep is None:
        return f"no readable {REPORT_FILE} beside the model at {p}"
    if rep.get("key") == cfg.key():
        return None
    if rep.get("recipe", 1) != RECIPE_VERSION:
        return f"the model at {p} was trained by recipe {rep.get('recipe', 1)}, the current one is {RECIPE_VERSION}"
    want, have = asdict(cfg), rep.get("config", {})
    diff = [f"{k}={have.get(k)!r} (want {v!r})" for k, v in want.items() if have.get(k) != v]
    return f"the model at {p} was trained with other settings: " + (", ".join(diff) or "unknown")


def ensure_sentiment_model(cfg: TrainConfig | None = None, out_dir: str | Path | None = None, *,
                           base: str | None = None, retrain: bool = False,
                           progress: Callable[[int, int, float], None] | None = None) -> TrainReport | None:
    """Train into ``out_dir`` (default: the cache) unless the model there was trained with exactly ``cfg``
    by the current recipe. Returns the new report, or None when the cached model was reused."""
    cfg = cfg or TrainConfig()
    reason = "retrain requested" if retrain else stale_reason(out_dir, cfg)
    if reason is None:
        return None
    log.info("training the sentiment classifier: %s", reason)
    return train_sentiment(cfg, out_dir, base=base, progress=progress)


def load_sentiment_model(path: str | Path | None = None) -> LoadedModel:
    """The cached fine-tuned classifier (or the one at ``path``) as a LoadedModel."""
    import transformers as tf

    from ..models import load_model

    p = Path(path) if path is not None else default_model_dir()
    if not (p / "config.json").is_file():
        raise ModelLoadError(f"no sentiment model at {p}; train one with `attnscope tasks sentiment train`"
                             + (" --out DIR" if path is not None else ""))
    if path is None:
        rep = cached_report(p)
        if rep is None or rep.get("recipe", 1) != RECIPE_VERSION:
            log.warning("the cached sentiment model at %s was trained by an older recipe (%s, now %s); retrain it "
                        "with `attnscope tasks sentiment train`", p, (rep or {}).get("recipe", 1), RECIPE_VERSION)
    lm = load_model(str(p), model_class=tf.AutoModelForSequenceClassification)
    lm.name = MODEL_NAME if path is None else str(p)
    return lm


def class_labels(lm: LoadedModel) -> list[str]:
    id2label = lm.config.id2label
    return [id2label[i] for i in range(lm.config.num_labels)]


# ---------------------------------------------------------------------------- analysis
@dataclass
class ClassPatterns:
    """Length-normalised attention per class: ``patterns[label]`` is (bins + 2, bins + 2) over
    ([CLS], content bin 1..bins, [SEP]) x the same; rows sum to 1 (a query bin's attention)."""

    patterns: dict[str, np.ndarray]
    counts: dict[str, int]
    layers: list[int]
    bins: int
    axis: list[str]
    by: str = "label"


def _content_range(special: list[bool]) -> tuple[int, int]:
    """[start, stop) of the tokens between the leading and trailing special tokens."""
    start, stop = 0, len(special)
    while start < stop and special[start]:
        start += 1
    while stop > start and special[stop - 1]:
        stop -= 1
    return start, stop


def length_normalised_map(a: np.ndarray, special: list[bool], bins: int) -> np.ndarray:
    """Pool an (N, N) attention map onto ([CLS], ``bins`` relative-position bins, [SEP]) groups.

    Each group of query rows is averaged and each group of key columns summed, so rows still sum to 1.
    A bin that no token falls in (a text shorter than ``bins`` tokens) is NaN.
    """
    n = a.shape[0]
    start, stop = _content_range(special)
    m = max(1, stop - start)
    group = np.empty(n, dtype=int)
    for i in range(n):
        if i < start:
            group[i] = 0
        elif i >= stop:
            group[i] = bins + 1
        else:
            group[i] = 1 + min(bins - 1, (i - start) * bins // m)
    g = bins + 2
    onehot = np.zeros((n, g))
    onehot[np.arange(n), group] = 1.0  # (N, G)
    summed = onehot.T @ a @ onehot  # (G, G): sum over query rows and key cols of each group
    count = onehot.sum(0)  # (G,)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = summed / count[:, None]
    out[count == 0] = np.nan
    return out


def _capture_many(lm: LoadedModel, texts: Sequence[str], layers=None, batch_size: int = 16):
    from ..capture import capture_batch

    return capture_batch(lm, list(texts), mode="full", layers=layers, batch_size=batch_size, truncate=True)


def class_attention_patterns(lm: LoadedModel, texts: Sequence[str], groups: Sequence[str], *, layers=(-1,),
                             bins: int = 10, traces=None, by: str = "label") -> ClassPatterns:
    """Average length-normalised attention (head mean over ``layers``) per group (class) of texts."""
    if len(texts) != len(groups):
        raise InputError(f"{len(texts)} texts but {len(groups)} labels")
    if bins < 1:
        raise InputError("bins must be >= 1")
    traces = traces if traces is not None else _capture_many(lm, texts, layers=list(layers))
    n_layers = lm.geometry()["self"][0]
    want = sorted({l % n_layers for l in layers})
    acc: dict[str, list[np.ndarray]] = defaultdict(list)
    for tr, g in zip(traces, groups):
        w = tr.sel(layer=want).weights("self").double().mean(dim=(0, 1)).numpy()  # (N, N)
        acc[g].append(length_normalised_map(w, tr.tokens["input"].special, bins))
    axis = ["[CLS]"] + [f"{i / bins:.1f}" for i in range(bins)] + ["[SEP]"]
    return ClassPatterns(patterns={g: np.nanmean(np.stack(v), 0) for g, v in sorted(acc.items())},
                         counts={g: len(v) for g, v in sorted(acc.items())}, layers=want, bins=bins, axis=axis, by=by)


def _words(tokens) -> list[list[int]]:
    """Token indices grouped into words: a word-piece (``##x``) or an adjacent offset joins the previous word."""
    words: list[list[int]] = []
    prev_end = None
    for i, (t, (s, e), sp) in enumerate(zip(tokens.text, tokens.offsets, tokens.special)):
        if sp or e <= s:
            prev_end = None
            continue
        if words and (t.startswith("##") or (prev_end is not None and s == prev_end and t.isalnum()
                                              and tokens.text[words[-1][-1]].isalnum())):
            words[-1].append(i)
        else:
            words.append([i])
        prev_end = e
    return words


def received_attention(trace, layers=None) -> np.ndarray:
    """Attention each token receives, averaged over layers, heads and query rows: (token,); sums to 1."""
    w = trace.weights("self") if layers is None else trace.sel(layer=list(layers)).weights("self")
    return w.double().mean(dim=(0, 1)).mean(0).numpy()  # (N,)


@dataclass
class ImportantTokens:
    """Per group: [(word, mean received attention as a multiple of the uniform share, count)], best first.

    Special tokens are excluded from the ranking; ``special_share[group]`` is their mean received share."""

    by_group: dict[str, list[tuple[str, float, int]]]
    special_share: dict[str, float]


def important_tokens(traces, groups: Sequence[str], top_k: int = 12, min_count: int = 3) -> ImportantTokens:
    """Words that receive the most attention per group, length-normalised: a word's received share of a
    text's attention times the number of content tokens (1.0 = the uniform share)."""
    from ..analysis._common import is_delimiter

    stats: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    special: dict[str, list[float]] = defaultdict(list)
    for tr, g in zip(traces, groups):
        toks = tr.tokens["input"]
        r = received_attention(tr)
        text = tr.texts.get("input", "")
        n_content = max(1, sum(not s for s in toks.special))
        special[g].append(float(r[np.array(toks.special, bool)].sum()))
        for word in _words(toks):
            s, e = toks.offsets[word[0]][0], toks.offsets[word[-1]][1]
            w = text[s:e].lower() if text else "".join(toks.text[i].removeprefix("##") for i in word)
            if is_delimiter(w, False):
                continue
            stats[g][w].append(float(r[word].sum()) * n_content)
    out = {}
    for g, words in sorted(stats.items()):
        ranked = [(w, float(np.mean(v)), len(v)) for w, v in words.items() if len(v) >= min_count]
        ranked.sort(key=lambda x: -x[1])
        out[g] = ranked[:top_k]
    return ImportantTokens(out, {g: float(np.mean(v)) for g, v in special.items()})


@dataclass
class Explanation:
    """One prediction explained two ways: rollout from [CLS] and integrated gradients, per token."""

    text: str
    tokens: list[str]
    predicted: str
    probability: float
    rollout: np.ndarray  # (token,) normalised to sum 1 over content tokens
    integrated_gradients: np.ndarray  # (token,) |attribution| normalised to sum 1 over content tokens
    ig_signed: np.ndarray  # (token,) raw signed attributions (sum ~ logit difference to the baseline)
    convergence_delta: float
    spearman: float  # rank correlation of rollout and |IG| over content tokens (NaN when IG failed its check)
    special: list[bool]
    ig_completeness_ok: bool = True  # Σ IG = F(x) − F(x') within tolerance (captum_methods.IG_RTOL)


def _rollout_from_cls(trace) -> np.ndarray:
    from ..analysis import run_analysis

    return np.asarray(run_analysis("rollout", trace).final[0], dtype=float)  # row of [CLS]: (N,)


def integrated_gradients(lm: LoadedModel, text: str, target: int, n_steps: int = 32) -> tuple[np.ndarray, float, list[str]]:
    """Integrated gradients (Sundararajan et al. 2017) of the ``target`` logit w.r.t. the word embeddings,
    by :func:`attnscope.attribution.captum_methods.captum_attributions` (Captum; [PAD] baseline, special
    tokens kept). Returns ((N,) signed attributions, convergence delta, tokens)."""
    from ..attribution.captum_methods import captum_attributions

    out = captum_attributions(lm, text, ("integrated_gradients",), target=target, ig_steps=n_steps)
    for w in out["warnings"]:  # a result that failed its completeness check is flagged, never silent
        log.warning("%s (text %r)", w, text[:60])
    delta = float(out["ig_completeness"]["delta"])  # signed: Σ attributions − (F(x) − F(x'))
    return np.asarray(out["scores"]["integrated_gradients"], float), delta, list(out["tokens"])


def explain_text(lm: LoadedModel, text: str, n_steps: int = 32) -> Explanation:
    """Rollout (Abnar & Zuidema 2020) from [CLS] and integrated gradients (Sundararajan et al. 2017) for
    the predicted class of ``text``, side by side."""
    from scipy.stats import spearmanr

    from ..capture import capture

    trace = capture(lm, text, mode="full", truncate=True)
    ids = torch.tensor([trace.tokens["input"].ids], device=model_device(lm.model))  # (1, N)
    with torch.no_grad():
        probs = torch.softmax(lm.model(input_ids=ids).logits.float(), -1)[0]
    pred = int(probs.argmax())
    roll = _rollout_from_cls(trace)
    ig, delta, ig_tokens = integrated_gradients(lm, text, pred, n_steps)
    if len(ig_tokens) != len(trace.tokens["input"]):
        raise InputError(f"integrated gradients saw {len(ig_tokens)} tokens but the capture {len(trace.tokens['input'])}; "
                         "shorten the text")
    special = trace.tokens["input"].special
    content = ~np.array(special, bool)

    def norm(x):
        x = np.abs(x) * content
        return x / x.sum() if x.sum() > 0 else x

    from ..attribution.captum_methods import completeness

    ok = completeness(float(ig.sum()), float(ig.sum()) - delta, n_steps).ok  # delta against F(x) − F(x')
    rho = float(spearmanr(roll[content], np.abs(ig[content])).statistic) if content.sum() > 2 and ok else float("nan")
    return Explanation(text=text, tokens=trace.tokens["input"].labels(trace.texts.get("input")),
                       predicted=class_labels(lm)[pred], probability=float(probs[pred]), rollout=norm(roll),
                       integrated_gradients=norm(ig), ig_signed=ig, convergence_delta=delta, spearman=rho,
                       special=list(special), ig_completeness_ok=ok)


@dataclass
class Misclassified:
    id: str
    text: str
    label: str
    predicted: str
    confidence: float
    top_tokens: list[str] = field(default_factory=list)


def misclassified(lm: LoadedModel, items: Sequence, probs: np.ndarray | None = None, k: int = 10,
                  traces=None) -> list[Misclassified]:
    """The ``k`` most confidently wrong items (with the words they attend to most, when traces are given)."""
    labels = class_labels(lm)
    probs = probs if probs is not None else predict_proba(lm.model, lm.tokenizer, [x.text for x in items])
    pred = probs.argmax(-1)
    wrong = [i for i, x in enumerate(items) if labels[pred[i]] != x.label]
    wrong.sort(key=lambda i: -probs[i, pred[i]])
    out = []
    for i in wrong[:k]:
        top: list[str] = []
        if traces is not None:
            tr = traces[i]
            r = received_attention(tr)
            toks = tr.tokens["input"]
            order = [j for j in np.argsort(-r) if not toks.special[j]]
            shown = toks.labels(tr.texts.get("input"))  # readable labels, never "##aran"
            top = [shown[j] for j in order[:5]]
        out.append(Misclassified(items[i].id, items[i].text, items[i].label, labels[pred[i]],
                                 float(probs[i, pred[i]]), top))
    return out


@dataclass
class SentimentAnalysis:
    accuracy: float
    n: int
    patterns: ClassPatterns
    tokens: ImportantTokens
    explanations: list[Explanation]
    errors: list[Misclassified]
    figures: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy, "n": self.n, "class_counts": self.patterns.counts,
            "important_tokens": {g: [[w, round(s, 3), c] for w, s, c in v] for g, v in self.tokens.by_group.items()},
            "special_token_share": self.tokens.special_share,
            "explanations": [{"text": e.text, "predicted": e.predicted, "probability": e.probability,
                              "spearman_rollout_vs_ig": e.spearman, "ig_convergence_delta": e.convergence_delta,
                              "ig_completeness_ok": e.ig_completeness_ok}
                             for e in self.explanations],
            "misclassified": [asdict(m) for m in self.errors],
            "figures": self.figures,
        }


def analyze_sentiment(lm: LoadedModel, items: Sequence, *, out_dir: str | Path | None = None, bins: int = 10,
                      layers=(-1,), explain: Sequence[str] | None = None, n_explain: int = 3, top_k: int = 12,
                      min_count: int = 3, ig_steps: int = 32) -> SentimentAnalysis:
    """The whole sentiment analysis on labelled ``items`` (with .id/.text/.label); figures into ``out_dir``."""
    if not items:
        raise InputError("no texts to analyse")
    labels = class_labels(lm)
    probs = predict_proba(lm.model, lm.tokenizer, [x.text for x in items], max_length=lm.max_length)
    acc = float(np.mean([labels[p] == x.label for p, x in zip(probs.argmax(-1), items)]))
    traces = _capture_many(lm, [x.text for x in items])
    gold = [x.label for x in items]
    patterns = class_attention_patterns(lm, [x.text for x in items], gold, layers=layers, bins=bins, traces=traces)
    tokens = important_tokens(traces, gold, top_k=top_k, min_count=min_count)
    errors = misclassified(lm, items, probs, traces=traces)
    texts = list(explain) if explain else [x.text for x in items[:n_explain]]
    explanations = [explain_text(lm, t, ig_steps) for t in texts]
    res = SentimentAnalysis(acc, len(items), patterns, tokens, explanations, errors)
    if out_dir is not None:
        from . import plots

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        res.figures["class_patterns"] = str(plots.plot_class_patterns(patterns, out / "sentiment_class_patterns.png"))
        res.figures["important_tokens"] = str(plots.plot_important_tokens(tokens, out / "sentiment_tokens.png"))
        for i, e in enumerate(explanations):
            res.figures[f"explain_{i}"] = str(plots.plot_explanation(e, out / f"sentiment_explain_{i}.png"))
        res.figures["misclassified"] = str(plots.plot_misclassified(errors, out / "sentiment_misclassified.png"))
        (out / "sentiment_summary.json").write_text(json.dumps(res.summary(), indent=2, ensure_ascii=False))
    return res
