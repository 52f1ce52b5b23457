"""Figure of linguistic head roles: per dependency relation (and direction) the best head's accuracy next to the
best fixed-offset baseline, and per coreference family the best head next to the nearest-noun baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .style import save_figure, styled, subplots


def _as_dict(x: Any) -> dict | None:
    return x.to_dict() if hasattr(x, "to_dict") else x


@styled
def plot_linguistic_heads(syntactic: Any, coreference: Any, path, title: str = "", max_relations: int = 14) -> Path:
    """Horizontal bars: best head (labelled LxHy) vs baseline, most frequent relations first (both directions)."""
    syn, cor = _as_dict(syntactic), _as_dict(coreference)
    labels, best, base, who, notes = [], [], [], [], []
    if syn is not None:
        rows = syn["rows"]
        rels = list(dict.fromkeys(r["relation"] for r in rows))[:max_relations]
        for rel in rels:
            for r in rows:
                if r["relation"] == rel:
                    arrow = "dep→gov" if r["direction"] == "dep2gov" else "gov→dep"
                    labels.append(f"{rel} {arrow} (n={r['count']})")
                    best.append(r["accuracy"])
                    base.append(r["baseline"])
                    who.append(f"L{r['layer']}H{r['head']}")
                    notes.append(f"offset {r['baseline_offset']:+d}")
    if cor is not None:
        fams = cor.get("best_by_family") or {"all": cor["best"]}
        for fam, b in fams.items():
            labels.append(f"coreference: {fam}")
            best.append(b["accuracy"])
            base.append(cor["baselines"]["nearest_noun"])
            who.append(f"L{b['layer']}H{b['head']}")
            notes.append("nearest noun")
    n = len(labels)
    fig, ax = subplots(figsize=(8.0, 0.32 * n + 1.4))
    y = np.arange(n)[::-1]
    h = 0.38
    ax.barh(y + h / 2, best, h, color="#3b75af", label="best head")
    ax.barh(y - h / 2, base, h, color="#b0b0b0", label="baseline (best fixed offset / nearest noun)")
    for yi, b, w, z, note in zip(y, best, who, base, notes):
        ax.text(b + 0.01, yi + h / 2, w, va="center", fontsize=7, color="#1d3d5c")
        ax.text(z + 0.01, yi - h / 2, note, va="center", fontsize=6, color="#555555")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("accuracy")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=7, frameon=False)  # above the bars
    ax.set_title(title, fontsize=10, pad=20)
    out = save_figure(fig, Path(path), formats=(Path(path).suffix.lstrip(".") or "png",), dpi=110)
    return out[0]
