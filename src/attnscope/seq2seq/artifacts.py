"""What a training run leaves next to its checkpoint: alignment heatmaps of held-out examples, per-target-step
attention statistics (entropy, max weight, effective positions), traces, metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .data import Pair
from .decode import greedy_decode
from .export import translation_trace
from .plots import plot_alignment, plot_step_stats
from .train import TrainResult, attention_stats


def pick_examples(pairs: list[Pair], n: int) -> list[Pair]:
    """Up to ``n`` held-out examples, spread over the set (the generated tasks mix formats, so the
    first few of every stride cover several)."""
    if n <= 0 or not pairs:
        return []
    stride = max(1, len(pairs) // n)
    return pairs[::stride][:n]


def write_run_artifacts(result: TrainResult, out: str | Path, n_examples: int = 4) -> dict[str, Any]:
    """Write ``alignments/*.png``, ``stats/*.png``, ``traces/*.safetensors``, ``attention_stats.json`` and
    ``metrics.json`` into ``out``; returns the per-example records."""
    out = Path(out)
    data, model = result.data, result.model
    records = []
    for i, pair in enumerate(pick_examples(data.test, n_examples)):
        ids = data.encode_src(pair.source)
        hyp = greedy_decode(model, [ids])[0]
        tr = translation_trace(pair.source, hyp, data.src_tok, data.tgt_tok, data.tgt_vocab.itos, ids,
                               model_id=f"attnscope-seq2seq/{result.cfg.task}", attention=model.cfg.attention)
        src_labels = tr.key_tokens("cross").labels()
        tgt_labels = tr.query_tokens("cross").labels()
        ok = tr.texts["target"] == pair.target
        title = f"{model.cfg.attention}: {pair.source!r} -> {tr.texts['target']!r} ({'correct' if ok else 'ref ' + pair.target})"
        head = 0
        png = plot_alignment(hyp.attention[head], src_labels, tgt_labels, out / "alignments" / f"example_{i}.png", title)
        st = attention_stats(hyp.attention)  # name -> (1, H, T)
        stats_png = plot_step_stats({k: v[0, head] for k, v in st.items()}, tgt_labels,
                                    out / "stats" / f"example_{i}.png", title=f"per-step attention statistics: {pair.source!r}")
        trace_path = tr.save(out / "traces" / f"example_{i}.safetensors")
        records.append({
            "source": pair.source, "reference": pair.target, "output": tr.texts["target"], "correct": ok,
            "alignment_png": str(png), "stats_png": str(stats_png), "trace": str(trace_path),
            "target_tokens": tgt_labels,
            "entropy": [round(x, 4) for x in st["entropy"][0, head].tolist()],
            "max_weight": [round(x, 4) for x in st["max"][0, head].tolist()],
            "effective_positions": [int(x) for x in st["effective_positions"][0, head].tolist()],
        })
    (out / "attention_stats.json").write_text(json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps({"metrics": result.metrics, "history": result.history}, indent=2),
                                      encoding="utf-8")
    return {"examples": records}
