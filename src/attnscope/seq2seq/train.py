"""Training, evaluation and checkpoints of the seq2seq models.

Training uses teacher forcing (Williams & Zipser 1989; as in Bahdanau et al. 2015 and Luong et al.
2015), Adam, gradient-norm clipping (Pascanu et al. 2013) and early stopping on held-out exact match.
Checkpoints are a directory with ``model.safetensors`` (weights) and ``config.json`` (model and
training configuration, vocabularies, metrics); nothing is ever pickled.
"""

from __future__ import annotations

import json
import math
import random
import resource
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .._optional import require
from ..errors import InputError, UnknownNameError
from ..statistics import row_statistics
from .attention import ATTENTION_KINDS
from .data import PAD_ID, TASK_TOKENIZER, TASKS, Pair, Vocab, detokenize, load_tsv, split_pairs, task_pairs, tokenize
from .decode import Hypothesis, beam_search, greedy_decode
from .model import Seq2Seq, Seq2SeqConfig, pad_batch

CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_CONFIG = "config.json"


@dataclass
class TrainConfig:
    """What to train on and how. ``steps`` caps optimizer steps (0 = no cap); ``epochs`` caps passes."""

    task: str = "dates"
    tsv: str | None = None
    attention: str = "bahdanau"
    heads: int = 1
    size: str = "small"  # "tiny" | "small"
    emb: int | None = None
    hidden: int | None = None
    dropout: float = 0.1
    attn_dropout: float = 0.0
    n_train: int = 10_000
    n_dev: int = 500
    n_test: int = 1_000
    epochs: int = 30
    steps: int = 0
    batch_size: int = 64
    lr: float = 2e-3
    clip: float = 1.0
    eval_every: int = 250
    patience: int = 4
    target_exact_match: float = 1.0  # stop early once dev exact match reaches this
    teacher_forcing: float = 1.0
    seed: int = 0
    threads: int = 1
    task_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tsv is None and self.task not in TASKS:
            raise UnknownNameError("task", self.task, TASKS)
        if self.attention not in ATTENTION_KINDS:
            raise UnknownNameError("attention", self.attention, ATTENTION_KINDS)
        if self.size not in ("tiny", "small"):
            raise UnknownNameError("size", self.size, ("tiny", "small"))
        if self.batch_size < 1 or self.epochs < 1 or self.steps < 0:
            raise InputError("batch_size and epochs must be >= 1 and steps >= 0")


@dataclass
class TaskData:
    """Tokenised splits and vocabularies of one task."""

    train: list[Pair]
    dev: list[Pair]
    test: list[Pair]
    src_vocab: Vocab
    tgt_vocab: Vocab
    src_tok: str
    tgt_tok: str

    def encode_src(self, text: str) -> list[int]:
        return self.src_vocab.encode(tokenize(text, self.src_tok)[0])

    def encode_tgt(self, text: str) -> list[int]:
        return self.tgt_vocab.encode(tokenize(text, self.tgt_tok)[0], add_bos=True)


def load_task(cfg: TrainConfig) -> TaskData:
    """Generate (or read from ``cfg.tsv``) the train/dev/test pairs and build vocabularies on train."""
    if cfg.tsv:
        pairs = load_tsv(cfg.tsv)
        rest, test = split_pairs(pairs, 0.1, cfg.seed)
        train, dev = split_pairs(rest, 0.05, cfg.seed + 1)
        tok = cfg.task_options.get("tokenizer", "word")
        src_tok = tgt_tok = tok
    else:
        train, test = task_pairs(cfg.task, cfg.n_train, cfg.n_test, cfg.seed, **cfg.task_options)
        gen_dev, _ = task_pairs(cfg.task, cfg.n_dev, 1, cfg.seed + 20_000, **cfg.task_options)
        seen = {p.source for p in train} | {p.source for p in test}
        dev = [p for p in gen_dev if p.source not in seen]
        src_tok = tgt_tok = TASK_TOKENIZER[cfg.task]
    src_vocab = Vocab.build([tokenize(p.source, src_tok)[0] for p in train])
    tgt_vocab = Vocab.build([tokenize(p.target, tgt_tok)[0] for p in train])
    return TaskData(train, dev, test, src_vocab, tgt_vocab, src_tok, tgt_tok)


def model_config(cfg: TrainConfig, data: TaskData) -> Seq2SeqConfig:
    preset = Seq2SeqConfig.tiny if cfg.size == "tiny" else Seq2SeqConfig.small
    kw: dict[str, Any] = {"attention": cfg.attention, "heads": cfg.heads, "attn_dropout": cfg.attn_dropout,
                          "dropout": cfg.dropout}
    if cfg.emb:
        kw["emb"] = cfg.emb
    if cfg.hidden:
        kw["hidden"] = cfg.hidden
    return preset(len(data.src_vocab), len(data.tgt_vocab), **kw)


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


@dataclass
class TrainResult:
    model: Seq2Seq
    data: TaskData
    cfg: TrainConfig
    history: list[dict[str, float]]
    metrics: dict[str, Any]


def _batches(examples: list[tuple[list[int], list[int]]], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Index batches of similar source length (less padding), in random order."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    chunk = batch_size * 20
    batches = []
    for i in range(0, len(order), chunk):
        part = sorted(order[i : i + chunk], key=lambda j: len(examples[j][0]))
        batches += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def train(cfg: TrainConfig, progress: bool = True, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train a model as ``cfg`` says; returns the model (best dev state) with held-out metrics."""
    torch.set_num_threads(max(1, cfg.threads))
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    data = load_task(cfg)
    mcfg = model_config(cfg, data)
    model = Seq2Seq(mcfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD_ID)
    examples = [(data.encode_src(p.source), data.encode_tgt(p.target)) for p in data.train]
    per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = min(cfg.epochs * per_epoch, cfg.steps or 10**12)
    history: list[dict[str, float]] = []
    best_em, best_state, bad_evals, step = -1.0, None, 0, 0
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    c0 = time.process_time()
    stop = False

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}")]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task_id = bar.add_task(f"{cfg.attention}", total=total, info="")
        running = None
        for epoch in range(cfg.epochs):
            for idx in _batches(examples, cfg.batch_size, rng):
                model.train()
                src, smask = pad_batch([examples[i][0] for i in idx])  # (B, S)
                tgt, _ = pad_batch([examples[i][1] for i in idx])  # (B, T+1)
                logits, _ = model(src, smask, tgt[:, :-1], cfg.teacher_forcing)  # (B, T, V)
                loss = loss_fn(logits.reshape(-1, logits.size(-1)), tgt[:, 1:].reshape(-1))  # (B*T, V) vs (B*T,)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                opt.step()
                step += 1
                running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
                bar.update(task_id, advance=1, info=f"loss {running:.3f}  dev EM {max(best_em, 0):.3f}")
                if step % cfg.eval_every == 0 or step == total:
                    dev = evaluate(model, data, data.dev, max_examples=cfg.n_dev)
                    history.append({"step": step, "epoch": epoch, "loss": running,
                                    "dev_exact_match": dev["exact_match"], "dev_bleu": dev["bleu"],
                                    "seconds": time.perf_counter() - t0})
                    if log:
                        log(f"step {step}: loss {running:.4f} dev exact match {dev['exact_match']:.3f} BLEU {dev['bleu']:.1f}")
                    if dev["exact_match"] > best_em:
                        best_em, bad_evals = dev["exact_match"], 0
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    else:
                        bad_evals += 1
                    if bad_evals >= cfg.patience or best_em >= cfg.target_exact_match:
                        stop = True
                if stop or step >= total:
                    break
            if stop or step >= total:
                break
    train_seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    if best_state is not None:
        model.load_state_dict(best_state)
    test = evaluate(model, data, data.test)
    metrics = {
        **{f"test_{k}": v for k, v in test.items() if not isinstance(v, list)},
        "best_dev_exact_match": best_em,
        "steps": step,
        "train_seconds": train_seconds,
        "train_cpu_seconds": cpu_seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_increase_mb": _peak_rss_mb() - rss0,
        "parameters": sum(p.numel() for p in model.parameters()),
        "stopped_early": stop,
    }
    return TrainResult(model, data, cfg, history, metrics)


def attention_stats(weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-target-step statistics of one example's cross attention (H, T, S): entropy (nats), max
    weight, effective positions (weight > 0.1) and the rest of :func:`attnscope.statistics.row_statistics`."""
    h, t, s = weights.shape
    return row_statistics(weights[None], None, torch.arange(t))  # name -> (1, H, T)


@torch.no_grad()
def evaluate(model: Seq2Seq, data: TaskData, pairs: list[Pair], beam: int = 1, batch_size: int = 256,
             max_examples: int | None = None) -> dict[str, Any]:
    """Held-out BLEU (sacrebleu; character tokenisation for character tasks), exact match and mean
    attention statistics (entropy, max weight, effective positions) per generated target token."""
    sacrebleu = require("sacrebleu", "seq2seq", "BLEU of a seq2seq model")

    pairs = pairs[:max_examples] if max_examples else pairs
    if not pairs:
        raise InputError("no examples to evaluate")
    hyps: list[Hypothesis] = []
    for i in range(0, len(pairs), batch_size):
        srcs = [data.encode_src(p.source) for p in pairs[i : i + batch_size]]
        if beam > 1:
            hyps += [beam_search(model, s, beam) for s in srcs]
        else:
            hyps += greedy_decode(model, srcs)
    outputs = [detokenize(data.tgt_vocab.decode(h.ids), data.tgt_tok)[0] for h in hyps]
    refs = [p.target for p in pairs]
    tokenize_name = "char" if data.tgt_tok == "char" else "13a"
    bleu = sacrebleu.corpus_bleu(outputs, [refs], tokenize=tokenize_name).score
    em = sum(o == r for o, r in zip(outputs, refs)) / len(refs)
    ent, mx, eff = [], [], []
    for h in hyps:
        st = attention_stats(h.attention)
        ent.append(st["entropy"].mean().item())
        mx.append(st["max"].mean().item())
        eff.append(st["effective_positions"].mean().item())
    n = len(hyps)
    return {"bleu": bleu, "exact_match": em, "n": n, "entropy": sum(ent) / n, "max_weight": sum(mx) / n,
            "effective_positions": sum(eff) / n, "outputs": outputs, "per_example_entropy": ent}


# ---------------------------------------------------------------------------- checkpoints
def save_checkpoint(result: TrainResult, out: str | Path) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``out``."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, str(out / CHECKPOINT_WEIGHTS), metadata={"format": "attnscope-seq2seq"})
    cfg_json = {
        "format": "attnscope-seq2seq",
        "version": 1,
        "model": result.model.cfg.to_json(),
        "train": asdict(result.cfg),
        "src_vocab": result.data.src_vocab.to_json(),
        "tgt_vocab": result.data.tgt_vocab.to_json(),
        "src_tokenizer": result.data.src_tok,
        "tgt_tokenizer": result.data.tgt_tok,
        "metrics": result.metrics,
        "history": result.history,
    }
    (out / CHECKPOINT_CONFIG).write_text(json.dumps(cfg_json, indent=2, ensure_ascii=False), encoding="utf-8")
    return out


@dataclass
class LoadedSeq2Seq:
    """A checkpoint ready to translate."""

    model: Seq2Seq
    src_vocab: Vocab
    tgt_vocab: Vocab
    src_tok: str
    tgt_tok: str
    info: dict[str, Any]

    def encode_src(self, text: str) -> list[int]:
        return self.src_vocab.encode(tokenize(text, self.src_tok)[0])


def load_checkpoint(path: str | Path) -> LoadedSeq2Seq:
    """Read a directory written by :func:`save_checkpoint` (safetensors + JSON; no pickle)."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg_file, w_file = path / CHECKPOINT_CONFIG, path / CHECKPOINT_WEIGHTS
    if not cfg_file.is_file() or not w_file.is_file():
        raise InputError(f"{path} is not a seq2seq checkpoint (needs {CHECKPOINT_CONFIG} and {CHECKPOINT_WEIGHTS}); "
                         "create one with `attnscope seq2seq train --out DIR`")
    info = json.loads(cfg_file.read_text(encoding="utf-8"))
    if info.get("format") != "attnscope-seq2seq":
        raise InputError(f"{cfg_file} is not an attnscope seq2seq checkpoint config")
    model = Seq2Seq(Seq2SeqConfig.from_json(info["model"]))
    model.load_state_dict(load_file(str(w_file)))
    model.eval()
    return LoadedSeq2Seq(model, Vocab.from_json(info["src_vocab"]), Vocab.from_json(info["tgt_vocab"]),
                         info["src_tokenizer"], info["tgt_tokenizer"], info)


def train_config_from_json(d: dict[str, Any]) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in d.items() if k in names})
