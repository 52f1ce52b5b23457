"""Comparison experiments of the seq2seq chapter, each writing a table and a plot into the docs.

Every training run happens in a fresh Python process (``python -m attnscope.seq2seq.experiments
RUN.json OUT.json``), so its peak memory (``ru_maxrss``) and time are its own. Results travel as JSON.

Experiments (``EXPERIMENTS``):

- ``scores``: Bahdanau (additive) vs Luong dot / general / concat on the dates task.
- ``lengths``: BLEU and attention entropy by source-length bucket on the SVO->SOV task.
- ``dropout``: attention dropout 0 / 10 / 20 / 30 % (Vaswani et al. 2017 §5.4) on a small dates set.
- ``heads``: one vs several heads of multi-head cross attention (Vaswani et al. 2017) on SVO->SOV.
- ``classifier``: the self-attention sentiment classifier on the tweets, 1 vs 4 heads.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

EXPERIMENTS = ("scores", "lengths", "dropout", "heads", "classifier")


# ---------------------------------------------------------------------------- child process
def _run_seq2seq(spec: dict[str, Any]) -> dict[str, Any]:
    from .._optional import require

    sacrebleu = require("sacrebleu", "seq2seq", "BLEU by length")

    from .train import TrainConfig, evaluate, train

    cfg = TrainConfig(**spec["train"])
    res = train(cfg, progress=False)
    out: dict[str, Any] = {"metrics": res.metrics, "history": res.history}
    if spec.get("buckets"):
        from .data import tokenize

        ev = evaluate(res.model, res.data, res.data.test)
        rows = []
        for lo, hi in spec["buckets"]:
            idx = [i for i, p in enumerate(res.data.test) if lo <= len(tokenize(p.source, res.data.src_tok)[0]) <= hi]
            if not idx:
                continue
            hyp = [ev["outputs"][i] for i in idx]
            ref = [res.data.test[i].target for i in idx]
            tok = "char" if res.data.tgt_tok == "char" else "13a"
            rows.append({"bucket": f"{lo}-{hi}", "n": len(idx), "bleu": sacrebleu.corpus_bleu(hyp, [ref], tokenize=tok).score,
                         "exact_match": sum(h == r for h, r in zip(hyp, ref)) / len(idx),
                         "entropy": sum(ev["per_example_entropy"][i] for i in idx) / len(idx)})
        out["buckets"] = rows
    if spec.get("alignment_png"):
        from .artifacts import pick_examples
        from .decode import greedy_decode
        from .export import translation_trace
        from .plots import plot_alignment

        pair = pick_examples(res.data.test, 1)[0] if not spec.get("example") else None
        src_text = spec.get("example") or pair.source
        ids = res.data.encode_src(src_text)
        hyp = greedy_decode(res.model, [ids])[0]
        tr = translation_trace(src_text, hyp, res.data.src_tok, res.data.tgt_tok, res.data.tgt_vocab.itos, ids)
        h = hyp.attention.shape[0]
        paths = []
        for head in range(h):
            p = Path(spec["alignment_png"].replace("{head}", str(head)))
            plot_alignment(hyp.attention[head], tr.key_tokens("cross").labels(), tr.query_tokens("cross").labels(), p,
                           title=f"{cfg.attention} head {head}: {tr.texts['target']!r}")
            paths.append(str(p))
        out["alignment_pngs"] = paths
    return out


def _run_classifier(spec: dict[str, Any]) -> dict[str, Any]:
    import random

    import torch

    from ..datasets import load_tweets
    from .classifier import classify_with_attention, train_classifier

    torch.set_num_threads(1)
    train_set = list(load_tweets("train"))
    test_set = list(load_tweets("test"))
    random.Random(0).shuffle(test_set)
    test_set = test_set[: spec.get("n_test", 3000)]
    res = train_classifier([x.text for x in train_set], [x.label for x in train_set], [x.text for x in test_set],
                           [x.label for x in test_set], heads=spec["heads"], d_model=spec.get("d_model", 64),
                           epochs=spec.get("epochs", 5), max_seconds=spec.get("max_seconds"), seed=spec.get("seed", 0))
    out: dict[str, Any] = {"metrics": res.metrics, "labels": res.labels}
    if spec.get("heads_png"):
        label, tr = classify_with_attention(res.model, res.vocab, res.labels, spec["example"])
        out["example_label"] = label
        out["heads_png"] = str(plot_heads(tr.weights("self")[0], tr.tokens["input"].labels(), spec["heads_png"],
                                          title=f"{spec['example']!r} -> {label}"))
    return out


def plot_heads(weights: Any, tokens: list[str], path: str | Path, title: str = "") -> Path:
    """Self-attention maps (H, N, N) side by side."""
    from .plots import _plt

    plt = _plt()
    h = weights.shape[0]
    n = len(tokens)
    fig, axes = plt.subplots(1, h, figsize=(max(3.0, 0.3 * n + 1.5) * h, max(3.0, 0.3 * n + 1.5)), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.imshow(weights[i].float().numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(n))
        ax.set_xticklabels(tokens, rotation=90, fontsize=8)
        ax.set_yticks(range(n))
        ax.set_yticklabels(tokens, fontsize=8)
        ax.set_title(f"head {i}", fontsize=9)
    if title:
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, 70)), fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _child(spec_path: str, out_path: str) -> None:
    import resource

    import torch

    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    t0 = time.perf_counter()
    out = _run_classifier(spec) if spec["kind"] == "classifier" else _run_seq2seq(spec)
    out["wall_seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out_path).write_text(json.dumps(out))


# ---------------------------------------------------------------------------- parent
def run_isolated(spec: dict[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one spec in a fresh process; returns its JSON result. A result saved for the same spec
    (``<img_dir>/runs/<experiment>/<name>.json``) is reused unless ``--rerun`` was given."""
    raw = None
    if _RAW_DIR[0] is not None:
        raw = _RAW_DIR[0] / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', str(spec.get('name', spec['kind'])))}.json"
        if raw.is_file() and not _RERUN[0]:
            saved = json.loads(raw.read_text())
            if saved.get("spec") == spec:
                log(f"  run: {spec.get('name', spec['kind'])} (saved result reused: {raw})")
                return saved["result"]
    with tempfile.TemporaryDirectory() as d:
        sp, op = Path(d) / "spec.json", Path(d) / "out.json"
        sp.write_text(json.dumps(spec))
        log(f"  run: {spec.get('name', spec['kind'])}")
        proc = subprocess.run([sys.executable, "-m", "attnscope.seq2seq.experiments", str(sp), str(op)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"experiment run {spec.get('name')} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(op.read_text())
    if raw is not None:
        raw.write_text(json.dumps({"spec": spec, "result": result}, indent=1))
    return result


_RAW_DIR: list[Path | None] = [None]
_RERUN: list[bool] = [False]


def _train_spec(name: str, steps: int, seed: int, **kw: Any) -> dict[str, Any]:
    base = {"task": "dates", "steps": steps, "epochs": 1000, "eval_every": max(100, steps // 2), "patience": 100,
            "target_exact_match": 1.01, "n_train": 10_000, "n_dev": 200, "n_test": 1000, "seed": seed}
    base.update(kw.pop("train", {}))
    return {"kind": "seq2seq", "name": name, "train": base, **kw}


def _fmt(x: float, nd: int = 3) -> str:
    return f"{x:.{nd}f}"


def exp_scores(img: Path, steps: int, seed: int, log: Callable[[str], None]) -> str:
    from .plots import plot_bars

    rows, groups = [], {}
    for att in ("bahdanau", "luong-dot", "luong-general", "luong-concat"):
        r = run_isolated(_train_spec(att, steps, seed, train={"attention": att},
                                     alignment_png=str(img / f"scores_{att}_alignment.png")), log)
        m = r["metrics"]
        groups[att] = {"em": m["test_exact_match"], "bleu": m["test_bleu"], "sec": m["train_cpu_seconds"],
                       "mem": m["rss_increase_mb"], "ent": m["test_entropy"]}
        rows.append(f"| {att} | {_fmt(m['test_exact_match'])} | {m['test_bleu']:.1f} | {m['train_cpu_seconds']:.0f} | "
                    f"{m['rss_increase_mb']:.0f} / {r['peak_rss_mb']:.0f} | {_fmt(m['test_entropy'])} | "
                    f"{_fmt(m['test_max_weight'])} | {m['parameters']:,} |")
    plot = plot_bars(groups, [("em", "exact match"), ("bleu", "BLEU (char)"), ("sec", "training CPU seconds"),
                              ("mem", "RSS increase (MB)"), ("ent", "attention entropy (nats)")],
                     img / "scores.png", title=f"dates task, {steps} steps each")
    return ("| attention | exact match | BLEU (char) | train CPU s | RSS increase / peak MB | entropy (nats) | "
            "max weight | parameters |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) +
            f"\n\n![scores]({_rel(plot)})\n\n" + "".join(f"![{a}]({_rel(img / f'scores_{a}_alignment.png')}) " for a in groups))


def exp_lengths(img: Path, steps: int, seed: int, log: Callable[[str], None]) -> str:
    from .plots import plot_lines

    buckets = [[3, 10], [11, 20], [21, 30], [31, 50], [51, 100]]  # the exercise: short 5-10, mid 20-30, long 50-100 words
    series, rows, labels = {}, [], None
    for att in ("bahdanau", "luong-general"):
        r = run_isolated(_train_spec(att, steps, seed, buckets=buckets,
                                     train={"task": "svo-sov", "attention": att, "n_test": 600,
                                            "task_options": {"max_clauses": 10}},
                                     alignment_png=str(img / f"lengths_{att}_alignment.png")), log)
        labels = [b["bucket"] for b in r["buckets"]]
        series[att] = {k: [b[k] for b in r["buckets"]] for k in ("bleu", "entropy", "exact_match")}
        for b in r["buckets"]:
            rows.append(f"| {att} | {b['bucket']} | {b['n']} | {b['bleu']:.1f} | {_fmt(b['exact_match'])} | {_fmt(b['entropy'])} |")
    plot = plot_lines(labels or [], series, [("bleu", "BLEU"), ("entropy", "attention entropy (nats)")],
                      img / "lengths.png", xlabel="source length (words)", title=f"SVO->SOV, {steps} steps")
    return ("| attention | source words | n | BLEU | exact match | entropy (nats) |\n|---|---|---|---|---|---|\n" +
            "\n".join(rows) + f"\n\n![lengths]({_rel(plot)}) ![alignment]({_rel(img / 'lengths_bahdanau_alignment.png')})")


def exp_dropout(img: Path, steps: int, seed: int, log: Callable[[str], None]) -> str:
    from .plots import plot_lines

    rates = [0.0, 0.1, 0.2, 0.3]
    vals: dict[str, list[float]] = {"em": [], "bleu": [], "ent": []}
    rows = []
    for p in rates:
        r = run_isolated(_train_spec(f"attn-dropout {p}", steps, seed,
                                     train={"attention": "bahdanau", "attn_dropout": p, "n_train": 2000}), log)
        m = r["metrics"]
        vals["em"].append(m["test_exact_match"])
        vals["bleu"].append(m["test_bleu"])
        vals["ent"].append(m["test_entropy"])
        rows.append(f"| {int(p * 100)} % | {_fmt(m['test_exact_match'])} | {m['test_bleu']:.1f} | {_fmt(m['test_entropy'])} | {_fmt(m['best_dev_exact_match'])} |")
    plot = plot_lines([f"{int(p * 100)}%" for p in rates], {"bahdanau": vals},
                      [("em", "held-out exact match"), ("ent", "attention entropy (nats)")], img / "dropout.png",
                      xlabel="attention dropout", title=f"dates, 2,000 training pairs, {steps} steps")
    return ("| attention dropout | exact match | BLEU (char) | entropy (nats) | best dev exact match |\n|---|---|---|---|---|\n" +
            "\n".join(rows) + f"\n\n![dropout]({_rel(plot)})")


def exp_heads(img: Path, steps: int, seed: int, log: Callable[[str], None]) -> str:
    from .plots import plot_bars

    rows, groups = [], {}
    for h in (1, 2, 4):
        r = run_isolated(_train_spec(f"multihead x{h}", steps, seed,
                                     train={"task": "svo-sov", "attention": "multihead", "heads": h, "n_test": 500},
                                     alignment_png=str(img / f"heads{h}_head{{head}}.png")), log)
        m = r["metrics"]
        groups[f"{h} head{'s' if h > 1 else ''}"] = {"em": m["test_exact_match"], "bleu": m["test_bleu"], "ent": m["test_entropy"]}
        rows.append(f"| {h} | {_fmt(m['test_exact_match'])} | {m['test_bleu']:.1f} | {_fmt(m['test_entropy'])} | "
                    f"{_fmt(m['test_max_weight'])} | {m['train_cpu_seconds']:.0f} |")
    plot = plot_bars(groups, [("em", "exact match"), ("bleu", "BLEU"), ("ent", "mean head entropy (nats)")],
                     img / "heads.png", title=f"multi-head cross attention, SVO->SOV, {steps} steps")
    return ("| heads | exact match | BLEU | entropy (nats, mean over heads) | max weight | train CPU s |\n|---|---|---|---|---|---|\n" +
            "\n".join(rows) + f"\n\n![heads]({_rel(plot)})\n\n" +
            " ".join(f"![head {i}]({_rel(img / f'heads4_head{i}.png')})" for i in range(4)))


def exp_classifier(img: Path, seconds: float, seed: int, log: Callable[[str], None]) -> str:
    rows = []
    example = "I love the new update but the servers keep crashing"
    for h in (1, 4):
        r = run_isolated({"kind": "classifier", "name": f"classifier x{h}", "heads": h, "max_seconds": seconds,
                          "epochs": 5, "seed": seed, "heads_png": str(img / f"classifier_heads{h}.png"),
                          "example": example}, log)
        m = r["metrics"]
        ent = ", ".join(f"{x:.2f}" for x in m["head_entropy"])
        rows.append(f"| {h} | {_fmt(m['accuracy'])} | {_fmt(m['macro_f1'])} | {m['steps']} | {m['train_cpu_seconds']:.0f} | "
                    f"{r['peak_rss_mb']:.0f} | {ent} |")
    return ("| heads | accuracy | macro-F1 | steps | train CPU s | peak RSS MB | per-head entropy (nats) |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows) +
            f"\n\n![1 head]({_rel(img / 'classifier_heads1.png')})\n\n![4 heads]({_rel(img / 'classifier_heads4.png')})")


_DOC_ROOT: list[Path] = [Path("docs")]


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(_DOC_ROOT[0].resolve()))
    except ValueError:
        return str(p)


def write_section(doc: Path, name: str, body: str, command: str) -> None:
    """Replace the block between ``<!-- BEGIN compare:name -->`` and ``<!-- END compare:name -->`` (appended if absent)."""
    import fcntl

    block = f"<!-- BEGIN compare:{name} -->\nCommand: `{command}`\n\n{body}\n<!-- END compare:{name} -->"
    doc.parent.mkdir(parents=True, exist_ok=True)
    lock_path = Path(tempfile.gettempdir()) / f"attnscope-doc-{hashlib.sha1(str(doc.resolve()).encode()).hexdigest()[:12]}.lock"
    with open(lock_path, "w") as lock:  # several `compare` runs may share one doc
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = doc.read_text(encoding="utf-8") if doc.exists() else "# Seq2seq attention\n"
        pat = re.compile(rf"<!-- BEGIN compare:{re.escape(name)} -->.*?<!-- END compare:{re.escape(name)} -->", re.S)
        text = pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip() + f"\n\n### {name}\n\n{block}\n"
        doc.write_text(text, encoding="utf-8")


def run_experiments(names: list[str], doc: Path, img_dir: Path, steps: int, classifier_seconds: float, seed: int,
                    log: Callable[[str], None] = print, rerun: bool = False) -> None:
    from ..errors import UnknownNameError

    for n in names:
        if n not in EXPERIMENTS:
            raise UnknownNameError("experiment", n, EXPERIMENTS)
    _DOC_ROOT[0] = doc.parent
    _RERUN[0] = rerun
    img_dir.mkdir(parents=True, exist_ok=True)
    for n in names:
        log(f"experiment {n}")
        _RAW_DIR[0] = img_dir / "runs" / n
        _RAW_DIR[0].mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if n == "classifier":
            body = exp_classifier(img_dir, classifier_seconds, seed, log)
            cmd = f"attnscope seq2seq compare classifier --classifier-seconds {classifier_seconds:g} --seed {seed}"
        else:
            body = {"scores": exp_scores, "lengths": exp_lengths, "dropout": exp_dropout, "heads": exp_heads}[n](
                img_dir, steps, seed, log)
            cmd = f"attnscope seq2seq compare {n} --steps {steps} --seed {seed}"
        body += f"\n\nWall time of this experiment: {time.perf_counter() - t0:.0f} s."
        write_section(doc, n, body, cmd)
        log(f"  wrote section {n!r} of {doc}")


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
